"""Ingest turns raw events into canonical readings, or dead letters with the right reason."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.core.config import load_config
from streams.core.messages import DeadLetter, DeadLetterReason, Origin, Reading
from streams.ingest.deid import Deidentifier
from streams.ingest.ingestor import Accepted, Ingestor
from streams.sim.simulator import CitySimulator

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
def test_invalid_event_goes_to_dead_letter_with_reason_and_its_original_bytes_sealed(
    body: dict[str, Any] | bytes, reason: DeadLetterReason, detail: str
) -> None:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    out = run(raw)
    assert isinstance(out, DeadLetter)
    assert out.reason is reason
    assert detail in out.detail
    assert INGEST.dead_letters.open(out) == (b"339901", raw)
    assert out.size == len(raw)
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
    from streams.core import metrics

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


def assert_same_reading(topic: str, partition: int, offset: int, key: bytes, raw: bytes) -> None:
    """The worker's hot path and the model path give the same document, or the same dead letter."""
    slow = INGEST.process(Origin(topic=topic, partition=partition, offset=offset), key, raw, NOW)
    fast = INGEST.accept(topic, partition, offset, key, raw, NOW)
    if isinstance(slow, DeadLetter):
        assert isinstance(fast, DeadLetter)
        # equal but for the seal (a fresh nonce each time), which opens to the same record
        assert fast.model_copy(update={"sealed": ""}) == slow.model_copy(update={"sealed": ""})
        assert INGEST.dead_letters.open(fast) == INGEST.dead_letters.open(slow) == (key, raw)
        return
    assert isinstance(fast, Accepted)
    assert Reading.model_validate_json(fast.json) == slow
    assert set(orjson.loads(fast.json)) == set(
        orjson.loads(slow.to_json())
    )  # same None fields left out
    assert (fast.indicator, fast.domain, fast.street, fast.value, fast.event_time) == (
        slow.indicator,
        slow.domain,
        slow.street,
        slow.value,
        slow.event_time,
    )


def test_hot_path_readings_equal_the_model_readings_for_a_simulated_city() -> None:
    sim = CitySimulator(CFG, seed=5, start=NOW - timedelta(hours=2), malformed_share=0.1)
    events = sim.take(3000)
    assert any(b"attributes" in e.value for e in events)
    for i, ev in enumerate(events):
        assert_same_reading(ev.topic, i % 8, i, ev.key, ev.value)


@settings(max_examples=200, deadline=None)
@given(
    value=st.floats(min_value=0, max_value=60, allow_nan=False),
    offset_min=st.integers(min_value=-12 * 60, max_value=14 * 60),
    micro=st.integers(min_value=0, max_value=999_999),
    street=st.sampled_from([None, "339901001"]),
    location=st.one_of(
        st.none(),
        st.fixed_dictionaries(
            {"lat": st.floats(-90, 90, allow_nan=False), "lon": st.floats(-180, 180)}
        ),
    ),
    attributes=st.dictionaries(
        st.text(min_size=1, max_size=8),
        st.one_of(st.text(max_size=30), st.integers(), st.lists(st.text(max_size=12), max_size=3)),
        max_size=4,
    ),
)
def test_hot_path_readings_equal_the_model_readings_for_any_valid_event(
    value: float,
    offset_min: int,
    micro: int,
    street: str | None,
    location: dict[str, float] | None,
    attributes: dict[str, Any],
) -> None:
    tz = timezone(timedelta(minutes=offset_min))
    when = (NOW - timedelta(minutes=5)).astimezone(tz).replace(microsecond=micro)
    body = event(value=value, event_time=when.isoformat(), street=street, location=location)
    body["attributes"] = attributes
    # stdlib json: department systems may send integers beyond 64 bits
    raw = json.dumps(body, ensure_ascii=False).encode()
    assert_same_reading("city.events.traffic", 3, 41, b"339901", raw)


# Values a department system might put in any field: right and wrong types, edge numbers
# and time strings in the many spellings ISO 8601 and RFC 3339 allow or nearly allow.
ODD_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(["", "x" * 257, "12.5", "1e400", "NaN", "339901", "339901001"]),
    st.sampled_from(
        [
            "2026-11-24T07:59:30+08:00",
            "2026-11-24T07:59:30Z",
            "2026-11-24t07:59:30z",
            "2026-11-24 07:59:30+08:00",
            "2026-11-24T07:59:30",
            "2026-11-24T07:59:30.123456789+08:00",
            "2026-11-24T07:59:60Z",
            "2026-11-24T07:59+08:00",
            "2026-11-24",
            "2026-W48-2T07:59:30Z",
            "20261124T075930Z",
            "2026-11-24T07:59:30+0800",
            "2026-11-24T07:59:30-00:00",
            "2026-11-24T07:59:30+24:00",
        ]
    ),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.sampled_from(["lat", "lon", "alt"]), st.floats(-200, 200), max_size=3),
)


@settings(max_examples=400, deadline=None)
@given(
    changes=st.dictionaries(
        st.sampled_from(
            [
                "event_id",
                "source",
                "district",
                "street",
                "indicator",
                "value",
                "unit",
                "event_time",
                "location",
                "attributes",
                "extra",
            ]
        ),
        ODD_VALUES,
        max_size=3,
    ),
    dropped=st.sets(st.sampled_from(["event_id", "value", "event_time", "street"]), max_size=2),
)
def test_hot_path_decides_every_odd_event_as_the_model_does(
    changes: dict[str, Any], dropped: set[str]
) -> None:
    body = event(location={"lat": 30.2, "lon": 120.1})
    body.update(changes)
    for name in dropped:
        body.pop(name, None)
    raw = json.dumps(body, ensure_ascii=False).encode()
    assert_same_reading("city.events.traffic", 3, 41, b"339901", raw)


@pytest.mark.parametrize(
    "raw",
    [
        b'{"event_id":"a","event_id":"b","source":"s","district":"339901","indicator":"traffic.speed_kmh","value":1,"unit":"km/h","event_time":"2026-11-24T07:59:30Z"}',
        b'{"event_id":"a","source":"s","district":"339901","indicator":"traffic.speed_kmh","value":1e400,"unit":"km/h","event_time":"2026-11-24T07:59:30Z"}',
        b'{"event_id":"a","source":"s","district":"339901","indicator":"traffic.speed_kmh","value":NaN,"unit":"km/h","event_time":"2026-11-24T07:59:30Z"}',
        b'{"event_id":"\\ud800","source":"s","district":"339901","indicator":"traffic.speed_kmh","value":1,"unit":"km/h","event_time":"2026-11-24T07:59:30Z"}',
        b'{"event_id":"a","source":"s","district":"339901","indicator":"traffic.speed_kmh","value":1,"unit":"km/h","event_time":"2026-11-24T07:59:30Z","attributes":{"n":123456789012345678901234567890}}',
        b'{"event_id":"a","source":"s","district":"339901","indicator":"traffic.speed_kmh","value":1,"unit":"km/h","event_time":"2026-11-24T07:59:30Z"} ',
        b'\xef\xbb\xbf{"event_id":"a","source":"s","district":"339901","indicator":"traffic.speed_kmh","value":1,"unit":"km/h","event_time":"2026-11-24T07:59:30Z"}',
    ],
    ids=[
        "duplicate-key",
        "overflow",
        "nan-literal",
        "lone-surrogate",
        "huge-int",
        "trailing-space",
        "bom",
    ],
)
def test_hot_path_decides_edge_documents_as_the_model_does(raw: bytes) -> None:
    assert_same_reading("city.events.traffic", 3, 41, b"339901", raw)


@pytest.mark.parametrize(
    "when",
    [
        "2026-11-24T07:59:30.1234567+08:00",
        "2026-11-24T15:59:59.9999999+08:00",
        "2026-11-24T07:59:30.123456789Z",
        "2026-11-24t07:59:30z",
        "2026-11-24 07:59:30+08:00",
        "2026-11-24T07:59:30+0800",
        "2026-11-24T07:59:30,5+08:00",
        "2026-11-24T07:59:30.+08:00",
    ],
)
def test_hot_path_reads_every_spelling_of_a_time_as_the_model_does(when: str) -> None:
    raw = orjson.dumps(event(event_time=when))
    assert_same_reading("city.events.traffic", 3, 41, b"339901", raw)
