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
- **Inhibition** is a reader's view, not an event: while a district has an
  open grade-I (red) alert, its lower-grade alerts of the same root (the same
  domain) are *inhibited* by it (:func:`inhibitor`): still listed, not
  notified, and notified once the red alert has gone. Notifications, the
  console, the demo and ``cityvitals tail`` each decide it from the alerts they
  hold. Kept out of the events, because an alarm decided on its reading
  (:mod:`streams.alerting.early`) may come before or after another series' window close
  depending on when the worker's batches end: the events of each alert depend
  on its own series alone, so the live worker and ``cityvitals replay`` publish
  the same ones whatever the timing.
- **Silences.** Maintenance windows from config and silences operators set
  ("silence similar for 2 h") mark matching alerts ``silenced_by``. A book
  keeps at most :data:`MAX_SILENCES` operator silences (the oldest set goes
  first), each comment cut to :data:`SILENCE_COMMENT_CHARS` characters.
- **Notes per alert.** An action's note is bounded (4000 characters), and so is the
  number of actions with a note one alert takes (:data:`MAX_NOTES_PER_ALERT`,
  ``CITYVITALS_MAX_NOTES_PER_ALERT``): past it :meth:`AlertBook.act` refuses the
  action with :class:`NoteLimitError` (the worker dead-letters it) and the API answers
  409, so no caller can grow an alert's timeline of notes without bound. Actions
  without a note (resolve, acknowledge) are still taken.
- **Actions and notes.** An alert keeps a compact history of its operator
  actions: at most :data:`MAX_ACTIONS` records, none with its note (see
  :func:`action_history`). Only the event an action causes carries that
  action's note, on its last record. So each published event is bounded
  whatever operators write, the book never stores a note, and a consumer that
  shows a timeline takes each note from the event that carried it (the API's
  alert detail and the console do; every event stays on
  ``city.emergency-command``).

Bounded table values
====================

Everything a table value holds is bounded by a constant or by the
configuration, never by operator input or alert history. As a last line of
defence a value is encoded with :func:`fit`: when its bytes exceed the bound
(``CITYVITALS_STATE_MAX_BYTES``, default :data:`STATE_MAX_BYTES`; Kafka's own
limit is 1 MiB) it drops the least important data, in a documented order per
table, until it fits, and says what it dropped. Writers report that to
:data:`DEGRADED` (the metric ``cityvitals_state_degraded_total{table}``, a
warning in the log, and an audit record ``state_degraded`` on ``city.audit``)
rather than failing the write and crashing the worker. :class:`AlertBook`'s
order is in :meth:`AlertBook.shrink_steps`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from streams.core import metrics
from streams.core.config import CityConfig, Sharing
from streams.core.messages import (
    GRADE_COLOURS_ZH,
    KIND_EN,
    KIND_ZH,
    ActionRecord,
    AlertAction,
    AlertActionType,
    AlertEvent,
    AlertKind,
    AlertStatus,
    AuditRecord,
    Evidence,
    Grade,
    Workflow,
)

log = logging.getLogger(__name__)
RECENTLY_CLOSED = 64  # closed alerts kept per district, for late operator actions
MAX_ACTIONS = 50  # action records kept on an alert (city.emergency-command keeps them all)
MAX_SILENCES = 32  # operator silences kept per district; the oldest set goes first
SILENCE_COMMENT_CHARS = 200  # of the operator's note, kept as a silence's comment
# notes one alert takes, whoever writes them (notes, field reports, silence reasons): each
# is bounded too, so an alert's free text is; default of CITYVITALS_MAX_NOTES_PER_ALERT
MAX_NOTES_PER_ALERT = 200
STATE_MAX_BYTES = 256 * 1024  # default bound of one table value (Kafka's limit is 1 MiB)
# actions that acknowledge an alert: the first one is kept through any trimming, because
# time-to-acknowledge (metrics, department performance) is read from the history
ACKNOWLEDGING = frozenset({AlertActionType.ACKNOWLEDGE.value, AlertActionType.DISPATCH.value})


class NoteLimitError(ValueError):
    """An action whose note would take its alert past the notes one alert takes."""


def fingerprint(district: str, street: str | None, key: str, rule: str) -> str:
    """The identity of a condition: the same inputs always give the same 16 hex digits."""
    text = "\x1f".join((district, street or "", key, rule))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# -- action history --------------------------------------------------------------------


def inhibitor(alert: AlertEvent, others: Iterable[AlertEvent]) -> str | None:
    """The alert id of the open red alert that inhibits ``alert``, or None.

    An open alert below grade I is inhibited by an open grade-I alert of the same
    district and domain (another condition); ``others`` are the latest events of
    the alerts the caller holds, in any order (the earliest red wins).
    """
    if alert.grade is Grade.I or is_closed(alert):
        return None
    reds = [
        o
        for o in others
        if o.grade is Grade.I
        and o.fingerprint != alert.fingerprint
        and o.district == alert.district
        and o.domain == alert.domain
        and not is_closed(o)
    ]
    return min(reds, key=lambda o: (o.first_seen, o.alert_id)).alert_id if reds else None


def _changes(action: AlertAction, alert: AlertEvent, is_open: bool) -> dict[str, object]:
    """What an operator action changes of its alert's fields (beyond the bookkeeping)."""
    kind = action.action
    if kind is AlertActionType.ACKNOWLEDGE and alert.workflow is Workflow.OPEN:
        return {"workflow": Workflow.ACKNOWLEDGED}
    if kind is AlertActionType.DISPATCH:
        return {"workflow": Workflow.DISPATCHED}
    if kind in (AlertActionType.RESOLVE, AlertActionType.FALSE_POSITIVE):
        done = Workflow.RESOLVED if kind is AlertActionType.RESOLVE else Workflow.FALSE_POSITIVE
        return {"workflow": done, **({"status": AlertStatus.RESOLVED} if is_open else {})}
    if kind is AlertActionType.REROUTE and action.department is not None:
        # not the owner's responsibility: the new owner starts from an open alert, and
        # the department that refused it is no co-handler either
        changes: dict[str, object] = {
            "department": action.department,
            "co_departments": [
                d for d in alert.co_departments if d not in (action.department, alert.department)
            ],
        }
        if alert.workflow not in (Workflow.RESOLVED, Workflow.FALSE_POSITIVE):
            changes["workflow"] = Workflow.OPEN
        return changes
    return {}


def _co_handlers(current: AlertEvent, signal: Signal) -> list[str]:
    """The co-handlers of an alert's next event: the signal's, unless operators re-routed
    it (its owner is no longer the signal's), when neither owner co-handles it."""
    if current.department == signal.department:
        return list(signal.co_departments)
    return [d for d in signal.co_departments if d not in (current.department, signal.department)]


def is_closed(alert: AlertEvent) -> bool:
    """Resolved by its condition, or closed by an operator (resolved, false positive)."""
    return alert.status is AlertStatus.RESOLVED or alert.workflow in (
        Workflow.RESOLVED,
        Workflow.FALSE_POSITIVE,
    )


def _noteless(record: ActionRecord) -> ActionRecord:
    return record if record.note is None else record.model_copy(update={"note": None})


def _trim(records: list[ActionRecord], keep: int) -> list[ActionRecord]:
    """At most ``keep`` (>= 2) records: the newest, and the first acknowledgement if any."""
    if len(records) <= keep:
        return records
    first_ack = next((i for i, r in enumerate(records) if r.action in ACKNOWLEDGING), None)
    if first_ack is None or first_ack >= len(records) - keep:
        return records[-keep:]
    return [records[first_ack], *records[len(records) - keep + 1 :]]


def action_history(actions: Sequence[ActionRecord], record: ActionRecord) -> list[ActionRecord]:
    """An alert's compact history with ``record`` appended: no notes, at most MAX_ACTIONS.

    The oldest records go first, except the alert's first acknowledgement, which
    time-to-acknowledge is measured from. An event carries this history with its
    own action's note put back on the last record (:meth:`AlertBook.act`).
    """
    return _trim([*map(_noteless, actions), _noteless(record)], MAX_ACTIONS)


# -- bounded table values --------------------------------------------------------------

Step = tuple[str, Callable[[], int]]
"""One way to shrink a value: a reason with ``{n}``, and a callable that drops one round
of data and says how many items it dropped (0: nothing left to drop this way)."""


def fit(
    encode: Callable[[], bytes], steps: Sequence[Step], max_bytes: int
) -> tuple[bytes, list[str]]:
    """``encode()``, shrunk by ``steps`` in order until it is at most ``max_bytes``.

    Returns the bytes and what was dropped, as human-readable reasons (empty
    when the value fitted at once). A step runs again while the value is too
    large and it still finds something to drop; the next step runs only when it
    has nothing left. If every step is exhausted the value is returned anyway,
    with a reason saying by how much it is over: what remains is bounded by the
    configuration, and a failed write would stop the worker.
    """
    data = encode()
    if len(data) <= max_bytes:
        return data, []
    before = len(data)
    dropped: dict[str, int] = {}
    for reason, step in steps:
        while len(data) > max_bytes:
            n = step()
            if n <= 0:
                break
            dropped[reason] = dropped.get(reason, 0) + n
            data = encode()
        if len(data) <= max_bytes:
            break
    reasons = [f"{before:,} bytes is over the bound of {max_bytes:,}"]
    reasons += [reason.format(n=n) for reason, n in dropped.items()]
    if len(data) > max_bytes:
        reasons.append(f"still {len(data):,} bytes after every reduction; written as it is")
    else:
        reasons.append(f"written at {len(data):,} bytes")
    return data, reasons


@dataclass
class DegradeLog:
    """Degraded table writes, counted and logged at once, published as audit records later.

    A table codec calls :meth:`report` when :func:`fit` had to drop data; the
    notifier's timer publishes :meth:`drain` on ``city.audit`` (action
    ``state_degraded``, target ``<table>/<district>``). A value that keeps
    growing past its bound degrades on every write: the metric counts each one,
    the audit trail gets at most one record per table and district every
    ``every_s`` seconds, saying how many writes it stands for.
    """

    every_s: float = 60.0
    _pending: dict[tuple[str, str], tuple[int, list[str]]] = field(default_factory=dict)
    _published: dict[tuple[str, str], float] = field(default_factory=dict)

    def report(self, table: str, district: str, reasons: Sequence[str]) -> None:
        metrics.state_degraded.labels(table).inc()
        log.warning("table %s, district %s degraded: %s", table, district, "; ".join(reasons))
        writes, _ = self._pending.get((table, district), (0, []))
        self._pending[(table, district)] = (writes + 1, list(reasons))

    def drain(self, now: float) -> list[AuditRecord]:
        """Audit records of the degradations reported since the last one (rate-limited)."""
        out = []
        for key, (writes, reasons) in list(self._pending.items()):
            if now - self._published.get(key, float("-inf")) < self.every_s:
                continue
            table, district = key
            detail = "; ".join(reasons)
            if writes > 1:
                detail = f"{writes} writes degraded, the latest: {detail}"
            out.append(
                AuditRecord(
                    at=datetime.fromtimestamp(now, UTC),
                    user="worker",  # as the windows table's degradations are recorded
                    role="system",
                    action="state_degraded",
                    target=f"{table}/{district}",
                    detail=detail,
                )
            )
            self._published[key] = now
            del self._pending[key]
        return out


DEGRADED = DegradeLog()
"""The worker's degraded table writes (codecs report, the notifier publishes)."""


@dataclass
class RecentIds:
    """The last ``size`` ids added, as 8-byte digests in a ring allocated whole.

    Its state is the same size however many ids went through it, so a stream of
    operator actions cannot make its table value grow, only turn the ring over.
    """

    size: int = 4 * RECENTLY_CLOSED
    ring: bytearray = field(default_factory=bytearray)
    at: int = 0  # the slot the next id goes to

    def __post_init__(self) -> None:
        if len(self.ring) != 8 * self.size:
            self.ring = bytearray(8 * self.size)

    @staticmethod
    def _digest(text: str) -> bytes:
        return hashlib.blake2b(text.encode(), digest_size=8).digest()

    def __contains__(self, text: object) -> bool:
        if not isinstance(text, str):
            return False
        digest = self._digest(text)
        i = self.ring.find(digest)
        while i != -1 and i % 8:  # a match straddling two slots is no match
            i = self.ring.find(digest, i + 1)
        return i != -1

    def add(self, text: str) -> None:
        self.ring[8 * self.at : 8 * self.at + 8] = self._digest(text)
        self.at = (self.at + 1) % self.size

    def __len__(self) -> int:
        empty = bytes(8)
        return sum(1 for i in range(0, len(self.ring), 8) if self.ring[i : i + 8] != empty)

    def clear(self) -> None:
        self.ring[:] = bytes(len(self.ring))
        self.at = 0


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
    # appeal category -> its names (zh, en): public-opinion alerts name their category
    categories: Mapping[str, tuple[str, str]] = field(default_factory=dict)

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
        category = alert.evidence.category
        if category is not None:
            zh_name, en_name = self.categories.get(category, (category, category))
            names_zh, names_en = f"{zh_name}{names_zh}", f"{en_name}: {names_en}"
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


def _count_note(book: AlertBook, alert_id: str, max_notes: int) -> dict[str, int]:
    """The book's note counts with one more for ``alert_id``, of kept alerts only;
    :class:`NoteLimitError` if the alert already holds ``max_notes``."""
    taken = book.notes.get(alert_id, 0)
    if taken >= max_notes:
        raise NoteLimitError(
            f"alert {alert_id} already holds {taken} notes, the most one alert takes "
            "(CITYVITALS_MAX_NOTES_PER_ALERT); act without a note"
        )
    notes = {**book.notes, alert_id: taken + 1}
    if len(notes) > len(book.open) + len(book.closed):
        kept = {a.alert_id for a in (*book.open.values(), *book.closed)}
        notes = {k: n for k, n in notes.items() if k in kept}
    return notes


@dataclass
class AlertBook:
    """One district's alerts: open ones by fingerprint, and the recently closed.

    Each alert is kept as its latest event with the compact action history (no
    notes); at most :data:`RECENTLY_CLOSED` closed alerts, :data:`MAX_SILENCES`
    operator silences and the last ``4 * RECENTLY_CLOSED`` applied action ids (a
    fixed-size ring). Open alerts are bounded by the conditions the configuration
    watches.
    """

    district: str
    open: dict[str, AlertEvent] = field(default_factory=dict)
    closed: deque[AlertEvent] = field(default_factory=lambda: deque(maxlen=RECENTLY_CLOSED))
    silences: list[Silence] = field(default_factory=list)  # set by operators, oldest first
    applied_actions: RecentIds = field(default_factory=RecentIds)  # redeliveries apply once
    notes: dict[str, int] = field(default_factory=dict)  # notes taken, per kept alert's id

    # -- signals ---------------------------------------------------------------
    def apply(
        self, signal: Signal, names: Names, config_silences: tuple[Silence, ...] = ()
    ) -> list[AlertEvent]:
        """The event one signal causes for its alert: none, or one."""
        fp = signal.fingerprint
        current = self.open.get(fp)
        if signal.action == "resolve":
            if current is None:
                return []
            event = self._next(current, signal, AlertStatus.RESOLVED, names)
            del self.open[fp]
            self.closed.append(event)
            return [event]
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
        return [event]

    def _next(
        self,
        current: AlertEvent,
        signal: Signal,
        status: AlertStatus,
        names: Names,
        config_silences: tuple[Silence, ...] = (),
    ) -> AlertEvent:
        at = _ts(max(signal.at, current.last_update.timestamp()))
        resolved = status is AlertStatus.RESOLVED
        event = current.model_copy(
            update={
                "sequence": current.sequence + 1,
                "status": status,
                "grade": current.grade if resolved else signal.grade,
                "colour": (current.grade if resolved else signal.grade).colour,
                "evidence": signal.evidence,
                # co-handlers may grow with the grade (public opinion); a resolution keeps them
                "co_departments": (
                    current.co_departments if resolved else _co_handlers(current, signal)
                ),
                "last_update": at,
                "event_time": _ts(signal.at),
            }
        )
        return self._marked(event, names, config_silences, signal.at)

    # -- silences ------------------------------------------------------------------------
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
                "silenced_by": self._silencer(alert, at, config_silences),
            }
        )
        zh, en = names.headlines(marked)
        return marked.model_copy(update={"headline_zh": zh, "headline_en": en})

    # -- operator actions --------------------------------------------------------------
    def find(self, alert_id: str) -> AlertEvent | None:
        for alert in self.open.values():
            if alert.alert_id == alert_id:
                return alert
        return next((a for a in reversed(self.closed) if a.alert_id == alert_id), None)

    def act(
        self,
        action: AlertAction,
        names: Names,
        config_silences: tuple[Silence, ...] = (),
        max_notes: int = MAX_NOTES_PER_ALERT,
    ) -> list[AlertEvent]:
        """Apply an operator action; a repeated action (same id) changes nothing.

        The event returned carries the action's note on its last action record;
        the book keeps the alert without it (see :func:`action_history`). An action
        with a note on an alert that holds ``max_notes`` raises :class:`NoteLimitError`
        and changes nothing.
        """
        if action.action_id in self.applied_actions:
            return []
        alert = self.find(action.alert_id)
        if alert is None:
            return []
        if action.note:
            self.notes = _count_note(self, alert.alert_id, max_notes)
        self.applied_actions.add(action.action_id)
        record = ActionRecord(
            action_id=action.action_id,
            action=action.action.value,
            actor=action.actor,
            role=action.role,
            at=action.at,
            department=action.department,
            note=action.note,
        )
        history = action_history(alert.actions, record)
        is_open = alert.fingerprint in self.open and self.open[alert.fingerprint] is alert
        update: dict[str, object] = {
            "sequence": alert.sequence + 1,
            "status": AlertStatus.UPDATED,
            # the event this action causes is the only one that carries its note
            "actions": [*history[:-1], record],
            "last_update": max(alert.last_update, action.at),
        }
        update.update(_changes(action, alert, is_open))
        if action.action is AlertActionType.SILENCE and action.silence_s is not None:
            self._silence(action, action.silence_s, alert)
        event = alert.model_copy(update=update)
        if event.status is AlertStatus.RESOLVED or not is_open:
            zh, en = names.headlines(event)
            event = event.model_copy(update={"headline_zh": zh, "headline_en": en})
        else:
            event = self._marked(event, names, config_silences, action.at.timestamp())
        kept = event if record.note is None else event.model_copy(update={"actions": history})
        if is_open and event.status is AlertStatus.RESOLVED:
            del self.open[alert.fingerprint]
            self.closed.append(kept)
            return [event]
        if is_open:
            self.open[alert.fingerprint] = kept
        else:
            self.closed = deque(
                (kept if a.alert_id == event.alert_id else a for a in self.closed),
                maxlen=RECENTLY_CLOSED,
            )
        return [event]

    def _silence(self, action: AlertAction, seconds: float, alert: AlertEvent) -> None:
        """Silence what is like ``alert`` for ``seconds``; the newest decisions win, so a
        flood of silences cannot grow the book."""
        start = action.at.timestamp()
        self.silences = [s for s in self.silences if s.end > start]
        self.silences.append(
            Silence(
                silence_id=f"silence-{action.action_id}",
                start=start,
                end=start + seconds,
                district=alert.district,
                street=alert.street,
                rule=alert.evidence.rule,
                comment=(action.note or "")[:SILENCE_COMMENT_CHARS],
            )
        )
        del self.silences[:-MAX_SILENCES]

    # -- bounds ---------------------------------------------------------------------------
    def upgrade(self) -> int:
        """Bring a book restored from an older changelog value within today's bounds.

        Older values kept every action's note on the alert; they are dropped here
        (the events on ``city.emergency-command`` still carry them), and the
        applied action ids move into a :class:`RecentIds`. Returns how many
        alerts changed.
        """
        changed = 0
        if not isinstance(self.applied_actions, RecentIds):
            applied = RecentIds()
            for action_id in self.applied_actions:
                applied.add(action_id)
            self.applied_actions = applied

        def compact(alert: AlertEvent) -> AlertEvent:
            nonlocal changed
            if all(r.note is None for r in alert.actions) and len(alert.actions) <= MAX_ACTIONS:
                return alert
            changed += 1
            kept = _trim([_noteless(r) for r in alert.actions], MAX_ACTIONS)
            return alert.model_copy(update={"actions": kept})

        self.open = {fp: compact(a) for fp, a in self.open.items()}
        self.closed = deque(map(compact, self.closed), maxlen=RECENTLY_CLOSED)
        self.silences = [
            s
            if len(s.comment) <= SILENCE_COMMENT_CHARS
            else dataclasses.replace(s, comment=s.comment[:SILENCE_COMMENT_CHARS])
            for s in self.silences[-MAX_SILENCES:]
        ]
        return changed

    def shrink_steps(self) -> list[Step]:
        """How this book gives way when its table value is over its bound, in order.

        1. The oldest recently closed alerts (half of them each round): their
           events are all published; only late operator actions on them need them.
        2. The evidence series (``values``, ``members``) of open alerts: the
           events already published keep them, and the next evidence brings new ones.
        3. The action history of open alerts, down to the first acknowledgement
           and the latest action (every action is still on the topic).
        4. The ids of applied actions (a redelivered action could apply twice).
        """
        return [
            (
                "forgot the {n} oldest recently closed alerts (later actions on them are ignored)",
                self._forget_closed,
            ),
            (
                "dropped the evidence series of {n} open alerts until their next evidence",
                self._drop_series,
            ),
            (
                "cut the action history of {n} open alerts to the first acknowledgement and "
                "the latest action (city.emergency-command keeps every action)",
                self._cut_actions,
            ),
            (
                "forgot the ids of {n} applied actions (a redelivered one could apply twice)",
                self._forget_applied,
            ),
        ]

    def _forget_closed(self) -> int:
        n = (len(self.closed) + 1) // 2
        for _ in range(n):
            self.closed.popleft()
        return n

    def _drop_series(self) -> int:
        n = 0
        for fp, alert in list(self.open.items()):
            if alert.evidence.values or alert.evidence.members:
                evidence = alert.evidence.model_copy(update={"values": [], "members": []})
                self.open[fp] = alert.model_copy(update={"evidence": evidence})
                n += 1
        return n

    def _cut_actions(self) -> int:
        n = 0
        for fp, alert in list(self.open.items()):
            if len(alert.actions) > 2:
                self.open[fp] = alert.model_copy(update={"actions": _trim(alert.actions, 2)})
                n += 1
        return n

    def _forget_applied(self) -> int:
        n = len(self.applied_actions)
        self.applied_actions.clear()
        return n
