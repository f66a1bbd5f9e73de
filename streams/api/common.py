"""What every router of the API shares: the caller, the worker's state, the audit trail.

:class:`ApiContext` is the one object the routers reach the worker through (its alert
store, the city's configuration, the publisher of actions and audit records, the clock
and the responder-link signer); :func:`create_api <streams.api.app.create_api>` puts it
on ``app.state`` and each handler receives it as ``ctx: Ctx``. The caller comes the same
way, as ``who: Who``, authenticated and scoped by :mod:`streams.api.auth`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Protocol, cast

import orjson
from fastapi import Depends, HTTPException, Request
from fastapi.responses import Response
from pydantic import BaseModel

from streams.api.auth import AuthError, Principal, bearer_token
from streams.api.store import AlertStore
from streams.core.config import CityConfig
from streams.core.messages import AlertAction, AlertEvent, AuditRecord
from streams.notify.respond import LinkSigner


class Publisher(Protocol):
    """Where the API writes: the actions topic and the audit topic."""

    async def action(self, action: AlertAction) -> None: ...

    async def audit(self, record: AuditRecord) -> None: ...


class Problem(BaseModel):
    error: str
    detail: str


@dataclass
class ApiContext:
    """The worker as the API's handlers see it."""

    store: AlertStore
    cfg: CityConfig
    publisher: Publisher
    clock: Callable[[], datetime]
    ready: Callable[[], bool]
    links: LinkSigner | None = None

    async def audit(
        self,
        request: Request,
        who: Principal,
        action: str,
        target: str | None,
        detail: str | None = None,
    ) -> None:
        """Publish one audit record of ``who`` doing ``action`` on ``target``."""
        await self.publisher.audit(
            AuditRecord(
                at=self.clock(),
                user=who.user,
                role=who.role.value,
                action=action,
                target=target,
                source_ip=source_ip(request),
                detail=detail,
            )
        )

    async def forbid(
        self, request: Request, who: Principal, reason: str, target: str | None
    ) -> None:
        """Audit the refusal, then refuse (403)."""
        await self.audit(request, who, "denied", target, reason)
        raise AuthError(403, reason)


def _context(request: Request) -> ApiContext:
    return cast(ApiContext, request.app.state.ctx)


def _principal(request: Request) -> Principal:
    """The caller, from ``Authorization: Bearer`` or ``?access_token=`` (EventSource)."""
    token = bearer_token(request.headers.get("authorization")) or request.query_params.get(
        "access_token"
    )
    state = request.app.state
    return cast(Principal, state.auth.authenticate(token, state.ctx.clock()))


Ctx = Annotated[ApiContext, Depends(_context)]
Who = Annotated[Principal, Depends(_principal)]


def source_ip(request: Request) -> str | None:
    return request.client.host if request.client else None


def json_response(data: Any, status: int = 200) -> Response:
    return Response(
        orjson.dumps(data, option=orjson.OPT_UTC_Z),
        status_code=status,
        media_type="application/json",
    )


def alert_doc(alert: AlertEvent) -> Any:
    return orjson.loads(alert.to_json())


def bad_request(detail: str) -> Exception:
    return HTTPException(status_code=400, detail=detail)


def not_found(alert_id: str) -> Response:
    return json_response({"error": "not_found", "detail": f"no alert {alert_id!r}"}, 404)
