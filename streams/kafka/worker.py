"""The Faust application: the consumer group, the state tables, the input feed's
handler wired in, the actions agent, the one-second timers and the worker's web port.

Faust runs the consumer group and the district tables (changelog, recovery, standby
replicas, moving partitions between workers). The five input topics are read in
bulk, partition by partition, by :class:`streams.kafka.feed.InputFeed`, which reads
exactly the partitions whose table state this worker owns; Faust's per-event stream
would cost several times the work done per event. What a batch does is
:class:`streams.kafka.processor.VitalsProcessor`'s.

Ingest and windowing run in one handler on purpose: a second pass over
``city.readings`` would cost a full consume per event. ``city.readings`` is still
published for every valid event, for detection and for anyone else who needs
single readings.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

import faust

from streams.alerting.detection import DetectionContext
from streams.alerting.public_opinion import OpinionCategory
from streams.alerting.rules import load_silences, load_thresholds
from streams.api.auth import Authenticator, load_roles
from streams.api.feedback import CategoryInfo
from streams.core import metrics
from streams.core.config import CityConfig, load_config
from streams.core.logs import logging_config
from streams.core.messages import ACTIONS_TOPIC, EVENT_TOPICS
from streams.core.secrets import refuse_unsafe
from streams.core.settings import Settings
from streams.core.signing import ActionSigner
from streams.kafka import sensors
from streams.kafka.feed import InputFeed, key_partition
from streams.kafka.notifier import NotifyService
from streams.kafka.processor import VitalsProcessor
from streams.kafka.serve import ApiService
from streams.kafka.tables import (
    DETECTION_CODEC,
    DETECTION_TABLE,
    NOTIFY_CODEC,
    NOTIFY_TABLE,
    TABLE_NAME,
    changelog_topic,
    stop_if_unrestorable,
)
from streams.notify.delivery import DeliveryPolicy
from streams.notify.routing import load_routes
from streams.voice.appeals import AppealsConfig, load_appeals

log = logging.getLogger(__name__)


class Readiness:
    """Whether the worker's partitions are settled: ``/readyz`` without the API's part.

    Ready once the latest rebalance has completed, with the tables of the partitions
    this worker owns recovered, and the inputs read exactly those partitions. Not
    ready from the moment a rebalance starts (partitions revoked) until then. A
    worker that owns no partition (more workers than partitions) is ready too: it
    serves the API and the console, and takes partitions over when another worker
    leaves.
    """

    def __init__(self, rebalancing: Callable[[], bool], recovered: Callable[[], bool]) -> None:
        self._rebalancing = rebalancing
        self._recovered = recovered
        self.epoch = 0  # rebalances whose revocation this worker has handled
        self._settled_epoch = -1
        self._assigning_epoch = -1  # the epoch whose assignment Faust began last

    def revoked(self) -> None:
        """A rebalance started: whatever the inputs read now is about to change."""
        self.epoch += 1

    def assigning(self) -> None:
        """Faust began handling the assignment of the latest rebalance."""
        self._assigning_epoch = self.epoch

    def current(self) -> bool:
        """Whether the assignment in hand is the latest one's.

        Faust signals a rebalance complete once its recovery ends, even when a newer
        rebalance has revoked the partitions meanwhile; that newer one's recovery is
        then restoring the very tables the inputs would write. Only a completion
        that no revocation has followed since its assignment began may take inputs.
        """
        return self._assigning_epoch == self.epoch

    def settled(self, epoch: int) -> None:
        """The inputs follow the assignment this worker had at ``epoch`` (read before
        assigning them); if another rebalance started meanwhile, nothing is settled."""
        if epoch == self.epoch:
            self._settled_epoch = epoch

    def __call__(self) -> bool:
        return self._settled_epoch == self.epoch and not self._rebalancing() and self._recovered()


class CityApp(faust.App):
    """The worker's app: serves the API from the start, and stops reading input before
    Faust revokes and stops its tables."""

    input_feed: InputFeed | None = None
    api_service: ApiService | None = None
    notifier: NotifyService | None = None
    readiness: Readiness | None = None

    async def _on_partitions_assigned(self, assigned: Any, generation_id: int = 0) -> None:
        # the consumer calls this (bound when it is made) after the revocation and before
        # any recovery of the new assignment: the one place that tells a rebalance's
        # own completion from a superseded one's
        if self.readiness is not None:
            self.readiness.assigning()
        await super()._on_partitions_assigned(assigned, generation_id)

    async def on_start(self) -> None:
        await super().on_start()
        processor = getattr(self, "cityvitals", None)
        if processor is not None:
            processor.readers.start()  # ready by the time a backlog's first batch comes
        if self.api_service is not None:
            await self.api_service.start()

    async def on_stop(self) -> None:
        if self.input_feed is not None:
            await self.input_feed.stop()
        processor = getattr(self, "cityvitals", None)
        if processor is not None:
            processor.readers.close()  # its reader processes, if it started any
        if self.notifier is not None:
            await self.notifier.stop()
        if self.api_service is not None:
            await self.api_service.stop()
        await super().on_stop()


def faust_settings(settings: Settings) -> dict[str, Any]:
    """Keyword settings for :class:`faust.App` from our settings."""
    extra: dict[str, Any] = {}
    if settings.security_protocol != "PLAINTEXT":
        import ssl

        from faust.auth import SASLCredentials, SSLCredentials

        ctx = ssl.create_default_context()
        if settings.security_protocol.startswith("SASL"):
            extra["broker_credentials"] = SASLCredentials(
                username=settings.sasl_username,
                password=settings.sasl_password.get_secret_value()
                if settings.sasl_password
                else None,
                mechanism=settings.sasl_mechanism,
                ssl_context=ctx if settings.security_protocol == "SASL_SSL" else None,
            )
        else:
            extra["broker_credentials"] = SSLCredentials(ctx)
    return {
        "broker": ";".join(f"kafka://{b.strip()}" for b in settings.bootstrap.split(",")),
        "broker_session_timeout": settings.session_timeout_s,
        "broker_heartbeat_interval": min(3.0, settings.session_timeout_s / 3),
        "stream_processing_timeout": settings.stream_stall_s,
        "topic_partitions": settings.partitions,
        "topic_replication_factor": settings.replication_factor,
        "store": "memory://",
        "datadir": str(settings.datadir),
        "web_enabled": False,  # the worker's web port is the API's (streams.kafka.serve)
        "producer_linger_ms": 5,
        "producer_max_batch_size": 256 * 1024,
        "broker_max_poll_records": max(500, settings.batch_max),
        "stream_buffer_maxsize": max(4096, 2 * settings.batch_max),
        **extra,
    }


def run(app: faust.App, settings: Settings) -> None:
    """Run ``app`` as a Faust worker in this process until it is stopped."""
    faust.Worker(
        app,
        loglevel=settings.log_level,
        quiet=True,
        logging_config=logging_config(settings.log_level, settings.log_format),
    ).execute_from_commandline()


def quiet_changelog_stall_checks() -> None:
    """Stop Faust reporting the tables' changelog partitions as stalled streams.

    Faust's livelock check looks at every partition its consumer holds, every 2.5
    commit intervals: one that has records beyond its position and no stream that
    ever read it is logged at ERROR, "Stream has not started processing", from
    ``stream_processing_timeout`` (5 minutes) after start, again at each check. The
    tables' changelogs are such partitions by design (Faust reads them to restore
    and as standbys, never as a stream), so a healthy worker logged hundreds of
    false errors an operator could not tell from real ones. The check is skipped
    for ``*-changelog`` topics only; the input feed, which carries the real streams,
    reports its own stalls (``cityvitals_pipeline_*`` metrics and alert rules).
    Idempotent: applied once per process, by :func:`create_app`.
    """
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

    original = AIOKafkaConsumerThread.verify_event_path
    if getattr(original, "skips_changelogs", False):
        return

    def verify_event_path(self: AIOKafkaConsumerThread, now: float, tp: Any) -> None:
        if tp.topic.endswith("-changelog"):
            return None
        return original(self, now, tp)

    verify_event_path.skips_changelogs = True  # type: ignore[attr-defined]
    AIOKafkaConsumerThread.verify_event_path = verify_event_path  # type: ignore[method-assign]


def tune_gc(settings: Settings) -> None:
    """Collect garbage less often than Python's default, for a long-lived worker.

    A batch allocates many short-lived objects, and Python's cycle collector runs
    every 700 of them, each run scanning the young objects and regularly the
    whole heap (tables, models). Start-up objects are frozen out of the scans.
    Reference counting still frees almost everything at once; only cycles wait.
    """
    if settings.gc_young > 0:
        gc.collect()
        gc.freeze()
        gc.set_threshold(settings.gc_young, 20, 10)


def _changelog(settings: Settings, table: str) -> str:
    return changelog_topic(settings.app_id, table)


def _state_table(app: faust.App, settings: Settings, name: str, codec: str) -> Any:
    """A table keyed by raw district code, its values in ``codec``, written outside streams.

    Keys are the district code as bytes (hashed like the input topics' keys, and
    restored as bytes by recovery); values use the table's codec. Faust would derive
    JSON serializers for both, so the changelog topic is built here; the state must be
    on the broker (acks from all replicas) before offsets are committed, and the table
    is partitioned by the district key, being written outside a stream."""
    table = app.Table(
        name,
        default=None,
        partitions=settings.partitions,
        changelog_topic=app.topic(
            _changelog(settings, name),
            key_serializer="raw",
            value_serializer=codec,
            partitions=settings.partitions,
            compacting=True,
            acks=True,
            internal=True,
        ),
        use_partitioner=True,
    )
    cast(Any, table).key_serializer = "raw"
    cast(Any, table).value_serializer = codec
    return table


def create_app(
    settings: Settings | None = None,
    cfg: CityConfig | None = None,
    auth: Authenticator | None = None,
) -> CityApp:
    """Build the worker's Faust app for the given settings, city config and token book
    (default: the roles file of the settings)."""
    settings = settings or Settings()
    cfg = cfg or load_config(settings.config_dir)
    quiet_changelog_stall_checks()
    if settings.embedded_broker:
        from streams.kafka.broker import apply_faust_workarounds

        apply_faust_workarounds()
    app = CityApp(settings.app_id, **faust_settings(settings))
    # Faust's own metrics go to the worker's /metrics (Faust's web server is off)
    app.monitor = sensors.faust_monitor()
    # The city topics themselves are created (and their partition counts checked)
    # before the worker starts: streams.kafka.topics.ensure_topics.
    # degraded writes are counted and logged at once; the notifier's timer audits them
    DETECTION_CODEC.max_bytes = NOTIFY_CODEC.max_bytes = settings.state_max_bytes
    tables = {
        name: _state_table(app, settings, name, codec)
        for name, codec in (
            (TABLE_NAME, "district_windows"),
            (DETECTION_TABLE, "district_detection"),
            (NOTIFY_TABLE, "district_notify"),
        )
    }
    feed, processor, notifier = _services(app, settings, cfg, tables)
    parts = _Parts(app, settings, feed, processor, notifier, tables)
    readiness = _inputs_follow_rebalances(parts)
    _agents_and_timers(parts)
    config_files = [cfg.directory / n for n in ("city.yaml", "indicators.yaml", "thresholds.yaml")]
    config_files += [cfg.directory / "silences.yaml", cfg.directory / "appeals.yaml"]
    config_files += [settings.roles_path]
    config_files += [f for f in (cfg.directory / "anomaly.yaml",) if f.exists()]
    app.api_service = ApiService(
        settings,
        cfg,
        auth if auth is not None else load_roles(settings.roles_path, cfg),
        ready=readiness,
        config_files=config_files,
        links=notifier.planner.tree.responder_links,
        categories=feedback_categories(load_appeals(cfg)),
    )
    return app


@dataclass(frozen=True)
class _Parts:
    """What the worker's rebalance handlers, agents and timers are wired to."""

    app: CityApp
    settings: Settings
    feed: InputFeed
    processor: VitalsProcessor
    notifier: NotifyService
    tables: dict[str, Any]
    # set once the inputs are first taken: the feed's producer exists, the state is checked
    inputs_taken: asyncio.Event = field(default_factory=asyncio.Event)


def opinion_categories(appeals: AppealsConfig) -> dict[str, OpinionCategory]:
    """The appeal categories' owners and names, as public-opinion warnings route them."""
    return {
        code: OpinionCategory(c.department, c.co_departments, c.name_zh, c.name_en)
        for code, c in appeals.categories.items()
    }


def feedback_categories(appeals: AppealsConfig) -> tuple[CategoryInfo, ...]:
    """The appeal categories as departments' feedback names them."""
    return tuple(
        CategoryInfo(code, c.name_zh, c.name_en, c.department, tuple(c.co_departments))
        for code, c in appeals.categories.items()
    )


def _services(
    app: CityApp, settings: Settings, cfg: CityConfig, tables: dict[str, Any]
) -> tuple[InputFeed, VitalsProcessor, NotifyService]:
    """The input feed, the batch handler it calls, and the notification service."""
    partitions = settings.partitions
    rules = load_thresholds(cfg)
    appeals = load_appeals(cfg)
    detection = DetectionContext(
        cfg,
        rules,
        silences=load_silences(cfg, rules),
        max_notes=settings.max_notes_per_alert,
        opinion_categories=opinion_categories(appeals),
    )
    routes = load_routes(settings.routes_path, cfg, rules=rules)
    # `cityvitals worker` has said which and exited 2 before; this guards other callers
    refuse_unsafe([*settings.secret_problems(), *routes.secret_problems])

    async def crash(exc: BaseException) -> None:
        await app.crash(exc)

    feed = InputFeed(
        bootstrap=settings.bootstrap,
        group_id=f"{settings.app_id}-input",
        topics=EVENT_TOPICS.values(),
        handler=lambda records: processor.process_batch(records),
        flush_state=lambda: processor.flush_state(),
        client_options=settings.kafka_client_options(),
        batch_max=settings.batch_max,
        batch_within_s=settings.batch_within_s,
        on_crash=crash,
        session_timeout_s=settings.session_timeout_s,
    )
    processor = VitalsProcessor(
        tables[TABLE_NAME],
        cfg,
        settings,
        outputs=feed.outputs,
        progress=feed.progress,
        detection_table=tables[DETECTION_TABLE],
        detection=detection,
        changelogs=(_changelog(settings, TABLE_NAME), _changelog(settings, DETECTION_TABLE)),
        clock=feed.hearing.now,
        caught_up=feed.caught_up,
        fenced=feed.fenced,
        appeals=appeals,
    )
    app.cityvitals = processor  # type: ignore[attr-defined]
    app.input_feed = feed
    notifier = app.notifier = NotifyService(
        routes,
        cfg,
        app_id=settings.app_id,
        bootstrap=settings.bootstrap,
        client_options=settings.kafka_client_options(),
        table=tables[NOTIFY_TABLE],
        flush_state=app.producer.flush,
        changelog=_changelog(settings, NOTIFY_TABLE),
        encode_state=NOTIFY_CODEC.dumps,
        on_crash=crash,
        partition_of=lambda district: key_partition(district.encode(), partitions),
        signer=ActionSigner(*settings.action_keys()),
        policy=DeliveryPolicy(
            timeout_s=settings.notify_timeout_s,
            max_attempts=settings.notify_max_attempts,
            max_backoff_s=settings.notify_max_backoff_s,
            give_up_after_s=settings.notify_give_up_after_s,
        ),
    )

    return feed, processor, notifier


def _inputs_follow_rebalances(parts: _Parts) -> Readiness:
    """Hand the inputs over at each rebalance: revoked at its start, taken once the
    table partitions this worker owns are recovered; the worker's readiness follows."""
    app, feed, processor, notifier = parts.app, parts.feed, parts.processor, parts.notifier
    tables, settings = parts.tables, parts.settings
    changelog_name = _changelog(settings, TABLE_NAME)

    def owned_partitions() -> set[int]:
        """The table partitions Faust made this worker active for."""
        return {
            tp.partition for tp in app.assignor.assigned_actives() if tp.topic == changelog_name
        }

    readiness = Readiness(
        rebalancing=lambda: bool(app.rebalancing),
        recovered=lambda: cast(Any, app.tables).recovery.completed.is_set(),
    )
    # the start of the feeds and each rebalance's revocation and assignment, one at a time
    inputs_lock = asyncio.Lock()

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]  # mode types want positional-only sender
    async def release_inputs(sender: Any, revoked: Any, **kwargs: Any) -> None:
        readiness.revoked()
        async with inputs_lock:
            if feed.running:
                await feed.revoke()
            if notifier.plan_feed.running:
                await notifier.revoke()
            # no batch runs any more: the districts are their next owner's to report
            processor.reports.release()
            processor.writer.forget_unwritten()
            metrics.partitions_owned.set(0)

    app.readiness = readiness

    async def take(epoch: int) -> None:
        stop_if_unrestorable(*tables.values())
        if not readiness.current():
            # a newer rebalance began: its recovery restores these tables now, and its
            # own completion takes the inputs
            log.info("a superseded rebalance completed: inputs wait for the latest one")
            return
        owned = owned_partitions()
        processor.assigned()
        await feed.assign(owned)
        await notifier.assign(owned)
        processor.reports.take(owned)
        metrics.partitions_owned.set(len(owned))
        readiness.settled(epoch)
        parts.inputs_taken.set()

    @app.on_rebalance_complete.connect  # type: ignore[arg-type]
    async def take_inputs(sender: Any, *args: Any, **kwargs: Any) -> None:
        # sent once the table partitions this worker owns are recovered
        epoch = readiness.epoch
        async with inputs_lock:
            if feed.running:  # else start_feed takes them
                await take(epoch)

    @app.task
    async def start_feed() -> None:
        # tasks start after the first recovery; later rebalances use the signals
        epoch = readiness.epoch
        async with inputs_lock:
            await feed.start()
            await notifier.start()
            await take(epoch)

    return readiness


def _agents_and_timers(parts: _Parts) -> None:
    """Operators' actions, and the one-second timers: due notifications, idle windows,
    table sizes."""
    app, feed, processor, notifier = parts.app, parts.feed, parts.processor, parts.notifier
    tables, settings = parts.tables, parts.settings
    actions = app.topic(
        ACTIONS_TOPIC, key_serializer="raw", value_serializer="raw", partitions=settings.partitions
    )

    @app.agent(actions, name="alert-actions")
    async def apply_actions(stream: Any) -> None:
        # operator actions are few: Faust's per-event stream suits them. The agent may
        # start before the inputs are first taken (an action already on the topic):
        # it waits for them, as the action's outputs go through the feed's producer
        async for event in stream.events():
            await parts.inputs_taken.wait()
            async with feed.lock:
                await processor.raiser.apply_action(event.message)

    @app.timer(interval=1.0)
    async def send_due_notifications() -> None:
        await notifier.tick()

    @app.timer(interval=1.0)
    async def close_idle_windows() -> None:
        if feed.partitions:
            async with feed.lock:
                await processor.close_idle(feed.partitions)

    table_keys = [(metrics.table_keys.labels(name), t) for name, t in tables.items()]

    @app.timer(interval=1.0)
    async def report_table_sizes() -> None:
        # the partitions the inputs read: none while a rebalance is under way
        for gauge, t in table_keys:
            gauge.set(processor.reports.owned_keys(t, feed.partitions))
