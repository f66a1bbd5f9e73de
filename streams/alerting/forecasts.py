"""Trend forecasts of a district's threshold rules: a predictive warning before a bound.

Each rule series with a level keeps a :class:`~detectors.forecast.CrossingWatch`
(``DistrictDetection.forecasts``, by detector key), fed the rule's level at each closed
minute that feeds the rule; a forecast that reaches a grade boundary within the horizon raises a warning
(kind ``warning``) under the rule's name with ``.forecast`` appended.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from detectors.forecast import CrossingWatch
from detectors.thresholds import ThresholdDetector
from streams.alerting.evidence import describe, recent_values
from streams.alerting.rule_alerts import rule_alert
from streams.core.messages import AlertEvent, AlertKind, Evidence, Forecast, Grade

if TYPE_CHECKING:
    from streams.alerting.detection import DetectionContext, DistrictDetection


def forecast(
    state: DistrictDetection,
    det_key: str,
    det: ThresholdDetector,
    indicator: str,
    street: str | None,
    ctx: DetectionContext,
) -> list[AlertEvent]:
    """A predictive warning when the rule's level trends across a grade boundary."""
    if det.spec.aggregate.value == "reading" or det.level is None:
        return []
    watch = state.forecasts.get(det_key)
    if watch is not None and watch.spec is not det.spec and watch.spec == det.spec:
        watch.spec = det.spec  # restored: the same rule, as a copy of its own
    if watch is None or watch.spec is not det.spec:  # new, or the rule changed
        watch = state.forecasts[det_key] = CrossingWatch(det.spec, horizon_s=ctx.forecast_horizon_s)
    crossing = watch.observe(det.latest, det.level, crossed=det.phase != "inactive")
    if crossing is None:
        return []
    spec = det.spec
    at = datetime.fromtimestamp(crossing.at, UTC)
    evidence = Evidence(
        rule=f"{spec.rule_id}.forecast",
        version=spec.version,
        observed=crossing.level,
        aggregate=describe(spec),
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
        values=recent_values(state.recent, indicator, street),
        detail=crossing.reason,
    )
    return rule_alert(
        state,
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
