"""Reading topics from their start as they grow, for a live view (the demo's table)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from aiokafka import AIOKafkaConsumer


async def follow(
    bootstrap: str, topics: Sequence[str], on_message: Callable[[str, bytes | None], None]
) -> None:
    """Call ``on_message(topic, value)`` for every record of ``topics``, from the
    earliest, until cancelled (no consumer group: nothing is committed)."""
    consumer = AIOKafkaConsumer(
        *topics, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        async for msg in consumer:
            on_message(msg.topic, msg.value)
    finally:
        await consumer.stop()
