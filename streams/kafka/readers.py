"""Reading a backlog's records in other processes while the worker counts them.

What a record gives before any state is asked depends on the record, the batch's clock
and the configuration alone (:meth:`~streams.voice.ingest.AppealStage.read_any`): a
department's event is decoded, checked, de-identified and written as its reading (or
its dead letter); an appeal is decoded, read by its channel's adapter, de-identified,
categorised and scored for emotion. That is most of what a record costs (about 20 µs a
reading and 80 µs an appeal, py-spy of the worker in ``bench/throughput.py --appeals
0.1``), and only the worker's own process may count, detect and write state. So a batch
of at least ``min_batch`` records, a backlog's, is shared:

* it is cut into chunks of ``chunk`` records and sent whole to each of ``processes``
  reader processes (:meth:`BatchReaders.submit`);
* the readers claim chunks from the front, the worker from the back, each claim one
  step of a counter in shared memory under its lock, so no chunk is read twice and
  both are busy until they meet;
* the worker counts the chunks in order (:meth:`BatchReaders.in_order`), each once it
  is read, by a reader or by itself;
* a live batch of a few records is read in the worker alone: a round trip to another
  process would cost more than it saves.

Why claims and not :class:`concurrent.futures.ProcessPoolExecutor`: the executor's
thread that hands each chunk over and takes its result needs the interpreter lock,
which the worker holds while it reads, so its reader sat idle: in the throughput
benchmark (``--appeals 0.1``) it read 3 to 6 of a batch's 20 chunks; with claims, 11
to 12 (54,000 to 59,500 of 100,000 records). Why the worker reads a chunk whenever the
one in turn is not back yet, rather than wait for the reader that has it: a reader
reads faster than the worker (about 13 µs a record against 23), but while the worker
detects and writes state after a batch's records, the reader has nothing to do; waiting
gave a rate ratio to the tree before appeals of 0.734 against 0.843 (medians of three
pairs each, one session). Figures: ``docs/appeals.md``.

The readers start with the worker (they are needed first when it catches up after a
stop): each imports the modules and loads the lexicon, a second or two, and until they
say they are ready the worker reads alone. A reader that dies, or takes longer than
``timeout_s`` for a chunk, loses nothing: the same record gives the same result
anywhere, so the worker reads what is left of the batch itself, and the readers start
again, at most once a minute. They are started with ``spawn`` (the worker runs
threads, whose locks ``fork`` would copy) and leave when the worker does, however it
ends: each watches the worker's process sentinel. Personal identifiers a reader
replaces are counted in the worker's metrics like its own.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import multiprocessing.connection
import os
import queue
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import datetime
from typing import Any

from streams.core import metrics
from streams.core.config import CityConfig
from streams.core.settings import Settings
from streams.voice.appeals import AppealsConfig

log = logging.getLogger(__name__)

MIN_BATCH = 2000  # records in a batch worth sharing with the readers
CHUNK = 500  # records claimed at a time
TIMEOUT_S = 10.0  # the longest the worker waits for a reader's chunk
RESTART_S = 60.0  # the least time between two starts of the readers
POLL_S = 0.02  # how long the worker blocks at a time while it waits for a chunk
SCRUBBED = "cityvitals_ingest_identifiers_scrubbed_total"
_BATCH, _FRONT, _BACK = range(3)  # the claims: the batch's number, next from the front, back

#: (topic, partition, offset, key, value) of a record, as a reader gets it
Item = tuple[str, int, int, bytes | None, bytes]


def _scrubbed() -> float:
    return metrics.REGISTRY.get_sample_value(SCRUBBED) or 0.0


def _serve(
    start: tuple[CityConfig, Settings, AppealsConfig | None],
    commands: multiprocessing.connection.Connection,
    results: multiprocessing.connection.Connection,
    claims: Any,
) -> None:
    """A reader process: build the worker's stages alike, say so, then read the chunks
    it claims of each batch it is sent, until the worker ends. A thread of its own
    sends the results, so that reading goes on while the worker has not yet taken them
    (a pipe holds 64 KiB, a chunk's results some 200)."""
    from streams.kafka.processor import ingestor_of
    from streams.voice.ingest import AppealStage

    cfg, settings, appeals = start
    stage = AppealStage(ingestor_of(cfg, settings), appeals)
    _ = stage.ingest  # the lexicon, loaded before the reader says it is ready
    read_any = stage.read_any
    parent = multiprocessing.parent_process()
    if parent is not None:
        threading.Thread(target=_leave_with, args=(parent.sentinel,), daemon=True).start()
    outbox: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
    threading.Thread(target=_send, args=(outbox, results), daemon=True).start()
    outbox.put(("ready", os.getpid(), None, 0.0))
    while True:
        try:
            batch, now, chunks = commands.recv()
        except EOFError:
            return
        assert isinstance(now, datetime)
        while True:
            with claims.get_lock():
                if claims[_BATCH] != batch or claims[_FRONT] > claims[_BACK]:
                    break
                k = claims[_FRONT]
                claims[_FRONT] = k + 1
            before = _scrubbed()
            reads = [read_any(t, p, o, key, value, now) for t, p, o, key, value in chunks[k]]
            outbox.put((batch, k, reads, _scrubbed() - before))


def _send(
    outbox: queue.SimpleQueue[tuple[Any, ...]], results: multiprocessing.connection.Connection
) -> None:
    while True:
        try:
            results.send(outbox.get())
        except OSError:  # the worker has gone
            os._exit(0)


def _leave_with(sentinel: int) -> None:
    """Leave when the worker has ended (killed, it cannot say so)."""
    multiprocessing.connection.wait([sentinel])
    os._exit(0)


class Shared:
    """A batch sent to the readers: its number and chunks."""

    def __init__(self, number: int, chunks: list[Sequence[Item]]) -> None:
        self.number, self.chunks = number, chunks


class ReadersFailed(Exception):
    """A reader died or took too long: the worker reads the rest."""


class BatchReaders:
    """Reader processes for a worker's backlog (see the module's docstring)."""

    def __init__(
        self,
        cfg: CityConfig,
        settings: Settings,
        appeals: AppealsConfig | None,
        *,
        processes: int,
        min_batch: int = MIN_BATCH,
        chunk: int = CHUNK,
        timeout_s: float = TIMEOUT_S,
    ) -> None:
        self._start_args = (cfg, settings, appeals)
        self.processes, self.min_batch, self.chunk = processes, min_batch, chunk
        self.timeout_s, self.restart_s = timeout_s, RESTART_S
        self._context = multiprocessing.get_context("spawn")
        self._procs: list[Any] = []
        self._commands: list[multiprocessing.connection.Connection] = []
        self._results: list[multiprocessing.connection.Connection] = []
        self._claims: Any = None
        self._ready: set[int] = set()
        self._number = 0
        self._started_at: float | None = None  # None: never asked to start

    def start(self) -> None:
        """Start the reader processes (they say when they are ready)."""
        if self.processes < 1 or self._procs:
            return
        self._started_at = time.monotonic()
        ctx = self._context
        self._claims = ctx.Array("q", [-1, 0, -1])
        for _ in range(self.processes):
            their_commands, our_commands = ctx.Pipe(duplex=False)
            our_results, their_results = ctx.Pipe(duplex=False)
            process = ctx.Process(
                target=_serve,
                args=(self._start_args, their_commands, their_results, self._claims),
                name="cityvitals-reader",
                daemon=True,
            )
            process.start()
            # only the reader holds its ends: a reader that dies mid-message is an end
            # of file to the worker, not a read that waits for ever
            their_commands.close()
            their_results.close()
            self._procs.append(process)
            self._commands.append(our_commands)
            self._results.append(our_results)

    @property
    def ready(self) -> bool:
        """Every reader process has started and loaded its lexicon."""
        if not self._procs:
            return False
        if len(self._ready) < len(self._procs):
            try:
                self._take({})
            except ReadersFailed:
                return False  # submit starts them again
        return len(self._ready) == len(self._procs)

    def pids(self) -> list[int]:
        """The reader processes' ids, once they are ready."""
        return sorted(self._ready) if self.ready else []

    def submit(self, items: Sequence[Item], now: datetime) -> Shared | None:
        """Send a batch's records to the readers; None when the worker reads them alone
        (too few, or the readers not ready)."""
        if self.processes < 1 or len(items) < self.min_batch:
            return None
        if not self._procs or any(p.exitcode is not None for p in self._procs):
            if self._procs:
                self._restart("a reader process ended")
            started = self._started_at
            if started is not None and time.monotonic() - started >= self.restart_s:
                self.start()
            return None
        if not self.ready:
            return None
        self._number += 1
        size = self.chunk
        chunks = [items[i : i + size] for i in range(0, len(items), size)]
        with self._claims.get_lock():
            self._claims[_BATCH] = self._number
            self._claims[_FRONT], self._claims[_BACK] = 0, len(chunks) - 1
        try:
            for conn in self._commands:
                conn.send((self._number, now, chunks))
        except OSError as exc:  # a reader's end of its pipe is gone
            self._restart(f"a reader could not take the batch ({exc})")
            return None
        return Shared(self._number, chunks)

    async def in_order(
        self, shared: Shared, read_here: Callable[[Sequence[Item]], list[Any]]
    ) -> AsyncIterator[tuple[Sequence[Item], list[Any]]]:
        """Each chunk and its reads, in order; the worker reads (``read_here``) the
        chunks it claims, and, when the readers fail, every chunk they have not read."""
        chunks, done = shared.chunks, dict[int, list[Any]]()
        broken = False
        for i, chunk in enumerate(chunks):
            while i not in done:
                if broken:
                    done[i] = read_here(chunk)
                    break
                try:
                    self._take(done, shared.number)
                    if i in done:
                        break
                    k = self._claim_back()
                    if k is None:  # the chunk in turn is with a reader
                        await self._wait(done, shared.number)
                    else:
                        done[k] = read_here(chunks[k])
                except ReadersFailed as exc:
                    broken = True
                    self._restart(str(exc))
            yield chunk, done.pop(i)

    def _claim_back(self) -> int | None:
        """The last chunk no one has claimed, now the worker's; None when all are."""
        with self._claims.get_lock():
            back = self._claims[_BACK]
            if back < self._claims[_FRONT]:
                return None
            self._claims[_BACK] = back - 1
            return int(back)

    def _take(self, done: dict[int, list[Any]], number: int = -1) -> None:
        """Take every result the readers have sent so far (a stale batch's is dropped);
        :class:`ReadersFailed` when a reader's pipe has ended."""
        for conn in self._results:
            while conn.poll(0):
                self._keep(self._receive(conn), done, number)

    @staticmethod
    def _receive(conn: multiprocessing.connection.Connection) -> tuple[Any, ...]:
        try:
            got: tuple[Any, ...] = conn.recv()
        except (EOFError, OSError) as exc:
            raise ReadersFailed(f"a reader process ended ({type(exc).__name__})") from None
        return got

    def _keep(self, got: tuple[Any, ...], done: dict[int, list[Any]], number: int) -> None:
        batch, k, reads, scrubbed = got
        if batch == "ready":
            self._ready.add(k)
        elif batch == number:
            done[k] = reads
            metrics.records_read_aside.inc(len(reads))
            if scrubbed:
                metrics.identifiers_scrubbed.inc(scrubbed)

    async def _wait(self, done: dict[int, list[Any]], number: int) -> None:
        """Wait for the readers' next result, letting the event loop run between short
        blocking waits; :class:`ReadersFailed` when a reader ends or takes too long."""
        deadline = time.monotonic() + self.timeout_s
        while True:
            ready = multiprocessing.connection.wait(self._results, timeout=POLL_S)
            if ready:
                for conn in ready:
                    assert isinstance(conn, multiprocessing.connection.Connection)
                    self._keep(self._receive(conn), done, number)
                return
            if any(p.exitcode is not None for p in self._procs):
                raise ReadersFailed("a reader process ended mid-batch")
            if time.monotonic() > deadline:
                raise ReadersFailed(f"no chunk from the readers in {self.timeout_s:g} s")
            await asyncio.sleep(0)

    def _restart(self, why: str) -> None:
        log.warning("%s; the worker reads alone until the readers start again", why)
        metrics.batch_reader_restarts.inc()
        self.close()

    def close(self) -> None:
        """Stop the reader processes (a later batch starts them again)."""
        procs, self._procs, self._ready = self._procs, [], set()
        for conn in [*self._commands, *self._results]:
            conn.close()
        self._commands, self._results = [], []
        for process in procs:
            process.kill()
        for process in procs:
            process.join(timeout=5)

    def claimed_front(self) -> int:
        """How many chunks of the batch in hand the readers have claimed."""
        with self._claims.get_lock():
            return int(self._claims[_FRONT])
