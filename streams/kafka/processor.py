"""The worker's per-batch work: input records in, readings, dead letters, vital signs
and alerts out, and the district state they change; kept apart from Faust's plumbing
(:mod:`streams.kafka.worker`) so that it runs without Kafka too (fuzzing, benches).

Per batch it validates and normalises every event (:mod:`streams.ingest.ingestor`),
counts each reading in its district's event-time window (:mod:`streams.state.windows`,
the uncommon cases in :mod:`streams.kafka.counting`), closes the windows the watermark
has passed and publishes their vital signs and alerts (:mod:`streams.kafka.closing`,
:mod:`streams.kafka.raising`), waits until all of that is acknowledged by the broker,
and only then writes each touched district to its tables once
(:mod:`streams.kafka.tables`). The windows record the highest offset applied per input
partition, so after a crash the events Kafka redelivers are recognised and not counted
twice.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from streams.alerting.detection import DetectionContext
from streams.core import metrics
from streams.core.config import CityConfig
from streams.core.messages import (
    APPEALS_TOPIC,
    DEADLETTER_TOPIC,
    EVENT_TOPICS,
    READINGS_TOPIC,
    DeadLetter,
    DeadLetterReason,
    DeadLetterStage,
    Origin,
)
from streams.core.settings import Settings
from streams.core.signing import ActionSigner
from streams.ingest.deid import Deidentifier
from streams.ingest.ingestor import Ingestor, _failure
from streams.ingest.sealing import Sealer
from streams.kafka.closing import WindowCloser
from streams.kafka.counting import Batch, Counting
from streams.kafka.feed import Fenced, Outputs, Record, transient
from streams.kafka.ownership import DistrictReports
from streams.kafka.raising import AlertRaiser
from streams.kafka.readers import BatchReaders, Item
from streams.kafka.tables import DETECTION_TABLE, TABLE_NAME, TableWriter
from streams.state.windows import STREET_SEP, DistrictWindows
from streams.voice.appeals import AppealsConfig
from streams.voice.ingest import AppealStage, ReadAppeal

log = logging.getLogger(__name__)


def ingestor_of(cfg: CityConfig, settings: Settings) -> Ingestor:
    """The worker's ingest stage, with its limits and keys from ``settings``."""
    deid_key = settings.deid_secret()
    deadletter_key = settings.deadletter_key
    return Ingestor(
        cfg,
        Deidentifier(deid_key),
        max_future_s=settings.max_future_s,
        max_age_s=settings.max_age_s,
        max_event_bytes=settings.max_event_bytes,
        max_attributes_bytes=settings.max_attributes_bytes,
        max_depth=settings.max_depth,
        sealer=Sealer.from_secrets(
            deadletter_key.get_secret_value().encode() if deadletter_key else None, deid_key
        ),
    )


def street_keys(cfg: CityConfig, detection: DetectionContext) -> dict[tuple[str, str], str]:
    """(indicator, street) -> the key of the street's own aggregate, for the indicators
    a rule watches per street."""
    return {
        (ind, street): f"{ind}{STREET_SEP}{street}"
        for ind in detection.street_indicators
        for street in cfg.city.street_district
    }


# Long on purpose: the batch handler and its recovery (split in halves, isolate,
# roll back) share one batch's state; counting, closing, raising and writing are
# classes of their own.
class VitalsProcessor:
    """The per-batch work of the input feed's handler, and the one-second idle close."""

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
        appeals: AppealsConfig | None = None,
        changelogs: tuple[str, str] = (
            f"cityvitals-{TABLE_NAME}-changelog",
            f"cityvitals-{DETECTION_TABLE}-changelog",
        ),
    ) -> None:
        self.table, self.detection_table = table, detection_table
        self.cfg, self.settings = cfg, settings
        self._outputs = outputs
        # running time (a pause counts for little): what idleness is measured in
        self._clock, self._fenced = clock, fenced
        self.ingestor = ingestor_of(cfg, settings)
        self.dead_letters = self.ingestor.dead_letters
        self.appeals = AppealStage(self.ingestor, appeals, runs_of=self._runs_of)
        # a backlog's records are read beside the worker (streams.kafka.readers)
        self.readers = BatchReaders(cfg, settings, appeals, processes=settings.reader_processes)
        self._districts = set(cfg.districts)
        self.writer = TableWriter(
            table, detection_table, outputs=outputs, fenced=fenced, changelogs=changelogs
        )
        self.counting = Counting(
            self.ingestor,
            self.appeals.accept_any,
            settings,
            detection,
            street_keys=street_keys(cfg, detection),
            districts=frozenset(d.encode() for d in cfg.districts),
        )
        self.raiser = AlertRaiser(
            detection_table,
            detection,
            cfg,
            window_s=float(settings.window_s),
            max_action_bytes=settings.max_event_bytes,
            outputs=outputs,
            writer=self.writer,
            dead_letters=self.dead_letters,
            dead_letter=self._dead_letter,
            signer=ActionSigner(*settings.action_keys()),
        )
        self.closer = WindowCloser(
            table, cfg, settings, self.raiser, clock=clock, progress=progress, caught_up=caught_up
        )
        self.reports = DistrictReports(
            self.closer.partition_of, settings.partitions, detection_table, self.raiser
        )
        self._tp_names: dict[tuple[str, int], str] = {}  # "topic:partition", the applied-offset key
        self._events_in = {t: metrics.events_in.labels(t) for t in EVENT_TOPICS.values()}
        self._readings = {d: metrics.readings_out.labels(d) for d in cfg.catalogue.domains}
        self._dead = {r: metrics.deadletters.labels(r.value) for r in DeadLetterReason}
        # what the batch in hand changed, so that a failure can put it back
        self._batch: Batch | None = None

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

    def _runs_of(self, district: str) -> dict[str, list[Any]]:
        """A district's repeat runs: its windows', written with the batch that reads them."""
        batch = self._batch
        assert batch is not None, "an appeal is read within a batch"
        return self._state(district, batch.touched).runs

    def assigned(self) -> None:
        """The worker took (or kept) its partitions: silence counts from now
        (:meth:`WindowCloser.assigned`)."""
        self.closer.assigned()

    def _begin(self, now: datetime) -> Batch:
        batch = self._batch = Batch(self._outputs(), now)
        return batch

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
        if self._batch is not None:
            self.writer.rollback(self._batch.touched, self._batch.detected)
            self._batch = None

    async def _isolate(self, msg: Record, exc: BaseException) -> None:
        """Dead-letter the one record a batch fails on, and never handle it again."""
        batch = self._begin(datetime.now(UTC))
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
            batch.now,
            DeadLetterStage.BATCH,
        )
        self._dead_letter(batch.out, msg.key, letter)
        district = msg.key.decode("utf-8", "replace") if msg.key else None
        if district in self._districts:
            state = self._state(district, batch.touched)
            state.mark_applied(f"{msg.topic}:{msg.partition}", msg.offset)
        await self.writer.commit(batch.touched, batch.out)

    async def _process_batch(self, events: Sequence[Record]) -> None:
        t0 = time.perf_counter()
        now_ts = time.time()
        live = self._clock()
        self.closer.heard(live)
        batch = self._begin(datetime.fromtimestamp(now_ts, UTC))
        shared = None
        readers = self.readers
        if readers.processes and len(events) >= readers.min_batch:  # a backlog's: shared
            items = [
                (m.topic, m.partition, m.offset, m.key, m.value if m.value is not None else b"")
                for m in events
            ]
            shared = readers.submit(items, batch.now)
        if shared is None:
            applied = self._count(events, batch)
        else:
            read_any, now = self.appeals.read_any, batch.now

            def read_here(chunk: Sequence[Item]) -> list[Any]:
                return [read_any(*item, now) for item in chunk]

            applied, at = {}, 0
            async for chunk, reads in readers.in_order(shared, read_here):
                applied.update(self._count(events[at : at + len(chunk)], batch, reads))
                at += len(chunk)
        # per (district, source partition) once a batch, not per record: offsets rise
        last_activity, source_seen = self.closer.last_activity, self.closer.source_seen
        for (district, topic, tp), offset in applied.items():
            batch.touched[district].mark_applied(tp, offset)
            last_activity[district] = live
            source_seen[(district, topic)] = live
        self._publish_batch(batch)
        self.raiser.decide_early(batch)
        self.closer.close_due(batch, live)
        await self.writer.commit(batch.touched, batch.out, batch.detected, defer=True)
        metrics.batch_size.observe(len(events))
        metrics.batch_seconds.observe(time.perf_counter() - t0)

    def _count(
        self,
        events: Sequence[Record],
        batch: Batch,
        reads: Sequence[Any] | None = None,
    ) -> dict[tuple[str, str, str], int]:
        """Count a batch's records in their windows, or dead-letter them; the last
        offset applied of each (district, topic, partition). ``reads``: what each record
        gave before any state was asked (:meth:`AppealStage.read_any`, in a reader
        process), else each is read here."""
        # Long on purpose: the per-record loop is the worker's hot path, so the common
        # case (a valid reading counted in an open window) is inlined with its lookups
        # bound to locals; a call per step costs measurably (bench/processing.py).
        now, out, dead, touched = batch.now, batch.out, batch.dead, batch.touched
        # counted per batch, not per event: a metric increment takes a lock
        events_in: Counter[str] = Counter()
        duplicates = 0
        applied: dict[tuple[str, str, str], int] = {}
        readings = batch.readings
        counting = self.counting
        street_keys = counting.street_keys
        accept, accepts = self.ingestor.accept, {APPEALS_TOPIC: self.appeals.accept_any}
        tp_names = self._tp_names
        max_ahead = self.settings.max_ahead_s
        watched = counting.watched
        districts = self._districts
        for i, msg in enumerate(events):
            # a tombstone (null value) is no event: it fails as bad JSON, keeping its origin
            key, value = msg.key, msg.value if msg.value is not None else b""
            tp = tp_names.get((msg.topic, msg.partition))
            if tp is None:
                tp = tp_names[(msg.topic, msg.partition)] = f"{msg.topic}:{msg.partition}"
            events_in[msg.topic] += 1
            district = key.decode("utf-8", "replace") if key else None
            state = self._state(district, touched) if district in districts else None
            if state is not None and state.is_applied(tp, msg.offset):
                duplicates += 1
                continue
            try:
                if reads is None:
                    stage = accepts.get(msg.topic, accept)
                    result = stage(msg.topic, msg.partition, msg.offset, key, value, now)
                else:
                    result = reads[i]
                    if type(result) is ReadAppeal:  # the rest of an appeal asks its state
                        result = self.appeals.ingest.accept(
                            msg.topic, msg.partition, msg.offset, key, value, now, result
                        )
                if isinstance(result, DeadLetter):
                    dead.append((counting.dl_key(key), result))
                else:
                    assert state is not None  # a valid reading's key is a known district
                    t = result.t
                    if state.held or t > state.top + max_ahead:
                        counting.admit(state, msg, result, t, batch)
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
                        if result.indicator in watched:  # an early rule's, or an appeal
                            counting.counted(state, result, t, tp, msg.offset, batch)
                    else:
                        counting.late(msg, result, batch)
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
                dead.append((counting.dl_key(key), letter))
            if state is not None:
                applied[(state.district, msg.topic, tp)] = msg.offset
        for topic, n in events_in.items():
            self._events_in[topic].inc(n)
        if duplicates:
            metrics.duplicates_skipped.inc(duplicates)
        return applied

    def _publish_batch(self, batch: Batch) -> None:
        """The batch's dead letters onto the outputs, and its counts into the metrics."""
        for domain, n in batch.readings.items():
            self._readings[domain].inc(n)
        for key, letter in batch.dead:
            self._dead[letter.reason].inc()
            batch.out.add(DEADLETTER_TOPIC, key, letter.to_json())

    def _dead_letter(self, out: Outputs, key: bytes | None, letter: DeadLetter) -> None:
        """One dead letter onto ``out`` now, counted."""
        out.add(DEADLETTER_TOPIC, self.counting.dl_key(key), letter.to_json())
        self._dead[letter.reason].inc()

    async def flush_state(self) -> None:
        """The state written so far, on its changelogs (:meth:`TableWriter.flush`)."""
        await self.writer.flush()

    async def close_idle(self, active_partitions: frozenset[int]) -> None:
        """Close the windows of districts silent for ``idle_close_s`` (timer; the
        caller holds the state lock, since a batch awaits its sends midway).

        Which districts are idle is :meth:`WindowCloser.idle`'s to say. Records still
        held as ahead of their stream are settled first
        (:meth:`DistrictWindows.settle_held`). Windows whose end the clock has not
        reached stay open.
        """
        if self._fenced():
            return
        now_ts = time.time()
        candidates = self.closer.idle(active_partitions, now_ts)
        if not candidates:
            return
        batch = self._begin(datetime.fromtimestamp(now_ts, UTC))
        try:
            for district, state in candidates:
                batch.touched[district] = state
                self.counting.settle_held(state, now_ts, self.settings.idle_close_s, batch)
                self.raiser.decide_early(batch)
                batch.early.clear()
                self.closer.publish(batch, state.close_all(until=now_ts), "idle")
            self._publish_batch(batch)
            await self.writer.commit(batch.touched, batch.out, batch.detected)
        except Exception as exc:
            self._rollback()
            if not (isinstance(exc, Fenced) or transient(exc)):
                log.error(
                    "closing idle districts failed: %s\n%s",
                    self.dead_letters.scrub(_failure(exc)),
                    "".join(traceback.format_tb(exc.__traceback__)),
                )
