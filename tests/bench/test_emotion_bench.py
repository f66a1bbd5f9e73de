"""bench/emotion.py: the figures it reports are the textbook ones."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

import emotion as emotion_bench  # noqa: E402


def test_f1_precision_recall_and_accuracy_count_as_defined() -> None:
    truth = [True, True, True, False, False, False]
    predicted = [True, True, False, True, False, False]  # tp 2, fn 1, fp 1, tn 2
    got = emotion_bench.f1(truth, predicted)
    assert got == pytest.approx(
        {"f1": 4 / 6, "precision": 2 / 3, "recall": 2 / 3, "accuracy": 4 / 6}
    )


def test_macro_f1_averages_every_label_seen_in_truth_or_prediction() -> None:
    # anger: tp 1 fn 1 -> 2/3; fear: tp 1 fp 1 -> 2/3; none: never right -> 0
    truth = ["anger", "anger", "fear", "none"]
    predicted = ["anger", "fear", "fear", "joy"]
    assert emotion_bench.macro_f1(truth, predicted) == pytest.approx((2 / 3 + 2 / 3 + 0 + 0) / 4)


def test_spearman_is_one_for_the_same_order_and_shares_ranks_between_ties() -> None:
    assert emotion_bench.ranks([0.3, 0.1, 0.3, 0.9]) == [2.5, 1.0, 2.5, 4.0]
    assert emotion_bench.spearman([0.1, 0.2, 0.9], [0, 0.5, 1]) == pytest.approx(1.0)
    assert emotion_bench.spearman([0.9, 0.2, 0.1], [0, 0.5, 1]) == pytest.approx(-1.0)


def test_the_threshold_falls_between_the_appeals_it_separates() -> None:
    intensities = [0.1, 0.4, 0.8, 0.95]
    assert emotion_bench.best_threshold(intensities, [False, False, True, True]) == pytest.approx(
        0.6
    )


def test_the_bench_prints_one_report_comparing_every_method(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert emotion_bench.main(["--runs", "1", "--reviews", "20"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report["methods"]) == {"rules", "cnsenti", "snownlp"}
    assert report["appeals"]["tune"] + report["appeals"]["heldout"] >= 400
    rules = report["methods"]["rules"]
    assert rules["us_per_appeal"]["cut"] > 0 and rules["us_per_appeal"]["score"] > 0
    assert rules["extreme"]["f1"] >= 0.75
    assert report["methods"]["snownlp"]["category_macro_f1"] is None  # it names none
    assert report["reviews"] == 40
    shipped = report["converters"]["opencc_characters"]
    assert shipped["simplified_altered"] == 0
    assert shipped["same_emotion"] <= 3 * report["converters"]["texts"]
    assert {"opencc", "zhconv", "hanziconv"} <= set(report["converters"])
