"""Trend forecasts: will a series cross a threshold grade before long?

:class:`TrendForecaster` is Holt's linear exponential smoothing (a level and a
trend per second) over irregularly spaced observations. :class:`CrossingWatch`
asks it, after each observation of a threshold rule's level, whether the
forecast reaches a grade boundary within ``horizon_s`` that the level itself
has not reached, and reports a predictive warning (预警) with the grade and the
expected crossing time:

- ``fire``: the forecast crosses a boundary within the horizon, the level is
  already within ``approach`` (a share of the boundary) of it, the trend points
  the bad way and is steep (it moves the level by at least ``min_rise`` of the
  boundary over the horizon: slow daily rhythms do not warn), and the
  forecaster has seen ``warmup`` observations;
- ``update``: the predicted grade changes;
- ``resolve``: the level itself crossed (the threshold alarm takes over), or no
  crossing has been predicted for ``hold`` observations in a row.

Example, PM2.5 rising 2 µg/m³ a minute towards 75:

>>> from detectors.thresholds import Aggregate, Direction, ThresholdSpec
>>> spec = ThresholdSpec("pm25", "iot.pm25", Aggregate.MEAN, 900, Direction.ABOVE, (75, 115, 150, 250))
>>> watch = CrossingWatch(spec, horizon_s=1800)
>>> out = [watch.observe(60.0 * i, 30 + 2.0 * i, crossed=False) for i in range(25)]
>>> [(o.kind, o.grade) for o in out if o is not None]
[('fire', 4)]
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from detectors.thresholds import GRADES, Direction, ThresholdSpec


@dataclass
class TrendForecaster:
    """Holt's linear trend on irregular time: level, and trend per second."""

    alpha: float = 0.3
    beta: float = 0.1
    level: float | None = None
    trend: float = 0.0  # per second
    last_t: float | None = None
    count: int = 0

    def update(self, t: float, value: float) -> None:
        if not math.isfinite(value):
            return
        if self.level is None or self.last_t is None:
            self.level, self.last_t, self.count = value, t, 1
            return
        dt = t - self.last_t
        if dt <= 0:  # a repeat or an older value: fold it into the level only
            self.level = self.alpha * value + (1 - self.alpha) * self.level
            return
        if self.count == 1:  # the first two observations give the first trend
            self.trend = (value - self.level) / dt
            self.level, self.last_t, self.count = value, t, 2
            return
        predicted = self.level + self.trend * dt
        level = self.alpha * value + (1 - self.alpha) * predicted
        self.trend = self.beta * (level - self.level) / dt + (1 - self.beta) * self.trend
        self.level, self.last_t = level, t
        self.count += 1

    def forecast(self, ahead_s: float) -> float | None:
        return None if self.level is None else self.level + self.trend * ahead_s


@dataclass(frozen=True)
class Crossing:
    """A predictive warning's change: the grade and when the boundary is expected."""

    kind: str  # "fire" | "update" | "resolve"
    grade: int
    bound: float
    level: float
    forecast: float
    horizon_s: float
    crossing_at: float | None
    at: float
    reason: str


@dataclass
class CrossingWatch:
    """Predictive warnings for one threshold rule over one series; picklable."""

    spec: ThresholdSpec
    horizon_s: float = 1800.0
    approach: float = 0.2
    min_rise: float = 0.25
    warmup: int = 20
    hold: int = 5
    forecaster: TrendForecaster | None = None
    grade: int | None = None
    bound: float = 0.0
    quiet: int = 0

    def __post_init__(self) -> None:
        if self.forecaster is None:
            self.forecaster = TrendForecaster()

    def observe(self, t: float, level: float, *, crossed: bool) -> Crossing | None:
        """One observation of the rule's level; ``crossed``: the rule itself is breached."""
        fc = self.forecaster
        assert fc is not None
        fc.update(t, level)
        if crossed:
            return self._resolve(t, level, "the level reached the limit")
        prediction = self._predict(t, level)
        if prediction is None:
            if self.grade is None:
                return None
            self.quiet += 1
            if self.quiet >= self.hold:
                return self._resolve(t, level, "no crossing forecast any more")
            return None
        grade, bound, crossing_at, value = prediction
        self.quiet = 0
        kind = "fire" if self.grade is None else ("update" if grade != self.grade else None)
        self.grade, self.bound = grade, bound
        if kind is None:
            return None
        return Crossing(kind, grade, bound, level, value, self.horizon_s, crossing_at, t, "trend")

    def _predict(self, t: float, level: float) -> tuple[int, float, float, float] | None:
        fc = self.forecaster
        assert fc is not None
        if fc.count < self.warmup or fc.level is None:
            return None
        up = self.spec.direction is Direction.ABOVE
        if (fc.trend <= 0) if up else (fc.trend >= 0):
            return None
        value = fc.level + fc.trend * self.horizon_s
        rise = abs(fc.trend) * self.horizon_s
        best: tuple[int, float, float, float] | None = None
        for grade, bound in zip(GRADES, self.spec.bounds, strict=True):
            if bound is None:
                continue
            already = level >= bound if up else level <= bound
            reaches = value >= bound if up else value <= bound
            near = abs(bound - level) <= self.approach * max(abs(bound), 1e-9)
            steep = rise >= self.min_rise * max(abs(bound), 1e-9)
            if already or not reaches or not near or not steep:
                continue
            crossing_at = t + (bound - fc.level) / fc.trend
            best = (grade, bound, max(t, crossing_at), value)  # later grades are more serious
        return best

    def _resolve(self, t: float, level: float, reason: str) -> Crossing | None:
        if self.grade is None:
            return None
        out = Crossing(
            "resolve", self.grade, self.bound, level, level, self.horizon_s, None, t, reason
        )
        self.grade, self.quiet = None, 0
        return out
