"""Years-old history on the real broker: not held by a starting worker, answered on demand;
an old alert that never closed is listed as open."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from streams.core.messages import ALERTS_TOPIC, AUDIT_TOPIC, AlertStatus, Workflow
from streams.kafka.topics import ensure_topics
from tests.api.test_store import audit, closing, event
from tests.harness import PARTITIONS, ApiWorker, run

NOW = datetime.now(UTC).replace(microsecond=0)
OPEN_SINCE = NOW - timedelta(days=900)  # fired two and a half years ago, never closed
CLOSED_LONG_AGO = NOW - timedelta(days=300)
RECENT = NOW - timedelta(days=2)


def ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


async def write_history(bootstrap: str) -> None:
    """Each record stamped with the time it happened, as a worker would have written it."""
    await ensure_topics(bootstrap, PARTITIONS)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        alerts = [
            event(1, OPEN_SINCE),
            event(2, CLOSED_LONG_AGO),
            closing(2, CLOSED_LONG_AGO),
            event(1, OPEN_SINCE, sequence=2),
            # a year of unrelated closed alerts between them
            *(
                e
                for n in range(10, 60)
                for e in (
                    event(n, NOW - timedelta(days=n * 7)),
                    closing(n, NOW - timedelta(days=n * 7)),
                )
            ),
            event(3, RECENT),
            closing(3, RECENT),
        ]
        alerts.sort(key=lambda e: e.last_update)
        for e in alerts:
            await producer.send(
                ALERTS_TOPIC, e.to_json(), key=e.district.encode(), timestamp_ms=ms(e.last_update)
            )
        for at, target in ((CLOSED_LONG_AGO, "old"), (RECENT, "recent")):
            record = audit(at, target)
            await producer.send(
                AUDIT_TOPIC, record.to_json(), key=record.user.encode(), timestamp_ms=ms(at)
            )
        await producer.flush()
    finally:
        await producer.stop()


@pytest.fixture
def aged_api(broker_bootstrap: str, tmp_path: Path, fresh_topics: None) -> Iterator[ApiWorker]:
    run(write_history(broker_bootstrap))
    with ApiWorker.started(broker_bootstrap, tmp_path) as api:
        yield api


def test_old_history_is_not_held_at_start_but_read_on_demand(aged_api: ApiWorker) -> None:
    api = aged_api
    old_open, old_closed, recent = (
        event(1, OPEN_SINCE).alert_id,
        event(2, CLOSED_LONG_AGO).alert_id,
        event(3, RECENT).alert_id,
    )
    listed = api.get("/api/v1/alerts", limit="5000").json()
    # held: every open alert, whatever its age, and what closed within the week
    assert {a["alert_id"]: a["sequence"] for a in listed["alerts"]} == {old_open: 2, recent: 2}
    (still_open,) = api.get("/api/v1/alerts", open="true").json()["alerts"]
    assert (still_open["alert_id"], still_open["status"], still_open["workflow"]) == (
        old_open,
        AlertStatus.FIRING.value,
        Workflow.OPEN.value,
    )
    history_from = datetime.fromisoformat(listed["history_from"])
    assert NOW - timedelta(days=7) <= history_from <= datetime.now(UTC) - timedelta(days=7)

    # older alerts, by a since before the week, come from the topic
    since = (CLOSED_LONG_AGO - timedelta(hours=12)).isoformat()
    answer = api.get("/api/v1/alerts", since=since, open="false", limit="5000").json()
    found = {a["alert_id"] for a in answer["alerts"]}
    assert answer["history_from"] is None
    expected = {old_closed, recent} | {
        event(n, NOW - timedelta(days=n * 7)).alert_id for n in range(10, 43)
    }
    assert found == expected

    # and one by its id
    r = api.get(f"/api/v1/alerts/{old_closed}")
    assert r.status_code == 200, r.text
    assert [(e["sequence"], e["status"]) for e in r.json()["timeline"]] == [
        (1, "firing"),
        (2, "resolved"),
    ]

    # the audit trail: the week in memory, older records on demand
    def targets(**params: str) -> list[str | None]:
        records = api.get("/api/v1/audit", action="read_alert", **params).json()["records"]
        return [r["target"] for r in records if r["user"] == "cc.duty" and r["role"] == "operator"]

    assert "old" not in targets()
    assert targets(since=(CLOSED_LONG_AGO - timedelta(hours=2)).isoformat())[-2:] == [
        "recent",
        "old",
    ]

    # a range over the read budget is refused, naming it
    api.worker.stop()
    api.worker.env["CITYVITALS_API_HISTORY_READ_MAX"] = "20"
    api.worker.forget_group()
    api.worker.start()
    r = api.get("/api/v1/alerts", since=since)
    assert r.status_code == 422 and r.json()["error"] == "history_too_large"
    assert "CITYVITALS_API_HISTORY_READ_MAX" in r.json()["detail"]
