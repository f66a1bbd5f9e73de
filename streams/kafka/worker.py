"""The Faust application: topics, the district table, the ingest/vitals handler, web pages.

Faust runs the consumer group and the district table (changelog, recovery,
standby replicas, moving partitions between workers). The five input topics are
read in bulk, partition by partition, by :class:`streams.kafka.feed.InputFeed`, which
reads exactly the partitions whose table state this worker owns; Faust's
per-event stream would cost several times the work done per event.

Per batch the handler validates and normalises every event
(:mod:`streams.ingest.ingestor`), publishes readings and dead letters, counts each
reading in its district's event-time window (:mod:`streams.state.windows`), publishes
the vital signs of every window that closed (:mod:`streams.state.vitals`), waits until
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
import os
import sys
import time
import traceback
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar, cast

import faust
import orjson
from faust.serializers import codecs
from pydantic import ValidationError

from streams.alerting.detection import DetectionContext, DistrictDetection
from streams.alerting.early import Partials, partials
from streams.alerting.lifecycle import DEGRADED, STATE_MAX_BYTES
from streams.alerting.rules import load_silences, load_thresholds
from streams.api.auth import Authenticator, load_roles
from streams.core import metrics
from streams.core.config import CityConfig, load_config
from streams.core.logs import logging_config
from streams.core.messages import (
    ACTIONS_TOPIC,
    ALERTS_TOPIC,
    AUDIT_TOPIC,
    DEADLETTER_TOPIC,
    EVENT_TOPICS,
    READINGS_TOPIC,
    VITALS_TOPIC,
    AlertAction,
    AlertActionType,
    AlertEvent,
    AlertKind,
    AlertStatus,
    AuditRecord,
    DeadLetter,
    DeadLetterReason,
    DeadLetterStage,
    Grade,
    Origin,
    Workflow,
)
from streams.core.settings import Settings
from streams.core.state import StateError
from streams.ingest.deid import Deidentifier
from streams.ingest.ingestor import Accepted, Ingestor, _failure, quoted
from streams.ingest.sealing import Sealer, SealError
from streams.kafka import sensors
from streams.kafka.feed import Fenced, InputFeed, Outputs, Record, key_partition, transient
from streams.kafka.notifier import NotifyService
from streams.kafka.serve import ApiService
from streams.notify.delivery import DeliveryPolicy
from streams.notify.planner import DistrictNotify
from streams.notify.routing import load_routes
from streams.state.vitals import vitals_json
from streams.state.windows import STREET_SEP, ClosedWindow, DistrictWindows

TABLE_NAME = "district-windows"
DETECTION_TABLE = "district-detection"
NOTIFY_TABLE = "notify-groups"
log = logging.getLogger(__name__)
# per-district gauges: reported only by the worker that owns the district
DISTRICT_GAUGES = (
    metrics.vital_index,
    metrics.composite_index,
    metrics.watermark_lag,
    metrics.open_alerts,
)


class MemoryTable(dict[bytes, Any]):
    """A Faust table's face for :class:`VitalsProcessor` (item access and its store,
    ``data``), held in memory: to run the handler without Kafka (fuzzing, benches)."""

    @property
    def data(self) -> MemoryTable:
        return self


class DurableValues:
    """The bytes each district's table value was last encoded as or restored from.

    A codec sees every value it encodes at the end of a batch or restores; keeping
    its bytes lets a batch that fails midway put back exactly what the batches before
    it left (the changelog gets those bytes by the next offset commit), without
    copying state on the hot path.
    """

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}

    def keep(self, district: str, data: bytes) -> None:
        self.data[district] = data


WINDOWS_DURABLE = DurableValues()
DETECTION_DURABLE = DurableValues()


@dataclass(slots=True)
class _HeldRecord:
    """A held record, read back from the state (the shape of an input record)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


# dead letters of a batch, with the key each is published under
Dead = list[tuple[bytes | None, DeadLetter]]


@dataclass(slots=True)
class _Batch:
    """What one batch (or one idle close) produces, besides the state it changes."""

    out: Outputs
    now: datetime
    dead: Dead
    readings: Counter[str]
    # counted readings early rules watch: (district, reading, "topic:partition:offset",
    # the open windows' running totals as it was counted, for count, sum and rate rules)
    early: list[tuple[str, Accepted, str, Partials | None]] = field(default_factory=list)


T = TypeVar("T")


@dataclass(frozen=True)
class Unrestorable:
    """A changelog value this release cannot restore, held in its key's place until recovery
    ends: a later value of the key (a document written by ``cityvitals migrate-state``
    after the pickle it converts) replaces it; if none does, :func:`stop_if_unrestorable`
    stops the worker before it handles anything."""

    table: str
    reason: str


def restored(table: str, decode: Callable[[bytes], T], data: bytes) -> T | Unrestorable:
    """A table value read back from its changelog, or what says why it cannot be.

    Faust's recovery would log a decoding error as a warning and then never end, so the
    worker would never be ready; the error is kept as the key's value instead, and
    judged once recovery has read every record (:func:`stop_if_unrestorable`).
    """
    try:
        return decode(data)
    except StateError as exc:
        return Unrestorable(table, str(exc))


def stop_if_unrestorable(*tables: Any) -> None:
    """Stop the worker (exit status 2) if a recovered table holds a value it cannot restore.

    Called when a rebalance's recovery has ended and before the worker takes its inputs:
    nothing has been processed or produced for these partitions yet.
    """
    for table in tables:
        for key, value in list(table.data.items()):
            if isinstance(value, Unrestorable):
                district = key.decode("utf-8", "replace") if isinstance(key, bytes) else key
                message = (
                    f"cannot restore table {value.table} from its changelog "
                    f"(district {district}): {value.reason}"
                )
                log.critical(message)
                print(f"cityvitals worker: {message}", file=sys.stderr, flush=True)
                logging.shutdown()
                os._exit(2)


def _windows_from_json(data: bytes) -> DistrictWindows:
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise StateError(f"table {TABLE_NAME}: the value is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise StateError(f"table {TABLE_NAME}: the value is not a JSON object")
    return DistrictWindows.from_dict(doc)


class StateTableCodec(codecs.Codec):
    """One state table's values on its changelog, read back with :func:`restored`.

    ``encode`` gives the value's bytes and what was dropped to keep it within
    ``max_bytes`` (reported as degraded, :class:`~streams.alerting.lifecycle.DegradeLog`):
    a changelog record over the broker's limit would fail the write and stop the worker.
    ``durable`` keeps the bytes of each district's last value written or restored, for a
    failed batch to put back (:class:`DurableValues`).
    """

    max_bytes = STATE_MAX_BYTES  # create_app sets CITYVITALS_STATE_MAX_BYTES

    def __init__(
        self,
        children: tuple[codecs.CodecT, ...] | None = None,
        *,
        table: str,
        encode: Callable[[Any, int], tuple[bytes, list[str]]],
        decode: Callable[[bytes], Any],
        durable: DurableValues | None = None,
    ) -> None:
        # as keyword arguments, so that Faust's clone() keeps them
        super().__init__(children, table=table, encode=encode, decode=decode, durable=durable)
        self.table, self._encode, self._decode, self._durable = table, encode, decode, durable

    def _dumps(self, obj: Any) -> bytes:
        data, dropped = self._encode(obj, self.max_bytes)
        if dropped:
            DEGRADED.report(self.table, obj.district, dropped)
        metrics.observe_table_value(self.table, len(data))
        if self._durable is not None:
            self._durable.keep(obj.district, data)
        return data

    def _loads(self, s: bytes) -> Any:
        value = restored(self.table, self._decode, s)
        if self._durable is not None and not isinstance(value, Unrestorable):
            self._durable.keep(value.district, s)
        return value


def _windows_json(value: DistrictWindows, max_bytes: int) -> tuple[bytes, list[str]]:
    # compact JSON (read on every recovery); the windows bound their own size
    return orjson.dumps(value.to_dict()), []


WINDOWS_CODEC = StateTableCodec(
    table=TABLE_NAME, encode=_windows_json, decode=_windows_from_json, durable=WINDOWS_DURABLE
)
DETECTION_CODEC = StateTableCodec(
    table=DETECTION_TABLE,
    encode=DistrictDetection.encode,
    decode=DistrictDetection.loads,
    durable=DETECTION_DURABLE,
)
NOTIFY_CODEC = StateTableCodec(
    table=NOTIFY_TABLE, encode=DistrictNotify.encode, decode=DistrictNotify.loads
)
codecs.register("district_windows", WINDOWS_CODEC)
codecs.register("district_detection", DETECTION_CODEC)
codecs.register("district_notify", NOTIFY_CODEC)


_ACKNOWLEDGING = (AlertActionType.ACKNOWLEDGE.value, AlertActionType.DISPATCH.value)


def rule_class_of(event: AlertEvent) -> tuple[str, float]:
    """How an alert was decided (``reading``, ``monotone``, ``window`` or ``model``) and the
    event time its latency counts from: the deciding reading's, else the event's."""
    evidence = event.evidence
    if evidence.decided == "reading" and evidence.reading is not None:
        cls = "reading" if evidence.aggregate == "reading" else "monotone"
        return cls, evidence.reading.time.timestamp()
    cls = "window" if evidence.decided == "window" else "model"
    return cls, event.event_time.timestamp()


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
        rule_class, since = rule_class_of(event)
        metrics.event_to_alert.labels(event.kind.value, rule_class).observe(
            max(0.0, time.time() - since)
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
        clock: Callable[[], float] = time.monotonic,
        caught_up: Callable[[frozenset[int], float], bool] | None = None,
        fenced: Callable[[], bool] = lambda: False,
        changelogs: tuple[str, str] = (
            f"cityvitals-{TABLE_NAME}-changelog",
            f"cityvitals-{DETECTION_TABLE}-changelog",
        ),
    ) -> None:
        self.table = table
        self._changelogs = changelogs  # of the windows and the detection tables
        self.detection_table = detection_table
        self.detection = detection
        self._early_indicators = detection.early_indicators
        self._street_keys = {
            (ind, street): f"{ind}{STREET_SEP}{street}"
            for ind in detection.street_indicators
            for street in cfg.city.street_district
        }
        self._outputs = outputs
        self._progress = progress
        # running time (a pause counts for little): what idleness is measured in
        self._clock = clock
        self._caught_up = caught_up
        self._fenced = fenced
        self.cfg = cfg
        self.settings = settings
        deid = Deidentifier(settings.deid_key.get_secret_value().encode())
        self.ingestor = Ingestor(
            cfg,
            deid,
            max_future_s=settings.max_future_s,
            max_age_s=settings.max_age_s,
            max_event_bytes=settings.max_event_bytes,
            max_attributes_bytes=settings.max_attributes_bytes,
            max_depth=settings.max_depth,
            sealer=Sealer.from_secrets(
                settings.deadletter_key.get_secret_value().encode()
                if settings.deadletter_key
                else None,
                settings.deid_key.get_secret_value().encode(),
            ),
        )
        self.dead_letters = self.ingestor.dead_letters
        # when this worker began consuming its current partitions; set by the first
        # batch after a start or a rebalance (joining the group takes seconds)
        self.started = clock()
        self.awaiting_first_batch = True
        # running time of each district's (and each district source's) last event:
        # in memory only, so that a restarted worker treats every source as active
        # and waits a full idle period before closing anything on silence
        self.last_activity: dict[str, float] = {}
        self._tp_names: dict[tuple[str, int], str] = {}  # "topic:partition", the applied-offset key
        self.source_seen: dict[tuple[str, str], float] = {}
        self._held_logged: dict[str, float] = {}
        # idle districts waiting for the broker to confirm nothing is left to read
        self._idle_asked: float | None = None
        self._partition_of = {
            d: key_partition(d.encode(), settings.partitions) for d in cfg.districts
        }
        self._key_partition = {d.encode(): p for d, p in self._partition_of.items()}
        # the district gauges' last values while a rebalance is under way
        self._released: list[tuple[Any, dict[str, str], float]] = []
        self._events_in = {t: metrics.events_in.labels(t) for t in EVENT_TOPICS.values()}
        self._readings = {d: metrics.readings_out.labels(d) for d in cfg.catalogue.domains}
        self._dead = {r: metrics.deadletters.labels(r.value) for r in DeadLetterReason}
        self._held = {
            o: metrics.held_records.labels(o) for o in ("held", "confirmed", "dropped", "full")
        }
        self._close_delay = {
            t: metrics.window_close_delay.labels(t) for t in ("watermark", "idle", "overflow")
        }
        # source topic -> wall seconds its silence holds a district's windows open
        self._source_wait = {
            topic: settings.source_wait(name) for name, topic in EVENT_TOPICS.items()
        }
        _start_alert_series(cfg)
        self._districts = set(cfg.districts)
        # what the batch in hand changed, so that a failure can put it back
        self._touched: dict[str, DistrictWindows] = {}
        # windows written and not yet acknowledged: each send's futures, with its districts
        self._unacked: list[tuple[list[asyncio.Future[Any]], frozenset[str]]] = []
        # windows encoded at the end of a batch and not yet sent: the latest per district,
        # sent once before each offset commit (flush_state) rather than after each batch
        self._unwritten: dict[str, bytes] = {}
        self._detected: dict[str, DistrictDetection] = {}

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

    def assigned(self) -> None:
        """The worker took (or kept) its partitions: silence counts from now.

        The first batch starts the count again, since joining a group and restoring
        takes a while; but a district whose input has ended is still closed on
        silence, once the broker confirms there is nothing left to read.
        """
        self.started = self._clock()
        self.awaiting_first_batch = True

    # -- a batch ---------------------------------------------------------------------
    async def process_batch(self, events: Sequence[Record]) -> None:
        """Handle one batch of input records (the caller holds the state lock).

        Whatever the records hold, the batch ends with each of them counted or
        dead-lettered. A failure no check foresaw puts the batch's state back as the
        changelog holds it and handles the batch again in halves, down to the one
        record that fails, which is dead-lettered (``unprocessable``, stage
        ``batch``). A broker failure or a pause puts the state back and raises: the
        feed reads the batch again later.
        """
        try:
            await self._process_batch(events)
        except Exception as exc:
            self._rollback()
            if isinstance(exc, Fenced):
                metrics.batch_retries.labels("pause").inc()
                raise
            if transient(exc):
                metrics.batch_retries.labels("broker").inc()
                raise
            if len(events) == 1:
                metrics.batch_failures.labels("isolated").inc()
                await self._isolate(events[0], exc)
                return
            metrics.batch_failures.labels("split").inc()
            log.error(
                "a batch of %d records failed (%s); handling it again in halves",
                len(events),
                self.dead_letters.scrub(_failure(exc)),
            )
            half = len(events) // 2
            await self.process_batch(events[:half])
            await self.process_batch(events[half:])

    def _rollback(self) -> None:
        """Put back the table values the failed batch changed, as the changelog has them."""
        for district in self._touched:
            key = district.encode()
            data = WINDOWS_DURABLE.data.get(district)
            if data is not None:
                self.table.data[key] = DistrictWindows.from_dict(orjson.loads(data))
            elif key in self.table.data:
                del self.table.data[key]
        for district in self._detected:
            key = district.encode()
            data = DETECTION_DURABLE.data.get(district)
            if data is not None:
                self.detection_table.data[key] = DistrictDetection.loads(data)
            elif key in self.detection_table.data:
                del self.detection_table.data[key]
        self._touched, self._detected = {}, {}

    async def _isolate(self, msg: Record, exc: BaseException) -> None:
        """Dead-letter the one record a batch fails on, and never handle it again."""
        now = datetime.now(UTC)
        value = msg.value if msg.value is not None else b""
        origin = Origin(topic=msg.topic, partition=msg.partition, offset=msg.offset)
        detail = f"handling failed: {_failure(exc)}"
        log.error(
            "record %s:%d:%d isolated as unprocessable: %s\n%s",
            msg.topic,
            msg.partition,
            msg.offset,
            self.dead_letters.scrub(detail),
            "".join(traceback.format_tb(exc.__traceback__)),
        )
        letter = self.dead_letters.make(
            origin,
            msg.key,
            value,
            DeadLetterReason.UNPROCESSABLE,
            detail,
            now,
            DeadLetterStage.BATCH,
        )
        out = self._outputs()
        out.add(DEADLETTER_TOPIC, self._dl_key(msg.key), letter.to_json())
        self._dead[letter.reason].inc()
        touched: dict[str, DistrictWindows] = {}
        district = msg.key.decode("utf-8", "replace") if msg.key else None
        if district in self._districts:
            state = self._state(district, touched)
            state.mark_applied(f"{msg.topic}:{msg.partition}", msg.offset)
        self._touched = touched
        await self._commit(touched, out)

    async def _process_batch(self, events: Sequence[Record]) -> None:
        # Long on purpose: the per-record loop is the worker's hot path, so the common
        # case (a valid reading counted in an open window) is inlined with its lookups
        # bound to locals; a call per step costs measurably (bench/processing.py).
        t0 = time.perf_counter()
        now_ts = time.time()
        live = self._clock()
        if self.awaiting_first_batch:
            self.started, self.awaiting_first_batch = live, False
        now = datetime.fromtimestamp(now_ts, UTC)
        touched: dict[str, DistrictWindows] = {}
        detected: dict[str, DistrictDetection] = {}
        self._touched, self._detected = touched, detected
        out = self._outputs()
        batch = _Batch(out, now, [], Counter())
        dead = batch.dead
        # counted per batch, not per event: a metric increment takes a lock
        events_in: Counter[str] = Counter()
        duplicates = 0
        applied: dict[tuple[str, str, str], int] = {}
        readings = batch.readings
        street_keys = self._street_keys
        accept = self.ingestor.accept
        tp_names = self._tp_names
        max_ahead = self.settings.max_ahead_s
        early_indicators = self._early_indicators
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
            try:
                result = accept(msg.topic, msg.partition, msg.offset, key, value, now)
                if isinstance(result, DeadLetter):
                    dead.append((self._dl_key(key), result))
                else:
                    assert state is not None  # a valid reading's key is a known district
                    t = result.t
                    if state.held or t > state.top + max_ahead:
                        self._admit(state, msg, result, t, batch)
                    elif state.add(
                        result.indicator,
                        result.value,
                        t,
                        msg.topic,
                        street_keys.get((result.indicator, result.street))
                        if result.street is not None
                        else None,
                    ):  # the common case, inline: counted
                        out.add(READINGS_TOPIC, key, result.json)
                        readings[result.domain] += 1
                        if result.indicator in early_indicators:
                            self._keep_early(state, result, tp, msg.offset, batch)
                    else:
                        self._late(msg, result, batch)
            except Exception as exc:  # not foreseen by ingest: this record alone
                origin = Origin(topic=msg.topic, partition=msg.partition, offset=msg.offset)
                letter = self.dead_letters.make(
                    origin,
                    key,
                    value,
                    DeadLetterReason.UNPROCESSABLE,
                    f"counting failed: {_failure(exc)}",
                    now,
                    DeadLetterStage.WINDOW,
                )
                dead.append((self._dl_key(key), letter))
            if state is not None:
                applied[(state.district, msg.topic, tp)] = msg.offset
        # per (district, source partition) once a batch, not per record: offsets rise
        for (district, topic, tp), offset in applied.items():
            touched[district].mark_applied(tp, offset)
            self.last_activity[district] = live
            self.source_seen[(district, topic)] = live
        for topic, n in events_in.items():
            self._events_in[topic].inc(n)
        if duplicates:
            metrics.duplicates_skipped.inc(duplicates)
        self._publish_batch(batch)
        self._decide_early(batch, detected)
        keep = self.settings.max_open_windows
        for district, state in touched.items():
            closed = state.close_due(
                self.settings.allowed_lateness_s, self._active_sources(district, live)
            )
            self._publish(out, closed, now, "watermark", detected)
            if len(state.open) > keep:
                self._degrade_windows(out, state, keep, now, detected)
        await self._commit(touched, out, detected, defer=True)
        metrics.batch_size.observe(len(events))
        metrics.batch_seconds.observe(time.perf_counter() - t0)

    def _count(
        self, state: DistrictWindows, msg: Record, result: Accepted, t: float, batch: _Batch
    ) -> None:
        """Count one accepted record in its window, or dead-letter it as late."""
        key = msg.key
        street_key = (
            self._street_keys.get((result.indicator, result.street))
            if result.street is not None
            else None
        )
        if state.add(result.indicator, result.value, t, msg.topic, street_key):
            batch.out.add(READINGS_TOPIC, key, result.json)
            batch.readings[result.domain] += 1
            if result.indicator in self._early_indicators:
                self._keep_early(state, result, f"{msg.topic}:{msg.partition}", msg.offset, batch)
        else:
            self._late(msg, result, batch)

    def _keep_early(
        self, state: DistrictWindows, result: Accepted, tp: str, offset: int, batch: _Batch
    ) -> None:
        """A counted reading an early rule watches, judged when the batch ends if it may be
        past a bound; a count, sum or rate rule's running totals are taken now, as it was
        counted."""
        detection = self.detection
        if not detection.may_cross(result.indicator, state.district, result.street, result.value):
            return
        totals = None
        if result.indicator in detection.running_indicators:
            totals = partials(state.open, detection.partial_keys(result.indicator, result.street))
        batch.early.append((state.district, result, f"{tp}:{offset}", totals))

    def _late(self, msg: Record, result: Accepted, batch: _Batch) -> None:
        """A valid record whose window has closed: dead-lettered as late."""
        key = msg.key
        origin = Origin(topic=msg.topic, partition=msg.partition, offset=msg.offset)
        letter = self.dead_letters.make(
            origin,
            key,
            msg.value or b"",
            DeadLetterReason.LATE,
            f"event time {result.event_time.isoformat()} falls in a window that has "
            f"already closed (allowed lateness {self.settings.allowed_lateness_s:g} s)",
            batch.now,
        )
        batch.dead.append((self._dl_key(key), letter))

    def _admit(
        self, state: DistrictWindows, msg: Record, result: Accepted, t: float, batch: _Batch
    ) -> None:
        """A record ahead of its district, or one arriving while others are held."""
        key, value = msg.key, msg.value or b""
        size = (len(value) + len(key or b"")) * 4 // 3 + 96
        admission = state.admit(
            t, msg.topic, None, size, self.settings.max_ahead_s, self.settings.hold_max_bytes
        )
        if admission.verdict == "hold":
            # the record waits in the state, on the changelog: sealed, as in a dead letter
            # (only then: most records that reach here are counted at once)
            where = f"{msg.topic}:{msg.partition}:{msg.offset}"
            sealed = self.dead_letters.sealer.seal(where, key, value)
            state.held[msg.topic][-1][2] = [msg.partition, msg.offset, sealed]
        for held in admission.confirmed:
            self._held["confirmed"].inc()
            self._recount(state, held, batch)
        for held, why in admission.contradicted:
            self._held["dropped"].inc()
            batch.dead.append(self._ahead_letter(state, held, why, batch.now))
        if admission.verdict == "count":
            self._count(state, msg, result, t, batch)
        elif admission.verdict == "hold":
            self._held["held"].inc()
        else:
            self._held[admission.verdict].inc()
            origin = Origin(topic=msg.topic, partition=msg.partition, offset=msg.offset)
            why = (
                "and the records held for their streams to confirm them fill "
                f"CITYVITALS_HOLD_MAX_BYTES ({self.settings.hold_max_bytes})"
            )
            letter = self.dead_letters.make(
                origin,
                key,
                value,
                DeadLetterReason.FUTURE_EVENT_TIME,
                f"event time {result.event_time.isoformat()} is more than "
                f"{self.settings.max_ahead_s:g} s ahead of district {state.district}'s stream, "
                + why,
                batch.now,
                DeadLetterStage.WINDOW,
            )
            batch.dead.append((self._dl_key(key), letter))

    def _held_record(self, held: list[Any]) -> tuple[str, int, int, bytes | None, bytes]:
        _, topic, (partition, offset, sealed), _ = held
        key, value = self.dead_letters.sealer.open(f"{topic}:{partition}:{offset}", sealed)
        return topic, partition, offset, key, value

    def _recount(self, state: DistrictWindows, held: list[Any], batch: _Batch) -> None:
        """Count a held record its stream confirmed (ingesting its bytes again)."""
        try:
            topic, partition, offset, key, value = self._held_record(held)
        except SealError:
            batch.dead.append((None, self._unopened_letter(state, held, batch.now)))
            return
        result = self.ingestor.accept(topic, partition, offset, key, value, batch.now)
        if isinstance(result, DeadLetter):  # e.g. it grew too old while it waited
            batch.dead.append((self._dl_key(key), result))
            return
        self._count(
            state, _HeldRecord(topic, partition, offset, key, value), result, held[0], batch
        )

    def _publish_batch(self, batch: _Batch) -> None:
        """The batch's dead letters onto the outputs, and its counts into the metrics."""
        for domain, n in batch.readings.items():
            self._readings[domain].inc(n)
        for key, letter in batch.dead:
            self._dead[letter.reason].inc()
            batch.out.add(DEADLETTER_TOPIC, key, letter.to_json())

    def _dl_key(self, key: bytes | None) -> bytes | None:
        """The key of a dead letter: the district, when the record named a known one (an
        unknown key is data of the sender's, and may be personal)."""
        return key if key is not None and key in self._key_partition else None

    def _ahead_letter(
        self, state: DistrictWindows, held: list[Any], why: str, now: datetime
    ) -> tuple[bytes | None, DeadLetter]:
        try:
            topic, partition, offset, key, value = self._held_record(held)
        except SealError:
            return None, self._unopened_letter(state, held, now)
        when = datetime.fromtimestamp(held[0], UTC).isoformat()
        return self._dl_key(key), self.dead_letters.make(
            Origin(topic=topic, partition=partition, offset=offset),
            key,
            value,
            DeadLetterReason.FUTURE_EVENT_TIME,
            f"event time {when} is more than {self.settings.max_ahead_s:g} s ahead of district "
            f"{state.district}'s stream; it was held for its stream to confirm it, and {why}",
            now,
            DeadLetterStage.WINDOW,
        )

    def _unopened_letter(
        self, state: DistrictWindows, held: list[Any], now: datetime
    ) -> DeadLetter:
        """A held record sealed under a key this worker no longer has (the key was
        changed meanwhile): dead-lettered as it is, still sealed."""
        _, topic, (partition, offset, sealed), _ = held
        return DeadLetter(
            reason=DeadLetterReason.UNPROCESSABLE,
            stage=DeadLetterStage.WINDOW,
            detail=f"held as ahead of district {state.district}'s stream, and sealed under "
            "another dead-letter key than this worker's: set aside as it was sealed",
            origin=Origin(topic=topic, partition=partition, offset=offset),
            size=0,
            preview="",
            sealed=sealed,
            dead_lettered_at=now,
        )

    def _degrade_windows(
        self,
        out: Outputs,
        state: DistrictWindows,
        keep: int,
        now: datetime,
        detected: dict[str, DistrictDetection],
    ) -> None:
        """More open windows than the state may hold: close the oldest, and say so."""
        closed = state.close_oldest(keep)
        if not closed:
            return
        reason = (
            f"{len(closed)} open windows of district {state.district} closed before their "
            f"watermark (from {datetime.fromtimestamp(closed[0].start, UTC).isoformat()}): "
            f"more than CITYVITALS_MAX_OPEN_WINDOWS ({keep}) were open, a source is far behind"
        )
        log.warning("%s", reason)
        metrics.state_degraded.labels(TABLE_NAME).inc()
        out.add(
            AUDIT_TOPIC,
            b"worker",
            AuditRecord(
                at=now,
                user="worker",
                role="system",
                action="state_degraded",
                target=f"{TABLE_NAME}/{state.district}",
                detail=reason,
            ).to_json(),
        )
        self._publish(out, closed, now, "overflow", detected)

    def _active_sources(self, district: str, live: float) -> set[str]:
        """The sources whose mark the district's windows wait for: each one heard from
        within its wait (``CITYVITALS_SOURCE_WAIT_S``, else ``CITYVITALS_IDLE_CLOSE_S``),
        and each whose partition holds records this worker has not handled."""
        partition = self._partition_of[district]
        return {
            src
            for src, wait in self._source_wait.items()
            if live - self.source_seen.get((district, src), self.started) <= wait
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
        caller holds the state lock, since a batch awaits its sends midway).

        Silence is measured in running time, so a paused worker does not take its own
        absence for the district's; and before anything closes, the broker must
        confirm, in a fetch answered after the question, that the district's
        partitions hold nothing this worker has not handled. Records still held as
        ahead of their stream are settled first (:meth:`DistrictWindows.settle_held`).
        Windows whose end the clock has not reached stay open.
        """
        if self._fenced():
            return
        live = self._clock()
        now_ts = time.time()
        idle = self.settings.idle_close_s
        candidates: list[tuple[str, DistrictWindows]] = []
        for district in self._districts:
            partition = self._partition_of[district]
            if partition not in active_partitions:
                continue
            state = self.table.get(district.encode())
            if state is None or not (state.open or state.held):
                continue
            if live - self.last_activity.get(district, self.started) < idle:
                continue
            # silent because its events wait behind another topic's is not idle
            behind = [src for src in EVENT_TOPICS.values() if self._behind(src, partition)]
            if behind:
                self._log_held_open(district, partition, behind, now_ts)
                continue
            candidates.append((district, state))
        if not candidates:
            self._idle_asked = None
            return
        if self._idle_asked is None:
            self._idle_asked = now_ts  # ask the broker; the answer comes with a later fetch
            return
        partitions = frozenset(self._partition_of[d] for d, _ in candidates)
        if self._caught_up is not None and not self._caught_up(partitions, self._idle_asked):
            return
        self._idle_asked = None
        now = datetime.fromtimestamp(now_ts, UTC)
        touched: dict[str, DistrictWindows] = {}
        detected: dict[str, DistrictDetection] = {}
        self._touched, self._detected = touched, detected
        out = self._outputs()
        batch = _Batch(out, now, [], Counter())
        try:
            for district, state in candidates:
                touched[district] = state
                counted, dropped = state.settle_held(now_ts, self.settings.max_ahead_s, idle)
                for held in counted:
                    self._held["confirmed"].inc()
                    self._recount(state, held, batch)
                for held, why in dropped:
                    self._held["dropped"].inc()
                    batch.dead.append(self._ahead_letter(state, held, why, now))
                self._decide_early(batch, detected)
                batch.early.clear()
                self._publish(out, state.close_all(until=now_ts), now, "idle", detected)
            self._publish_batch(batch)
            await self._commit(touched, out, detected)
        except Exception as exc:
            self._rollback()
            if not (isinstance(exc, Fenced) or transient(exc)):
                log.error(
                    "closing idle districts failed: %s\n%s",
                    self.dead_letters.scrub(_failure(exc)),
                    "".join(traceback.format_tb(exc.__traceback__)),
                )

    def _log_held_open(
        self, district: str, partition: int, behind: list[str], now_ts: float
    ) -> None:
        if now_ts - self._held_logged.get(district, 0.0) > 30:
            self._held_logged[district] = now_ts
            log.info(
                "district %s kept open: partition %d of %s not fully processed (%s)",
                district,
                partition,
                behind,
                "; ".join(
                    "{} at {} of {}".format(t, *self._progress(t, partition)) for t in behind
                ),
            )

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
        for district in dict.fromkeys(w.district for w in closed):
            self._catch_up_early(out, district, detected)
        for window in closed:
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
            delay = now.timestamp() - window.end
            metrics.watermark_lag.labels(window.district).set(delay)
            self._close_delay[trigger].observe(delay)

    def _detection_of(
        self, district: str, detected: dict[str, DistrictDetection]
    ) -> DistrictDetection:
        """The district's detection state, marked to be written at the end of the batch."""
        state = detected.get(district)
        if state is None:
            state = self.detection_table.get(district.encode()) or DistrictDetection(district)
            detected[district] = state
        return state

    def _raise(self, out: Outputs, state: DistrictDetection, events: list[AlertEvent]) -> None:
        key = state.district.encode()
        for event in events:
            out.add(ALERTS_TOPIC, key, event.to_json())
            count_alert_event(event)
        if events:
            self._count_open(state)

    def _detect(
        self, out: Outputs, window: ClosedWindow, detected: dict[str, DistrictDetection]
    ) -> None:
        state = self._detection_of(window.district, detected)
        self._raise(out, state, state.on_window(window, self.detection))

    def _decide_early(self, batch: _Batch, detected: dict[str, DistrictDetection]) -> None:
        """The batch's readings that early rules watch, in arrival order: alarms they decide
        now rather than when their window closes (:mod:`streams.alerting.early`)."""
        window_s = float(self.settings.window_s)
        for district, result, ref, totals in batch.early:
            known = detected.get(district) or self.detection_table.get(district.encode())
            if not (known or DistrictDetection(district)).crossings(
                result.indicator, result.street, result.t, result.value, self.detection,
                window_s, totals,
            ):  # fmt: skip
                continue  # far from every bound: the state stays as it is, unwritten
            state = self._detection_of(district, detected)
            windows = self._touched[district]
            events = state.on_reading(
                result.indicator,
                result.street,
                result.t,
                result.value,
                ref,
                self.detection,
                windows.open,
                window_s,
                totals,
            )
            self._raise(batch.out, state, events)

    def _catch_up_early(
        self, out: Outputs, district: str, detected: dict[str, DistrictDetection]
    ) -> None:
        """Windows of the district closed: kept readings whose turn has come are raised."""
        state = detected.get(district)
        windows = self._touched.get(district)
        if state is None or windows is None or not any(s.readings for s in state.early.values()):
            return
        events = state.catch_up(windows.open, float(self.settings.window_s), self.detection)
        self._raise(out, state, events)

    async def apply_action(self, msg: Record) -> None:
        """Apply one operator action from ``city.alert-actions`` (caller holds the state lock).

        An invalid action goes to the dead-letter topic; a repeated one (same
        action id) changes nothing.
        """
        now = datetime.now(UTC)
        key, value = msg.key, msg.value if msg.value is not None else b""
        origin = Origin(topic=msg.topic, partition=msg.partition, offset=msg.offset)
        out = self._outputs()
        problem: tuple[DeadLetterReason, str] | None = None
        action: AlertAction | None = None
        if len(value) > self.settings.max_event_bytes:
            problem = (
                DeadLetterReason.TOO_LARGE,
                f"the record is {len(value)} bytes; at most {self.settings.max_event_bytes} "
                "are accepted",
            )
        else:
            try:
                action = AlertAction.model_validate_json(value)
            except ValidationError as exc:
                err = exc.errors(include_url=False)[0]
                where = ".".join(str(p) for p in err["loc"]) or "(document)"
                problem = (DeadLetterReason.SCHEMA, f"{where}: {err['msg']}")
        shown = None if key is None else key.decode("utf-8", "replace")
        if action is not None and action.district not in self._districts:
            problem = (
                DeadLetterReason.UNKNOWN_DISTRICT,
                f"district {quoted(action.district)} is not in the city",
            )
        elif action is not None and shown != action.district:
            problem = (
                DeadLetterReason.KEY_MISMATCH,
                f"message key {quoted(shown)} is not the action's district {quoted(action.district)}",
            )
        if problem is not None or action is None:
            reason, detail = problem or (DeadLetterReason.SCHEMA, "not an action")
            letter = self.dead_letters.make(
                origin, key, value, reason, detail, now, DeadLetterStage.ACTION
            )
            out.add(DEADLETTER_TOPIC, self._dl_key(key), letter.to_json())
            self._dead[reason].inc()
            await out.send()
            return
        district = action.district.encode()
        state = self.detection_table.get(district) or DistrictDetection(action.district)
        try:
            events = state.act(action, self.detection)
            for event in events:
                out.add(ALERTS_TOPIC, district, event.to_json())
        except Exception as exc:  # an action no check foresaw: it alone is set aside
            data = DETECTION_DURABLE.data.get(action.district)
            if data is not None:
                self.detection_table.data[district] = DistrictDetection.loads(data)
            out = self._outputs()
            letter = self.dead_letters.make(
                origin,
                key,
                value,
                DeadLetterReason.UNPROCESSABLE,
                f"applying the action failed: {_failure(exc)}",
                now,
                DeadLetterStage.ACTION,
            )
            out.add(DEADLETTER_TOPIC, district, letter.to_json())
            self._dead[DeadLetterReason.UNPROCESSABLE].inc()
            await out.send()
            return
        for event in events:
            count_alert_event(event)
        metrics.actions_applied.labels(action.action.value).inc()
        await out.send()
        if events:
            self._count_open(state)
            written = self._outputs()
            self._write(written, self.detection_table, self._changelogs[1], action.district, state)
            await written.send(counted=False)

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
        # not written before the revocation (a pause fenced the worker): the next owner
        # reads again from the committed offsets, and a district kept here is written
        # whole with its next batch
        self._unwritten = {}

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
        *,
        defer: bool = False,
    ) -> None:
        """Outputs first, state second, each acknowledged by the broker before the next.

        If we crash in between, the events are redelivered and their outputs repeated
        (at-least-once), never lost; once the state is written they are recognised as
        applied. The state goes to the changelogs through our own producer and is
        awaited, rather than through Faust's table writes: Faust buffers those and
        its flush gives up waiting after 0.1 s, so input offsets committed after it
        could run ahead of the state a crash leaves behind.

        With ``defer`` (a batch of input) the windows are encoded now and sent by
        :meth:`flush_state`, once per district before the next offset commit: the
        embedded broker does not compact changelogs, and every recovery reads each
        record, so one write a second instead of one a batch makes recovery several
        times faster (measured on two cores, two simulated hours at 60x: 8,100
        changelog records and 30 s of recovery per batch, 1,114 records and 8 s per
        commit). Until the commit, a crash redelivers the batches either way.
        """
        await out.send()
        if self._fenced():
            raise Fenced  # paused meanwhile: this worker may no longer own the partitions
        if detected:
            # Detection before windows, made durable in between: a crash after it
            # re-closes the windows, and detection skips the minutes it has seen
            # (a crash before it repeats the same alert events, ids and sequences).
            state = self._outputs()
            for district, det in detected.items():
                self._write(state, self.detection_table, self._changelogs[1], district, det)
            await state.send(counted=False)
        if defer:
            for district, windows in touched.items():
                self._unwritten[district] = self._keep(self.table, district, windows)
            return
        state = self._outputs()
        for district, windows in touched.items():
            self._unwritten.pop(district, None)
            self._write(state, self.table, self._changelogs[0], district, windows)
        # the windows are acknowledged before the input offsets are committed
        # (flush_state), not before the next batch: a crash in between redelivers
        # the batch, and the state that did reach the changelog recognises it
        self._unacked.append((await state.send(wait=False, counted=False), frozenset(touched)))

    async def flush_state(self) -> None:
        """Wait until every table value written so far is on its changelog (before the
        input offsets are committed).

        The windows batches left unwritten go first, the latest value per district;
        after a pause that may have cost the worker its partitions nothing is sent
        (:class:`Fenced` is raised, and no offset is committed). A write the producer
        gave up on (a batch that expired while the worker was paused, a broker outage)
        is written again with the district's current value, which holds everything
        the lost one did, and the error is raised: the offsets are committed once
        that write is acknowledged, at the next commit.
        """
        if self._unwritten:
            if self._fenced():
                raise Fenced
            state = self._outputs()
            for district, data in self._unwritten.items():
                state.add(self._changelogs[0], district.encode(), data)
            districts = frozenset(self._unwritten)
            self._unwritten = {}
            self._unacked.append((await state.send(wait=False, counted=False), districts))
        while self._unacked:
            pending, self._unacked = self._unacked, []
            results = await asyncio.gather(
                *(f for futures, _ in pending for f in futures), return_exceptions=True
            )
            failures = [r for r in results if isinstance(r, BaseException)]
            if not failures:
                continue
            lost: set[str] = set()
            n = 0
            for futures, districts in pending:
                if any(isinstance(r, BaseException) for r in results[n : n + len(futures)]):
                    lost |= districts
                n += len(futures)
            for district in sorted(lost):
                windows = self.table.data.get(district.encode())
                if windows is not None:
                    self._unwritten[district] = self._keep(self.table, district, windows)
            log.warning(
                "the state of %d districts did not reach its changelog (%s); written again",
                len(lost),
                type(failures[0]).__name__,
            )
            raise failures[0]

    @classmethod
    def _write(cls, out: Outputs, table: Any, changelog: str, district: str, value: Any) -> None:
        """A table value into the worker's memory and, with ``out``, onto its changelog."""
        out.add(changelog, district.encode(), cls._keep(table, district, value))

    @staticmethod
    def _keep(table: Any, district: str, value: Any) -> bytes:
        """A table value into the worker's memory, and its changelog bytes."""
        key = district.encode()
        codec = "district_windows" if isinstance(value, DistrictWindows) else "district_detection"
        data: bytes = codecs.get_codec(codec).dumps(value)
        table.data[key] = value
        sensor = getattr(table, "_sensor_on_set", None)
        if sensor is not None:  # Faust's own table metrics count the write as theirs
            sensor(table, key, value)
        return data


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
    return f"{settings.app_id}-{table}-changelog"


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
    config_files += [cfg.directory / "silences.yaml", settings.roles_path]
    config_files += [f for f in (cfg.directory / "anomaly.yaml",) if f.exists()]
    app.api_service = ApiService(
        settings,
        cfg,
        auth if auth is not None else load_roles(settings.roles_path, cfg),
        ready=readiness,
        config_files=config_files,
        links=notifier.planner.tree.responder_links,
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


def _services(
    app: CityApp, settings: Settings, cfg: CityConfig, tables: dict[str, Any]
) -> tuple[InputFeed, VitalsProcessor, NotifyService]:
    """The input feed, the batch handler it calls, and the notification service."""
    partitions = settings.partitions
    rules = load_thresholds(cfg)
    detection = DetectionContext(cfg, rules, silences=load_silences(cfg, rules))

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
        clock=feed.clock.now,
        caught_up=feed.caught_up,
        fenced=feed.fenced,
    )
    app.cityvitals = processor  # type: ignore[attr-defined]
    app.input_feed = feed
    notifier = app.notifier = NotifyService(
        load_routes(settings.routes_path, cfg, rules=rules),
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
            processor.release_districts()
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
        processor.take_districts(owned)
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
                await processor.apply_action(event.message)

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
            gauge.set(processor.owned_keys(t, feed.partitions))
