"""The Faust application: topics, the district table, the ingest/vitals handler, web pages.

Faust runs the consumer group and the district table (changelog, recovery,
standby replicas, moving partitions between workers). The five input topics are
read in bulk, partition by partition, by :class:`streams.source.InputFeed`, which
reads exactly the partitions whose table state this worker owns; Faust's
per-event stream would cost several times the work done per event.

Per batch the handler validates and normalises every event
(:mod:`streams.ingest`), publishes readings and dead letters, counts each
reading in its district's event-time window (:mod:`streams.windows`), publishes
the vital signs of every window that closed (:mod:`streams.vitals`), waits until
all of that is acknowledged by the broker, and only then writes each touched
district to the table once. The table value records the highest offset applied
per input partition, so after a crash the events Kafka redelivers are recognised
and not counted twice.

Ingest and windowing run in one handler on purpose: a second pass over
``city.readings`` would cost a full consume per event. ``city.readings`` is still
published for every valid event, for detection and for anyone else who needs
single readings.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any, cast

import faust
import orjson
from faust.serializers import codecs
from pydantic import ValidationError

from streams import metrics
from streams.auth import Authenticator, load_roles
from streams.config import CityConfig, load_config
from streams.deid import Deidentifier
from streams.delivery import DeliveryPolicy
from streams.detection import DetectionContext, DistrictDetection
from streams.ingest import Ingestor, dead_letter
from streams.notify import DistrictNotify, NotifyService
from streams.routing import load_routes
from streams.rules import load_silences, load_thresholds
from streams.schemas import (
    ACTIONS_TOPIC,
    ALERTS_TOPIC,
    DEADLETTER_TOPIC,
    EVENT_TOPICS,
    READINGS_TOPIC,
    VITALS_TOPIC,
    AlertAction,
    AlertActionType,
    AlertEvent,
    AlertKind,
    AlertStatus,
    DeadLetter,
    DeadLetterReason,
    Grade,
    Origin,
    Workflow,
)
from streams.serve import ApiService
from streams.settings import Settings
from streams.source import InputFeed, Outputs, Record, key_partition
from streams.vitals import vitals_json
from streams.windows import STREET_SEP, ClosedWindow, DistrictWindows

TABLE_NAME = "district-windows"
DETECTION_TABLE = "district-detection"
NOTIFY_TABLE = "notify-groups"
log = logging.getLogger(__name__)
# each codec serves one table: the size of every value it writes, by table
_WINDOWS_BYTES = metrics.table_value_bytes.labels(TABLE_NAME)
_DETECTION_BYTES = metrics.table_value_bytes.labels(DETECTION_TABLE)
_NOTIFY_BYTES = metrics.table_value_bytes.labels(NOTIFY_TABLE)
# per-district gauges: reported only by the worker that owns the district
DISTRICT_GAUGES = (
    metrics.vital_index,
    metrics.composite_index,
    metrics.watermark_lag,
    metrics.open_alerts,
)


class WindowsCodec(codecs.Codec):
    """Table values as compact JSON (the changelog is read on every recovery)."""

    def _dumps(self, obj: Any) -> bytes:
        data = orjson.dumps(obj.to_dict())
        _WINDOWS_BYTES.observe(len(data))
        return data

    def _loads(self, s: bytes) -> Any:
        return DistrictWindows.from_dict(orjson.loads(s))


codecs.register("district_windows", WindowsCodec())


class DetectionCodec(codecs.Codec):
    """A district's detectors and alerts, pickled (our own changelog, written by this code)."""

    def _dumps(self, obj: Any) -> bytes:
        data = cast(DistrictDetection, obj).dumps()
        _DETECTION_BYTES.observe(len(data))
        return data

    def _loads(self, s: bytes) -> Any:
        return DistrictDetection.loads(s)


codecs.register("district_detection", DetectionCodec())


class NotifyCodec(codecs.Codec):
    """A district's notification groups and escalations, pickled (our own changelog)."""

    def _dumps(self, obj: Any) -> bytes:
        data = cast(DistrictNotify, obj).dumps()
        _NOTIFY_BYTES.observe(len(data))
        return data

    def _loads(self, s: bytes) -> Any:
        return DistrictNotify.loads(s)


codecs.register("district_notify", NotifyCodec())


_ACKNOWLEDGING = (AlertActionType.ACKNOWLEDGE.value, AlertActionType.DISPATCH.value)


def count_alert_event(event: AlertEvent) -> None:
    """Metrics of one published alert event, department performance included."""
    grade = event.grade.roman
    metrics.alert_events.labels(event.status.value, grade, event.kind.value, event.department).inc()
    if event.status is AlertStatus.UPDATED and event.actions:
        *earlier, last = event.actions
        if last.action in _ACKNOWLEDGING and not any(a.action in _ACKNOWLEDGING for a in earlier):
            metrics.time_to_acknowledge.labels(event.department, grade).observe(
                max(0.0, (last.at - event.first_seen).total_seconds())
            )
    if event.status is AlertStatus.FIRING:
        metrics.event_to_alert.labels(event.kind.value).observe(
            max(0.0, time.time() - event.event_time.timestamp())
        )
    if event.status is AlertStatus.RESOLVED:
        outcome = {Workflow.RESOLVED: "resolved", Workflow.FALSE_POSITIVE: "false_positive"}.get(
            event.workflow, "cleared"
        )
        metrics.alerts_closed.labels(event.department, grade, outcome).inc()
        metrics.time_to_resolve.labels(event.department, grade).observe(
            max(0.0, (event.last_update - event.first_seen).total_seconds())
        )


def _start_alert_series(cfg: CityConfig) -> None:
    """Create every alert series at 0, so that rate() and increase() see its first event."""
    departments = list(cfg.catalogue.departments)
    for grade in Grade:
        for department in departments:
            for kind in AlertKind:
                for status in AlertStatus:
                    metrics.alert_events.labels(status.value, grade.roman, kind.value, department)
            for outcome in ("resolved", "false_positive", "cleared"):
                metrics.alerts_closed.labels(department, grade.roman, outcome)
            metrics.time_to_acknowledge.labels(department, grade.roman)
            metrics.time_to_resolve.labels(department, grade.roman)


class VitalsProcessor:
    """The per-batch work of the agent, kept apart from Faust's plumbing."""

    def __init__(
        self,
        table: Any,
        cfg: CityConfig,
        settings: Settings,
        *,
        outputs: Callable[[], Outputs],
        progress: Callable[[str, int], tuple[int | None, int | None]],
        detection_table: Any,
        detection: DetectionContext,
        flush_state: Callable[[], Awaitable[None]],
    ) -> None:
        self.table = table
        self._flush_state = flush_state
        self.detection_table = detection_table
        self.detection = detection
        self._street_keys = {
            (ind, street): f"{ind}{STREET_SEP}{street}"
            for ind in detection.street_indicators
            for street in cfg.city.street_district
        }
        self._outputs = outputs
        self._progress = progress
        self.cfg = cfg
        self.settings = settings
        self.ingestor = Ingestor(
            cfg,
            Deidentifier(settings.deid_key.get_secret_value().encode()),
            max_future_s=settings.max_future_s,
        )
        # when this worker began consuming its current partitions; set by the first
        # batch after a start or a rebalance (joining the group takes seconds)
        self.started = time.time()
        self.awaiting_first_batch = True
        # wall time of each district's (and each district source's) last event:
        # in memory only, so that a restarted worker treats every source as active
        # and waits a full idle period before closing anything on silence
        self.last_activity: dict[str, float] = {}
        self._tp_names: dict[tuple[str, int], str] = {}  # "topic:partition", the applied-offset key
        self.source_seen: dict[tuple[str, str], float] = {}
        self._held_logged: dict[str, float] = {}
        self._partition_of = {
            d: key_partition(d.encode(), settings.partitions) for d in cfg.districts
        }
        self._key_partition = {d.encode(): p for d, p in self._partition_of.items()}
        # the district gauges' last values while a rebalance is under way
        self._released: list[tuple[Any, dict[str, str], float]] = []
        self._events_in = {t: metrics.events_in.labels(t) for t in EVENT_TOPICS.values()}
        self._readings = {d: metrics.readings_out.labels(d) for d in cfg.catalogue.domains}
        self._dead = {r: metrics.deadletters.labels(r.value) for r in DeadLetterReason}
        _start_alert_series(cfg)
        self._districts = set(cfg.districts)

    def _state(self, district: str, touched: dict[str, DistrictWindows]) -> DistrictWindows:
        state = touched.get(district)
        if state is None:
            state = self.table.get(district.encode())
            if state is None:
                state = DistrictWindows(
                    district,
                    window_s=self.settings.window_s,
                    rolling_windows=self.settings.rolling_windows,
                )
            touched[district] = state
        return state

    async def process_batch(self, events: Sequence[Record]) -> None:
        """Handle one batch of input records (the caller holds the state lock)."""
        t0 = time.perf_counter()
        now_ts = time.time()
        if self.awaiting_first_batch:
            self.started, self.awaiting_first_batch = now_ts, False
        now = datetime.fromtimestamp(now_ts, UTC)
        touched: dict[str, DistrictWindows] = {}
        detected: dict[str, DistrictDetection] = {}
        out = self._outputs()
        dead: list[DeadLetter] = []
        # counted per batch, not per event: a metric increment takes a lock
        events_in: Counter[str] = Counter()
        readings: Counter[str] = Counter()
        duplicates = 0
        tp_names = self._tp_names
        for msg in events:
            # a tombstone (null value) is no event: it fails as bad JSON, keeping its origin
            key, value = msg.key, msg.value if msg.value is not None else b""
            tp = tp_names.get((msg.topic, msg.partition))
            if tp is None:
                tp = tp_names[(msg.topic, msg.partition)] = f"{msg.topic}:{msg.partition}"
            events_in[msg.topic] += 1
            district = key.decode("utf-8", "replace") if key else None
            state = self._state(district, touched) if district in self._districts else None
            if state is not None and state.is_applied(tp, msg.offset):
                duplicates += 1
                continue
            result = self.ingestor.accept(msg.topic, msg.partition, msg.offset, key, value, now)
            if isinstance(result, DeadLetter):
                dead.append(result)
            else:
                assert state is not None  # a valid reading's key is a known district
                street_key = (
                    self._street_keys.get((result.indicator, result.street))
                    if result.street is not None
                    else None
                )
                if state.add(
                    result.indicator,
                    result.value,
                    result.event_time.timestamp(),
                    msg.topic,
                    street_key,
                ):
                    out.add(READINGS_TOPIC, key, result.json)
                    readings[result.domain] += 1
                else:
                    origin = Origin(topic=msg.topic, partition=msg.partition, offset=msg.offset)
                    dead.append(
                        dead_letter(
                            origin,
                            key,
                            value,
                            DeadLetterReason.LATE,
                            f"event time {result.event_time.isoformat()} falls in a window that has already "
                            f"closed (allowed lateness {self.settings.allowed_lateness_s:g} s)",
                            now,
                        )
                    )
            if state is not None:
                state.mark_applied(tp, msg.offset)
                self.last_activity[state.district] = now_ts
                self.source_seen[(state.district, msg.topic)] = now_ts
        for topic, n in events_in.items():
            self._events_in[topic].inc(n)
        for domain, n in readings.items():
            self._readings[domain].inc(n)
        if duplicates:
            metrics.duplicates_skipped.inc(duplicates)
        for d in dead:
            self._dead[d.reason].inc()
            out.add(DEADLETTER_TOPIC, d.key, d.to_json())
        for district, state in touched.items():
            closed = state.close_due(
                self.settings.allowed_lateness_s, self._active_sources(district, now_ts)
            )
            self._publish(out, closed, now, "watermark", detected)
        await self._commit(touched, out, detected)
        metrics.batch_size.observe(len(events))
        metrics.batch_seconds.observe(time.perf_counter() - t0)

    def _active_sources(self, district: str, now_ts: float) -> set[str]:
        idle = self.settings.idle_close_s
        partition = self._partition_of[district]
        return {
            src
            for src in EVENT_TOPICS.values()
            if now_ts - self.source_seen.get((district, src), self.started) <= idle
            or self._behind(src, partition)
        }

    def _behind(self, topic: str, partition: int) -> bool:
        """Whether this worker has not yet processed everything the partition holds.

        Before the first fetch of a partition its high watermark is unknown: then it
        counts as behind, since its events may be anything but absent.
        """
        position, highwater = self._progress(topic, partition)
        return position is None or highwater is None or position < highwater

    async def close_idle(self, active_partitions: frozenset[int]) -> None:
        """Close the windows of districts silent for ``idle_close_s`` (timer; the
        caller holds the state lock, since a batch awaits its sends midway)."""
        now_ts = time.time()
        now = datetime.fromtimestamp(now_ts, UTC)
        touched: dict[str, DistrictWindows] = {}
        detected: dict[str, DistrictDetection] = {}
        out = self._outputs()
        if self.awaiting_first_batch:
            return
        for district in self._districts:
            if self._partition_of[district] not in active_partitions:
                continue
            state = self.table.get(district.encode())
            if state is None or not state.open:
                continue
            idle_since = self.last_activity.get(district, self.started)
            if now_ts - idle_since < self.settings.idle_close_s:
                continue
            # silent because its events wait behind another topic's is not idle
            partition = self._partition_of[district]
            behind = [src for src in EVENT_TOPICS.values() if self._behind(src, partition)]
            if behind:
                if now_ts - self._held_logged.get(district, 0.0) > 30:
                    self._held_logged[district] = now_ts
                    log.info(
                        "district %s kept open: partition %d of %s not fully processed (%s)",
                        district,
                        partition,
                        behind,
                        "; ".join(
                            "{} at {} of {}".format(t, *self._progress(t, partition))
                            for t in behind
                        ),
                    )
                continue
            touched[district] = state
            self._publish(out, state.close_all(), now, "idle", detected)
        if touched:
            await self._commit(touched, out, detected)

    def _publish(
        self,
        out: Outputs,
        closed: list[ClosedWindow],
        now: datetime,
        trigger: str,
        detected: dict[str, DistrictDetection],
    ) -> None:
        for window in closed:
            self._detect(out, window, detected)
            document, domains, composite = vitals_json(
                window, self.cfg, self.settings.rolling_windows, now
            )
            out.add(VITALS_TOPIC, window.district.encode(), document)
            metrics.windows_closed.labels(trigger).inc()
            for domain, value in domains.items():
                if value is not None:
                    metrics.vital_index.labels(window.district, domain).set(value)
            if composite is not None:
                metrics.composite_index.labels(window.district).set(composite)
            metrics.watermark_lag.labels(window.district).set(now.timestamp() - window.end)

    def _detect(
        self, out: Outputs, window: ClosedWindow, detected: dict[str, DistrictDetection]
    ) -> None:
        district = window.district
        state = detected.get(district)
        if state is None:
            state = self.detection_table.get(district.encode()) or DistrictDetection(district)
            detected[district] = state
        events = state.on_window(window, self.detection)
        key = district.encode()
        for event in events:
            out.add(ALERTS_TOPIC, key, event.to_json())
            count_alert_event(event)
        if events:
            self._count_open(state)

    async def apply_action(self, msg: Record) -> None:
        """Apply one operator action from ``city.alert-actions`` (caller holds the state lock).

        An invalid action goes to the dead-letter topic; a repeated one (same
        action id) changes nothing.
        """
        now = datetime.now(UTC)
        key, value = msg.key, msg.value if msg.value is not None else b""
        origin = Origin(topic=msg.topic, partition=msg.partition, offset=msg.offset)
        out = self._outputs()
        try:
            action = AlertAction.model_validate_json(value)
        except ValidationError as exc:
            err = exc.errors(include_url=False)[0]
            where = ".".join(str(p) for p in err["loc"]) or "(document)"
            out.add(
                DEADLETTER_TOPIC,
                key,
                dead_letter(
                    origin, key, value, DeadLetterReason.SCHEMA, f"{where}: {err['msg']}", now
                ).to_json(),
            )
            self._dead[DeadLetterReason.SCHEMA].inc()
            await out.send()
            return
        shown = None if key is None else key.decode("utf-8", "replace")
        problem = None
        if action.district not in self._districts:
            problem = (
                DeadLetterReason.UNKNOWN_DISTRICT,
                f"district {action.district!r} is not in the city",
            )
        elif shown != action.district:
            problem = (
                DeadLetterReason.KEY_MISMATCH,
                f"message key {shown!r} is not the action's district {action.district!r}",
            )
        if problem is not None:
            out.add(DEADLETTER_TOPIC, key, dead_letter(origin, key, value, *problem, now).to_json())
            self._dead[problem[0]].inc()
            await out.send()
            return
        state = self.detection_table.get(action.district.encode()) or DistrictDetection(
            action.district
        )
        events = state.act(action, self.detection)
        for event in events:
            out.add(ALERTS_TOPIC, action.district.encode(), event.to_json())
            count_alert_event(event)
        metrics.actions_applied.labels(action.action.value).inc()
        await out.send()
        if events:
            self._count_open(state)
            self.detection_table[action.district.encode()] = state

    def _count_open(self, state: DistrictDetection) -> None:
        open_by_grade = Counter(a.grade.roman for a in state.book.open.values())
        for grade in Grade:
            metrics.open_alerts.labels(state.district, grade.roman).set(open_by_grade[grade.roman])

    def release_districts(self) -> None:
        """Stop reporting every district (call once the partitions are revoked).

        Between the revocation and the end of the rebalance this worker owns no
        district, and whichever worker gets one reports it from then on, so no
        district is reported by two workers. The last values are kept, for the
        districts the worker turns out to keep (:meth:`take_districts`).
        """
        self._released = [
            (gauge, sample.labels, sample.value)
            for gauge in DISTRICT_GAUGES
            for family in gauge.collect()
            for sample in family.samples
        ]
        for gauge in DISTRICT_GAUGES:
            gauge.clear()

    def take_districts(self, partitions: frozenset[int] | set[int]) -> None:
        """Report the districts of ``partitions`` (call once their tables are recovered).

        Districts the worker kept get back the values it last set; the open alerts of
        every owned district are counted from its recovered detection state, so a
        district that moved here reports its open alerts before its next alert event.
        """
        for gauge, labels, value in self._released:
            if self._partition_of.get(labels["district"]) in partitions:
                gauge.labels(**labels).set(value)
        self._released = []
        for district, partition in self._partition_of.items():
            if partition in partitions:
                state = self.detection_table.get(district.encode())
                if state is not None:
                    self._count_open(state)

    def owned_keys(self, table: Any, partitions: frozenset[int] | set[int]) -> int:
        """How many keys of a district-keyed table lie on ``partitions``.

        The in-memory store can also hold standby replicas and keys of partitions that
        moved away: those are not counted.
        """
        partition_of = self._key_partition
        count = 0
        for key in table:
            partition = partition_of.get(key)
            if partition is None:
                partition = key_partition(key, self.settings.partitions)
            if partition in partitions:
                count += 1
        return count

    async def _commit(
        self,
        touched: dict[str, DistrictWindows],
        out: Outputs,
        detected: dict[str, DistrictDetection] | None = None,
    ) -> None:
        # Outputs first, state second: if we crash in between, the events are
        # redelivered and their outputs repeated (at-least-once), never lost;
        # once the state is written they are recognised as applied.
        await out.send()
        if detected:
            # Detection before windows, made durable in between: a crash after it
            # re-closes the windows, and detection skips the minutes it has seen
            # (a crash before it repeats the same alert events, ids and sequences).
            for district, det in detected.items():
                self.detection_table[district.encode()] = det
            await self._flush_state()
        for district, state in touched.items():
            self.table[district.encode()] = state


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

    def revoked(self) -> None:
        """A rebalance started: whatever the inputs read now is about to change."""
        self.epoch += 1

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

    async def on_start(self) -> None:
        await super().on_start()
        if self.api_service is not None:
            await self.api_service.start()

    async def on_stop(self) -> None:
        if self.input_feed is not None:
            await self.input_feed.stop()
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
        "topic_partitions": settings.partitions,
        "topic_replication_factor": settings.replication_factor,
        "store": "memory://",
        "datadir": str(settings.datadir),
        "web_enabled": False,  # the worker's web port is the API's (streams.serve)
        "producer_linger_ms": 5,
        "producer_max_batch_size": 256 * 1024,
        "broker_max_poll_records": max(500, settings.batch_max),
        "stream_buffer_maxsize": max(4096, 2 * settings.batch_max),
        **extra,
    }


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


def _state_table(app: faust.App, settings: Settings, name: str, codec: str) -> Any:
    """A table keyed by raw district code, its values in ``codec``, written outside streams."""
    table = app.Table(
        name,
        default=None,
        partitions=settings.partitions,
        changelog_topic=app.topic(
            f"{settings.app_id}-{name}-changelog",
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
    if settings.embedded_broker:
        from streams.embedded_broker import apply_faust_workarounds

        apply_faust_workarounds()
    app = CityApp(settings.app_id, **faust_settings(settings))
    # Faust's own metrics go to the worker's /metrics (Faust's web server is off)
    app.monitor = metrics.faust_monitor()
    partitions = settings.partitions
    changelog_name = f"{settings.app_id}-{TABLE_NAME}-changelog"
    # Keys are the district code as bytes (hashed like the input topics' keys, and
    # restored as bytes by recovery); values use the compact codec above. Faust
    # would derive JSON serializers for both, so the changelog topic is built here.
    # The city topics themselves are created (and their partition counts checked)
    # before the worker starts: streams.topics.ensure_topics.
    changelog = app.topic(
        changelog_name,
        key_serializer="raw",
        value_serializer="district_windows",
        partitions=partitions,
        compacting=True,
        acks=True,  # the state must be on the broker before offsets are committed
        internal=True,
    )
    table = app.Table(
        TABLE_NAME,
        default=None,
        partitions=partitions,
        changelog_topic=changelog,
        use_partitioner=True,  # written outside a stream: partition by the district key
    )
    cast(Any, table).key_serializer = "raw"
    cast(Any, table).value_serializer = "district_windows"
    detection_table = _state_table(app, settings, DETECTION_TABLE, "district_detection")
    rules = load_thresholds(cfg)
    detection = DetectionContext(cfg, rules, silences=load_silences(cfg, rules))
    notify_table = _state_table(app, settings, NOTIFY_TABLE, "district_notify")

    async def crash(exc: BaseException) -> None:
        await app.crash(exc)

    feed = InputFeed(
        bootstrap=settings.bootstrap,
        group_id=f"{settings.app_id}-input",
        topics=EVENT_TOPICS.values(),
        handler=lambda records: processor.process_batch(records),
        flush_state=app.producer.flush,
        client_options=settings.kafka_client_options(),
        batch_max=settings.batch_max,
        batch_within_s=settings.batch_within_s,
        on_crash=crash,
    )
    processor = VitalsProcessor(
        table,
        cfg,
        settings,
        outputs=feed.outputs,
        progress=feed.progress,
        detection_table=detection_table,
        detection=detection,
        flush_state=app.producer.flush,
    )
    app.cityvitals = processor  # type: ignore[attr-defined]
    app.input_feed = feed
    notifier = app.notifier = NotifyService(
        load_routes(settings.routes_path, cfg, rules=rules),
        cfg,
        app_id=settings.app_id,
        bootstrap=settings.bootstrap,
        client_options=settings.kafka_client_options(),
        table=notify_table,
        flush_state=app.producer.flush,
        on_crash=crash,
        partition_of=lambda district: key_partition(district.encode(), partitions),
        policy=DeliveryPolicy(
            timeout_s=settings.notify_timeout_s,
            max_attempts=settings.notify_max_attempts,
            max_backoff_s=settings.notify_max_backoff_s,
            give_up_after_s=settings.notify_give_up_after_s,
        ),
    )

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
            processor.release_districts()
            metrics.partitions_owned.set(0)

    async def take(epoch: int) -> None:
        owned = owned_partitions()
        processor.awaiting_first_batch = True
        await feed.assign(owned)
        await notifier.assign(owned)
        processor.take_districts(owned)
        metrics.partitions_owned.set(len(owned))
        readiness.settled(epoch)

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

    actions = app.topic(
        ACTIONS_TOPIC, key_serializer="raw", value_serializer="raw", partitions=partitions
    )

    @app.agent(actions, name="alert-actions")
    async def apply_actions(stream: Any) -> None:
        # operator actions are few: Faust's per-event stream suits them
        async for event in stream.events():
            async with feed.lock:
                await processor.apply_action(event.message)

    @app.timer(interval=1.0)
    async def send_due_notifications() -> None:
        await notifier.tick()

    @app.timer(interval=1.0)
    async def close_idle_windows() -> None:
        if feed.partitions:
            async with feed.lock:
                await processor.close_idle(feed.partitions)

    table_keys = [
        (metrics.table_keys.labels(name), t)
        for name, t in (
            (TABLE_NAME, table),
            (DETECTION_TABLE, detection_table),
            (NOTIFY_TABLE, notify_table),
        )
    ]

    @app.timer(interval=1.0)
    async def report_table_sizes() -> None:
        # the partitions the inputs read: none while a rebalance is under way
        for gauge, t in table_keys:
            gauge.set(processor.owned_keys(t, feed.partitions))

    config_files = [cfg.directory / n for n in ("city.yaml", "indicators.yaml", "thresholds.yaml")]
    config_files += [cfg.directory / "silences.yaml", settings.roles_path]
    app.api_service = ApiService(
        settings,
        cfg,
        auth if auth is not None else load_roles(settings.roles_path, cfg),
        ready=readiness,
        config_files=config_files,
        links=notifier.planner.tree.responder_links,
    )
    return app
