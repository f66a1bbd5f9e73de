"""Appeals in the worker: one record of ``city.events.appeals`` becomes one citizen
reading (the appeal de-identified, categorised and scored in its attributes) or one
dead letter naming why, and a reading is counted in its district's windows."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.core.config import load_config
from streams.core.messages import (
    APPEALS_TOPIC,
    READINGS_TOPIC,
    DeadLetter,
    DeadLetterReason,
    DeadLetterStage,
    Reading,
)
from streams.core.settings import Settings
from streams.ingest.deid import Deidentifier
from streams.ingest.ingestor import Accepted, Ingestor
from streams.kafka.feed import InputRecord
from streams.kafka.processor import VitalsProcessor
from streams.kafka.tables import MemoryTable
from streams.state.windows import DistrictWindows
from streams.voice.appeals import load_appeals
from streams.voice.channels import AppealIntake
from streams.voice.emotion import Scorer
from streams.voice.ingest import APPEAL, EXTREME_APPEAL, AppealIngest, shape
from tests.fuzz.batch import CFG, CTX, _Outputs

KEY = b"test-key-not-for-production-0123456789"
CST = timezone(timedelta(hours=8))
DISTRICT = "339901"
PII = ("13812345678", "张三", "新华路12号")


@pytest.fixture(scope="module")
def scorer() -> Scorer:
    return Scorer()


@pytest.fixture
def ingest(scorer: Scorer) -> AppealIngest:
    cfg = load_config()
    ingestor = Ingestor(cfg, Deidentifier(KEY), max_event_bytes=4096, max_depth=8)
    return AppealIngest(ingestor, AppealIntake(load_appeals(cfg), ingestor.deid), scorer)


def now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def hotline(at: datetime, **changes: Any) -> dict[str, Any]:
    payload = {
        "order_no": "GD2026112400123",
        "accepted_at": at.astimezone(CST).strftime("%Y-%m-%d %H:%M:%S"),
        "category": "噪声扰民",
        "district_code": DISTRICT,
        "street_code": "339901001",
        "content": "工地晚上还在施工，我叫张三，电话13812345678，地址新华路12号。",
        "caller_name": "张三",
        "caller_phone": "13812345678",
        "address": "新华路12号3单元502",
    }
    return {**payload, **changes}


def record(payload: Any, channel: Any = "hotline_12345") -> bytes:
    return orjson.dumps({"channel": channel, "payload": payload})


def accept(ingest: AppealIngest, value: bytes, key: bytes | None = DISTRICT.encode()) -> Any:
    return ingest.accept(APPEALS_TOPIC, 0, 7, key, value, now())


def test_an_appeal_becomes_a_citizen_reading_with_the_appeal_in_its_attributes(
    ingest: AppealIngest,
) -> None:
    at = now() - timedelta(minutes=5)
    result = accept(ingest, record(hotline(at)))
    assert isinstance(result, Accepted)
    reading = Reading.model_validate_json(result.json)
    assert (reading.district, reading.street, reading.domain) == (DISTRICT, "339901001", "citizen")
    assert reading.indicator in (APPEAL, EXTREME_APPEAL)
    assert reading.event_time == at
    assert reading.origin.topic == APPEALS_TOPIC and reading.origin.offset == 7
    attributes = reading.attributes
    assert attributes["channel"] == "hotline_12345"
    assert attributes["category"] == "noise"
    assert attributes["department"] == "environment"
    assert attributes["co_departments"] == ["public_security"]
    assert attributes["text"].startswith("工地晚上还在施工")
    emotion = attributes["emotion"]
    assert reading.value == emotion["intensity"] and 0 <= reading.value <= 1
    assert emotion["extreme"] is (reading.indicator == EXTREME_APPEAL)
    assert result.value == reading.value and result.t == at.timestamp()
    for identifier in PII:
        assert identifier not in result.json.decode()


def test_extreme_emotion_is_a_reading_of_extreme_appeals_with_its_words(
    ingest: AppealIngest,
) -> None:
    text = "太气人了！！！投诉了三次根本没人管，再不处理我们就去区政府门口拉横幅！"
    calm = "请问小区门口的路灯什么时候能修好？谢谢。"
    angry = accept(ingest, record(hotline(now(), content=text, order_no="A1")))
    quiet = accept(ingest, record(hotline(now(), content=calm, order_no="A2")))
    assert angry.indicator == EXTREME_APPEAL and quiet.indicator == APPEAL
    assert angry.value > quiet.value
    evidence = orjson.loads(angry.json)["attributes"]["emotion"]["evidence"]
    assert evidence and all(word in text for word in evidence)


def test_an_appeal_about_the_same_place_and_category_names_the_first(
    ingest: AppealIngest,
) -> None:
    first = accept(ingest, record(hotline(now() - timedelta(hours=2), order_no="R1")))
    # a mistyped date far ahead is dead-lettered before the repeats see it
    wrong = accept(ingest, record(hotline(now() + timedelta(days=30), order_no="R2")))
    again = accept(ingest, record(hotline(now(), order_no="R3")))
    assert isinstance(wrong, DeadLetter) and wrong.reason is DeadLetterReason.FUTURE_EVENT_TIME
    first_id = Reading.model_validate_json(first.json).event_id
    assert "repeat_of" not in orjson.loads(first.json)["attributes"]
    assert orjson.loads(again.json)["attributes"]["repeat_of"] == first_id


@pytest.mark.parametrize(
    ("value", "key", "reason", "stage"),
    [
        (b"{not json", DISTRICT, DeadLetterReason.BAD_JSON, DeadLetterStage.DECODE),
        (
            b'{"channel": "wechat", "channel": "hotline_12345", "payload": {}}',
            DISTRICT,
            DeadLetterReason.DUPLICATE_KEY,
            DeadLetterStage.DECODE,
        ),
        (b'{"channel": "wechat"}', DISTRICT, DeadLetterReason.SCHEMA, DeadLetterStage.DECODE),
        (b"[1, 2]", DISTRICT, DeadLetterReason.SCHEMA, DeadLetterStage.DECODE),
        (
            b'{"channel": 5, "payload": {}}',
            DISTRICT,
            DeadLetterReason.WRONG_TYPE,
            DeadLetterStage.DECODE,
        ),
        (
            b'{"channel": "wechat", "payload": ' + b'{"a": ' * 12 + b"1" + b"}" * 13,
            DISTRICT,
            DeadLetterReason.TOO_DEEP,
            DeadLetterStage.DECODE,
        ),
        (
            record({"x": "字" * 3000}),
            DISTRICT,
            DeadLetterReason.TOO_LARGE,
            DeadLetterStage.DECODE,
        ),
        (
            record(hotline(datetime(2026, 1, 1, tzinfo=UTC)), channel="fax"),
            DISTRICT,
            DeadLetterReason.UNKNOWN_CHANNEL,
            DeadLetterStage.VALIDATE,
        ),
        (
            record(hotline(datetime(2026, 1, 1, tzinfo=UTC), category="外星人入侵")),
            DISTRICT,
            DeadLetterReason.UNKNOWN_CATEGORY,
            DeadLetterStage.VALIDATE,
        ),
        (
            record(hotline(datetime(2026, 1, 1, tzinfo=UTC), district_code="999999")),
            "999999",
            DeadLetterReason.UNKNOWN_DISTRICT,
            DeadLetterStage.VALIDATE,
        ),
        (
            record(hotline(datetime(2026, 1, 1, tzinfo=UTC))),
            "339902",
            DeadLetterReason.KEY_MISMATCH,
            DeadLetterStage.VALIDATE,
        ),
        (
            record(hotline(datetime(2000, 1, 1, tzinfo=UTC))),
            DISTRICT,
            DeadLetterReason.TOO_OLD,
            DeadLetterStage.VALIDATE,
        ),
    ],
    ids=lambda v: v.value if isinstance(v, DeadLetterReason) else None,
)
def test_a_record_that_does_not_fit_is_a_dead_letter_naming_why(
    ingest: AppealIngest, value: bytes, key: str, reason: DeadLetterReason, stage: DeadLetterStage
) -> None:
    if reason is DeadLetterReason.KEY_MISMATCH:
        value = record(hotline(now()))
    letter = accept(ingest, value, key.encode())
    assert isinstance(letter, DeadLetter)
    assert (letter.reason, letter.stage) == (reason, stage)
    assert letter.origin.topic == APPEALS_TOPIC
    for identifier in PII:
        assert identifier not in letter.detail and identifier not in letter.preview
    # the original is kept, sealed under the dead-letter key (up to the size limit)
    assert ingest.dead_letters.open(letter) == (key.encode(), value[:4096])


def test_a_dead_letter_names_the_field_of_the_payload(ingest: AppealIngest) -> None:
    payload = hotline(now())
    del payload["content"]
    letter = accept(ingest, record(payload))
    assert isinstance(letter, DeadLetter) and letter.reason is DeadLetterReason.SCHEMA
    assert re.match(r"content: ", letter.detail), letter.detail


def test_the_worker_counts_appeals_in_their_district_windows_and_publishes_them() -> None:
    sent: list[tuple[str, bytes | None, bytes]] = []
    processor = _processor(MemoryTable(), sent)
    at = now() - timedelta(minutes=3)
    texts = ["路灯坏了，麻烦修一下。", "太气人了！！！没人管，我们就去区政府门口！", "噪音太吵了"]
    records = [
        InputRecord(
            APPEALS_TOPIC,
            0,
            offset,
            DISTRICT.encode(),
            record(hotline(at + timedelta(seconds=offset), content=text, order_no=f"W{offset}")),
        )
        for offset, text in enumerate(texts)
    ]
    asyncio.run(processor.process_batch(records))
    readings = [Reading.model_validate_json(v) for t, _, v in sent if t == READINGS_TOPIC]
    assert [r.attributes["text"] for r in readings] == texts
    state = processor.table[DISTRICT.encode()]
    minute = at.timestamp() - at.timestamp() % 60
    counted = {
        indicator: agg[0]
        for start, bucket in state.open.items()
        for indicator, agg in bucket.items()
        if start == minute
    }
    extreme = sum(r.indicator == EXTREME_APPEAL for r in readings)
    assert counted.get(EXTREME_APPEAL, 0) == extreme
    assert counted.get(APPEAL, 0) == len(texts) - extreme


def _processor(table: MemoryTable, sent: list[tuple[str, bytes | None, bytes]]) -> VitalsProcessor:
    return VitalsProcessor(
        table,
        CFG,
        Settings(partitions=4),
        outputs=lambda: _Outputs(sent),  # type: ignore[arg-type,return-value]
        progress=lambda topic, partition: (0, 0),
        detection_table=MemoryTable(),
        detection=CTX,
    )


def test_repeats_are_marked_across_a_restart_from_the_district_s_state() -> None:
    at = now() - timedelta(minutes=5)

    def appeal(offset: int, order_no: str) -> InputRecord:
        payload = hotline(at + timedelta(seconds=offset), order_no=order_no)
        return InputRecord(APPEALS_TOPIC, 0, offset, DISTRICT.encode(), record(payload))

    def repeats(sent: list[tuple[str, bytes | None, bytes]]) -> list[tuple[str, Any]]:
        found = [Reading.model_validate_json(v) for t, _, v in sent if t == READINGS_TOPIC]
        return [(r.event_id, r.attributes.get("repeat_of")) for r in found]

    before: list[tuple[str, bytes | None, bytes]] = []
    first = _processor(MemoryTable(), before)
    asyncio.run(first.process_batch([appeal(0, "K1"), appeal(1, "K2")]))
    (first_id, none), (second_id, of) = repeats(before)
    assert (none, of) == (None, first_id)
    # a new worker, with the district's windows as the changelog holds them
    written = orjson.loads(orjson.dumps(first.table[DISTRICT.encode()].to_dict()))
    restored = MemoryTable()
    restored[DISTRICT.encode()] = DistrictWindows.from_dict(written)
    after: list[tuple[str, bytes | None, bytes]] = []
    asyncio.run(_processor(restored, after).process_batch([appeal(1, "K2"), appeal(2, "K3")]))
    ((third_id, of_third),) = repeats(after)  # K2 was applied before: not read again
    assert third_id not in (first_id, second_id) and of_third == first_id


# --- shape: what a record holds, in one walk -----------------------------------------------


def _shape_by_every_value(doc: Any, limit: int) -> tuple[int, bool]:
    """A walk that stacks every value: the plainest way to count and measure depth."""
    strings, stack = 0, [(doc, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            strings += 1
        elif isinstance(item, dict | list):
            if depth > limit:
                return strings, True
            if isinstance(item, dict):
                strings += len(item)
                stack.extend((v, depth + 1) for v in item.values())
            else:
                stack.extend((v, depth + 1) for v in item)
    return strings, False


JSON_DOCS = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=4),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=3), inner, max_size=4)
    ),
    max_leaves=30,
)


@settings(max_examples=1000, deadline=None)
@given(doc=JSON_DOCS, limit=st.integers(min_value=0, max_value=6))
def test_property_shape_counts_and_measures_as_a_walk_of_every_value(doc: Any, limit: int) -> None:
    strings, deeper = shape(doc, limit)
    expected, expected_deeper = _shape_by_every_value(doc, limit)
    assert deeper == expected_deeper
    if not deeper:
        assert strings == expected
