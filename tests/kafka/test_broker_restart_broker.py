"""A broker restart with its data kept: the embedded broker on its local S3 store.

What a city sees when its broker restarts: the records and committed offsets are still
there, and a running worker reconnects by itself and counts every event once.
"""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from streams.kafka.broker import BrokerStartError, EmbeddedBroker
from tests.harness import Worker, produce, run, wait_for
from tests.kafka.test_embedded_broker import (
    child_pids,
    process_is_gone,
    python_subprocess,
    read_line,
)
from tests.kafka.test_pipeline_broker import (
    all_windows_published,
    expected_window_sums,
    sim_events,
    window_sums,
)

pytestmark = pytest.mark.broker


def _produce_numbers(bootstrap: str, topic: str, n: int) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    for i in range(n):
        producer.send(topic, str(i).encode(), partition=0)
    producer.flush()
    producer.close()


def _consume(bootstrap: str, topic: str, group: str, n: int | None) -> tuple[list[int], int | None]:
    """Read up to ``n`` records (all, with None) in ``group`` and commit; the values read,
    and the offset the group had committed before."""
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        consumer_timeout_ms=3000,
    )
    tp = TopicPartition(topic, 0)
    consumer.assign([tp])
    before = consumer.committed(tp)
    values: list[int] = []
    for message in consumer:
        values.append(int(message.value))
        if n is not None and len(values) == n:
            break
    consumer.commit()
    consumer.close()
    return values, before


@pytest.mark.parametrize("kill", [True, False], ids=["sigkill", "sigterm"])
def test_local_s3_broker_keeps_records_and_committed_offsets_across_a_restart(
    tmp_path: Path, kill: bool
) -> None:
    with EmbeddedBroker(storage="local-s3", log_path=tmp_path / "broker.log") as broker:
        bootstrap = broker.bootstrap
        _produce_numbers(bootstrap, "kept", 1000)
        first, _ = _consume(bootstrap, "kept", "readers", 600)
        broker.restart(kill=kill)
        assert broker.bootstrap == bootstrap
        rest, committed = _consume(bootstrap, "kept", "readers", None)
    assert committed == 600
    assert first + rest == list(range(1000))


def test_cityvitals_broker_on_local_s3_restarts_on_sighup_with_its_data() -> None:
    server = python_subprocess(
        "from streams.cli import cli; cli()",
        "broker",
        "--storage",
        "local-s3",
        stderr=subprocess.PIPE,
    )
    try:
        bootstrap = read_line(server, "bootstrap: ")
        children = child_pids(server.pid)  # the broker and its store
        _produce_numbers(bootstrap, "kept", 10)
        server.send_signal(signal.SIGHUP)
        assert server.stderr is not None
        assert any("restarted (local-s3 storage)" in line for line in server.stderr)
        # (any() stops reading stderr at that line, the server goes on)
        assert _consume(bootstrap, "kept", "readers", None) == (list(range(10)), None)
        server.send_signal(signal.SIGINT)
        assert server.wait(timeout=15) == 0
        assert all(process_is_gone(pid) for pid in children)
    finally:
        server.kill()
        server.wait()


def test_memory_broker_forgets_everything_when_it_restarts(tmp_path: Path) -> None:
    with EmbeddedBroker(log_path=tmp_path / "broker.log") as broker:
        _produce_numbers(broker.bootstrap, "lost", 10)
        _consume(broker.bootstrap, "lost", "readers", 5)
        broker.restart()
        assert _consume(broker.bootstrap, "lost", "readers", None) == ([], None)


def test_postgres_storage_is_refused_with_the_reason(tmp_path: Path) -> None:
    # the bundled Tansu has no postgres engine: say so, do not hang or exit silently
    broker = EmbeddedBroker(
        storage="postgres://postgres@127.0.0.1:1/postgres", log_path=tmp_path / "broker.log"
    )
    with pytest.raises(BrokerStartError, match="cannot use the storage 'postgres'"):
        broker.start()
    assert not broker.is_running


def test_a_worker_survives_a_broker_restart_and_counts_every_event_once(tmp_path: Path) -> None:
    events = sim_events(8_000, 0.0, seed=31)
    before, after = events[:4_000], events[4_000:]
    with EmbeddedBroker(storage="local-s3", log_path=tmp_path / "broker.log") as broker:
        bootstrap = broker.bootstrap
        produced = run(produce(bootstrap, before))
        worker = Worker(bootstrap, tmp_path)
        worker.start()
        try:
            wait_for(
                lambda: worker.metric("cityvitals_ingest_readings_total") >= 1_000,
                60,
                "the worker to count events",
            )
            broker.restart(kill=True, down_s=2.0)
            back = time.monotonic()
            produced += run(produce(bootstrap, after))
            expected_counts, expected_sums = expected_window_sums(produced)
            vitals = all_windows_published(bootstrap, expected_counts, timeout=120)
            caught_up = time.monotonic() - back
            assert worker.proc is not None and worker.proc.poll() is None, worker.log_tail()
            assert worker.starts == 1  # it recovered by itself, nobody restarted it
            counts, sums = window_sums(vitals)
            assert counts == expected_counts, "an event was lost or counted twice"
            for key, total in expected_sums.items():
                assert sums[key] == pytest.approx(total, rel=1e-9, abs=1e-6)
            assert worker.metric("cityvitals_ingest_readings_total") >= len(produced)
            print(f"caught up {caught_up:.1f} s after the broker was back")
        finally:
            worker.stop()
