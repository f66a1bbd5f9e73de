"""Headless Chromium for the browser tests: Debian's ``chromium`` driven by Playwright.

Playwright's own browser download does not work on our machines, so the tests
drive the distribution's Chromium at ``/usr/bin/chromium``. :func:`chromium`
installs what is missing first (the tests run as root, CI has apt access):
the ``chromium`` package, a CJK font so that screenshots of the Chinese
console are readable, and the ``playwright`` package. If Chromium or
Playwright cannot be had, the test fails with the reason; it is never skipped.
"""

from __future__ import annotations

import importlib
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.apt import install

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext

CHROMIUM = Path("/usr/bin/chromium")
LAUNCH_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
CJK_FONT_PACKAGE = "fonts-wqy-microhei"


def _run(cmd: list[str], timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def ensure_chromium() -> Path:
    """Debian's Chromium, installed with apt-get if it is missing; fails the test if it cannot."""
    if CHROMIUM.exists():
        return CHROMIUM
    ok, log = install("chromium", done=CHROMIUM.exists)
    if not ok or not CHROMIUM.exists():
        pytest.fail(
            f"headless Chromium is needed at {CHROMIUM} and could not be installed with "
            f"`apt-get install -y --no-install-recommends chromium` (run as root):\n{log}",
            pytrace=False,
        )
    return CHROMIUM


def ensure_cjk_font() -> None:
    """A Chinese font for readable screenshots; best effort, the checks do not need it."""
    if shutil.which("fc-list") is not None:
        found = _run(["fc-list", ":lang=zh", "family"], timeout=60)
        if found.returncode == 0 and found.stdout.strip():
            return
    install(CJK_FONT_PACKAGE)


def ensure_playwright() -> None:
    """The ``playwright`` package in this interpreter, installed with pip if it is missing."""
    try:
        importlib.import_module("playwright.sync_api")
        return
    except ImportError:
        pass
    result = _run([sys.executable, "-m", "pip", "install", "--quiet", "playwright"], timeout=600)
    importlib.invalidate_caches()
    try:
        importlib.import_module("playwright.sync_api")
    except ImportError:
        pytest.fail(
            f"the playwright package is needed and `pip install playwright` failed:\n"
            f"{(result.stdout + result.stderr).strip()[-2000:]}",
            pytrace=False,
        )


@contextmanager
def chromium() -> Iterator[Browser]:
    """A headless Chromium browser under Playwright, closed afterwards."""
    executable = ensure_chromium()
    ensure_cjk_font()
    ensure_playwright()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(executable), args=LAUNCH_ARGS, headless=True
        )
        try:
            yield browser
        finally:
            browser.close()


#: Logged by every page of a context given to :func:`report_csp_violations`.
CSP_VIOLATION = "Content-Security-Policy violation"


def report_csp_violations(context: BrowserContext) -> None:
    """Have every page of ``context`` log each Content-Security-Policy violation as a
    console error (``CSP_VIOLATION: <directive> <blocked>``), so a test that fails on
    console errors fails on a script, style or connection the console's policy blocks.
    Init scripts come from the driver, not the page, so the policy does not block this."""
    context.add_init_script(
        "document.addEventListener('securitypolicyviolation', (e) => console.error("
        f"'{CSP_VIOLATION}: ' + e.violatedDirective + ' ' + e.blockedURI));"
    )


def off_the_page_thread(job: Callable[[], None], what: str, timeout_s: float = 120.0) -> None:
    """Run ``job`` (producing records, say) in a thread of its own and wait for it:
    Playwright's sync API keeps an event loop in the test's thread, where
    ``asyncio.run`` cannot start another. Its exception, if any, is raised here."""
    failure: list[BaseException] = []

    def guarded() -> None:
        try:
            job()
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=guarded, daemon=True)
    thread.start()
    thread.join(timeout_s)
    assert not thread.is_alive(), f"{what} took more than {timeout_s:g} s"
    if failure:
        raise failure[0]
