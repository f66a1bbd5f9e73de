"""History older than the API's memory is answered by reading it on demand, within a budget."""

from __future__ import annotations

from datetime import timedelta

from fastapi.testclient import TestClient

from streams.api.app import create_api
from streams.api.history import (
    RECORD_TIME_SLACK,
    HistoryReader,
    ListedHistory,
    NoHistory,
    alert_head,
    first_seen_of,
)
from streams.api.store import AlertStore
from streams.core.messages import AlertEvent
from tests.api.test_api import BOOK, CFG, Recorder, auth
from tests.api.test_store import DAY, NOW, Clock, audit, closing, event

OLD = NOW - timedelta(days=200)  # long before the week the store keeps


def api(history: HistoryReader) -> tuple[TestClient, AlertStore]:
    """An API whose store keeps a week and holds one recent closed alert and one open
    alert that fired 200 days ago; ``history`` holds the rest."""
    store = AlertStore(partitions=1, history_s=7 * DAY, clock=Clock())
    for offset, e in enumerate(
        [event(1, OLD), event(2, NOW - timedelta(days=1)), closing(2, NOW - timedelta(days=1))]
    ):
        store.add_record(0, offset, e.to_json())
    store.settle()
    for hours in (30, 2):
        store.add_audit(audit(NOW - timedelta(hours=hours), target="recent"))
    app = create_api(
        store, BOOK, CFG, Recorder(), ready=lambda: True, clock=lambda: NOW, history=history
    )
    return TestClient(app), store


def old_history() -> ListedHistory:
    """On the topics: the open alert's first event, and two alerts closed months ago."""
    events: list[AlertEvent] = [
        event(1, OLD),
        event(3, OLD + timedelta(days=10)),
        closing(3, OLD + timedelta(days=10)),
        event(4, OLD + timedelta(days=100)),
        closing(4, OLD + timedelta(days=100), sequence=3),
    ]
    records = [audit(OLD + timedelta(days=d), target=f"old-{d}") for d in (1, 50, 150)]
    return ListedHistory([(e.last_update, e) for e in events], [(r.at, r) for r in records])


def ids(answer: dict[str, list[dict[str, str]]]) -> list[str]:
    return sorted(a["alert_id"] for a in answer["alerts"])


def test_a_list_without_since_answers_from_memory_and_says_where_its_history_starts() -> None:
    history = old_history()
    client, _ = api(history)
    r = client.get("/api/v1/alerts", headers=auth("cc.duty"))
    assert r.status_code == 200
    assert ids(r.json()) == sorted(
        [event(1, OLD).alert_id, event(2, NOW - timedelta(days=1)).alert_id]
    )
    assert r.json()["history_from"] == "2026-11-17T08:00:00Z"
    assert history.reads == []
    r = client.get("/api/v1/alerts", headers=auth("cc.duty"), params={"open": "true"})
    assert r.json()["history_from"] is None, "every open alert is held"


def test_a_since_before_the_history_reads_the_older_alerts_from_the_topics() -> None:
    history = old_history()
    client, store = api(history)
    since = OLD + timedelta(days=50)
    r = client.get("/api/v1/alerts", headers=auth("cc.duty"), params={"since": since.isoformat()})
    assert r.status_code == 200, r.text
    assert r.json()["history_from"] is None
    found = {a["alert_id"]: (a["sequence"], a["status"]) for a in r.json()["alerts"]}
    # the open alert was last updated before since, and alert 3 closed before it
    assert found == {
        event(4, OLD + timedelta(days=100)).alert_id: (3, "resolved"),
        event(2, NOW - timedelta(days=1)).alert_id: (2, "resolved"),
    }
    start = store.alerts_start()
    assert start is not None
    assert history.reads == [("alerts", since - RECORD_TIME_SLACK, start + RECORD_TIME_SLACK)]


def test_an_alert_that_closed_before_the_history_is_read_by_its_id() -> None:
    history = old_history()
    client, _ = api(history)
    alert_id = event(3, OLD + timedelta(days=10)).alert_id
    r = client.get(f"/api/v1/alerts/{alert_id}", headers=auth("cc.duty"))
    assert r.status_code == 200, r.text
    doc = r.json()
    assert [e["sequence"] for e in doc["timeline"]] == [1, 2]
    assert doc["alert"]["status"] == "resolved"
    ((what, start, _),) = history.reads
    assert (what, start) == ("alerts", OLD + timedelta(days=10) - RECORD_TIME_SLACK)
    # an id that was never an alert is still 404, read or not
    missing = event(9, OLD).alert_id
    assert client.get(f"/api/v1/alerts/{missing}", headers=auth("cc.duty")).status_code == 404
    assert client.get("/api/v1/alerts/no-time-in-it", headers=auth("cc.duty")).status_code == 404


def test_a_range_larger_than_one_query_may_read_is_refused_naming_the_limit() -> None:
    history = old_history()
    history.max_records = 2
    client, _ = api(history)
    since = (OLD - timedelta(days=1)).isoformat()
    r = client.get("/api/v1/alerts", headers=auth("cc.duty"), params={"since": since})
    assert r.status_code == 422
    assert r.json() == {
        "error": "history_too_large",
        "detail": "the time range holds 5 records, more than the 2 one query may read "
        "(CITYVITALS_API_HISTORY_READ_MAX); ask for a later since",
    }


def test_the_audit_trail_since_before_the_history_adds_the_older_records() -> None:
    history = old_history()
    client, _ = api(history)
    r = client.get(
        "/api/v1/audit",
        headers=auth("cc.duty"),
        params={"since": (OLD + timedelta(days=20)).isoformat(), "action": "read_alert"},
    )
    assert r.status_code == 200, r.text
    assert [x["target"] for x in r.json()["records"]] == ["recent", "recent", "old-150", "old-50"]
    r = client.get("/api/v1/audit", headers=auth("cc.duty"), params={"action": "read_alert"})
    assert [x["target"] for x in r.json()["records"]] == ["recent", "recent"]


def test_without_a_reader_older_history_is_unavailable_not_silently_empty() -> None:
    client, _ = api(NoHistory())
    since = (OLD - timedelta(days=1)).isoformat()
    r = client.get("/api/v1/alerts", headers=auth("cc.duty"), params={"since": since})
    assert r.status_code == 503 and r.json()["error"] == "history_unavailable"


def test_an_alert_head_holds_what_decides_its_keeping() -> None:
    closed = closing(5, OLD)
    head = alert_head(closed.to_json())
    assert (head.alert_id, head.sequence, head.closed) == (closed.alert_id, 2, True)
    assert head.last_update == closed.last_update
    assert not alert_head(event(5, OLD).to_json()).closed
    assert first_seen_of(closed.alert_id) == OLD.replace(microsecond=0)
    assert first_seen_of("fp-x") is None
