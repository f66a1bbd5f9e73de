"""The command-centre HTTP API and web console, served by every worker.

FastAPI on uvicorn, inside the worker's own event loop and on its web port,
next to ``/metrics``, ``/healthz`` and ``/readyz``. The OpenAPI document is at
``/openapi.json``. Every ``/api/v1`` request is authenticated (a bearer token,
or ``?access_token=`` for the browser's EventSource) and scoped by
:mod:`streams.api.auth`, except ``/api/v1/respond/{token}``: there the signed
responder link of a notification (:mod:`streams.notify.respond`) is the credential, for
one alert and two actions (acknowledge, field report); ``/respond/{token}`` is
the page a responder opens from the notification.

Reads come from the worker's :class:`~streams.api.store.AlertStore`. An alert's
detail gathers every operator note from the events of its timeline (each event
carries only the note of the action that caused it). Actions
are published on ``city.alert-actions`` and applied by the alert lifecycle of
whichever worker owns the district; the API answers 202 once the broker has
acknowledged the action. Reads of alert details, actions, refusals and audit
queries are published on ``city.audit``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal, Protocol, cast

import orjson
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field

from streams.api.auth import ROLE_ACTIONS, Authenticator, AuthError, Principal, Role, bearer_token
from streams.api.store import (
    AlertFilter,
    AlertStore,
    CursorError,
    Entry,
    format_cursor,
    is_open,
    parse_cursor,
)
from streams.core import metrics
from streams.core.config import CityConfig
from streams.core.messages import (
    AlertAction,
    AlertActionType,
    AlertEvent,
    AlertKind,
    AlertStatus,
    AuditRecord,
    Grade,
    Workflow,
)
from streams.notify.payloads import place_name
from streams.notify.respond import Grant, LinkError, LinkSigner

CONSOLE_DIR = Path(__file__).parent / "console"
KEEP_ALIVE_S = 15.0
log = logging.getLogger(__name__)


class Publisher(Protocol):
    """Where the API writes: the actions topic and the audit topic."""

    async def action(self, action: AlertAction) -> None: ...

    async def audit(self, record: AuditRecord) -> None: ...


class ActionRequest(BaseModel):
    """An operator's action on one alert."""

    model_config = {"extra": "forbid"}

    action: AlertActionType
    note: Annotated[str, Field(max_length=4000)] | None = None
    department: str | None = Field(None, description="dispatch: the department to send it to")
    silence_s: Annotated[float, Field(gt=0, le=30 * 86400)] | None = Field(
        None, description="silence: for how long, seconds"
    )


class RespondRequest(BaseModel):
    """A responder's action through a responder link: acknowledge, or a field report."""

    model_config = {"extra": "forbid"}

    action: Literal[AlertActionType.ACKNOWLEDGE, AlertActionType.FIELD_REPORT]
    note: Annotated[str, Field(max_length=4000)] | None = None
    responder: Annotated[str, Field(min_length=1, max_length=80)] | None = Field(
        None, description="who is responding, e.g. a unit's call sign; recorded as the actor"
    )


class Problem(BaseModel):
    error: str
    detail: str


def _json(data: Any, status: int = 200) -> Response:
    return Response(
        orjson.dumps(data, option=orjson.OPT_UTC_Z),
        status_code=status,
        media_type="application/json",
    )


def _alert_doc(alert: AlertEvent) -> Any:
    return orjson.loads(alert.to_json())


def _principal(request: Request) -> Principal:
    """The caller, from ``Authorization: Bearer`` or ``?access_token=`` (EventSource)."""
    token = bearer_token(request.headers.get("authorization")) or request.query_params.get(
        "access_token"
    )
    state = request.app.state
    return cast(Principal, state.auth.authenticate(token, state.clock()))


Who = Annotated[Principal, Depends(_principal)]


def create_api(
    store: AlertStore,
    auth: Authenticator,
    cfg: CityConfig,
    publisher: Publisher,
    *,
    ready: Callable[[], bool],
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    links: LinkSigner | None = None,
) -> FastAPI:
    """The FastAPI application of one worker; ``links`` checks responder links."""
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
        responses={401: {"model": Problem}, 403: {"model": Problem}},
    )
    catalogue = cfg.catalogue
    api.state.auth = auth
    api.state.clock = clock

    def source_ip(request: Request) -> str | None:
        return request.client.host if request.client else None

    async def audit(
        request: Request, who: Principal, action: str, target: str | None, detail: str | None = None
    ) -> None:
        await publisher.audit(
            AuditRecord(
                at=clock(),
                user=who.user,
                role=who.role.value,
                action=action,
                target=target,
                source_ip=source_ip(request),
                detail=detail,
            )
        )

    @api.exception_handler(HTTPException)
    async def http_problem(request: Request, exc: HTTPException) -> Response:
        return JSONResponse(
            {"error": "bad_request" if exc.status_code == 400 else "error", "detail": exc.detail},
            status_code=exc.status_code,
        )

    @api.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        return JSONResponse(
            {"error": "invalid_request", "detail": f"{where}: {first.get('msg', 'invalid')}"},
            status_code=422,
        )

    @api.exception_handler(AuthError)
    async def refused(request: Request, exc: AuthError) -> Response:
        headers = {"WWW-Authenticate": 'Bearer realm="cityvitals"'} if exc.status == 401 else {}
        metrics.api_refusals.labels(str(exc.status)).inc()
        return JSONResponse(
            {"error": "unauthorized" if exc.status == 401 else "forbidden", "detail": exc.reason},
            status_code=exc.status,
            headers=headers,
        )

    async def forbid(request: Request, who: Principal, reason: str, target: str | None) -> None:
        await audit(request, who, "denied", target, reason)
        raise AuthError(403, reason)

    # --- operations --------------------------------------------------------------------
    @api.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @api.get("/readyz", include_in_schema=False)
    async def readyz() -> Response:
        ok = ready()
        return _json({"ready": ok}, 200 if ok else 503)

    @api.get("/metrics", include_in_schema=False)
    async def prometheus_metrics() -> Response:
        return Response(
            generate_latest(metrics.REGISTRY), media_type=CONTENT_TYPE_LATEST.split(";")[0]
        )

    # --- console ------------------------------------------------------------------------
    if CONSOLE_DIR.is_dir():
        api.mount("/console", StaticFiles(directory=CONSOLE_DIR), name="console")

        @api.get("/", include_in_schema=False)
        async def console_index() -> FileResponse:
            return FileResponse(CONSOLE_DIR / "index.html")

    # --- who and what -------------------------------------------------------------------
    @api.get("/api/v1/me", summary="The caller's identity and scope")
    async def me(who: Who) -> dict[str, Any]:
        return {
            "user": who.user,
            "role": who.role.value,
            "display_name": who.display_name,
            "department": who.department,
            "districts": sorted(who.districts),
            "streets": sorted(who.streets),
            "actions": sorted(a.value for a in who.actions),
            "may_see_alerts": who.may_see_alerts,
            "may_list_history": who.may_list_history,
            "may_read_audit": who.may_read_audit,
            "may_see_performance": who.role in (Role.OPERATOR, Role.DEPARTMENT),
        }

    @api.get("/api/v1/catalogue", summary="Names of the city's places, indicators and departments")
    async def catalogue_names(who: Who) -> dict[str, Any]:
        city = cfg.city
        return {
            "city": {
                "name_zh": city.city.name_zh,
                "name_en": city.city.name_en,
                "timezone": city.city.timezone,
            },
            "districts": [
                {
                    "code": d.code,
                    "name_zh": d.name_zh,
                    "name_en": d.name_en,
                    "streets": [
                        {"code": s.code, "name_zh": s.name_zh, "name_en": s.name_en}
                        for s in d.streets
                    ],
                }
                for d in city.districts
                if who.can_see_district(d.code)
            ],
            "indicators": [
                {
                    "code": i.code,
                    "name_zh": i.name_zh,
                    "name_en": i.name_en,
                    "unit": i.unit,
                    "domain": i.domain,
                    "department": i.department,
                }
                for i in catalogue.indicators
                if who.role is not Role.OPEN or who.can_see_indicator(i.code, catalogue)
            ],
            "domains": [
                {"code": code, "name_zh": d.name_zh, "name_en": d.name_en}
                for code, d in catalogue.domains.items()
            ],
            "departments": [
                {"code": code, "name_zh": d.name_zh, "name_en": d.name_en}
                for code, d in catalogue.departments.items()
            ],
        }

    # --- alerts -------------------------------------------------------------------------
    def alert_filter(
        request: Request,
        district: str | None,
        street: str | None,
        domain: str | None,
        grade: list[str] | None,
        kind: AlertKind | None,
        status: AlertStatus | None,
        workflow: Workflow | None,
        department: str | None,
        open_: bool | None,
        since: datetime | None,
        until: datetime | None,
    ) -> AlertFilter:
        grades: frozenset[Grade] | None = None
        if grade:
            chosen = set()
            for text in grade:
                g = Grade.__members__.get(text.upper()) or (
                    Grade(int(text)) if text in ("1", "2", "3", "4") else None
                )
                if g is None:
                    raise _bad_request(f"grade {text!r} is not one of I, II, III, IV (or 1-4)")
                chosen.add(g)
            grades = frozenset(chosen)
        for name, value in (("since", since), ("until", until)):
            if value is not None and value.tzinfo is None:
                raise _bad_request(f"{name} needs a time zone, e.g. 2026-11-24T08:00:00+08:00")
        return AlertFilter(
            district=district,
            street=street,
            domain=domain,
            grades=grades,
            kind=None if kind is None else kind.value,
            status=None if status is None else status.value,
            workflow=None if workflow is None else workflow.value,
            department=department,
            open=open_,
            since=since,
            until=until,
        )

    async def scoped_filter(request: Request, who: Principal, where: AlertFilter) -> AlertFilter:
        if not who.may_see_alerts:
            await forbid(request, who, f"role {who.role} sees no alerts", None)
        history = (
            where.since is not None
            or where.until is not None
            or where.open is False
            or where.status == AlertStatus.RESOLVED.value
            or where.workflow in (Workflow.RESOLVED.value, Workflow.FALSE_POSITIVE.value)
        )
        if history and not who.may_list_history:
            await forbid(request, who, f"role {who.role} may not list alert history", None)
        if not who.may_list_history:
            where = dataclasses.replace(where, open=True)
        return where

    @api.get("/api/v1/alerts", summary="List alerts (the latest event of each)")
    async def list_alerts(
        request: Request,
        who: Who,
        district: str | None = None,
        street: str | None = None,
        domain: str | None = None,
        grade: Annotated[list[str] | None, Query(description="I, II, III, IV; repeatable")] = None,
        kind: AlertKind | None = None,
        status: AlertStatus | None = None,
        workflow: Workflow | None = None,
        department: str | None = None,
        open: Annotated[bool | None, Query(description="true: not resolved; false: closed")] = None,
        since: Annotated[datetime | None, Query(description="last update at or after")] = None,
        until: Annotated[datetime | None, Query(description="first seen at or before")] = None,
        limit: Annotated[int, Query(ge=1, le=5000)] = 200,
    ) -> Response:
        where = alert_filter(
            request, district, street, domain, grade, kind, status, workflow, department, open,
            since, until,
        )  # fmt: skip
        where = await scoped_filter(request, who, where)
        found = store.query(where, who.can_see, limit)
        return _json({"alerts": [_alert_doc(a) for a in found], "count": len(found)})

    @api.get("/api/v1/alerts/{alert_id}", summary="One alert with its evidence and full timeline")
    async def alert_detail(request: Request, who: Who, alert_id: str) -> Response:
        """``alert``: the latest event, its action history with every note;
        ``timeline``: every event as published (each carries the note of the action
        that caused it); ``actions``: every action on the alert in the order applied,
        each with its note, including those older than the event's bounded history."""
        if not who.may_see_alerts:
            await forbid(request, who, f"role {who.role} sees no alerts", alert_id)
        alert = store.latest(alert_id)
        if alert is None:
            return _json({"error": "not_found", "detail": f"no alert {alert_id!r}"}, 404)
        if not who.can_see(alert):
            await forbid(
                request, who, f"alert {alert_id} is outside the scope of {who.user}", alert_id
            )
        await audit(request, who, "read_alert", alert_id)
        return _json(
            {
                "alert": _alert_doc(store.with_notes(alert)),
                "timeline": [_alert_doc(e) for e in store.timeline(alert_id)],
                "actions": [orjson.loads(r.to_json()) for r in store.actions(alert_id)],
            }
        )

    @api.post(
        "/api/v1/alerts/{alert_id}/actions",
        status_code=202,
        summary="Act on an alert; answers once the action is durable on city.alert-actions",
    )
    async def act(request: Request, who: Who, alert_id: str, body: ActionRequest) -> Response:
        alert = store.latest(alert_id)
        if alert is None:
            return _json({"error": "not_found", "detail": f"no alert {alert_id!r}"}, 404)
        if not who.can_see(alert):
            await forbid(
                request, who, f"alert {alert_id} is outside the scope of {who.user}", alert_id
            )
        if not who.can_act(alert, body.action):
            await forbid(
                request,
                who,
                f"{who.user} ({who.role}) may not {body.action.value} alert {alert_id}",
                alert_id,
            )
        if body.action is AlertActionType.DISPATCH:
            if body.department is None:
                raise _bad_request("dispatch needs a department")
            if body.department not in catalogue.departments:
                raise _bad_request(
                    f"department {body.department!r} is not one of {sorted(catalogue.departments)}"
                )
        elif body.department is not None:
            raise _bad_request(f"{body.action.value} takes no department")
        if body.action is AlertActionType.SILENCE and body.silence_s is None:
            raise _bad_request("silence needs silence_s (seconds)")
        if body.action is not AlertActionType.SILENCE and body.silence_s is not None:
            raise _bad_request(f"{body.action.value} takes no silence_s")
        if body.action in (AlertActionType.NOTE, AlertActionType.FIELD_REPORT) and not body.note:
            raise _bad_request(f"{body.action.value} needs a note")
        action = AlertAction(
            action_id=uuid.uuid4().hex,
            alert_id=alert_id,
            district=alert.district,
            action=body.action,
            actor=who.user,
            role=who.role.value,
            at=clock(),
            department=body.department,
            note=body.note,
            silence_s=body.silence_s,
            source_ip=source_ip(request),
            kind="responder" if who.role is Role.RESPONDER else "operator",
        )
        await publisher.action(action)
        await audit(request, who, body.action.value, alert_id, body.note)
        return _json({"action": orjson.loads(action.to_json())}, 202)

    # --- responder links (streams.notify.respond): the link is the credential -----------------
    private = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}

    async def granted(request: Request, token: str) -> Grant:
        if links is None:
            reason = "responder links are not enabled (routes.yaml: responder_links)"
        else:
            try:
                return links.verify(token, clock())
            except LinkError as exc:
                reason = str(exc)
        await audit(request, link_user(None), "denied", "/api/v1/respond", reason)
        raise AuthError(401, reason)

    def link_user(grant: Grant | None, responder: str | None = None) -> Principal:
        """Who acts through a link: ``link:<receiver>[/<responder>]`` (``link:?`` if refused)."""
        user = f"link:{grant.receiver if grant else '?'}" + (f"/{responder}" if responder else "")
        return Principal(user=user, role=Role.RESPONDER, department="unknown", display_name=user)

    def link_alert(grant: Grant) -> AlertEvent | None:
        alert = store.latest(grant.alert_id)
        return alert if alert is not None and alert.district == grant.district else None

    if CONSOLE_DIR.is_dir():

        @api.get("/respond/{token}", include_in_schema=False)
        async def respond_page(token: str) -> FileResponse:
            # the page reads its token from its own address; no credential is checked here
            return FileResponse(CONSOLE_DIR / "respond.html", headers=private)

    @api.get(
        "/api/v1/respond/{token}",
        summary="The alert a responder link is for, and what the link allows now",
        responses={401: {"model": Problem}, 404: {"model": Problem}},
    )
    async def respond_view(request: Request, token: str) -> Response:
        grant = await granted(request, token)
        alert = link_alert(grant)
        if alert is None:
            return _json({"error": "not_found", "detail": f"no alert {grant.alert_id!r}"}, 404)
        await audit(request, link_user(grant), "read_alert", grant.alert_id, "responder link")
        allowed = sorted(a.value for a in ROLE_ACTIONS[Role.RESPONDER]) if is_open(alert) else []
        response = _json(
            {
                "alert": _alert_doc(alert),
                "place_zh": place_name(cfg, alert, zh=True),
                "place_en": place_name(cfg, alert, zh=False),
                "receiver": grant.receiver,
                "expires_at": grant.expires_at,
                "actions": allowed,
            }
        )
        response.headers.update(private)
        return response

    @api.post(
        "/api/v1/respond/{token}",
        status_code=202,
        summary="Acknowledge the link's alert or add a field report; answers once durable",
        responses={401: {"model": Problem}, 404: {"model": Problem}, 409: {"model": Problem}},
    )
    async def respond_act(request: Request, token: str, body: RespondRequest) -> Response:
        grant = await granted(request, token)
        alert = link_alert(grant)
        if alert is None:
            return _json({"error": "not_found", "detail": f"no alert {grant.alert_id!r}"}, 404)
        if not is_open(alert):
            return _json(
                {
                    "error": "conflict",
                    "detail": f"alert {grant.alert_id} is closed ({alert.workflow.value}); "
                    f"nothing to {body.action.value}",
                },
                409,
            )
        if body.action is AlertActionType.FIELD_REPORT and not body.note:
            raise _bad_request("field_report needs a note")
        who = link_user(grant, body.responder)
        action = AlertAction(
            action_id=uuid.uuid4().hex,
            alert_id=grant.alert_id,
            district=alert.district,
            action=body.action,
            actor=who.user,
            role=Role.RESPONDER.value,
            at=clock(),
            note=body.note,
            source_ip=source_ip(request),
            kind="responder",
        )
        await publisher.action(action)
        await audit(request, who, body.action.value, grant.alert_id, body.note)
        response = _json({"action": orjson.loads(action.to_json())}, 202)
        response.headers.update(private)
        return response

    @api.get(
        "/api/v1/districts",
        summary="Each district's latest vital signs, as the caller may see them",
    )
    async def districts(who: Who) -> Response:
        out = []
        for d in cfg.city.districts:
            if not who.can_see_district(d.code):
                continue
            doc = store.vitals.get(d.code)
            out.append(
                {
                    "code": d.code,
                    "vitals": None if doc is None else who.visible_vitals(doc, catalogue),
                }
            )
        return _json({"districts": out})

    @api.get(
        "/api/v1/stream",
        summary="Live alert events (Server-Sent Events); resumes from Last-Event-ID",
        response_class=StreamingResponse,
    )
    async def stream(
        request: Request,
        who: Who,
        district: str | None = None,
        street: str | None = None,
        domain: str | None = None,
        grade: Annotated[list[str] | None, Query()] = None,
        kind: AlertKind | None = None,
        department: str | None = None,
        last_event_id: Annotated[
            str | None, Query(description="resume after this id (or the Last-Event-ID header)")
        ] = None,
        from_start: Annotated[bool, Query(description="replay every event kept")] = False,
    ) -> StreamingResponse:
        where = alert_filter(
            request, district, street, domain, grade, kind, None, None, department, None,
            None, None,
        )  # fmt: skip
        if not who.may_see_alerts:
            await forbid(request, who, f"role {who.role} sees no alerts", None)
        resume = request.headers.get("last-event-id") or last_event_id
        try:
            if resume:
                start = parse_cursor(resume, store.partitions)
            elif from_start:
                start = {}
            else:
                start = dict(store.positions)
        except CursorError as exc:
            raise _bad_request(str(exc)) from None
        return StreamingResponse(
            _events(store, who, where, start, request.is_disconnected),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    @api.get("/api/v1/performance", summary="Department performance per grade")
    async def performance(request: Request, who: Who) -> Response:
        if who.role not in (Role.OPERATOR, Role.DEPARTMENT):
            await forbid(request, who, f"role {who.role} sees no department performance", None)
        alerts = [
            a
            for a in map(store.latest, list(store.alerts))
            if a is not None and (who.role is Role.OPERATOR or who.department == a.department)
        ]
        return _json({"rows": store.performance(alerts)})

    @api.get("/api/v1/audit", summary="The audit trail (operators only)")
    async def audit_trail(
        request: Request,
        who: Who,
        user: str | None = None,
        action: str | None = None,
        target: str | None = None,
        since: datetime | None = None,
        limit: Annotated[int, Query(ge=1, le=10_000)] = 200,
    ) -> Response:
        if not who.may_read_audit:
            await forbid(request, who, f"role {who.role} may not read the audit trail", None)
        await audit(request, who, "read_audit", None)
        rows = [
            r
            for r in reversed(store.audit)
            if (user is None or r.user == user)
            and (action is None or r.action == action)
            and (target is None or r.target == target)
            and (since is None or r.at >= since)
        ][:limit]
        return _json({"records": [orjson.loads(r.to_json()) for r in rows]})

    return api


def _bad_request(detail: str) -> Exception:
    return HTTPException(status_code=400, detail=detail)


def _sse(cursor: str, event: AlertEvent) -> bytes:
    return b"id: " + cursor.encode() + b"\nevent: alert\ndata: " + event.to_json() + b"\n\n"


async def _events(
    store: AlertStore,
    who: Principal,
    where: AlertFilter,
    start: dict[int, int],
    disconnected: Callable[[], Awaitable[bool]],
) -> AsyncIterator[bytes]:
    """The live stream of one client: what it missed since ``start``, then what comes.

    Every event read from the topic passes here once, in partition order; the
    client's cursor advances over it whether or not it is shown, and an event
    is shown when it matches the filters and the caller may see it, or may see
    its previous state (so that a responder learns that its alert closed).
    """
    queue = store.listen()
    sent = dict(start)

    def shown(entry: Entry) -> bytes | None:
        if entry.offset < sent.get(entry.partition, 0):
            return None
        sent[entry.partition] = entry.offset + 1
        event = entry.event
        if not where.matches(event):
            return None
        visible = who.can_see(event)
        if not visible and event.sequence > 1:
            previous = store.alerts.get(event.alert_id, {}).get(event.sequence - 1)
            visible = previous is not None and who.can_see(previous)
        if not visible:
            return None
        return _sse(format_cursor(sent, store.partitions), event)

    try:
        yield b": connected\n\n"
        for entry in list(store.entries_from(start)):
            if (chunk := shown(entry)) is not None:
                yield chunk
        while not await disconnected():
            try:
                entry = await asyncio.wait_for(queue.get(), KEEP_ALIVE_S)
            except TimeoutError:
                yield b": keep-alive\n\n"
                continue
            if (chunk := shown(entry)) is not None:
                yield chunk
    finally:
        store.unlisten(queue)


def config_digests(files: list[Path]) -> str:
    """``name=sha256[:12]`` of each configuration file that exists, for the audit trail."""
    parts = []
    for path in files:
        if path.is_file():
            parts.append(f"{path.name}={hashlib.sha256(path.read_bytes()).hexdigest()[:12]}")
    return " ".join(parts)
