"""Counting accepted readings in their district's windows, outside the common case.

:meth:`streams.kafka.processor.VitalsProcessor._process_batch` counts a reading that
falls in an open window inline (the hot path); this module handles the rest: a
reading whose window has closed (dead-lettered as ``late``), one an early rule may
have to judge at once, and one ahead of its district's stream, held on the changelog,
sealed, until its stream confirms or contradicts it
(:meth:`streams.state.windows.DistrictWindows.admit`). :class:`Batch` is what one
batch (or one idle close) produces besides the state it changes.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from streams.alerting.detection import DetectionContext, DistrictDetection
from streams.alerting.early import Partials, partials
from streams.core import metrics
from streams.core.messages import (
    READINGS_TOPIC,
    DeadLetter,
    DeadLetterReason,
    DeadLetterStage,
    Origin,
)
from streams.core.settings import Settings
from streams.ingest.ingestor import Accepted, Ingestor
from streams.ingest.sealing import SealError
from streams.kafka.feed import Outputs, Record
from streams.state.windows import DistrictWindows
from streams.voice.ingest import FACETED

# dead letters of a batch, with the key each is published under
Dead = list[tuple[bytes | None, DeadLetter]]


@dataclass(slots=True)
class Batch:
    """What one batch (or one idle close) produces, besides the state it changes."""

    out: Outputs
    now: datetime
    dead: Dead = field(default_factory=list)
    readings: Counter[str] = field(default_factory=Counter)
    # the districts whose windows and detection state it changed, to write or put back
    touched: dict[str, DistrictWindows] = field(default_factory=dict)
    detected: dict[str, DistrictDetection] = field(default_factory=dict)
    # counted readings early rules watch: (district, reading, "topic:partition:offset",
    # the open windows' running totals as it was counted, for count, sum and rate rules)
    early: list[tuple[str, Accepted, str, Partials | None]] = field(default_factory=list)


@dataclass(slots=True)
class _HeldRecord:
    """A held record, read back from the state (the shape of an input record)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


class Counting:
    """Counts readings that are not the common case, and letters those it cannot."""

    def __init__(
        self,
        ingestor: Ingestor,
        accept: Callable[[str, int, int, bytes | None, bytes, datetime], Accepted | DeadLetter],
        settings: Settings,
        detection: DetectionContext,
        street_keys: dict[tuple[str, str], str],
        districts: frozenset[bytes],
    ) -> None:
        self.ingestor, self.settings, self.detection = ingestor, settings, detection
        self.accept = accept  # a record of any input topic through its ingest stage
        self.dead_letters = ingestor.dead_letters
        self.early_indicators = detection.early_indicators
        # the indicators whose counted readings take more than the window's aggregate:
        # an early rule's (kept for the batch's end) and appeals (their facets tallied)
        self.watched = self.early_indicators | FACETED
        self.street_keys = street_keys
        self._districts = districts
        self._held = {
            o: metrics.held_records.labels(o) for o in ("held", "confirmed", "dropped", "full")
        }

    def dl_key(self, key: bytes | None) -> bytes | None:
        """The key of a dead letter: the district, when the record named a known one (an
        unknown key is data of the sender's, and may be personal)."""
        return key if key is not None and key in self._districts else None

    def count(
        self, state: DistrictWindows, msg: Record, result: Accepted, t: float, batch: Batch
    ) -> None:
        """Count one accepted record in its window, or dead-letter it as late."""
        key = msg.key
        street_key = (
            self.street_keys.get((result.indicator, result.street))
            if result.street is not None
            else None
        )
        if state.add(result.indicator, result.value, t, msg.topic, street_key):
            batch.out.add(READINGS_TOPIC, key, result.json)
            batch.readings[result.domain] += 1
            if result.indicator in self.watched:
                self.counted(state, result, t, f"{msg.topic}:{msg.partition}", msg.offset, batch)
        else:
            self.late(msg, result, batch)

    def counted(
        self,
        state: DistrictWindows,
        result: Accepted,
        t: float,
        tp: str,
        offset: int,
        batch: Batch,
    ) -> None:
        """A counted reading of :attr:`watched`: its facets tallied, and kept for an early
        rule."""
        facets = result.facets
        if facets is not None:
            state.tally(t, facets.keys, facets.counts, facets.sample, facets.rank)
        if result.indicator in self.early_indicators:
            self.keep_early(state, result, tp, offset, batch)

    def keep_early(
        self, state: DistrictWindows, result: Accepted, tp: str, offset: int, batch: Batch
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

    def late(self, msg: Record, result: Accepted, batch: Batch) -> None:
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
        batch.dead.append((self.dl_key(key), letter))

    def admit(
        self, state: DistrictWindows, msg: Record, result: Accepted, t: float, batch: Batch
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
        self._settle(state, admission.confirmed, admission.contradicted, batch)
        if admission.verdict == "count":
            self.count(state, msg, result, t, batch)
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
            batch.dead.append((self.dl_key(key), letter))

    def settle_held(
        self, state: DistrictWindows, now_ts: float, idle_s: float, batch: Batch
    ) -> None:
        """The district is idle: its held records are counted or dropped for good
        (:meth:`DistrictWindows.settle_held`)."""
        counted, dropped = state.settle_held(now_ts, self.settings.max_ahead_s, idle_s)
        self._settle(state, counted, dropped, batch)

    def _settle(
        self,
        state: DistrictWindows,
        confirmed: list[Any],
        contradicted: list[tuple[Any, str]],
        batch: Batch,
    ) -> None:
        for held in confirmed:
            self._held["confirmed"].inc()
            self._recount(state, held, batch)
        for held, why in contradicted:
            self._held["dropped"].inc()
            batch.dead.append(self._ahead_letter(state, held, why, batch.now))

    def _held_record(self, held: list[Any]) -> tuple[str, int, int, bytes | None, bytes]:
        _, topic, (partition, offset, sealed), _ = held
        key, value = self.dead_letters.sealer.open(f"{topic}:{partition}:{offset}", sealed)
        return topic, partition, offset, key, value

    def _recount(self, state: DistrictWindows, held: list[Any], batch: Batch) -> None:
        """Count a held record its stream confirmed (ingesting its bytes again)."""
        try:
            topic, partition, offset, key, value = self._held_record(held)
        except SealError:
            batch.dead.append((None, self._unopened_letter(state, held, batch.now)))
            return
        result = self.accept(topic, partition, offset, key, value, batch.now)
        if isinstance(result, DeadLetter):  # e.g. it grew too old while it waited
            batch.dead.append((self.dl_key(key), result))
            return
        self.count(state, _HeldRecord(topic, partition, offset, key, value), result, held[0], batch)

    def _ahead_letter(
        self, state: DistrictWindows, held: list[Any], why: str, now: datetime
    ) -> tuple[bytes | None, DeadLetter]:
        try:
            topic, partition, offset, key, value = self._held_record(held)
        except SealError:
            return None, self._unopened_letter(state, held, now)
        when = datetime.fromtimestamp(held[0], UTC).isoformat()
        return self.dl_key(key), self.dead_letters.make(
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
