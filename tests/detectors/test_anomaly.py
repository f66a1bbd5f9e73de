"""SeriesDetector and AnomalyGate (detectors/anomaly.py): behaviour on small series."""

from __future__ import annotations

import copy
import dataclasses
import math
import pickle
import random

import pytest

from detectors.anomaly import (
    AlertDecision,
    AnomalyConfig,
    AnomalyGate,
    AnomalyScore,
    SeriesDetector,
    grade_of,
)

T0 = 1_420_070_400.0  # 2015-01-01 00:00 (a Thursday), wall time read as UTC
STEP = 300.0


def noisy(n: int, level: float = 50.0, sd: float = 2.0, seed: int = 1) -> list[float]:
    rng = random.Random(seed)
    return [level + rng.gauss(0, sd) for _ in range(n)]


def run(
    values: list[float], config: AnomalyConfig | None = None, t0: float = T0
) -> tuple[list[AnomalyScore], list[AlertDecision]]:
    detector = SeriesDetector(config)
    gate = AnomalyGate(detector.config)
    scores, decisions = [], []
    for i, v in enumerate(values):
        t = t0 + i * STEP
        s = detector.update(t, v)
        scores.append(s)
        decisions.append(gate.update(t, s))
    return scores, decisions


def onsets(decisions: list[AlertDecision]) -> list[int]:
    return [i for i, d in enumerate(decisions) if d.event == "firing"]


def test_warm_up_suppresses_alerts() -> None:
    warmup = AnomalyConfig().warmup_readings
    values = noisy(300)
    for i in (60, 61, 62):
        values[i] += 200.0  # far outside anything seen so far
    scores, decisions = run(values)
    assert not any(s.warmed_up for s in scores[:warmup])
    assert all(s.warmed_up for s in scores[warmup:])
    assert not any(d.active for d in decisions[:warmup])
    # The same burst alerts when the warm-up is shorter than its position.
    short = dataclasses.replace(AnomalyConfig(), warmup_readings=20)
    _, short_decisions = run(values, short)
    assert 60 <= onsets(short_decisions)[0] <= 64


def test_clear_spike_after_warm_up_fires() -> None:
    values = noisy(1500)
    values[1200] += 40.0  # 20 standard deviations
    scores, decisions = run(values)
    assert scores[1200].warmed_up
    assert onsets(decisions) == [1200]
    assert decisions[1200].grade in ("IV", "III", "II", "I")
    assert scores[1200].expected == pytest.approx(50.0, abs=1.5)


def daily_pattern(days: int, seed: int = 2) -> list[float]:
    """High (100) from 07:00 to 09:00, low (10) otherwise, with a little noise."""
    rng = random.Random(seed)
    out = []
    for i in range(days * 288):
        hour = (i * STEP % 86400) / 3600
        out.append((100.0 if 7 <= hour < 9 else 10.0) + rng.gauss(0, 1))
    return out


def test_time_of_day_awareness() -> None:
    detector = SeriesDetector()
    for i, v in enumerate(daily_pattern(14)):
        detector.update(T0 + i * STEP, v)
    midnight = T0 + 14 * 86400  # a Thursday
    at_03, at_08 = copy.deepcopy(detector), copy.deepcopy(detector)
    # The same value for 15 minutes, once at 03:00 and once at 08:00 of day 15.
    s03 = [at_03.update(midnight + 3 * 3600 + k * STEP, 100.0) for k in range(3)]
    s08 = [at_08.update(midnight + 8 * 3600 + k * STEP, 100.0) for k in range(3)]
    assert s08[0].expected == pytest.approx(100.0, abs=5.0)
    assert s03[0].expected == pytest.approx(10.0, abs=5.0)
    assert all(a.score > b.score for a, b in zip(s03, s08, strict=True))
    assert max(s.score for s in s03) >= AnomalyConfig().fire_score
    assert max(s.score for s in s08) < AnomalyConfig().clear_score


def test_scores_are_bounded_and_not_saturated() -> None:
    flat, flat_decisions = run([5.0] * 5000)
    assert all(0.0 <= s.score < 0.2 for s in flat)
    assert not onsets(flat_decisions)
    noise, _ = run(noisy(5000, sd=10.0))
    assert all(0.0 <= s.score < 1.0 for s in noise)
    # A huge outlier is graded high but still below 1: the scale is continuous.
    values = noisy(2000)
    values[1500] = 1e6
    spiked, _ = run(values)
    assert 0.8 <= spiked[1500].score < 1.0


def test_learning_protection_keeps_baseline_out_of_a_long_anomaly() -> None:
    values = noisy(2000, level=10.0, sd=1.0) + noisy(400, level=50.0, sd=1.0, seed=5)
    unprotected = dataclasses.replace(AnomalyConfig(), protect_weight=1.0)
    skip = dataclasses.replace(AnomalyConfig(), protect_weight=0.0)
    free_scores, _ = run(values, unprotected)
    skip_scores, _ = run(values, skip)
    default_scores, _ = run(values)
    # Without protection the baseline drifts towards the anomalous level...
    assert free_scores[2050].expected > 25.0
    assert free_scores[-1].expected > 45.0
    # ...skipping learning while the score is high keeps it where it was (the first
    # anomalous readings, before the score rose, were learned)...
    assert skip_scores[-1].expected == pytest.approx(10.0, abs=1.5)
    assert not any(s.learned for s in skip_scores[2002:])
    assert min(s.score for s in skip_scores[2002:]) >= AnomalyConfig().fire_score
    # ...and the default (reduced weight) drifts much more slowly.
    assert default_scores[2050].expected < free_scores[2050].expected - 10.0
    assert all(s.learned for s in default_scores)


def warm(score: float) -> AnomalyScore:
    return AnomalyScore(score=score, raw=0.0, expected=0.0, warmed_up=True, learned=True)


def test_gate_onset_update_hold_and_clear() -> None:
    config = dataclasses.replace(AnomalyConfig(), hold_readings=3)
    gate = AnomalyGate(config)
    events = []
    for i, s in enumerate([0.1, 0.5, 0.55, 0.85, 0.5, 0.2, 0.2, 0.4, 0.2, 0.2, 0.2, 0.1, 0.5]):
        events.append((gate.update(T0 + i * STEP, warm(s)).event, gate.grade))
    assert events == [
        (None, None),
        ("firing", "IV"),  # onset
        (None, "IV"),  # a further high score only keeps it open
        ("updated", "I"),  # the grade rises
        (None, "I"),  # never falls while open
        (None, "I"),  # below clear: 1
        (None, "I"),  # below clear: 2
        (None, "I"),  # 0.4 >= clear_score resets the hold
        (None, "I"),
        (None, "I"),
        ("resolved", None),  # three consecutive readings below clear
        (None, None),  # 0.1: nothing open
        ("firing", "IV"),  # a new onset
    ]


def test_gate_needs_warm_up_and_fire_score() -> None:
    gate = AnomalyGate()
    cold = AnomalyScore(0.9, 0.0, 0.0, warmed_up=False, learned=True)
    assert gate.update(T0, cold).event is None
    assert gate.update(T0, warm(AnomalyConfig().fire_score - 0.01)).event is None
    assert gate.update(T0, warm(AnomalyConfig().fire_score)).event == "firing"


def test_gate_hold_seconds() -> None:
    config = dataclasses.replace(AnomalyConfig(), hold_readings=1, hold_seconds=600.0)
    gate = AnomalyGate(config)
    assert gate.update(0.0, warm(0.9)).event == "firing"
    assert gate.update(100.0, warm(0.1)).event is None  # below since t=100
    assert gate.update(500.0, warm(0.1)).event is None  # 400 s
    assert gate.update(650.0, warm(0.1)).event is None  # 550 s
    assert gate.update(700.0, warm(0.1)).event == "resolved"  # 600 s


def test_gate_hold_off_counts_readings_from_the_onset() -> None:
    config = dataclasses.replace(AnomalyConfig(), hold_readings=1, holdoff_readings=5)
    gate = AnomalyGate(config)
    seen = [
        gate.update(T0 + i * STEP, warm(s)).event
        for i, s in enumerate([0.5, 0.1, 0.5, 0.55, 0.1, 0.5, 0.1])
    ]
    assert seen == [
        "firing",  # onset, reading 0
        "resolved",  # reading 1
        None,  # reading 2: an onset of the same grade within 5 readings is held off
        None,  # reading 3: still held off
        None,  # reading 4
        "firing",  # reading 5: five readings after the onset, it may fire again
        "resolved",
    ]


def test_gate_hold_off_in_seconds_and_a_more_serious_grade_is_never_held_back() -> None:
    config = dataclasses.replace(AnomalyConfig(), hold_readings=1, holdoff_seconds=3600.0)
    gate = AnomalyGate(config)
    assert gate.update(0.0, warm(0.5)).event == "firing"  # IV
    assert gate.update(60.0, warm(0.65)).event == "updated"  # III: escalation is allowed
    assert gate.update(120.0, warm(0.1)).event == "resolved"
    assert gate.update(180.0, warm(0.65)).event is None  # III again: held off
    assert gate.update(240.0, warm(0.5)).event is None  # IV: held off
    assert gate.update(300.0, warm(0.75)).event == "firing"  # II: more serious, fires
    assert gate.grade == "II"
    assert gate.update(360.0, warm(0.1)).event == "resolved"
    assert gate.update(3599.0, warm(0.75)).event is None  # 3299 s after the II onset
    assert gate.update(3900.0, warm(0.5)).event == "firing"  # 3600 s after it


def test_gate_without_hold_off_refires_at_once() -> None:
    gate = AnomalyGate(dataclasses.replace(AnomalyConfig(), hold_readings=1))
    events = [gate.update(float(i), warm(s)).event for i, s in enumerate([0.5, 0.1, 0.5])]
    assert events == ["firing", "resolved", "firing"]


def test_gate_state_from_before_the_hold_off_restores() -> None:
    gate = AnomalyGate(dataclasses.replace(AnomalyConfig(), holdoff_readings=100))
    assert gate.update(0.0, warm(0.5)).event == "firing"
    old = gate.__getstate__()
    for name in ("_since_fired", "_fired_at", "_last_grade"):
        del old[name]
    restored = AnomalyGate.__new__(AnomalyGate)
    restored.__setstate__(old)
    assert restored.active and restored.grade == "IV"
    assert not restored.held_off(1.0, "IV")  # no recorded onset: nothing to hold off


def test_grade_bands() -> None:
    bands = AnomalyConfig().grade_bands
    assert bands == (0.6, 0.7, 0.8)
    assert [grade_of(s, bands) for s in (0.47, 0.59, 0.6, 0.69, 0.7, 0.79, 0.8, 0.99)] == [
        "IV",
        "IV",
        "III",
        "III",
        "II",
        "II",
        "I",
        "I",
    ]


def test_irregular_duplicate_backward_and_gapped_times() -> None:
    detector = SeriesDetector()
    gate = AnomalyGate()
    rng = random.Random(4)
    t = T0
    for i in range(3000):
        if i % 97 == 0:
            pass  # duplicate timestamp
        elif i % 211 == 0:
            t -= 3600.0  # a backward step of an hour
        elif i % 1000 == 0:
            t += 4 * 86400.0  # a gap of four days
        else:
            t += rng.uniform(60.0, 900.0)
        value = math.nan if i == 1234 else 20.0 + rng.gauss(0, 1)
        s = detector.update(t, value)
        gate.update(t, s)
        assert 0.0 <= s.score < 1.0
        assert math.isfinite(s.expected)
    assert detector.readings_learned == 2999  # the NaN was not learned


def test_config_is_validated() -> None:
    with pytest.raises(ValueError, match="clear_score"):
        AnomalyConfig(fire_score=0.3, clear_score=0.5)
    with pytest.raises(ValueError, match="level_alpha"):
        AnomalyConfig(level_alpha=0.0)
    with pytest.raises(ValueError, match="grade_bands"):
        AnomalyConfig(grade_bands=(0.9, 0.7, 0.8))


def test_score_one_then_learn_one_is_update() -> None:
    values = daily_pattern(4) + [v + 60.0 for v in noisy(30)] + daily_pattern(1)
    fused, split = SeriesDetector(), SeriesDetector()
    for i, v in enumerate(values):
        t = T0 + i * STEP
        x = {"t": t, "value": v, "other": 1.0}
        before = pickle.dumps(split)
        score = split.score_one(x)
        assert pickle.dumps(split) == before  # scoring learns nothing
        split.learn_one(x)
        assert score == fused.update(t, v).score
    assert pickle.dumps(split) == pickle.dumps(fused)


def test_river_input_without_time_or_value_changes_nothing() -> None:
    detector = SeriesDetector()
    for i, v in enumerate(noisy(200)):
        detector.learn_one({"t": T0 + i * STEP, "value": v})
    state = pickle.dumps(detector)
    for x in ({"value": 50.0}, {"t": T0}, {"t": T0, "value": math.nan}, {"t": "x", "value": 1}):
        assert detector.score_one(x) == 0.0
        detector.learn_one(x)
    assert pickle.dumps(detector) == state


def test_the_hold_off_timeline_of_the_detection_docs() -> None:
    """docs/detection.md's timeline, minute by minute."""
    config = dataclasses.replace(AnomalyConfig(), hold_readings=3, holdoff_seconds=3600.0)
    gate = AnomalyGate(config)
    scores = {0: 0.50, 1: 0.65, 2: 0.2, 3: 0.2, 4: 0.2, 5: 0.62, 40: 0.75, 41: 0.1, 42: 0.1}
    scores |= {43: 0.1, 70: 0.55, 100: 0.55}
    seen = {}
    for minute in range(101):
        decision = gate.update(60.0 * minute, warm(scores.get(minute, 0.1)))
        if decision.event is not None:
            seen[minute] = (decision.event, decision.grade)
    assert seen == {
        0: ("firing", "IV"),
        1: ("updated", "III"),
        4: ("resolved", "III"),
        40: ("firing", "II"),
        43: ("resolved", "II"),
        100: ("firing", "IV"),
    }
