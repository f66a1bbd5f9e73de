"""The fault verifier's oracle (bench/verify_oracle.py): what it counts as a difference
and what as an at-least-once repeat, on hand-made outputs, without a broker."""

from __future__ import annotations

from datetime import UTC, datetime
from itertools import count
from typing import Any

import orjson
import pytest

from bench.verify_oracle import (
    ALERTS,
    DEADLETTER,
    READINGS,
    VITALS,
    AppealReplay,
    ExpectedReading,
    OutputRecord,
    Produced,
    detection_context,
    expected_alerts,
    expected_windows,
    verify,
)
from streams.core.config import load_config
from streams.core.messages import APPEALS_TOPIC

CFG = load_config()
IOT = "city.events.iot"
T0 = datetime(2026, 11, 24, 8, 0, tzinfo=UTC).timestamp()
_offsets = count()


def counted(t: float, value: float, district: str = "339901") -> Produced:
    """A valid PM2.5 reading at ``t`` (its own offset of partition 0)."""
    reading = ExpectedReading(district, "iot.pm25", None, value, t)
    return Produced(IOT, 0, next(_offsets), "sim", None, reading, (district, t))


def rejected(reason: str, t: float = T0, district: str = "339901") -> Produced:
    return Produced(IOT, 0, next(_offsets), f"sim {reason}", reason, None, (district, t))


def _out(topic: str, doc: dict[str, Any]) -> OutputRecord:
    return OutputRecord(topic, 0, next(_offsets), b"339901", orjson.dumps(doc))


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat()


def reading_of(p: Produced, event_id: str | None = None) -> OutputRecord:
    assert p.reading is not None
    r = p.reading
    return _out(
        READINGS,
        {
            "event_id": event_id or f"e{p.offset}",
            "district": r.district,
            "indicator": r.indicator,
            "value": r.value,
            "event_time": _iso(r.event_time),
            "origin": {"topic": p.topic, "partition": p.partition, "offset": p.offset},
        },
    )


def dead_letter_of(p: Produced, reason: str, detail: str = "rejected") -> OutputRecord:
    origin = {"topic": p.topic, "partition": p.partition, "offset": p.offset}
    return _out(DEADLETTER, {"reason": reason, "detail": detail, "origin": origin})


def vitals(
    start: float, stats: dict[str, tuple[int, float]], district: str = "339901"
) -> OutputRecord:
    indicators = {
        code: {"minute": {"count": n, "sum": s}, "rolling": {}, "health": 100.0}
        for code, (n, s) in stats.items()
    }
    return _out(
        VITALS, {"district": district, "window_start": _iso(start), "indicators": indicators}
    )


def kinds(produced: list[Produced], outputs: list[OutputRecord]) -> list[tuple[str, str]]:
    verdict = verify(produced, outputs, CFG, alerts=False)
    return [(d.check, d.kind) for d in verdict.differences]


def test_a_window_nobody_published_is_a_missing_difference() -> None:
    a, b = counted(T0 + 5, 30.0), counted(T0 + 65, 40.0)
    outputs = [reading_of(a), reading_of(b), vitals(T0, {"iot.pm25": (1, 30.0)})]
    verdict = verify([a, b], outputs, CFG, alerts=False)
    assert [(d.check, d.kind) for d in verdict.differences] == [("window", "missing")]
    assert verdict.differences[0].expected == {"iot.pm25": [1, 40.0]}


def test_a_window_whose_sum_differs_is_a_differing_difference() -> None:
    a, b = counted(T0 + 5, 30.0), counted(T0 + 20, 31.5)
    outputs = [reading_of(a), reading_of(b), vitals(T0, {"iot.pm25": (2, 60.5)})]
    verdict = verify([a, b], outputs, CFG, alerts=False)
    assert [(d.check, d.kind) for d in verdict.differences] == [("window", "differing")]
    assert verdict.differences[0].actual == {"iot.pm25": [[2, 61.5], [2, 60.5]]}


def test_sums_within_the_relative_tolerance_agree() -> None:
    a = counted(T0 + 5, 0.1)
    outputs = [reading_of(a), vitals(T0, {"iot.pm25": (1, 0.1 * (1 + 1e-12))})]
    assert kinds([a], outputs) == []


def test_a_window_published_but_not_expected_is_an_extra_difference() -> None:
    a = counted(T0 + 5, 30.0)
    outputs = [
        reading_of(a),
        vitals(T0, {"iot.pm25": (1, 30.0)}),
        vitals(T0 + 600, {"iot.pm25": (1, 1.0)}),
    ]
    assert kinds([a], outputs) == [("window", "extra")]


def test_a_dead_letter_for_an_input_that_must_be_counted_is_a_difference() -> None:
    a = counted(T0 + 5, 30.0)
    verdict = verify(
        [a], [dead_letter_of(a, "late"), vitals(T0, {"iot.pm25": (1, 30.0)})], CFG, alerts=False
    )
    (diff,) = verdict.differences
    assert (diff.check, diff.kind, diff.expected, diff.actual) == (
        "outcome",
        "differing",
        "counted",
        "dead letter late",
    )


def test_a_dead_letter_with_another_reason_than_expected_is_a_difference() -> None:
    p = rejected("too_old")
    assert kinds([p], [dead_letter_of(p, "late")]) == [("outcome", "differing")]


def test_a_dead_letter_nobody_wrote_is_a_missing_difference() -> None:
    assert kinds([rejected("bad_json")], []) == [("outcome", "missing")]


def test_a_dead_letter_of_no_produced_input_is_an_extra_difference() -> None:
    stranger = Produced(IOT, 3, 999_999, "never produced", "bad_json")
    assert kinds([], [dead_letter_of(stranger, "bad_json")]) == [("outcome", "extra")]


def test_identical_repeats_are_counted_as_repeats_not_differences() -> None:
    a, p = counted(T0 + 5, 30.0), rejected("bad_json")
    window = vitals(T0, {"iot.pm25": (1, 30.0)})
    outputs = [
        reading_of(a),
        reading_of(a),
        dead_letter_of(p, "bad_json"),
        dead_letter_of(p, "bad_json"),
    ]
    outputs += [window, vitals(T0, {"iot.pm25": (1, 30.0)})]
    verdict = verify([a, p], outputs, CFG, alerts=False)
    assert verdict.differences == []
    assert verdict.repeats == {READINGS: 1, DEADLETTER: 1, VITALS: 1}


def test_two_reasons_for_one_input_are_a_duplicated_difference() -> None:
    p = rejected("bad_json")
    outputs = [dead_letter_of(p, "bad_json"), dead_letter_of(p, "schema")]
    assert kinds([p], outputs) == [("outcome", "duplicated")]


def test_a_window_republished_with_other_counts_is_a_duplicated_difference_even_if_the_last_is_right() -> (
    None
):
    a, b = counted(T0 + 5, 30.0), counted(T0 + 25, 10.0)
    outputs = [reading_of(a), reading_of(b)]
    outputs += [vitals(T0, {"iot.pm25": (1, 30.0)}), vitals(T0, {"iot.pm25": (2, 40.0)})]
    assert kinds([a, b], outputs) == [("window", "duplicated")]


def test_raw_personal_data_in_a_reading_or_a_dead_letter_detail_is_a_difference() -> None:
    phone = ("13812345678",)
    reading = ExpectedReading("339901", "iot.pm25", None, 30.0, T0)
    a = Produced(IOT, 0, next(_offsets), "pii", None, reading, ("339901", T0), phone)
    p = Produced(IOT, 0, next(_offsets), "phone street", "unknown_street", None, None, phone)
    outputs = [
        reading_of(a, event_id="13812345678-0001"),
        dead_letter_of(p, "unknown_street", "street '13812345678' is not a street of 339901"),
        vitals(T0, {"iot.pm25": (1, 30.0)}),
    ]
    verdict = verify([a, p], outputs, CFG, alerts=False)
    assert [(d.check, d.topic) for d in verdict.differences] == [
        ("pii", READINGS),
        ("pii", DEADLETTER),
    ]


@pytest.fixture(scope="module")
def smog() -> tuple[list[Produced], list[dict[str, Any]]]:
    """Forty minutes of PM2.5 at 300 µg/m³, then forty of clean air: alarms fire and
    resolve in the replay."""
    produced = [
        counted(T0 + 60 * m + s, 300.0 if m < 40 else 20.0) for m in range(80) for s in (0, 30)
    ]
    ctx = detection_context(CFG)
    events = expected_alerts(CFG, expected_windows(produced, ctx.street_indicators), ctx)
    assert len(events) >= 2, "the smog raises no alert: pick a stronger one"
    return produced, events


def _published(produced: list[Produced], events: list[dict[str, Any]]) -> list[OutputRecord]:
    minutes: dict[float, list[float]] = {}
    for p in produced:
        assert p.reading is not None
        start = p.reading.event_time - p.reading.event_time % 60
        minutes.setdefault(start, []).append(p.reading.value)
    outputs = [reading_of(p) for p in produced]
    outputs += [vitals(s, {"iot.pm25": (len(v), sum(v))}) for s, v in minutes.items()]
    return outputs + [_out(ALERTS, e) for e in events]


def test_the_replayed_alert_events_agree_with_the_same_events_published(
    smog: tuple[list[Produced], list[dict[str, Any]]],
) -> None:
    produced, events = smog
    outputs = [*_published(produced, events), _out(ALERTS, events[0])]  # and one repeat
    verdict = verify(produced, outputs, CFG)
    assert verdict.differences == []
    assert verdict.repeats[ALERTS] == 1


def test_an_alert_event_missing_or_with_another_grade_is_a_difference(
    smog: tuple[list[Produced], list[dict[str, Any]]],
) -> None:
    produced, events = smog
    changed = {**events[-1], "grade": 1 if events[-1]["grade"] != 1 else 2}
    verdict = verify(produced, _published(produced, [*events[1:-1], changed]), CFG)
    assert sorted((d.check, d.kind, d.identity) for d in verdict.differences) == sorted(
        [
            ("alert", "missing", f"{events[0]['alert_id']}#{events[0]['sequence']}"),
            ("alert", "differing", f"{changed['alert_id']}#{changed['sequence']}"),
        ]
    )


# --- citizens' appeals ---------------------------------------------------------------------

CALM_SMELL = "您好，南门街道垃圾中转站附近有一股臭味，希望能安排处理。"


def hotline(order: int, at: float, street: str, text: str = CALM_SMELL) -> bytes:
    """A 12345 hotline appeal about a smell in ``street`` of district 339902, accepted at
    ``at`` (the hotline states the city's wall clock, UTC+8)."""
    local = datetime.fromtimestamp(at + 8 * 3600, UTC).strftime("%Y-%m-%d %H:%M:%S")
    payload = {
        "order_no": f"GD2026112420{order:07d}",
        "accepted_at": local,
        "category": "臭味",
        "district_code": "339902",
        "street_code": street,
        "content": text,
        "caller_name": "黄芳",
        "caller_phone": "13475753206",
        "address": "新华路152号1单元1101",
    }
    return orjson.dumps({"channel": "hotline_12345", "payload": payload})


@pytest.fixture(scope="module")
def replay() -> AppealReplay:
    return AppealReplay(CFG, b"k" * 32)


def appeals_in(replay: AppealReplay, times: list[float], street: str) -> list[Produced]:
    """Hotline appeals at ``times`` in ``street``, each produced on partition 0, through the
    replay as the driver puts them."""
    produced = []
    for t in times:
        offset = next(_offsets)
        origin = (APPEALS_TOPIC, 0, offset)
        value = hotline(offset, t, street)
        when = datetime.fromtimestamp(t, UTC)
        reading, place = replay.expect(origin, b"339902", value, None, when)
        produced.append(Produced(APPEALS_TOPIC, 0, offset, "sim", None, reading, place))
    return produced


def test_the_appeal_replay_expects_a_de_identified_reading_and_names_the_run_a_repeat_joins(
    replay: AppealReplay,
) -> None:
    first, again = appeals_in(replay, [T0 + 10, T0 + 600], "339902002")
    assert first.reading is not None and again.reading is not None
    assert first.place == ("339902", T0 + 10)
    assert (first.reading.district, first.reading.street) == ("339902", "339902002")
    assert first.reading.indicator == "citizen.appeals"  # a calm request
    assert first.reading.repeat_of is None
    # the second is about the same place and category ten minutes on: it repeats the first,
    # named by its channel and work order
    assert again.reading.repeat_of == f"hotline_12345:GD2026112420{first.offset:07d}"
    assert [r.reading.facets.counts[-1] for r in (first, again) if r.reading] == [0.0, 1.0]
    assert b"13475753206" not in orjson.dumps(first.reading.facets.sample)


def test_an_appeal_the_workers_must_count_but_the_replay_rejects_stops_the_oracle(
    replay: AppealReplay,
) -> None:
    at = datetime.fromtimestamp(T0, UTC)
    value = hotline(1, T0, "339902002")
    with pytest.raises(ValueError, match="key_mismatch"):
        replay.expect((APPEALS_TOPIC, 0, next(_offsets)), b"339901", value, None, at)
    reading, place = replay.expect(
        (APPEALS_TOPIC, 0, next(_offsets)), b"339901", value, "key_mismatch", at
    )
    assert reading is None and place is None


def test_a_street_cluster_of_appeals_is_expected_as_a_public_opinion_warning(
    replay: AppealReplay,
) -> None:
    # four calm appeals about one smell in one street within a minute: grade IV of the
    # cluster boundaries ({IV: 4, III: 6, ...}) while the district is in its warmup
    produced = appeals_in(replay, [T0 + 3600 + s for s in (1, 11, 21, 31)], "339902003")
    ctx = detection_context(CFG)
    windows = expected_windows(produced, ctx.street_indicators)
    events = expected_alerts(CFG, windows, ctx, produced)
    assert [(e["kind"], e["status"], e["grade"], e["street"]) for e in events] == [
        ("public_opinion", "firing", 4, "339902003")
    ]
    assert events[0]["evidence"]["rule"] == "public_opinion.cluster"
    # three give no warning
    fewer = produced[:3]
    assert expected_alerts(CFG, expected_windows(fewer, ctx.street_indicators), ctx, fewer) == []


def test_an_appeal_reading_that_names_another_first_appeal_is_a_difference(
    replay: AppealReplay,
) -> None:
    # a worker that lost its repeat runs in a kill would mark the second appeal as new
    first, again = appeals_in(replay, [T0 + 7200, T0 + 7230], "339902001")
    assert again.reading is not None and again.reading.repeat_of is not None

    def published(p: Produced, repeat_of: str | None) -> OutputRecord:
        assert p.reading is not None
        doc = orjson.loads(reading_of(p).value or b"{}")
        doc.update(street=p.reading.street, attributes={"repeat_of": repeat_of})
        return _out(READINGS, doc)

    n = sum(p.reading.value for p in (first, again) if p.reading)
    window = vitals(T0 + 7200, {"citizen.appeals": (2, n)}, district="339902")
    right = [published(first, None), published(again, again.reading.repeat_of), window]
    assert kinds([first, again], right) == []
    wrong = [published(first, None), published(again, None), window]
    verdict = verify([first, again], wrong, CFG, alerts=False)
    assert [(d.check, d.kind, d.identity) for d in verdict.differences] == [
        ("reading", "differing", f"{APPEALS_TOPIC}:0@{again.offset}")
    ]
    assert verdict.differences[0].actual == {"repeat_of": [again.reading.repeat_of, None]}
