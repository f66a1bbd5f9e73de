"""The command-centre API on the real broker: actions survive restarts, the live stream resumes."""

from __future__ import annotations

import os
import re
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson

from tests.harness import ApiWorker, wait_for

Event = tuple[str, dict[str, Any]]  # (id, alert event)


def read_stream(
    api: ApiWorker,
    *,
    last_event_id: str | None = None,
    until: Callable[[list[Event]], bool],
    timeout: float = 60.0,
    params: dict[str, str] | None = None,
) -> list[Event]:
    """Server-Sent Events of /api/v1/stream until ``until(events)`` holds (or the timeout)."""
    headers = api.headers("cc.duty")
    if last_event_id is not None:
        headers["Last-Event-ID"] = last_event_id
    events: list[Event] = []
    done = threading.Event()

    def reader() -> None:
        event_id = ""
        with httpx.stream(
            "GET",
            f"{api.url}/api/v1/stream",
            headers=headers,
            params=params or {},
            timeout=httpx.Timeout(timeout, read=timeout),
        ) as response:
            assert response.status_code == 200
            for line in response.iter_lines():
                if line.startswith("id: "):
                    event_id = line[4:]
                elif line.startswith("data: "):
                    events.append((event_id, orjson.loads(line[6:])))
                    if until(events):
                        break
        done.set()

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    thread.join(timeout)
    assert done.is_set(), f"stream did not deliver what was awaited in {timeout} s: {events}"
    return events


def open_alarm(api: ApiWorker) -> dict[str, Any]:
    found: list[dict[str, Any]] = []

    def alarm_listed() -> bool:
        r = api.get("/api/v1/alerts", kind="alarm", open="true")
        found[:] = r.json()["alerts"] if r.status_code == 200 else []
        return bool(found)

    wait_for(alarm_listed, 120, "the smog alarm in the API's list")
    return found[0]


def detail(api: ApiWorker, alert_id: str) -> dict[str, Any]:
    r = api.get(f"/api/v1/alerts/{alert_id}")
    assert r.status_code == 200, r.text
    return dict(r.json())


def actions_in(doc: dict[str, Any]) -> list[tuple[str, str, str | None]]:
    return [(a["action"], a["actor"], a["note"]) for a in doc["alert"]["actions"]]


def test_actions_are_durable_applied_and_audited_across_a_worker_crash(
    api_worker: ApiWorker,
) -> None:
    api = api_worker
    api.produce_incident()
    alarm = open_alarm(api)
    alert_id = alarm["alert_id"]
    assert (alarm["district"], alarm["department"], alarm["workflow"]) == (
        "339901",
        "environment",
        "open",
    )

    r = api.post(f"/api/v1/alerts/{alert_id}/actions", {"action": "acknowledge", "note": "on it"})
    assert r.status_code == 202
    assert r.json()["action"]["actor"] == "cc.duty"
    wait_for(
        lambda: actions_in(detail(api, alert_id)) == [("acknowledge", "cc.duty", "on it")],
        30,
        "the acknowledgement on the alert",
    )
    # a crash between the action and the next read loses nothing; the restart
    # comes with a changed roles file, which the audit trail records
    api.worker.stop(signal.SIGKILL)
    api.worker.forget_group()
    roles = Path(api.worker.env["CITYVITALS_ROLES_FILE"])
    roles.write_text(roles.read_text(encoding="utf-8") + "# reviewed\n", encoding="utf-8")
    api.worker.start()
    doc = detail(api, alert_id)
    assert doc["alert"]["workflow"] == "acknowledged"
    assert actions_in(doc) == [("acknowledge", "cc.duty", "on it")]

    r = api.post(f"/api/v1/alerts/{alert_id}/actions", {"action": "resolve", "note": "cleared"})
    assert r.status_code == 202
    wait_for(lambda: detail(api, alert_id)["alert"]["status"] == "resolved", 30, "the resolution")
    doc = detail(api, alert_id)
    assert doc["alert"]["workflow"] == "resolved"
    assert actions_in(doc) == [
        ("acknowledge", "cc.duty", "on it"),
        ("resolve", "cc.duty", "cleared"),
    ]
    sequences = [e["sequence"] for e in doc["timeline"]]
    assert sequences == list(range(1, len(sequences) + 1))
    assert doc["timeline"][0]["status"] == "firing"

    # who read and did what is on city.audit, queryable by operators only
    wait_for(
        lambda: (
            {"read_alert", "acknowledge", "resolve"}
            <= {r["action"] for r in api.get("/api/v1/audit", target=alert_id).json()["records"]}
        ),
        30,
        "the audit records",
    )
    changed: list[dict[str, Any]] = []

    def config_change_audited() -> bool:
        changed[:] = api.get("/api/v1/audit", action="config_changed").json()["records"]
        return bool(changed)

    wait_for(config_change_audited, 30, "the config change in the audit trail")
    (change,) = changed
    assert change["user"] == "system" and change["target"] == api.worker.app_id
    assert change["detail"].startswith("roles.yaml: ") and " -> " in change["detail"]
    records = api.get("/api/v1/audit", target=alert_id).json()["records"]
    assert {(r["user"], r["role"], r["source_ip"]) for r in records} == {
        ("cc.duty", "operator", "127.0.0.1")
    }
    assert api.get("/api/v1/audit", "traffic.desk").status_code == 403

    # department performance: the acknowledged, closed alarm counts at its grade
    rows = api.get("/api/v1/performance").json()["rows"]
    (row,) = [r for r in rows if r["department"] == "environment" and r["acknowledged"]]
    assert row["grade"] == "II" and row["acknowledged"] == 1 and row["resolved"] >= 1
    assert row["median_ack_s"] is not None and row["median_ack_s"] >= 0
    assert api.get("/api/v1/performance", "traffic.desk").json()["rows"] == [
        r for r in rows if r["department"] == "traffic"
    ]
    metrics = httpx.get(f"{api.url}/metrics", timeout=10).text
    assert (
        'cityvitals_alerts_closed_total{department="environment",grade="II",outcome="resolved"} 1.0'
        in metrics
    )


def test_the_live_stream_resumes_after_a_reconnect_and_a_restart_without_losing_events(
    api_worker: ApiWorker,
) -> None:
    api = api_worker
    api.produce_incident()
    alarm = open_alarm(api)
    alert_id = alarm["alert_id"]

    def has_alarm(events: list[Event]) -> bool:
        return any(e["alert_id"] == alert_id for _, e in events)

    seen = read_stream(api, params={"from_start": "true"}, until=has_alarm)
    last_id = seen[-1][0]
    before = {(e["alert_id"], e["sequence"]) for _, e in seen}

    # while the client is away: an action, a worker crash and restart, another action
    assert (
        api.post(
            f"/api/v1/alerts/{alert_id}/actions", {"action": "note", "note": "one"}
        ).status_code
        == 202
    )
    wait_for(lambda: len(detail(api, alert_id)["alert"]["actions"]) == 1, 30, "the first note")
    api.worker.stop(signal.SIGKILL)
    api.worker.forget_group()
    api.worker.start()
    assert (
        api.post(
            f"/api/v1/alerts/{alert_id}/actions", {"action": "note", "note": "two"}
        ).status_code
        == 202
    )
    wait_for(lambda: len(detail(api, alert_id)["alert"]["actions"]) == 2, 30, "the second note")

    def both_notes(events: list[Event]) -> bool:
        # each event carries the note of the action that caused it, and no other
        notes = [
            a["note"]
            for _, e in events
            if e["alert_id"] == alert_id
            for a in e["actions"]
            if "note" in a
        ]
        return notes[-2:] == ["one", "two"]

    resumed = read_stream(api, last_event_id=last_id, until=both_notes)
    after = [(e["alert_id"], e["sequence"]) for _, e in resumed]
    assert not set(after) & before, "events before the cursor came again"
    # every event of the alert since the cursor, in order, none missing
    mine = [s for a, s in after if a == alert_id]
    last_before = max(s for a, s in before if a == alert_id)
    assert mine == list(range(last_before + 1, last_before + 1 + len(mine)))
    assert [a.get("note") for a in resumed[-1][1]["actions"]] == [None, "two"]
    # the whole history read again from the start matches the API's timeline
    full = read_stream(api, params={"from_start": "true"}, until=both_notes)
    timeline = [e["sequence"] for e in detail(api, alert_id)["timeline"]]
    assert [e["sequence"] for _, e in full if e["alert_id"] == alert_id] == timeline

    # the terminal feed reads the same stream, with the scopes of its token
    import subprocess
    import sys

    def tail(token: str, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "streams.cli", "alerts", "tail", "--url", api.url, *args],
            env={**os.environ, "CITYVITALS_TOKEN": token, "COLUMNS": "200"},
            capture_output=True,
            text=True,
            timeout=60,
        )

    shown = tail(api.tokens["environment.desk"], "--from-start", "--kind", "alarm", "--count", "1")
    assert shown.returncode == 0, shown.stderr
    (line,) = shown.stdout.splitlines()
    assert re.search(r" (I|II|III|IV) (red|orange|yellow|blue) +firing +alarm +339901", line), line
    assert "Jiangbin: PM2.5 concentration" in line and "[open]" in line
    refused = tail("cv_forged", "--count", "1")
    assert refused.returncode == 2 and "401: unknown token" in refused.stderr
    public = tail(api.tokens["public.dashboard"], "--count", "1")
    assert public.returncode == 2 and "403: role open sees no alerts" in public.stderr
