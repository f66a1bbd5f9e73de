"""The demo's building fire on the console: from its first crossing reading to the console.

Run from the repository root::

    .venv/bin/python bench/demo_fire.py [--fire-after 300] [--seed 7] [--keep-logs]

It sets up what ``cityvitals demo --speed 1`` runs: an embedded broker, one worker with
its API (the console's data) and the simulated city with its scripted incidents, a week
back in event time and published at the speed of the clock. The building fire starts
``--fire-after`` wall seconds after the city (300: as in the demo, five minutes in).

A client of the console's live stream (``/api/v1/stream``, Server-Sent Events, as the
console's page reads it) waits for the fire's first alert in the fire's district. That
alert names the reading that decided it (``evidence.reading.origin``); the city's
publisher noted the wall time it sent each record of the fire's street, so the delay is
the stream's arrival time of the alert minus the send time of that reading, both on this
machine's clock. The stream delivers what the console renders on arrival.

Output: one JSON line on stdout: ``on_console_s`` (the delay), the alert (rule, grade,
decided) and the reading that decided it (indicator, value, event time).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from throughput import REPO_ROOT, BenchWorker, log

from streams.api.auth import write_roles_with_tokens
from streams.core.config import load_config
from streams.core.messages import AlertEvent
from streams.kafka.broker import EmbeddedBroker
from streams.kafka.topics import ensure_topics
from streams.sim.demo import DEMO_HISTORY_DAYS
from streams.sim.simulator import CitySimulator, SimEvent, default_incidents, publish

PARTITIONS = 8
READY_TIMEOUT_S = 120.0


class Sent:
    """The simulated city's events, noting when each event of one street is sent.

    :func:`streams.sim.simulator.publish` sends an event at its due time (the wall time its
    event time maps to) or at once when late; the send time is the later of the two.
    """

    def __init__(self, events: Iterator[SimEvent], street: str, speed: float) -> None:
        self.events, self.street, self.speed = events, street, speed
        self.at: dict[str, float] = {}  # event id -> wall time it was sent
        self._origin: tuple[float, datetime] | None = None

    def __iter__(self) -> Iterator[SimEvent]:
        for ev in self.events:
            now = time.time()
            if self._origin is None:
                self._origin = (now, ev.event_time)
            wall0, first = self._origin
            due = wall0 + (ev.event_time - first).total_seconds() / self.speed
            if self.street.encode() in ev.value and ev.malformed is None:
                self.at[orjson.loads(ev.value)["event_id"]] = max(now, due)
            yield ev


async def first_fire_alert(
    url: str, token: str, district: str, timeout: float
) -> tuple[AlertEvent, float]:
    """The first fire alert of the district on the console's stream, and its arrival time."""
    headers = {"Authorization": f"Bearer {token}", "Accept": "text/event-stream"}
    params = {"district": district, "domain": "fire"}
    async with (
        httpx.AsyncClient(timeout=httpx.Timeout(timeout)) as client,
        client.stream("GET", f"{url}/api/v1/stream", headers=headers, params=params) as r,
    ):
        r.raise_for_status()
        async for line in r.aiter_lines():
            if line.startswith("data:"):
                arrived = time.time()
                event = AlertEvent.model_validate_json(line[5:].strip())
                if event.kind.value == "alarm":
                    return event, arrived
    raise RuntimeError("the stream ended before the fire's alert")


async def record_at(bootstrap: str, origin: str) -> dict[str, Any]:
    topic, partition, offset = origin.rsplit(":", 2)
    tp = TopicPartition(topic, int(partition))
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False
    )
    await consumer.start()
    try:
        consumer.assign([tp])
        consumer.seek(tp, int(offset))
        rec = await consumer.getone()
        return dict(orjson.loads(rec.value))
    finally:
        await consumer.stop()


def measure(workdir: Path, fire_after: float, seed: int) -> dict[str, Any]:
    cfg = load_config()
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(days=7)
    incidents = list(default_incidents(cfg, start))
    fire = next(i for i in incidents if i.kind == "building_fire")
    shifted = replace(
        fire,
        start=start + timedelta(seconds=fire_after),
        end=start + timedelta(seconds=fire_after) + (fire.end - fire.start),
    )
    incidents[incidents.index(fire)] = shifted
    sim = CitySimulator(cfg, seed=seed, start=start, malformed_share=0.02, incidents=incidents)
    assert shifted.street is not None
    sent = Sent(iter(sim.events(timedelta(days=7))), shifted.street, 1.0)
    with EmbeddedBroker(log_path=workdir / "broker.log") as broker:
        asyncio.run(ensure_topics(broker.bootstrap, PARTITIONS))
        tokens = write_roles_with_tokens(
            REPO_ROOT / "config" / "roles.yaml", workdir / "roles.yaml"
        )
        operator = tokens["cc.duty"]  # the command centre's duty officer (config/roles.yaml)
        worker = BenchWorker(broker.bootstrap, PARTITIONS, workdir)
        worker.env["CITYVITALS_ROLES_FILE"] = str(workdir / "roles.yaml")
        worker.env["CITYVITALS_IDLE_CLOSE_S"] = "120"  # as the demo at --speed 1
        worker.env["CITYVITALS_API_HISTORY_DAYS"] = f"{DEMO_HISTORY_DAYS}"  # as the demo
        worker.start()
        url = f"http://127.0.0.1:{worker.web_port}"
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            worker.check_alive()
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"worker not ready\n{worker.log_tail()}")
            time.sleep(0.3)
        log(f"worker ready; the fire starts in {fire_after:g} s in street {shifted.street}")

        async def run() -> tuple[AlertEvent, float]:
            city = asyncio.create_task(publish(broker.bootstrap, sent, speed=1.0))
            try:
                return await first_fire_alert(url, operator, shifted.district, fire_after + 900)
            finally:
                city.cancel()

        try:
            alert, arrived = asyncio.run(run())
            reading = alert.evidence.reading
            if reading is None or reading.origin is None:
                raise RuntimeError(f"the fire's first alert was decided at window close: {alert}")
            body = asyncio.run(record_at(broker.bootstrap, reading.origin))
        finally:
            worker.stop()
    produced = sent.at[body["event_id"]]
    return {
        "on_console_s": round(arrived - produced, 3),
        "rule": alert.evidence.rule,
        "grade": alert.grade.roman,
        "decided": alert.evidence.decided,
        "reading": {
            "indicator": body["indicator"],
            "value": body["value"],
            "event_time": body["event_time"],
        },
        "street": shifted.street,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--fire-after", type=float, default=300.0, help="wall seconds to the fire")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--keep-logs", action="store_true")
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="cityvitals-demo-fire-"))
    log(f"work directory: {workdir}")
    result = measure(workdir, args.fire_after, args.seed)
    if not args.keep_logs:
        shutil.rmtree(workdir, ignore_errors=True)
    sys.stdout.write(json.dumps(result, ensure_ascii=False) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
