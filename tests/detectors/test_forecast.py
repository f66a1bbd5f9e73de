"""Trend forecasts: predictive warnings before a threshold grade is crossed."""

from __future__ import annotations

import pickle

import pytest

from detectors.forecast import CrossingWatch, TrendForecaster
from detectors.thresholds import Aggregate, Direction, ThresholdSpec

PM25 = ThresholdSpec("pm25", "iot.pm25", Aggregate.MEAN, 900, Direction.ABOVE, (75, 115, 150, 250))
PRESSURE = ThresholdSpec(
    "water", "iot.water_pressure_kpa", Aggregate.MEAN, 180, Direction.BELOW, (250, 200, 150, 100)
)


def test_holt_learns_a_linear_trend_on_irregular_times() -> None:
    fc = TrendForecaster()
    t = 0.0
    for i in range(200):
        t += 60 + (i % 3) * 20  # irregular spacing
        fc.update(t, 10 + 0.05 * t)
    assert fc.trend == pytest.approx(0.05, rel=0.02)
    assert fc.forecast(600) == pytest.approx(10 + 0.05 * (t + 600), rel=0.01)


def test_a_rising_level_warns_with_the_expected_crossing_time() -> None:
    watch = CrossingWatch(PM25, horizon_s=1800)
    out = [watch.observe(60.0 * i, 30 + 2.0 * i, crossed=False) for i in range(25)]
    fired = [o for o in out if o is not None]
    assert len(fired) == 1
    (w,) = fired
    assert (w.kind, w.grade, w.bound) == ("fire", 4, 75)
    # 2 per minute from 30: the level reaches 75 at minute 22.5
    assert w.crossing_at is not None
    assert w.crossing_at == pytest.approx(22.5 * 60, abs=90)
    assert w.level < 75 <= w.forecast


def test_a_flat_or_falling_level_never_warns() -> None:
    flat = CrossingWatch(PM25)
    falling = CrossingWatch(PM25)
    assert all(flat.observe(60.0 * i, 70.0, crossed=False) is None for i in range(60))
    assert all(falling.observe(60.0 * i, 74 - 0.5 * i, crossed=False) is None for i in range(60))


def test_a_far_away_limit_is_not_warned_about() -> None:
    watch = CrossingWatch(PM25, horizon_s=6 * 3600)  # a long horizon, but the level is low
    assert all(watch.observe(60.0 * i, 10 + 0.2 * i, crossed=False) is None for i in range(30))


def test_a_falling_pressure_warns_for_a_below_rule_and_escalates() -> None:
    watch = CrossingWatch(PRESSURE, horizon_s=1200)
    out = [watch.observe(60.0 * i, 480 - 8.0 * i, crossed=False) for i in range(32)]
    kinds = [(o.kind, o.grade) for o in out if o is not None]
    assert kinds[0] == ("fire", 4) and ("update", 3) in kinds


def test_the_warning_resolves_when_the_level_crosses_or_the_trend_fades() -> None:
    watch = CrossingWatch(PM25, horizon_s=1800, hold=3)
    for i in range(20):
        watch.observe(60.0 * i, 30 + 2.0 * i, crossed=False)
    assert watch.grade == 4
    done = watch.observe(60.0 * 20, 76, crossed=True)
    assert (
        done is not None and done.kind == "resolve" and done.reason == "the level reached the limit"
    )
    fading = CrossingWatch(PM25, horizon_s=1800, hold=3)
    for i in range(20):
        fading.observe(60.0 * i, 30 + 2.0 * i, crossed=False)
    out = [fading.observe(60.0 * (20 + i), 60.0 - i, crossed=False) for i in range(10)]
    resolved = [o for o in out if o is not None]
    assert [o.kind for o in resolved] == ["resolve"]
    assert resolved[0].reason == "no crossing forecast any more"


def test_pickle_round_trip_continues_identically() -> None:
    a = CrossingWatch(PM25)
    for i in range(15):
        a.observe(60.0 * i, 30 + 2.0 * i, crossed=False)
    b = pickle.loads(pickle.dumps(a))
    rest = [(60.0 * i, 30 + 2.0 * i) for i in range(15, 40)]
    assert [a.observe(t, v, crossed=v >= 75) for t, v in rest] == [
        b.observe(t, v, crossed=v >= 75) for t, v in rest
    ]
