"""The command-centre HTTP API and web console, served by every worker.

FastAPI on uvicorn, inside the worker's own event loop and on its web port,
next to ``/metrics``, ``/healthz`` and ``/readyz``. The OpenAPI document is at
``/openapi.json``. Every ``/api/v1`` request is authenticated (a bearer token,
or ``?access_token=`` for the browser's EventSource) and scoped by
:mod:`streams.api.auth`, except ``/api/v1/respond/{token}``: there the signed
responder link of a notification (:mod:`streams.notify.respond`) is the credential, for
one alert and two actions (acknowledge, field report); ``/respond/{token}`` is
the page a responder opens from the notification.

One router per resource: :mod:`streams.api.alerts` (alerts, actions, the live stream),
:mod:`streams.api.links` (responder links), :mod:`streams.api.city` (the caller, the
catalogue, district vital signs, performance, the audit trail); what they share is in
:mod:`streams.api.common`. This module builds the application: error answers,
``/healthz``, ``/readyz``, ``/metrics``, the console's files, and the routers. Reads of
alert details, actions, refusals and audit queries are published on ``city.audit``.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from streams.alerting.lifecycle import MAX_NOTES_PER_ALERT
from streams.api import alerts, appeals, city
from streams.api import links as link_routes
from streams.api.auth import Authenticator, AuthError
from streams.api.common import ECHO_CHARS, ApiContext, Problem, Publisher, json_response, problem
from streams.api.feedback import CategoryInfo
from streams.api.history import HistoryReader, HistoryTooLarge, HistoryUnavailable, NoHistory
from streams.api.labels import LABELS_PATH, labels_module
from streams.api.store import AlertStore
from streams.core import metrics
from streams.core.config import CityConfig
from streams.notify.respond import LinkSigner

CONSOLE_DIR = Path(__file__).parent / "console"
log = logging.getLogger(__name__)

__all__ = ["CONSOLE_DIR", "SECURITY_HEADERS", "Publisher", "config_digests", "create_api"]


def create_api(
    store: AlertStore,
    auth: Authenticator,
    cfg: CityConfig,
    publisher: Publisher,
    *,
    ready: Callable[[], bool],
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    links: LinkSigner | None = None,
    max_notes: int = MAX_NOTES_PER_ALERT,
    history: HistoryReader | None = None,
    categories: tuple[CategoryInfo, ...] = (),
) -> FastAPI:
    """The FastAPI application of one worker; ``links`` checks responder links,
    ``max_notes`` is ``CITYVITALS_MAX_NOTES_PER_ALERT``, ``history`` reads what the
    store no longer holds (:mod:`streams.api.history`), ``categories`` the appeal
    categories fed back to departments (:mod:`streams.api.feedback`)."""
    api = FastAPI(
        title="cityvitals command-centre API",
        version="1",
        description=(
            "Alerts, their evidence and timelines, district vital signs, operator actions, "
            "a live alert stream (Server-Sent Events) and the audit trail. Every /api/v1 "
            "request needs `Authorization: Bearer <token>` (or `?access_token=` for EventSource)."
        ),
        docs_url=None,  # Swagger UI loads from a CDN; the document itself is /openapi.json
        redoc_url=None,
        responses={
            401: {"model": Problem, "description": "no valid token"},
            403: {"model": Problem, "description": "outside the caller's role or scope"},
            422: {
                "model": Problem,
                "description": "a parameter or body that does not fit, or a time range of "
                "older history larger than one query may read (`history_too_large`)",
            },
        },
    )
    api.state.auth = auth
    api.state.ctx = ApiContext(
        store, cfg, publisher, clock, ready, links, max_notes, history or NoHistory(), categories
    )
    api.add_middleware(SecurityHeaders)
    _answer_errors(api)
    _operations(api, ready)
    _console(api)
    for router in (city.router, alerts.router, appeals.router, link_routes.router):
        api.include_router(router)
    return api


#: Headers of every answer: the console runs only its own files (no inline script, no
#: plugin, no framing by another site) and talks only to its own origin.
SECURITY_HEADERS = {
    "Content-Security-Policy": "; ".join(
        (
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "img-src 'self' data:",
            "connect-src 'self'",
            "manifest-src 'self'",
            "object-src 'none'",
            "base-uri 'none'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        )
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=()",
}
#: Answers of the API carry alerts, notes, names and audit records: kept by no cache.
API_CACHE = (b"cache-control", b"no-store")


class SecurityHeaders:
    """ASGI middleware: :data:`SECURITY_HEADERS` on every answer, and ``Cache-Control:
    no-store`` on every ``/api/`` answer that does not set its own (the live stream's
    ``no-cache`` stays). Plain ASGI, so the live stream passes through unbuffered."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.headers = [(k.lower().encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        private = str(scope.get("path", "")).startswith("/api/")

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {name.lower() for name, _ in headers}
                headers += [h for h in self.headers if h[0] not in names]
                if private and API_CACHE[0] not in names:
                    headers.append(API_CACHE)
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_headers)


def _answer_errors(api: FastAPI) -> None:
    """Every error as ``{"error": ..., "detail": ...}`` with its status."""

    @api.exception_handler(HTTPException)
    async def http_problem(request: Request, exc: HTTPException) -> Response:
        error = "bad_request" if exc.status_code == 400 else "error"
        return problem(error, str(exc.detail), exc.status_code, exc.headers)

    @api.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0]
        # a location may name a key of the caller's body: cut like any echoed value
        where = ".".join(str(p)[:ECHO_CHARS] for p in first.get("loc", ()))
        return problem("invalid_request", f"{where}: {first.get('msg', 'invalid')}", 422)

    @api.exception_handler(HistoryTooLarge)
    async def history_too_large(request: Request, exc: HistoryTooLarge) -> Response:
        return problem("history_too_large", str(exc), 422)

    @api.exception_handler(HistoryUnavailable)
    async def history_unavailable(request: Request, exc: HistoryUnavailable) -> Response:
        return problem("history_unavailable", str(exc), 503)

    @api.exception_handler(AuthError)
    async def refused(request: Request, exc: AuthError) -> Response:
        headers = {"WWW-Authenticate": 'Bearer realm="cityvitals"'} if exc.status == 401 else {}
        metrics.api_refusals.labels(str(exc.status)).inc()
        error = "unauthorized" if exc.status == 401 else "forbidden"
        return problem(error, exc.reason, exc.status, headers)


def _operations(api: FastAPI, ready: Callable[[], bool]) -> None:
    """``/healthz``, ``/readyz`` and ``/metrics``, unauthenticated and outside the schema."""

    @api.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @api.get("/readyz", include_in_schema=False)
    async def readyz() -> Response:
        ok = ready()
        return json_response({"ready": ok}, 200 if ok else 503)

    @api.get("/metrics", include_in_schema=False)
    async def prometheus_metrics() -> Response:
        return Response(
            generate_latest(metrics.REGISTRY), media_type=CONTENT_TYPE_LATEST.split(";")[0]
        )


def _console(api: FastAPI) -> None:
    """The console's files at ``/`` and ``/console`` with the product's labels
    (:mod:`streams.api.labels`), and the responder's page."""
    if not CONSOLE_DIR.is_dir():
        return

    # before the mount, which would otherwise answer for every path under /console
    @api.get(LABELS_PATH, include_in_schema=False)
    async def console_labels() -> Response:
        return Response(labels_module(), media_type="text/javascript")

    api.mount("/console", StaticFiles(directory=CONSOLE_DIR), name="console")

    @api.get("/", include_in_schema=False)
    async def console_index() -> FileResponse:
        return FileResponse(CONSOLE_DIR / "index.html")

    @api.get("/respond/{token}", include_in_schema=False)
    async def respond_page(token: str) -> FileResponse:
        # the page reads its token from its own address; no credential is checked here
        return FileResponse(CONSOLE_DIR / "respond.html", headers=link_routes.PRIVATE)


def config_digests(files: list[Path]) -> str:
    """``name=sha256[:12]`` of each configuration file that exists, for the audit trail."""
    parts = []
    for path in files:
        if path.is_file():
            parts.append(f"{path.name}={hashlib.sha256(path.read_bytes()).hexdigest()[:12]}")
    return " ".join(parts)
