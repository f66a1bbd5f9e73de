"""Worker start-up time and memory against the age of the city: years of history on the topics.

Run from the repository root::

    .venv/bin/python bench/history.py --years 0 --years 0.1 [--vitals-years Y] [--runs 3]
                                      [--code-dir DIR ...] [--report FILE]

For each ``--years``, on a fresh embedded broker (in memory), it writes that many simulated
years of history straight onto the topics, each record stamped with its simulated time (so
that lookups by time work as on a city that ran for years), ending now:

- ``city.vitals``: one document per district per window (the demo city: 10 districts, one a
  minute, 5.26 million a year), each a copy of a document the demo city published, with its
  district and window moved; ``--vitals-years`` writes fewer years of vitals than of the
  rest (the embedded broker keeps its log in memory: about 4 KB a record here, so a year of
  vitals is some 20 GB; see docs/operations.md for what was scaled and how);
- ``city.emergency-command``: ``--alert-events-per-day`` alert events (default 85, see
  below), three per alert (firing, updated, resolved), copies of demo-city alerts with new
  ids and times; one alert that fired at the very start never closes, and the alerts of
  the last hour stay open;
- ``city.audit``: ``--audit-per-alert`` records per alert (default 3: a detail read, an
  acknowledgement, a resolution), at the alert's times.

The rates are those of the demo city: ``cityvitals simulate`` (seed 7, scripted incidents)
through one worker for 3 simulated hours published 10 districts x 180 vitals documents and
alert events at the rate given above (docs/operations.md, "Sizing the API's memory").

Then, for each ``--code-dir`` (default: this checkout; another checkout of the project,
such as an earlier commit, measures that code on the same topics), ``--runs`` times: start
a worker as a restart of one that ran through the history (``cityvitals worker`` with a
fresh app id whose notification planner's offsets are committed at the end of the alert
topic, so it does not plan notifications for years of alerts), through
:class:`streams.kafka.child.WorkerProcess`), time it from process start to ``/readyz`` 200
(the API store caught up with the topics), read its ``VmRSS`` and ``VmHWM`` from
``/proc/PID/status``, stop it. Output: a table (median of the runs) and, with ``--report``,
JSON with every run.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from streams.core.messages import ALERTS_TOPIC, AUDIT_TOPIC, VITALS_TOPIC
from streams.kafka.broker import EmbeddedBroker, corrected_end_offsets
from streams.kafka.child import WorkerProcess, free_port, worker_environment
from streams.kafka.topics import ensure_topics

SAMPLES = Path(__file__).parent / "history_samples.jsonl"
YEAR = timedelta(days=365)
DISTRICTS = 10
WINDOW = timedelta(minutes=1)
console = Console(stderr=True)


@dataclass
class Run:
    years: float
    vitals_years: float
    code: str
    records: dict[str, int]
    ready_s: float
    rss_mb: float
    hwm_mb: float


def samples() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """A demo-city vitals document of each district and demo-city alert events."""
    vitals: list[dict[str, Any]] = []
    alerts: list[dict[str, Any]] = []
    for line in SAMPLES.read_bytes().splitlines():
        doc = orjson.loads(line)
        (vitals if "composite" in doc else alerts).append(doc)
    return vitals, alerts


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _alert_events(
    template: dict[str, Any], n: int, fired: datetime, *, closes: bool
) -> list[tuple[datetime, dict[str, Any]]]:
    """Alert ``n``: firing, updated five minutes later, resolved after twenty (if it closes)."""
    first = fired.replace(microsecond=0)
    fingerprint = f"hist{n:07d}"
    steps = [("firing", "open", 0), ("firing", "open", 5)]
    if closes:
        steps.append(("resolved", "resolved", 20))
    out = []
    for sequence, (status, workflow, minutes) in enumerate(steps, start=1):
        at = first + timedelta(minutes=minutes)
        doc = {
            **template,
            "alert_id": f"{fingerprint}-{int(first.timestamp())}",
            "fingerprint": fingerprint,
            "sequence": sequence,
            "status": status,
            "workflow": workflow,
            "first_seen": _stamp(first),
            "last_update": _stamp(at),
            "event_time": _stamp(at),
            "actions": [],
        }
        out.append((at, doc))
    return out


def _audit(alert: dict[str, Any], at: datetime, action: str) -> dict[str, Any]:
    return {
        "at": _stamp(at),
        "user": "cc.duty",
        "role": "operator",
        "action": action,
        "target": alert["alert_id"],
        "source_ip": "127.0.0.1",
    }


def history(
    years: float,
    vitals_years: float,
    alert_events_per_day: float,
    audit_per_alert: int,
    now: datetime,
) -> Any:
    """``(topic, key, record time, value)`` of the history, in time order per topic."""
    vitals, alerts = samples()
    start = now - years * YEAR
    count = int(years * 365 * alert_events_per_day / 3)
    step = (now - timedelta(hours=1) - start) / max(1, count)
    for n in range(count):
        fired = start + n * step
        template = alerts[n % len(alerts)]
        events = _alert_events(template, n, fired, closes=n > 0)
        for at, doc in events:
            yield ALERTS_TOPIC, doc["district"], at, doc
        for (at, doc), action in zip(
            events, ("read_alert", "acknowledge", "resolve"), strict=False
        ):
            if audit_per_alert:
                yield AUDIT_TOPIC, "cc.duty", at, _audit(doc, at, action)
    for n in range(3):  # the last hour's alerts, still open
        for at, doc in _alert_events(
            alerts[n % len(alerts)], count + n, now - timedelta(minutes=45 - 15 * n), closes=False
        ):
            yield ALERTS_TOPIC, doc["district"], at, doc
    windows = int(vitals_years * YEAR / WINDOW)
    first_window = now.replace(second=0, microsecond=0) - windows * WINDOW
    for w in range(windows):
        end = first_window + (w + 1) * WINDOW
        for doc in vitals[:DISTRICTS]:
            moved = {**doc, "window_start": _stamp(end - WINDOW), "window_end": _stamp(end)}
            yield VITALS_TOPIC, doc["district"], end, moved


def planned(
    years: float, vitals_years: float, alert_events_per_day: float, audit_per_alert: int
) -> int:
    alerts = int(years * 365 * alert_events_per_day / 3)
    return alerts * (3 + min(3, audit_per_alert)) + int(vitals_years * YEAR / WINDOW) * DISTRICTS


async def write_history(
    bootstrap: str, partitions: int, records: Any, total: int
) -> dict[str, int]:
    """Produce the records, stamped with their times; counts per topic."""
    await ensure_topics(bootstrap, partitions)
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, linger_ms=50, max_batch_size=512 * 1024, acks=1
    )
    await producer.start()
    counts: dict[str, int] = {}
    pending: list[Any] = []
    try:
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task("writing history", total=total)
            for topic, key, at, doc in records:
                fut = await producer.send(
                    topic,
                    orjson.dumps(doc),
                    key=key.encode(),
                    timestamp_ms=int(at.timestamp() * 1000),
                )
                pending.append(fut)
                counts[topic] = counts.get(topic, 0) + 1
                if len(pending) >= 20_000:
                    await asyncio.gather(*pending)
                    progress.advance(task, len(pending))
                    pending = []
            await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return counts


def _status_mb(pid: int) -> tuple[float, float]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        fields[name] = value.strip()
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


async def commit_ends(bootstrap: str, app_id: str, partitions: int) -> None:
    """The app's notification planner has already planned every alert on the topic, as a
    worker that ran through the history would have: its group's offsets at the end.
    (A fresh app id would otherwise plan notifications for years of alerts at start.)"""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=f"{app_id}-notify", enable_auto_commit=False
    )
    await consumer.start()
    try:
        parts = [TopicPartition(ALERTS_TOPIC, p) for p in range(partitions)]
        consumer.assign(parts)
        ends = await corrected_end_offsets(bootstrap, await consumer.end_offsets(parts))
        await consumer.commit({tp: ends[tp] for tp in parts if ends[tp] > 0})
    finally:
        await consumer.stop()


def start_worker(
    bootstrap: str, code: Path, partitions: int, workdir: Path
) -> tuple[float, float, float]:
    """Seconds from process start to /readyz 200, then VmRSS and VmHWM in MB."""
    port = free_port()
    app_id = f"hist-{uuid.uuid4().hex[:8]}"
    env = worker_environment(
        bootstrap, app_id, port, workdir / app_id, partitions=str(partitions), embedded_broker="1"
    )
    env["PYTHONPATH"] = str(code)
    asyncio.run(commit_ends(bootstrap, app_id, partitions))
    worker = WorkerProcess(env, port, workdir / f"{app_id}.log", cwd=code)
    started = time.monotonic()
    worker.start()
    try:
        worker.wait_ready(1800)
        ready = time.monotonic() - started
        time.sleep(1.0)  # what it holds once ready, not mid-request
        rss, hwm = _status_mb(worker.pid)
        return ready, rss, hwm
    finally:
        worker.stop()


def measure(
    years: float, vitals_years: float, codes: list[Path], runs: int, options: dict[str, Any]
) -> list[Run]:
    """One broker with the history written once, every code started ``runs`` times on it."""
    out = []
    with tempfile.TemporaryDirectory(prefix="cv-history-") as tmp:
        workdir = Path(tmp)
        with EmbeddedBroker(log_path=workdir / "broker.log") as broker:
            total = planned(
                years, vitals_years, options["alert_events_per_day"], options["audit_per_alert"]
            )
            records = history(
                years,
                vitals_years,
                options["alert_events_per_day"],
                options["audit_per_alert"],
                datetime.now(UTC),
            )
            t = time.monotonic()
            counts = asyncio.run(
                write_history(broker.bootstrap, options["partitions"], records, total)
            )
            console.print(
                f"{years:g} years ({vitals_years:g} of vitals): {counts} in {time.monotonic() - t:.0f} s"
            )
            for n in range(runs):
                for code in codes:
                    ready, rss, hwm = start_worker(
                        broker.bootstrap, code, options["partitions"], workdir
                    )
                    console.print(
                        f"  {code.name} run {n + 1}: ready {ready:.1f} s, RSS {rss:.0f} MB, peak {hwm:.0f} MB"
                    )
                    out.append(Run(years, vitals_years, str(code), counts, ready, rss, hwm))
    return out


def table(runs: list[Run]) -> Table:
    out = Table("years", "vitals years", "records", "code", "ready s", "RSS MB", "peak MB")
    keys = sorted(
        {(r.years, r.vitals_years, r.code) for r in runs}, key=lambda k: (k[0], k[1], k[2])
    )
    for years, vitals_years, code in keys:
        mine = [r for r in runs if (r.years, r.vitals_years, r.code) == (years, vitals_years, code)]
        out.add_row(
            f"{years:g}",
            f"{vitals_years:g}",
            f"{sum(mine[0].records.values()):,}",
            Path(code).name,
            f"{statistics.median(r.ready_s for r in mine):.1f}",
            f"{statistics.median(r.rss_mb for r in mine):.0f}",
            f"{statistics.median(r.hwm_mb for r in mine):.0f}",
        )
    return out


def main(
    years: Annotated[list[float], typer.Option(help="simulated years of history (repeatable)")],
    vitals_years: Annotated[
        float | None, typer.Option(help="years of vitals, if fewer than --years")
    ] = None,
    code_dir: Annotated[
        list[Path] | None, typer.Option(help="checkouts to start workers from (repeatable)")
    ] = None,
    runs: Annotated[int, typer.Option(help="worker starts per code and size")] = 3,
    alert_events_per_day: Annotated[float, typer.Option(help="alert events a day")] = 85.0,
    audit_per_alert: Annotated[int, typer.Option(help="audit records per alert, 0-3")] = 3,
    partitions: Annotated[int, typer.Option(help="partitions of every topic")] = 8,
    report: Annotated[Path | None, typer.Option(help="write every run here as JSON")] = None,
) -> None:
    """Start-up time and RSS of a worker over years of history (see the module docstring)."""
    codes = [p.resolve() for p in (code_dir or [Path(__file__).resolve().parents[1]])]
    options = {
        "alert_events_per_day": alert_events_per_day,
        "audit_per_alert": audit_per_alert,
        "partitions": partitions,
    }
    done: list[Run] = []
    for y in years:
        v = y if vitals_years is None else min(y, vitals_years)
        done += measure(y, v, codes, runs, options)
        if report is not None:
            report.write_bytes(orjson.dumps([asdict(r) for r in done], option=orjson.OPT_INDENT_2))
    Console().print(table(done))


if __name__ == "__main__":
    os.environ.setdefault("CITYVITALS_LOG_LEVEL", "warn")
    typer.run(main)
