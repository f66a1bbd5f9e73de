"""ContextDetector (detectors/contextual.py): behaviour (river's estimator checks: tests/detectors/test_river_checks.py)."""

from __future__ import annotations

import math
import pickle
import random

import pytest

from detectors.contextual import ContextDetector

PATTERN = (0.1, 0.4, 0.9, 0.6, 0.3)


def seasonal(n: int, seed: int = 1, period: int = 24, noise: float = 0.03) -> list[float]:
    """A daily-like wave in [0.2, 0.8] with gaussian noise."""
    rng = random.Random(seed)
    return [0.5 + 0.3 * math.sin(2 * math.pi * i / period) + rng.gauss(0, noise) for i in range(n)]


def local_dataset(n: int = 2000, seed: int = 7) -> list[tuple[dict[str, float], bool]]:
    """(x, y) pairs: a seasonal series with injected spikes (y True) and two extra features."""
    rng = random.Random(seed)
    values = seasonal(n, seed=seed)
    data = []
    for i, v in enumerate(values):
        spike = i >= 200 and i % 97 == 0
        if spike:
            v = 0.98 if v < 0.5 else 0.02
        data.append(({"value": v, "f1": rng.random(), "f2": float(i % 24)}, spike))
    return data


LOCAL = local_dataset()


def state(model: ContextDetector) -> bytes:
    return pickle.dumps(model)


def test_repeating_pattern_becomes_unsurprising() -> None:
    model = ContextDetector()
    scores = [model.update(v) for _ in range(10) for v in PATTERN]
    n = len(PATTERN)
    assert max(scores[:n]) > 0.5  # the first pass is new
    assert all(s == 0.0 for s in scores[2 * n :])  # from the third pass on, all foreseen
    # the pattern ends on its last value: only its first value is expected next
    assert model.score_one({"value": PATTERN[0]}) == 0.0
    assert all(model.score_one({"value": v}) > 0.5 for v in PATTERN[1:])


def test_never_seen_value_or_transition_scores_high() -> None:
    model = ContextDetector()
    for _ in range(20):
        for v in PATTERN:
            model.update(v)
    # the pattern ends on 0.3 (bucket 2 of 8), 0.1 (bucket 0) comes next
    assert model.score_one({"value": 0.1}) == 0.0
    expected, near, known_out_of_order, never_seen = (
        model.score_one({"value": v}) for v in (0.1, 0.2, 0.9, 0.75)
    )
    # 9 predicting left facts (3 facts of 0.3, 6 neurons), 3 levels each
    assert expected == 0.0
    # a never-seen value next to the expected one shares its two coarse facts
    assert near == pytest.approx(1 / 3)
    # a known value out of its order (0.9 follows 0.4, never 0.3): only the coarse
    # facts of 0.3 ("lower half", "second quarter") had been followed by it
    assert known_out_of_order == pytest.approx(2 / 3)
    # a never-seen value in the other half: foreseen by the coarsest fact alone
    assert never_seen == pytest.approx(7 / 9)


def test_score_one_is_pure() -> None:
    model = ContextDetector()
    for x, _ in LOCAL[:500]:
        before = state(model)
        first = model.score_one(x)
        assert model.score_one(x) == first
        assert state(model) == before
        model.learn_one(x)


@pytest.mark.parametrize("rest_period", [0, 25])
def test_update_equals_score_then_learn(rest_period: int) -> None:
    a = ContextDetector(rest_period=rest_period, max_contexts=200)
    b = ContextDetector(rest_period=rest_period, max_contexts=200)
    via_update = [a.update(x["value"]) for x, _ in LOCAL]
    via_river = []
    for x, _ in LOCAL:
        via_river.append(b.score_one(x))
        b.learn_one(x)
    assert via_update == via_river
    assert state(a) == state(b)
    assert max(via_update) > 0.75  # the spikes are detections


def test_rest_period_damps_output_after_a_detection() -> None:
    raw = ContextDetector()
    rested = ContextDetector(rest_period=10)
    values = [x["value"] for x, _ in LOCAL]
    a = [raw.update(v) for v in values]
    b = [rested.update(v) for v in values]
    first = next(i for i, s in enumerate(a) if s >= 0.75)
    assert a[: first + 1] == b[: first + 1]
    for k in range(10):  # the k-th reading after the detection gets (k + 1) / 11 of it
        assert b[first + 1 + k] == pytest.approx(a[first + 1 + k] * (k + 1) / 11)


def test_pickle_round_trip_mid_stream() -> None:
    model = ContextDetector(max_contexts=300)
    values = [x["value"] for x, _ in LOCAL]
    for v in values[:1000]:
        model.update(v)
    copy = pickle.loads(pickle.dumps(model))
    assert [model.update(v) for v in values[1000:]] == [copy.update(v) for v in values[1000:]]


def test_state_is_bounded_after_100k_updates() -> None:
    model = ContextDetector(value_min=-2.0, value_max=2.0)
    rng = random.Random(0)
    for i in range(100_000):
        weekly = 0.3 * math.sin(2 * math.pi * i / 2016)
        model.update(math.sin(2 * math.pi * i / 288) + weekly + rng.gauss(0, 0.2))
        assert model.n_contexts <= model.max_contexts
    assert len(pickle.dumps(model)) < 64 * 1024


@pytest.mark.parametrize(
    "x",
    [{}, {"other": 1.0}, {"value": None}, {"value": math.nan}, {"value": math.inf},
     {"value": -math.inf}, {"value": "high"}],
)  # fmt: skip
def test_missing_or_non_finite_value(x: dict[str, object]) -> None:
    model = ContextDetector()
    for v in PATTERN * 3:
        model.update(v)
    before = state(model)
    assert model.score_one(x) == 0.0
    model.learn_one(x)
    assert state(model) == before
    value = x.get("value")
    if isinstance(value, float):
        assert model.update(value) == 0.0
        assert state(model) == before


def test_values_outside_the_range_are_clipped() -> None:
    low, high = ContextDetector(value_min=0.0, value_max=10.0), None
    for v in (1.0, 5.0, 9.0) * 5:
        low.update(v)
    high = pickle.loads(pickle.dumps(low))
    assert low.score_one({"value": 1e9}) == low.score_one({"value": 10.0})
    assert low.score_one({"value": -3.0}) == low.score_one({"value": 0.0})
    assert low.update(1e9) == high.update(10.0)
    assert state(low) == state(high)


def test_invalid_parameters() -> None:
    with pytest.raises(ValueError):
        ContextDetector(value_min=1.0, value_max=1.0)
    with pytest.raises(ValueError):
        ContextDetector(num_norm_value_bits=0)
    with pytest.raises(ValueError):
        ContextDetector(max_left_semi_contexts=16)
