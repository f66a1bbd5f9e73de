"""``cityvitals migrate-state``: the changelogs of a release that pickled its state,
rewritten as versioned state documents.

Releases before versioned state wrote the ``district-detection`` and ``notify-groups``
table values as pickles; a worker of this release never unpickles and stops on such a
value (:func:`streams.kafka.tables.restored`). With every worker stopped, this command
reads each of the two changelog topics from its start to its end, keeps the latest
value of each district, and for every one that is a pickle writes the same state as a
document (:data:`~streams.alerting.detection.DETECTION_STATE`,
:data:`~streams.notify.planner.NOTIFY_STATE`) to the same partition under the same key,
so that the next recovery restores the document. The pickles are read with an
allow-list of this project's and river's classes
(:func:`legacy.pickled_state.read_pickled_state`), on topics the operator's own
workers wrote; the worker itself has no such path. ``district-windows`` was always JSON
and needs nothing. Running it twice converts nothing the second time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from legacy.pickled_state import detection_from_pickle, notify_from_pickle
from streams.core.settings import Settings

#: Table -> how a pickled value of it is read into today's state.
PICKLED_TABLES: dict[str, Callable[[bytes], Any]] = {
    "district-detection": detection_from_pickle,
    "notify-groups": notify_from_pickle,
}

_PICKLE_START = b"\x80"


class WorkersRunning(RuntimeError):
    """The worker group has members: the changelogs must not change under them."""


@dataclass
class TableReport:
    """What one changelog held and what was rewritten."""

    topic: str
    districts: int = 0
    converted: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # district -> reason


async def group_members(settings: Settings) -> int:
    """Members of the worker group (its app id) now."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.bootstrap, **settings.kafka_client_options()
    )
    await admin.start()
    try:
        described = await admin.describe_consumer_groups([settings.app_id])
    finally:
        await admin.close()
    members = 0
    for response in described:
        for group in response.to_object().get("groups", []):
            members += len(group.get("members") or [])
    return members


async def latest_values(settings: Settings, topic: str) -> dict[tuple[int, bytes], bytes | None]:
    """The latest value of each key of ``topic``, per partition, read from start to end."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        **settings.kafka_client_options(),
    )
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic)
        if partitions is None:
            await consumer.force_metadata_update()
            partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        if not tps:
            return {}
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        latest: dict[tuple[int, bytes], bytes | None] = {}
        remaining = {tp for tp in tps if ends[tp] > 0}
        while remaining:
            batch = await consumer.getmany(*remaining, timeout_ms=1000)
            for tp, records in batch.items():
                for record in records:
                    if record.key is not None:
                        latest[(tp.partition, record.key)] = record.value
            for tp in list(remaining):
                if await consumer.position(tp) >= ends[tp]:
                    remaining.discard(tp)
        return latest
    finally:
        await consumer.stop()


async def migrate_state(settings: Settings, *, dry_run: bool = False) -> list[TableReport]:
    """Rewrite every pickled table value as a state document; what was done, per table.

    Raises :class:`WorkersRunning` if the worker group has members."""
    if await group_members(settings):
        raise WorkersRunning(
            f"consumer group {settings.app_id!r} has members: stop every worker first"
        )
    reports = []
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap, acks="all", **settings.kafka_client_options()
    )
    await producer.start()
    try:
        for table, read in PICKLED_TABLES.items():
            report = TableReport(f"{settings.app_id}-{table}-changelog")
            values = await latest_values(settings, report.topic)
            report.districts = sum(1 for v in values.values() if v)
            for (partition, key), value in sorted(values.items()):
                if not value or not value.startswith(_PICKLE_START):
                    continue
                district = key.decode("utf-8", "replace")
                try:
                    state = read(value)
                    data, _ = state.encode()
                except Exception as exc:  # one district's value: the others still convert
                    report.failed[district] = f"{type(exc).__name__}: {exc}"
                    continue
                if not dry_run:
                    await producer.send_and_wait(report.topic, data, key=key, partition=partition)
                report.converted.append(district)
            reports.append(report)
    finally:
        await producer.stop()
    return reports
