"""Ingest turns raw events into canonical readings, or dead letters with the right reason."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from streams.config import load_config
from streams.deid import Deidentifier
from streams.ingest import Ingestor
from streams.schemas import DeadLetter, DeadLetterReason, Origin, Reading

NOW = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)
CFG = load_config()
INGEST = Ingestor(CFG, Deidentifier(b"test-key"), max_future_s=300)
TRAFFIC = Origin(topic="city.events.traffic", partition=3, offset=41)


def event(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "event_id": "tr-1",
        "source": "traffic.loop.339901001.01",
        "district": "339901",
        "street": "339901001",
        "indicator": "traffic.speed_kmh",
        "value": 10.0,
        "unit": "m/s",
        "event_time": "2026-11-24T07:59:30+08:00",
    }
    base.update(over)
    return {k: v for k, v in base.items() if v is not None}


def run(
    body: dict[str, Any] | bytes, *, key: bytes | None = b"339901", origin: Origin = TRAFFIC
) -> Reading | DeadLetter:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    return INGEST.process(origin, key, raw, NOW)


def test_valid_event_becomes_a_reading_in_the_canonical_unit_with_ingest_time_and_origin() -> None:
    out = run(event())
    assert isinstance(out, Reading)
    assert out.value == pytest.approx(36.0) and out.unit == "km/h"
    assert out.domain == "traffic" and out.sharing.value == "open"
    assert out.ingest_time == NOW
    assert out.event_time == datetime(2026, 11, 23, 23, 59, 30, tzinfo=UTC)
    assert out.origin == TRAFFIC
    assert Reading.model_validate_json(out.to_json()) == out


@pytest.mark.parametrize(
    ("body", "reason", "detail"),
    [
        (b'{"event_id": "x", "value": 3', DeadLetterReason.BAD_JSON, "not valid JSON"),
        (b"[1, 2]", DeadLetterReason.SCHEMA, "expected a JSON object"),
        (event(event_id=None), DeadLetterReason.SCHEMA, "event_id: Field required"),
        (event(extra_field=1), DeadLetterReason.SCHEMA, "extra_field"),
        (event(value="36"), DeadLetterReason.WRONG_TYPE, "value"),
        (event(event_time=1764000000), DeadLetterReason.WRONG_TYPE, "event_time"),
        (event(event_time="2026-11-24T07:59:30"), DeadLetterReason.SCHEMA, "event_time"),
        (event(district="999999"), DeadLetterReason.UNKNOWN_DISTRICT, "'999999'"),
        (
            event(street="339902001"),
            DeadLetterReason.UNKNOWN_STREET,
            "not a street of district '339901'",
        ),
        (
            event(indicator="traffic.teleports"),
            DeadLetterReason.UNKNOWN_INDICATOR,
            "'traffic.teleports'",
        ),
        (
            event(indicator="iot.pm25", unit="µg/m³"),
            DeadLetterReason.WRONG_TOPIC,
            "'city.events.iot'",
        ),
        (
            event(unit="furlongs/fortnight"),
            DeadLetterReason.UNKNOWN_UNIT,
            "accepted: ['km/h', 'm/s', 'mph']",
        ),
        (event(value=-3.0), DeadLetterReason.OUT_OF_RANGE, "outside the physical range [0, 200]"),
        (event(value=70.0), DeadLetterReason.OUT_OF_RANGE, "252 km/h"),
        (event(event_time="2026-11-25T08:00:00Z"), DeadLetterReason.FUTURE_EVENT_TIME, "ahead of"),
    ],
)
def test_invalid_event_goes_to_dead_letter_with_reason_and_original_bytes(
    body: dict[str, Any] | bytes, reason: DeadLetterReason, detail: str
) -> None:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    out = run(raw)
    assert isinstance(out, DeadLetter)
    assert out.reason is reason
    assert detail in out.detail
    assert out.original == raw
    assert out.key == b"339901"
    assert out.origin == TRAFFIC
    assert DeadLetter.model_validate_json(out.to_json()) == out


@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"-Infinity"])
def test_nan_and_infinity_are_not_values(literal: bytes) -> None:
    raw = orjson.dumps(event(value=1.5)).replace(b"1.5", literal)
    out = run(raw)
    assert isinstance(out, DeadLetter) and out.reason is DeadLetterReason.NOT_FINITE


@pytest.mark.parametrize("key", [None, b"339902"])
def test_event_whose_key_is_not_its_district_is_rejected_so_state_stays_on_its_partition(
    key: bytes | None,
) -> None:
    out = run(event(), key=key)
    assert isinstance(out, DeadLetter) and out.reason is DeadLetterReason.KEY_MISMATCH


def test_personal_identifiers_in_hotline_text_never_reach_the_reading() -> None:
    body = event(
        indicator="hotline.complaints",
        unit="count",
        value=1.0,
        street=None,
        attributes={
            "category": "噪音",
            "text": "市民13812345678反映楼下工地夜间施工，车牌粤B·D12345，邮箱zhang.san@example.com",
            "caller": {"phone": "+86 139-0000-1111"},
        },
    )
    out = run(body, origin=Origin(topic="city.events.hotline", partition=0, offset=7))
    assert isinstance(out, Reading)
    published = out.to_json().decode()
    for secret in (
        "13812345678",
        "粤B·D12345",
        "zhang.san@example.com",
        "139-0000-1111",
        "13900001111",
    ):
        assert secret not in published
    assert "<phone:" in out.attributes["text"] and "<plate:" in out.attributes["text"]
    assert out.attributes["category"] == "噪音"


def test_scrubbed_identifiers_are_counted_in_metrics() -> None:
    from streams import metrics

    before = metrics.identifiers_scrubbed._value.get()
    body = event(
        indicator="hotline.complaints",
        unit="count",
        value=1.0,
        street=None,
        attributes={"text": "请回电13812345678或15900001111"},
    )
    run(body, origin=Origin(topic="city.events.hotline", partition=0, offset=8))
    assert metrics.identifiers_scrubbed._value.get() - before == 2
