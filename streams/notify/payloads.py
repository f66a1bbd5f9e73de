"""Notification bodies: a group of alert events in each receiver format.

:func:`render` turns the alerts of one notification group into the body of one
HTTP request and its content type; :func:`render_all` gives every request a
group needs (one per alert for ``cap``, one for the others). The output depends
on the arguments only, so re-rendering gives the same bytes.

=============  ======================  ==================================================
format         content type            body
=============  ======================  ==================================================
native         application/json        cityvitals envelope (below) holding the
                                       :class:`~streams.core.messages.AlertEvent` s as given
alertmanager   application/json        Alertmanager's webhook payload, version ``4``, so
                                       receivers built for Alertmanager work unchanged
cap            application/cap+xml     one CAP 1.2 message per alert
                                       (:func:`streams.alerting.cap.to_cap`, ``web`` = the console
                                       link); a group is one request per alert
dingtalk       application/json        DingTalk group robot ``markdown`` message, Chinese
wecom          application/json        WeCom group robot ``markdown`` message, Chinese,
                                       at most 4096 bytes of content
slack          application/json        Slack incoming webhook with one attachment per
                                       alert (grade colour, fields), English
=============  ======================  ==================================================

Status
======

A notification is ``firing`` when any of its alerts is not resolved (``firing``
or ``updated``), else ``resolved`` (:func:`notification_status`), as
Alertmanager decides a group's status; ``status`` overrides it. Each alert keeps
its own status (``updated`` counts as firing). Whether resolved notifications are
sent at all is the route's ``send_resolved``.

Native envelope
===============

``version`` ``"1"``, ``receiver``, ``status``, ``group_key``, ``group_labels``,
``title_zh`` / ``title_en`` (the group's headline), ``console_url``,
``truncated_alerts``, ``alerts`` (the alert events as given; ``None`` fields
left out), ``links`` (alert id → console link) and ``respond_links`` (alert id →
responder link, see below).

What the notifier gives
=======================

A planned notification carries slim alerts (:class:`streams.notify.planner.AlertBrief`):
each alert's latest event without its action history (operators' notes never
leave the command centre in a notification) and without the evidence series,
with at most six composite member signals (one per domain first) and the
evidence detail cut to 300 characters. Every format here needs no more: the
headline, grade, place, kind, rule, observed value, aggregate, threshold,
window, forecast, times and links are all kept; CAP's description then has no
"recent values" line, and its categories still name every domain involved.

Responder links
===============

``respond_links`` maps alert ids to signed links (:mod:`streams.notify.respond`) that
let a responder acknowledge that alert or add a field report; the notifier
gives them for firing alerts when ``routes.yaml`` enables them. They appear as
the native envelope's ``respond_links``, an Alertmanager annotation
``respond_url``, a CAP parameter ``respondURL``, a ``确认接警 / 现场反馈`` link
after the console link in DingTalk and WeCom, and a "Respond" field in Slack.

Alertmanager
============

``version`` ``"4"``, ``groupKey``, ``truncatedAlerts``, ``status``,
``receiver``, ``groupLabels``, ``commonLabels``, ``commonAnnotations``,
``externalURL`` (the console), and ``alerts`` of ``status``, ``labels`` (the
routing labels of :func:`streams.notify.routing.labels_of` plus ``alertname`` = the
rule), ``annotations`` (``summary`` = ``headline_en``, ``summary_zh``,
``description``, ``alert_id``, ``sequence``, ``workflow``), ``startsAt``
(``first_seen``), ``endsAt`` (``last_update`` when resolved, else Go's zero time
``0001-01-01T00:00:00Z``), ``generatorURL`` (the console link) and
``fingerprint`` (the alert's 16 hex digits). Times are RFC 3339 in UTC. With
``max_alerts``, alerts beyond it are dropped and counted in ``truncatedAlerts``,
and status and common labels are those of the alerts sent, as in Alertmanager.
The same ``max_alerts`` limits the native envelope (``truncated_alerts``) and the
CAP messages :func:`render_all` returns.

Chat formats
============

Alerts are listed most serious first (then newest); the group's headline is the
first one's (``headline_zh`` for DingTalk and WeCom, ``headline_en`` for Slack),
with the grade's Chinese colour word and level (``【I级·红色】``) or ``[Grade I
red]``, and a count when the group holds more. Each alert shows its grade (a
coloured marker 🔴 🟠 🟡 🔵, ✅ when resolved), headline, district and street
names, kind and domain, time in the city's time zone, and a link to it in the
console: ``{console_url}/#/feed/{alert_id}``. At most :data:`MAX_SHOWN` alerts are
listed; the rest are counted with a link to the feed. WeCom colours text with
``<font color="warning|comment|info">``: ``warning`` for grades I and II,
``comment`` for III and IV, ``info`` when resolved. Slack attachments take the
grade's colour from the console (:data:`GRADE_HEX`), green when resolved.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

import orjson

from streams.alerting.cap import to_cap
from streams.core.config import CityConfig
from streams.core.messages import (
    GRADE_COLOURS_ZH,
    KIND_EN,
    KIND_ZH,
    AlertEvent,
    AlertStatus,
    Grade,
)
from streams.notify.routing import PayloadFormat, labels_of

__all__ = [
    "CONTENT_TYPES",
    "GRADE_HEX",
    "MAX_SHOWN",
    "NotificationStatus",
    "Payload",
    "PayloadFormat",
    "alert_status",
    "console_link",
    "grade_en",
    "grade_zh",
    "notification_status",
    "place_name",
    "render",
    "render_all",
]

Payload = tuple[bytes, str]
"""A request body and its content type."""

CONTENT_TYPES: dict[PayloadFormat, str] = {
    PayloadFormat.NATIVE: "application/json",
    PayloadFormat.ALERTMANAGER: "application/json",
    PayloadFormat.CAP: "application/cap+xml",
    PayloadFormat.DINGTALK: "application/json",
    PayloadFormat.WECOM: "application/json",
    PayloadFormat.SLACK: "application/json",
}

GRADE_HEX: dict[Grade, str] = {
    Grade.I: "#B42318",
    Grade.II: "#B54708",
    Grade.III: "#FACC15",
    Grade.IV: "#175CD3",
}
"""The console's grade colours (``streams/api/console/app.css``)."""
RESOLVED_HEX = "#1A7F37"
GRADE_MARKERS: dict[Grade, str] = {Grade.I: "🔴", Grade.II: "🟠", Grade.III: "🟡", Grade.IV: "🔵"}
RESOLVED_MARKER = "✅"
WECOM_COLOURS: dict[Grade, str] = {
    Grade.I: "warning",
    Grade.II: "warning",
    Grade.III: "comment",
    Grade.IV: "comment",
}
MAX_SHOWN = 10
WECOM_MAX_BYTES = 4096
GO_ZERO_TIME = "0001-01-01T00:00:00Z"
RESPOND_PARAMETER = "respondURL"  # CAP parameter holding the responder link


class NotificationStatus(StrEnum):
    FIRING = "firing"
    RESOLVED = "resolved"


def alert_status(alert: AlertEvent) -> NotificationStatus:
    """``resolved`` for a resolved event, ``firing`` for a firing or updated one."""
    return (
        NotificationStatus.RESOLVED
        if alert.status is AlertStatus.RESOLVED
        else NotificationStatus.FIRING
    )


def notification_status(alerts: Sequence[AlertEvent]) -> NotificationStatus:
    """``firing`` when any alert is not resolved, else ``resolved``."""
    if any(alert_status(a) is NotificationStatus.FIRING for a in alerts):
        return NotificationStatus.FIRING
    return NotificationStatus.RESOLVED


def console_link(console_url: str, alert_id: str) -> str:
    """The alert in the console: ``{console_url}/#/feed/{alert_id}`` (id percent-encoded)."""
    return f"{console_url.rstrip('/')}/#/feed/{quote(alert_id, safe='')}"


def render(
    format: PayloadFormat | str,
    alerts: Sequence[AlertEvent],
    *,
    city: CityConfig,
    group_key: str,
    receiver: str,
    console_url: str,
    status: NotificationStatus | str | None = None,
    group_labels: Mapping[str, str] | None = None,
    max_alerts: int = 0,
    truncated: int = 0,
    respond_links: Mapping[str, str] | None = None,
) -> Payload:
    """The body and content type of one notification of ``alerts`` to a receiver.

    ``cap`` takes exactly one alert (a CAP message is one alert); use
    :func:`render_all` for a group. Raises :class:`ValueError` for an unknown
    format, no alerts, or times without a time zone.
    """
    fmt = PayloadFormat(format)
    if not alerts:
        raise ValueError("a notification needs at least one alert")
    for a in alerts:
        for name in ("first_seen", "last_update"):
            t: datetime = getattr(a, name)
            if t.utcoffset() is None:
                raise ValueError(f"alert {a.alert_id}: {name} has no time zone")
    if fmt is PayloadFormat.CAP:
        if len(alerts) != 1:
            raise ValueError(f"cap renders one alert per message, got {len(alerts)}")
        only = alerts[0]
        respond = (respond_links or {}).get(only.alert_id)
        body = to_cap(
            only,
            city,
            web=console_link(console_url, only.alert_id),
            parameters={RESPOND_PARAMETER: respond} if respond else None,
        )
        return body, CONTENT_TYPES[fmt]
    sent = list(alerts[:max_alerts]) if max_alerts and len(alerts) > max_alerts else list(alerts)
    truncated += len(alerts) - len(sent)  # plus those the planner already left out
    group = _Group(
        alerts=sent,
        truncated=truncated,
        city=city,
        group_key=group_key,
        receiver=receiver,
        console_url=console_url.rstrip("/"),
        status=NotificationStatus(status) if status is not None else notification_status(sent),
        group_labels=dict(sorted((group_labels or {}).items())),
        respond_links={
            a.alert_id: respond_links[a.alert_id] for a in sent if a.alert_id in respond_links
        }
        if respond_links
        else {},
    )
    doc = {
        PayloadFormat.NATIVE: _native,
        PayloadFormat.ALERTMANAGER: _alertmanager,
        PayloadFormat.DINGTALK: _dingtalk,
        PayloadFormat.WECOM: _wecom,
        PayloadFormat.SLACK: _slack,
    }[fmt](group)
    return orjson.dumps(doc), CONTENT_TYPES[fmt]


def render_all(
    format: PayloadFormat | str,
    alerts: Sequence[AlertEvent],
    *,
    city: CityConfig,
    group_key: str,
    receiver: str,
    console_url: str,
    status: NotificationStatus | str | None = None,
    group_labels: Mapping[str, str] | None = None,
    max_alerts: int = 0,
    truncated: int = 0,
    respond_links: Mapping[str, str] | None = None,
) -> list[Payload]:
    """Every request one notification needs: one per alert for ``cap``, else one."""
    kwargs: dict[str, Any] = {
        "city": city,
        "group_key": group_key,
        "receiver": receiver,
        "console_url": console_url,
        "status": status,
        "group_labels": group_labels,
        "max_alerts": max_alerts,
        "truncated": truncated,
        "respond_links": respond_links,
    }
    if PayloadFormat(format) is PayloadFormat.CAP:
        shown = alerts[:max_alerts] if max_alerts else alerts
        return [render(format, [a], **kwargs) for a in shown]
    return [render(format, alerts, **kwargs)]


# --- the group ----------------------------------------------------------------------------


class _Group:
    def __init__(
        self,
        *,
        alerts: list[AlertEvent],
        truncated: int,
        city: CityConfig,
        group_key: str,
        receiver: str,
        console_url: str,
        status: NotificationStatus,
        group_labels: dict[str, str],
        respond_links: dict[str, str],
    ) -> None:
        self.alerts = alerts
        self.truncated = truncated
        self.city = city
        self.group_key = group_key
        self.receiver = receiver
        self.console_url = console_url
        self.status = status
        self.group_labels = group_labels
        self.respond_links = respond_links
        self.tz = ZoneInfo(city.city.city.timezone)
        self.streets = city.city.streets
        # most serious first, then newest
        self.ranked = sorted(alerts, key=lambda a: (a.grade, -a.last_update.timestamp()))

    @property
    def resolved(self) -> bool:
        return self.status is NotificationStatus.RESOLVED

    def link(self, alert: AlertEvent) -> str:
        return console_link(self.console_url, alert.alert_id)

    @property
    def feed(self) -> str:
        return f"{self.console_url}/#/feed"

    @property
    def hidden(self) -> int:
        """Alerts not listed in a chat message: beyond MAX_SHOWN, or truncated."""
        return max(0, len(self.alerts) - MAX_SHOWN) + self.truncated

    def place(self, alert: AlertEvent, zh: bool) -> str:
        return place_name(self.city, alert, zh)

    def domain(self, alert: AlertEvent, zh: bool) -> str | None:
        dom = self.city.catalogue.domains.get(alert.domain) if alert.domain else None
        if dom is None:
            return alert.domain
        return dom.name_zh if zh else dom.name_en

    def when(self, t: datetime) -> str:
        return t.astimezone(self.tz).strftime("%Y-%m-%d %H:%M")

    def title(self, zh: bool) -> str:
        top = self.ranked[0]
        more = len(self.alerts) + self.truncated - 1
        if zh:
            tag = "【已解除】" if self.resolved else f"【{grade_zh(top.grade)}】"
            return f"{tag}{top.headline_zh}" + (f" 等{more + 1}条" if more else "")
        tag = "[Resolved]" if self.resolved else f"[{grade_en(top.grade)}]"
        return f"{tag} {top.headline_en}" + (f" (+{more} more)" if more else "")


def place_name(city: CityConfig, alert: AlertEvent, zh: bool) -> str:
    """Where the alert is, by name: ``江滨区 滨江街道`` / ``Binjiang, Jiangbin`` (codes
    stand in for names the city does not know)."""
    district = city.districts.get(alert.district)
    d = alert.district if district is None else (district.name_zh if zh else district.name_en)
    if alert.street is None:
        return d
    street = city.city.streets.get(alert.street)
    s = alert.street if street is None else (street.name_zh if zh else street.name_en)
    return f"{d} {s}" if zh else f"{s}, {d}"


def grade_zh(grade: Grade) -> str:
    """``I级·红色``."""
    return f"{grade.roman}级·{GRADE_COLOURS_ZH[grade]}"


def grade_en(grade: Grade) -> str:
    """``Grade I red``."""
    return f"Grade {grade.roman} {grade.colour}"


def _marker(alert: AlertEvent) -> str:
    return RESOLVED_MARKER if alert.status is AlertStatus.RESOLVED else GRADE_MARKERS[alert.grade]


# --- native and Alertmanager --------------------------------------------------------------


def _native(g: _Group) -> dict[str, Any]:
    return {
        "version": "1",
        "receiver": g.receiver,
        "status": g.status.value,
        "group_key": g.group_key,
        "group_labels": g.group_labels,
        "title_zh": g.title(zh=True),
        "title_en": g.title(zh=False),
        "console_url": g.console_url,
        "truncated_alerts": g.truncated,
        "alerts": [a.model_dump(mode="json", exclude_none=True) for a in g.alerts],
        "links": {a.alert_id: g.link(a) for a in g.alerts},
        "respond_links": g.respond_links,
    }


def _rfc3339(t: datetime) -> str:
    """RFC 3339 in UTC as Go writes it: ``Z``, fractional seconds without trailing zeros."""
    u = t.astimezone(UTC)
    text = u.strftime("%Y-%m-%dT%H:%M:%S")
    if u.microsecond:
        text += f".{u.microsecond:06d}".rstrip("0")
    return text + "Z"


def _description(alert: AlertEvent, g: _Group) -> str:
    ev = alert.evidence
    parts = [
        f"{grade_en(alert.grade)} {KIND_EN[alert.kind]} in {g.place(alert, zh=False)}.",
        f"Rule {ev.rule}.",
    ]
    if ev.observed is not None:
        parts.append(
            f"Observed {ev.observed:g}" + (f" ({ev.aggregate})" if ev.aggregate else "") + "."
        )
    if ev.threshold is not None:
        parts.append(f"Threshold {ev.threshold:g}.")
    if ev.detail:
        parts.append(ev.detail)
    return " ".join(parts)


def _common(items: list[dict[str, str]]) -> dict[str, str]:
    if not items:
        return {}
    first = items[0]
    return {k: v for k, v in first.items() if all(i.get(k) == v for i in items[1:])}


def _alertmanager(g: _Group) -> dict[str, Any]:
    alerts: list[dict[str, Any]] = []
    all_labels: list[dict[str, str]] = []
    all_annotations: list[dict[str, str]] = []
    for a in g.alerts:
        status = alert_status(a)
        labels = dict(sorted({**labels_of(a), "alertname": a.evidence.rule}.items()))
        annotations = {
            "summary": a.headline_en,
            "summary_zh": a.headline_zh,
            "description": _description(a, g),
            "alert_id": a.alert_id,
            "sequence": str(a.sequence),
            "workflow": a.workflow.value,
        }
        if (respond := g.respond_links.get(a.alert_id)) is not None:
            annotations["respond_url"] = respond
        all_labels.append(labels)
        all_annotations.append(annotations)
        alerts.append(
            {
                "status": status.value,
                "labels": labels,
                "annotations": annotations,
                "startsAt": _rfc3339(a.first_seen),
                "endsAt": _rfc3339(a.last_update)
                if status is NotificationStatus.RESOLVED
                else GO_ZERO_TIME,
                "generatorURL": g.link(a),
                "fingerprint": a.fingerprint,
            }
        )
    return {
        "receiver": g.receiver,
        "status": g.status.value,
        "alerts": alerts,
        "groupLabels": g.group_labels,
        "commonLabels": _common(all_labels),
        "commonAnnotations": _common(all_annotations),
        "externalURL": g.console_url,
        "version": "4",
        "groupKey": g.group_key,
        "truncatedAlerts": g.truncated,
    }


# --- chat ---------------------------------------------------------------------------------


def _respond_zh(g: _Group, a: AlertEvent) -> str:
    """`` · [确认接警 / 现场反馈](link)`` when the alert has a responder link."""
    respond = g.respond_links.get(a.alert_id)
    return "" if respond is None else f" · [确认接警 / 现场反馈]({respond})"


def _kind_line_zh(a: AlertEvent, g: _Group) -> str:
    dom = g.domain(a, zh=True)
    return KIND_ZH[a.kind] + (f" · {dom}" if dom else "")


def _dingtalk(g: _Group) -> dict[str, Any]:
    title = g.title(zh=True)
    marker = RESOLVED_MARKER if g.resolved else GRADE_MARKERS[g.ranked[0].grade]
    blocks = [f"### {marker} {title}"]
    for a in g.ranked[:MAX_SHOWN]:
        state = "已解除" if a.status is AlertStatus.RESOLVED else grade_zh(a.grade)
        blocks.append(
            "\n".join(
                [
                    f"**{_marker(a)} 【{state}】{a.headline_zh}**",
                    "",
                    f"> 区域：{g.place(a, zh=True)}",
                    ">",
                    f"> 类型：{_kind_line_zh(a, g)}",
                    ">",
                    f"> 时间：{g.when(a.last_update)}",
                    "",
                    f"[在指挥台查看]({g.link(a)})" + _respond_zh(g, a),
                ]
            )
        )
    if g.hidden:
        blocks.append(f"另有 {g.hidden} 条，[在指挥台查看全部]({g.feed})")
    return {"msgtype": "markdown", "markdown": {"title": title, "text": "\n\n".join(blocks)}}


def _wecom(g: _Group) -> dict[str, Any]:
    title = g.title(zh=True)
    head = f"### {RESOLVED_MARKER if g.resolved else GRADE_MARKERS[g.ranked[0].grade]} {title}"
    blocks = []
    for a in g.ranked[:MAX_SHOWN]:
        if a.status is AlertStatus.RESOLVED:
            state = '<font color="info">已解除</font>'
        else:
            state = f'<font color="{WECOM_COLOURS[a.grade]}">{grade_zh(a.grade)}</font>'
        blocks.append(
            "\n".join(
                [
                    f"**{_marker(a)} {state}** {a.headline_zh}",
                    f'> 区域：<font color="comment">{g.place(a, zh=True)}</font>',
                    f'> 类型：<font color="comment">{_kind_line_zh(a, g)}</font>',
                    f'> 时间：<font color="comment">{g.when(a.last_update)}</font>',
                    f"[在指挥台查看]({g.link(a)})" + _respond_zh(g, a),
                ]
            )
        )

    def content(shown: int) -> str:
        hidden = g.hidden + len(blocks) - shown
        tail = [f"另有 {hidden} 条，[在指挥台查看全部]({g.feed})"] if hidden else []
        return "\n\n".join([head, *blocks[:shown], *tail])

    shown = len(blocks)
    text = content(shown)
    while shown > 1 and len(text.encode()) > WECOM_MAX_BYTES:
        shown -= 1
        text = content(shown)
    return {"msgtype": "markdown", "markdown": {"content": text}}


def _slack_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _slack(g: _Group) -> dict[str, Any]:
    attachments: list[dict[str, Any]] = []
    for a in g.ranked[:MAX_SHOWN]:
        resolved = a.status is AlertStatus.RESOLVED
        district = g.city.districts.get(a.district)
        fields = [
            {
                "title": "District",
                "value": _slack_escape(f"{district.name_en if district else a.district}"),
                "short": True,
            }
        ]
        if a.street is not None:
            street = g.streets.get(a.street)
            fields.append(
                {
                    "title": "Street",
                    "value": _slack_escape(street.name_en if street else a.street),
                    "short": True,
                }
            )
        fields += [
            {"title": "Grade", "value": f"{a.grade.roman} ({a.colour})", "short": True},
            {"title": "Kind", "value": KIND_EN[a.kind], "short": True},
        ]
        if (dom := g.domain(a, zh=False)) is not None:
            fields.append({"title": "Domain", "value": _slack_escape(dom), "short": True})
        fields.append(
            {"title": "Console", "value": f"<{g.link(a)}|Open in the console>", "short": False}
        )
        if (respond := g.respond_links.get(a.alert_id)) is not None:
            fields.append(
                {
                    "title": "Respond",
                    "value": f"<{respond}|Acknowledge or send a field report>",
                    "short": False,
                }
            )
        headline = _slack_escape(a.headline_en)
        attachments.append(
            {
                "color": RESOLVED_HEX if resolved else GRADE_HEX[a.grade],
                "fallback": f"{'[Resolved] ' if resolved else ''}{a.headline_en}",
                "title": f"[Resolved] {headline}" if resolved else headline,
                "title_link": g.link(a),
                "text": _slack_escape(_description(a, g)),
                "fields": fields,
                "footer": _slack_escape(f"cityvitals · {g.receiver}"),
                "ts": int(a.last_update.timestamp()),
            }
        )
    if g.hidden:
        attachments.append(
            {
                "fallback": f"{g.hidden} more alerts",
                "text": f"{g.hidden} more alerts: <{g.feed}|open the feed>",
            }
        )
    return {"text": _slack_escape(g.title(zh=False)), "attachments": attachments}
