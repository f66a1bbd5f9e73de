"""Anomaly scores and alert decisions for one series (one indicator at one place).

The model, in the order a reading goes through it
-------------------------------------------------

1. **Seasonal baseline.** The expected value is ``level + season[bin]``: ``level`` is a
   slow exponentially weighted level of the de-seasonalised value and ``season`` holds
   one additive offset per time-of-day bin (``bins_per_day``), with a separate set for
   Saturday and Sunday when ``weekend_profile`` is on. Bins come from the reading's own
   timestamp, not from its position in the stream, so irregular sampling and gaps do not
   shift the profile. City series are dominated by the daily and weekly rhythm (traffic,
   taxi demand, temperatures): a value normal at 08:00 can be abnormal at 03:00.
2. **Two residuals.** ``slow`` compares the reading with the seasonal baseline (what is
   normal for this hour); ``fast`` compares it with a fast level of the de-seasonalised
   value plus the same offset (what is normal given the last few readings). Each is
   divided by its own exponentially weighted mean absolute residual and compressed with
   ``log1p``, so heavy-tailed series do not dominate the next stage. The raw score
   reported is the slow one.
3. **Anomaly likelihood.** Raw residuals are not comparable between series and do not
   say how unusual they are *for this series*. As in Numenta's HTM detector, each raw
   score stream is averaged over a short window and compared with the distribution of
   such averages seen so far (a normal fit with an exponentially weighted mean and
   variance, memory ``1/dist_alpha`` readings). The tail probability ``p`` of the
   current average becomes ``nl = -log10(p)``. Three such likelihoods run: the fast and
   slow residuals over ``short_window`` readings (sudden changes) and the slow residual
   over ``long_window`` readings (sustained shifts that no single reading shows).
4. **Calibrated score.** ``score = nl / (nl + score_half)`` of the largest ``nl``: in
   [0, 1), continuous, 0.5 at a tail probability of ``10**-score_half``, never exactly 1,
   and about 0.06 (tail probability 0.5) on flat data: a zero residual is never
   surprising, unlike detectors that divide by a zero deviation.
5. **Warm-up and learning protection.** Scores are computed from the first reading, but
   ``warmed_up`` stays False for ``warmup_readings`` learned readings (the gate does not
   alert before). After a reading whose score reached ``protect_score``, the next one is
   learned with its weight multiplied by ``protect_weight`` (0 skips learning), so a long
   anomaly does not quickly become the new normal.

Every step is a handful of float operations: no allocation that grows with the stream.
The state (a few dozen floats plus short ring buffers) is picklable and bounded. There is
no randomness: ``seed`` is kept for the detector interface and does not change outputs.

The alert gate
--------------

:class:`AnomalyGate` turns scores into alert lifecycle decisions for one series, see its
docstring for the exact rules and the grade bands.

The default :class:`AnomalyConfig` is the one configuration used for every series; it
was chosen by the NAB benchmark (``bench/nab.py``), on the same corpus it is scored on,
so the figures are in-sample. With it, NAB standard / low-FP / low-FN: whole corpus
57.1 / 43.3 / 63.6, the ten city files 72.7 / 67.6 / 76.4. Single changes that measured
lower (whole / city, standard): fire_score 0.45 → 55.9 / 71.9 and 0.5 → 54.0 / 61.7;
no long-window likelihood 54.8 / 64.5; short_window 5 → 53.8 / 61.3; no weekend
profile 55.7 / 60.3; one profile for all days (bins_per_day 1) 46.7 / 50.0; a full
weekly profile 57.9 / 67.6; learning without protection 55.2 / 69.0, skipping it
(protect_weight 0) 43.1 / 68.9; scale_clip 8 → 56.5 / 72.4. The city figure rests on
25 windows and moves by several points with such changes; the whole-corpus one is
steadier.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, NamedTuple, Protocol, runtime_checkable

from river import base

DAY_S = 86_400.0
_SQRT2 = math.sqrt(2.0)
#: The smallest tail probability distinguished (``nl`` caps at 300).
_MIN_TAIL = 1e-300
#: Counters saturate here: they only matter while small (warm-up, first averages), and a
#: saturated counter keeps the pickled state from growing.
COUNT_CAP = 65_535
#: Residuals are clipped for the scale estimate only once this many readings set it.
_CLIP_AFTER = 20

Grade = Literal["IV", "III", "II", "I"]
AlertEventType = Literal["firing", "updated", "resolved"]
#: Grades from least to most serious (IV blue, III yellow, II orange, I red).
GRADES: tuple[Grade, ...] = ("IV", "III", "II", "I")


@dataclass(frozen=True)
class AnomalyConfig:
    """Every parameter of the detector and the gate; the defaults are the product's.

    Seasonal baseline:
        ``bins_per_day``: time-of-day bins of the seasonal profile.
        ``weekend_profile``: a separate profile for Saturday and Sunday.
        ``level_alpha``: weight of a reading in the slow de-seasonalised level.
        ``season_alpha``: weight of a reading in its bin's seasonal offset.
        ``fast_alpha``: weight of a reading in the fast de-seasonalised level.
        ``scale_alpha``: weight of a reading in the mean absolute residuals.
        ``scale_clip``: if positive, a residual counts at most this many scales in the
        scale estimate (robust to spikes; off by default, it scored lower on NAB).
    Likelihood:
        ``short_window``/``long_window``: readings averaged before the tail test.
        ``dist_alpha``: weight of an average in the fitted distribution (memory).
        ``sd_floor``: the fitted standard deviation is at least this fraction of the mean.
        ``score_half``: ``-log10`` tail probability that maps to score 0.5.
    Warm-up and protection:
        ``warmup_readings``: learned readings before ``warmed_up`` becomes True.
        ``protect_score``: after a score at or above this, learning is weighted down...
        ``protect_weight``: ...by this factor (0: do not learn at all).
    Gate:
        ``fire_score``: score that opens an alert (after warm-up).
        ``clear_score``: an open alert clears after the score stayed below this for
        ``hold_readings`` consecutive readings and at least ``hold_seconds``.
        ``holdoff_readings``/``holdoff_seconds``: the hold-off (refractory period) after
        an onset: no new onset until this many readings have been decided and this
        much time has passed since it, unless the new one is more serious than the
        last alert (see :class:`AnomalyGate`). 0 and 0: no hold-off.
        ``grade_bands``: lowest scores of grades III, II and I; below is IV.
    """

    bins_per_day: int = 24
    weekend_profile: bool = True
    level_alpha: float = 0.01
    season_alpha: float = 0.02
    fast_alpha: float = 0.3
    scale_alpha: float = 0.002
    scale_clip: float = 0.0
    short_window: int = 4
    long_window: int = 20
    dist_alpha: float = 0.0002
    sd_floor: float = 0.1
    score_half: float = 5.0
    warmup_readings: int = 150
    protect_score: float = 0.4
    protect_weight: float = 0.1
    fire_score: float = 0.47
    clear_score: float = 0.3
    hold_readings: int = 10
    hold_seconds: float = 0.0
    holdoff_readings: int = 0
    holdoff_seconds: float = 0.0
    grade_bands: tuple[float, float, float] = (0.6, 0.7, 0.8)

    def __post_init__(self) -> None:
        if self.bins_per_day < 1:
            raise ValueError("bins_per_day must be at least 1")
        for name in ("level_alpha", "season_alpha", "fast_alpha", "scale_alpha", "dist_alpha"):
            value = getattr(self, name)
            if not 0.0 < value <= 1.0:
                raise ValueError(f"{name} must be in (0, 1], got {value}")
        if self.short_window < 1 or self.long_window < 0:
            raise ValueError("short_window must be >= 1 and long_window >= 0")
        if not 0.0 <= self.protect_weight <= 1.0:
            raise ValueError("protect_weight must be in [0, 1]")
        if self.score_half <= 0:
            raise ValueError("score_half must be positive")
        if not self.clear_score <= self.fire_score:
            raise ValueError("clear_score must not exceed fire_score")
        if self.hold_readings < 1 or self.hold_seconds < 0:
            raise ValueError("hold_readings must be >= 1 and hold_seconds >= 0")
        if self.holdoff_readings < 0 or self.holdoff_seconds < 0:
            raise ValueError("holdoff_readings and holdoff_seconds must be >= 0")
        b3, b2, b1 = self.grade_bands
        if not b3 <= b2 <= b1:
            raise ValueError("grade_bands must be ascending (III, II, I)")


class AnomalyScore(NamedTuple):
    """The detector's verdict on one reading.

    ``score``: calibrated anomaly score in [0, 1) (see the module docstring).
    ``raw``: ``log1p`` of the absolute residual from the seasonal baseline in units of
    its mean absolute residual (a wrapped river detector's own score: :mod:`detectors.calibrated`).
    ``expected``: the seasonal baseline the reading was compared with, None for a model
    without one. ``warmed_up``: whether alerts may be raised on this score.
    ``learned``: whether the reading was learned (with full or reduced weight).
    """

    score: float
    raw: float
    expected: float | None
    warmed_up: bool
    learned: bool


@runtime_checkable
class AnomalyScorer(Protocol):
    """What detection needs of a series model: score a reading, then learn it.

    :class:`SeriesDetector` and :class:`~detectors.calibrated.Calibrated` (any river
    anomaly detector) keep it.
    """

    def update(self, t: float, value: float) -> AnomalyScore: ...


def tail_probability(z: float) -> float:
    """P(Z >= z) for a standard normal Z."""
    return 0.5 * math.erfc(z / _SQRT2)


class _Likelihood:
    """How unusual the mean of the last ``window`` raw scores is (HTM-style likelihood).

    Keeps a ring buffer of the last ``window`` raw scores and an exponentially weighted
    normal fit of their mean; :meth:`update` returns ``-log10`` of the upper tail
    probability of the current mean under the fit, then (if asked) learns it.
    """

    __slots__ = ("buf", "count", "learned", "mean", "pos", "var")

    buf: list[float]
    pos: int
    count: int
    learned: int
    mean: float
    var: float

    def __init__(self, window: int) -> None:
        self.buf = [0.0] * window
        self.pos = 0
        self.count = 0
        self.learned = 0
        self.mean = 0.0
        self.var = 0.0

    def __getstate__(self) -> tuple[list[float], int, int, int, float, float]:
        return (self.buf, self.pos, self.count, self.learned, self.mean, self.var)

    def __setstate__(self, state: tuple[list[float], int, int, int, float, float]) -> None:
        self.buf, self.pos, self.count, self.learned, self.mean, self.var = state

    def peek(self, raw: float, sd_floor: float) -> float:
        """What :meth:`update` would return for ``raw``, changing nothing."""
        buf = list(self.buf)
        buf[self.pos] = raw
        count = self.count + 1 if self.count < len(buf) else self.count
        if self.learned < 2:
            return 0.0
        avg = sum(buf) / count
        sd = math.sqrt(self.var)
        floor = 1e-6 + sd_floor * abs(self.mean)
        if floor > sd:
            sd = floor
        tail = 0.5 * math.erfc((avg - self.mean) / sd / _SQRT2)
        return -math.log10(_MIN_TAIL if tail < _MIN_TAIL else tail)

    def update(
        self, raw: float, alpha: float, sd_floor: float, learn: bool, score: bool = True
    ) -> float:
        """``-log10`` tail probability of the mean with ``raw`` (0.0 without ``score``:
        not computed), then learn it if ``learn``."""
        # runs once per reading per window: conditionals, not max(), and locals
        buf = self.buf
        size = len(buf)
        pos = self.pos
        buf[pos] = raw
        self.pos = pos + 1 if pos + 1 < size else 0
        count = self.count
        if count < size:
            count = self.count = count + 1
        avg = sum(buf) / count
        nl = 0.0
        mean = self.mean
        learned = self.learned
        if learned >= 2 and score:
            sd = math.sqrt(self.var)
            floor = 1e-6 + sd_floor * abs(mean)
            if floor > sd:
                sd = floor
            tail = 0.5 * math.erfc((avg - mean) / sd / _SQRT2)
            nl = -math.log10(_MIN_TAIL if tail < _MIN_TAIL else tail)
        if learn:
            if learned < COUNT_CAP:
                learned = self.learned = learned + 1
            first = 1.0 / learned
            a = first if first > alpha else alpha
            d = avg - mean
            self.mean = mean + a * d
            self.var = (1.0 - a) * (self.var + a * d * d)
        return nl


class _SlotsState:
    """Pickling for classes with ``__slots__`` (no ``__dict__`` to pickle by default)."""

    __slots__ = ()

    def __getstate__(self) -> dict[str, object]:
        names: tuple[str, ...] = type(self).__slots__
        return {name: getattr(self, name) for name in names}

    def __setstate__(self, state: dict[str, object]) -> None:
        for name, value in state.items():
            object.__setattr__(self, name, value)


class SeriesDetector(_SlotsState, base.AnomalyDetector):
    """Seasonal anomaly likelihood of one series, a river anomaly detector.

    See the module docstring for the model.

    Parameters
    ----------
    config
        The model's parameters (:class:`AnomalyConfig`; None: the product's defaults).
    seed
        Kept for the detector interface; the model has no randomness.
    time_key
        The feature of ``x`` holding the reading's time for :meth:`learn_one` and
        :meth:`score_one`: seconds since the epoch, or a ``datetime``.
    value_key
        The feature of ``x`` holding the reading's value.

    ``update(t, value)`` is :meth:`score_one` then :meth:`learn_one` in one pass, the
    path the worker takes: it returns the whole :class:`AnomalyScore`, and its score is
    the one :meth:`score_one` gives just before. ``t`` is seconds since the epoch, naive
    timestamps read as UTC so that hour of day and day of week are the local wall time.
    Times may be irregular, repeat, jump by days or step backwards: they only select the
    seasonal bin. A non-finite value is scored 0, not learned, and changes nothing; so
    is an ``x`` without a finite time or value (other features are ignored).

    >>> detector = SeriesDetector()
    >>> for i in range(200):
    ...     detector.learn_one({"t": 3600.0 * i, "value": 10.0 + (i % 3)})
    >>> round(detector.score_one({"t": 720_000.0, "value": 11.0}), 2)
    0.08
    >>> round(detector.score_one({"t": 720_000.0, "value": 90.0}), 2)
    0.32
    """

    __slots__ = (
        "_fast",
        "_fast_scale",
        "_last_score",
        "_level",
        "_lk_fast",
        "_lk_long",
        "_lk_slow",
        "_n",
        "_scale",
        "_season",
        "_season_n",
        "config",
        "seed",
        "time_key",
        "value_key",
    )

    # the state (streams.core.state restores it from these annotations)
    config: AnomalyConfig
    seed: int
    time_key: str
    value_key: str
    _season: list[float]
    _season_n: list[int]
    _level: float
    _scale: float
    _fast: float
    _fast_scale: float
    _n: int
    _last_score: float
    _lk_fast: _Likelihood
    _lk_slow: _Likelihood
    _lk_long: _Likelihood | None

    def __init__(
        self,
        config: AnomalyConfig | None = None,
        seed: int = 0,
        time_key: str = "t",
        value_key: str = "value",
    ) -> None:
        self.config = config if config is not None else AnomalyConfig()
        self.seed = seed
        self.time_key = time_key
        self.value_key = value_key
        c = self.config
        bins = c.bins_per_day * (2 if c.weekend_profile else 1)
        self._season = [0.0] * bins
        self._season_n = [0] * bins
        self._level = 0.0
        self._scale = 0.0
        self._fast = 0.0
        self._fast_scale = 0.0
        self._n = 0
        self._last_score = 0.0
        self._lk_fast = _Likelihood(c.short_window)
        self._lk_slow = _Likelihood(c.short_window)
        self._lk_long = _Likelihood(c.long_window) if c.long_window > 0 else None

    @property
    def readings_learned(self) -> int:
        """How many readings the detector has learned from (saturates at ``COUNT_CAP``)."""
        return self._n

    def seasonal_bin(self, t: float) -> int:
        """The profile bin of time ``t``: time-of-day bin, offset for weekend days."""
        c = self.config
        b = min(int((t % DAY_S) * c.bins_per_day / DAY_S), c.bins_per_day - 1)
        # 1970-01-01 was a Thursday: (days + 3) % 7 is 0 on Mondays, 5-6 at weekends.
        if c.weekend_profile and (int(t // DAY_S) + 3) % 7 >= 5:
            b += c.bins_per_day
        return b

    def _unit_test_skips(self) -> set[str]:
        return set()  # every river check applies

    def _reading(self, x: dict[base.typing.FeatureName, Any]) -> tuple[float, float] | None:
        t, value = x.get(self.time_key), x.get(self.value_key)
        if isinstance(t, datetime):
            t = (t if t.tzinfo else t.replace(tzinfo=UTC)).timestamp()
        if not isinstance(t, int | float) or not isinstance(value, int | float):
            return None
        t, value = float(t), float(value)
        return (t, value) if math.isfinite(t) and math.isfinite(value) else None

    def learn_one(self, x: dict[base.typing.FeatureName, Any]) -> None:
        """Learn one reading (``x[time_key]``, ``x[value_key]``)."""
        reading = self._reading(x)
        if reading is not None:
            self.update(*reading)

    def score_one(self, x: dict[base.typing.FeatureName, Any]) -> float:
        """The calibrated score of one reading, in [0, 1); learns nothing."""
        reading = self._reading(x)
        if reading is None:
            return 0.0
        t, value = reading
        c = self.config
        b = self.seasonal_bin(t)
        level = fast = value if self._n == 0 else None
        season = self._season[b]
        expected = (self._level if level is None else level) + season
        fast_expected = (self._fast if fast is None else fast) + season
        eps = 1e-9 + 1e-4 * abs(self._level if level is None else level)
        raw_slow = math.log1p(abs(value - expected) / (self._scale + eps))
        raw_fast = math.log1p(abs(value - fast_expected) / (self._fast_scale + eps))
        nl = max(self._lk_slow.peek(raw_slow, c.sd_floor), self._lk_fast.peek(raw_fast, c.sd_floor))
        if self._lk_long is not None:
            nl = max(nl, self._lk_long.peek(raw_slow, c.sd_floor))
        return nl / (nl + c.score_half)

    def update(self, t: float, value: float) -> AnomalyScore:
        """Score ``value`` at time ``t`` against what was learned, then learn from it."""
        c = self.config
        x = float(value)
        if not (math.isfinite(x) and math.isfinite(t)):
            return AnomalyScore(0.0, 0.0, self._level, self._n >= c.warmup_readings, False)
        # seasonal_bin(t), inline: this runs for every series of every closed minute
        per_day = c.bins_per_day
        b = int((t % DAY_S) * per_day / DAY_S)
        if b >= per_day:
            b = per_day - 1
        if c.weekend_profile and (int(t // DAY_S) + 3) % 7 >= 5:
            b += per_day
        if self._n == 0:
            self._level = self._fast = x
        season = self._season[b]
        expected = self._level + season
        fast_expected = self._fast + season
        eps = 1e-9 + 1e-4 * abs(self._level)
        raw_slow = math.log1p(abs(x - expected) / (self._scale + eps))
        raw_fast = math.log1p(abs(x - fast_expected) / (self._fast_scale + eps))

        n = self._n
        warmed_up = n >= c.warmup_readings
        weight = c.protect_weight if warmed_up and self._last_score >= c.protect_score else 1.0
        learn = weight > 0.0
        alpha, floor = c.dist_alpha, c.sd_floor
        nl = self._lk_slow.update(raw_slow, alpha, floor, learn)
        nl_fast = self._lk_fast.update(raw_fast, alpha, floor, learn)
        if nl_fast > nl:
            nl = nl_fast
        if self._lk_long is not None:
            nl_long = self._lk_long.update(raw_slow, alpha, floor, learn)
            if nl_long > nl:
                nl = nl_long
        score = nl / (nl + c.score_half)

        if learn:
            if n < COUNT_CAP:
                n = self._n = n + 1
            first = 1.0 / n
            scale_a = c.scale_alpha * weight
            if first > scale_a:
                scale_a = first
            dev_slow = abs(x - expected)
            dev_fast = abs(x - fast_expected)
            scale, fast_scale = self._scale, self._fast_scale
            if c.scale_clip > 0.0 and n > _CLIP_AFTER:
                dev_slow = min(dev_slow, c.scale_clip * scale)
                dev_fast = min(dev_fast, c.scale_clip * fast_scale)
            self._scale = scale + scale_a * (dev_slow - scale)
            self._fast_scale = fast_scale + scale_a * (dev_fast - fast_scale)
            level = self._level = self._level + c.level_alpha * weight * (x - season - self._level)
            season_n = self._season_n
            if season_n[b] < COUNT_CAP:
                season_n[b] += 1
            season_a = 1.0 / season_n[b]
            if not season_a > c.season_alpha:
                season_a = c.season_alpha
            self._season[b] += season_a * weight * (x - level - season)
            self._fast += c.fast_alpha * weight * (x - fast_expected)
        self._last_score = score
        return AnomalyScore(score, raw_slow, expected, warmed_up, learn)


def grade_of(score: float, bands: tuple[float, float, float]) -> Grade:
    """The grade of a score: IV below ``bands[0]``, III, II, and I from ``bands[2]`` on.

    >>> [grade_of(s, (0.6, 0.7, 0.8)) for s in (0.5, 0.6, 0.75, 0.95)]
    ['IV', 'III', 'II', 'I']
    """
    b3, b2, b1 = bands
    if score >= b1:
        return "I"
    if score >= b2:
        return "II"
    if score >= b3:
        return "III"
    return "IV"


class AlertDecision(NamedTuple):
    """What the gate decided on one score.

    ``event``: ``"firing"`` (an alert opens: the onset), ``"updated"`` (the open alert's
    grade rose), ``"resolved"`` (it cleared), or None. ``active``: an alert is open after
    this reading. ``grade``: the open (or just resolved) alert's grade, else None.
    ``score``: the score decided on.
    """

    event: AlertEventType | None
    active: bool
    grade: Grade | None
    score: float


class AnomalyGate(_SlotsState):
    """The alert lifecycle of one series, driven by its :class:`AnomalyScore` stream.

    * **Onset.** With no alert open, a warmed-up score ``>= fire_score`` opens one:
      event ``firing`` with the score's grade. Only onsets are detections.
    * **Open.** Scores ``>= clear_score`` keep it open and reset the hold; a score whose
      grade is more serious than the alert's raises the alert's grade: event ``updated``.
      Other scores change nothing visible.
    * **Clear.** Once the score has stayed ``< clear_score`` for ``hold_readings``
      consecutive readings spanning at least ``hold_seconds`` (measured from the first
      of them; a backward time step only delays it), the alert resolves: event
      ``resolved``. The next onset needs a new score ``>= fire_score``.
    * **Hold-off.** After an onset, the series does not fire again until
      ``holdoff_readings`` readings have been decided since that onset *and*
      ``holdoff_seconds`` have passed (0 and 0: no hold-off). While the alert is open,
      it still rises in grade as above. A score that would open a new alert within the
      hold-off opens none, unless its grade is more serious than the last alert's: a
      worse incident is never held back by a milder one. One anomaly episode, which
      often shows as a burst of high scores with short quiet gaps, so makes one alert
      rather than a string of them (``docs/detection.md`` has a timeline).

    Grade bands (score = ``nl / (nl + 5)`` with ``nl`` = ``-log10`` tail probability,
    defaults): IV (blue) ``[fire_score, 0.6)``, tail probability down to about 3e-8;
    III (yellow) ``[0.6, 0.7)``, down to about 2e-12; II (orange) ``[0.7, 0.8)``, down
    to 1e-20; I (red) ``>= 0.8``, rarer than 1e-20.
    """

    __slots__ = (
        "_below",
        "_below_since",
        "_fired_at",
        "_grade",
        "_last_grade",
        "_since_fired",
        "active",
        "config",
    )

    config: AnomalyConfig
    active: bool
    _grade: Grade | None
    _below: int
    _below_since: float
    _since_fired: int
    _fired_at: float
    _last_grade: Grade | None

    def __init__(self, config: AnomalyConfig | None = None) -> None:
        self.config = config if config is not None else AnomalyConfig()
        self.active = False
        self._grade: Grade | None = None
        self._below = 0
        self._below_since = 0.0
        # the hold-off: readings decided and time since the last onset, and its grade
        self._since_fired = 0
        self._fired_at = -math.inf
        self._last_grade: Grade | None = None

    def __setstate__(self, state: dict[str, object]) -> None:
        # state pickled before the hold-off existed: no onset to hold off from
        self._since_fired, self._fired_at, self._last_grade = 0, -math.inf, None
        super().__setstate__(state)

    def held_off(self, t: float, grade: Grade) -> bool:
        """Whether an onset of ``grade`` at ``t`` falls in the hold-off of the last one."""
        c = self.config
        if self._since_fired >= c.holdoff_readings and t - self._fired_at >= c.holdoff_seconds:
            return False
        last = self._last_grade
        return last is not None and GRADES.index(grade) <= GRADES.index(last)

    @property
    def grade(self) -> Grade | None:
        """The open alert's grade, None when no alert is open."""
        return self._grade if self.active else None

    def update(self, t: float, score: AnomalyScore) -> AlertDecision:
        """Decide on one score at time ``t``."""
        c = self.config
        s = score.score
        if self._since_fired < c.holdoff_readings:  # counts only as far as it matters
            self._since_fired += 1
        if not self.active:
            if score.warmed_up and s >= c.fire_score:
                grade = grade_of(s, c.grade_bands)
                if self.held_off(t, grade):
                    return AlertDecision(None, False, None, s)
                self.active = True
                self._grade = self._last_grade = grade
                self._below = 0
                self._since_fired, self._fired_at = 0, t
                return AlertDecision("firing", True, grade, s)
            return AlertDecision(None, False, None, s)
        if s >= c.clear_score:
            self._below = 0
            if s >= c.fire_score:
                grade = grade_of(s, c.grade_bands)
                if self._grade is None or GRADES.index(grade) > GRADES.index(self._grade):
                    self._grade = self._last_grade = grade
                    return AlertDecision("updated", True, grade, s)
            return AlertDecision(None, True, self._grade, s)
        if self._below == 0:
            self._below_since = t
        self._below += 1
        if self._below >= c.hold_readings and t - self._below_since >= c.hold_seconds:
            self.active = False
            self._below = 0
            return AlertDecision("resolved", False, self._grade, s)
        return AlertDecision(None, True, self._grade, s)
