"""Responder notifications on Kafka: the planning and delivery stages of
:mod:`streams.notify.planner` run as consumers of the district's partitions.

:class:`NotifyService` reads ``city.emergency-command`` and plans through
:class:`~streams.notify.planner.Planner` (its state in the ``notify-groups`` table, written
through the worker's producer), and reads ``city.notify-outbox`` into
:class:`OutboxSender`, which delivers each record and writes its outcome to
``city.notifications``. The module docstring of :mod:`streams.notify.planner` gives the
ordering that makes a crash repeat a notification rather than lose it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
from aiokafka import TopicPartition

from streams.alerting.lifecycle import DEGRADED, STATE_MAX_BYTES, is_closed
from streams.core import metrics
from streams.core.config import CityConfig
from streams.core.messages import (
    ACTIONS_TOPIC,
    ALERTS_TOPIC,
    AUDIT_TOPIC,
    NOTIFICATIONS_TOPIC,
    OUTBOX_TOPIC,
    AlertEvent,
    Notification,
    NotificationOutcome,
)
from streams.core.signing import ActionSigner
from streams.kafka.feed import InputFeed, Outputs, Record
from streams.notify.delivery import DEFAULT_POLICY, DeliveryPolicy, deliver
from streams.notify.payloads import render_all
from streams.notify.planner import (
    DIALECTS,
    SENDERS_PER_RECEIVER,
    DistrictNotify,
    Planner,
)
from streams.notify.routing import (
    Receiver,
    RoutingTree,
)

log = logging.getLogger(__name__)


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
            if not is_closed(a)
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
        signer: ActionSigner,
        policy: DeliveryPolicy = DEFAULT_POLICY,
        clock: Callable[[], float] = time.time,
        changelog: str | None = None,
        encode_state: Callable[[DistrictNotify], bytes] | None = None,
    ) -> None:
        self.planner = Planner(tree)
        # escalations are actions the lifecycle must trust: signed like the API's
        self.signer = signer
        self.table = table
        # the table's changelog, written through our producer and awaited (Faust's own
        # table writes are buffered, and its flush may return before they are sent)
        self.changelog = changelog or f"{app_id}-notify-groups-changelog"
        self.encode_state = encode_state or (lambda state: state.encode(STATE_MAX_BYTES)[0])
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
        """The timer: send what is due in the districts this worker owns (under the lock).

        A district's state is written again only when something was due; the
        degradations table writes reported since the last tick go to the audit."""
        if not self.plan_feed.partitions or self.plan_feed.fenced():
            return  # a pause leaves it open who owns the districts: plan nothing now
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
            await self._emit(touched, now, only_changed=True)

    async def _emit(
        self, touched: dict[str, DistrictNotify], now: float, *, only_changed: bool = False
    ) -> None:
        out = self.plan_feed.outputs()
        changed: dict[str, DistrictNotify] = {}
        for district, state in touched.items():
            shape = (len(state.groups), len(state.escalations))
            notes, actions = self.planner.due(state, now)
            for note in notes:
                out.add(OUTBOX_TOPIC, district.encode(), note.to_json())
                metrics.notify_planned.labels(note.receiver, note.reason.split(":")[0]).inc()
            for action in actions:
                out.add(ACTIONS_TOPIC, district.encode(), self.signer.sign(action).to_json())
            if (
                not only_changed
                or notes
                or actions
                or shape
                != (
                    len(state.groups),
                    len(state.escalations),
                )
            ):
                changed[district] = state
        for record in DEGRADED.drain(now):
            out.add(AUDIT_TOPIC, record.user.encode(), record.to_json())
        await out.send()  # the outbox before the state that says it was sent
        if changed:
            written = self.plan_feed.outputs()
            for district, state in changed.items():
                key = district.encode()
                written.add(self.changelog, key, self.encode_state(state))
                self.table.data[key] = state
            await written.send(counted=False)


async def _nothing() -> None:
    return None
