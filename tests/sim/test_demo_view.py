"""The demo's live view: the district table and the open alerts on city.emergency-command."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from rich.console import Console, RenderableType

from streams.alerting.lifecycle import Names
from streams.core.config import load_config
from streams.core.messages import (
    ALERTS_TOPIC,
    DEADLETTER_TOPIC,
    VITALS_TOPIC,
    AlertEvent,
    AlertKind,
    AlertStatus,
    DistrictVitals,
    Evidence,
    Grade,
)
from streams.sim.demo import AlertBoard, DemoView

CFG = load_config()
NAMES = Names(CFG)
LAOCHENG, CHENGHUANGMIAO = "339902", "339902001"  # 老城区 / 城隍庙街道
GANGKOU = "339904"
T0 = datetime(2026, 11, 24, 0, 13, tzinfo=UTC)  # 08:13 in Linjiang (Asia/Shanghai)


def alert(
    alert_id: str = "a1",
    *,
    sequence: int = 1,
    status: AlertStatus = AlertStatus.FIRING,
    grade: Grade = Grade.IV,
    district: str = LAOCHENG,
    street: str | None = CHENGHUANGMIAO,
    indicator: str = "fire.smoke_alarms",
    first_seen: datetime = T0,
) -> AlertEvent:
    """An alert event as the worker publishes it, headlines included."""
    at = first_seen + timedelta(minutes=sequence - 1)
    event = AlertEvent(
        alert_id=alert_id,
        fingerprint=f"fp-{alert_id}",
        sequence=sequence,
        status=status,
        grade=grade,
        colour=grade.colour,
        kind=AlertKind.ALARM,
        district=district,
        street=street,
        domain=CFG.indicators[indicator].domain,
        indicators=[indicator],
        department=CFG.indicators[indicator].department,
        evidence=Evidence(rule="test.rule", version="1"),
        first_seen=first_seen,
        last_update=at,
        event_time=at,
        headline_zh="",
        headline_en="",
    )
    zh, en = NAMES.headlines(event)
    return event.model_copy(update={"headline_zh": zh, "headline_en": en})


def vitals(district: str, end: datetime, composite: float) -> DistrictVitals:
    return DistrictVitals(
        district=district,
        window_start=end - timedelta(minutes=1),
        window_end=end,
        rolling_minutes=15,
        events=120,
        indicators={},
        domains={d: composite for d in CFG.catalogue.domains},
        composite=composite,
        closed_at=end + timedelta(minutes=2),
    )


def text_of(renderable: RenderableType) -> str:
    console = Console(record=True, width=220, color_system="truecolor")
    console.print(renderable)
    return console.export_text()


def colours_of(renderable: RenderableType, text: str) -> set[str]:
    """The colours of every rendered segment whose text (trimmed) is exactly ``text``."""
    console = Console(width=220, color_system="truecolor")
    return {
        seg.style.color.name
        for seg in console.render(renderable)
        if seg.text.strip() == text and seg.style is not None and seg.style.color is not None
    }


def test_an_open_alert_shows_grade_kind_place_indicators_headline_and_local_first_seen() -> None:
    board = AlertBoard(CFG)
    event = alert(grade=Grade.I)
    board.add(event)
    text = text_of(board.render())
    assert "Laocheng / Chenghuangmiao" in text
    assert "Smoke alarms" in text
    assert "alarm" in text
    assert event.headline_en.startswith("Laocheng / Chenghuangmiao: Smoke alarms red alarm")
    assert event.headline_en in text
    assert "11-24 08:13" in text  # first seen on the city's clock, not UTC
    assert "open alerts 1 | fired 1 | resolved 0" in text
    assert colours_of(board.render(), "I") == {"red"}


@pytest.mark.parametrize(
    ("grade", "colour"),
    [(Grade.I, "red"), (Grade.II, "dark_orange"), (Grade.III, "yellow"), (Grade.IV, "blue")],
)
def test_each_grade_is_shown_as_its_roman_numeral_in_its_warning_colour(
    grade: Grade, colour: str
) -> None:
    board = AlertBoard(CFG)
    board.add(alert(grade=grade))
    assert colours_of(board.render(), grade.roman) == {colour}


def test_an_update_replaces_the_alert_and_a_resolved_alert_leaves_the_open_list() -> None:
    board = AlertBoard(CFG)
    board.add(alert(sequence=1, grade=Grade.IV))
    board.add(alert(sequence=2, status=AlertStatus.UPDATED, grade=Grade.II))
    assert [a.grade for a in board.ordered()] == [Grade.II]
    assert colours_of(board.render(), "II") == {"dark_orange"}
    assert colours_of(board.render(), "IV") == set()

    board.add(alert(sequence=3, status=AlertStatus.RESOLVED, grade=Grade.II))
    text = text_of(board.render())
    assert board.open == {}
    assert "Chenghuangmiao" not in text
    assert "no open alerts" in text
    assert "open alerts 0 | fired 1 | resolved 1" in text


def test_redelivered_and_stale_events_change_nothing() -> None:
    board = AlertBoard(CFG)
    board.add(alert(sequence=1))
    board.add(alert(sequence=1))  # at-least-once delivery: the same event again
    board.add(alert(sequence=3, status=AlertStatus.UPDATED, grade=Grade.III))
    board.add(alert(sequence=2, status=AlertStatus.UPDATED, grade=Grade.IV))  # older
    assert [a.sequence for a in board.ordered()] == [3]
    assert [a.grade for a in board.ordered()] == [Grade.III]
    board.add(alert(sequence=4, status=AlertStatus.RESOLVED, grade=Grade.III))
    board.add(alert(sequence=1))  # a redelivered firing event does not reopen it
    assert board.open == {}
    assert (len(board.fired), len(board.resolved)) == (1, 1)


def test_most_serious_first_then_newest_and_overflow_is_counted() -> None:
    board = AlertBoard(CFG, max_rows=2)
    board.add(alert("old-blue", grade=Grade.IV, first_seen=T0))
    board.add(alert("new-blue", grade=Grade.IV, first_seen=T0 + timedelta(minutes=5)))
    board.add(
        alert(
            "smog",
            grade=Grade.III,
            district=GANGKOU,
            street=None,
            indicator="iot.pm25",
            first_seen=T0 + timedelta(minutes=2),
        )
    )
    assert [a.alert_id for a in board.ordered()] == ["smog", "new-blue", "old-blue"]
    text = text_of(board.render())
    assert "Gangkou" in text and "PM2.5" in text
    assert "and 1 more" in text
    assert text.index("Gangkou") < text.index("Laocheng")
    assert "11-24 08:15" in text and "11-24 08:18" in text
    assert "11-24 08:13" not in text  # the oldest blue alert is the one left out


def test_an_inhibited_alert_stays_listed_and_says_so() -> None:
    board = AlertBoard(CFG)
    board.add(alert("red", grade=Grade.I))
    board.add(alert("blue", grade=Grade.IV, indicator="fire.temperature_c"))
    text = text_of(board.render())
    assert text.count("alarm (inhibited)") == 1
    assert "open alerts 2 | fired 2 | resolved 0" in text
    # once the red alert resolves, the blue one is not held back any more
    board.add(alert("red", sequence=2, status=AlertStatus.RESOLVED, grade=Grade.I))
    assert "inhibited" not in text_of(board.render())


def test_the_view_shows_the_district_table_then_the_alerts_from_consumed_records() -> None:
    view = DemoView(CFG, web_port=6066, ground_truth=Path("/tmp/incidents.jsonl"))
    end = datetime(2026, 11, 24, 0, 20, tzinfo=UTC)
    view.on_message(VITALS_TOPIC, vitals(LAOCHENG, end - timedelta(minutes=1), 55.0).to_json())
    view.on_message(VITALS_TOPIC, vitals(LAOCHENG, end, 42.5).to_json())
    view.on_message(VITALS_TOPIC, vitals(LAOCHENG, end - timedelta(minutes=2), 90.0).to_json())
    view.on_message(DEADLETTER_TOPIC, b"{}")
    view.on_message(ALERTS_TOPIC, alert(grade=Grade.II).to_json())
    view.on_message(ALERTS_TOPIC, alert("smog", district=GANGKOU, street=None).to_json())
    resolved = alert("smog", sequence=2, status=AlertStatus.RESOLVED, district=GANGKOU, street=None)
    view.on_message(ALERTS_TOPIC, resolved.to_json())

    assert view.latest[LAOCHENG].composite == 42.5  # the newest window, not the last delivered
    assert (view.vitals_records, view.dead_letters, view.alert_events) == (3, 1, 3)
    text = text_of(view.render())
    table, _, rest = text.partition("open alerts 1 | fired 2 | resolved 1")
    assert "district vital signs" in table and rest
    assert "老城区 Laocheng" in table and "11-24 08:20" in table and "42.5" in table
    assert "Laocheng / Chenghuangmiao" in rest and "Gangkou" not in rest
    assert "dead letters 1" in rest and "alert events 3" in rest
    assert rest.rstrip().endswith("Ctrl-C stops everything.")
