"""Scale-out on the real broker: a second worker of the same app id takes half the
partitions; when one worker is killed the other takes over its partitions and state,
and no alert is lost or doubled."""

from __future__ import annotations

import asyncio
import signal
import threading
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer
from prometheus_client.parser import text_string_to_metric_families

from streams.core.config import load_config
from streams.core.messages import (
    ALERTS_TOPIC,
    DEADLETTER_TOPIC,
    EVENT_TOPICS,
    VITALS_TOPIC,
    AlertEvent,
    AlertKind,
    AlertStatus,
    DistrictVitals,
)
from streams.kafka.feed import key_partition
from streams.sim.simulator import SimEvent
from tests.harness import (
    Worker,
    produce,
    published,
    read_topic,
    recreate_city_topics,
    replayed,
    run,
    smog,
    summary,
    wait_for,
    worker_pair,
)

pytestmark = pytest.mark.broker
CFG = load_config()
PARTITIONS = 8  # the worker's default CITYVITALS_PARTITIONS
ALL = frozenset(range(PARTITIONS))
LAG = "cityvitals_pipeline_consumer_lag_records"


@pytest.fixture
def topics_of_8(broker_bootstrap: str) -> Iterator[None]:
    """Empty city topics of 8 partitions; afterwards the layout the other tests use."""
    run(recreate_city_topics(broker_bootstrap, PARTITIONS))
    yield
    run(recreate_city_topics(broker_bootstrap))


@pytest.fixture
def two_workers(
    broker_bootstrap: str, tmp_path: Path, topics_of_8: None
) -> Iterator[tuple[Worker, Worker]]:
    """Two workers of one app id (one consumer group), each with its own web port and datadir."""
    env = {"CITYVITALS_PARTITIONS": str(PARTITIONS), "CITYVITALS_IDLE_CLOSE_S": "5"}
    a, b = worker_pair(broker_bootstrap, tmp_path, env)
    yield a, b
    a.stop(signal.SIGKILL)
    b.stop(signal.SIGKILL)


def reads(worker: Worker) -> dict[str, frozenset[int]]:
    """Per topic, the partitions a worker reads: the series of its consumer-lag gauge."""
    text = httpx.get(f"http://127.0.0.1:{worker.web_port}/metrics", timeout=5).text
    out: defaultdict[str, set[int]] = defaultdict(set)
    for family in text_string_to_metric_families(text):
        if family.name == LAG:
            for sample in family.samples:
                out[sample.labels["topic"]].add(int(sample.labels["partition"]))
    return {topic: frozenset(parts) for topic, parts in out.items()}


def owned(worker: Worker) -> frozenset[int]:
    """The partitions a worker owns: the same ones of every input topic and of the alerts
    it notifies (empty while they disagree, in the middle of a rebalance)."""
    by_topic = reads(worker)
    sets = {by_topic.get(t, frozenset()) for t in [*EVENT_TOPICS.values(), ALERTS_TOPIC]}
    return next(iter(sets)) if len(sets) == 1 else frozenset()


def district_on(partitions: frozenset[int]) -> tuple[str, str]:
    """The first district of the city (and its first street) whose partition is given."""
    for d in CFG.city.districts:
        if key_partition(d.code.encode(), PARTITIONS) in partitions:
            return d.code, d.streets[0].code
    raise AssertionError(f"no district on partitions {sorted(partitions)}")


def alarm(events: list[AlertEvent], district: str) -> list[AlertEvent]:
    return [e for e in events if e.district == district and e.kind is AlertKind.ALARM]


async def produce_live(
    bootstrap: str,
    minutes: list[list[SimEvent]],
    every_s: float,
    *,
    hold_after: int,
    until: threading.Event,
) -> None:
    """One simulated minute of readings every ``every_s`` of wall time, as a live city
    sends them; after ``hold_after`` minutes, no more until ``until`` is set."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, acks="all")
    await producer.start()
    try:
        for n, chunk in enumerate(minutes):
            if n == hold_after and not await asyncio.to_thread(until.wait, 60):
                raise TimeoutError("nobody released the rest of the readings")
            sent = [await producer.send(ev.topic, ev.value, key=ev.key) for ev in chunk]
            await asyncio.gather(*sent)
            await asyncio.sleep(every_s)
    finally:
        await producer.stop()


def test_two_workers_split_the_partitions_and_a_killed_ones_alerts_and_windows_carry_on(
    broker_bootstrap: str, two_workers: tuple[Worker, Worker], tmp_path: Path
) -> None:
    victim, survivor = two_workers
    victim.start()
    wait_for(lambda: owned(victim) == ALL, 30, "one worker to read all 8 partitions", interval=0.2)

    # a second worker joins: each reads a non-empty share of the 8 partitions, together
    # all of them, none twice
    survivor.start()
    split: dict[str, frozenset[int]] = {}

    def shared_out() -> bool:
        split["victim"], split["survivor"] = owned(victim), owned(survivor)
        return (
            bool(split["victim"])
            and bool(split["survivor"])
            and not split["victim"] & split["survivor"]
            and split["victim"] | split["survivor"] == ALL
        )

    wait_for(shared_out, 30, "the two workers to split the partitions", interval=0.2)

    # smog in a district of each worker: a PM2.5 alarm fires, climbs to orange while the
    # air stays bad, steps down and resolves once it clears
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=3)
    x, x_street = district_on(split["victim"])
    y, y_street = district_on(split["survivor"])
    first: dict[str, list[SimEvent]] = {}
    second: dict[str, list[list[SimEvent]]] = {}
    expected: dict[str, list[dict[str, Any]]] = {}
    for d, street in ((x, x_street), (y, y_street)):
        first[d] = (
            smog(start, range(0, 25), 40, district=d, street=street)
            + smog(start, range(25, 45), 40, rise=8, district=d, street=street)
            + smog(start, range(45, 50), 200, district=d, street=street)
        )
        second[d] = [
            smog(start, range(m, m + 1), 200 if m < 58 else 30, district=d, street=street)
            for m in range(50, 100)
        ]
        expected[d] = replayed(first[d] + [ev for c in second[d] for ev in c], tmp_path, d)
        alarms = [e for e in expected[d] if e["kind"] == "alarm"]
        assert len({e["alert_id"] for e in alarms}) == 1
        assert [alarms[0]["status"], alarms[-1]["status"]] == ["firing", "resolved"]

    run(produce(broker_bootstrap, first[x] + first[y], PARTITIONS))
    wait_for(
        lambda: all(
            any(e.status is AlertStatus.FIRING for e in alarm(published(broker_bootstrap), d))
            for d in (x, y)
        ),
        60,
        "an alarm to fire in each worker's district",
    )

    # the readings go on arriving; the victim is killed while it handles them, before
    # the 15th minute of them (its alarm cannot have ended by then)
    live = [second[x][i] + second[y][i] for i in range(len(second[x]))]
    killed = threading.Event()
    failures: list[BaseException] = []

    def feed() -> None:
        try:
            run(produce_live(broker_bootstrap, live, 0.1, hold_after=15, until=killed))
        except BaseException as exc:  # reported by the test thread
            failures.append(exc)

    producer = threading.Thread(target=feed, daemon=True)
    producer.start()
    wait_for(
        lambda: victim.metric("cityvitals_ingest_readings_total") >= len(first[x]) + 10,
        30,
        "the victim to handle the live readings",
        interval=0.05,
    )
    assert victim.proc is not None
    victim.stop(signal.SIGKILL)
    assert victim.proc.returncode == -signal.SIGKILL
    killed.set()
    before = published(broker_bootstrap)
    x_alarm = alarm(before, x)
    # the alarm the victim raised is still open: its incident is not over
    assert x_alarm and x_alarm[0].status is AlertStatus.FIRING
    assert all(e.status is not AlertStatus.RESOLVED for e in x_alarm)
    x_alarm_id = x_alarm[0].alert_id

    # the survivor takes over every partition
    wait_for(lambda: owned(survivor) == ALL, 60, "the survivor to read all 8 partitions")
    producer.join(30)
    assert not producer.is_alive() and failures == []

    # ... and the victim's open alarm goes on under the same id, to its end
    want = {(e["alert_id"], e["sequence"]) for d in (x, y) for e in expected[d]}
    wait_for(
        lambda: want <= {(e.alert_id, e.sequence) for e in published(broker_bootstrap)},
        60,
        "every alert event the replay has",
    )
    got = published(broker_bootstrap)
    later = alarm(got, x)
    assert {e.alert_id for e in later} == {x_alarm_id}
    assert later[-1].status is AlertStatus.RESOLVED
    assert max(e.sequence for e in later) > max(e.sequence for e in x_alarm)

    # nothing lost, nothing doubled: the same alerts as the replay, one id per fingerprint,
    # and an (alert id, sequence) published more than once only as identical copies (a
    # batch sent again after the kill)
    unique: dict[tuple[str, int], AlertEvent] = {}
    for e in got:
        assert unique.setdefault((e.alert_id, e.sequence), e) == e, (
            f"two different events {e.alert_id}#{e.sequence}"
        )
    ids_by_fingerprint: defaultdict[str, set[str]] = defaultdict(set)
    for e in unique.values():
        ids_by_fingerprint[e.fingerprint].add(e.alert_id)
    assert all(len(ids) == 1 for ids in ids_by_fingerprint.values()), ids_by_fingerprint
    assert sorted(summary(e) for e in unique.values()) == sorted(
        summary(e) for d in (x, y) for e in expected[d]
    )

    # the windows carried on too: no reading was late or refused, every minute was
    # counted once, and the rolling view of the minutes before the kill is whole
    assert asyncio.run(read_topic(broker_bootstrap, DEADLETTER_TOPIC, idle_s=0.5)) == []

    def windows() -> dict[tuple[str, datetime], DistrictVitals]:
        latest = {}
        for v in asyncio.run(read_topic(broker_bootstrap, VITALS_TOPIC, idle_s=1)):
            doc = DistrictVitals.model_validate_json(v)
            latest[(doc.district, doc.window_start)] = doc
        return latest

    minutes = {(d, start + timedelta(minutes=m)) for d in (x, y) for m in range(100)}
    wait_for(lambda: minutes <= set(windows()), 60, "every minute's vitals of both districts")
    for (d, window_start), v in windows().items():
        m = int((window_start - start).total_seconds() // 60)
        pm25 = v.indicators["iot.pm25"]
        assert pm25.minute is not None and pm25.minute.count == 2, (d, m, pm25)
        assert pm25.rolling.count == 2 * min(m + 1, 15), (d, m, pm25)
