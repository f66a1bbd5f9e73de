"""The alert lifecycle: signals and operator actions in, AlertEvents out.

Pure logic with no Kafka; one :class:`AlertBook` per district lives in a table
keyed by district, next to that district's detectors.

- **Identity.** A condition's *fingerprint* hashes (district, street, indicator
  or composite key, rule). While an alert with that fingerprint is open, every
  signal for it updates that alert; only after it resolved can the condition
  fire a new one. The alert id is the fingerprint plus the event time of its
  first signal, so reprocessing the same input after a crash yields the same id
  and the same events (consumers keep the last event per ``(alert_id,
  sequence)``), never a second alert.
- **Events.** ``firing`` (the first), ``updated`` (grade up or down, an operator
  action), ``resolved`` (the condition cleared, or an operator resolved it or
  marked it a false positive). Times are event times of the signals and
  actions, never the wall clock, so replaying input gives the same events.
- **Inhibition.** While a district has an open grade-I (red) alert, its
  lower-grade alerts of the same root (the same domain) are marked
  ``inhibited_by`` that alert: still visible, not notified.
- **Silences.** Maintenance windows from config and silences operators set
  ("silence similar for 2 h") mark matching alerts ``silenced_by``.
"""

from __future__ import annotations

import hashlib
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime

from streams.config import CityConfig, Sharing
from streams.schemas import (
    GRADE_COLOURS_ZH,
    ActionRecord,
    AlertAction,
    AlertActionType,
    AlertEvent,
    AlertKind,
    AlertStatus,
    Evidence,
    Grade,
    Workflow,
)

RECENTLY_CLOSED = 64  # closed alerts kept per district, for late operator actions
MAX_ACTIONS = 50  # actions kept on an alert (the audit trail keeps them all)

KIND_ZH = {
    AlertKind.WARNING: "预警",
    AlertKind.ALARM: "告警",
    AlertKind.COMPOSITE: "综合预警",
    AlertKind.DATA_QUALITY: "数据质量告警",
}
KIND_EN = {
    AlertKind.WARNING: "warning",
    AlertKind.ALARM: "alarm",
    AlertKind.COMPOSITE: "composite warning",
    AlertKind.DATA_QUALITY: "data-quality alert",
}


def fingerprint(district: str, street: str | None, key: str, rule: str) -> str:
    """The identity of a condition: the same inputs always give the same 16 hex digits."""
    text = "\x1f".join((district, street or "", key, rule))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Signal:
    """A detector's finding about one condition, in event time."""

    action: str  # "fire" | "update" | "resolve"
    kind: AlertKind
    rule: str
    district: str
    street: str | None
    key: str  # the indicator, or the composite key
    indicators: tuple[str, ...]
    domain: str | None
    grade: Grade
    at: float  # event time, seconds since the epoch
    evidence: Evidence
    department: str
    co_departments: tuple[str, ...] = ()
    sharing: Sharing = Sharing.NOT_SHARED

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.district, self.street, self.key, self.rule)


@dataclass(frozen=True)
class Silence:
    """Mutes alerts that match every given field, from ``start`` to ``end`` (event time)."""

    silence_id: str
    start: float
    end: float
    district: str | None = None
    street: str | None = None
    rule: str | None = None
    indicator: str | None = None
    domain: str | None = None
    kind: AlertKind | None = None
    comment: str = ""

    def covers(self, alert: AlertEvent, at: float) -> bool:
        if not self.start <= at < self.end:
            return False
        checks = (
            (self.district, alert.district),
            (self.street, alert.street),
            (self.rule, alert.evidence.rule),
            (self.domain, alert.domain),
            (self.kind, alert.kind),
        )
        if any(want is not None and want != have for want, have in checks):
            return False
        return self.indicator is None or self.indicator in alert.indicators


def _ts(t: float) -> datetime:
    return datetime.fromtimestamp(t, UTC)


@dataclass
class Names:
    """Place and indicator names for headlines, from the city's config."""

    cfg: CityConfig

    def place(self, district: str, street: str | None, zh: bool) -> str:
        d = self.cfg.districts.get(district)
        name = district if d is None else (d.name_zh if zh else d.name_en)
        if street is not None and d is not None:
            s = next((s for s in d.streets if s.code == street), None)
            if s is not None:
                name += s.name_zh if zh else f" / {s.name_en}"
        return name

    def indicator(self, code: str, zh: bool) -> str:
        ind = self.cfg.indicators.get(code)
        return code if ind is None else (ind.name_zh if zh else ind.name_en)

    def headlines(self, alert: AlertEvent) -> tuple[str, str]:
        g = alert.grade
        names_zh = "、".join(self.indicator(c, True) for c in alert.indicators)
        names_en = ", ".join(self.indicator(c, False) for c in alert.indicators)
        zh = (
            f"{self.place(alert.district, alert.street, True)}{names_zh}"
            f"{GRADE_COLOURS_ZH[g]}{KIND_ZH[alert.kind]}（{g.roman}级）"
        )
        en = (
            f"{self.place(alert.district, alert.street, False)}: {names_en} "
            f"{g.colour} {KIND_EN[alert.kind]} (grade {g.roman})"
        )
        if alert.status is AlertStatus.RESOLVED:
            zh, en = f"【已解除】{zh}", f"[resolved] {en}"
        return zh, en


@dataclass
class AlertBook:
    """One district's alerts: open ones by fingerprint, and the recently closed."""

    district: str
    open: dict[str, AlertEvent] = field(default_factory=dict)
    closed: deque[AlertEvent] = field(default_factory=lambda: deque(maxlen=RECENTLY_CLOSED))
    silences: list[Silence] = field(default_factory=list)  # set by operators
    applied_actions: deque[str] = field(default_factory=lambda: deque(maxlen=4 * RECENTLY_CLOSED))

    # -- signals ---------------------------------------------------------------
    def apply(
        self, signal: Signal, names: Names, config_silences: tuple[Silence, ...] = ()
    ) -> list[AlertEvent]:
        """The events one signal causes: none, or one for its alert plus re-marked others."""
        fp = signal.fingerprint
        current = self.open.get(fp)
        if signal.action == "resolve":
            if current is None:
                return []
            event = self._next(current, signal, AlertStatus.RESOLVED, names)
            del self.open[fp]
            self.closed.append(event)
            return [event, *self._remark(names, config_silences, signal.at, exclude=fp)]
        if current is None:
            at = _ts(signal.at)
            event = AlertEvent(
                alert_id=f"{fp}-{int(signal.at)}",
                fingerprint=fp,
                sequence=1,
                status=AlertStatus.FIRING,
                grade=signal.grade,
                colour=signal.grade.colour,
                kind=signal.kind,
                district=signal.district,
                street=signal.street,
                domain=signal.domain,
                indicators=list(signal.indicators),
                department=signal.department,
                co_departments=list(signal.co_departments),
                sharing=signal.sharing,
                evidence=signal.evidence,
                first_seen=at,
                last_update=at,
                event_time=at,
                headline_zh="",
                headline_en="",
            )
            event = self._marked(event, names, config_silences, signal.at)
        else:
            if signal.grade == current.grade and signal.evidence == current.evidence:
                return []  # a repeat with nothing new
            event = self._next(current, signal, AlertStatus.UPDATED, names, config_silences)
        self.open[fp] = event
        return [event, *self._remark(names, config_silences, signal.at, exclude=fp)]

    def _next(
        self,
        current: AlertEvent,
        signal: Signal,
        status: AlertStatus,
        names: Names,
        config_silences: tuple[Silence, ...] = (),
    ) -> AlertEvent:
        at = _ts(max(signal.at, current.last_update.timestamp()))
        event = current.model_copy(
            update={
                "sequence": current.sequence + 1,
                "status": status,
                "grade": signal.grade if status is not AlertStatus.RESOLVED else current.grade,
                "colour": (
                    signal.grade if status is not AlertStatus.RESOLVED else current.grade
                ).colour,
                "evidence": signal.evidence,
                "last_update": at,
                "event_time": _ts(signal.at),
            }
        )
        return self._marked(event, names, config_silences, signal.at)

    # -- inhibition and silences -----------------------------------------------------
    def _inhibitor(self, alert: AlertEvent) -> str | None:
        if alert.grade is Grade.I or alert.status is AlertStatus.RESOLVED:
            return None
        for other in self.open.values():
            if (
                other.fingerprint != alert.fingerprint
                and other.grade is Grade.I
                and other.domain == alert.domain
            ):
                return other.alert_id
        return None

    def _silencer(
        self, alert: AlertEvent, at: float, config_silences: tuple[Silence, ...]
    ) -> str | None:
        for s in (*config_silences, *self.silences):
            if s.covers(alert, at):
                return s.silence_id
        return None

    def _marked(
        self, alert: AlertEvent, names: Names, config_silences: tuple[Silence, ...], at: float
    ) -> AlertEvent:
        marked = alert.model_copy(
            update={
                "inhibited_by": self._inhibitor(alert),
                "silenced_by": self._silencer(alert, at, config_silences),
            }
        )
        zh, en = names.headlines(marked)
        return marked.model_copy(update={"headline_zh": zh, "headline_en": en})

    def _remark(
        self, names: Names, config_silences: tuple[Silence, ...], at: float, exclude: str
    ) -> list[AlertEvent]:
        """Open alerts whose inhibition changed because another alert changed."""
        out = []
        for fp, alert in list(self.open.items()):
            if fp == exclude:
                continue
            inhibitor = self._inhibitor(alert)
            if inhibitor != alert.inhibited_by:
                event = alert.model_copy(
                    update={
                        "sequence": alert.sequence + 1,
                        "status": AlertStatus.UPDATED,
                        "inhibited_by": inhibitor,
                        "last_update": max(alert.last_update, _ts(at)),
                    }
                )
                self.open[fp] = event
                out.append(event)
        return out

    # -- operator actions --------------------------------------------------------------
    def find(self, alert_id: str) -> AlertEvent | None:
        for alert in self.open.values():
            if alert.alert_id == alert_id:
                return alert
        return next((a for a in reversed(self.closed) if a.alert_id == alert_id), None)

    def act(
        self, action: AlertAction, names: Names, config_silences: tuple[Silence, ...] = ()
    ) -> list[AlertEvent]:
        """Apply an operator action; a repeated action (same id) changes nothing."""
        if action.action_id in self.applied_actions:
            return []
        alert = self.find(action.alert_id)
        if alert is None:
            return []
        self.applied_actions.append(action.action_id)
        record = ActionRecord(
            action_id=action.action_id,
            action=action.action.value,
            actor=action.actor,
            role=action.role,
            at=action.at,
            department=action.department,
            note=action.note,
        )
        is_open = alert.fingerprint in self.open and self.open[alert.fingerprint] is alert
        update: dict[str, object] = {
            "sequence": alert.sequence + 1,
            "status": AlertStatus.UPDATED,
            "actions": [*alert.actions, record][-MAX_ACTIONS:],
            "last_update": max(alert.last_update, action.at),
        }
        kind = action.action
        if kind is AlertActionType.ACKNOWLEDGE and alert.workflow is Workflow.OPEN:
            update["workflow"] = Workflow.ACKNOWLEDGED
        elif kind is AlertActionType.DISPATCH:
            update["workflow"] = Workflow.DISPATCHED
        elif kind in (AlertActionType.RESOLVE, AlertActionType.FALSE_POSITIVE):
            update["workflow"] = (
                Workflow.RESOLVED if kind is AlertActionType.RESOLVE else Workflow.FALSE_POSITIVE
            )
            if is_open:
                update["status"] = AlertStatus.RESOLVED
        elif kind is AlertActionType.SILENCE and action.silence_s is not None:
            start = action.at.timestamp()
            self.silences = [s for s in self.silences if s.end > start]
            self.silences.append(
                Silence(
                    silence_id=f"silence-{action.action_id}",
                    start=start,
                    end=start + action.silence_s,
                    district=alert.district,
                    street=alert.street,
                    rule=alert.evidence.rule,
                    comment=action.note or "",
                )
            )
        event = alert.model_copy(update=update)
        if event.status is AlertStatus.RESOLVED or not is_open:
            zh, en = names.headlines(event)
            event = event.model_copy(update={"headline_zh": zh, "headline_en": en})
        else:
            event = self._marked(event, names, config_silences, action.at.timestamp())
        if is_open and event.status is AlertStatus.RESOLVED:
            del self.open[alert.fingerprint]
            self.closed.append(event)
            return [
                event,
                *self._remark(names, config_silences, action.at.timestamp(), alert.fingerprint),
            ]
        if is_open:
            self.open[alert.fingerprint] = event
        else:
            self.closed = deque(
                (event if a.alert_id == event.alert_id else a for a in self.closed),
                maxlen=RECENTLY_CLOSED,
            )
        return [event]
