"""A worker restoring its tables from the changelogs: a value it cannot restore stops its
start with the reason, and a pickle planted on any table's changelog runs nothing."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from streams.alerting.detection import DETECTION_STATE, DistrictDetection
from streams.core.config import load_config
from streams.core.state import StateCodec
from streams.kafka.feed import key_partition
from streams.kafka.tables import NOTIFY_TABLE, TABLE_NAME, changelog_topic
from streams.sim.simulator import CitySimulator
from tests.core.test_state import Plant
from tests.harness import PARTITIONS, Worker, produce, read_records, run, wait_for


async def overwrite(bootstrap: str, topic: str, partition: int, key: bytes, value: bytes) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(topic, value, key=key, partition=partition)
    finally:
        await producer.stop()


def with_state(bootstrap: str, tmp_path: Path, seed: int) -> Worker:
    """A worker that has read an hour of the city and written its state, stopped."""
    worker = Worker(bootstrap, tmp_path)
    worker.start()
    try:
        start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=1)
        events = CitySimulator(load_config(), seed=seed, start=start).take(2500)
        run(produce(bootstrap, events))
        wait_for(
            lambda: worker.metric("cityvitals_ingest_readings_total") >= len(events) * 0.9,
            120,
            "the events read",
        )
        wait_for(
            lambda: (
                worker.metric(
                    "cityvitals_pipeline_table_value_max_bytes", {"table": "district-detection"}
                )
                > 0
            ),
            120,
            "detection state written",
        )
    finally:
        worker.stop()
    return worker


def newer_release_value(district: str) -> bytes:
    """A district's detection state as a release writing version 99 would write it."""
    codec = StateCodec(DETECTION_STATE.table, DistrictDetection, 99, DETECTION_STATE.classes)
    return codec.encode(DistrictDetection(district))


@pytest.mark.parametrize("planted", ["newer release", "pickle"])
def test_a_changelog_value_the_worker_cannot_restore_stops_its_start_with_the_reason(
    broker_bootstrap: str, tmp_path: Path, planted: str
) -> None:
    worker = with_state(broker_bootstrap, tmp_path, seed=3)
    changelog = f"{worker.app_id}-district-detection-changelog"
    record = next(r for r in run(read_records(broker_bootstrap, changelog)) if r.value)
    marker = tmp_path / "planted"
    value = (
        newer_release_value(record.key.decode())
        if planted == "newer release"
        else pickle.dumps(Plant(marker))
    )
    run(overwrite(broker_bootstrap, changelog, record.partition, record.key, value))
    worker.forget_group()
    with pytest.raises(RuntimeError) as failed:
        worker.start(timeout=120)
    assert worker.proc is not None and worker.proc.returncode == 2
    log = str(failed.value)
    assert "Traceback" not in log
    if planted == "newer release":
        assert "state version 99 was written by a newer release" in log
    else:
        assert "cityvitals migrate-state" in log
        assert not marker.exists()
    assert "cannot restore table district-detection from its changelog" in log


@pytest.mark.parametrize(
    ("table", "refusal"),
    [
        (TABLE_NAME, "table district-windows: the value is not JSON"),
        (NOTIFY_TABLE, "convert the changelog once with `cityvitals migrate-state`"),
    ],
)
def test_a_pickle_planted_on_the_windows_or_notification_changelog_runs_nothing(
    broker_bootstrap: str, tmp_path: Path, table: str, refusal: str
) -> None:
    """Written under a district's key, on the partition its state lives on, by anyone who
    can write to the topic: the worker neither runs it nor starts on it."""
    worker = with_state(broker_bootstrap, tmp_path, seed=5)
    marker = tmp_path / "planted"
    key = b"339901"
    changelog = changelog_topic(worker.app_id, table)
    partition = key_partition(key, PARTITIONS)
    run(overwrite(broker_bootstrap, changelog, partition, key, pickle.dumps(Plant(marker))))
    worker.forget_group()
    with pytest.raises(RuntimeError) as failed:
        worker.start(timeout=120)
    assert worker.proc is not None and worker.proc.returncode == 2
    log = str(failed.value)
    assert not marker.exists()
    assert "Traceback" not in log
    assert f"cannot restore table {table} from its changelog (district 339901)" in log
    assert refusal in " ".join(log.split())


def latest(bootstrap: str, topic: str) -> dict[tuple[int, bytes], bytes]:
    values: dict[tuple[int, bytes], bytes] = {}
    for r in run(read_records(bootstrap, topic)):
        if r.key is not None and r.value is not None:
            values[(r.partition, r.key)] = r.value
    return values


def migrate(bootstrap: str, app_id: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CITYVITALS_BOOTSTRAP": bootstrap, "CITYVITALS_APP_ID": app_id}
    return subprocess.run(
        [sys.executable, "-m", "streams.cli", "migrate-state"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_state_pickled_by_an_earlier_release_is_migrated_and_restored(
    broker_bootstrap: str, tmp_path: Path
) -> None:
    worker = with_state(broker_bootstrap, tmp_path, seed=4)
    changelog = f"{worker.app_id}-district-detection-changelog"
    documents = latest(broker_bootstrap, changelog)
    assert documents
    # the changelog as a release that pickled its state left it
    for (partition, key), data in documents.items():
        legacy = pickle.dumps(DistrictDetection.loads(data), protocol=pickle.HIGHEST_PROTOCOL)
        run(overwrite(broker_bootstrap, changelog, partition, key, legacy))
    worker.forget_group()
    done = migrate(broker_bootstrap, worker.app_id)
    assert done.returncode == 0, done.stderr
    assert f"{changelog}: {len(documents)} districts, converted {len(documents)}" in done.stdout
    migrated = latest(broker_bootstrap, changelog)
    assert set(migrated) == set(documents)
    for where, data in migrated.items():
        assert (
            DistrictDetection.loads(data).dumps()
            == DistrictDetection.loads(documents[where]).dumps()
        )
    again = migrate(broker_bootstrap, worker.app_id)
    assert "converted 0" in again.stdout and again.returncode == 0
    worker.start(timeout=120)  # restores the documents and is ready
    worker.stop()


def test_migrating_while_a_worker_runs_is_refused(broker_bootstrap: str, tmp_path: Path) -> None:
    worker = Worker(broker_bootstrap, tmp_path)
    worker.start()
    try:
        done = migrate(broker_bootstrap, worker.app_id)
    finally:
        worker.stop()
    assert done.returncode == 2 and "stop every worker first" in " ".join(done.stderr.split())
