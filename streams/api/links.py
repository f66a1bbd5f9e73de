"""``/api/v1/respond/{token}``: a responder acts through the signed link of a notification.

The link (:mod:`streams.notify.respond`) is the credential, for one alert and two actions
(acknowledge, field report); the actor recorded is ``link:<receiver>[/<responder>]``.
``/respond/{token}`` (:mod:`streams.api.app`) is the page a responder opens from the
notification.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from streams.api.auth import ROLE_ACTIONS, AuthError, Principal, Role
from streams.api.common import (
    Ctx,
    Problem,
    alert_doc,
    bad_request,
    json_response,
    not_found,
    source_ip,
)
from streams.api.store import is_open
from streams.core.messages import AlertAction, AlertActionType, AlertEvent
from streams.notify.payloads import place_name
from streams.notify.respond import Grant, LinkError

#: Headers of every answer to a link: the token must not be cached or passed on.
PRIVATE = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}

router = APIRouter()


class RespondRequest(BaseModel):
    """A responder's action through a responder link: acknowledge, or a field report."""

    model_config = {"extra": "forbid"}

    action: Literal[AlertActionType.ACKNOWLEDGE, AlertActionType.FIELD_REPORT]
    note: Annotated[str, Field(max_length=4000)] | None = None
    responder: Annotated[str, Field(min_length=1, max_length=80)] | None = Field(
        None, description="who is responding, e.g. a unit's call sign; recorded as the actor"
    )


class LinkView(BaseModel):
    """What a responder link shows: its alert, where, for whom, until when, and what
    it allows now (nothing once the alert is closed)."""

    alert: AlertEvent
    place_zh: str
    place_en: str
    receiver: str
    expires_at: datetime
    actions: list[str]


class LinkAction(BaseModel):
    """The action a responder link published on ``city.alert-actions``."""

    action: AlertAction


async def granted(ctx: Ctx, request: Request, token: str) -> Grant:
    """What the link grants; a refusal is audited and answered 401."""
    if ctx.links is None:
        reason = "responder links are not enabled (routes.yaml: responder_links)"
    else:
        try:
            return ctx.links.verify(token, ctx.clock())
        except LinkError as exc:
            reason = str(exc)
    await ctx.audit(request, link_user(None), "denied", "/api/v1/respond", reason)
    raise AuthError(401, reason)


def link_user(grant: Grant | None, responder: str | None = None) -> Principal:
    """Who acts through a link: ``link:<receiver>[/<responder>]`` (``link:?`` if refused)."""
    user = f"link:{grant.receiver if grant else '?'}" + (f"/{responder}" if responder else "")
    return Principal(user=user, role=Role.RESPONDER, department="unknown", display_name=user)


def link_alert(ctx: Ctx, grant: Grant) -> AlertEvent | None:
    alert = ctx.store.latest(grant.alert_id)
    return alert if alert is not None and alert.district == grant.district else None


@router.get(
    "/api/v1/respond/{token}",
    summary="The alert a responder link is for, and what the link allows now",
    responses={200: {"model": LinkView}, 401: {"model": Problem}, 404: {"model": Problem}},
)
async def respond_view(request: Request, ctx: Ctx, token: str) -> Response:
    grant = await granted(ctx, request, token)
    alert = link_alert(ctx, grant)
    if alert is None:
        return not_found(grant.alert_id)
    await ctx.audit(request, link_user(grant), "read_alert", grant.alert_id, "responder link")
    allowed = sorted(a.value for a in ROLE_ACTIONS[Role.RESPONDER]) if is_open(alert) else []
    response = json_response(
        {
            "alert": alert_doc(alert),
            "place_zh": place_name(ctx.cfg, alert, zh=True),
            "place_en": place_name(ctx.cfg, alert, zh=False),
            "receiver": grant.receiver,
            "expires_at": grant.expires_at,
            "actions": allowed,
        }
    )
    response.headers.update(PRIVATE)
    return response


@router.post(
    "/api/v1/respond/{token}",
    status_code=202,
    summary="Acknowledge the link's alert or add a field report; answers once durable",
    responses={
        202: {"model": LinkAction},
        400: {"model": Problem},
        401: {"model": Problem},
        404: {"model": Problem},
        409: {"model": Problem},
    },
)
async def respond_act(request: Request, ctx: Ctx, token: str, body: RespondRequest) -> Response:
    grant = await granted(ctx, request, token)
    alert = link_alert(ctx, grant)
    if alert is None:
        return not_found(grant.alert_id)
    if not is_open(alert):
        return json_response(
            {
                "error": "conflict",
                "detail": f"alert {grant.alert_id} is closed ({alert.workflow.value}); "
                f"nothing to {body.action.value}",
            },
            409,
        )
    if body.action is AlertActionType.FIELD_REPORT and not body.note:
        raise bad_request("field_report needs a note")
    if (full := ctx.notes_full(grant.alert_id, body.note)) is not None:
        return full
    who = link_user(grant, body.responder)
    action = AlertAction(
        action_id=uuid.uuid4().hex,
        alert_id=grant.alert_id,
        district=alert.district,
        action=body.action,
        actor=who.user,
        role=Role.RESPONDER.value,
        at=ctx.clock(),
        note=body.note,
        source_ip=source_ip(request),
        kind="responder",
    )
    await ctx.publisher.action(action)
    await ctx.audit(request, who, body.action.value, grant.alert_id, body.note)
    response = json_response({"action": orjson.loads(action.to_json())}, 202)
    response.headers.update(PRIVATE)
    return response
