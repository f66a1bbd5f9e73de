"""``/api/v1/appeals/feedback`` and ``/api/v1/appeals/report``: citizens' appeals fed back
by category to the departments that own them (:mod:`streams.api.feedback`).

A department desk sees only its own categories and clusters; asking for another
department's is refused (403) and audited. Operators see every department's, or the
whole city's with no ``department``. Other roles see none.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from streams.alerting.lifecycle import is_closed
from streams.api import feedback
from streams.api.auth import Principal, Role
from streams.api.common import Ctx, Problem, Who, bad_request, echo, json_response
from streams.api.feedback import CategoryInfo
from streams.core.messages import AlertEvent

router = APIRouter()

#: Whose appeals: an operator's choice (none: the whole city); a desk sees its own.
Department = Annotated[
    str | None, Query(description="operators: one department; a desk sees its own")
]

#: The longest span the feedback ranks over: the ledger keeps a week and the day before.
MAX_HOURS = feedback.LEDGER_DAYS * 24 // 2


async def _department(ctx: Ctx, request: Request, who: Principal, asked: str | None) -> str | None:
    """The department the caller is shown: its own for a desk (another is refused and
    audited), the one asked or the whole city (None) for an operator."""
    if who.role is Role.DEPARTMENT:
        if asked is not None and asked != who.department:
            await ctx.forbid(
                request,
                who,
                f"{who.user} sees the appeals of department {who.department}, not {echo(asked)}",
                f"department/{asked}"[:200],
            )
        return who.department
    if who.role is not Role.OPERATOR:
        await ctx.forbid(request, who, f"role {who.role} sees no appeal feedback", None)
    if asked is not None and asked not in ctx.cfg.catalogue.departments:
        raise bad_request(
            f"department {echo(asked)} is not one of {sorted(ctx.cfg.catalogue.departments)}"
        )
    return asked


def _categories(ctx: Ctx, department: str | None) -> list[CategoryInfo]:
    return [c for c in ctx.categories if department is None or c.department == department]


def _alerts(ctx: Ctx) -> list[AlertEvent]:
    return [a for a in map(ctx.store.latest, list(ctx.store.alerts)) if a is not None]


@router.get(
    "/api/v1/appeals/feedback",
    summary="A department's appeal categories ranked by extreme emotion and volume, "
    "with trends, its open appeal clusters and its performance on them",
    responses={400: {"model": Problem}},
)
async def department_feedback(
    request: Request,
    ctx: Ctx,
    who: Who,
    department: Department = None,
    hours: Annotated[int, Query(ge=1, le=MAX_HOURS, description="the span ranked")] = 24,
    end: Annotated[
        datetime | None, Query(description="the span's end; default the newest tallies")
    ] = None,
) -> Response:
    shown = await _department(ctx, request, who, department)
    ledger = ctx.store.appeals
    stop = feedback.span_end(ledger, end)
    clusters, away = feedback.department_clusters(_alerts(ctx), ctx.store.timeline, shown)
    open_clusters = [(a, t) for a, t in clusters if not is_closed(a)]
    per_category: dict[str, int] = {}
    for alert, _ in open_clusters:
        if alert.evidence.category is not None:
            per_category[alert.evidence.category] = per_category.get(alert.evidence.category, 0) + 1
    open_clusters.sort(key=lambda pair: (pair[0].grade, pair[0].first_seen))
    return json_response(
        {
            "department": shown,
            "span": _span(stop, hours),
            "categories": feedback.ranked_categories(
                ledger, _categories(ctx, shown), stop, hours, clusters=per_category
            ),
            "clusters": [feedback.cluster_doc(a, t) for a, t in open_clusters],
            "performance": feedback.performance(clusters, ledger, len(away)),
        }
    )


def _span(end: float, hours: int) -> dict[str, Any]:
    return {
        "start": datetime.fromtimestamp(end - hours * feedback.HOUR, UTC),
        "end": datetime.fromtimestamp(end, UTC),
        "hours": hours,
    }


@router.get(
    "/api/v1/appeals/report",
    summary="A department's daily appeals report: one day of the city's calendar",
    responses={400: {"model": Problem}},
)
async def daily_report(
    request: Request,
    ctx: Ctx,
    who: Who,
    department: Department = None,
    day: Annotated[
        str | None,
        Query(description="YYYY-MM-DD in the city's time zone; default the newest tallies' day"),
    ] = None,
) -> Response:
    shown = await _department(ctx, request, who, department)
    zone = ctx.cfg.city.city.timezone
    ledger = ctx.store.appeals
    if day is None:
        day = feedback.day_of(
            (ledger.latest if ledger.latest is not None else ctx.clock().timestamp()) - 1, zone
        )
    try:
        start, stop = feedback.local_day(day, zone)
    except ValueError:
        raise bad_request(f"day {echo(day)} is not a date (YYYY-MM-DD)") from None
    hours = round((stop - start).total_seconds() / feedback.HOUR)  # 23 or 25 on a DST day
    clusters, away = feedback.department_clusters(
        _alerts(ctx), ctx.store.timeline, shown, (start, stop)
    )
    of_day = [
        (a, t)
        for a, t in clusters
        if a.first_seen < stop and (a.first_seen >= start or not is_closed(a))
    ]
    of_day.sort(key=lambda pair: pair[0].first_seen)
    return json_response(
        {
            "department": shown,
            "day": day,
            "timezone": zone,
            "span": _span(stop.timestamp(), hours),
            "generated_at": ctx.clock(),
            "tallies_until": (
                None
                if ledger.latest is None
                else datetime.fromtimestamp(min(ledger.latest, stop.timestamp()), UTC)
            ),
            "categories": feedback.ranked_categories(
                ledger, _categories(ctx, shown), stop.timestamp(), hours
            ),
            "clusters": [feedback.cluster_doc(a, t) for a, t in of_day],
            "rerouted": away,
            "performance": feedback.performance(of_day, ledger, len(away)),
        }
    )
