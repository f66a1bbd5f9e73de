"""Expert thresholds: pending, hold, hysteresis, escalation, missing data, silent sources."""

from __future__ import annotations

import dataclasses
import pickle

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detectors.thresholds import (
    MAX_BUCKETS,
    Aggregate,
    Direction,
    MissingData,
    SilenceWatch,
    ThresholdDetector,
    ThresholdSpec,
    Transition,
)

PM25 = ThresholdSpec(
    "air.pm25.high",
    "iot.pm25",
    Aggregate.READING,
    0,
    Direction.ABOVE,
    (75, 115, 150, 250),
    pending_s=300,
    hold_s=600,
    hysteresis=10,
)


def feed(det: ThresholdDetector, points: list[tuple[float, float]]) -> list[Transition]:
    out: list[Transition] = []
    for t, v in points:
        out += det.update(t, v)
    return out


def kinds(trs: list[Transition]) -> list[tuple[str, int, float]]:
    return [(tr.kind, tr.grade, tr.at) for tr in trs]


def test_a_breach_shorter_than_pending_never_fires() -> None:
    det = ThresholdDetector(PM25)
    out = feed(det, [(0, 50), (60, 120), (120, 130), (240, 280), (299, 40), (400, 40)])
    assert out == []
    assert det.phase == "inactive"


def test_a_breach_lasting_pending_fires_at_the_grade_the_level_has_then() -> None:
    det = ThresholdDetector(PM25)
    out = feed(det, [(0, 80), (120, 90), (240, 160), (300, 120)])
    assert kinds(out) == [("fire", 3, 300)]
    assert out[0].since == 0 and out[0].threshold == 115 and out[0].level == 120


def test_escalation_is_immediate_and_de_escalation_needs_the_hysteresis() -> None:
    det = ThresholdDetector(PM25)
    feed(det, [(0, 80), (300, 80)])  # fires at IV
    assert kinds(det.update(310, 260)) == [("update", 1, 310)]  # straight to I
    assert det.update(320, 245) == []  # under 250, but not by the 10 of hysteresis
    assert kinds(det.update(330, 239)) == [("update", 2, 330)]  # 239 < 250 - 10
    assert det.update(340, 145) == []  # 145 >= 150 - 10: stays II
    assert kinds(det.update(350, 100)) == [("update", 4, 350)]  # below 115 - 10 → IV


def test_hold_keeps_the_alert_open_and_a_new_breach_continues_it() -> None:
    det = ThresholdDetector(PM25)
    feed(det, [(0, 80), (300, 80)])
    assert det.update(400, 70) == []  # 70 >= 75 - 10: not yet clear
    assert det.update(500, 60) == [] and det.phase == "clearing"
    assert det.update(800, 90) == [] and det.phase == "firing"  # back within the hold
    assert det.update(900, 50) == []
    out = det.update(1500, 50)  # clear for 600 s
    assert kinds(out) == [("resolve", 4, 1500)]
    assert out[0].reason == "back within limits"
    assert det.phase == "inactive" and det.grade is None


def test_resolve_then_breach_again_fires_anew() -> None:
    det = ThresholdDetector(PM25)
    feed(det, [(0, 80), (300, 80), (400, 10), (1000, 10)])
    assert det.phase == "inactive"
    assert kinds(feed(det, [(1100, 200), (1400, 200)])) == [("fire", 2, 1400)]


def test_zero_pending_fires_on_the_first_breaching_reading() -> None:
    det = ThresholdDetector(
        ThresholdSpec(
            "s", "fire.smoke_alarms", Aggregate.READING, 0, Direction.ABOVE, (1, None, None, 5)
        )
    )
    assert kinds(det.update(10, 2)) == [("fire", 4, 10)]
    assert kinds(det.update(11, 7)) == [("update", 1, 11)]


def test_below_direction_mirrors_everything() -> None:
    spec = ThresholdSpec(
        "water.pressure.low",
        "iot.water_pressure_kpa",
        Aggregate.READING,
        0,
        Direction.BELOW,
        (250, 200, 150, 100),
        pending_s=60,
        hold_s=120,
        hysteresis=5,
    )
    det = ThresholdDetector(spec)
    assert kinds(feed(det, [(0, 190), (60, 190)])) == [("fire", 3, 60)]
    assert det.update(70, 203) == []  # not 5 above 200
    assert kinds(det.update(80, 206)) == [("update", 4, 80)]
    assert kinds(det.update(90, 90)) == [("update", 1, 90)]
    assert kinds(feed(det, [(100, 300), (220, 300)])) == [("resolve", 1, 220)]


def test_missing_data_keep_leaves_the_alert_open() -> None:
    det = ThresholdDetector(PM25)  # missing=keep, missing_after_s=600
    feed(det, [(0, 200), (300, 200)])
    assert det.advance(5000) == []
    assert det.phase == "firing" and det.grade == 2


def test_missing_data_resolve_resolves_an_open_alert_and_drops_a_pending_one() -> None:
    spec = ThresholdSpec(
        "r",
        "iot.pm25",
        Aggregate.READING,
        0,
        Direction.ABOVE,
        (75, None, None, None),
        pending_s=300,
        missing=MissingData.RESOLVE,
        missing_after_s=600,
    )
    det = ThresholdDetector(spec)
    feed(det, [(0, 80), (300, 80)])
    assert det.advance(800) == []  # 500 s of silence: not missing yet
    out = det.advance(901)
    assert kinds(out) == [("resolve", 4, 901)] and out[0].reason == "no data"
    pending = ThresholdDetector(spec)
    pending.update(0, 80)
    assert pending.advance(700) == [] and pending.phase == "inactive"


def test_pending_fires_on_the_clock_without_a_new_reading() -> None:
    det = ThresholdDetector(PM25)
    det.update(0, 120)
    assert kinds(det.advance(300)) == [("fire", 3, 300)]


def test_window_mean_over_fifteen_minutes() -> None:
    spec = ThresholdSpec(
        "air.pm25.mean15", "iot.pm25", Aggregate.MEAN, 900, Direction.ABOVE, (75, 115, 150, 250)
    )
    det = ThresholdDetector(spec)
    out = feed(det, [(0, 60), (60, 70), (120, 100)])  # mean 76.7
    assert kinds(out) == [("fire", 4, 120)]
    assert det.level == pytest.approx(230 / 3)
    # 15 minutes on, the readings at 0 and 60 have left the window; the one at 120 not yet
    assert det.update(1000, 120) == []
    assert det.level == pytest.approx(110.0)
    # (the window's edge moves in steps of a 60th of the window: 15 s here)
    assert kinds(det.update(1040, 120)) == [("update", 3, 1040)]
    assert det.level == pytest.approx(120.0)


@pytest.mark.parametrize(
    ("aggregate", "expected"),
    [
        (Aggregate.MAX, 9.0),
        (Aggregate.MIN, 1.0),
        (Aggregate.SUM, 15.0),
        (Aggregate.COUNT, 4.0),
        (Aggregate.RATE, 15.0 / 5.0),  # per minute over a 5-minute window
    ],
)
def test_window_aggregates(aggregate: Aggregate, expected: float) -> None:
    det = ThresholdDetector(
        ThresholdSpec("a", "x", aggregate, 300, Direction.ABOVE, (1e9, None, None, None))
    )
    feed(det, [(0, 100), (400, 1), (450, 9), (500, 3), (520, 2)])  # the first leaves the window
    assert det.level == pytest.approx(expected)


def test_a_late_reading_inside_the_window_counts_and_one_outside_does_not() -> None:
    det = ThresholdDetector(
        ThresholdSpec("a", "x", Aggregate.SUM, 300, Direction.ABOVE, (1e9, None, None, None))
    )
    feed(det, [(1000, 1), (1100, 1)])
    det.update(900, 5)  # late but inside (800, 1100]
    assert det.level == pytest.approx(7)
    det.update(700, 50)  # older than the window
    assert det.level == pytest.approx(7)


def test_a_reading_rule_ignores_a_reading_older_than_the_last() -> None:
    det = ThresholdDetector(PM25)
    feed(det, [(0, 200), (300, 200)])
    assert det.update(100, 10) == [] and det.level == 200


def test_window_state_stays_bounded_at_any_reading_rate() -> None:
    det = ThresholdDetector(
        ThresholdSpec("a", "x", Aggregate.MEAN, 900, Direction.ABOVE, (1e9, None, None, None))
    )
    for i in range(20_000):
        det.update(i * 0.5, 1.0)
    assert len(det._buckets) <= MAX_BUCKETS + 1
    assert len(pickle.dumps(det)) < 16_384


def test_pickle_round_trip_continues_identically() -> None:
    a = ThresholdDetector(PM25)
    feed(a, [(0, 80), (100, 130)])
    b = pickle.loads(pickle.dumps(a))
    rest = [(200, 170), (300, 170), (400, 20), (1100, 20)]
    assert feed(a, rest) == feed(b, rest)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"bounds": (None, None, None, None)}, "at least one grade boundary"),
        ({"bounds": (100, 90, None, None)}, "must increase from IV to I"),
        ({"direction": Direction.BELOW, "bounds": (100, 120, None, None)}, "must decrease"),
        ({"bounds": (float("nan"), None, None, None)}, "finite"),
        ({"aggregate": Aggregate.MEAN, "window_s": 0}, "window longer than 0"),
        ({"pending_s": -1}, "pending_s must not be negative"),
    ],
)
def test_invalid_specs_are_refused_with_the_reason(kwargs: dict[str, object], message: str) -> None:
    base: dict[str, object] = {
        "rule_id": "r",
        "indicator": "x",
        "aggregate": Aggregate.READING,
        "window_s": 0,
        "direction": Direction.ABOVE,
        "bounds": (1, 2, 3, 4),
    }
    base.update(kwargs)
    with pytest.raises(ValueError, match=message):
        ThresholdSpec(**base)  # type: ignore[arg-type]


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 50), st.floats(0, 400)), min_size=1, max_size=80))
def test_transitions_always_form_a_valid_alert_life(steps: list[tuple[float, float]]) -> None:
    """fire opens, update only while open, resolve closes; grades stay within I-IV."""
    det = ThresholdDetector(PM25)
    t = 0.0
    open_ = False
    for dt, value in steps:
        t += dt
        for tr in det.update(t, value):
            assert 1 <= tr.grade <= 4
            if tr.kind == "fire":
                assert not open_
                open_ = True
            elif tr.kind == "update":
                assert open_
            else:
                assert tr.kind == "resolve" and open_
                open_ = False
    assert open_ == (det.phase in ("firing", "clearing"))


def test_a_silent_source_is_reported_once_and_cleared_when_it_reports() -> None:
    watch = SilenceWatch(expected_s=60, factor=3)
    assert watch.check(1000) is None  # never seen: nothing to miss yet
    watch.seen(1000)
    assert watch.check(1170) is None
    assert watch.check(1181) == "fire"
    assert watch.check(1300) is None  # once per silence
    assert watch.seen(1310) == "resolve"
    assert watch.seen(1370) is None


def test_closed_windows_feed_the_same_aggregates_as_single_readings() -> None:
    spec = ThresholdSpec(
        "air.pm25.mean15",
        "iot.pm25",
        Aggregate.MEAN,
        900,
        Direction.ABOVE,
        (75, 115, 150, 250),
        pending_s=120,
    )
    by_reading, by_window = ThresholdDetector(spec), ThresholdDetector(spec)
    minutes = [(0, [60.0, 70.0]), (60, [100.0, 110.0]), (120, [130.0]), (180, [140.0, 150.0])]
    a: list[Transition] = []
    b: list[Transition] = []
    for start, values in minutes:
        for v in values:
            a += by_reading.update(start + 59, v)
        b += by_window.update_window(
            start, start + 60, len(values), sum(values), min(values), max(values)
        )
    assert by_window.level == pytest.approx(by_reading.level)
    assert [(t.kind, t.grade) for t in b] == [(t.kind, t.grade) for t in a] == [("fire", 4)]


def test_a_reading_rule_judges_the_worst_reading_of_a_window() -> None:
    above = ThresholdDetector(dataclasses.replace(PM25, pending_s=0))
    assert kinds(above.update_window(0, 60, 3, 330.0, 10.0, 260.0)) == [("fire", 1, 60)]
    low = ThresholdDetector(
        ThresholdSpec("p", "x", Aggregate.READING, 0, Direction.BELOW, (250, 200, 150, 100))
    )
    assert kinds(low.update_window(0, 60, 2, 500.0, 140.0, 360.0)) == [("fire", 2, 60)]


def test_an_empty_window_only_moves_the_clock() -> None:
    det = ThresholdDetector(PM25)
    det.update(0, 120)
    assert kinds(det.update_window(240, 300, 0, 0.0, 0.0, 0.0)) == [("fire", 3, 300)]
