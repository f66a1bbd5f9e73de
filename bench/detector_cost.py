"""Per-reading cost and state size of the series anomaly detector.

Run from the repository root::

    .venv/bin/python bench/detector_cost.py [--data ../shared/data/nab]
                                            [--file realKnownCause/machine_temperature_system_failure.csv]
                                            [--runs 5] [--updates 100000]

The series is a real one (by default NAB's machine temperature, 22,695 readings at
5 minutes), parsed into ``(t, value)`` pairs before any clock starts. Each run feeds
the whole series to a fresh detector, and separately to a detector feeding an
:class:`~detectors.anomaly.AnomalyGate`, and divides the elapsed
``time.perf_counter`` time by the number of readings; the reported figures are the
medians over ``--runs`` runs (single process, one core, the interpreter that runs the
script). ``state_bytes`` is the size of the detector's state document as the detection
table writes it (:data:`~streams.alerting.detection.DETECTION_STATE`, uncompressed; the
changelog record is the same compressed) after ``--updates`` updates (the series
repeated, its time shifted forward each round so the clock keeps moving), for the
detector alone and with its gate.

Two detectors are measured: ``default``, the shipped model
(:class:`~detectors.ensemble.Ensemble`: the seasonal likelihood and the contextual
detector), and ``seasonal_only`` (:class:`~detectors.anomaly.SeriesDetector`). One JSON
object goes to stdout, with the targets (30 µs per reading, 64 KiB of state).
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import orjson
from nab import DEFAULT_DATA, epoch_seconds, read_series

from detectors.anomaly import AnomalyConfig, AnomalyGate, AnomalyScorer, SeriesDetector
from detectors.ensemble import Ensemble
from streams.alerting.detection import DETECTION_STATE
from streams.core.state import StateCodec

DEFAULT_FILE = "realKnownCause/machine_temperature_system_failure.csv"
TARGET_US = 30.0
TARGET_BYTES = 64 * 1024


def load(path: Path) -> list[tuple[float, float]]:
    """``(t, value)`` pairs of a NAB CSV file."""
    timestamps, values = read_series(path)
    return [(epoch_seconds(ts), v) for ts, v in zip(timestamps, values, strict=True)]


#: The shipped default model (seasonal likelihood and contexts) and the seasonal one alone.
MODELS: dict[str, Callable[[], AnomalyScorer]] = {
    "default": Ensemble,
    "seasonal_only": SeriesDetector,
}


def time_detector(points: Sequence[tuple[float, float]], model: str = "default") -> float:
    """Microseconds per reading of one pass of a fresh detector."""
    detector = MODELS[model]()
    update = detector.update
    start = time.perf_counter()
    for t, v in points:
        update(t, v)
    return (time.perf_counter() - start) / len(points) * 1e6


def time_detector_and_gate(points: Sequence[tuple[float, float]], model: str = "default") -> float:
    """Microseconds per reading of one pass of a fresh detector feeding a gate."""
    detector = MODELS[model]()
    gate = AnomalyGate()
    update, decide = detector.update, gate.update
    start = time.perf_counter()
    for t, v in points:
        decide(t, update(t, v))
    return (time.perf_counter() - start) / len(points) * 1e6


def state_sizes(
    points: Sequence[tuple[float, float]], updates: int, model: str = "default"
) -> tuple[int, int]:
    """Pickled bytes of a detector, and of a detector plus gate, after ``updates`` readings."""
    detector = MODELS[model]()
    gate = AnomalyGate()
    span = points[-1][0] - points[0][0] + 300.0
    done = 0
    shift = 0.0
    while done < updates:
        for t, v in points:
            if done == updates:
                break
            gate.update(t + shift, detector.update(t + shift, v))
            done += 1
        shift += span
    return state_bytes(detector), state_bytes(detector, gate)


def state_bytes(*values: object) -> int:
    """The size of ``values``' state document, as the detection table writes them."""
    fields = [(f"f{i}", type(v)) for i, v in enumerate(values)]
    root = dataclasses.make_dataclass("Held", fields)
    codec: StateCodec[object] = StateCodec(
        "cost", root, 1, DETECTION_STATE.classes, shared=(AnomalyConfig,)
    )
    return len(codec.document(root(*values)))


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry: print the measurements as one JSON object."""
    parser = argparse.ArgumentParser(description="Per-reading cost and state size.")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="NAB corpus root")
    parser.add_argument("--file", default=DEFAULT_FILE, help="series, relative to data/")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--updates", type=int, default=100_000)
    args = parser.parse_args(argv)

    points = load(args.data / "data" / args.file)
    result: dict[str, object] = {
        "series": args.file,
        "readings": len(points),
        "runs": args.runs,
        "python": platform.python_version(),
        "updates_for_state": args.updates,
        "target_us_per_update": TARGET_US,
        "target_state_bytes": TARGET_BYTES,
    }
    for model in MODELS:
        detector_us = [time_detector(points, model) for _ in range(args.runs)]
        gated_us = [time_detector_and_gate(points, model) for _ in range(args.runs)]
        detector_bytes, gated_bytes = state_sizes(points, args.updates, model)
        result[model] = {
            "us_per_update": round(statistics.median(detector_us), 2),
            "us_per_update_with_gate": round(statistics.median(gated_us), 2),
            "us_per_update_runs": [round(x, 2) for x in detector_us],
            "state_bytes": detector_bytes,
            "state_bytes_with_gate": gated_bytes,
            "within_targets": statistics.median(gated_us) <= TARGET_US
            and gated_bytes <= TARGET_BYTES,
        }
    sys.stdout.write(orjson.dumps(result).decode() + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
