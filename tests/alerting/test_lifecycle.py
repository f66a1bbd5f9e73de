"""The alert lifecycle: identity, events, inhibition, silences and operator actions."""

from __future__ import annotations

import dataclasses
import itertools
import pickle
from collections import deque
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from legacy.pickled_state import detection_from_pickle
from streams.alerting.detection import DETECTION_STATE, DetectionContext, DistrictDetection
from streams.alerting.lifecycle import (
    MAX_ACTIONS,
    MAX_NOTES_PER_ALERT,
    MAX_SILENCES,
    RECENTLY_CLOSED,
    SILENCE_COMMENT_CHARS,
    STATE_MAX_BYTES,
    AlertBook,
    Names,
    NoteLimitError,
    RecentIds,
    Signal,
    Silence,
    fingerprint,
    inhibitor,
)
from streams.alerting.rules import load_thresholds
from streams.core.config import Sharing, load_config
from streams.core.messages import (
    AlertAction,
    AlertActionType,
    AlertEvent,
    AlertKind,
    AlertStatus,
    Evidence,
    Grade,
    Workflow,
)
from streams.core.settings import Settings

CFG = load_config()
NAMES = Names(CFG)
CTX = DetectionContext(CFG, load_thresholds(CFG))
T0 = datetime(2026, 11, 24, 8, 0, tzinfo=UTC).timestamp()


def signal(
    action: str = "fire",
    grade: Grade = Grade.III,
    at: float = T0,
    *,
    rule: str = "environment.pm25.mean15",
    key: str = "iot.pm25",
    domain: str = "environment",
    street: str | None = None,
    observed: float = 120.0,
) -> Signal:
    return Signal(
        action=action,
        kind=AlertKind.ALARM,
        rule=rule,
        district="339901",
        street=street,
        key=key,
        indicators=(key,),
        domain=domain,
        grade=grade,
        at=at,
        evidence=Evidence(rule=rule, version="v1", observed=observed, aggregate="mean over 15 min"),
        department="environment",
        sharing=Sharing.OPEN,
    )


def action(kind: AlertActionType, alert: AlertEvent, n: int = 1, **extra: object) -> AlertAction:
    return AlertAction(
        action_id=f"act-{n}",
        alert_id=alert.alert_id,
        district=alert.district,
        action=kind,
        actor="wang.li",
        role="operator",
        at=datetime.fromtimestamp(T0 + 600 + n, UTC),
        **extra,  # type: ignore[arg-type]
    )


def test_fingerprint_is_deterministic_and_names_the_condition() -> None:
    a = fingerprint("339901", None, "iot.pm25", "environment.pm25.mean15")
    assert a == fingerprint("339901", None, "iot.pm25", "environment.pm25.mean15")
    assert len(a) == 16
    others = {
        fingerprint("339902", None, "iot.pm25", "environment.pm25.mean15"),
        fingerprint("339901", "339901001", "iot.pm25", "environment.pm25.mean15"),
        fingerprint("339901", None, "iot.noise_db", "environment.pm25.mean15"),
        fingerprint("339901", None, "iot.pm25", "other.rule"),
    }
    assert a not in others and len(others) == 4


def test_fire_update_resolve_make_one_alert_with_increasing_sequence() -> None:
    book = AlertBook("339901")
    (fired,) = book.apply(signal("fire", Grade.III, T0), NAMES)
    assert fired.status is AlertStatus.FIRING and fired.sequence == 1
    assert fired.grade is Grade.III and fired.colour == "yellow"
    assert fired.alert_id == f"{fired.fingerprint}-{int(T0)}"
    assert (
        fired.first_seen == fired.last_update == fired.event_time == datetime.fromtimestamp(T0, UTC)
    )
    assert fired.headline_en == "Jiangbin: PM2.5 concentration yellow alarm (grade III)"
    assert fired.headline_zh == "江滨区PM2.5 浓度黄色告警（III级）"
    (up,) = book.apply(signal("update", Grade.II, T0 + 60, observed=160), NAMES)
    assert (up.status, up.sequence, up.grade, up.colour) == (
        AlertStatus.UPDATED,
        2,
        Grade.II,
        "orange",
    )
    assert up.alert_id == fired.alert_id and up.first_seen == fired.first_seen
    assert up.evidence.observed == 160
    (done,) = book.apply(signal("resolve", Grade.II, T0 + 900), NAMES)
    assert (done.status, done.sequence, done.alert_id) == (AlertStatus.RESOLVED, 3, fired.alert_id)
    assert done.headline_en.startswith("[resolved] ")
    assert book.open == {}


def test_a_repeated_signal_updates_the_open_alert_instead_of_creating_another() -> None:
    book = AlertBook("339901")
    (first,) = book.apply(signal("fire", Grade.III, T0), NAMES)
    (again,) = book.apply(signal("fire", Grade.III, T0 + 60, observed=125), NAMES)
    assert again.alert_id == first.alert_id and again.status is AlertStatus.UPDATED
    assert book.apply(signal("fire", Grade.III, T0 + 120, observed=125), NAMES) == []
    assert len(book.open) == 1


def test_after_resolution_the_condition_fires_a_new_alert() -> None:
    book = AlertBook("339901")
    (a,) = book.apply(signal("fire", at=T0), NAMES)
    book.apply(signal("resolve", at=T0 + 600), NAMES)
    (b,) = book.apply(signal("fire", at=T0 + 1200), NAMES)
    assert b.status is AlertStatus.FIRING and b.alert_id != a.alert_id
    assert b.fingerprint == a.fingerprint


def test_resolve_or_update_of_an_unknown_condition() -> None:
    book = AlertBook("339901")
    assert book.apply(signal("resolve"), NAMES) == []
    (ev,) = book.apply(signal("update", Grade.II), NAMES)  # an update opens it
    assert ev.status is AlertStatus.FIRING


def test_replaying_the_same_signals_gives_the_same_events() -> None:
    """Reprocessing after a crash: same ids, sequences and content, never a second alert."""
    signals = [
        signal("fire", Grade.IV, T0),
        signal("update", Grade.I, T0 + 60, observed=300),
        signal("fire", Grade.III, T0 + 90, rule="fire.x", key="fire.smoke_alarms", domain="fire"),
        signal("resolve", Grade.I, T0 + 900),
    ]
    runs = []
    for _ in range(2):
        book = AlertBook("339901")
        runs.append([e for s in signals for e in book.apply(s, NAMES)])
    assert runs[0] == runs[1]
    # and a book restored from its pickled state mid-way continues identically
    book = AlertBook("339901")
    head = [e for s in signals[:2] for e in book.apply(s, NAMES)]
    restored = pickle.loads(pickle.dumps(book))
    tail = [e for s in signals[2:] for e in restored.apply(s, NAMES)]
    assert head + tail == runs[0]


def test_a_red_alert_inhibits_lower_grades_of_the_same_root_in_the_readers_view() -> None:
    book = AlertBook("339901")
    (noise,) = book.apply(signal("fire", Grade.IV, T0, rule="noise", key="iot.noise_db"), NAMES)
    (fire_iv,) = book.apply(
        signal("fire", Grade.IV, T0, rule="smoke", key="fire.smoke_alarms", domain="fire"), NAMES
    )
    assert inhibitor(noise, book.open.values()) is None
    # the red alert's event is the only one it causes: others' events are their own
    (red,) = book.apply(signal("fire", Grade.I, T0 + 10), NAMES)  # pm25 red
    held = list(book.open.values())
    assert inhibitor(red, held) is None
    assert inhibitor(noise, held) == red.alert_id
    assert inhibitor(fire_iv, held) is None  # another root: not held back
    (dust,) = book.apply(signal("fire", Grade.III, T0 + 20, rule="pm10", key="iot.pm10"), NAMES)
    assert inhibitor(dust, book.open.values()) == red.alert_id
    # another district's red holds nothing back here
    elsewhere = red.model_copy(update={"district": "339902", "fingerprint": "x", "alert_id": "x-1"})
    assert inhibitor(dust, [elsewhere]) is None
    # when the red alert resolves, nothing is held back, and no other alert has an event
    (resolved,) = book.apply(signal("resolve", Grade.I, T0 + 900), NAMES)
    assert resolved.status is AlertStatus.RESOLVED
    assert inhibitor(dust, [*book.open.values(), resolved]) is None
    # a red closed by an operator holds nothing back either
    closed = red.model_copy(update={"workflow": Workflow.FALSE_POSITIVE})
    assert inhibitor(noise, [closed]) is None


def test_an_alerts_events_do_not_depend_on_the_order_of_other_series() -> None:
    """Signals of different series in either order give each alert the same events."""
    signals = [
        signal("fire", Grade.III, T0, rule="pm10", key="iot.pm10"),
        signal("fire", Grade.I, T0 + 5),
        signal("fire", Grade.II, T0 + 70, rule="pm10", key="iot.pm10"),
        signal("resolve", Grade.I, T0 + 80),
    ]

    def per_alert(order: list[Signal]) -> dict[str, list[AlertEvent]]:
        book = AlertBook("339901")
        out: dict[str, list[AlertEvent]] = {}
        for s in order:
            for e in book.apply(s, NAMES):
                out.setdefault(e.alert_id, []).append(e)
        return out

    pm10, pm25 = signals[0::2], signals[1::2]
    assert per_alert(signals) == per_alert(pm25 + pm10) == per_alert(pm10 + pm25)


def test_config_silences_mark_matching_alerts_in_their_window() -> None:
    works = Silence(
        "planned-works-1", start=T0, end=T0 + 3600, district="339901", domain="environment"
    )
    book = AlertBook("339901")
    (inside,) = book.apply(signal("fire", at=T0 + 10), NAMES, (works,))
    assert inside.silenced_by == "planned-works-1"
    (other,) = book.apply(
        signal("fire", at=T0 + 10, rule="smoke", key="fire.smoke_alarms", domain="fire"),
        NAMES,
        (works,),
    )
    assert other.silenced_by is None
    (later,) = book.apply(signal("update", Grade.I, T0 + 4000), NAMES, (works,))
    assert later.silenced_by is None  # the window is over


def test_acknowledge_dispatch_note_and_resolve_are_recorded_on_the_alert() -> None:
    book = AlertBook("339901")
    (alert,) = book.apply(signal(), NAMES)
    (ack,) = book.act(action(AlertActionType.ACKNOWLEDGE, alert, 1), NAMES)
    assert ack.workflow is Workflow.ACKNOWLEDGED and ack.status is AlertStatus.UPDATED
    assert ack.sequence == 2 and [a.action for a in ack.actions] == ["acknowledge"]
    assert ack.actions[0].actor == "wang.li"
    (sent,) = book.act(action(AlertActionType.DISPATCH, alert, 2, department="fire"), NAMES)
    assert sent.workflow is Workflow.DISPATCHED and sent.actions[-1].department == "fire"
    (noted,) = book.act(action(AlertActionType.NOTE, alert, 3, note="crew on site"), NAMES)
    assert noted.workflow is Workflow.DISPATCHED and noted.actions[-1].note == "crew on site"
    (closed,) = book.act(action(AlertActionType.RESOLVE, alert, 4), NAMES)
    assert closed.status is AlertStatus.RESOLVED and closed.workflow is Workflow.RESOLVED
    assert [a.action for a in closed.actions] == ["acknowledge", "dispatch", "note", "resolve"]
    assert book.open == {}
    # the detector's later resolve of the same condition changes nothing
    assert book.apply(signal("resolve", at=T0 + 2000), NAMES) == []


def test_an_action_is_applied_once_and_unknown_alerts_are_ignored() -> None:
    book = AlertBook("339901")
    (alert,) = book.apply(signal(), NAMES)
    ack = action(AlertActionType.ACKNOWLEDGE, alert, 1)
    assert len(book.act(ack, NAMES)) == 1
    assert book.act(ack, NAMES) == []  # redelivered
    ghost = ack.model_copy(update={"action_id": "act-9", "alert_id": "nope"})
    assert book.act(ghost, NAMES) == []


def test_false_positive_closes_the_alert_with_that_workflow() -> None:
    book = AlertBook("339901")
    (alert,) = book.apply(signal(), NAMES)
    (fp,) = book.act(action(AlertActionType.FALSE_POSITIVE, alert), NAMES)
    assert fp.status is AlertStatus.RESOLVED and fp.workflow is Workflow.FALSE_POSITIVE


def test_an_action_on_a_recently_closed_alert_is_recorded() -> None:
    book = AlertBook("339901")
    (alert,) = book.apply(signal(), NAMES)
    book.apply(signal("resolve", at=T0 + 300), NAMES)
    (noted,) = book.act(action(AlertActionType.NOTE, alert, 1, note="cause: roadworks"), NAMES)
    assert noted.status is AlertStatus.UPDATED and noted.actions[-1].note == "cause: roadworks"
    # the book keeps the alert without the note: only the event carries it
    kept = book.find(alert.alert_id)
    assert kept is not None and book.open == {}
    assert kept.actions[-1].note is None
    assert kept.model_copy(update={"actions": noted.actions}) == noted


def test_silence_similar_mutes_the_same_rule_and_place_for_its_duration() -> None:
    book = AlertBook("339901")
    (alert,) = book.apply(signal(), NAMES)
    (silenced,) = book.act(action(AlertActionType.SILENCE, alert, 1, silence_s=7200), NAMES)
    assert silenced.silenced_by == "silence-act-1"
    book.apply(signal("resolve", at=T0 + 900), NAMES)
    (again,) = book.apply(signal("fire", at=T0 + 1800), NAMES)
    assert again.silenced_by == "silence-act-1"
    book.apply(signal("resolve", at=T0 + 2000), NAMES)
    (after,) = book.apply(signal("fire", at=T0 + 600 + 1 + 7200), NAMES)
    assert after.silenced_by is None


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["fire", "update", "resolve"]),
            st.sampled_from(list(Grade)),
            st.sampled_from(["a", "b", "c"]),
            st.integers(0, 600),
        ),
        max_size=40,
    )
)
def test_every_alert_has_one_firing_event_and_strictly_increasing_sequences(
    steps: list[tuple[str, Grade, str, int]],
) -> None:
    book = AlertBook("339901")
    t = T0
    seen: dict[str, list[AlertEvent]] = {}
    for act, grade, rule, dt in steps:
        t += dt
        for ev in book.apply(signal(act, grade, t, rule=rule, observed=dt), NAMES):
            seen.setdefault(ev.alert_id, []).append(ev)
    for events in seen.values():
        assert events[0].status is AlertStatus.FIRING
        assert [e.status for e in events[1:]].count(AlertStatus.FIRING) == 0
        assert [e.sequence for e in events] == list(range(1, len(events) + 1))
        last = events[-1]
        still_open = book.open.get(last.fingerprint)
        assert last.status is AlertStatus.RESOLVED or (
            still_open is not None and still_open.alert_id == last.alert_id
        )
        assert all(b.last_update >= a.last_update for a, b in itertools.pairwise(events))
    # at most one open alert per condition
    assert len({a.fingerprint for a in book.open.values()}) == len(book.open)


def test_state_stays_bounded() -> None:
    book = AlertBook("339901")
    for i in range(500):
        (a,) = book.apply(signal("fire", at=T0 + i * 100, rule=f"r{i % 7}"), NAMES)
        book.apply(signal("resolve", at=T0 + i * 100 + 50, rule=f"r{i % 7}"), NAMES)
        book.act(action(AlertActionType.NOTE, a, i, note="x"), NAMES)
    assert len(book.closed) <= 64 and len(book.open) == 0
    assert len(pickle.dumps(book)) < 400_000


@pytest.mark.parametrize("street", [None, "339901002"])
def test_headlines_name_the_place(street: str | None) -> None:
    (ev,) = AlertBook("339901").apply(signal(street=street), NAMES)
    if street is None:
        assert ev.headline_en.startswith("Jiangbin:")
    else:
        assert ev.headline_en.startswith("Jiangbin / Wangchao:")
        assert ev.headline_zh.startswith("江滨区望潮街道")


def test_event_times_come_from_signals_not_the_clock() -> None:
    (ev,) = AlertBook("339901").apply(signal(at=T0 - 86400 * 30), NAMES)
    assert ev.first_seen == datetime.fromtimestamp(T0, UTC) - timedelta(days=30)


# --- notes and bounds ---------------------------------------------------------------------

LONGEST_NOTE = "警" * 4000  # the API's longest note: 12,000 bytes of UTF-8


def note(alert: AlertEvent, n: int, text: str = LONGEST_NOTE) -> AlertAction:
    """A note with an API-like id (32 hex digits, the same length for every n)."""
    return action(AlertActionType.NOTE, alert, n, note=text).model_copy(
        update={"action_id": f"{n:032x}"}
    )


def test_only_the_event_an_action_caused_carries_its_note() -> None:
    book = AlertBook("339901")
    (alert,) = book.apply(signal(), NAMES)
    (ack,) = book.act(action(AlertActionType.ACKNOWLEDGE, alert, 1, note="on it"), NAMES)
    (noted,) = book.act(note(alert, 2, "crew on site"), NAMES)
    assert [(a.action, a.note) for a in ack.actions] == [("acknowledge", "on it")]
    assert [(a.action, a.note) for a in noted.actions] == [
        ("acknowledge", None),
        ("note", "crew on site"),
    ]
    (later,) = book.apply(signal("update", Grade.II, T0 + 900), NAMES)
    assert [a.note for a in later.actions] == [None, None]  # a signal's event: no note
    stored = book.find(alert.alert_id)
    assert stored is not None and all(a.note is None for a in stored.actions)


def test_the_history_is_bounded_and_keeps_the_first_acknowledgement() -> None:
    book = AlertBook("339901")
    (alert,) = book.apply(signal(), NAMES)
    book.act(action(AlertActionType.NOTE, alert, 1, note="first look"), NAMES)
    book.act(action(AlertActionType.ACKNOWLEDGE, alert, 2), NAMES)
    events = [book.act(note(alert, n, "x"), NAMES)[0] for n in range(3, 3 + 2 * MAX_ACTIONS)]
    last = events[-1]
    assert len(last.actions) == MAX_ACTIONS
    # time to acknowledge is read from the history: its first acknowledgement stays
    assert last.actions[0].action == "acknowledge"
    assert [a.action_id for a in last.actions[1:]] == [
        f"{n:032x}" for n in range(2 * MAX_ACTIONS + 3 - (MAX_ACTIONS - 1), 2 * MAX_ACTIONS + 3)
    ]
    assert last.actions[-1].note == "x" and all(a.note is None for a in last.actions[:-1])


def test_a_thousand_longest_notes_leave_the_book_and_each_event_bounded() -> None:
    det = DistrictDetection("339901")
    (alert,) = det.book.apply(signal(grade=Grade.I), NAMES)
    sizes: dict[int, tuple[int, int]] = {}
    biggest_event = 0
    ctx = dataclasses.replace(CTX, max_notes=1000)  # above CITYVITALS_MAX_NOTES_PER_ALERT
    for n in range(1, 1001):
        (event,) = det.act(note(alert, n), ctx)
        assert event.actions[-1].note == LONGEST_NOTE
        biggest_event = max(biggest_event, len(event.to_json()))
        if n in (100, 1000):
            data, dropped = det.encode()
            sizes[n] = (len(DETECTION_STATE.document(det)), len(data))
            assert dropped == []
    print(
        f"1,000 notes of 12,000 bytes: document, value {sizes}, largest event {biggest_event} bytes"
    )
    document_100, _ = sizes[100]
    document_1000, value_1000 = sizes[1000]
    assert value_1000 < 32 * 1024 < STATE_MAX_BYTES
    # nothing grows but the sequence number's own bytes
    assert document_1000 - document_100 <= 8
    # an event holds one note and a history without notes
    assert biggest_event < len(LONGEST_NOTE.encode()) + 16 * 1024


def test_an_alert_takes_at_most_max_notes_and_still_every_action_without_one() -> None:
    book = AlertBook("339901")
    (alert,) = book.apply(signal(), NAMES)
    (other,) = book.apply(signal(key="water.pressure"), NAMES)
    for n in range(3):
        assert book.act(note(alert, n, "crew on site"), NAMES, max_notes=3)
    before = (dict(book.notes), book.open[alert.fingerprint])
    over = note(alert, 3, "one more")
    with pytest.raises(NoteLimitError, match=r"already holds 3 notes.*MAX_NOTES_PER_ALERT"):
        book.act(over, NAMES, max_notes=3)
    assert (dict(book.notes), book.open[alert.fingerprint]) == before  # nothing changed
    assert over.action_id not in book.applied_actions  # not taken as applied either
    # free text of any kind counts: an acknowledgement's or a silence's note too
    with pytest.raises(NoteLimitError):
        book.act(action(AlertActionType.ACKNOWLEDGE, alert, 4, note="on it"), NAMES, max_notes=3)
    (ack,) = book.act(action(AlertActionType.ACKNOWLEDGE, alert, 5), NAMES, max_notes=3)
    assert ack.workflow is Workflow.ACKNOWLEDGED
    assert book.act(note(other, 6, "another alert"), NAMES, max_notes=3)  # its own count
    (closed,) = book.act(action(AlertActionType.RESOLVE, alert, 7), NAMES, max_notes=3)
    assert closed.workflow is Workflow.RESOLVED
    assert book.notes == {alert.alert_id: 3, other.alert_id: 1}


def test_the_note_counts_are_kept_only_for_alerts_the_book_keeps() -> None:
    book = AlertBook("339901")
    first = None
    for n in range(RECENTLY_CLOSED * 3):
        (alert,) = book.apply(signal(at=T0 + 60 * n), NAMES)
        first = first or alert.alert_id
        book.act(note(alert, 2 * n, "looked at it"), NAMES)
        book.act(action(AlertActionType.RESOLVE, alert, 2 * n + 1), NAMES)
        assert len(book.notes) <= len(book.open) + len(book.closed) + 1  # + the one just closed
    assert first not in book.notes and len(book.notes) <= RECENTLY_CLOSED + 1


def test_the_worker_s_default_bound_of_notes_is_the_lifecycle_s() -> None:
    field = Settings.model_fields["max_notes_per_alert"]
    assert field.default == MAX_NOTES_PER_ALERT == DetectionContext.max_notes


def test_operator_silences_are_bounded_and_their_comments_cut() -> None:
    book = AlertBook("339901")
    (alert,) = book.apply(signal(), NAMES)
    for n in range(3 * MAX_SILENCES):
        book.act(
            action(AlertActionType.SILENCE, alert, n, silence_s=86400, note=LONGEST_NOTE), NAMES
        )
    assert len(book.silences) == MAX_SILENCES
    assert book.silences[-1].silence_id == f"silence-act-{3 * MAX_SILENCES - 1}"
    assert all(len(s.comment) == SILENCE_COMMENT_CHARS for s in book.silences)


def test_applied_action_ids_take_the_same_bytes_however_many_went_through() -> None:
    ids = RecentIds()
    empty = len(pickle.dumps(ids, protocol=5))
    for n in range(10 * ids.size):
        ids.add(f"{n:032x}")
    assert len(pickle.dumps(ids, protocol=5)) <= empty + 2
    assert f"{10 * ids.size - 1:032x}" in ids and f"{10 * ids.size - ids.size:032x}" in ids
    assert f"{10 * ids.size - ids.size - 1:032x}" not in ids  # turned over
    assert len(ids) == ids.size


def test_a_book_over_its_bound_drops_closed_alerts_first_and_says_so() -> None:
    det = DistrictDetection("339901")
    for i in range(RECENTLY_CLOSED):
        rule = f"rule-{i}"
        (a,) = det.book.apply(signal(at=T0 + i, rule=rule), NAMES)
        for n in range(MAX_ACTIONS):
            det.book.act(note(a, i * 1000 + n, "x"), NAMES)
        det.book.apply(signal("resolve", at=T0 + 5000 + i, rule=rule), NAMES)
    (still_open,) = det.book.apply(signal(at=T0 + 9000, rule="open-one"), NAMES)
    full = len(det.dumps())
    data, reasons = det.encode(max_bytes=full // 2)
    assert len(data) <= full // 2 < full
    assert reasons[0] == f"{full:,} bytes is over the bound of {full // 2:,}"
    assert "oldest recently closed alerts" in reasons[1]
    assert reasons[-1] == f"written at {len(data):,} bytes"
    assert det.book.open[still_open.fingerprint] == still_open  # open alerts untouched
    assert DistrictDetection.loads(data).book.closed == det.book.closed


def test_a_value_that_cannot_fit_is_written_anyway_and_says_by_how_much() -> None:
    det = DistrictDetection("339901")
    det.book.apply(signal(), NAMES)
    data, reasons = det.encode(max_bytes=100)
    assert len(data) > 100 and reasons[-1] == (
        f"still {len(data):,} bytes after every reduction; written as it is"
    )
    assert reasons[0] == f"{len(data):,} bytes is over the bound of 100"  # nothing to drop


def test_a_book_pickled_before_compact_histories_migrates_without_its_notes() -> None:
    det = DistrictDetection("339901")
    (alert,) = det.book.apply(signal(), NAMES)
    (noted,) = det.book.act(note(alert, 1), NAMES)
    # as earlier versions kept it: the note on the alert, ids in a deque
    det.book.open[alert.fingerprint] = noted
    det.book.applied_actions = deque(["act-0", f"{1:032x}"])  # type: ignore[assignment]
    loaded = detection_from_pickle(pickle.dumps(det, protocol=5))
    assert loaded.book.open[alert.fingerprint].actions[-1].note is None
    assert isinstance(loaded.book.applied_actions, RecentIds)
    assert loaded.act(note(alert, 1), CTX) == []  # still known as applied
