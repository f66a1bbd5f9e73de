"""Who hears about an alert: the routing tree of ``config/routes.yaml``, and escalation.

Routing is modelled on Prometheus Alertmanager. An alert becomes a set of
labels (:func:`labels_of`); a tree of routes, each with label matchers, picks
the receivers (webhooks with a payload format) it is sent to and the timers of
its notification group. The file is validated against the city when it is
loaded; anything wrong stops start-up with a :class:`~streams.core.config.ConfigError`
naming the file, line, key path and reason, e.g.::

    config/routes.yaml:135: route.routes[3].receiver: unknown receiver 'fire-desk'; known: ['cap-feed', ...]

Labels
======

================  ===========================================================================
label             value
================  ===========================================================================
department        the owning department (``AlertEvent.department``)
co_departments    the co-handling departments, comma-separated; absent when there are none
domain            the alert's domain; absent for alerts without one
district          district code
street            street code; absent for district-wide alerts
grade             ``I``, ``II``, ``III`` or ``IV``
kind              ``warning``, ``alarm``, ``composite`` or ``data_quality``
rule              ``evidence.rule``: a threshold rule id, ``<id>.forecast``, or a model's name
indicator         the first of the alert's indicators; absent when it has none
================  ===========================================================================

As in Alertmanager, an absent label reads as the empty string: ``street=""``
matches district-wide alerts, ``street!=""`` alerts on a street.

Matchers
========

A route's ``matchers`` is a list of strings ``<label><op><value>``, all of which
must hold: ``=`` equal, ``!=`` not equal, ``=~`` the regular expression matches
the whole value, ``!~`` it does not. Values may be double-quoted (JSON
escapes), e.g. ``grade=~"I|II"``. Regular expressions are Python's, anchored at
both ends. Besides the labels above, matchers may name ``handler``: the owner or
any co-department. ``handler=fire`` holds when the fire department owns or
co-handles the alert; ``handler!=fire`` when it does neither; ``=~`` and ``!~``
likewise test whether any of them matches. ``department`` is the owner alone.

A matcher that can never hold, or that always holds because its value is not a
value the label can take (an unknown district, a regular expression that
matches no known department, ...), is an error: it is almost always a typo.

Matching
========

The root route matches every alert and must name a receiver. From a route that
matches, its child routes are tried in order, depth first: the first child that
matches (and its own matching descendants) wins and the others are not tried,
unless that child has ``continue: true``, in which case the following siblings
are tried as well. A route whose children all fail to match applies itself. So
an alert reaches at least one route, and :meth:`RoutingTree.match` returns the
routes it reaches in tree order.

A child inherits ``receiver``, ``group_by``, ``group_wait``, ``group_interval``,
``repeat_interval``, ``send_resolved`` and ``mute_time_intervals`` from its
parent unless it sets them (``mute_time_intervals: []`` clears inherited ones;
Alertmanager does not inherit mute times, cityvitals does so that a subtree
muted for planned works stays muted). Defaults at the root: no grouping labels,
``group_wait`` 30s, ``group_interval`` 5m, ``repeat_interval`` 4h,
``send_resolved`` true. ``group_by: ["..."]`` groups by every label.

Timers follow Alertmanager: a new group waits ``group_wait`` before its first
notification, later changes are sent at most every ``group_interval``, and an
unchanged firing group is re-sent every ``repeat_interval``. ``group_wait`` may
not exceed ``group_interval``, and ``repeat_interval`` may not be shorter than
``group_interval`` (neither could take effect).

A route's path names it: the root is ``root`` and each child adds its ``name``
(unique among its siblings), or ``routes[i]`` when it has none, e.g.
``root/fire/severe``. A notification group's key is the route path plus the
values of its ``group_by`` labels (:func:`group_key`), e.g.
``root/fire:{district="339901"}``.

Receivers
=========

``name`` (unique), ``url`` (``http://`` or ``https://`` with a host),
``format`` (:class:`PayloadFormat`: ``native``, ``alertmanager``, ``cap``,
``dingtalk``, ``wecom``, ``slack``; see :mod:`streams.notify.payloads`), ``max_alerts``
(0 = all; more are counted as truncated), and an optional signing secret. A URL
or a secret may come from the environment: ``url_env: NAME`` / ``secret_env:
NAME`` win when the variable, or the file ``NAME_FILE`` names, is set and not
empty; a secret may also come from a file, ``secret_file: PATH`` (relative to
this file's directory), as Kubernetes mounts secrets; otherwise the literal
``url`` / ``secret`` applies. A receiver without a url is rejected; a secret
that is named but not set, shorter than 32 bytes, or a known placeholder, and a
URL holding a placeholder, are listed in :attr:`RoutingTree.secret_problems`,
with which the worker refuses to start. Secrets are kept as
:class:`pydantic.SecretStr` and never printed; URLs are printed with their
query values hidden. The secret signs each request (:mod:`streams.notify.delivery`):
with the ``X-Cityvitals-Signature`` header, or for ``dingtalk`` receivers the way
DingTalk's robots check it (加签: ``timestamp`` and ``sign`` query parameters).
``responder_links: false`` leaves the receiver's notifications without responder
links (e.g. a public channel).

Mute time intervals
===================

``time_intervals`` is a list of named intervals, each a list of specs as in
Alertmanager's ``time_intervals``: ``times`` (``start_time`` / ``end_time``,
quoted ``"HH:MM"``, end up to ``"24:00"``), ``weekdays`` (``monday`` or
``monday:friday``), ``days_of_month`` (``1``, ``"1:5"``, negative counts from
the month's end: ``-1`` is the last day), ``months`` (``january``, ``1``,
``"january:march"``), ``years`` (``2026``, ``"2026:2027"``) and ``location``
(IANA time zone; default: the city's). A spec holds when every field it gives
holds; an interval holds when any of its specs does. Unlike Alertmanager, a time
range may cross midnight (``22:00`` to ``06:00``): its early-morning part belongs
to the day it started, so ``weekdays: [monday:friday]`` with ``22:00``–``06:00``
covers Friday night until Saturday 06:00 but not Monday 00:00–06:00. A route
with a mute interval that holds sends nothing (it still stops the search for
later siblings). The root route cannot be muted.

Escalation
==========

``escalation.ack_deadlines`` gives each grade the time within which an alert
must be acknowledged (all four grades; a more serious grade may not have a
longer deadline than a less serious one). ``escalation.levels`` names a receiver
for each level of the hierarchy: ``street``, ``district``, ``city``. An alert
starts at ``street`` when it has a street, else at ``district``
(:func:`start_level`); the routing tree notifies it. Each time its deadline
passes unacknowledged it moves one level up (:func:`escalation_chain`) and that
level's receiver is notified, up to ``city``. ``escalation.departments`` may
override deadlines and level receivers for the alerts a department owns.

Responder links
===============

With ``responder_links`` (``ttl``, default ``12h``, at least ``1m``; the signing
key, at least 32 bytes, from ``key_env: NAME`` as secrets above, ``key_file:
PATH``, or a literal ``key``), every
firing alert in a notification carries a signed link that lets whoever holds it
acknowledge that alert or add a field report to it until the link expires
(:mod:`streams.notify.respond`). Without the section, notifications carry no such link.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal, NoReturn
from urllib.parse import parse_qsl, urlsplit, urlunsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    SecretStr,
    field_validator,
)
from rich.console import Console

from streams.alerting.detection import COMPOSITE_RULE, SILENCE_RULE
from streams.alerting.models import ANOMALY_RULES
from streams.alerting.rules import Duration, GradeName, ThresholdRules, load_thresholds
from streams.core.config import (
    CityConfig,
    Code,
    ConfigError,
    _Strict,
    format_path,
    load_config,
    load_model,
    nearest_line,
)
from streams.core.messages import AlertEvent, AlertKind, Grade
from streams.core.secrets import (
    FILE_SUFFIX,
    Found,
    SecretProblem,
    from_variable,
    is_placeholder,
    read_file,
    weakness,
)
from streams.notify.respond import LinkSigner

ROUTES_FILE = "routes.yaml"

LABELS: tuple[str, ...] = (
    "department",
    "co_departments",
    "domain",
    "district",
    "street",
    "grade",
    "kind",
    "rule",
    "indicator",
)
"""The labels :func:`labels_of` gives an alert."""

MATCHER_LABELS: tuple[str, ...] = (*(n for n in LABELS if n != "co_departments"), "handler")
"""What a matcher may test: every label but ``co_departments`` (use ``handler``)."""

OPTIONAL_LABELS = frozenset({"co_departments", "domain", "street", "indicator"})
"""Labels some alerts do not have."""

GROUP_ALL = "..."

DEFAULT_GROUP_WAIT_S = 30.0
DEFAULT_GROUP_INTERVAL_S = 300.0
DEFAULT_REPEAT_INTERVAL_S = 4 * 3600.0


class PayloadFormat(StrEnum):
    """How a receiver wants its notifications (rendered by :mod:`streams.notify.payloads`)."""

    NATIVE = "native"  # cityvitals JSON: an envelope holding the AlertEvents
    ALERTMANAGER = "alertmanager"  # Alertmanager webhook, version 4
    CAP = "cap"  # CAP 1.2 XML, one document per alert
    DINGTALK = "dingtalk"  # DingTalk group robot, markdown
    WECOM = "wecom"  # WeCom (企业微信) group robot, markdown
    SLACK = "slack"  # Slack incoming webhook, attachments


class Level(StrEnum):
    """Levels of the city's hierarchy an unacknowledged alert climbs."""

    STREET = "street"
    DISTRICT = "district"
    CITY = "city"


_LEVEL_ORDER: tuple[Level, ...] = (Level.STREET, Level.DISTRICT, Level.CITY)


# --- labels -------------------------------------------------------------------------------


def labels_of(alert: AlertEvent) -> dict[str, str]:
    """The routing labels of an alert (see the module table); absent labels are left out."""
    labels = {
        "department": alert.department,
        "district": alert.district,
        "grade": alert.grade.roman,
        "kind": alert.kind.value,
        "rule": alert.evidence.rule,
    }
    if alert.co_departments:
        labels["co_departments"] = ",".join(alert.co_departments)
    if alert.domain is not None:
        labels["domain"] = alert.domain
    if alert.street is not None:
        labels["street"] = alert.street
    if alert.indicators:
        labels["indicator"] = alert.indicators[0]
    return dict(sorted(labels.items()))


def handlers_of(labels: Mapping[str, str]) -> list[str]:
    """The owner and the co-departments named by a label set (what ``handler`` tests)."""
    out = [labels.get("department", "")]
    co = labels.get("co_departments", "")
    out += [c for c in co.split(",") if c]
    return out


# --- matchers -----------------------------------------------------------------------------

_MATCHER = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*(.*?)\s*$", re.DOTALL)


@dataclass(frozen=True)
class Matcher:
    """One label test of a route: ``name op value``."""

    name: str
    op: Literal["=", "!=", "=~", "!~"]
    value: str
    pattern: re.Pattern[str] | None = field(default=None, compare=False, repr=False)

    @classmethod
    def parse(cls, text: str) -> Matcher:
        """Parse ``name=value``, ``name!=value``, ``name=~regex`` or ``name!~regex``."""
        m = _MATCHER.match(text)
        if m is None:
            raise ValueError(
                f"{text!r} is not a matcher; write <label><op><value> with op one of "
                '=, !=, =~, !~, e.g. department=fire or grade=~"I|II"'
            )
        name, op, raw = m.group(1), m.group(2), m.group(3)
        if name not in MATCHER_LABELS:
            hint = " (match co-departments with handler)" if name == "co_departments" else ""
            raise ValueError(
                f"unknown label {name!r} in matcher {text!r}{hint}; known: {list(MATCHER_LABELS)}"
            )
        value = raw
        if raw.startswith('"'):
            try:
                value = json.loads(raw)
            except ValueError:
                value = None
            if not isinstance(value, str):
                raise ValueError(f"badly quoted value in matcher {text!r}: {raw}")
        pattern = None
        if op in ("=~", "!~"):
            try:
                pattern = re.compile(value)
            except re.error as exc:
                raise ValueError(f"invalid regular expression {value!r}: {exc}") from None
        return cls(name, op, value, pattern)  # type: ignore[arg-type]

    def _holds_for(self, value: str) -> bool:
        if self.pattern is not None:
            return self.pattern.fullmatch(value) is not None
        return value == self.value

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether the label set passes this test (an absent label is ``""``)."""
        values = handlers_of(labels) if self.name == "handler" else [labels.get(self.name, "")]
        hit = any(self._holds_for(v) for v in values)
        return hit if self.op in ("=", "=~") else not hit

    def __str__(self) -> str:
        return f"{self.name}{self.op}{json.dumps(self.value, ensure_ascii=False)}"


def _matcher(value: Any) -> Matcher:
    if isinstance(value, Matcher):
        return value
    if not isinstance(value, str):
        raise ValueError(f"a matcher is a string like 'department=fire', got {value!r}")
    return Matcher.parse(value)


MatcherField = Annotated[Matcher, PlainValidator(_matcher)]


# --- time intervals -----------------------------------------------------------------------

WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
MONTHS = (
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
)
_CLOCK = re.compile(r"^(\d{1,2}):(\d{2})$")
_QUOTE_HINT = "write ranges as quoted strings, e.g. '1:5' (YAML reads an unquoted 1:5 as 65)"


def _clock(value: Any) -> int:
    """``"HH:MM"`` as minutes after midnight (0..1440)."""
    if isinstance(value, int) and not isinstance(value, bool):
        raise ValueError(
            f'write times of day as quoted "HH:MM" strings (YAML reads an unquoted '
            f"22:00 as the number 1320), got {value}"
        )
    if not isinstance(value, str) or (m := _CLOCK.match(value.strip())) is None:
        raise ValueError(f'{value!r} is not a time of day "HH:MM"')
    hours, minutes = int(m.group(1)), int(m.group(2))
    if minutes > 59 or hours > 24 or (hours == 24 and minutes):
        raise ValueError(f"{value!r} is not a time of day between 00:00 and 24:00")
    return hours * 60 + minutes


def _one(text: str, names: Sequence[str], lo: int, hi: int, what: str) -> int:
    t = text.strip().lower()
    if t in names:
        return names.index(t) + 1
    try:
        n = int(t)
    except ValueError:
        known = f"; known: {', '.join(names)}" if names else ""
        raise ValueError(f"{text!r} is not a {what}{known}") from None
    if not lo <= n <= hi or n == 0:
        raise ValueError(f"{what} {n} is out of range {lo}..{hi}" + (" (not 0)" if lo < 0 else ""))
    return n


def _range_parser(
    names: Sequence[str], lo: int, hi: int, what: str, *, negative: bool = False
) -> Any:
    def parse(value: Any) -> tuple[int, int]:
        if isinstance(value, int) and not isinstance(value, bool):
            if not (lo <= value <= hi) or value == 0:
                raise ValueError(
                    f"{what} {value} is out of range {lo}..{hi}"
                    + (" (not 0)" if lo < 0 else "")
                    + ("" if value == 0 else f"; {_QUOTE_HINT}")
                )
            return (value, value)
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"{value!r} is not a {what} or a range of them")
        # a negative start ("-3:-1") contains a leading '-': split on the colon only
        parts = value.split(":")
        if len(parts) > 2:
            raise ValueError(f"{value!r} is not a {what} or a range '<first>:<last>'")
        first = _one(parts[0], names, lo, hi, what)
        last = _one(parts[-1], names, lo, hi, what)
        if (first > 0) == (last > 0) and first > last:
            raise ValueError(f"range {value!r} starts after it ends")
        if not negative and (first < 0 or last < 0):
            raise ValueError(f"{what} {value!r} cannot be negative")
        return (first, last)

    return parse


Weekdays = Annotated[tuple[int, int], BeforeValidator(_range_parser(WEEKDAYS, 1, 7, "weekday"))]
DaysOfMonth = Annotated[
    tuple[int, int], BeforeValidator(_range_parser((), -31, 31, "day of month", negative=True))
]
Months = Annotated[tuple[int, int], BeforeValidator(_range_parser(MONTHS, 1, 12, "month"))]
Years = Annotated[tuple[int, int], BeforeValidator(_range_parser((), 1, 9999, "year"))]
ClockTime = Annotated[int, BeforeValidator(_clock)]


class TimeRangeEntry(_Strict):
    start_time: ClockTime
    end_time: ClockTime

    @field_validator("start_time")
    @classmethod
    def _not_at_24(cls, v: int) -> int:
        if v == 1440:
            raise ValueError("a range cannot start at 24:00; start at 00:00")
        return v


class TimeSpecEntry(_Strict):
    times: list[TimeRangeEntry] = Field(default_factory=list)
    weekdays: list[Weekdays] = Field(default_factory=list)
    days_of_month: list[DaysOfMonth] = Field(default_factory=list)
    months: list[Months] = Field(default_factory=list)
    years: list[Years] = Field(default_factory=list)
    location: str | None = None

    @field_validator("location")
    @classmethod
    def _zone(cls, v: str | None) -> str | None:
        if v is not None:
            _zone(v)
        return v


class TimeIntervalEntry(_Strict):
    name: Code
    time_intervals: list[TimeSpecEntry] = Field(min_length=1)


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r} (an IANA name like Asia/Shanghai)") from None


def _days_in_month(d: date) -> int:
    following = date(d.year + d.month // 12, d.month % 12 + 1, 1)
    return (following - timedelta(days=1)).day


@dataclass(frozen=True)
class TimeSpec:
    """One spec of a time interval: every field it gives must hold (local time in ``zone``)."""

    zone: ZoneInfo
    times: tuple[tuple[int, int], ...] = ()
    weekdays: tuple[tuple[int, int], ...] = ()
    days_of_month: tuple[tuple[int, int], ...] = ()
    months: tuple[tuple[int, int], ...] = ()
    years: tuple[tuple[int, int], ...] = ()

    def _day_holds(self, d: date) -> bool:
        if self.weekdays and not any(a <= d.isoweekday() <= b for a, b in self.weekdays):
            return False
        if self.days_of_month:
            n = _days_in_month(d)
            if not any(
                (a if a > 0 else n + 1 + a) <= d.day <= (b if b > 0 else n + 1 + b)
                for a, b in self.days_of_month
            ):
                return False
        if self.months and not any(a <= d.month <= b for a, b in self.months):
            return False
        return not (self.years and not any(a <= d.year <= b for a, b in self.years))

    def holds(self, at: datetime) -> bool:
        """Whether the spec holds at an aware instant."""
        local = at.astimezone(self.zone)
        today = local.date()
        if not self.times:
            return self._day_holds(today)
        minute = local.hour * 60 + local.minute
        for start, end in self.times:
            if start < end:
                if start <= minute < end and self._day_holds(today):
                    return True
            else:  # overnight: the part after midnight belongs to the day before
                if minute >= start and self._day_holds(today):
                    return True
                if minute < end and self._day_holds(today - timedelta(days=1)):
                    return True
        return False


@dataclass(frozen=True)
class TimeInterval:
    """A named mute time interval: it holds when any of its specs holds."""

    name: str
    specs: tuple[TimeSpec, ...]

    def muted(self, at: datetime) -> bool:
        """Whether ``at`` (timezone-aware) falls inside the interval."""
        if at.utcoffset() is None:
            raise ValueError(f"time without a time zone: {at.isoformat()}")
        return any(s.holds(at) for s in self.specs)


# --- receivers ----------------------------------------------------------------------------

_ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"


class ReceiverEntry(_Strict):
    name: Code
    url: str | None = None
    url_env: Annotated[str, Field(pattern=_ENV_NAME)] | None = None
    format: PayloadFormat
    secret: Annotated[str, Field(min_length=1)] | None = None
    secret_env: Annotated[str, Field(pattern=_ENV_NAME)] | None = None
    secret_file: Annotated[str, Field(min_length=1)] | None = None
    max_alerts: int = Field(0, ge=0)
    responder_links: bool = True


def _check_url(url: str, what: str = "url") -> str | None:
    """Why ``url`` is not an http(s) URL with a host, or None."""
    if any(c.isspace() for c in url):
        return f"{what} must not contain spaces: {url!r}"
    try:
        parts = urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as exc:
        return f"{what} {url!r} is not a valid URL: {exc}"
    if parts.scheme not in ("http", "https") or not host:
        return f"{what} must be an http:// or https:// URL with a host, got {url!r}"
    return None


def redact_url(url: str) -> str:
    """The URL with user info and query values hidden (robot keys often live there)."""
    parts = urlsplit(url)
    netloc = parts.hostname or ""
    if parts.port is not None:
        netloc += f":{parts.port}"
    query = "&".join(f"{k}=***" for k, _ in parse_qsl(parts.query, keep_blank_values=True))
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


@dataclass(frozen=True)
class Receiver:
    """Where notifications go and in which format; the secret signs them (delivery's concern)."""

    name: str
    url: str
    format: PayloadFormat
    secret: SecretStr | None = None
    url_source: str = "literal"  # "literal" or "env:<NAME>"
    secret_source: str = "none"  # "none", "literal", "env:<NAME>" or "file:<PATH>"
    max_alerts: int = 0
    responder_links: bool = True  # firing alerts carry a responder link (when links are on)

    def secret_value(self) -> str | None:
        """The signing secret in clear, for the delivery agent; None when there is none."""
        return None if self.secret is None else self.secret.get_secret_value()

    @property
    def display_url(self) -> str:
        return redact_url(self.url)


# --- routes -------------------------------------------------------------------------------


class RouteEntry(_Strict):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    name: Code | None = None
    matchers: list[MatcherField] = Field(default_factory=list)
    receiver: Code | None = None
    group_by: list[str] | None = None
    group_wait: Duration | None = None
    group_interval: Duration | None = None
    repeat_interval: Duration | None = None
    send_resolved: bool | None = None
    mute_time_intervals: list[Code] | None = None
    continue_: bool = Field(False, alias="continue")
    routes: list[RouteEntry] = Field(default_factory=list)


class Levels(_Strict):
    street: Code
    district: Code
    city: Code


class PartialLevels(_Strict):
    street: Code | None = None
    district: Code | None = None
    city: Code | None = None


class DepartmentEscalation(_Strict):
    ack_deadlines: dict[GradeName, Duration] = Field(default_factory=dict)
    levels: PartialLevels = Field(default_factory=PartialLevels)


class EscalationEntry(_Strict):
    ack_deadlines: dict[GradeName, Duration]
    levels: Levels
    departments: dict[Code, DepartmentEscalation] = Field(default_factory=dict)


class ResponderLinksEntry(_Strict):
    ttl: Duration = 12 * 3600.0
    key: Annotated[str, Field(min_length=1)] | None = None
    key_env: Annotated[str, Field(pattern=_ENV_NAME)] | None = None
    key_file: Annotated[str, Field(min_length=1)] | None = None


class RoutesFile(_Strict):
    version: Literal[1]
    console_url: str = "http://127.0.0.1:6066"
    responder_links: ResponderLinksEntry | None = None
    receivers: list[ReceiverEntry] = Field(min_length=1)
    time_intervals: list[TimeIntervalEntry] = Field(default_factory=list)
    route: RouteEntry
    escalation: EscalationEntry


@dataclass(frozen=True)
class Route:
    """A node of the routing tree with its settings resolved (inheritance applied)."""

    path: str
    matchers: tuple[Matcher, ...]
    continue_: bool
    receiver: Receiver
    group_by: tuple[str, ...]
    group_wait_s: float
    group_interval_s: float
    repeat_interval_s: float
    send_resolved: bool
    mute_intervals: tuple[TimeInterval, ...]
    routes: tuple[Route, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(m.matches(labels) for m in self.matchers)

    def match(self, labels: Mapping[str, str]) -> list[Route]:
        """Alertmanager's depth-first search from this node (empty if it does not match)."""
        if not self.matches(labels):
            return []
        found: list[Route] = []
        for child in self.routes:
            hits = child.match(labels)
            found += hits
            if hits and not child.continue_:
                break
        return found or [self]

    def walk(self) -> Iterator[Route]:
        """This route and every route below it, depth first."""
        yield self
        for child in self.routes:
            yield from child.walk()

    def result(self) -> RouteResult:
        return RouteResult(
            path=self.path,
            receiver=self.receiver,
            group_by=self.group_by,
            group_wait_s=self.group_wait_s,
            group_interval_s=self.group_interval_s,
            repeat_interval_s=self.repeat_interval_s,
            send_resolved=self.send_resolved,
            mute_intervals=self.mute_intervals,
        )


@dataclass(frozen=True)
class RouteResult:
    """Where one matched route sends an alert, and the timers of its notification group."""

    path: str
    receiver: Receiver
    group_by: tuple[str, ...]
    group_wait_s: float
    group_interval_s: float
    repeat_interval_s: float
    send_resolved: bool
    mute_intervals: tuple[TimeInterval, ...]

    def group_labels(self, labels: Mapping[str, str]) -> dict[str, str]:
        """The alert's values of the route's ``group_by`` labels (absent ones left out)."""
        if GROUP_ALL in self.group_by:
            return dict(sorted(labels.items()))
        return {n: labels[n] for n in sorted(self.group_by) if n in labels}

    def muted_by(self, at: datetime) -> str | None:
        """The name of the first mute interval that holds at ``at``, or None."""
        return next((i.name for i in self.mute_intervals if i.muted(at)), None)

    def muted(self, at: datetime) -> bool:
        """Whether the route sends nothing at ``at``."""
        return self.muted_by(at) is not None


def group_key(result: RouteResult, labels: Mapping[str, str]) -> str:
    """The key of the notification group an alert joins on a route, e.g.
    ``root/fire:{district="339901"}``."""
    shown = ", ".join(
        f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in result.group_labels(labels).items()
    )
    return f"{result.path}:{{{shown}}}"


@dataclass(frozen=True)
class Escalation:
    """Acknowledgement deadlines and the receivers of each level, with department overrides."""

    deadlines: Mapping[Grade, float]
    levels: Mapping[Level, Receiver]
    departments: Mapping[str, tuple[Mapping[Grade, float], Mapping[Level, Receiver]]]

    def deadline_for(self, grade: Grade | str, department: str | None = None) -> float:
        g = _grade(grade)
        override = self.departments.get(department or "")
        if override is not None and g in override[0]:
            return override[0][g]
        return self.deadlines[g]

    def receiver_for(self, level: Level | str, department: str | None = None) -> Receiver:
        lv = Level(level)
        override = self.departments.get(department or "")
        if override is not None and lv in override[1]:
            return override[1][lv]
        return self.levels[lv]


def _grade(grade: Grade | str) -> Grade:
    if isinstance(grade, Grade):
        return grade
    try:
        return Grade[grade]
    except KeyError:
        raise ValueError(f"unknown grade {grade!r}; known: I, II, III, IV") from None


def start_level(labels: Mapping[str, str]) -> Level:
    """Where an alert starts in the hierarchy: its street if it has one, else its district."""
    return Level.STREET if labels.get("street") else Level.DISTRICT


def escalation_chain(labels: Mapping[str, str]) -> tuple[Level, ...]:
    """The levels an unacknowledged alert climbs to, one per passed deadline, in order."""
    start = _LEVEL_ORDER.index(start_level(labels))
    return _LEVEL_ORDER[start + 1 :]


def next_level(level: Level | str) -> Level | None:
    """The level above, or None at ``city``."""
    i = _LEVEL_ORDER.index(Level(level))
    return _LEVEL_ORDER[i + 1] if i + 1 < len(_LEVEL_ORDER) else None


@dataclass(frozen=True)
class RoutingTree:
    """``routes.yaml`` loaded and checked: the routes, receivers, mute intervals, escalation."""

    root: Route
    receivers: Mapping[str, Receiver]
    time_intervals: Mapping[str, TimeInterval]
    escalation: Escalation
    console_url: str
    timezone: str
    file: Path
    responder_links: LinkSigner | None = None  # signs the responder links in notifications
    # secrets the worker cannot run with (missing, short, placeholders): it refuses to start
    secret_problems: tuple[SecretProblem, ...] = ()

    def match(self, labels: Mapping[str, str]) -> list[RouteResult]:
        """The routes an alert with these labels reaches, in tree order (at least the root)."""
        return [r.result() for r in self.root.match(labels)]

    def routes(self) -> Iterator[Route]:
        return self.root.walk()

    def deadline_for(self, grade: Grade | str, department: str | None = None) -> float:
        """Seconds within which an alert of this grade (and owning department) must be acknowledged."""
        return self.escalation.deadline_for(grade, department)

    def escalation_receiver(self, level: Level | str, department: str | None = None) -> Receiver:
        """Who is notified when an alert (of this owning department) reaches ``level``."""
        return self.escalation.receiver_for(level, department)


# --- loading ------------------------------------------------------------------------------


def _from_env(
    env_name: str | None, file: Path | None, literal: str | None, environ: Mapping[str, str]
) -> Found:
    """A value from the variable (or its ``_FILE``), else the file, else the literal."""
    if env_name is not None:
        found = from_variable(env_name, environ)
        if found.value is not None or found.error is not None:
            return found
    if file is not None:
        return read_file(file, "a file the routes file names")
    return Found(literal, "none" if literal is None else "literal")


def _set_by(env_name: str | None, file: Path | None, literal: str | None) -> str:
    """Where a routes file says a secret comes from, for messages."""
    ways = [f"{env_name} or {env_name}{FILE_SUFFIX}"] if env_name is not None else []
    ways += [f"the file {file}"] if file is not None else []
    return " or ".join(ways) if ways else "a literal in the routes file"


def _known_values(cfg: CityConfig, rules: ThresholdRules | None) -> dict[str, frozenset[str]]:
    known = {
        "department": frozenset(cfg.catalogue.departments),
        "handler": frozenset(cfg.catalogue.departments),
        "domain": frozenset(cfg.catalogue.domains),
        "district": frozenset(cfg.districts),
        "street": frozenset(cfg.city.street_district),
        "grade": frozenset(g.roman for g in Grade),
        "kind": frozenset(k.value for k in AlertKind),
        "indicator": frozenset(cfg.indicators),
    }
    if rules is not None:
        ids = {r.id for r in rules.rules}
        known["rule"] = frozenset(
            {*ids, *(f"{i}.forecast" for i in ids), *ANOMALY_RULES, COMPOSITE_RULE, SILENCE_RULE}
        )
    return known


def _matcher_problem(m: Matcher, known: Mapping[str, frozenset[str]]) -> str | None:
    """Why a matcher can never hold or always holds against the city's values, or None."""
    values = known.get(m.name)
    if values is None:
        return None
    label = "department" if m.name == "handler" else m.name
    possible = values | ({""} if m.name in OPTIONAL_LABELS else set())
    shown = (
        sorted(values) if len(values) <= 12 else f"{len(values)} values, e.g. {sorted(values)[:5]}"
    )
    if m.op in ("=", "!="):
        if m.value in possible:
            return None
        if m.value == "":
            return f"every alert has a {label}, so {m} {'never' if m.op == '=' else 'always'} holds"
        return f"unknown {label} {m.value!r} in matcher {m}; known: {shown}"
    hits = [v for v in possible if m._holds_for(v)]
    if not hits:
        effect = "never" if m.op == "=~" else "always"
        return f"{m} matches no known {label}, so it {effect} holds; known: {shown}"
    if len(hits) == len(possible) and m.op == "!~":
        return f"{m} matches every known {label}, so it never holds"
    return None


def secret_variables(path: Path | str) -> list[str]:
    """The variables a routes file reads its secrets from (``secret_env``, ``key_env``),
    in file order: what a demo or a test run must set; empty when the file cannot be read
    or parsed (loading it says why)."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return []
    if not isinstance(data, dict):
        return []
    entries = [r for r in data.get("receivers") or [] if isinstance(r, dict)]
    entries.append(data.get("responder_links") or {})
    names = [e.get("secret_env", e.get("key_env")) for e in entries if isinstance(e, dict)]
    return list(dict.fromkeys(n for n in names if isinstance(n, str)))


def load_routes(
    path: Path | str,
    cfg: CityConfig,
    *,
    rules: ThresholdRules | None = None,
    environ: Mapping[str, str] | None = None,
) -> RoutingTree:
    """Load ``routes.yaml`` and check it against the city; anything wrong is a ConfigError.

    With ``rules``, ``rule`` matchers are checked against the threshold rules and
    the models' rule names. ``environ`` (default :data:`os.environ`) supplies
    ``url_env``, ``secret_env`` and ``key_env`` variables. Secrets that are missing,
    short or placeholders do not stop the loading: they are listed in the tree's
    ``secret_problems``.
    """
    file = Path(path)
    data, lines = load_model(file, RoutesFile)
    return _RoutesLoader(file, lines, cfg, rules, os.environ if environ is None else environ).load(
        data
    )


Loc = tuple[str | int, ...]


class _RouteSecrets:
    """The secrets a routes file names, read where it says; unfit ones become problems."""

    def __init__(self, file: Path, env: Mapping[str, str]) -> None:
        self.file, self.env = file, env
        self.problems: list[SecretProblem] = []

    def read(
        self, what: str, env_name: str | None, file: str | None, literal: str | None, loc: Loc
    ) -> Found:
        """A secret from where the entry at ``loc`` says (a file relative to the routes
        file's directory)."""
        path = None if file is None else self.file.parent / file
        found = _from_env(env_name, path, literal, self.env)
        set_by = _set_by(env_name, path, literal)
        if found.error is not None:
            self.problems.append(SecretProblem(what, f"cannot be read ({found.error})", set_by))
        elif (why := weakness(found.value)) is not None:
            if found.source == "literal":
                set_by = f"{format_path(loc)} in {self.file}, or a variable or file named there"
            self.problems.append(SecretProblem(what, why, set_by))
        if found.value is None and env_name is not None:
            return Found(None, f"env:{env_name}")  # where it is to come from, for explain()
        return found

    def of_receiver(self, r: ReceiverEntry, loc: Loc) -> Found:
        """A receiver's signing secret, if it has one."""
        if r.secret is None and r.secret_env is None and r.secret_file is None:
            return Found(None)
        what = f"the signing secret of receiver {r.name}"
        return self.read(what, r.secret_env, r.secret_file, r.secret, (*loc, "secret"))

    def check_url(self, r: ReceiverEntry, url: Found, loc: Loc) -> None:
        """A robot's key often lives in its URL: a placeholder there is a problem too."""
        if url.value is None or not is_placeholder(url.value):
            return
        where = (
            _set_by(r.url_env, None, None)
            if url.source != "literal"
            else f"{format_path((*loc, 'url'))} in {self.file}, or url_env there"
        )
        what = f"the url of receiver {r.name}"
        self.problems.append(SecretProblem(what, "holds a known placeholder", where))


def _responder_links(
    entry: ResponderLinksEntry | None,
    secrets: _RouteSecrets,
    fail: Callable[[Loc, str], NoReturn],
) -> LinkSigner | None:
    """The signer of responder links; None without the section or with an unfit key
    (then a secret problem)."""
    if entry is None:
        return None
    loc: Loc = ("responder_links",)
    if entry.key is None and entry.key_env is None and entry.key_file is None:
        fail(loc, "responder links need a signing key: key_env, key_file or key")
    if entry.ttl < 60:
        fail((*loc, "ttl"), f"a responder link must live at least 60s, got {entry.ttl:g}s")
    before = len(secrets.problems)
    what = "the responder-link signing key"
    key = secrets.read(what, entry.key_env, entry.key_file, entry.key, (*loc, "key"))
    if len(secrets.problems) > before or key.value is None:
        return None
    return LinkSigner(key.value.encode(), entry.ttl)


class _RoutesLoader:
    """The checks of one routes file, part by part; :meth:`fail` names file, line and key."""

    def __init__(
        self,
        file: Path,
        lines: Mapping[Loc, int],
        cfg: CityConfig,
        rules: ThresholdRules | None,
        env: Mapping[str, str],
    ) -> None:
        self.file, self.lines, self.cfg, self.env = file, lines, cfg, env
        self.known = _known_values(cfg, rules)
        self.receivers: dict[str, Receiver] = {}
        self.intervals: dict[str, TimeInterval] = {}
        self.secrets = _RouteSecrets(file, env)

    def fail(self, loc: Loc, reason: str) -> NoReturn:
        raise ConfigError(self.file, format_path(loc), reason, nearest_line(self.lines, loc))

    def load(self, data: RoutesFile) -> RoutingTree:
        if (why := _check_url(data.console_url, "console_url")) is not None:
            self.fail(("console_url",), why)
        self.receivers = self._receivers(data.receivers)
        self.intervals = self._intervals(data.time_intervals)
        root = self._route(data.route, ("route",), None, data.route.name or "root", ())
        return RoutingTree(
            responder_links=_responder_links(data.responder_links, self.secrets, self.fail),
            root=root,
            receivers=self.receivers,
            time_intervals=self.intervals,
            escalation=self._escalation(data.escalation),
            console_url=data.console_url.rstrip("/"),
            timezone=self.cfg.city.city.timezone,
            file=self.file,
            secret_problems=tuple(self.secrets.problems),
        )

    # -- receivers and time intervals --------------------------------------------------------
    def _receivers(self, entries: Sequence[ReceiverEntry]) -> dict[str, Receiver]:
        receivers: dict[str, Receiver] = {}
        for i, r in enumerate(entries):
            loc: Loc = ("receivers", i)
            if r.name in receivers:
                first = next(j for j, o in enumerate(entries) if o.name == r.name)
                self.fail(
                    (*loc, "name"), f"duplicate receiver name {r.name!r} (also receivers[{first}])"
                )
            if r.url is None and r.url_env is None:
                self.fail(loc, "a receiver needs a url (or url_env naming an environment variable)")
            url_found = _from_env(r.url_env, None, r.url, self.env)
            url = url_found.value
            if url is None:
                self.fail(
                    (*loc, "url_env"),
                    url_found.error
                    or f"environment variable {r.url_env} is not set and no url is given",
                )
            if (why := _check_url(url)) is not None:
                where = "url" if url_found.source == "literal" else "url_env"
                self.fail((*loc, where), why if where == "url" else f"${r.url_env}: {why}")
            self.secrets.check_url(r, url_found, loc)
            secret = self.secrets.of_receiver(r, loc)
            receivers[r.name] = Receiver(
                name=r.name,
                url=url,
                format=r.format,
                secret=None if secret.value is None else SecretStr(secret.value),
                url_source=url_found.source,
                secret_source=secret.source,
                max_alerts=r.max_alerts,
                responder_links=r.responder_links,
            )
        return receivers

    def _receiver(self, name: str, loc: Loc) -> Receiver:
        if name not in self.receivers:
            self.fail(loc, f"unknown receiver {name!r}; known: {sorted(self.receivers)}")
        return self.receivers[name]

    def _intervals(self, entries: Sequence[TimeIntervalEntry]) -> dict[str, TimeInterval]:
        city_zone = self.cfg.city.city.timezone
        intervals: dict[str, TimeInterval] = {}
        for i, ti in enumerate(entries):
            if ti.name in intervals:
                self.fail(
                    ("time_intervals", i, "name"), f"duplicate time interval name {ti.name!r}"
                )
            specs = []
            for j, s in enumerate(ti.time_intervals):
                for k, t in enumerate(s.times):
                    if t.start_time == t.end_time:
                        self.fail(
                            ("time_intervals", i, "time_intervals", j, "times", k),
                            "start_time equals end_time: the range is empty",
                        )
                specs.append(
                    TimeSpec(
                        zone=_zone(s.location or city_zone),
                        times=tuple((t.start_time, t.end_time) for t in s.times),
                        weekdays=tuple(s.weekdays),
                        days_of_month=tuple(s.days_of_month),
                        months=tuple(s.months),
                        years=tuple(s.years),
                    )
                )
            intervals[ti.name] = TimeInterval(ti.name, tuple(specs))
        return intervals

    # -- the route tree ----------------------------------------------------------------------
    def _route(
        self,
        entry: RouteEntry,
        loc: Loc,
        parent: Route | None,
        segment: str,
        places: tuple[tuple[str, str, Loc], ...],
    ) -> Route:
        """One route and, recursively, its children; ``places``: the ancestors' place matchers."""
        path = segment if parent is None else f"{parent.path}/{segment}"
        for j, m in enumerate(entry.matchers):
            if (why := _matcher_problem(m, self.known)) is not None:
                self.fail((*loc, "matchers", j), why)
        if parent is None:
            self._check_root(entry, loc)
        here = self._places(entry, loc, places)
        group_by = self._group_by(entry, loc)
        mutes = self._mutes(entry, loc)

        def inherit(own: Any, attr: str, default: Any) -> Any:
            if own is not None:
                return own
            return getattr(parent, attr) if parent is not None else default

        if entry.receiver is not None:
            rc = self._receiver(entry.receiver, (*loc, "receiver"))
        else:
            assert parent is not None  # the root's receiver was required above
            rc = parent.receiver
        route = Route(
            path=path,
            matchers=tuple(entry.matchers),
            continue_=entry.continue_,
            receiver=rc,
            group_by=inherit(group_by, "group_by", ()),
            group_wait_s=inherit(entry.group_wait, "group_wait_s", DEFAULT_GROUP_WAIT_S),
            group_interval_s=inherit(
                entry.group_interval, "group_interval_s", DEFAULT_GROUP_INTERVAL_S
            ),
            repeat_interval_s=inherit(
                entry.repeat_interval, "repeat_interval_s", DEFAULT_REPEAT_INTERVAL_S
            ),
            send_resolved=inherit(entry.send_resolved, "send_resolved", True),
            mute_intervals=inherit(mutes, "mute_intervals", ()),
        )
        _check_timers(entry, route, loc, parent is None, self.fail)
        return replace(route, routes=self._children(entry, loc, route, here))

    def _check_root(self, entry: RouteEntry, loc: Loc) -> None:
        if entry.matchers:
            self.fail(
                (*loc, "matchers"), "the root route matches every alert; it takes no matchers"
            )
        if entry.continue_:
            self.fail((*loc, "continue"), "the root route has no siblings to continue to")
        if entry.receiver is None:
            self.fail(loc, "the root route needs a receiver: where alerts no other route takes go")
        if entry.mute_time_intervals:
            self.fail((*loc, "mute_time_intervals"), "the root route cannot be muted")

    def _places(
        self, entry: RouteEntry, loc: Loc, places: tuple[tuple[str, str, Loc], ...]
    ) -> tuple[tuple[str, str, Loc], ...]:
        """The place matchers of the route and its ancestors, which must agree."""
        here = places + tuple(
            (m.name, m.value, (*loc, "matchers", j))
            for j, m in enumerate(entry.matchers)
            if m.op == "=" and m.name in ("district", "street") and m.value
        )
        street_district = self.cfg.city.street_district
        districts = {v for n, v, _ in here if n == "district"}
        for name, value, where in here:
            if name == "street" and districts and street_district.get(value) not in districts:
                self.fail(
                    where,
                    f"street {value!r} is in district {street_district.get(value)!r}, "
                    f"not {sorted(districts)[0]!r}: this route can never match",
                )
        if len(districts) > 1:
            self.fail((*loc, "matchers"), f"districts {sorted(districts)} together can never match")
        return here

    def _group_by(self, entry: RouteEntry, loc: Loc) -> tuple[str, ...] | None:
        group_by = tuple(entry.group_by) if entry.group_by is not None else None
        if group_by is not None:
            for j, g in enumerate(group_by):
                if g == GROUP_ALL and len(group_by) > 1:
                    self.fail((*loc, "group_by", j), f"{GROUP_ALL!r} (every label) stands alone")
                if g != GROUP_ALL and g not in LABELS:
                    self.fail((*loc, "group_by", j), f"unknown label {g!r}; known: {list(LABELS)}")
            if len(set(group_by)) != len(group_by):
                self.fail((*loc, "group_by"), "a label is listed twice")
        return group_by

    def _mutes(self, entry: RouteEntry, loc: Loc) -> tuple[TimeInterval, ...] | None:
        if entry.mute_time_intervals is None:
            return None
        for j, name in enumerate(entry.mute_time_intervals):
            if name not in self.intervals:
                self.fail(
                    (*loc, "mute_time_intervals", j),
                    f"mute time interval {name!r} is not defined under time_intervals; "
                    f"defined: {sorted(self.intervals)}",
                )
        return tuple(self.intervals[n] for n in entry.mute_time_intervals)

    def _children(
        self, entry: RouteEntry, loc: Loc, route: Route, here: tuple[tuple[str, str, Loc], ...]
    ) -> tuple[Route, ...]:
        children: list[Route] = []
        seen: dict[str, int] = {}
        catch_all: int | None = None
        for j, child in enumerate(entry.routes):
            child_loc = (*loc, "routes", j)
            if catch_all is not None:
                self.fail(
                    child_loc,
                    f"never reached: routes[{catch_all}] before it has no matchers and no "
                    "'continue: true', so it takes every alert",
                )
            name = child.name or f"routes[{j}]"
            if name in seen:
                self.fail((*child_loc, "name"), f"duplicate route name {name!r} among siblings")
            seen[name] = j
            children.append(self._route(child, child_loc, route, name, here))
            if not child.matchers and not child.continue_:
                catch_all = j
        return tuple(children)

    # -- escalation --------------------------------------------------------------------------
    def _escalation(self, esc: EscalationEntry) -> Escalation:
        missing = [g for g in ("I", "II", "III", "IV") if g not in esc.ack_deadlines]
        if missing:
            self.fail(
                ("escalation", "ack_deadlines"),
                f"every grade needs a deadline; missing: {', '.join(missing)}",
            )
        deadlines = {Grade[g]: s for g, s in esc.ack_deadlines.items()}
        self._check_deadlines(deadlines, deadlines, ("escalation", "ack_deadlines"), "")
        levels = {
            lv: self._receiver(getattr(esc.levels, lv.value), ("escalation", "levels", lv.value))
            for lv in Level
        }
        departments: dict[str, tuple[Mapping[Grade, float], Mapping[Level, Receiver]]] = {}
        known = self.cfg.catalogue.departments
        for dep, over in esc.departments.items():
            loc: Loc = ("escalation", "departments", dep)
            if dep not in known:
                self.fail(loc, f"unknown department {dep!r}; known: {sorted(known)}")
            own = {Grade[g]: s for g, s in over.ack_deadlines.items()}
            self._check_deadlines(
                {**deadlines, **own}, own, (*loc, "ack_deadlines"), " once merged with the defaults"
            )
            dep_levels = {
                lv: self._receiver(name, (*loc, "levels", lv.value))
                for lv in Level
                if (name := getattr(over.levels, lv.value)) is not None
            }
            departments[dep] = (own, dep_levels)
        return Escalation(deadlines, levels, departments)

    def _check_deadlines(
        self,
        deadlines: Mapping[Grade, float],
        own: Mapping[Grade, float],
        loc: Loc,
        note: str,
    ) -> None:
        for g, s in own.items():
            if s <= 0:
                self.fail((*loc, g.roman), f"the deadline of grade {g.roman} must be longer than 0")
        for g1, g2 in itertools.pairwise(sorted(deadlines)):
            s1, s2 = deadlines[g1], deadlines[g2]
            if s1 > s2:
                self.fail(
                    (*loc, (g1 if g1 in own else g2).roman),
                    f"grade {g1.roman} (more serious) has a longer deadline ({_human(s1)}) than "
                    f"grade {g2.roman} ({_human(s2)}){note}; deadlines must not decrease in "
                    "severity",
                )


def _check_timers(
    entry: RouteEntry,
    route: Route,
    loc: tuple[str | int, ...],
    is_root: bool,
    fail: Callable[[tuple[str | int, ...], str], NoReturn],
) -> None:
    def origin(own: float | None) -> str:
        return "" if own is not None or is_root else ", inherited"

    if route.group_interval_s <= 0:
        fail((*loc, "group_interval"), "group_interval must be longer than 0")
    if route.repeat_interval_s <= 0:
        fail((*loc, "repeat_interval"), "repeat_interval must be longer than 0")
    if route.group_wait_s > route.group_interval_s:
        at = (
            "group_wait"
            if entry.group_wait is not None or entry.group_interval is None
            else "group_interval"
        )
        fail(
            (*loc, at),
            f"group_wait ({_human(route.group_wait_s)}{origin(entry.group_wait)}) is longer than "
            f"group_interval ({_human(route.group_interval_s)}{origin(entry.group_interval)}): "
            "a group's first notification would wait longer than its later ones",
        )
    if route.repeat_interval_s < route.group_interval_s:
        at = (
            "repeat_interval"
            if entry.repeat_interval is not None or entry.group_interval is None
            else "group_interval"
        )
        fail(
            (*loc, at),
            f"repeat_interval ({_human(route.repeat_interval_s)}{origin(entry.repeat_interval)}) "
            f"is shorter than group_interval ({_human(route.group_interval_s)}"
            f"{origin(entry.group_interval)}): repeats cannot come more often than the group is "
            "flushed",
        )


def _human(seconds: float) -> str:
    """A duration the way the file writes them: ``30s``, ``5m``, ``4h``, ``1h30m``."""
    if seconds == 0:
        return "0s"
    if not math.isfinite(seconds) or seconds != int(seconds):
        return f"{seconds:g}s"
    s = int(seconds)
    out = ""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if s >= size:
            out += f"{s // size}{unit}"
            s %= size
    return out


# --- cityvitals routes test ---------------------------------------------------------------


def parse_labels(
    items: Sequence[str], cfg: CityConfig, rules: ThresholdRules | None = None
) -> dict[str, str]:
    """``k=v`` strings as a label set, checked against the city; ValueError when wrong.

    A street without a district gets its district.
    """
    labels: dict[str, str] = {}
    known = _known_values(cfg, rules)
    for item in items:
        name, sep, value = item.partition("=")
        name, value = name.strip(), value.strip()
        if not sep or not name:
            raise ValueError(f"--label {item!r}: write <label>=<value>, e.g. district=339901")
        if name == "handler":
            raise ValueError(
                "--label handler: handler is derived; give department and co_departments"
            )
        if name not in LABELS:
            raise ValueError(f"--label {item!r}: unknown label {name!r}; known: {list(LABELS)}")
        if name in labels:
            raise ValueError(f"--label {name} is given twice")
        if name == "grade" and value.upper() in known["grade"]:
            value = value.upper()
        checks = (
            [("department", v) for v in value.split(",")]
            if name == "co_departments"
            else [(name, value)]
        )
        for label, v in checks:
            values = known.get(label)
            if values is not None and v not in values:
                shown = sorted(values) if len(values) <= 12 else f"e.g. {sorted(values)[:5]}"
                raise ValueError(f"--label {item!r}: unknown {label} {v!r}; known: {shown}")
        if value:
            labels[name] = value
    street = labels.get("street")
    if street is not None:
        owner = cfg.city.street_district[street]
        if labels.setdefault("district", owner) != owner:
            raise ValueError(
                f"street {street!r} is in district {owner!r}, not {labels['district']!r}"
            )
    return dict(sorted(labels.items()))


def explain(tree: RoutingTree, labels: Mapping[str, str], *, at: datetime | None = None) -> str:
    """In words: the routes and receivers an alert with these labels reaches, their
    timers and group keys, whether each is muted at ``at`` (default: now), and its
    escalation when the labels give a grade."""
    now = at or datetime.now(UTC)
    local = now.astimezone(ZoneInfo(tree.timezone))
    shown = " ".join(f"{k}={v}" for k, v in labels.items()) or "(none)"
    results = tree.match(labels)
    n = len(results)
    out = [
        f"labels: {shown}",
        f"reaches {n} route{'s' if n != 1 else ''} "
        f"(at {local.replace(microsecond=0).isoformat(sep=' ')} {tree.timezone}):",
    ]
    for i, r in enumerate(results, 1):
        rc = r.receiver
        mute = r.muted_by(now)
        mutes = ", ".join(m.name for m in r.mute_intervals) or "none"
        source = rc.secret_source
        secret = {"none": "no secret", "literal": "literal secret"}.get(
            source,
            f"secret from the file {source.removeprefix('file:')}"
            if source.startswith("file:")
            else f"secret from ${source.removeprefix('env:')}",
        ) + (" (not set)" if rc.secret is None and source != "none" else "")
        out += [
            f"  {i}. {r.path} -> {rc.name} ({rc.format.value}, {rc.display_url}, {secret})",
            f"     group_by [{', '.join(r.group_by)}]  group_wait {_human(r.group_wait_s)}  "
            f"group_interval {_human(r.group_interval_s)}  "
            f"repeat_interval {_human(r.repeat_interval_s)}  "
            f"send_resolved {'yes' if r.send_resolved else 'no'}",
            f"     group key {group_key(r, labels)}",
            f"     mute intervals: {mutes}; "
            + (f"MUTED now by {mute}" if mute else "not muted now"),
        ]
    grade = labels.get("grade")
    if grade in {g.roman for g in Grade}:
        dep = labels.get("department")
        deadline = tree.deadline_for(grade, dep)
        chain = [start_level(labels), *escalation_chain(labels)]
        steps = [
            f"{lv.value} ({tree.escalation_receiver(lv, dep).name})"
            if k
            else f"{lv.value} (the routes above)"
            for k, lv in enumerate(chain)
        ]
        out.append(
            f"escalation: grade {grade} must be acknowledged within {_human(deadline)}; "
            f"unacknowledged it climbs {' -> '.join(steps)}, one level per deadline"
        )
    return "\n".join(out)


def routes_test_command(
    config_dir: Path,
    labels: list[str],
    *,
    routes_file: Path | None = None,
    out: Console | None = None,
    err: Console | None = None,
    at: datetime | None = None,
) -> int:
    """``cityvitals routes test --label k=v ...``: print where such an alert goes.

    Reads the city, its threshold rules and ``routes_file`` (default
    ``<config_dir>/routes.yaml``). Returns 0, or 2 for invalid configuration or
    labels (the reason on stderr).
    """
    out = out or Console(highlight=False, soft_wrap=True)
    err = err or Console(stderr=True, highlight=False, soft_wrap=True)
    try:
        cfg = load_config(config_dir)
        rules = load_thresholds(cfg)
        path = routes_file if routes_file is not None else Path(config_dir) / ROUTES_FILE
        tree = load_routes(path, cfg, rules=rules)
    except ConfigError as exc:
        err.print(f"[bold red]invalid configuration[/]: {exc}", highlight=False, soft_wrap=True)
        return 2
    try:
        parsed = parse_labels(labels, cfg, rules)
    except ValueError as exc:
        err.print(f"[bold red]invalid labels[/]: {exc}", highlight=False, soft_wrap=True)
        return 2
    out.print(explain(tree, parsed, at=at), markup=False, highlight=False)
    return 0
