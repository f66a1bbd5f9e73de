"""Detection per district: closed windows in, AlertEvents out.

One :class:`DistrictDetection` per district lives in the ``district-detection``
table. Each closed minute of the district (:class:`~streams.state.windows.ClosedWindow`)
feeds the threshold rules that apply there (district-scoped rules the district's
aggregate of an indicator, street-scoped rules each street's), and every
detector not fed by that minute moves its clock to the minute's end, so pending
and hold timers and missing-data rules run in event time. Transitions become
:class:`~streams.alerting.lifecycle.Signal` s for the district's
:class:`~streams.alerting.lifecycle.AlertBook`.

This module holds the district's state and the order in which a closed minute
reaches each detector family; what a family makes of its part of the state is in
its own module: :mod:`streams.alerting.rule_alerts` (threshold rules' alerts),
:mod:`streams.alerting.early_rules` (rules decided on the reading),
:mod:`streams.alerting.forecasts` (trend forecasts), :mod:`streams.alerting.anomalies`
(anomaly models), :mod:`streams.alerting.data_quality` (gauges gone quiet),
:mod:`streams.alerting.weak_signals` (composite alerts) and
:mod:`streams.alerting.evidence` (the recent values alerts show).

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
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from zoneinfo import ZoneInfo

from detectors.anomaly import (
    AnomalyConfig,
    AnomalyGate,
    AnomalyScorer,
    SeriesDetector,
    _Likelihood,
)
from detectors.calibrated import Calibrated
from detectors.composite import Correlator
from detectors.contextual import ContextDetector
from detectors.ensemble import Ensemble
from detectors.forecast import CrossingWatch
from detectors.site import SiteModel
from detectors.thresholds import SilenceWatch, ThresholdDetector, ThresholdSpec
from streams.alerting import early_rules
from streams.alerting.anomalies import ANOMALY_RULE, LEGACY_RULE, anomalies
from streams.alerting.data_quality import SILENCE_RULE, silences
from streams.alerting.early import EarlySeries
from streams.alerting.evidence import remember
from streams.alerting.forecasts import forecast
from streams.alerting.lifecycle import (
    MAX_NOTES_PER_ALERT,
    STATE_MAX_BYTES,
    AlertBook,
    Names,
    Silence,
    fit,
)
from streams.alerting.models import AnomalyModels, SiteChoice, load_anomaly_models
from streams.alerting.public_opinion import (
    OpinionBounds,
    OpinionCategory,
    OpinionSeries,
    opinion_settings,
    public_opinion,
)
from streams.alerting.rule_alerts import window_signal
from streams.alerting.rules import ThresholdRules
from streams.alerting.weak_signals import COMPOSITE_RULE, composite, weak_threshold
from streams.core import metrics
from streams.core.config import CityConfig
from streams.core.messages import AlertAction, AlertEvent
from streams.core.state import StateCodec
from streams.state.windows import STREET_SEP, ClosedWindow

# with the rule names of the detector families' alerts, which other packages take from here
__all__ = [
    "ANOMALY_RULE",
    "COMPOSITE_RULE",
    "DETECTION_STATE",
    "DETECTION_STATE_VERSION",
    "LEGACY_RULE",
    "SILENCE_RULE",
    "DetectionContext",
    "DistrictDetection",
]

# time per closed window and detector family, through label children bound once
_THRESHOLD_S = metrics.scoring_seconds.labels("threshold")
_FORECAST_S = metrics.scoring_seconds.labels("forecast")
_ANOMALY_S = metrics.scoring_seconds.labels("anomaly")
_DATA_QUALITY_S = metrics.scoring_seconds.labels("data_quality")
_COMPOSITE_S = metrics.scoring_seconds.labels("composite")
_OPINION_S = metrics.scoring_seconds.labels("public_opinion")


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
    max_notes: int = MAX_NOTES_PER_ALERT  # CITYVITALS_MAX_NOTES_PER_ALERT
    # appeal category -> its owner and names (config/appeals.yaml): public-opinion warnings
    opinion_categories: Mapping[str, OpinionCategory] = field(default_factory=dict)

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
    def opinion_settings(self) -> tuple[OpinionBounds, str]:
        """The public-opinion boundaries in grade order and the settings' digest."""
        return opinion_settings(self.rules.opinion)

    @cached_property
    def _zone(self) -> ZoneInfo:
        return ZoneInfo(self.cfg.city.city.timezone)

    def local(self, t: float) -> float:
        """Seconds since the epoch on the city's wall clock: time-of-day models use it."""
        offset = datetime.fromtimestamp(t, self._zone).utcoffset()
        return t + (offset.total_seconds() if offset is not None else 0.0)

    @cached_property
    def names(self) -> Names:
        return Names(
            self.cfg,
            {c: (o.name_zh, o.name_en) for c, o in self.opinion_categories.items()},
        )

    def opinion_category(self, code: str) -> OpinionCategory:
        """An appeal category's owner; one the catalogue does not know (appeals.yaml
        changed since the appeal was counted) goes to the appeals indicator's owner, the
        hotline office, which hands appeals on."""
        known = self.opinion_categories.get(code)
        if known is not None:
            return known
        ind = self.cfg.indicators.get("citizen.appeals")
        return OpinionCategory(ind.department if ind is not None else "command_centre")

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
    """A district's detectors and alerts; a state document, written once per closed minute.

    Its fields are the state document (:data:`DETECTION_STATE`); the detector families'
    modules (see the module's description) read and change them.
    """

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
    # public-opinion series per appeal category, and per category and street
    # (streams.alerting.public_opinion)
    opinion: dict[str, OpinionSeries] = field(default_factory=dict)
    opinion_since: float | None = None  # the start of the district's first minute

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
        remember(self.recent, window, ctx)
        events: list[AlertEvent] = early_rules.settle_early(self, window, ctx) if self.early else []
        fed: set[str] = set()
        forecasting = ctx.forecast_horizon_s > 0
        forecast_s = 0.0
        for key, agg in window.minute.items():
            indicator, _, street = key.partition(STREET_SEP)
            for spec in ctx.specs(indicator, self.district, street or None):
                det_key = f"{spec.rule_id}{STREET_SEP}{street}"
                det = self.detector(det_key, spec)
                fed.add(det_key)
                count, total, low, high = agg
                settles = ctx.early and spec.early
                for tr in det.update_window(
                    window.start, window.end, int(count), total, low, high, settles
                ):
                    events += window_signal(self, tr, spec, street or None, window, ctx)
                if forecasting and det.level is not None:
                    forecast_started = clock()
                    events += forecast(self, det_key, det, indicator, street or None, ctx)
                    forecast_s += clock() - forecast_started
                weak_threshold(self.correlator, det, indicator, street or None, window.end, ctx)
        thresholds_done = clock()
        if ctx.models is not None:
            events += anomalies(self, window, ctx)
        anomalies_done = clock()
        events += silences(self, window, ctx)
        silences_done = clock()
        for det_key, det in self.thresholds.items():
            if det_key not in fed:
                place = det_key.partition(STREET_SEP)[2] or None
                for tr in det.advance(window.end, ctx.early and det.spec.early):
                    events += window_signal(self, tr, det.spec, place, window, ctx)
        advanced = clock()
        change = self.correlator.evaluate(window.end)
        if change is not None:
            events += composite(self, change, ctx)
        composed = clock()
        events += public_opinion(
            self, window.end, window.start, window.tallies, window.samples, ctx
        )
        done = clock()
        _THRESHOLD_S.observe(thresholds_done - started - forecast_s + advanced - silences_done)
        if forecasting:
            _FORECAST_S.observe(forecast_s)
        if ctx.models is not None:
            _ANOMALY_S.observe(anomalies_done - thresholds_done)
        _DATA_QUALITY_S.observe(silences_done - anomalies_done)
        _COMPOSITE_S.observe(composed - advanced)
        _OPINION_S.observe(done - composed)
        return events

    def detector(self, det_key: str, spec: ThresholdSpec) -> ThresholdDetector:
        """The threshold detector of one rule series, judging by the configured ``spec``."""
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

    # -- early decisions ---------------------------------------------------------------
    # streams.alerting.early_rules's functions, bound here rather than wrapped: the
    # pipeline asks crossings of every reading that may be past a bound, and a wrapper
    # would add a call to each.
    crossings = early_rules.crossings
    on_reading = early_rules.on_reading
    catch_up = early_rules.catch_up

    def act(self, action: AlertAction, ctx: DetectionContext) -> list[AlertEvent]:
        return self.book.act(action, ctx.names, ctx.silences, ctx.max_notes)

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
            ("dropped the appeals kept as evidence by {n} series", self._forget_samples),
        ]
        return fit(self.dumps, steps, max_bytes)

    def _forget_samples(self) -> int:
        kept = [series for series in self.opinion.values() if series.samples]
        for series in kept:
            series.samples.clear()
        return len(kept)

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
