"""Notification planning in process: briefs, bounded groups and escalations, degraded values."""

from __future__ import annotations

import base64
import pickle
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from legacy.pickled_state import notify_from_pickle
from streams.alerting.lifecycle import STATE_MAX_BYTES
from streams.core.config import load_config
from streams.core.messages import (
    ActionRecord,
    AlertEvent,
    AppealSample,
    Evidence,
    EvidencePoint,
    Forecast,
    MemberSignal,
    Notification,
)
from streams.notify import planner as notify
from streams.notify.payloads import render_all
from streams.notify.planner import (
    MAX_ESCALATING,
    MAX_NOTIFIED,
    AlertBrief,
    DistrictNotify,
    Planner,
)
from streams.notify.routing import RoutingTree, load_routes

CFG = load_config()
AT = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)
LONGEST_NOTE = "警" * 4000  # the API's longest note: 12,000 bytes of UTF-8


def routes(tmp: Path, group_by: str = "[district]") -> RoutingTree:
    path = tmp / "routes.yaml"
    path.write_text(
        f"""version: 1
console_url: http://127.0.0.1:6066
receivers:
  - {{name: ops, url: "http://127.0.0.1:9/ops", format: native}}
  - {{name: street-duty, url: "http://127.0.0.1:9/street", format: native}}
  - {{name: district-duty, url: "http://127.0.0.1:9/district", format: native}}
  - {{name: city-command, url: "http://127.0.0.1:9/city", format: cap}}
route:
  receiver: ops
  group_by: {group_by}
  group_wait: 1s
  group_interval: 2s
  repeat_interval: 1h
  send_resolved: true
escalation:
  ack_deadlines: {{I: 60s, II: 1h, III: 1h, IV: 1h}}
  levels: {{street: street-duty, district: district-duty, city: city-command}}
""",
        encoding="utf-8",
    )
    return load_routes(path, CFG)


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> RoutingTree:
    return routes(tmp_path_factory.mktemp("routes"))


def alert(n: int, **update: object) -> AlertEvent:
    """Alert ``n`` of a PM2.5 storm in one street, as read from the topic (nothing shared)."""
    event = AlertEvent(
        alert_id=f"{n:016x}-1795507200",
        fingerprint=f"{n:016x}",
        sequence=1,
        status="firing",
        grade=3,
        colour="yellow",
        kind="alarm",
        district="339901",
        street="339901001",
        domain="environment",
        indicators=["iot.pm25"],
        department="environment",
        evidence=Evidence(
            rule="environment.pm25.mean15",
            version="1a2b3c4d5e6f",
            observed=120.0 + n % 7,
            aggregate="mean over 15 min",
            threshold=115.0,
            window_start=AT - timedelta(minutes=15),
            window_end=AT,
            values=[
                EvidencePoint(time=AT - timedelta(minutes=i), value=100.0 + i) for i in range(15)
            ],
            detail=f"mean over 15 min {120 + n % 7} >= 115; breach since 2026-11-24T08:{n % 60:02d}:00Z",
        ),
        first_seen=AT,
        last_update=AT,
        event_time=AT,
        headline_zh="江滨区滨江街道PM2.5浓度黄色告警（III级）",
        headline_en="Jiangbin / Binjiang: PM2.5 concentration yellow alarm (grade III)",
    )
    return AlertEvent.model_validate_json(
        AlertEvent.model_validate({**event.model_dump(), **update}).to_json()
    )


def noted(event: AlertEvent, n: int) -> AlertEvent:
    """The event of operator note ``n`` on the alert: a history without notes, then the note."""
    history = [
        ActionRecord(action_id=f"{k:032x}", action="note", actor="cc.duty", role="operator", at=AT)
        for k in range(max(1, n - 49), n)
    ]
    record = ActionRecord(
        action_id=f"{n:032x}",
        action="note",
        actor="cc.duty",
        role="operator",
        at=AT + timedelta(seconds=n),
        note=LONGEST_NOTE,
    )
    return event.model_copy(
        update={"sequence": n + 1, "status": "updated", "actions": [*history, record]}
    )


def covered(note: Notification) -> int:
    return len(note.alerts) + note.truncated_alerts


# --- briefs ---------------------------------------------------------------------------------


def test_a_brief_keeps_what_a_notification_shows_and_reads_back_exactly() -> None:
    members = [
        MemberSignal(
            indicator=f"ind.{k}",
            domain=("traffic", "fire", "environment")[k % 3],
            score=k / 10,
            event_time=AT,
            detail="x" * 50,
        )
        for k in range(9)
    ]
    full = noted(alert(1), 3).model_copy(
        update={
            "kind": "composite",
            "evidence": alert(1).evidence.model_copy(
                update={
                    "members": members,
                    "forecast": Forecast(value=1.5, horizon_s=1800, crossing_time=AT, limit=2.0),
                    "detail": "d" * 1000,
                }
            ),
        }
    )
    brief = AlertBrief.of(full)
    slim = brief.event()
    assert slim.actions == [] and slim.evidence.values == []
    assert len(slim.evidence.members) == notify.BRIEF_MEMBERS
    assert {m.domain for m in slim.evidence.members} == {"traffic", "fire", "environment"}
    assert slim.evidence.detail == "d" * notify.BRIEF_DETAIL_CHARS
    assert slim.model_copy(update={"evidence": full.evidence, "actions": full.actions}) == full
    assert pickle.loads(pickle.dumps(brief)) == brief
    assert (brief.alert_id, brief.sequence, brief.grade, brief.closed) == (
        full.alert_id,
        4,
        3,
        False,
    )
    assert len(pickle.dumps(brief)) < len(pickle.dumps(full)) / 4


def test_a_public_opinion_brief_keeps_its_angriest_appeals_and_old_briefs_still_read() -> None:
    samples = [
        AppealSample(
            appeal_id=f"hotline_12345:W{k}",
            channel="hotline_12345",
            street="339901001",
            time=AT,
            text="小区门口垃圾站臭味太大了，反映多次没人管",
            intensity=0.9 - k / 10,
            emotion="anger",
            extreme=k < 2,
            words=["臭味", "没人管"],
        )
        for k in range(5)
    ]
    full = alert(1).model_copy(
        update={
            "kind": "public_opinion",
            "evidence": alert(1).evidence.model_copy(
                update={"category": "odour", "appeals": samples}
            ),
        }
    )
    slim = AlertBrief.of(full).event()
    assert slim.evidence.category == "odour"
    assert slim.evidence.appeals == samples[: notify.BRIEF_APPEALS]
    assert AlertBrief.of(full).shorter().event().evidence.appeals == []
    # a brief packed before evidence had a category and appeals: they take their defaults
    evidence_at = notify._LAYOUT["AlertEvent"].index("evidence")
    old = list(AlertBrief.of(alert(1)).doc)
    old[evidence_at] = old[evidence_at][: -len(("category", "appeals"))]
    restored = AlertBrief.__from_state__(old).event()
    assert restored.evidence.category is None and restored.evidence.appeals == []
    assert restored == AlertBrief.of(alert(1)).event()


# --- notes never reach the notification state ---------------------------------------------


def test_a_thousand_longest_notes_leave_the_notification_state_bounded(tree: RoutingTree) -> None:
    planner = Planner(tree)
    state = DistrictNotify("339901")
    red = alert(1, grade=1, colour="red")
    planner.on_alert(state, red, 0.0)
    sizes = {}
    for n in range(1, 1001):
        planner.on_alert(state, noted(red, n), float(n) / 1000)
        if n in (100, 1000):
            data, dropped = state.encode()
            sizes[n] = len(data)
            assert dropped == []
    print(f"notify-groups value after 100 and 1,000 notes: {sizes}")
    assert sizes[1000] < 8 * 1024 < STATE_MAX_BYTES
    assert sizes[1000] - sizes[100] <= 8  # only the sequence number's bytes
    # the escalation sends the alert as it is now, without any note
    notes, actions = planner.due(state, 61.0)
    (escalation,) = [n for n in notes if n.reason.startswith("escalation")]
    (shown,) = escalation.alerts
    assert shown.sequence == 1001 and shown.actions == []
    assert LONGEST_NOTE not in escalation.to_json().decode()
    assert [a.action for a in actions] == ["escalate"]


# --- a storm --------------------------------------------------------------------------------


def storm(tree: RoutingTree, count: int = 5000) -> tuple[Planner, DistrictNotify]:
    planner = Planner(tree)
    state = DistrictNotify("339901")
    for n in range(count):
        planner.on_alert(state, alert(n), 0.0)
    return planner, state


def test_a_storm_of_5000_alerts_in_one_group_stays_under_the_bound(tree: RoutingTree) -> None:
    planner, state = storm(tree)
    data, dropped = state.encode()
    print(f"5,000 alerts routed to one group: notify-groups value {len(data)} bytes")
    assert dropped == [] and len(data) <= STATE_MAX_BYTES
    (group,) = state.groups.values()
    assert len(group.listed) == MAX_NOTIFIED and len(group.others) == notify.MAX_COUNTED
    assert len(state.escalations) <= MAX_ESCALATING
    assert set(state.briefs) == group.listed | set(state.escalations)
    assert len(state.seen) <= notify.MAX_SEEN
    (note,), _ = planner.due(state, 10.0)
    assert covered(note) == 5000 and len(note.alerts) == MAX_NOTIFIED
    assert len(note.to_json()) < 256 * 1024  # the outbox record
    # the end of each alert is counted, tracked or not
    for n in range(0, 5000, 2):
        planner.on_alert(state, alert(n, sequence=2, status="resolved"), 11.0)
    (note,), _ = planner.due(state, 20.0)
    assert note.status == "firing" and covered(note) == 100 + 1000 + 1950
    assert len(group.listed) + len(group.others) + group.overflow == 2500  # still firing


def test_a_storm_over_a_tight_bound_is_shrunk_with_reasons_and_still_notified(
    tree: RoutingTree,
) -> None:
    planner, state = storm(tree)
    bound = 4 * 1024  # (the storm's value is about 8 KB compressed)
    data, dropped = state.encode(bound)
    print(f"5,000 alerts over a {bound}-byte bound: {len(data)} bytes; {dropped}")
    assert len(data) <= bound
    assert dropped[0].endswith(f"over the bound of {bound:,}")
    assert any("without tracking them" in r for r in dropped)
    assert dropped[-1] == f"written at {len(data):,} bytes"
    restored = DistrictNotify.loads(data)
    (note,), _ = planner.due(restored, 10.0)
    assert covered(note) == 5000  # counted on, as overflow
    planner.on_alert(restored, alert(9999, grade=1, colour="red"), 11.0)  # and it goes on


def test_untracked_alerts_are_counted_once_and_their_end_takes_them_off(
    tree: RoutingTree, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(notify, "MAX_NOTIFIED", 2)
    monkeypatch.setattr(notify, "MAX_COUNTED", 2)
    planner, state = storm(tree, 6)
    (group,) = state.groups.values()
    assert (len(group.listed), len(group.others), group.overflow) == (2, 2, 2)
    planner.on_alert(
        state, alert(5, sequence=2, grade=2, colour="orange"), 1.0
    )  # an update: no new count
    assert group.overflow == 2
    planner.on_alert(state, alert(5, sequence=3, status="resolved"), 2.0)
    assert group.overflow == 1
    for n in range(4):  # every tracked alert ends: the storm is over
        planner.on_alert(state, alert(n, sequence=2, status="resolved"), 3.0)
    (note,), _ = planner.due(state, 10.0)
    assert note.status == "firing" and note.truncated_alerts == 3  # 2 counted, 1 untracked
    assert state.groups == {} and state.briefs.keys() == state.escalations.keys()


def test_groups_beyond_the_limit_share_one_group_per_route(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(notify, "MAX_GROUPS", 2)
    planner = Planner(routes(tmp_path, group_by="[district, rule]"))
    state = DistrictNotify("339901")
    for n in range(5):
        planner.on_alert(
            state, alert(n, evidence=alert(n).evidence.model_copy(update={"rule": f"r{n}"})), 0.0
        )
    assert len(state.groups) == 3
    spill = next(g for k, g in state.groups.items() if 'overflow="true"' in k)
    assert spill.listed == {alert(n).alert_id for n in (2, 3, 4)}
    # an alert in the shared group ends there, even once there is room again
    del state.groups[next(k for k in state.groups if "r0" in k)]
    planner.on_alert(
        state,
        alert(
            3,
            sequence=2,
            status="resolved",
            evidence=alert(3).evidence.model_copy(update={"rule": "r3"}),
        ),
        1.0,
    )
    assert spill.listed == {alert(n).alert_id for n in (2, 3, 4)}  # sent as resolved, then gone
    (_, note), _ = planner.due(state, 10.0)
    assert note.group_key == spill.key and note.status == "firing"
    assert alert(3).alert_id not in spill.listed


# --- identity and memory ------------------------------------------------------------------


def test_notification_ids_depend_only_on_receiver_group_and_alert_events(
    tree: RoutingTree,
) -> None:
    def ids() -> list[str]:
        planner, state = storm(tree, 300)
        for n in range(0, 300, 3):
            planner.on_alert(state, alert(n, sequence=2, status="resolved"), 5.0)
        return [n.notification_id for n in planner.due(state, 10.0)[0]]

    first = ids()
    assert first and first == ids()


def test_an_event_read_again_changes_nothing_and_a_brief_goes_with_its_last_reference(
    tree: RoutingTree,
) -> None:
    planner = Planner(tree)
    state = DistrictNotify("339901")
    planner.on_alert(state, alert(1), 0.0)
    planner.on_alert(state, alert(1, sequence=2, workflow="acknowledged"), 0.5)
    before = state.dumps()
    planner.on_alert(state, alert(1), 0.7)  # read again after a restart
    assert state.dumps() == before
    assert set(state.briefs) == {alert(1).alert_id} and state.escalations == {}
    planner.on_alert(state, alert(1, sequence=3, status="resolved"), 1.0)
    planner.due(state, 10.0)  # the group is sent, with the resolution, and is over
    assert state.groups == {} and state.briefs == {}
    assert list(state.seen) == [alert(1).alert_id] and state.planned(alert(1).alert_id) == 3


LEGACY = (
    "gAWVCAcAAAAAAACMDnN0cmVhbXMubm90aWZ5lIwORGlzdHJpY3ROb3RpZnmUk5QpgZR9lCiMCGRpc3RyaWN0lIwGMzM5OTAx"
    "lIwGZ3JvdXBzlH2UjAlyb3V0ZS1rZXmUaACMBUdyb3VwlJOUKYGUfZQojANrZXmUaAmMBXJvdXRllIwDb3BzlIwIcmVjZWl2"
    "ZXKUaBCMBmxhYmVsc5R9lGgFaAZzjAdjcmVhdGVklEdAj0AAAAAAAIwGYWxlcnRzlH2UjAhsZWdhY3ktMZSMD3N0cmVhbXMu"
    "c2NoZW1hc5SMCkFsZXJ0RXZlbnSUk5QpgZR9lCiMCF9fZGljdF9flH2UKIwIYWxlcnRfaWSUaBeMC2ZpbmdlcnByaW50lIwG"
    "bGVnYWN5lIwIc2VxdWVuY2WUSwKMBnN0YXR1c5RoGIwLQWxlcnRTdGF0dXOUk5SMB3VwZGF0ZWSUhZRSlIwFZ3JhZGWUaBiM"
    "BUdyYWRllJOUSwGFlFKUjAZjb2xvdXKUjANyZWSUjARraW5klGgYjAlBbGVydEtpbmSUk5SMBWFsYXJtlIWUUpRoBWgGjAZz"
    "dHJlZXSUjAkzMzk5MDEwMDGUjAZkb21haW6UjAtlbnZpcm9ubWVudJSMCmluZGljYXRvcnOUXZSMCGlvdC5wbTI1lGGMCmRl"
    "cGFydG1lbnSUaDmMDmNvX2RlcGFydG1lbnRzlF2UjAdzaGFyaW5nlIwOc3RyZWFtcy5jb25maWeUjAdTaGFyaW5nlJOUjApu"
    "b3Rfc2hhcmVklIWUUpSMCGV2aWRlbmNllGgYjAhFdmlkZW5jZZSTlCmBlH2UKGgdfZQojARydWxllIwXZW52aXJvbm1lbnQu"
    "cG0yNS5tZWFuMTWUjAd2ZXJzaW9ulIwCdjGUjAhvYnNlcnZlZJRHQHLAAAAAAACMCWFnZ3JlZ2F0ZZROjAx3aW5kb3dfc3Rh"
    "cnSUTowKd2luZG93X2VuZJROjAl0aHJlc2hvbGSUR0BvQAAAAAAAjAhiYXNlbGluZZROjAVzY29yZZROjAhmb3JlY2FzdJRO"
    "jAZ2YWx1ZXOUXZRoGIwNRXZpZGVuY2VQb2ludJSTlCmBlH2UKGgdfZQojAR0aW1llIwIZGF0ZXRpbWWUjAhkYXRldGltZZST"
    "lEMKB+oLGAgAAAAAAJRoYYwIdGltZXpvbmWUk5RoYYwJdGltZWRlbHRhlJOUSwBLAEsAh5RSlIWUUpSGlFKUjAV2YWx1ZZRH"
    "QHLAAAAAAAB1jBJfX3B5ZGFudGljX2V4dHJhX1+UTowXX19weWRhbnRpY19maWVsZHNfc2V0X1+Uj5QoaGBob5CMFF9fcHlk"
    "YW50aWNfcHJpdmF0ZV9flE51YmGMB21lbWJlcnOUXZSMBmRldGFpbJROdWhwTmhxj5QoaFloUWhPaFVoTZBoc051YowKZmly"
    "c3Rfc2VlbpRobowLbGFzdF91cGRhdGWUaG6MCmV2ZW50X3RpbWWUaG6MC2hlYWRsaW5lX3polIwq5rGf5ruo5Yy6UE0yLjXm"
    "tZPluqbnuqLoibLlkYrorabvvIhJ57qn77yJlIwLaGVhZGxpbmVfZW6UjDFKaWFuZ2JpbjogUE0yLjUgY29uY2VudHJhdGlv"
    "biByZWQgYWxhcm0gKGdyYWRlIEkplIwId29ya2Zsb3eUaBiMCFdvcmtmbG93lJOUjARvcGVulIWUUpSMB2FjdGlvbnOUXZRo"
    "GIwMQWN0aW9uUmVjb3JklJOUKYGUfZQoaB19lCiMCWFjdGlvbl9pZJSMAmExlIwGYWN0aW9ulIwEbm90ZZSMBWFjdG9ylIwH"
    "d2FuZy5saZSMBHJvbGWUjAhvcGVyYXRvcpSMAmF0lGhuaD1OaI+MeOaXp+eahOWkh+azqOaXp+eahOWkh+azqOaXp+eahOWk"
    "h+azqOaXp+eahOWkh+azqOaXp+eahOWkh+azqOaXp+eahOWkh+azqOaXp+eahOWkh+azqOaXp+eahOWkh+azqOaXp+eahOWk"
    "h+azqOaXp+eahOWkh+azqJR1aHBOaHGPlChokGiUaJJojmiPaIyQaHNOdWJhjAxpbmhpYml0ZWRfYnmUTowLc2lsZW5jZWRf"
    "YnmUTnVocE5ocY+UKGh9aD1ohWgjaCJoMGgfaEdoe2h6aHloLmgpaDZoBWg4aCBoeGg6kGhzTnVic4wGb3RoZXJzlH2UjAhs"
    "ZWdhY3ktMpRLA0sEiYeUc4wNY2hhbmdlZF9zaW5jZZRHQI9IAAAAAACMCWxhc3Rfc2VudJROdWJzjAtlc2NhbGF0aW9uc5R9"
    "lGgXaACMB1BlbmRpbmeUk5QpgZR9lCiMBWFsZXJ0lGgbjAVsZXZlbJRoNowDZHVllEdAn0AAAAAAAHVic4wEc2VlbpR9lCho"
    "F0sCaJxLBHV1Yi4="
)


def test_a_value_pickled_before_briefs_migrates_into_briefs() -> None:
    """A ``notify-groups`` value of the earlier layout (whole alerts, notes and all)."""
    state = notify_from_pickle(base64.b64decode(LEGACY))
    (group,) = state.groups.values()
    assert group.listed == {"legacy-1"} and group.overflow == 0
    assert set(state.briefs) == {"legacy-1"} and set(state.escalations) == {"legacy-1"}
    slim = state.briefs["legacy-1"].event()
    assert slim.actions == [] and slim.evidence.values == [] and slim.sequence == 2
    assert state.planned("legacy-2") == 4 and state.seen == {}


def test_payloads_of_slim_alerts_keep_what_receivers_read(tree: RoutingTree) -> None:
    planner, state = storm(tree, 3)
    (note,), _ = planner.due(state, 10.0)
    for fmt in ("native", "alertmanager", "dingtalk", "wecom", "slack"):
        ((body, _),) = render_all(
            fmt,
            note.alerts,
            city=CFG,
            group_key=note.group_key,
            receiver="ops",
            console_url="http://127.0.0.1:6066",
        )
        assert "PM2.5" in body.decode() or "pm25" in body.decode(), fmt
    native = orjson.loads(
        render_all(
            "native", note.alerts, city=CFG, group_key="g", receiver="ops", console_url="http://c"
        )[0][0]
    )
    first = native["alerts"][0]
    assert first["evidence"]["observed"] and first["evidence"]["threshold"] == 115.0
    assert "actions" not in first or first["actions"] == []


# --- inhibition ------------------------------------------------------------------------------


def test_a_red_alert_holds_back_its_domains_lower_grades_until_it_ends(tree: RoutingTree) -> None:
    planner = Planner(tree)
    state = DistrictNotify("339901")
    yellow, red = alert(1), alert(2, grade=1, colour="red")
    planner.on_alert(state, yellow, 0.0)
    assert state.listed(yellow.alert_id) and yellow.alert_id in state.escalations
    # the red alert opens: the yellow one leaves its group and stops climbing
    planner.on_alert(state, red, 0.5)
    assert not state.listed(yellow.alert_id) and yellow.alert_id not in state.escalations
    assert set(state.inhibited) == {yellow.alert_id}
    # a new lower grade of the same domain waits too; another domain's does not
    planner.on_alert(state, alert(3, grade=2, colour="orange"), 0.6)
    fire = alert(4, domain="fire", indicators=["fire.smoke_alarms"])
    planner.on_alert(state, fire, 0.6)
    assert set(state.inhibited) == {yellow.alert_id, alert(3).alert_id}
    assert state.listed(fire.alert_id) and state.listed(red.alert_id)
    notes, _ = planner.due(state, 5.0)
    sent = {a.alert_id for n in notes for a in n.alerts}
    assert sent == {red.alert_id, fire.alert_id}
    # the red alert resolves: both are planned as they stand, and climb again
    planner.on_alert(state, alert(2, grade=1, colour="red", sequence=2, status="resolved"), 6.0)
    assert state.inhibited == {} and state.reds == {}
    assert {yellow.alert_id, alert(3).alert_id} <= set(state.escalations)
    notes, _ = planner.due(state, 20.0)
    firing = {a.alert_id: a.sequence for n in notes for a in n.alerts if a.status != "resolved"}
    assert firing == {yellow.alert_id: 1, alert(3).alert_id: 1, fire.alert_id: 1}
    # read again after a restart, the red alert's first event holds nothing back again
    planner.on_alert(state, red, 21.0)
    assert state.inhibited == {}


def test_a_red_alert_that_comes_down_releases_and_one_that_rises_holds_back(
    tree: RoutingTree,
) -> None:
    planner = Planner(tree)
    state = DistrictNotify("339901")
    yellow, orange = alert(1), alert(2, grade=2, colour="orange")
    planner.on_alert(state, yellow, 0.0)
    planner.on_alert(state, orange, 0.0)
    planner.on_alert(state, alert(2, grade=1, colour="red", sequence=2, status="updated"), 1.0)
    assert set(state.inhibited) == {yellow.alert_id}
    planner.on_alert(state, alert(2, grade=2, colour="orange", sequence=3, status="updated"), 2.0)
    assert state.inhibited == {} and state.listed(yellow.alert_id)
