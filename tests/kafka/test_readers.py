"""A backlog's batches read in reader processes: the same outputs as the worker alone,
nothing lost when a reader dies, and no reader left behind a killed worker."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from typing import Any

import orjson
import pytest

from bench.throughput import generate_events
from streams.alerting.detection import DetectionContext
from streams.alerting.rules import load_silences, load_thresholds
from streams.core import metrics
from streams.core.config import load_config
from streams.core.messages import DEADLETTER_TOPIC, READINGS_TOPIC
from streams.core.settings import Settings
from streams.kafka import processor as processor_module
from streams.kafka.feed import InputRecord, key_partition
from streams.kafka.processor import VitalsProcessor
from streams.kafka.readers import BatchReaders
from streams.kafka.tables import MemoryTable
from streams.kafka.worker import opinion_categories
from streams.voice.appeals import load_appeals
from tests.fuzz.batch import _Outputs

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CFG = load_config()
APPEALS = load_appeals(CFG)
RULES = load_thresholds(CFG)
CTX = DetectionContext(
    CFG, RULES, silences=load_silences(CFG, RULES), opinion_categories=opinion_categories(APPEALS)
)
PHONE = "13912345678"
NOW = time.time()
PATIENCE_S = 120.0  # a failure guard for a loaded machine, not a timing figure


def _until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + PATIENCE_S
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting: {what}"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def backlog() -> list[InputRecord]:
    """4,000 simulated records, a tenth appeals, some malformed, and readings whose
    attributes carry a phone number (replaced, and counted, wherever they are read)."""
    records, offsets = [], dict[tuple[str, int], int]()
    for i, ev in enumerate(generate_events(4000, 11, 0.02, 0.1)):
        value = ev.value
        if i % 50 == 0 and ev.malformed is None and not ev.topic.endswith("appeals"):
            doc = orjson.loads(value)
            doc["attributes"] = {**(doc.get("attributes") or {}), "reporter": PHONE}
            value = orjson.dumps(doc)
        partition = key_partition(ev.key, 4) if ev.key else 0
        offset = offsets[(ev.topic, partition)] = offsets.get((ev.topic, partition), -1) + 1
        records.append(InputRecord(ev.topic, partition, offset, ev.key, value))
    return records


class Run:
    """A processor with in-memory tables and collected outputs."""

    def __init__(self, readers: int) -> None:
        self.sent: list[tuple[str, bytes | None, bytes]] = []
        self.processor = VitalsProcessor(
            MemoryTable(),
            CFG,
            Settings(partitions=4, reader_processes=readers),
            outputs=lambda: _Outputs(self.sent),  # type: ignore[arg-type,return-value]
            progress=lambda topic, partition: (0, 0),
            detection_table=MemoryTable(),
            detection=CTX,
            appeals=APPEALS,
        )

    def handle(self, records: list[InputRecord]) -> None:
        """One batch, on a clock stopped at ``NOW`` (dead letters' details quote it)."""
        real = processor_module.time
        processor_module.time = _Stopped()  # type: ignore[assignment]
        try:
            asyncio.run(self.processor.process_batch(records))
        finally:
            processor_module.time = real

    def outcomes(self) -> list[tuple[str, Any]]:
        """Each reading and dead letter, without what differs from run to run (the
        seal's nonce, the time of dead-lettering)."""
        found = []
        for topic, _, value in self.sent:
            if topic == READINGS_TOPIC:
                found.append((topic, orjson.loads(value)))
            elif topic == DEADLETTER_TOPIC:
                doc = orjson.loads(value)
                for varies in ("sealed", "dead_lettered_at"):
                    del doc[varies]
                found.append((topic, doc))
        return found

    def counted(self) -> dict[str, Any]:
        return {
            d.decode(): {start: dict(bucket) for start, bucket in s.open.items()}
            for d, s in self.processor.table.items()
        }


class _Stopped:
    """The processor's ``time`` module, its wall clock stopped."""

    perf_counter = staticmethod(time.perf_counter)
    monotonic = staticmethod(time.monotonic)

    @staticmethod
    def time() -> float:
        return NOW


def _scrubbed() -> float:
    return metrics.REGISTRY.get_sample_value("cityvitals_ingest_identifiers_scrubbed_total") or 0.0


def _aside() -> float:
    return metrics.REGISTRY.get_sample_value("cityvitals_ingest_records_read_aside_total") or 0.0


def _restarts() -> float:
    return metrics.REGISTRY.get_sample_value("cityvitals_ingest_batch_reader_restarts_total") or 0.0


def _alone(backlog: list[InputRecord]) -> tuple[Run, float]:
    run, before = Run(readers=0), _scrubbed()
    run.handle(backlog)
    return run, _scrubbed() - before


def _with_readers() -> tuple[Run, BatchReaders]:
    """A run whose processor has one reader process, started and ready."""
    run = Run(readers=1)
    readers = run.processor.readers
    readers.start()
    try:
        _until(lambda: readers.ready, "the reader process says it is ready")
    except BaseException:
        readers.close()
        raise
    return run, readers


def test_a_backlog_read_with_readers_gives_what_the_worker_alone_gives(
    backlog: list[InputRecord],
) -> None:
    alone, scrubbed_alone = _alone(backlog)
    shared, readers = _with_readers()
    try:
        before, aside = _scrubbed(), _aside()
        shared.handle(backlog)
        scrubbed_shared, read_aside = _scrubbed() - before, _aside() - aside
    finally:
        readers.close()
    assert 0 < read_aside <= len(backlog)  # the reader read some, the worker the rest
    assert shared.outcomes() == alone.outcomes()
    assert len(alone.outcomes()) == len(backlog)  # one reading or dead letter each
    assert shared.counted() == alone.counted()
    # the phone numbers in readings' attributes, replaced and counted in the worker
    with_phone = sum(PHONE.encode() in (r.value or b"") for r in backlog)
    assert scrubbed_shared == scrubbed_alone >= with_phone > 0
    assert PHONE.encode() not in b"".join(v for _, _, v in shared.sent)


def test_a_reader_killed_mid_batch_loses_nothing_and_is_started_again(
    backlog: list[InputRecord],
) -> None:
    alone, _ = _alone(backlog)
    shared, readers = _with_readers()
    readers.restart_s = 0.0  # start again at the next batch
    try:
        (pid,) = readers.pids()
        restarts = _restarts()
        # the reader claims the batch's first chunk, then dies with it
        original = readers.submit

        def submit_then_kill(items: Any, now: Any) -> Any:
            shared_batch = original(items, now)
            _until(lambda: readers.claimed_front() > 0, "the reader claims a chunk")
            os.kill(pid, signal.SIGKILL)
            return shared_batch

        readers.submit = submit_then_kill  # type: ignore[method-assign]
        shared.handle(backlog)
        assert _restarts() == restarts + 1
        assert shared.outcomes() == alone.outcomes()
        assert shared.counted() == alone.counted()
        readers.submit = original  # type: ignore[method-assign]
        assert readers.submit(backlog_items(backlog), None) is None  # started again
        _until(lambda: readers.ready, "the new reader says it is ready")
        assert readers.pids() != [pid]
    finally:
        readers.close()


def backlog_items(backlog: list[InputRecord]) -> list[Any]:
    return [(r.topic, r.partition, r.offset, r.key, r.value or b"") for r in backlog]


def test_the_readers_leave_when_the_worker_is_killed(tmp_path: Any) -> None:
    script = textwrap.dedent(
        """
        import sys, time
        from streams.core.config import load_config
        from streams.core.settings import Settings
        from streams.kafka.readers import BatchReaders

        if __name__ == "__main__":
            readers = BatchReaders(load_config(), Settings(), None, processes=2)
            readers.start()
            while not readers.ready:
                time.sleep(0.05)
            print(*readers.pids(), flush=True)
            time.sleep(600)
        """
    )
    path = tmp_path / "worker.py"
    path.write_text(script)
    env = dict(os.environ, PYTHONPATH=ROOT, CITYVITALS_DEID_KEY="d" * 64)
    worker = subprocess.Popen([sys.executable, str(path)], stdout=subprocess.PIPE, env=env)
    try:
        assert worker.stdout is not None
        pids = [int(p) for p in worker.stdout.readline().split()]
        assert len(pids) == 2 and all(_alive(p) for p in pids)
        worker.send_signal(signal.SIGKILL)
        worker.wait()
        _until(lambda: not any(_alive(p) for p in pids), "the readers leave")
    finally:
        worker.kill()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_a_small_batch_is_read_by_the_worker_alone() -> None:
    readers = BatchReaders(CFG, Settings(), None, processes=1, min_batch=10)
    assert readers.submit([("t", 0, 0, None, b"")] * 9, None) is None  # type: ignore[arg-type]
    assert not readers.ready  # nothing was started for it
