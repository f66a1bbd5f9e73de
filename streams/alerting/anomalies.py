"""The anomaly models of a district: one model and gate per indicator and per site group.

Each closed minute feeds every indicator's series its value and every site group
(:class:`~streams.alerting.models.SiteChoice`) its members' values together, on the
city's wall clock; the models are those :mod:`streams.alerting.models` chooses, kept in
``DistrictDetection.anomaly`` with the rule and version each was built with
(``DistrictDetection.anomaly_versions``), so an open alert keeps its model until it
resolves.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, TypeVar

from detectors.anomaly import AlertDecision, AnomalyGate, AnomalyScore, AnomalyScorer
from detectors.calibrated import Calibrated
from detectors.composite import WeakSignal
from streams.alerting.evidence import recent_values
from streams.alerting.lifecycle import Signal
from streams.core.config import Sharing
from streams.core.messages import AlertEvent, AlertKind, Evidence, Grade
from streams.state.windows import STREET_SEP, ClosedWindow

if TYPE_CHECKING:
    from streams.alerting.detection import DetectionContext, DistrictDetection

ANOMALY_RULE = "anomaly.seasonal-context"  # the built-in default model's rule name
LEGACY_RULE = "anomaly.seasonal-likelihood"  # the one model before models were configurable
WEAK_SCORE = 0.3  # an anomaly score this high that raised no alert is a weak signal
_EVENTS = {"firing": "fire", "updated": "update", "resolved": "resolve"}
_W = TypeVar("_W")  # what a model is built for: an indicator code, or a site group

#: An indicator's value of one closed minute, and how it was taken from the minute.
MinuteValues = dict[str, tuple[float, str]]


@dataclass(slots=True)
class _Minute:
    """One closed minute of a district, as its anomaly models are fed it."""

    state: DistrictDetection
    window: ClosedWindow
    ctx: DetectionContext
    values: MinuteValues
    t_local: float  # the minute's end on the city's wall clock


def _baseline(score: AnomalyScore, text: str) -> str:
    """``text`` with the model's expected value, empty for a model without one."""
    return "" if score.expected is None else text.format(f"{score.expected:.4g}")


def anomalies(
    state: DistrictDetection, window: ClosedWindow, ctx: DetectionContext
) -> list[AlertEvent]:
    """One model set per (district, indicator): fed each closed minute's value.

    A gauge's value is the minute's mean; a count's the minute's sum, and a
    minute without events counts 0 once the series exists.
    """
    minute = _Minute(state, window, ctx, _minute_values(state, window, ctx), ctx.local(window.end))
    return _series(minute) + _sites(minute)


def _minute_values(
    state: DistrictDetection, window: ClosedWindow, ctx: DetectionContext
) -> MinuteValues:
    """Each indicator's district-wide value of the minute (streets have no models)."""
    values: MinuteValues = {}
    for key, agg in window.minute.items():
        if STREET_SEP in key or agg[0] <= 0:
            continue
        ind = ctx.cfg.indicators.get(key)
        if ind is not None and ind.aggregation == "sum":
            values[key] = (agg[1], "sum over 1 min")
        else:
            values[key] = (agg[1] / agg[0], "mean over 1 min")
    for key in state.anomaly:
        ind = ctx.cfg.indicators.get(key)
        if key not in values and ind is not None and ind.aggregation == "sum":
            values[key] = (0.0, "sum over 1 min")
    return values


def _series(minute: _Minute) -> list[AlertEvent]:
    """Each indicator's own model; a high score that raised no alert is a weak signal."""
    state, ctx, t_local = minute.state, minute.ctx, minute.t_local
    assert ctx.models is not None
    events: list[AlertEvent] = []
    indicators = ctx.cfg.indicators
    for key, (value, aggregate) in minute.values.items():
        choice = ctx.models.choice(key)
        models, rule, version = _anomaly_models(
            state, key, choice.rule, choice.version, ctx.anomaly_model, key
        )
        score = models[0].update(t_local, value)
        decision = models[1].update(t_local, score)
        weak = score.warmed_up and not decision.active and score.score >= WEAK_SCORE
        ind = indicators.get(key) if weak else None
        if ind is not None:
            detail = f"anomaly score {score.score:.2f}{_baseline(score, ' (baseline {})')}"
            state.correlator.add(
                WeakSignal(minute.window.end, ind.domain, key, None, score.score, detail)
            )
        if decision.event is None or decision.grade is None:
            continue
        detail = f"{_baseline(score, 'seasonal baseline {}; ')}anomaly score {decision.score:.3f}"
        if rule != ANOMALY_RULE:
            detail += f" ({rule.removeprefix('anomaly.')})"
        events += _anomaly_signal(
            minute,
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
    return events


def _sites(minute: _Minute) -> list[AlertEvent]:
    """Each site group's joint model, fed in a minute in which every member has a value."""
    state, ctx, values = minute.state, minute.ctx, minute.values
    assert ctx.models is not None
    events: list[AlertEvent] = []
    for site in ctx.models.sites:
        if not all(code in values for code in site.indicators):
            continue  # a joint reading needs every member
        x: dict[Hashable, float] = {code: values[code][0] for code in site.indicators}
        models, rule, version = _anomaly_models(
            state, site.key, site.rule, site.version, ctx.site_model, site
        )
        model = models[0]
        assert isinstance(model, Calibrated)
        score = model.update_features(minute.t_local, x)
        decision = models[1].update(minute.t_local, score)
        if decision.event is None or decision.grade is None:
            continue
        shown = ", ".join(f"{code} {values[code][0]:.4g}" for code in site.indicators)
        detail = (
            f"site {site.name} ({shown}): how unlike their usual relationship, "
            f"anomaly score {decision.score:.3f} ({site.model})"
        )
        events += _anomaly_signal(
            minute,
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
    state: DistrictDetection,
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
    models = state.anomaly.get(key)
    built = state.anomaly_versions.get(key, (LEGACY_RULE, ""))
    if models is None or (built != (rule, version) and not models[1].active):
        models = state.anomaly[key] = build(what)
        built = state.anomaly_versions[key] = (rule, version)
    return models, built[0], built[1]


def _anomaly_signal(
    minute: _Minute,
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
    state, window, ctx = minute.state, minute.window, minute.ctx
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
        values=recent_values(state.recent, indicators[0], None),
        detail=detail,
    )
    signal = Signal(
        action=_EVENTS[decision.event],
        kind=AlertKind.ALARM,
        rule=rule,
        district=state.district,
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
    return state.book.apply(signal, ctx.names, ctx.silences)
