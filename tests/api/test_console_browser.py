"""The command-centre console in a real browser, against a worker's API on the broker.

An alert raised by the simulator must appear in the console within 2 s of the
API listing it, and an operator must be able to acknowledge and resolve it with
the keyboard alone, after which its timeline names both actions and the user.
Screenshots go to ``test-artifacts/console/``.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from tests.browser import chromium, report_csp_violations
from tests.harness import ApiWorker

if TYPE_CHECKING:
    from playwright.sync_api import Browser, ConsoleMessage, Page

pytestmark = pytest.mark.broker

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "console"
OPERATOR = "cc.duty"
LIVE_WITHIN_S = 2.0

# Records, in the page, the wall-clock time at which each alert first appears in the feed.
FIRST_SEEN_SCRIPT = """
window.__alertFirstSeen = {};
new MutationObserver(() => {
  for (const node of document.querySelectorAll("#feed [data-alert-id]")) {
    const id = node.getAttribute("data-alert-id");
    if (!(id in window.__alertFirstSeen)) window.__alertFirstSeen[id] = Date.now();
  }
}).observe(document, { childList: true, subtree: true });
"""


def _luminance(rgb: tuple[float, float, float]) -> float:
    def channel(c: float) -> float:
        c /= 255
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (channel(c) for c in rgb)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def _contrast(a: tuple[float, float, float], b: tuple[float, float, float]) -> float:
    la, lb = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (la + 0.05) / (lb + 0.05)


def _rgb(css: str) -> tuple[float, float, float]:
    inner = css[css.index("(") + 1 : css.index(")")].replace(",", " ").split()
    r, g, b = (float(x) for x in inner[:3])
    return r, g, b


class AlertPoller:
    """Polls the API's alert list and notes when each alert was first listed."""

    def __init__(self, api: ApiWorker, **params: str) -> None:
        self.api = api
        self.params = params
        self.first_listed: dict[str, float] = {}
        self.docs: dict[str, dict[str, Any]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(headers=self.api.headers(OPERATOR), timeout=30) as client:
            while not self._stop.is_set():
                try:
                    r = client.get(f"{self.api.url}/api/v1/alerts", params=self.params)
                except httpx.HTTPError:
                    r = None
                now = time.time()
                if r is not None and r.status_code == 200:
                    for doc in r.json()["alerts"]:
                        self.first_listed.setdefault(doc["alert_id"], now)
                        self.docs[doc["alert_id"]] = doc
                self._stop.wait(0.1)

    def __enter__(self) -> AlertPoller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def wait_first(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.first_listed:
                return min(self.first_listed, key=self.first_listed.__getitem__)
            time.sleep(0.05)
        raise AssertionError(f"the API listed no alert matching {self.params} in {timeout} s")


def _produce_incident(api: ApiWorker) -> None:
    """The simulator's smog incident, produced from a thread of its own: Playwright's
    sync API keeps an event loop in this one."""
    failure: list[BaseException] = []

    def produce() -> None:
        try:
            api.produce_incident()
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=produce, daemon=True)
    thread.start()
    thread.join(120)
    assert not thread.is_alive(), "producing the incident took more than 120 s"
    if failure:
        raise failure[0]


@pytest.fixture
def browser() -> Iterator[Browser]:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with chromium() as b:
        yield b


def _new_page(browser: Browser, locale: str = "en-GB") -> tuple[Page, list[str]]:
    context = browser.new_context(
        viewport={"width": 1440, "height": 900}, locale=locale, timezone_id="Asia/Shanghai"
    )
    report_csp_violations(context)  # a console error each, so `errors` holds them
    page = context.new_page()
    # bounds on waits for conditions, generous for a loaded machine (expect's own
    # default is 5 s)
    page.set_default_timeout(30_000)
    from playwright.sync_api import expect

    expect.set_options(timeout=30_000)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(f"page error: {exc}"))

    def console(msg: ConsoleMessage) -> None:
        # the browser logs every refused request; refusals the test provokes are expected
        refused = "status of 401" in msg.text or "status of 403" in msg.text
        if msg.type == "error" and not refused:
            errors.append(f"console {msg.type}: {msg.text}")

    page.on("console", console)
    return page, errors


def _sign_in(page: Page, api: ApiWorker, user: str) -> None:
    page.goto(f"{api.url}/")
    token = page.locator("#token-input")
    token.wait_for()
    assert page.evaluate("document.activeElement.id") == "token-input"
    page.keyboard.type(api.tokens[user])
    page.keyboard.press("Enter")
    page.locator("#user-box").wait_for()


def _shot(page: Page, name: str, **kwargs: Any) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), **kwargs)


def test_an_alert_from_the_simulator_is_shown_live_then_acknowledged_and_resolved_by_keyboard(
    api_worker: ApiWorker, browser: Browser
) -> None:
    from playwright.sync_api import expect

    page, errors = _new_page(browser)
    page.add_init_script(script=FIRST_SEEN_SCRIPT)
    _sign_in(page, api_worker, OPERATOR)
    expect(page.locator("html")).to_have_attribute("lang", "en")
    expect(page.locator("#live-state")).to_have_attribute("data-state", "connected")
    expect(page.locator("#announcer")).to_have_attribute("aria-live", "polite")
    _shot(page, "01-feed-before-incident")

    # every control is reachable with Tab and shows where the focus is
    page.locator(".skip-link").focus()
    reached: set[str] = set()
    for _ in range(40):
        page.keyboard.press("Tab")
        info = page.evaluate(
            """() => { const e = document.activeElement;
                 return { key: e.dataset.view ? 'nav:' + e.dataset.view
                                : e.dataset.lang ? 'lang:' + e.dataset.lang
                                : e.id || e.tagName,
                          outline: getComputedStyle(e).outlineStyle }; }"""
        )
        if info["key"] == "BODY":
            break
        reached.add(info["key"])
        assert info["outline"] != "none", f"no visible focus on {info['key']}"
    for key in ("nav:feed", "nav:districts", "lang:zh", "lang:en", "f-district", "f-state"):
        assert key in reached, f"{key} not reachable with Tab; reached {sorted(reached)}"

    # the warning colours are readable: WCAG AA contrast on every grade badge
    for grade in ("I", "II", "III", "IV"):
        badge = page.locator(f'#filters .grade[data-grade="{grade}"]')
        colours = badge.evaluate(
            "e => [getComputedStyle(e).color, getComputedStyle(e).backgroundColor]"
        )
        ratio = _contrast(_rgb(colours[0]), _rgb(colours[1]))
        assert ratio >= 4.5, f"grade {grade} badge contrast {ratio:.2f} < 4.5 ({colours})"

    # the simulator raises the smog alarm; the console shows it within 2 s of the API
    with AlertPoller(api_worker, kind="alarm", open="true") as poller:
        _produce_incident(api_worker)
        alert_id = poller.wait_first(timeout=120)
        listed_at = poller.first_listed[alert_id]
        item = page.locator(f'#feed [data-alert-id="{alert_id}"]')
        item.wait_for(timeout=30_000)
        shown_at = page.evaluate(f"window.__alertFirstSeen[{alert_id!r}]") / 1000
        doc = poller.docs[alert_id]
    delay = shown_at - listed_at
    print(f"alert {alert_id} shown in the console {delay:+.3f} s after the API listed it")
    assert delay <= LIVE_WITHIN_S, f"alert shown {delay:.2f} s after the API listed it"
    expect(page.locator("#announcer")).to_contain_text(re.compile(r"\bnew\b", re.IGNORECASE))
    expect(page.locator("#announcer")).to_contain_text("Jiangbin")
    _shot(page, "02-feed-alert-arrived")

    # to the alert with the keyboard: focus the list, move with j / ArrowDown, open with Enter
    page.locator('#feed [tabindex="0"]').focus()
    for _ in range(50):
        here, there = page.evaluate(
            """id => { const items = [...document.querySelectorAll('#feed [data-alert-id]')];
                       return [items.indexOf(document.activeElement),
                               items.findIndex(li => li.dataset.alertId === id)]; }""",
            alert_id,
        )
        if here == there:
            break
        page.keyboard.press("j" if there > here else "k")
    assert page.evaluate("document.activeElement.dataset.alertId") == alert_id
    page.keyboard.press("Enter")
    detail = page.locator("#detail")
    expect(detail).to_have_attribute("data-alert-id", alert_id)
    expect(page.locator("#detail-headline")).to_contain_text("PM2.5")
    assert doc["district"] == "339901"
    expect(page.locator("#detail-chart svg.chart path.chart-line")).to_have_count(1)
    _shot(page, "03-detail-open")

    # a: acknowledge
    page.keyboard.press("a")
    expect(detail).to_have_attribute("data-workflow", "acknowledged", timeout=30_000)
    ack = page.locator(f'#detail-timeline li[data-action="acknowledge"][data-actor="{OPERATOR}"]')
    expect(ack).to_have_count(1)
    _shot(page, "04-acknowledged")

    # r: resolve, with a note, submitted with Ctrl+Enter
    page.keyboard.press("r")
    expect(page.locator("#action-note")).to_be_focused()
    page.keyboard.type("Smog cleared; sensors back to normal.")
    page.keyboard.press("Control+Enter")
    expect(detail).to_have_attribute("data-workflow", "resolved", timeout=30_000)
    resolve = page.locator(f'#detail-timeline li[data-action="resolve"][data-actor="{OPERATOR}"]')
    expect(resolve).to_have_count(1)
    expect(resolve).to_contain_text("Smog cleared; sensors back to normal.")
    expect(ack).to_contain_text(OPERATOR)
    expect(resolve).to_contain_text(OPERATOR)
    page.locator("#detail-timeline").scroll_into_view_if_needed()
    _shot(page, "05-resolved-timeline")

    # the API agrees: both actions, by the operator
    stored = api_worker.get(f"/api/v1/alerts/{alert_id}").json()["alert"]
    assert [(a["action"], a["actor"]) for a in stored["actions"]] == [
        ("acknowledge", OPERATOR),
        ("resolve", OPERATOR),
    ]
    assert stored["workflow"] == "resolved"

    # Esc closes the detail and gives the focus back to the list
    page.keyboard.press("Escape")
    expect(detail).to_be_hidden()
    assert page.evaluate("!!document.activeElement.closest('.feed-pane')")

    # 中文: the page language, the headline and the labels follow, and stay after a reload
    page.locator('[data-lang="zh"]').click()
    expect(page.locator("html")).to_have_attribute("lang", "zh-CN")
    page.reload()
    expect(page.locator("html")).to_have_attribute("lang", "zh-CN")
    page.locator("#f-state").select_option("all")
    zh_item = page.locator(f'#feed [data-alert-id="{alert_id}"] .alert-headline')
    expect(zh_item).to_have_text(stored["headline_zh"])
    expect(page.locator("#feed-heading")).to_have_text("预警列表")
    _shot(page, "06-feed-zh")

    page.goto(f"{api_worker.url}/#/districts")
    expect(page.locator(".district-card").first).to_be_visible()
    _shot(page, "07-districts-zh", full_page=True)
    assert not errors, errors


def _pump_until(page: Page, done: Any, what: str, timeout: float = 30.0) -> None:
    """Let the page's events (routes, responses) run until ``done()`` holds."""
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        page.evaluate("0")


def test_a_filter_changed_while_the_list_is_loading_is_applied(
    api_worker: ApiWorker, browser: Browser
) -> None:
    """The operator picks "all" before the first list (open alerts) has arrived: the
    console asks again, with the new filter, once that list is in."""
    page, errors = _new_page(browser)
    requests: list[str] = []
    held: list[Any] = []

    def alerts_list(url: str) -> bool:
        return "/api/v1/alerts" in url and "/api/v1/alerts/" not in url

    def handle(route: Any) -> None:
        requests.append(route.request.url)
        if len(requests) == 1:
            held.append(route)  # the first list stays on its way
        else:
            route.continue_()

    page.route(alerts_list, handle)
    _sign_in(page, api_worker, OPERATOR)
    _pump_until(page, lambda: bool(held), "the first list request")
    assert "open=true" in requests[0]
    page.locator("#f-state").select_option("all")
    held[0].continue_()
    _pump_until(page, lambda: len(requests) >= 2, "a list request with the new filter")
    assert "open=true" not in requests[-1], requests
    assert not errors, errors


def test_each_role_sees_its_own_console_and_refusals_are_explained(
    api_worker: ApiWorker, browser: Browser
) -> None:
    from playwright.sync_api import expect

    page, errors = _new_page(browser)

    # a bad token: the 401 and the server's reason are shown at the sign-in form
    page.goto(f"{api_worker.url}/")
    page.locator("#token-input").fill("cv_this-token-was-never-issued")
    page.keyboard.press("Enter")
    expect(page.locator("#token-error")).to_contain_text("401")
    expect(page.locator("#token-error")).to_contain_text("unknown token")
    _shot(page, "10-login-refused")

    # the public dashboard: district vital signs only, no alerts
    _sign_in(page, api_worker, "public.dashboard")
    expect(page.locator("#districts-view")).to_be_visible()
    expect(page.locator("#feed-view")).to_be_hidden()
    expect(page.locator("#nav")).to_be_hidden()
    expect(page.locator(".district-card")).not_to_have_count(0)
    page.goto(f"{api_worker.url}/#/feed")
    expect(page.locator("#districts-view")).to_be_visible()
    _shot(page, "11-public-dashboard", full_page=True)
    page.locator("#sign-out").click()

    # a responder: open alerts only, and only its own actions
    _sign_in(page, api_worker, "fire.jiangbin-station")
    expect(page.locator("#feed-view")).to_be_visible()
    states = page.locator("#f-state option").evaluate_all("os => os.map(o => o.value)")
    assert "all" not in states and "resolved" not in states, states
    expect(page.locator('#nav [data-view="performance"]')).to_be_hidden()
    expect(page.locator('#nav [data-view="audit"]')).to_be_hidden()
    page.locator("#sign-out").click()

    # an operator has every view, and a department desk no audit trail
    _sign_in(page, api_worker, OPERATOR)
    for view in ("feed", "districts", "performance", "audit"):
        expect(page.locator(f'#nav [data-view="{view}"]')).to_be_visible()
    page.locator('#nav [data-view="audit"]').click()
    expect(page.locator("#audit-table table, #audit-table .empty")).to_be_visible()
    _shot(page, "12-audit")
    page.locator("#sign-out").click()
    _sign_in(page, api_worker, "traffic.desk")
    expect(page.locator('#nav [data-view="audit"]')).to_be_hidden()
    page.goto(f"{api_worker.url}/#/audit")
    expect(page.locator("#feed-view")).to_be_visible()
    assert not errors, errors
