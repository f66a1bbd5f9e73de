"""The ``cityvitals`` command line."""

from __future__ import annotations

import asyncio
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console

from streams.alerting.models import AnomalyModels, load_anomaly_models
from streams.alerting.rules import ThresholdRules, load_silences, load_thresholds
from streams.api.auth import TokenBook, load_roles
from streams.core.config import CityConfig, ConfigError, load_config
from streams.core.settings import Settings
from streams.notify.routing import RoutingTree, load_routes
from streams.voice.appeals import AppealsConfig, load_appeals

cli = typer.Typer(
    add_completion=False, no_args_is_help=True, help="City operations monitoring and early warning."
)
err = Console(stderr=True)

BootstrapOpt = Annotated[
    str | None, typer.Option(help="Kafka bootstrap servers (env CITYVITALS_BOOTSTRAP)")
]
ConfigOpt = Annotated[
    Path | None, typer.Option(help="config directory (env CITYVITALS_CONFIG_DIR)")
]


def make_settings(**overrides: Any) -> Settings:
    return Settings(**{k: v for k, v in overrides.items() if v is not None})


@dataclass
class LoadedConfig:
    """Every configuration file the worker loads, checked (roles and routes when asked)."""

    cfg: CityConfig
    rules: ThresholdRules
    models: AnomalyModels
    appeals: AppealsConfig
    roles: TokenBook | None
    routes: RoutingTree | None


def load_all_or_exit(
    directory: Path, roles: Path | None = None, routes: Path | None = None
) -> LoadedConfig:
    """Load the city's config, its threshold rules, silences, anomaly models and (given
    their paths) the roles and routes files; on error print file, line, key and reason
    and exit 2."""
    try:
        cfg = load_config(directory)
        rules = load_thresholds(cfg)
        load_silences(cfg, rules)
        return LoadedConfig(
            cfg,
            rules,
            load_anomaly_models(cfg),
            load_appeals(cfg),
            load_roles(roles, cfg) if roles is not None else None,
            load_routes(routes, cfg, rules=rules) if routes is not None else None,
        )
    except ConfigError as exc:
        err.print(f"[bold red]invalid configuration[/]: {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None


def secrets_or_exit(settings: Settings, routes: RoutingTree | None) -> None:
    """Stop (exit 2) when a secret the worker needs is unset, short or a placeholder,
    naming each and what sets it, never its value."""
    problems = [*settings.secret_problems(), *(routes.secret_problems if routes else ())]
    if not problems:
        return
    err.print(
        f"[bold red]unsafe secrets[/]: the worker does not start with these "
        f'({len(problems)}; docs/operations.md, "Secrets"):',
        highlight=False,
        soft_wrap=True,
    )
    for problem in problems:
        err.print(f"  {problem}", markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(2)


def load_config_or_exit(
    directory: Path, roles: Path | None = None, routes: Path | None = None
) -> CityConfig:
    """:func:`load_all_or_exit`, for the commands that need only the city's config."""
    return load_all_or_exit(directory, roles, routes).cfg


def prepare_topics_or_exit(settings: Settings) -> None:
    """Create the city's topics if missing; stop if their partition counts disagree."""
    from streams.kafka.topics import UNREACHABLE, TopicLayoutError, ensure_topics

    try:
        asyncio.run(
            ensure_topics(
                settings.bootstrap,
                settings.partitions,
                settings.replication_factor,
                client_options=settings.kafka_client_options(),
            )
        )
    except TopicLayoutError as exc:
        err.print(f"[bold red]topic layout[/]: {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    except UNREACHABLE as exc:
        unreachable_exit(settings, exc)


def unreachable_exit(settings: Settings, exc: BaseException) -> NoReturn:
    """Say that Kafka cannot be reached, and exit 3."""
    err.print(f"[bold red]cannot reach Kafka at {settings.bootstrap}[/]: {exc!r}", highlight=False)
    raise typer.Exit(3) from None


@cli.command("check-config")
def check_config(config_dir: ConfigOpt = None) -> None:
    """Validate the config directory and the worker's secrets, and print a summary."""
    settings = make_settings(config_dir=config_dir)
    # every file the worker loads: the city, its rules, silences and models, the API's
    # roles, the notification routes and the appeals' catalogue
    loaded = load_all_or_exit(settings.config_dir, settings.roles_path, settings.routes_path)
    cfg, rules, roles, routes = loaded.cfg, loaded.rules, loaded.roles, loaded.routes
    assert roles is not None and routes is not None
    secrets_or_exit(settings, routes)
    streets = sum(len(d.streets) for d in cfg.city.districts)
    chosen = {loaded.models.choice(code).name for code in cfg.indicators}
    Console().print(
        f"[green]ok[/] {cfg.directory}: {len(cfg.districts)} districts, {streets} streets, "
        f"{len(cfg.indicators)} indicators in {len(cfg.catalogue.domains)} domains, "
        f"{len(rules.rules)} threshold rules, anomaly models: {', '.join(sorted(chosen))}; "
        f"{len(roles.users)} API users ({settings.roles_path.name}), "
        f"{len(routes.receivers)} notification receivers ({settings.routes_path.name}); "
        f"{len(loaded.appeals.channels)} appeal channels, "
        f"{len(loaded.appeals.categories)} appeal categories"
    )


SCHEMAS_DIR = Path(__file__).resolve().parents[1] / "docs" / "schemas"


@cli.command()
def schemas(
    out: Annotated[Path, typer.Option(help="directory to write the schemas to")] = SCHEMAS_DIR,
) -> None:
    """Write the JSON Schema of every topic's message, one file per topic."""
    import json

    from streams.core.messages import json_schemas

    out.mkdir(parents=True, exist_ok=True)
    written = json_schemas()
    for stale in set(p.name for p in out.glob("*.schema.json")) - set(written):
        (out / stale).unlink()
    for name, schema in written.items():
        text = json.dumps(schema, indent=2, ensure_ascii=False) + "\n"
        (out / name).write_text(text, encoding="utf-8")
    Console().print(f"[green]ok[/] {len(written)} schemas in {out}")


@cli.command()
def worker(
    bootstrap: BootstrapOpt = None,
    config_dir: ConfigOpt = None,
    web_port: Annotated[int | None, typer.Option(help="port of /metrics and the web API")] = None,
    datadir: Annotated[Path | None, typer.Option(help="worker data directory")] = None,
    app_id: Annotated[str | None, typer.Option(help="consumer group / app id")] = None,
) -> None:
    """Run a stream-processing worker against a Kafka cluster."""
    from streams.kafka.worker import create_app, run, tune_gc

    settings = make_settings(
        bootstrap=bootstrap,
        config_dir=config_dir,
        web_port=web_port,
        datadir=datadir,
        app_id=app_id,
    )
    loaded = load_all_or_exit(settings.config_dir, settings.roles_path, settings.routes_path)
    secrets_or_exit(settings, loaded.routes)
    prepare_topics_or_exit(settings)
    app = create_app(settings, loaded.cfg)
    tune_gc(settings)
    run(app, settings)


@cli.command()
def broker(
    port: Annotated[
        int | None, typer.Option(help="port to listen on (default: a free one)")
    ] = None,
    storage: Annotated[
        str,
        typer.Option(
            help="memory (default), local-s3 (a private S3 store: the log survives a "
            "restart, kill -HUP restarts the broker), or a Tansu storage URL (s3://BUCKET/ "
            "with the AWS_* variables)"
        ),
    ] = "memory",
) -> None:
    """Run the embedded Kafka-protocol broker on loopback until Ctrl-C."""
    from streams.kafka.broker import serve_forever

    serve_forever(port, storage)


def _parse_start(start: str | None) -> datetime | None:
    if start is None:
        return None
    if start == "now":
        return datetime.now(UTC).replace(microsecond=0)
    try:
        when = datetime.fromisoformat(start)
    except ValueError:
        raise typer.BadParameter(f"not an ISO 8601 time: {start!r}", param_hint="--start") from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


@cli.command()
def simulate(
    bootstrap: BootstrapOpt = None,
    config_dir: ConfigOpt = None,
    minutes: Annotated[float, typer.Option(help="simulated minutes to publish")] = 60.0,
    events: Annotated[
        int | None, typer.Option(help="publish exactly this many events instead")
    ] = None,
    seed: Annotated[int, typer.Option(help="random seed (same seed, same city)")] = 7,
    start: Annotated[
        str | None, typer.Option(help="simulated start time (ISO 8601, or 'now')")
    ] = None,
    speed: Annotated[
        float | None,
        typer.Option(help="simulated seconds per wall second (default: as fast as possible)"),
    ] = None,
    rate: Annotated[float | None, typer.Option(help="at most this many events per second")] = None,
    malformed: Annotated[float, typer.Option(help="share of malformed events, 0-1")] = 0.0,
    ground_truth: Annotated[
        Path | None, typer.Option(help="write the scripted incidents here (JSON lines)")
    ] = None,
) -> None:
    """Publish a simulated city (daily patterns, noise, dropouts, scripted incidents)."""
    from streams.sim.simulator import CitySimulator, publish

    settings = make_settings(bootstrap=bootstrap, config_dir=config_dir)
    cfg = load_config_or_exit(settings.config_dir)
    if not 0.0 <= malformed <= 1.0:
        raise typer.BadParameter("must lie between 0 and 1", param_hint="--malformed")
    prepare_topics_or_exit(settings)
    sim = CitySimulator(cfg, seed=seed, start=_parse_start(start), malformed_share=malformed)
    stream = sim.take(events) if events is not None else sim.events(timedelta(minutes=minutes))
    count = asyncio.run(
        publish(
            settings.bootstrap,
            stream,
            rate=rate,
            speed=speed,
            ground_truth=ground_truth,
            incidents=sim.incidents,
            progress=sys.stderr.isatty(),
            client_options=settings.kafka_client_options(),
        )
    )
    Console().print(f"published {count} events to {settings.bootstrap}")


@cli.command()
def demo(
    config_dir: ConfigOpt = None,
    speed: Annotated[float, typer.Option(help="simulated seconds per wall second")] = 60.0,
    seed: Annotated[int, typer.Option(help="random seed of the simulated city")] = 7,
    malformed: Annotated[float, typer.Option(help="share of malformed events, 0-1")] = 0.02,
    web_port: Annotated[int, typer.Option(help="port of the worker's /metrics")] = 6066,
    duration: Annotated[
        float | None, typer.Option(help="stop after this many wall seconds")
    ] = None,
) -> None:
    """Embedded broker + worker + simulated city, with a live table of district indices."""
    from streams.sim.demo import run_demo

    settings = make_settings(config_dir=config_dir, web_port=web_port)
    cfg = load_config_or_exit(settings.config_dir)
    raise typer.Exit(
        run_demo(settings, cfg, speed=speed, seed=seed, malformed=malformed, duration=duration)
    )


@cli.command()
def replay(
    input: Annotated[
        Path, typer.Option("--input", help="CSV with a 'timestamp' column and value columns")
    ],
    out: Annotated[
        Path, typer.Option("--out", help="where to write the alert events (JSON lines)")
    ],
    indicator: Annotated[
        list[str] | None,
        typer.Option(help="COLUMN=CODE: watch a column as a catalogue indicator (repeatable)"),
    ] = None,
    district: Annotated[
        str | None, typer.Option(help="district code the series belong to (default: the first)")
    ] = None,
    config_dir: ConfigOpt = None,
    site: Annotated[
        bool,
        typer.Option(
            "--site", help="also score all value columns jointly as one site (their relationship)"
        ),
    ] = False,
) -> None:
    """Run the live detectors and alert lifecycle offline over a CSV file."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    from streams.alerting.replay import ReplayError, replay_file, write_jsonl

    settings = make_settings(config_dir=config_dir)
    cfg = load_config_or_exit(settings.config_dir)
    mapping: dict[str, str] = {}
    for item in indicator or []:
        column, sep, code = item.partition("=")
        if not sep or not column or not code:
            raise typer.BadParameter(f"{item!r} is not COLUMN=CODE", param_hint="--indicator")
        mapping[column] = code
    place = district or next(iter(cfg.districts))
    if place not in cfg.districts:
        raise typer.BadParameter(f"unknown district {place!r}", param_hint="--district")
    if not input.is_file():
        raise typer.BadParameter(f"{input} is not a file", param_hint="--input")
    with input.open("rb") as handle:
        total = max(0, sum(1 for _ in handle) - 1)
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} rows"),
        TimeRemainingColumn(),
        console=err,
        transient=True,
        disable=not err.is_terminal,
    ) as bar:
        task = bar.add_task(input.name, total=total)
        try:
            lines, stats = replay_file(
                input,
                cfg,
                district=place,
                mapping=mapping,
                progress=lambda: bar.advance(task),
                site=site,
            )
        except ReplayError as exc:
            err.print(f"[bold red]cannot replay[/]: {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
    write_jsonl(lines, out)
    Console(stderr=True).print(
        f"{stats.rows} rows, {stats.values} values ({stats.late} late, {stats.blank} blank): "
        f"{stats.alerts} alerts, {stats.events} alert events -> {out}"
    )


@cli.command("migrate-state")
def migrate_state(
    bootstrap: BootstrapOpt = None,
    app_id: Annotated[str | None, typer.Option(help="the workers' app id")] = None,
    dry_run: Annotated[
        bool, typer.Option(help="say what would be converted; write nothing")
    ] = False,
) -> None:
    """Convert table state pickled by an earlier release into versioned documents
    (once, with every worker stopped; docs/operations.md, upgrades)."""
    from streams.kafka.migrate import WorkersRunning
    from streams.kafka.migrate import migrate_state as migrate
    from streams.kafka.topics import UNREACHABLE

    settings = make_settings(bootstrap=bootstrap, app_id=app_id)
    try:
        reports = asyncio.run(migrate(settings, dry_run=dry_run))
    except WorkersRunning as exc:
        err.print(f"[bold red]not migrated[/]: {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    except UNREACHABLE as exc:
        unreachable_exit(settings, exc)
    out = Console()
    verb = "would convert" if dry_run else "converted"
    for report in reports:
        out.print(
            f"{report.topic}: {report.districts} districts, {verb} {len(report.converted)}"
            + (f", failed {len(report.failed)}" if report.failed else ""),
            highlight=False,
            soft_wrap=True,
        )
        for district, reason in report.failed.items():
            err.print(f"  [red]{district}[/]: {reason}", highlight=False, soft_wrap=True)
    if any(r.failed for r in reports):
        raise typer.Exit(1)


alerts_cli = typer.Typer(no_args_is_help=True, help="Work with alerts from a terminal.")
cli.add_typer(alerts_cli, name="alerts")


@alerts_cli.command("tail")
def alerts_tail(
    url: Annotated[
        str, typer.Option(envvar="CITYVITALS_API_URL", help="a worker's address")
    ] = "http://127.0.0.1:6066",
    token: Annotated[
        str | None, typer.Option(envvar="CITYVITALS_TOKEN", help="your API token")
    ] = None,
    district: Annotated[str | None, typer.Option(help="only this district")] = None,
    street: Annotated[str | None, typer.Option(help="only this street")] = None,
    domain: Annotated[str | None, typer.Option(help="only this domain")] = None,
    grade: Annotated[list[str] | None, typer.Option(help="I, II, III or IV; repeatable")] = None,
    kind: Annotated[
        str | None, typer.Option(help="warning, alarm, composite, data_quality")
    ] = None,
    department: Annotated[str | None, typer.Option(help="owned or co-handled by")] = None,
    from_start: Annotated[bool, typer.Option(help="replay every alert event kept first")] = False,
    count: Annotated[int | None, typer.Option(help="stop after this many events")] = None,
    lang: Annotated[str, typer.Option(help="headline language: zh or en")] = "en",
) -> None:
    """The live alert feed, with the scopes of your token; Ctrl-C stops."""
    from streams.alerting.tail import run_tail

    if not token:
        err.print("[bold red]no token[/]: pass --token or set CITYVITALS_TOKEN")
        raise typer.Exit(2)
    if lang not in ("zh", "en"):
        err.print(f"[bold red]--lang[/] must be zh or en, not {lang!r}")
        raise typer.Exit(2)
    params: dict[str, object] = {
        k: v
        for k, v in {
            "district": district,
            "street": street,
            "domain": domain,
            "grade": grade or None,
            "kind": kind,
            "department": department,
            "from_start": "true" if from_start else None,
        }.items()
        if v is not None
    }
    code = run_tail(url, token, params, count=count, lang=lang, console=Console())
    raise typer.Exit(code)


routes_cli = typer.Typer(no_args_is_help=True, help="Notification routes (config/routes.yaml).")
cli.add_typer(routes_cli, name="routes")


@routes_cli.command("test")
def routes_test(
    label: Annotated[
        list[str], typer.Option(help="an alert label, e.g. grade=I or department=fire; repeatable")
    ],
    config_dir: ConfigOpt = None,
    routes_file: Annotated[
        Path | None, typer.Option(help="routes file (env CITYVITALS_ROUTES_FILE)")
    ] = None,
) -> None:
    """Which receivers an alert with these labels reaches, with its group and timers."""
    from streams.notify.routing import routes_test_command

    settings = make_settings(config_dir=config_dir)
    code = routes_test_command(
        settings.config_dir, label, routes_file=routes_file or settings.routes_path
    )
    raise typer.Exit(code)


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
