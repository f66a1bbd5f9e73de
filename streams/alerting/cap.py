"""Render an :class:`~streams.core.messages.AlertEvent` as an OASIS CAP 1.2 message.

:func:`to_cap` turns one event of an alert's life into one CAP ``<alert>``
(namespace ``urn:oasis:names:tc:emergency:cap:1.2``, UTF-8 XML) with two
``<info>`` blocks, ``zh-CN`` and ``en-US``, that say the same thing. The output
depends on the event, the city configuration and the arguments only, so
re-rendering an event gives the same bytes.

Alert-level elements
====================

==============  ===========================================================================
element         value
==============  ===========================================================================
identifier      ``<alert_id>.<sequence>`` (:func:`cap_identifier`; characters CAP forbids
                in identifiers are percent-encoded)
sender          ``sender`` argument, default ``cityvitals@<city code>.invalid``
sent            ``last_update`` in CAP's dateTime format (:func:`cap_datetime`)
status          ``Actual``
msgType         firing → ``Alert``, updated → ``Update``, resolved → ``Cancel``
scope           sharing ``open`` → ``Public``; ``on_request`` / ``not_shared`` →
                ``Restricted`` with a ``restriction`` text
references      the earlier messages of the alert (rule below), ``sender,identifier,sent``
                triples separated by spaces; absent when there are none
incidents       the alert id (percent-encoded like the identifier): every message of
                one alert names the same incident
==============  ===========================================================================

Info-level elements (one block per language)
============================================

==============  ===========================================================================
element         value
==============  ===========================================================================
language        ``zh-CN``, ``en-US``
category        from the domains involved (table below): the event's domain, else the
                domains of its indicators in the catalogue, plus the domains of a
                composite alert's member signals; ``Other`` when none is known
event           indicator (or domain) name and the kind, e.g. ``路段平均车速告警`` /
                ``Average road speed alarm``
responseType    ``AllClear`` for resolved events, otherwise absent
urgency         from the kind (table below)
severity        grade I → ``Extreme``, II → ``Severe``, III → ``Moderate``,
                IV → ``Minor``; data-quality alerts → ``Minor`` whatever the grade
certainty       from the kind (table below)
onset           a warning's forecast crossing time, when the forecast has one
senderName      the owning department, e.g. ``临江市交通运输局`` /
                ``Transport bureau, Linjiang``
headline        ``headline_zh`` / ``headline_en``
description     the grade and the evidence in words: rule, observed value and aggregate,
                window, threshold, baseline, anomaly score, forecast and crossing
                time, recent values, member signals, detail (each when the event
                has it: a notification's slim alerts have no recent values and at
                most six member signals, see :class:`streams.notify.planner.AlertBrief`)
instruction     resolved: the all-clear; data quality: check the source; else absent
web             ``web`` argument, when given
parameter       ``grade`` (I–IV), ``colour``, ``kind``, ``status``, ``sequence``,
                ``fingerprint``, ``alert_id``, ``indicator`` (one per indicator),
                ``domain``, ``department``, ``co_department`` (one each), ``sharing``,
                ``workflow``, ``rule``, ``rule_version``, then the ``parameters``
                argument's (a notification adds ``respondURL``); the same values
                in both blocks
area            ``areaDesc``: ``江滨区滨江街道`` / ``Binjiang, Jiangbin`` (district and
                street names from ``city.yaml``; the district alone when the alert has
                no street; the code when a name is unknown); ``geocode``
                ``district_code`` and, with a street, ``street_code``
==============  ===========================================================================

Kind → urgency and certainty
============================

==============  ============  ===========  ==============================================
kind            urgency       certainty    why
==============  ============  ===========  ==============================================
alarm           Immediate     Observed     a limit crossed in observed values
warning         Expected      Likely       the forecast crosses the limit within its own
                                           horizon (``crossing_time - event_time <=
                                           horizon_s``)
warning         Expected      Possible     no forecast, no crossing time, or a crossing
                                           beyond the forecast horizon
composite       Immediate     Likely       several weak signals observed together
data_quality    Unknown       Unknown      says nothing about the city itself
public_opinion  Expected      Likely       citizens report a problem nothing measured
                                           has confirmed
==============  ============  ===========  ==============================================

A resolved event keeps the values of its kind and grade and adds responseType
``AllClear``.

Domain → category
=================

===============  =========  ==========================================
domain           category   indicators
===============  =========  ==========================================
traffic          Transport  road speed, congestion, occupancy, accidents
fire             Fire       smoke alarms, temperature, hydrants, 119 calls
environment      Env        PM2.5, noise
utilities        Infra      water mains, river level, gas, power grid
sanitation       Env        bins, overflow reports, collection delay
public_safety    Safety     crowd density
citizen          Safety     12345 hotline complaints
(anything else)  Other
===============  =========  ==========================================

References
==========

An event with ``sequence > 1`` always references the alert's firing message,
``<alert_id>.1`` sent at ``first_seen`` (the firing event's ``last_update`` is its
``first_seen``). The event alone cannot tell when the other earlier messages
were sent, so the caller passes them as ``previous``: earlier
:class:`~streams.core.messages.AlertEvent` s of the same alert (rendered with the same
sender) or :class:`CapReference` s. Typically that is the immediately previous
event, which gives the firing message plus the previous one. A reference given in
``previous`` for the firing message replaces the derived one.

Times
=====

CAP times carry whole seconds and a numeric offset: fractional seconds are
dropped, UTC is written ``-00:00`` (never ``Z``), and an offset CAP cannot write
(seconds in it, or beyond ±14:00) is converted to UTC. Times without a time zone
are rejected with :class:`ValueError`. Times in the description are shown in the
city's time zone.

Text that XML 1.0 cannot carry (control characters, unpaired surrogates) is
replaced by U+FFFD; line breaks become ``\\n``.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from urllib.parse import quote
from zoneinfo import ZoneInfo

from streams.core.config import CityConfig, District, Sharing, Street
from streams.core.messages import (
    GRADE_COLOURS_ZH,
    AlertEvent,
    AlertKind,
    AlertStatus,
    Evidence,
    Grade,
)

CAP_NAMESPACE = "urn:oasis:names:tc:emergency:cap:1.2"

MSG_TYPES: dict[AlertStatus, str] = {
    AlertStatus.FIRING: "Alert",
    AlertStatus.UPDATED: "Update",
    AlertStatus.RESOLVED: "Cancel",
}
SEVERITIES: dict[Grade, str] = {
    Grade.I: "Extreme",
    Grade.II: "Severe",
    Grade.III: "Moderate",
    Grade.IV: "Minor",
}
CATEGORIES: dict[str, str] = {
    "traffic": "Transport",
    "fire": "Fire",
    "environment": "Env",
    "utilities": "Infra",
    "sanitation": "Env",
    "public_safety": "Safety",
    "citizen": "Safety",
}
OTHER_CATEGORY = "Other"
SCOPES: dict[Sharing, str] = {
    Sharing.OPEN: "Public",
    Sharing.ON_REQUEST: "Restricted",
    Sharing.NOT_SHARED: "Restricted",
}
RESTRICTIONS: dict[Sharing, str] = {
    Sharing.ON_REQUEST: (
        "依申请共享：仅限城市运行相关部门及经批准的申请方，不得公开发布。"
        " Shared on request: for city departments and approved requesters only;"
        " not for public release."
    ),
    Sharing.NOT_SHARED: (
        "不予共享：仅限责任部门、协办部门及城市运行指挥中心。"
        " Not shared: for the owning and co-operating departments and the city"
        " operations command centre only."
    ),
}
LANGUAGES = ("zh-CN", "en-US")

# CAP: identifier and sender "MUST NOT include spaces, commas or restricted characters (< and &)"
_FORBIDDEN_IN_TOKEN = re.compile(r"[\s,<&]")
# quote() keeps letters, digits and "_.-~"; these stay readable too. Everything else,
# "%" included, is percent-encoded, so distinct alert ids give distinct identifiers.
_TOKEN_SAFE = ":@+=/!$*()'"
# characters XML 1.0 cannot carry
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_MAX_CAP_OFFSET = timedelta(hours=14)
_RECENT_VALUES = 12
_XML_DECLARATION = b'<?xml version="1.0" encoding="UTF-8"?>\n'


@dataclass(frozen=True)
class CapReference:
    """An earlier CAP message, as listed in ``<references>``."""

    sender: str
    identifier: str
    sent: datetime

    def __post_init__(self) -> None:
        _check_token("sender", self.sender)
        _check_token("identifier", self.identifier)
        cap_datetime(self.sent)  # aware, representable

    def __str__(self) -> str:
        return f"{self.sender},{self.identifier},{cap_datetime(self.sent)}"


def default_sender(city: CityConfig) -> str:
    """The sender used when none is given: ``cityvitals@<city code>.invalid``."""
    return f"cityvitals@{_token(city.city.city.code)}.invalid"


def cap_identifier(alert_id: str, sequence: int) -> str:
    """The identifier of an alert's ``sequence``-th message: ``<alert_id>.<sequence>``.

    Characters CAP does not allow in identifiers (and ``%`` itself) are
    percent-encoded, so the identifier is unique per (alert_id, sequence).

    >>> cap_identifier("alrt-339901-0007", 3)
    'alrt-339901-0007.3'
    >>> cap_identifier("a b,c", 1)
    'a%20b%2Cc.1'
    """
    if sequence < 1:
        raise ValueError(f"sequence must be at least 1, got {sequence}")
    return f"{_token(alert_id)}.{sequence}"


def cap_datetime(when: datetime) -> str:
    """A time in CAP's dateTime format: whole seconds and a ``±hh:mm`` offset.

    >>> from datetime import timezone, timedelta
    >>> cap_datetime(datetime(2026, 11, 24, 8, 15, 30, 250000, timezone(timedelta(hours=8))))
    '2026-11-24T08:15:30+08:00'
    >>> cap_datetime(datetime(2026, 11, 24, 0, 15, 30, tzinfo=UTC))
    '2026-11-24T00:15:30-00:00'
    """
    offset = when.utcoffset()
    if offset is None:
        raise ValueError(f"CAP times need a time zone, got {when.isoformat()}")
    if offset % timedelta(minutes=1) or abs(offset) > _MAX_CAP_OFFSET:
        when, offset = when.astimezone(UTC), timedelta(0)
    minutes = int(offset.total_seconds()) // 60
    sign = "+" if minutes > 0 else "-"  # UTC is "-00:00" in CAP
    hours, mins = divmod(abs(minutes), 60)
    local = when.replace(tzinfo=None, microsecond=0).isoformat(timespec="seconds")
    return f"{local}{sign}{hours:02d}:{mins:02d}"


def cap_reference(event: AlertEvent, *, sender: str) -> CapReference:
    """The reference to the CAP message :func:`to_cap` renders for ``event``."""
    return CapReference(sender, cap_identifier(event.alert_id, event.sequence), event.last_update)


def cap_references(
    event: AlertEvent,
    *,
    sender: str,
    previous: Iterable[AlertEvent | CapReference] = (),
) -> list[CapReference]:
    """The earlier messages ``event``'s message refers to.

    The firing message (``<alert_id>.1`` sent at ``first_seen``) first whenever
    ``sequence > 1`` and ``previous`` does not name it, then ``previous`` in the
    order given, without repeats. Raises :class:`ValueError` when ``previous``
    names the event's own message.
    """
    own = (sender, cap_identifier(event.alert_id, event.sequence))
    given: list[CapReference] = []
    seen: set[tuple[str, str]] = set()
    for item in previous:
        ref = item if isinstance(item, CapReference) else cap_reference(item, sender=sender)
        key = (ref.sender, ref.identifier)
        if key == own:
            raise ValueError(f"message {ref.identifier} cannot reference itself")
        if key not in seen:
            seen.add(key)
            given.append(ref)
    firing = CapReference(sender, cap_identifier(event.alert_id, 1), event.first_seen)
    if event.sequence > 1 and (firing.sender, firing.identifier) not in seen:
        given.insert(0, firing)
    return given


def cap_urgency_certainty(event: AlertEvent) -> tuple[str, str]:
    """CAP ``urgency`` and ``certainty`` for the event's kind (see the module table)."""
    if event.kind is AlertKind.ALARM:
        return "Immediate", "Observed"
    if event.kind is AlertKind.COMPOSITE:
        return "Immediate", "Likely"
    if event.kind is AlertKind.DATA_QUALITY:
        return "Unknown", "Unknown"
    if event.kind is AlertKind.PUBLIC_OPINION:
        return "Expected", "Likely"
    forecast = event.evidence.forecast
    if forecast is not None and forecast.crossing_time is not None:
        _require_aware("evidence.forecast.crossing_time", forecast.crossing_time)
        _require_aware("event_time", event.event_time)
        ahead = (forecast.crossing_time - event.event_time).total_seconds()
        if ahead <= forecast.horizon_s:
            return "Expected", "Likely"
    return "Expected", "Possible"


def cap_severity(event: AlertEvent) -> str:
    """CAP ``severity``: from the grade; ``Minor`` for data-quality alerts."""
    if event.kind is AlertKind.DATA_QUALITY:
        return "Minor"
    return SEVERITIES[event.grade]


def cap_categories(event: AlertEvent, city: CityConfig) -> list[str]:
    """CAP ``category`` values for the domains the event involves (see the module table)."""
    domains: list[str] = []
    if event.domain is not None:
        domains.append(event.domain)
    else:
        domains += [i.domain for code in event.indicators if (i := city.indicators.get(code))]
    domains += [m.domain for m in event.evidence.members]
    categories = list(dict.fromkeys(CATEGORIES.get(d, OTHER_CATEGORY) for d in domains))
    return categories or [OTHER_CATEGORY]


def to_cap(
    event: AlertEvent,
    city: CityConfig,
    *,
    sender: str | None = None,
    previous: Iterable[AlertEvent | CapReference] = (),
    web: str | None = None,
    parameters: Mapping[str, str] | None = None,
) -> bytes:
    """The CAP 1.2 message for one alert event, as UTF-8 XML.

    ``sender`` defaults to :func:`default_sender`. ``previous`` lists earlier
    messages of the same alert beyond the firing message, which is always
    referenced (see :func:`cap_references`). ``web`` is an absolute URI with more
    about the alert; ``parameters`` are added after the alert's own (e.g. a
    notification's responder link). Raises :class:`ValueError` for a sender CAP does not allow or
    a time without a time zone.
    """
    sender = default_sender(city) if sender is None else sender
    _check_token("sender", sender)
    _require_aware("last_update", event.last_update)
    _require_aware("first_seen", event.first_seen)
    references = cap_references(event, sender=sender, previous=previous)

    alert = ET.Element(_q("alert"))
    _sub(alert, "identifier", cap_identifier(event.alert_id, event.sequence))
    _sub(alert, "sender", sender)
    _sub(alert, "sent", cap_datetime(event.last_update))
    _sub(alert, "status", "Actual")
    _sub(alert, "msgType", MSG_TYPES[event.status])
    _sub(alert, "scope", SCOPES[event.sharing])
    if event.sharing in RESTRICTIONS:
        _sub(alert, "restriction", RESTRICTIONS[event.sharing])
    if references:
        _sub(alert, "references", " ".join(str(r) for r in references))
    _sub(alert, "incidents", _token(event.alert_id))
    view = _View(event, city)
    for language in LANGUAGES:
        _info(alert, view, language, web, dict(parameters or {}))
    ET.indent(alert)
    body = ET.tostring(alert, encoding="unicode", default_namespace=CAP_NAMESPACE)
    return _XML_DECLARATION + body.encode("utf-8") + b"\n"


# --- info blocks ------------------------------------------------------------------------


class _View:
    """The event with the city's names looked up."""

    def __init__(self, event: AlertEvent, city: CityConfig) -> None:
        self.event = event
        self.city = city
        self.tz: tzinfo = ZoneInfo(city.city.city.timezone)
        self.district: District | None = city.districts.get(event.district)
        self.streets: dict[str, Street] = {
            s.code: s for d in city.city.districts for s in d.streets
        }
        codes = event.indicators
        indicator = city.indicators.get(codes[0]) if len(codes) == 1 else None
        self.unit = indicator.unit if indicator is not None else ""
        domain = city.catalogue.domains.get(event.domain) if event.domain else None
        subject = indicator or domain
        self.subject_zh = subject.name_zh if subject else "城市运行"
        self.subject_en = subject.name_en if subject else "City operations"

    def zh(self, lang: str) -> bool:
        return lang.startswith("zh")

    def area(self, lang: str) -> str:
        e = self.event
        district = self.district
        d_name = (
            e.district
            if district is None
            else (district.name_zh if self.zh(lang) else district.name_en)
        )
        if e.street is None:
            return d_name
        s_name = self.street_name(e.street, lang)
        if not self.zh(lang):
            return f"{s_name}, {d_name}"
        # Chinese names run together; bare codes need a space between them
        known = district is not None and e.street in self.streets
        return f"{d_name}{s_name}" if known else f"{d_name} {s_name}"

    def street_name(self, code: str, lang: str) -> str:
        street = self.streets.get(code)
        if street is None:
            return code
        return street.name_zh if self.zh(lang) else street.name_en

    def indicator_name(self, code: str, lang: str) -> str:
        ind = self.city.indicators.get(code)
        if ind is None:
            return code
        return ind.name_zh if self.zh(lang) else ind.name_en

    def domain_name(self, code: str, lang: str) -> str:
        dom = self.city.catalogue.domains.get(code)
        if dom is None:
            return code
        return dom.name_zh if self.zh(lang) else dom.name_en

    def department(self, lang: str) -> str:
        dep = self.city.catalogue.departments.get(self.event.department)
        info = self.city.city.city
        if self.zh(lang):
            return f"{info.name_zh}{dep.name_zh if dep else self.event.department}"
        return f"{dep.name_en if dep else self.event.department}, {info.name_en}"

    def event_name(self, lang: str) -> str:
        kind = self.event.kind
        if self.zh(lang):
            if kind is AlertKind.COMPOSITE:
                return "多源信号综合预警"
            suffix = {
                AlertKind.WARNING: "预警",
                AlertKind.ALARM: "告警",
                AlertKind.DATA_QUALITY: "数据质量异常",
                AlertKind.PUBLIC_OPINION: "舆情预警",
            }[kind]
            return f"{self.subject_zh}{suffix}"
        if kind is AlertKind.COMPOSITE:
            return "Composite alert from several signals"
        suffix = {
            AlertKind.WARNING: "warning",
            AlertKind.ALARM: "alarm",
            AlertKind.DATA_QUALITY: "data quality problem",
            AlertKind.PUBLIC_OPINION: "public-opinion warning",
        }[kind]
        return f"{self.subject_en} {suffix}"

    def when(self, t: datetime) -> str:
        local = t.astimezone(self.tz) if t.tzinfo is not None else t
        return local.replace(microsecond=0).isoformat(sep=" ")

    def value(self, v: float) -> str:
        return f"{_number(v)} {self.unit}" if self.unit else _number(v)

    def description(self, lang: str) -> str:
        e, ev, zh = self.event, self.event.evidence, self.zh(lang)
        lines: list[str] = []
        colour = GRADE_COLOURS_ZH[e.grade] if zh else e.colour
        lines.append(
            f"预警级别：{e.grade.roman}级（{colour}）"
            if zh
            else f"Grade: {e.grade.roman} ({colour})"
        )
        if e.status is AlertStatus.RESOLVED:
            lines.append(
                f"已于 {self.when(e.last_update)} 解除。"
                if zh
                else f"Resolved at {self.when(e.last_update)}."
            )
        names = ("、" if zh else ", ").join(self.indicator_name(c, lang) for c in e.indicators)
        if names:
            lines.append(f"指标：{names}" if zh else f"Indicators: {names}")
        lines.append(
            f"判定规则：{ev.rule}（版本 {ev.version}）"
            if zh
            else f"Rule: {ev.rule} (version {ev.version})"
        )
        lines += self._evidence(ev, lang)
        for m in ev.members:
            place = self.street_name(m.street, lang) if m.street else self.area(lang)
            name = self.indicator_name(m.indicator, lang)
            dom = self.domain_name(m.domain, lang)
            when = self.when(m.event_time)
            lines.append(
                f"- {name}（{dom}，{place}，评分 {_number(m.score)}，{when}）：{m.detail}"
                if zh
                else f"- {name} ({dom}, {place}, score {_number(m.score)}, {when}): {m.detail}"
            )
        if ev.detail:
            lines.append(f"说明：{ev.detail}" if zh else f"Detail: {ev.detail}")
        return "\n".join(lines)

    def _evidence(self, ev: Evidence, lang: str) -> list[str]:
        zh = self.zh(lang)
        lines: list[str] = []
        if ev.observed is not None:
            agg = ""
            if ev.aggregate:
                agg = f"（{ev.aggregate}）" if zh else f" ({ev.aggregate})"
            lines.append(
                f"观测值：{self.value(ev.observed)}{agg}"
                if zh
                else f"Observed: {self.value(ev.observed)}{agg}"
            )
        if ev.window_start is not None and ev.window_end is not None:
            span = f"{self.when(ev.window_start)} – {self.when(ev.window_end)}"
            lines.append(f"统计窗口：{span}" if zh else f"Window: {span}")
        if ev.threshold is not None:
            t = self.value(ev.threshold)
            lines.append(f"阈值（级别界限）：{t}" if zh else f"Threshold (grade boundary): {t}")
        if ev.baseline is not None:
            b = self.value(ev.baseline)
            lines.append(f"基线（模型期望值）：{b}" if zh else f"Baseline (expected): {b}")
        if ev.score is not None:
            s = _number(ev.score)
            lines.append(f"异常评分：{s}" if zh else f"Anomaly score: {s}")
        fc = ev.forecast
        if fc is not None:
            ahead = _duration(fc.horizon_s, zh)
            v = self.value(fc.value)
            lines.append(f"趋势预测：{ahead}后约 {v}" if zh else f"Forecast: {v} in {ahead}")
            if fc.crossing_time is not None:
                limit = f" {self.value(fc.limit)}" if fc.limit is not None else ""
                at = self.when(fc.crossing_time)
                lines.append(
                    f"预计于 {at} 越过限值{limit}"
                    if zh
                    else f"Expected to cross the limit{limit} at {at}"
                )
        if ev.values:
            recent = ", ".join(_number(p.value) for p in ev.values[-_RECENT_VALUES:])
            lines.append(
                f"近期数值（由早到晚）：{recent}"
                if zh
                else f"Recent values (oldest first): {recent}"
            )
        return lines

    def instruction(self, lang: str) -> str | None:
        zh = self.zh(lang)
        if self.event.status is AlertStatus.RESOLVED:
            return "警报已解除，恢复正常运行。" if zh else "All clear: the alert is over."
        if self.event.kind is AlertKind.DATA_QUALITY:
            return (
                "请数据责任部门核查数据源及传感器。"
                if zh
                else "The data's owner should check the source and its sensors."
            )
        return None


def _info(
    alert: ET.Element, view: _View, lang: str, web: str | None, extra: dict[str, str]
) -> None:
    e = view.event
    info = ET.SubElement(alert, _q("info"))
    _sub(info, "language", lang)
    for category in cap_categories(e, view.city):
        _sub(info, "category", category)
    _sub(info, "event", view.event_name(lang))
    if e.status is AlertStatus.RESOLVED:
        _sub(info, "responseType", "AllClear")
    urgency, certainty = cap_urgency_certainty(e)
    _sub(info, "urgency", urgency)
    _sub(info, "severity", cap_severity(e))
    _sub(info, "certainty", certainty)
    fc = e.evidence.forecast
    if e.kind is AlertKind.WARNING and fc is not None and fc.crossing_time is not None:
        _sub(info, "onset", cap_datetime(fc.crossing_time))
    _sub(info, "senderName", view.department(lang))
    _sub(info, "headline", e.headline_zh if view.zh(lang) else e.headline_en)
    _sub(info, "description", view.description(lang))
    instruction = view.instruction(lang)
    if instruction is not None:
        _sub(info, "instruction", instruction)
    if web is not None:
        _sub(info, "web", web)
    for name, value in [*_parameters(e), *extra.items()]:
        param = ET.SubElement(info, _q("parameter"))
        _sub(param, "valueName", name)
        _sub(param, "value", value)
    area = ET.SubElement(info, _q("area"))
    _sub(area, "areaDesc", view.area(lang))
    codes = [("district_code", e.district)]
    if e.street is not None:
        codes.append(("street_code", e.street))
    for name, value in codes:
        geocode = ET.SubElement(area, _q("geocode"))
        _sub(geocode, "valueName", name)
        _sub(geocode, "value", value)


def _parameters(e: AlertEvent) -> list[tuple[str, str]]:
    params = [
        ("grade", e.grade.roman),
        ("colour", e.colour),
        ("kind", e.kind.value),
        ("status", e.status.value),
        ("sequence", str(e.sequence)),
        ("fingerprint", e.fingerprint),
        ("alert_id", e.alert_id),
    ]
    params += [("indicator", code) for code in e.indicators]
    if e.domain is not None:
        params.append(("domain", e.domain))
    params.append(("department", e.department))
    params += [("co_department", code) for code in e.co_departments]
    params += [
        ("sharing", e.sharing.value),
        ("workflow", e.workflow.value),
        ("rule", e.evidence.rule),
        ("rule_version", e.evidence.version),
    ]
    return params


# --- helpers ----------------------------------------------------------------------------


def _q(tag: str) -> str:
    return f"{{{CAP_NAMESPACE}}}{tag}"


def _sub(parent: ET.Element, tag: str, text: str) -> ET.Element:
    child = ET.SubElement(parent, _q(tag))
    child.text = _xml_text(text)
    return child


def _xml_text(text: str) -> str:
    """Text XML 1.0 can carry: line breaks as ``\\n``, other impossible characters as U+FFFD."""
    return _NOT_XML.sub("\ufffd", text.replace("\r\n", "\n").replace("\r", "\n"))


def _token(text: str) -> str:
    return quote(text, safe=_TOKEN_SAFE, errors="surrogatepass")


def _check_token(what: str, value: str) -> None:
    if not value or _FORBIDDEN_IN_TOKEN.search(value):
        raise ValueError(
            f"CAP {what} must be non-empty, without spaces, commas, '<' or '&': {value!r}"
        )


def _require_aware(field: str, when: datetime) -> None:
    if when.utcoffset() is None:
        raise ValueError(f"{field} has no time zone: {when.isoformat()}")


def _number(v: float) -> str:
    if v != 0 and abs(v) < 0.001:
        return f"{v:.3g}"
    text = f"{v:.3f}".rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


def _duration(seconds: float, zh: bool) -> str:
    if seconds < 120:
        return f"{_number(seconds)}秒" if zh else f"{_number(seconds)} s"
    if seconds < 7200:
        return f"{_number(seconds / 60)}分钟" if zh else f"{_number(seconds / 60)} min"
    return f"{_number(seconds / 3600)}小时" if zh else f"{_number(seconds / 3600)} h"
