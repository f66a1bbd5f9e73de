"""Ingest: raw department events -> canonical readings, or dead letters with a reason.

Pure logic with no Kafka: the worker feeds it the bytes and where they came
from. Whatever a record holds, the result is exactly one accepted reading or
one dead letter; nothing a record contains can raise out of
:meth:`Ingestor.accept`. Checks, in order, each with its stage:

1. **decode** (:mod:`streams.ingest.decoding`): size, nesting, JSON matching
   :class:`~streams.core.messages.CityEvent`, no key named twice in one object;
2. **validate** (:mod:`streams.ingest.catalogue`): the district, street,
   message key, indicator, topic, unit and range against the city's config,
   and the event time against the clock;
3. **deidentify** and **reading** (here): personal identifiers in
   ``event_id``, ``source`` and every attribute key and value become keyed
   pseudonyms, and the reading is serialised; its attributes must fit in
   ``max_attributes_bytes`` (``too_large``).

A failure nobody foresaw at any stage becomes ``unprocessable`` with that
stage. Dead letters are built by :class:`DeadLetters`: the original record
sealed (:mod:`streams.ingest.sealing`), the detail and a preview scrubbed of
personal data.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from datetime import datetime
from typing import Any, NamedTuple

import orjson
import pydantic_core

from streams.core import metrics
from streams.core.config import CityConfig
from streams.core.messages import (
    REASON_STAGE,
    CityEvent,
    DeadLetter,
    DeadLetterReason,
    DeadLetterStage,
    Location,
    Origin,
    Reading,
)
from streams.ingest.catalogue import CatalogueCheck
from streams.ingest.catalogue import outside_range as outside_range
from streams.ingest.decoding import EventDecoder
from streams.ingest.deid import Deidentifier
from streams.ingest.rejection import Rejected
from streams.ingest.rejection import failure_detail as _failure
from streams.ingest.rejection import quoted as quoted
from streams.ingest.sealing import Sealer
from streams.ingest.structs import FastEvent

DEFAULT_MAX_EVENT_BYTES = 64 * 1024
DEFAULT_MAX_ATTRIBUTES_BYTES = 16 * 1024
DEFAULT_MAX_DEPTH = 8
DEFAULT_MAX_AGE_S = 30 * 86400.0
PREVIEW_CHARS = 512  # of a dead letter's original, scrubbed

# read per record: an enum member costs about 0.2 µs to look up on its class
_DECODE, _VALIDATE, _DEIDENTIFY, _READING = (
    DeadLetterStage.DECODE,
    DeadLetterStage.VALIDATE,
    DeadLetterStage.DEIDENTIFY,
    DeadLetterStage.READING,
)


#: What an appeal adds to each of its facets' tallies (:attr:`Facets.counts`), in order:
#: appeals, those in extreme emotion, the sum of their intensities, those rating a
#: service, those rating it bad, and those repeating an earlier appeal.
APPEAL_TALLY = ("appeals", "extreme", "intensity", "rated", "bad", "repeats")
#: An appeal's facets: its category, and ``<category>@<street>`` when it names a street.
FACET_PLACE_SEP = "@"


class Facets(NamedTuple):
    """What a reading adds to its window besides its indicator's aggregate: counts per
    slice of the district (an appeal's category, and its category in its street), and a
    sample the window keeps for the first slice when it ranks high enough
    (:meth:`streams.state.windows.DistrictWindows.tally`)."""

    keys: tuple[str, ...]
    counts: tuple[float, ...]
    sample: dict[str, Any] | None = None
    rank: float = 0.0


class Accepted(NamedTuple):
    """A valid event: what the windows need, and its Reading as JSON."""

    indicator: str
    domain: str
    street: str | None
    value: float
    event_time: datetime
    json: bytes
    t: float  # the event time in seconds since the epoch
    facets: Facets | None = None  # an appeal's (streams.voice.ingest)


class DeadLetters:
    """Builds dead letters: sealed original, scrubbed detail and preview."""

    def __init__(self, deid: Deidentifier, sealer: Sealer) -> None:
        self.deid = deid
        self.sealer = sealer
        self.max_sealed_bytes = DEFAULT_MAX_EVENT_BYTES
        # topic -> how its records are previewed, where :meth:`preview` would say too
        # much (an appeal's text: streams.voice.ingest)
        self.previewers: dict[str, Callable[[bytes], str]] = {}

    def make(
        self,
        origin: Origin,
        key: bytes | None,
        value: bytes,
        reason: DeadLetterReason,
        detail: str,
        now: datetime,
        stage: DeadLetterStage | None = None,
    ) -> DeadLetter:
        """One dead letter. A value beyond ``max_sealed_bytes`` is sealed only up to it
        (``size`` tells); the whole record stays on its input topic at ``origin``."""
        where = f"{origin.topic}:{origin.partition}:{origin.offset}"
        return DeadLetter(
            reason=reason,
            stage=stage or REASON_STAGE[reason],
            detail=self.scrub(detail),
            origin=origin,
            size=len(value),
            preview=self.previewers.get(origin.topic, self.preview)(value),
            sealed=self.sealer.seal(where, key, value[: self.max_sealed_bytes]),
            dead_lettered_at=now,
        )

    def scrub(self, text: str) -> str:
        return self.deid.scrub_text(text)[0]

    def preview(self, value: bytes) -> str:
        """The start of the record as text, personal identifiers pseudonymised.

        A cut identifier would escape the patterns, so a preview that is cut drops
        the characters an identifier could be made of at its end.
        """
        text = value[: PREVIEW_CHARS * 4].decode("utf-8", "replace")
        if len(text) > PREVIEW_CHARS or len(value) > PREVIEW_CHARS * 4:
            text = re.sub(r"[\w.@＠·・\- +()（）]+$", "", text[:PREVIEW_CHARS]) + "…"
        return self.scrub(text)

    def open(self, letter: DeadLetter) -> tuple[bytes | None, bytes]:
        """The original key and value of a dead letter (needs the sealing key)."""
        o = letter.origin
        return self.sealer.open(f"{o.topic}:{o.partition}:{o.offset}", letter.sealed)


class Ingestor:
    """Validates, normalises and de-identifies events of the configured city."""

    def __init__(
        self,
        cfg: CityConfig,
        deid: Deidentifier,
        *,
        max_future_s: float = 300.0,
        max_age_s: float = DEFAULT_MAX_AGE_S,
        max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES,
        max_attributes_bytes: int = DEFAULT_MAX_ATTRIBUTES_BYTES,
        max_depth: int = DEFAULT_MAX_DEPTH,
        sealer: Sealer | None = None,
    ) -> None:
        self.cfg = cfg
        self.deid = deid
        self.decoder = EventDecoder(max_event_bytes, max_depth)
        self.catalogue = CatalogueCheck(cfg, max_future_s=max_future_s, max_age_s=max_age_s)
        self.max_attributes_bytes = max_attributes_bytes
        # without a configured key, dead letters of this process are sealed under a
        # random one: nobody can open them, and nothing leaks
        self.dead_letters = DeadLetters(deid, sealer or Sealer(_random_key()))
        self.dead_letters.max_sealed_bytes = max_event_bytes
        self._indicators = cfg.indicators
        self._sharing_of = {c: i.sharing.value for c, i in cfg.indicators.items()}
        self._sources: dict[str, tuple[str, int]] = {}  # source id -> scrubbed, replaced

    def validate(
        self, topic: str, key: bytes | None, value: bytes, now: datetime, *, fast: bool = True
    ) -> tuple[CityEvent | FastEvent, float, float]:
        """The event, its value in the canonical unit and its time in seconds since the
        epoch, or raise :class:`Rejected`.

        ``fast``: decode with msgspec first, falling back to the model for anything
        it does not take (``fast=False``: the model alone; both give the same result).
        """
        stage = DeadLetterStage.DECODE
        try:
            event = self.decoder.decode(value, fast=fast)
            stage = DeadLetterStage.VALIDATE
            canonical, t = self.catalogue.check(topic, key, event, now)
        except Rejected:
            raise
        except Exception as exc:
            raise Rejected(DeadLetterReason.UNPROCESSABLE, _failure(exc), stage) from None
        return event, canonical, t

    # -- de-identify and build ---------------------------------------------------------
    def _scrubbed(
        self, event: CityEvent | FastEvent, count: bool = True
    ) -> tuple[str, str, dict[str, Any]]:
        """``event_id``, ``source`` and attributes with personal identifiers pseudonymised."""
        deid = self.deid
        event_id, n_id = deid.scrub_identifier(event.event_id)
        source, n_source = deid.scrub_identifier(event.source)
        scrubbed = n_id + n_source
        attributes: dict[str, Any] = {}
        if event.attributes:
            attributes, n = deid.scrub_attributes(event.attributes)
            scrubbed += n
        if scrubbed and count:
            metrics.identifiers_scrubbed.inc(scrubbed)
        return event_id, source, attributes

    def _attributes_json(self, attributes: dict[str, Any]) -> bytes:
        try:
            data = orjson.dumps(attributes)
        except TypeError:  # integers beyond 64 bits: pydantic writes them
            data = pydantic_core.to_json(attributes)
        if len(data) > self.max_attributes_bytes:
            raise Rejected(
                DeadLetterReason.TOO_LARGE,
                f"the attributes take {len(data)} bytes once published; at most "
                f"{self.max_attributes_bytes} are accepted",
                DeadLetterStage.READING,
            )
        return data

    def to_reading(
        self,
        event: CityEvent | FastEvent,
        canonical: float,
        origin: Origin,
        now: datetime,
        *,
        count_scrubbed: bool = True,
    ) -> Reading:
        indicator = self.cfg.indicators[event.indicator]
        event_id, source, attributes = self._scrubbed(event, count_scrubbed)
        if attributes:
            self._attributes_json(attributes)
        return Reading(
            event_id=event_id,
            source=source,
            district=event.district,
            street=event.street or None,
            indicator=event.indicator,
            domain=indicator.domain,
            value=canonical,
            unit=indicator.unit,
            sharing=indicator.sharing,
            event_time=event.event_time,
            ingest_time=now,
            location=Location(lat=event.location.lat, lon=event.location.lon)
            if event.location
            else None,
            attributes=attributes,
            origin=origin,
        )

    def accept(
        self,
        topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes,
        now: datetime,
    ) -> Accepted | DeadLetter:
        """:meth:`process` for the hot path: the reading as JSON, built without the model.

        The document is the one :meth:`to_reading` gives for the same event (the
        tests hold the two equal); building it directly costs a quarter of the time.
        Never raises: whatever fails becomes a dead letter.
        """
        # one guarded block for every stage (cheaper than a call and a guard for each);
        # ``stage`` says where an unforeseen failure happened
        stage = _DECODE
        try:
            event = self.decoder.decode(value)
            stage = _VALIDATE
            canonical, t = self.catalogue.check(topic, key, event, now)
            stage = _DEIDENTIFY
            indicator = self._indicators[event.indicator]
            deid = self.deid
            event_id, scrubbed = deid.scrub_identifier(event.event_id)
            # a city has a few thousand sensors: their ids are scrubbed once
            known = self._sources.get(event.source)
            if known is None:
                if len(self._sources) >= 4096:
                    self._sources.clear()
                known = self._sources[event.source] = deid.scrub_identifier(event.source)
            source, n = known
            scrubbed += n
            attributes: dict[str, Any] = {}
            if event.attributes:
                attributes, n = deid.scrub_attributes(event.attributes)
                scrubbed += n
            if scrubbed:
                metrics.identifiers_scrubbed.inc(scrubbed)
            stage = _READING
            # fields in Reading's order; None fields left out, as Reading.to_json does
            doc: dict[str, Any] = {
                "event_id": event_id,
                "source": source,
                "district": event.district,
            }
            street = event.street or None
            if street is not None:
                doc["street"] = street
            doc["indicator"] = event.indicator
            doc["domain"] = indicator.domain
            doc["value"] = canonical
            doc["unit"] = indicator.unit
            doc["sharing"] = self._sharing_of[event.indicator]
            doc["event_time"] = event.event_time
            doc["ingest_time"] = now
            location = event.location
            if location:
                doc["location"] = {"lat": location.lat, "lon": location.lon}
            doc["attributes"] = (
                orjson.Fragment(self._attributes_json(attributes)) if attributes else attributes
            )
            doc["origin"] = {"topic": topic, "partition": partition, "offset": offset}
            data = orjson.dumps(doc, option=orjson.OPT_UTC_Z)
        except Rejected as rej:
            origin = Origin(topic=topic, partition=partition, offset=offset)
            return self.dead_letters.make(
                origin, key, value, rej.reason, rej.detail, now, rej.stage or stage
            )
        except Exception as exc:
            origin = Origin(topic=topic, partition=partition, offset=offset)
            return self.dead_letters.make(
                origin, key, value, DeadLetterReason.UNPROCESSABLE, _failure(exc), now, stage
            )
        return Accepted(
            event.indicator, indicator.domain, street, canonical, event.event_time, data, t
        )

    def process(
        self, origin: Origin, key: bytes | None, value: bytes, now: datetime
    ) -> Reading | DeadLetter:
        """One raw event in, one Reading or one DeadLetter out (the model path)."""
        try:
            event, canonical, _ = self.validate(origin.topic, key, value, now, fast=False)
            return self.to_reading(event, canonical, origin, now)
        except Rejected as rej:
            return self.dead_letters.make(
                origin, key, value, rej.reason, rej.detail, now, rej.stage
            )
        except Exception as exc:
            return self.dead_letters.make(
                origin,
                key,
                value,
                DeadLetterReason.UNPROCESSABLE,
                _failure(exc),
                now,
                DeadLetterStage.READING,
            )


def _random_key() -> bytes:
    return os.urandom(32)
