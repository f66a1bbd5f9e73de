"""The commands a newcomer runs: the demo city and the simulator, on the real broker."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from streams.api.auth import load_roles
from streams.core.config import DEFAULT_CONFIG_DIR, load_config
from streams.core.messages import EVENT_TOPICS, CityEvent
from tests.harness import free_port, read_topic, run, wait_for

pytestmark = pytest.mark.broker
CFG = load_config()


def children_of(pid: int) -> set[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True)
    return {int(p) for p in out.stdout.split()}


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def simulate(bootstrap: str, *args: str, partitions: int) -> subprocess.CompletedProcess[str]:
    """Run ``cityvitals simulate`` against the test broker."""
    return subprocess.run(
        [sys.executable, "-m", "streams.cli", "simulate", "--bootstrap", bootstrap, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "CITYVITALS_PARTITIONS": str(partitions)},
    )


def test_demo_shows_every_district_index_and_ctrl_c_stops_everything(tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "demo.out"
    with open(log, "wb") as out:
        demo = subprocess.Popen(
            [sys.executable, "-m", "streams.cli", "demo", "--web-port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "COLUMNS": "160"},
            start_new_session=True,  # its own process group, like a job in a terminal
            # with the default Ctrl-C of a terminal's job (a background job ignores it)
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
    try:
        deadline = time.monotonic() + 90
        children: set[int] = set()
        while time.monotonic() < deadline:
            children |= children_of(demo.pid)
            text = log.read_text(errors="replace")
            tables = text.split("district vital signs")
            last = tables[-1] if len(tables) > 1 else ""
            if all(
                re.search(rf"{d.name_en}\s*│\s*\d\d-\d\d \d\d:\d\d", last)
                for d in CFG.city.districts
            ):
                break
            assert demo.poll() is None, text[-3000:]
            time.sleep(1)
        else:
            pytest.fail(
                "the demo showed no index for every district within 90 s:\n"
                + log.read_text()[-3000:]
            )
        composites = re.findall(r"│\s+(\d+\.\d)\s+│\s*$", last, flags=re.M)
        assert len(composites) == len(CFG.districts)
        assert all(0 <= float(c) <= 100 for c in composites)
        assert len(children) >= 2  # the broker and the worker
        # the console's address and a working token for every user of roles.yaml
        assert f"command-centre console: http://127.0.0.1:{port}/" in text
        printed = dict(re.findall(r"^\s+\w+\s+(\S+)\s+(cv_\S+)\s*$", text, flags=re.M))
        roster = load_roles(DEFAULT_CONFIG_DIR / "roles.yaml", CFG)
        assert set(printed) == set(roster.users)
        for user, token in printed.items():
            me = httpx.get(
                f"http://127.0.0.1:{port}/api/v1/me",
                headers={"Authorization": f"Bearer {token}"},
                timeout=10,
            )
            assert me.status_code == 200 and me.json()["user"] == user
        os.killpg(demo.pid, signal.SIGINT)  # Ctrl-C: the terminal signals the whole group
        # the demo bounds its own stop and its worker's; the wait only bounds a hang
        assert demo.wait(timeout=120) == 0
        wait_for(lambda: not [p for p in children if alive(p)], 10, "the broker and worker gone")
        assert "stopping..." in log.read_text(errors="replace")
        tail = log.read_text(errors="replace").split("Ctrl-C stops everything.")[-1]
        assert "Error" not in tail and "Traceback" not in tail, tail
    finally:
        if demo.poll() is None:
            demo.kill()


def test_simulate_publishes_exactly_the_requested_events_and_writes_ground_truth(
    broker_bootstrap: str, fresh_topics: None, tmp_path: Path
) -> None:
    truth = tmp_path / "incidents.jsonl"
    result = simulate(
        broker_bootstrap,
        "--events",
        "3000",
        "--seed",
        "5",
        "--start",
        "now",
        "--ground-truth",
        str(truth),
        partitions=4,
    )
    assert result.returncode == 0, result.stderr
    assert "published 3000 events" in result.stdout
    values = [
        v
        for topic in EVENT_TOPICS.values()
        for v in run(read_topic(broker_bootstrap, topic, idle_s=1))
    ]
    assert len(values) == 3000
    events = [CityEvent.model_validate_json(v) for v in values]
    assert {e.district for e in events} == set(CFG.districts)
    incidents = [json.loads(line) for line in truth.read_text().splitlines()]
    assert {i["incident"] for i in incidents} >= {
        "building_fire",
        "air_quality_episode",
        "bin_overflow",
        "water_main_burst",
    }
    assert all({"district", "street", "start", "end", "indicators"} <= set(i) for i in incidents)


def test_simulate_refuses_topics_with_another_partition_count(
    broker_bootstrap: str, fresh_topics: None
) -> None:
    result = simulate(broker_bootstrap, "--events", "10", partitions=3)
    assert result.returncode == 2
    assert "topics must all have 3 partitions" in result.stderr
    assert "city.events.iot has 4" in result.stderr
