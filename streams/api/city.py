"""``/api/v1/me``, ``catalogue``, ``districts``, ``performance`` and ``audit``: who the
caller is, the names of the city, the districts' vital signs, departments' performance
and the audit trail, each as the caller's role and scope allow."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel

from streams.api import feedback
from streams.api.auth import Role
from streams.api.common import ApiContext, Ctx, Problem, Who, json_response
from streams.api.history import RECORD_TIME_SLACK
from streams.core.messages import AuditRecord

router = APIRouter()


class DistrictView(BaseModel):
    """A district's latest vital signs (a ``city.vitals`` document cut to what the
    caller may see), or none yet."""

    code: str
    vitals: dict[str, Any] | None


class Districts(BaseModel):
    districts: list[DistrictView]


class PerformanceRow(BaseModel):
    """One department at one grade (:meth:`~streams.api.store.AlertStore.performance`)."""

    department: str
    grade: str
    alerts: int
    acknowledged: int
    resolved: int
    false_positives: int
    median_ack_s: float | None
    median_resolve_s: float | None
    closure_rate: float
    false_positive_rate: float | None


class AppealPerformance(BaseModel):
    """One department's performance on its appeal clusters
    (:func:`~streams.api.feedback.performance`)."""

    department: str
    clusters: int
    handled: int
    rerouted_away: int
    appeals_handled: int
    median_handle_s: float | None
    appeals_after_handling: int
    repeats_after_handling: int
    repeat_share_after_handling: float | None


class Performance(BaseModel):
    rows: list[PerformanceRow]
    appeals: list[AppealPerformance]


class AuditTrail(BaseModel):
    records: list[AuditRecord]


@router.get("/api/v1/me", summary="The caller's identity and scope")
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


@router.get("/api/v1/catalogue", summary="Names of the city's places, indicators and departments")
async def catalogue_names(ctx: Ctx, who: Who) -> dict[str, Any]:
    city, catalogue = ctx.cfg.city, ctx.cfg.catalogue
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
                    {"code": s.code, "name_zh": s.name_zh, "name_en": s.name_en} for s in d.streets
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


@router.get(
    "/api/v1/districts",
    summary="Each district's latest vital signs, as the caller may see them",
    responses={200: {"model": Districts}},
)
async def districts(ctx: Ctx, who: Who) -> Response:
    out = []
    for d in ctx.cfg.city.districts:
        if not who.can_see_district(d.code):
            continue
        doc = ctx.store.vitals.get(d.code)
        out.append(
            {
                "code": d.code,
                "vitals": None if doc is None else who.visible_vitals(doc, ctx.cfg.catalogue),
            }
        )
    return json_response({"districts": out})


@router.get(
    "/api/v1/performance",
    summary="Department performance per grade",
    responses={200: {"model": Performance}},
)
async def performance(request: Request, ctx: Ctx, who: Who) -> Response:
    if who.role not in (Role.OPERATOR, Role.DEPARTMENT):
        await ctx.forbid(request, who, f"role {who.role} sees no department performance", None)
    store = ctx.store
    held = [a for a in map(store.latest, list(store.alerts)) if a is not None]
    alerts = [a for a in held if who.role is Role.OPERATOR or who.department == a.department]
    departments = (
        sorted(ctx.cfg.catalogue.departments) if who.role is Role.OPERATOR else [who.department]
    )
    appeals = []
    for department in departments:
        clusters, away = feedback.department_clusters(held, store.timeline, department)
        if clusters or away:
            figures = feedback.performance(clusters, store.appeals, len(away))
            appeals.append({"department": department, **figures})
    return json_response({"rows": store.performance(alerts), "appeals": appeals})


@router.get(
    "/api/v1/audit",
    summary="The audit trail (operators only)",
    responses={200: {"model": AuditTrail}, 503: {"model": Problem}},
)
async def audit_trail(
    request: Request,
    ctx: Ctx,
    who: Who,
    user: str | None = None,
    action: str | None = None,
    target: str | None = None,
    since: datetime | None = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 200,
) -> Response:
    if not who.may_read_audit:
        await ctx.forbid(request, who, f"role {who.role} may not read the audit trail", None)
    await ctx.audit(request, who, "read_audit", None)
    records = list(reversed(ctx.store.audit))
    start = ctx.store.audit_start()
    if since is not None and start is not None and since < start:
        records = await with_older_audit(ctx, records, since, start)
    rows = [
        r
        for r in records
        if (user is None or r.user == user)
        and (action is None or r.action == action)
        and (target is None or r.target == target)
        and (since is None or r.at >= since)
    ][:limit]
    return json_response({"records": [orjson.loads(r.to_json()) for r in rows]})


async def with_older_audit(
    ctx: ApiContext, held: list[AuditRecord], since: datetime, start: datetime
) -> list[AuditRecord]:
    """``held`` (newest first) and the records from ``since`` up to the store's history
    ``start``, read on demand, newest first."""
    older = await ctx.history.audit_records(since - RECORD_TIME_SLACK, start + RECORD_TIME_SLACK)
    seen = {r.to_json() for r in held if r.at < start}
    extra = [r for r in older if r.at < start and r.to_json() not in seen]
    return sorted([*held, *extra], key=lambda r: r.at, reverse=True)
