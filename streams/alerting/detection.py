"""Detection per district: closed windows in, AlertEvents out.

One :class:`DistrictDetection` per district lives in the ``district-detection``
table. Each closed minute of the district (:class:`~streams.state.windows.ClosedWindow`)
feeds the threshold rules that apply there (district-scoped rules the district's
aggregate of an indicator, street-scoped rules each street's), and every
detector not fed by that minute moves its clock to the minute's end, so pending
and hold timers and missing-data rules run in event time. Transitions become
:class:`~streams.alerting.lifecycle.Signal` s for the district's
:class:`~streams.alerting.lifecycle.AlertBook`.

The value is written to the ``district-detection`` changelog as a versioned state
document (:data:`DETECTION_STATE`, :mod:`streams.core.state`; never a pickle) through
:meth:`DistrictDetection.encode`, which keeps it within its byte bound: the
book holds no operator notes and bounded histories, and if the value is still
too large it gives up closed alerts, evidence series and action histories
before it would fail the write (:func:`streams.alerting.lifecycle.fit`).

Detection runs on closed windows rather than single readings: its state changes
(and is written) once per district-minute whatever the reading rate, and replay
of a file goes through the same windows, so it raises the same alerts.
"""

from __future__ import annotations

import dataclasses
import time
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from typing import TypeVar
from zoneinfo import ZoneInfo

from detectors.anomaly import (
    AlertDecision,
    AnomalyConfig,
    AnomalyGate,
    AnomalyScore,
    AnomalyScorer,
    SeriesDetector,
    _Likelihood,
)
from detectors.calibrated import Calibrated
from detectors.composite import CompositeChange, Correlator, WeakSignal
from detectors.contextual import ContextDetector
from detectors.ensemble import Ensemble
from detectors.forecast import CrossingWatch
from detectors.site import SiteModel
from detectors.thresholds import (
    SilenceWatch,
    ThresholdDetector,
    ThresholdSpec,
    Transition,
)
from streams.alerting.early import EarlyReading, EarlySeries, OpenWindows, Partials, ahead, settle
from streams.alerting.lifecycle import (
    STATE_MAX_BYTES,
    AlertBook,
    Names,
    Signal,
    Silence,
    fit,
)
from streams.alerting.models import AnomalyModels, SiteChoice, load_anomaly_models
from streams.alerting.rules import ThresholdRules
from streams.core import metrics
from streams.core.config import CityConfig, Sharing
from streams.core.messages import (
    AlertAction,
    AlertEvent,
    AlertKind,
    Evidence,
    EvidencePoint,
    EvidenceReading,
    Forecast,
    Grade,
    MemberSignal,
)
from streams.core.state import StateCodec
from streams.state.windows import STREET_SEP, ClosedWindow


def _describe(spec: ThresholdSpec) -> str:
    if spec.aggregate.value == "reading":
        return "reading"
    minutes = spec.window_s / 60
    span = f"{minutes:g} min" if minutes < 120 else f"{minutes / 60:g} h"
    what = {"rate": "rate per minute"}.get(spec.aggregate.value, spec.aggregate.value)
    return f"{what} over {span}"


ANOMALY_RULE = "anomaly.seasonal-context"  # the built-in default model's rule name
_W = TypeVar("_W")  # what a model is built for: an indicator code, or a site group
LEGACY_RULE = "anomaly.seasonal-likelihood"  # the one model before models were configurable


def _baseline(score: AnomalyScore, text: str) -> str:
    """``text`` with the model's expected value, empty for a model without one."""
    return "" if score.expected is None else text.format(f"{score.expected:.4g}")


COMPOSITE_RULE = "composite.weak-signals"
RECENT_VALUES = 15  # minutes of values an alert's evidence shows
WEAK_SCORE = 0.3  # an anomaly score this high that raised no alert is a weak signal
SILENCE_RULE = "data_quality.silence"
_EVENTS = {"firing": "fire", "updated": "update", "resolved": "resolve"}
# time per closed window and detector family, through label children bound once
_THRESHOLD_S = metrics.scoring_seconds.labels("threshold")
_FORECAST_S = metrics.scoring_seconds.labels("forecast")
_ANOMALY_S = metrics.scoring_seconds.labels("anomaly")
_DATA_QUALITY_S = metrics.scoring_seconds.labels("data_quality")
_COMPOSITE_S = metrics.scoring_seconds.labels("composite")


@dataclass
class DetectionContext:
    """What every district's detection shares: the config, resolved and cached.

    ``anomaly`` is the built-in anomaly model's settings, None to run no anomaly models.
    ``models`` chooses the model of each indicator; when not given, it is loaded from
    the city's ``anomaly.yaml`` (:mod:`streams.alerting.models`) here, so a bad model stops
    start-up, with ``anomaly`` as the built-in model's settings.
    """

    cfg: CityConfig
    rules: ThresholdRules
    silences: tuple[Silence, ...] = ()
    anomaly: AnomalyConfig | None = field(default_factory=AnomalyConfig)
    forecast_horizon_s: float = 1800.0  # 0: no trend forecasts
    early: bool = True  # early rules decide on the reading (:mod:`streams.alerting.early`)
    models: AnomalyModels | None = None

    def __post_init__(self) -> None:
        if self.models is None and self.anomaly is not None:
            self.models = load_anomaly_models(self.cfg, default=self.anomaly)

    def site_model(self, site: SiteChoice) -> tuple[AnomalyScorer, AnomalyGate]:
        """A fresh joint model and gate for one site group."""
        ranges = {
            c: self.cfg.indicators[c].range for c in site.indicators if c in self.cfg.indicators
        }
        return site.build(ranges)

    def anomaly_model(self, indicator: str) -> tuple[AnomalyScorer, AnomalyGate]:
        """A fresh model and gate for one indicator's series."""
        assert self.models is not None
        ind = self.cfg.indicators.get(indicator)
        if ind is None:
            return self.models.choice(indicator).build()
        return self.models.choice(indicator).build(ind.range, ind.normal)

    @cached_property
    def _zone(self) -> ZoneInfo:
        return ZoneInfo(self.cfg.city.city.timezone)

    def local(self, t: float) -> float:
        """Seconds since the epoch on the city's wall clock: time-of-day models use it."""
        offset = datetime.fromtimestamp(t, self._zone).utcoffset()
        return t + (offset.total_seconds() if offset is not None else 0.0)

    @cached_property
    def names(self) -> Names:
        return Names(self.cfg)

    @cached_property
    def street_indicators(self) -> frozenset[str]:
        """Indicators some street-scoped rule watches: windows keep them per street too."""
        return frozenset(r.indicator for r in self.rules.rules if r.scope == "street" and r.enabled)

    @cached_property
    def _specs(self) -> dict[tuple[str, str, str | None], list[ThresholdSpec]]:
        return {}

    def specs(self, indicator: str, district: str, street: str | None) -> list[ThresholdSpec]:
        """The rules for one series: district-scoped ones when ``street`` is None, else the street's."""
        key = (indicator, district, street)
        cached = self._specs.get(key)
        if cached is None:
            scope = "district" if street is None else "street"
            cached = [
                spec
                for rule in self.rules.by_indicator(indicator)
                if rule.scope == scope
                and (spec := self.rules.spec(rule, district, street)) is not None
            ]
            self._specs[key] = cached
        return cached

    @cached_property
    def early_indicators(self) -> frozenset[str]:
        """Indicators an early rule watches: only their readings are offered to detection."""
        return frozenset(s.indicator for s in self._rule_specs if s.early)

    @cached_property
    def running_indicators(self) -> frozenset[str]:
        """Indicators an early count, sum or rate rule watches: their readings are judged by
        the running totals of the open windows as the reading is counted
        (:meth:`ThresholdDetector.running_total`), so the pipeline takes those with the
        reading (:func:`streams.alerting.early.partials`)."""
        return frozenset(s.indicator for s in self._rule_specs if s.early and s.running)

    @cached_property
    def _rule_specs(self) -> list[ThresholdSpec]:
        """Each enabled rule as it stands without overrides (none changes what it watches)."""
        if not self.early:
            return []
        specs = (self.rules.spec(r, "", None) for r in self.rules.rules if r.enabled)
        return [s for s in specs if s is not None]

    def partial_keys(self, indicator: str, street: str | None) -> tuple[str, ...]:
        """The window keys whose running totals a reading's running rules judge."""
        if street is not None and indicator in self.street_indicators:
            return (indicator, f"{indicator}{STREET_SEP}{street}")
        return (indicator,)

    @cached_property
    def _early_specs(
        self,
    ) -> dict[tuple[str, str, str | None], list[tuple[ThresholdSpec, str | None]]]:
        return {}

    def early_specs(
        self, indicator: str, district: str, street: str | None
    ) -> list[tuple[ThresholdSpec, str | None]]:
        """The early rules a reading of one street (or of no street) feeds, each with the
        place its series is kept for: the district's rules (None) and the street's own."""
        key = (indicator, district, street)
        cached = self._early_specs.get(key)
        if cached is None:
            cached = [(s, None) for s in self.specs(indicator, district, None) if s.early]
            if street is not None and indicator in self.street_indicators:
                cached += [(s, street) for s in self.specs(indicator, district, street) if s.early]
            self._early_specs[key] = cached
        return cached

    def may_cross(self, indicator: str, district: str, street: str | None, value: float) -> bool:
        """Whether a reading may be past an early rule's bound: always for a count, sum or
        rate rule (its running total decides), otherwise when the value itself is past the
        rule's mildest bound. The batch loop asks this of every reading of a watched
        indicator and keeps only those that may be (most are far from every bound)."""
        for spec, _ in self.early_specs(indicator, district, street):
            if spec.running or spec.reaches_trigger(value):
                return True
        return False

    @cached_property
    def _departments(self) -> dict[str, str]:
        return {r.id: r.department for r in self.rules.rules}

    def department_of(self, rule_id: str) -> str:
        return self._departments[rule_id]


@dataclass
class DistrictDetection:
    """A district's detectors and alerts; a state document, written once per closed minute."""

    district: str
    thresholds: dict[str, ThresholdDetector] = field(default_factory=dict)
    anomaly: dict[str, tuple[AnomalyScorer, AnomalyGate]] = field(default_factory=dict)
    silence: dict[str, SilenceWatch] = field(default_factory=dict)
    forecasts: dict[str, CrossingWatch] = field(default_factory=dict)
    correlator: Correlator = field(default_factory=Correlator)
    # the last minutes' values per window key, oldest first: the evidence of an alert
    recent: dict[str, deque[tuple[float, float]]] = field(default_factory=dict)
    book: AlertBook = field(init=False)
    fed_until: float = float("-inf")  # end of the newest window fed: a re-closed one is skipped
    # early rules' kept readings and raised transitions, per detector key (streams.alerting.early)
    early: dict[str, EarlySeries] = field(default_factory=dict)
    # the rule and model version (streams.alerting.models) each anomaly series was built with
    anomaly_versions: dict[str, tuple[str, str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if "book" not in self.__dict__:  # a new district's (a restored one has its own)
            self.book = AlertBook(self.district)

    def on_window(self, window: ClosedWindow, ctx: DetectionContext) -> list[AlertEvent]:
        """Feed one closed minute to every rule that applies; return the alert events.

        A minute at or before one already fed (re-closed after a crash) is skipped.
        The time each detector family takes goes to
        ``cityvitals_detection_scoring_duration_seconds``: threshold rules (with the
        evidence kept for every rule), trend forecasts, anomaly models, data-quality
        silence checks and the composite correlation, each family only when enabled.
        """
        if window.end <= self.fed_until:
            return []
        clock = time.perf_counter
        started = clock()
        self.fed_until = window.end
        self._remember(window, ctx)
        events: list[AlertEvent] = self._settle_early(window, ctx) if self.early else []
        fed: set[str] = set()
        forecasting = ctx.forecast_horizon_s > 0
        forecast_s = 0.0
        for key, agg in window.minute.items():
            indicator, _, street = key.partition(STREET_SEP)
            for spec in ctx.specs(indicator, self.district, street or None):
                det_key = f"{spec.rule_id}{STREET_SEP}{street}"
                det = self._detector(det_key, spec)
                fed.add(det_key)
                count, total, low, high = agg
                settles = ctx.early and spec.early
                for tr in det.update_window(
                    window.start, window.end, int(count), total, low, high, settles
                ):
                    events += self._window_signal(tr, spec, street or None, window, ctx)
                if forecasting and det.level is not None:
                    forecast_started = clock()
                    events += self._forecast(det_key, det, indicator, street or None, ctx)
                    forecast_s += clock() - forecast_started
                self._weak_threshold(det, indicator, street or None, window.end, ctx)
        thresholds_done = clock()
        if ctx.models is not None:
            events += self._anomalies(window, ctx)
        anomalies_done = clock()
        events += self._silences(window, ctx)
        silences_done = clock()
        for det_key, det in self.thresholds.items():
            if det_key not in fed:
                place = det_key.partition(STREET_SEP)[2] or None
                for tr in det.advance(window.end, ctx.early and det.spec.early):
                    events += self._window_signal(tr, det.spec, place, window, ctx)
        advanced = clock()
        change = self.correlator.evaluate(window.end)
        if change is not None:
            events += self._composite(change, ctx)
        done = clock()
        _THRESHOLD_S.observe(thresholds_done - started - forecast_s + advanced - silences_done)
        if forecasting:
            _FORECAST_S.observe(forecast_s)
        if ctx.models is not None:
            _ANOMALY_S.observe(anomalies_done - thresholds_done)
        _DATA_QUALITY_S.observe(silences_done - anomalies_done)
        _COMPOSITE_S.observe(done - advanced)
        return events

    def _detector(self, det_key: str, spec: ThresholdSpec) -> ThresholdDetector:
        det = self.thresholds.get(det_key)
        if det is None:
            det = self.thresholds[det_key] = ThresholdDetector(spec)
        elif det.spec is not spec:
            if det.spec == spec:
                # restored from the changelog: the same rule, as a copy of its own; holding
                # the configuration's object keeps the identity checks below fast and true
                det.spec = spec
            else:  # the rule changed: keep the state, judge by the new rule
                det = self.thresholds[det_key] = dataclasses.replace(det, spec=spec)
        return det

    # -- early decisions (streams.alerting.early) ---------------------------------------------
    def on_reading(
        self,
        indicator: str,
        street: str | None,
        at: float,
        value: float,
        ref: str,
        ctx: DetectionContext,
        open_windows: OpenWindows | None,
        window_s: float,
        partials: Partials | None = None,
    ) -> list[AlertEvent]:
        """One counted reading of an indicator an early rule watches; the alert events it
        decides at once.

        ``open_windows`` are the district's open windows (their aggregates so far),
        which tell whether an earlier window's close could still decide first; with
        None the reading is only kept and judged when its window closes.
        ``partials``: for an indicator of :attr:`DetectionContext.running_indicators`,
        the open windows' totals as the reading was counted
        (:func:`streams.alerting.early.partials`).
        """
        events: list[AlertEvent] = []
        for spec, place, level in self.crossings(
            indicator, street, at, value, ctx, window_s, partials
        ):
            key = indicator if place is None else f"{indicator}{STREET_SEP}{place}"
            det_key = f"{spec.rule_id}{STREET_SEP}{place or ''}"
            det = self._detector(det_key, spec)
            series = self.early.get(det_key)
            if series is None:
                series = self.early[det_key] = EarlySeries()
            if not series.take(at, level, ref, value) or open_windows is None:
                continue
            for tr, reading in ahead(series, det, key, open_windows, window_s):
                events += self._early_signal(tr, spec, place, series, reading, window_s, ctx)
        return events

    def crossings(
        self,
        indicator: str,
        street: str | None,
        at: float,
        value: float,
        ctx: DetectionContext,
        window_s: float,
        partials: Partials | None = None,
    ) -> list[tuple[ThresholdSpec, str | None, float]]:
        """The early rules a reading is past the mildest bound of, with the place of each
        series and the level judged (the reading's value, or a running total); changes
        nothing, so that the pipeline writes a district's detection state only for a
        reading that changes it (most readings are far from every bound)."""
        if at < self.fed_until:
            return []  # its window was judged already: delivered again after a restart
        out = []
        minute = at - at % window_s
        for spec, place in ctx.early_specs(indicator, self.district, street):
            level = value
            if spec.running:
                if partials is None:
                    raise ValueError(f"{spec.rule_id}: a running rule needs the window totals")
                key = indicator if place is None else f"{indicator}{STREET_SEP}{place}"
                det = self.thresholds.get(f"{spec.rule_id}{STREET_SEP}{place or ''}")
                if det is None:
                    det = ThresholdDetector(spec)  # nothing closed yet: the open totals alone
                level = det.running_total(partials.get(key, ()), minute, window_s)
            if spec.reaches_trigger(level):
                out.append((spec, place, level))
        return out

    def catch_up(
        self, open_windows: OpenWindows, window_s: float, ctx: DetectionContext
    ) -> list[AlertEvent]:
        """After windows closed: the kept readings' transitions that are now certain."""
        events: list[AlertEvent] = []
        for det_key, series in self.early.items():
            if not series.readings:
                continue
            det = self.thresholds[det_key]
            place = det_key.partition(STREET_SEP)[2] or None
            spec = det.spec
            key = spec.indicator if place is None else f"{spec.indicator}{STREET_SEP}{place}"
            for tr, reading in ahead(series, det, key, open_windows, window_s):
                events += self._early_signal(tr, spec, place, series, reading, window_s, ctx)
        return events

    def _settle_early(self, window: ClosedWindow, ctx: DetectionContext) -> list[AlertEvent]:
        """A window closed: its kept readings go to their detectors, in the canonical order
        (:mod:`streams.alerting.early`); transitions not raised ahead are raised now."""
        events: list[AlertEvent] = []
        until, window_s = window.end, window.end - window.start
        for det_key, series in self.early.items():
            if not series.readings or series.readings[0].clock >= until:
                continue
            det = self.thresholds[det_key]
            place = det_key.partition(STREET_SEP)[2] or None
            for tr, reading, raised in settle(series, det, until):
                if not raised:
                    events += self._early_signal(
                        tr, det.spec, place, series, reading, window_s, ctx
                    )
            if series.raised:
                stale = [k for k in series.raised if k[2] < until]
                if stale:  # raised ahead, yet not what the canonical order gave
                    metrics.early_mismatches.inc(len(stale))
                    series.raised = [k for k in series.raised if k[2] >= until]
        return events

    def _early_signal(
        self,
        tr: Transition,
        spec: ThresholdSpec,
        street: str | None,
        series: EarlySeries,
        reading: EarlyReading,
        window_s: float,
        ctx: DetectionContext,
    ) -> list[AlertEvent]:
        """A transition one reading decided; its evidence names the reading and shows the
        crossing readings of its minute up to it."""
        minute = reading.clock - (reading.clock % window_s)
        points: list[EvidencePoint] = []
        for r in series.readings:
            if minute <= r.clock < minute + window_s:
                points.append(EvidencePoint(time=datetime.fromtimestamp(r.at, UTC), value=r.value))
            if r is reading:
                break
        decided = EvidenceReading(
            time=datetime.fromtimestamp(reading.at, UTC), value=reading.own, origin=reading.ref
        )
        return self._signal(tr, spec, street, window_s, points, ctx, decided)

    def _weak_threshold(
        self,
        det: ThresholdDetector,
        indicator: str,
        street: str | None,
        at: float,
        ctx: DetectionContext,
    ) -> None:
        """A rule pending, or its level past halfway from the normal band to its first bound."""
        ind = ctx.cfg.indicators.get(indicator)
        if ind is None or det.level is None or det.phase in ("firing", "clearing"):
            return
        spec = det.spec
        first, up = spec.first_bound, spec.rises
        # totals are not in the readings' unit: halfway from nothing to the bound
        nothing = 0.0 if up else first
        edge = nothing if spec.totals else ind.normal[1] if up else ind.normal[0]
        halfway = edge + 0.5 * (first - edge)
        near = det.level >= halfway if up else det.level <= halfway
        if det.phase == "pending" or (near and halfway != edge):
            self.correlator.add(
                WeakSignal(
                    at,
                    ind.domain,
                    indicator,
                    street,
                    0.5 if det.phase == "pending" else 0.3,
                    f"{spec.rule_id}: {_describe(spec)} {det.level:.4g} "
                    f"({'pending' if det.phase == 'pending' else 'near'} {first:g})",
                )
            )

    def _composite(self, change: CompositeChange, ctx: DetectionContext) -> list[AlertEvent]:
        """Weak signals in several domains of one place: one composite alert."""
        members = [
            MemberSignal(
                indicator=m.indicator,
                street=m.street,
                domain=m.domain,
                score=m.score,
                event_time=datetime.fromtimestamp(m.at, UTC),
                detail=m.detail,
            )
            for m in change.members
        ]
        owners = sorted(
            {
                ctx.cfg.indicators[m.indicator].department
                for m in change.members
                if m.indicator in ctx.cfg.indicators
            }
        )
        domains = sorted({m.domain for m in change.members})
        evidence = Evidence(
            rule=COMPOSITE_RULE,
            version=f"{self.correlator.min_domains}d/{self.correlator.window_s:g}s",
            aggregate=f"weak signals in {len(domains)} domains within {self.correlator.window_s / 60:g} min",
            members=members,
            detail=", ".join(domains),
        )
        signal = Signal(
            action=change.kind,
            kind=AlertKind.COMPOSITE,
            rule=COMPOSITE_RULE,
            district=self.district,
            street=change.street,
            key="composite",
            indicators=tuple(sorted({m.indicator for m in change.members})),
            domain=None,
            grade=Grade(change.grade),
            at=change.at,
            evidence=evidence,
            department="command_centre",
            co_departments=tuple(owners),
            sharing=Sharing.NOT_SHARED,
        )
        return self.book.apply(signal, ctx.names, ctx.silences)

    def _remember(self, window: ClosedWindow, ctx: DetectionContext) -> None:
        for key, agg in window.minute.items():
            if agg[0] <= 0:
                continue
            ind = ctx.cfg.indicators.get(key.partition(STREET_SEP)[0])
            value = agg[1] if ind is not None and ind.aggregation == "sum" else agg[1] / agg[0]
            series = self.recent.get(key)
            if series is None:
                series = self.recent[key] = deque(maxlen=RECENT_VALUES)
            series.append((window.end, value))

    def _values(self, indicator: str, street: str | None) -> list[EvidencePoint]:
        key = indicator if street is None else f"{indicator}{STREET_SEP}{street}"
        return [
            EvidencePoint(time=datetime.fromtimestamp(t, UTC), value=v)
            for t, v in self.recent.get(key, ())
        ]

    def _anomalies(self, window: ClosedWindow, ctx: DetectionContext) -> list[AlertEvent]:
        """One model set per (district, indicator): fed each closed minute's value.

        A gauge's value is the minute's mean; a count's the minute's sum, and a
        minute without events counts 0 once the series exists.
        """
        events: list[AlertEvent] = []
        values: dict[str, tuple[float, str]] = {}
        for key, agg in window.minute.items():
            if STREET_SEP in key or agg[0] <= 0:
                continue
            ind = ctx.cfg.indicators.get(key)
            if ind is not None and ind.aggregation == "sum":
                values[key] = (agg[1], "sum over 1 min")
            else:
                values[key] = (agg[1] / agg[0], "mean over 1 min")
        for key in self.anomaly:
            ind = ctx.cfg.indicators.get(key)
            if key not in values and ind is not None and ind.aggregation == "sum":
                values[key] = (0.0, "sum over 1 min")
        t_local = ctx.local(window.end)
        assert ctx.models is not None
        indicators = ctx.cfg.indicators
        for key, (value, aggregate) in values.items():
            choice = ctx.models.choice(key)
            models, rule, version = self._anomaly_models(
                key, choice.rule, choice.version, ctx.anomaly_model, key
            )
            score = models[0].update(t_local, value)
            decision = models[1].update(t_local, score)
            weak = score.warmed_up and not decision.active and score.score >= WEAK_SCORE
            ind = indicators.get(key) if weak else None
            if ind is not None:
                detail = f"anomaly score {score.score:.2f}{_baseline(score, ' (baseline {})')}"
                self.correlator.add(
                    WeakSignal(window.end, ind.domain, key, None, score.score, detail)
                )
            if decision.event is None or decision.grade is None:
                continue
            detail = (
                f"{_baseline(score, 'seasonal baseline {}; ')}anomaly score {decision.score:.3f}"
            )
            if rule != ANOMALY_RULE:
                detail += f" ({rule.removeprefix('anomaly.')})"
            events += self._anomaly_signal(
                window,
                ctx,
                decision,
                (key,),
                key,
                rule,
                version,
                observed=value,
                aggregate=aggregate,
                baseline=score.expected,
                detail=detail,
            )
        for site in ctx.models.sites:
            if not all(code in values for code in site.indicators):
                continue  # a joint reading needs every member
            x: dict[Hashable, float] = {code: values[code][0] for code in site.indicators}
            models, rule, version = self._anomaly_models(
                site.key, site.rule, site.version, ctx.site_model, site
            )
            model = models[0]
            assert isinstance(model, Calibrated)
            score = model.update_features(t_local, x)
            decision = models[1].update(t_local, score)
            if decision.event is None or decision.grade is None:
                continue
            shown = ", ".join(f"{code} {values[code][0]:.4g}" for code in site.indicators)
            detail = (
                f"site {site.name} ({shown}): how unlike their usual relationship, "
                f"anomaly score {decision.score:.3f} ({site.model})"
            )
            events += self._anomaly_signal(
                window,
                ctx,
                decision,
                site.indicators,
                site.key,
                rule,
                version,
                observed=None,
                aggregate="joint reading over 1 min",
                baseline=None,
                detail=detail,
            )
        return events

    def _anomaly_models(
        self,
        key: str,
        rule: str,
        version: str,
        build: Callable[[_W], tuple[AnomalyScorer, AnomalyGate]],
        what: _W,
    ) -> tuple[tuple[AnomalyScorer, AnomalyGate], str, str]:
        """The series' model and gate, and the rule and version its alerts carry.

        Built afresh when new, or when the configured model changed (another model,
        parameters or settings) and no alert of it is open: an open alert keeps its
        model, and its rule, until it resolves. A series restored from state written
        before models were recorded ran the seasonal model of ``LEGACY_RULE``.
        ``build(what)`` makes the model and gate (called only when one is needed: this
        runs for every series of every closed minute).
        """
        models = self.anomaly.get(key)
        built = self.anomaly_versions.get(key, (LEGACY_RULE, ""))
        if models is None or (built != (rule, version) and not models[1].active):
            models = self.anomaly[key] = build(what)
            built = self.anomaly_versions[key] = (rule, version)
        return models, built[0], built[1]

    def _anomaly_signal(
        self,
        window: ClosedWindow,
        ctx: DetectionContext,
        decision: AlertDecision,
        indicators: tuple[str, ...],
        key: str,
        rule: str,
        version: str,
        *,
        observed: float | None,
        aggregate: str,
        baseline: float | None,
        detail: str,
    ) -> list[AlertEvent]:
        """The lifecycle's events for one anomaly model's decision (its first indicator's
        department, domain and sharing; a site's other indicators' departments co-handle)."""
        assert decision.event is not None and decision.grade is not None
        ind = ctx.cfg.indicators.get(indicators[0])
        others = [ctx.cfg.indicators[c] for c in indicators[1:] if c in ctx.cfg.indicators]
        department = ind.department if ind is not None else "command_centre"
        co = list(ind.co_departments) if ind is not None else []
        co += [o.department for o in others if o.department != department]
        evidence = Evidence(
            rule=rule,
            version=version,
            observed=observed,
            aggregate=aggregate,
            window_start=datetime.fromtimestamp(window.start, UTC),
            window_end=datetime.fromtimestamp(window.end, UTC),
            baseline=baseline,
            score=decision.score,
            values=self._values(indicators[0], None),
            detail=detail,
        )
        signal = Signal(
            action=_EVENTS[decision.event],
            kind=AlertKind.ALARM,
            rule=rule,
            district=self.district,
            street=None,
            key=key,
            indicators=indicators,
            domain=ind.domain if ind is not None else None,
            grade=Grade[decision.grade],
            at=window.end,
            evidence=evidence,
            department=department,
            co_departments=tuple(dict.fromkeys(co)),
            sharing=ind.sharing if ind is not None else Sharing.NOT_SHARED,
        )
        return self.book.apply(signal, ctx.names, ctx.silences)

    def _forecast(
        self,
        det_key: str,
        det: ThresholdDetector,
        indicator: str,
        street: str | None,
        ctx: DetectionContext,
    ) -> list[AlertEvent]:
        """A predictive warning when the rule's level trends across a grade boundary."""
        if det.spec.aggregate.value == "reading" or det.level is None:
            return []
        watch = self.forecasts.get(det_key)
        if watch is not None and watch.spec is not det.spec and watch.spec == det.spec:
            watch.spec = det.spec  # restored: the same rule, as a copy of its own
        if watch is None or watch.spec is not det.spec:  # new, or the rule changed
            watch = self.forecasts[det_key] = CrossingWatch(
                det.spec, horizon_s=ctx.forecast_horizon_s
            )
        crossing = watch.observe(det.latest, det.level, crossed=det.phase != "inactive")
        if crossing is None:
            return []
        spec = det.spec
        at = datetime.fromtimestamp(crossing.at, UTC)
        evidence = Evidence(
            rule=f"{spec.rule_id}.forecast",
            version=spec.version,
            observed=crossing.level,
            aggregate=_describe(spec),
            window_end=at,
            threshold=crossing.bound,
            forecast=Forecast(
                value=crossing.forecast,
                horizon_s=crossing.horizon_s,
                crossing_time=None
                if crossing.crossing_at is None
                else datetime.fromtimestamp(crossing.crossing_at, UTC),
                limit=crossing.bound,
            ),
            values=self._values(indicator, street),
            detail=crossing.reason,
        )
        return self._rule_alert(
            crossing.kind,
            AlertKind.WARNING,
            spec.rule_id,
            f"{spec.rule_id}.forecast",
            indicator,
            street,
            Grade(crossing.grade),
            crossing.at,
            evidence,
            ctx,
        )

    def _silences(self, window: ClosedWindow, ctx: DetectionContext) -> list[AlertEvent]:
        """Data quality: a gauge the district reports that has gone quiet.

        A gauge indicator (one with an expected reporting interval) that the
        district has reported before and that has had no reading for
        ``silence_factor`` intervals, on the district's event-time clock, raises a
        data-quality alert (grade IV) to the indicator's owning department; it
        resolves with the next reading.
        """
        events: list[AlertEvent] = []
        factor = ctx.rules.defaults.silence_factor
        for key in window.minute:
            if STREET_SEP in key:
                continue
            ind = ctx.cfg.indicators.get(key)
            if ind is None or ind.expected_interval_s is None:
                continue
            watch = self.silence.get(key)
            if watch is None:
                watch = self.silence[key] = SilenceWatch(ind.expected_interval_s, factor)
            if watch.seen(window.end) == "resolve":
                events += self._data_quality("resolve", key, window.end, watch, ctx)
        for key, watch in self.silence.items():
            if watch.check(window.end) == "fire":
                events += self._data_quality("fire", key, window.end, watch, ctx)
        return events

    def _data_quality(
        self, action: str, indicator: str, at: float, watch: SilenceWatch, ctx: DetectionContext
    ) -> list[AlertEvent]:
        ind = ctx.cfg.indicators[indicator]
        last = watch.last_seen if watch.last_seen is not None else at
        evidence = Evidence(
            rule=SILENCE_RULE,
            version=f"x{watch.factor:g}",
            aggregate="readings per interval",
            observed=0.0 if action == "fire" else None,
            window_start=datetime.fromtimestamp(last, UTC),
            window_end=datetime.fromtimestamp(at, UTC),
            detail=(
                f"no {ind.code} reading since {datetime.fromtimestamp(last, UTC).isoformat()} "
                f"(expected every {ind.expected_interval_s:g} s)"
                if action == "fire"
                else f"{ind.code} reports again"
            ),
        )
        signal = Signal(
            action=action,
            kind=AlertKind.DATA_QUALITY,
            rule=SILENCE_RULE,
            district=self.district,
            street=None,
            key=indicator,
            indicators=(indicator,),
            domain=ind.domain,
            grade=Grade.IV,
            at=at,
            evidence=evidence,
            department=ind.department,
            sharing=Sharing.NOT_SHARED,
        )
        return self.book.apply(signal, ctx.names, ctx.silences)

    def act(self, action: AlertAction, ctx: DetectionContext) -> list[AlertEvent]:
        return self.book.act(action, ctx.names, ctx.silences)

    def _window_signal(
        self,
        tr: Transition,
        spec: ThresholdSpec,
        street: str | None,
        window: ClosedWindow,
        ctx: DetectionContext,
    ) -> list[AlertEvent]:
        values = self._values(spec.indicator, street)
        return self._signal(tr, spec, street, window.end - window.start, values, ctx)

    def _signal(
        self,
        tr: Transition,
        spec: ThresholdSpec,
        street: str | None,
        window_s: float,
        values: list[EvidencePoint],
        ctx: DetectionContext,
        reading: EvidenceReading | None = None,
    ) -> list[AlertEvent]:
        """A rule's transition as an alert signal: decided on ``reading``, or at a window's
        close when it is None."""
        span = spec.window_s if spec.window_s > 0 else window_s
        evidence = Evidence(
            rule=spec.rule_id,
            version=spec.version,
            observed=tr.level,
            aggregate=_describe(spec),
            window_start=datetime.fromtimestamp(tr.at - span, UTC),
            window_end=datetime.fromtimestamp(tr.at, UTC),
            threshold=tr.threshold,
            values=values,
            detail=f"{tr.reason}; breach since {datetime.fromtimestamp(tr.since, UTC).isoformat()}",
            decided="window" if reading is None else "reading",
            reading=reading,
        )
        return self._rule_alert(
            tr.kind,
            AlertKind.ALARM,
            spec.rule_id,
            spec.rule_id,
            spec.indicator,
            street,
            Grade(tr.grade),
            tr.at,
            evidence,
            ctx,
        )

    def _rule_alert(
        self,
        action: str,
        kind: AlertKind,
        rule_id: str,
        rule: str,
        indicator: str,
        street: str | None,
        grade: Grade,
        at: float,
        evidence: Evidence,
        ctx: DetectionContext,
    ) -> list[AlertEvent]:
        """A threshold rule's finding: owned by the rule's department, co-handled by the data's."""
        ind = ctx.cfg.indicators[indicator]
        department = ctx.department_of(rule_id)
        signal = Signal(
            action=action,
            kind=kind,
            rule=rule,
            district=self.district,
            street=street,
            key=indicator,
            indicators=(indicator,),
            domain=ind.domain,
            grade=grade,
            at=at,
            evidence=evidence,
            department=department,
            co_departments=tuple(
                d for d in (ind.department, *ind.co_departments) if d != department
            ),
            sharing=ind.sharing,
        )
        return self.book.apply(signal, ctx.names, ctx.silences)

    # -- the table's codec ---------------------------------------------------------
    def dumps(self) -> bytes:
        return DETECTION_STATE.encode(self)

    def encode(self, max_bytes: int = STATE_MAX_BYTES) -> tuple[bytes, list[str]]:
        """The table value, shrunk to at most ``max_bytes`` if need be, and what was dropped.

        The detectors are bounded by the rules; what can be given up is the alert
        book's (:meth:`~streams.alerting.lifecycle.AlertBook.shrink_steps`, in that order),
        then the recent minute values kept for evidence (new alerts show fewer
        values until they build up again). Detection itself never loses state.
        See :func:`streams.alerting.lifecycle.fit`.
        """
        steps = [
            *self.book.shrink_steps(),
            ("dropped the recent values of {n} series kept for evidence", self._forget_recent),
        ]
        return fit(self.dumps, steps, max_bytes)

    def _forget_recent(self) -> int:
        n = len(self.recent)
        self.recent.clear()
        return n

    @staticmethod
    def loads(data: bytes) -> DistrictDetection:
        """A value as written by :meth:`dumps`; raises
        :class:`~streams.core.state.StateError` for one this release cannot restore."""
        return DETECTION_STATE.decode(data)


DETECTION_STATE_VERSION = 1
"""The version of the ``district-detection`` state document this release writes."""

DETECTION_STATE = StateCodec(
    "district-detection",
    DistrictDetection,
    DETECTION_STATE_VERSION,
    # the detectors and messages a district's state holds besides dataclasses
    classes=[
        Ensemble,
        SeriesDetector,
        ContextDetector,
        _Likelihood,
        AnomalyGate,
        Calibrated,
        SiteModel,
        AlertEvent,
    ],
    shared=(AnomalyConfig,),  # one model configuration is held by every series of a kind
)
"""The codec of the ``district-detection`` table's values."""
