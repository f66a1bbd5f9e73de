"""Producing timed records to Kafka: the simulated city's events, at a pace.

Used by the simulator (:func:`streams.sim.simulator.publish`), the demo and the benches.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sized
from datetime import datetime
from typing import Any, Protocol

from aiokafka import AIOKafkaProducer
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn


class TimedRecord(Protocol):
    """A record to produce: topic, key and value, and its event time (the record's
    Kafka timestamp)."""

    @property
    def topic(self) -> str: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes: ...
    @property
    def event_time(self) -> datetime: ...


async def produce_events(
    bootstrap: str,
    events: Iterable[TimedRecord],
    *,
    rate: float | None = None,
    speed: float | None = None,
    progress: bool = False,
    client_options: Mapping[str, object] | None = None,
) -> int:
    """Produce ``events`` to Kafka; return how many were produced (all flushed).

    ``client_options`` are passed to the producer (security settings, from
    :meth:`streams.core.settings.Settings.kafka_client_options`).

    ``rate`` caps events per wall second; ``speed`` replays event time that many
    times faster than real time (60 = one simulated minute per second). The
    Kafka record timestamp is the event time, so event-time windows see it.
    """
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, linger_ms=8, acks="all", **dict(client_options or {})
    )
    await producer.start()
    loop = asyncio.get_running_loop()
    total = len(events) if isinstance(events, Sized) else None
    bar = Progress(
        SpinnerColumn(),
        TextColumn("[bold]simulating the city"),
        TextColumn("{task.completed:,} events"),
        TimeElapsedColumn(),
        disable=not progress,
    )
    count = 0
    pending: list[asyncio.Future[Any]] = []
    try:
        with bar:
            task = bar.add_task("produce", total=total)
            wall0 = loop.time()
            first: datetime | None = None
            for ev in events:
                due = wall0
                if rate:
                    due = max(due, wall0 + count / rate)
                if speed:
                    first = first or ev.event_time
                    due = max(due, wall0 + (ev.event_time - first).total_seconds() / speed)
                wait = due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                elif count % 500 == 0:
                    await asyncio.sleep(0)  # let the sender task drain the batches
                ts = int(ev.event_time.timestamp() * 1000)
                pending.append(await producer.send(ev.topic, ev.value, key=ev.key, timestamp_ms=ts))
                count += 1
                if len(pending) >= 5000:
                    await asyncio.gather(*pending)  # surface delivery errors early
                    pending.clear()
                if progress and count % 200 == 0:
                    bar.update(task, completed=count)
            await producer.flush()
            await asyncio.gather(*pending)
            bar.update(task, completed=count)
    finally:
        await producer.stop()
    return count
