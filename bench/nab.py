"""Warning quality of the anomaly detector on the labelled NAB corpus.

Run from the repository root::

    .venv/bin/python bench/nab.py [--data DIR] [--models-only | --river] [--no-held-out]
                                  [--jobs 2]

The corpus is found at ``../shared/data/nab`` relative to the repository root; the
environment variable ``CITYVITALS_NAB_DATA`` and then ``--data`` override it.

**Whole corpus and city files.** Every CSV file of the corpus goes through the product's
offline replay (:func:`streams.alerting.replay.replay_file`, what ``cityvitals replay`` runs), each
on its own, with the shipped configuration: the file's value column is watched by the
anomaly models (:class:`~detectors.anomaly.AnomalyConfig` defaults, the same for every
file) through the worker's event-time windows and alert lifecycle. The ``event_time`` of
every ``firing`` event is a detection; updates and resolutions are not. With
``--models-only`` the file is fed straight to the default model (:class:`~detectors.ensemble.Ensemble`)
and :class:`~detectors.anomaly.AnomalyGate`, one update per row, which isolates the models
from the windows and the lifecycle. With ``--river`` the gate is fed by river's
``StandardAbsoluteDeviation`` instead (the best of river's detectors out of the box on
this corpus), for comparison: measured 27.9 whole / 55.1 city (standard) against
62.0 / 82.3 for the product's default models (57.9 / 72.7 for the seasonal model
alone). The detections are scored with :mod:`bench.nabscore` (NAB v1.1 rules) under
the three profiles of ``profiles.json``, over the whole corpus and over the ten city files (realTraffic, nyc_taxi, ambient and machine temperature).

**Held-out figure (leave one category out).** The shipped defaults were chosen on this
same corpus, so the whole-corpus figure is in-sample. For each of the 7 categories (the
directories under ``data/``), a configuration is chosen on the *other six* and scored on
the held-out one, separately for each profile (the configuration maximising that
profile's normalised score on the other six, as NAB tunes its threshold per profile;
ties go to the first in grid order). The grid is every combination of these
:class:`~detectors.anomaly.AnomalyConfig` knobs, each one a user can set in
``config/anomaly.yaml`` (every other knob keeps its default):

* ``short_window`` 2, 4, 8 and ``long_window`` 0, 20, 60 (detector knobs);
* ``fire_score`` 0.40, 0.44, 0.47, 0.50, 0.55 and ``holdoff_readings`` 0, 50, 100, 200
  (gate knobs).

180 configurations, the shipped one among them. The search runs the models row by row
(as ``--models-only`` does). A detector's scores depend only on the detector knobs, so
each file is scored once per detector configuration and the gate configurations are swept
over those scores. NAB's normalised score over a set of files is
``100 * (sum raw - sum raw_null) / (sum raw_perfect - sum raw_null)`` (see
:func:`~bench.nabscore.normalized_score`), so each file's raw score under each
configuration and profile is computed once, with its null and perfect scores, and the
folds are combined from them without running anything again. The held-out category is
then scored **through the product's replay** (:func:`~streams.alerting.replay.replay_file` with
``DetectionContext(..., anomaly=chosen)``), so the held-out figures are the product's
(with ``--models-only`` they are the row-by-row ones). ``held_out`` is the mean of the
held-out categories' normalised scores; ``artificialNoAnomaly`` has no window, so its
normalised score is undefined (reported as null, its false alarms still shown) and the
mean runs over the other six. ``held_out_pooled`` scores all 58 files together, each
under the configuration chosen without its category (comparable to ``whole``).
``in_sample`` is the best grid configuration on the whole corpus (row by row), to show
how much choosing on the scored data flatters a figure. ``--no-held-out`` skips all this;
``--river`` has no grid and skips it too.

**Timeliness.** For each file: ``delays_min``, for each labelled window, minutes from the
window's left edge to the first detection inside it (null when the window is missed), and
``false_alarms_per_1000``, detections outside every window per 1,000 scored rows. As in
the score, detections in the probation period (the first 15% of a file's rows, at most
750) count for nothing and are not rows of the denominator. ``timeliness`` sums these up
over the whole corpus and the city files: the median delay over detected windows and the
false alarms per 1,000 scored rows.

One JSON object goes to stdout::

    {"whole": {"standard": .., "reward_low_FP": .., "reward_low_FN": ..},
     "city": {...the same three...},
     "held_out": {...the same three...}, "held_out_pooled": {...},
     "folds": {"<category>": {"chosen": {profile: {knob: value}}, "standard": ..,
               "reward_low_FP": .., "reward_low_FN": .., "train": {profile: ..},
               "rows": {profile: ..}, "shipped": {profile: ..}, "files", "windows",
               "false_positives"}},
     "knobs": {knob: [values searched]}, "in_sample": {profile: {"chosen", "score"}},
     "timeliness": {"whole": {"windows", "detected", "median_delay_min",
                              "false_alarms_per_1000"}, "city": {...}},
     "files": {"<category/file.csv>": {"rows", "windows", "detections", "true_positives",
               "false_positives", "false_negatives", "raw": {profile: raw score},
               "delays_min": [..], "false_alarms_per_1000": ..}}}

A fold's ``chosen`` configuration is per profile, as are its scores: on the held-out
category (the profile's key), on the six others it was chosen on (``train``, row by row),
on the held-out category row by row (``rows``: the same as the first with
``--models-only``; apart from it, the difference between replay and row by row) and, for
comparison, the shipped configuration's score on the held-out category (``shipped``).
``false_positives``: detections outside every window in the held-out category under the
standard profile's choice (through replay). Progress bars go to stderr.
"""

from __future__ import annotations

import argparse
import csv
import math
import multiprocessing
import os
import statistics
import sys
from bisect import bisect_left
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import lru_cache
from itertools import product
from pathlib import Path
from typing import Any, NamedTuple

import orjson
from nabscore import (
    CostProfile,
    FileInput,
    load_profiles,
    load_windows,
    normalized_score,
    probation_length,
    score_file,
    tally_rows,
)
from rich.console import Console
from rich.progress import Progress

from detectors.anomaly import AnomalyConfig, AnomalyGate, AnomalyScore
from detectors.ensemble import Ensemble

#: The repository root (this file is ``bench/nab.py``).
REPO_ROOT = Path(__file__).resolve().parents[1]
#: Where the corpus is unless ``CITYVITALS_NAB_DATA`` or ``--data`` says otherwise.
RELATIVE_DATA = Path("..") / "shared" / "data" / "nab"
DATA_ENV = "CITYVITALS_NAB_DATA"


def default_data() -> Path:
    """The corpus root: ``$CITYVITALS_NAB_DATA``, else ``../shared/data/nab`` from the repo."""
    env = os.environ.get(DATA_ENV, "").strip()
    return Path(env) if env else REPO_ROOT / RELATIVE_DATA


DEFAULT_DATA = default_data()

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

#: The held-out search's grid: detector knobs first (each costs a pass of the models over
#: the corpus), then gate knobs (swept over the scores of each detector configuration).
DETECTOR_KNOBS: dict[str, tuple[Any, ...]] = {
    "short_window": (2, 4, 8),
    "long_window": (0, 20, 60),
}
GATE_KNOBS: dict[str, tuple[Any, ...]] = {
    "fire_score": (0.40, 0.44, 0.47, 0.50, 0.55),
    "holdoff_readings": (0, 50, 100, 200),
}
KNOBS: dict[str, tuple[Any, ...]] = {**DETECTOR_KNOBS, **GATE_KNOBS}

#: A grid point: the values of ``KNOBS``, in its order.
ConfigKey = tuple[Any, ...]


def profile_key(profile: CostProfile) -> str:
    """The output name of a profile."""
    return PROFILE_KEYS.get(profile.name, profile.name)


def grid() -> list[ConfigKey]:
    """Every grid point, detector knobs varying slowest."""
    return list(product(*KNOBS.values()))


def config_of(key: ConfigKey) -> AnomalyConfig:
    """The configuration of a grid point: the defaults with the searched knobs set."""
    return AnomalyConfig(**dict(zip(KNOBS, key, strict=True)))


def shipped_key() -> ConfigKey:
    """The shipped defaults as a grid point (they are one)."""
    defaults = AnomalyConfig()
    return tuple(getattr(defaults, knob) for knob in KNOBS)


# --------------------------------------------------------------------------- reading


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


def corpus_files(data: Path) -> list[str]:
    """Relative paths (``category/file.csv``) of every data file, in file order."""
    root = data / "data"
    return sorted(str(p.relative_to(root)) for p in root.glob("*/*.csv"))


def category_of(name: str) -> str:
    """The category (directory) of ``category/file.csv``."""
    return name.split("/", 1)[0]


# ------------------------------------------------------------------------- detectors


@lru_cache(maxsize=16)
def _replay_context(config: AnomalyConfig) -> Any:
    """The city config, a district and a detection context with ``config`` (cached)."""
    from streams.alerting.detection import DetectionContext
    from streams.alerting.rules import load_silences, load_thresholds
    from streams.core.config import load_config

    cfg = load_config()
    rules = load_thresholds(cfg)
    ctx = DetectionContext(cfg, rules, silences=load_silences(cfg, rules), anomaly=config)
    return cfg, next(iter(cfg.districts)), ctx


def detections_for_file(path: Path, config: AnomalyConfig | None = None) -> list[str]:
    """Timestamps of the ``firing`` events of the offline replay of one file.

    ``config`` sets the anomaly model of every indicator (None: the shipped defaults).
    """
    from streams.alerting.replay import replay_file

    cfg, district, ctx = _replay_context(config if config is not None else AnomalyConfig())
    lines, _ = replay_file(path, cfg, district=district, ctx=ctx)
    return [line["event_time"] for line in lines if line["status"] == "firing"]


def gate_onsets(
    config: AnomalyConfig, times: Sequence[float], scores: Sequence[AnomalyScore]
) -> list[int]:
    """Row indices where a fresh gate with ``config`` opens an alert on ``scores``."""
    gate = AnomalyGate(config)
    update = gate.update
    return [
        i
        for i, (t, s) in enumerate(zip(times, scores, strict=True))
        if update(t, s).event == "firing"
    ]


def model_scores(
    config: AnomalyConfig, times: Sequence[float], values: Sequence[float]
) -> list[AnomalyScore]:
    """The scores of a fresh default model (:class:`~detectors.ensemble.Ensemble`) with
    ``config`` fed one row at a time."""
    update = Ensemble(config).update
    return [update(t, v) for t, v in zip(times, values, strict=True)]


def model_detections_for_file(path: Path, config: AnomalyConfig | None = None) -> list[str]:
    """Timestamps of the alert onsets of a fresh detector and gate fed row by row."""
    config = config if config is not None else AnomalyConfig()
    timestamps, values = read_series(path)
    times = [epoch_seconds(ts) for ts in timestamps]
    onsets = gate_onsets(config, times, model_scores(config, times, values))
    return [timestamps[i] for i in onsets]


def river_detections_for_file(path: Path, config: AnomalyConfig | None = None) -> list[str]:
    """The same gate fed by river's StandardAbsoluteDeviation, the best river detector.

    Its z-score becomes a score ``z / (z + 5)`` (0.5 at five deviations), so the gate's
    one fixed threshold applies to both; the first ``warmup_readings`` rows only learn.
    """
    from river import anomaly, stats

    config = config if config is not None else AnomalyConfig()
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


Detect = Callable[[Path, AnomalyConfig | None], Sequence[str]]


def _detect_task(
    task: tuple[Detect, Path, str, ConfigKey | None],
) -> tuple[str, ConfigKey | None, list[str]]:
    detect, data, name, key = task
    config = config_of(key) if key is not None else None
    return name, key, list(detect(data / "data" / name, config))


def _pool(jobs: int) -> Any:
    return multiprocessing.get_context("fork").Pool(jobs)


def run_detections(
    data: Path,
    tasks: Sequence[tuple[str, ConfigKey | None]],
    detect: Detect = detections_for_file,
    jobs: int = 1,
    show_progress: bool = True,
    label: str = "NAB corpus",
) -> dict[tuple[str, ConfigKey | None], list[str]]:
    """``detect`` over ``(file, grid point or None for the defaults)`` tasks, in ``jobs``
    processes (the largest files first, so that the pool stays busy)."""
    order = sorted(tasks, key=lambda t: -(data / "data" / t[0]).stat().st_size)
    work = [(detect, data, name, key) for name, key in order]
    out: dict[tuple[str, ConfigKey | None], list[str]] = {}
    with Progress(
        console=Console(stderr=True), transient=True, disable=not show_progress
    ) as progress:
        bar = progress.add_task(label, total=len(work))
        if jobs > 1 and len(work) > 1:
            with _pool(jobs) as pool:
                for name, key, found in pool.imap_unordered(_detect_task, work):
                    out[name, key] = found
                    progress.advance(bar)
        else:
            for task in work:
                name, key, found = _detect_task(task)
                out[name, key] = found
                progress.advance(bar)
    return out


# ------------------------------------------------------------------ scoring by rows


@dataclass(frozen=True)
class Frame:
    """One file prepared for scoring many detection sets given as row indices.

    The same rules as :func:`bench.nabscore.score_file`: rows by first timestamp, window
    ranges, probation, and duplicate timestamps matched in order.
    """

    timestamps: Sequence[str]
    ranges: tuple[tuple[int, int], ...]
    rights: tuple[int, ...]
    probation: int
    scored: int
    n_windows: int
    duplicates: Mapping[str, tuple[int, ...]]

    @classmethod
    def of(cls, f: FileInput) -> Frame:
        rows_of: dict[str, list[int]] = {}
        for i, ts in enumerate(f.timestamps):
            rows_of.setdefault(ts, []).append(i)
        ranges = tuple(sorted((rows_of[left][0], rows_of[right][0]) for left, right in f.windows))
        rights = tuple(right for _, right in ranges)
        probation = probation_length(len(f.timestamps))
        return cls(
            timestamps=f.timestamps,
            ranges=ranges,
            rights=rights,
            probation=probation,
            scored=sum(1 for right in rights if right >= probation),
            n_windows=len(f.windows),
            duplicates={ts: tuple(rows) for ts, rows in rows_of.items() if len(rows) > 1},
        )

    def rows(self, detected: Iterable[int]) -> list[int]:
        """The rows the scorer assigns to detections at these rows (as timestamps)."""
        used: dict[str, int] = {}
        out: set[int] = set()
        for i in detected:
            ts = self.timestamps[i]
            same = self.duplicates.get(ts)
            if same is None:
                out.add(i)
                continue
            k = used.get(ts, 0)
            used[ts] = k + 1
            out.add(same[min(k, len(same) - 1)])
        return sorted(out)


class FileRaw(NamedTuple):
    """One file's raw score under one profile, with the null and perfect detectors'."""

    raw: float
    null: float
    perfect: float


def score_rows(
    frame: Frame, detected: Iterable[int], profiles: Sequence[CostProfile]
) -> list[FileRaw]:
    """The file's :class:`FileRaw` under each profile for detections at these rows.

    Equal (up to float rounding) to :func:`bench.nabscore.score_file` given the rows'
    timestamps, without its per-call pass over every row.
    """
    credit, fp_sum, _ = tally_rows(frame.ranges, frame.probation, frame.rows(detected))
    tp_sum = sum(credit.values())
    fn = frame.scored - len(credit)
    return [
        FileRaw(
            raw=p.tp_weight * tp_sum + p.fp_weight * fp_sum - fn * p.fn_weight,
            null=-p.fn_weight * frame.scored,
            perfect=p.tp_weight * frame.n_windows,
        )
        for p in profiles
    ]


def combine(parts: Iterable[FileRaw]) -> float | None:
    """NAB's normalised score of a set of files from their :class:`FileRaw`.

    None when it is undefined (no window: perfect and null both 0), where
    :func:`bench.nabscore.normalized_score` says 0.
    """
    raw = null = perfect = 0.0
    for part in parts:
        raw += part.raw
        null += part.null
        perfect += part.perfect
    if perfect == null:
        return None
    return 100.0 * (raw - null) / (perfect - null)


#: Per grid point, per file, per profile (in ``profiles`` order): the file's FileRaw.
Table = Mapping[ConfigKey, Mapping[str, Sequence[FileRaw]]]


def choose(table: Table, files: Sequence[str], profile_index: int) -> tuple[ConfigKey, float]:
    """The grid point with the best normalised score over ``files`` (ties: the first)."""
    best: tuple[ConfigKey, float] | None = None
    for key, per_file in table.items():
        score = combine(per_file[name][profile_index] for name in files)
        value = -math.inf if score is None else score
        if best is None or value > best[1]:
            best = (key, value)
    if best is None:
        raise ValueError("empty table")
    return best


def choose_folds(
    table: Table, categories: Mapping[str, Sequence[str]], n_profiles: int
) -> dict[str, list[tuple[ConfigKey, float]]]:
    """For each held-out category and profile: the grid point chosen on the others, and
    its score there. Only the other categories' files are looked at."""
    out: dict[str, list[tuple[ConfigKey, float]]] = {}
    for held_out in categories:
        train = [name for cat, names in categories.items() if cat != held_out for name in names]
        out[held_out] = [choose(table, train, p) for p in range(n_profiles)]
    return out


# ------------------------------------------------------------------------ the search


#: Set before the pool forks: (names, frames, times, values, profiles).
_SEARCH: (
    tuple[
        list[str],
        dict[str, Frame],
        dict[str, list[float]],
        dict[str, list[float]],
        tuple[CostProfile, ...],
    ]
    | None
) = None


def _search_detector(detector_key: ConfigKey) -> dict[ConfigKey, dict[str, list[FileRaw]]]:
    """Every gate grid point over one detector configuration's scores, for every file."""
    assert _SEARCH is not None
    names, frames, times, values, profiles = _SEARCH
    base = AnomalyConfig(**dict(zip(DETECTOR_KNOBS, detector_key, strict=True)))
    gates = [dict(zip(GATE_KNOBS, g, strict=True)) for g in product(*GATE_KNOBS.values())]
    out: dict[ConfigKey, dict[str, list[FileRaw]]] = {}
    for name in names:
        scores = model_scores(base, times[name], values[name])
        for gate in gates:
            config = replace(base, **gate)
            key = (*detector_key, *gate.values())
            onsets = gate_onsets(config, times[name], scores)
            out.setdefault(key, {})[name] = score_rows(frames[name], onsets, profiles)
    return out


def search(
    data: Path,
    names: Sequence[str],
    profiles: Sequence[CostProfile],
    jobs: int = 1,
    show_progress: bool = True,
) -> dict[ConfigKey, dict[str, list[FileRaw]]]:
    """The table of every grid point's FileRaw per file and profile (row by row)."""
    global _SEARCH
    windows = load_windows(data / "labels" / "combined_windows.json")
    frames: dict[str, Frame] = {}
    times: dict[str, list[float]] = {}
    values: dict[str, list[float]] = {}
    for name in names:
        timestamps, vals = read_series(data / "data" / name)
        frames[name] = Frame.of(FileInput(timestamps, [], windows.get(name, [])))
        times[name] = [epoch_seconds(ts) for ts in timestamps]
        values[name] = vals
    _SEARCH = (list(names), frames, times, values, tuple(profiles))
    detector_keys = list(product(*DETECTOR_KNOBS.values()))
    table: dict[ConfigKey, dict[str, list[FileRaw]]] = {}
    try:
        with Progress(
            console=Console(stderr=True), transient=True, disable=not show_progress
        ) as progress:
            bar = progress.add_task("held-out search", total=len(detector_keys))
            if jobs > 1:
                with _pool(jobs) as pool:
                    for part in pool.imap_unordered(_search_detector, detector_keys):
                        table.update(part)
                        progress.advance(bar)
            else:
                for part in map(_search_detector, detector_keys):
                    table.update(part)
                    progress.advance(bar)
    finally:
        _SEARCH = None
    return {key: table[key] for key in grid()}  # grid order: ties go to the first


# ------------------------------------------------------------------------- summaries


def window_delays(f: FileInput) -> list[float | None]:
    """For each window (in label order): minutes from its left edge to the first
    detection in it, None when none is. Detections in probation do not count."""
    first: dict[str, int] = {}
    for i, ts in enumerate(f.timestamps):
        first.setdefault(ts, i)
    probation = probation_length(len(f.timestamps))
    rows = sorted(i for i in set(_rows_of(f)) if i >= probation)
    out: list[float | None] = []
    for left_ts, right_ts in f.windows:
        j = bisect_left(rows, first[left_ts])
        if j < len(rows) and rows[j] <= first[right_ts]:
            minutes = (epoch_seconds(f.timestamps[rows[j]]) - epoch_seconds(left_ts)) / 60.0
            out.append(round(minutes, 2))
        else:
            out.append(None)
    return out


def scored_rows(f: FileInput) -> int:
    """Rows after the probation period."""
    return len(f.timestamps) - probation_length(len(f.timestamps))


def per_1000(false_alarms: int, rows: int) -> float | None:
    """False alarms per 1,000 rows (None without rows)."""
    return round(1000.0 * false_alarms / rows, 3) if rows > 0 else None


def timeliness(
    inputs: Mapping[str, FileInput],
    delays: Mapping[str, Sequence[float | None]],
    false_alarms: Mapping[str, int],
) -> dict[str, Any]:
    """Median delay over detected windows and false alarms per 1,000 scored rows."""
    found = [d for name in inputs for d in delays[name] if d is not None]
    n_windows = sum(len(delays[name]) for name in inputs)
    rows = sum(scored_rows(f) for f in inputs.values())
    return {
        "windows": n_windows,
        "detected": len(found),
        "median_delay_min": round(statistics.median(found), 2) if found else None,
        "false_alarms_per_1000": per_1000(sum(false_alarms[name] for name in inputs), rows),
    }


def summarise(inputs: Mapping[str, FileInput], profiles: Sequence[CostProfile]) -> dict[str, Any]:
    """Scores of the whole corpus and the city files, per-file details, timeliness."""
    city = {name: inputs[name] for name in CITY_FILES if name in inputs}
    result: dict[str, Any] = {"whole": {}, "city": {}}
    files: dict[str, Any] = {
        name: {
            "rows": len(f.timestamps),
            "windows": len(f.windows),
            "detections": len(f.detections),
            "raw": {},
        }
        for name, f in inputs.items()
    }
    false_alarms: dict[str, int] = {}
    for profile in profiles:
        key = profile_key(profile)
        whole, per_file = normalized_score(inputs, profile)
        result["whole"][key] = round(whole, 2)
        result["city"][key] = round(normalized_score(city, profile)[0], 2)
        for name, s in per_file.items():
            files[name]["true_positives"] = s.true_positives
            files[name]["false_positives"] = s.false_positives
            files[name]["false_negatives"] = s.false_negatives
            files[name]["raw"][key] = round(s.raw, 4)
            false_alarms[name] = s.false_positives
    delays = {name: window_delays(f) for name, f in inputs.items()}
    for name, f in inputs.items():
        files[name]["delays_min"] = delays[name]
        files[name]["false_alarms_per_1000"] = per_1000(false_alarms[name], scored_rows(f))
    result["timeliness"] = {
        "whole": timeliness(inputs, delays, false_alarms),
        "city": timeliness(city, delays, false_alarms),
    }
    result["files"] = files
    return result


def load_inputs(
    data: Path, names: Sequence[str], detections: Mapping[str, Sequence[str]]
) -> dict[str, FileInput]:
    """FileInputs of ``names`` with their detections."""
    windows = load_windows(data / "labels" / "combined_windows.json")
    return {
        name: FileInput(
            read_series(data / "data" / name)[0], list(detections[name]), windows.get(name, [])
        )
        for name in names
    }


def evaluate(
    data: Path,
    detect: Detect = detections_for_file,
    show_progress: bool = True,
    jobs: int = 1,
) -> dict[str, Any]:
    """Run ``detect`` (shipped configuration) over every file and summarise."""
    profiles = load_profiles(data / "profiles.json")
    names = corpus_files(data)
    found = run_detections(data, [(n, None) for n in names], detect, jobs, show_progress)
    inputs = load_inputs(data, names, {n: found[n, None] for n in names})
    return summarise(inputs, profiles)


def held_out(
    data: Path,
    detect: Detect = detections_for_file,
    shipped: Mapping[str, Sequence[str]] | None = None,
    jobs: int = 1,
    show_progress: bool = True,
    replay: bool = True,
) -> dict[str, Any]:
    """The leave-one-category-out figures (see the module docstring).

    ``shipped``: detections of ``detect`` with the shipped configuration, reused where a
    fold chooses it. With ``replay`` False the held-out categories are scored from the
    search's own row-by-row table.
    """
    profiles = load_profiles(data / "profiles.json")
    keys = [profile_key(p) for p in profiles]
    names = corpus_files(data)
    categories: dict[str, list[str]] = {}
    for name in names:
        categories.setdefault(category_of(name), []).append(name)
    table = search(data, names, profiles, jobs, show_progress)
    folds = choose_folds(table, categories, len(profiles))
    default = shipped_key()

    # detections of each held-out file under each configuration chosen for it
    needed = sorted(
        {
            (name, key)
            for cat, picks in folds.items()
            for key, _ in picks
            for name in categories[cat]
        }
    )
    found: dict[tuple[str, ConfigKey | None], list[str]] = {}
    if replay:
        if shipped is None:
            first = run_detections(data, [(n, None) for n in names], detect, jobs, show_progress)
            shipped = {n: first[n, None] for n in names}
        todo = [(n, k) for n, k in needed if k != default]
        found = run_detections(data, todo, detect, jobs, show_progress, "held-out replay")
        found.update({(n, k): list(shipped[n]) for n, k in needed if k == default})
    windows = load_windows(data / "labels" / "combined_windows.json")
    timestamps = {name: read_series(data / "data" / name)[0] for name in names}

    def part(name: str, detections: Sequence[str], p: int) -> tuple[FileRaw, int]:
        """A held-out file's FileRaw under profile ``p`` and its false alarms."""
        profile, w = profiles[p], windows.get(name, [])
        s = score_file(timestamps[name], detections, w, profile)
        raw = FileRaw(s.raw, -profile.fn_weight * s.windows, profile.tp_weight * len(w))
        return raw, s.false_positives

    def rounded(score: float | None) -> float | None:
        return None if score is None else round(score, 2)

    out_folds: dict[str, Any] = {}
    pooled: dict[str, list[FileRaw]] = {k: [] for k in keys}
    for cat, picks in folds.items():
        members = categories[cat]
        fold: dict[str, Any] = {"chosen": {}, "train": {}, "rows": {}, "shipped": {}}
        for p, (key, train_score) in enumerate(picks):
            k = keys[p]
            fold["chosen"][k] = dict(zip(KNOBS, key, strict=True))
            fold["train"][k] = round(train_score, 2)
            rows = [table[key][name][p] for name in members]
            fold["rows"][k] = rounded(combine(rows))
            if replay:
                scored = [part(name, found[name, key], p) for name in members]
                parts = [raw for raw, _ in scored]
                if p == 0:
                    fold["false_positives"] = sum(fp for _, fp in scored)
            else:
                parts = rows
            pooled[k] += parts
            fold[k] = rounded(combine(parts))
            if replay:
                assert shipped is not None
                fold["shipped"][k] = rounded(
                    combine(part(name, shipped[name], p)[0] for name in members)
                )
            else:
                fold["shipped"][k] = rounded(combine(table[default][name][p] for name in members))
        fold["files"] = len(members)
        fold["windows"] = sum(len(windows.get(name, [])) for name in members)
        out_folds[cat] = fold
    mean: dict[str, float | None] = {}
    for k in keys:
        defined = [f[k] for f in out_folds.values() if f[k] is not None]
        mean[k] = round(statistics.fmean(defined), 2) if defined else None
    pooled_score = {k: combine(pooled[k]) for k in keys}
    in_sample = {}
    for p, k in enumerate(keys):
        key, score = choose(table, names, p)
        in_sample[k] = {"chosen": dict(zip(KNOBS, key, strict=True)), "score": round(score, 2)}
    return {
        "held_out": mean,
        "held_out_pooled": {k: None if v is None else round(v, 2) for k, v in pooled_score.items()},
        "folds": out_folds,
        "knobs": {knob: list(values) for knob, values in KNOBS.items()},
        "in_sample": in_sample,
    }


def _rows_of(f: FileInput) -> list[int]:
    """Row indices of a file's detections (k-th duplicate detection: k-th such row)."""
    rows_of: dict[str, list[int]] = {}
    for i, ts in enumerate(f.timestamps):
        rows_of.setdefault(ts, []).append(i)
    used: dict[str, int] = {}
    out: list[int] = []
    for ts in f.detections:
        same = rows_of[ts]
        k = used.get(ts, 0)
        used[ts] = k + 1
        out.append(same[min(k, len(same) - 1)])
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry: print the scores as one JSON object."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--data",
        type=Path,
        default=None,
        help=f"NAB corpus root (default: ${DATA_ENV}, else ../shared/data/nab from the repository)",
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--models-only",
        action="store_true",
        help="feed the anomaly models row by row instead of replaying through the product",
    )
    mode.add_argument(
        "--river",
        action="store_true",
        help="for comparison: river's StandardAbsoluteDeviation behind the same gate",
    )
    parser.add_argument(
        "--no-held-out", action="store_true", help="skip the leave-one-category-out search"
    )
    parser.add_argument("--jobs", type=int, default=2, help="worker processes (default 2)")
    args = parser.parse_args(argv)
    data: Path = args.data if args.data is not None else default_data()
    detect: Detect = detections_for_file
    if args.river:
        detect = river_detections_for_file
    elif args.models_only:
        detect = model_detections_for_file
    jobs = max(1, args.jobs)
    profiles = load_profiles(data / "profiles.json")
    names = corpus_files(data)
    found = run_detections(data, [(n, None) for n in names], detect, jobs)
    shipped = {n: found[n, None] for n in names}
    result = summarise(load_inputs(data, names, shipped), profiles)
    files = result.pop("files")
    if not (args.no_held_out or args.river):
        result.update(held_out(data, detect, shipped, jobs, replay=not args.models_only))
    result["files"] = files
    sys.stdout.write(orjson.dumps(result).decode() + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
