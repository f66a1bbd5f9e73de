"""The alert lifecycle: identity, events, inhibition, silences and operator actions."""

from __future__ import annotations

import itertools
import pickle
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.config import Sharing, load_config
from streams.lifecycle import AlertBook, Names, Signal, Silence, fingerprint
from streams.schemas import (
    AlertAction,
    AlertActionType,
    AlertEvent,
    AlertKind,
    AlertStatus,
    Evidence,
    Grade,
    Workflow,
)

NAMES = Names(load_config())
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


def test_a_red_alert_inhibits_lower_grades_of_the_same_root_and_releases_them() -> None:
    book = AlertBook("339901")
    (noise,) = book.apply(signal("fire", Grade.IV, T0, rule="noise", key="iot.noise_db"), NAMES)
    (fire_iv,) = book.apply(
        signal("fire", Grade.IV, T0, rule="smoke", key="fire.smoke_alarms", domain="fire"), NAMES
    )
    assert noise.inhibited_by is None
    red, remarked = book.apply(signal("fire", Grade.I, T0 + 10), NAMES)  # pm25 red
    assert red.inhibited_by is None
    assert remarked.alert_id == noise.alert_id and remarked.inhibited_by == red.alert_id
    assert remarked.status is AlertStatus.UPDATED
    assert book.open[fire_iv.fingerprint].inhibited_by is None  # another root: not muted
    # a new lower-grade alert of the same root is born inhibited
    (dust,) = book.apply(signal("fire", Grade.III, T0 + 20, rule="pm10", key="iot.pm10"), NAMES)
    assert dust.inhibited_by == red.alert_id
    # when the red alert resolves, the others are released
    events = book.apply(signal("resolve", Grade.I, T0 + 900), NAMES)
    assert events[0].status is AlertStatus.RESOLVED
    released = {e.alert_id: e.inhibited_by for e in events[1:]}
    assert released == {noise.alert_id: None, dust.alert_id: None}


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
    assert book.find(alert.alert_id) == noted and book.open == {}


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
