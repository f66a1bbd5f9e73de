"""No record can make ingest raise: limits on size, nesting and attributes, duplicate keys,
times far from the clock, unforeseen failures, and dead letters that keep the record
sealed and say nothing personal."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from streams.core.config import load_config
from streams.core.messages import DeadLetter, DeadLetterReason, DeadLetterStage, Origin, Reading
from streams.ingest.decoding import nests_deeper
from streams.ingest.deid import Deidentifier
from streams.ingest.ingestor import Accepted, Ingestor
from streams.ingest.sealing import Sealer, SealError

NOW = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)
CFG = load_config()
SEALER = Sealer(b"k" * 32)
INGEST = Ingestor(CFG, Deidentifier(b"test-key"), sealer=SEALER)
KEY = b"339901"


def event(**over: Any) -> dict[str, Any]:
    """A traffic event; fields set to None stay in the document as null."""
    base: dict[str, Any] = {
        "event_id": "tr-1",
        "source": "traffic.loop.339901001.01",
        "district": "339901",
        "street": "339901001",
        "indicator": "traffic.speed_kmh",
        "value": 36.0,
        "unit": "km/h",
        "event_time": "2026-11-24T07:59:30+08:00",
    }
    base.update(over)
    return base


def hotline(**attributes: Any) -> dict[str, Any]:
    return event(
        event_id="hl-1",
        source="hotline.12345",
        street=None,
        indicator="hotline.complaints",
        value=1.0,
        unit="count",
        attributes=attributes,
    )


def both(raw: bytes, topic: str = "city.events.traffic") -> Accepted | DeadLetter:
    """The hot path's answer, after checking the model path agrees with it."""
    fast = INGEST.accept(topic, 0, 7, KEY, raw, NOW)
    slow = INGEST.process(Origin(topic=topic, partition=0, offset=7), KEY, raw, NOW)
    if isinstance(fast, DeadLetter):
        assert isinstance(slow, DeadLetter)
        assert (slow.reason, slow.stage, slow.detail) == (fast.reason, fast.stage, fast.detail)
    else:
        assert isinstance(slow, Reading)
        assert Reading.model_validate_json(fast.json) == slow
    return fast


def rejected(raw: bytes, topic: str = "city.events.traffic") -> DeadLetter:
    out = both(raw, topic)
    assert isinstance(out, DeadLetter), out
    return out


def nested(depth: int) -> dict[str, Any]:
    inner: dict[str, Any] = {"level": depth}
    for _ in range(depth - 1):
        inner = {"a": inner}
    return inner


# --- size and nesting ---------------------------------------------------------------------


def test_a_record_over_the_size_limit_is_dead_lettered_before_it_is_parsed() -> None:
    raw = orjson.dumps(hotline(text="噪音" * 12_000))
    assert len(raw) > 64 * 1024
    out = rejected(raw, "city.events.hotline")
    assert out.reason is DeadLetterReason.TOO_LARGE and out.stage is DeadLetterStage.DECODE
    assert f"the record is {len(raw)} bytes; at most 65536" in out.detail
    assert out.size == len(raw)
    # the dead letter stays small: the record is sealed up to the limit only
    key, value = INGEST.dead_letters.open(out)
    assert key == KEY and value == raw[: 64 * 1024]
    assert len(out.to_json()) < 100 * 1024


def test_attributes_nested_300_deep_are_refused_and_do_not_crash_serialisation() -> None:
    raw = json.dumps(event(indicator="iot.pm25", unit="µg/m³", attributes=nested(300))).encode()
    out = rejected(raw, "city.events.iot")
    assert out.reason is DeadLetterReason.TOO_DEEP
    assert "deeper than 8 levels" in out.detail


@pytest.mark.parametrize(("depth", "accepted"), [(6, True), (7, False)])
def test_the_document_may_nest_eight_levels_and_no_more(depth: int, accepted: bool) -> None:
    # the envelope is level 1 and attributes level 2: six more levels inside them
    attributes = {"extra": nested(depth)}
    raw = orjson.dumps(hotline(**attributes))
    # the attributes object is one more level, and the envelope around it one more
    assert not nests_deeper(attributes, depth + 1) and nests_deeper(attributes, depth)
    out = both(raw, "city.events.hotline")
    assert isinstance(out, Accepted) is accepted
    if not accepted:
        assert isinstance(out, DeadLetter) and out.reason is DeadLetterReason.TOO_DEEP


def test_brackets_inside_text_are_not_nesting() -> None:
    raw = orjson.dumps(hotline(text="[[[[{{{{ 很吵 }}}}]]]] " * 10 + '\\"{'))
    assert isinstance(both(raw, "city.events.hotline"), Accepted)


def test_attributes_larger_than_their_limit_once_published_are_refused() -> None:
    raw = orjson.dumps(hotline(text="x" * 17_000))
    out = rejected(raw, "city.events.hotline")
    assert out.reason is DeadLetterReason.TOO_LARGE and out.stage is DeadLetterStage.READING
    assert "at most 16384 are accepted" in out.detail


# --- duplicate keys -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        (orjson.dumps(event()).replace(b'"value":36.0', b'"value":36.0,"value":999.0'), "value"),
        (
            orjson.dumps(event()).replace(b'"street":"339901001"', b'"street":null,"street":null'),
            "street",
        ),
        (
            orjson.dumps(hotline(text="吵")).replace(b'"text":"', b'"text":"a","text":"'),
            "text",
        ),
        (
            orjson.dumps(hotline(caller={"phone": "1"})).replace(
                b'"phone":"1"', b'"phone":"1","phone":"2"'
            ),
            "phone",
        ),
        # the same key spelt with an escape, and with an escaped quote in a string
        (
            orjson.dumps(event()).replace(b'"value":36.0', b'"value":36.0,"\\u0076alue":1.0'),
            "value",
        ),
        (
            orjson.dumps(hotline(text='"')).replace(b'"text":"', b'"text":"a","text":"'),
            "text",
        ),
        # a time with nanoseconds takes the model's path: the check is the same there
        (
            orjson.dumps(event(event_time="2026-11-24T07:59:30.123456789+08:00")).replace(
                b'"unit":"km/h"', b'"unit":"km/h","unit":"mph"'
            ),
            "unit",
        ),
    ],
    ids=[
        "envelope",
        "null-twice",
        "attribute",
        "nested-attribute",
        "escaped-key",
        "escaped-quote",
        "model-path",
    ],
)
def test_a_key_named_twice_in_one_object_is_refused_with_its_name(raw: bytes, key: str) -> None:
    topic = "city.events.hotline" if b"hotline" in raw else "city.events.traffic"
    out = rejected(raw, topic)
    assert out.reason is DeadLetterReason.DUPLICATE_KEY and out.stage is DeadLetterStage.DECODE
    assert f"key {key!r} appears twice in one object" in out.detail


@pytest.mark.parametrize(
    "raw",
    [
        orjson.dumps(event(street=None, location=None)),  # optional fields given as null
        orjson.dumps(hotline(text='他说"太吵了"，还有 \\ 反斜杠', n=[1, "a", {"b": None}])),
        b'{ "event_id" : "tr-1" , "source":"s", "district":"339901", "indicator":'
        b'"traffic.speed_kmh", "value":36, "unit":"km/h",'
        b'"event_time":"2026-11-24T07:59:30+08:00", "attributes": {} }',
        orjson.dumps(hotline(text="event_id value street")),  # key names inside text
    ],
    ids=["nulls", "escaped-quotes", "whitespace", "key-names-in-text"],
)
def test_documents_without_repeated_keys_are_accepted_whatever_their_spelling(raw: bytes) -> None:
    topic = "city.events.hotline" if b"hotline" in raw else "city.events.traffic"
    assert isinstance(both(raw, topic), Accepted)


# --- times far from the clock -----------------------------------------------------------


@pytest.mark.parametrize(
    "when",
    ["1970-01-01T00:00:00Z", "0001-01-01T00:00:00+08:00", "2026-10-24T07:59:59Z"],
)
def test_records_older_than_the_horizon_are_too_old(when: str) -> None:
    out = rejected(orjson.dumps(event(event_time=when)))
    assert out.reason is DeadLetterReason.TOO_OLD and out.stage is DeadLetterStage.VALIDATE
    assert "more than 30 days, 0:00:00 before" in out.detail


def test_a_record_just_inside_the_horizon_is_accepted() -> None:
    assert isinstance(both(orjson.dumps(event(event_time="2026-10-25T08:00:01Z"))), Accepted)


@pytest.mark.parametrize("when", ["9999-12-31T23:59:59-12:00", "2026-11-24T08:05:01Z"])
def test_records_beyond_the_clock_are_future_without_overflowing(when: str) -> None:
    out = rejected(orjson.dumps(event(event_time=when)))
    assert out.reason is DeadLetterReason.FUTURE_EVENT_TIME


# --- what a dead letter shows -------------------------------------------------------------


def test_a_dead_letter_keeps_the_record_sealed_and_shows_nothing_personal() -> None:
    raw = orjson.dumps(event(street="13812345678", event_id="zhang.san@example.com"))
    out = rejected(raw)
    assert out.reason is DeadLetterReason.UNKNOWN_STREET
    published = out.to_json().decode()
    assert "13812345678" not in published and "zhang.san@example.com" not in published
    assert "<phone:" in out.detail and "<phone:" in out.preview and "<email:" in out.preview
    assert INGEST.dead_letters.open(out) == (KEY, raw)
    # the seal is bound to the record's origin and to the key
    moved = out.model_copy(
        update={"origin": Origin(topic="city.events.iot", partition=0, offset=7)}
    )
    with pytest.raises(SealError, match=r"not the record of city\.events\.iot:0:7"):
        INGEST.dead_letters.open(moved)
    with pytest.raises(SealError):
        Sealer(b"another key").open("city.events.traffic:0:7", out.sealed)


def test_a_cut_preview_does_not_end_in_part_of_an_identifier() -> None:
    raw = orjson.dumps(hotline(text="吵" * 507 + "13812345678"))[:-3]
    out = rejected(raw + b"garbage", "city.events.hotline")
    assert out.preview.endswith("…")
    assert "138" not in out.preview[-20:]


def test_a_failure_no_check_foresaw_is_dead_lettered_with_its_stage(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(self: Deidentifier, attrs: Any) -> Any:
        raise RuntimeError("scrubber broke on 13812345678")

    monkeypatch.setattr(Deidentifier, "scrub_attributes", broken)
    out = INGEST.accept("city.events.hotline", 0, 7, KEY, orjson.dumps(hotline(t="x")), NOW)
    assert isinstance(out, DeadLetter)
    assert out.reason is DeadLetterReason.UNPROCESSABLE
    assert out.stage is DeadLetterStage.DEIDENTIFY
    assert out.detail.startswith("RuntimeError: scrubber broke on <phone:")
