"""Event-to-alarm latency: from producing a threshold-crossing reading to its alert event.

Run from the repository root::

    .venv/bin/python bench/latency.py [--per-class 45 45 20] [--max-rate R] [--partitions 8]
                                      [--span 300] [--seed 7] [--sim-linger-ms 50]
                                      [--report FILE] [--keep-logs]

What happens, in order:

1. **The worker's maximum rate** (skipped with ``--max-rate``): on an embedded broker of its
   own, ``bench/throughput.py``'s measurement (100,000 simulated events as a backlog, one
   worker from the first to the last event) gives ``max_rate`` events/s. That broker is
   then stopped, so its backlog does not load the run below.
2. **The live city**: a fresh embedded broker and one worker (``cityvitals worker``), with
   the shipped configuration plus one rule the shipped one does not have, a mean over one
   minute with no pending time (``bench.collection_delay.mean1``), so that a mean-window rule can be
   timed without minutes of pending. A child process publishes the simulated city (no
   scripted incidents) in real time, event time = wall time, at ``max_rate / 2`` events/s
   (the simulator's sensor scale is chosen from its rate at scale 1 over the next ten
   minutes of the day). Its producer gathers records for ``--sim-linger-ms`` (50 ms) into
   each produce request, as a gateway publishing thousands of readings a second would.
   The embedded broker's cost is per stored record batch, and grows with the batches it
   holds (it keeps everything, in memory): at 5,000 records/s over 5 topics of
   8 partitions, with one plain producer and one plain consumer on this 2-core machine,
   it took 86 % of a core in the first minute at 5 ms, 67 % at 10 ms, 17 % at 20 ms and
   7 % at 50 ms; after four minutes, 99 % at 20 ms and 48 % at 50 ms. Once the broker
   needs most of a core, the three processes no longer fit on two and the worker's
   fetches queue behind the simulator's produce requests: with 5 ms its reading-level
   alarms took 2.9 s at the median and 10.8 s at p99 while the worker was busy a
   quarter of the time, with 20 ms p99 was 1.07 s and rising through the run
   (``--sim-linger-ms`` reproduces either). Apache Kafka's cost does not grow so.
3. **Injections**, after a minute of warm-up, at moments drawn uniformly at random over
   ``--span`` seconds, each produced on its own with the wall clock as its Kafka
   timestamp and awaited:

   - ``reading``: a water-main pressure of 100 kPa, then later 60 kPa, in one street:
     ``water.pressure.burst`` (on each reading) fires grade II, then rises to I.
   - ``monotone``: a fire-sensor temperature of 70, 100, then 200 °C in one street:
     ``fire.temperature.max`` (window maximum) fires III, then rises to II and I.
   - ``mean``: a refuse-collection delay of 2,880 min in one street (the feed reports
     about one delay an hour per district, so the minute's mean is that reading):
     ``bench.collection_delay.mean1`` fires when that minute's window closes.

   Each street takes one rule's steps in order, then no other injection, so each
   injection makes exactly one alert event.
4. **Matching**: a consumer reads ``city.emergency-command``. An alert decided on the
   reading names it (``evidence.reading.origin`` = topic:partition:offset), so each
   reading and monotone injection finds its event exactly; a mean injection finds the
   firing event of its rule and street whose window ends with the injection's minute.
   The latency is the alert record's Kafka timestamp (set by the worker's producer as it
   appends the record) minus the injected record's, both from this machine's clock.

Output: one JSON line on stdout, ``{"reading": {"n", "p50", "p99", "max"}, "monotone": {…},
"mean": {…}}`` in seconds (p99 by linear interpolation between order statistics); with
``--report`` a JSON file that adds the load (rates, scale), every injection's latency and
any injection whose alert never came (then the exit status is 1).

The documented bound of a mean-window rule is the time from the reading to the end of its
minute, plus the allowed lateness (120 s), plus the slowest active source's lag, plus a
batch: up to about three minutes. Reading-level and monotone rules do not wait for the
window, so their latency is the worker's batch time and the broker round trips.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import yaml
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from throughput import (
    REPO_ROOT,
    BenchWorker,
    generate_events,
    log,
    produce,
    run_pipeline,
)

from streams.core.config import CityConfig, load_config
from streams.core.messages import ALERTS_TOPIC, EVENT_TOPICS, AlertEvent
from streams.kafka.broker import EmbeddedBroker, parent_death_preexec
from streams.kafka.topics import ensure_topics
from streams.sim.simulator import CitySimulator

CLASSES = ("reading", "monotone", "mean")
MEAN_RULE: dict[str, object] = {
    "id": "bench.collection_delay.mean1",
    "department": "sanitation",
    "indicator": "sanitation.collection_delay_min",
    "aggregate": "mean",
    "window": "1m",
    "scope": "street",
    "direction": "above",
    "grades": {"II": 600},
    "pending": 0,
    "hold": "1m",
}
# class -> (indicator, unit, the values a street takes in turn, rule)
STEPS: dict[str, tuple[str, str, tuple[float, ...], str]] = {
    "reading": ("iot.water_pressure_kpa", "kPa", (100.0, 60.0), "water.pressure.burst"),
    "monotone": ("fire.temperature_c", "°C", (70.0, 100.0, 200.0), "fire.temperature.max"),
    "mean": ("sanitation.collection_delay_min", "min", (2880.0,), "bench.collection_delay.mean1"),
}
WARMUP_S = 60.0
MAX_RATE_EVENTS = 100_000


# --- the live city ---------------------------------------------------------------------------


def simulate(bootstrap: str, rate: float, seed: int, linger_ms: int) -> None:
    """Publish the simulated city in real time at about ``rate`` events/s until killed,
    in produce batches gathered for ``linger_ms``."""
    cfg = load_config()
    now = datetime.now(UTC)
    probe = CitySimulator(cfg, seed=seed, start=now, incidents=())
    base = sum(1 for _ in probe.events(timedelta(minutes=10))) / 600.0
    scale = rate / base
    log(f"simulator: {base:,.0f} events/s at scale 1, scale {scale:.2f} for {rate:,.0f}/s")
    sim = CitySimulator(cfg, seed=seed, start=now, incidents=(), sensor_scale=scale)

    async def publish() -> None:
        producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap, linger_ms=linger_ms, max_batch_size=256 * 1024
        )
        await producer.start()
        try:
            for ev in sim.events(timedelta(days=1)):
                delay = ev.event_time.timestamp() - time.time()
                if delay > 0.005:
                    await asyncio.sleep(delay)
                await producer.send(ev.topic, ev.value, key=ev.key)
        finally:
            await producer.stop()

    asyncio.run(publish())


def bench_config(workdir: Path) -> Path:
    """The shipped configuration plus the one-minute mean rule."""
    target = workdir / "config"
    shutil.copytree(REPO_ROOT / "config", target)
    path = target / "thresholds.yaml"
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    doc["rules"].append(MEAN_RULE)
    path.write_text(yaml.safe_dump(doc, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return target


# --- injections ------------------------------------------------------------------------------


@dataclass
class Injection:
    cls: str
    district: str
    street: str
    value: float
    due: float  # seconds after the first injection moment
    produced_ms: int = 0
    origin: str = ""  # topic:partition:offset of the (last) record
    event_time: float = 0.0
    alert_ms: int | None = None

    @property
    def latency_s(self) -> float | None:
        return None if self.alert_ms is None else (self.alert_ms - self.produced_ms) / 1000.0


def plan(
    cfg: CityConfig, per_class: dict[str, int], span: float, rng: random.Random
) -> list[Injection]:
    """Injections at random moments; each class's streets take their steps in time order."""
    streets = [(d, s.code) for d in sorted(cfg.districts) for s in cfg.districts[d].streets]
    out: list[Injection] = []
    for cls in CLASSES:  # each class its own rule: a street may serve every class
        values = STEPS[cls][2]
        n = per_class[cls]
        needed = math.ceil(n / len(values))
        if needed > len(streets):
            raise SystemExit(
                f"{n} {cls} injections need {needed} streets; the city has {len(streets)}"
            )
        mine = rng.sample(streets, needed)
        moments = sorted(rng.uniform(0, span) for _ in range(n))
        for k, due in enumerate(moments):
            district, street = mine[k // len(values)]
            out.append(Injection(cls, district, street, values[k % len(values)], due))
    return sorted(out, key=lambda i: i.due)


def _record(inj: Injection, t: float) -> tuple[str, bytes, bytes]:
    indicator, unit = STEPS[inj.cls][0], STEPS[inj.cls][1]
    body = {
        "event_id": f"bench-{uuid.uuid4().hex[:16]}",
        "source": f"{indicator}.{inj.street}.99",
        "district": inj.district,
        "street": inj.street,
        "indicator": indicator,
        "value": inj.value,
        "unit": unit,
        "event_time": datetime.fromtimestamp(t, UTC).isoformat(),
    }
    return EVENT_TOPICS[indicator.split(".", 1)[0]], inj.district.encode(), orjson.dumps(body)


async def inject(bootstrap: str, injections: list[Injection]) -> None:
    """Produce each injection at its moment (after the warm-up), awaiting each record."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0, acks="all")
    await producer.start()
    try:
        t0 = time.time() + WARMUP_S
        for n, inj in enumerate(injections):
            delay = t0 + inj.due - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            at = time.time()
            topic, key, value = _record(inj, at)
            ms = int(time.time() * 1000)
            md = await producer.send_and_wait(topic, value, key=key, timestamp_ms=ms)
            inj.produced_ms, inj.event_time = ms, at
            inj.origin = f"{md.topic}:{md.partition}:{md.offset}"
            log(f"injected {n + 1}/{len(injections)}: {inj.cls} {inj.street} = {inj.value:g}")
    finally:
        await producer.stop()


async def collect(
    bootstrap: str, injections: list[Injection], done: asyncio.Event, give_up: float
) -> None:
    """Match alert records to injections until every injection has one or time is up."""
    by_origin = {}
    consumer = AIOKafkaConsumer(
        ALERTS_TOPIC, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        while time.time() < give_up:
            batches = await consumer.getmany(timeout_ms=500)
            by_origin = {i.origin: i for i in injections if i.origin and i.cls != "mean"}
            for records in batches.values():
                for rec in records:
                    event = AlertEvent.model_validate_json(rec.value)
                    _match(event, rec.timestamp, by_origin, injections)
            if done.is_set() and all(i.alert_ms is not None for i in injections):
                return
    finally:
        await consumer.stop()


def _match(
    event: AlertEvent, ts: int, by_origin: dict[str, Injection], injections: list[Injection]
) -> None:
    reading = event.evidence.reading
    if reading is not None and reading.origin in by_origin:
        inj = by_origin[reading.origin]
        if inj.alert_ms is None:
            inj.alert_ms = ts
        return
    if event.evidence.rule != MEAN_RULE["id"] or event.status.value != "firing":
        return
    end = event.event_time.timestamp()
    for inj in injections:
        if (
            inj.cls == "mean"
            and inj.alert_ms is None
            and inj.street == event.street
            and inj.event_time
            and end - 60 <= inj.event_time < end
        ):
            inj.alert_ms = ts


def summary(values: Sequence[float]) -> dict[str, Any]:
    if not values:
        return {"n": 0, "p50": None, "p99": None, "max": None}
    ordered = sorted(values)
    p99 = (
        statistics.quantiles(ordered, n=100, method="inclusive")[98]
        if len(ordered) > 1
        else ordered[0]
    )
    return {
        "n": len(ordered),
        "p50": round(statistics.median(ordered), 3),
        "p99": round(p99, 3),
        "max": round(ordered[-1], 3),
    }


# --- main ------------------------------------------------------------------------------------


def measure_max_rate(workdir: Path, partitions: int, seed: int) -> float:
    with EmbeddedBroker(log_path=workdir / "broker-max.log") as broker:
        asyncio.run(ensure_topics(broker.bootstrap, partitions))
        events = generate_events(MAX_RATE_EVENTS, seed, 0.0)
        asyncio.run(produce(broker.bootstrap, events, False))
        del events
        result = run_pipeline(broker.bootstrap, MAX_RATE_EVENTS, partitions, workdir, False)
    rate = MAX_RATE_EVENTS / result.seconds
    log(f"the worker's maximum rate: {rate:,.0f} events/s")
    return rate


def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    cfg = load_config()
    per_class = dict(zip(CLASSES, args.per_class, strict=True))
    max_rate = args.max_rate or measure_max_rate(workdir, args.partitions, args.seed)
    rate = max_rate / 2
    injections = plan(cfg, per_class, args.span, random.Random(args.seed))
    with EmbeddedBroker(log_path=workdir / "broker.log") as broker:
        asyncio.run(ensure_topics(broker.bootstrap, args.partitions))
        worker = BenchWorker(broker.bootstrap, args.partitions, workdir)
        worker.env["CITYVITALS_CONFIG_DIR"] = str(bench_config(workdir))
        worker.env.pop("CITYVITALS_IDLE_CLOSE_S")  # the worker's own default, as deployed
        sim = subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--simulate",
                broker.bootstrap,
                "--rate",
                f"{rate:.0f}",
                "--sim-linger-ms",
                str(args.sim_linger_ms),
            ],
            cwd=REPO_ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=(workdir / "simulator.log").open("wb"),
            preexec_fn=parent_death_preexec(signal.SIGTERM),
        )
        try:
            worker.start()
            log(
                f"worker {worker.app_id}, simulator at {rate:,.0f} events/s; warm-up {WARMUP_S:g} s"
            )

            async def both() -> None:
                done = asyncio.Event()
                give_up = time.time() + WARMUP_S + args.span + 600
                collector = asyncio.create_task(
                    collect(broker.bootstrap, injections, done, give_up)
                )
                await inject(broker.bootstrap, injections)
                done.set()
                await collector

            asyncio.run(both())
            worker.check_alive()
            if sim.poll() is not None:
                raise RuntimeError(f"the simulator exited with {sim.returncode}")
        finally:
            sim.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                sim.wait(timeout=10)
            worker.stop()
    result = {
        cls: summary([i.latency_s for i in injections if i.cls == cls and i.latency_s is not None])
        for cls in CLASSES
    }
    report = {
        **result,
        "max_rate_events_per_s": round(max_rate, 1),
        "rate_events_per_s": round(rate, 1),
        "sim_linger_ms": args.sim_linger_ms,
        "partitions": args.partitions,
        "cpu_count": os.cpu_count(),
        "missing": [vars(i) for i in injections if i.alert_ms is None],
        "injections": [{**vars(i), "latency_s": i.latency_s} for i in injections],
    }
    if args.report:
        Path(args.report).write_text(json.dumps(report, indent=1), encoding="utf-8")
    if report["missing"]:
        log(f"[red]{len(report['missing'])} injections raised no alert[/]")
    return result | ({"missing": len(report["missing"])} if report["missing"] else {})


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--per-class",
        type=int,
        nargs=3,
        default=[45, 45, 20],
        metavar=("READING", "MONOTONE", "MEAN"),
        help="injections per class",
    )
    parser.add_argument(
        "--max-rate",
        type=float,
        default=None,
        help="the worker's maximum events/s (default: measured first)",
    )
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument(
        "--span", type=float, default=300.0, help="seconds the injections spread over"
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--report", help="write every injection and the load here (JSON)")
    parser.add_argument("--keep-logs", action="store_true")
    parser.add_argument(
        "--sim-linger-ms",
        type=int,
        default=50,
        help="how long the simulator's producer gathers records into one request",
    )
    parser.add_argument("--simulate", metavar="BOOTSTRAP", help=argparse.SUPPRESS)
    parser.add_argument("--rate", type=float, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.simulate:
        simulate(args.simulate, args.rate, args.seed, args.sim_linger_ms)
        return 0
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    workdir = Path(tempfile.mkdtemp(prefix="cityvitals-latency-"))
    log(f"work directory (broker, worker and simulator logs): {workdir}")
    try:
        result = run(args, workdir)
    except KeyboardInterrupt:
        log(f"interrupted; logs kept in {workdir}")
        return 130
    if not args.keep_logs and "missing" not in result:
        shutil.rmtree(workdir, ignore_errors=True)
    sys.stdout.write(json.dumps(result) + "\n")
    return 1 if "missing" in result else 0


if __name__ == "__main__":
    sys.exit(main())
