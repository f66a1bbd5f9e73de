"""The responder page in a real browser: open the link from a notification, acknowledge, report.

The API runs in process (uvicorn on loopback) over an in-memory alert store; what
it publishes is recorded. Screenshots go to ``test-artifacts/respond/``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import uvicorn

from streams.api.app import SECURITY_HEADERS, create_api
from streams.core.messages import AlertActionType
from tests.api.test_api import BOOK, CFG, Recorder, stored
from tests.api.test_auth import alert
from tests.browser import CSP_VIOLATION, chromium, report_csp_violations
from tests.harness import free_port
from tests.notify.test_respond import SIGNER

ARTIFACTS = Path(__file__).parents[2] / "test-artifacts" / "respond"
ALERT = alert()


class Server:
    def __init__(self) -> None:
        self.recorder = Recorder()
        app = create_api(stored(ALERT), BOOK, CFG, self.recorder, ready=lambda: True, links=SIGNER)
        self.port = free_port()
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def link(self, issued: datetime) -> str:
        grant = SIGNER.grant(ALERT.alert_id, ALERT.district, "fire-duty-dingtalk", issued)
        return SIGNER.url(f"http://127.0.0.1:{self.port}", grant)


@pytest.fixture
def server() -> Iterator[Server]:
    s = Server()
    s.thread.start()
    deadline = time.monotonic() + 20
    while not s.server.started:
        assert time.monotonic() < deadline, "the API did not start"
        time.sleep(0.05)
    yield s
    s.server.should_exit = True
    s.thread.join(10)


def test_a_responder_opens_the_link_acknowledges_and_sends_a_field_report(
    server: Server,
) -> None:
    from playwright.sync_api import expect

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with chromium() as browser:
        context = browser.new_context(
            viewport={"width": 412, "height": 915}, locale="zh-CN", timezone_id="Asia/Shanghai"
        )
        report_csp_violations(context)
        page = context.new_page()  # a phone in the field
        page.set_default_timeout(15_000)
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        # every console error but the browser's note of a refused request (the expired link)
        page.on(
            "console",
            lambda msg: (
                errors.append(msg.text)
                if msg.type == "error" and "responded with a status of" not in msg.text
                else None
            ),
        )
        opened = page.goto(server.link(datetime.now(UTC)))
        assert opened is not None
        assert (
            opened.headers["content-security-policy"] == SECURITY_HEADERS["Content-Security-Policy"]
        )
        expect(page.locator("#headline-zh")).to_have_text(ALERT.headline_zh)
        expect(page.locator("#grade")).to_have_text("II级 · 橙色 / Grade II orange")
        expect(page.locator("#place")).to_have_text("江滨区 滨江街道 / Binjiang, Jiangbin")
        page.screenshot(path=str(ARTIFACTS / "link-opened.png"), full_page=True)

        page.locator("#responder").fill("消防一中队")
        page.locator("#ack").click()
        expect(page.locator("#result")).to_have_text("已确认接警。/ Acknowledged.")
        page.locator("#note").fill("厨房起火，已扑灭，无人员受伤")
        page.locator("#report").click()
        expect(page.locator("#result")).to_have_text("现场反馈已提交。/ Field report sent.")
        page.screenshot(path=str(ARTIFACTS / "report-sent.png"), full_page=True)

        ack, report = server.recorder.actions
        assert (ack.alert_id, ack.action, ack.actor) == (
            ALERT.alert_id,
            AlertActionType.ACKNOWLEDGE,
            "link:fire-duty-dingtalk/消防一中队",
        )
        assert (report.action, report.note) == (
            AlertActionType.FIELD_REPORT,
            "厨房起火，已扑灭，无人员受伤",
        )

        # an expired link says why and offers nothing to do
        page.goto(server.link(datetime.now(UTC) - timedelta(hours=2)))
        expect(page.locator("#status")).to_contain_text("responder link expired at")
        assert page.locator("#respond").is_hidden()
        page.screenshot(path=str(ARTIFACTS / "link-expired.png"), full_page=True)
        assert errors == []  # the page works whole under its policy: nothing was blocked

        # and the browser does enforce it: a script written into the page does not run
        ran = page.evaluate(
            """() => { const s = document.createElement("script");
                       s.textContent = "window.injected = true"; document.body.append(s);
                       return window.injected === true; }"""
        )
        assert ran is False
        page.wait_for_timeout(200)  # the violation is reported as an event
        # reported twice: by the browser itself, and as the event the console tests watch
        assert f"{CSP_VIOLATION}: script-src-elem inline" in errors, errors
        assert all("Content Security Policy" in e or CSP_VIOLATION in e for e in errors)
    assert len(server.recorder.actions) == 2
