"""What the command-centre API serves: open alerts and recent history, the latest vital
signs, the recent audit trail.

Every worker keeps its own copy, read from ``city.emergency-command``, ``city.vitals``,
``city.appeal-tallies`` and ``city.audit`` (all partitions, no consumer group), so any worker answers for the
whole city whichever partitions it processes.

- **Bounded by the present, not the age of the system.** It holds every open alert
  (whatever its age), closed alerts whose last event is within the history
  (``history_s``, ``CITYVITALS_API_HISTORY_DAYS``) and the audit records of that time,
  each at most ``history_max`` records (``CITYVITALS_API_HISTORY_MAX``), and one vitals
  document per district. Older history is read on demand (:mod:`streams.api.history`).
  Eviction walks queues in the order read: each closing event, audit record and log
  entry is queued once and dropped once, amortised O(1) per record, with no scan of
  what is held. Kept alerts are indexed by id; a list scans the held alerts (a few
  thousand at most at the demo city's rates), which costs less than keeping sorted
  indexes up to date on every event.
- **Start-up.** An alert that fired years ago may still be open, so the alert topic is
  read from its beginning; :meth:`AlertStore.add_record` decodes each record's head
  only (:func:`~streams.api.history.alert_head`) and holds events older than the
  history raw until their alert closes; :meth:`AlertStore.settle` decodes the ones
  still open once reading has caught up.
- **Alerts.** The events of each alert, by sequence. Reprocessing after a crash
  repeats an event with the same ``(alert_id, sequence)``: the repeat replaces
  the first copy and is not an event of its own.
- **Actions and notes.** An event carries the alert's compact action history
  (no notes) and the note of the one action that caused it
  (:func:`streams.alerting.lifecycle.action_history`). :meth:`AlertStore.actions` merges
  every action of an alert's timeline with its note; :meth:`AlertStore.with_notes`
  puts the notes back on an event's history.
- **Cursors.** A live-stream client resumes from a cursor: the next offset of
  every partition of ``city.emergency-command`` that it has been given. Kafka
  offsets do not depend on which worker answers or on the order in which a
  worker read the partitions, so a cursor stays valid across reconnects,
  restarts and workers. ``v1.<o0>.<o1>...`` names the offsets in partition order.
- **Live listeners.** Each live-stream client has a :class:`Listener`: the events read
  since it last took one, at most ``stream_queue`` of them. A client that falls further
  behind is cut off: its waiting events are dropped (the log keeps them), so one stalled
  client costs the worker no more than that bound, and it resumes from its cursor.
- **Vital signs.** The latest ``city.vitals`` document of each district.
- **Appeal tallies.** ``city.appeal-tallies`` summed by hour, district, street and
  category for departments' feedback (:class:`~streams.api.feedback.AppealLedger`).
- **Audit.** The audit records of the history (:class:`~streams.core.messages.AuditRecord`), newest last.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import chain
from typing import Any

import orjson

from streams.api.feedback import AppealLedger
from streams.api.history import alert_head
from streams.core import metrics
from streams.core.messages import (
    ActionRecord,
    AlertEvent,
    AlertStatus,
    AppealTallies,
    AuditRecord,
    Grade,
    Workflow,
)

CURSOR_PREFIX = "v1"
CLOSED_WORKFLOWS = (Workflow.RESOLVED, Workflow.FALSE_POSITIVE)


class CursorError(ValueError):
    """A live-stream cursor that this store cannot read."""


def format_cursor(positions: dict[int, int], partitions: int) -> str:
    return ".".join([CURSOR_PREFIX, *(str(positions.get(p, 0)) for p in range(partitions))])


def parse_cursor(text: str, partitions: int) -> dict[int, int]:
    """The next offset per partition named by a cursor (see the module docstring)."""
    parts = text.strip().split(".")
    shown = repr(text if len(text) <= 64 else text[:64] + "…")  # it comes from the client
    if parts[0] != CURSOR_PREFIX or len(parts) != partitions + 1:
        raise CursorError(
            f"cursor {shown} is not {CURSOR_PREFIX}.<offset> for each of {partitions} partitions"
        )
    try:
        offsets = [int(p) for p in parts[1:]]
    except ValueError:
        raise CursorError(f"cursor {shown} holds a part that is not an offset") from None
    if any(o < 0 for o in offsets):
        raise CursorError(f"cursor {shown} holds a negative offset")
    return dict(enumerate(offsets))


@dataclass(frozen=True)
class Entry:
    """One alert event as read from the topic."""

    partition: int
    offset: int
    event: AlertEvent


@dataclass(frozen=True)
class AlertFilter:
    """The list and live-stream filters of the API; None matches anything."""

    district: str | None = None
    street: str | None = None
    domain: str | None = None
    grades: frozenset[Grade] | None = None
    kind: str | None = None
    status: str | None = None
    workflow: str | None = None
    department: str | None = None
    open: bool | None = None
    since: datetime | None = None
    until: datetime | None = None

    def matches(self, alert: AlertEvent) -> bool:
        if self.street is not None and not (
            self.street == alert.street or self.street in alert.evidence.streets
        ):
            return False
        checks = (
            (self.district, alert.district),
            (self.domain, alert.domain),
            (self.kind, alert.kind.value),
            (self.status, alert.status.value),
            (self.workflow, alert.workflow.value),
        )
        if any(want is not None and want != have for want, have in checks):
            return False
        if self.department is not None and self.department not in (
            alert.department,
            *alert.co_departments,
        ):
            return False
        if self.grades is not None and alert.grade not in self.grades:
            return False
        if self.open is not None and is_open(alert) != self.open:
            return False
        if self.since is not None and alert.last_update < self.since:
            return False
        return self.until is None or alert.first_seen <= self.until


def is_open(alert: AlertEvent) -> bool:
    return alert.status is not AlertStatus.RESOLVED and alert.workflow not in CLOSED_WORKFLOWS


class Listener:
    """One live-stream client's events read but not yet taken, at most ``bound``.

    The event past the bound marks the client as fallen behind: what waited is
    dropped at once (the store's log keeps it) and the client, told so, resumes
    from its cursor on a new connection.
    """

    def __init__(self, bound: int) -> None:
        self.bound = bound
        self.overflowed = False
        self._entries: deque[Entry] = deque()
        self._arrived = asyncio.Event()

    def __len__(self) -> int:
        return len(self._entries)

    def offer(self, entry: Entry) -> bool:
        """Queue ``entry``; False once the client has fallen behind."""
        if self.overflowed:
            return False
        if len(self._entries) >= self.bound:
            self.overflowed = True
            self._entries.clear()
            self._arrived.set()
            return False
        self._entries.append(entry)
        self._arrived.set()
        return True

    async def next(self, timeout: float) -> Entry | None:
        """The next entry; None after ``timeout`` seconds without one, or once overflowed."""
        if not self._entries and not self.overflowed:
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), timeout)
        if self.overflowed or not self._entries:
            return None
        return self._entries.popleft()


@dataclass
class AlertStore:
    """In-memory view of the alert, vitals and audit topics (see the module docstring)."""

    partitions: int
    history_s: float = float("inf")  # CITYVITALS_API_HISTORY_DAYS, in seconds
    history_max: int = 100_000  # CITYVITALS_API_HISTORY_MAX
    stream_queue: int = 10_000  # events waiting for one live-stream client, at most
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    alerts: dict[str, dict[int, AlertEvent]] = field(default_factory=dict)
    log: deque[Entry] = field(default_factory=deque)
    positions: dict[int, int] = field(default_factory=dict)  # next offset read, per partition
    vitals: dict[str, dict[str, Any]] = field(default_factory=dict)
    audit: deque[AuditRecord] = field(default_factory=deque)
    appeals: AppealLedger = field(default_factory=AppealLedger)  # city.appeal-tallies
    # (last update, alert id) of each closing event, in the order read: eviction's queue
    _closed: deque[tuple[float, str]] = field(default_factory=deque)
    _closed_events: int = 0  # events held by closed alerts
    _evicted_alerts: float = float("-inf")  # last update of the newest closed alert evicted
    _evicted_audit: float = float("-inf")  # time of the newest audit record evicted
    # events of alerts older than the history, read raw at start-up until they close
    _held: dict[str, list[tuple[int, int, bytes]]] = field(default_factory=dict)
    _settled: bool = False  # reading has caught up once: every event read is live
    _listeners: set[Listener] = field(default_factory=set)

    # --- reading the topics ---------------------------------------------------------
    def add_record(self, partition: int, offset: int, value: bytes) -> bool:
        """Take one record of the alert topic as read; ValueError for one that is no event.

        An event older than the history, of an alert not held, is kept raw (not decoded)
        until its alert closes, then dropped with its alert's other events; what is
        still open when reading catches up is decoded by :meth:`settle`. So reading
        years of the topic holds only the open alerts, and decodes in full only what
        is kept (:func:`~streams.api.history.alert_head`). After that every event is
        taken and offered to the live listeners, however old its event time: a city
        whose event time runs behind the clock (a backlog, the demo a week back) is
        still shown live.
        """
        head = alert_head(value)
        if (
            not self._settled
            and head.alert_id not in self.alerts
            and head.last_update.timestamp() < self._start()
        ):
            self.positions[partition] = max(self.positions.get(partition, 0), offset + 1)
            if head.closed:
                self._held.pop(head.alert_id, None)
            else:
                self._held.setdefault(head.alert_id, []).append((partition, offset, value))
            return False
        self._release(head.alert_id)
        return self.add_alert(partition, offset, AlertEvent.model_validate_json(value))

    def _release(self, alert_id: str) -> None:
        for partition, offset, raw in self._held.pop(alert_id, ()):
            self._keep(partition, offset, AlertEvent.model_validate_json(raw))

    def settle(self) -> None:
        """Decode the open alerts older than the history, once reading has caught up."""
        for alert_id in list(self._held):
            self._release(alert_id)
        self._settled = True

    def add_alert(self, partition: int, offset: int, event: AlertEvent) -> bool:
        """Take one alert event; False when it repeats a known event."""
        self.positions[partition] = max(self.positions.get(partition, 0), offset + 1)
        if not self._keep(partition, offset, event):
            return False
        entry = Entry(partition, offset, event)
        self.log.append(entry)
        behind = [listener for listener in self._listeners if not listener.offer(entry)]
        for listener in behind:
            self._listeners.discard(listener)
            metrics.stream_overflows.inc()
        self.evict()
        return True

    def _keep(self, partition: int, offset: int, event: AlertEvent) -> bool:
        """Hold ``event`` with its alert's others and queue a closed alert for eviction."""
        events = self.alerts.setdefault(event.alert_id, {})
        was_closed = bool(events) and not is_open(events[max(events)])
        repeat = event.sequence in events
        events[event.sequence] = event
        now_closed = not is_open(events[max(events)])
        if was_closed:
            self._closed_events -= len(events) - (0 if repeat else 1)
        if now_closed:
            self._closed_events += len(events)
            self._closed.append((events[max(events)].last_update.timestamp(), event.alert_id))
        return not repeat

    def add_vitals(self, document: bytes) -> None:
        doc = orjson.loads(document)
        district = doc.get("district")
        if isinstance(district, str):
            known = self.vitals.get(district)
            if known is None or known.get("window_end", "") <= doc.get("window_end", ""):
                self.vitals[district] = doc

    def add_appeal_tallies(self, document: bytes) -> bool:
        """Take one ``city.appeal-tallies`` record; False when it repeats one taken."""
        return self.appeals.add(AppealTallies.model_validate_json(document))

    def add_audit(self, record: AuditRecord) -> None:
        self.audit.append(record)
        self.evict()

    # --- what is held ---------------------------------------------------------------------
    def _start(self) -> float:
        return self.clock().timestamp() - self.history_s

    def alerts_start(self) -> datetime | None:
        """Every alert closed since this time is held (and every open one, whatever its
        age); None when nothing has been left out."""
        return _moment(max(self._start(), self._evicted_alerts))

    def audit_start(self) -> datetime | None:
        """Every audit record since this time is held; None when nothing has been left out."""
        return _moment(max(self._start(), self._evicted_audit))

    def evict(self) -> None:
        """Drop closed alerts, log entries and audit records older than the history or
        past its size, oldest read first: each is queued once and dropped once."""
        start = self._start()
        closed, alerts = self._closed, self.alerts
        while closed and (closed[0][0] < start or self._closed_events > self.history_max):
            at, alert_id = closed.popleft()
            events = alerts.get(alert_id)
            if events is None:
                continue
            latest = events[max(events)]
            if is_open(latest) or latest.last_update.timestamp() != at:
                continue  # a later event of the alert is queued behind this one
            del alerts[alert_id]
            self._closed_events -= len(events)
            self._evicted_alerts = max(self._evicted_alerts, at)
        log = self.log
        while log and (len(log) > self.history_max or log[0].event.last_update.timestamp() < start):
            log.popleft()
        audit = self.audit
        while audit and (len(audit) > self.history_max or audit[0].at.timestamp() < start):
            self._evicted_audit = max(self._evicted_audit, audit.popleft().at.timestamp())

    # --- queries ------------------------------------------------------------------------
    def latest(self, alert_id: str) -> AlertEvent | None:
        events = self.alerts.get(alert_id)
        return None if not events else events[max(events)]

    def timeline(self, alert_id: str) -> list[AlertEvent]:
        events = self.alerts.get(alert_id, {})
        return [events[s] for s in sorted(events)]

    def actions(self, alert_id: str) -> list[ActionRecord]:
        """Every action on the alert, in the order it was applied, each with its note."""
        return actions_of(self.timeline(alert_id))

    def with_notes(self, event: AlertEvent) -> AlertEvent:
        """The event with each record of its action history holding its note again."""
        return with_notes(event, self.timeline(event.alert_id))

    def query(
        self,
        where: AlertFilter,
        visible: Callable[[AlertEvent], bool],
        limit: int = 200,
        older: Iterable[AlertEvent] = (),
    ) -> list[AlertEvent]:
        """The latest event of each matching alert, with ``older`` ones (read on demand):
        most serious grade first, then newest."""
        found = [
            latest
            for latest in chain((events[max(events)] for events in self.alerts.values()), older)
            if where.matches(latest) and visible(latest)
        ]
        found.sort(key=lambda a: (a.grade.value, -a.last_update.timestamp(), a.alert_id))
        return found[:limit]

    def cursor(self) -> str:
        """The cursor of everything read so far."""
        return format_cursor(self.positions, self.partitions)

    def entries_from(self, start: dict[int, int]) -> Iterator[Entry]:
        """Logged events at or after the given next offsets, in the order they were read."""
        for entry in list(self.log):
            if entry.offset >= start.get(entry.partition, 0):
                yield entry

    # --- live listeners ---------------------------------------------------------------
    def listen(self) -> Listener:
        listener = Listener(self.stream_queue)
        self._listeners.add(listener)
        return listener

    def unlisten(self, listener: Listener) -> None:
        self._listeners.discard(listener)

    def waiting(self) -> list[int]:
        """Events waiting for each live-stream client still listening."""
        return [len(listener) for listener in self._listeners]

    # --- department performance ----------------------------------------------------------
    def performance(self, alerts: Iterable[AlertEvent] | None = None) -> list[dict[str, Any]]:
        if alerts is None:
            alerts = [a for a in map(self.latest, list(self.alerts)) if a is not None]
        return performance(alerts, self.timeline)


def _moment(timestamp: float) -> datetime | None:
    return None if timestamp == float("-inf") else datetime.fromtimestamp(timestamp, UTC)


def actions_of(timeline: Iterable[AlertEvent]) -> list[ActionRecord]:
    """Every action of a timeline, in the order it was applied, each with its note.

    An action first appears on the event it caused, which alone carries its
    note; later events repeat it without the note, and the oldest fall out of
    their bounded history. So the timeline, not the latest event, has them all.
    """
    found: dict[str, ActionRecord] = {}
    for event in timeline:
        for record in event.actions:
            known = found.get(record.action_id)
            if known is None or (known.note is None and record.note is not None):
                found[record.action_id] = record  # keeps its first place in the order
    return list(found.values())


def with_notes(event: AlertEvent, timeline: Iterable[AlertEvent]) -> AlertEvent:
    """The event with each record of its action history holding its note again."""
    if all(r.note is not None for r in event.actions):
        return event
    notes = {r.action_id: r.note for r in actions_of(timeline) if r.note is not None}
    if not any(r.note is None and r.action_id in notes for r in event.actions):
        return event
    return event.model_copy(
        update={
            "actions": [
                r
                if r.note is not None or r.action_id not in notes
                else r.model_copy(update={"note": notes[r.action_id]})
                for r in event.actions
            ]
        }
    )


def performance(
    alerts: Iterable[AlertEvent], timeline_of: Callable[[str], list[AlertEvent]]
) -> list[dict[str, Any]]:
    """Per department and grade: counts, median times to acknowledge and resolve, rates.

    An alert counts for its owning department at its highest grade. Time to
    acknowledge: from its first event to the first acknowledge or dispatch;
    time to resolve: to its resolution (by an operator or by the condition
    clearing). Closure rate: closed alerts over all; false-positive rate:
    alerts marked false positive over closed ones.
    """
    rows: dict[tuple[str, int], dict[str, Any]] = {}
    for alert in alerts:
        timeline = timeline_of(alert.alert_id)
        grade = min((e.grade for e in timeline), default=alert.grade)
        row = rows.setdefault(
            (alert.department, grade.value),
            {
                "alerts": 0,
                "acknowledged": 0,
                "closed": 0,
                "false_positives": 0,
                "ack": [],
                "res": [],
            },
        )
        row["alerts"] += 1
        start = alert.first_seen
        ack = next((a.at for a in alert.actions if a.action in ("acknowledge", "dispatch")), None)
        if ack is not None:
            row["acknowledged"] += 1
            row["ack"].append(max(0.0, (ack - start).total_seconds()))
        if not is_open(alert):
            row["closed"] += 1
            if alert.workflow is Workflow.FALSE_POSITIVE:
                row["false_positives"] += 1
            row["res"].append(max(0.0, (alert.last_update - start).total_seconds()))
    out = []
    for (department, level), row in sorted(rows.items()):
        out.append(
            {
                "department": department,
                "grade": Grade(level).roman,
                "alerts": row["alerts"],
                "acknowledged": row["acknowledged"],
                "resolved": row["closed"],
                "false_positives": row["false_positives"],
                "median_ack_s": statistics.median(row["ack"]) if row["ack"] else None,
                "median_resolve_s": statistics.median(row["res"]) if row["res"] else None,
                "closure_rate": row["closed"] / row["alerts"],
                "false_positive_rate": row["false_positives"] / row["closed"]
                if row["closed"]
                else None,
            }
        )
    return out
