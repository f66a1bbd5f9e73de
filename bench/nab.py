"""Warning quality of the anomaly detector on the labelled NAB corpus.

Run from the repository root::

    .venv/bin/python bench/nab.py [--data ../shared/data/nab]

Every CSV file of the corpus goes through the product's offline replay
(:func:`streams.replay.replay_file`, what ``cityvitals replay`` runs), in file order and
each on its own, with the shipped configuration: the file's value column is watched by the
anomaly models (:class:`~detectors.anomaly.AnomalyConfig` defaults, the same for every
file) through the worker's event-time windows and alert lifecycle. The ``event_time`` of
every ``firing`` event is a detection; updates and resolutions are not. With
``--models-only`` the file is fed straight to a :class:`~detectors.anomaly.SeriesDetector`
and :class:`~detectors.anomaly.AnomalyGate`, one update per row, which isolates the models
from the windows and the lifecycle. With ``--river`` the gate is fed by river's
``StandardAbsoluteDeviation`` instead (the best of river's detectors out of the box on
this corpus), for comparison: measured 27.9 whole / 55.1 city (standard) against 57.9 /
72.7 for the product's models. The detections are scored with :mod:`bench.nabscore` (NAB v1.1 rules)
under the three profiles of ``profiles.json``, over the whole corpus and over the ten city
files (realTraffic, nyc_taxi, ambient and machine temperature).

One JSON object goes to stdout::

    {"whole": {"standard": .., "reward_low_FP": .., "reward_low_FN": ..},
     "city": {...the same three...},
     "files": {"<category/file.csv>": {"rows", "windows", "detections", "true_positives",
               "false_positives", "false_negatives", "raw": {profile: raw score}}}}

A progress bar goes to stderr.
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from nabscore import FileInput, load_profiles, load_windows, normalized_score
from rich.console import Console
from rich.progress import Progress

from detectors.anomaly import AnomalyConfig, AnomalyGate, AnomalyScore, SeriesDetector

# the shared corpus sits beside the repository
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "nab"

#: The city files of the corpus (README): freeway traffic, taxi demand, temperatures.
CITY_FILES: tuple[str, ...] = (
    "realTraffic/TravelTime_387.csv",
    "realTraffic/TravelTime_451.csv",
    "realTraffic/occupancy_6005.csv",
    "realTraffic/occupancy_t4013.csv",
    "realTraffic/speed_6005.csv",
    "realTraffic/speed_7578.csv",
    "realTraffic/speed_t4013.csv",
    "realKnownCause/nyc_taxi.csv",
    "realKnownCause/ambient_temperature_system_failure.csv",
    "realKnownCause/machine_temperature_system_failure.csv",
)

#: Output names of NAB's profiles.
PROFILE_KEYS = {
    "standard": "standard",
    "reward_low_FP_rate": "reward_low_FP",
    "reward_low_FN_rate": "reward_low_FN",
}


def read_series(path: Path) -> tuple[list[str], list[float]]:
    """The ``timestamp`` strings and ``value`` floats of a NAB CSV file."""
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        timestamps: list[str] = []
        values: list[float] = []
        for row in reader:
            timestamps.append(row["timestamp"])
            values.append(float(row["value"]))
    return timestamps, values


def epoch_seconds(timestamp: str) -> float:
    """Seconds since the epoch of a naive wall-clock timestamp, read as if it were UTC.

    The detectors derive hour of day and day of week from this number directly, so the
    local wall time must not be shifted by any zone.
    """
    return datetime.fromisoformat(timestamp).replace(tzinfo=UTC).timestamp()


def detections_for_file(path: Path) -> list[str]:
    """Timestamps of the ``firing`` events of the offline replay of one file."""
    from streams.config import load_config
    from streams.replay import replay_file

    cfg = load_config()
    lines, _ = replay_file(path, cfg, district=next(iter(cfg.districts)))
    return [line["event_time"] for line in lines if line["status"] == "firing"]


def model_detections_for_file(path: Path, config: AnomalyConfig | None = None) -> list[str]:
    """Timestamps of the alert onsets of a fresh detector and gate fed row by row."""
    timestamps, values = read_series(path)
    detector = SeriesDetector(config)
    gate = AnomalyGate(detector.config)
    onsets: list[str] = []
    for ts, value in zip(timestamps, values, strict=True):
        t = epoch_seconds(ts)
        decision = gate.update(t, detector.update(t, value))
        if decision.event == "firing":
            onsets.append(ts)
    return onsets


def river_detections_for_file(path: Path) -> list[str]:
    """The same gate fed by river's StandardAbsoluteDeviation, the best river detector.

    Its z-score becomes a score ``z / (z + 5)`` (0.5 at five deviations), so the gate's
    one fixed threshold applies to both; the first ``warmup_readings`` rows only learn.
    """
    from river import anomaly, stats

    config = AnomalyConfig()
    model = anomaly.StandardAbsoluteDeviation(sub_stat=stats.Mean())
    gate = AnomalyGate(config)
    timestamps, values = read_series(path)
    onsets: list[str] = []
    for i, (ts, value) in enumerate(zip(timestamps, values, strict=True)):
        z = abs(float(model.score_one(None, value)))
        model.learn_one(None, value)
        score = AnomalyScore(
            score=z / (z + 5.0),
            raw=z,
            expected=0.0,
            warmed_up=i >= config.warmup_readings,
            learned=True,
        )
        if gate.update(epoch_seconds(ts), score).event == "firing":
            onsets.append(ts)
    return onsets


def corpus_files(data: Path) -> list[str]:
    """Relative paths (``category/file.csv``) of every data file, in file order."""
    root = data / "data"
    return sorted(str(p.relative_to(root)) for p in root.glob("*/*.csv"))


def evaluate(
    data: Path,
    detect: Callable[[Path], Sequence[str]] = detections_for_file,
    show_progress: bool = True,
) -> dict[str, Any]:
    """Run ``detect`` over every file and score the whole corpus and the city subset."""
    windows = load_windows(data / "labels" / "combined_windows.json")
    profiles = load_profiles(data / "profiles.json")
    inputs: dict[str, FileInput] = {}
    names = corpus_files(data)
    with Progress(
        console=Console(stderr=True), transient=True, disable=not show_progress
    ) as progress:
        task = progress.add_task("NAB corpus", total=len(names))
        for name in names:
            progress.update(task, description=name)
            path = data / "data" / name
            timestamps, _ = read_series(path)
            inputs[name] = FileInput(timestamps, list(detect(path)), windows.get(name, []))
            progress.advance(task)
    city = {name: inputs[name] for name in CITY_FILES if name in inputs}
    result: dict[str, Any] = {"whole": {}, "city": {}, "files": {}}
    files: dict[str, Any] = {
        name: {
            "rows": len(f.timestamps),
            "windows": len(f.windows),
            "detections": len(f.detections),
            "raw": {},
        }
        for name, f in inputs.items()
    }
    for profile in profiles:
        key = PROFILE_KEYS.get(profile.name, profile.name)
        whole, per_file = normalized_score(inputs, profile)
        result["whole"][key] = round(whole, 2)
        result["city"][key] = round(normalized_score(city, profile)[0], 2)
        for name, s in per_file.items():
            files[name]["true_positives"] = s.true_positives
            files[name]["false_positives"] = s.false_positives
            files[name]["false_negatives"] = s.false_negatives
            files[name]["raw"][key] = round(s.raw, 4)
    result["files"] = files
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry: print the scores as one JSON object."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="NAB corpus root")
    parser.add_argument(
        "--models-only",
        action="store_true",
        help="feed the anomaly models row by row instead of replaying through the product",
    )
    parser.add_argument(
        "--river",
        action="store_true",
        help="for comparison: river's StandardAbsoluteDeviation behind the same gate",
    )
    args = parser.parse_args(argv)
    detect = detections_for_file
    if args.river:
        detect = river_detections_for_file
    elif args.models_only:
        detect = model_detections_for_file
    result = evaluate(args.data, detect)
    sys.stdout.write(orjson.dumps(result).decode() + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
