"""Operator notes cannot stop the city: the longest notes on a red alarm, past its note limit.

The issue this guards against: 49 notes of 4,000 characters on one open grade-I
alarm grew the notification state's table value past Kafka's message size, the
changelog write failed and the worker crashed, and crashed again on every
restart. Here a worker with loopback receivers raises a red street alarm and is
sent 100 notes of the maximum length more than one alert takes, through the API.
It must store the first ``MAX_NOTES_PER_ALERT`` in order and refuse the rest
(409 from the API, or a dead letter where the API had not yet seen the earlier
notes applied), survive a kill and a restart, keep notifying, and keep every
table value far below its bound.
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import httpx
import pytest

from streams.alerting.lifecycle import MAX_ACTIONS, MAX_NOTES_PER_ALERT, STATE_MAX_BYTES
from tests.harness import ApiWorker, wait_for
from tests.notify.test_notify_broker import (
    Receivers,
    alarm_ids,
    notify_worker,
    produce_street_fire,
    receivers,  # noqa: F401 - the fixture
    red_street_alarms,
)

pytestmark = pytest.mark.broker
NOTES = MAX_NOTES_PER_ALERT + 100  # sent; the alert keeps the first MAX_NOTES_PER_ALERT
FILLER = "现场备注"  # 4 characters, 12 bytes of UTF-8; no other text in the city uses it
TABLES = ("district-windows", "district-detection", "notify-groups")


def longest_note(n: int) -> str:
    """Note ``n``: 4,000 characters (the API's maximum), 11,992 bytes of UTF-8."""
    text = f"{n:04d}" + FILLER * 999
    assert len(text) == 4000
    return text


def latest(api: ApiWorker, alert_id: str) -> dict[str, Any]:
    alerts = api.get("/api/v1/alerts", grade="I").json()["alerts"]
    return next(a for a in alerts if a["alert_id"] == alert_id)


def table_max(api: ApiWorker, table: str) -> float:
    return api.worker.metric("cityvitals_pipeline_table_value_max_bytes", {"table": table})


def assert_running(api: ApiWorker) -> None:
    assert api.worker.proc is not None and api.worker.proc.poll() is None, api.worker.log_tail()
    assert httpx.get(f"{api.url}/readyz", timeout=5).status_code == 200


def test_the_longest_notes_past_the_limit_on_a_red_alarm_keep_the_worker_and_notifier_going(
    broker_bootstrap: str,
    tmp_path: Path,
    receivers: Receivers,  # noqa: F811 - the fixture imported above
    fresh_topics: None,
) -> None:
    api = notify_worker(broker_bootstrap, tmp_path, receivers, deadline="20s")
    try:
        produce_street_fire(api)
        wait_for(lambda: red_street_alarms(receivers.at("ops")), 120, "the red alarm notified")
        (alert_id,) = red_street_alarms(receivers.at("ops"))

        accepted = []
        with httpx.Client(base_url=api.url, headers=api.headers("cc.duty"), timeout=30) as client:
            for n in range(NOTES):
                r = client.post(
                    f"/api/v1/alerts/{alert_id}/actions",
                    json={"action": "note", "note": longest_note(n)},
                )
                # the API refuses only once it has seen the alert full
                assert r.status_code in (202, 409), r.text
                assert r.status_code == 202 or n >= MAX_NOTES_PER_ALERT, (n, r.text)
                if r.status_code == 202:
                    accepted.append(n)
        late = len(accepted) - MAX_NOTES_PER_ALERT  # accepted, then refused by the lifecycle
        assert accepted[:MAX_NOTES_PER_ALERT] == list(range(MAX_NOTES_PER_ALERT))
        # applied in order: the limit's last note is on the alert, and every note the API
        # let through past the limit is dead-lettered as too large
        wait_for(
            lambda: (
                any(
                    a.get("note", "").startswith(f"{MAX_NOTES_PER_ALERT - 1:04d}")
                    for a in api.get(f"/api/v1/alerts/{alert_id}").json()["alert"]["actions"]
                )
                and api.worker.metric(
                    "cityvitals_ingest_deadletters_total", {"reason": "too_large"}
                )
                == late
            ),
            300,
            f"the last note applied and {late} late notes dead-lettered",
            interval=2.0,
        )
        # now that the API has seen the alert full, it refuses the next note outright
        r = api.post(
            f"/api/v1/alerts/{alert_id}/actions", {"action": "note", "note": longest_note(NOTES)}
        )
        assert r.status_code == 409 and r.json()["error"] == "too_many_notes", r.text
        assert_running(api)
        assert len(latest(api, alert_id)["actions"]) == MAX_ACTIONS  # the history is bounded
        # every table's largest value since the start stays far below the bound, written
        # as it was, never shrunk
        sizes = {t: table_max(api, t) for t in TABLES}
        print(f"largest table values with {MAX_NOTES_PER_ALERT} notes (bytes): {sizes}")
        for table, size in sizes.items():
            assert 0 < size < STATE_MAX_BYTES / 2, (table, size)
            assert (
                api.worker.metric("cityvitals_pipeline_state_degraded_total", {"table": table}) == 0
            )

        # the worker survives a crash and a restart: every table value restores
        api.worker.stop(signal.SIGKILL)
        api.worker.forget_group()
        api.worker.start()
        assert_running(api)

        # every note within the limit is stored, each once, in order; none past it
        detail = api.get(f"/api/v1/alerts/{alert_id}").json()
        notes = [a["note"] for a in detail["actions"] if a["action"] == "note"]
        assert notes == [longest_note(n) for n in range(MAX_NOTES_PER_ALERT)]

        # the notifier goes on: the alert, as it is after the last note, reaches ops,
        # and its escalation climbs to the city
        final = latest(api, alert_id)["sequence"]
        wait_for(
            lambda: any(
                a["alert_id"] == alert_id and a["sequence"] >= final
                for h in receivers.at("ops")
                for a in h.body["alerts"]
            ),
            90,
            "the noted alert notified",
        )
        wait_for(
            lambda: alert_id in alarm_ids(receivers.at("city-command")),
            120,
            "the escalation to the city",
        )
        # the worker counts a delivery once the receiver's answer is in: a moment after
        # the receiver has seen it
        wait_for(
            lambda: (
                api.worker.metric("cityvitals_notify_deliveries_total", {"outcome": "delivered"})
                > 0
            ),
            60,
            "the delivery counted",
        )
        # receivers are shown the alert, never the operators' notes
        for hit in receivers.hits:
            for a in hit.body["alerts"]:
                assert a.get("actions", []) == []
        assert all(FILLER not in str(h.body) for h in receivers.hits)
        assert_running(api)
        # the notifier's state was written since the restart; nothing written is large
        assert 0 < table_max(api, "notify-groups") < STATE_MAX_BYTES / 2
        assert all(table_max(api, t) < STATE_MAX_BYTES / 2 for t in TABLES)
    finally:
        api.worker.stop(signal.SIGKILL)
