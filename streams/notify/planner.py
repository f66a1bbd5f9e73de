"""Responder notifications: plan them from alert events, deliver them from a durable outbox.

Two stages, each reading only the partitions of the districts this worker owns
(the same partition numbers as its district table), so each alert is notified
by exactly one worker and moves with its district on a rebalance:

1. **Planning** (:class:`Planner`, state in the ``notify-groups`` table, one
   :class:`DistrictNotify` per district). Every event on
   ``city.emergency-command`` is routed through ``config/routes.yaml``
   (:mod:`streams.notify.routing`) into notification groups, as Alertmanager does: a new
   group waits ``group_wait``; later changes go out at most every
   ``group_interval``; an unchanged group with firing alerts is sent again every
   ``repeat_interval``; resolved alerts go out once if the route asks for them.
   Silenced and inhibited alerts are not notified. Inhibition is decided here,
   from the district's open red alerts the state knows
   (:func:`streams.alerting.lifecycle.inhibitor`): when a red alert opens, the lower
   grades of its domain leave their groups and escalations and wait in
   :attr:`DistrictNotify.inhibited`; when the domain's last red alert closes or
   comes down, they are planned again, as new. An alert nobody acknowledges
   within its grade's deadline escalates one level up (street → district → city
   command): its escalation receiver is notified and an ``escalate`` action on
   ``city.alert-actions`` records it on the alert's timeline.
   Planned notifications are written to ``city.notify-outbox`` *before* the
   group state that says they were sent, and the input offsets are committed
   only after both, so a crash repeats a notification (with the same id, a
   digest of receiver, group and exact alert events) rather than losing it.
2. **Delivery** (:class:`OutboxSender`). Each receiver has its own queue and
   senders, so a slow or dead receiver delays only itself; ingest and detection
   never wait for any of this. An outbox record is committed once its outcome
   is on ``city.notifications``; after a crash, unfinished ones are sent again
   with the same idempotency key.

State and its bounds
====================

A district's state keeps each alert it may still notify **once**, as an
:class:`AlertBrief` (the latest event without its action history or evidence
series; that is also what a notification carries), in
:attr:`DistrictNotify.briefs`. Groups and escalations hold alert ids. A brief is
dropped as soon as no group lists the alert and it does not escalate. Nothing
grows with operator input, and every collection has a bound:

- :data:`MAX_NOTIFIED` alerts listed per group; beyond them up to
  :data:`MAX_COUNTED` more are *counted* (id, grade, sequence, closed), as
  Alertmanager's ``max_alerts`` does. Beyond those, an alert adds one to the
  group's ``overflow``: counted as firing in ``truncated_alerts`` and in the
  notification id, not tracked. :attr:`DistrictNotify.seen` remembers which
  alerts are counted so, and an alert the state no longer remembers at all
  whose event is not its first is taken to be one of them: it is not counted
  twice, its end (or silence) takes one off, and it takes one off when it finds
  room in the group. When none of a group's tracked alerts is firing any more,
  its overflow is cleared after the next notification (the storm is taken to be
  over). So counts beyond the tracked alerts are approximate, and only in a storm.
- :data:`MAX_GROUPS` groups per district; beyond them a route's further alerts
  share one group per route (``overflow="true"`` in its key).
- :data:`MAX_ESCALATING` alerts escalating one by one; beyond them the least
  serious, newest alerts stop climbing (they stay in their groups), down to
  ``MAX_ESCALATING - ESCALATION_SLACK`` at once.
- :data:`MAX_SEEN` sequences of alerts no group or escalation holds, or that a
  group counts in its overflow (the last event planned, so an event read again
  after a restart is not planned twice), the least recently planned forgotten
  first.
- :attr:`DistrictNotify.reds`: the district's open red alerts, one per
  condition the configuration watches; :data:`MAX_INHIBITED` alerts waiting
  behind them (the oldest forgotten first: it is planned again with its next
  event rather than when the red alert ends).

Should a value still exceed its byte bound, :meth:`DistrictNotify.encode`
shrinks it in the order of :meth:`DistrictNotify.shrink_steps` and says what it
dropped (see :func:`streams.alerting.lifecycle.fit`); the timer publishes those
degradations as audit records.
"""

from __future__ import annotations

import hashlib
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum
from typing import Any

from pydantic import BaseModel

from streams.alerting.lifecycle import (
    STATE_MAX_BYTES,
    Step,
    fit,
    is_closed,
)
from streams.core import metrics
from streams.core.messages import (
    AlertAction,
    AlertActionType,
    AlertEvent,
    AlertStatus,
    AppealSample,
    Evidence,
    EvidencePoint,
    EvidenceReading,
    Forecast,
    Grade,
    MemberSignal,
    Notification,
    Workflow,
)
from streams.core.state import StateCodec
from streams.notify.delivery import Dialect
from streams.notify.routing import (
    PayloadFormat,
    RouteResult,
    RoutingTree,
    group_key,
    labels_of,
    next_level,
    start_level,
)

log = logging.getLogger(__name__)
SENDERS_PER_RECEIVER = 4
DIALECTS: dict[PayloadFormat, Dialect] = {
    PayloadFormat.DINGTALK: "dingtalk",
    PayloadFormat.WECOM: "wecom",
}
# alerts listed in one notification, the rest counted (as Alertmanager's max_alerts):
# a group's state and an outbox record stay well below Kafka's message size
MAX_NOTIFIED = 100
MAX_COUNTED = 1000  # alerts counted (not listed) per group, beyond which they are overflow
MAX_GROUPS = 256  # groups per district, beyond which a route's alerts share one group
MAX_ESCALATING = 500  # alerts per district climbing the hierarchy one by one
ESCALATION_SLACK = 50  # escalations stopped at once when MAX_ESCALATING is passed
MAX_SEEN = 512  # planned sequences kept of alerts the state holds nowhere else
MAX_INHIBITED = 500  # alerts per district waiting behind a red alert of their domain
BRIEF_MEMBERS = 6  # composite member signals a brief keeps (one per domain first)
BRIEF_DETAIL_CHARS = 300  # of the evidence's detail text, in a brief
BRIEF_APPEALS = 3  # a public-opinion warning's sample appeals a brief keeps, angriest first


# -- alerts as the state keeps them ----------------------------------------------------------

# nested models of an alert: (model, field) -> (nested model, whether it is a list of them)
_NESTED: dict[tuple[type[BaseModel], str], tuple[type[BaseModel], bool]] = {
    (AlertEvent, "evidence"): (Evidence, False),
    (Evidence, "forecast"): (Forecast, False),
    (Evidence, "reading"): (EvidenceReading, False),
    (Evidence, "values"): (EvidencePoint, True),
    (Evidence, "members"): (MemberSignal, True),
    (Evidence, "appeals"): (AppealSample, True),
}
_MODELS: dict[str, type[BaseModel]] = {
    m.__name__: m
    for m in (
        AlertEvent,
        Evidence,
        Forecast,
        EvidencePoint,
        EvidenceReading,
        MemberSignal,
        AppealSample,
    )
}
# the field order a packed alert follows; earlier releases pickled it with the briefs, so
# a value they wrote before a schema change converts by name (NOTIFY_STATE_VERSION)
_LAYOUT: dict[str, tuple[str, ...]] = {n: tuple(m.model_fields) for n, m in _MODELS.items()}
# texts that repeat across a district's alerts: interned, so memory holds each once
_SHARED = frozenset(
    {
        "colour",
        "district",
        "street",
        "domain",
        "indicators",
        "department",
        "co_departments",
        "headline_zh",
        "headline_en",
        "rule",
        "version",
        "aggregate",
        "indicator",
    }
)


def _pack(model: BaseModel) -> tuple[Any, ...]:
    """A model's values in field order: nested models as tuples, times as epoch seconds.

    A model restored from a value written before a field existed has the field's default."""
    values = model.__dict__
    return tuple(
        _packed(name, values[name] if name in values else f.get_default(call_default_factory=True))
        for name, f in type(model).model_fields.items()
    )


def _packed(name: str, value: Any) -> Any:
    if isinstance(value, BaseModel):
        return _pack(value)
    if isinstance(value, list):
        return tuple(_packed(name, v) for v in value)
    if isinstance(value, datetime):
        # alert times are UTC (a naive one is taken as UTC); pydantic reads them back exactly
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, str) and name in _SHARED:
        return sys.intern(value)
    return value


def _unpack(model: type[BaseModel], layout: dict[str, tuple[str, ...]], doc: Sequence[Any]) -> Any:
    """The model's fields as plain data (for ``model_validate``) from a packed tuple.

    A nested model packed before fields were added at its end is shorter than its
    layout: the fields it lacks take their defaults."""
    out: dict[str, Any] = {}
    names = layout[model.__name__]
    if len(doc) > len(names):
        raise ValueError(f"a packed {model.__name__} holds {len(names)} fields, not {len(doc)}")
    for name, value in zip(names, doc, strict=False):
        if name not in model.model_fields:
            continue  # a field the schema no longer has
        nested = _NESTED.get((model, name))
        if nested is not None and value is not None:
            inner, many = nested
            value = (
                [_unpack(inner, layout, v) for v in value]
                if many
                else _unpack(inner, layout, value)
            )
        out[name] = value
    return out


_AT = {name: i for i, name in enumerate(_LAYOUT["AlertEvent"])}
_CLOSED_WORKFLOWS = (Workflow.RESOLVED.value, Workflow.FALSE_POSITIVE.value)


class AlertBrief:
    """An alert as the notification state keeps it and a notification carries it.

    The alert's latest event without its action history (operators' notes stay
    on the alert's own events) and without the evidence series, with at most
    :data:`BRIEF_MEMBERS` composite members, :data:`BRIEF_APPEALS` sample appeals and
    the detail text cut to :data:`BRIEF_DETAIL_CHARS`: what receivers are shown (headline, grade,
    place, rule, observed value, threshold, window, forecast, times, links).
    Held as a packed tuple, about a third of the model's size.
    """

    __slots__ = ("doc",)

    def __init__(self, doc: tuple[Any, ...]) -> None:
        self.doc = doc

    @classmethod
    def of(cls, alert: AlertEvent, detail_chars: int = BRIEF_DETAIL_CHARS) -> AlertBrief:
        ev = alert.evidence
        detail = (ev.detail[:detail_chars] or None) if ev.detail else ev.detail
        members = _strongest(ev.members, BRIEF_MEMBERS if detail_chars else 0)
        # (evidence unpickled from a release before appeals has no such attribute)
        had = ev.__dict__.get("appeals") or []
        appeals = had[: BRIEF_APPEALS if detail_chars else 0]
        if ev.values or ev.members != members or ev.detail != detail or had != appeals:
            ev = ev.model_copy(
                update={"values": [], "members": members, "detail": detail, "appeals": appeals}
            )
        return cls(_pack(alert.model_copy(update={"actions": [], "evidence": ev})))

    def event(self) -> AlertEvent:
        return AlertEvent.model_validate(_unpack(AlertEvent, _LAYOUT, self.doc))

    def shorter(self) -> AlertBrief:
        """The brief with the least evidence text: no members or appeals, no detail."""
        return AlertBrief.of(self.event(), detail_chars=0)

    @property
    def alert_id(self) -> str:
        return str(self.doc[_AT["alert_id"]])

    @property
    def sequence(self) -> int:
        return int(self.doc[_AT["sequence"]])

    @property
    def grade(self) -> int:
        return int(self.doc[_AT["grade"]])

    @property
    def first_seen(self) -> float:
        return float(self.doc[_AT["first_seen"]])

    @property
    def domain(self) -> str | None:
        value = self.doc[_AT["domain"]]
        return None if value is None else str(value)

    @property
    def closed(self) -> bool:
        return (
            self.doc[_AT["status"]] == AlertStatus.RESOLVED.value
            or self.doc[_AT["workflow"]] in _CLOSED_WORKFLOWS
        )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AlertBrief) and self.doc == other.doc

    __hash__ = None  # type: ignore[assignment]  # mutable state holds them; compared by value

    def __repr__(self) -> str:
        return f"AlertBrief({self.alert_id!r}, sequence={self.sequence})"

    def __state__(self) -> tuple[Any, ...]:
        return self.doc

    @classmethod
    def __from_state__(cls, doc: Any) -> AlertBrief:
        """The brief written by :meth:`__state__` (arrays read back as tuples)."""
        if not isinstance(doc, list) or len(doc) != len(_LAYOUT["AlertEvent"]):
            raise ValueError(f"a brief holds {len(_LAYOUT['AlertEvent'])} alert fields")
        return cls(_tuples(doc))


def _tuples(value: Any) -> Any:
    return tuple(map(_tuples, value)) if isinstance(value, list) else value


def _brief(layout: dict[str, tuple[str, ...]], doc: tuple[Any, ...]) -> AlertBrief:
    """A brief packed under ``layout``; one of another alert schema is read by field name
    (state written by a release that pickled it: ``cityvitals migrate-state``)."""
    if layout == _LAYOUT:
        return AlertBrief(doc)
    return AlertBrief.of(AlertEvent.model_validate(_unpack(AlertEvent, layout, doc)))


def _strongest(members: Sequence[MemberSignal], n: int) -> list[MemberSignal]:
    """Up to ``n`` members, the strongest of each domain first, so every domain stays named."""
    if len(members) <= n:
        return list(members)
    ranked = sorted(members, key=lambda m: -m.score)
    first: dict[str, MemberSignal] = {}
    for m in ranked:
        first.setdefault(m.domain, m)
    chosen = list(first.values())[:n]
    chosen += [m for m in ranked if m not in chosen][: n - len(chosen)]
    return sorted(chosen, key=lambda m: members.index(m))


def _counted(grade: int, sequence: int, closed: bool) -> int:
    """A counted alert in one small int (a few bytes): sequence, grade, closed."""
    return sequence << 3 | (grade - 1) << 1 | int(closed)


def _uncounted(packed: int) -> tuple[int, int, bool]:
    """(grade, sequence, closed) of :func:`_counted`."""
    return (packed >> 1 & 3) + 1, packed >> 3, bool(packed & 1)


# -- the state ----------------------------------------------------------------------------


@dataclass
class Group:
    """One notification group: the alerts one route sends together to one receiver."""

    key: str
    route: str
    receiver: str
    labels: dict[str, str]
    created: float  # wall time the group began
    listed: set[str] = field(default_factory=set)  # ids, their briefs in the district's state
    # beyond MAX_NOTIFIED listed alerts, only what counts them: id -> _counted(...)
    others: dict[str, int] = field(default_factory=dict)
    overflow: int = 0  # counted, not tracked: beyond MAX_COUNTED (see the module docstring)
    changed_since: float | None = None  # first change not yet notified
    last_sent: float | None = None

    def take(self, alert: AlertEvent, in_overflow: bool) -> bool:
        """Hold the alert: listed, counted, or, with no room, in the overflow.

        ``in_overflow``: the alert is already counted in the overflow, so it is not
        counted again, and is taken off it should it find room. True when the
        alert is in the overflow afterwards.
        """
        alert_id = alert.alert_id
        if alert_id in self.listed:
            return False
        tracked = alert_id in self.others
        if not tracked and len(self.listed) < MAX_NOTIFIED:
            self.listed.add(alert_id)
        elif tracked or len(self.others) < MAX_COUNTED:
            self.others[alert_id] = _counted(alert.grade.value, alert.sequence, _closed(alert))
        else:
            self.overflow += not in_overflow
            return True
        if in_overflow and not tracked and self.overflow:
            self.overflow -= 1  # found room: tracked from now on, not counted twice
        return False

    def forget(self, alert_id: str) -> bool:
        """Stop holding an alert; True when the group had it."""
        listed = alert_id in self.listed
        self.listed.discard(alert_id)
        return self.others.pop(alert_id, None) is not None or listed

    def has(self, alert_id: str) -> bool:
        return alert_id in self.listed or alert_id in self.others

    def empty(self) -> bool:
        return not self.listed and not self.others and not self.overflow


@dataclass
class Pending:
    """An open, unacknowledged alert's climb up the hierarchy (its brief is in the state)."""

    level: str
    due: float  # wall time of the next escalation


@dataclass
class DistrictNotify:
    """A district's notification state (the ``notify-groups`` table value)."""

    district: str
    groups: dict[str, Group] = field(default_factory=dict)
    escalations: dict[str, Pending] = field(default_factory=dict)  # alert id -> its climb
    # alert id -> brief, of every alert a group lists or that escalates, and of no other
    briefs: dict[str, AlertBrief] = field(default_factory=dict)
    # alert id -> last sequence planned << 1 | in a group's overflow, of alerts held
    # nowhere else and of those a group counts in its overflow (least recent first)
    seen: dict[str, int] = field(default_factory=dict)
    reds: dict[str, str | None] = field(default_factory=dict)  # open red alert id -> domain
    # alert id -> brief, of open alerts a red alert of their domain holds back
    inhibited: dict[str, AlertBrief] = field(default_factory=dict)

    # -- what the state knows of an alert ---------------------------------------------------
    def planned(self, alert_id: str) -> int:
        """The sequence of the alert's last event planned here, 0 if none is known."""
        brief = self.briefs.get(alert_id)
        if brief is not None:
            return brief.sequence
        for group in self.groups.values():
            packed = group.others.get(alert_id)
            if packed is not None:
                return _uncounted(packed)[1]
        return self.seen.get(alert_id, 0) >> 1

    def in_overflow(self, alert: AlertEvent) -> bool:
        """Whether the alert is (taken to be) counted in the overflow of its groups.

        Known from :attr:`seen`. Failing that, an escalating alert (open and not
        muted) that no group holds can only be in an overflow; and an alert the
        state no longer remembers at all, whose event is not its first, is taken to
        be one of a storm's untracked alerts, since a group remembers every other."""
        alert_id = alert.alert_id
        remembered = self.seen.get(alert_id)
        if remembered is not None:
            return bool(remembered & 1)
        if alert_id in self.briefs:
            return not any(g.has(alert_id) for g in self.groups.values())
        return alert.sequence > 1 and self.planned(alert_id) == 0

    def inhibitor(self, alert: AlertEvent) -> str | None:
        """The open red alert of the alert's domain that holds it back, if any."""
        if alert.grade is Grade.I or is_closed(alert):
            return None
        return next(
            (r for r, d in self.reds.items() if d == alert.domain and r != alert.alert_id), None
        )

    def listed(self, alert_id: str) -> bool:
        return any(alert_id in g.listed for g in self.groups.values())

    def stop_escalating(self, alert_id: str) -> None:
        """The alert climbs no more (a storm); an open alert no group holds is in an overflow."""
        del self.escalations[alert_id]
        untracked = not any(g.has(alert_id) for g in self.groups.values())
        self.settle(alert_id, self.planned(alert_id), in_overflow=untracked)
        metrics.notify_escalations_dropped.inc()

    def settle(
        self,
        alert_id: str,
        sequence: int,
        alert: AlertEvent | None = None,
        *,
        in_overflow: bool = False,
    ) -> None:
        """Keep the alert's brief if a group lists it or it escalates, else only its sequence
        (and whether a group counts it in its overflow)."""
        referenced = alert_id in self.escalations or self.listed(alert_id)
        if not referenced:
            self.briefs.pop(alert_id, None)
        elif alert is not None:
            self.briefs[alert_id] = AlertBrief.of(alert)
        tracked = referenced or any(alert_id in g.others for g in self.groups.values())
        self.seen.pop(alert_id, None)  # re-inserted last: the most recently planned
        if not tracked or in_overflow:
            self.seen[alert_id] = sequence << 1 | in_overflow
            while len(self.seen) > MAX_SEEN:
                del self.seen[next(iter(self.seen))]

    # -- the table's codec ------------------------------------------------------------------
    def dumps(self) -> bytes:
        return NOTIFY_STATE.encode(self)

    def encode(self, max_bytes: int = STATE_MAX_BYTES) -> tuple[bytes, list[str]]:
        """The table value, shrunk to at most ``max_bytes`` if need be, and what was dropped
        (:meth:`shrink_steps`, :func:`streams.alerting.lifecycle.fit`)."""
        return fit(self.dumps, self.shrink_steps(), max_bytes)

    def shrink_steps(self) -> list[Step]:
        """How this state gives way when its value is over its bound, in order.

        1. Sequences of alerts held nowhere else (the oldest half each round): a
           replay after a crash might plan one of their events again.
        2. The counted alerts of the group with the most: counted on as overflow.
        3. The evidence text of briefs (composite members, detail): notifications
           still name the rule, the observed value and the threshold.
        4. Escalations of the least serious, newest alerts (half each round):
           they stay in their groups' notifications.
        5. The listed alerts of the group with the most: counted on as overflow.
        6. The oldest groups: their alerts join a group again on their next event.
        """
        return [
            ("forgot the last planned event of {n} alerts no group tracks", self._forget_seen),
            (
                "forgot {n} alerts held back by a red alert (each is planned again with its "
                "next event, not when the red alert ends)",
                self._forget_inhibited,
            ),
            (
                "counted {n} alerts of the largest groups without tracking them",
                self._untrack_counted,
            ),
            ("shortened the evidence text of {n} alerts", self._shorten_briefs),
            (
                "stopped {n} escalations of the least serious, newest alerts "
                "(they stay in their groups' notifications)",
                self._stop_escalations,
            ),
            (
                "counted {n} listed alerts of the largest groups without listing them",
                self._untrack_listed,
            ),
            (
                "dropped {n} notification groups, the oldest first (their alerts join a group "
                "again with their next event)",
                self._drop_groups,
            ),
        ]

    def _forget_seen(self) -> int:
        n = (len(self.seen) + 1) // 2
        for alert_id in list(self.seen)[:n]:
            del self.seen[alert_id]
        return n

    def _forget_inhibited(self) -> int:
        n = (len(self.inhibited) + 1) // 2
        for alert_id in list(self.inhibited)[:n]:
            del self.inhibited[alert_id]
        return n

    def _untrack_counted(self) -> int:
        group = max(self.groups.values(), key=lambda g: len(g.others), default=None)
        if group is None or not group.others:
            return 0
        n = len(group.others)
        group.overflow += sum(1 for v in group.others.values() if not _uncounted(v)[2])
        group.others.clear()
        return n

    def _shorten_briefs(self) -> int:
        n = 0
        for alert_id, brief in list(self.briefs.items()):
            short = brief.shorter()
            if short != brief:
                self.briefs[alert_id] = short
                n += 1
        return n

    def _stop_escalations(self) -> int:
        ranked = sorted(
            self.escalations,
            key=lambda i: (
                (self.briefs[i].grade, self.briefs[i].first_seen) if i in self.briefs else (99, 0.0)
            ),
        )
        doomed = ranked[len(ranked) // 2 :]
        for alert_id in doomed:
            self.stop_escalating(alert_id)
        return len(doomed)

    def _untrack_listed(self) -> int:
        group = max(self.groups.values(), key=lambda g: len(g.listed), default=None)
        if group is None or not group.listed:
            return 0
        ids = list(group.listed)
        group.overflow += sum(1 for i in ids if i in self.briefs and not self.briefs[i].closed)
        group.listed.clear()
        for alert_id in ids:
            self.settle(alert_id, self.planned(alert_id), in_overflow=True)
        return len(ids)

    def _drop_groups(self) -> int:
        if not self.groups:
            return 0
        oldest = sorted(self.groups, key=lambda k: self.groups[k].created)
        doomed = oldest[: (len(oldest) + 1) // 2]
        ids: set[str] = set()
        for key in doomed:
            ids |= self.groups[key].listed
            del self.groups[key]
        for alert_id in ids:
            self.settle(alert_id, self.planned(alert_id))
        return len(doomed)

    @staticmethod
    def loads(data: bytes) -> DistrictNotify:
        """A value as written by :meth:`dumps`; raises
        :class:`~streams.core.state.StateError` for one this release cannot restore."""
        return NOTIFY_STATE.decode(data)

    def upgrade_layout(self) -> None:
        """Convert a value pickled in an earlier layout in place (a no-op for current ones;
        :mod:`legacy.pickled_state`)."""
        if "reds" not in self.__dict__:
            self.reds, self.inhibited = {}, {}
        if "briefs" not in self.__dict__:
            self.briefs = {}
            self.seen = {i: s << 1 for i, s in self.seen.items()}  # then: sequences only
        for group in self.groups.values():
            legacy: dict[str, AlertEvent] | None = group.__dict__.pop("alerts", None)
            if legacy is None:
                continue
            group.listed, group.overflow = set(), 0
            for alert_id, alert in legacy.items():
                group.listed.add(alert_id)
                self.briefs[alert_id] = AlertBrief.of(alert)
            # (grade, sequence, closed) tuples then, one int now
            group.others = {
                i: _counted(*o) if isinstance(o, tuple) else o for i, o in group.others.items()
            }
        for alert_id, pending in self.escalations.items():
            alert = pending.__dict__.pop("alert", None)
            if isinstance(alert, AlertEvent) and alert_id not in self.briefs:
                self.briefs[alert_id] = AlertBrief.of(alert)
        for alert_id in list(self.seen):
            if alert_id in self.briefs or any(alert_id in g.others for g in self.groups.values()):
                del self.seen[alert_id]
        while len(self.seen) > MAX_SEEN:
            del self.seen[next(iter(self.seen))]


NOTIFY_STATE_VERSION = 1
"""The version of the ``notify-groups`` state document this release writes. A brief is
its alert's fields in :data:`_LAYOUT`'s order: a change to the alert's fields changes the
document, so it takes a new version and an upgrade of the briefs written before it."""

NOTIFY_STATE = StateCodec("notify-groups", DistrictNotify, NOTIFY_STATE_VERSION, [AlertBrief])
"""The codec of the ``notify-groups`` table's values."""


def notification_id(
    receiver: str,
    key: str,
    status: str,
    alerts: Sequence[AlertEvent],
    counted: Sequence[str] = (),
) -> str:
    """The idempotency key: the same receiver, group and alert events give the same id.

    ``counted``: ``"<alert id>#<sequence>"`` of the group's alerts not listed,
    and ``"+<n>"`` for its untracked overflow."""
    events = ",".join(sorted([f"{a.alert_id}#{a.sequence}" for a in alerts] + list(counted)))
    text = "\x1f".join((receiver, key, status, events))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


_closed = is_closed


def _spill_key(result: RouteResult, district: str) -> str:
    """The group a route's alerts share once a district has MAX_GROUPS groups."""
    return f'{result.path}:{{district="{district}", overflow="true"}}'


class Planner:
    """Groups, timers and escalation (pure: the caller gives the wall clock)."""

    def __init__(self, tree: RoutingTree) -> None:
        self.tree = tree
        self._by_path = {r.result().path: r.result() for r in tree.routes()}

    def on_alert(self, state: DistrictNotify, alert: AlertEvent, now: float) -> None:
        """Take one alert event into its groups and its escalation."""
        if alert.sequence <= state.planned(alert.alert_id):
            return  # the same event read again after a restart
        before = set(state.reds.values())
        if alert.grade is Grade.I and not _closed(alert):
            state.reds[alert.alert_id] = alert.domain
        else:
            state.reds.pop(alert.alert_id, None)
        self._place(state, alert, now)
        after = set(state.reds.values())
        for domain in after - before:  # a red alert opened: its domain's lower grades wait
            for brief in list(state.briefs.values()):
                if brief.domain == domain:
                    held = brief.event()
                    if state.inhibitor(held) is not None:
                        self._place(state, held, now)
        for domain in before - after:  # the domain's last red alert went: they are planned
            for alert_id, brief in list(state.inhibited.items()):
                if brief.domain == domain:
                    del state.inhibited[alert_id]
                    self._place(state, brief.event(), now)

    def _place(self, state: DistrictNotify, alert: AlertEvent, now: float) -> None:
        """Put one alert's latest event in its groups and its escalation, or hold it back."""
        alert_id = alert.alert_id
        counted = state.in_overflow(alert)  # in some group's overflow, untracked
        in_overflow = False
        closed = _closed(alert)
        inhibited = state.inhibitor(alert) is not None
        state.inhibited.pop(alert_id, None)
        if inhibited:
            state.inhibited[alert_id] = AlertBrief.of(alert)  # the latest, least recent first
            while len(state.inhibited) > MAX_INHIBITED:
                del state.inhibited[next(iter(state.inhibited))]
        muted = inhibited or alert.silenced_by is not None
        labels = labels_of(alert)
        for result in self.tree.match(labels):
            key = group_key(result, labels)
            spill = _spill_key(result, state.district)
            if spill in state.groups and state.groups[spill].has(alert_id):
                key = spill
            group = state.groups.get(key)
            if muted or (closed and not result.send_resolved):
                if group is not None:
                    if not group.forget(alert_id) and counted and group.overflow:
                        group.overflow -= 1  # an untracked alert leaves
                    if group.empty():
                        del state.groups[key]
                continue
            if closed and (group is None or not group.has(alert_id)):
                if group is not None and counted and group.overflow:
                    group.overflow -= 1  # an untracked alert ended: one less to count
                    group.changed_since = group.changed_since or now
                continue  # else never notified firing: nothing to resolve
            if group is None:
                if len(state.groups) >= MAX_GROUPS:
                    key = spill
                    group = state.groups.get(key)
                if group is None:
                    labels_shown = (
                        {"district": state.district, "overflow": "true"}
                        if key == spill
                        else result.group_labels(labels)
                    )
                    group = state.groups[key] = Group(
                        key, result.path, result.receiver.name, labels_shown, now
                    )
            in_overflow |= group.take(alert, counted)
            if group.changed_since is None:
                group.changed_since = now
        acknowledged = alert.workflow is not Workflow.OPEN
        if closed or acknowledged or muted:
            state.escalations.pop(alert_id, None)
        elif alert_id not in state.escalations:
            deadline = self.tree.deadline_for(alert.grade.roman, alert.department)
            state.escalations[alert_id] = Pending(start_level(labels).value, now + deadline)
        state.settle(alert_id, alert.sequence, alert, in_overflow=in_overflow)
        if len(state.escalations) > MAX_ESCALATING:
            # an alert storm: the least serious, newest alerts stop climbing on their own
            # (they stay in their groups' notifications); ESCALATION_SLACK at a time, so
            # that a storm sorts the escalations once per so many alerts, not once each
            order = {alert_id: n for n, alert_id in enumerate(state.escalations)}
            ranked = sorted(
                order,
                key=lambda i: (state.briefs[i].grade, state.briefs[i].first_seen, order[i]),
            )
            for stopped in ranked[MAX_ESCALATING - ESCALATION_SLACK :]:
                state.stop_escalating(stopped)

    def due(
        self, state: DistrictNotify, now: float
    ) -> tuple[list[Notification], list[AlertAction]]:
        """Notifications whose timers have run out, and escalation actions; updates ``state``."""
        at = datetime.fromtimestamp(now, UTC)
        released: set[str] = set()  # alert ids a group or an escalation let go of
        out = self._groups_due(state, now, at, released)
        escalated, actions = self._escalations_due(state, now, at, released)
        out += escalated
        for alert_id in released:
            # an open alert that no group holds any more is (still) in an overflow
            brief = state.briefs.get(alert_id)
            untracked = not any(g.has(alert_id) for g in state.groups.values())
            open_ = brief is not None and not brief.closed
            state.settle(alert_id, state.planned(alert_id), in_overflow=open_ and untracked)
        return out, actions

    def _groups_due(
        self, state: DistrictNotify, now: float, at: datetime, released: set[str]
    ) -> list[Notification]:
        """A notification of each group whose wait, interval or repeat has run out."""
        out: list[Notification] = []
        for key, group in list(state.groups.items()):
            result = self._by_path.get(group.route)
            if result is None:  # the route is gone from the config
                released |= group.listed
                del state.groups[key]
                continue
            if result.muted(at):
                continue
            briefs = [state.briefs[i] for i in group.listed if i in state.briefs]
            tracked_firing = any(not b.closed for b in briefs) or any(
                not _uncounted(v)[2] for v in group.others.values()
            )
            firing = tracked_firing or group.overflow > 0
            if group.last_sent is None:
                reason = "group_wait" if now - group.created >= result.group_wait_s else None
            elif group.changed_since is not None:
                reason = (
                    "group_interval" if now - group.last_sent >= result.group_interval_s else None
                )
            elif firing:
                reason = "repeat" if now - group.last_sent >= result.repeat_interval_s else None
            else:
                reason = None
            if reason is None:
                continue
            briefs.sort(key=lambda b: (b.closed, b.grade, b.alert_id))
            alerts = [b.event() for b in briefs]
            status = "firing" if firing else "resolved"
            counted = [f"{i}#{_uncounted(v)[1]}" for i, v in sorted(group.others.items())]
            if group.overflow:
                counted.append(f"+{group.overflow}")
            out.append(
                Notification(
                    notification_id=notification_id(group.receiver, key, status, alerts, counted),
                    receiver=group.receiver,
                    route=group.route,
                    group_key=key,
                    group_labels=group.labels,
                    status=status,
                    reason=reason,
                    alerts=alerts,
                    truncated_alerts=len(group.others) + group.overflow,
                    district=state.district,
                    created_at=at,
                )
            )
            group.last_sent, group.changed_since = now, None
            for b in briefs:
                if b.closed:
                    group.listed.discard(b.alert_id)
                    released.add(b.alert_id)
            for i, v in list(group.others.items()):
                if _uncounted(v)[2]:
                    del group.others[i]
                    released.add(i)
            if not tracked_firing:
                group.overflow = 0  # the tracked alerts are over: so is the storm
            if group.empty():
                del state.groups[key]
        return out

    def _escalations_due(
        self, state: DistrictNotify, now: float, at: datetime, released: set[str]
    ) -> tuple[list[Notification], list[AlertAction]]:
        """Each alert not acknowledged by its deadline, notified one level up."""
        out: list[Notification] = []
        actions: list[AlertAction] = []
        for alert_id, pending in list(state.escalations.items()):
            if now < pending.due:
                continue
            level = next_level(pending.level)
            brief = state.briefs.get(alert_id)
            if level is None or brief is None:
                del state.escalations[alert_id]
                released.add(alert_id)
                continue
            alert = brief.event()
            receiver = self.tree.escalation_receiver(level, alert.department)
            waited = self.tree.deadline_for(alert.grade.roman, alert.department)
            note = (
                f"not acknowledged within {waited:g} s at {pending.level} level; "
                f"escalated to {level.value} ({receiver.name})"
            )
            key = f"escalation/{level.value}:{alert.alert_id}"
            out.append(
                Notification(
                    notification_id=notification_id(receiver.name, key, "firing", [alert]),
                    receiver=receiver.name,
                    route=f"escalation/{level.value}",
                    group_key=key,
                    group_labels={"level": level.value},
                    status="firing",
                    reason=f"escalation:{level.value}",
                    alerts=[alert],
                    district=state.district,
                    created_at=at,
                )
            )
            actions.append(
                AlertAction(
                    action_id=f"escalate-{alert.alert_id}-{level.value}",
                    alert_id=alert_id,
                    district=alert.district,
                    action=AlertActionType.ESCALATE,
                    actor="notifier",
                    role="system",
                    at=at,
                    department=None,
                    note=note,
                    kind="system",
                )
            )
            pending.level, pending.due = level.value, now + waited
        return out, actions
