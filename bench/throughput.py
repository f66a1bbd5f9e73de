"""End-to-end throughput of the cityvitals worker, next to raw aiokafka consumption.

Run from the repository root::

    .venv/bin/python bench/throughput.py --events 200000 [--partitions 8] [--malformed 0.0]
                                         [--appeals 0.0] [--seed 7] [--repeat 1] [--keep-logs]

What happens, in order:

1. An :class:`~streams.kafka.broker.EmbeddedBroker` (in-memory Tansu) starts and the
   city's topics are created with ``--partitions`` partitions (``ensure_topics``).
2. ``--events`` N simulated events are generated (:class:`~streams.sim.simulator.CitySimulator`,
   starting far enough in the past that no valid event counts as "future") and produced
   to the ``city.events.*`` topics *before* anything consumes them (``--appeals 0.1``:
   a tenth of them citizens' appeals, :func:`with_appeals`): one aiokafka
   producer, ``linger_ms=10``, ``max_batch_size=256 KiB``, ``send()`` without awaiting
   each delivery, one ``flush()`` at the end.
3. **Raw baseline** (``raw_consume_events_per_s``): an ``AIOKafkaConsumer``
   (``group_id=None``, ``auto_offset_reset='earliest'``) subscribed to the five input
   topics calls ``getmany(max_records=10000)`` and only ``orjson.loads`` each value.
   The clock starts when the first non-empty batch arrives and stops at the N-th record;
   rate = N / that time: roughly the most any Python consumer could do with this broker.
   The first batch (up to 10,000 records, already fetched when the clock starts) is
   counted but its fetch is not timed, which flatters small runs (N = 20k) noticeably and
   N = 200k by a few per cent; the pipeline clock has the same kind of head start (the
   worker may be one or more 2,000-event batches in when ``events_in`` is first seen > 0).
4. **Pipeline** (``pipeline_events_per_s``): a ``python -m streams.cli worker`` subprocess
   (fresh app id, so a fresh consumer group that reads the backlog from the start;
   ``CITYVITALS_PARTITIONS`` = partitions, ``CITYVITALS_IDLE_CLOSE_S=5``) is started only
   after all events are on the topics. Its ``/metrics`` page is polled every 0.25 s
   from launch. The clock starts at the first scrape where
   ``cityvitals_ingest_events_in_total`` (summed over topics) is > 0 and stops at the
   first scrape where it is >= N *and* ``cityvitals_ingest_readings_total`` +
   ``cityvitals_ingest_deadletters_total`` >= N, i.e. every event was validated and
   handed to the producer as a reading or a dead letter (the counters move per event,
   before the worker awaits its batch's sends, so the last acknowledgement is not waited
   for). Group join and start-up are excluded; the 0.25 s polling interval is the timing
   error at each end (about 10 % of a 20k-event run, 1-2 % of a 200k one).
   ``worker_cpu_seconds`` is the CPU time (user and system, all threads, from
   ``/proc/<pid>/stat``) the worker used between those two scrapes: less sensitive than
   the rate to other load on the machine, so the figure to compare two versions by.
   ``worker_rss_mb`` is the worker's peak resident memory: the largest RSS sampled at each
   poll (psutil if installed, else ``/proc/<pid>/status`` VmRSS), or the kernel's VmHWM
   high-water mark when that is larger. After completion the bench waits for the idle
   timer (IDLE_CLOSE_S + a margin) so ``windows_closed`` includes the windows closed for
   silence, then stops the worker with SIGTERM.
5. One JSON object goes to stdout, everything else (progress, logs, where the worker's
   log is) to stderr. Besides the rates it holds ``readings``, ``deadletters`` and
   ``deadletter_reasons`` (per reason: on a backlog, ``late`` events show how far the
   five input topics drifted apart in event time), ``windows_closed`` (after the idle
   timer) and ``windows_closed_at_completion``, and ``produce_events_per_s``.
   With ``--repeat K`` steps 3 and 4 run K times (the raw consumer re-reads the same
   topics, each worker gets a new app id); the top-level numbers are
   per-key medians over the runs (``ratio`` is the median of per-run ratios), and a
   ``runs`` list holds each run.

The broker, the worker and this process share the machine (2 cores when measured for
``docs/broker.md``), and the numbers move from run to run by 10 % or more. Report them as
measured, with the machine, the event count and the partition count, never rounded up or
picked from the best run; use ``--repeat`` and the medians for anything you compare.

Clean-up: the worker gets SIGTERM (then SIGKILL after 20 s) and the broker is stopped on
normal exit, on errors and on Ctrl-C/SIGTERM; both children also die with this process
through ``PR_SET_PDEATHSIG``. The work directory (broker and worker logs) is deleted after a
successful run unless ``--keep-logs`` is given, and kept after a failure.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import heapq
import json
import os
import platform
import shutil
import signal
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import islice
from pathlib import Path
from types import FrameType
from typing import Any

import httpx
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from promtext import sums
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from streams.core.config import load_config
from streams.core.messages import APPEALS_TOPIC, EVENT_TOPICS
from streams.kafka.broker import EmbeddedBroker
from streams.kafka.child import WorkerProcess, free_port, worker_environment
from streams.kafka.topics import ensure_topics
from streams.sim.appeals import AppealSource
from streams.sim.simulator import CitySimulator, SimEvent

REPO_ROOT = Path(__file__).resolve().parent.parent

EVENTS_IN = "cityvitals_ingest_events_in_total"
READINGS = "cityvitals_ingest_readings_total"
DEADLETTERS = "cityvitals_ingest_deadletters_total"
DUPLICATES = "cityvitals_ingest_duplicates_skipped_total"
WINDOWS_CLOSED = "cityvitals_vitals_windows_closed_total"
READ_ASIDE = "cityvitals_ingest_records_read_aside_total"
METRIC_NAMES = (EVENTS_IN, READINGS, DEADLETTERS, DUPLICATES, WINDOWS_CLOSED, READ_ASIDE)

POLL_INTERVAL_S = 0.25
IDLE_CLOSE_S = 5.0
#: seconds the worker may take from launch to its first consumed event
FIRST_EVENT_TIMEOUT_S = 120.0
#: seconds without any progress (consumed or finished events) before giving up
STALL_TIMEOUT_S = 120.0
#: seconds the raw consumer may wait without receiving a record
RAW_STALL_TIMEOUT_S = 60.0

err = Console(stderr=True, highlight=False)


def log(message: str) -> None:
    """Print a progress line on stderr (stdout carries only the result)."""
    err.print(f"[dim]{time.strftime('%H:%M:%S')}[/] {message}", soft_wrap=True)


def _progress(show: bool) -> Progress:
    """A rich progress bar on stderr, disabled when stderr is not a terminal."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err,
        disable=not show,
        transient=True,
    )


# --- input -------------------------------------------------------------------------------


def generate_events(
    n: int, seed: int, malformed: float, appeals_share: float = 0.0
) -> list[SimEvent]:
    """The first *n* simulated events, ending (valid ones) at least 10 minutes ago; with
    ``appeals_share``, that share of them citizens' appeals (:func:`with_appeals`).

    The simulator's event rate follows the time of day, so the span of n events is found by
    trying: start about 1 h per 10k events back (whole hours, so a seed gives the same events
    within the hour), and move the start further back if the last event is too recent.
    """
    cfg = load_config()
    now = datetime.now(UTC)
    latest_ok = now - timedelta(minutes=10)
    hours = 2 + n // 10_000
    for _ in range(6):
        start = (now - timedelta(hours=hours)).replace(minute=0, second=0, microsecond=0)
        sim = CitySimulator(cfg, seed=seed, start=start, malformed_share=malformed)
        k = round(n * appeals_share)
        events = with_appeals(sim, sim.take(n - k), k) if k else sim.take(n)
        if len(events) < n:
            raise RuntimeError(f"the simulator produced {len(events)} events, not {n}")
        last = max((e.event_time for e in events if e.malformed is None), default=start)
        if last <= latest_ok:
            log(
                f"generated {n:,} events, event time {start:%Y-%m-%d %H:%M} .. "
                f"{last:%Y-%m-%d %H:%M} UTC"
            )
            return events
        hours += int((last - latest_ok).total_seconds() // 3600) + 2
    raise RuntimeError("could not place the simulated events in the past")


def with_appeals(sim: CitySimulator, events: list[SimEvent], k: int) -> list[SimEvent]:
    """``events`` and ``k`` appeals of the simulated city over the same span, merged in
    event time. The appeals' rate is scaled up to give ``k`` in that span (a city's real
    share is about 1 %), keeping their channels, categories, texts and rhythm."""
    span = max(e.event_time for e in events) - sim.start
    found: list[SimEvent] = []
    scale = 1.0
    for _ in range(8):
        source = AppealSource(
            sim.cfg, seed=sim.seed, start=sim.start, run=sim.run_tag, rate_scale=scale
        )
        found = [
            SimEvent(APPEALS_TOPIC, a.district.encode(), a.record(), a.at)
            for a in islice(source.appeals_in(span), k)
        ]
        if len(found) == k:
            break
        scale *= 1.2 * k / max(len(found), 1)
    else:
        raise RuntimeError(f"could not fit {k} appeals in {span}")
    return list(heapq.merge(events, found, key=lambda e: e.event_time))


async def produce(bootstrap: str, events: Sequence[SimEvent], show_progress: bool) -> float:
    """Produce *events* (without awaiting each delivery), flush; return the seconds taken."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, linger_ms=10, max_batch_size=256 * 1024
    )
    await producer.start()
    futures: list[asyncio.Future[Any]] = []
    try:
        with _progress(show_progress) as bar:
            task = bar.add_task("producing", total=len(events))
            t0 = time.perf_counter()
            for i, ev in enumerate(events, 1):
                ts = int(ev.event_time.timestamp() * 1000)
                futures.append(await producer.send(ev.topic, ev.value, key=ev.key, timestamp_ms=ts))
                if i % 1000 == 0:
                    await asyncio.sleep(0)  # let the sender task drain full batches
                    bar.update(task, completed=i)
            await producer.flush()
            seconds = time.perf_counter() - t0
            bar.update(task, completed=len(events))
        await asyncio.gather(*futures)  # raise the first delivery error, if any
    finally:
        await producer.stop()
    return seconds


# --- raw aiokafka baseline -----------------------------------------------------------------


async def raw_consume(bootstrap: str, n: int) -> tuple[float, int]:
    """Read *n* records of the input topics, orjson-decoding each value.

    Returns (seconds from the first record to the n-th, values that failed to decode).
    """
    consumer = AIOKafkaConsumer(
        *EVENT_TOPICS.values(),
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    count = undecodable = 0
    t0: float | None = None
    last_data = time.monotonic()
    loads = orjson.loads
    decode_error = orjson.JSONDecodeError
    try:
        while count < n:
            batch = await consumer.getmany(timeout_ms=1000, max_records=10_000)
            if not batch:
                if time.monotonic() - last_data > RAW_STALL_TIMEOUT_S:
                    raise TimeoutError(
                        f"raw consumer got {count:,} of {n:,} records, then nothing for "
                        f"{RAW_STALL_TIMEOUT_S:g} s"
                    )
                continue
            if t0 is None:
                t0 = time.perf_counter()
            last_data = time.monotonic()
            for records in batch.values():
                for record in records:
                    try:
                        loads(record.value)
                    except decode_error:
                        undecodable += 1
                count += len(records)
        t1 = time.perf_counter()
    finally:
        await consumer.stop()
    assert t0 is not None
    return t1 - t0, undecodable


# --- the worker ----------------------------------------------------------------------------


def _proc_status_kb(pid: int, field: str) -> int | None:
    """A ``kB`` field (VmRSS, VmHWM) of /proc/<pid>/status, None where unavailable."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def _cpu_seconds(pid: int) -> float | None:
    """CPU time (user + system, all threads) *pid* has used so far, from /proc."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            # the fields after the command name (which may hold spaces) in parentheses
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def _children_cpu_seconds(pid: int) -> float:
    """CPU time the living child processes of *pid* (the worker's readers) have used."""
    total = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def _rss_bytes(pid: int) -> int | None:
    """Current resident set size of *pid* (psutil if installed, else /proc)."""
    try:
        import psutil  # optional
    except ImportError:
        kb = _proc_status_kb(pid, "VmRSS")
        return None if kb is None else kb * 1024
    try:
        return int(psutil.Process(pid).memory_info().rss)
    except psutil.Error:
        return None


class BenchWorker:
    """``cityvitals worker`` as a child process, with its own app id and port."""

    def __init__(self, bootstrap: str, partitions: int, workdir: Path) -> None:
        self.app_id = f"cv-bench-{uuid.uuid4().hex[:10]}"
        self.web_port = free_port()
        env = worker_environment(
            bootstrap,
            self.app_id,
            self.web_port,
            workdir / f"data-{self.app_id}",
            partitions=str(partitions),
            idle_close_s=IDLE_CLOSE_S,
            log_level="info",
        )
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p
        )
        # it dies with us: PR_SET_PDEATHSIG=SIGTERM on Linux
        self.child = WorkerProcess(
            env,
            self.web_port,
            workdir / f"worker-{self.app_id}.log",
            cwd=REPO_ROOT,
            death_signal=signal.SIGTERM,
        )
        self._http = httpx.Client(timeout=5.0)

    @property
    def env(self) -> dict[str, str]:
        """The worker's environment (change it before :meth:`start`)."""
        return self.child.env

    @property
    def log_path(self) -> Path:
        return self.child.log_path

    def start(self) -> None:
        self.child.start()

    @property
    def pid(self) -> int:
        return self.child.pid

    def check_alive(self) -> None:
        """Raise with the log's tail if the worker has exited."""
        self.child.check_alive()

    def metrics(self) -> dict[str, float] | None:
        """Our counters from /metrics, summed over labels; None if the page is not up yet.

        Dead letters are also given per reason, as ``cityvitals_ingest_deadletters_total:<reason>``.
        """
        try:
            text = self._http.get(f"http://127.0.0.1:{self.web_port}/metrics").text
        except httpx.HTTPError:
            return None
        return sums(text, METRIC_NAMES, by="reason")

    def log_tail(self, lines: int = 40) -> str:
        return f"--- last lines of the worker log ---\n{self.child.log_tail(lines)}"

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM, wait up to *timeout* s, then SIGKILL. Idempotent."""
        self._http.close()
        self.child.stop(signal.SIGTERM, timeout)


@dataclass
class PipelineResult:
    seconds: float
    readings: int
    deadletters: int
    deadletter_reasons: dict[str, int]
    duplicates_skipped: int
    windows_closed: int
    windows_closed_at_completion: int
    read_aside: int  # records the worker's reader processes read
    readers_cpu_seconds: float  # CPU time its reader processes used meanwhile
    rss_mb: float
    cpu_seconds: float | None


def _ticks(interval: float) -> Iterator[float]:
    """Yield at a steady *interval* (monotonic clock), skipping ticks that were missed."""
    next_tick = time.monotonic()
    while True:
        yield next_tick
        next_tick += interval
        delay = next_tick - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        else:
            next_tick = time.monotonic()


def run_pipeline(
    bootstrap: str, n: int, partitions: int, workdir: Path, show_progress: bool
) -> PipelineResult:
    """Start a worker on the backlog and time it from its first to its N-th event."""
    worker = BenchWorker(bootstrap, partitions, workdir)
    log(f"worker app id {worker.app_id}, log: {worker.log_path}")
    peak_rss = 0
    try:
        worker.start()
        launched = time.monotonic()
        t_first: float | None = None
        t_done: float | None = None
        cpu_first = cpu_done = None
        readers_first = readers_done = 0.0
        last_progress = launched
        last_seen = (-1.0, -1.0)
        current: dict[str, float] = {}
        with _progress(show_progress) as bar:
            task = bar.add_task("worker: waiting for its first event", total=n)
            for _ in _ticks(POLL_INTERVAL_S):
                worker.check_alive()
                rss = _rss_bytes(worker.pid)
                if rss is not None:
                    peak_rss = max(peak_rss, rss)
                scraped = worker.metrics()
                now = time.perf_counter()
                if scraped is None:
                    if time.monotonic() - launched > FIRST_EVENT_TIMEOUT_S:
                        raise TimeoutError(f"worker /metrics never answered\n{worker.log_tail()}")
                    continue
                current = scraped
                cpu = _cpu_seconds(worker.pid)
                readers_cpu = _children_cpu_seconds(worker.pid)
                events_in = current[EVENTS_IN]
                finished = current[READINGS] + current[DEADLETTERS]
                if t_first is None:
                    if events_in > 0:
                        t_first, cpu_first, readers_first = now, cpu, readers_cpu
                        log(f"worker consuming ({time.monotonic() - launched:.1f} s after launch)")
                        bar.update(task, description="worker: events in readings/dead letters")
                    elif time.monotonic() - launched > FIRST_EVENT_TIMEOUT_S:
                        raise TimeoutError(
                            f"worker consumed nothing in {FIRST_EVENT_TIMEOUT_S:g} s\n"
                            f"{worker.log_tail()}"
                        )
                    else:
                        continue
                bar.update(task, completed=min(finished, n))
                if events_in >= n and finished >= n:
                    t_done, cpu_done, readers_done = now, cpu, readers_cpu
                    break
                if (events_in, finished) != last_seen:
                    last_seen, last_progress = (events_in, finished), time.monotonic()
                elif time.monotonic() - last_progress > STALL_TIMEOUT_S:
                    raise TimeoutError(
                        f"worker stalled for {STALL_TIMEOUT_S:g} s at events_in={events_in:,.0f}, "
                        f"readings+deadletters={finished:,.0f}, "
                        f"duplicates_skipped={current[DUPLICATES]:,.0f} (of {n:,})\n"
                        f"{worker.log_tail()}"
                    )
        assert t_first is not None and t_done is not None
        windows_at_completion = int(current[WINDOWS_CLOSED])
        # let the idle timer (1 s period) close the last windows, then read the total
        settle_until = time.monotonic() + IDLE_CLOSE_S + 3.0
        while time.monotonic() < settle_until:
            time.sleep(POLL_INTERVAL_S)
            worker.check_alive()
            rss = _rss_bytes(worker.pid)
            if rss is not None:
                peak_rss = max(peak_rss, rss)
        final = worker.metrics() or current
        hwm_kb = _proc_status_kb(worker.pid, "VmHWM")
        if hwm_kb is not None:
            peak_rss = max(peak_rss, hwm_kb * 1024)
    finally:
        worker.stop()
    return PipelineResult(
        seconds=t_done - t_first,
        readings=int(final[READINGS]),
        deadletters=int(final[DEADLETTERS]),
        deadletter_reasons={
            key.split(":", 1)[1]: int(value)
            for key, value in sorted(final.items())
            if key.startswith(DEADLETTERS + ":") and value
        },
        duplicates_skipped=int(final[DUPLICATES]),
        windows_closed=int(final[WINDOWS_CLOSED]),
        windows_closed_at_completion=windows_at_completion,
        read_aside=int(final.get(READ_ASIDE, 0)),
        readers_cpu_seconds=readers_done - readers_first,
        rss_mb=peak_rss / 2**20,
        cpu_seconds=None if cpu_first is None or cpu_done is None else cpu_done - cpu_first,
    )


# --- main --------------------------------------------------------------------------------


def measure_once(
    bootstrap: str, n: int, partitions: int, workdir: Path, show_progress: bool
) -> dict[str, Any]:
    """One raw-consumer measurement, then one pipeline measurement."""
    raw_seconds, undecodable = asyncio.run(raw_consume(bootstrap, n))
    raw_rate = n / raw_seconds
    log(
        f"raw aiokafka: {n:,} records in {raw_seconds:.3f} s = {raw_rate:,.0f} events/s"
        + (f" ({undecodable:,} values were not JSON)" if undecodable else "")
    )
    gc.collect()
    result = run_pipeline(bootstrap, n, partitions, workdir, show_progress)
    if result.seconds <= 0:
        raise RuntimeError(
            f"the worker handled all {n:,} events between two scrapes of /metrics "
            f"({POLL_INTERVAL_S:g} s apart): too few to time; use --events 20000 or more"
        )
    rate = n / result.seconds
    log(
        f"pipeline: {n:,} events in {result.seconds:.3f} s = {rate:,.0f} events/s "
        f"({result.readings:,} readings, {result.deadletters:,} dead letters, "
        f"peak RSS {result.rss_mb:.0f} MB)"
    )
    return {
        "pipeline_events_per_s": round(rate, 1),
        "raw_consume_events_per_s": round(raw_rate, 1),
        "ratio": round(rate / raw_rate, 4),
        "worker_rss_mb": round(result.rss_mb, 1),
        "worker_cpu_seconds": None if result.cpu_seconds is None else round(result.cpu_seconds, 2),
        "readers_cpu_seconds": round(result.readers_cpu_seconds, 2),
        "records_read_aside": result.read_aside,
        "pipeline_seconds": round(result.seconds, 3),
        "raw_seconds": round(raw_seconds, 3),
        "readings": result.readings,
        "deadletters": result.deadletters,
        "deadletter_reasons": result.deadletter_reasons,
        "windows_closed": result.windows_closed,
        "windows_closed_at_completion": result.windows_closed_at_completion,
        "duplicates_skipped": result.duplicates_skipped,
    }


def _median(values: Sequence[float]) -> float:
    median = statistics.median(values)
    return int(median) if all(isinstance(v, int) for v in values) else round(median, 4)


def _raise_keyboard_interrupt(signum: int, frame: FrameType | None) -> None:
    """SIGTERM handler: unwind like Ctrl-C so every ``finally`` clean-up runs (once)."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not cut clean-up
    raise KeyboardInterrupt(f"signal {signum}")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Throughput of the cityvitals worker vs raw aiokafka consumption; "
        "prints one JSON object on stdout."
    )
    parser.add_argument("--events", type=int, default=200_000, help="events to produce (N)")
    parser.add_argument("--partitions", type=int, default=8, help="partitions of every topic")
    parser.add_argument("--malformed", type=float, default=0.0, help="share of malformed events")
    parser.add_argument("--seed", type=int, default=7, help="simulator seed")
    parser.add_argument(
        "--appeals", type=float, default=0.0, help="share of the events that are appeals"
    )
    parser.add_argument("--repeat", type=int, default=1, help="measurements to take (medians)")
    parser.add_argument(
        "--keep-logs", action="store_true", help="keep the work directory after a successful run"
    )
    args = parser.parse_args(argv)
    if args.events < 1:
        parser.error("--events must be at least 1")
    if args.partitions < 1:
        parser.error("--partitions must be at least 1")
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    if not 0.0 <= args.malformed <= 1.0:
        parser.error("--malformed must lie in [0, 1]")
    if not 0.0 <= args.appeals < 1.0:
        parser.error("--appeals must lie in [0, 1)")
    return args


def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    n, partitions = args.events, args.partitions
    show_progress = err.is_terminal
    with EmbeddedBroker(log_path=workdir / "broker.log") as broker:
        log(f"broker {broker.bootstrap} (pid {broker.pid}), log: {broker.log_path}")
        asyncio.run(ensure_topics(broker.bootstrap, partitions))
        events = generate_events(n, args.seed, args.malformed, args.appeals)
        produce_seconds = asyncio.run(produce(broker.bootstrap, events, show_progress))
        log(f"produced {n:,} events in {produce_seconds:.2f} s ({n / produce_seconds:,.0f}/s)")
        del events
        gc.collect()
        runs = []
        for i in range(args.repeat):
            if args.repeat > 1:
                log(f"[bold]run {i + 1} of {args.repeat}[/]")
            runs.append(measure_once(broker.bootstrap, n, partitions, workdir, show_progress))
    result: dict[str, Any] = {"events": n, "partitions": partitions}
    for key, first in runs[0].items():
        if isinstance(first, int | float):
            result[key] = _median([r[key] for r in runs])
        else:  # dead letters per reason: the first run's here, every run's in "runs"
            result[key] = first
    result.update(
        malformed=args.malformed,
        appeals=args.appeals,
        seed=args.seed,
        produce_events_per_s=round(n / produce_seconds, 1),
        python=platform.python_version(),
        cpu_count=os.cpu_count(),
    )
    if args.repeat > 1:
        result["repeat"] = args.repeat
        result["runs"] = runs
    return result


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    # Ctrl-C raises KeyboardInterrupt even where SIGINT was inherited as ignored (a
    # background job of a non-interactive shell); SIGTERM unwinds the same way.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    workdir = Path(tempfile.mkdtemp(prefix="cityvitals-bench-"))
    log(f"work directory (broker and worker logs): {workdir}")
    ok = False
    try:
        result = run(args, workdir)
        ok = True
    except KeyboardInterrupt:
        log(f"[yellow]interrupted[/]; logs kept in {workdir}")
        return 130
    except Exception as exc:
        err.print(f"[bold red]benchmark failed[/]: {escape(str(exc))}", soft_wrap=True)
        log(f"logs kept in {workdir}")
        return 1
    finally:
        if ok and not args.keep_logs:
            shutil.rmtree(workdir, ignore_errors=True)
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
