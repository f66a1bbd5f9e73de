"""The smell only citizens report in the demo city reaches the department that owns
odours as a public-opinion warning within 15 simulated minutes, through a real worker
and broker (``bench/demo_recall.py``, which scores every scripted incident; the second
seed and the other incidents are its figures, not asserted here)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest

pytestmark = pytest.mark.broker
ROOT = Path(__file__).resolve().parents[2]


def test_the_citizen_only_smell_is_warned_to_its_owner_within_15_minutes() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "demo_recall.py"), "--minutes", "32", "--seed", "7"],
        cwd=ROOT,
        capture_output=True,
        timeout=1200,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-3000:]
    result = orjson.loads(done.stdout)
    assert result["run"]["appeals"] is True
    (smell,) = [i for i in result["per_incident"] if i["incident"] == "public_opinion"]
    # recalled only by a public_opinion alert of the odour category owned by its
    # department in config/appeals.yaml, fired within 900 s of the start (DEADLINE_S)
    assert smell["recalled"], smell
    assert smell["detected_after_s"] <= 900
    (first, *_) = smell["alerts"]
    assert first["rule"] == "public_opinion.cluster" and first["street"] == smell["street"]
    # and no appeal made an alert that no incident explains
    assert not [u for u in result["unmatched"] if "public_opinion" in u], result["unmatched"]
