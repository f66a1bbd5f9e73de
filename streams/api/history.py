"""Alert and audit history older than what the API keeps in memory, read on demand.

The :class:`~streams.api.store.AlertStore` keeps every open alert, closed alerts and audit
records of the last ``CITYVITALS_API_HISTORY_DAYS`` (at most ``CITYVITALS_API_HISTORY_MAX``
each) and the latest vital signs. A query that reaches before that (``since`` earlier than
the store's history, or an alert by id that closed before it) is answered from the topics
themselves through a :class:`HistoryReader`. The API defines the seam; the worker plugs in
its Kafka implementation (:class:`streams.kafka.history.KafkaHistory`: a short-lived
consumer positioned by record time), and the tests a list.

A reader works within a budget: at most ``CITYVITALS_API_HISTORY_READ_MAX`` records and
``CITYVITALS_API_HISTORY_READ_S`` seconds per query. Over it, it raises
:class:`HistoryTooLarge` naming the limit, and the API answers 422: a narrower range
always works, a wider one never half-works.

:func:`alert_head` decodes the few fields that decide whether an alert event is kept
(identity, sequence, state, last update) without building the whole
:class:`~streams.core.messages.AlertEvent`: msgspec skips the evidence and the actions.
Measured here on the demo city's 43 alert events (1.4 KB on average): 1.0 µs for the
head against 10.3 µs for the pydantic model (3.7 µs for ``orjson.loads``), and a decoded
event held in memory costs 10 KB against its 1.4 KB of JSON. Ten simulated years of the
demo city's alert topic (310,253 events) go through
:meth:`~streams.api.store.AlertStore.add_record` in 0.8 s (2.6 µs each) and leave 201
alerts held; decoding and keeping them all, as the store used to, held 3.7 GB.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Protocol

import msgspec

from streams.core.messages import AlertEvent, AuditRecord

#: Record times are stamped when a record is produced, event times in it may be earlier
#: (a back-fill) or, within CITYVITALS_MAX_FUTURE_S, later: reads reach this far either side.
RECORD_TIME_SLACK = timedelta(hours=1)

_CLOSED_STATUS = "resolved"
_CLOSED_WORKFLOWS = frozenset({"resolved", "false_positive"})


class HistoryTooLarge(Exception):
    """A history query over its budget; the message names the limit and what to do."""


class HistoryUnavailable(Exception):
    """No history beyond memory can be read now (no reader, or Kafka did not answer)."""


class HistoryReader(Protocol):
    """Reads alert events and audit records whose record times fall in ``[start, end)``."""

    async def alert_events(
        self, start: datetime, end: datetime, alert_id: str | None = None
    ) -> list[AlertEvent]:
        """Alert events in record-time order per partition; only ``alert_id``'s if given."""
        ...

    async def audit_records(self, start: datetime, end: datetime) -> list[AuditRecord]: ...


class NoHistory:
    """The reader of an API without Kafka behind it: nothing beyond memory."""

    async def alert_events(
        self, start: datetime, end: datetime, alert_id: str | None = None
    ) -> list[AlertEvent]:
        raise HistoryUnavailable("this API keeps no history beyond memory")

    async def audit_records(self, start: datetime, end: datetime) -> list[AuditRecord]:
        raise HistoryUnavailable("this API keeps no history beyond memory")


class ListedHistory:
    """A reader over events and records in lists (tests, and offline tools)."""

    def __init__(
        self,
        events: Sequence[tuple[datetime, AlertEvent]] = (),
        audit: Sequence[tuple[datetime, AuditRecord]] = (),
        *,
        max_records: int = 1_000_000,
    ) -> None:
        self.events = list(events)
        self.audit = list(audit)
        self.max_records = max_records
        self.reads: list[tuple[str, datetime, datetime]] = []

    def _check(self, found: int) -> None:
        if found > self.max_records:
            raise HistoryTooLarge(too_large(found, self.max_records))

    async def alert_events(
        self, start: datetime, end: datetime, alert_id: str | None = None
    ) -> list[AlertEvent]:
        self.reads.append(("alerts", start, end))
        found = [e for at, e in self.events if start <= at < end]
        self._check(len(found))
        return [e for e in found if alert_id is None or e.alert_id == alert_id]

    async def audit_records(self, start: datetime, end: datetime) -> list[AuditRecord]:
        self.reads.append(("audit", start, end))
        found = [r for at, r in self.audit if start <= at < end]
        self._check(len(found))
        return found


def too_large(records: int, limit: int) -> str:
    return (
        f"the time range holds {records} records, more than the {limit} one query may read "
        "(CITYVITALS_API_HISTORY_READ_MAX); ask for a later since"
    )


def too_slow(seconds: float) -> str:
    return (
        f"reading the time range took longer than {seconds:g} s "
        "(CITYVITALS_API_HISTORY_READ_S); ask for a later since"
    )


class AlertHead(msgspec.Struct):
    """What decides whether an alert event is kept (see the module docstring)."""

    alert_id: str
    sequence: int
    status: str
    last_update: datetime
    workflow: str = "open"

    @property
    def closed(self) -> bool:
        return self.status == _CLOSED_STATUS or self.workflow in _CLOSED_WORKFLOWS


_HEAD = msgspec.json.Decoder(AlertHead)


def alert_head(value: bytes) -> AlertHead:
    """The head of an alert event's JSON; ValueError for one that does not have it."""
    try:
        head = _HEAD.decode(value)
    except msgspec.DecodeError as exc:
        raise ValueError(str(exc)) from None
    if head.last_update.tzinfo is None:
        raise ValueError("last_update has no time zone")
    return head


def first_seen_of(alert_id: str) -> datetime | None:
    """When the alert first fired, from its id (``<fingerprint>-<epoch seconds>``)."""
    _, _, stamp = alert_id.rpartition("-")
    if not stamp.isdigit() or len(stamp) > 11:
        return None
    return datetime.fromtimestamp(int(stamp), UTC)


def latest_by_alert(
    events: Sequence[AlertEvent], skip: Callable[[str], bool]
) -> dict[str, AlertEvent]:
    """The latest event of each alert among ``events`` whose id ``skip`` does not refuse."""
    latest: dict[str, AlertEvent] = {}
    for event in events:
        if skip(event.alert_id):
            continue
        known = latest.get(event.alert_id)
        if known is None or known.sequence < event.sequence:
            latest[event.alert_id] = event
    return latest
