"""Identity and scopes: who sees which alert, who may act, tokens, roles.yaml, open aggregates."""

from __future__ import annotations

import copy
import hashlib
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from streams.api.auth import (
    Authenticator,
    AuthError,
    Principal,
    Role,
    StoredToken,
    TokenBook,
    bearer_token,
    hash_token,
    load_roles,
    new_token,
)
from streams.core.config import DEFAULT_CONFIG_DIR, Catalogue, ConfigError, Sharing, load_config
from streams.core.messages import (
    ActionRecord,
    AlertActionType,
    AlertEvent,
    AlertKind,
    AlertStatus,
    DistrictVitals,
    Evidence,
    Grade,
    IndicatorVitals,
    WindowStats,
    Workflow,
)

CFG = load_config()
CST = timezone(timedelta(hours=8))
T0 = datetime(2026, 11, 24, 8, 15, tzinfo=CST)
A = AlertActionType

OPERATOR = Principal(user="cc.duty", role=Role.OPERATOR, display_name="Duty officer")
TRAFFIC = Principal(
    user="traffic.desk", role=Role.DEPARTMENT, department="traffic", display_name="Transport"
)
JIANGBIN = Principal(
    user="jiangbin.district",
    role=Role.AREA,
    districts=frozenset({"339901"}),
    display_name="Jiangbin district",
)
CHENGHUANGMIAO = Principal(
    user="chenghuangmiao.street",
    role=Role.AREA,
    streets=frozenset({"339902001"}),
    street_districts=frozenset({"339902"}),
    display_name="Chenghuangmiao street",
)
FIRE_UNIT = Principal(
    user="fire.jiangbin-station",
    role=Role.RESPONDER,
    department="fire",
    districts=frozenset({"339901", "339902"}),
    display_name="Jiangbin fire station",
)
PUBLIC = Principal(user="public.dashboard", role=Role.OPEN, display_name="Public dashboard")


def record(action: str, department: str | None = None, n: int = 1) -> ActionRecord:
    return ActionRecord(
        action_id=f"act-{n}",
        action=action,
        actor="wang.li",
        role="operator",
        at=T0 + timedelta(minutes=n),
        department=department,
    )


# what people may do; escalation is the notifier's alone
PEOPLE_ACTIONS = set(AlertActionType) - {AlertActionType.ESCALATE}


def alert(**overrides: Any) -> AlertEvent:
    """A firing grade-II smoke-alarm alarm in Binjiang street, Jiangbin district, owned by fire."""
    values: dict[str, Any] = {
        "alert_id": "fp0001-1795999500",
        "fingerprint": "fp0001",
        "sequence": 1,
        "status": AlertStatus.FIRING,
        "grade": Grade.II,
        "colour": "orange",
        "kind": AlertKind.ALARM,
        "district": "339901",
        "street": "339901001",
        "domain": "fire",
        "indicators": ["fire.smoke_alarms"],
        "department": "fire",
        "co_departments": [],
        "sharing": Sharing.NOT_SHARED,
        "evidence": Evidence(rule="fire.smoke.sum5", version="v1", observed=4.0),
        "first_seen": T0,
        "last_update": T0,
        "event_time": T0,
        "headline_zh": "江滨区烟感报警橙色告警（II级）",
        "headline_en": "Jiangbin: Smoke alarms orange alarm (grade II)",
    }
    values.update(overrides)
    return AlertEvent(**values)


# --- who sees which alert, who may act ---------------------------------------------------


def test_operator_sees_and_may_do_everything() -> None:
    closed = alert(status=AlertStatus.RESOLVED, workflow=Workflow.FALSE_POSITIVE)
    for a in (alert(), closed, alert(district="339910", street=None, department="gas")):
        assert OPERATOR.can_see(a)
        assert all(OPERATOR.can_act(a, x) for x in PEOPLE_ACTIONS)
        assert not OPERATOR.can_act(a, AlertActionType.ESCALATE)  # the system's alone
    assert OPERATOR.may_see_alerts and OPERATOR.may_list_history and OPERATOR.may_read_audit
    assert OPERATOR.can_see_district("339907")
    OPERATOR.require_history()
    OPERATOR.require_audit()


def test_department_sees_what_it_owns_co_handles_or_was_dispatched() -> None:
    owned = alert(department="traffic", domain="traffic", indicators=["traffic.speed_kmh"])
    co_handled = alert(department="public_security", co_departments=["water", "traffic"])
    dispatched = alert(actions=[record("acknowledge"), record("dispatch", "traffic", 2)])
    assert TRAFFIC.can_see(owned) and TRAFFIC.can_see(co_handled) and TRAFFIC.can_see(dispatched)
    # closed alerts stay visible: the department lists its history
    assert TRAFFIC.can_see(owned.model_copy(update={"status": AlertStatus.RESOLVED}))

    assert not TRAFFIC.can_see(alert())  # fire's, not dispatched
    assert not TRAFFIC.can_see(alert(actions=[record("dispatch", "water")]))
    assert not TRAFFIC.can_see(alert(actions=[record("note", "traffic")]))  # not a dispatch
    assert not TRAFFIC.can_see(alert(co_departments=["public_security"]))

    assert {x for x in AlertActionType if TRAFFIC.can_act(owned, x)} == PEOPLE_ACTIONS
    # a co-handler or the department it was dispatched to works it, but only its owner
    # may say it is not its responsibility and hand it on
    for a in (co_handled, dispatched):
        assert {x for x in AlertActionType if TRAFFIC.can_act(a, x)} == PEOPLE_ACTIONS - {
            AlertActionType.REROUTE
        }
    assert not any(TRAFFIC.can_act(alert(), x) for x in AlertActionType)
    assert TRAFFIC.may_see_alerts and TRAFFIC.may_list_history and not TRAFFIC.may_read_audit
    assert TRAFFIC.can_see_district("339905")
    with pytest.raises(AuthError) as info:
        TRAFFIC.require_audit()
    assert (info.value.status, str(info.value)) == (
        403,
        "403: role department may not read the audit trail",
    )


def test_district_user_sees_its_districts_alerts_whoever_owns_them() -> None:
    assert JIANGBIN.can_see(alert())
    assert JIANGBIN.can_see(alert(street=None, department="water"))
    assert JIANGBIN.can_see(alert(street="339901004", status=AlertStatus.RESOLVED))
    assert not JIANGBIN.can_see(alert(district="339902", street="339902001"))
    assert not JIANGBIN.can_see(
        alert(district="339902", street=None, actions=[record("dispatch", "fire")])
    )
    acts = {x for x in AlertActionType if JIANGBIN.can_act(alert(), x)}
    assert acts == {A.ACKNOWLEDGE, A.NOTE, A.DISPATCH, A.RESOLVE, A.FALSE_POSITIVE, A.SILENCE}
    assert JIANGBIN.may_list_history and not JIANGBIN.may_read_audit
    assert JIANGBIN.can_see_district("339901") and not JIANGBIN.can_see_district("339902")


def test_street_user_sees_alerts_on_its_streets_only() -> None:
    on_street = alert(district="339902", street="339902001")
    assert CHENGHUANGMIAO.can_see(on_street)
    assert not CHENGHUANGMIAO.can_see(alert(district="339902", street="339902002"))
    assert not CHENGHUANGMIAO.can_see(alert(district="339902", street=None))  # district-wide
    assert not CHENGHUANGMIAO.can_see(alert())
    assert CHENGHUANGMIAO.can_act(on_street, A.RESOLVE)
    assert not CHENGHUANGMIAO.can_act(on_street, A.FIELD_REPORT)
    assert not CHENGHUANGMIAO.can_act(on_street, A.REROUTE)  # owners and operators re-route
    # vital signs: the district its street lies in, no other
    assert CHENGHUANGMIAO.can_see_district("339902")
    assert not CHENGHUANGMIAO.can_see_district("339901")


def test_street_user_sees_a_district_alert_that_names_its_street() -> None:
    """A category's appeals clustering in several streets raise one alert of the district,
    which holds back the streets' own: the office of each street it names sees it."""

    def spread(*streets: str) -> AlertEvent:
        evidence = Evidence(rule="public_opinion.streets", version="v1", streets=list(streets))
        return alert(
            district="339902",
            street=None,
            kind=AlertKind.PUBLIC_OPINION,
            domain="citizen",
            department="environment",
            evidence=evidence,
        )

    assert CHENGHUANGMIAO.can_see(spread("339902001", "339902003"))
    assert CHENGHUANGMIAO.can_act(spread("339902001", "339902003"), A.ACKNOWLEDGE)
    assert not CHENGHUANGMIAO.can_see(spread("339902002", "339902003"))
    assert not CHENGHUANGMIAO.can_see(spread())


def test_responder_sees_only_open_alerts_routed_to_it_in_its_districts() -> None:
    owned = alert()  # fire's, in Jiangbin
    dispatched = alert(
        department="traffic",
        district="339902",
        street=None,
        actions=[record("dispatch", "fire")],
        workflow=Workflow.DISPATCHED,
    )
    assert FIRE_UNIT.can_see(owned) and FIRE_UNIT.can_see(dispatched)
    assert FIRE_UNIT.can_see(alert(workflow=Workflow.ACKNOWLEDGED, status=AlertStatus.UPDATED))

    # co-handling is not routing: only ownership or a dispatch
    assert not FIRE_UNIT.can_see(alert(department="gas", co_departments=["fire"]))
    assert not FIRE_UNIT.can_see(alert(department="traffic", actions=[record("dispatch", "water")]))
    # outside its districts
    assert not FIRE_UNIT.can_see(alert(district="339903", street="339903001"))
    # closed, one way or another
    assert not FIRE_UNIT.can_see(alert(status=AlertStatus.RESOLVED))
    assert not FIRE_UNIT.can_see(alert(workflow=Workflow.RESOLVED, status=AlertStatus.UPDATED))
    assert not FIRE_UNIT.can_see(alert(workflow=Workflow.FALSE_POSITIVE))

    for a in (owned, dispatched):
        assert {x for x in AlertActionType if FIRE_UNIT.can_act(a, x)} == {
            A.ACKNOWLEDGE,
            A.FIELD_REPORT,
        }
    assert not FIRE_UNIT.can_act(alert(district="339903"), A.ACKNOWLEDGE)
    assert FIRE_UNIT.may_see_alerts
    assert not FIRE_UNIT.may_list_history and not FIRE_UNIT.may_read_audit

    anywhere = FIRE_UNIT.model_copy(update={"districts": frozenset()})
    assert anywhere.can_see(alert(district="339910", street=None))


def test_responder_refusals_say_why() -> None:
    with pytest.raises(AuthError) as info:
        FIRE_UNIT.require_history()
    assert (
        info.value.status == 403
        and info.value.reason == "role responder may not list alert history"
    )
    assert str(info.value) == "403: role responder may not list alert history"
    with pytest.raises(AuthError) as info:
        FIRE_UNIT.require_act(alert(), A.RESOLVE)
    assert str(info.value) == (
        "403: role responder may not resolve alerts (it may: acknowledge, field_report)"
    )
    with pytest.raises(AuthError) as info:
        FIRE_UNIT.require_act(alert(district="339903"), A.ACKNOWLEDGE)
    assert str(info.value) == "403: user fire.jiangbin-station may not see alert fp0001-1795999500"
    FIRE_UNIT.require_act(alert(), A.FIELD_REPORT)


def test_open_view_sees_no_alert_and_may_do_nothing() -> None:
    public_alert = alert(sharing=Sharing.OPEN, domain="environment", department="environment")
    for a in (alert(), public_alert):
        assert not PUBLIC.can_see(a)
        assert not any(PUBLIC.can_act(a, x) for x in AlertActionType)
    assert not (PUBLIC.may_see_alerts or PUBLIC.may_list_history or PUBLIC.may_read_audit)
    assert PUBLIC.actions == frozenset()
    with pytest.raises(AuthError, match=r"^403: role open may not see alerts$"):
        PUBLIC.require_alerts()
    assert PUBLIC.can_see_district("339901")


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"role": Role.DEPARTMENT}, "department: role department needs a department"),
        ({"role": Role.RESPONDER}, "department: role responder needs a department"),
        ({"role": Role.AREA}, "districts: role area needs districts or streets"),
        (
            {"role": Role.OPERATOR, "department": "fire"},
            "department: role operator takes no department",
        ),
        (
            {"role": Role.AREA, "streets": frozenset({"339902001"})},
            "street_districts must name the districts of the streets",
        ),
    ],
)
def test_a_principal_cannot_be_built_with_an_incoherent_scope(
    fields: dict[str, Any], reason: str
) -> None:
    with pytest.raises(ValidationError, match=reason):
        Principal(user="x", display_name="x", **fields)


# --- the visibility rule, restated independently and checked on random alerts ------------

DISTRICTS = ["339901", "339902", "339903"]
DEPARTMENTS = ["fire", "traffic", "water", "gas", "environment"]
PRINCIPALS = [
    OPERATOR,
    TRAFFIC,
    Principal(user="fire.desk", role=Role.DEPARTMENT, department="fire", display_name="Fire"),
    JIANGBIN,
    CHENGHUANGMIAO,
    Principal(
        user="mixed.area",
        role=Role.AREA,
        districts=frozenset({"339903"}),
        streets=frozenset({"339901002"}),
        street_districts=frozenset({"339901"}),
        display_name="A district and a street",
    ),
    FIRE_UNIT,
    Principal(user="water.crew", role=Role.RESPONDER, department="water", display_name="Crew"),
    PUBLIC,
]
MAY_DO: dict[str, set[str]] = {
    "operator": {x.value for x in PEOPLE_ACTIONS},
    "department": {x.value for x in PEOPLE_ACTIONS},
    "area": {"acknowledge", "note", "dispatch", "resolve", "false_positive", "silence"},
    "responder": {"acknowledge", "field_report"},
    "open": set(),
}


def expected_visible(p: Principal, a: AlertEvent) -> bool:
    dispatched_to = {r.department for r in a.actions if r.action == "dispatch"}
    handled_by = {a.department, *a.co_departments}
    closed = a.status == "resolved" or a.workflow in {"resolved", "false_positive"}
    in_area = not p.districts or a.district in p.districts
    if p.role == "operator":
        return True
    if p.role == "department":
        return p.department in handled_by | dispatched_to
    if p.role == "area":
        return a.district in p.districts or (a.street or "") in p.streets
    if p.role == "responder":
        return p.department in dispatched_to | {a.department} and in_area and not closed
    return False


@st.composite
def random_alerts(draw: st.DrawFn) -> AlertEvent:
    district = draw(st.sampled_from(DISTRICTS))
    streets = [s.code for s in CFG.districts[district].streets]
    actions = draw(
        st.lists(
            st.tuples(
                st.sampled_from(list(AlertActionType)), st.none() | st.sampled_from(DEPARTMENTS)
            ),
            max_size=4,
        )
    )
    return alert(
        district=district,
        street=draw(st.none() | st.sampled_from(streets)),
        department=draw(st.sampled_from(DEPARTMENTS)),
        co_departments=draw(st.lists(st.sampled_from(DEPARTMENTS), max_size=2, unique=True)),
        actions=[record(kind.value, dep, n) for n, (kind, dep) in enumerate(actions, 1)],
        status=draw(st.sampled_from(AlertStatus)),
        workflow=draw(st.sampled_from(Workflow)),
    )


@settings(max_examples=400, deadline=None)
@given(random_alerts())
def test_every_role_sees_exactly_what_the_rule_says(a: AlertEvent) -> None:
    for p in PRINCIPALS:
        visible = expected_visible(p, a)
        assert p.can_see(a) is visible, (p.user, a.model_dump(mode="json"))
        for x in AlertActionType:
            may = visible and x in MAY_DO[p.role]
            if x is AlertActionType.REROUTE and p.role == "department":
                may = a.department == p.department  # its owner only
            assert p.can_act(a, x) is may, (p.user, x)


# --- tokens --------------------------------------------------------------------------------

NOW = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)


@pytest.fixture
def book() -> tuple[TokenBook, str, str]:
    """A book with one lasting token for the operator and one expiring for the fire unit."""
    lasting, expiring = new_token(), new_token()
    tokens = [
        StoredToken("cc.duty", hash_token(lasting)),
        StoredToken(
            "fire.jiangbin-station",
            hash_token(expiring),
            expires=datetime(2026, 11, 20, 18, 0, tzinfo=CST),
        ),
    ]
    return TokenBook([OPERATOR, FIRE_UNIT, PUBLIC], tokens), lasting, expiring


def test_tokens_are_random_prefixed_and_stored_only_as_sha256() -> None:
    tokens = {new_token() for _ in range(50)}
    assert len(tokens) == 50
    assert all(t.startswith("cv_") and len(t) == 3 + 43 for t in tokens)
    t = "cv_example"
    assert hash_token(t) == "sha256:" + hashlib.sha256(b"cv_example").hexdigest()


def test_a_valid_token_authenticates_to_its_principal(book: tuple[TokenBook, str, str]) -> None:
    tb, lasting, expiring = book
    assert isinstance(tb, Authenticator)
    assert tb.authenticate(lasting, NOW) == OPERATOR
    assert tb.authenticate(expiring, NOW) == FIRE_UNIT
    assert tb.authenticate(lasting, NOW + timedelta(days=3650)) is tb.principal("cc.duty")
    assert tb.users == ("cc.duty", "fire.jiangbin-station", "public.dashboard")


@pytest.mark.parametrize("token", [None, "", "   "])
def test_a_missing_token_is_refused(book: tuple[TokenBook, str, str], token: str | None) -> None:
    with pytest.raises(AuthError) as info:
        book[0].authenticate(token, NOW)
    assert (info.value.status, str(info.value)) == (401, "401: no bearer token given")


def test_unknown_and_forged_tokens_are_refused(book: tuple[TokenBook, str, str]) -> None:
    tb, lasting, _ = book
    forged = lasting[:-1] + ("A" if lasting[-1] != "A" else "B")
    for token in (
        new_token(),
        forged,
        lasting + "x",
        lasting.upper(),
        hash_token(lasting),  # the stored hash is not the token
        hash_token(lasting).removeprefix("sha256:"),
        "cv_ünïcode",
        "cv_" + "x" * 5000,
    ):
        with pytest.raises(AuthError) as info:
            tb.authenticate(token, NOW)
        assert (info.value.status, str(info.value)) == (401, "401: unknown token"), token


def test_an_expired_token_is_refused_with_its_expiry_in_utc(
    book: tuple[TokenBook, str, str],
) -> None:
    tb, _, expiring = book
    expiry = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)  # 18:00 +08:00
    assert tb.authenticate(expiring, expiry - timedelta(seconds=1)) == FIRE_UNIT
    for now in (expiry, expiry + timedelta(days=1)):
        with pytest.raises(AuthError) as info:
            tb.authenticate(expiring, now)
        assert info.value.status == 401
        assert str(info.value) == "401: token expired at 2026-11-20T10:00:00Z"
        assert info.value.reason == "token expired at 2026-11-20T10:00:00Z"


def test_authentication_needs_an_aware_clock(book: tuple[TokenBook, str, str]) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        book[0].authenticate(book[1], datetime(2026, 11, 20, 9, 0))


def test_issued_tokens_work_in_memory_and_expire(book: tuple[TokenBook, str, str]) -> None:
    tb, lasting, _ = book
    token = tb.issue("public.dashboard")
    assert token.startswith("cv_") and token != lasting
    assert tb.authenticate(token, NOW) == PUBLIC
    short = tb.issue("public.dashboard", timedelta(minutes=30), now=NOW)
    assert tb.authenticate(short, NOW + timedelta(minutes=29)) == PUBLIC
    with pytest.raises(AuthError, match=r"^401: token expired at 2026-11-20T09:30:00Z$"):
        tb.authenticate(short, NOW + timedelta(minutes=30))
    assert tb.authenticate(lasting, NOW) == OPERATOR  # earlier tokens still work
    with pytest.raises(ValueError, match="unknown user 'nobody'"):
        tb.issue("nobody")
    with pytest.raises(ValueError, match="ttl must be positive"):
        tb.issue("cc.duty", timedelta(0))


def test_a_token_book_refuses_inconsistent_entries() -> None:
    with pytest.raises(ValueError, match=r"duplicate user 'cc\.duty'"):
        TokenBook([OPERATOR, OPERATOR])
    with pytest.raises(ValueError, match="unknown user 'ghost'"):
        TokenBook([OPERATOR], [StoredToken("ghost", hash_token("cv_x"))])
    with pytest.raises(ValueError, match="malformed token hash"):
        TokenBook([OPERATOR], [StoredToken("cc.duty", "cv_plain-token")])
    with pytest.raises(ValueError, match="duplicate token hash"):
        h = hash_token("cv_x")
        TokenBook(
            [OPERATOR, PUBLIC], [StoredToken("cc.duty", h), StoredToken("public.dashboard", h)]
        )


@pytest.mark.parametrize(
    ("header", "token"),
    [
        ("Bearer cv_abc", "cv_abc"),
        ("bearer   cv_abc  ", "cv_abc"),
        ("Basic dXNlcjpwYXNz", None),
        ("Bearer ", None),
        ("", None),
        (None, None),
    ],
)
def test_bearer_token_reads_the_authorization_header(header: str | None, token: str | None) -> None:
    assert bearer_token(header) == token


# --- roles.yaml ------------------------------------------------------------------------------

H1 = hash_token("cv_first")
ROSTER = f"""\
version: 1
users:
  - user: cc.duty
    role: operator
    display_name: Duty officer
  - user: traffic.desk
    role: department
    department: traffic
    display_name: Transport desk
    tokens:
      - hash: "{H1}"
        expires: "2026-11-20T18:00:00+08:00"
        comment: desk PC
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "roles.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_a_roster_file_loads_and_its_tokens_authenticate(tmp_path: Path) -> None:
    street_user = (
        "  - user: street.office\n"
        "    role: area\n"
        '    districts: ["339903"]\n'
        '    streets: ["339902001", "339901002"]\n'
        "    display_name: Street office\n"
    )
    tb = load_roles(write(tmp_path, ROSTER + street_user), CFG)
    assert tb.users == ("cc.duty", "traffic.desk", "street.office")
    assert tb.authenticate("cv_first", NOW) == Principal(
        user="traffic.desk",
        role=Role.DEPARTMENT,
        department="traffic",
        display_name="Transport desk",
    )
    with pytest.raises(AuthError, match=r"^401: token expired at 2026-11-20T10:00:00Z$"):
        tb.authenticate("cv_first", datetime(2026, 11, 20, 10, 0, tzinfo=UTC))
    office = tb.principal("street.office")
    assert office.street_districts == {"339902", "339901"}
    assert office.can_see_district("339901") and office.can_see_district("339903")
    assert not office.can_see_district("339904")


# each case: the third user entry, the key path, part of the reason, the text on the error's line
BAD_ENTRIES = [
    (
        "  - user: mayor\n    role: mayor\n    display_name: Mayor\n",
        "users[2].role",
        "Input should be 'operator', 'department', 'area', 'responder' or 'open'",
        "role: mayor",
    ),
    (
        "  - user: t2\n    role: department\n    department: transport\n    display_name: T\n",
        "users[2] (t2).department",
        "unknown department 'transport'; known: ['command_centre', 'environment', 'fire'",
        "department: transport",
    ),
    (
        '  - user: a\n    role: area\n    districts: ["339901", "999999"]\n    display_name: A\n',
        "users[2] (a).districts[1]",
        "unknown district '999999'",
        "districts:",
    ),
    (
        '  - user: a\n    role: area\n    streets:\n      - "339901001"\n      - "339999001"\n'
        "    display_name: A\n",
        "users[2] (a).streets[1]",
        "unknown street '339999001'",
        '- "339999001"',
    ),
    (
        "  - user: a\n    role: area\n    districts: [339901]\n    display_name: A\n",
        "users[2].districts[0]",
        "Input should be a valid string",
        "districts:",
    ),
    (
        '  - user: p\n    role: open\n    display_name: P\n    tokens:\n      - hash: "md5:abc"\n',
        "users[2].tokens[0].hash",
        "expected 'sha256:' and 64 lowercase hex digits",
        'hash: "md5:abc"',
    ),
    (
        "  - user: p\n    role: open\n    display_name: P\n    tokens:\n"
        "      - hash: cv_9d1Jx0aPlainTokenPastedByMistake\n",
        "users[2].tokens[0].hash",
        "got 'cv_9d1Jx0aPl...'; never put a token itself in this file",
        "hash: cv_9d1J",
    ),
    (
        "  - user: p\n    role: open\n    display_name: P\n    tokens:\n"
        f'      - hash: "{H1.upper().replace("SHA256", "sha256")}"\n',
        "users[2].tokens[0].hash",
        "64 lowercase hex digits",
        "hash:",
    ),
    (
        "  - user: p\n    role: open\n    display_name: P\n    tokens:\n"
        f'      - hash: "{hash_token("cv_other")}"\n        expires: "2026-12-01T00:00:00"\n',
        "users[2].tokens[0].expires",
        "timezone",
        "expires:",
    ),
    (
        "  - user: cc.duty\n    role: open\n    display_name: Again\n",
        "users[2] (cc.duty).user",
        "duplicate user 'cc.duty' (also users[0])",
        "user: cc.duty",
    ),
    (
        f'  - user: p\n    role: open\n    display_name: P\n    tokens:\n      - hash: "{H1}"\n',
        "users[2] (p).tokens[0].hash",
        "duplicate token hash (also users[1].tokens[0])",
        "hash:",
    ),
    (
        "  - user: d\n    role: department\n    display_name: D\n",
        "users[2] (d).department",
        "role department needs a department",
        "- user: d",
    ),
    (
        "  - user: r\n    role: responder\n    districts: ['339901']\n    display_name: R\n",
        "users[2] (r).department",
        "role responder needs a department",
        "- user: r",
    ),
    (
        "  - user: a\n    role: area\n    display_name: A\n    districts: []\n",
        "users[2] (a).districts",
        "role area needs districts or streets",
        "districts: []",
    ),
    (
        "  - user: o\n    role: operator\n    department: command_centre\n    display_name: O\n",
        "users[2] (o).department",
        "role operator takes no department: it sees every department's alerts",
        "department: command_centre",
    ),
    (
        "  - user: d\n    role: department\n    department: fire\n    districts: ['339901']\n"
        "    display_name: D\n",
        "users[2] (d).districts",
        "role department takes no districts",
        "districts:",
    ),
    (
        "  - user: r\n    role: responder\n    department: fire\n    streets: ['339901001']\n"
        "    display_name: R\n",
        "users[2] (r).streets",
        "role responder takes no streets",
        "streets:",
    ),
    (
        "  - user: u\n    role: open\n    display_name: U\n    team: blue\n",
        "users[2].team",
        "Extra inputs are not permitted",
        "team: blue",
    ),
    (
        "  - user: u\n    role: open\n",
        "users[2].display_name",
        "Field required",
        "- user: u",
    ),
]


@pytest.mark.parametrize(("entry", "where", "reason", "at"), BAD_ENTRIES)
def test_a_bad_roster_stops_with_file_line_key_and_reason(
    tmp_path: Path, entry: str, where: str, reason: str, at: str
) -> None:
    text = ROSTER + entry
    start = len(ROSTER.splitlines())
    line = start + next(i for i, s in enumerate(entry.splitlines(), 1) if at in s)
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_roles(path, CFG)
    err = info.value
    assert (err.file, err.path, err.line) == (str(path), where, line), str(err)
    assert reason in err.reason, err.reason
    assert str(err).startswith(f"{path}:{line}: {where}: ")


@pytest.mark.parametrize(
    ("text", "where", "reason"),
    [
        ("version: 1\nusers: []\n", "users", "List should have at least 1 item"),
        ("version: 2\nusers: []\n", "version", "Input should be 1"),
        ("- just a list\n", "", "expected a mapping at the top level"),
        ("version: 1\nusers: [\n", "", "not valid YAML"),
    ],
)
def test_a_malformed_roster_file_is_a_config_error(
    tmp_path: Path, text: str, where: str, reason: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_roles(write(tmp_path, text), CFG)
    assert info.value.path == where and reason in info.value.reason
    assert info.value.line is not None


def test_a_missing_roster_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"roles\.yaml: file not found$"):
        load_roles(tmp_path / "roles.yaml", CFG)


def test_the_shipped_roster_loads_with_one_user_per_role_and_no_tokens() -> None:
    path = DEFAULT_CONFIG_DIR / "roles.yaml"
    tb = load_roles(path, CFG)
    principals = [tb.principal(u) for u in tb.users]
    assert {p.role for p in principals} == set(Role)
    by_role: dict[Role, list[Principal]] = {}
    for p in principals:
        by_role.setdefault(p.role, []).append(p)
    assert {p.department for p in by_role[Role.DEPARTMENT]} >= {"traffic", "environment"}
    areas = by_role[Role.AREA]
    assert any(p.districts and not p.streets for p in areas)
    assert any(p.streets and not p.districts for p in areas)
    (responder,) = by_role[Role.RESPONDER]
    assert responder.department == "fire" and len(responder.districts) == 2
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert all(u.get("tokens", []) == [] for u in raw["users"])
    # every user can be given a token at start-up
    for user in tb.users:
        assert tb.authenticate(tb.issue(user), NOW) == tb.principal(user)


# --- what the open view may see of the vital signs ----------------------------------------

OPEN_INDICATORS = {
    "traffic.speed_kmh",
    "traffic.congestion_index",
    "iot.pm25",
    "iot.noise_db",
    "iot.water_level_m",
    "sanitation.bin_fill_pct",
    "sanitation.overflow_reports",
}


def vitals_doc() -> dict[str, Any]:
    """A district's vitals with every catalogue indicator, two events each in the minute."""
    stats = WindowStats(count=2, sum=10.0, min=4.0, max=6.0, mean=5.0)
    return DistrictVitals(
        district="339901",
        window_start=T0,
        window_end=T0 + timedelta(minutes=1),
        rolling_minutes=15,
        events=2 * len(CFG.catalogue.indicators),
        indicators={
            i.code: IndicatorVitals(minute=stats, rolling=stats, health=80.0)
            for i in CFG.catalogue.indicators
        },
        domains=dict.fromkeys(CFG.catalogue.domains, 75.0) | {"fire": None},
        composite=71.5,
        closed_at=T0 + timedelta(minutes=1, seconds=2),
    ).model_dump(mode="json")


def test_open_view_sees_only_open_indicators_fully_open_domains_and_no_composite() -> None:
    cat = CFG.catalogue
    doc = vitals_doc()
    before = copy.deepcopy(doc)
    shown = PUBLIC.visible_vitals(doc, cat)
    assert doc == before  # the input is left alone
    assert set(shown["indicators"]) == OPEN_INDICATORS
    assert shown["domains"] == {"environment": 75.0}  # pm2.5 and noise, both open
    assert "composite" not in shown
    assert shown["events"] == 2 * len(OPEN_INDICATORS)
    assert {k: shown[k] for k in ("district", "window_start", "rolling_minutes")} == {
        k: doc[k] for k in ("district", "window_start", "rolling_minutes")
    }
    assert not PUBLIC.can_see_domain("traffic", cat)  # occupancy and accidents are on request
    assert not PUBLIC.can_see_domain("no_such_domain", cat)
    assert not PUBLIC.can_see_indicator("fire.smoke_alarms", cat)
    assert not PUBLIC.can_see_indicator("iot.pm10", cat)  # unknown: hidden
    assert not PUBLIC.can_see_composite(cat)


@pytest.mark.parametrize("p", [OPERATOR, TRAFFIC, JIANGBIN, FIRE_UNIT])
def test_signed_in_users_see_the_whole_vitals_document(p: Principal) -> None:
    doc = vitals_doc()
    assert p.visible_vitals(doc, CFG.catalogue) == doc
    assert p.can_see_composite(CFG.catalogue)
    assert p.can_see_indicator("fire.smoke_alarms", CFG.catalogue)


def test_open_view_sees_the_composite_once_every_indicator_is_open() -> None:
    data = CFG.catalogue.model_dump()
    data["indicators"] = [i | {"sharing": "open"} for i in data["indicators"]]
    everything_open = Catalogue.model_validate(data)
    doc = vitals_doc()
    assert PUBLIC.visible_vitals(doc, everything_open) == doc
    data["indicators"][-1]["sharing"] = "on_request"  # hotline.complaints, domain citizen
    one_closed = Catalogue.model_validate(data)
    shown = PUBLIC.visible_vitals(doc, one_closed)
    assert "citizen" not in shown["domains"] and "composite" not in shown
    assert set(shown["domains"]) == set(CFG.catalogue.domains) - {"citizen"}
