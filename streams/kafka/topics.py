"""Create the city's topics and check that they are co-partitioned.

Every per-district state lives on the partition its district key hashes to, so all
input topics, ``city.readings``, ``city.vitals`` and the table changelog need the
same partition count. A topic auto-created by a broker with another count would
silently split a district's state; the worker refuses to start instead.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError as AIOKafkaError
from aiokafka.errors import TopicAlreadyExistsError
from kafka.errors import KafkaError

from streams.core.messages import (
    ACTIONS_TOPIC,
    ALERTS_TOPIC,
    APPEAL_TALLIES_TOPIC,
    AUDIT_TOPIC,
    DEADLETTER_TOPIC,
    EVENT_TOPICS,
    NOTIFICATIONS_TOPIC,
    OUTBOX_TOPIC,
    READINGS_TOPIC,
    VITALS_TOPIC,
)

#: What a client raises when the cluster cannot be reached or refuses the request.
UNREACHABLE: tuple[type[BaseException], ...] = (KafkaError, AIOKafkaError, OSError)

CITY_TOPICS: tuple[str, ...] = (
    *EVENT_TOPICS.values(),
    READINGS_TOPIC,
    DEADLETTER_TOPIC,
    VITALS_TOPIC,
    APPEAL_TALLIES_TOPIC,
    ALERTS_TOPIC,
    ACTIONS_TOPIC,
    AUDIT_TOPIC,
    OUTBOX_TOPIC,
    NOTIFICATIONS_TOPIC,
)


class TopicLayoutError(RuntimeError):
    """A topic exists with a partition count other than the configured one."""


async def ensure_topics(
    bootstrap: str,
    partitions: int,
    replication_factor: int = 1,
    topics: Iterable[str] = CITY_TOPICS,
    client_options: Mapping[str, object] | None = None,
) -> dict[str, int]:
    """Create missing topics with ``partitions`` partitions; return every topic's count.

    Raises :class:`TopicLayoutError` naming each topic whose count differs.
    """
    wanted = list(topics)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, **dict(client_options or {}))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [t for t in wanted if t not in existing]
        if missing:
            # another worker may have created them first
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(
                    [NewTopic(t, partitions, replication_factor) for t in missing]
                )
        described = await admin.describe_topics(wanted)
    finally:
        await admin.close()
    counts = {d["topic"]: len(d["partitions"]) for d in described}
    wrong = {t: n for t, n in counts.items() if n != partitions}
    if wrong:
        listing = ", ".join(f"{t} has {n}" for t, n in sorted(wrong.items()))
        raise TopicLayoutError(
            f"topics must all have {partitions} partitions (CITYVITALS_PARTITIONS) so that a district's "
            f"events and state share a partition: {listing}"
        )
    return counts
