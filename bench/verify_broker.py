"""The fault verifier's broker restarts: the embedded broker on its local S3 store
(``EmbeddedBroker(storage="local-s3")``) killed or stopped while the city streams in,
and started again on the same port with its log, and how long the workers take to
process and to catch up afterwards.

Three restarts, at stream offsets fixed by the plan: a SIGKILL with 5 s down in
steady input, a SIGTERM with 1 s down during the back-fill, and a SIGKILL with 15 s
down (past the 6 s session timeout) near the end. Nobody touches the workers: they
must reconnect, rejoin and go on by themselves; a worker that exits is a crash in
the summary.

For each restart: ``down_s`` (broker killed to answering again), and from the broker
answering again: ``committing_s`` (a committed input offset moves past where it was
at the kill: the workers process again), ``first_output_s`` (an output record
arrives) and ``caught_up_s`` (the committed input offsets reach the input's end
offsets, read once the broker holds as many input records as the driver had sent
when it came back: the backlog of the outage is handled; Tansu's end offsets can
fall short by up to one record batch, see docs/architecture.md).

A broker killed after it stored a batch and before it answered makes the driver's
producer send the batch again: the input then holds those records twice, at two
offsets, and the workers rightly count both (as with any producer that retries
without idempotence, on Apache Kafka too). :func:`retried_inputs` finds them by
their bytes, so that the oracle expects them as well; the summary counts them
under ``input_retried``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from verify_input import Control
from verify_oracle import Produced

from streams.core.messages import EVENT_TOPICS
from streams.kafka.broker import EmbeddedBroker

CATCH_UP_TIMEOUT_S = 180.0


@dataclass(frozen=True)
class Restart:
    at: float | None  # fraction of the planned span; None: during the back-fill
    kill: bool  # SIGKILL, else SIGTERM
    down_s: float


PLAN = (
    Restart(at=0.25, kill=True, down_s=5.0),
    Restart(at=None, kill=False, down_s=1.0),
    Restart(at=0.85, kill=True, down_s=15.0),
)

Offsets = Callable[[], Awaitable[dict[tuple[str, int], int]]]


async def _offsets_or_none(read: Offsets) -> dict[tuple[str, int], int] | None:
    try:
        return await read()
    except Exception:  # the coordinator is still coming back
        return None


async def _wait_for_stream(control: Control, start: datetime, at: timedelta) -> None:
    while control.stream_time is None or control.stream_time - start < at:
        await asyncio.sleep(0.2)


async def restart_once(
    broker: EmbeddedBroker,
    restart: Restart,
    committed: Offsets,
    ends: Offsets,
    last_output: Callable[[], float],
    sent: Callable[[], int],
) -> dict[str, Any]:
    """Restart the broker as planned and measure the recovery."""
    before = await _offsets_or_none(committed) or {}
    t_kill = time.monotonic()
    await asyncio.to_thread(broker.restart, kill=restart.kill, down_s=restart.down_s)
    t_back = time.monotonic()
    backlog = sent()  # the records sent during the outage are in the producer's buffer
    target = None
    while target is None and time.monotonic() - t_back < CATCH_UP_TIMEOUT_S:
        target = await _offsets_or_none(ends)
        if target is None or sum(target.values()) < backlog:
            target = None
            await asyncio.sleep(0.25)
    result: dict[str, Any] = {
        "signal": "SIGKILL" if restart.kill else "SIGTERM",
        "down_s": round(t_back - t_kill, 1),
        "committing_s": None,
        "first_output_s": None,
        "caught_up_s": None,
    }
    while time.monotonic() - t_back < CATCH_UP_TIMEOUT_S:
        await asyncio.sleep(0.25)
        now = time.monotonic() - t_back
        if result["first_output_s"] is None and last_output() > t_back:
            result["first_output_s"] = round(last_output() - t_back, 1)
        seen = await _offsets_or_none(committed)
        if seen is None or target is None:
            continue
        if result["committing_s"] is None and any(n > before.get(tp, 0) for tp, n in seen.items()):
            result["committing_s"] = round(now, 1)
        if all(seen.get(tp, 0) >= end for tp, end in target.items()):
            result["caught_up_s"] = round(now, 1)
            result["committing_s"] = result["committing_s"] or round(now, 1)
            break
    return result


async def run_restarts(
    broker: EmbeddedBroker,
    control: Control,
    start: datetime,
    span: timedelta,
    committed: Offsets,
    ends: Offsets,
    last_output: Callable[[], float],
    note: Callable[..., None],
) -> list[dict[str, Any]]:
    """Every restart of :data:`PLAN` in turn; the recovery of each."""
    results = []
    for restart in PLAN:
        if restart.at is None:
            await control.burst_started.wait()
            await asyncio.sleep(2.0)
        else:
            await _wait_for_stream(control, start, span * restart.at)
        note("broker-restart", signal="kill" if restart.kill else "term", down_s=restart.down_s)
        result = await restart_once(
            broker, restart, committed, ends, last_output, lambda: control.produced
        )
        note("broker-recovered", **result)
        results.append(result)
    return results


async def retried_inputs(
    bootstrap: str, produced: list[Produced], partitions: int, fetch_max: int
) -> list[Produced]:
    """Input records at offsets the driver was never told of whose key and value are
    those of a record it was told of on the same partition: a producer's retry."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        max_partition_fetch_bytes=fetch_max // 2,
        fetch_max_bytes=fetch_max,
    )
    tps = [TopicPartition(t, p) for t in EVENT_TOPICS.values() for p in range(partitions)]
    stored: dict[tuple[str, int, int], tuple[bytes | None, bytes | None]] = {}
    await consumer.start()
    try:
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        while batch := await consumer.getmany(timeout_ms=3000, max_records=20_000):
            for tp, messages in batch.items():
                for m in messages:
                    stored[(tp.topic, tp.partition, m.offset)] = (m.key, m.value)
    finally:
        await consumer.stop()
    told = {(p.topic, p.partition, p.offset): p for p in produced}
    by_bytes = {
        (where[0], where[1], *stored[where]): p for where, p in told.items() if where in stored
    }
    retried = []
    for where, (key, value) in sorted(stored.items()):
        twin = by_bytes.get((where[0], where[1], key, value))
        if where not in told and twin is not None:
            retried.append(dataclasses.replace(twin, offset=where[2]))
    return retried
