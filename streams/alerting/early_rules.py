"""A district's early rules: the crossing readings it keeps, raises ahead and settles.

:mod:`streams.alerting.early` defines the canonical order and how a reading is judged
ahead of its window's close; here a district's detection state runs it. A reading past
an early rule's bound (:func:`crossings`) is kept in the rule series'
:class:`~streams.alerting.early.EarlySeries` (``DistrictDetection.early``) and raised
at once when no earlier open window could change the rule first (:func:`on_reading`),
or once those windows have closed (:func:`catch_up`); its own window's close applies
the kept readings to the detector in the canonical order (:func:`settle_early`).
:class:`~streams.alerting.detection.DistrictDetection` has the first three as its
methods.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from detectors.thresholds import ThresholdDetector, ThresholdSpec, Transition
from streams.alerting.early import EarlyReading, EarlySeries, OpenWindows, Partials, ahead, settle
from streams.alerting.rule_alerts import transition_signal
from streams.core import metrics
from streams.core.messages import AlertEvent, EvidencePoint, EvidenceReading
from streams.state.windows import STREET_SEP, ClosedWindow

if TYPE_CHECKING:
    from streams.alerting.detection import DetectionContext, DistrictDetection


def crossings(
    state: DistrictDetection,
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
    if at < state.fed_until:
        return []  # its window was judged already: delivered again after a restart
    out = []
    minute = at - at % window_s
    for spec, place in ctx.early_specs(indicator, state.district, street):
        level = value
        if spec.running:
            if partials is None:
                raise ValueError(f"{spec.rule_id}: a running rule needs the window totals")
            key = indicator if place is None else f"{indicator}{STREET_SEP}{place}"
            det = state.thresholds.get(f"{spec.rule_id}{STREET_SEP}{place or ''}")
            if det is None:
                det = ThresholdDetector(spec)  # nothing closed yet: the open totals alone
            level = det.running_total(partials.get(key, ()), minute, window_s)
        if spec.reaches_trigger(level):
            out.append((spec, place, level))
    return out


def on_reading(
    state: DistrictDetection,
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
    for spec, place, level in crossings(
        state, indicator, street, at, value, ctx, window_s, partials
    ):
        key = indicator if place is None else f"{indicator}{STREET_SEP}{place}"
        det_key = f"{spec.rule_id}{STREET_SEP}{place or ''}"
        det = state.detector(det_key, spec)
        series = state.early.get(det_key)
        if series is None:
            series = state.early[det_key] = EarlySeries()
        if not series.take(at, level, ref, value) or open_windows is None:
            continue
        for tr, reading in ahead(series, det, key, open_windows, window_s):
            events += _early_signal(state, tr, spec, place, series, reading, window_s, ctx)
    return events


def catch_up(
    state: DistrictDetection, open_windows: OpenWindows, window_s: float, ctx: DetectionContext
) -> list[AlertEvent]:
    """After windows closed: the kept readings' transitions that are now certain."""
    events: list[AlertEvent] = []
    for det_key, series in state.early.items():
        if not series.readings:
            continue
        det = state.thresholds[det_key]
        place = det_key.partition(STREET_SEP)[2] or None
        spec = det.spec
        key = spec.indicator if place is None else f"{spec.indicator}{STREET_SEP}{place}"
        for tr, reading in ahead(series, det, key, open_windows, window_s):
            events += _early_signal(state, tr, spec, place, series, reading, window_s, ctx)
    return events


def settle_early(
    state: DistrictDetection, window: ClosedWindow, ctx: DetectionContext
) -> list[AlertEvent]:
    """A window closed: its kept readings go to their detectors, in the canonical order
    (:mod:`streams.alerting.early`); transitions not raised ahead are raised now."""
    events: list[AlertEvent] = []
    until, window_s = window.end, window.end - window.start
    for det_key, series in state.early.items():
        if not series.readings or series.readings[0].clock >= until:
            continue
        det = state.thresholds[det_key]
        place = det_key.partition(STREET_SEP)[2] or None
        for tr, reading, raised in settle(series, det, until):
            if not raised:
                events += _early_signal(state, tr, det.spec, place, series, reading, window_s, ctx)
        if series.raised:
            stale = [k for k in series.raised if k[2] < until]
            if stale:  # raised ahead, yet not what the canonical order gave
                metrics.early_mismatches.inc(len(stale))
                series.raised = [k for k in series.raised if k[2] >= until]
    return events


def _early_signal(
    state: DistrictDetection,
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
    return transition_signal(state, tr, spec, street, window_s, points, ctx, decided)
