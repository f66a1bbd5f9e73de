"""bench/nab.py: the held-out search, per-file timeliness and the corpus regression."""

from __future__ import annotations

import json
import random
import statistics
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
# bench/nab.py imports its sibling nabscore as it does when run as a script
sys.path.insert(0, str(ROOT / "bench"))

import nab  # noqa: E402
from nabscore import (  # noqa: E402
    DEFAULT_PROFILES,
    FileInput,
    normalized_score,
    score_file,
)

#: The whole-corpus standard score of ``bench/nab.py --no-held-out`` as reported in
#: README.md (section "Warning quality: bench/nab.py"); the replay must not fall more
#: than a point below it.
README_WHOLE_STANDARD = 62.03


def stamps(n: int, step_min: int = 5, start: datetime = datetime(2020, 1, 6)) -> list[str]:
    return [
        (start + timedelta(minutes=step_min * i)).strftime("%Y-%m-%d %H:%M:%S") for i in range(n)
    ]


# ------------------------------------------------------------- the corpus regression


def test_whole_corpus_through_replay_keeps_the_reported_score() -> None:
    readme = (ROOT / "README.md").read_text()
    assert f"{README_WHOLE_STANDARD:.2f}" in readme  # the constant is the README's figure
    started = time.monotonic()
    result = nab.evaluate(nab.default_data(), show_progress=False, jobs=2)
    elapsed = time.monotonic() - started
    assert len(result["files"]) == 58
    assert result["whole"]["standard"] >= README_WHOLE_STANDARD - 1.0, (result["whole"], elapsed)


# ----------------------------------------------------------------------- data path


def test_corpus_is_found_from_the_repository_root_or_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv(nab.DATA_ENV, raising=False)
    assert nab.default_data() == ROOT / ".." / "shared" / "data" / "nab"
    assert not nab.RELATIVE_DATA.is_absolute()
    monkeypatch.setenv(nab.DATA_ENV, str(tmp_path))
    assert nab.default_data() == tmp_path


# ------------------------------------------------------------ folds and combination


def raw(value: float, windows: int = 1) -> nab.FileRaw:
    """A file's FileRaw under the standard profile with ``windows`` scored windows."""
    return nab.FileRaw(raw=value, null=-1.0 * windows, perfect=1.0 * windows)


class Watched(dict[str, Any]):
    """A per-file mapping that records which files were looked at."""

    def __init__(self, items: dict[str, Any], seen: set[str]) -> None:
        super().__init__(items)
        self.seen = seen

    def __getitem__(self, name: str) -> Any:
        self.seen.add(name)
        return super().__getitem__(name)


def test_fold_choice_is_made_without_the_held_out_category() -> None:
    # config A is excellent on category "x" and poor elsewhere; B is the reverse but
    # only moderately better on "y" and "z": over all three A wins, without "x" B does.
    categories = {"x": ["x/1.csv", "x/2.csv"], "y": ["y/1.csv"], "z": ["z/1.csv"]}
    per_config = {
        "A": {"x/1.csv": raw(1.0), "x/2.csv": raw(1.0), "y/1.csv": raw(-1.0), "z/1.csv": raw(-0.6)},
        "B": {"x/1.csv": raw(-1.0), "x/2.csv": raw(-1.0), "y/1.csv": raw(0.0), "z/1.csv": raw(0.2)},
    }
    seen: set[str] = set()
    table = {
        (key,): Watched({n: [r] for n, r in files.items()}, seen)
        for key, files in per_config.items()
    }
    # in sample: A = 100*(0.4+4)/(4+4) = 55, B = 100*(-1.8+4)/8 = 27.5
    assert nab.choose(table, [n for names in categories.values() for n in names], 0) == (
        ("A",),
        pytest.approx(55.0),
    )
    folds = nab.choose_folds(table, categories, 1)
    # held out x: A = 100*(-1.6+2)/4 = 10, B = 100*(0.2+2)/4 = 55 -> B
    assert folds["x"][0] == (("B",), pytest.approx(55.0))
    # held out y: A = 100*(1.4+3)/6 = 73.3, B = 100*(-1.8+3)/6 = 20 -> A
    assert folds["y"][0] == (("A",), pytest.approx(100 * 4.4 / 6))


def test_fold_choice_never_reads_the_held_out_files() -> None:
    categories = {"x": ["x/1.csv"], "y": ["y/1.csv"], "z": ["z/1.csv"]}
    for held_out in categories:
        seen: set[str] = set()
        table = {
            (k,): Watched({n: [raw(0.1 * k)] for names in categories.values() for n in names}, seen)
            for k in range(3)
        }
        train = [n for c, names in categories.items() if c != held_out for n in names]
        nab.choose(table, train, 0)
        assert seen == set(train)


def test_ties_go_to_the_first_grid_point() -> None:
    table = {(k,): {"a.csv": [raw(0.5)]} for k in (3, 1, 2)}
    assert nab.choose(table, ["a.csv"], 0)[0] == (3,)


def synthetic_files(seed: int) -> dict[str, FileInput]:
    """Small files with windows, duplicate timestamps and detections everywhere."""
    rng = random.Random(seed)
    files: dict[str, FileInput] = {}
    for k in range(6):
        n = rng.randint(60, 400)
        ts = stamps(n)
        if k % 2:  # a duplicated row, as in realTraffic
            d = rng.randrange(n // 2, n - 1)
            ts = [*ts[: d + 1], ts[d], *ts[d + 1 : -1]]
        windows: list[tuple[str, str]] = []
        edge = rng.randint(5, 40)
        while edge + 12 < n and len(windows) < 3 and k != 5:  # file 5: no window
            width = rng.randint(1, 10)
            windows.append((ts[edge], ts[edge + width]))
            edge += width + rng.randint(2, 120)
        detections = [ts[i] for i in sorted(rng.sample(range(n), rng.randint(0, 12)))]
        if k % 2:
            detections += [ts[d]] * rng.randint(1, 2)  # duplicate rows detected
        files[f"c{k % 3}/f{k}.csv"] = FileInput(ts, detections, windows)
    return files


@pytest.mark.parametrize("seed", range(12))
def test_scoring_by_rows_equals_the_reference_scorer(seed: int) -> None:
    for f in synthetic_files(seed).values():
        rows = nab._rows_of(f)
        got = nab.score_rows(nab.Frame.of(f), rows, DEFAULT_PROFILES)
        for profile, part in zip(DEFAULT_PROFILES, got, strict=True):
            ref = score_file(f.timestamps, f.detections, f.windows, profile)
            assert part.raw == pytest.approx(ref.raw, abs=1e-12)
            assert part.null == -profile.fn_weight * ref.windows
            assert part.perfect == profile.tp_weight * len(f.windows)


@pytest.mark.parametrize("seed", range(12))
def test_fold_combination_equals_normalized_score(seed: int) -> None:
    files = synthetic_files(seed)
    names = list(files)
    rng = random.Random(seed)
    for _ in range(5):
        subset = rng.sample(names, rng.randint(1, len(names)))
        for p, profile in enumerate(DEFAULT_PROFILES):
            parts = [
                nab.score_rows(nab.Frame.of(files[n]), nab._rows_of(files[n]), DEFAULT_PROFILES)[p]
                for n in subset
            ]
            combined = nab.combine(parts)
            direct, _ = normalized_score({n: files[n] for n in subset}, profile)
            if sum(len(files[n].windows) for n in subset) == 0:
                assert combined is None and direct == 0.0
            else:
                assert combined == pytest.approx(direct, abs=1e-9)


# ------------------------------------------------------------ delays, false alarms


def test_delays_and_false_alarms_on_a_hand_made_file() -> None:
    # 100 rows at 5 min: probation = 15 rows, so 85 scored rows.
    ts = stamps(100)
    # window 1: rows 40..49, window 2: rows 70..79
    windows = [(ts[40], ts[49]), (ts[70], ts[79])]
    # row 10: in probation, ignored; 30, 60, 90: outside windows -> 3 false alarms;
    # 43 (first in window 1, 3 rows = 15 min after its left edge) and 45 (later, ignored);
    # window 2 has no detection.
    f = FileInput(ts, [ts[i] for i in (10, 30, 43, 45, 60, 90)], windows)
    assert nab.window_delays(f) == [15.0, None]
    fp = score_file(ts, f.detections, windows, DEFAULT_PROFILES[0]).false_positives
    assert fp == 3
    assert nab.scored_rows(f) == 85
    assert nab.per_1000(fp, nab.scored_rows(f)) == pytest.approx(35.294)  # 3000 / 85

    # irregular sampling: delays are wall-clock minutes, not rows
    ts2 = stamps(50) + stamps(50, start=datetime(2020, 1, 6, 10))  # 4 h 10 min -> 10:00 jump
    windows2 = [(ts2[45], ts2[55])]  # 03:45 .. 10:25
    g = FileInput(ts2, [ts2[52]], windows2)  # 10:10: 6 h 25 min = 385 min after 03:45
    assert nab.window_delays(g) == [385.0]
    h = FileInput(ts, [ts[40], ts[70]], windows)  # both at the left edge
    assert nab.window_delays(h) == [0.0, 0.0]

    summary = nab.timeliness(
        {"f": f, "h": h},
        {"f": nab.window_delays(f), "h": nab.window_delays(h)},
        {"f": 3, "h": 0},
    )
    # detected windows: 15, 0, 0 -> median 0; 3 false alarms over 170 scored rows
    assert summary == {
        "windows": 4,
        "detected": 3,
        "median_delay_min": 0.0,
        "false_alarms_per_1000": pytest.approx(17.647),
    }
    assert nab.timeliness({"f": f}, {"f": [15.0, None]}, {"f": 3})["median_delay_min"] == 15.0


def test_summary_reports_delays_and_false_alarms_per_file() -> None:
    ts = stamps(100)
    windows = [(ts[40], ts[49])]
    inputs = {
        "realTraffic/speed_6005.csv": FileInput(ts, [ts[44], ts[80]], windows),
        "other/a.csv": FileInput(ts, [], windows),
    }
    out = nab.summarise(inputs, DEFAULT_PROFILES)
    city = out["files"]["realTraffic/speed_6005.csv"]
    assert city["delays_min"] == [20.0]  # 4 rows of 5 min
    assert city["false_alarms_per_1000"] == pytest.approx(11.765)  # 1000 / 85
    assert out["files"]["other/a.csv"]["delays_min"] == [None]
    assert out["timeliness"]["city"]["median_delay_min"] == 20.0
    assert out["timeliness"]["whole"]["false_alarms_per_1000"] == pytest.approx(5.882)  # 1/170


# ------------------------------------------------------- the held-out pipeline, small


@pytest.fixture
def tiny_corpus(tmp_path: Path) -> Iterator[Path]:
    """Three categories of two short files each (one category without a window)."""
    rng = random.Random(3)
    labels: dict[str, list[list[str]]] = {}
    for cat in ("catA", "catB", "noWindows"):
        (tmp_path / "data" / cat).mkdir(parents=True)
        for k in range(2):
            ts = stamps(400, step_min=60)
            values = [10.0 + 3.0 * ((i % 24) >= 8) + rng.gauss(0, 0.3) for i in range(400)]
            name = f"{cat}/f{k}.csv"
            labels[name] = []
            if cat != "noWindows":
                spike = 250 + 40 * k
                for i in range(spike, spike + 6):
                    values[i] += 8.0 + 4.0 * k
                labels[name] = [[ts[spike - 5] + ".000000", ts[spike + 15] + ".000000"]]
            rows = "\n".join(f"{t},{v:.3f}" for t, v in zip(ts, values, strict=True))
            (tmp_path / "data" / name).write_text("timestamp,value\n" + rows + "\n")
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "combined_windows.json").write_text(json.dumps(labels))
    profiles = {
        p.name: {
            "CostMatrix": {
                "tpWeight": p.tp_weight,
                "fpWeight": p.fp_weight,
                "fnWeight": p.fn_weight,
            }
        }
        for p in DEFAULT_PROFILES
    }
    (tmp_path / "profiles.json").write_text(json.dumps(profiles))
    yield tmp_path


def test_held_out_pipeline_on_a_tiny_corpus(tiny_corpus: Path) -> None:
    out = nab.held_out(tiny_corpus, show_progress=False, replay=False)
    assert out["knobs"] == {k: list(v) for k, v in nab.KNOBS.items()}
    assert set(out["folds"]) == {"catA", "catB", "noWindows"}
    keys = ["standard", "reward_low_FP", "reward_low_FN"]
    for fold in out["folds"].values():
        for k in keys:
            assert tuple(fold["chosen"][k].values()) in set(nab.grid())
    assert all(out["folds"]["noWindows"][k] is None for k in keys)
    for k in keys:  # the mean runs over the categories with windows
        defined = [out["folds"][c][k] for c in ("catA", "catB")]
        assert out["held_out"][k] == pytest.approx(statistics.fmean(defined), abs=0.01)

    # through the replay: each held-out category scored by the reference scorer
    replayed = nab.held_out(tiny_corpus, show_progress=False, replay=True)
    assert replayed["folds"]["catA"]["chosen"] == out["folds"]["catA"]["chosen"]
    chosen = replayed["folds"]["catA"]["chosen"]["standard"]
    config = nab.config_of(tuple(chosen.values()))
    names = ["catA/f0.csv", "catA/f1.csv"]
    found = {n: nab.detections_for_file(tiny_corpus / "data" / n, config) for n in names}
    inputs = nab.load_inputs(tiny_corpus, names, found)
    direct = normalized_score(inputs, DEFAULT_PROFILES[0])[0]
    assert replayed["folds"]["catA"]["standard"] == pytest.approx(direct, abs=0.005)
