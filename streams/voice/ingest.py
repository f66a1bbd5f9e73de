"""Appeals in the worker: ``city.events.appeals`` records -> citizen readings, or dead letters.

Each record is an :class:`~streams.core.messages.AppealRecord` (a channel's code and
its payload), keyed by the appeal's district. :meth:`AppealIngest.accept` gives what
:meth:`streams.ingest.ingestor.Ingestor.accept` gives for a department's event, so the
worker counts an appeal in its district's windows like any reading:

Its dead letters (here, and those the windows make: ``late``, held too long) show the
record's channel and the names of its payload's fields only (:meth:`AppealIngest.outline`);
the record itself is sealed in them.

1. **decode**: size (``too_large``), JSON (``bad_json``), no key named twice
   (``duplicate_key``), nesting (``too_deep``), the envelope's shape (``schema``);
2. **validate**: the channel's adapter reads the payload, the text and id are
   de-identified, the category is resolved against ``config/appeals.yaml``
   (:class:`~streams.voice.channels.AppealIntake`: ``unknown_channel``,
   ``unknown_category``, ``unknown_district``, ``unknown_street`` and the payload's own
   ``schema`` and ``wrong_type``); the message key must be the district
   (``key_mismatch``) and the event time within the clock's bounds
   (``future_event_time``, ``too_old``); only then is the appeal looked up among
   earlier ones (``repeat_of``), so a mistyped date cannot expire the runs;
3. **reading**: the emotion is scored (:mod:`streams.voice.emotion`) and the appeal
   becomes a reading of ``citizen.appeals``, or of ``citizen.extreme_appeals`` when its
   intensity is extreme, valued at the intensity, with the appeal in its attributes
   (channel, category, departments, de-identified text, rating, repeat, emotion and
   the words that drove it).

Nothing a record holds raises out of :meth:`AppealIngest.accept`.

The reading's document is built in one dict literal, a street it lacks deleted after, and
hands orjson the appeal's and the emotion's tuples, which it writes as the lists they
were copied to: 8.7 µs → 8.2 µs for the reading and its facets (median of 7 passes over
the throughput benchmark's 10,000 appeals, the machine under load), the same bytes.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from functools import cached_property
from typing import Any, NamedTuple

import orjson

from streams.core.messages import (
    APPEAL_SAMPLE_CHARS,
    APPEALS_TOPIC,
    DeadLetter,
    DeadLetterReason,
    DeadLetterStage,
    Origin,
)
from streams.ingest.decoding import duplicate_key
from streams.ingest.ingestor import (
    FACET_PLACE_SEP,
    PREVIEW_CHARS,
    Accepted,
    Facets,
    Ingestor,
)
from streams.ingest.rejection import Rejected, failure_detail, quoted
from streams.voice.appeals import Appeal, AppealRejected, AppealsConfig, load_appeals
from streams.voice.channels import AppealIntake, RunsOf
from streams.voice.emotion import Emotion, Scorer

APPEAL = "citizen.appeals"
EXTREME_APPEAL = "citizen.extreme_appeals"
ENVELOPE_KEYS = frozenset({"channel", "payload"})
#: The indicators whose readings carry facets (:func:`_facets`)
FACETED = frozenset({APPEAL, EXTREME_APPEAL})


def shape(doc: Any, limit: int) -> tuple[int, bool]:
    """The keys and string values a decoded JSON document holds, and whether it nests
    more than ``limit`` objects and arrays deep: one walk with its own stack, which
    stops at the limit (no recursion to exhaust). (Deeper than the limit, the count is
    of what the walk had seen.)

    Each container's values are looked at where it is taken from the stack, and only
    the containers among them go on it: 1.0 µs for a simulated appeal's record, against
    2.0 for a walk that stacked every value (median of 5 passes over 20,000 records).
    """
    if isinstance(doc, str):
        return 1, False
    if not isinstance(doc, dict | list):
        return 0, False
    strings, stack = 0, [(doc, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return strings, True
        values: Iterable[Any] = item
        if isinstance(item, dict):
            strings += len(item)
            values = item.values()
        for value in values:
            if isinstance(value, str):
                strings += 1
            elif isinstance(value, dict | list):
                stack.append((value, depth + 1))
    return strings, False


class ReadAppeal(NamedTuple):
    """What an appeal's record gives before any state is asked (:meth:`AppealReader.read`):
    the appeal and its emotion, or why it fails. ``failure`` with an ``appeal``: the
    emotion failed, which dead-letters the appeal only if it passes the checks after."""

    appeal: Appeal | None
    emotion: Emotion | None
    failure: tuple[DeadLetterReason, str, DeadLetterStage] | None = None


class AppealReader:
    """The part of an appeal's ingest that needs no state, only the record and the
    configuration: decode, the channel's adapter with de-identification and the
    catalogue, and the emotion. The same record read anywhere gives the same result,
    so the worker may read a batch's appeals in other processes
    (:mod:`streams.kafka.readers`)."""

    def __init__(
        self, intake: AppealIntake, scorer: Scorer, max_bytes: int, max_depth: int
    ) -> None:
        self.intake, self.scorer = intake, scorer
        self.max_bytes, self.max_depth = max_bytes, max_depth

    def read(self, value: bytes) -> ReadAppeal:
        """The appeal a record holds and its emotion, or why it fails; raises nothing."""
        stage = DeadLetterStage.DECODE
        try:
            channel, payload = self._envelope(value)
            stage = DeadLetterStage.VALIDATE
            appeal = self.intake.read(channel, payload)
        except Rejected as rej:
            return ReadAppeal(None, None, (rej.reason, rej.detail, rej.stage or stage))
        except AppealRejected as rej:
            reason = DeadLetterReason(rej.reason.value)
            return ReadAppeal(None, None, (reason, f"{rej.field}: {rej.detail}", stage))
        except Exception as exc:
            return ReadAppeal(
                None, None, (DeadLetterReason.UNPROCESSABLE, failure_detail(exc), stage)
            )
        try:
            return ReadAppeal(appeal, self.scorer.score(appeal.text))
        except Exception as exc:
            failure = (DeadLetterReason.UNPROCESSABLE, failure_detail(exc), DeadLetterStage.READING)
            return ReadAppeal(appeal, None, failure)

    def _envelope(self, value: bytes) -> tuple[str, dict[str, Any]]:
        """The channel and payload of a record, or :class:`Rejected` (stage decode)."""
        if len(value) > self.max_bytes:
            raise Rejected(
                DeadLetterReason.TOO_LARGE,
                f"the record takes {len(value)} bytes; at most {self.max_bytes} are accepted",
            )
        try:
            doc = orjson.loads(value)
        except orjson.JSONDecodeError as exc:
            raise Rejected(DeadLetterReason.BAD_JSON, str(exc)) from None
        strings, deeper = shape(doc, self.max_depth)
        if deeper:
            raise Rejected(DeadLetterReason.TOO_DEEP, f"nested deeper than {self.max_depth} levels")
        # a key named twice leaves fewer keys than the record's quotes tell (escaped
        # quotes too: then the record is read again to be sure)
        if value.count(b'"') != 2 * strings:
            twice = duplicate_key(value)
            if twice is not None:
                raise Rejected(
                    DeadLetterReason.DUPLICATE_KEY, f"key {quoted(twice)} is named twice"
                )
        if not isinstance(doc, dict) or set(doc) != ENVELOPE_KEYS:
            found = sorted(doc) if isinstance(doc, dict) else type(doc).__name__
            raise Rejected(
                DeadLetterReason.SCHEMA,
                f"an appeal record is an object of 'channel' and 'payload', not {found}",
            )
        channel, payload = doc["channel"], doc["payload"]
        if not isinstance(channel, str) or not isinstance(payload, dict):
            raise Rejected(
                DeadLetterReason.WRONG_TYPE,
                "'channel' must be a string and 'payload' an object",
            )
        return channel, payload


class AppealIngest:
    """Reads appeals for the worker; shares the ingest stage's limits, clock bounds,
    de-identification and dead letters."""

    def __init__(self, ingestor: Ingestor, intake: AppealIntake, scorer: Scorer) -> None:
        self.ingestor, self.intake, self.scorer = ingestor, intake, scorer
        self.dead_letters = ingestor.dead_letters
        # every dead letter of an appeal, wherever in the worker it is made
        self.dead_letters.previewers[APPEALS_TOPIC] = self.outline
        self.reader = AppealReader(
            intake, scorer, ingestor.decoder.max_event_bytes, ingestor.decoder.max_depth
        )
        self._district_keys = {code: code.encode() for code in ingestor.cfg.districts}
        indicators = ingestor.cfg.indicators
        self._unit = {code: indicators[code].unit for code in (APPEAL, EXTREME_APPEAL)}
        self._sharing = {code: indicators[code].sharing.value for code in (APPEAL, EXTREME_APPEAL)}
        self._domain = indicators[APPEAL].domain

    def accept(
        self,
        topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes,
        now: datetime,
        read: ReadAppeal | None = None,
    ) -> Accepted | DeadLetter:
        """The record's reading or dead letter; ``read``: what :meth:`AppealReader.read`
        gave for it already (elsewhere), else it is read here."""
        if read is None:
            read = self.reader.read(value)
        appeal, emotion, failure = read
        stage = DeadLetterStage.VALIDATE
        try:
            if appeal is not None:
                t, repeat_of = self._checked(appeal, key, now)
                if emotion is not None:
                    stage = DeadLetterStage.READING
                    where = (topic, partition, offset)
                    return self._reading(appeal, repeat_of, emotion, t, where, now)
            assert failure is not None, "an appeal read without its emotion says why"
            reason, detail, stage = failure
        except Rejected as rej:
            reason, detail, stage = rej.reason, rej.detail, rej.stage or stage
        except Exception as exc:
            reason, detail = DeadLetterReason.UNPROCESSABLE, failure_detail(exc)
        origin = Origin(topic=topic, partition=partition, offset=offset)
        return self.dead_letters.make(origin, key, value, reason, detail, now, stage)

    def outline(self, value: bytes) -> str:
        """A dead letter's preview of an appeal record: its channel and the names of its
        payload's fields, never their values. An appeal holds a citizen's own words and
        details, which pattern matching cannot be trusted to find all of (a name without
        a cue); the whole record is in the dead letter, sealed."""
        try:
            doc = orjson.loads(value)
        except orjson.JSONDecodeError:
            return f"({len(value)} bytes, not JSON)"
        if not isinstance(doc, dict):
            return f"(JSON {type(doc).__name__}, not an object)"
        channel = doc.get("channel")
        payload = doc.get("payload")
        fields = ", ".join(sorted(payload)[:40]) if isinstance(payload, dict) else "(not an object)"
        shown = channel if isinstance(channel, str) and len(channel) <= 64 else "(?)"
        text = f"channel {shown}; payload fields: {fields}"
        return self.ingestor.deid.scrub_narrative(text[:PREVIEW_CHARS])[0]

    def _checked(
        self, appeal: Appeal, key: bytes | None, now: datetime
    ) -> tuple[float, str | None]:
        """The appeal's time in seconds since the epoch, and the first appeal of its run
        when it repeats one; :class:`Rejected` for a key that is not its district or a
        time out of the clock's bounds."""
        if key is None or self._district_keys.get(appeal.district) != key:
            shown = None if key is None else key.decode("utf-8", "replace")
            raise Rejected(
                DeadLetterReason.KEY_MISMATCH,
                f"message key {quoted(shown)} is not the appeal's district "
                f"{quoted(appeal.district)}",
            )
        t = self.ingestor.catalogue.check_time(appeal.event_time, now)  # its timestamp()
        return t, self.intake.repeat_of(appeal, t)

    def _reading(
        self,
        appeal: Appeal,
        repeat_of: str | None,
        emotion: Emotion,
        t: float,
        origin: tuple[str, int, int],
        now: datetime,
    ) -> Accepted:
        """The appeal as a reading (fields in :class:`~streams.core.messages.Reading`'s
        order, as the ingest stage writes them)."""
        indicator = EXTREME_APPEAL if emotion.extreme else APPEAL
        attributes: dict[str, Any] = {
            "channel": appeal.channel,
            "category": appeal.category,
            "department": appeal.department,
            "co_departments": appeal.co_departments,  # orjson writes a tuple as a list
            "text": appeal.text,
        }
        if appeal.rating is not None:
            attributes["rating"] = appeal.rating
        if repeat_of is not None:
            attributes["repeat_of"] = repeat_of
        attributes["emotion"] = {
            "intensity": emotion.intensity,
            "category": emotion.category,
            "extreme": emotion.extreme,
            "evidence": emotion.evidence,
        }
        doc: dict[str, Any] = {
            "event_id": appeal.appeal_id,
            "source": appeal.channel,
            "district": appeal.district,
            "street": appeal.street,
            "indicator": indicator,
            "domain": self._domain,
            "value": emotion.intensity,
            "unit": self._unit[indicator],
            "sharing": self._sharing[indicator],
            "event_time": appeal.event_time,
            "ingest_time": now,
            "attributes": attributes,
            "origin": {"topic": origin[0], "partition": origin[1], "offset": origin[2]},
        }
        if appeal.street is None:
            del doc["street"]  # the other keys keep their order
        data = orjson.dumps(doc, option=orjson.OPT_UTC_Z)
        facets = _facets(appeal, emotion, repeat_of is not None)
        return Accepted(
            indicator,
            self._domain,
            appeal.street,
            emotion.intensity,
            appeal.event_time,
            data,
            t,
            facets,
        )


def _facets(appeal: Appeal, emotion: Emotion, repeat: bool) -> Facets:
    """An appeal's tallies (:data:`~streams.ingest.ingestor.APPEAL_TALLY`) for its category
    and its category in its street, and its sample, ranked by its intensity."""
    category = appeal.category
    keys: tuple[str, ...] = (category,)
    if appeal.street is not None:
        keys = (category, f"{category}{FACET_PLACE_SEP}{appeal.street}")
    rating = appeal.rating
    counts = (
        1.0,
        1.0 if emotion.extreme else 0.0,
        emotion.intensity,
        0.0 if rating is None else 1.0,
        1.0 if rating == "bad" else 0.0,
        1.0 if repeat else 0.0,
    )
    sample = {
        "appeal_id": appeal.appeal_id,
        "channel": appeal.channel,
        "street": appeal.street,
        "time": appeal.event_time.isoformat(),
        "text": appeal.text[:APPEAL_SAMPLE_CHARS],
        "intensity": emotion.intensity,
        "emotion": emotion.category,
        "extreme": emotion.extreme,
        "words": list(emotion.evidence),
        "repeat": repeat,
    }
    return Facets(keys, counts, sample, emotion.intensity)


class AppealStage:
    """A worker's :class:`AppealIngest`, built at once when given the appeals' catalogue
    (the worker, which so fails at start on a wrong one), else at the first appeal from
    the city's config directory: the lexicon takes about a second to load, which a
    process that never sees an appeal need not spend."""

    def __init__(
        self,
        ingestor: Ingestor,
        appeals: AppealsConfig | None = None,
        *,
        runs_of: RunsOf | None = None,
    ) -> None:
        """``runs_of``: each district's repeat runs, kept in its state (the worker's
        windows); without it the runs are kept in memory."""
        self._ingestor, self._appeals, self._runs_of = ingestor, appeals, runs_of
        if appeals is not None:
            _ = self.ingest

    @cached_property
    def ingest(self) -> AppealIngest:
        ingestor = self._ingestor
        appeals = self._appeals or load_appeals(ingestor.cfg)
        intake = AppealIntake(appeals, ingestor.deid, runs_of=self._runs_of)
        return AppealIngest(ingestor, intake, Scorer())

    def accept_any(
        self,
        topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes,
        now: datetime,
    ) -> Accepted | DeadLetter:
        """A record of any input topic: an appeal here, a department's event through the
        ingest stage."""
        stage = self.ingest.accept if topic == APPEALS_TOPIC else self._ingestor.accept
        return stage(topic, partition, offset, key, value, now)

    def read_any(
        self,
        topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes,
        now: datetime,
    ) -> Accepted | DeadLetter | ReadAppeal:
        """What a record gives before any state is asked: a department's event's reading
        or dead letter, an appeal's :class:`ReadAppeal` (then :meth:`AppealIngest.accept`
        finishes it). The same anywhere: the worker's reader processes run it."""
        if topic == APPEALS_TOPIC:
            return self.ingest.reader.read(value)
        return self._ingestor.accept(topic, partition, offset, key, value, now)
