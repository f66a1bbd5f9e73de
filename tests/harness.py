"""Helpers for integration tests: a worker in a subprocess, producing and reading topics."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from streams.core.logs import records
from streams.core.messages import ALERTS_TOPIC, AlertAction, AlertEvent
from streams.core.settings import Settings
from streams.core.signing import ActionSigner
from streams.kafka.child import WorkerProcess, free_port, worker_environment
from streams.kafka.topics import ensure_topics
from streams.sim.simulator import SimEvent

# the benches' helpers, imported as the benches import each other (run as scripts)
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import promtext

PARTITIONS = 4
NOISY = frozenset({"warning", "error", "critical"})  # log levels an operator must look at


@dataclass
class Worker:
    """``cityvitals worker`` as a child process, so tests can SIGKILL it."""

    bootstrap: str
    workdir: Path
    app_id: str = field(default_factory=lambda: f"cv-test-{uuid.uuid4().hex[:8]}")
    env: dict[str, str] = field(default_factory=dict)
    web_port: int = field(default_factory=free_port)
    child: WorkerProcess | None = None
    starts: int = 0

    @property
    def proc(self) -> subprocess.Popen[bytes] | None:
        return None if self.child is None else self.child.proc

    def start(self, timeout: float = 60.0) -> Worker:
        self.starts += 1
        env = worker_environment(
            self.bootstrap,
            self.app_id,
            self.web_port,
            self.workdir / "data",
            partitions=str(PARTITIONS),
            idle_close_s="10",
            embedded_broker="0" if os.environ.get("CITYVITALS_TEST_BOOTSTRAP") else "1",
            log_level="info",
        )
        self.child = WorkerProcess(
            {**env, **self.env},
            self.web_port,
            self.workdir / f"worker-{self.starts}.log",
            death_signal=None,
        )
        self.child.start()
        self.child.wait_ready(timeout)
        return self

    def forget_group(self, *, input_offsets: bool = False) -> None:
        """Delete the stopped worker's consumer group, and with it its input offsets if asked.

        The embedded broker keeps a departed member in the group, and the next
        worker's join then goes through a second rebalance during its recovery,
        which can stall Faust's fetcher. Starting from an empty group avoids it.
        The input offsets live in a group of their own (``<app id>-input``, no
        members); deleting them makes the next worker reprocess every event from
        the start, and it must recognise the ones its table already applied.
        """
        from kafka.admin import KafkaAdminClient

        admin = KafkaAdminClient(bootstrap_servers=self.bootstrap)
        try:
            admin.delete_groups(
                [self.app_id, f"{self.app_id}-input"] if input_offsets else [self.app_id]
            )
        finally:
            admin.close()

    def log_tail(self, n: int = 40) -> str:
        return "" if self.child is None else self.child.log_tail(n)

    def warnings(self, n: int = 40) -> str:
        """The last ``n`` warnings and errors the worker logged (for a failure message)."""
        path = self.workdir / f"worker-{self.starts}.log"
        if not path.exists():
            return ""
        found = [r for r in records(path.read_text(errors="replace")) if r["level"] in NOISY]
        return "\n".join(orjson.dumps(r).decode() for r in found[-n:])

    def metric(self, name: str, labels: Mapping[str, str] | None = None) -> float:
        """The sum of the worker's samples of ``name`` whose labels include ``labels``."""
        text = httpx.get(f"http://127.0.0.1:{self.web_port}/metrics", timeout=5).text
        return promtext.sample_sum(text, name, labels)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> None:
        if self.child is not None:
            self.child.stop(sig, timeout)


@dataclass(frozen=True)
class Produced:
    event: SimEvent
    topic: str
    partition: int
    offset: int


async def produce(
    bootstrap: str, events: Iterable[SimEvent], partitions: int = PARTITIONS
) -> list[Produced]:
    """Publish events and return where each one landed (on topics of ``partitions``)."""
    await ensure_topics(bootstrap, partitions)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, acks="all")
    await producer.start()
    try:
        futures = [(ev, await producer.send(ev.topic, ev.value, key=ev.key)) for ev in events]
        out = []
        for ev, fut in futures:
            md = await fut
            out.append(Produced(ev, md.topic, md.partition, md.offset))
        return out
    finally:
        await producer.stop()


async def read_records(
    bootstrap: str, topic: str, *, idle_s: float = 3.0, timeout_s: float = 180.0
) -> list[Any]:
    """Every record on a topic from the start: at least up to each partition's end as
    of the call, then on until nothing new arrives for ``idle_s``.

    The end comes first because a loaded machine can take longer than ``idle_s`` to
    start a consumer and fetch from every partition; reading only until the first
    idle spell then returns part of the topic. Not reaching the end within
    ``timeout_s`` is an error, not a short answer.
    """
    from aiokafka.structs import TopicPartition

    from streams.kafka.broker import corrected_end_offsets

    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest"
    )
    await consumer.start()
    records: list[Any] = []
    try:
        await consumer.topics()  # the metadata, so that the partitions are known
        tps = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        if not tps:
            raise AssertionError(f"topic {topic} does not exist")
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await corrected_end_offsets(bootstrap, await consumer.end_offsets(tps))
        deadline = time.monotonic() + timeout_s
        while True:
            batch = await consumer.getmany(timeout_ms=int(idle_s * 1000), max_records=10_000)
            for msgs in batch.values():
                records.extend(msgs)
            short = {tp: end for tp, end in ends.items() if await consumer.position(tp) < end}
            if not batch and not short:
                return records
            if short and time.monotonic() > deadline:
                raise AssertionError(
                    f"{topic}: not read to its end in {timeout_s:.0f} s: "
                    + ", ".join(
                        f"{tp.partition} at {await consumer.position(tp)} of {end}"
                        for tp, end in short.items()
                    )
                )
    finally:
        await consumer.stop()


async def read_topic(bootstrap: str, topic: str, *, idle_s: float = 3.0) -> list[bytes]:
    """Every value on a topic from the start, until nothing new arrives for ``idle_s``."""
    records = await read_records(bootstrap, topic, idle_s=idle_s)
    return [r.value for r in records if r.value is not None]


async def recreate_city_topics(bootstrap: str, partitions: int = PARTITIONS) -> None:
    """Delete the city topics and create them empty, with ``partitions`` partitions each."""
    from aiokafka.admin import AIOKafkaAdminClient

    from streams.kafka.topics import CITY_TOPICS

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        doomed = [t for t in CITY_TOPICS if t in existing]
        if doomed:
            await admin.delete_topics(doomed)
    finally:
        await admin.close()
    await ensure_topics(bootstrap, partitions)


def signed(action: AlertAction) -> AlertAction:
    """The action as a writer holding the action key publishes it: the session's key
    (tests/conftest.py), which every worker of the session holds."""
    return ActionSigner(*Settings().action_keys()).sign(action)


def wait_for(predicate: object, timeout: float, what: str, interval: float = 0.5) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def run(coro: object) -> object:
    return asyncio.run(coro)  # type: ignore[arg-type]


SMOG_DISTRICT, SMOG_STREET = "339901", "339901001"
IOT = "city.events.iot"


def smog(
    start: datetime,
    minutes: range,
    level: float,
    rise: float = 0.0,
    *,
    district: str = SMOG_DISTRICT,
    street: str = SMOG_STREET,
) -> list[SimEvent]:
    """PM2.5 readings every 30 s of event time in one street, at ``level`` (+ ``rise``/min)."""
    out = []
    for m in minutes:
        now = level + rise * (m - minutes.start)
        for half in (0, 30):
            t = start + timedelta(minutes=m, seconds=half)
            body = {
                "event_id": f"pm25-{uuid.uuid4().hex[:12]}",
                "source": f"iot.pm25.{street}.01",
                "district": district,
                "street": street,
                "indicator": "iot.pm25",
                "value": now + (m % 3),
                "unit": "µg/m³",
                "event_time": t.isoformat(),
            }
            out.append(SimEvent(IOT, district.encode(), orjson.dumps(body), t))
    return out


@dataclass
class ApiWorker:
    """A worker whose API knows a fresh token for every user of config/roles.yaml."""

    worker: Worker
    tokens: dict[str, str]

    @classmethod
    @contextlib.contextmanager
    def started(cls, bootstrap: str, workdir: Path) -> Iterator[ApiWorker]:
        """A worker started on ``bootstrap`` with a token for every user of
        config/roles.yaml; killed when the block ends."""
        from streams.api.auth import write_roles_with_tokens
        from streams.core.config import DEFAULT_CONFIG_DIR

        roles = workdir / "roles.yaml"
        tokens = write_roles_with_tokens(DEFAULT_CONFIG_DIR / "roles.yaml", roles)
        w = Worker(bootstrap, workdir, env={"CITYVITALS_ROLES_FILE": str(roles)})
        w.start()
        try:
            yield cls(w, tokens)
        finally:
            w.stop(signal.SIGKILL)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.worker.web_port}"

    @property
    def bootstrap(self) -> str:
        return self.worker.bootstrap

    def headers(self, user: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[user]}"}

    def get(self, path: str, user: str = "cc.duty", **params: Any) -> httpx.Response:
        return httpx.get(f"{self.url}{path}", headers=self.headers(user), params=params, timeout=10)

    def post(self, path: str, body: dict[str, Any], user: str = "cc.duty") -> httpx.Response:
        return httpx.post(f"{self.url}{path}", headers=self.headers(user), json=body, timeout=10)

    def produce_incident(self, start: datetime | None = None) -> None:
        """PM2.5 smog building up in street 339901001: a grade-II alarm fires (and stays
        open: the readings stop while the air is still bad)."""
        start = start or datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=3)
        events = (
            smog(start, range(0, 25), 40)
            + smog(start, range(25, 45), 40, rise=8)
            + smog(start, range(45, 55), 200)
        )
        run(produce(self.bootstrap, events))


def street_fire(start: datetime, minutes: range, celsius: float) -> list[SimEvent]:
    """Fire-sensor temperatures every 20 s of event time in street 339901001: at 150 °C
    and above the street-scoped rule fire.temperature.max raises a red (grade I) alarm."""
    out = []
    for m in minutes:
        for second in (0, 20, 40):
            t = start + timedelta(minutes=m, seconds=second)
            body = {
                "event_id": f"temp-{uuid.uuid4().hex[:12]}",
                "source": "fire.temperature_c.339901001.01",
                "district": SMOG_DISTRICT,
                "street": SMOG_STREET,
                "indicator": "fire.temperature_c",
                "value": celsius + (m % 2),
                "unit": "°C",
                "event_time": t.isoformat(),
            }
            out.append(SimEvent("city.events.fire", SMOG_DISTRICT.encode(), orjson.dumps(body), t))
    return out


def replayed(
    events: list[SimEvent], tmp: Path, district: str = SMOG_DISTRICT
) -> list[dict[str, Any]]:
    """PM2.5 readings of one district through ``cityvitals replay`` (offline: the same
    windows, detection and lifecycle, one process, no Kafka, no crash)."""
    from streams.alerting.replay import replay_file
    from streams.core.config import load_config

    src = tmp / f"pm25-{district}.csv"
    rows = ["timestamp,pm25"] + [
        f"{ev.event_time.isoformat()},{orjson.loads(ev.value)['value']}" for ev in events
    ]
    src.write_text("\n".join(rows) + "\n", encoding="utf-8")
    lines, _ = replay_file(src, load_config(), district=district, mapping={"pm25": "iot.pm25"})
    return lines


def published(bootstrap: str) -> list[AlertEvent]:
    """Every alert event on ``city.emergency-command``, in partition order."""
    return [
        AlertEvent.model_validate_json(v)
        for v in run(read_topic(bootstrap, ALERTS_TOPIC, idle_s=1))
    ]


def worker_pair(bootstrap: str, tmp: Path, env: dict[str, str]) -> tuple[Worker, Worker]:
    """Two workers of one app id (one consumer group), each with its own web port and datadir."""
    (tmp / "a").mkdir()
    (tmp / "b").mkdir()
    a = Worker(bootstrap, tmp / "a", env=env)
    return a, Worker(bootstrap, tmp / "b", app_id=a.app_id, env=env)


def summary(e: AlertEvent | dict[str, Any]) -> tuple[Any, ...]:
    """What must agree between a worker and the replay (replay's event_time is the input's text)."""
    if isinstance(e, AlertEvent):
        doc = orjson.loads(e.to_json())
        doc["event_time_utc"] = doc["event_time"]
    else:
        doc = e
    return (
        doc["alert_id"],
        doc["fingerprint"],
        doc["sequence"],
        doc["status"],
        doc["grade"],
        doc["district"],
        doc["evidence"]["rule"],
        doc["evidence"].get("observed"),  # a site alert judges no one value
        doc["event_time_utc"],
    )
