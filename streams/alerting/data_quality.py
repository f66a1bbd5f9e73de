"""Data-quality alerts of a district: a gauge gone quiet (:func:`silences`).

Each gauge indicator the district has reported keeps a
:class:`~detectors.thresholds.SilenceWatch` (``DistrictDetection.silence``), which
every closed minute moves on.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from detectors.thresholds import SilenceWatch
from streams.alerting.lifecycle import Signal
from streams.core.config import Sharing
from streams.core.messages import AlertEvent, AlertKind, Evidence, Grade
from streams.state.windows import STREET_SEP, ClosedWindow

if TYPE_CHECKING:
    from streams.alerting.detection import DetectionContext, DistrictDetection

SILENCE_RULE = "data_quality.silence"


def silences(
    state: DistrictDetection, window: ClosedWindow, ctx: DetectionContext
) -> list[AlertEvent]:
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
        watch = state.silence.get(key)
        if watch is None:
            watch = state.silence[key] = SilenceWatch(ind.expected_interval_s, factor)
        if watch.seen(window.end) == "resolve":
            events += _data_quality(state, "resolve", key, window.end, watch, ctx)
    for key, watch in state.silence.items():
        if watch.check(window.end) == "fire":
            events += _data_quality(state, "fire", key, window.end, watch, ctx)
    return events


def _data_quality(
    state: DistrictDetection,
    action: str,
    indicator: str,
    at: float,
    watch: SilenceWatch,
    ctx: DetectionContext,
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
        district=state.district,
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
    return state.book.apply(signal, ctx.names, ctx.silences)
