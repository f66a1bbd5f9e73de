"""The API's alert store keeps open alerts and a bounded history, whatever the age of the topics."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from streams.api.store import AlertStore, Entry
from streams.core.messages import AlertEvent, AlertStatus, AuditRecord, Workflow
from tests.api.test_auth import alert

NOW = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)
DAY = 86400.0


class Clock:
    def __init__(self, now: datetime = NOW) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def event(n: int, at: datetime, sequence: int = 1, **overrides: Any) -> AlertEvent:
    """Event ``sequence`` of alert ``n``, which first fired at ``at`` and was last updated
    ``sequence - 1`` minutes later."""
    first = at.replace(microsecond=0)
    return alert(
        alert_id=f"fp{n:04d}-{int(first.timestamp())}",
        fingerprint=f"fp{n:04d}",
        sequence=sequence,
        first_seen=first,
        last_update=first + timedelta(minutes=sequence - 1),
        event_time=first,
        **overrides,
    )


def closing(n: int, at: datetime, sequence: int = 2) -> AlertEvent:
    return event(n, at, sequence, status=AlertStatus.RESOLVED, workflow=Workflow.RESOLVED)


def audit(at: datetime, target: str = "x") -> AuditRecord:
    return AuditRecord(at=at, user="cc.duty", role="operator", action="read_alert", target=target)


def store(clock: Clock, history_days: float = 7, history_max: int = 100_000) -> AlertStore:
    return AlertStore(
        partitions=1, history_s=history_days * DAY, history_max=history_max, clock=clock
    )


def test_closed_alerts_leave_once_their_last_event_is_older_than_the_history() -> None:
    clock = Clock()
    s = store(clock)
    day_ago = NOW - timedelta(days=1)
    s.add_alert(0, 0, event(1, day_ago))
    s.add_alert(0, 1, closing(1, day_ago))
    s.add_alert(0, 2, event(2, day_ago))  # stays open
    assert set(s.alerts) == {event(1, day_ago).alert_id, event(2, day_ago).alert_id}
    assert s.alerts_start() == NOW - timedelta(days=7)

    clock.now = NOW + timedelta(days=6)  # it closed 6 days 23 hours 59 minutes ago
    s.evict()
    assert len(s.alerts) == 2, "within seven days of its last event, it is still history"
    clock.now = NOW + timedelta(days=6, minutes=2)
    s.evict()
    assert set(s.alerts) == {event(2, day_ago).alert_id}
    assert [e.event.alert_id for e in s.log] == [], "the log follows the history too"
    clock.now = NOW + timedelta(days=400)
    s.evict()
    assert set(s.alerts) == {event(2, day_ago).alert_id}, "an open alert stays, whatever its age"
    assert s.latest(event(2, day_ago).alert_id) == event(2, day_ago)


def test_past_the_record_cap_the_oldest_closed_alerts_leave_first() -> None:
    clock = Clock()
    s = store(clock, history_max=100)
    for n in range(80):  # 80 closed alerts of 2 events: 160 events, over the cap of 100
        at = NOW - timedelta(hours=80 - n)
        s.add_alert(0, 2 * n, event(n, at))
        s.add_alert(0, 2 * n + 1, closing(n, at))
    s.add_alert(0, 500, event(999, NOW - timedelta(days=3)))  # open
    kept = sorted(int(a[2:6]) for a in s.alerts)
    assert kept == [*range(30, 80), 999], "50 closed alerts of 2 events each, and the open one"
    assert len(s.log) == 100
    # everything closed since the newest alert that left is still held
    assert s.alerts_start() == closing(29, NOW - timedelta(hours=51)).last_update


def test_an_event_after_an_alert_closed_keeps_it_as_long_as_its_new_last_event() -> None:
    clock = Clock()
    s = store(clock, history_days=1)
    t = NOW - timedelta(hours=20)
    s.add_alert(0, 0, event(1, t))
    s.add_alert(0, 1, closing(1, t))
    s.add_alert(0, 2, closing(1, t, sequence=600).model_copy(update={"sequence": 3}))
    clock.now = NOW + timedelta(hours=4, minutes=30)  # the first closing is over a day old
    s.evict()
    assert [e.sequence for e in s.timeline(event(1, t).alert_id)] == [1, 2, 3]


def test_start_up_keeps_open_alerts_of_any_age_and_only_recent_closed_ones() -> None:
    s = store(Clock())
    years_ago = NOW - timedelta(days=3 * 365)
    records = [
        event(1, years_ago),  # fires three years ago, never closes
        event(2, years_ago),
        closing(2, years_ago),  # closed three years ago
        event(1, years_ago, sequence=3),  # updated, still open
        event(3, NOW - timedelta(days=2)),
        closing(3, NOW - timedelta(days=2)),  # closed within the history
        event(4, NOW - timedelta(days=30)),  # fires a month ago ...
        closing(4, NOW - timedelta(hours=1), sequence=2).model_copy(
            update={"alert_id": event(4, NOW - timedelta(days=30)).alert_id}
        ),  # ... and closes an hour ago
    ]
    for offset, record in enumerate(records):
        s.add_record(0, offset, record.to_json())
    s.settle()
    old_open, recent, month = (
        event(1, years_ago).alert_id,
        event(3, NOW - timedelta(days=2)).alert_id,
        event(4, NOW - timedelta(days=30)).alert_id,
    )
    assert set(s.alerts) == {old_open, recent, month}
    assert [e.sequence for e in s.timeline(old_open)] == [1, 3]
    assert [e.sequence for e in s.timeline(month)] == [1, 2]
    assert s.positions == {0: len(records)}
    # only events within the history are in the live stream's log, in the order read
    assert [(e.offset, e.event.alert_id) for e in s.log] == [
        (4, recent),
        (5, recent),
        (7, month),
    ]


def test_once_caught_up_an_event_older_than_the_history_is_live_and_held_while_open() -> None:
    """A city whose event time runs behind the clock (a backlog; the demo runs a week
    back) still reaches the live stream: only start-up reading holds old events raw."""
    s = store(Clock())
    s.settle()
    listener = s.listen()
    old = NOW - timedelta(days=8)
    assert s.add_record(0, 0, event(1, old).to_json())
    assert s.add_record(0, 1, event(1, old, sequence=2).to_json())

    async def taken() -> list[Entry]:
        entries = []
        while (entry := await listener.next(0)) is not None:
            entries.append(entry)
        return entries

    assert [(e.offset, e.event.sequence) for e in asyncio.run(taken())] == [(0, 1), (1, 2)]
    assert [e.sequence for e in s.timeline(event(1, old).alert_id)] == [1, 2]
    assert s.positions == {0: 2}


def test_audit_records_are_kept_for_the_history_and_up_to_the_cap() -> None:
    clock = Clock()
    s = store(clock, history_days=2, history_max=100)
    for hours in range(72, 0, -1):
        s.add_audit(audit(NOW - timedelta(hours=hours)))
    assert [r.at for r in s.audit] == [NOW - timedelta(hours=h) for h in range(48, 0, -1)]
    assert s.audit_start() == NOW - timedelta(days=2)
    for minutes in range(100):
        s.add_audit(audit(NOW + timedelta(minutes=minutes)))
    assert len(s.audit) == 100 and s.audit[0].at == NOW
    assert s.audit_start() == NOW - timedelta(hours=1)


def test_a_store_without_a_history_keeps_everything() -> None:
    s = AlertStore(partitions=1)
    s.add_alert(0, 0, closing(1, NOW - timedelta(days=3000)))
    s.add_audit(audit(NOW - timedelta(days=3000)))
    assert len(s.alerts) == 1 and len(s.audit) == 1
    assert s.alerts_start() is None and s.audit_start() is None
