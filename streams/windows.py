"""Per-district event-time windows: the state behind the vital signs.

One :class:`DistrictWindows` per district lives in a Faust table keyed by district.
It holds the open 1-minute tumbling windows per indicator, the last closed minutes
(the rolling view), the event-time watermark, and the highest source offset it has
applied per input partition, so that events reprocessed after a crash are
recognised and not counted twice.

Timeline (window 60 s, lateness 120 s)::

    event times seen   10:00:05 ... 10:02:59  10:03:01
    watermark                       10:02:59  10:03:01
    window 10:00-10:01 closes when watermark >= 10:01 + 120 s = 10:03:00  -> at 10:03:01
    an event at 10:00:30 arriving after that is late -> dead letter "late"
    an event at 10:01:30 arriving then is still counted (its window is open)

A district's events arrive on several input topics, which Kafka delivers with some
skew (during a catch-up one topic may run minutes of event time ahead of another).
So each source topic has its own watermark, and windows close on the *lowest*
watermark among the sources that are currently active (they delivered an event
for this district recently, in wall time). A source that goes quiet stops
holding the others back; a district that stays silent for ``idle_close_s``
seconds of wall time has all its open windows closed, so the last minutes of a
quiet district are still published.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

STREET_SEP = "@"  # "<indicator>@<street>": a street's own aggregate of an indicator

# [count, sum, min, max]: a list, so the changelog stays small and the update is cheap.
Agg = list[float]


def new_agg(value: float) -> Agg:
    return [1, value, value, value]


def add_to(agg: Agg, value: float) -> None:
    agg[0] += 1
    agg[1] += value
    if value < agg[2]:
        agg[2] = value
    if value > agg[3]:
        agg[3] = value


def merge(aggs: Iterable[Agg]) -> Agg | None:
    out: Agg | None = None
    for a in aggs:
        if out is None:
            out = [a[0], a[1], a[2], a[3]]
        else:
            out[0] += a[0]
            out[1] += a[1]
            out[2] = min(out[2], a[2])
            out[3] = max(out[3], a[3])
    return out


def _rolled(rows: list[list[float]]) -> Agg:
    """:func:`merge` of history rows ``[start, count, sum, min, max]``, column-wise
    (the same sums, added in the same order)."""
    if len(rows) == 1:
        row = rows[0]
        return [row[1], row[2], row[3], row[4]]
    _, counts, sums, lows, highs = zip(*rows, strict=True)
    return [sum(counts), sum(sums), min(lows), max(highs)]


@dataclass(frozen=True)
class ClosedWindow:
    """A minute that closed: its aggregates and the rolling view ending with it."""

    district: str
    start: float
    end: float
    minute: dict[str, Agg]
    rolling: dict[str, Agg]


@dataclass
class DistrictWindows:
    district: str
    window_s: int = 60
    rolling_windows: int = 15
    #: source topic -> highest event time seen from it
    marks: dict[str, float] = field(default_factory=dict)
    #: end of the newest closed window; events before it are late
    closed_until: float = -math.inf
    #: window start -> indicator -> aggregate
    open: dict[float, dict[str, Agg]] = field(default_factory=dict)
    #: indicator -> [[window start, *agg], ...] of the last closed minutes
    history: dict[str, list[list[float]]] = field(default_factory=dict)
    #: "topic:partition" -> highest offset applied
    applied: dict[str, int] = field(default_factory=dict)

    @property
    def watermark(self) -> float:
        """The highest event time seen from any source."""
        return max(self.marks.values(), default=-math.inf)

    # --- exactly-once bookkeeping --------------------------------------------------
    def is_applied(self, tp: str, offset: int) -> bool:
        return offset <= self.applied.get(tp, -1)

    def mark_applied(self, tp: str, offset: int) -> None:
        if offset > self.applied.get(tp, -1):
            self.applied[tp] = offset

    # --- events ----------------------------------------------------------------------
    def window_of(self, event_time: float) -> float:
        return event_time - (event_time % self.window_s)

    def add(
        self,
        indicator: str,
        value: float,
        event_time: float,
        source: str = "",
        street_key: str | None = None,
    ) -> bool:
        """Count a value in its window; False when that window has already closed (late).

        With ``street_key`` (``"<indicator>@<street>"``) the value is also counted
        under that key, for rules that watch each street; street keys get no
        rolling view.
        """
        if event_time < self.closed_until:
            return False
        start = self.window_of(event_time)
        bucket = self.open.get(start)
        if bucket is None:
            bucket = self.open[start] = {}
        agg = bucket.get(indicator)
        if agg is None:
            bucket[indicator] = new_agg(value)
        else:
            add_to(agg, value)
        if street_key is not None:
            agg = bucket.get(street_key)
            if agg is None:
                bucket[street_key] = new_agg(value)
            else:
                add_to(agg, value)
        if event_time > self.marks.get(source, -math.inf):
            self.marks[source] = event_time
        return True

    # --- closing -----------------------------------------------------------------
    def close_due(
        self, lateness_s: float, active: Iterable[str] | None = None
    ) -> list[ClosedWindow]:
        """Close every window whose end plus the lateness the watermark has passed.

        The watermark is the lowest mark among the ``active`` sources (all sources
        seen when None). An active source not seen yet holds everything back: right
        after a start its events may simply not have been fetched yet. With no
        active source nothing closes here (see close_all).
        """
        sources = list(self.marks) if active is None else list(active)
        if not sources:
            return []
        watermark = min(self.marks.get(s, -math.inf) for s in sources)
        return self._close(lambda start: start + self.window_s + lateness_s <= watermark)

    def close_all(self) -> list[ClosedWindow]:
        """Close every open window (the district went quiet)."""
        return self._close(lambda start: True)

    def _close(self, due: Any) -> list[ClosedWindow]:
        closed: list[ClosedWindow] = []
        for start in sorted(s for s in self.open if due(s)):
            minute = self.open.pop(start)
            end = start + self.window_s
            horizon = end - self.rolling_windows * self.window_s
            for indicator, agg in minute.items():
                if STREET_SEP not in indicator:
                    self.history.setdefault(indicator, []).append([start, *agg])
            rolling: dict[str, Agg] = {}
            for indicator, rows in list(self.history.items()):
                if rows[0][0] < horizon:  # rows are in time order: drop the expired head
                    rows = [h for h in rows if h[0] >= horizon]
                    if not rows:
                        del self.history[indicator]
                        continue
                    self.history[indicator] = rows
                rolling[indicator] = _rolled(rows)
            closed.append(ClosedWindow(self.district, start, end, minute, rolling))
            self.closed_until = max(self.closed_until, end)
        return closed

    # --- (de)serialisation for the table changelog ------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "district": self.district,
            "window_s": self.window_s,
            "rolling_windows": self.rolling_windows,
            "marks": self.marks,
            "closed_until": None if self.closed_until == -math.inf else self.closed_until,
            "open": [[start, bucket] for start, bucket in self.open.items()],
            "history": self.history,
            "applied": self.applied,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DistrictWindows:
        return cls(
            district=d["district"],
            window_s=d["window_s"],
            rolling_windows=d["rolling_windows"],
            marks=d["marks"],
            closed_until=-math.inf if d["closed_until"] is None else d["closed_until"],
            open={start: bucket for start, bucket in d["open"]},
            history=d["history"],
            applied=d["applied"],
        )
