"""Expert thresholds: graded limits with pending, hold, hysteresis and missing-data rules.

A :class:`ThresholdSpec` is one rule resolved for one series (an indicator in one
district or street): what it watches (each reading, or an aggregate over a
sliding window), up to four grade boundaries, and its timing. A
:class:`ThresholdDetector` evaluates it in event time and reports
:class:`Transition` s: ``fire``, ``update`` (grade up or down) and ``resolve``.

The phases, for a rule whose bad direction is ``above`` (``below`` mirrors it)::

    inactive ──level ≥ lowest bound──▶ pending ──breach lasted `pending_s`──▶ firing
       ▲                                 │ level back under                   │  ▲
       │                                 ▼                                    │  │ level ≥ bound − hysteresis
       └──────────────────────────── inactive        level < lowest bound − hysteresis
                                                                              ▼  │
       ◀──────────────── resolve: stayed clear for `hold_s` ─────────────── clearing

- **Grades** are China's warning levels: 4 (IV, blue) is the least serious and
  1 (I, red) the most. A rule may leave grades out; bounds must get stricter
  from IV to I.
- **Pending** (like Prometheus ``for``): a breach must last ``pending_s`` before
  the rule fires, so a single spike does not page anybody. While pending the
  grade follows the level; the rule fires at the grade the level has then.
- **Escalation** is immediate once firing; **de-escalation** needs the level to
  fall past the lower grade's bound by ``hysteresis`` (in the indicator's unit),
  so a level hovering at a bound does not flap between grades.
- **Hold** (anti-flap): after the level has cleared (past the lowest bound by the
  hysteresis), the alert stays open for ``hold_s``; a new breach in that time
  continues the same alert.
- **Missing data**: after ``missing_after_s`` without a reading, ``keep`` leaves
  the state as it is (the default: silence is not good news) and ``resolve``
  resolves an open alert (its transition says why). A silent *source* is a
  data-quality matter, watched separately by :class:`SilenceWatch`.

Window aggregates keep per-bucket sums (``MAX_BUCKETS`` buckets per window), so a
detector's state is bounded whatever the reading rate; the window's trailing
edge moves in steps of one bucket (a 60th of the window).

Example: PM2.5, 15-minute mean, bounds 75 / 115 / 150 / 250 µg/m³:

>>> spec = ThresholdSpec("air.pm25", "iot.pm25", Aggregate.MEAN, 900, Direction.ABOVE,
...                      (75, 115, 150, 250), pending_s=300, hold_s=600, hysteresis=5)
>>> det = ThresholdDetector(spec)
>>> [det.update(t, 120.0) for t in (0, 120, 240)]
[[], [], []]
>>> [(tr.kind, tr.grade) for tr in det.update(300, 120.0)]
[('fire', 3)]
"""

from __future__ import annotations

import itertools
import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from functools import cached_property

MAX_BUCKETS = 60
GRADES = (4, 3, 2, 1)  # the order of ThresholdSpec.bounds: IV, III, II, I


class Direction(StrEnum):
    ABOVE = "above"  # high values are bad
    BELOW = "below"  # low values are bad


class Aggregate(StrEnum):
    READING = "reading"  # each reading as it arrives
    MEAN = "mean"
    MAX = "max"
    MIN = "min"
    SUM = "sum"
    COUNT = "count"  # number of readings in the window
    RATE = "rate"  # sum per minute over the window


class MissingData(StrEnum):
    KEEP = "keep"
    RESOLVE = "resolve"


@dataclass(frozen=True)
class ThresholdSpec:
    """One rule for one series. ``bounds`` are for grades IV, III, II, I (None = unused)."""

    rule_id: str
    indicator: str
    aggregate: Aggregate
    window_s: float
    direction: Direction
    bounds: tuple[float | None, float | None, float | None, float | None]
    pending_s: float = 0.0
    hold_s: float = 0.0
    hysteresis: float = 0.0
    missing: MissingData = MissingData.KEEP
    missing_after_s: float = 600.0
    version: str = "1"
    # the indicator's values are never negative (its range starts at 0 or above), so a
    # window's sum only grows while the window fills
    nonnegative: bool = False

    def __post_init__(self) -> None:
        used = [b for b in self.bounds if b is not None]
        if not used:
            raise ValueError("a rule needs at least one grade boundary")
        if any(not math.isfinite(b) for b in used):
            raise ValueError("grade boundaries must be finite numbers")
        stricter = all(
            (b > a) if self.direction is Direction.ABOVE else (b < a)
            for a, b in itertools.pairwise(used)
        )
        if not stricter:
            order = "increase" if self.direction is Direction.ABOVE else "decrease"
            raise ValueError(f"grade boundaries must {order} from IV to I, got {self.bounds}")
        if self.aggregate is not Aggregate.READING and self.window_s <= 0:
            raise ValueError("a window aggregate needs a window longer than 0 s")
        for name in ("pending_s", "hold_s", "hysteresis", "missing_after_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")

    @cached_property
    def first_bound(self) -> float:
        """The mildest grade's boundary: the first one set."""
        return next(b for b in self.bounds if b is not None)

    @cached_property
    def mildest_grade(self) -> int:
        """The grade of :attr:`first_bound`: an alert at it has no milder grade to fall to."""
        return next(g for g, b in zip(GRADES, self.bounds, strict=True) if b is not None)

    @cached_property
    def rises(self) -> bool:
        """The rule fires on values above its bounds (else below)."""
        return self.direction is Direction.ABOVE

    @cached_property
    def totals(self) -> bool:
        """The rule judges a window's total (sum, count or rate), not the readings' level."""
        return self.aggregate in (Aggregate.SUM, Aggregate.COUNT, Aggregate.RATE)

    @cached_property
    def _most_serious_first(self) -> tuple[tuple[int, float], ...]:
        return tuple(
            (g, b)
            for g, b in reversed(list(zip(GRADES, self.bounds, strict=True)))
            if b is not None
        )

    @cached_property
    def early(self) -> bool:
        """Whether a reading can decide this rule at once (see :meth:`ThresholdDetector.early`).

        True for a rule on each reading, for a window maximum watched from above or a
        minimum from below, and for a count, or a sum or rate of values never below
        0, watched from above: while a window fills they only move towards the
        bound, so no later reading can undo a crossing.
        """
        agg = self.aggregate
        above = self.direction is Direction.ABOVE
        return (
            agg is Aggregate.READING
            or (agg is Aggregate.MAX and above)
            or (agg is Aggregate.MIN and not above)
            or (agg is Aggregate.COUNT and above)
            or (agg in (Aggregate.SUM, Aggregate.RATE) and above and self.nonnegative)
        )

    @cached_property
    def running(self) -> bool:
        """Whether an early reading is judged by its window's running total (a count, sum
        or rate) rather than by its own value."""
        return self.aggregate in (Aggregate.COUNT, Aggregate.SUM, Aggregate.RATE)

    @cached_property
    def trigger(self) -> float:
        """The least bad value that can change an early rule's state: its mildest bound,
        eased by the hysteresis (a breach in the hold time continues the alert)."""
        first = next(b for b in self.bounds if b is not None)
        return first - self.hysteresis if self.above else first + self.hysteresis

    def reaches_trigger(self, level: float) -> bool:
        """Whether ``level`` (a reading, or a running total) is at or past :attr:`trigger`."""
        return level >= self.trigger if self.above else level <= self.trigger

    @cached_property
    def above(self) -> bool:
        """Whether values above the bounds are the bad ones."""
        return self.direction is Direction.ABOVE

    def grade_of(self, level: float, slack: float = 0.0) -> int | None:
        """The most serious grade whose bound ``level`` reaches (bounds eased by ``slack``).

        The bounds grow stricter from IV to I (checked at construction), so the first
        bound reached, from I down, is the answer.
        """
        if self.above:
            for grade, bound in self._most_serious_first:
                if level >= bound - slack:
                    return grade
        else:
            for grade, bound in self._most_serious_first:
                if level <= bound + slack:
                    return grade
        return None

    def bound_of(self, grade: int) -> float | None:
        return self.bounds[GRADES.index(grade)]

    def level_of(self, count: float, total: float, low: float, high: float) -> float | None:
        """The rule's aggregate of a window's readings, given their count, sum, minimum
        and maximum; None for a mean, maximum or minimum of no readings (unknown)."""
        agg = self.aggregate
        if agg is Aggregate.COUNT:
            return float(count)
        if agg is Aggregate.SUM:
            return total
        if agg is Aggregate.RATE:
            return total / (self.window_s / 60.0)
        if count == 0:
            return None
        if agg is Aggregate.MEAN:
            return total / count
        return high if agg is Aggregate.MAX else low


@dataclass(frozen=True)
class Transition:
    """A change the alert lifecycle acts on."""

    kind: str  # "fire" | "update" | "resolve"
    rule_id: str
    grade: int  # the grade after the change (for resolve: the last grade)
    level: float | None  # the observed value or aggregate
    threshold: float | None  # the bound of ``grade``
    at: float  # event time of the change, seconds
    since: float  # when the breach began
    reason: str
    # "reading" when a single reading decided it (``reading_at`` its own event time,
    # ``at`` the series' clock then), "window" when a closed window did
    decided: str = "window"
    reading_at: float | None = None

    @property
    def key(self) -> tuple[str, int, float]:
        """What identifies the change within its series."""
        return (self.kind, self.grade, self.at)


@dataclass
class _Bucket:
    start: float
    count: int = 0
    total: float = 0.0
    low: float = math.inf
    high: float = -math.inf

    def add(self, count: int, total: float, low: float, high: float) -> None:
        self.count += count
        self.total += total
        self.low = min(self.low, low)
        self.high = max(self.high, high)


@dataclass
class ThresholdDetector:
    """Evaluates one :class:`ThresholdSpec` over one series; picklable, bounded state."""

    spec: ThresholdSpec
    phase: str = "inactive"  # inactive | pending | firing | clearing
    grade: int | None = None
    since: float = 0.0  # breach start (pending or firing)
    clear_since: float = 0.0
    last_seen: float | None = None
    latest: float = -math.inf  # highest event time seen (the series' clock)
    level: float | None = None
    _buckets: deque[_Bucket] = field(default_factory=deque)

    # -- input -----------------------------------------------------------------
    def update(self, t: float, value: float) -> list[Transition]:
        """Take one reading (event time ``t`` in seconds) and evaluate the rule."""
        if not math.isfinite(value):
            return []
        self.last_seen = t if self.last_seen is None else max(self.last_seen, t)
        if self.spec.aggregate is Aggregate.READING:
            if t < self.latest:
                return []  # an older reading says nothing about now
            self.latest = t
            self.level = value
            return self._evaluate(t, value)
        self._add(t, value)
        if t > self.latest:
            self.latest = t
        level = self._aggregate(self.latest)
        self.level = level
        return [] if level is None else self._evaluate(self.latest, level)

    def update_window(
        self,
        start: float,
        end: float,
        count: int,
        total: float,
        low: float,
        high: float,
        settle: bool = False,
    ) -> list[Transition]:
        """Take a closed window's aggregate of readings and evaluate the rule at its end.

        A rule on each reading judges the window's worst reading (its maximum for
        ``above``, minimum for ``below``); a window aggregate counts the window's
        readings in its sums as if they had arrived one by one. With ``settle`` (an
        early rule whose readings went through :meth:`early`) the window only
        lowers: it de-escalates, clears, resolves, ends a pending breach, or fires
        one whose pending time has run out; it never starts or escalates one.
        """
        if count <= 0 or not all(math.isfinite(x) for x in (total, low, high)):
            return self.advance(end, settle)
        self.last_seen = end if self.last_seen is None else max(self.last_seen, end)
        if self.spec.aggregate is Aggregate.READING:
            if end < self.latest:
                return []
            self.latest = end
            self.level = high if self.spec.direction is Direction.ABOVE else low
            return self._evaluate(end, self.level, settle)
        if start > self.latest - self.spec.window_s:
            self._bucket(start).add(count, total, low, high)
        self.latest = max(self.latest, end)
        level = self._aggregate(self.latest)
        self.level = level
        return [] if level is None else self._evaluate(self.latest, level, settle)

    def advance(self, now: float, settle: bool = False) -> list[Transition]:
        """Move the series' clock to ``now`` without a reading (timers, missing data)."""
        if now <= self.latest:
            return []
        self.latest = now
        silent = self.last_seen is None or now - self.last_seen > self.spec.missing_after_s
        if silent:
            return self._missing(now)
        if self.spec.aggregate is Aggregate.READING:
            level = self.level
        else:
            level = self._aggregate(now)
            self.level = level
        return [] if level is None else self._evaluate(now, level, settle)

    def early(self, clock: float, value: float, reading_at: float) -> list[Transition]:
        """Judge one reading of an early rule (:attr:`ThresholdSpec.early`) at once.

        ``clock`` is the series' clock: the latest event time among its readings so
        far, this one's included (``reading_at`` is its own). A reading can only
        move the rule towards an alert: it starts a pending breach, fires one
        (at once, or once its breach has lasted ``pending_s``), continues an alert
        in its hold time, or escalates one. Everything that lowers (de-escalation,
        clearing, resolving, ending a pending breach) waits for the window to close
        (:meth:`update_window` with ``settle``). The detector's window clock and
        sums are the closed windows' and stay untouched.
        """
        if not math.isfinite(value):
            return []
        spec = self.spec
        reached = spec.grade_of(value)
        if self.phase in ("inactive", "pending"):
            if reached is None:
                return []
            if self.phase == "inactive":
                self.phase, self.since = "pending", clock
            self.grade = reached
            if clock - self.since >= spec.pending_s:
                self.phase = "firing"
                return [self._early("fire", clock, value, reading_at, "limit crossed")]
            return []
        assert self.grade is not None
        if spec.grade_of(value, slack=spec.hysteresis) is None:
            return []
        self.phase = "firing"  # a breach in the hold time continues the alert
        if reached is not None and reached < self.grade:
            self.grade = reached
            return [self._early("update", clock, value, reading_at, "grade up")]
        return []

    def _early(
        self, kind: str, at: float, value: float, reading_at: float, reason: str
    ) -> Transition:
        transition = self._transition(kind, at, f"{reason} by a reading")
        return replace(transition, level=value, decided="reading", reading_at=reading_at)

    def running_total(
        self, partials: Sequence[tuple[float, float, float]], minute: float, window_s: float
    ) -> float:
        """The running count, sum or rate of a :attr:`~ThresholdSpec.running` rule as one
        reading leaves it: the largest over the rule's windows that end with the
        reading's minute (starting at ``minute``, ``window_s`` long) or with a later one
        still open.

        ``partials``: ``(start, count, sum)`` of the series' open minutes when the
        reading was counted, itself included. Minutes this detector has taken in
        closed (before its clock) come from its own buckets, whatever the partials
        say of them (a batch read again after a restart counts them anew). So every
        reading that adds to a window's total judges that total as it stands then,
        and the last of them judges the window's final total (a later window only
        grows by what it adds).
        """
        spec = self.spec
        width = self._bucket_s()
        closed = self.latest
        data = [(b.start, float(b.count), b.total) for b in self._buckets if b.start < closed]
        data += [p for p in partials if p[0] >= closed]
        ends = {p[0] + window_s for p in partials if p[0] >= minute} | {minute + window_s}
        best = 0.0
        for end in ends:
            low = end - spec.window_s - width
            count = total = 0.0
            for start, c, t in data:
                if low < start < end:
                    count += c
                    total += t
            value = spec.level_of(count, total, math.inf, -math.inf)
            assert value is not None  # a count, sum or rate is known even of nothing
            best = max(best, value)
        return best

    # -- windows -----------------------------------------------------------------
    def _bucket_s(self) -> float:
        return self.spec.window_s / MAX_BUCKETS

    def _add(self, t: float, value: float) -> None:
        if t <= self.latest - self.spec.window_s:
            return  # older than the window: already out of every aggregate
        self._bucket(t).add(1, value, value, value)

    def _bucket(self, t: float) -> _Bucket:
        """The bucket of event time ``t``; a new one is put in time order."""
        width = self._bucket_s()
        start = t - (t % width)
        for b in reversed(self._buckets):
            if b.start == start:
                return b
            if b.start < start:
                break
        bucket = _Bucket(start)
        self._buckets.append(bucket)
        if len(self._buckets) > 1 and self._buckets[-2].start > start:
            # a late reading or window: keep the buckets in time order
            self._buckets = deque(sorted(self._buckets, key=lambda b: b.start))
        return bucket

    def _aggregate(self, now: float) -> float | None:
        horizon = now - self.spec.window_s
        width = self._bucket_s()
        while self._buckets and self._buckets[0].start + width <= horizon:
            self._buckets.popleft()
        count, total, low, high = 0, 0.0, math.inf, -math.inf
        for b in self._buckets:
            count += b.count
            total += b.total
            if b.low < low:
                low = b.low
            if b.high > high:
                high = b.high
        return self.spec.level_of(count, total, low, high)

    # -- the phases ------------------------------------------------------------------
    def _transition(self, kind: str, at: float, reason: str) -> Transition:
        assert self.grade is not None
        return Transition(
            kind=kind,
            rule_id=self.spec.rule_id,
            grade=self.grade,
            level=self.level,
            threshold=self.spec.bound_of(self.grade),
            at=at,
            since=self.since,
            reason=reason,
        )

    def _evaluate(self, t: float, level: float, settle: bool = False) -> list[Transition]:
        spec = self.spec
        reached = spec.grade_of(level)
        if self.phase in ("inactive", "pending"):
            if reached is None:
                self.phase, self.grade = "inactive", None
                return []
            if settle:  # the readings started the breach and set its grade
                if self.phase == "inactive":
                    return []
            else:
                if self.phase == "inactive":
                    self.phase, self.since = "pending", t
                self.grade = reached
            if t - self.since >= spec.pending_s:
                self.phase = "firing"
                return [self._transition("fire", t, "limit crossed")]
            return []
        assert self.grade is not None
        held = spec.grade_of(level, slack=spec.hysteresis)  # the grade with hysteresis
        if held is None:
            if self.phase == "firing":
                self.phase, self.clear_since = "clearing", t
            if t - self.clear_since >= spec.hold_s:
                self.phase = "inactive"
                out = self._transition("resolve", t, "back within limits")
                self.grade = None
                return [out]
            return []
        self.phase = "firing"
        if reached is not None and reached < self.grade and not settle:
            new = reached  # escalate at once
        elif held > self.grade:
            new = held  # de-escalate only once past the lower bound by the hysteresis
        else:
            new = self.grade
        if new != self.grade:
            direction = "up" if new < self.grade else "down"
            self.grade = new
            return [self._transition("update", t, f"grade {direction}")]
        return []

    def _missing(self, now: float) -> list[Transition]:
        if self.spec.missing is MissingData.KEEP:
            return []
        if self.phase == "pending":
            self.phase, self.grade = "inactive", None
            return []
        if self.phase in ("firing", "clearing"):
            self.phase = "inactive"
            out = self._transition("resolve", now, "no data")
            self.grade = None
            return [out]
        return []


@dataclass
class SilenceWatch:
    """Data quality: a source silent for longer than it should be.

    ``expected_s`` is the source's reporting interval; it counts as silent once
    ``factor`` intervals pass with nothing from it, measured on the clock of its
    district (the latest event time seen from any source there), so a replayed
    backlog and a stopped feed do not look like silence. Reports ``fire`` once
    per silence and ``resolve`` when the source reports again.
    """

    expected_s: float
    factor: float = 3.0
    last_seen: float | None = None
    silent: bool = False

    def seen(self, t: float) -> str | None:
        self.last_seen = t if self.last_seen is None else max(self.last_seen, t)
        if self.silent:
            self.silent = False
            return "resolve"
        return None

    def check(self, clock: float) -> str | None:
        if self.silent or self.last_seen is None:
            return None
        if clock - self.last_seen > self.factor * self.expected_s:
            self.silent = True
            return "fire"
        return None
