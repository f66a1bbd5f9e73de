"""The command-centre API fuzzed against its own OpenAPI document (schemathesis).

Every operation of ``/openapi.json`` is called with requests generated from the
document, as every user of ``config/roles.yaml``, with no token and with a forged
one, in process (no broker), with a fixed seed and a bounded number of examples.
Each answer must be one the document declares (status, content type, body schema),
never a server error, with error details of bounded length, and must show or
accept nothing outside what the caller's role and scope allow
(:class:`~streams.api.auth.Principal`).
"""

from __future__ import annotations

import secrets
from collections import Counter
from collections.abc import Awaitable, Callable, MutableMapping
from datetime import timedelta
from typing import Any

import anyio
import orjson
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    response_schema_conformance,
    status_code_conformance,
)

from streams.api.app import create_api
from streams.api.auth import Principal, Role
from streams.api.common import DETAIL_CHARS, ECHO_CHARS
from streams.api.store import AlertStore
from streams.core.messages import (
    ActionRecord,
    AlertActionType,
    AlertEvent,
    AlertKind,
    AlertStatus,
    AppealTallies,
    AppealTally,
    AuditRecord,
    Evidence,
    Grade,
    Workflow,
)
from streams.kafka.worker import feedback_categories
from streams.notify.respond import LinkSigner
from streams.voice.appeals import load_appeals
from tests.api.test_api import BOOK, CFG, NOW, TOKENS, Recorder, stored
from tests.api.test_auth import alert

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

DEPARTMENTS = sorted(CFG.catalogue.departments)
CATEGORIES = feedback_categories(load_appeals(CFG))


def _alert(i: int, district: str, street: str | None) -> AlertEvent:
    """Alert ``i``: departments, co-handlers, dispatches, grades and states vary with it."""
    dispatched = DEPARTMENTS[(i + 3) % len(DEPARTMENTS)] if i % 4 == 0 else None
    # every third a cluster of citizens' appeals, of a category its department owns or not
    cluster = {
        "kind": AlertKind.PUBLIC_OPINION,
        "evidence": Evidence(
            rule="public_opinion.cluster",
            version="v1",
            category=CATEGORIES[i % len(CATEGORIES)].code,
        ),
    }
    return alert(
        **(cluster if i % 3 == 1 else {}),
        alert_id=f"fp{i:04d}-1795999500",
        fingerprint=f"fp{i:04d}",
        district=district,
        street=street,
        department=DEPARTMENTS[i % len(DEPARTMENTS)],
        co_departments=[DEPARTMENTS[(i + 1) % len(DEPARTMENTS)]] if i % 5 == 0 else [],
        grade=list(Grade)[i % 4],
        status=AlertStatus.RESOLVED if i % 6 == 5 else AlertStatus.FIRING,
        workflow=Workflow.FALSE_POSITIVE if i % 7 == 6 else Workflow.OPEN,
        actions=[
            ActionRecord(
                action_id=f"d{i}",
                action="dispatch",
                actor="cc.duty",
                role="operator",
                at=NOW,
                department=dispatched,
                note="sent",
            )
        ]
        if dispatched
        else [],
    )


PLACES = [(d.code, street) for d in CFG.city.districts for street in [None, *d.streets[:2]]]
# every place twice: once with the rotating owners and states, once an open fire alert,
# so that every user of roles.yaml (the fire station's responders too) sees some
ALERTS = [
    *(_alert(i, d, s.code if s else None) for i, (d, s) in enumerate(PLACES)),
    *(
        _alert(100 + i, d, s.code if s else None).model_copy(
            update={"department": "fire", "status": AlertStatus.FIRING, "workflow": Workflow.OPEN}
        )
        for i, (d, s) in enumerate(PLACES)
    ),
]


def _store() -> AlertStore:
    """Every alert above, every district's vital signs with every indicator and domain,
    and an audit trail."""
    store = stored(*ALERTS)
    codes = [i.code for i in CFG.catalogue.indicators]
    for district in CFG.city.districts:
        store.vitals[district.code] = {
            "district": district.code,
            "window_end": "2026-11-24T07:59:00Z",
            "composite": 71.5,
            "domains": dict.fromkeys(CFG.catalogue.domains, 70.0),
            "indicators": {c: {"minute": {"count": 2}} for c in codes},
            "events": 2 * len(codes),
        }
    for n, district in enumerate(CFG.city.districts):
        streets = [s.code for s in district.streets[:2]]
        store.add_appeal_tallies(
            AppealTallies(
                district=district.code,
                window_start=NOW - timedelta(minutes=n + 2),
                window_end=NOW - timedelta(minutes=n + 1),
                categories={
                    c.code: AppealTally(
                        appeals=k + 1, extreme=k % 3, rated=k % 2, bad=0, repeats=k % 4
                    )
                    for k, c in enumerate(CATEGORIES)
                },
                streets={
                    s: {
                        CATEGORIES[n % len(CATEGORIES)].code: AppealTally(
                            appeals=2, extreme=1, rated=0, bad=0, repeats=1
                        )
                    }
                    for s in streets
                },
                closed_at=NOW,
            ).to_json()
        )
    for n in range(30):
        store.add_audit(
            AuditRecord(
                at=NOW - timedelta(minutes=n),
                user="cc.duty",
                role="operator",
                action="read_alert",
                target=ALERTS[n % len(ALERTS)].alert_id,
            )
        )
    return store


class LeavesStreams:
    """The API, with live-stream clients that leave shortly after they asked: a test
    client reads an answer to its end, and the live stream has none. What the stream
    sent by then (its backlog, with ``from_start``) is the answer."""

    LINGER_S = 0.05

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != "/api/v1/stream":
            await self.app(scope, receive, send)
            return
        asked = started = ended = False

        async def leaves() -> Message:
            nonlocal asked
            if not asked:
                asked = True
                return await receive()
            await anyio.sleep(self.LINGER_S)
            return {"type": "http.disconnect"}

        async def tracked(message: Message) -> None:
            nonlocal started, ended
            if message["type"] == "http.response.start":
                started = True
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                ended = True
            await send(message)

        await self.app(scope, leaves, tracked)
        if started and not ended:
            await send({"type": "http.response.body", "body": b"", "more_body": False})


STORE = _store()
SIGNER = LinkSigner(secrets.token_bytes(32), ttl_s=3600)
APP = LeavesStreams(
    create_api(
        STORE,
        BOOK,
        CFG,
        Recorder(),
        ready=lambda: True,
        clock=lambda: NOW,
        links=SIGNER,
        categories=CATEGORIES,
    )
)
SCHEMA = schemathesis.openapi.from_asgi("/openapi.json", APP)
CALLERS = [*BOOK.users, "no token", "forged token"]
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    ignored_auth,  # asks again without the token, and with a wrong one: refused
]
#: What the scope checks looked at: (role, what) -> how many items with data.
CHECKED: Counter[tuple[str, str]] = Counter()


def headers_of(caller: str) -> dict[str, str]:
    if caller == "no token":
        return {}
    if caller == "forged token":
        return {"Authorization": "Bearer cv_" + "A" * 43}
    return {"Authorization": f"Bearer {TOKENS[caller]}"}


def known_ids(case: Any, caller: str) -> None:
    """Half of the generated alert ids and link tokens swapped for ones that name a stored
    alert, one the caller may see if there is any (picked by the generated value, so the
    run stays deterministic): a generated id almost never names one, and the answers
    about real alerts are the ones to check."""
    path = case.path_parameters or {}
    who = BOOK.principal(caller) if caller in TOKENS else None
    visible = [a for a in ALERTS if who is not None and who.can_see(a)] or ALERTS
    for name in ("alert_id", "token"):
        pick = sum(str(path.get(name, "")).encode())
        if name not in path or pick % 2:
            continue
        chosen = visible[pick // 2 % len(visible)]
        if name == "alert_id":
            path[name] = chosen.alert_id
        else:
            grant = SIGNER.grant(chosen.alert_id, chosen.district, "fire-desk", NOW)
            path[name] = SIGNER.token(grant)


def known_departments(case: Any) -> None:
    """Half of the generated departments of a dispatch or a re-route swapped for one the
    catalogue knows (picked by the generated value): a generated name almost never is one,
    and accepted actions are the ones whose scope to check."""
    body = case.body
    if not isinstance(body, dict) or body.get("action") not in ("dispatch", "reroute"):
        return
    pick = sum(str(body.get("department", "")).encode())
    if pick % 2 == 0:
        body["department"] = DEPARTMENTS[pick // 2 % len(DEPARTMENTS)]


def stored_alert(alert_id: str) -> AlertEvent:
    latest = STORE.latest(alert_id)
    assert latest is not None, f"answered an alert that is not stored: {alert_id}"
    return latest


def check_alerts(who: Principal, docs: list[Any], what: str) -> None:
    for doc in docs:
        event = AlertEvent.model_validate(doc)
        assert who.can_see(stored_alert(event.alert_id)), f"{who.user} shown {event.alert_id}"
        assert who.can_see(event), f"{who.user} shown {event.alert_id} as answered"
        if not who.may_list_history:
            assert event.workflow not in (Workflow.RESOLVED, Workflow.FALSE_POSITIVE)
            assert event.status is not AlertStatus.RESOLVED
        CHECKED[(who.role.value, what)] += 1


def check_vitals(who: Principal, districts: list[Any]) -> None:
    catalogue = CFG.catalogue
    for entry in districts:
        assert who.can_see_district(entry["code"]), f"{who.user} shown district {entry['code']}"
        vitals = entry["vitals"]
        if vitals is None:
            continue
        for code in vitals.get("indicators", {}):
            assert who.can_see_indicator(code, catalogue), f"{who.user} shown {code}"
        for domain in vitals.get("domains", {}):
            assert who.can_see_domain(domain, catalogue), f"{who.user} shown {domain}"
        if "composite" in vitals:
            assert who.can_see_composite(catalogue), f"{who.user} shown the composite"
        CHECKED[(who.role.value, "vitals")] += 1


def check_stream(who: Principal, body: bytes) -> None:
    for line in body.decode().splitlines():
        if line.startswith("data: "):
            check_alerts(who, [orjson.loads(line[6:])], "streamed")


def check_scope(who: Principal, case: Any, status: int, body: bytes) -> None:
    """Nothing the answer shows, and nothing it accepted, is outside the caller's scope."""
    path = case.path
    if status == 202 and path == "/api/v1/alerts/{alert_id}/actions":
        target = stored_alert(case.path_parameters["alert_id"])
        action = AlertActionType(orjson.loads(body)["action"]["action"])
        assert who.can_act(target, action), f"{who.user} allowed to {action} {target.alert_id}"
        CHECKED[(who.role.value, "acted")] += 1
    if status != 200:
        return
    if path == "/api/v1/stream":
        check_stream(who, body)
        return
    doc = orjson.loads(body)
    if path == "/api/v1/alerts":
        check_alerts(who, doc["alerts"], "listed")
    elif path == "/api/v1/alerts/{alert_id}":
        check_alerts(who, [doc["alert"]], "detail")
    elif path == "/api/v1/districts":
        check_vitals(who, doc["districts"])
    elif path == "/api/v1/audit":
        assert who.may_read_audit, f"{who.user} read the audit trail"
        CHECKED[(who.role.value, "audit")] += len(doc["records"])
    elif path in ("/api/v1/appeals/feedback", "/api/v1/appeals/report"):
        check_feedback(who, doc)
    elif path == "/api/v1/performance":
        assert who.role in (Role.OPERATOR, Role.DEPARTMENT), f"{who.user} read performance"
        for row in [*doc["rows"], *doc["appeals"]]:
            assert who.role is Role.OPERATOR or row["department"] == who.department
            CHECKED[(who.role.value, "performance")] += 1


def check_feedback(who: Principal, doc: dict[str, Any]) -> None:
    """A department desk is fed back its own categories and clusters only; other roles
    but operators none."""
    assert who.role in (Role.OPERATOR, Role.DEPARTMENT), f"{who.user} read appeal feedback"
    if who.role is Role.DEPARTMENT:
        assert doc["department"] == who.department
        for row in doc["categories"]:
            assert row["department"] == who.department, (who.user, row["category"])
        for cluster in doc["clusters"]:
            assert cluster["department"] == who.department, (who.user, cluster["alert_id"])
            assert who.can_see(stored_alert(cluster["alert_id"]))
    CHECKED[(who.role.value, "feedback")] += len(doc["categories"]) + len(doc["clusters"])


def check_error(case: Any, status: int, body: bytes) -> None:
    """An error answer is short, and repeats at most ECHO_CHARS of any one input."""
    if status < 400 or status == 405:
        return
    detail = orjson.loads(body)["detail"]
    assert len(detail) <= DETAIL_CHARS + 1
    for value in (case.path_parameters or {}).values():
        text = str(value)
        if len(text) > ECHO_CHARS:
            assert text not in detail, "an error answer repeats a long input whole"


@pytest.mark.parametrize("caller", CALLERS)
@SCHEMA.parametrize()
@settings(
    max_examples=20,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_every_answer_is_declared_bounded_and_within_the_callers_scope(
    case: Any, caller: str
) -> None:
    known_ids(case, caller)
    known_departments(case)
    headers = headers_of(caller)
    response = case.call(headers=headers)
    case.validate_response(response, checks=CHECKS, headers=headers)
    check_error(case, response.status_code, response.content)
    if caller in TOKENS:
        check_scope(BOOK.principal(caller), case, response.status_code, response.content)
    elif case.path != "/api/v1/respond/{token}":
        # a request that does not parse is refused before anyone is asked for a token
        assert response.status_code in (400, 401, 405, 422), "answered without a valid token"


def test_the_scope_checks_saw_every_role_s_data() -> None:
    """The fuzzing above checked answers with data for every role that has any, so the
    scope checks cannot have passed on empty answers alone (it runs after them)."""
    assert CHECKED, "run the whole module: the fuzzing test fills what this one checks"
    expected = {
        "operator": ("listed", "detail", "streamed", "vitals", "audit", "performance", "feedback"),
        "department": ("listed", "detail", "streamed", "vitals", "performance", "feedback"),
        "area": ("listed", "detail", "streamed", "vitals"),
        "responder": ("listed", "detail", "streamed", "vitals"),
        "open": ("vitals",),
    }
    for role, whats in expected.items():
        for what in whats:
            assert CHECKED[(role, what)] >= 3, (role, what, sorted(CHECKED.items()))
    # a valid action on an alert the caller sees is a rarer draw: some, of any role
    assert sum(n for (_, what), n in CHECKED.items() if what == "acted") >= 3
