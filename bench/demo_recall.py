"""Recall and precision of the demo city's alerts against its scripted incidents.

Run from the repository root::

    .venv/bin/python bench/demo_recall.py [--minutes 45] [--speed 60] [--seed 7]
                                          [--malformed 0.02] [--start ISO-8601]
                                          [--config-dir DIR] [--timeout 300] [--no-appeals]
                                          [--keep-logs]

What happens, in order:

1. An :class:`~streams.kafka.broker.EmbeddedBroker` starts and the city's
   topics are created (``ensure_topics``, ``CITYVITALS_PARTITIONS`` partitions).
2. A worker starts as ``python -m streams.cli worker``, as the demo starts it:
   ``CITYVITALS_EMBEDDED_BROKER=1``, a fresh ``CITYVITALS_APP_ID`` (empty state),
   its own web port and data directory, and an idle-close time of
   ``max(2, 120 / speed)`` wall seconds (two simulated minutes). The bench
   waits for its ``/readyz``.
3. The simulated city (:class:`~streams.sim.simulator.CitySimulator` with the
   default scripted incidents, the demo's 2 % malformed events, and as in the demo
   citizens' appeals with the smell only they report; ``--no-appeals``: without) is published
   for ``--minutes`` simulated minutes, ``--speed`` simulated seconds per wall
   second (0: as fast as the broker takes them). The ground truth is written
   next to the logs (``incidents.jsonl``). The simulation starts at the
   simulator's fixed start (2026-11-24T00:00Z, 08:00 in Linjiang) when that
   lies in the past, so a seed always gives the same events; ``--start``
   picks another time.
4. The bench follows ``city.vitals`` until every district has closed a window
   past its last published event (the worker closes a quiet district's windows
   after the idle time), then reads every AlertEvent on
   ``city.emergency-command`` and stops the worker.
5. One JSON object goes to stdout; progress goes to stderr.

Scoring, per alert (its events are grouped by ``alert_id``; its *firing event*
is the first, sequence 1):

- **Time.** The firing event's ``event_time`` must lie in ``[incident start,
  incident end + tolerance]``. An alert can only fire after its rule has seen a
  breach through its ``window`` and for its ``pending`` time, and a window
  aggregate (a sum of reports, a mean) stays over its bound for up to one
  window after the cause ends. So the tolerance is the rule's pending time
  plus its window, resolved for the alert's place (overrides applied), plus
  ``SLACK_S`` (5 min) for the incident's fade-out ramp, the one-minute windows
  the rules are evaluated on, and the sliding window's bucket steps. An alert
  derived from a rule (its evidence names ``<rule id>.<something>``, e.g. a
  trend forecast of the rule's level) gets that rule's tolerance; alerts of
  anything else (models) get ``MODEL_TOLERANCE_S``.
- **Recall.** An incident is recalled when an alert of one of its kind's
  ``RECALL_DOMAINS`` in its district fires in time, in the incident's street
  when both the incident and the alert name a street, and at least at the
  kind's ``MIN_GRADE`` where one is set (none is: every grade counts). A
  citizen-only incident (``public_opinion``, a smell) is recalled only by a
  ``public_opinion`` alert of its appeal category, owned by the category's
  department, firing within ``DEADLINE_S`` (15 min) of the incident's start.
- **Precision.** An alert is *explained* by an incident in its district that
  fires in time and belongs to a domain the incident moves: its recall domains
  and the domains of the indicators in its ground truth (a building fire also
  slows traffic and makes citizens call the hotline). The street is not
  required to match here: a burst main drops the pressure of the district's
  whole supply network, and a pressure alert in the next street is a true
  consequence of the incident, not a false alarm. Such alerts are listed under
  ``other_street`` of their incident. An alert no incident explains counts in
  ``unmatched_alerts`` and is described under ``unmatched``.
- **Data-quality alerts** (kind ``data_quality``: a sensor gone quiet) speak
  about the data, not the city, and go to the data's owner; the simulator's
  sensors drop out now and then on purpose. They are counted apart, in
  ``data_quality_alerts``, and are neither alerts nor unmatched above.

The JSON holds ``incidents``, ``recalled``, ``recall``, ``alerts``,
``unmatched_alerts``, ``precision`` (null with no alerts),
``data_quality_alerts``, ``per_incident`` (each incident with its matched
alerts and how long after its start it was first detected), ``unmatched``
(short descriptions) and ``run`` (the parameters, the published event count
and where the logs are).

Clean-up: the worker gets SIGTERM (SIGKILL after 10 s) and the broker is
stopped on normal exit, on errors, on Ctrl-C and on SIGTERM; both also die
with this process (``PR_SET_PDEATHSIG``). The work directory (broker and worker
logs, ground truth) is deleted after a successful run unless ``--keep-logs``
is given, and kept after a failure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import shutil
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import Coroutine, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

from aiokafka import AIOKafkaConsumer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from streams.alerting.rules import ThresholdRules, load_thresholds
from streams.core.config import DEFAULT_CONFIG_DIR, CityConfig, load_config
from streams.core.messages import (
    ALERTS_TOPIC,
    VITALS_TOPIC,
    AlertEvent,
    AlertKind,
    DistrictVitals,
    Grade,
)
from streams.core.settings import Settings
from streams.kafka.broker import EmbeddedBroker
from streams.kafka.child import WorkerProcess, free_port, worker_environment
from streams.kafka.topics import ensure_topics
from streams.sim.simulator import DEFAULT_START, CitySimulator, Incident, SimEvent, publish

REPO_ROOT = Path(__file__).resolve().parent.parent
T = TypeVar("T")

#: Domains (codes in ``indicators.yaml``) whose alert recalls each kind of incident.
#: Water mains are in the ``utilities`` domain (with gas, power and the river).
RECALL_DOMAINS: dict[str, frozenset[str]] = {
    "building_fire": frozenset({"fire"}),
    "air_quality_episode": frozenset({"environment"}),
    "bin_overflow": frozenset({"sanitation"}),
    "water_main_burst": frozenset({"utilities"}),
    "public_opinion": frozenset({"citizen"}),
}
#: How soon after its start an incident of a kind must be detected to count as recalled,
#: where that is shorter than the time rule above: a smell only citizens report must
#: reach its department as a public-opinion warning within 15 simulated minutes.
DEADLINE_S: dict[str, float] = {"public_opinion": 900.0}
#: The least serious grade that recalls a kind of incident; a kind left out accepts any.
MIN_GRADE: dict[str, Grade] = {}
#: Added to every rule's pending time + window (see the module docstring).
SLACK_S = 300.0
#: Tolerance for alerts of rules not in thresholds.yaml: models judge closed minutes,
#: and 15 min is the length of the rolling view they are compared with.
MODEL_TOLERANCE_S = 900.0
READY_TIMEOUT_S = 120.0
ALERTS_IDLE_S = 3.0

err = Console(stderr=True, highlight=False)


def log(message: str) -> None:
    """A progress line on stderr (stdout carries only the result)."""
    err.print(f"[dim]{time.strftime('%H:%M:%S')}[/] {message}", soft_wrap=True)


# --- scoring (pure) ---------------------------------------------------------------------


@dataclass(frozen=True)
class Alert:
    """One alert as the scoring sees it: its firing event and the most serious grade it reached."""

    first: AlertEvent
    max_grade: Grade

    @property
    def fired_at(self) -> datetime:
        return self.first.event_time


def alerts_from_events(events: Iterable[AlertEvent]) -> list[Alert]:
    """Group events by alert id (repeats from at-least-once delivery collapse), oldest first.

    The firing event is the alert's lowest sequence (1 unless it was lost).
    """
    by_id: dict[str, list[AlertEvent]] = {}
    for e in events:
        by_id.setdefault(e.alert_id, []).append(e)
    out = [
        Alert(
            first=min(evs, key=lambda e: e.sequence),
            max_grade=min((e.grade for e in evs), key=lambda g: g.value),
        )
        for evs in by_id.values()
    ]
    return sorted(out, key=lambda a: (a.fired_at, a.first.alert_id))


def tolerance_s(alert: AlertEvent, rules: ThresholdRules) -> float:
    """How long after an incident's end this alert may still be its consequence."""
    name = alert.evidence.rule
    rule = next((r for r in rules.rules if r.id == name), None) or next(
        (r for r in rules.rules if name.startswith(r.id + ".")), None
    )
    if rule is None:
        return MODEL_TOLERANCE_S
    spec = rules.spec(rule, alert.district, alert.street if rule.scope == "street" else None)
    if spec is None:  # disabled there: judge by the rule as written
        spec = rules.spec(rule, "", None)
    assert spec is not None
    return spec.pending_s + spec.window_s + SLACK_S


def in_time(alert: Alert, incident: Incident, rules: ThresholdRules) -> bool:
    end = incident.end + timedelta(seconds=tolerance_s(alert.first, rules))
    return incident.start <= alert.fired_at <= end


def related_domains(incident: Incident, cfg: CityConfig) -> frozenset[str]:
    """The domains an incident moves: its recall domains and its indicators' domains."""
    moved = {cfg.indicators[i].domain for i in incident.indicators if i in cfg.indicators}
    return RECALL_DOMAINS[incident.kind] | moved


def recalls(alert: Alert, incident: Incident, rules: ThresholdRules) -> bool:
    """Whether ``alert`` detects ``incident``: its domain, place, time and grade."""
    first = alert.first
    minimum = MIN_GRADE.get(incident.kind)
    deadline = DEADLINE_S.get(incident.kind)
    if deadline is not None and alert.fired_at > incident.start + timedelta(seconds=deadline):
        return False
    if incident.category is not None and (  # a citizen-only incident: its category's owner
        first.kind is not AlertKind.PUBLIC_OPINION
        or first.evidence.category != incident.category
        or first.department != incident.department
    ):
        return False
    return (
        first.domain in RECALL_DOMAINS[incident.kind]
        and first.district == incident.district
        and (incident.street is None or first.street is None or first.street == incident.street)
        and (minimum is None or alert.max_grade.value <= minimum.value)
        and in_time(alert, incident, rules)
    )


def explains(alert: Alert, incident: Incident, cfg: CityConfig, rules: ThresholdRules) -> bool:
    """Whether ``incident`` accounts for ``alert`` (same district, a domain it moves, in time)."""
    return (
        alert.first.district == incident.district
        and alert.first.domain in related_domains(incident, cfg)
        and in_time(alert, incident, rules)
    )


class Describer:
    """Short, readable descriptions of alerts, with place names from the config."""

    def __init__(self, cfg: CityConfig, origin: datetime) -> None:
        self.cfg = cfg
        self.origin = origin
        self.tz = ZoneInfo(cfg.city.city.timezone)

    def place(self, district: str, street: str | None) -> str:
        d = self.cfg.districts.get(district)
        if d is None:
            return district
        if street is None:
            return d.name_en
        s = next((s for s in d.streets if s.code == street), None)
        return f"{d.name_en} / {street if s is None else s.name_en}"

    def minute(self, t: datetime) -> str:
        """Local clock time and minutes since the simulation's start, e.g. ``08:13 (+13 min)``."""
        offset = (t - self.origin).total_seconds() / 60
        return f"{t.astimezone(self.tz):%H:%M} (+{offset:.0f} min)"

    def alert(self, alert: Alert) -> str:
        first = alert.first
        grade = first.grade.roman
        if alert.max_grade is not first.grade:
            grade += f"->{alert.max_grade.roman}"
        return (
            f"{first.evidence.rule} grade {grade} in {self.place(first.district, first.street)} "
            f"fired at {self.minute(alert.fired_at)}"
        )

    def record(self, alert: Alert, incident: Incident) -> dict[str, Any]:
        first = alert.first
        return {
            "alert_id": first.alert_id,
            "rule": first.evidence.rule,
            "domain": first.domain,
            "street": first.street,
            "grade": first.grade.roman,
            "max_grade": alert.max_grade.roman,
            "fired_at": first.event_time.isoformat(),
            "after_start_s": (alert.fired_at - incident.start).total_seconds(),
        }


def score(
    incidents: Sequence[Incident],
    events: Iterable[AlertEvent],
    cfg: CityConfig,
    rules: ThresholdRules,
    origin: datetime,
) -> dict[str, Any]:
    """Recall of ``incidents`` and precision of the alerts in ``events``, as the JSON result."""
    every = alerts_from_events(events)
    alerts = [a for a in every if a.first.kind is not AlertKind.DATA_QUALITY]
    describe = Describer(cfg, origin)
    per_incident: list[dict[str, Any]] = []
    for inc in incidents:
        detecting = [a for a in alerts if recalls(a, inc, rules)]
        explained = [a for a in alerts if explains(a, inc, cfg, rules)]
        first = detecting[0] if detecting else None
        per_incident.append(
            {
                "incident": inc.kind,
                "district": inc.district,
                "street": inc.street,
                "place": describe.place(inc.district, inc.street),
                "start": inc.start.isoformat(),
                "end": inc.end.isoformat(),
                "recall_domains": sorted(RECALL_DOMAINS[inc.kind]),
                "recalled": first is not None,
                "detected_after_s": None
                if first is None
                else (first.fired_at - inc.start).total_seconds(),
                "first_alert": None if first is None else describe.alert(first),
                "max_grade": None
                if not detecting
                else min((a.max_grade for a in detecting), key=lambda g: g.value).roman,
                "alerts": [describe.record(a, inc) for a in explained],
                "other_street": [
                    describe.alert(a)
                    for a in explained
                    if inc.street is not None
                    and a.first.street is not None
                    and a.first.street != inc.street
                ],
            }
        )
    unmatched = [a for a in alerts if not any(explains(a, i, cfg, rules) for i in incidents)]
    recalled = sum(1 for p in per_incident if p["recalled"])
    n, m, u = len(incidents), len(alerts), len(unmatched)
    return {
        "incidents": n,
        "recalled": recalled,
        "recall": recalled / n if n else None,
        "alerts": m,
        "unmatched_alerts": u,
        "precision": (m - u) / m if m else None,
        "data_quality_alerts": len(every) - m,
        "per_incident": per_incident,
        "unmatched": [describe.alert(a) for a in unmatched],
    }


# --- running the city -------------------------------------------------------------------


def default_start(minutes: float, now: datetime | None = None) -> datetime:
    """The simulator's fixed start when the run ends 10 min before now, else a day back.

    Event times ahead of the clock are rejected, so the run must lie in the past;
    the fixed start keeps a seed's events identical from run to run.
    """
    now = now or datetime.now(UTC)
    if DEFAULT_START + timedelta(minutes=minutes + 10) <= now:
        return DEFAULT_START
    return (now - timedelta(days=1)).replace(minute=0, second=0, microsecond=0)


def recall_worker(bootstrap: str, config_dir: Path, speed: float, workdir: Path) -> WorkerProcess:
    """``cityvitals worker`` as the demo runs it, with a fresh app id and port, in its own
    session (a Ctrl-C reaches only the bench, which stops it)."""
    web_port = free_port()
    env = worker_environment(
        bootstrap,
        f"cityvitals-recall-{uuid.uuid4().hex[:8]}",
        web_port,
        workdir / "worker",
        embedded_broker="1",
        config_dir=str(config_dir),
        # two simulated minutes of silence close a district's windows
        idle_close_s=max(2.0, 120.0 / speed) if speed > 0 else 2.0,
    )
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p
    )
    return WorkerProcess(
        env,
        web_port,
        workdir / "worker.log",
        cwd=REPO_ROOT,
        new_session=True,
        death_signal=signal.SIGTERM,
    )


class Tracked:
    """The simulator's events, counted, with each district's last valid event time."""

    def __init__(
        self, events: Iterable[SimEvent], start: datetime, minutes: float, progress: Progress
    ) -> None:
        self._events = events
        self._start = start
        self._progress = progress
        self._task = progress.add_task("simulated minutes", total=minutes)
        self.count = 0
        self.last: dict[str, datetime] = {}

    def __iter__(self) -> Iterator[SimEvent]:
        for ev in self._events:
            self.count += 1
            if ev.malformed is None:
                self.last[ev.key.decode()] = ev.event_time
            if self.count % 500 == 0:
                minutes = (ev.event_time - self._start).total_seconds() / 60
                self._progress.update(self._task, completed=minutes)
            yield ev


async def wait_for_windows(
    bootstrap: str, last: Mapping[str, datetime], worker: WorkerProcess, timeout: float
) -> None:
    """Follow ``city.vitals`` until each district closed a window past its last event."""
    pending = {d: t.timestamp() for d, t in last.items()}
    consumer = AIOKafkaConsumer(
        VITALS_TOPIC, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest"
    )
    await consumer.start()
    deadline = time.monotonic() + timeout
    try:
        while pending:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"no closed window after the last event within {timeout:g} s for "
                    f"{sorted(pending)}\n{worker.log_tail()}"
                )
            worker.check_alive()
            batch = await consumer.getmany(timeout_ms=1000, max_records=10_000)
            for records in batch.values():
                for r in records:
                    if r.value is None:
                        continue
                    v = DistrictVitals.model_validate_json(r.value)
                    last_t = pending.get(v.district)
                    if last_t is not None and v.window_end.timestamp() > last_t:
                        del pending[v.district]
    finally:
        await consumer.stop()


async def read_alerts(bootstrap: str, idle_s: float = ALERTS_IDLE_S) -> list[AlertEvent]:
    """Every AlertEvent on ``city.emergency-command``, until none arrives for ``idle_s``."""
    consumer = AIOKafkaConsumer(
        ALERTS_TOPIC, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest"
    )
    await consumer.start()
    out: list[AlertEvent] = []
    try:
        while True:
            batch = await consumer.getmany(timeout_ms=int(idle_s * 1000), max_records=10_000)
            if not batch:
                return out
            for records in batch.values():
                out += [AlertEvent.model_validate_json(r.value) for r in records if r.value]
    finally:
        await consumer.stop()


async def run_city(
    bootstrap: str,
    sim: CitySimulator,
    minutes: float,
    speed: float,
    ground_truth: Path,
    worker: WorkerProcess,
    timeout: float,
) -> tuple[int, list[AlertEvent]]:
    """Publish the city, wait for its last windows, return (events published, alert events)."""
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed:.0f}/{task.total:.0f}"),
        TimeElapsedColumn(),
        console=err,
        transient=True,
    )
    with progress:
        events = Tracked(sim.events(timedelta(minutes=minutes)), sim.start, minutes, progress)
        await publish(
            bootstrap,
            events,
            speed=speed or None,
            ground_truth=ground_truth,
            incidents=sim.incidents,
        )
    log(f"published {events.count:,} events; waiting for the worker to close the last windows")
    await wait_for_windows(bootstrap, events.last, worker, timeout)
    alerts = await read_alerts(bootstrap)
    log(f"read {len(alerts)} alert events")
    return events.count, alerts


def _terminate(signum: int, frame: FrameType | None) -> None:
    """SIGTERM outside the event loop: unwind like Ctrl-C, through the clean-up."""
    raise KeyboardInterrupt


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run``, where SIGTERM cancels the coroutine as Ctrl-C does.

    An exception raised from a signal handler inside the event loop would land
    in whichever callback runs (a producer's sender task), so inside the loop
    SIGTERM cancels the main task instead; the caller sees ``CancelledError``.
    """

    async def cancellable() -> T:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        loop.add_signal_handler(signal.SIGTERM, task.cancel)
        try:
            return await coro
        finally:
            loop.remove_signal_handler(signal.SIGTERM)
            signal.signal(signal.SIGTERM, _terminate)

    return asyncio.run(cancellable())


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--minutes", type=float, default=45.0, help="simulated minutes (45)")
    parser.add_argument(
        "--speed", type=float, default=60.0, help="simulated seconds per wall second; 0 = flat out"
    )
    parser.add_argument("--seed", type=int, default=7, help="simulator seed (7)")
    parser.add_argument(
        "--malformed", type=float, default=0.02, help="share of malformed events (0.02)"
    )
    parser.add_argument(
        "--start", type=datetime.fromisoformat, default=None, help="ISO 8601, with a time zone"
    )
    parser.add_argument("--config-dir", type=Path, default=DEFAULT_CONFIG_DIR)
    parser.add_argument(
        "--timeout",
        type=float,
        default=300.0,
        help="seconds to wait for the last windows after publishing (300)",
    )
    parser.add_argument(
        "--appeals",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="citizens' appeals, and the incident only they show, as in the demo (on)",
    )
    parser.add_argument("--keep-logs", action="store_true", help="keep the work directory")
    args = parser.parse_args(argv)
    if args.minutes <= 0 or args.speed < 0 or not math.isfinite(args.speed):
        parser.error("--minutes must be positive and --speed 0 or positive")
    if args.start is not None and args.start.tzinfo is None:
        parser.error("--start needs a time zone, e.g. 2026-11-24T08:00:00+08:00")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    cfg = load_config(args.config_dir)
    rules = load_thresholds(cfg)
    unknown = {d for ds in RECALL_DOMAINS.values() for d in ds} - set(cfg.catalogue.domains)
    if unknown:
        raise SystemExit(f"RECALL_DOMAINS names domains not in the catalogue: {sorted(unknown)}")
    partitions = Settings().partitions
    start = args.start.astimezone(UTC) if args.start else default_start(args.minutes)
    sim = CitySimulator(
        cfg, seed=args.seed, start=start, malformed_share=args.malformed, appeals=args.appeals
    )
    workdir = Path(tempfile.mkdtemp(prefix="cityvitals-recall-"))
    log(f"logs and ground truth in {workdir}")
    t0 = time.monotonic()
    ok = False
    try:
        with EmbeddedBroker(log_path=workdir / "broker.log", own_session=True) as broker:
            run_async(ensure_topics(broker.bootstrap, partitions))
            worker = recall_worker(broker.bootstrap, Path(args.config_dir), args.speed, workdir)
            try:
                worker.start()
                worker.wait_ready(READY_TIMEOUT_S)
                log(
                    f"worker ready; simulating {args.minutes:g} min from {start.isoformat()} "
                    f"(seed {args.seed}, speed {args.speed:g})"
                )
                published, events = run_async(
                    run_city(
                        broker.bootstrap,
                        sim,
                        args.minutes,
                        args.speed,
                        workdir / "incidents.jsonl",
                        worker,
                        args.timeout,
                    )
                )
            finally:
                worker.stop(timeout=10.0)
        result = score(sim.incidents, events, cfg, rules, start)
        result["run"] = {
            "seed": args.seed,
            "minutes": args.minutes,
            "speed": args.speed,
            "malformed": args.malformed,
            "appeals": args.appeals,
            "start": start.isoformat(),
            "events_published": published,
            "alert_events": len(events),
            "slack_s": SLACK_S,
            "wall_s": round(time.monotonic() - t0, 1),
            "logs": str(workdir) if args.keep_logs else None,
        }
        print(json.dumps(result, ensure_ascii=False, indent=2))
        ok = True
        return 0
    except (KeyboardInterrupt, asyncio.CancelledError):
        log("[yellow]interrupted[/]")
        return 130
    finally:
        if ok and not args.keep_logs:
            shutil.rmtree(workdir, ignore_errors=True)
        elif not ok:
            log(f"logs kept in {workdir}")


if __name__ == "__main__":
    sys.exit(main())
