"""Weak signals of a district, and the composite alert several of them make together.

A threshold rule pending or near its first bound, or an anomaly score that raised no
alert (:mod:`streams.alerting.anomalies`), is a weak signal for the district's
:class:`~detectors.composite.Correlator`; weak signals in several domains of one place
within its window are one composite alert, owned by the command centre.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from detectors.composite import CompositeChange, Correlator, WeakSignal
from detectors.thresholds import ThresholdDetector
from streams.alerting.evidence import describe
from streams.alerting.lifecycle import Signal
from streams.core.config import Sharing
from streams.core.messages import AlertEvent, AlertKind, Evidence, Grade, MemberSignal

if TYPE_CHECKING:
    from streams.alerting.detection import DetectionContext, DistrictDetection

COMPOSITE_RULE = "composite.weak-signals"


def weak_threshold(
    correlator: Correlator,
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
        correlator.add(
            WeakSignal(
                at,
                ind.domain,
                indicator,
                street,
                0.5 if det.phase == "pending" else 0.3,
                f"{spec.rule_id}: {describe(spec)} {det.level:.4g} "
                f"({'pending' if det.phase == 'pending' else 'near'} {first:g})",
            )
        )


def composite(
    state: DistrictDetection, change: CompositeChange, ctx: DetectionContext
) -> list[AlertEvent]:
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
    correlator = state.correlator
    evidence = Evidence(
        rule=COMPOSITE_RULE,
        version=f"{correlator.min_domains}d/{correlator.window_s:g}s",
        aggregate=f"weak signals in {len(domains)} domains within {correlator.window_s / 60:g} min",
        members=members,
        detail=", ".join(domains),
    )
    signal = Signal(
        action=change.kind,
        kind=AlertKind.COMPOSITE,
        rule=COMPOSITE_RULE,
        district=state.district,
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
    return state.book.apply(signal, ctx.names, ctx.silences)
