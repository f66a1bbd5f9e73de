"""Public-opinion warnings (舆情预警) of a district: citizens' appeals of one category
gathering in one street, surging, rating a service badly, or angry.

Each appeal the worker counts adds to its window's tallies for its category and for its
category in its street (:meth:`streams.state.windows.DistrictWindows.tally`, in the
order of :data:`~streams.ingest.ingestor.APPEAL_TALLY`), and the window keeps the
angriest appeals of each category in each street as samples. Every closed minute moves each series of the district
(``DistrictDetection.opinion``, one per category and one per category and street that
had appeals lately) over the last ``window`` of ``public_opinion`` in
``config/thresholds.yaml`` (:class:`~streams.alerting.rules.PublicOpinion`):

* a street's series is a **cluster** about one place: its grade is the highest
  ``cluster`` boundary its count of appeals reaches; once the district has ``warmup``
  of history, a boundary is at least its ``surge`` ratio times the street's usual count,
  so a street where a category's appeals are common needs a surge above them, and with
  ``cluster_chance`` the boundaries are lifted, keeping their distances, until grade IV's
  is a count the usual count reaches with at most that chance in a window (Poisson): a
  street that hears one appeal of a category in a window on average reaches four by
  chance about once in fifty windows, which across a big city's streets and categories
  is a warning of nothing every few minutes;
* a district's series grades by **surge**, the count against the usual count over the
  window (judged from ``surge_min`` appeals and only after the ``warmup``, the usual
  count at least ``baseline_floor``), and by the share of **bad ratings** among
  ``ratings_min`` or more ratings of the category's services; the higher of the two;
* either grade goes up one step when ``extreme_min`` or more of the appeals, and at
  least ``extreme_share`` of them, are in extreme emotion;
* when ``SPREAD_STREETS`` or more streets of the district have a grade for one category
  at once, one alert of the district (rule ``public_opinion.streets``, graded by the
  highest of theirs) names them, and until it resolves a street of that category
  without an alert of its own raises none. Its evidence lists every street that
  clustered while it was open (``Evidence.streets``), so that each street's office sees
  it to its end, and a street joining them updates it.

A series' usual count is its appeals per second, smoothed exponentially with half-life
``baseline_half_life`` from the district's first minute (a series that starts later
had no appeals before), corrected for a history shorter than the smoothing needs, times
the window. A minute moves only the series with appeals in the window or an open alert;
a quiet series' rate decays by the time since it last moved when it is next asked for.

Citizens write by the hour of the day: at three in the morning a district hears a
fraction of its midday appeals, so a whole day's rate would make every morning a
surge and hide one at night. A district's series therefore also keeps one smoothed rate
for each hour of the city's day (``OpinionSeries.hourly``). Each is moved only by the
minutes of its hour, so it forgets with the same half-life counted in days (its clock
runs an hour a day), and it takes a minute's appeals when the minute leaves the window:
a surge is never part of the usual count it is judged against. The usual count over
the window is each hour's rate times the window's seconds in that hour. An hour's rate is
known from few appeals at first, so it is shrunk towards the mean of the day's hours:
it weighs ``e / (e + hourly_prior)``, ``e`` being how much of that hour the series has
seen as the smoothing weighs it (about an hour a day). Its surges are judged once the
district has ``warmup`` of history before the window. A street has too few appeals for
a rate of each hour: its usual count is its whole day's rate scaled by how much busier
its district's hours of the window are, for the category, than the district's day. A
series written by a release before the hours starts them when it is restored.
``bench/opinion.py`` measured the difference on the simulated city (docs/appeals.md).

A series raises a ``public_opinion`` alert when it first has a grade, updates it when
the grade goes up, lowers it once the grade has stayed below the alert's for ``hold``
(to the grade it has then), and resolves it after ``hold`` without one: under a flood a
count wavers about a boundary minute by minute, and an operator would otherwise get an
update for each turn. The alert goes to the
department that owns the category in ``config/appeals.yaml``, co-handled by the
category's co-handling departments, and by ``informed`` (the command centre) at grades II
and I. Its evidence names the category, counts what the window holds, shows the
per-minute counts, and lists the angriest de-identified appeals with their emotion and
the words that drove it.

Why counts over a short window, with the usual count only raising the boundary: the
first appeals of a smell nobody measures must reach the department within minutes, by
when no model has a level to compare them with for a street it rarely hears about, and
a fresh worker knows no usual counts at all. ``bench/opinion.py`` measured the choices
on the simulated city (docs/appeals.md): a 15-minute window finds the demo's smell as
soon as an hour does and raises a fraction of the warnings of nothing.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any

from streams.alerting.lifecycle import Signal
from streams.core.config import Sharing
from streams.core.messages import (
    AlertEvent,
    AlertKind,
    AppealSample,
    Evidence,
    EvidencePoint,
    Grade,
)
from streams.ingest.ingestor import APPEAL_TALLY, FACET_PLACE_SEP

if TYPE_CHECKING:
    from streams.alerting.detection import DetectionContext, DistrictDetection
    from streams.alerting.rules import PublicOpinion

APPEALS = "citizen.appeals"  # the indicator the alerts name
CLUSTER_RULE = "public_opinion.cluster"
DISTRICT_RULE = "public_opinion.district"
SPREAD_RULE = "public_opinion.streets"  # a category clustering in several streets at once
SPREAD = "*"  # the street part of the key of a district's alert of several streets
SPREAD_STREETS = 2  # streets of a district with a grade at once that make one alert
GRADES = (Grade.IV, Grade.III, Grade.II, Grade.I)
HOURS = 24  # a district series' rates of the hours of the city's day
MAX_UNLIKELY = 100_000  # the most a lifted grade IV boundary can be
_N, _EXTREME, _INTENSITY, _RATED, _BAD, _REPEATS = range(len(APPEAL_TALLY))


@dataclass(frozen=True)
class OpinionCategory:
    """An appeal category as public-opinion warnings need it: who owns it, who co-handles
    it, and its names (from ``config/appeals.yaml``)."""

    department: str
    co_departments: tuple[str, ...] = ()
    name_zh: str = ""
    name_en: str = ""


@dataclass
class OpinionSeries:
    """One category's appeals in a district (or in one of its streets) over the window."""

    #: [minute's end, *tally] of the window's minutes that had appeals, oldest first
    minutes: list[list[float]] = field(default_factory=list)
    #: [rank, minute's end, sample] of the angriest appeals in the window, angriest first
    samples: list[list[Any]] = field(default_factory=list)
    baseline: float = 0.0  # usual appeals per second, smoothed from the district's start
    baseline_at: float | None = None  # when ``baseline`` was last moved (lazily decayed)
    #: a district's series: its smoothed rate in each hour of the city's day, moved by
    #: the minutes that left the window (empty in a series of an earlier release)
    hourly: list[float] = field(default_factory=list)
    hourly_since: float | None = None  # the start of the hours' history
    hourly_at: float | None = None  # the end of the last minute they took
    raised: str | None = None  # the grade (IV .. I) of its open alert
    #: a district's alert of several streets: the streets its last event named
    named: list[str] = field(default_factory=list)
    calm_since: float | None = None  # since when it has had no grade, its alert open
    lower_since: float | None = None  # since when its grade has been below its alert's


def public_opinion(
    state: DistrictDetection,
    end: float,
    start: float,
    tallies: Mapping[str, list[float]],
    samples: Mapping[str, list[list[Any]]],
    ctx: DetectionContext,
) -> list[AlertEvent]:
    """Move every series of the district to the minute ``[start, end)`` with its
    tallies and samples; the alert events that gives."""
    conf = ctx.rules.opinion
    if state.opinion_since is None:
        state.opinion_since = start  # the district's history of appeals starts here
    if not conf.enabled or (not tallies and not state.opinion):
        return []
    events: list[AlertEvent] = []
    span = end - start
    age = end - state.opinion_since
    bounds, _ = ctx.opinion_settings
    by_category: dict[str, list[list[Any]]] = {}
    for facet, kept in samples.items():
        by_category.setdefault(facet.partition(FACET_PLACE_SEP)[0], []).extend(kept)
    # a series with no appeals in the window and no open alert has nothing to judge: its
    # usual count decays when next asked for (OpinionSeries.baseline_at)
    active = {k for k, series in state.opinion.items() if series.minutes or series.raised}
    judged: dict[str, list[_Judged]] = {}
    hours = _Hours(ctx, end, conf, state.opinion_since)
    for key in sorted(active | set(tallies)):  # a category's own series before its streets'
        category, _, street = key.partition(FACET_PLACE_SEP)
        of_category = judged.setdefault(category, [])
        if street == SPREAD:
            continue  # judged with its category's streets
        series = state.opinion.get(key)
        if series is None:  # no appeal before: its usual count starts from none
            series = state.opinion[key] = OpinionSeries()
            if not street:  # nor had any hour of the day
                series.hourly = [0.0] * HOURS
                series.hourly_since = series.hourly_at = state.opinion_since
        minute = samples.get(key, []) if street else by_category.get(key, [])
        _advance(series, end, span, tallies.get(key), minute, conf, None if street else hours)
        counts = _counts(series)
        if series.raised is None and _below(counts, street or None, bounds, conf):
            continue  # too few appeals for any grade, and no alert to hold
        usual = _usual(series, age, end, conf)
        if usual is not None and street:
            usual *= hours.profile(state.opinion.get(category))
        elif usual is not None:
            usual = hours.usual(series, usual)
        grade, why = _grade(counts, street or None, usual, bounds, conf)
        of_category.append(_Judged(key, series, street or None, grade, why))
    for category, of_category in judged.items():
        events += _category(state, category, of_category, end, conf, ctx)
    return events


@dataclass(frozen=True)
class _Judged:
    """A series' grade this minute, before it is decided."""

    key: str
    series: OpinionSeries
    street: str | None
    grade: Grade | None
    why: _Why


def _category(
    state: DistrictDetection,
    category: str,
    judged: list[_Judged],
    end: float,
    conf: PublicOpinion,
    ctx: DetectionContext,
) -> list[AlertEvent]:
    """Decide a category's series. When ``SPREAD_STREETS`` or more of the district's
    streets have a grade at once, one alert of the district names them all, and until it
    resolves, a street without an alert of its own raises none: an operator facing a
    category's appeals all over the district wants one warning of it, not one per street
    (and one update for each of their turns)."""
    spread_key = f"{category}{FACET_PLACE_SEP}{SPREAD}"
    spread = state.opinion.get(spread_key)
    clusters = [j for j in judged if j.street is not None and j.grade is not None]
    folding = len(clusters) >= SPREAD_STREETS or (spread is not None and spread.raised is not None)
    events: list[AlertEvent] = []
    for j in judged:
        if folding and j.street is not None and j.series.raised is None:
            continue  # its cluster is in the district's alert
        events += _decide(state, j.key, j.series, j.grade, j.why, end, conf, ctx)
    if folding:
        if spread is None:
            spread = state.opinion[spread_key] = OpinionSeries()
        top = max((j.grade for j in clusters), key=GRADES.index, default=None)
        streets = tuple(sorted(j.street for j in clusters if j.street is not None))
        # the alert concerns every street that clustered while it was open: their offices
        # see it to its end, the resolution too
        concerns = tuple(sorted(set(spread.named).union(streets)))
        why = _Why(
            len(streets),
            SPREAD_STREETS,
            "streets where the appeals cluster",
            streets=streets,
            concerns=concerns,
        )
        decided = _decide(state, spread_key, spread, top, why, end, conf, ctx)
        if not decided and spread.raised is not None and len(concerns) > len(spread.named):
            # a street joins: its office sees the alert from this update on (its own
            # cluster raises none while the district's alert holds it)
            grade = Grade[spread.raised]
            decided = _signal(state, "fire", spread_key, spread, grade, why, end, conf, ctx)
        if decided:
            spread.named = [] if spread.raised is None else list(concerns)
        events += decided
    return events


@dataclass(frozen=True)
class OpinionBounds:
    """A configuration's boundaries, in grade order, with the least count any series
    needs for a grade: set once per configuration, not per series and minute."""

    cluster: tuple[tuple[Grade, float], ...]
    surge: tuple[tuple[Grade, float], ...]
    bad_ratings: tuple[tuple[Grade, float], ...]
    top_surge: float  # the surge ratio of a cluster grade the surge does not name
    least_cluster: float  # no street's count below it has a grade


def opinion_settings(conf: PublicOpinion) -> tuple[OpinionBounds, str]:
    """The boundaries of ``conf`` and its version digest (the evidence names the version
    that decided); :attr:`DetectionContext.opinion_settings` keeps them, worked out once."""

    def ordered(grades: Mapping[Any, float]) -> tuple[tuple[Grade, float], ...]:
        return tuple((g, grades[g.name]) for g in GRADES if g.name in grades)

    bounds = OpinionBounds(
        cluster=ordered(conf.cluster),
        surge=ordered(conf.surge),
        bad_ratings=ordered(conf.bad_ratings),
        top_surge=max(conf.surge.values()),
        least_cluster=min(conf.cluster.values()),
    )
    return bounds, hashlib.sha256(conf.model_dump_json().encode()).hexdigest()[:12]


def _counts(series: OpinionSeries) -> tuple[float, float, float, float]:
    """The window's appeals, those in extreme emotion, ratings and bad ratings: what a
    grade is decided by, summed in one pass (every series, every minute)."""
    n = extreme = rated = bad = 0.0
    for _, m_n, m_extreme, _, m_rated, m_bad, _ in series.minutes:
        n += m_n
        extreme += m_extreme
        rated += m_rated
        bad += m_bad
    return n, extreme, rated, bad


def _below(
    counts: tuple[float, float, float, float],
    street: str | None,
    bounds: OpinionBounds,
    conf: PublicOpinion,
) -> bool:
    """Whether the series' window holds too few appeals (and, for a district, too few
    ratings) for any grade, whatever its usual count: most series of a busy district are,
    and judging them in full each minute would cost the most."""
    n, _, rated, _ = counts
    if street is not None:
        return n < bounds.least_cluster
    return n < conf.surge_min and rated < conf.ratings_min


def _usual(series: OpinionSeries, age: float, end: float, conf: PublicOpinion) -> float | None:
    """The series' usual count over the window at ``end``, once the district has
    ``warmup`` of history (None before): the smoothed rate, corrected for the history
    being shorter than it would need to be for the smoothing to have forgotten its start
    at zero."""
    if age < conf.warmup or age <= 0:
        return None
    rate = _decayed(series, end, conf)
    return rate / (1 - 0.5 ** (age / conf.baseline_half_life)) * conf.window


def _decayed(series: OpinionSeries, end: float, conf: PublicOpinion) -> float:
    """The smoothed rate brought to ``end`` through the minutes without appeals since it
    was last moved (each such minute multiplies it by its decay)."""
    if series.baseline_at is None or end <= series.baseline_at:
        return series.baseline
    return series.baseline * 0.5 ** ((end - series.baseline_at) / conf.baseline_half_life)


class _Hours:
    """The hours of the city's day as one closed minute of a district sees them.

    An hour's clock (:meth:`clock`) counts the seconds spent in that hour of the day from
    the epoch, on the city's wall clock: the time an hour's rate forgets in. The hourly
    rates take a minute's appeals when it leaves the window, so a surge is never part of
    the usual count it is judged against.
    """

    def __init__(
        self, ctx: DetectionContext, end: float, conf: PublicOpinion, since: float
    ) -> None:
        self.ctx, self.conf, self.t = ctx, conf, end
        # the district's history before the window: its surges are judged after the warmup
        self.warm = end - conf.window - since >= conf.warmup
        self.half = conf.baseline_half_life / HOURS  # an hour's half-life on its clock
        self._known: dict[int, list[tuple[int, float, float]]] = {}  # _own, per series

    # the hours' clocks at the minute's end and the window's start, worked out when a
    # series first needs them (most minutes of most districts judge no district series)
    @cached_property
    def end(self) -> list[float]:
        return self.clock(self.t)

    @cached_property
    def start(self) -> list[float]:
        return self.clock(self.t - self.conf.window)

    @cached_property
    def window(self) -> list[float]:
        return [b - a for a, b in zip(self.start, self.end, strict=True)]

    def clock(self, t: float) -> list[float]:
        days, into = divmod(self.ctx.local(t), 86400.0)
        return [days * 3600.0 + min(max(into - 3600.0 * h, 0.0), 3600.0) for h in range(HOURS)]

    def spent(self, a: float, b: float) -> list[tuple[int, float]]:
        """(hour, seconds) of the time ``[a, b)`` spent in each hour of the city's day on
        its wall clock: what each hour's clock moves by from ``a`` to ``b``. A minute lies
        in one hour, so a minute's move touches one hour's rate, not all 24 clocks (the
        clocks of both ends took 11 µs a minute, this 1.5)."""
        la, lb = self.ctx.local(a), self.ctx.local(b)
        if lb <= la:
            return []
        days, rest = divmod(lb - la, 86400.0)
        spent = [(h, days * 3600.0) for h in range(HOURS)] if days else []
        t, end = la, la + rest
        while t < end:
            into = t % 86400.0
            h = min(int(into // 3600.0), HOURS - 1)
            stop = min(t - into + 3600.0 * (h + 1), end)  # the hour's end, or the interval's
            if stop <= t:  # less than a float's step from the hour's end: nothing more
                break
            spent.append((h, stop - t))
            t = stop
        return spent

    def move(self, series: OpinionSeries, left: list[list[float]], span: float) -> None:
        """Move a district series' hourly rates through the minutes that left its window
        (``[end, *tally]``, oldest first, each ``span`` long) and the quiet ones between."""
        hourly, half, at = series.hourly, self.half, series.hourly_at
        for minute in left:
            start = minute[0] - span
            if at is None:  # an earlier release's series: its hours start now
                series.hourly = hourly = [0.0] * HOURS
                series.hourly_since = start
            else:
                for h, quiet in self.spent(at, start):
                    if hourly[h]:
                        hourly[h] *= 0.5 ** (quiet / half)
            rate = minute[1 + _N] / span
            for h, seen in self.spent(start, minute[0]):
                keep = 0.5 ** (seen / half)
                hourly[h] = hourly[h] * keep + (1 - keep) * rate
            series.hourly_at = at = minute[0]

    def _own(self, series: OpinionSeries) -> list[tuple[int, float, float]]:
        """(hour, rate, weight) of each hour the series has seen: its rate up to the
        window's start, corrected for a history shorter than the smoothing needs, and the
        weight that history has against ``hourly_prior``. Worked out once a minute per
        series (a district's is asked again by each of its streets)."""
        own = self._known.get(id(series))
        if own is not None:
            return own
        assert series.hourly_since is not None and series.hourly_at is not None
        since, at, half = self.clock(series.hourly_since), self.clock(series.hourly_at), self.half
        own = []
        for h in range(HOURS):
            seen = self.start[h] - since[h]
            if seen > 0:
                kept = 1.0 - 0.5 ** (seen / half)
                quiet = max(self.start[h] - at[h], 0.0)
                weight = kept * half / math.log(2)  # the hour's history, as smoothing weighs it
                rate = series.hourly[h] * 0.5 ** (quiet / half) / kept
                own.append((h, rate, weight / (weight + self.conf.hourly_prior)))
        self._known[id(series)] = own
        return own

    def _over_window(self, own: list[tuple[int, float, float]], day: float) -> float:
        """The usual count over the window: each hour's rate shrunk towards ``day`` by its
        weight (an hour not seen yet: ``day``), times the window's seconds in it."""
        usual = day * self.conf.window
        for h, rate, weight in own:
            usual += weight * (rate - day) * self.window[h]
        return usual

    def usual(self, series: OpinionSeries, daily: float) -> float | None:
        """The usual count over the window of a district's series by the hours of the day,
        or ``daily`` (the whole day's, from ``baseline``) while it has no hours; None
        while the district's history before the window is shorter than the warmup."""
        if series.hourly_since is None or series.hourly_at is None:
            return daily
        if not self.warm:
            return None
        own = self._own(series)
        day = sum(r for _, r, _ in own) / len(own) if own else daily / self.conf.window
        return self._over_window(own, day)

    def profile(self, series: OpinionSeries | None) -> float:
        """How much busier the window's hours are than the whole day in a district's
        series: what a street's whole-day usual count is scaled by (1 without hours)."""
        if series is None or series.hourly_since is None or series.hourly_at is None:
            return 1.0
        own = self._own(series) if self.warm else []
        day = sum(r for _, r, _ in own) / len(own) if own else 0.0
        if day <= 0:
            return 1.0
        return self._over_window(own, day) / (day * self.conf.window)


def _advance(
    series: OpinionSeries,
    end: float,
    span: float,
    tally: list[float] | None,
    samples: list[list[Any]],
    conf: PublicOpinion,
    hours: _Hours | None = None,
) -> None:
    """Move a series to the minute ending at ``end``; ``hours``: a district's series,
    whose hourly rates take the minutes that leave the window."""
    horizon = end - conf.window
    if tally is not None:
        series.minutes.append([end, *tally])
        # the quiet minutes before this one, then this one's appeals
        decay = 0.5 ** (span / conf.baseline_half_life)
        quiet = _decayed(series, end - span, conf)
        series.baseline = quiet * decay + (1 - decay) * tally[_N] / span
        series.baseline_at = end
    if not series.minutes or series.minutes[0][0] > horizon:  # oldest first
        if not samples:
            return  # nothing left the window; a kept appeal's minute is one of its minutes
    else:
        if hours is not None:
            hours.move(series, [m for m in series.minutes if m[0] <= horizon], span)
        series.minutes = [m for m in series.minutes if m[0] > horizon]
    kept = [s for s in series.samples if s[1] > horizon]
    kept += [[rank, end, doc] for rank, doc in samples]
    kept.sort(key=lambda s: (-s[0], s[1]))  # stable: an earlier appeal first on a tie
    series.samples = kept[: conf.samples]


def _sums(series: OpinionSeries) -> list[float]:
    sums = [0.0] * len(APPEAL_TALLY)
    for minute in series.minutes:
        for i in range(len(APPEAL_TALLY)):
            sums[i] += minute[i + 1]
    return sums


def _reached(bounds: tuple[tuple[Grade, float], ...], level: float) -> Grade | None:
    reached = None
    for grade, bound in bounds:
        if level >= bound:
            reached = grade
    return reached


@dataclass(frozen=True)
class _Why:
    """What decided a grade, for the evidence."""

    observed: float
    threshold: float | None
    aggregate: str
    usual: float | None = None
    streets: tuple[str, ...] = ()  # of a district's alert of clusters in several streets
    concerns: tuple[str, ...] = ()  # and every street that clustered while it was open


def _grade(
    counts: tuple[float, float, float, float],
    street: str | None,
    usual: float | None,
    bounds: OpinionBounds,
    conf: PublicOpinion,
) -> tuple[Grade | None, _Why]:
    n, extreme, rated, bad_rated = counts
    if street is not None:
        # a cluster: the count's boundary, lifted for a street whose usual count makes it
        # likely, or the surge's above a busy street's usual count
        cluster = bounds.cluster
        if usual is not None:
            surge = dict(bounds.surge)
            lift = 0.0
            if conf.cluster_chance is not None:
                lift = max(unlikely_count(usual, conf.cluster_chance) - bounds.least_cluster, 0.0)
            cluster = tuple(
                (g, max(b + lift, surge.get(g, bounds.top_surge) * usual)) for g, b in cluster
            )
        grade = _reached(cluster, n)
        why = _Why(n, _bound(cluster, grade), "appeals in the street over the window", usual)
    else:
        floor = max(usual or 0.0, conf.baseline_floor)
        ratio = n / floor
        surges = usual is not None and n >= conf.surge_min
        grade = _reached(bounds.surge, ratio) if surges else None
        why = _Why(ratio, _bound(bounds.surge, grade), "appeals against the usual count", floor)
        if rated >= conf.ratings_min:
            share = bad_rated / rated
            bad = _reached(bounds.bad_ratings, share)
            if bad is not None and (grade is None or GRADES.index(bad) > GRADES.index(grade)):
                grade = bad
                why = _Why(share, _bound(bounds.bad_ratings, bad), "share of bad ratings")
    if (
        grade is not None
        and grade is not Grade.I
        and extreme >= conf.extreme_min
        and extreme >= conf.extreme_share * n
    ):
        grade = GRADES[GRADES.index(grade) + 1]
    return grade, why


def unlikely_count(usual: float, chance: float) -> int:
    """The least count that a window with ``usual`` appeals on average reaches with at
    most ``chance`` (Poisson): how far a street where a category's appeals are common
    lifts its cluster boundaries. Summed term by term (about ``usual`` + 10 terms): a few
    µs, and only for the streets with a count near a boundary. Each term is worked out
    from its logarithm: P(X = 0) = e^-usual is no float beyond a usual count of about
    745, and a product started from it would stay 0."""
    if usual <= 0:
        return 1
    log_usual = math.log(usual)
    below, n = 0.0, 0  # P(X < n)
    while 1.0 - below > chance and n < MAX_UNLIKELY:
        below += math.exp(n * log_usual - usual - math.lgamma(n + 1))
        n += 1
    return n


def _bound(bounds: tuple[tuple[Grade, float], ...], grade: Grade | None) -> float | None:
    return next((b for g, b in bounds if g is grade), None)


def _decide(
    state: DistrictDetection,
    key: str,
    series: OpinionSeries,
    grade: Grade | None,
    why: _Why,
    end: float,
    conf: PublicOpinion,
    ctx: DetectionContext,
) -> list[AlertEvent]:
    raised = None if series.raised is None else Grade[series.raised]
    if grade is not None:
        series.calm_since = None
        if raised is not None and GRADES.index(grade) <= GRADES.index(raised):
            # the alert's grade stands for the hold after the series last reached it: a
            # count that wavers about a boundary does not move the alert down and up
            if grade is raised:
                series.lower_since = None
                return []
            if series.lower_since is None:
                series.lower_since = end
            if end - series.lower_since < conf.hold:
                return []
        series.raised, series.lower_since = grade.name, None
        return _signal(state, "fire", key, series, grade, why, end, conf, ctx)
    if raised is None:
        return []
    if series.calm_since is None:
        series.calm_since = end
    if series.lower_since is None:
        series.lower_since = end
    if end - series.calm_since < conf.hold:
        return []
    series.raised = series.calm_since = series.lower_since = None
    return _signal(state, "resolve", key, series, raised, why, end, conf, ctx)


def _signal(
    state: DistrictDetection,
    action: str,
    key: str,
    series: OpinionSeries,
    grade: Grade,
    why: _Why,
    end: float,
    conf: PublicOpinion,
    ctx: DetectionContext,
) -> list[AlertEvent]:
    category, _, street = key.partition(FACET_PLACE_SEP)
    place = street or None
    rule = CLUSTER_RULE if place is not None else DISTRICT_RULE
    if street == SPREAD:  # the category's own series holds the district's appeals
        place, rule, series = None, SPREAD_RULE, state.opinion.get(category, series)
    owner = ctx.opinion_category(category)
    co = [d for d in owner.co_departments if d != owner.department]
    if grade in (Grade.II, Grade.I) and conf.informed != owner.department:
        co.append(conf.informed)
    ind = ctx.cfg.indicators.get(APPEALS)
    signal = Signal(
        action=action,
        kind=AlertKind.PUBLIC_OPINION,
        rule=rule,
        district=state.district,
        street=place,
        key=f"{APPEALS}#{category}",
        indicators=(APPEALS,),
        domain=ind.domain if ind is not None else None,
        grade=grade,
        at=end,
        evidence=_evidence(rule, category, place, series, why, end, action, conf, ctx),
        department=owner.department,
        co_departments=tuple(dict.fromkeys(co)),
        sharing=ind.sharing if ind is not None else Sharing.NOT_SHARED,
    )
    return state.book.apply(signal, ctx.names, ctx.silences)


def _evidence(
    rule: str,
    category: str,
    street: str | None,
    series: OpinionSeries,
    why: _Why,
    end: float,
    action: str,
    conf: PublicOpinion,
    ctx: DetectionContext,
) -> Evidence:
    _, version = ctx.opinion_settings
    sums = _sums(series)
    n = int(sums[_N])
    minutes = conf.window / 60
    detail = (
        f"{n} appeal{'s' if n != 1 else ''} about {category}"
        f"{' in street ' + street if street else ''} in the last {minutes:g} min: "
        f"{int(sums[_EXTREME])} in extreme emotion, {int(sums[_REPEATS])} repeating an "
        f"earlier one, mean intensity {sums[_INTENSITY] / n if n else 0.0:.2f}"
    )
    if sums[_RATED]:
        detail += f"; {int(sums[_BAD])} of {int(sums[_RATED])} ratings bad"
    if why.streets:
        detail += f"; clustering in {len(why.streets)} streets: {', '.join(why.streets)}"
    if action == "resolve":
        detail += f"; no grade for {conf.hold / 60:g} min"
    return Evidence(
        rule=rule,
        version=version,
        observed=round(why.observed, 6),
        aggregate=f"{why.aggregate} ({minutes:g} min)",
        window_start=datetime.fromtimestamp(end - conf.window, UTC),
        window_end=datetime.fromtimestamp(end, UTC),
        threshold=why.threshold,
        baseline=None if why.usual is None else round(why.usual, 6),
        values=[
            EvidencePoint(time=datetime.fromtimestamp(m[0], UTC), value=m[1 + _N])
            for m in series.minutes
        ],
        detail=detail,
        decided="window",
        category=category,
        appeals=[AppealSample.model_validate(doc) for _, _, doc in series.samples],
        streets=list(why.concerns),
    )
