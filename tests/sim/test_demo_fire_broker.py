"""The demo's building fire reaches the console's live stream as an alarm decided on the
reading, with the city published at the speed of the clock (``bench/demo_fire.py``,
which also times it; the time is a benchmark figure, not asserted here)."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from streams.core.config import load_config
from streams.sim.simulator import default_incidents

pytestmark = pytest.mark.broker
ROOT = Path(__file__).resolve().parents[2]


def test_the_building_fire_is_on_the_console_as_an_alarm_on_its_reading() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "demo_fire.py"), "--fire-after", "5"],
        cwd=ROOT,
        capture_output=True,
        timeout=1200,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-3000:]
    result = orjson.loads(done.stdout.splitlines()[-1])
    # the first fire alarm of the fire's district: a window maximum or count decided by
    # the crossing reading of the fire's own street, not at its window's close
    assert result["decided"] == "reading"
    assert result["rule"] in {"fire.temperature.max", "fire.smoke_alarms.sum5"}
    fire = next(
        i for i in default_incidents(load_config(), datetime.now(UTC)) if i.kind == "building_fire"
    )
    assert result["street"] == fire.street
    reading = result["reading"]
    bound = {"fire.temperature.max": 60.0, "fire.smoke_alarms.sum5": 1.0}[result["rule"]]
    assert reading["value"] >= bound
    assert result["on_console_s"] >= 0
