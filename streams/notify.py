"""Responder notifications: plan them from alert events, deliver them from a durable outbox.

Two stages, each reading only the partitions of the districts this worker owns
(the same partition numbers as its district table), so each alert is notified
by exactly one worker and moves with its district on a rebalance:

1. **Planning** (:class:`Planner`, state in the ``notify-groups`` table, one
   :class:`DistrictNotify` per district). Every event on
   ``city.emergency-command`` is routed through ``config/routes.yaml``
   (:mod:`streams.routing`) into notification groups, as Alertmanager does: a new
   group waits ``group_wait``; later changes go out at most every
   ``group_interval``; an unchanged group with firing alerts is sent again every
   ``repeat_interval``; resolved alerts go out once if the route asks for them.
   Silenced and inhibited alerts are not notified. An alert nobody acknowledges
   within its grade's deadline escalates one level up (street → district → city
   command): its escalation receiver is notified and an ``escalate`` action on
   ``city.alert-actions`` records it on the alert's timeline.
   Planned notifications are written to ``city.notify-outbox`` *before* the
   group state that says they were sent, and the input offsets are committed
   only after both, so a crash repeats a notification (with the same id, a
   digest of receiver, group and exact alert events) rather than losing it.
2. **Delivery** (:class:`OutboxSender`). Each receiver has its own queue and
   senders, so a slow or dead receiver delays only itself; ingest and detection
   never wait for any of this. An outbox record is committed once its outcome
   is on ``city.notifications``; after a crash, unfinished ones are sent again
   with the same idempotency key.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import pickle
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
from aiokafka import TopicPartition

from streams import metrics
from streams.config import CityConfig
from streams.delivery import DEFAULT_POLICY, DeliveryPolicy, Dialect, deliver
from streams.payloads import render_all
from streams.routing import (
    PayloadFormat,
    Receiver,
    RoutingTree,
    group_key,
    labels_of,
    next_level,
    start_level,
)
from streams.schemas import (
    ACTIONS_TOPIC,
    ALERTS_TOPIC,
    NOTIFICATIONS_TOPIC,
    OUTBOX_TOPIC,
    AlertAction,
    AlertActionType,
    AlertEvent,
    AlertStatus,
    Notification,
    NotificationOutcome,
    Workflow,
)
from streams.source import InputFeed, Outputs, Record

log = logging.getLogger(__name__)
SENDERS_PER_RECEIVER = 4
DIALECTS: dict[PayloadFormat, Dialect] = {
    PayloadFormat.DINGTALK: "dingtalk",
    PayloadFormat.WECOM: "wecom",
}
MAX_ESCALATING = 500  # alerts per district climbing the hierarchy one by one


def _slim(alert: AlertEvent) -> AlertEvent:
    """The alert without its evidence series, to keep escalation state small."""
    if not alert.evidence.values and not alert.evidence.members:
        return alert
    evidence = alert.evidence.model_copy(update={"values": [], "members": []})
    return alert.model_copy(update={"evidence": evidence})


# alerts listed in one notification, the rest counted (as Alertmanager's max_alerts):
# a group's state and an outbox record stay well below Kafka's message size
MAX_NOTIFIED = 100


@dataclass
class Group:
    """One notification group: the alerts one route sends together to one receiver."""

    key: str
    route: str
    receiver: str
    labels: dict[str, str]
    created: float  # wall time the group began
    alerts: dict[str, AlertEvent] = field(default_factory=dict)  # alert id -> latest event
    # beyond MAX_NOTIFIED listed alerts, only what counts them: id -> (grade, sequence, closed)
    others: dict[str, tuple[int, int, bool]] = field(default_factory=dict)
    changed_since: float | None = None  # first change not yet notified
    last_sent: float | None = None

    def take(self, alert: AlertEvent) -> None:
        if alert.alert_id in self.alerts or len(self.alerts) < MAX_NOTIFIED:
            self.alerts[alert.alert_id] = alert
        else:
            self.others[alert.alert_id] = (alert.grade.value, alert.sequence, _closed(alert))

    def drop(self, alert_id: str) -> bool:
        """Forget an alert; True when the group had it."""
        had = self.alerts.pop(alert_id, None) is not None
        return self.others.pop(alert_id, None) is not None or had

    def has(self, alert_id: str) -> bool:
        return alert_id in self.alerts or alert_id in self.others

    def empty(self) -> bool:
        return not self.alerts and not self.others


@dataclass
class Pending:
    """An open, unacknowledged alert's climb up the hierarchy."""

    alert: AlertEvent
    level: str
    due: float  # wall time of the next escalation


@dataclass
class DistrictNotify:
    """A district's notification state (the ``notify-groups`` table value)."""

    district: str
    groups: dict[str, Group] = field(default_factory=dict)
    escalations: dict[str, Pending] = field(default_factory=dict)
    seen: dict[str, int] = field(default_factory=dict)  # alert id -> last sequence planned

    def dumps(self) -> bytes:
        return pickle.dumps(self, protocol=pickle.HIGHEST_PROTOCOL)

    @staticmethod
    def loads(data: bytes) -> DistrictNotify:
        value = pickle.loads(data)  # our own changelog topic, written by this code
        if not isinstance(value, DistrictNotify):
            raise TypeError(f"not a DistrictNotify: {type(value).__name__}")
        return value


def notification_id(
    receiver: str,
    key: str,
    status: str,
    alerts: Sequence[AlertEvent],
    counted: Sequence[str] = (),
) -> str:
    """The idempotency key: the same receiver, group and alert events give the same id.

    ``counted``: ``"<alert id>#<sequence>"`` of the group's alerts not listed."""
    events = ",".join(sorted([f"{a.alert_id}#{a.sequence}" for a in alerts] + list(counted)))
    text = "\x1f".join((receiver, key, status, events))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _closed(alert: AlertEvent) -> bool:
    return alert.status is AlertStatus.RESOLVED or alert.workflow in (
        Workflow.RESOLVED,
        Workflow.FALSE_POSITIVE,
    )


def _muted(alert: AlertEvent) -> bool:
    return alert.silenced_by is not None or alert.inhibited_by is not None


class Planner:
    """Groups, timers and escalation (pure: the caller gives the wall clock)."""

    def __init__(self, tree: RoutingTree) -> None:
        self.tree = tree
        self._by_path = {r.result().path: r.result() for r in tree.routes()}

    def on_alert(self, state: DistrictNotify, alert: AlertEvent, now: float) -> None:
        """Take one alert event into its groups and its escalation."""
        if alert.sequence <= state.seen.get(alert.alert_id, 0):
            return  # the same event read again after a restart
        state.seen[alert.alert_id] = alert.sequence
        labels = labels_of(alert)
        for result in self.tree.match(labels):
            key = group_key(result, labels)
            group = state.groups.get(key)
            if _muted(alert) or (_closed(alert) and not result.send_resolved):
                if group is not None and group.drop(alert.alert_id) and group.empty():
                    del state.groups[key]
                continue
            if _closed(alert) and (group is None or not group.has(alert.alert_id)):
                continue  # never notified firing: nothing to resolve
            if group is None:
                group = state.groups[key] = Group(
                    key, result.path, result.receiver.name, result.group_labels(labels), now
                )
            group.take(alert)
            if group.changed_since is None:
                group.changed_since = now
        acknowledged = alert.workflow is not Workflow.OPEN
        if _closed(alert):
            state.seen.pop(alert.alert_id, None)  # its events are over
        if _closed(alert) or acknowledged or _muted(alert):
            state.escalations.pop(alert.alert_id, None)
        elif alert.alert_id in state.escalations:
            state.escalations[alert.alert_id].alert = _slim(alert)
        else:
            deadline = self.tree.deadline_for(alert.grade.roman, alert.department)
            state.escalations[alert.alert_id] = Pending(
                _slim(alert), start_level(labels).value, now + deadline
            )
            if len(state.escalations) > MAX_ESCALATING:
                # an alert storm: the least serious, newest alerts stop climbing on
                # their own (they stay in their groups' notifications)
                least = max(
                    state.escalations.values(),
                    key=lambda p: (p.alert.grade.value, p.alert.first_seen),
                )
                del state.escalations[least.alert.alert_id]
                metrics.notify_escalations_dropped.inc()

    def due(
        self, state: DistrictNotify, now: float
    ) -> tuple[list[Notification], list[AlertAction]]:
        """Notifications whose timers have run out, and escalation actions; updates ``state``."""
        out: list[Notification] = []
        actions: list[AlertAction] = []
        at = datetime.fromtimestamp(now, UTC)
        for key, group in list(state.groups.items()):
            result = self._by_path.get(group.route)
            if result is None:  # the route is gone from the config
                del state.groups[key]
                continue
            if result.muted(at):
                continue
            firing = any(not _closed(a) for a in group.alerts.values()) or any(
                not closed for _, _, closed in group.others.values()
            )
            if group.last_sent is None:
                reason = "group_wait" if now - group.created >= result.group_wait_s else None
            elif group.changed_since is not None:
                reason = (
                    "group_interval" if now - group.last_sent >= result.group_interval_s else None
                )
            elif firing:
                reason = "repeat" if now - group.last_sent >= result.repeat_interval_s else None
            else:
                reason = None
            if reason is None:
                continue
            alerts = sorted(
                group.alerts.values(), key=lambda a: (_closed(a), a.grade.value, a.alert_id)
            )
            status = "firing" if firing else "resolved"
            counted = [f"{i}#{seq}" for i, (_, seq, _) in sorted(group.others.items())]
            out.append(
                Notification(
                    notification_id=notification_id(group.receiver, key, status, alerts, counted),
                    receiver=group.receiver,
                    route=group.route,
                    group_key=key,
                    group_labels=group.labels,
                    status=status,
                    reason=reason,
                    alerts=alerts,
                    truncated_alerts=len(group.others),
                    district=state.district,
                    created_at=at,
                )
            )
            group.last_sent, group.changed_since = now, None
            for a in alerts:
                if _closed(a):
                    del group.alerts[a.alert_id]
            group.others = {i: o for i, o in group.others.items() if not o[2]}
            if group.empty():
                del state.groups[key]
        for alert_id, pending in list(state.escalations.items()):
            if now < pending.due:
                continue
            level = next_level(pending.level)
            if level is None:
                del state.escalations[alert_id]
                continue
            alert = pending.alert
            receiver = self.tree.escalation_receiver(level, alert.department)
            waited = self.tree.deadline_for(alert.grade.roman, alert.department)
            note = (
                f"not acknowledged within {waited:g} s at {pending.level} level; "
                f"escalated to {level.value} ({receiver.name})"
            )
            key = f"escalation/{level.value}:{alert.alert_id}"
            out.append(
                Notification(
                    notification_id=notification_id(receiver.name, key, "firing", [alert]),
                    receiver=receiver.name,
                    route=f"escalation/{level.value}",
                    group_key=key,
                    group_labels={"level": level.value},
                    status="firing",
                    reason=f"escalation:{level.value}",
                    alerts=[alert],
                    district=state.district,
                    created_at=at,
                )
            )
            actions.append(
                AlertAction(
                    action_id=f"escalate-{alert.alert_id}-{level.value}",
                    alert_id=alert_id,
                    district=alert.district,
                    action=AlertActionType.ESCALATE,
                    actor="notifier",
                    role="system",
                    at=at,
                    department=None,
                    note=note,
                    kind="system",
                )
            )
            pending.level, pending.due = level.value, now + waited
        return out, actions


class OutboxSender:
    """Delivers outbox records, one queue per receiver (see the module docstring)."""

    def __init__(
        self,
        tree: RoutingTree,
        cfg: CityConfig,
        *,
        outputs: Callable[[], Outputs],
        advance: Callable[[TopicPartition, int], None],
        policy: DeliveryPolicy = DEFAULT_POLICY,
        console_url: str | None = None,
    ) -> None:
        self.tree = tree
        self.cfg = cfg
        self.policy = policy
        self.console_url = console_url or tree.console_url
        self._outputs = outputs
        self._advance = advance
        self._queues: dict[str, asyncio.Queue[tuple[TopicPartition, int, Notification]]] = {}
        self._workers: list[asyncio.Task[None]] = []
        self._in_flight: dict[TopicPartition, set[int]] = {}
        self._read_to: dict[TopicPartition, int] = {}
        self._client: httpx.AsyncClient | None = None

    def receiver(self, name: str) -> Receiver | None:
        """A receiver by name (escalation receivers are among the routes' receivers)."""
        return self.tree.receivers.get(name)

    def respond_links(self, note: Notification, receiver: Receiver) -> dict[str, str]:
        """A responder link for each open alert of the notification, when links are on.

        The expiry counts from the notification's creation, so a notification sent
        again from the outbox carries the same links."""
        signer = self.tree.responder_links
        if signer is None or not receiver.responder_links:
            return {}
        return {
            a.alert_id: signer.url(
                self.console_url,
                signer.grant(a.alert_id, a.district, receiver.name, note.created_at),
            )
            for a in note.alerts
            if not _closed(a)
        }

    async def accept(self, records: Sequence[Record]) -> None:
        """Queue each outbox record for its receiver (returns at once)."""
        if self._client is None:
            self._client = httpx.AsyncClient()
        for record in records:
            tp = TopicPartition(record.topic, record.partition)
            self._read_to[tp] = max(self._read_to.get(tp, 0), record.offset + 1)
            try:
                note = Notification.model_validate_json(record.value or b"")
            except ValueError as exc:
                log.error("outbox %s@%d unreadable, skipped: %s", tp, record.offset, exc)
                self._settle(tp, record.offset)
                continue
            self._in_flight.setdefault(tp, set()).add(record.offset)
            queue = self._queues.get(note.receiver)
            if queue is None:
                queue = self._queues[note.receiver] = asyncio.Queue()
                for n in range(SENDERS_PER_RECEIVER):
                    self._workers.append(
                        asyncio.create_task(
                            self._send_loop(queue), name=f"notify-{note.receiver}-{n}"
                        )
                    )
            queue.put_nowait((tp, record.offset, note))

    def forget(self) -> None:
        """Partitions were reassigned: their unfinished records will be read again."""
        self._in_flight.clear()
        self._read_to.clear()

    async def stop(self) -> None:
        for task in self._workers:
            task.cancel()
        for task in self._workers:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._workers.clear()
        if self._client is not None:
            await self._client.aclose()

    def _settle(self, tp: TopicPartition, offset: int) -> None:
        flight = self._in_flight.get(tp, set())
        flight.discard(offset)
        self._advance(tp, min(flight) if flight else self._read_to.get(tp, offset + 1))

    async def _send_loop(
        self, queue: asyncio.Queue[tuple[TopicPartition, int, Notification]]
    ) -> None:
        while True:
            tp, offset, note = await queue.get()
            try:
                await self._send(note)
            except Exception:
                log.exception(
                    "notification %s not handled; it will be sent again", note.notification_id
                )
                continue
            self._settle(tp, offset)

    async def _send(self, note: Notification) -> None:
        assert self._client is not None
        receiver = self.receiver(note.receiver)
        started = time.monotonic()
        if receiver is None:
            result_outcome, attempts, status, error = (
                "dead",
                0,
                None,
                f"no receiver {note.receiver!r} in the routes",
            )
        else:
            payloads = render_all(
                receiver.format,
                note.alerts,
                city=self.cfg,
                group_key=note.group_key,
                receiver=receiver.name,
                console_url=self.console_url,
                status=note.status,
                group_labels=note.group_labels,
                max_alerts=receiver.max_alerts,
                truncated=note.truncated_alerts,
                respond_links=self.respond_links(note, receiver),
            )
            secret = (receiver.secret_value() or "").encode()
            result_outcome, attempts, status, error = "delivered", 0, None, None
            for n, (body, content_type) in enumerate(payloads):
                key = note.notification_id if len(payloads) == 1 else f"{note.notification_id}-{n}"
                result = await deliver(
                    self._client,
                    receiver.url,
                    body,
                    content_type,
                    secret=secret,
                    idempotency_key=key,
                    dialect=DIALECTS.get(receiver.format, "webhook"),
                    policy=self.policy,
                )
                attempts += result.attempts
                status, error = result.status_code, result.error
                if result.outcome != "delivered":
                    result_outcome = "dead"
                    break
        outcome = NotificationOutcome(
            notification_id=note.notification_id,
            receiver=note.receiver,
            route=note.route,
            reason=note.reason,
            outcome=result_outcome,
            attempts=attempts,
            status_code=status,
            error=error,
            alert_ids=[a.alert_id for a in note.alerts],
            district=note.district,
            seconds=round(time.monotonic() - started, 3),
            finished_at=datetime.now(UTC),
        )
        out = self._outputs()
        out.add(NOTIFICATIONS_TOPIC, note.district.encode(), outcome.to_json())
        await out.send()
        metrics.notify_deliveries.labels(note.receiver, result_outcome).inc()
        metrics.notify_seconds.labels(note.receiver).observe(outcome.seconds)


class NotifyService:
    """The planner's feed and timer, and the sender's feed, of one worker."""

    def __init__(
        self,
        tree: RoutingTree,
        cfg: CityConfig,
        *,
        app_id: str,
        bootstrap: str,
        client_options: dict[str, Any],
        table: Any,
        flush_state: Callable[[], Any],
        on_crash: Callable[[BaseException], Any],
        partition_of: Callable[[str], int],
        policy: DeliveryPolicy = DEFAULT_POLICY,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.planner = Planner(tree)
        self.table = table
        self.partition_of = partition_of
        self.clock = clock
        self.plan_feed = InputFeed(
            bootstrap=bootstrap,
            group_id=f"{app_id}-notify",
            topics=[ALERTS_TOPIC],
            handler=self._plan,
            flush_state=flush_state,
            client_options=client_options,
            batch_max=1000,
            on_crash=on_crash,
        )
        self.send_feed = InputFeed(
            bootstrap=bootstrap,
            group_id=f"{app_id}-outbox",
            topics=[OUTBOX_TOPIC],
            handler=lambda records: self.sender.accept(records),
            flush_state=_nothing,
            client_options=client_options,
            batch_max=500,
            on_crash=on_crash,
            advance_on_handle=False,
        )
        self.sender = OutboxSender(
            tree, cfg, outputs=self.send_feed.outputs, advance=self.send_feed.advance, policy=policy
        )

    async def start(self) -> None:
        await self.plan_feed.start()
        await self.send_feed.start()

    async def stop(self) -> None:
        await self.plan_feed.stop()
        await self.sender.stop()
        await self.send_feed.stop()

    async def assign(self, partitions: set[int]) -> None:
        await self.plan_feed.assign(partitions)
        self.sender.forget()
        await self.send_feed.assign(partitions)

    async def revoke(self) -> None:
        await self.plan_feed.revoke()
        await self.send_feed.revoke()
        self.sender.forget()

    def _state(self, district: str) -> DistrictNotify:
        state = self.table.get(district.encode())
        return state if state is not None else DistrictNotify(district)

    async def _plan(self, records: Sequence[Record]) -> None:
        now = self.clock()
        touched: dict[str, DistrictNotify] = {}
        for record in records:
            try:
                alert = AlertEvent.model_validate(orjson.loads(record.value or b""))
            except ValueError as exc:
                log.error("alert %s@%d unreadable, skipped: %s", record.topic, record.offset, exc)
                continue
            state = touched.get(alert.district) or self._state(alert.district)
            touched[alert.district] = state
            self.planner.on_alert(state, alert, now)
        await self._emit(touched, now)

    async def tick(self) -> None:
        """The timer: send what is due in the districts this worker owns (under the lock)."""
        if not self.plan_feed.partitions:
            return
        async with self.plan_feed.lock:
            now = self.clock()
            touched = {}
            for key in list(self.table.keys()):
                state = self.table.get(key)
                if (
                    state is not None
                    and (state.groups or state.escalations)
                    and self.partition_of(state.district) in self.plan_feed.partitions
                ):
                    touched[state.district] = state
            await self._emit(touched, now)

    async def _emit(self, touched: dict[str, DistrictNotify], now: float) -> None:
        out = self.plan_feed.outputs()
        for district, state in touched.items():
            notes, actions = self.planner.due(state, now)
            for note in notes:
                out.add(OUTBOX_TOPIC, district.encode(), note.to_json())
                metrics.notify_planned.labels(note.receiver, note.reason.split(":")[0]).inc()
            for action in actions:
                out.add(ACTIONS_TOPIC, district.encode(), action.to_json())
        await out.send()  # the outbox before the state that says it was sent
        for district, state in touched.items():
            self.table[district.encode()] = state


async def _nothing() -> None:
    return None
