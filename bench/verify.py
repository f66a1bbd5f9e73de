"""A standing fault verifier: known input, workers killed, paused and rebalanced
while they run, every expected output recomputed from the input and diffed.

Run from the repository root::

    .venv/bin/python bench/verify.py --quick [--seed 7] [--workdir DIR] [--report FILE]
    .venv/bin/python bench/verify.py            # the long run
    .venv/bin/python bench/verify.py --broker-restarts [--quick]

In the manner of Kafka Streams' EOS system tests.

**Broker restarts** (``--broker-restarts``, ``verify_broker.py``): the broker keeps
its log in a local S3 store instead of memory, two workers run untouched, and the
broker is restarted three times while the city streams in (SIGKILL 5 s down,
SIGTERM during the back-fill, SIGKILL 15 s down); the same oracle then checks that
nothing was lost or counted twice, and the summary gives each restart's recovery
times. A worker crash or a restart not caught up within 180 s fails the run.

**The driver** (this file, ``verify_input.py``, ``verify_faults.py``) starts an
embedded broker and the city's topics, and one to three ``cityvitals worker``
processes of one app id (one consumer group), each with its own web port and
data directory, idle-close time 10 s, a fresh de-identification key and a
routes file that mutes every notification and puts escalation a century away
(an ``escalate`` action would change alerts, which the replay cannot know). It
produces the simulated city (seeded, 2 % malformed events, each labelled with
the dead-letter reason it must get, and the citizens' appeals on every channel),
paced by event time, with one stretch produced at full speed (a back-fill),
mixed with hostile records labelled the same way (``verify_input.py``: among
them an appeal carrying its writer's name, number and e-mail, and appeals keyed
by another district, of no known category and without their text). Meanwhile a seeded script SIGKILLs workers and
restarts them, scales between one, two and three workers, and SIGSTOPs one for
longer than both the session timeout (6 s) and the idle-close time (10 s). The
``--quick`` run does one round of faults (6 kills, one pause, four rebalances);
the long run four (24 kills, four pauses, sixteen rebalances). After the last
fault the records that may kill a worker go in, then some more input. At the end
the driver waits until the workers have drained: every live worker ready with
input lag 0 (``cityvitals_pipeline_consumer_lag_records``), the committed input
offsets at the end of every input partition, and no new output for longer than
the idle-close time, so the last windows are closed (plus, if some input still
has no output at all, a longer silence). An overall timeout bounds every wait,
so a worker that crashes for good still gives a report.

**The oracle** (``verify_oracle.py``) recomputes, from the produced records
(topic, partition, offset, bytes) and the driver's labels alone: each input's
outcome (counted, or dead-lettered with one reason); each window's count and
sum per indicator (district, floor(event time, 60 s), indicator, values in the
canonical unit by the conversions of ``config/indicators.yaml``); each appeal's
reading (its emotion, and the earlier appeal it repeats), by the worker's own
appeal stage run over the appeals in the order produced with the workers' key,
and the tallies and samples it adds to its window; and every alert event,
public-opinion warnings included, by running the worker's detection over the
expected windows of each district in window order, as ``cityvitals replay``
does. It never reads the workers' counters or state.

**Differences**: an input without its expected outcome (nothing, another
outcome, or two outcomes); a reading whose values differ; raw personal data in
a reading or a dead letter's detail; an appeal's reading that names another
earlier appeal as the one it repeats (or none); a window expected but not published,
published but not expected, or whose last record per (district, window start)
has other counts or sums (relative tolerance 1e-9); an alert event (alert id,
sequence) missing, extra, or differing in status, grade, kind, place,
indicators, rule, observed value, event time, inhibition or silence. Each is
listed (kind ``missing``, ``extra``, ``duplicated`` or ``differing``, topic,
identity, expected and actual) on stderr or in ``--report``; any one makes the
exit status 1.

**Repeats** are not differences: counting is exactly once (each district's
state records the input offsets it applied) but outputs are at least once (a
worker killed after sending a batch's outputs and before writing its state
sends them again when the input is redelivered). An output repeated with the
same contents is counted under ``repeats``; the same identity written with
other contents (two reasons for one input, two versions of one window or
alert event) is a ``duplicated`` difference.

Stdout gets one JSON line: ``kills``, ``pauses``, ``rebalances``,
``backfills``, ``events``, ``differences``, ``repeats``, the differences by
class, the workers' crashes and group resets, and timings.
"""

from __future__ import annotations

import asyncio
import random
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from aiokafka import AIOKafkaConsumer, TopicPartition
from rich.console import Console
from rich.markup import escape
from verify_broker import retried_inputs, run_restarts
from verify_faults import Cluster, run_faults
from verify_input import CityStream, Control, FeedPlan, feed
from verify_oracle import OUTPUT_TOPICS, AppealReplay, OutputRecord, Produced, verify

from streams.core.config import load_config
from streams.core.messages import EVENT_TOPICS
from streams.core.secrets import from_variable
from streams.kafka.broker import EmbeddedBroker
from streams.kafka.child import DEID_KEY
from streams.kafka.topics import ensure_topics

QUIET_S = 18.0  # no new output for this long: the idle timer (10 s) has had its turn
LONG_QUIET_S = 45.0  # ... or this long, when some input never got an output
FETCH_MAX = 64 * 1024 * 1024  # a dead letter of a 10 MB record is 13 MB of base64


@dataclass(frozen=True)
class Mode:
    name: str
    cycles: int  # rounds of faults (see verify_faults.cycle)
    minutes: float  # planned span of the simulated stream
    speed: float  # simulated seconds per wall second
    hostile_sets: int
    burst: tuple[float, float]  # fractions of the span produced at full speed
    timeout_s: float  # the whole run, broker start to verdict
    drain_s: float  # at most, for the workers to drain at the end


# the stream runs on past its planned span until the faults are over (verify_input.feed)
QUICK = Mode("quick", 1, 120.0, 30.0, 1, (0.5, 0.7), 900.0, 180.0)
LONG = Mode("long", 4, 900.0, 40.0, 3, (0.3, 0.4), 3600.0, 300.0)


class Say:
    """Progress on stderr: rich when attached to a terminal, plain lines otherwise."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.console = Console(stderr=True) if sys.stderr.isatty() else None

    def __call__(self, message: str) -> None:
        stamp = f"[{time.monotonic() - self.t0:6.1f} s]"
        if self.console is not None:
            self.console.print(f"[dim]{stamp}[/dim] {escape(message)}", highlight=False)
        else:
            print(f"{stamp} {message}", file=sys.stderr, flush=True)


class Tail:
    """Reads the output topics from the start while the run goes on."""

    def __init__(self, bootstrap: str, partitions: int) -> None:
        self.bootstrap = bootstrap
        self.partitions = partitions
        self.records: list[OutputRecord] = []
        self.origins: set[tuple[str, int, int]] = set()
        self.last_new = time.monotonic()
        self._task: asyncio.Task[None] | None = None
        self._consumer: AIOKafkaConsumer | None = None

    async def start(self) -> None:
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=None,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            max_partition_fetch_bytes=FETCH_MAX // 2,
            fetch_max_bytes=FETCH_MAX,
        )
        await self._consumer.start()
        tps = [TopicPartition(t, p) for t in OUTPUT_TOPICS for p in range(self.partitions)]
        self._consumer.assign(tps)
        await self._consumer.seek_to_beginning(*tps)
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        assert self._consumer is not None
        while True:
            try:
                batch = await self._consumer.getmany(timeout_ms=500, max_records=5000)
            except Exception:  # a broker hiccup: the positions stay, read on
                await asyncio.sleep(0.5)
                continue
            for tp, msgs in batch.items():
                for m in msgs:
                    self.records.append(
                        OutputRecord(tp.topic, tp.partition, m.offset, m.key, m.value)
                    )
                    if tp.topic in ("city.readings", "city.deadletter") and m.value is not None:
                        origin = _origin(m.value)
                        if origin is not None:
                            self.origins.add(origin)
                if msgs:
                    self.last_new = time.monotonic()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._consumer is not None:
            await self._consumer.stop()


def _origin(value: bytes) -> tuple[str, int, int] | None:
    try:
        o = orjson.loads(value).get("origin")
        return (o["topic"], int(o["partition"]), int(o["offset"]))
    except (orjson.JSONDecodeError, AttributeError, KeyError, TypeError, ValueError):
        return None


class Committed:
    """The input offsets the workers committed (group ``<app id>-input``), read with a
    consumer that only asks: it never joins the group nor commits."""

    def __init__(self, bootstrap: str, group: str, partitions: int) -> None:
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
        )
        self._tps = [TopicPartition(t, p) for t in EVENT_TOPICS.values() for p in range(partitions)]

    async def start(self) -> None:
        await self._consumer.start()
        self._consumer.assign(self._tps)

    async def read(self) -> dict[tuple[str, int], int]:
        out = {}
        for tp in self._tps:
            offset = await self._consumer.committed(tp)
            if offset is not None:
                out[(tp.topic, tp.partition)] = offset
        return out

    async def ends(self) -> dict[tuple[str, int], int]:
        """The input's end offsets, as the broker reports them."""
        ends = await self._consumer.end_offsets(self._tps)
        return {(tp.topic, tp.partition): n for tp, n in ends.items()}

    async def stop(self) -> None:
        await self._consumer.stop()


def dump_outputs(records: list[OutputRecord], path: Path) -> int:
    """Vitals, alert events and dead letters in short (no readings, no original bytes),
    with where each was written: enough to see who published what after a run."""
    keep = {
        "city.vitals": ("district", "window_start", "events", "closed_at"),
        "city.emergency-command": ("alert_id", "sequence", "status", "grade", "event_time"),
        "city.deadletter": ("origin", "reason", "stage", "detail"),
    }
    n = 0
    with path.open("wb") as out:
        for rec in records:
            fields = keep.get(rec.topic)
            if fields is None or rec.value is None:
                continue
            try:
                doc = orjson.loads(rec.value)
            except orjson.JSONDecodeError:
                continue
            short: dict[str, Any] = {"topic": rec.topic, "partition": rec.partition}
            short["offset"] = rec.offset
            short.update({f: doc.get(f) for f in fields if f in doc})
            if isinstance(short.get("detail"), str):
                short["detail"] = short["detail"][:300]
            out.write(orjson.dumps(short) + b"\n")
            n += 1
    return n


@dataclass
class Drain:
    drained: bool = False
    why: str = ""
    seconds: float = 0.0
    last: dict[str, Any] = field(default_factory=dict)


async def drain(
    cluster: Cluster,
    tail: Tail,
    produced: list[Produced],
    timeout: float,
    say: Say,
) -> Drain:
    """Wait on conditions until the workers have handled everything and gone quiet."""
    t0 = time.monotonic()
    ends: dict[tuple[str, int], int] = {}
    for p in produced:
        ends[(p.topic, p.partition)] = max(ends.get((p.topic, p.partition), 0), p.offset + 1)
    origins = {p.origin for p in produced}
    result = Drain()
    committed_input = Committed(cluster.bootstrap, f"{cluster.app_id}-input", tail.partitions)
    await committed_input.start()
    try:
        await _drain(cluster, tail, committed_input, ends, origins, timeout, result, say)
    finally:
        await committed_input.stop()
    result.seconds = time.monotonic() - t0
    return result


async def _drain(
    cluster: Cluster,
    tail: Tail,
    committed_input: Committed,
    ends: dict[tuple[str, int], int],
    origins: set[tuple[str, int, int]],
    timeout: float,
    result: Drain,
    say: Say,
) -> None:
    t0 = time.monotonic()
    last_said = 0.0
    while time.monotonic() - t0 < timeout:
        await asyncio.sleep(1.0)
        quiet = time.monotonic() - tail.last_new
        live = [s for s in cluster.slots if s.index in cluster.target and not s.gave_up]
        if not live:
            if quiet >= QUIET_S:
                result.why = "no worker left to drain"
                break
            continue
        lags = [await cluster.input_lag(s) for s in live]
        ready = [await cluster.ready(s) for s in live]
        committed = await committed_input.read()
        behind = {tp: end - committed.get(tp, 0) for tp, end in ends.items()}
        uncommitted = sum(max(0, n) for n in behind.values())
        without_output = len(origins - tail.origins)
        result.last = {
            "lag": lags,
            "ready": ready,
            "uncommitted": uncommitted,
            "without_output": without_output,
            "quiet_s": round(quiet, 1),
        }
        if time.monotonic() - last_said >= 10:
            last_said = time.monotonic()
            say(f"draining: {result.last}")
        settled = all(lag == 0 for lag in lags) and all(ready) and uncommitted == 0
        if settled and quiet >= QUIET_S and (without_output == 0 or quiet >= LONG_QUIET_S):
            result.drained = True
            result.why = "drained" if without_output == 0 else "quiet, some input without output"
            break
        if quiet >= max(LONG_QUIET_S, 2 * QUIET_S) * 2 and not all(ready):
            result.why = "workers not ready and no output for long"
            break
    else:
        result.why = f"timed out after {timeout:g} s"


async def run(
    mode: Mode, seed: int, workdir: Path, partitions: int, say: Say, broker_restarts: bool = False
) -> dict[str, Any]:
    t_start = time.monotonic()
    cfg = load_config()
    rng = random.Random(f"cityvitals-verify-{seed}")
    deadline = t_start + mode.timeout_s
    timings: dict[str, float] = {}
    storage = "local-s3" if broker_restarts else "memory"
    broker = EmbeddedBroker(log_path=workdir / "broker.log", storage=storage)
    broker.start()
    recoveries: list[dict[str, Any]] = []
    say(f"broker at {broker.bootstrap}; logs in {workdir}")
    cluster: Cluster | None = None
    tail: Tail | None = None
    tasks: list[asyncio.Task[Any]] = []
    produced: list[Produced] = []
    control = Control()
    try:
        await ensure_topics(broker.bootstrap, partitions)
        tail = Tail(broker.bootstrap, partitions)
        await tail.start()
        cluster = Cluster(
            broker.bootstrap,
            workdir,
            app_id=f"cv-verify-{uuid.uuid4().hex[:8]}",
            partitions=partitions,
            size=3,
            say=say,
        )
        await cluster.scale(2 if broker_restarts else 1)
        supervisor = asyncio.create_task(cluster.supervise())
        tasks.append(supervisor)
        timings["startup_s"] = time.monotonic() - t_start

        now = datetime.now(UTC).replace(second=0, microsecond=0)
        planned = timedelta(minutes=mode.minutes)
        span = planned.total_seconds()
        extra = timedelta(minutes=4 * mode.minutes)
        # the stream may run on past its plan while faults are slow to finish; even at
        # its longest it must stay in the past, where every valid event is counted
        start = now - planned - extra - timedelta(hours=1)
        stream = CityStream(cfg, seed, start, planned, rng, hostile_sets=mode.hostile_sets)
        deid_key = from_variable(DEID_KEY, cluster.env).value
        if deid_key is None:
            raise RuntimeError(f"the workers have no {DEID_KEY}")
        appeals = AppealReplay(cfg, deid_key.encode())
        plan = FeedPlan(
            speed=mode.speed,
            burst=(span * mode.burst[0], span * mode.burst[1]),
            tail_s=20.0,
            max_extra=extra,
        )
        say(
            f"{mode.name} run, seed {seed}: {mode.minutes:g} simulated minutes from "
            f"{start.isoformat()} at {mode.speed:g}x, {mode.cycles} round(s) of faults"
        )
        t_feed = time.monotonic()
        feeder = asyncio.create_task(
            feed(broker.bootstrap, stream, cfg, plan, control, produced, say, appeals)
        )
        tasks.append(feeder)

        async def faults() -> None:
            try:
                if not broker_restarts:
                    await run_faults(
                        cluster, rng, cycles=mode.cycles, burst=control.burst_started, burst_cycle=0
                    )
                    return
                committed = Committed(broker.bootstrap, f"{cluster.app_id}-input", partitions)
                await committed.start()
                try:
                    recoveries[:] = await run_restarts(
                        broker,
                        control,
                        start,
                        planned,
                        committed.read,
                        committed.ends,
                        lambda: tail.last_new,
                        cluster.note,
                    )
                finally:
                    await committed.stop()
            finally:
                control.faults_done.set()
                say("faults done")

        faulter = asyncio.create_task(faults())
        tasks.append(faulter)

        async def ticker() -> None:
            while True:
                await asyncio.sleep(15.0)
                at = control.stream_time.isoformat() if control.stream_time else "-"
                written, workers = len(tail.records), len(cluster.running())
                say(
                    f"{control.produced} produced (stream at {at}), {written} written, {workers} workers"
                )

        tasks.append(asyncio.create_task(ticker()))
        budget = deadline - mode.drain_s - time.monotonic()
        done, _ = await asyncio.wait({feeder, faulter}, timeout=budget)
        for t in (feeder, faulter):
            if t not in done:
                say(f"overall timeout: stopping the {'input' if t is feeder else 'faults'}")
                t.cancel()
            elif (exc := t.exception()) is not None:
                raise exc
        timings["produce_s"] = time.monotonic() - t_feed
        say(f"produced {len(produced)} records; draining")
        drained = await drain(
            cluster, tail, produced, max(30.0, min(mode.drain_s, deadline - time.monotonic())), say
        )
        timings["drain_s"] = drained.seconds
        say(f"drain: {drained.why}")
        if broker_restarts:
            retried = await retried_inputs(broker.bootstrap, produced, partitions, FETCH_MAX)
            produced.extend(retried)
            say(f"{len(retried)} input records stored twice by the producer's retries")
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if cluster is not None:
            await cluster.close()
        if tail is not None:
            await tail.stop()
        broker.stop()

    t_verify = time.monotonic()
    dump_outputs(tail.records, workdir / "outputs.jsonl")
    verdict = verify(produced, tail.records, cfg)
    timings["verify_s"] = time.monotonic() - t_verify
    timings["total_s"] = time.monotonic() - t_start
    counts = cluster.counts
    return {
        "verdict": verdict,
        "summary": {
            "mode": mode.name,
            "seed": seed,
            "events": len(produced),
            "kills": counts["kills"],
            "pauses": counts["pauses"],
            "rebalances": counts["rebalances"],
            "backfills": 1 if control.burst_started.is_set() else 0,
            "storage": storage,
            "broker_restarts": len(recoveries),
            "input_retried": len(retried) if broker_restarts else 0,
            "recovery": recoveries,
            "differences": len(verdict.differences),
            "repeats": sum(verdict.repeats.values()),
            "repeats_by_topic": dict(sorted(verdict.repeats.items())),
            "classes": dict(verdict.classes().most_common()),
            "examples": verdict.examples(),
            "crashes": counts["crashes"],
            "workers_given_up": counts["given_up"],
            "group_resets": counts["group_resets"],
            "group_deletes": counts["group_deletes"],
            "drained": drained.drained,
            "drain": drained.why,
            "drain_state": drained.last,
            **verdict.stats,
            **{k: round(v, 1) for k, v in timings.items()},
            "workdir": str(workdir),
        },
        "timeline": cluster.timeline,
        "crash_logs": cluster.crash_logs,
    }


app = typer.Typer(add_completion=False, help=__doc__.split("\n\n")[0] if __doc__ else None)


@app.command()
def main(
    quick: Annotated[
        bool, typer.Option("--quick", help="one round of faults, a few minutes")
    ] = False,
    seed: Annotated[
        int, typer.Option(help="seeds the city, the hostile records and the faults")
    ] = 7,
    workdir: Annotated[
        Path | None, typer.Option(help="where the broker's and workers' logs are kept")
    ] = None,
    report: Annotated[
        Path | None, typer.Option(help="every difference as a JSON line (default: stderr)")
    ] = None,
    partitions: Annotated[int, typer.Option(help="partitions of every city topic")] = 4,
    broker_restarts: Annotated[
        bool,
        typer.Option(
            "--broker-restarts",
            help="restart the broker (log kept in a local S3 store) instead of the workers",
        ),
    ] = False,
) -> None:
    """Kill, pause and rebalance workers while they run; diff their outputs with an oracle."""
    mode = QUICK if quick else LONG
    if workdir is None:
        workdir = Path("/tmp") / f"cityvitals-verify-{datetime.now(UTC):%Y%m%dT%H%M%S}-{seed}"
    workdir.mkdir(parents=True, exist_ok=True)
    say = Say()
    result = asyncio.run(run(mode, seed, workdir, partitions, say, broker_restarts))
    verdict, summary = result["verdict"], result["summary"]
    (workdir / "timeline.json").write_bytes(
        orjson.dumps(
            {"timeline": result["timeline"], "crashes": result["crash_logs"]},
            option=orjson.OPT_INDENT_2,
        )
    )
    lines = [orjson.dumps(d.to_json(), default=str) for d in verdict.differences]
    if report is not None:
        report.write_bytes(b"".join(line + b"\n" for line in lines))
        summary["report"] = str(report)
    else:
        for line in lines:
            sys.stderr.write(line.decode() + "\n")
    for name, n in Counter(summary["classes"]).most_common():
        say(f"{n:7d}  {name}")
    print(orjson.dumps(summary, default=str).decode(), flush=True)
    unrecovered = broker_restarts and (
        summary["crashes"] > 0
        or len(summary["recovery"]) < 3
        or any(r["caught_up_s"] is None for r in summary["recovery"])
    )
    raise typer.Exit(1 if verdict.differences or unrecovered else 0)


if __name__ == "__main__":
    app()
