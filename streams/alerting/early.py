"""Early decisions: a reading that settles an alarm raises it at once, not at window close.

A rule on each reading, a window maximum watched from above, a window minimum
watched from below, and a window count, or sum or rate of values never below 0,
watched from above (:attr:`~detectors.thresholds.ThresholdSpec.early`) can only
move towards their bound while a window fills, so the reading that crosses it
decides. Such a reading goes through :meth:`ThresholdDetector.early
<detectors.thresholds.ThresholdDetector.early>` as it is counted; the closed
window then only lowers (de-escalates, clears, resolves, ends a pending breach or
fires one whose pending time ran out).

A count, sum or rate judges the reading by the window's running total as the
reading leaves it (:meth:`ThresholdDetector.running_total
<detectors.thresholds.ThresholdDetector.running_total>`): the closed minutes the
detector holds, plus the open windows' totals taken when the reading was counted
(:func:`partials`), over each rule window that ends with the reading's minute or
a later open one. Every reading that adds to a window's total so judges it as it
stands, and the last one its final total, so the close finds nothing new to
raise.

**One answer whatever the timing.** Windows close when the slowest active source
of the district has passed their end plus the lateness, so when a reading
arrives, one or more earlier windows of its district may still be open, and
their closing may lower the rule first. The events are defined by one order,
the *canonical* one, that the live worker, ``cityvitals replay`` and the fault
verifier's oracle all reproduce:

    for each window of the district, in time order:
        the series' crossing readings whose clock falls in it, in arrival order;
        then the window's close.

A reading's *clock* is the latest event time among the crossing readings of its
series so far (a reading older than one already seen is judged as of that one),
so every series is judged in its own event-time order.

A reading's transitions are raised at once only when they cannot come out
otherwise in that order: the detector is copied, the earlier windows still open
are closed on the copy with what they hold so far, and if none of those closes
would change the rule's state, the reading's transitions are the canonical ones.
A window still open can only grow worse, which lowers nothing, with one
exception: an alert in its hold time (clearing) at a grade above the rule's
mildest is brought back at a milder grade, a de-escalation, by a window that a
late reading lifts past a milder bound. So while the rule clears at such a grade,
a reading waits for the earlier windows whatever they hold so far. Otherwise they wait,
and come out as soon as the earlier windows have closed, at the latest when the
reading's own window closes. The series keeps its crossing readings until their
window closes (``readings``) and the transitions raised ahead (``raised``), so
that the close applies them to the detector in the canonical order without
raising them twice.

The copy and the replay of the held readings cost tens of microseconds, paid
only for readings past a rule's mildest bound; every other reading costs one set
lookup in the worker's batch loop.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from detectors.thresholds import ThresholdDetector, Transition

# window start -> key ("<indicator>" or "<indicator>@<street>") -> [count, sum, min, max]
OpenWindows = Mapping[float, Mapping[str, list[float]]]


@dataclass(slots=True)
class EarlyReading:
    """A reading past a rule's mildest bound, kept until its window closes."""

    clock: float  # the series' clock when it came (see the module docstring)
    at: float  # its own event time
    value: float  # what the rule judges: the reading's value, or a window's running total
    ref: str  # where it came from: "topic:partition:offset", or a row of a replayed file
    own: float  # the reading's own value


@dataclass
class EarlySeries:
    """The early side of one rule on one series (a district, or one street)."""

    clock: float = -math.inf
    readings: list[EarlyReading] = field(default_factory=list)
    # keys (kind, grade, at) of transitions raised before their window closed
    raised: list[tuple[str, int, float]] = field(default_factory=list)

    def take(self, at: float, value: float, ref: str, own: float) -> bool:
        """Keep one crossing reading (``value`` judged, ``own`` its value); False for one
        already kept (delivered again)."""
        if any(r.ref == ref for r in self.readings):
            return False
        self.clock = max(self.clock, at)
        self.readings.append(EarlyReading(self.clock, at, value, ref, own))
        return True


# window key -> (window start, count, sum) of each open window holding it
Partials = Mapping[str, tuple[tuple[float, float, float], ...]]


def partials(open_windows: OpenWindows, keys: tuple[str, ...]) -> Partials:
    """The open windows' running totals of ``keys``, taken as a reading is counted.

    Taken then, not when the batch ends, so that a count, sum or rate rule judges
    each reading by what the readings before it added, as replay does reading by
    reading, wherever the batches end.
    """
    out: dict[str, tuple[tuple[float, float, float], ...]] = {}
    for key in keys:
        out[key] = tuple(
            (start, aggs[key][0], aggs[key][1])
            for start, aggs in open_windows.items()
            if key in aggs
        )
    return out


def _window_of(t: float, window_s: float) -> float:
    return t - (t % window_s)


def ahead(
    series: EarlySeries,
    det: ThresholdDetector,
    key: str,
    open_windows: OpenWindows,
    window_s: float,
) -> Iterator[tuple[Transition, EarlyReading]]:
    """The transitions of the kept readings that are certain now and not yet raised.

    Marks each as raised. ``key`` is the series' key in the open windows.
    """
    if not series.readings:
        return
    sim = copy.deepcopy(det)
    last = _window_of(series.readings[-1].clock, window_s)
    pending = iter(series.readings)
    reading = next(pending, None)
    for start in sorted(s for s in open_windows if s < last):
        while reading is not None and reading.clock < start + window_s:
            yield from _raise(series, sim, reading)
            reading = next(pending, None)
        if sim.phase == "clearing" and sim.grade != sim.spec.mildest_grade:
            return  # a late reading in that window could still bring the alert back lower
        before = (sim.phase, sim.grade, sim.since, sim.clear_since)
        agg = open_windows[start].get(key)
        end = start + window_s
        if agg is not None and agg[0] > 0:
            count, total, low, high = agg
            changed = sim.update_window(start, end, int(count), total, low, high, True)
        else:
            changed = sim.advance(end, settle=True)
        if changed or (sim.phase, sim.grade, sim.since, sim.clear_since) != before:
            return  # that window's close decides first: the rest waits for it
    while reading is not None:
        yield from _raise(series, sim, reading)
        reading = next(pending, None)


def _raise(
    series: EarlySeries, sim: ThresholdDetector, reading: EarlyReading
) -> Iterator[tuple[Transition, EarlyReading]]:
    for tr in sim.early(reading.clock, reading.value, reading.at):
        if tr.key not in series.raised:
            series.raised.append(tr.key)
            yield tr, reading


def settle(
    series: EarlySeries, det: ThresholdDetector, until: float
) -> Iterator[tuple[Transition, EarlyReading, bool]]:
    """Apply the kept readings of the windows ending by ``until`` to the detector.

    Yields each transition with its reading and whether it was raised already.
    """
    keep: list[EarlyReading] = []
    for reading in series.readings:
        if reading.clock >= until:
            keep.append(reading)
            continue
        for tr in det.early(reading.clock, reading.value, reading.at):
            raised = tr.key in series.raised
            if raised:
                series.raised.remove(tr.key)
            yield tr, reading, raised
    series.readings = keep
