"""Appeal feedback to departments: the ledger of appeal tallies, categories ranked by
extreme emotion and volume with trends, clusters re-routed with the reason audited,
performance on appeals and the daily report (in process, no broker)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

from fastapi.testclient import TestClient

from streams.alerting.lifecycle import AlertBook
from streams.api.app import create_api
from streams.api.feedback import AppealLedger, ranked_categories
from streams.api.store import AlertStore
from streams.core.messages import (
    ActionRecord,
    AlertActionType,
    AlertEvent,
    AlertKind,
    AppealTallies,
    AppealTally,
    Evidence,
    EvidencePoint,
    Grade,
    Workflow,
)
from streams.kafka.closing import appeal_tallies_json
from streams.kafka.worker import feedback_categories
from streams.state.windows import DistrictWindows
from streams.voice.appeals import load_appeals
from tests.alerting.test_lifecycle import NAMES, action, signal
from tests.api.test_api import BOOK, CFG, PARTITIONS, Recorder, auth
from tests.api.test_auth import alert

CATEGORIES = feedback_categories(load_appeals(CFG))
OWNER = {c.code: c.department for c in CATEGORIES}
# the ledger's hours: 06:00 to 08:00 on 24 Nov 2026 (UTC), the city's 14:00 to 16:00
H0 = datetime(2026, 11, 24, 6, 0, tzinfo=UTC)


def tally(appeals: int, extreme: int = 0, repeats: int = 0, rated: int = 0, bad: int = 0):
    return AppealTally(appeals=appeals, extreme=extreme, rated=rated, bad=bad, repeats=repeats)


def window(
    minute: datetime,
    categories: dict[str, AppealTally],
    district: str = "339901",
    streets: dict[str, dict[str, AppealTally]] | None = None,
) -> AppealTallies:
    return AppealTallies(
        district=district,
        window_start=minute,
        window_end=minute + timedelta(minutes=1),
        categories=categories,
        streets=streets or {},
        closed_at=minute + timedelta(minutes=1, seconds=5),
    )


def cluster(category: str = "odour", **overrides: object) -> AlertEvent:
    """An open public-opinion cluster of ``category`` in Binjiang street, owned by the
    category's department, 7 appeals in its window."""
    values: dict[str, object] = {
        "alert_id": f"po-{category}-1",
        "fingerprint": f"po-{category}",
        "kind": AlertKind.PUBLIC_OPINION,
        "domain": "citizen",
        "indicators": [],
        "department": OWNER[category],
        "evidence": Evidence(
            rule="public_opinion.cluster",
            version="v1",
            category=category,
            values=[
                EvidencePoint(time=H0 + timedelta(minutes=m), value=v)
                for m, v in ((1, 3.0), (2, 4.0))
            ],
        ),
        "first_seen": H0 + timedelta(minutes=10),
        "last_update": H0 + timedelta(minutes=10),
        "event_time": H0 + timedelta(minutes=10),
    }
    values.update(overrides)
    return alert(**values)


def api_of(store: AlertStore) -> tuple[TestClient, Recorder]:
    recorder = Recorder()
    app = create_api(
        store,
        BOOK,
        CFG,
        recorder,
        ready=lambda: True,
        clock=lambda: H0 + timedelta(hours=3),
        categories=CATEGORIES,
    )
    return TestClient(app), recorder


def store_with(*alerts: AlertEvent, tallies: list[AppealTallies] = ()) -> AlertStore:
    store = AlertStore(partitions=PARTITIONS)
    for n, a in enumerate(alerts):
        store.add_alert(n % PARTITIONS, n, a)
    for t in tallies:
        store.add_appeal_tallies(t.to_json())
    return store


# --- what the worker publishes -------------------------------------------------------------


def test_a_closed_window_s_facets_become_its_appeal_tallies() -> None:
    w = DistrictWindows("339901")
    t0 = H0.timestamp()
    # (appeals, extreme, intensity, rated, bad, repeats), as the worker counts an appeal
    for n, (facets, counts) in enumerate(
        [
            (("odour", "odour@339901001"), (1.0, 1.0, 0.9, 0.0, 0.0, 0.0)),
            (("odour", "odour@339901001"), (1.0, 0.0, 0.4, 0.0, 0.0, 1.0)),
            (("government_service",), (1.0, 0.0, 0.2, 1.0, 1.0, 0.0)),
        ]
    ):
        assert w.add("citizen.appeals", 0.5, t0 + n)
        w.tally(t0 + n, facets, counts, None, 0.5)
    (closed,) = w.close_all()
    doc = AppealTallies.model_validate_json(appeal_tallies_json(closed, H0) or b"")
    assert doc.district == "339901" and doc.window_start == H0
    assert doc.categories == {
        "odour": tally(2, extreme=1, repeats=1),
        "government_service": tally(1, rated=1, bad=1),
    }
    assert doc.streets == {"339901001": {"odour": tally(2, extreme=1, repeats=1)}}
    # a window without appeals publishes none
    w.add("iot.pm25", 40.0, t0 + 120)
    (quiet,) = w.close_all()
    assert appeal_tallies_json(quiet, H0) is None


# --- the ledger -----------------------------------------------------------------------------


def test_the_ledger_sums_windows_by_hour_and_takes_a_window_once() -> None:
    ledger = AppealLedger()
    first = window(H0, {"odour": tally(3, extreme=1)}, streets={"339901001": {"odour": tally(2)}})
    assert ledger.add(first)
    assert not ledger.add(first)  # published again after a crash: taken once
    assert ledger.add(window(H0 + timedelta(minutes=59), {"odour": tally(4, extreme=2)}))
    assert ledger.add(window(H0 + timedelta(minutes=60), {"odour": tally(5)}))
    # an older window of the same district, read after a newer one, is a repeat too
    assert not ledger.add(window(H0 + timedelta(minutes=30), {"odour": tally(9)}))
    hour = 3600.0
    start = H0.timestamp()
    assert ledger.sums(start, start + hour, ["odour"]) == {"odour": [7, 3, 0, 0, 0]}
    assert ledger.sums(start, start + 2 * hour, ["odour"]) == {"odour": [12, 3, 0, 0, 0]}
    assert ledger.hourly(start, start + 3 * hour, "odour") == [7, 5, 0]
    assert ledger.place("339901", "339901001", "odour", start, start + hour) == [2, 0, 0, 0, 0]
    assert ledger.latest == (H0 + timedelta(minutes=61)).timestamp()


def test_the_ledger_forgets_hours_older_than_it_keeps() -> None:
    ledger = AppealLedger(keep_s=2 * 3600)
    ledger.add(window(H0, {"odour": tally(3)}))
    ledger.add(window(H0 + timedelta(hours=1), {"odour": tally(4)}))
    start = H0.timestamp()
    assert ledger.sums(start, start + 3 * 3600, ["odour"])["odour"][0] == 7
    ledger.add(window(H0 + timedelta(hours=2, minutes=30), {"noise": tally(1)}))
    # the newest window ends at 08:31: the hour from 06:00 holds appeals of the two hours
    assert ledger.sums(start, start + 3 * 3600, ["odour"])["odour"][0] == 7
    ledger.add(window(H0 + timedelta(hours=3, minutes=30), {"noise": tally(1)}))
    # now at 09:31: the hour from 06:00 is over more than two hours before it
    assert ledger.sums(start, start + 3 * 3600, ["odour"])["odour"][0] == 4


def test_categories_rank_by_extreme_share_then_volume_with_their_trend() -> None:
    ledger = AppealLedger()
    day = timedelta(hours=24)
    # the day before: odour 10 appeals, 1 extreme
    ledger.add(window(H0 - day, {"odour": tally(10, extreme=1), "noise": tally(4)}))
    ledger.add(
        window(
            H0,
            {
                "odour": tally(20, extreme=10),  # share 0.5
                "noise": tally(40, extreme=8),  # share 0.2, the most appeals
                "air": tally(3, extreme=3),  # all extreme, but too few appeals to rank by it
            },
        )
    )
    ledger.add(window(H0 + timedelta(hours=1), {"air": tally(1)}))
    env = [c for c in CATEGORIES if c.department == "environment"]
    end = H0.timestamp() + 2 * 3600
    rows = ranked_categories(ledger, env, end, 24)
    assert [r["category"] for r in rows] == ["odour", "noise", "air"]
    assert [r["rank"] for r in rows] == [1, 2, 3]
    odour = rows[0]
    assert (odour["appeals"], odour["extreme"], odour["extreme_share"]) == (20, 10, 0.5)
    assert odour["previous"]["appeals"] == 10 and odour["previous"]["extreme_share"] == 0.1
    assert odour["trend"] == {"appeals_change": 1.0, "extreme_share_change": 0.4}
    assert rows[2]["appeals"] == 4 and rows[2]["extreme_share"] == 0.75
    assert len(odour["hourly"]) == 24 and odour["hourly"][-2:] == [20, 0]
    assert rows[2]["hourly"][-2:] == [3, 1]
    assert {r["department"] for r in rows} == {"environment"}


# --- the API: a desk sees its own, refusals are audited -------------------------------------


def test_a_department_is_fed_back_only_its_own_categories_and_clusters() -> None:
    store = store_with(
        cluster("odour"),
        cluster("road_traffic"),
        tallies=[window(H0, {"odour": tally(6, extreme=3), "road_traffic": tally(9, extreme=1)})],
    )
    api, recorder = api_of(store)
    doc = api.get("/api/v1/appeals/feedback", headers=auth("environment.desk")).json()
    assert doc["department"] == "environment"
    assert {r["category"] for r in doc["categories"]} == {
        c.code for c in CATEGORIES if c.department == "environment"
    }
    assert doc["categories"][0]["category"] == "odour"
    assert doc["categories"][0]["open_clusters"] == 1
    assert [c["alert_id"] for c in doc["clusters"]] == ["po-odour-1"]
    assert doc["clusters"][0]["appeals"] == 7
    # a cluster about one street names no others (a district's of several streets would)
    assert doc["clusters"][0]["streets"] == []
    assert recorder.audits == []

    # another department's feedback: refused, and the refusal audited
    r = api.get(
        "/api/v1/appeals/feedback",
        params={"department": "traffic"},
        headers=auth("environment.desk"),
    )
    assert r.status_code == 403
    assert "not 'traffic'" in r.json()["detail"]
    (denied,) = recorder.audits
    assert (denied.user, denied.action, denied.target) == (
        "environment.desk",
        "denied",
        "department/traffic",
    )
    # an operator sees any department's, or the whole city's
    whole = api.get("/api/v1/appeals/feedback", headers=auth("cc.duty")).json()
    assert len(whole["categories"]) == len(CATEGORIES)
    assert {c["alert_id"] for c in whole["clusters"]} == {"po-odour-1", "po-road_traffic-1"}
    # an area office and the public see none
    for user in ("jiangbin.district", "public.dashboard", "fire.jiangbin-station"):
        assert api.get("/api/v1/appeals/feedback", headers=auth(user)).status_code == 403


def test_a_department_re_routes_its_own_cluster_with_the_reason_audited() -> None:
    store = store_with(cluster("odour"), cluster("road_traffic"))
    api, recorder = api_of(store)
    body = {"action": "reroute", "department": "sanitation", "note": "a refuse depot's smell"}
    r = api.post("/api/v1/alerts/po-odour-1/actions", json=body, headers=auth("environment.desk"))
    assert r.status_code == 202, r.text
    (sent,) = recorder.actions
    assert (sent.action, sent.department, sent.actor) == (
        AlertActionType.REROUTE,
        "sanitation",
        "environment.desk",
    )
    (audit,) = recorder.audits
    assert audit.action == "reroute" and audit.target == "po-odour-1"
    assert audit.detail == "re-routed from environment to sanitation: a refuse depot's smell"

    # not its cluster: refused and audited, nothing published
    r = api.post(
        "/api/v1/alerts/po-road_traffic-1/actions", json=body, headers=auth("environment.desk")
    )
    assert r.status_code == 403
    assert recorder.audits[-1].action == "denied"
    assert recorder.audits[-1].target == "po-road_traffic-1"
    assert len(recorder.actions) == 1

    # a reason and another department are needed; an area office may not re-route
    for bad, why in (
        ({"action": "reroute", "department": "sanitation"}, "needs a note"),
        ({"action": "reroute", "note": "not ours"}, "needs a department"),
        ({**body, "department": "environment"}, "already 'environment'"),
        ({**body, "department": "bakery"}, "is not one of"),
    ):
        r = api.post("/api/v1/alerts/po-odour-1/actions", json=bad, headers=auth("cc.duty"))
        assert r.status_code == 400 and why in r.json()["detail"], (bad, r.text)
    r = api.post("/api/v1/alerts/po-odour-1/actions", json=body, headers=auth("jiangbin.district"))
    assert r.status_code == 403
    assert len(recorder.actions) == 1


def test_a_co_handler_may_not_re_route_the_owner_s_cluster() -> None:
    store = store_with(cluster("odour", co_departments=["traffic"]))
    api, recorder = api_of(store)
    body = {"action": "reroute", "department": "water", "note": "x"}
    r = api.post("/api/v1/alerts/po-odour-1/actions", json=body, headers=auth("traffic.desk"))
    assert r.status_code == 403 and recorder.actions == []
    # but it may work the cluster
    ack = {"action": "acknowledge"}
    r = api.post("/api/v1/alerts/po-odour-1/actions", json=ack, headers=auth("traffic.desk"))
    assert r.status_code == 202


# --- the lifecycle applies a re-route ---------------------------------------------------------


def test_a_re_route_moves_the_alert_and_later_signals_keep_its_new_owner() -> None:
    book = AlertBook("339901")
    first = dataclasses.replace(signal(), co_departments=("sanitation", "command_centre"))
    (fired,) = book.apply(first, NAMES)
    (acked,) = book.act(action(AlertActionType.ACKNOWLEDGE, fired, 1), NAMES)
    assert acked.workflow is Workflow.ACKNOWLEDGED
    move = action(AlertActionType.REROUTE, fired, 2, department="sanitation", note="refuse depot")
    (moved,) = book.act(move, NAMES)
    assert moved.department == "sanitation"
    # the new owner starts from an open alert; the refusing department co-handles nothing
    assert moved.workflow is Workflow.OPEN
    assert moved.co_departments == ["command_centre"]
    assert moved.actions[-1].action == "reroute" and moved.actions[-1].note == "refuse depot"
    # the condition worsens: the signal still names the catalogue's owner
    worse = dataclasses.replace(first, grade=Grade.II, at=first.at + 60)
    (updated,) = book.apply(worse, NAMES)
    assert updated.department == "sanitation"
    assert updated.co_departments == ["command_centre"]
    assert updated.grade is Grade.II


# --- performance on appeals and the daily report ------------------------------------------------


def test_performance_counts_handled_clusters_time_to_handle_and_repeats_after() -> None:
    handled_at = H0 + timedelta(minutes=40)
    resolved = cluster(
        "odour",
        workflow=Workflow.RESOLVED,
        actions=[
            ActionRecord(
                action_id="r1",
                action="resolve",
                actor="environment.desk",
                role="department",
                at=handled_at,
            )
        ],
    )
    street = {"339901001": {"odour": tally(4, repeats=1)}}
    tallies = [
        window(
            H0 + timedelta(minutes=5),
            {"odour": tally(7)},
            streets={"339901001": {"odour": tally(7, repeats=3)}},
        ),
        # after the hour it was handled in: 4 appeals about the place, 1 of them a repeat
        window(H0 + timedelta(minutes=70), {"odour": tally(4)}, streets=street),
        # the next day: outside the 24 h after handling
        window(H0 + timedelta(hours=25), {"odour": tally(4)}, streets=street),
    ]
    open_one = cluster("noise", alert_id="po-noise-1")
    store = store_with(resolved, open_one, tallies=tallies)
    api, _ = api_of(store)
    doc = api.get(
        "/api/v1/appeals/feedback",
        params={"end": (H0 + timedelta(hours=2)).isoformat()},
        headers=auth("environment.desk"),
    ).json()
    assert doc["performance"] == {
        "clusters": 2,
        "handled": 1,
        "rerouted_away": 0,
        "appeals_handled": 7,
        "median_handle_s": 1800.0,
        "appeals_after_handling": 4,
        "repeats_after_handling": 1,
        "repeat_share_after_handling": 0.25,
    }
    assert [c["alert_id"] for c in doc["clusters"]] == ["po-noise-1"]  # open ones only
    # department performance carries the same figures, each department its own
    mine = api.get("/api/v1/performance", headers=auth("environment.desk")).json()
    assert mine["appeals"] == [{"department": "environment", **doc["performance"]}]
    every = api.get("/api/v1/performance", headers=auth("cc.duty")).json()["appeals"]
    assert [row["department"] for row in every] == ["environment"]
    assert api.get("/api/v1/performance", headers=auth("traffic.desk")).json()["appeals"] == []


def test_the_daily_report_covers_one_day_of_the_city_s_calendar() -> None:
    # 24 Nov in Shanghai: 23 Nov 16:00 to 24 Nov 16:00 UTC
    tallies = [
        window(datetime(2026, 11, 23, 15, 0, tzinfo=UTC), {"odour": tally(50, extreme=40)}),
        window(H0, {"odour": tally(6, extreme=3), "noise": tally(10, extreme=1)}),
    ]
    store = store_with(cluster("odour"), tallies=tallies)
    api, _ = api_of(store)
    r = api.get(
        "/api/v1/appeals/report", params={"day": "2026-11-24"}, headers=auth("environment.desk")
    )
    doc = r.json()
    assert doc["day"] == "2026-11-24" and doc["timezone"] == "Asia/Shanghai"
    assert doc["span"]["start"] == "2026-11-23T16:00:00Z"
    assert doc["span"]["end"] == "2026-11-24T16:00:00Z"
    rows = {row["category"]: row for row in doc["categories"]}
    assert rows["odour"]["appeals"] == 6 and rows["odour"]["previous"]["appeals"] == 50
    assert [row["category"] for row in doc["categories"]][:2] == ["odour", "noise"]
    assert [c["alert_id"] for c in doc["clusters"]] == ["po-odour-1"]
    assert doc["rerouted"] == []
    # with no day: the day of the newest tallies
    assert api.get("/api/v1/appeals/report", headers=auth("environment.desk")).json()["day"] == (
        "2026-11-24"
    )
    r = api.get(
        "/api/v1/appeals/report", params={"day": "24/11/2026"}, headers=auth("environment.desk")
    )
    assert r.status_code == 400 and "YYYY-MM-DD" in r.json()["detail"]


def test_the_report_lists_what_the_department_re_routed_that_day_with_the_reason() -> None:
    first = cluster("odour")
    record = ActionRecord(
        action_id="rr1",
        action="reroute",
        actor="environment.desk",
        role="department",
        at=H0 + timedelta(minutes=20),
        department="sanitation",
        note="the refuse depot's",
    )
    moved = first.model_copy(
        update={
            "sequence": 2,
            "department": "sanitation",
            "actions": [record],
            "last_update": H0 + timedelta(minutes=20),
        }
    )
    api, _ = api_of(store_with(first, moved))
    doc = api.get(
        "/api/v1/appeals/report", params={"day": "2026-11-24"}, headers=auth("environment.desk")
    ).json()
    assert doc["clusters"] == []
    assert doc["rerouted"] == [
        {
            "alert_id": "po-odour-1",
            "category": "odour",
            "district": "339901",
            "street": "339901001",
            "headline_zh": first.headline_zh,
            "headline_en": first.headline_en,
            "at": "2026-11-24T06:20:00Z",
            "by": "environment.desk",
            "to": "sanitation",
            "reason": "the refuse depot's",
        }
    ]
    assert doc["performance"]["rerouted_away"] == 1
    # the day after: nothing re-routed
    after = api.get(
        "/api/v1/appeals/report", params={"day": "2026-11-25"}, headers=auth("environment.desk")
    ).json()
    assert after["rerouted"] == [] and after["performance"]["rerouted_away"] == 0
    # sanitation's desk now owns it, and its report lists it as its cluster
    theirs = api.get("/api/v1/appeals/feedback", headers=auth("environment.desk")).json()[
        "clusters"
    ]
    assert theirs == []
