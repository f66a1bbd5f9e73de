"""``/api/v1/alerts`` and ``/api/v1/stream``: alerts, their timelines, operators' actions
and the live feed.

Reads come from the worker's :class:`~streams.api.store.AlertStore`. An alert's detail
gathers every operator note from the events of its timeline (each event carries only the
note of the action that caused it). Actions are published on ``city.alert-actions`` and
applied by the alert lifecycle of whichever worker owns the district; the API answers 202
once the broker has acknowledged the action.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from datetime import datetime
from typing import Annotated

import orjson
from fastapi import APIRouter, Query, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, Field

from streams.api.auth import Principal, Role
from streams.api.common import (
    ApiContext,
    Ctx,
    Problem,
    Who,
    alert_doc,
    bad_request,
    echo,
    json_response,
    not_found,
    source_ip,
)
from streams.api.history import RECORD_TIME_SLACK, first_seen_of, latest_by_alert
from streams.api.store import (
    AlertFilter,
    AlertStore,
    CursorError,
    Entry,
    actions_of,
    format_cursor,
    parse_cursor,
    with_notes,
)
from streams.core.messages import (
    ActionRecord,
    AlertAction,
    AlertActionType,
    AlertEvent,
    AlertKind,
    AlertStatus,
    Grade,
    Workflow,
)

KEEP_ALIVE_S = 15.0

router = APIRouter()


class ActionRequest(BaseModel):
    """An operator's action on one alert."""

    model_config = {"extra": "forbid"}

    action: AlertActionType
    note: Annotated[str, Field(max_length=4000)] | None = None
    department: Annotated[str, Field(max_length=64)] | None = Field(
        None, description="dispatch or reroute: the department to send it to"
    )
    silence_s: Annotated[float, Field(gt=0, le=30 * 86400)] | None = Field(
        None, description="silence: for how long, seconds"
    )


#: One event of the live stream, as the OpenAPI document describes it.
SSE_EVENT = {
    "type": "object",
    "properties": {
        "id": {"type": "string", "description": "the cursor after this event"},
        "event": {"type": "string"},
        "data": {"type": "string", "contentMediaType": "application/json"},
    },
    "required": ["event", "data"],
}


class AlertList(BaseModel):
    """The alerts a query found, as the caller may see them."""

    alerts: list[AlertEvent]
    count: int
    history_from: datetime | None = Field(
        None,
        description="closed alerts last updated before this time are not in the answer: the "
        "worker keeps CITYVITALS_API_HISTORY_DAYS of them; a since before it reads them from "
        "Kafka. null: nothing the query asks for was left out",
    )


class AlertDetail(BaseModel):
    """One alert: its latest event with every note, its timeline and its actions."""

    alert: AlertEvent
    timeline: list[AlertEvent]
    actions: list[ActionRecord]


class ActionAccepted(BaseModel):
    """An action as published on ``city.alert-actions``."""

    action: AlertAction


def alert_filter(
    district: str | None = None,
    street: str | None = None,
    domain: str | None = None,
    grade: list[str] | None = None,
    kind: AlertKind | None = None,
    status: AlertStatus | None = None,
    workflow: Workflow | None = None,
    department: str | None = None,
    open_: bool | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> AlertFilter:
    """The filter of a query's parameters; 400 for a grade or time that is not one."""
    grades: frozenset[Grade] | None = None
    if grade:
        chosen = set()
        for text in grade:
            g = Grade.__members__.get(text.upper()) or (
                Grade(int(text)) if text in ("1", "2", "3", "4") else None
            )
            if g is None:
                raise bad_request(f"grade {echo(text)} is not one of I, II, III, IV (or 1-4)")
            chosen.add(g)
        grades = frozenset(chosen)
    for name, value in (("since", since), ("until", until)):
        if value is not None and value.tzinfo is None:
            raise bad_request(f"{name} needs a time zone, e.g. 2026-11-24T08:00:00+08:00")
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


async def scoped_filter(
    ctx: Ctx, request: Request, who: Principal, where: AlertFilter
) -> AlertFilter:
    """``where`` within what the caller may list: history only for those who may."""
    if not who.may_see_alerts:
        await ctx.forbid(request, who, f"role {who.role} sees no alerts", None)
    history = (
        where.since is not None
        or where.until is not None
        or where.open is False
        or where.status == AlertStatus.RESOLVED.value
        or where.workflow in (Workflow.RESOLVED.value, Workflow.FALSE_POSITIVE.value)
    )
    if history and not who.may_list_history:
        await ctx.forbid(request, who, f"role {who.role} may not list alert history", None)
    if not who.may_list_history:
        where = dataclasses.replace(where, open=True)
    return where


@router.get(
    "/api/v1/alerts",
    summary="List alerts (the latest event of each)",
    responses={200: {"model": AlertList}, 400: {"model": Problem}, 503: {"model": Problem}},
)
async def list_alerts(
    request: Request,
    ctx: Ctx,
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
        district, street, domain, grade, kind, status, workflow, department, open, since, until
    )
    where = await scoped_filter(ctx, request, who, where)
    start = ctx.store.alerts_start()
    older: list[AlertEvent] = []
    left_out = start
    if start is None or where.open is True or (where.since is not None and where.since >= start):
        left_out = None
    elif where.since is not None:
        older = await older_alerts(ctx, where.since, start)
        left_out = None
    found = ctx.store.query(where, who.can_see, limit, older)
    return json_response(
        {"alerts": [alert_doc(a) for a in found], "count": len(found), "history_from": left_out}
    )


async def older_alerts(ctx: ApiContext, since: datetime, start: datetime) -> list[AlertEvent]:
    """The latest event of each alert the store no longer holds that was last updated
    between ``since`` and the store's history ``start``, read on demand."""
    events = await ctx.history.alert_events(since - RECORD_TIME_SLACK, start + RECORD_TIME_SLACK)
    held = ctx.store.alerts
    return list(latest_by_alert(events, skip=held.__contains__).values())


async def older_timeline(ctx: ApiContext, alert_id: str) -> list[AlertEvent]:
    """The events of an alert that closed before the store's history, read on demand
    from when it first fired (its id says when); empty when there is no such alert."""
    start, first = ctx.store.alerts_start(), first_seen_of(alert_id)
    if start is None or first is None or first >= start:
        return []
    events = await ctx.history.alert_events(
        first - RECORD_TIME_SLACK, start + RECORD_TIME_SLACK, alert_id
    )
    by_sequence = {e.sequence: e for e in events if e.alert_id == alert_id}
    return [by_sequence[s] for s in sorted(by_sequence)]


@router.get(
    "/api/v1/alerts/{alert_id}",
    summary="One alert with its evidence and full timeline",
    responses={200: {"model": AlertDetail}, 404: {"model": Problem}, 503: {"model": Problem}},
)
async def alert_detail(request: Request, ctx: Ctx, who: Who, alert_id: str) -> Response:
    """``alert``: the latest event, its action history with every note;
    ``timeline``: every event as published (each carries the note of the action
    that caused it); ``actions``: every action on the alert in the order applied,
    each with its note, including those older than the event's bounded history. An alert
    that closed before the worker's history (CITYVITALS_API_HISTORY_DAYS) is read from
    Kafka."""
    if not who.may_see_alerts:
        await ctx.forbid(request, who, f"role {who.role} sees no alerts", alert_id)
    timeline = ctx.store.timeline(alert_id) or await older_timeline(ctx, alert_id)
    if not timeline:
        return not_found(alert_id)
    alert = timeline[-1]
    if not who.can_see(alert):
        await ctx.forbid(
            request, who, f"alert {alert_id} is outside the scope of {who.user}", alert_id
        )
    await ctx.audit(request, who, "read_alert", alert_id)
    return json_response(
        {
            "alert": alert_doc(with_notes(alert, timeline)),
            "timeline": [alert_doc(e) for e in timeline],
            "actions": [orjson.loads(r.to_json()) for r in actions_of(timeline)],
        }
    )


def check_action(body: ActionRequest, departments: Collection[str]) -> None:
    """400 for an action whose fields do not fit it (a dispatch without a department...)."""
    if body.action in (AlertActionType.DISPATCH, AlertActionType.REROUTE):
        if body.department is None:
            raise bad_request(f"{body.action.value} needs a department")
        if body.department not in departments:
            raise bad_request(
                f"department {echo(body.department)} is not one of {sorted(departments)}"
            )
    elif body.department is not None:
        raise bad_request(f"{body.action.value} takes no department")
    if body.action is AlertActionType.SILENCE and body.silence_s is None:
        raise bad_request("silence needs silence_s (seconds)")
    if body.action is not AlertActionType.SILENCE and body.silence_s is not None:
        raise bad_request(f"{body.action.value} takes no silence_s")
    if body.action in (AlertActionType.NOTE, AlertActionType.FIELD_REPORT) and not body.note:
        raise bad_request(f"{body.action.value} needs a note")
    if body.action is AlertActionType.REROUTE and not (body.note or "").strip():
        raise bad_request("reroute needs a note: the reason it is not this department's")


@router.post(
    "/api/v1/alerts/{alert_id}/actions",
    status_code=202,
    summary="Act on an alert; answers once the action is durable on city.alert-actions",
    responses={
        202: {"model": ActionAccepted},
        400: {"model": Problem},
        404: {"model": Problem},
        409: {"model": Problem, "description": "the alert holds the most notes it takes"},
    },
)
async def act(request: Request, ctx: Ctx, who: Who, alert_id: str, body: ActionRequest) -> Response:
    alert = ctx.store.latest(alert_id)
    if alert is None:
        return not_found(alert_id)
    if not who.can_see(alert):
        await ctx.forbid(
            request, who, f"alert {alert_id} is outside the scope of {who.user}", alert_id
        )
    if not who.can_act(alert, body.action):
        await ctx.forbid(
            request,
            who,
            f"{who.user} ({who.role}) may not {body.action.value} alert {alert_id}",
            alert_id,
        )
    check_action(body, ctx.cfg.catalogue.departments)
    if body.action is AlertActionType.REROUTE and body.department == alert.department:
        raise bad_request(f"alert {alert_id} is already {echo(alert.department)}'s")
    if (full := ctx.notes_full(alert_id, body.note)) is not None:
        return full
    action = AlertAction(
        action_id=uuid.uuid4().hex,
        alert_id=alert_id,
        district=alert.district,
        action=body.action,
        actor=who.user,
        role=who.role.value,
        at=ctx.clock(),
        department=body.department,
        note=body.note,
        silence_s=body.silence_s,
        source_ip=source_ip(request),
        kind="responder" if who.role is Role.RESPONDER else "operator",
    )
    await ctx.publisher.action(action)
    detail = body.note
    if body.action is AlertActionType.REROUTE:
        detail = f"re-routed from {alert.department} to {body.department}: {body.note}"
    await ctx.audit(request, who, body.action.value, alert_id, detail)
    return json_response({"action": orjson.loads(action.to_json())}, 202)


@router.get(
    "/api/v1/stream",
    summary="Live alert events (Server-Sent Events); resumes from Last-Event-ID",
    response_class=StreamingResponse,
    responses={
        200: {
            "content": {"text/event-stream": {"schema": SSE_EVENT}},
            "description": "events `alert` (`data`: an alert event as JSON; `id`: the cursor "
            "to resume after it), and comments that keep the connection open",
        },
        400: {"model": Problem},
    },
)
async def stream(
    request: Request,
    ctx: Ctx,
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
    where = alert_filter(district, street, domain, grade, kind, department=department)
    if not who.may_see_alerts:
        await ctx.forbid(request, who, f"role {who.role} sees no alerts", None)
    store = ctx.store
    resume = request.headers.get("last-event-id") or last_event_id
    try:
        if resume:
            start = parse_cursor(resume, store.partitions)
        elif from_start:
            start = {}
        else:
            start = dict(store.positions)
    except CursorError as exc:
        raise bad_request(str(exc)) from None
    return StreamingResponse(
        events(store, who, where, start, request.is_disconnected),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def _sse(cursor: str, event: AlertEvent) -> bytes:
    return b"id: " + cursor.encode() + b"\nevent: alert\ndata: " + event.to_json() + b"\n\n"


def _overflow(cursor: str, bound: int) -> bytes:
    """The last words to a client that fell behind: why, and the cursor to resume from."""
    data = orjson.dumps(
        {
            "reason": "fell_behind",
            "detail": f"more than {bound} alert events waited for this client; "
            "reconnect with Last-Event-ID to resume where it stopped",
            "resume": cursor,
        }
    )
    return b"id: " + cursor.encode() + b"\nevent: overflow\ndata: " + data + b"\n\n"


async def events(
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

    A client that falls more than the store's ``stream_queue`` events behind is
    sent an ``overflow`` event, whose id is the cursor of everything it was given
    or passed over, and the stream ends: it resumes from that ``Last-Event-ID``
    with nothing lost and nothing repeated.
    """
    listener = store.listen()
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
            if listener.overflowed:
                break
            if (chunk := shown(entry)) is not None:
                yield chunk
        while not listener.overflowed and not await disconnected():
            arrived = await listener.next(KEEP_ALIVE_S)
            if arrived is None:
                if not listener.overflowed:
                    yield b": keep-alive\n\n"
                continue
            if (chunk := shown(arrived)) is not None:
                yield chunk
        if listener.overflowed:
            yield _overflow(format_cursor(sent, store.partitions), listener.bound)
    finally:
        store.unlisten(listener)
