"""Appeals read ahead of the worker, in helper processes on other cores.

An appeal's ingest up to the repeat runs (decode, the channel's adapter with
de-identification, the key and clock checks, the emotion and the reading) depends on
nothing but the record, the batch's clock, the configuration and the de-identification
key (:class:`~streams.voice.ingest.AppealReader`), and is most of an appeal's cost. The
worker's handler runs on one core, so at the start of a batch that holds appeals it sends
them to ``CITYVITALS_APPEAL_PROCESSES`` helper processes, in chunks growing from
:data:`FIRST_CHUNK` to :data:`LAST_CHUNK` records (the first sent alone, so that it is
read while the rest crosses the pipe), and takes each chunk's answer when its pass
reaches the chunk's first record (:meth:`HelperReader.take`). The handler spends its time
on the batch's other events between appeals, so the helpers stay ahead; only the first
chunk is waited for, which is why it is small. What depends on the worker's state stays
in the handler, in the records' order: the repeat runs, which name the first appeal of a
run in the reading (:func:`~streams.voice.ingest.repeating`). So the outputs are the same
bytes with helpers or without (``tests/voice/test_helper.py``).

Each helper has a pipe of its own that the handler writes and reads itself. A
:class:`concurrent.futures.ProcessPoolExecutor` moves calls and answers through threads
of the worker's process, which wait for the interpreter lock the handler holds: over
``bench/processing.py --events 50000 --appeals 0.1`` the handler waited 0.23 s a run for
answers that way and 0.04 s with its own pipes, and its CPU time went from 2.00 to
1.86 s (medians of three runs each).

A helper that fails costs the worker nothing but time: when an answer does not come (the
process died, hung for :data:`ANSWER_TIMEOUT_S`, or the answer cannot be read), the
worker reads the rest of the batch itself, logs the failure, stops the helpers and starts
new ones :data:`RESTART_AFTER_S` later; it reads its appeals itself until they have
loaded their lexicons (a second or two). A helper ends when its worker does, even by
SIGKILL: its pipe then reads end-of-file. A batch with fewer than :data:`MIN_APPEALS`
appeals is read in the worker, as a chunk's round trip costs about what reading a few
appeals does.
"""

from __future__ import annotations

import logging
import multiprocessing
import time
from collections import deque
from collections.abc import Iterable
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from datetime import datetime

    from streams.core.config import CityConfig
    from streams.ingest.catalogue import CatalogueCheck
    from streams.voice.appeals import AppealsConfig
    from streams.voice.ingest import Read

#: an appeal record as the helpers take it: partition, offset, key and value
Record = tuple[int, int, bytes | None, bytes]

log = logging.getLogger(__name__)

FIRST_CHUNK = 4
LAST_CHUNK = 64
MIN_APPEALS = 8
#: seconds a chunk's answer may take before the worker reads the chunk itself (far more
#: than a chunk's few milliseconds: only a helper that hangs reaches it)
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


def _serve(conn: Connection, setup: ReaderSetup) -> None:
    """A helper process: reads each batch's chunks of appeal records and answers each
    chunk with its reads, in order, until its worker closes the pipe or dies."""
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
            conn.send([read(value, key, now, p, o) for p, o, key, value in chunk])


class _Helper:
    """One helper process and the worker's end of its pipe."""

    def __init__(self, setup: ReaderSetup) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.conn, theirs = ctx.Pipe(duplex=True)
        self.process = ctx.Process(
            target=_serve, args=(theirs, setup), name="appeal-helper", daemon=True
        )
        self.process.start()
        theirs.close()  # the helper's end is its own: it reads EOF when the worker dies
        self.ready = False
        self.owed: deque[int] = deque()  # the numbers of the chunks it has to answer

    def check_ready(self) -> bool:
        if not self.ready and self.conn.poll(0):
            self.ready = self.conn.recv() == _READY
        return self.ready

    def send(self, now: datetime, numbers: list[int], chunks: list[list[Record]]) -> None:
        self.conn.send((now, chunks))
        self.owed.extend(numbers)

    def answer(self) -> tuple[int, list[Read]]:
        """The next chunk's number and reads."""
        if not self.conn.poll(ANSWER_TIMEOUT_S):
            raise TimeoutError(f"no answer within {ANSWER_TIMEOUT_S:g} s")
        reads: list[Read] = self.conn.recv()
        return self.owed.popleft(), reads

    def stop(self) -> None:
        self.conn.close()
        if self.process.is_alive():
            self.process.kill()
        self.process.join(timeout=5)


class HelperReader:
    """A worker's helper processes, reading the appeals of each batch ahead of it."""

    def __init__(self, setup: ReaderSetup, processes: int = 1) -> None:
        self._setup = setup
        self._processes = processes
        self._helpers: list[_Helper] = []
        self._pending: dict[tuple[int, int], tuple[int, int]] = {}
        self._answers: dict[int, list[Read]] = {}
        self._restart_at = 0.0
        self.read_ahead = 0  # appeals a helper read
        self._start()

    def _start(self) -> None:
        self._helpers = [_Helper(self._setup) for _ in range(self._processes)]

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
            chunks: list[list[list[Record]]] = [[] for _ in helpers]
            size, i, number = FIRST_CHUNK, 0, 0
            while i < len(records):
                chunk = records[i : i + size]
                numbers[number % len(helpers)].append(number)
                chunks[number % len(helpers)].append(chunk)
                for n, (partition, offset, _, _) in enumerate(chunk):
                    self._pending[(partition, offset)] = (number, n)
                i, number = i + size, number + 1
                size = min(2 * size, LAST_CHUNK)
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
        """What a helper read for that record of the batch, or None: not handed over, or
        the helper failed (then the worker reads it, and the rest of the batch, itself)."""
        entry = self._pending.pop((partition, offset), None)
        if entry is None:
            return None
        number, n = entry
        answers, helpers = self._answers, self._helpers
        try:
            while number not in answers:  # chunk k is helper k % count's, answered in order
                got, reads = helpers[number % len(helpers)].answer()
                answers[got] = reads
            answer = answers[number][n]
        except Exception as exc:
            self._failed(exc)
            return None
        self.read_ahead += 1
        return answer

    def _settle(self) -> None:
        """Read and drop what the helpers still owe for the last batch (records the
        handler skipped), so that each starts the next batch with nothing owed."""
        self._pending.clear()
        self._answers.clear()
        for helper in self._helpers:
            while helper.owed:
                helper.answer()

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
