"""Reading the alert and audit topics by record time: the API's start-up positions and
its on-demand history.

:func:`offsets_at` finds, per partition, the first offset whose record time is at or
after a moment: Kafka's time index (``offsets_for_times``) on Apache Kafka, a bisection
of the log on the embedded broker, whose time lookup always answers the log's start
(:func:`streams.kafka.broker.offsets_by_time`). The API service positions its store's
consumer with it at start-up (vitals near their end, audit at the start of the
history), and :class:`KafkaHistory`, the Kafka side of
:class:`streams.api.history.HistoryReader`, reads a time range for one query:

- a consumer of its own, no group, started for the query and stopped after it;
- positions from :func:`offsets_at` at both ends of the range, so the number of records
  in range is known before anything is read: over ``CITYVITALS_API_HISTORY_READ_MAX`` the
  query is refused at once (:class:`~streams.api.history.HistoryTooLarge`);
- then the records in range, each alert event's head decoded first
  (:func:`~streams.api.history.alert_head`) so that a query for one alert decodes only
  its events, within ``CITYVITALS_API_HISTORY_READ_S``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from pydantic import ValidationError

from streams.api.history import (
    HistoryTooLarge,
    HistoryUnavailable,
    alert_head,
    too_large,
    too_slow,
)
from streams.core.messages import ALERTS_TOPIC, AUDIT_TOPIC, AlertEvent, AuditRecord
from streams.core.settings import Settings
from streams.kafka.broker import offsets_by_time


def _ms(moment: datetime) -> int:
    return max(0, int(moment.timestamp() * 1000))


async def offsets_at(
    consumer: AIOKafkaConsumer, parts: list[TopicPartition], moment: datetime, settings: Settings
) -> dict[TopicPartition, int]:
    """Per partition, the first offset with a record time at or after ``moment``; the
    end offset where every record is older."""
    if settings.embedded_broker:
        found = await offsets_by_time(
            settings.bootstrap, settings.kafka_client_options(), parts, _ms(moment)
        )
        return {tp: found[tp] for tp in parts}
    times = await consumer.offsets_for_times(dict.fromkeys(parts, _ms(moment)))
    ends = await consumer.end_offsets(parts)
    return {tp: ends[tp] if times.get(tp) is None else times[tp].offset for tp in parts}


class KafkaHistory:
    """Alert events and audit records by record time, read from Kafka for one query
    (see the module docstring)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.max_records = settings.api_history_read_max
        self.max_seconds = settings.api_history_read_s

    async def alert_events(
        self, start: datetime, end: datetime, alert_id: str | None = None
    ) -> list[AlertEvent]:
        def keep(value: bytes) -> bool:
            return alert_id is None or alert_head(value).alert_id == alert_id

        values = await self._read(ALERTS_TOPIC, start, end, keep)
        return [AlertEvent.model_validate_json(v) for v in values]

    async def audit_records(self, start: datetime, end: datetime) -> list[AuditRecord]:
        values = await self._read(AUDIT_TOPIC, start, end, lambda value: True)
        return [AuditRecord.model_validate_json(v) for v in values]

    async def _read(
        self, topic: str, start: datetime, end: datetime, keep: Callable[[bytes], bool]
    ) -> list[bytes]:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.settings.bootstrap,
            group_id=None,
            enable_auto_commit=False,
            **self.settings.kafka_client_options(),
        )
        try:
            await consumer.start()
            parts = [TopicPartition(topic, p) for p in range(self.settings.partitions)]
            consumer.assign(parts)
            deadline = time.monotonic() + self.max_seconds
            begins = await offsets_at(consumer, parts, start, self.settings)
            stops = await offsets_at(consumer, parts, end, self.settings)
            records = sum(max(0, stops[tp] - begins[tp]) for tp in parts)
            if records > self.max_records:
                raise HistoryTooLarge(too_large(records, self.max_records))
            for tp in parts:
                consumer.seek(tp, begins[tp])
            return await self._collect(consumer, begins, stops, keep, deadline)
        except KafkaError as exc:
            raise HistoryUnavailable(f"Kafka did not answer: {type(exc).__name__}") from None
        finally:
            await consumer.stop()

    async def _collect(
        self,
        consumer: AIOKafkaConsumer,
        begins: dict[TopicPartition, int],
        stops: dict[TopicPartition, int],
        keep: Callable[[bytes], bool],
        deadline: float,
    ) -> list[bytes]:
        """The kept values of each partition's records from its begin to its stop."""
        pending = {tp for tp in stops if stops[tp] > begins[tp]}
        found: list[bytes] = []
        while pending:
            if time.monotonic() > deadline:
                raise HistoryTooLarge(too_slow(self.max_seconds))
            batches: dict[Any, list[Any]] = await consumer.getmany(
                *pending, timeout_ms=200, max_records=5000
            )
            for tp, batch in batches.items():
                for record in batch:
                    if record.offset >= stops[tp]:
                        break
                    if record.value is None:
                        continue
                    try:
                        if keep(record.value):
                            found.append(record.value)
                    except (ValueError, ValidationError):
                        continue  # not an event: the store skips it too
            for tp in list(pending):
                if await consumer.position(tp) >= stops[tp]:
                    pending.discard(tp)
                    consumer.pause(tp)
        return found
