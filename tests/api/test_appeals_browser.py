"""A department desk works its citizens' appeals in a real browser, against a worker's API
on the broker: it sees only its own categories and clusters, re-routes a cluster that is
not its responsibility with the reason audited, is refused (and the refusal audited) on
another department's cluster, and prints its daily report.

Two clusters of appeals go through the worker: one about a smell in Binjiang street
(odour: the environment bureau's) and one about traffic in Chenghuangmiao street (roads
and traffic: the traffic bureau's). Screenshots go to ``test-artifacts/console/``.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

import orjson
import pytest

from streams.core.messages import APPEALS_TOPIC
from streams.sim.simulator import SimEvent
from tests.api.test_console_browser import ARTIFACTS, _new_page, _shot, _sign_in
from tests.browser import chromium, off_the_page_thread
from tests.harness import ApiWorker, produce, run, wait_for

if TYPE_CHECKING:
    from playwright.sync_api import Browser

pytestmark = pytest.mark.broker

DESK = "environment.desk"
CST = timezone(timedelta(hours=8))  # the city's time zone, Asia/Shanghai
REASON = "the smell comes from the refuse transfer station, not a factory"
ANGRY = (
    "小区门口的臭味太刺鼻了，非常恶心，已经投诉三次了还没人管！",
    "垃圾站的恶臭熏得孩子头疼，忍无可忍，气死人了！",
    "臭味一整天都散不掉，太恶心了，到底有没有人管？",
)
JAMMED = (
    "路口信号灯坏了，早高峰堵得一动不动，太让人气愤了！",
    "违章停车把路堵死了，救护车都过不去，非常危险！",
)


def _appeals(
    start: datetime, category: str, district: str, street: str, texts: tuple[str, ...], n: int
) -> list[SimEvent]:
    """``n`` mayor's-mailbox letters a minute apart about one place and category."""
    out = []
    for i in range(n):
        at = start + timedelta(minutes=i, seconds=10)
        payload = {
            "letter_id": f"SZXX-{category}-{i}",
            "submitted_at": at.isoformat(),
            "kind": "投诉",
            "subject": "反映问题",
            "body": texts[i % len(texts)],
            "category": category,
            "district": district,
            "street": street,
        }
        record = orjson.dumps({"channel": "mayor_mailbox", "payload": payload})
        out.append(SimEvent(APPEALS_TOPIC, district.encode(), record, at))
    return out


@pytest.fixture
def browser() -> Iterator[Browser]:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with chromium() as b:
        yield b


def _clusters(api: ApiWorker) -> dict[str, dict[str, Any]]:
    """The public-opinion clusters the operator sees, by category."""
    r = api.get("/api/v1/appeals/feedback")
    if r.status_code != 200:
        return {}
    return {c["category"]: c for c in r.json()["clusters"]}


def test_a_department_sees_its_own_categories_and_re_routes_a_cluster_with_the_reason_audited(
    api_worker: ApiWorker, browser: Browser
) -> None:
    from playwright.sync_api import expect

    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=3)
    events = sorted(
        _appeals(start, "odour", "339901", "339901001", ANGRY, 8)
        + _appeals(start, "road_traffic", "339902", "339902001", JAMMED, 8),
        key=lambda e: e.event_time,
    )
    off_the_page_thread(lambda: run(produce(api_worker.bootstrap, events)), "producing appeals")
    wait_for(
        lambda: {"odour", "road_traffic"} <= set(_clusters(api_worker)),
        180,
        "a public-opinion cluster of each category listed by the API",
    )
    clusters = _clusters(api_worker)
    odour, traffic = clusters["odour"], clusters["road_traffic"]
    assert (odour["department"], traffic["department"]) == ("environment", "traffic")

    page, errors = _new_page(browser)
    _sign_in(page, api_worker, DESK)
    nav = page.locator('#nav [data-view="appeals"]')
    expect(nav).to_be_visible()
    nav.click()
    table = page.locator("#appeals-categories")
    expect(table).to_be_visible()
    # its own categories only, the one with appeals first
    shown = table.locator("[data-category]").evaluate_all(
        "spans => spans.map(s => s.dataset.category)"
    )
    assert sorted(shown) == ["air", "noise", "odour"], shown
    assert shown[0] == "odour"
    expect(table.locator("tbody tr").first).to_contain_text("Odour")
    clusters_table = page.locator("#appeals-clusters")
    expect(clusters_table.locator("tbody tr")).to_have_count(1)
    row = clusters_table.locator(f'tr[data-cluster="{odour["alert_id"]}"]')
    expect(row).to_be_visible()
    assert page.locator(f'[data-cluster="{traffic["alert_id"]}"]').count() == 0
    _shot(page, "20-appeals-department", full_page=True)

    # not its responsibility: re-routed to the sanitation department with the reason
    row.locator('button[data-action="reroute"]').click()
    form = page.locator("#reroute-form")
    expect(form).to_be_visible()
    form.locator("#reroute-department").select_option("sanitation")
    form.locator("#reroute-submit").click()
    expect(form.locator("#reroute-error")).to_have_text("Give the reason first.")
    form.locator("#reroute-reason").fill(REASON)
    _shot(page, "21-appeals-reroute-form")
    form.locator("#reroute-submit").click()
    expect(page.locator("#appeals-status")).to_contain_text("Not our responsibility")

    wait_for(
        lambda: _clusters(api_worker).get("odour", {}).get("department") == "sanitation",
        60,
        "the cluster re-routed to sanitation",
    )
    page.locator("#appeals-refresh").click()
    expect(page.locator("#appeals-clusters")).to_have_text("No appeal clusters.")

    # another department's cluster: refused, and the refusal audited
    refused = page.evaluate(
        """async ([id]) => {
            const token = sessionStorage.getItem("cityvitals.token");
            const r = await fetch(`/api/v1/alerts/${id}/actions`, {
                method: "POST",
                headers: {"Authorization": `Bearer ${token}`, "Content-Type": "application/json"},
                body: JSON.stringify({action: "reroute", department: "water", note: "not ours"}),
            });
            return [r.status, (await r.json()).detail];
        }""",
        [traffic["alert_id"]],
    )
    assert refused[0] == 403, refused

    def audited() -> list[dict[str, Any]]:
        return [
            r
            for r in api_worker.get("/api/v1/audit", limit=1000).json()["records"]
            if r["user"] == DESK
        ]

    wait_for(
        lambda: {"reroute", "denied"} <= {r["action"] for r in audited()},
        60,
        "the re-route and the refusal in the audit trail",
    )
    records = audited()
    (reroute,) = [r for r in records if r["action"] == "reroute"]
    assert reroute["target"] == odour["alert_id"]
    assert reroute["detail"] == f"re-routed from environment to sanitation: {REASON}"
    denials = [r for r in records if r["action"] == "denied"]
    assert [d["target"] for d in denials] == [traffic["alert_id"]]
    # the traffic cluster is where it was
    assert _clusters(api_worker)["road_traffic"]["department"] == "traffic"

    # department performance counts the re-route
    page.locator('#nav [data-view="performance"]').click()
    appeals_table = page.locator("#performance-table table", has_text="Appeal clusters handled")
    expect(appeals_table.locator("tbody tr")).to_have_count(1)
    cells = appeals_table.locator("tbody tr").first.locator("th, td").all_inner_texts()
    assert cells[:4] == ["Ecology and environment bureau", "0", "0", "1"], cells

    # the daily report, printable
    page.goto(f"{api_worker.url}/#/report")
    expect(page.locator("#report-categories")).to_be_visible()
    day = page.locator("#report-day").input_value()
    expect(page.locator("#report-department")).to_have_text(
        f"Ecology and environment bureau · {day}"
    )
    report = api_worker.get("/api/v1/appeals/report", user=DESK, day=day).json()
    assert {r["category"] for r in report["categories"]} == {"air", "noise", "odour"}
    mine = api_worker.get("/api/v1/appeals/feedback", user=DESK).json()
    assert mine["performance"]["rerouted_away"] == 1 and mine["clusters"] == []
    # the day of the re-route (the appeals' own day may be the one before): it is listed
    # with where the cluster went and why
    rerouted_day = datetime.fromisoformat(reroute["at"]).astimezone(CST).strftime("%Y-%m-%d")
    page.locator("#report-day").fill(rerouted_day)
    rerouted = page.locator("#report-rerouted")
    expect(rerouted).to_be_visible()
    expect(rerouted.locator("tbody tr")).to_have_count(1)
    expect(rerouted).to_contain_text("Sanitation department")
    expect(rerouted).to_contain_text(REASON)
    page.emulate_media(media="print")
    expect(page.locator(".topbar")).to_be_hidden()
    expect(page.locator("#report-print")).to_be_hidden()
    _shot(page, "22-appeals-daily-report-print", full_page=True)
    assert not errors, errors
