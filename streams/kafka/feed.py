"""The worker's input: the raw event partitions that match the table partitions it owns.

Faust runs the consumer group and owns the district table: it assigns each
worker a set of the table's changelog partitions, recovers them, keeps standby
replicas, and moves them when workers come and go. This module reads the five
input topics' partitions *with the same numbers* (the input topics are keyed by
district and co-partitioned with the table), straight from aiokafka in batches,
and hands each batch to a handler. Faust's per-event stream costs about 100 µs
an event on two cores, several times the work the handler does; reading
partitions in bulk removes that cost while the state still lives in a Faust
table and moves with its partition.

Time for the idle rules is :class:`~streams.kafka.pause.HearingClock` time
(running seconds while the broker answers: :attr:`InputFeed.hearing`), and a
pause longer than half the session timeout makes the feed stop handling input
until the consumer group has had time to say whether this worker still owns its
partitions (:class:`~streams.kafka.pause.PauseFence`). Whether the input is read
to its end is asked of the broker (:meth:`InputFeed.caught_up`): a fetch
answered after the question was put, with nothing beyond what was handled.

Progress is committed as Kafka consumer offsets of a group of its own,
``<app id>-input``, which never has members (manual assignment), so it works
alike on Apache Kafka and on the embedded broker. The order is: per batch,
outputs acknowledged and table values updated; then, at most once a second,
the table's changelog written and flushed (``flush_state``) and offsets
committed. A crash anywhere in between redelivers events that
the table recognises by their offsets (:mod:`streams.state.windows`), so nothing is
lost and nothing is counted twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.partitioner import murmur2

from streams.core import metrics
from streams.kafka.pause import HearingClock, LiveClock, PauseFence

log = logging.getLogger(__name__)


class Record(Protocol):
    """What the handler reads of a consumed record (aiokafka's ConsumerRecord fits)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


@dataclass
class InputRecord:
    """A :class:`Record` held in memory: to run the handler without Kafka (tests, benches)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


Handler = Callable[[Sequence[Record]], Awaitable[None]]


class Fenced(Exception):
    """The worker was paused long enough to have lost its partitions: write nothing."""


def transient(exc: BaseException) -> bool:
    """A failure of the broker or the network, which passes: retry, never dead-letter.

    A record too large for the broker is no such failure: retrying changes nothing.
    """
    from aiokafka.errors import KafkaError, MessageSizeTooLargeError, RecordTooLargeError

    if isinstance(exc, MessageSizeTooLargeError | RecordTooLargeError):
        return False
    return isinstance(exc, KafkaError | asyncio.TimeoutError | ConnectionError)


class InputFeed:
    """Consumes the input topics' partitions this worker owns; commits after each batch.

    ``handler`` is called with one batch at a time, under :attr:`lock`; whoever else
    changes the state the handler writes (the idle timer) takes the same lock.
    ``flush_state`` must make everything the handler wrote durable; it runs before
    each offset commit.
    """

    def __init__(
        self,
        *,
        bootstrap: str,
        group_id: str,
        topics: Iterable[str],
        handler: Handler,
        flush_state: Callable[[], Awaitable[None]],
        client_options: dict[str, Any] | None = None,
        batch_max: int = 2000,
        batch_within_s: float = 0.2,
        commit_interval_s: float = 1.0,
        on_crash: Callable[[BaseException], Awaitable[None]] | None = None,
        advance_on_handle: bool = True,
        session_timeout_s: float = 6.0,
        clock: LiveClock | None = None,
    ) -> None:
        self.topics = tuple(topics)
        self.clock = clock or LiveClock(pause_s=max(1.0, session_timeout_s / 2))
        # after a pause, how long the group may take to say whether we lost our partitions
        self.fence = PauseFence(self.clock, fence_s=2 * session_timeout_s)
        # the clock silence is measured by: running time while the broker answers
        self._heard: float | None = None  # wall time records were last handed over
        self.hearing = HearingClock(self.clock.now, self._broker_sign)
        # False: a record counts as done only when the handler's owner says so
        # (:meth:`advance`), e.g. once a delivery it started has finished
        self.advance_on_handle = advance_on_handle
        self.handler = handler
        self.flush_state = flush_state
        self.batch_max = batch_max
        self.batch_within_ms = max(1, int(batch_within_s * 1000))
        self.commit_interval_s = commit_interval_s
        self.on_crash = on_crash
        self._bootstrap = bootstrap
        self._group_id = group_id
        self._options = dict(client_options or {})
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self.lock = asyncio.Lock()
        self.partitions: frozenset[int] = frozenset()
        # next offset to handle per input partition: where reading started, then past
        # the last batch handled
        self._done: dict[TopicPartition, int] = {}
        self._committed: dict[TopicPartition, int] = {}
        self._last_commit = 0.0
        # bumped on every (re)assignment: a fetch that straddles one is dropped
        self._generation = 0
        self._partition_counts: dict[str, int] = {}
        self._assigned = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._started = False

    # -- lifecycle ---------------------------------------------------------------
    @property
    def consumer(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            raise RuntimeError("the input feed is not started")
        return self._consumer

    @property
    def producer(self) -> AIOKafkaProducer:
        if self._producer is None:
            raise RuntimeError("the input feed is not started")
        return self._producer

    async def start(self) -> None:
        # aiokafka clients belong to the running event loop: made here, not in __init__
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self._bootstrap,
            group_id=self._group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=4 * 1024 * 1024,
            fetch_max_bytes=16 * 1024 * 1024,
            **self._options,
        )
        self._producer = AIOKafkaProducer(
            bootstrap_servers=self._bootstrap,
            acks="all",
            linger_ms=5,
            max_batch_size=256 * 1024,
            **self._options,
        )
        await self.producer.start()
        await self.consumer.start()
        self._started = True
        self.clock.start()
        self._task = asyncio.create_task(self._guarded_run(), name="input-feed")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._started:
            async with self.lock:
                with contextlib.suppress(Exception):
                    await self._commit(force=True)
            await self.consumer.stop()
            await self.producer.stop()
            await self.clock.stop()
            self._started = False

    @property
    def running(self) -> bool:
        return self._started

    # -- assignment ----------------------------------------------------------------
    async def assign(self, partitions: Iterable[int]) -> None:
        """Read these partitions of every input topic (after their state is recovered)."""
        parts = frozenset(partitions)
        async with self.lock:
            if parts == self.partitions:
                return
            await self._try_commit(force=True)
            self._generation += 1
            self.fence.settle()
            self.partitions = parts
            # a partition moved to another worker is that worker's to report: a last
            # value left here would be summed with the new owner's
            for tp in self._done:
                if tp.partition not in parts:
                    metrics.consumer_lag.remove(tp.topic, str(tp.partition))
            self._done.clear()
            self._committed.clear()
            tps = [TopicPartition(t, p) for t in self.topics for p in sorted(parts)]
            # with a group id, aiokafka starts each partition at its committed offset
            # (or the earliest one); knowing it tells a caught-up partition from one
            # with events still to read
            self.consumer.assign(tps)
            for tp in tps:
                self._done[tp] = self._committed[tp] = await self.consumer.position(tp)
            if parts:
                self._assigned.set()
            else:
                self._assigned.clear()
            log.info("reading partitions %s of %d input topics", sorted(parts), len(self.topics))

    async def revoke(self) -> None:
        """Stop reading: finish the batch in hand, make it durable, commit, let go."""
        await self.assign(())

    # -- reading -------------------------------------------------------------------
    def progress(self, topic: str, partition: int) -> tuple[int | None, int | None]:
        """(next offset to handle, log-end offset as of the last fetch) of a partition.

        Either is None while unknown: before the partition's starting position is
        resolved, and before its first fetch.
        """
        if self._consumer is None:
            return None, None
        tp = TopicPartition(topic, partition)
        return self._done.get(tp), self._consumer.highwater(tp)

    async def _guarded_run(self) -> None:
        try:
            await self._run()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            # a failing handler is a bug: stop the worker rather than hang quietly
            log.exception("input feed crashed")
            if self.on_crash is not None:
                await self.on_crash(exc)
            raise

    def fenced(self) -> bool:
        """Whether a recent pause leaves it open if this worker still owns its partitions:
        while it does, nothing is handled or written."""
        return self.fence.up()

    def caught_up(self, partitions: Iterable[int], since: float) -> bool:
        """Whether the broker, answering after ``since`` (wall seconds), holds nothing
        more on ``partitions`` of the input topics than this worker has handled.

        The high watermark of a Fetch response is the log end, on every broker; one
        processed after ``since`` comes from a fetch at least as recent as the
        previous poll.
        """
        if self._consumer is None or self.fenced():
            return False
        since_ms = since * 1000
        wanted = frozenset(partitions)
        for tp, done in self._done.items():
            if tp.partition not in wanted:
                continue
            highwater = self._consumer.highwater(tp)
            polled = self._consumer.last_poll_timestamp(tp)
            if highwater is None or polled is None or polled < since_ms or highwater > done:
                return False
        return True

    def _broker_sign(self) -> float | None:
        return broker_sign(self._consumer, self._done, self._heard)

    def _rewind(self) -> None:
        """Read again from the last handled offsets (a fetch was taken and not handled)."""
        for tp, done in self._done.items():
            with contextlib.suppress(Exception):  # a partition unassigned meanwhile
                self.consumer.seek(tp, done)

    async def _run(self) -> None:
        backoff = 0.5
        while True:
            await self._assigned.wait()
            generation = self._generation
            if self.fenced():
                await asyncio.sleep(0.2)
                continue
            try:
                fetched = await self.consumer.getmany(
                    timeout_ms=self.batch_within_ms, max_records=self.batch_max
                )
            except Exception:  # a partition list changed under the fetch, a broker hiccup
                log.exception("fetch failed; retrying")
                await asyncio.sleep(0.5)
                continue
            self.hearing.now()  # notices a gap in the broker's answers as it ends
            async with self.lock:
                if generation != self._generation:
                    continue  # assigned anew meanwhile: positions were reset
                records = [r for batch in fetched.values() for r in batch]
                if records:
                    self._heard = time.time()
                    if self.fenced():
                        self._rewind()
                        continue
                    try:
                        await self.handler(records)
                    except Fenced:
                        log.warning("paused mid-batch: the batch is dropped and read again")
                        self._rewind()
                        continue
                    except Exception as exc:
                        if not transient(exc):
                            raise
                        log.warning(
                            "broker unavailable (%s); the batch is read again in %.1f s",
                            type(exc).__name__,
                            backoff,
                        )
                        self._rewind()
                        await asyncio.sleep(backoff)
                        backoff = min(30.0, backoff * 2)
                        continue
                    backoff = 0.5
                    if self.advance_on_handle:
                        for tp, batch in fetched.items():
                            self._done[tp] = batch[-1].offset + 1
                self._report_lag()
                await self._try_commit()

    def _report_lag(self) -> None:
        report_lag(self.consumer, self._done)

    def advance(self, tp: TopicPartition, next_offset: int) -> None:
        """Everything before ``next_offset`` of an assigned partition is done: commit it."""
        if tp in self._done and next_offset > self._done[tp]:
            self._done[tp] = next_offset

    async def _try_commit(self, force: bool = False) -> None:
        """Commit, or leave the offsets for a later commit while the broker is away: a
        batch handled and not committed is read again (at least once), never lost."""
        try:
            await self._commit(force)
        except Fenced:
            log.info("offsets not committed: a pause left it open whether this worker owns them")
        except Exception as exc:
            if not transient(exc):
                raise
            log.warning("offsets not committed (%s); a later commit takes them", type(exc).__name__)

    async def _commit(self, force: bool = False) -> None:
        offsets = {tp: o for tp, o in self._done.items() if self._committed.get(tp) != o}
        if not offsets or (self.fenced() and not force):
            return
        now = time.monotonic()
        if not force and now - self._last_commit < self.commit_interval_s:
            return
        await self.flush_state()
        await self.consumer.commit(offsets)
        self._committed.update(offsets)
        self._last_commit = now

    # -- writing -------------------------------------------------------------------
    def outputs(self) -> Outputs:
        """A collector for the output records of one batch."""
        return Outputs(self.producer, self._partition_counts)


_EVENTS_OUT: dict[str, Any] = {}  # label children of events_out, bound once per topic


class Outputs:
    """Output records of one batch, sent as one Kafka record batch per topic partition.

    Records go to the partition Kafka's default partitioner would pick (murmur2 of
    the key; keyless records are spread round-robin), so keyed outputs stay
    co-partitioned with the inputs. Handing the producer whole batches costs a
    fraction of sending record by record.
    """

    def __init__(self, producer: AIOKafkaProducer, partition_counts: dict[str, int]) -> None:
        self._producer = producer
        self._counts = partition_counts
        self._records: dict[str, list[tuple[bytes | None, bytes]]] = {}

    def add(self, topic: str, key: bytes | None, value: bytes) -> None:
        self._records.setdefault(topic, []).append((key, value))

    def __len__(self) -> int:
        return sum(len(r) for r in self._records.values())

    async def send(self, *, wait: bool = True, counted: bool = True) -> list[asyncio.Future[Any]]:
        """Send everything and wait until the broker has acknowledged all of it.

        ``wait=False``: hand everything to the producer and return the futures of the
        acknowledgements instead. ``counted=False``: not output records (a table's
        changelog): leave them out of ``cityvitals_pipeline_events_out_total``.
        """
        futures: list[asyncio.Future[Any]] = []
        for topic, records in self._records.items():
            count = self._counts.get(topic)
            if count is None:
                count = self._counts[topic] = len(await self._producer.partitions_for(topic))
            per_partition: dict[int, list[tuple[bytes | None, bytes]]] = {}
            for n, (key, value) in enumerate(records):
                p = n % count if key is None else key_partition(key, count)
                per_partition.setdefault(p, []).append((key, value))
            for partition, items in per_partition.items():
                batch = self._producer.create_batch()
                for key, value in items:
                    if batch.append(key=key, value=value, timestamp=None) is None:
                        futures.append(
                            await self._producer.send_batch(batch, topic, partition=partition)
                        )
                        batch = self._producer.create_batch()
                        if batch.append(key=key, value=value, timestamp=None) is None:
                            raise ValueError(f"a record for {topic} is larger than a whole batch")
                futures.append(await self._producer.send_batch(batch, topic, partition=partition))
        sent = {topic: len(r) for topic, r in self._records.items()} if counted else {}
        self._records.clear()
        if not wait:
            return futures
        if futures:
            await asyncio.gather(*futures)
        for topic, n in sent.items():
            counter = _EVENTS_OUT.get(topic)
            if counter is None:
                counter = _EVENTS_OUT[topic] = metrics.events_out.labels(topic)
            counter.inc(n)
        return []


def report_lag(consumer: AIOKafkaConsumer, done: dict[TopicPartition, int]) -> None:
    """Set the input lag gauge of each partition: log end as of the last fetch minus done."""
    for tp, offset in done.items():
        highwater = consumer.highwater(tp)
        if highwater is not None:
            metrics.consumer_lag.labels(tp.topic, str(tp.partition)).set(max(0, highwater - offset))


def broker_sign(
    consumer: AIOKafkaConsumer | None, partitions: Iterable[TopicPartition], heard: float | None
) -> float | None:
    """The later of ``heard`` and the newest fetch answer (wall seconds) for ``partitions``."""
    newest = heard
    if consumer is not None:
        for tp in partitions:
            polled = consumer.last_poll_timestamp(tp)
            if polled is not None and (newest is None or polled / 1000 > newest):
                newest = polled / 1000
    return newest


@functools.lru_cache(maxsize=4096)
def key_partition(key: bytes, partitions: int) -> int:
    """Kafka's default partitioner (Java client, aiokafka, kafka-python alike)."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions
