"""The command-centre console in a real browser, against a worker's API on the broker.

An alert raised by the simulator must appear in the console within 2 s of the
API listing it, and an operator must be able to acknowledge and resolve it with
the keyboard alone, after which its timeline names both actions and the user.
Screenshots go to ``test-artifacts/console/``.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer

from streams.core.messages import (
    ALERTS_TOPIC,
    GRADE_COLOURS,
    AlertEvent,
    AlertKind,
    AlertStatus,
    Grade,
    Workflow,
)
from tests.api.test_auth import alert
from tests.browser import chromium, off_the_page_thread, report_csp_violations
from tests.harness import ApiWorker, wait_for

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
    """The simulator's smog incident, produced off the page's thread."""
    off_the_page_thread(api.produce_incident, "producing the incident")


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
    console asks again with the new filter, and the first list, late, is not applied."""
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


class AlertFeed:
    """Alert events written straight onto ``city.emergency-command`` from a thread of its
    own, a few every ``pause_s``: new alerts of every grade, kind and district, and
    later events that acknowledge, dispatch, resolve or dismiss them, so that each of
    the console's filters keeps gaining and losing alerts while the test runs."""

    DISTRICTS = ("339901", "339902", "339903")
    LATER = (
        {"workflow": Workflow.ACKNOWLEDGED},
        {"workflow": Workflow.DISPATCHED},
        {"status": AlertStatus.RESOLVED, "workflow": Workflow.RESOLVED},
        {"workflow": Workflow.FALSE_POSITIVE},
    )

    def __init__(self, bootstrap: str, most: int = 120, pause_s: float = 0.3) -> None:
        self.bootstrap = bootstrap
        self.most = most  # alerts in all, under the console's list limit of 200
        self.pause_s = pause_s
        self.sent = 0
        self.failure: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._clock = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)
        self._latest: dict[int, AlertEvent] = {}

    def _next_time(self) -> datetime:
        self._clock += timedelta(seconds=1)  # each event newer than the last, to the second
        return self._clock

    def _new(self, n: int) -> AlertEvent:
        grade = Grade(1 + n % 4)
        at = self._next_time()
        return alert(
            alert_id=f"feed{n:04d}-1",
            fingerprint=f"feed{n:04d}",
            grade=grade,
            colour=GRADE_COLOURS[grade],
            kind=list(AlertKind)[n // 2 % len(AlertKind)],
            district=self.DISTRICTS[n % len(self.DISTRICTS)],
            street=None,
            first_seen=at,
            last_update=at,
            event_time=at,
        )

    def _burst(self, n: int) -> list[AlertEvent]:
        out = [self._new(n)] if n < self.most else []
        for k in (n - 3, n - 7):  # the alerts raised a few bursts ago move on
            prev = self._latest.get(k)
            if prev is None or prev.sequence > len(self.LATER) // 2:
                continue
            change = self.LATER[(k + prev.sequence) % len(self.LATER)]
            at = self._next_time()
            out.append(
                prev.model_copy(update={"sequence": prev.sequence + 1, "last_update": at, **change})
            )
        for e in out:
            self._latest[int(e.fingerprint[4:])] = e
        return out

    def _run(self) -> None:
        async def feed() -> None:
            producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all")
            await producer.start()
            try:
                n = 0
                while not self._stop.is_set() and n < self.most + 8:
                    for e in self._burst(n):
                        await producer.send_and_wait(
                            ALERTS_TOPIC, e.to_json(), key=e.district.encode()
                        )
                        self.sent += 1
                    n += 1
                    await asyncio.sleep(self.pause_s)
            finally:
                await producer.stop()

        try:
            asyncio.run(feed())
        except BaseException as exc:
            self.failure = exc

    def __enter__(self) -> AlertFeed:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)
        assert self.failure is None, self.failure


# The console's filter choices as the API's query: the contract the list must keep.
STATE_QUERY: dict[str, dict[str, str]] = {
    "open": {"open": "true"},
    "wf_open": {"workflow": "open", "open": "true"},
    "acknowledged": {"workflow": "acknowledged"},
    "dispatched": {"workflow": "dispatched"},
    "resolved": {"status": "resolved"},
    "false_positive": {"workflow": "false_positive"},
    "all": {},
}
ROMAN = {"1": "I", "2": "II", "3": "III", "4": "IV"}


def _choose(page: Page, choice: dict[str, Any]) -> None:
    """Set the filters one control at a time, each change on its own (no waiting)."""
    for field in ("f-state", "f-district", "f-kind"):
        if field in choice:
            page.locator(f"#{field}").select_option(choice[field])
    for g in ROMAN:
        if "grades" in choice:
            box = page.locator(f'#filters input[name=grade][value="{g}"]')
            box.set_checked(g in choice["grades"])


def _shown_filters(page: Page) -> dict[str, Any]:
    return dict(
        page.evaluate(
            """() => ({
              state: document.querySelector('#f-state').value,
              district: document.querySelector('#f-district').value,
              kind: document.querySelector('#f-kind').value,
              grades: [...document.querySelectorAll('#filters input[name=grade]:checked')]
                .map((i) => i.value),
            })"""
        )
    )


def _api_list(api: ApiWorker, shown: dict[str, Any]) -> list[str]:
    params: list[tuple[str, str]] = [("limit", "200"), *STATE_QUERY[shown["state"]].items()]
    params += [(k, shown[k]) for k in ("district", "kind") if shown[k]]
    params += [("grade", ROMAN[g]) for g in shown["grades"]]
    r = httpx.get(
        f"{api.url}/api/v1/alerts", headers=api.headers(OPERATOR), params=params, timeout=30
    )
    assert r.status_code == 200, r.text
    return [a["alert_id"] for a in r.json()["alerts"]]


def _console_list(page: Page) -> tuple[bool, list[str], str]:
    """Whether a list request is on its way, the alerts listed, and the count shown."""
    busy, ids, count = page.evaluate(
        """() => [document.querySelector('#feed').getAttribute('aria-busy') === 'true',
                  [...document.querySelectorAll('#feed [data-alert-id]')]
                    .map((li) => li.dataset.alertId),
                  document.querySelector('#feed-count').textContent]"""
    )
    return bool(busy), list(ids), str(count)


def _agrees_with_the_api(page: Page, api: ApiWorker, step: str, timeout: float = 90.0) -> int:
    """Wait until the console, settled, lists what the API lists for the filters on
    screen (alerts keep arriving, so equal at some moment, not at every one); the
    number of alerts listed."""
    deadline = time.monotonic() + timeout
    last: tuple[Any, ...] = ()
    while True:
        shown = _shown_filters(page)
        busy, before, count = _console_list(page)
        if not busy:
            wanted = _api_list(api, shown)
            busy, after, count = _console_list(page)
            if not busy and before == wanted == after and count.startswith(f"{len(wanted)} "):
                return len(wanted)
            last = (shown, wanted, after, count)
        assert time.monotonic() < deadline, (
            f"after {step}, the console never agreed with the API: "
            f"(filters, API, console, count) = {last}"
        )
        page.wait_for_timeout(200)  # a poll's interval, not a wait for an outcome


# Counts, in the page, the alert-list requests made and the answers received; and
# turns off the console's once-a-minute list refresh (FEED_RESYNC_MS in app.js), which
# would otherwise hide a list left out of step for up to a minute: here only each
# round's own requests and the live events may bring the list in step.
LIST_REQUESTS_SCRIPT = """
const every = window.setInterval;
window.setInterval = (fn, ms, ...rest) => (ms === 60000 ? 0 : every(fn, ms, ...rest));
window.__lists = { asked: 0, answered: 0 };
const listFetch = window.fetch;
window.fetch = async (...args) => {
  const listing = String(args[0]).startsWith("/api/v1/alerts?");
  if (listing) window.__lists.asked += 1;
  try {
    const response = await listFetch(...args);
    if (listing) await response.clone().arrayBuffer();
    return response;
  } finally {
    if (listing) window.__lists.answered += 1;
  }
};
"""


def _is_list(url: str) -> bool:
    return "/api/v1/alerts?" in url


def _answered_newest_first(page: Page, changes: list[dict[str, Any]]) -> None:
    """Make the filter changes while every list request is held, then let the held
    requests answer newest first, each once the one before is in: the oldest list
    arrives last, as it may from a loaded server."""
    held: list[Any] = []

    def hold(route: Any) -> None:
        held.append(route)

    page.route(_is_list, hold)
    try:
        for choice in changes:
            _choose(page, choice)
        while True:
            waiting = page.evaluate("window.__lists.asked - window.__lists.answered")
            _pump_until(page, lambda n=waiting: len(held) >= n, "the held list requests")
            if not held:
                break
            newest_first = held[::-1]
            held.clear()
            for route in newest_first:
                before = page.evaluate("window.__lists.answered")
                route.continue_()
                _pump_until(
                    page,
                    lambda n=before: page.evaluate("window.__lists.answered") > n,
                    "a held list's answer",
                )
    finally:
        page.unroute(_is_list, hold)


ROUNDS: list[tuple[str, list[dict[str, Any]]]] = [
    ("all, then open, then all", [{"f-state": "all"}, {"f-state": "open"}, {"f-state": "all"}]),
    ("a district and two grades", [{"f-district": "339902"}, {"grades": ["1", "3"]}]),
    (
        "every state in turn",
        [{"f-state": s} for s in ("wf_open", "acknowledged", "dispatched", "resolved")],
    ),
    ("a kind, then no district", [{"f-kind": "alarm"}, {"f-district": "", "grades": []}]),
    (
        "three states answered newest first",
        [{"newest_first": True}, {"f-state": "resolved"}, {"f-state": "all"}, {"f-state": "open"}],
    ),
    ("a reload, then all", [{"reload": True}, {"f-state": "all"}]),
    ("dismissed, then open, one grade", [{"f-state": "false_positive"}, {"f-state": "open"}]),
    ("any kind, grade II", [{"f-kind": "", "grades": ["2"]}]),
    (
        "grades answered newest first",
        [{"newest_first": True}, {"grades": ["1"]}, {"grades": ["1", "4"]}, {"f-state": "all"}],
    ),
    ("a reload, then all again", [{"reload": True}, {"f-state": "resolved"}, {"f-state": "all"}]),
    ("no filter at all", [{"grades": [], "f-district": "", "f-kind": ""}]),
]


def test_rapid_filter_changes_and_reloads_while_alerts_stream_leave_the_list_as_the_api_s(
    api_worker: ApiWorker, browser: Browser
) -> None:
    """After each burst of filter changes (and after reloads), once the console has
    settled, the list it shows is the API's list for the filters it shows: an older
    list answering after a newer one, or a live event merged into the wrong list,
    would leave it out of step for good."""
    page, errors = _new_page(browser)
    page.add_init_script(script=LIST_REQUESTS_SCRIPT)
    _sign_in(page, api_worker, OPERATOR)
    with AlertFeed(api_worker.bootstrap) as feed:
        wait_for(lambda: feed.sent > 30, 120, "the first alerts on the topic")
        sent_before = feed.sent
        counts = []
        for step, changes in ROUNDS:
            if changes[0].get("newest_first"):
                _answered_newest_first(page, changes[1:])
            for choice in changes:
                if choice.get("reload"):
                    page.reload()
                    page.locator("#f-state").wait_for()
                elif not changes[0].get("newest_first"):
                    _choose(page, choice)
            counts.append(_agrees_with_the_api(page, api_worker, step))
        sent_during = feed.sent - sent_before
    # and once no more alerts arrive, the last filters once more
    counts.append(_agrees_with_the_api(page, api_worker, "the feed's end"))
    print(f"alerts listed after each round: {counts}; {sent_during} events sent meanwhile")
    assert sent_during > 0, "no alert arrived while the filters changed"
    assert any(counts) and len(set(counts)) > 2, counts  # the rounds listed different lists
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
