"""On the real broker, no record stops the worker and no valid record is lost: hostile
records, a worker paused mid-stream, a large catch-up with malformed records mixed in,
and single records far ahead of their stream."""

from __future__ import annotations

import asyncio
import json
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaProducer

from streams.core.config import load_config
from streams.core.messages import DEADLETTER_TOPIC, READINGS_TOPIC, DeadLetter, Reading
from streams.kafka.topics import ensure_topics
from streams.sim.simulator import CitySimulator, SimEvent
from tests.harness import PARTITIONS, Produced, Worker, read_topic, run, wait_for
from tests.kafka.test_pipeline_broker import (
    all_windows_published,
    expected_window_sums,
    window_sums,
)

pytestmark = pytest.mark.broker
CFG = load_config()
IOT = "city.events.iot"


async def produce_all(
    bootstrap: str, events: Iterable[SimEvent], *, rate: float | None = None
) -> list[Produced]:
    """Publish events (records up to 16 MiB) and return where each landed."""
    await ensure_topics(bootstrap, PARTITIONS)
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        linger_ms=5,
        acks="all",
        max_request_size=16 * 1024 * 1024,
    )
    await producer.start()
    try:
        sent = []
        started = time.monotonic()
        for n, ev in enumerate(events):
            if rate is not None:
                wait = started + n / rate - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
            sent.append((ev, await producer.send(ev.topic, ev.value, key=ev.key)))
        out = []
        for ev, fut in sent:
            md = await fut
            out.append(Produced(ev, md.topic, md.partition, md.offset))
        return out
    finally:
        await producer.stop()


def city(n: int, start: datetime, malformed: float = 0.0, seed: int = 21) -> list[SimEvent]:
    return CitySimulator(CFG, seed=seed, start=start, malformed_share=malformed).take(n)


def iot_body(when: datetime, **over: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "event_id": "pm25-hostile",
        "source": "iot.pm25.339901001.01",
        "district": "339901",
        "street": "339901001",
        "indicator": "iot.pm25",
        "value": 35.0,
        "unit": "µg/m³",
        "event_time": when.isoformat(),
    }
    body.update(over)
    return body


def hostile(at: datetime) -> list[SimEvent]:
    """The records that stopped or blinded the city, each labelled with its reason."""
    deep: dict[str, Any] = {"end": 1}
    for _ in range(299):
        deep = {"a": deep}
    key = b"339901"

    def ev(value: bytes, reason: str) -> SimEvent:
        return SimEvent(IOT, key, value, at, malformed=reason)

    big = iot_body(at, attributes={"blob": "x" * 900_000})
    return [
        ev(json.dumps(iot_body(at, attributes=deep)).encode(), "too_deep"),
        ev(
            orjson.dumps(iot_body(at)).replace(b'"value":35.0', b'"value":35.0,"value":9e3'),
            "duplicate_key",
        ),
        ev(orjson.dumps(big), "too_large"),
        ev(orjson.dumps(iot_body(at, attributes={"blob": "y" * 10_000_000})), "too_large"),
        ev(orjson.dumps(iot_body(datetime(1970, 1, 1, tzinfo=UTC))), "too_old"),
        ev(
            orjson.dumps(iot_body(at).copy() | {"event_time": "0001-01-01T00:00:00+08:00"}),
            "too_old",
        ),
        ev(orjson.dumps(iot_body(at, street="13812345678")), "unknown_street"),
    ]


def dead_letters(bootstrap: str) -> dict[tuple[str, int, int], DeadLetter]:
    return {
        (d.origin.topic, d.origin.partition, d.origin.offset): d
        for d in (
            DeadLetter.model_validate_json(v) for v in run(read_topic(bootstrap, DEADLETTER_TOPIC))
        )
    }


def assert_every_record_accounted_for(
    bootstrap: str, produced: list[Produced], worker: Worker, timeout: float = 180
) -> Counter[str]:
    """Every valid record counted in its window exactly once, every other dead-lettered
    with its labelled reason; returns the dead letters by reason."""
    expected_counts, expected_sums = expected_window_sums(
        [p for p in produced if p.event.malformed is None]
    )
    try:
        vitals = all_windows_published(bootstrap, expected_counts, timeout)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\nthe worker's warnings:\n{worker.warnings()}") from None
    counts, sums = window_sums(vitals)
    wrong = {k: (counts[k], n) for k, n in expected_counts.items() if counts[k] != n}
    assert not wrong, f"{len(wrong)} windows counted wrong, e.g. {list(wrong.items())[:5]}"
    assert set(counts) == set(expected_counts)
    for k, total in expected_sums.items():
        assert sums[k] == pytest.approx(total, rel=1e-9, abs=1e-6)
    malformed = {
        (p.topic, p.partition, p.offset): p.event.malformed for p in produced if p.event.malformed
    }

    def all_dead_lettered() -> bool:
        return set(dead_letters(bootstrap)) >= set(malformed)

    wait_for(all_dead_lettered, timeout=120, what="every malformed record dead-lettered")
    dead = dead_letters(bootstrap)
    wrong_reason = {
        k: (dead[k].reason.value, why, dead[k].detail)
        for k, why in malformed.items()
        if dead[k].reason.value != why
    }
    assert not wrong_reason, list(wrong_reason.values())[:5]
    extra = {k: (d.reason.value, d.detail) for k, d in dead.items() if k not in malformed}
    assert not extra, f"{len(extra)} valid records dead-lettered, e.g. {list(extra.values())[:5]}"
    assert worker.proc is not None and worker.proc.poll() is None, worker.log_tail()
    return Counter(d.reason.value for d in dead.values())


def test_hostile_records_are_dead_lettered_with_their_reasons_and_the_city_goes_on(
    broker_bootstrap: str, worker: Worker, fresh_topics: None
) -> None:
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=3)
    events = city(3000, start)
    bad = hostile(events[1000].event_time)
    mixed = events[:1000] + bad[:3] + events[1000:2000] + bad[3:] + events[2000:]
    worker.start()
    produced = run(produce_all(broker_bootstrap, mixed))
    reasons = assert_every_record_accounted_for(broker_bootstrap, produced, worker)
    assert reasons == Counter(e.malformed for e in bad)
    dead = dead_letters(broker_bootstrap)
    phone = next(d for d in dead.values() if d.reason.value == "unknown_street")
    assert "13812345678" not in phone.to_json().decode()
    big = next(d for d in dead.values() if d.size > 9_000_000)
    assert big.reason.value == "too_large" and len(big.to_json()) < 100_000
    assert worker.metric("cityvitals_ingest_deadletters_total", {"reason": "too_deep"}) == 1
    assert httpx.get(f"http://127.0.0.1:{worker.web_port}/readyz", timeout=5).status_code == 200


@pytest.mark.timeout(900)  # the pause itself takes 90 s; a busy machine may double the rest
def test_a_worker_paused_90_s_mid_stream_loses_no_valid_event(
    broker_bootstrap: str, worker: Worker, fresh_topics: None
) -> None:
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=5)
    events = city(14_000, start, seed=23)
    worker.start()
    produced: list[Produced] = []

    def producer() -> None:  # a steady stream for the whole test, pause included
        produced.extend(run(produce_all(broker_bootstrap, events, rate=150)))

    thread = threading.Thread(target=producer)
    thread.start()
    wait_for(
        lambda: worker.metric("cityvitals_vitals_windows_closed_total") > 20,
        timeout=120,
        what="the worker closing windows mid-stream",
    )
    assert worker.proc is not None
    worker.proc.send_signal(signal.SIGSTOP)
    try:
        time.sleep(90)  # the pause itself is what is tested
    finally:
        worker.proc.send_signal(signal.SIGCONT)
    thread.join()
    reasons = assert_every_record_accounted_for(broker_bootstrap, produced, worker, 600)
    assert reasons == Counter()
    readings = [
        Reading.model_validate_json(v) for v in run(read_topic(broker_bootstrap, READINGS_TOPIC))
    ]
    assert len({(r.origin.topic, r.origin.partition, r.origin.offset) for r in readings}) == len(
        events
    )


@pytest.mark.timeout(1200)  # 300,000 events take a few minutes, more on a busy machine
def test_a_300000_event_catch_up_with_2_percent_malformed_loses_no_valid_event(
    broker_bootstrap: str, worker: Worker, fresh_topics: None
) -> None:
    # far enough back that many "future" malformed events are in the past of the clock,
    # yet days ahead of the stream
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(days=20)
    events = city(300_000, start, malformed=0.02, seed=7)
    now = datetime.now(UTC)
    ahead_of_stream = [
        e for e in events if e.malformed == "future_event_time" and e.event_time < now
    ]
    assert len(ahead_of_stream) > 100
    produced = run(produce_all(broker_bootstrap, events))
    worker.start()
    # generous: a loaded machine may take minutes over 300,000 events
    reasons = assert_every_record_accounted_for(broker_bootstrap, produced, worker, 900)
    assert reasons["late"] == 0
    assert sum(reasons.values()) == sum(1 for e in events if e.malformed)


def test_records_far_ahead_of_a_live_stream_are_dead_lettered_and_blind_nothing(
    broker_bootstrap: str, worker: Worker, fresh_topics: None
) -> None:
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=1)
    events = city(6000, start, seed=29)
    skewed = [
        SimEvent(
            IOT,
            b"339901",
            orjson.dumps(
                iot_body(datetime.now(UTC) + timedelta(seconds=250), event_id=f"skew-{i}")
            ),
            start,
            malformed="future_event_time",
        )
        for i in range(5)
    ]
    # one at a time between the district's own records: each is far ahead of its stream
    mixed = list(events)
    for i, record in enumerate(skewed):
        mixed.insert(1000 + 700 * i, record)
    worker.start()
    produced = run(produce_all(broker_bootstrap, mixed))
    reasons = assert_every_record_accounted_for(broker_bootstrap, produced, worker)
    assert reasons == Counter({"future_event_time": 5})
    details = [d.detail for d in dead_letters(broker_bootstrap).values()]
    assert all("ahead of district 339901's stream" in d for d in details), details
