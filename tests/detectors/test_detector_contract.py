"""The contract every series detector keeps, checked for each detector in one place.

A detector lives in a Faust table and is replayed offline, so it must survive a round
trip through the table's state document (:data:`streams.alerting.detection.DETECTION_STATE`,
never a pickle) mid-stream unchanged, give the same outputs for the same seed, and keep
a bounded state (its document's size, uncompressed). Each entry of ``FACTORIES`` builds a fresh detector from a seed; its
``update(t, value)`` returns something comparable with ``==``.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import pytest
from river import anomaly

from detectors.anomaly import (
    AlertDecision,
    AnomalyGate,
    AnomalyScore,
    AnomalyScorer,
    SeriesDetector,
)
from detectors.calibrated import Calibrated
from detectors.contextual import ContextDetector
from detectors.ensemble import Ensemble
from detectors.forecast import CrossingWatch
from detectors.thresholds import Aggregate, Direction, ThresholdDetector, ThresholdSpec
from streams.alerting.detection import DETECTION_STATE
from streams.core.state import StateCodec

MAX_STATE_BYTES = 64 * 1024


class Detector(Protocol):
    def update(self, t: float, value: float) -> Any: ...


@dataclass
class GatedSeries:
    """A SeriesDetector feeding an AnomalyGate: the per-series alerting unit."""

    detector: SeriesDetector
    gate: AnomalyGate

    @classmethod
    def create(cls, seed: int) -> GatedSeries:
        detector = SeriesDetector(seed=seed)
        return cls(detector, AnomalyGate(detector.config))

    def update(self, t: float, value: float) -> tuple[AnomalyScore, AlertDecision]:
        score = self.detector.update(t, value)
        return score, self.gate.update(t, score)


def threshold_detector(seed: int, aggregate: Aggregate) -> ThresholdDetector:
    spec = ThresholdSpec(
        f"contract.{aggregate.value}",
        "x",
        aggregate,
        0 if aggregate is Aggregate.READING else 900,
        Direction.ABOVE,
        (60, 70, 90, 120),
        pending_s=600,
        hold_s=1800,
        hysteresis=3,
    )
    return ThresholdDetector(spec)


@dataclass
class ForecastOverRule:
    """A CrossingWatch fed the level of a 15-minute mean rule, as detection does."""

    rule: ThresholdDetector
    watch: CrossingWatch

    @classmethod
    def create(cls, seed: int) -> ForecastOverRule:
        rule = threshold_detector(seed, Aggregate.MEAN)
        return cls(rule, CrossingWatch(rule.spec))

    def update(self, t: float, value: float) -> Any:
        transitions = self.rule.update(t, value)
        level = self.rule.level
        crossing = (
            None
            if level is None
            else self.watch.observe(self.rule.latest, level, crossed=self.rule.phase != "inactive")
        )
        return transitions, crossing


@dataclass
class Gated:
    """Any series model feeding an AnomalyGate."""

    model: AnomalyScorer
    gate: AnomalyGate

    def update(self, t: float, value: float) -> tuple[AnomalyScore, AlertDecision]:
        score = self.model.update(t, value)
        return score, self.gate.update(t, score)


@dataclass
class Context:
    """The contextual detector on the series' range, as the default model runs it."""

    detector: ContextDetector

    def update(self, t: float, value: float) -> float:
        return self.detector.update(value)


FACTORIES: list[tuple[str, Callable[[int], Detector]]] = [
    ("SeriesDetector", lambda seed: SeriesDetector(seed=seed)),
    ("SeriesDetector+AnomalyGate", GatedSeries.create),
    ("Ensemble (learned range)+AnomalyGate", lambda seed: Gated(Ensemble(), AnomalyGate())),
    ("Ensemble (catalogue range)", lambda seed: Ensemble(value_range=(0.0, 140.0))),
    ("ContextDetector", lambda seed: Context(ContextDetector(value_min=0.0, value_max=140.0))),
    (
        "Calibrated(HalfSpaceTrees)+AnomalyGate",
        lambda seed: Gated(
            Calibrated(
                anomaly.HalfSpaceTrees(
                    n_trees=5, height=6, seed=seed, limits={"value": (0.0, 140.0)}
                )
            ),
            AnomalyGate(),
        ),
    ),
    ("ThresholdDetector(reading)", lambda seed: threshold_detector(seed, Aggregate.READING)),
    ("ThresholdDetector(mean 15 min)", lambda seed: threshold_detector(seed, Aggregate.MEAN)),
    ("ThresholdDetector(max 15 min)", lambda seed: threshold_detector(seed, Aggregate.MAX)),
    ("CrossingWatch over a rule", ForecastOverRule.create),
]


def series(n: int, seed: int = 3) -> Iterator[tuple[float, float]]:
    """A 5-minute series with a daily cycle, noise, occasional spikes, gaps and repeats."""
    rng = random.Random(seed)
    t = 1_420_070_400.0  # 2015-01-01 00:00
    for _ in range(n):
        hour = (t % 86400) / 3600
        value = 50 + 20 * math.sin(2 * math.pi * hour / 24) + rng.gauss(0, 2)
        if rng.random() < 0.002:
            value += rng.choice((-1, 1)) * rng.uniform(30, 80)
        yield t, value
        r = rng.random()
        if r < 0.0005:
            t += 3 * 86400  # a gap of days
        elif r < 0.001:
            t -= 300  # a backward step
        elif r > 0.999:
            pass  # a duplicate timestamp
        else:
            t += 300 + rng.uniform(-60, 60)


ids = [name for name, _ in FACTORIES]


def codec_of(detector: Detector) -> StateCodec[Any]:
    """A table codec holding one detector, with the detection table's classes."""
    root = dataclasses.make_dataclass("Held", [("detector", type(detector))])
    return StateCodec("contract", root, 1, DETECTION_STATE.classes, shared=DETECTION_STATE._shared)


def document(detector: Detector) -> bytes:
    return codec_of(detector).document(codec_of(detector).root(detector))


@pytest.mark.parametrize("factory", [f for _, f in FACTORIES], ids=ids)
def test_state_document_round_trip_mid_stream(factory: Callable[[int], Detector]) -> None:
    data = list(series(6000))
    original = factory(0)
    for t, v in data[:3000]:
        original.update(t, v)
    codec = codec_of(original)
    restored = codec.decode(codec.encode(codec.root(original))).detector
    tail_original = [original.update(t, v) for t, v in data[3000:]]
    tail_restored = [restored.update(t, v) for t, v in data[3000:]]
    assert tail_restored == tail_original


@pytest.mark.parametrize("factory", [f for _, f in FACTORIES], ids=ids)
def test_same_seed_same_outputs(factory: Callable[[int], Detector]) -> None:
    data = list(series(4000))
    a, b = factory(7), factory(7)
    out_a = [a.update(t, v) for t, v in data]
    out_b = [b.update(t, v) for t, v in data]
    assert out_a == out_b


@pytest.mark.parametrize("factory", [f for _, f in FACTORIES], ids=ids)
def test_state_is_bounded(factory: Callable[[int], Detector]) -> None:
    """At most 64 KiB at every 10,000th update, and no growth after the first half beyond
    what a bounded dictionary's pruning cycle gives (a fifth over the first half's largest).
    """
    detector = factory(0)
    sizes = {}
    for i, (t, v) in enumerate(series(100_000), start=1):
        detector.update(t, v)
        if i % 10_000 == 0:
            sizes[i] = len(document(detector))
    assert max(sizes.values()) <= MAX_STATE_BYTES, sizes
    first = max(size for i, size in sizes.items() if i <= 50_000)
    assert max(size for i, size in sizes.items() if i > 50_000) <= 1.2 * first, sizes
