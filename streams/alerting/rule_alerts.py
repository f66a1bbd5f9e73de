"""A threshold rule's findings as alerts of a district's book.

A rule's transition (:class:`~detectors.thresholds.Transition`), decided at a window's
close or on a reading (:mod:`streams.alerting.early`), and its trend forecast
(:mod:`streams.alerting.forecasts`) become a :class:`~streams.alerting.lifecycle.Signal`
owned by the rule's department and co-handled by the departments of its data.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from detectors.thresholds import ThresholdSpec, Transition
from streams.alerting.evidence import describe, recent_values
from streams.alerting.lifecycle import Signal
from streams.core.messages import (
    AlertEvent,
    AlertKind,
    Evidence,
    EvidencePoint,
    EvidenceReading,
    Grade,
)
from streams.state.windows import ClosedWindow

if TYPE_CHECKING:
    from streams.alerting.detection import DetectionContext, DistrictDetection


def window_signal(
    state: DistrictDetection,
    tr: Transition,
    spec: ThresholdSpec,
    street: str | None,
    window: ClosedWindow,
    ctx: DetectionContext,
) -> list[AlertEvent]:
    """A transition decided at ``window``'s close, showing the series' last minutes."""
    values = recent_values(state.recent, spec.indicator, street)
    return transition_signal(state, tr, spec, street, window.end - window.start, values, ctx)


def transition_signal(
    state: DistrictDetection,
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
        aggregate=describe(spec),
        window_start=datetime.fromtimestamp(tr.at - span, UTC),
        window_end=datetime.fromtimestamp(tr.at, UTC),
        threshold=tr.threshold,
        values=values,
        detail=f"{tr.reason}; breach since {datetime.fromtimestamp(tr.since, UTC).isoformat()}",
        decided="window" if reading is None else "reading",
        reading=reading,
    )
    return rule_alert(
        state,
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


def rule_alert(
    state: DistrictDetection,
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
        district=state.district,
        street=street,
        key=indicator,
        indicators=(indicator,),
        domain=ind.domain,
        grade=grade,
        at=at,
        evidence=evidence,
        department=department,
        co_departments=tuple(d for d in (ind.department, *ind.co_departments) if d != department),
        sharing=ind.sharing,
    )
    return state.book.apply(signal, ctx.names, ctx.silences)
