"""The command-centre API in process: authentication, scopes on lists, details, actions and the live stream."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.alerting.lifecycle import MAX_ACTIONS, AlertBook, Names
from streams.api.alerts import events as _events
from streams.api.app import create_api
from streams.api.auth import Principal, TokenBook, load_roles
from streams.api.store import AlertFilter, AlertStore, format_cursor, is_open, parse_cursor
from streams.core.config import DEFAULT_CONFIG_DIR, load_config
from streams.core.messages import (
    ActionRecord,
    AlertAction,
    AlertEvent,
    AlertKind,
    AlertStatus,
    AuditRecord,
    Evidence,
    Grade,
    Workflow,
)
from streams.notify.respond import LinkSigner
from tests.api.test_auth import alert

CFG = load_config()
NOW = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)
BOOK: TokenBook = load_roles(DEFAULT_CONFIG_DIR / "roles.yaml", CFG)
TOKENS = {user: BOOK.issue(user) for user in BOOK.users}
EXPIRED = BOOK.issue("cc.duty", timedelta(minutes=5), now=NOW - timedelta(hours=1))
PARTITIONS = 8


class Recorder:
    """Publisher that keeps what the API publishes."""

    def __init__(self) -> None:
        self.actions: list[AlertAction] = []
        self.audits: list[AuditRecord] = []

    async def action(self, action: AlertAction) -> None:
        self.actions.append(action)

    async def audit(self, record: AuditRecord) -> None:
        self.audits.append(record)


def client(store: AlertStore) -> tuple[TestClient, Recorder]:
    recorder = Recorder()
    api = create_api(store, BOOK, CFG, recorder, ready=lambda: True, clock=lambda: NOW)
    return TestClient(api), recorder


def auth(user: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[user]}"}


def stored(*alerts: AlertEvent) -> AlertStore:
    store = AlertStore(partitions=PARTITIONS)
    for n, a in enumerate(alerts):
        store.add_alert(n % PARTITIONS, n, a)
    return store


# --- authentication -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "detail"),
    [
        ({}, "no bearer token given"),
        ({"Authorization": "Bearer cv_forged-token-that-was-never-issued"}, "unknown token"),
        ({"Authorization": "Basic dXNlcjpwYXNz"}, "no bearer token given"),
        ({"Authorization": f"Bearer {EXPIRED}"}, "token expired at 2026-11-24T07:05:00Z"),
    ],
    ids=["missing", "forged", "not-bearer", "expired"],
)
def test_requests_without_a_valid_token_are_refused_with_401_and_the_reason(
    headers: dict[str, str], detail: str
) -> None:
    api, recorder = client(stored(alert()))
    for path in ("/api/v1/me", "/api/v1/alerts", "/api/v1/stream", "/api/v1/districts"):
        r = api.get(path, headers=headers)
        assert r.status_code == 401, path
        assert r.json() == {"error": "unauthorized", "detail": detail}
        assert r.headers["www-authenticate"].startswith("Bearer")
    assert recorder.actions == []


def test_the_event_source_may_authenticate_with_an_access_token_parameter() -> None:
    api, _ = client(stored())
    r = api.get("/api/v1/me", params={"access_token": TOKENS["traffic.desk"]})
    assert r.status_code == 200
    assert r.json()["role"] == "department" and r.json()["department"] == "traffic"


def test_health_and_metrics_need_no_token() -> None:
    api, _ = client(stored())
    assert api.get("/healthz").json() == {"status": "ok"}
    assert api.get("/readyz").json() == {"ready": True}
    assert b"cityvitals_alerts_alert_events_total" in api.get("/metrics").content


def test_the_openapi_document_describes_every_route() -> None:
    api, _ = client(stored())
    paths = api.get("/openapi.json").json()["paths"]
    assert {
        "/api/v1/me",
        "/api/v1/catalogue",
        "/api/v1/alerts",
        "/api/v1/alerts/{alert_id}",
        "/api/v1/alerts/{alert_id}/actions",
        "/api/v1/districts",
        "/api/v1/stream",
        "/api/v1/performance",
        "/api/v1/audit",
    } <= set(paths)


# --- scopes -------------------------------------------------------------------------------

DEPARTMENTS = sorted(CFG.catalogue.departments)
PLACES = [(d.code, s.code) for d in CFG.city.districts for s in d.streets[:2]]

alerts_strategy = st.lists(
    st.builds(
        lambda n, place, street_scoped, dept, co, dispatched, status, workflow, grade: alert(
            alert_id=f"fp{n:04d}-1795999500",
            fingerprint=f"fp{n:04d}",
            district=place[0],
            street=place[1] if street_scoped else None,
            department=dept,
            co_departments=co,
            actions=[
                ActionRecord(
                    action_id=f"d{n}",
                    action="dispatch",
                    actor="cc.duty",
                    role="operator",
                    at=NOW,
                    department=dispatched,
                )
            ]
            if dispatched
            else [],
            status=status,
            workflow=workflow,
            grade=grade,
        ),
        n=st.integers(0, 9999),
        place=st.sampled_from(PLACES),
        street_scoped=st.booleans(),
        dept=st.sampled_from(DEPARTMENTS),
        co=st.lists(st.sampled_from(DEPARTMENTS), max_size=2, unique=True),
        dispatched=st.one_of(st.none(), st.sampled_from(DEPARTMENTS)),
        status=st.sampled_from(list(AlertStatus)),
        workflow=st.sampled_from(list(Workflow)),
        grade=st.sampled_from(list(Grade)),
    ),
    max_size=25,
    unique_by=lambda a: a.alert_id,
)


def stream_ids(store: AlertStore, who: Principal) -> list[str]:
    """Ids of the events the live stream gives this caller, replaying the store from its start."""

    async def collect() -> list[str]:
        out: list[str] = []

        async def gone() -> bool:
            return True  # the client leaves once the backlog is sent

        async for chunk in _events(store, who, AlertFilter(), {}, gone):
            for line in chunk.decode().splitlines():
                if line.startswith("data: "):
                    out.append(AlertEvent.model_validate_json(line[6:]).alert_id)
        return out

    return asyncio.run(collect())


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(alerts=alerts_strategy)
def test_each_role_sees_exactly_its_alerts_through_the_list_the_details_and_the_stream(
    alerts: list[AlertEvent],
) -> None:
    store = stored(*alerts)
    api, _ = client(store)
    for user in BOOK.users:
        who = BOOK.principal(user)
        visible = {a.alert_id for a in alerts if who.can_see(a)}
        listed = api.get("/api/v1/alerts", headers=auth(user), params={"limit": 5000})
        if not who.may_see_alerts:
            assert listed.status_code == 403, user
            assert listed.json()["detail"] == "role open sees no alerts"
            assert api.get("/api/v1/stream", headers=auth(user)).status_code == 403
        else:
            expected = visible if who.may_list_history else {
                a.alert_id for a in alerts if who.can_see(a) and is_open(a)
            }  # fmt: skip
            assert {a["alert_id"] for a in listed.json()["alerts"]} == expected, user
            assert set(stream_ids(store, who)) == visible, user
        for a in alerts:
            r = api.get(f"/api/v1/alerts/{a.alert_id}", headers=auth(user))
            if who.may_see_alerts and a.alert_id in visible:
                assert r.status_code == 200, (user, a.alert_id)
                assert r.json()["alert"]["alert_id"] == a.alert_id
            else:
                assert r.status_code == 403, (user, a.alert_id)


def test_a_district_alert_naming_a_street_is_in_that_streets_list_and_its_office_sees_it() -> None:
    on_street = alert(alert_id="s-1", fingerprint="s", district="339902", street="339902001")
    spread = alert(
        alert_id="p-1",
        fingerprint="p",
        district="339902",
        street=None,
        kind=AlertKind.PUBLIC_OPINION,
        evidence=Evidence(
            rule="public_opinion.streets", version="v1", streets=["339902001", "339902002"]
        ),
    )
    elsewhere = alert(alert_id="o-1", fingerprint="o", district="339902", street="339902002")
    api, _ = client(stored(on_street, spread, elsewhere))
    for user in ("cc.duty", "chenghuangmiao.street"):
        listed = api.get("/api/v1/alerts", headers=auth(user), params={"street": "339902001"})
        assert sorted(a["alert_id"] for a in listed.json()["alerts"]) == ["p-1", "s-1"], user
    # the street office (of 339902001) sees the district's alert without a filter too
    mine = api.get("/api/v1/alerts", headers=auth("chenghuangmiao.street")).json()["alerts"]
    assert sorted(a["alert_id"] for a in mine) == ["p-1", "s-1"]


def test_the_list_filters_and_orders_by_grade_then_newest() -> None:
    store = stored(
        alert(alert_id="a-1", fingerprint="a", grade=Grade.III, last_update=NOW),
        alert(alert_id="b-1", fingerprint="b", grade=Grade.I, last_update=NOW - timedelta(hours=1)),
        alert(
            alert_id="c-1", fingerprint="c", grade=Grade.III, last_update=NOW + timedelta(minutes=1)
        ),
        alert(alert_id="d-1", fingerprint="d", grade=Grade.II, district="339902", street=None),
    )
    api, _ = client(store)
    ids = [
        a["alert_id"] for a in api.get("/api/v1/alerts", headers=auth("cc.duty")).json()["alerts"]
    ]
    assert ids == ["b-1", "d-1", "c-1", "a-1"]
    only = api.get(
        "/api/v1/alerts", headers=auth("cc.duty"), params=[("grade", "I"), ("grade", "2")]
    ).json()["alerts"]
    assert [a["alert_id"] for a in only] == ["b-1", "d-1"]
    in_district = api.get("/api/v1/alerts", headers=auth("cc.duty"), params={"district": "339902"})
    assert [a["alert_id"] for a in in_district.json()["alerts"]] == ["d-1"]
    bad = api.get("/api/v1/alerts", headers=auth("cc.duty"), params={"grade": "V"})
    assert bad.status_code == 400
    assert bad.json() == {
        "error": "bad_request",
        "detail": "grade 'V' is not one of I, II, III, IV (or 1-4)",
    }
    kind = api.get("/api/v1/alerts", headers=auth("cc.duty"), params={"kind": "rumour"})
    assert kind.status_code == 422 and kind.json()["error"] == "invalid_request"
    assert kind.json()["detail"].startswith("query.kind: ")


def test_a_responder_may_not_list_history_and_sees_only_its_open_routed_alerts() -> None:
    routed = alert(alert_id="r-1", fingerprint="r", department="fire")
    closed = alert(alert_id="r-2", fingerprint="r2", department="fire", status=AlertStatus.RESOLVED)
    api, recorder = client(stored(routed, closed))
    for params in ({"open": "false"}, {"status": "resolved"}, {"since": "2026-11-24T00:00:00Z"}):
        r = api.get("/api/v1/alerts", headers=auth("fire.jiangbin-station"), params=params)
        assert r.status_code == 403, params
        assert r.json()["detail"] == "role responder may not list alert history"
    listed = api.get("/api/v1/alerts", headers=auth("fire.jiangbin-station")).json()["alerts"]
    assert [a["alert_id"] for a in listed] == ["r-1"]
    assert [a.action for a in recorder.audits] == ["denied", "denied", "denied"]


# --- actions --------------------------------------------------------------------------------


def test_an_action_is_published_with_the_caller_and_audited() -> None:
    api, recorder = client(stored(alert()))
    r = api.post(
        "/api/v1/alerts/fp0001-1795999500/actions",
        headers=auth("cc.duty"),
        json={"action": "dispatch", "department": "fire", "note": "engine 3"},
    )
    assert r.status_code == 202
    (action,) = recorder.actions
    assert r.json()["action"]["action_id"] == action.action_id
    assert (action.alert_id, action.district, action.action.value) == (
        "fp0001-1795999500",
        "339901",
        "dispatch",
    )
    assert (action.actor, action.role, action.department, action.note, action.at) == (
        "cc.duty",
        "operator",
        "fire",
        "engine 3",
        NOW,
    )
    assert [(a.user, a.action, a.target) for a in recorder.audits] == [
        ("cc.duty", "dispatch", "fp0001-1795999500")
    ]


@pytest.mark.parametrize(
    ("user", "body", "status", "detail"),
    [
        (
            "fire.jiangbin-station",
            {"action": "resolve"},
            403,
            "fire.jiangbin-station (responder) may not resolve alert fp0001-1795999500",
        ),
        (
            "traffic.desk",
            {"action": "acknowledge"},
            403,
            "alert fp0001-1795999500 is outside the scope of traffic.desk",
        ),
        ("cc.duty", {"action": "dispatch"}, 400, "dispatch needs a department"),
        (
            "cc.duty",
            {"action": "dispatch", "department": "mars"},
            400,
            "department 'mars' is not one of",
        ),
        ("cc.duty", {"action": "silence"}, 400, "silence needs silence_s (seconds)"),
        ("cc.duty", {"action": "note"}, 400, "note needs a note"),
    ],
)
def test_actions_outside_scope_or_incomplete_are_refused_and_nothing_is_published(
    user: str, body: dict[str, Any], status: int, detail: str
) -> None:
    api, recorder = client(stored(alert()))
    r = api.post("/api/v1/alerts/fp0001-1795999500/actions", headers=auth(user), json=body)
    assert r.status_code == status
    assert detail in r.json()["detail"] or detail in r.text
    assert recorder.actions == []


def test_a_responder_may_acknowledge_and_report_from_the_field() -> None:
    api, recorder = client(stored(alert()))
    for body in ({"action": "acknowledge"}, {"action": "field_report", "note": "smoke seen"}):
        r = api.post(
            "/api/v1/alerts/fp0001-1795999500/actions",
            headers=auth("fire.jiangbin-station"),
            json=body,
        )
        assert r.status_code == 202
    assert [(a.action.value, a.kind) for a in recorder.actions] == [
        ("acknowledge", "responder"),
        ("field_report", "responder"),
    ]


# --- the live stream's cursor -------------------------------------------------------------


def test_a_cursor_names_the_next_offset_of_every_partition_and_round_trips() -> None:
    assert format_cursor({0: 5, 3: 12}, 4) == "v1.5.0.0.12"
    assert parse_cursor("v1.5.0.0.12", 4) == {0: 5, 1: 0, 2: 0, 3: 12}
    for bad in ("v2.1.2.3.4", "v1.1.2", "v1.a.0.0.0", "v1.-1.0.0.0"):
        with pytest.raises(ValueError, match="cursor"):
            parse_cursor(bad, 4)


def test_a_stream_resumed_from_any_cursor_gives_exactly_the_events_after_it() -> None:
    events = [
        alert(alert_id=f"x{n}-1", fingerprint=f"x{n}", sequence=1, district="339901")
        for n in range(12)
    ]
    store = AlertStore(partitions=3)
    arrivals = [(n % 3, n // 3, e) for n, e in enumerate(events)]
    for p, o, e in arrivals:
        store.add_alert(p, o, e)
    who = BOOK.principal("cc.duty")

    async def read(start: dict[int, int]) -> list[tuple[str, str]]:
        async def gone() -> bool:
            return True

        out, cursor = [], ""
        async for chunk in _events(store, who, AlertFilter(), start, gone):
            for line in chunk.decode().splitlines():
                if line.startswith("id: "):
                    cursor = line[4:]
                if line.startswith("data: "):
                    out.append((cursor, AlertEvent.model_validate_json(line[6:]).alert_id))
        return out

    everything = asyncio.run(read({}))
    assert [a for _, a in everything] == [e.alert_id for e in events]
    for k, (cursor, _) in enumerate(everything):
        rest = asyncio.run(read(parse_cursor(cursor, 3)))
        assert [a for _, a in rest] == [a for _, a in everything[k + 1 :]]


def test_a_repeated_event_after_reprocessing_is_not_a_new_event() -> None:
    store = AlertStore(partitions=1)
    first = alert()
    assert store.add_alert(0, 0, first)
    assert not store.add_alert(0, 7, first)  # the same (alert_id, sequence) read again
    assert len(store.log) == 1 and store.positions == {0: 8}
    assert store.timeline(first.alert_id) == [first]


# --- notes ----------------------------------------------------------------------------------


def test_every_note_of_a_thousand_is_in_the_alert_detail() -> None:
    """Each event carries only its own action's note; the detail gathers all of them."""
    book = AlertBook("339901")
    first = alert(grade=Grade.I, colour="red")
    book.open[first.fingerprint] = first
    store = stored(first)
    notes = [f"{n:04d}" + "现场反馈" * 999 for n in range(1000)]  # 4,000 characters each
    for n, text in enumerate(notes):
        (event,) = book.act(
            AlertAction(
                action_id=f"{n:032x}",
                alert_id=first.alert_id,
                district="339901",
                action="note",
                actor="cc.duty",
                role="operator",
                at=NOW + timedelta(seconds=n),
                note=text,
            ),
            Names(CFG),
            max_notes=len(notes),  # above the default, CITYVITALS_MAX_NOTES_PER_ALERT's
        )
        store.add_alert(0, n + 1, event)
    api, recorder = client(store)
    r = api.get(f"/api/v1/alerts/{first.alert_id}", headers=auth("cc.duty"))
    assert r.status_code == 200
    body = r.json()
    assert [a["note"] for a in body["actions"]] == notes  # every note, in order
    latest = body["alert"]
    assert latest["sequence"] == 1001 and len(latest["actions"]) == MAX_ACTIONS
    assert [a["note"] for a in latest["actions"]] == notes[-MAX_ACTIONS:]
    # the timeline as published: each event with the note of its own action only
    assert [e["actions"][-1].get("note") for e in body["timeline"][1:]] == notes
    assert all("note" not in a for e in body["timeline"] for a in e["actions"][:-1])
    assert [(a.action, a.target) for a in recorder.audits] == [("read_alert", first.alert_id)]


def test_an_alert_holding_the_most_notes_refuses_another_with_409_but_not_an_action() -> None:
    """Free text is bounded per alert, not only per request: past CITYVITALS_MAX_NOTES_PER_ALERT
    a note is refused by the API (and by the lifecycle, tests/alerting/test_lifecycle.py),
    through the console's route and a responder link alike, and nothing is published."""
    book = AlertBook("339901")
    first = alert(grade=Grade.I, colour="red")
    book.open[first.fingerprint] = first
    store = stored(first)
    for n in range(3):
        (event,) = book.act(
            AlertAction(
                action_id=f"{n:032x}",
                alert_id=first.alert_id,
                district="339901",
                action="note" if n else "field_report",
                actor="cc.duty",
                role="operator",
                at=NOW + timedelta(seconds=n),
                note=f"note {n}",
            ),
            Names(CFG),
        )
        store.add_alert(0, n + 1, event)
    signer = LinkSigner(b"k" * 32, ttl_s=3600)
    recorder = Recorder()
    api = TestClient(
        create_api(
            store,
            BOOK,
            CFG,
            recorder,
            ready=lambda: True,
            clock=lambda: NOW,
            links=signer,
            max_notes=3,
        )
    )
    link = signer.token(signer.grant(first.alert_id, "339901", "fire-desk", NOW))
    for path, body in (
        (f"/api/v1/alerts/{first.alert_id}/actions", {"action": "note", "note": "one more"}),
        (f"/api/v1/alerts/{first.alert_id}/actions", {"action": "resolve", "note": "done"}),
        (f"/api/v1/respond/{link}", {"action": "field_report", "note": "on site"}),
        (f"/api/v1/respond/{link}", {"action": "acknowledge", "note": "coming"}),
    ):
        r = api.post(path, headers=auth("cc.duty"), json=body)
        assert r.status_code == 409, (path, body)
        assert r.json()["error"] == "too_many_notes"
        assert "already holds 3 notes" in r.json()["detail"]
        assert "CITYVITALS_MAX_NOTES_PER_ALERT" in r.json()["detail"]
    assert recorder.actions == []
    for path, body in (
        (f"/api/v1/alerts/{first.alert_id}/actions", {"action": "acknowledge"}),
        (f"/api/v1/respond/{link}", {"action": "acknowledge"}),
    ):
        assert api.post(path, headers=auth("cc.duty"), json=body).status_code == 202
    assert [a.note for a in recorder.actions] == [None, None]


def test_the_terminal_feed_shows_each_note_with_the_event_it_caused() -> None:
    from streams.alerting.tail import NOTE_CHARS, render

    record = ActionRecord(
        action_id="n1", action="note", actor="cc.duty", role="operator", at=NOW,
        note="烟雾来自厨房\n第二行",
    )  # fmt: skip
    line = render(alert(sequence=2, status=AlertStatus.UPDATED, actions=[record])).plain
    assert line.endswith("note by cc.duty: 烟雾来自厨房…")
    long = record.model_copy(update={"note": "警" * 4000})
    line = render(alert(sequence=3, actions=[long])).plain
    assert line.endswith("警" * NOTE_CHARS + "…")
    earlier = record.model_copy(update={"note": None})
    assert render(alert(sequence=4, actions=[earlier])).plain.endswith("note by cc.duty")
