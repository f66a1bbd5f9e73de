"""The worker's web side: the API server, the store it reads, and the producer it writes with.

:class:`ApiService` runs inside the worker's event loop, from the moment the
worker starts (so ``/healthz`` and ``/metrics`` answer during recovery) until it
stops:

- a consumer with no group reads every partition of ``city.emergency-command`` from
  its beginning, of ``city.audit`` from the start of the history
  (``CITYVITALS_API_HISTORY_DAYS``) and of ``city.vitals`` from
  :data:`VITALS_LOOKBACK_WINDOWS` windows back (at least its last
  :data:`VITALS_TAIL` records), and of ``city.appeal-tallies`` from the
  :data:`~streams.api.feedback.LEDGER_DAYS` its ledger keeps, positioned by record time
  (:func:`streams.kafka.history.offsets_at`), into the
  :class:`~streams.api.store.AlertStore`, which keeps open alerts and the history;
- :class:`~streams.kafka.history.KafkaHistory` answers the API's queries for older
  history;
- a producer with ``acks=all`` publishes operator actions, signed with the action key
  (:mod:`streams.core.signing`), and audit records;
- uvicorn serves :func:`streams.api.app.create_api` on the worker's web port,
  without signal handlers of its own (the worker's handle Ctrl-C and SIGTERM).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Generator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import uvicorn
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from pydantic import ValidationError

from streams.api.app import config_digests, create_api
from streams.api.auth import Authenticator
from streams.api.feedback import CategoryInfo
from streams.api.store import AlertStore
from streams.core.config import CityConfig
from streams.core.messages import (
    ACTIONS_TOPIC,
    ALERTS_TOPIC,
    APPEAL_TALLIES_TOPIC,
    AUDIT_TOPIC,
    VITALS_TOPIC,
    AlertAction,
    AuditRecord,
)
from streams.core.settings import Settings
from streams.core.signing import ActionSigner
from streams.kafka.history import KafkaHistory, offsets_at
from streams.notify.respond import LinkSigner

log = logging.getLogger(__name__)

#: Vital-sign windows of ``city.vitals`` read back at start-up: only each district's
#: latest document is kept, and every district publishes one per closed window.
VITALS_LOOKBACK_WINDOWS = 30
#: Records per partition of ``city.vitals`` read at start-up at least, so a district
#: silent for longer than the look-back still shows its last vital signs.
VITALS_TAIL = 256


class KafkaPublisher:
    """Actions and audit records, each awaited until the broker acknowledged it.

    Every action is signed here, the one way the API's actions (operators' and responder
    links') reach ``city.alert-actions``: the lifecycle applies no unsigned action."""

    def __init__(
        self, bootstrap: str, client_options: dict[str, Any], signer: ActionSigner
    ) -> None:
        self._bootstrap = bootstrap
        self._options = client_options
        self._signer = signer
        self._producer: AIOKafkaProducer | None = None

    async def start(self) -> None:
        self._producer = AIOKafkaProducer(
            bootstrap_servers=self._bootstrap, acks="all", linger_ms=0, **self._options
        )
        await self._producer.start()

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()

    def _started(self) -> AIOKafkaProducer:
        if self._producer is None:
            raise RuntimeError("the publisher is not started")
        return self._producer

    async def action(self, action: AlertAction) -> None:
        await self._started().send_and_wait(
            ACTIONS_TOPIC,
            key=action.district.encode(),
            value=self._signer.sign(action).to_json(),
        )

    async def audit(self, record: AuditRecord) -> None:
        await self._started().send_and_wait(
            AUDIT_TOPIC, key=record.user.encode(), value=record.to_json()
        )


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield  # the worker owns the process's signals


class ApiService:
    """Store feed, publisher and HTTP server of one worker (see the module docstring)."""

    def __init__(
        self,
        settings: Settings,
        cfg: CityConfig,
        auth: Authenticator,
        *,
        ready: Callable[[], bool],
        config_files: list[Path],
        links: LinkSigner | None = None,
        categories: tuple[CategoryInfo, ...] = (),
    ) -> None:
        self.settings = settings
        self.store = AlertStore(
            partitions=settings.partitions,
            history_s=settings.api_history_days * 86400.0,
            history_max=settings.api_history_max,
            stream_queue=settings.stream_queue,
        )
        self.publisher = KafkaPublisher(
            settings.bootstrap,
            settings.kafka_client_options(),
            ActionSigner(*settings.action_keys()),
        )
        self.caught_up = asyncio.Event()
        self._config_files = config_files
        self._ready = ready
        self.api = create_api(
            self.store,
            auth,
            cfg,
            self.publisher,
            ready=lambda: ready() and self.caught_up.is_set(),
            links=links,
            max_notes=settings.max_notes_per_alert,
            history=KafkaHistory(settings),
            categories=categories,
        )
        self._server: _Server | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._consumer: AIOKafkaConsumer | None = None

    async def start(self) -> None:
        if self._tasks:
            return
        await self.publisher.start()
        # before the store reads: its first catch-up then includes this start
        await self.publisher.audit(
            AuditRecord(
                at=datetime.now(UTC),
                user="system",
                role="system",
                action="config_loaded",
                target=self.settings.app_id,
                detail=config_digests(self._config_files),
            )
        )
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self.settings.bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            **self.settings.kafka_client_options(),
        )
        await self._consumer.start()
        parts = [
            TopicPartition(topic, p)
            for topic in (ALERTS_TOPIC, VITALS_TOPIC, APPEAL_TALLIES_TOPIC, AUDIT_TOPIC)
            for p in range(self.settings.partitions)
        ]
        positions = await self._positions(self._consumer)
        self._consumer.assign(parts)
        for tp, offset in positions.items():
            self._consumer.seek(tp, offset)
        config = uvicorn.Config(
            self.api,
            host=self.settings.web_host,
            port=self.settings.web_port,
            log_level="warning",
            lifespan="off",
            access_log=False,
        )
        self._server = _Server(config)
        self._tasks = [
            asyncio.create_task(self._read(self._consumer, parts), name="api-store-feed"),
            asyncio.create_task(self._server.serve(), name="api-server"),
        ]

    async def _positions(self, consumer: AIOKafkaConsumer) -> dict[TopicPartition, int]:
        """Alerts from the beginning, audit from the history's start, vitals near their end.

        Found before the consumer is assigned its partitions: once assigned, it starts
        fetching from the beginning at once, and on the embedded broker that first
        answer (up to 50 MB, whatever was asked per partition) raised a worker's resident
        memory by some 60 MB over 0.1 years of vitals before the seek discarded it.
        """
        n = self.settings.partitions
        alerts = [TopicPartition(ALERTS_TOPIC, p) for p in range(n)]
        audit = [TopicPartition(AUDIT_TOPIC, p) for p in range(n)]
        vitals = [TopicPartition(VITALS_TOPIC, p) for p in range(n)]
        now = datetime.now(UTC)
        history = timedelta(days=self.settings.api_history_days)
        positions = dict(await consumer.beginning_offsets(alerts))
        positions.update(await offsets_at(consumer, audit, now - history, self.settings))
        tallies = [TopicPartition(APPEAL_TALLIES_TOPIC, p) for p in range(n)]
        ledger = timedelta(seconds=self.store.appeals.keep_s)
        positions.update(await offsets_at(consumer, tallies, now - ledger, self.settings))
        lookback = timedelta(seconds=VITALS_LOOKBACK_WINDOWS * self.settings.window_s)
        recent = await offsets_at(consumer, vitals, now - lookback, self.settings)
        begins = await consumer.beginning_offsets(vitals)
        ends = await consumer.end_offsets(vitals)
        for tp in vitals:
            positions[tp] = max(begins[tp], min(recent[tp], ends[tp] - VITALS_TAIL))
        return positions

    async def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        for task in self._tasks:
            if task.get_name() == "api-store-feed":
                task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(task, 5.0)
        self._tasks = []
        if self._consumer is not None:
            await self._consumer.stop()
        await self.publisher.stop()

    async def _read(self, consumer: AIOKafkaConsumer, parts: list[TopicPartition]) -> None:
        store = self.store
        while True:
            batches = await consumer.getmany(timeout_ms=200, max_records=5000)
            for tp, records in batches.items():
                for record in records:
                    if record.value is None:
                        continue
                    try:
                        if tp.topic == ALERTS_TOPIC:
                            store.add_record(tp.partition, record.offset, record.value)
                        elif tp.topic == VITALS_TOPIC:
                            store.add_vitals(record.value)
                        elif tp.topic == APPEAL_TALLIES_TOPIC:
                            store.add_appeal_tallies(record.value)
                        else:
                            store.add_audit(AuditRecord.model_validate_json(record.value))
                    except (ValidationError, ValueError) as exc:
                        log.warning(
                            "skipped %s:%d@%d, not readable: %s",
                            tp.topic,
                            tp.partition,
                            record.offset,
                            exc,
                        )
            store.evict()
            if not self.caught_up.is_set() and await self._at_end(consumer, parts):
                store.settle()
                self.caught_up.set()
                await self._audit_config_change()

    async def _audit_config_change(self) -> None:
        """Record a ``config_changed`` when this start loaded other configuration files
        than the last start of the same app did (by digest)."""
        loaded = sorted(
            (
                r
                for r in self.store.audit
                if r.action == "config_loaded" and r.target == self.settings.app_id
            ),
            key=lambda r: r.at,
        )
        if len(loaded) < 2 or loaded[-1].detail == loaded[-2].detail:
            return
        before = dict(p.split("=", 1) for p in (loaded[-2].detail or "").split())
        after = dict(p.split("=", 1) for p in (loaded[-1].detail or "").split())
        changes = [
            f"{name}: {before.get(name, 'absent')} -> {after.get(name, 'absent')}"
            for name in sorted(set(before) | set(after))
            if before.get(name) != after.get(name)
        ]
        await self.publisher.audit(
            AuditRecord(
                at=datetime.now(UTC),
                user="system",
                role="system",
                action="config_changed",
                target=self.settings.app_id,
                detail="; ".join(changes),
            )
        )

    @staticmethod
    async def _at_end(consumer: AIOKafkaConsumer, parts: list[TopicPartition]) -> bool:
        """Whether every partition has been read up to the high watermark last fetched."""
        for tp in parts:
            highwater = consumer.highwater(tp)
            if highwater is None or await consumer.position(tp) < highwater:
                return False
        return True
