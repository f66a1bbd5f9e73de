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
seconds of wall time has its open windows closed, so the last minutes of a
quiet district are still published.

No single record moves the district on its own (:meth:`DistrictWindows.admit`).
A record more than ``max_ahead_s`` ahead of the newest event time the district
has counted is *held* (kept in this state, not counted) until its own stream
says whether it was right: the next record of the same source confirms it when
it is not more than ``max_ahead_s`` earlier nor more than ``CONFIRM_WITHIN_S``
later (the stream really jumped, as after a gap, and goes on from there), and
contradicts it when it is earlier (a clock far ahead, a mistyped date: the held
record is dead-lettered). A next record more than ``CONFIRM_WITHIN_S`` later
decides nothing about the held one, since two mistyped dates in a row lie days
apart: both wait, each for its own verdict, and a held record is counted as soon
as its stream or another one catches up with it. A sparse source read ahead of
its district in a catch-up (an hour and more between its records) so keeps
every record until the district reaches them.
``max_ahead_s`` is below the allowed lateness, so a record a stream counts can
never close a window that in-order records of the district still fall in.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from operator import add
from typing import Any

from streams.core.state import StateError

# how much later than a held record the next record of its stream may be and still
# confirm it: a busy source's records follow each other within minutes, while two
# wrong dates in a row (a day and time drawn anew each time) are days apart; a record
# further ahead than that is held as well, and the earlier one waits on
CONFIRM_WITHIN_S = 3600.0

WINDOWS_STATE_VERSION = 1
"""The version of the ``district-windows`` state (its JSON's ``version``) this release writes."""

STREET_SEP = "@"  # "<indicator>@<street>": a street's own aggregate of an indicator

#: The samples a window keeps per facet (:meth:`DistrictWindows.tally`): the highest ranked.
SAMPLES_PER_FACET = 3

# [rank, document]: one sample a facet keeps of its window
Sample = list[Any]

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


# a held record: [event time, source, payload]; the payload is the caller's (JSON-able)
Held = list[Any]


@dataclass
class Admission:
    """What :meth:`DistrictWindows.admit` decided about one record and the held ones."""

    # "count", "hold" or "full" (ahead, and no room to hold it)
    verdict: str
    confirmed: list[Held] = field(default_factory=list)  # held records to count first
    contradicted: list[tuple[Held, str]] = field(default_factory=list)  # to dead-letter, why


@dataclass(frozen=True)
class ClosedWindow:
    """A minute that closed: its aggregates and the rolling view ending with it, and its
    facets' tallies and samples (:meth:`DistrictWindows.tally`)."""

    district: str
    start: float
    end: float
    minute: dict[str, Agg]
    rolling: dict[str, Agg]
    tallies: dict[str, list[float]] = field(default_factory=dict)
    samples: dict[str, list[Sample]] = field(default_factory=dict)


def keep_sample(kept: list[Sample], rank: float, sample: Any) -> None:
    """Keep ``sample`` among ``kept`` (highest rank first) when it ranks among the
    :data:`SAMPLES_PER_FACET` highest; of equal ranks the earlier stays ahead."""
    at = len(kept)
    while at > 0 and kept[at - 1][0] < rank:
        at -= 1
    if at < SAMPLES_PER_FACET:
        kept.insert(at, [rank, sample])
        del kept[SAMPLES_PER_FACET:]


# Long on purpose: one district's whole windowed state is one table value, read and
# written as one (its changelog record); its parts share the district's clock and offsets.
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
    #: source topic -> records held back as too far ahead, in arrival order (see :meth:`admit`)
    held: dict[str, list[Held]] = field(default_factory=dict)
    #: the newest event time counted from any source
    top: float = -math.inf
    #: window start -> facet -> tally: counts a reading adds besides its indicator's
    #: aggregate (:meth:`tally`; an appeal's category and place)
    tallies: dict[float, dict[str, list[float]]] = field(default_factory=dict)
    #: window start -> facet -> the highest ranked samples, highest first
    samples: dict[float, dict[str, list[Sample]]] = field(default_factory=dict)
    #: street and category -> [time, id] of the first appeal of its open run of repeats
    #: (``streams.voice.channels.repeat_in``), restored with the offsets it was built from
    runs: dict[str, list[Any]] = field(default_factory=dict)

    @property
    def watermark(self) -> float:
        """The highest event time seen from any source."""
        return self.top

    # --- records ahead of the district ------------------------------------------------
    def admit(
        self,
        event_time: float,
        source: str,
        payload: Any,
        size: int,
        max_ahead_s: float,
        hold_max_bytes: int,
    ) -> Admission:
        """Whether to count a valid record now, and what becomes of the held ones.

        Call it for every valid record before :meth:`add`; the caller counts the
        confirmed records (first) and this one if the verdict is ``count``, and
        dead-letters the contradicted ones. ``size`` is what holding the record
        costs (its payload's bytes); at most ``hold_max_bytes`` are held. A caller
        may pass ``payload`` as None and set it (``held[source][-1][2]``) once the
        verdict is ``hold``, when making it costs more than deciding.
        """
        out = Admission("count")
        reference = self.top
        waiting: list[Held] = []
        reached = -math.inf  # the newest held record of this stream that it confirms
        for mine in self.held.pop(source, []):
            if event_time < mine[0] - max_ahead_s:
                out.contradicted.append(
                    (
                        mine,
                        f"the next record of its stream, at {_iso(event_time)}, is "
                        f"{mine[0] - event_time:.0f} s earlier",
                    )
                )
            elif event_time <= mine[0] + CONFIRM_WITHIN_S:
                out.confirmed.append(mine)
                reached = max(reached, mine[0])
            else:
                waiting.append(mine)  # too far past it to vouch for it either way
        if waiting:
            self.held[source] = waiting
        reference = max(reference, reached)
        if reference == -math.inf or event_time > reference + max_ahead_s:
            if self.held_bytes() + size > hold_max_bytes:
                out.verdict = "full"
            else:
                self.held.setdefault(source, []).append([event_time, source, payload, size])
                out.verdict = "hold"
        else:
            reference = max(reference, event_time)
        if reference > -math.inf:
            # held records the district (or this stream) has now caught up with
            for other, records in list(self.held.items()):
                keep = [h for h in records if h[0] > reference + max_ahead_s]
                out.confirmed.extend(h for h in records if h[0] <= reference + max_ahead_s)
                if keep:
                    self.held[other] = keep
                else:
                    del self.held[other]
        return out

    def held_bytes(self) -> int:
        return sum(h[3] for records in self.held.values() for h in records)

    def held_records(self) -> list[Held]:
        return [h for records in self.held.values() for h in records]

    def settle_held(
        self, now: float, max_ahead_s: float, quiet_s: float
    ) -> tuple[list[Held], list[tuple[Held, str]]]:
        """The district went quiet: count the held records it reached, drop the rest.

        A held record is counted when it lies within ``max_ahead_s`` of what the
        district counted, or when the district counted nothing and the record is a
        fresh one by the clock (no older than the quiet spell, not ahead of it).
        Anything else waited for a confirmation that never came.
        """
        counted: list[Held] = []
        dropped: list[tuple[Held, str]] = []
        for held in self.held_records():
            t = held[0]
            if (self.top > -math.inf and t <= self.top + max_ahead_s) or (
                now - quiet_s - max_ahead_s <= t <= now + max_ahead_s
            ):
                counted.append(held)
            else:
                dropped.append(
                    (
                        held,
                        f"the district went quiet at {_iso(self.top)} without another record "
                        "of its stream to confirm it",
                    )
                )
        self.held.clear()
        return counted, dropped

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
            if event_time > self.top:
                self.top = event_time
        return True

    def tally(
        self, t: float, facets: tuple[str, ...], counts: tuple[float, ...], sample: Any, rank: float
    ) -> None:
        """Add ``counts`` to each facet's tally in the window of ``t`` (counted already:
        :meth:`add` returned True), and keep ``sample`` by ``rank`` for the narrowest,
        the last facet (:func:`keep_sample`). A facet is a slice of the district (an
        appeal's category; its category in its street, narrower); it closes with the
        window (:attr:`ClosedWindow.tallies`) and joins no rolling view."""
        start = self.window_of(t)
        bucket = self.tallies.setdefault(start, {})
        for facet in facets:
            row = bucket.get(facet)
            bucket[facet] = list(counts) if row is None else list(map(add, row, counts))
        if sample is not None and facets:
            keep_sample(self.samples.setdefault(start, {}).setdefault(facets[-1], []), rank, sample)

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

    def close_all(self, until: float = math.inf) -> list[ClosedWindow]:
        """Close every open window ending by ``until`` (the district went quiet).

        The worker passes the clock: a window whose end is still ahead of the
        clock may yet receive records, however quiet the district.
        """
        return self._close(lambda start: start + self.window_s <= until)

    def close_oldest(self, keep: int) -> list[ClosedWindow]:
        """Close the oldest open windows until ``keep`` remain (state bound)."""
        if len(self.open) <= keep:
            return []
        cut = sorted(self.open)[len(self.open) - keep - 1]
        return self._close(lambda start: start <= cut)

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
            tallies = self.tallies.pop(start, {})
            samples = self.samples.pop(start, {})
            closed.append(
                ClosedWindow(self.district, start, end, minute, rolling, tallies, samples)
            )
            self.closed_until = max(self.closed_until, end)
        return closed

    # --- (de)serialisation for the table changelog ------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "version": WINDOWS_STATE_VERSION,
            "district": self.district,
            "window_s": self.window_s,
            "rolling_windows": self.rolling_windows,
            "marks": self.marks,
            "closed_until": None if self.closed_until == -math.inf else self.closed_until,
            "open": [[start, bucket] for start, bucket in self.open.items()],
            "history": self.history,
            "applied": self.applied,
            "held": self.held,
            "top": None if self.top == -math.inf else self.top,
            "tallies": [[start, bucket] for start, bucket in self.tallies.items()],
            "samples": [[start, bucket] for start, bucket in self.samples.items()],
            "runs": self.runs,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DistrictWindows:
        """The value :meth:`to_dict` wrote; raises
        :class:`~streams.core.state.StateError` for one this release cannot restore."""
        try:
            version = d.get("version", 1)  # (state written before versions: the same layout)
            if not isinstance(version, int) or version > WINDOWS_STATE_VERSION:
                raise StateError(
                    f"table district-windows: state version {version!r} was written by a "
                    "newer release of cityvitals; this one reads versions up to "
                    f"{WINDOWS_STATE_VERSION}. Run the release that wrote it, or one newer "
                    "(docs/operations.md, upgrades)"
                )
            return cls._from_dict(d)
        except StateError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise StateError(f"table district-windows: malformed value: {exc!r}") from None

    @classmethod
    def _from_dict(cls, d: Mapping[str, Any]) -> DistrictWindows:
        return cls(
            district=d["district"],
            window_s=d["window_s"],
            rolling_windows=d["rolling_windows"],
            marks=d["marks"],
            closed_until=-math.inf if d["closed_until"] is None else d["closed_until"],
            open={start: bucket for start, bucket in d["open"]},
            history=d["history"],
            applied=d["applied"],
            held=d.get("held", {}),
            top=_top(d),
            # (state written before facets were tallied has none)
            tallies={start: bucket for start, bucket in d.get("tallies", ())},
            samples={start: bucket for start, bucket in d.get("samples", ())},
            runs=d.get("runs", {}),  # (state written before the runs were kept has none)
        )


def _top(d: Mapping[str, Any]) -> float:
    top = d.get("top")
    if top is not None:
        return float(top)
    return max(d["marks"].values(), default=-math.inf)  # written before "top" was kept


def _iso(t: float) -> str:
    if not math.isfinite(t):
        return "the start"
    return datetime.fromtimestamp(t, UTC).isoformat()
