"""What every answer of the API and the console carries: security headers, no caching of
the API's data, and error answers that never repeat more than a bounded piece of input."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest

from streams.api.app import CONSOLE_DIR, SECURITY_HEADERS
from streams.api.common import DETAIL_CHARS, ECHO_CHARS, echo
from tests.api.test_api import auth, client, stored
from tests.api.test_auth import alert

PAGES = ["/", "/console/app.js", "/console/app.css", "/respond/v1.abc.def", "/healthz"]
API = ["/api/v1/me", "/api/v1/alerts", "/api/v1/alerts/fp0001-1795999500", "/api/v1/districts"]


@pytest.mark.parametrize("path", [*PAGES, *API, "/api/v1/alerts/unknown", "/nowhere"])
def test_every_answer_carries_the_security_headers(path: str) -> None:
    api, _ = client(stored(alert()))
    r = api.get(path, headers=auth("cc.duty"))
    assert r.status_code in (200, 404), (path, r.status_code)
    for name, value in SECURITY_HEADERS.items():
        assert r.headers[name] == value, (path, name)


def test_the_policy_forbids_inline_scripts_plugins_and_framing() -> None:
    policy = dict(
        directive.strip().split(" ", 1)
        for directive in SECURITY_HEADERS["Content-Security-Policy"].split(";")
    )
    assert policy["script-src"] == "'self'"  # no 'unsafe-inline', no 'unsafe-eval'
    assert policy["default-src"] == "'none'"
    assert policy["object-src"] == "'none'"
    assert policy["base-uri"] == "'none'"
    assert policy["frame-ancestors"] == "'none'"
    assert SECURITY_HEADERS["X-Frame-Options"] == "DENY"
    assert SECURITY_HEADERS["X-Content-Type-Options"] == "nosniff"
    assert SECURITY_HEADERS["Referrer-Policy"] == "no-referrer"


@pytest.mark.parametrize("path", API)
def test_api_answers_are_kept_by_no_cache(path: str) -> None:
    api, _ = client(stored(alert()))
    for headers in (auth("cc.duty"), {}):
        r = api.get(path, headers=headers)
        assert r.headers["cache-control"] == "no-store", (path, r.status_code)


class _InlineFinder(HTMLParser):
    """Collects what a Content-Security-Policy without 'unsafe-inline' would block."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = dict(attrs)
        if tag == "script" and "src" not in names:
            self._in_script = True
            self.found.append(f"<script> at line {self.getpos()[0]} without src")
        if tag == "style":
            self.found.append(f"<style> at line {self.getpos()[0]}")
        for name, value in attrs:
            if name.startswith("on") or name == "style":
                self.found.append(f"{name}= on <{tag}> at line {self.getpos()[0]}")
            if value and re.match(r"\s*javascript:", value, re.IGNORECASE):
                self.found.append(f"javascript: URL on <{tag}> at line {self.getpos()[0]}")


@pytest.mark.parametrize("page", sorted(CONSOLE_DIR.glob("*.html")), ids=lambda p: p.name)
def test_the_console_pages_hold_no_inline_script_style_or_handler(page: object) -> None:
    finder = _InlineFinder()
    finder.feed(CONSOLE_DIR.joinpath(str(getattr(page, "name", page))).read_text("utf-8"))
    assert finder.found == []


def test_the_console_scripts_build_no_inline_handler_or_code_from_text() -> None:
    for script in CONSOLE_DIR.glob("*.js"):
        text = script.read_text("utf-8")
        for pattern in (
            r"\beval\(",
            r"new Function\(",
            r"setAttribute\(\s*['\"]on",
            r"\.innerHTML",
        ):
            assert not re.search(pattern, text), (script.name, pattern)


# --- reflected input ----------------------------------------------------------------------


def test_echo_cuts_a_value_to_a_bounded_length_with_an_ellipsis() -> None:
    assert echo("fp0001") == "'fp0001'"
    long = echo("x" * 10_000)
    assert long == repr("x" * ECHO_CHARS + "…")


def test_an_unknown_alert_id_is_repeated_cut_not_whole() -> None:
    api, _ = client(stored(alert()))
    huge = "A" * 60_000  # a test client sends no longer address
    for method, path, body in (
        ("GET", f"/api/v1/alerts/{huge}", None),
        ("POST", f"/api/v1/alerts/{huge}/actions", {"action": "acknowledge"}),
    ):
        r = api.request(method, path, headers=auth("cc.duty"), json=body)
        assert r.status_code == 404
        assert r.json() == {"error": "not_found", "detail": f"no alert {echo(huge)}"}
        assert len(r.content) < 200


def test_a_bad_parameter_or_body_key_is_repeated_cut_not_whole() -> None:
    api, _ = client(stored(alert()))
    huge = "B" * 60_000
    r = api.get("/api/v1/alerts", params={"grade": huge}, headers=auth("cc.duty"))
    assert r.status_code == 400
    assert r.json()["detail"].startswith(f"grade {echo(huge)} is not one of")
    r = api.post(
        "/api/v1/alerts/fp0001-1795999500/actions",
        headers=auth("cc.duty"),
        json={"action": "note", "note": "x", huge: 1},
    )
    assert r.status_code == 422
    assert len(r.json()["detail"]) <= DETAIL_CHARS + 1
    assert huge[: ECHO_CHARS + 1] not in r.text
    cursor = "v1." + "C" * 1_000_000
    r = api.get("/api/v1/stream", headers={**auth("cc.duty"), "Last-Event-ID": cursor})
    assert r.status_code == 400
    assert len(r.content) < 400
