"""The shipped default model: the seasonal likelihood and the contextual detector."""

from __future__ import annotations

import math
import pickle
import random
import sys
from pathlib import Path

from detectors.anomaly import AnomalyGate, SeriesDetector
from detectors.contextual import ContextDetector
from detectors.ensemble import Ensemble

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

import nab  # noqa: E402
from nabscore import load_windows  # noqa: E402


def wave(n: int, seed: int = 1) -> list[tuple[float, float]]:
    rng = random.Random(seed)
    return [
        (300.0 * i, 50.0 + 20.0 * math.sin(2 * math.pi * i / 288) + rng.gauss(0, 2.0))
        for i in range(n)
    ]


def test_update_is_score_one_then_learn_one() -> None:
    fused, split = Ensemble(), Ensemble()
    for t, v in wave(800):
        x = {"t": t, "value": v}
        before = pickle.dumps(split)
        score = split.score_one(x)
        assert pickle.dumps(split) == before
        split.learn_one(x)
        assert fused.update(t, v).score == score
    assert pickle.dumps(split) == pickle.dumps(fused)


def test_the_contextual_range_is_learned_from_the_first_readings_or_given() -> None:
    learned = Ensemble(range_readings=100, widen=0.5)
    points = wave(300)
    for t, v in points[:99]:
        learned.update(t, v)
    assert learned.context is None
    learned.update(*points[99])
    first = [v for _, v in points[:100]]
    span = max(first) - min(first)
    assert isinstance(learned.context, ContextDetector)
    assert learned.context.value_min == min(first) - 0.5 * span
    assert learned.context.value_max == max(first) + 0.5 * span
    given = Ensemble(value_range=(0.0, 140.0))
    assert isinstance(given.context, ContextDetector)
    assert (given.context.value_min, given.context.value_max) == (0.0, 140.0)


def test_contexts_count_only_where_the_seasonal_model_sees_something() -> None:
    ensemble, seasonal = Ensemble(), SeriesDetector()
    raised = 0
    for t, v in wave(4000, seed=5):
        mine, alone = ensemble.update(t, v), seasonal.update(t, v)
        assert mine.expected == alone.expected and mine.warmed_up == alone.warmed_up
        if alone.score < ensemble.context_gate:
            assert mine.score == alone.score
        else:
            assert mine.score >= alone.score
            raised += mine.score > alone.score
    assert raised > 0  # the contextual score did take part


def test_a_freeway_anomaly_the_seasonal_model_misses_is_caught() -> None:
    """NAB's speed_7578 sensor: its labelled slowdown of 2015-09-11 is seen only with contexts."""
    data = nab.default_data()
    name = "realTraffic/speed_7578.csv"
    (window,) = [
        w
        for w in load_windows(data / "labels" / "combined_windows.json")[name]
        if w[0].startswith("2015-09-11")
    ]
    stamps, values = nab.read_series(data / "data" / name)

    def onsets(model: SeriesDetector | Ensemble) -> list[str]:
        gate = AnomalyGate()
        out = []
        for stamp, value in zip(stamps, values, strict=True):
            t = nab.epoch_seconds(stamp)
            if gate.update(t, model.update(t, value)).event == "firing":
                out.append(stamp)
        return out

    inside = lambda found: [s for s in found if window[0] <= s <= window[1]]  # noqa: E731
    assert inside(onsets(SeriesDetector())) == []
    assert inside(onsets(Ensemble())) != []
