"""What every router of the API shares: the caller, the worker's state, the audit trail.

:class:`ApiContext` is the one object the routers reach the worker through (its alert
store, the city's configuration, the publisher of actions and audit records, the clock,
the responder-link signer and the reader of history older than the store's); :func:`create_api <streams.api.app.create_api>` puts it
on ``app.state`` and each handler receives it as ``ctx: Ctx``. The caller comes the same
way, as ``who: Who``, authenticated and scoped by :mod:`streams.api.auth`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any, Protocol, cast

import orjson
from fastapi import Depends, HTTPException, Request, Security
from fastapi.responses import Response
from fastapi.security import APIKeyQuery, HTTPBearer
from pydantic import BaseModel

from streams.alerting.lifecycle import MAX_NOTES_PER_ALERT
from streams.api.auth import AuthError, Principal, bearer_token
from streams.api.feedback import CategoryInfo
from streams.api.history import HistoryReader, NoHistory
from streams.api.store import AlertStore
from streams.core.config import CityConfig
from streams.core.messages import AlertAction, AlertEvent, AuditRecord
from streams.notify.respond import LinkSigner


class Publisher(Protocol):
    """Where the API writes: the actions topic and the audit topic."""

    async def action(self, action: AlertAction) -> None: ...

    async def audit(self, record: AuditRecord) -> None: ...


class Problem(BaseModel):
    """Every error answer: what went wrong in a word, and why in a sentence."""

    error: str
    detail: str


#: The most characters of one value from the caller that an error answer repeats.
ECHO_CHARS = 64
#: The most characters of an error answer's ``detail``, whatever it quotes.
DETAIL_CHARS = 1024


def echo(value: object) -> str:
    """A value from the request, quoted for an error answer and cut to :data:`ECHO_CHARS`
    characters with an ellipsis: an unknown id or a bad parameter is shown, not a megabyte."""
    text = str(value)
    return repr(text if len(text) <= ECHO_CHARS else text[:ECHO_CHARS] + "…")


def problem(
    error: str, detail: str, status: int, headers: Mapping[str, str] | None = None
) -> Response:
    """An error answer (:class:`Problem`), its detail cut to :data:`DETAIL_CHARS` characters."""
    if len(detail) > DETAIL_CHARS:
        detail = detail[:DETAIL_CHARS] + "…"
    response = json_response({"error": error, "detail": detail}, status)
    response.headers.update(headers or {})
    return response


@dataclass
class ApiContext:
    """The worker as the API's handlers see it."""

    store: AlertStore
    cfg: CityConfig
    publisher: Publisher
    clock: Callable[[], datetime]
    ready: Callable[[], bool]
    links: LinkSigner | None = None
    max_notes: int = MAX_NOTES_PER_ALERT  # CITYVITALS_MAX_NOTES_PER_ALERT
    history: HistoryReader = field(default_factory=NoHistory)  # what memory no longer holds
    categories: tuple[CategoryInfo, ...] = ()  # of config/appeals.yaml, for feedback

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

    def notes_full(self, alert_id: str, note: str | None) -> Response | None:
        """409 when ``note`` would take the alert past the notes one alert takes (the
        alert lifecycle would refuse the action too), else None."""
        if not note:
            return None
        taken = sum(1 for r in self.store.actions(alert_id) if r.note)
        if taken < self.max_notes:
            return None
        return problem(
            "too_many_notes",
            f"alert {alert_id} already holds {taken} notes, the most one alert takes "
            "(CITYVITALS_MAX_NOTES_PER_ALERT); act without a note",
            409,
        )

    async def forbid(
        self, request: Request, who: Principal, reason: str, target: str | None
    ) -> None:
        """Audit the refusal, then refuse (403)."""
        await self.audit(request, who, "denied", target, reason)
        raise AuthError(403, reason)


def _context(request: Request) -> ApiContext:
    return cast(ApiContext, request.app.state.ctx)


# declared so that the OpenAPI document says how each route is authenticated; the
# token itself is read below, so that a missing one is our 401, not FastAPI's 403
_BEARER = HTTPBearer(scheme_name="bearer", auto_error=False, description="a token of roles.yaml")
_ACCESS_TOKEN = APIKeyQuery(
    name="access_token",
    scheme_name="access_token",
    auto_error=False,
    description="the same token, for EventSource",
)


def _principal(
    request: Request,
    _bearer: Annotated[object, Security(_BEARER)] = None,
    _query: Annotated[object, Security(_ACCESS_TOKEN)] = None,
) -> Principal:
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
    return problem("not_found", f"no alert {echo(alert_id)}", 404)
