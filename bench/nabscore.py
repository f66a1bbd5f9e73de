"""The NAB v1.1 scorer, for detectors that emit alerts rather than scores.

A pure re-implementation of the rules of the Numenta Anomaly Benchmark (NAB v1.1) as
its ``Sweeper`` applies them, for a detector whose output is a set of detection
timestamps (every alerted row has score 1, every other row 0, threshold 0.5):

* **Probation.** The first ``min(floor(0.15 * rows), 750)`` rows of a file are not
  scored: detections there count for nothing, and a window is only scored if at least
  one of its rows lies after probation.
* **Windows.** Each labelled anomaly has a window ``[left, right]`` (inclusive, equal to
  data timestamps, from ``labels/combined_windows.json``). The row at index ``i`` inside
  a window of ``width`` rows whose right edge has index ``r`` sits at the relative
  position ``-(r - i + 1) / width``: -1 at the left edge, just above 0 at the right edge.
* **True positives.** Only the earliest detection in a window counts, with the credit
  ``tpWeight * scaled_sigmoid(position) / scaled_sigmoid(-1)``: exactly ``tpWeight`` at
  the left edge, about zero at the right edge. Later detections in the same window are
  neither rewarded nor penalised.
* **False positives.** A detection outside every window scores
  ``fpWeight * scaled_sigmoid(d)``, negative: ``d = |i - r_prev| / (width_prev - 1)``
  measures the distance from the right edge ``r_prev`` of the preceding window, so a
  detection right after a window costs less than one far from it (``d >= 3`` and
  detections before the first window cost the full ``fpWeight``).
* **False negatives.** A scored window without a detection costs ``fnWeight``.
* **Normalisation.** Over a set of files the raw scores are summed per profile, then
  ``100 * (raw - raw_null) / (raw_perfect - raw_null)``, where ``raw_null`` is the
  summed score of a detector that never fires and ``raw_perfect = tpWeight * windows``
  (NAB's ``Runner.normalize``): the null detector scores 0, one detection at the left
  edge of every window and nowhere else scores 100.

``scaled_sigmoid(x) = 2 / (1 + exp(5x)) - 1`` (and -1 for ``x >= 3``).

Rows are identified by their timestamp strings as written in the CSV. A timestamp that
occurs more than once in a file (a duplicate row) is matched in order: the k-th detection
carrying it marks the k-th row carrying it. A window edge given as a duplicated timestamp
refers to its first row, as in NAB.
"""

from __future__ import annotations

import json
import math
from bisect import bisect_left
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

#: NAB's probation period: this fraction of a file's rows, capped at ``PROBATION_CAP``.
PROBATION_FRACTION = 0.15
PROBATION_CAP = 750


@dataclass(frozen=True)
class CostProfile:
    """One NAB application profile: the weights of TPs, FPs and FNs."""

    name: str
    tp_weight: float
    fp_weight: float
    fn_weight: float


#: The three profiles of NAB v1.1 (the same values as ``profiles.json``).
DEFAULT_PROFILES: tuple[CostProfile, ...] = (
    CostProfile("standard", 1.0, 0.11, 1.0),
    CostProfile("reward_low_FP_rate", 1.0, 0.22, 1.0),
    CostProfile("reward_low_FN_rate", 1.0, 0.11, 2.0),
)


def load_profiles(path: str | Path) -> tuple[CostProfile, ...]:
    """Read NAB's ``profiles.json`` (``{name: {"CostMatrix": {...}}}``)."""
    raw = json.loads(Path(path).read_text())
    profiles = []
    for name, body in raw.items():
        cm = body["CostMatrix"]
        profiles.append(
            CostProfile(name, float(cm["tpWeight"]), float(cm["fpWeight"]), float(cm["fnWeight"]))
        )
    return tuple(profiles)


def load_windows(path: str | Path) -> dict[str, list[tuple[str, str]]]:
    """Read ``combined_windows.json``, timestamps cut to the CSV form ``YYYY-MM-DD HH:MM:SS``."""
    raw = json.loads(Path(path).read_text())
    return {name: [(a[:19], b[:19]) for a, b in limits] for name, limits in raw.items()}


def sigmoid(x: float) -> float:
    """The logistic function ``1 / (1 + exp(-x))``."""
    return 1.0 / (1.0 + math.exp(-x))


def scaled_sigmoid(relative_position: float) -> float:
    """NAB's credit curve: 0.9866 at -1 (left edge), 0 at 0 (right edge), -1 from 3 on."""
    if relative_position >= 3.0:
        return -1.0
    return 2.0 * sigmoid(-5.0 * relative_position) - 1.0


MAX_TP = scaled_sigmoid(-1.0)


def probation_length(rows: int) -> int:
    """Number of leading rows that are not scored: ``min(floor(0.15 * rows), 750)``."""
    return int(min(math.floor(PROBATION_FRACTION * rows), PROBATION_CAP))


@dataclass(frozen=True)
class FileScore:
    """The score of one file under one profile, with its counts."""

    raw: float
    windows: int
    true_positives: int
    false_positives: int
    false_negatives: int
    detections: int


def _window_rows(
    first_index: Mapping[str, int], windows: Sequence[tuple[str, str]]
) -> list[tuple[int, int]]:
    """Row ranges ``(left, right)`` of the windows, sorted: NAB enters a window at the
    first row carrying its left timestamp and leaves it at the first row carrying its
    right one."""
    return sorted((first_index[left], first_index[right]) for left, right in windows)


def _detected_rows(timestamps: Sequence[str], detections: Iterable[str]) -> list[int]:
    """Row indices of the detections (k-th duplicate detection → k-th duplicate row)."""
    rows_of: dict[str, list[int]] = defaultdict(list)
    for i, ts in enumerate(timestamps):
        rows_of[ts].append(i)
    used: dict[str, int] = defaultdict(int)
    out: set[int] = set()
    for ts in detections:
        candidates = rows_of.get(ts)
        if not candidates:
            raise ValueError(f"detection {ts!r} is not a row timestamp of the file")
        k = min(used[ts], len(candidates) - 1)
        used[ts] += 1
        out.add(candidates[k])
    return sorted(out)


def tally_rows(
    ranges: Sequence[tuple[int, int]],
    probation: int,
    detected: Iterable[int],
) -> tuple[dict[int, float], float, int]:
    """The profile-free parts of a file's score for detections at these (sorted) rows.

    ``ranges`` are the windows' ``(left, right)`` row indices in order. Returns each
    detected window's best credit (``scaled_sigmoid(position) / MAX_TP``, 1 at the left
    edge), the sum of the false positives' ``scaled_sigmoid(distance)`` (negative) and
    their count; a profile weighs them (:func:`score_file`).
    """
    rights = [right for _, right in ranges]
    best: dict[int, float] = {}
    fp_sum = 0.0
    fp_count = 0
    for i in detected:
        if i < probation:
            continue
        # The first window whose right edge is at or after row i; row i is in it if it
        # has started, else the window before it (if any) is the preceding one.
        w = bisect_left(rights, i)
        if w < len(ranges) and ranges[w][0] <= i:
            left, right = ranges[w]
            credit = scaled_sigmoid(-(right - i + 1) / (right - left + 1)) / MAX_TP
            if credit > best.get(w, -math.inf):
                best[w] = credit
            continue
        if w == 0:
            distance = 3.0
        else:
            prev_left, prev_right = ranges[w - 1]
            width = prev_right - prev_left + 1
            distance = (i - prev_right) / (width - 1) if width > 1 else 3.0
        fp_sum += scaled_sigmoid(distance)
        fp_count += 1
    return best, fp_sum, fp_count


def score_file(
    timestamps: Sequence[str],
    detections: Iterable[str],
    windows: Sequence[tuple[str, str]],
    profile: CostProfile,
) -> FileScore:
    """Score one file's detections under one profile (NAB's ``Sweeper`` at threshold 0.5)."""
    first_index: dict[str, int] = {}
    for i, ts in enumerate(timestamps):
        first_index.setdefault(ts, i)
    ranges = _window_rows(first_index, windows)
    probation = probation_length(len(timestamps))
    scored = sum(1 for _, right in ranges if right >= probation)
    detected = _detected_rows(timestamps, detections)
    best, fp_sum, fp_count = tally_rows(ranges, probation, detected)
    fn = scored - len(best)
    raw = profile.tp_weight * sum(best.values()) + profile.fp_weight * fp_sum
    raw -= fn * profile.fn_weight
    return FileScore(
        raw=raw,
        windows=scored,
        true_positives=len(best),
        false_positives=fp_count,
        false_negatives=fn,
        detections=len(detected),
    )


@dataclass(frozen=True)
class FileInput:
    """One file to score: its row timestamps, its detections, its windows."""

    timestamps: Sequence[str]
    detections: Sequence[str]
    windows: Sequence[tuple[str, str]]


def normalized_score(
    files: Mapping[str, FileInput], profile: CostProfile
) -> tuple[float, dict[str, FileScore]]:
    """NAB's normalised score of a set of files under one profile, and each file's score.

    Raw scores are summed over the files, as are the null detector's; the perfect raw
    score is ``tpWeight`` times the number of windows.
    """
    per_file: dict[str, FileScore] = {}
    raw = null = 0.0
    n_windows = 0
    for name, f in files.items():
        s = score_file(f.timestamps, f.detections, f.windows, profile)
        per_file[name] = s
        raw += s.raw
        null -= profile.fn_weight * s.windows  # the null detector misses every window
        n_windows += len(f.windows)
    perfect = profile.tp_weight * n_windows
    if perfect == null:
        return 0.0, per_file
    return 100.0 * (raw - null) / (perfect - null), per_file
