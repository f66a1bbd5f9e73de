"""Appeals read ahead in a helper process: the worker's readings and dead letters are the
same as when it reads every appeal itself, a helper that dies costs nothing but time, and
a helper does not outlive its worker."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from itertools import islice
from typing import Any

import orjson
import pytest

from streams.core.config import load_config
from streams.core.messages import APPEALS_TOPIC, DeadLetter
from streams.ingest.deid import Deidentifier
from streams.ingest.ingestor import Ingestor
from streams.kafka.feed import InputRecord, key_partition
from streams.sim.appeals import AppealSource
from streams.voice import helper as helper_module
from streams.voice.appeals import load_appeals
from streams.voice.ingest import AppealStage

KEY = b"test-key-not-for-production-0123456789"
CFG = load_config()
APPEALS = load_appeals(CFG)
PARTITIONS = 4
NOW = datetime.now(UTC).replace(microsecond=0)


def wait_for(condition: Callable[[], bool], what: str, limit_s: float = 120.0) -> None:
    """Wait until ``condition`` holds; the limit only ends a test that would hang."""
    deadline = time.monotonic() + limit_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {limit_s:g} s")
        time.sleep(0.05)


def appeal_records(n: int) -> list[InputRecord]:
    """``n`` records of ``city.events.appeals``: the simulated city's appeals over the
    last hours, every fifth spoilt in one of five ways (not JSON, an unknown channel, the
    key of another district, a payload without its text, an event time far in the
    future), with offsets per partition as on the topic."""
    start = NOW - timedelta(hours=3)
    source = AppealSource(CFG, seed=11, start=start, run="4e1b", rate_scale=20.0)
    offsets: dict[int, int] = {}
    records = []
    others = sorted(CFG.districts)
    for i, appeal in enumerate(islice(source.appeals_in(timedelta(hours=2)), n)):
        key, value = appeal.district.encode(), appeal.record()
        spoilt = i % 25
        if spoilt == 4:
            value = b'{"channel": "hotline_12345", "payload": {'
        elif spoilt == 9:
            value = orjson.dumps({"channel": "fax", "payload": {}})
        elif spoilt == 14:
            key = next(d for d in others if d != appeal.district).encode()
        elif spoilt == 19:
            doc = orjson.loads(value)
            doc["payload"] = {k: v for k, v in doc["payload"].items() if k not in TEXT_FIELDS}
            value = orjson.dumps(doc)
        elif spoilt == 24:
            value = value.replace(f"{appeal.at.year}-".encode(), b"2099-")
        partition = key_partition(key, PARTITIONS)
        offsets[partition] = offsets.get(partition, -1) + 1
        records.append(InputRecord(APPEALS_TOPIC, partition, offsets[partition], key, value))
    assert len(records) == n
    return records


TEXT_FIELDS = {"content", "body", "Content", "comment", "title"}


def stage(helpers: int) -> AppealStage:
    ingestor = Ingestor(CFG, Deidentifier(KEY), max_event_bytes=8192, max_depth=8)
    return AppealStage(ingestor, APPEALS, helpers=helpers, deid_key=KEY)


def outcomes(stage: AppealStage, batch: list[InputRecord], *, wait: bool = True) -> list[Any]:
    """What the stage gives for each record of the batch, as the handler meets them: a
    reading's bytes and facets, or a dead letter without its sealed record (sealing
    draws a fresh nonce each time). ``wait``: until the helper has answered every chunk
    (a handler busy with other events between appeals gives it that time)."""
    stage.prepare(batch, NOW)
    if wait and stage.helper is not None:
        wait_for(stage.helper.caught_up, "the helper answers the batch")
    found: list[Any] = []
    for r in batch:
        value = r.value if r.value is not None else b""
        result = stage.accept_any(r.topic, r.partition, r.offset, r.key, value, NOW)
        if isinstance(result, DeadLetter):
            found.append(result.model_dump(exclude={"sealed"}))
        else:
            found.append((result.indicator, result.json, result.t, result.facets))
    return found


@pytest.fixture
def helped() -> Iterator[AppealStage]:
    s = stage(helpers=1)
    helper = s.start_helpers()
    assert helper is not None
    wait_for(helper.ready, "the helper loads its lexicons")
    yield s
    s.close()


def batches(records: list[InputRecord], size: int) -> list[list[InputRecord]]:
    return [records[i : i + size] for i in range(0, len(records), size)]


def test_appeals_read_ahead_give_the_same_readings_and_dead_letters(
    helped: AppealStage,
) -> None:
    records = appeal_records(600)
    itself = stage(helpers=0)
    for batch in batches(records, 150):
        assert outcomes(helped, batch) == outcomes(itself, batch)
    helper = helped.helper
    assert helper is not None and helper.read_ahead == len(records)
    # the spoilt records and the repeats were among them
    found = outcomes(stage(helpers=0), records)
    kinds = {o["reason"] for o in found if isinstance(o, dict)}
    assert {"bad_json", "unknown_channel", "key_mismatch", "future_event_time"} <= kinds
    assert any(b'"repeat_of":' in o[1] for o in found if isinstance(o, tuple))


def test_appeals_the_helper_has_not_answered_yet_are_read_by_the_worker(
    helped: AppealStage,
) -> None:
    records = appeal_records(400)
    itself = stage(helpers=0)
    for batch in batches(records, 200):
        assert outcomes(helped, batch, wait=False) == outcomes(itself, batch)
    helper = helped.helper
    assert helper is not None
    assert helped.read_by["helper"] == helper.read_ahead
    assert helped.read_by["helper"] + helped.read_by["worker"] == len(records)


def test_a_batch_with_few_appeals_is_read_by_the_worker(helped: AppealStage) -> None:
    records = appeal_records(helper_module.MIN_APPEALS - 1)
    assert outcomes(helped, records) == outcomes(stage(helpers=0), records)
    assert helped.helper is not None and helped.helper.read_ahead == 0


def test_a_helper_that_dies_costs_nothing_but_time_and_a_new_one_takes_over(
    helped: AppealStage, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(helper_module, "RESTART_AFTER_S", 0.0)
    helper = helped.helper
    assert helper is not None
    first, second, third = batches(appeal_records(300), 100)
    itself = stage(helpers=0)
    assert outcomes(helped, first) == outcomes(itself, first)
    assert helper.read_ahead == 100
    for pid in helper.pids():
        os.kill(pid, signal.SIGKILL)
    with caplog.at_level(logging.ERROR, logger=helper_module.__name__):
        assert outcomes(helped, second) == outcomes(itself, second)
    assert "the appeals' helper process failed" in caplog.text
    wait_for(helper.ready, "a new helper loads its lexicons")
    assert outcomes(helped, third) == outcomes(itself, third)
    assert helper.read_ahead > 100


CHILD = """
import time
from streams.core.config import load_config
from streams.ingest.deid import Deidentifier
from streams.ingest.ingestor import Ingestor
from streams.voice.appeals import load_appeals
from streams.voice.ingest import AppealStage
if __name__ == "__main__":
    cfg, key = load_config(), b"k" * 32
    stage = AppealStage(Ingestor(cfg, Deidentifier(key)), load_appeals(cfg), helpers=1, deid_key=key)
    helper = stage.start_helpers()
    while not helper.ready():
        time.sleep(0.05)
    print(*helper.pids(), flush=True)
    time.sleep(3600)
"""


def test_a_helper_ends_when_its_worker_is_killed(tmp_path: Any) -> None:
    script = tmp_path / "worker.py"
    script.write_text(CHILD)
    worker = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, text=True, cwd=os.getcwd()
    )
    try:
        assert worker.stdout is not None
        pids = [int(p) for p in worker.stdout.readline().split()]
        assert pids and all(alive(p) for p in pids)
    finally:
        worker.kill()
        worker.wait()
    wait_for(lambda: not any(alive(p) for p in pids), "the helper exits after its worker")


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"
