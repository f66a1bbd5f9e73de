"""``cityvitals demo``: embedded broker, a worker, the simulated city, and a live view.

The live view follows three topics from their start: ``city.vitals`` (the
district table), ``city.deadletter`` (a counter) and ``city.emergency-command``
(the open alerts below the table). What it shows is decided by
:class:`DemoView` and :class:`AlertBoard`, which hold no Kafka client, so tests
feed them messages and read what they render.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import tempfile
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from streams.alerting.lifecycle import inhibitor
from streams.api.auth import load_roles, write_roles_with_tokens
from streams.core.config import CityConfig, load_config
from streams.core.messages import (
    ALERTS_TOPIC,
    DEADLETTER_TOPIC,
    VITALS_TOPIC,
    AlertEvent,
    AlertStatus,
    DistrictVitals,
    Grade,
)
from streams.core.settings import Settings
from streams.kafka.broker import EmbeddedBroker
from streams.kafka.child import WorkerProcess, worker_environment
from streams.kafka.follow import follow
from streams.kafka.topics import ensure_topics
from streams.sim.simulator import CitySimulator, publish

#: Days of closed alerts and audit the demo's API keeps (``CITYVITALS_API_HISTORY_DAYS``):
#: the simulated city starts a week back in event time, and the history is measured
#: from the clock, so a week would drop every alert the moment it closes.
DEMO_HISTORY_DAYS = 30


def index_style(value: float | None) -> str:
    """Colour of a 0–100 index, echoing the warning colours: red is worst."""
    if value is None:
        return "dim"
    if value >= 80:
        return "green"
    if value >= 60:
        return "yellow"
    if value >= 40:
        return "dark_orange"
    return "bold red"


#: Rich styles of the public warning colours (Rich has no plain "orange").
GRADE_STYLES: dict[Grade, str] = {
    Grade.I: "bold red",
    Grade.II: "bold dark_orange",
    Grade.III: "bold yellow",
    Grade.IV: "bold blue",
}


class AlertBoard:
    """The open alerts on ``city.emergency-command``, and how many fired and resolved.

    Delivery is at least once and an alert's events arrive in order on its
    district's partition, so the board keeps the event with the highest
    ``sequence`` per alert id and ignores anything older or repeated; an alert
    whose resolved event was seen never reopens. Counters count alerts, not
    events: an alert fired once however often its firing event is delivered.
    """

    def __init__(self, cfg: CityConfig, max_rows: int = 12) -> None:
        self.cfg = cfg
        self.max_rows = max_rows
        self.tz = ZoneInfo(cfg.city.city.timezone)
        self.open: dict[str, AlertEvent] = {}
        self.fired: set[str] = set()
        self.resolved: set[str] = set()
        self._sequence: dict[str, int] = {}

    def add(self, event: AlertEvent) -> None:
        """Take one alert event: open, update or close its alert."""
        aid = event.alert_id
        if event.sequence <= self._sequence.get(aid, 0) or aid in self.resolved:
            return
        self._sequence[aid] = event.sequence
        if event.status is AlertStatus.FIRING or event.sequence == 1:
            self.fired.add(aid)
        if event.status is AlertStatus.RESOLVED:
            self.resolved.add(aid)
            self.open.pop(aid, None)
        else:
            self.open[aid] = event

    def place(self, district: str, street: str | None) -> str:
        """District (and street) name in English, as configured; the code if unknown."""
        d = self.cfg.districts.get(district)
        if d is None:
            return district
        name = d.name_en
        if street is not None:
            s = next((s for s in d.streets if s.code == street), None)
            name += f" / {street if s is None else s.name_en}"
        return name

    def indicators(self, codes: Sequence[str]) -> str:
        """Indicator names in English, as configured; the code if unknown."""
        return ", ".join(
            self.cfg.indicators[c].name_en if c in self.cfg.indicators else c for c in codes
        )

    def ordered(self) -> list[AlertEvent]:
        """Open alerts, most serious grade first, then the most recently seen first."""
        return sorted(
            self.open.values(), key=lambda a: (a.grade.value, -a.first_seen.timestamp(), a.alert_id)
        )

    def render(self) -> Table:
        """The open alerts as a table; its title carries the counters."""
        table = Table(
            title=(
                f"open alerts {len(self.open)} | fired {len(self.fired)} | "
                f"resolved {len(self.resolved)}"
            ),
            expand=False,
        )
        # One line per alert. The headline repeats place and indicators, so on a
        # narrow terminal it is the column that gets cut short.
        table.add_column("grade", justify="center", no_wrap=True)
        table.add_column("kind", no_wrap=True)
        table.add_column("place", no_wrap=True)
        table.add_column("indicators", no_wrap=True)
        table.add_column("headline", ratio=1)
        table.add_column("first seen", justify="right", no_wrap=True)
        alerts = self.ordered()
        for alert in alerts[: self.max_rows]:
            inhibited = inhibitor(alert, alerts) is not None
            muted = inhibited or alert.silenced_by is not None
            kind = alert.kind.value.replace("_", " ")
            if inhibited:
                kind += " (inhibited)"
            elif alert.silenced_by is not None:
                kind += " (silenced)"
            table.add_row(
                Text(alert.grade.roman, style=GRADE_STYLES[alert.grade]),
                kind,
                self.place(alert.district, alert.street),
                self.indicators(alert.indicators),
                Text(alert.headline_en, no_wrap=True, overflow="ellipsis"),
                alert.first_seen.astimezone(self.tz).strftime("%m-%d %H:%M"),
                style="dim" if muted else None,
            )
        if not alerts:
            table.add_row("-", "no open alerts", "", "", "", "", style="dim")
        elif len(alerts) > self.max_rows:
            more = len(alerts) - self.max_rows
            table.add_row("", f"and {more} more", "", "", "", "", style="dim")
        return table


class DemoView:
    """What the live view shows: the latest vitals per district, open alerts, counters."""

    def __init__(self, cfg: CityConfig, web_port: int, ground_truth: Path) -> None:
        self.cfg = cfg
        self.web_port = web_port
        self.ground_truth = ground_truth
        self.latest: dict[str, DistrictVitals] = {}
        self.alerts = AlertBoard(cfg)
        self.published = 0
        self.dead_letters = 0
        self.vitals_records = 0
        self.alert_events = 0
        self.started = time.monotonic()
        self.tz = ZoneInfo(cfg.city.city.timezone)

    def on_vitals(self, vitals: DistrictVitals) -> None:
        """Keep a district's newest window (a republished older one changes nothing)."""
        self.vitals_records += 1
        current = self.latest.get(vitals.district)
        if current is None or vitals.window_end >= current.window_end:
            self.latest[vitals.district] = vitals

    def on_alert(self, event: AlertEvent) -> None:
        self.alert_events += 1
        self.alerts.add(event)

    def on_message(self, topic: str, value: bytes | None) -> None:
        """Route one consumed record by its topic."""
        if topic == DEADLETTER_TOPIC:
            self.dead_letters += 1
        elif value is None:
            return
        elif topic == VITALS_TOPIC:
            self.on_vitals(DistrictVitals.model_validate_json(value))
        elif topic == ALERTS_TOPIC:
            self.on_alert(AlertEvent.model_validate_json(value))

    def render(self) -> Group:
        domains = list(self.cfg.catalogue.domains)
        table = Table(
            title=f"{self.cfg.city.city.name_zh} {self.cfg.city.city.name_en}: district vital signs (0-100, 100 healthy)",
            expand=False,
        )
        table.add_column("district")
        table.add_column("window", justify="right")
        for d in domains:
            table.add_column(self.cfg.catalogue.domains[d].name_en, justify="right")
        table.add_column("composite", justify="right")
        for code, district in self.cfg.districts.items():
            v = self.latest.get(code)
            name = f"{district.name_zh} {district.name_en}"
            if v is None:
                table.add_row(name, "waiting", *(["-"] * (len(domains) + 1)), style="dim")
                continue
            cells = [
                Text(
                    "-" if v.domains.get(d) is None else f"{v.domains[d]:.0f}",
                    style=index_style(v.domains.get(d)),
                )
                for d in domains
            ]
            composite = Text(
                "-" if v.composite is None else f"{v.composite:.1f}", style=index_style(v.composite)
            )
            table.add_row(
                name, v.window_end.astimezone(self.tz).strftime("%m-%d %H:%M"), *cells, composite
            )
        uptime = time.monotonic() - self.started
        footer = Text(
            f"{uptime:5.0f} s | events published {self.published:,} | dead letters {self.dead_letters:,} | "
            f"vitals records {self.vitals_records:,} | alert events {self.alert_events:,}\n"
            f"metrics: http://127.0.0.1:{self.web_port}/metrics | incidents (ground truth): {self.ground_truth}\n"
            "Ctrl-C stops everything.",
            style="dim",
        )
        return Group(table, self.alerts.render(), footer)


#: Seconds the demo's own tasks (the simulator, the live view's consumer) get to stop
#: after Ctrl-C or SIGTERM. A task still running then is left behind: the loop is
#: closed without waiting for it, so a client stuck on a busy machine cannot hold the
#: demo (and its worker and broker) up.
STOP_BOUND_S = 5.0


async def _run(
    bootstrap: str,
    cfg: CityConfig,
    view: DemoView,
    stop: asyncio.Event,
    *,
    speed: float,
    seed: int,
    malformed: float,
    duration: float | None,
) -> None:
    # The simulated city runs `speed` times faster than the clock, and event times
    # ahead of the clock are rejected; so it starts a week back (at 60x it catches up
    # with the present after about 2.8 hours).
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(days=7)
    # with citizens' appeals on every channel, and the smell only citizens report
    sim = CitySimulator(cfg, seed=seed, start=start, malformed_share=malformed, appeals=True)

    class Counting:
        def __iter__(self):  # type: ignore[no-untyped-def]
            for ev in sim.events(timedelta(days=7)):
                view.published += 1
                yield ev

    tasks = [
        asyncio.create_task(
            publish(
                bootstrap,
                Counting(),
                speed=speed,
                ground_truth=view.ground_truth,
                incidents=sim.incidents,
            ),
            name="the simulator",
        ),
        asyncio.create_task(
            follow(bootstrap, (VITALS_TOPIC, DEADLETTER_TOPIC, ALERTS_TOPIC), view.on_message),
            name="the live view's consumer",
        ),
    ]
    console = Console()
    if not console.is_terminal:
        console = Console(width=150)  # a log file or pipe: do not squeeze the table to 80 columns

    async def running() -> bool:
        """Wait half a second; False once stopped or past ``duration``."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=0.5)
        _raise_if_failed(tasks)
        return not stop.is_set() and (
            duration is None or time.monotonic() - view.started < duration
        )

    try:
        if console.is_terminal:
            with Live(view.render(), console=console, refresh_per_second=2) as live:
                while await running():
                    live.update(view.render())
        else:
            last = 0.0
            while await running():
                if time.monotonic() - last >= 10:
                    console.print(view.render())
                    last = time.monotonic()
            console.print(view.render())
    finally:
        # a client's orderly stop waits on the broker, which a busy machine can keep
        # from answering: the stop is bounded, and what does not end in time is left
        for t in tasks:
            t.cancel()
        await asyncio.wait(tasks, timeout=STOP_BOUND_S)


def _raise_if_failed(tasks: Sequence[asyncio.Task[Any]]) -> None:
    for t in tasks:
        if t.done() and not t.cancelled() and t.exception() is not None:
            raise t.exception()  # type: ignore[misc]


@dataclass
class Stopped:
    """How :func:`run_until_signalled` ended: the signal that stopped it (None: ``main``
    returned by itself) and the names of the tasks left running."""

    by: signal.Signals | None = None
    left: list[str] = field(default_factory=list)


def run_until_signalled(
    main: Callable[[asyncio.Event], Coroutine[Any, Any, None]], *, bound: float = STOP_BOUND_S
) -> Stopped:
    """Run ``main(stop)`` on an event loop of its own until it returns; SIGINT (Ctrl-C,
    unless this process was started with it ignored) and SIGTERM set ``stop``.

    Unlike :func:`asyncio.run`, nothing here waits without a bound: ``main`` gets
    ``bound`` seconds after the signal to return (and another to end once cancelled),
    every task it leaves gets one second to end once cancelled, and whatever is still
    running then is left behind, named in the answer, and the loop closed without it.
    An exception ``main`` raised is raised here, once the loop is closed."""
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    stopped = Stopped()

    def on_signal(sig: signal.Signals) -> None:
        stopped.by = stopped.by or sig
        stop.set()

    signals = [signal.SIGTERM]
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
        signals.append(signal.SIGINT)
    for sig in signals:
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        task = loop.create_task(main(stop), name="the demo")
        loop.run_until_complete(_until_done(task, stop, bound))
        rest = asyncio.all_tasks(loop)
        for t in rest:
            t.cancel()
        if rest:
            loop.run_until_complete(asyncio.wait(rest, timeout=1.0))
        stopped.left = sorted(t.get_name() for t in asyncio.all_tasks(loop))
        loop.run_until_complete(
            asyncio.wait([loop.create_task(loop.shutdown_asyncgens())], timeout=1.0)
        )
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
        # a task left behind is not an error to report when it is collected
        loop.set_exception_handler(lambda _loop, _context: None)
        loop.close()
    if task.done() and not task.cancelled() and task.exception() is not None:
        raise task.exception()  # type: ignore[misc]
    return stopped


async def _until_done(task: asyncio.Task[None], stop: asyncio.Event, bound: float) -> None:
    """Until ``task`` ends by itself, or ``bound`` seconds (and one more once cancelled)
    after ``stop`` is set."""
    stopping = asyncio.ensure_future(stop.wait())
    await asyncio.wait([task, stopping], return_when=asyncio.FIRST_COMPLETED)
    if not task.done():
        await asyncio.wait([task], timeout=bound + 1.0)
    if not task.done():
        task.cancel()
        await asyncio.wait([task], timeout=1.0)
    stopping.cancel()


def _print_console(
    console: Console, settings: Settings, tokens: dict[str, str], roles: Path
) -> None:
    """Where the console is, and one sign-in token per user (valid for 12 hours)."""
    book = load_roles(roles, load_config(settings.config_dir))
    console.print(
        f"command-centre console: [bold]http://{settings.web_host}:{settings.web_port}/[/]"
        f"  (API: /openapi.json; tokens valid 12 h, in {roles} as digests only)",
        soft_wrap=True,
    )
    for user, token in tokens.items():
        who = book.principal(user)
        # never folded: a token must copy whole from any terminal width
        console.print(f"  {who.role.value:<10} {user:<24} {token}", highlight=False, soft_wrap=True)


def run_demo(
    settings: Settings,
    cfg: CityConfig,
    *,
    speed: float,
    seed: int,
    malformed: float,
    duration: float | None,
) -> int:
    console = Console(stderr=True)
    workdir = Path(tempfile.mkdtemp(prefix="cityvitals-demo-"))
    # Broker and worker run in their own sessions: a Ctrl-C reaches only the demo,
    # which then stops the simulator, the worker and the broker, in that order.
    # (Both still die with the demo if it is killed: parent-death signal.)
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # the live table is the output
    with EmbeddedBroker(log_path=workdir / "broker.log", own_session=True) as broker:
        console.print(f"embedded broker on {broker.bootstrap}; logs in {workdir}")
        # topics first: a producer must not let the broker auto-create them with
        # another partition count
        asyncio.run(ensure_topics(broker.bootstrap, settings.partitions))
        tokens = write_roles_with_tokens(
            settings.roles_path, workdir / "roles.yaml", ttl=timedelta(hours=12)
        )
        _print_console(console, settings, tokens, workdir / "roles.yaml")
        env = worker_environment(
            broker.bootstrap,
            "cityvitals-demo",
            settings.web_port,
            workdir / "worker",
            secrets_dir=workdir / "secrets",
            roles_file=str(workdir / "roles.yaml"),
            embedded_broker="1",
            config_dir=str(settings.config_dir),
            # the simulated city runs `speed` times faster than the clock
            idle_close_s=max(2.0, 120.0 / speed),
            # and its event time starts a week back: the API's history (measured
            # from the clock) covers the city's present
            api_history_days=DEMO_HISTORY_DAYS,
        )
        if (workdir / "secrets").exists():
            # the demo's own: the notification receivers' secrets are there, for
            # examples/receiver.py, and the key that opens its dead letters
            console.print(f"secrets generated for this demo in {workdir / 'secrets'}")
        worker = WorkerProcess(env, settings.web_port, workdir / "worker.log", new_session=True)
        worker.start()
        view = DemoView(cfg, settings.web_port, workdir / "incidents.jsonl")

        async def main(stop: asyncio.Event) -> None:
            await _run(
                broker.bootstrap,
                cfg,
                view,
                stop,
                speed=speed,
                seed=seed,
                malformed=malformed,
                duration=duration,
            )

        try:
            stopped = run_until_signalled(main)
            if stopped.by is not None:
                console.print("stopping...")
            for name in stopped.left:
                console.print(f"[dim]{name} did not stop within {STOP_BOUND_S:g} s: left behind[/]")
        except KeyboardInterrupt:  # Ctrl-C before the loop ran, or after it
            console.print("stopping...")
        finally:
            worker.stop(signal.SIGTERM, timeout=8)
    code = None if worker.proc is None else worker.proc.returncode
    if code not in (0, -signal.SIGTERM, None) and not view.latest:
        console.print(f"[red]the worker exited with {code}; see {workdir / 'worker.log'}[/]")
        return 1
    return 0
