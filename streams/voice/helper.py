"""Appeals read ahead of the worker, in helper processes on other cores.

An appeal's ingest up to the repeat runs (decode, the channel's adapter with
de-identification, the key and clock checks, the emotion and the reading) depends on
nothing but the record, the batch's clock, the configuration and the de-identification
key (:class:`~streams.voice.ingest.AppealReader`), and is most of an appeal's cost. The
worker's handler runs on one core, so at the start of a batch that holds appeals it sends
them to ``CITYVITALS_APPEAL_PROCESSES`` helper processes, in chunks of up to
:data:`LAST_CHUNK` records, and the helpers read them **from the batch's end**, while the
handler's pass goes from its start. When the pass reaches an appeal whose answer has come
(:meth:`HelperReader.take`), it takes it; otherwise it reads the appeal itself and says
so in shared memory (``passed``), and the helpers skip every appeal up to that one. So
the handler never waits for a helper, and the two meet somewhere in the batch: near its
start when appeals are few among its events, near its middle when the batch is all
appeals (a partition's backlog), each core reading what the other has not. What depends
on the worker's state stays in the handler, in the records' order: the repeat runs,
which name the first appeal of a run in the reading
(:func:`~streams.voice.ingest.repeating`). The outputs are the same bytes with helpers or
without (``tests/voice/test_helper.py``).

Measured with ``bench/throughput.py --events 100000 --appeals 0.1`` (three pairs
alternated): reading from the end without waiting gave 1.09 times the rate of helpers
that read from the start while the handler waited for each answer (22,464 against
20,500 events/s, medians), as a backlog's batches come a partition at a time and some
are nearly all appeals. Each helper has a pipe of its own that the handler writes and
reads itself: a :class:`concurrent.futures.ProcessPoolExecutor` moves calls and answers
through threads of the worker's process, which wait for the interpreter lock the
handler holds (over ``bench/processing.py --events 50000 --appeals 0.1`` the handler
waited 0.23 s a run for answers that way, 0.04 s with its own pipes).

A helper that fails costs the worker nothing but time: when its answers cannot be read
(the process died, or the answers still owed for a batch took :data:`ANSWER_TIMEOUT_S`),
the worker reads the rest itself, logs the failure, stops the helpers and starts new
ones :data:`RESTART_AFTER_S` later; it reads its appeals itself until they have loaded
their lexicons (a second or two). A helper ends when its worker does, even by SIGKILL:
its pipe then reads end-of-file. A batch with fewer than :data:`MIN_APPEALS` appeals is
read in the worker.
"""

from __future__ import annotations

import logging
import multiprocessing
import time
from collections import deque
from collections.abc import Iterable
from multiprocessing.connection import Connection
from multiprocessing.sharedctypes import Synchronized
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from datetime import datetime

    from streams.core.config import CityConfig
    from streams.ingest.catalogue import CatalogueCheck
    from streams.voice.appeals import AppealsConfig
    from streams.voice.ingest import Read

#: an appeal record as the handler hands it over: partition, offset, key and value
Record = tuple[int, int, bytes | None, bytes]
#: as a helper takes it: its number among the worker's appeals first
_Numbered = tuple[int, int, int, bytes | None, bytes]

log = logging.getLogger(__name__)

FIRST_CHUNK = 4
LAST_CHUNK = 16
MIN_APPEALS = 8
#: seconds the answers still owed for a batch may take to come (the helpers skip what
#: the worker read itself, so they come at once: only a helper that hangs reaches it)
ANSWER_TIMEOUT_S = 30.0
#: seconds after a helper failed before another is started
RESTART_AFTER_S = 30.0
_READY = "ready"


class ReaderSetup(NamedTuple):
    """What a helper builds its :class:`~streams.voice.ingest.AppealReader` from."""

    appeals: AppealsConfig
    deid_key: bytes
    catalogue: CatalogueCheck
    cfg: CityConfig
    max_bytes: int
    max_depth: int


def _serve(conn: Connection, setup: ReaderSetup, passed: Synchronized[int]) -> None:
    """A helper process: reads each batch's chunks of appeal records and answers each
    chunk with its reads, in the order sent, until its worker closes the pipe or dies. A
    record the worker has passed (``passed``: the number of the last appeal it read
    itself) is answered None without being read."""
    from streams.ingest.deid import Deidentifier
    from streams.voice.channels import AppealIntake
    from streams.voice.emotion import Scorer
    from streams.voice.ingest import AppealReader

    intake = AppealIntake(setup.appeals, Deidentifier(setup.deid_key))
    reader = AppealReader(
        intake, Scorer(), setup.catalogue, setup.cfg, setup.max_bytes, setup.max_depth
    )
    read = reader.read
    conn.send(_READY)
    while True:
        try:
            now, chunks = conn.recv()
        except (EOFError, OSError):
            return  # the worker closed its end, or died
        for chunk in chunks:
            conn.send(
                [
                    None if g <= passed.value else read(value, key, now, p, o)
                    for g, p, o, key, value in chunk
                ]
            )


class _Helper:
    """One helper process and the worker's end of its pipe."""

    def __init__(self, setup: ReaderSetup, passed: Synchronized[int]) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.conn, theirs = ctx.Pipe(duplex=True)
        self.process = ctx.Process(
            target=_serve, args=(theirs, setup, passed), name="appeal-helper", daemon=True
        )
        self.process.start()
        theirs.close()  # the helper's end is its own: it reads EOF when the worker dies
        self.ready = False
        self.owed: deque[int] = deque()  # the numbers of the chunks it has to answer

    def check_ready(self) -> bool:
        if not self.ready and self.conn.poll(0):
            self.ready = self.conn.recv() == _READY
        return self.ready

    def send(self, now: datetime, numbers: list[int], chunks: list[list[_Numbered]]) -> None:
        self.conn.send((now, chunks))
        self.owed.extend(numbers)

    def answer(self, wait: float) -> tuple[int, list[Read | None]] | None:
        """The next chunk's number and reads, if it comes within ``wait`` seconds."""
        if not self.owed:
            return None
        if not self.conn.poll(wait):
            if wait:
                raise TimeoutError(f"no answer within {wait:g} s")
            return None
        reads: list[Read | None] = self.conn.recv()
        return self.owed.popleft(), reads

    def stop(self) -> None:
        self.conn.close()
        if self.process.is_alive():
            self.process.kill()
        self.process.join(timeout=5)


class HelperReader:
    """A worker's helper processes, reading the appeals of each batch ahead of it.

    The handler never waits for them within a batch: an appeal whose answer has not come
    when the pass reaches it is read by the worker itself, and the helpers, which read
    from the batch's end, skip it and every appeal before it (the ``passed`` number, in
    shared memory)."""

    def __init__(self, setup: ReaderSetup, processes: int = 1) -> None:
        self._setup = setup
        self._processes = processes
        self._passed = multiprocessing.get_context("spawn").Value("q", -1, lock=False)
        self._helpers: list[_Helper] = []
        self._pending: dict[tuple[int, int], tuple[int, int, int]] = {}
        self._answers: dict[int, list[Read | None]] = {}
        self._numbered = 0  # the appeals handed over so far
        self._restart_at = 0.0
        self.read_ahead = 0  # appeals a helper read
        self._start()

    def _start(self) -> None:
        self._helpers = [_Helper(self._setup, self._passed) for _ in range(self._processes)]

    def ready(self) -> bool:
        """Whether every helper has loaded its lexicons and takes work; starts them when
        none run (not within :data:`RESTART_AFTER_S` of a failure)."""
        if not self._helpers and time.monotonic() >= self._restart_at:
            self._start()
        try:
            return bool(self._helpers) and all(h.check_ready() for h in self._helpers)
        except (EOFError, OSError) as exc:  # one died while starting
            self._failed(exc)
            return False

    def submit(self, appeals: Iterable[Record], now: datetime) -> int:
        """Hand a batch's appeals to the helpers, in the order the handler meets them,
        with the batch's clock; forgets the previous batch's. Returns how many were
        handed over (none when too few, or while no helper is ready)."""
        records = list(appeals)
        try:
            self._settle()
            if len(records) < MIN_APPEALS or not self.ready():
                return 0
            helpers = self._helpers
            numbers: list[list[int]] = [[] for _ in helpers]
            chunks: list[list[list[_Numbered]]] = [[] for _ in helpers]
            size, i, number, g = FIRST_CHUNK, 0, 0, self._numbered
            while i < len(records):
                chunk = []
                for n, (partition, offset, key, value) in enumerate(records[i : i + size]):
                    self._pending[(partition, offset)] = (number, n, g)
                    chunk.append((g, partition, offset, key, value))
                    g += 1
                numbers[number % len(helpers)].append(number)
                chunks[number % len(helpers)].append(chunk)
                i, number = i + size, number + 1
                size = min(2 * size, LAST_CHUNK)
            self._numbered = g
            # from the batch's end: the handler reads from its start, and they meet
            numbers = [list(reversed(x)) for x in numbers]
            chunks = [list(reversed(x)) for x in chunks]
            # the first chunk alone, so that its helper starts on it before the rest
            # has crossed the pipe (its answer is small enough for the pipe's buffer)
            helpers[0].send(now, numbers[0][:1], chunks[0][:1])
            numbers[0], chunks[0] = numbers[0][1:], chunks[0][1:]
            for helper, theirs, sent in zip(helpers, numbers, chunks, strict=True):
                if sent:
                    helper.send(now, theirs, sent)
        except Exception as exc:  # a helper gone since the last batch
            self._failed(exc)
            return 0
        return len(records)

    def take(self, partition: int, offset: int) -> Read | None:
        """What a helper read for that record of the batch, or None: not handed over, not
        answered yet (then the worker reads it, and the helpers skip it), or the helper
        failed (then the worker reads the rest of the batch itself)."""
        entry = self._pending.pop((partition, offset), None)
        if entry is None:
            return None
        number, n, g = entry
        answers = self._answers
        try:
            if number not in answers:
                self._collect(0.0)
            chunk = answers.get(number)
            answer = None if chunk is None else chunk[n]
        except Exception as exc:
            self._failed(exc)
            return None
        if answer is None:
            self._passed.value = g  # read here: the helpers skip it
            return None
        self.read_ahead += 1
        return answer

    def caught_up(self) -> bool:
        """Whether every chunk handed over has been answered (collecting the answers that
        have come)."""
        try:
            self._collect(0.0)
        except Exception as exc:
            self._failed(exc)  # nothing is owed by helpers that are gone
        return not any(h.owed for h in self._helpers)

    def _collect(self, wait: float) -> None:
        """Take the answers that have come (or, with ``wait``, every one owed)."""
        for helper in self._helpers:
            while (got := helper.answer(wait)) is not None:
                self._answers[got[0]] = got[1]

    def _settle(self) -> None:
        """Drop the last batch's answers, after those still owed (records the handler
        skipped): the helpers skip what is left, so that they start the next batch with
        nothing owed."""
        self._passed.value = self._numbered - 1
        self._collect(ANSWER_TIMEOUT_S)
        self._pending.clear()
        self._answers.clear()

    def _failed(self, exc: BaseException) -> None:
        log.error(
            "the appeals' helper process failed (%s: %s); the worker reads appeals itself "
            "until a new one has started",
            type(exc).__name__,
            exc,
        )
        self._pending.clear()
        self._answers.clear()
        self._restart_at = time.monotonic() + RESTART_AFTER_S
        self.close()

    def pids(self) -> list[int]:
        """The helper processes' ids."""
        return [h.process.pid for h in self._helpers if h.process.pid is not None]

    def close(self) -> None:
        """Stop the helpers."""
        helpers, self._helpers = self._helpers, []
        for helper in helpers:
            helper.stop()
