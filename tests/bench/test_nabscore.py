"""The NAB v1.1 scorer (bench/nabscore.py) against hand-computed cases."""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from bench.nabscore import (
    DEFAULT_PROFILES,
    CostProfile,
    FileInput,
    load_profiles,
    load_windows,
    normalized_score,
    probation_length,
    scaled_sigmoid,
    score_file,
)

# the shared corpus sits beside the repository
NAB = Path(__file__).resolve().parents[3] / "shared" / "data" / "nab"
STANDARD, LOW_FP, LOW_FN = DEFAULT_PROFILES


def stamps(n: int) -> list[str]:
    start = datetime(2020, 1, 1)
    return [(start + timedelta(minutes=5 * i)).strftime("%Y-%m-%d %H:%M:%S") for i in range(n)]


# 100 rows: probation = 15 rows; one window covering rows 40..49 (width 10).
TS = stamps(100)
WINDOW = [(TS[40], TS[49])]


def sig(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def test_scaled_sigmoid_reference_points() -> None:
    assert scaled_sigmoid(-1.0) == pytest.approx(0.98661, abs=1e-5)
    assert scaled_sigmoid(-0.5) == pytest.approx(0.84828, abs=1e-5)
    assert scaled_sigmoid(0.0) == 0.0
    assert scaled_sigmoid(1.0) == pytest.approx(-0.98661, abs=1e-5)
    assert scaled_sigmoid(3.0) == -1.0


def test_probation_length() -> None:
    assert probation_length(100) == 15
    assert probation_length(1127) == 169
    assert probation_length(4032) == 604
    assert probation_length(22695) == 750


def test_left_edge_detection_is_full_credit() -> None:
    s = score_file(TS, [TS[40]], WINDOW, STANDARD)
    assert s.raw == pytest.approx(1.0)
    assert (s.true_positives, s.false_positives, s.false_negatives) == (1, 0, 0)


def test_right_edge_detection() -> None:
    # position = -(49 - 49 + 1) / 10 = -0.1; credit = (2 sig(0.5) - 1) / (2 sig(5) - 1)
    expected = (2 * sig(0.5) - 1) / (2 * sig(5.0) - 1)
    s = score_file(TS, [TS[49]], WINDOW, STANDARD)
    assert s.raw == pytest.approx(expected, rel=1e-12)
    assert s.raw == pytest.approx(0.248242, abs=1e-6)


def test_missed_window_costs_fn_weight() -> None:
    assert score_file(TS, [], WINDOW, STANDARD).raw == -1.0
    assert score_file(TS, [], WINDOW, LOW_FN).raw == -2.0


def test_detection_in_probation_is_not_scored() -> None:
    s = score_file(TS, [TS[5]], WINDOW, STANDARD)
    assert s.raw == -1.0
    assert s.false_positives == 0
    # The same detection after probation, before any window, costs the full fpWeight.
    s = score_file(TS, [TS[20]], WINDOW, STANDARD)
    assert s.raw == pytest.approx(-1.0 - 0.11)
    assert s.false_positives == 1


def test_fp_right_after_window_is_penalised_less_than_far_one() -> None:
    # Row 50: distance |49 - 50| / (10 - 1) = 1/9 from the window's right edge.
    near = score_file(TS, [TS[40], TS[50]], WINDOW, STANDARD).raw - 1.0
    assert near == pytest.approx(0.11 * (2 * sig(-5.0 / 9.0) - 1), rel=1e-12)
    assert near == pytest.approx(-0.029793, abs=1e-6)
    # Row 90: distance 41/9 >= 3, the full penalty.
    far = score_file(TS, [TS[40], TS[90]], WINDOW, STANDARD).raw - 1.0
    assert far == pytest.approx(-0.11)
    assert near > far
    # The low-FP profile doubles the penalty.
    far_low_fp = score_file(TS, [TS[40], TS[90]], WINDOW, LOW_FP).raw - 1.0
    assert far_low_fp == pytest.approx(-0.22)


def test_only_first_detection_in_window_counts() -> None:
    early = score_file(TS, [TS[42]], WINDOW, STANDARD)
    both = score_file(TS, [TS[42], TS[48]], WINDOW, STANDARD)
    late = score_file(TS, [TS[48]], WINDOW, STANDARD)
    assert both.raw == early.raw
    assert both.true_positives == 1
    assert both.false_positives == 0
    assert late.raw < early.raw
    # position of row 42 = -(49 - 42 + 1) / 10 = -0.8
    assert early.raw == pytest.approx((2 * sig(4.0) - 1) / (2 * sig(5.0) - 1), rel=1e-12)


def test_duplicate_timestamps_match_rows_in_order() -> None:
    ts = [*TS[:60], TS[59], *TS[60:]]  # row 60 repeats row 59's timestamp
    s = score_file(ts, [TS[40], TS[59], TS[59]], WINDOW, STANDARD)
    assert s.detections == 3
    assert s.false_positives == 2


def test_unknown_detection_is_an_error() -> None:
    with pytest.raises(ValueError, match="not a row timestamp"):
        score_file(TS, ["1999-01-01 00:00:00"], WINDOW, STANDARD)


def test_normalisation_small_corpus() -> None:
    files = {
        "a.csv": FileInput(TS, [TS[40]], WINDOW),
        "b.csv": FileInput(TS, [TS[99]], [(TS[60], TS[69])]),
    }
    score, per_file = normalized_score(files, STANDARD)
    # raw = 1 + (-1 - 0.11 (row 99: 30/9 >= 3, the full penalty)) = -0.11; null = -2; perfect = 2
    assert per_file["b.csv"].raw == pytest.approx(-1.11)
    assert score == pytest.approx(100 * (-0.11 + 2) / 4)


def _corpus(pick: str) -> dict[str, FileInput]:
    import csv

    windows = load_windows(NAB / "labels" / "combined_windows.json")
    files = {}
    for name, limits in windows.items():
        with (NAB / "data" / name).open() as fh:
            ts = [row["timestamp"] for row in csv.DictReader(fh)]
        detections = [left for left, _ in limits] if pick == "perfect" else []
        files[name] = FileInput(ts, detections, limits)
    return files


@pytest.mark.parametrize("profile", DEFAULT_PROFILES, ids=lambda p: p.name)
def test_perfect_and_null_detectors_on_the_corpus(profile: CostProfile) -> None:
    perfect, _ = normalized_score(_corpus("perfect"), profile)
    null, _ = normalized_score(_corpus("null"), profile)
    assert perfect == pytest.approx(100.0)
    assert null == 0.0


def test_profiles_file_matches_defaults() -> None:
    assert load_profiles(NAB / "profiles.json") == DEFAULT_PROFILES
