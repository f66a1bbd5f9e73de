"""The batch handler under fuzzing: the corpus replayed, and a short coverage-guided run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.fuzz.batch import Harness

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT / "tests" / "fuzz" / "corpus"


def corpus() -> list[Path]:
    return sorted(CORPUS.iterdir())


def test_the_corpus_holds_the_seeds_and_what_the_fuzzer_found() -> None:
    assert len(corpus()) >= 20


def test_every_corpus_batch_ends_with_each_record_published_once_or_held() -> None:
    harness = Harness()
    for path in corpus():
        harness.check_batch(path.read_bytes())


def test_a_coverage_guided_run_over_the_batch_handler_finds_nothing(tmp_path: Path) -> None:
    (tmp_path / "found").mkdir()
    runs = os.environ.get("CITYVITALS_FUZZ_RUNS", "3000")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.fuzz.run",
            f"-runs={runs}",
            "-max_len=8192",
            "-timeout=60",
            f"-artifact_prefix={tmp_path}/",
            str(tmp_path / "found"),  # new inputs go to the first folder, not the repository's
            str(CORPUS),
        ],
        cwd=ROOT,
        capture_output=True,
        timeout=900,
    )
    report = proc.stderr.decode(errors="replace")[-4000:]
    assert proc.returncode == 0, report
    assert "Done" in report, report
