"""Ingest: raw department events -> canonical readings, or dead letters with a reason.

Pure logic with no Kafka: the agent in :mod:`streams.pipeline` feeds it the bytes
and where they came from. Checks, in order:

1. the bytes are JSON and match :class:`~streams.schemas.CityEvent`
   (``bad_json``, ``schema``, ``wrong_type``, ``not_finite``);
2. the message key is the event's district, so the event lands on the
   partition that owns the district's state (``key_mismatch``);
3. the district, street and indicator are in the city's config, and the
   indicator arrives on its own source topic (``unknown_district``,
   ``unknown_street``, ``unknown_indicator``, ``wrong_topic``);
4. the unit is the canonical one or an accepted conversion (``unknown_unit``),
   and the canonical value is physically possible (``out_of_range``);
5. the event time is not too far ahead of the clock (``future_event_time``).

Valid events become :class:`~streams.schemas.Reading` with personal identifiers
in free-text attributes replaced by keyed pseudonyms.
"""

from __future__ import annotations

import base64
import math
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Any, NamedTuple

import msgspec
import orjson
from pydantic import ValidationError

from streams import metrics
from streams.config import CityConfig
from streams.deid import Deidentifier
from streams.schemas import (
    EVENT_TOPICS,
    CityEvent,
    DeadLetter,
    DeadLetterReason,
    Location,
    Origin,
    Reading,
)

_TYPE_ERRORS = ("_type", "_parsing", "model_attributes_type")

_Text = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]


class _FastLocation(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    lat: Annotated[float, msgspec.Meta(ge=-90, le=90)]
    lon: Annotated[float, msgspec.Meta(ge=-180, le=180)]


class _FastEvent(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """:class:`~streams.schemas.CityEvent`'s constraints, for msgspec's decoder.

    The hot path decodes with it (a quarter of pydantic's time); whatever it
    refuses goes through the model, which alone decides and explains rejections.
    It accepts nothing the model refuses (property tests hold the two equal).
    """

    event_id: _Text
    source: _Text
    district: _Text
    indicator: _Text
    value: float
    unit: Annotated[str, msgspec.Meta(min_length=1, max_length=32)]
    event_time: Annotated[datetime, msgspec.Meta(tz=True)]
    street: _Text | None = None
    location: _FastLocation | None = None
    attributes: dict[str, Any] = msgspec.field(default_factory=dict)


_FAST_DECODER = msgspec.json.Decoder(_FastEvent)
# msgspec rounds a time's digits beyond the microsecond, the model truncates them:
# a document with a time of seven or more fractional digits goes the model's way
_SUB_MICRO = re.compile(rb":[0-9]{2}\.[0-9]{7}")


class Accepted(NamedTuple):
    """A valid event: what the windows need, and its Reading as JSON."""

    indicator: str
    domain: str
    street: str | None
    value: float
    event_time: datetime
    json: bytes


@dataclass(frozen=True)
class Rejected(Exception):
    """An event that failed a check; becomes a dead letter."""

    reason: DeadLetterReason
    detail: str


def _classify(exc: ValidationError) -> Rejected:
    err = exc.errors(include_url=False)[0]
    kind, loc = err["type"], ".".join(str(p) for p in err["loc"]) or "(document)"
    if kind in ("json_invalid", "json_type"):
        return Rejected(DeadLetterReason.BAD_JSON, f"not valid JSON: {err['msg']}")
    if kind == "finite_number":
        return Rejected(DeadLetterReason.NOT_FINITE, f"{loc}: NaN and infinity are not values")
    if kind == "model_type":
        return Rejected(DeadLetterReason.SCHEMA, "expected a JSON object")
    if kind.endswith(_TYPE_ERRORS):
        return Rejected(DeadLetterReason.WRONG_TYPE, f"{loc}: {err['msg']}")
    return Rejected(DeadLetterReason.SCHEMA, f"{loc}: {err['msg']}")


class Ingestor:
    """Validates, normalises and de-identifies events of the configured city."""

    def __init__(self, cfg: CityConfig, deid: Deidentifier, *, max_future_s: float = 300.0) -> None:
        self.cfg = cfg
        self.deid = deid
        self.max_future = timedelta(seconds=max_future_s)
        self._source_of_topic = {topic: source for source, topic in EVENT_TOPICS.items()}

    def validate(
        self, topic: str, key: bytes | None, value: bytes, now: datetime, *, fast: bool = True
    ) -> tuple[CityEvent | _FastEvent, float]:
        """The event and its value in the canonical unit, or raise :class:`Rejected`.

        ``fast``: decode with msgspec first, falling back to the model for anything
        it does not take (``fast=False``: the model alone; both give the same result).
        """
        event: CityEvent | _FastEvent
        try:
            if not fast or _SUB_MICRO.search(value):
                raise msgspec.DecodeError
            event = _FAST_DECODER.decode(value)
            if not math.isfinite(event.value):  # an overflowing literal: the model says why
                raise msgspec.DecodeError
        except msgspec.DecodeError:
            try:
                event = CityEvent.model_validate_json(value)
            except ValidationError as exc:
                raise _classify(exc) from None
        district = self.cfg.districts.get(event.district)
        if district is None:
            raise Rejected(
                DeadLetterReason.UNKNOWN_DISTRICT, f"district {event.district!r} is not in the city"
            )
        if (
            event.street is not None
            and self.cfg.city.street_district.get(event.street) != event.district
        ):
            raise Rejected(
                DeadLetterReason.UNKNOWN_STREET,
                f"street {event.street!r} is not a street of district {event.district!r}",
            )
        if key is None or key.decode("utf-8", "replace") != event.district:
            shown = None if key is None else key.decode("utf-8", "replace")
            raise Rejected(
                DeadLetterReason.KEY_MISMATCH,
                f"message key {shown!r} is not the event's district {event.district!r}",
            )
        indicator = self.cfg.indicators.get(event.indicator)
        if indicator is None:
            raise Rejected(
                DeadLetterReason.UNKNOWN_INDICATOR,
                f"indicator {event.indicator!r} is not in the catalogue",
            )
        source = self._source_of_topic.get(topic)
        if source is not None and indicator.source.value != source:
            raise Rejected(
                DeadLetterReason.WRONG_TOPIC,
                f"indicator {indicator.code!r} belongs on {EVENT_TOPICS[indicator.source.value]!r}, not {topic!r}",
            )
        canonical = indicator.to_canonical(event.value, event.unit)
        if canonical is None:
            accepted = [indicator.unit, *indicator.conversions]
            raise Rejected(
                DeadLetterReason.UNKNOWN_UNIT,
                f"unit {event.unit!r} is not accepted for {indicator.code!r}; accepted: {accepted}",
            )
        lo, hi = indicator.range
        if not lo <= canonical <= hi:
            raise Rejected(
                DeadLetterReason.OUT_OF_RANGE,
                f"{indicator.code} = {canonical:g} {indicator.unit} is outside the physical range [{lo:g}, {hi:g}]",
            )
        if event.event_time - now > self.max_future:
            raise Rejected(
                DeadLetterReason.FUTURE_EVENT_TIME,
                f"event time {event.event_time.isoformat()} is more than {self.max_future} ahead of {now.isoformat()}",
            )
        return event, canonical

    def to_reading(
        self,
        event: CityEvent | _FastEvent,
        canonical: float,
        origin: Origin,
        now: datetime,
        *,
        count_scrubbed: bool = True,
    ) -> Reading:
        indicator = self.cfg.indicators[event.indicator]
        attributes, scrubbed = (
            self.deid.scrub_attributes(event.attributes) if event.attributes else ({}, 0)
        )
        if scrubbed and count_scrubbed:
            metrics.identifiers_scrubbed.inc(scrubbed)
        return Reading(
            event_id=event.event_id,
            source=event.source,
            district=event.district,
            street=event.street,
            indicator=event.indicator,
            domain=indicator.domain,
            value=canonical,
            unit=indicator.unit,
            sharing=indicator.sharing,
            event_time=event.event_time,
            ingest_time=now,
            location=None
            if event.location is None
            else Location(lat=event.location.lat, lon=event.location.lon),
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
        """
        try:
            event, canonical = self.validate(topic, key, value, now)
        except Rejected as rej:
            origin = Origin(topic=topic, partition=partition, offset=offset)
            return dead_letter(origin, key, value, rej.reason, rej.detail, now)
        indicator = self.cfg.indicators[event.indicator]
        attributes: dict[str, Any] = {}
        if event.attributes:
            attributes, scrubbed = self.deid.scrub_attributes(event.attributes)
            if scrubbed:
                metrics.identifiers_scrubbed.inc(scrubbed)
        # fields in Reading's order; None fields left out, as Reading.to_json does
        doc: dict[str, Any] = {
            "event_id": event.event_id,
            "source": event.source,
            "district": event.district,
        }
        if event.street is not None:
            doc["street"] = event.street
        doc["indicator"] = event.indicator
        doc["domain"] = indicator.domain
        doc["value"] = canonical
        doc["unit"] = indicator.unit
        doc["sharing"] = indicator.sharing.value
        doc["event_time"] = event.event_time
        doc["ingest_time"] = now
        if event.location is not None:
            doc["location"] = {"lat": event.location.lat, "lon": event.location.lon}
        doc["attributes"] = attributes
        doc["origin"] = {"topic": topic, "partition": partition, "offset": offset}
        try:
            data = orjson.dumps(doc, option=orjson.OPT_UTC_Z)
        except TypeError:  # what orjson cannot write (integers beyond 64 bits): the model can
            origin = Origin(topic=topic, partition=partition, offset=offset)
            data = self.to_reading(event, canonical, origin, now, count_scrubbed=False).to_json()
        return Accepted(
            indicator=event.indicator,
            domain=indicator.domain,
            street=event.street,
            value=canonical,
            event_time=event.event_time,
            json=data,
        )

    def process(
        self, origin: Origin, key: bytes | None, value: bytes, now: datetime
    ) -> Reading | DeadLetter:
        """One raw event in, one Reading or one DeadLetter out."""
        try:
            event, canonical = self.validate(origin.topic, key, value, now, fast=False)
        except Rejected as rej:
            return dead_letter(origin, key, value, rej.reason, rej.detail, now)
        return self.to_reading(event, canonical, origin, now)


def dead_letter(
    origin: Origin,
    key: bytes | None,
    value: bytes,
    reason: DeadLetterReason,
    detail: str,
    now: datetime,
) -> DeadLetter:
    return DeadLetter(
        reason=reason,
        detail=detail,
        origin=origin,
        key_b64=None if key is None else base64.b64encode(key).decode("ascii"),
        original_b64=base64.b64encode(value).decode("ascii"),
        dead_lettered_at=now,
    )
