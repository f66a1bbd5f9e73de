"""bench/processing.py: the handler-cost bench does the work it reports on."""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# the bench imports its sibling throughput.py as it does when run as a script
sys.path.insert(0, str(ROOT / "bench"))

import processing  # noqa: E402


def test_every_event_becomes_a_reading_and_every_run_does_the_same_work(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert processing.main(["--events", "3000", "--runs", "2", "--batch", "500"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["events"] == 3000
    # the simulator's events are all valid (no malformed share): each is one reading
    assert report["outputs"]["city.readings"] == 3000
    assert report["outputs"]["city.vitals"] > 0  # windows closed on the watermark
    assert len(report["runs"]) == 2 and all(r > 0 for r in report["runs"])
    assert report["cpu_us_per_event"] == pytest.approx(statistics.median(report["runs"]), abs=0.01)


def test_with_appeals_a_tenth_of_the_events_are_appeals_counted_and_tallied(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert processing.main(["--events", "3000", "--runs", "1", "--appeals", "0.1"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["events"] == 3000 and report["appeals"] == 0.1
    # the simulated appeals are valid too: every event, appeal or not, is one reading
    assert report["outputs"]["city.readings"] == 3000
    assert "city.deadletter" not in report["outputs"]
    # the windows that counted appeals send their tallies by category and street
    assert report["outputs"]["city.appeal-tallies"] > 0
