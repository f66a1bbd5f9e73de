"""Responder links: signed, expiring, for one alert and two actions, through the API in process."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from hypothesis import given
from hypothesis import strategies as st

from streams.api.app import create_api
from streams.api.store import AlertStore
from streams.core.messages import AlertActionType, AlertStatus, Workflow
from streams.notify.respond import LinkError, LinkSigner
from tests.api.test_api import BOOK, CFG, TOKENS, Recorder, stored
from tests.api.test_auth import alert

KEY = b"k" * 32
NOW = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)
SIGNER = LinkSigner(KEY, ttl_s=3600)
ALERT = alert()
OTHER = alert(alert_id="fp0002-1795999500", fingerprint="fp0002")


def token_for(alert_id: str = ALERT.alert_id, issued: datetime = NOW, **kw: str) -> str:
    grant = SIGNER.grant(alert_id, kw.get("district", "339901"), "street-duty", issued)
    return SIGNER.token(grant)


def client(store: AlertStore, links: LinkSigner | None = SIGNER) -> tuple[TestClient, Recorder]:
    recorder = Recorder()
    api = create_api(store, BOOK, CFG, recorder, ready=lambda: True, clock=lambda: NOW, links=links)
    return TestClient(api), recorder


# --- the token ----------------------------------------------------------------------------


def test_a_token_grants_its_alert_until_it_expires() -> None:
    grant = SIGNER.verify(token_for(), NOW)
    assert (grant.alert_id, grant.district, grant.receiver) == (
        ALERT.alert_id,
        "339901",
        "street-duty",
    )
    assert grant.expires_at == NOW + timedelta(hours=1)
    assert SIGNER.verify(token_for(), NOW + timedelta(minutes=59, seconds=59)) == grant
    with pytest.raises(LinkError, match=r"^responder link expired at 2026-11-24T09:00:00Z$"):
        SIGNER.verify(token_for(), NOW + timedelta(hours=1))


def test_the_same_claims_give_the_same_link() -> None:
    """A notification sent again from the outbox carries the same bytes."""
    assert token_for() == token_for()
    url = SIGNER.url("http://cc.example/", SIGNER.grant(ALERT.alert_id, "339901", "ops", NOW))
    assert url.startswith("http://cc.example/respond/r1.")


def test_an_altered_or_foreign_token_is_refused() -> None:
    version, claims, mac = token_for().split(".")
    forged_claims = token_for(OTHER.alert_id).split(".")[1]
    with pytest.raises(LinkError, match="signature does not match"):
        SIGNER.verify(f"{version}.{forged_claims}.{mac}", NOW)  # another alert's claims
    with pytest.raises(LinkError, match="signature does not match"):
        LinkSigner(b"x" * 32, 3600).verify(token_for(), NOW)  # another key (rotated)
    with pytest.raises(LinkError, match="malformed"):
        SIGNER.verify(f"r0.{claims}.{mac}", NOW)
    with pytest.raises(LinkError, match="malformed"):
        SIGNER.verify("r1." + "a" * 2000, NOW)


@given(st.text(max_size=300))
def test_any_string_is_either_a_grant_or_a_link_error(text: str) -> None:
    try:
        SIGNER.verify(text, NOW)
    except LinkError:
        pass
    else:  # pragma: no cover - finding a valid MAC by chance would be news
        raise AssertionError(f"accepted {text!r}")


def test_a_short_key_or_no_lifetime_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 32 bytes"):
        LinkSigner(b"short", 3600)
    with pytest.raises(ValueError, match="positive time to live"):
        LinkSigner(KEY, 0)


# --- the API ------------------------------------------------------------------------------


def test_the_link_shows_its_alert_and_what_it_allows() -> None:
    api, recorder = client(stored(ALERT, OTHER))
    r = api.get(f"/api/v1/respond/{token_for()}")
    assert r.status_code == 200
    body = r.json()
    assert body["alert"]["alert_id"] == ALERT.alert_id
    assert body["actions"] == ["acknowledge", "field_report"]
    assert body["expires_at"] == "2026-11-24T09:00:00Z"
    assert body["receiver"] == "street-duty"
    assert body["place_zh"] == "江滨区 滨江街道" and body["place_en"] == "Binjiang, Jiangbin"
    assert r.headers["cache-control"] == "no-store"
    assert r.headers["referrer-policy"] == "no-referrer"
    (read,) = recorder.audits
    assert (read.user, read.role, read.action, read.target) == (
        "link:street-duty",
        "responder",
        "read_alert",
        ALERT.alert_id,
    )


def test_a_responder_acknowledges_and_reports_through_the_link() -> None:
    api, recorder = client(stored(ALERT, OTHER))
    token = token_for()
    r = api.post(
        f"/api/v1/respond/{token}", json={"action": "acknowledge", "responder": "Engine 7"}
    )
    assert r.status_code == 202, r.text
    r = api.post(
        f"/api/v1/respond/{token}", json={"action": "field_report", "note": "smoke from a kitchen"}
    )
    assert r.status_code == 202, r.text
    ack, report = recorder.actions
    assert (ack.alert_id, ack.district, ack.action, ack.actor, ack.role, ack.kind) == (
        ALERT.alert_id,
        "339901",
        AlertActionType.ACKNOWLEDGE,
        "link:street-duty/Engine 7",
        "responder",
        "responder",
    )
    assert (report.action, report.note, report.actor) == (
        AlertActionType.FIELD_REPORT,
        "smoke from a kitchen",
        "link:street-duty",
    )
    assert [a.action for a in recorder.audits] == ["acknowledge", "field_report"]


@pytest.mark.parametrize(
    ("body", "status", "detail"),
    [
        ({"action": "resolve"}, 422, "body.action"),
        ({"action": "dispatch", "department": "gas"}, 422, "body.action"),
        ({"action": "field_report"}, 400, "field_report needs a note"),
        ({"action": "acknowledge", "extra": 1}, 422, "body.extra"),
    ],
    ids=["resolve", "dispatch", "report-without-note", "unknown-field"],
)
def test_a_link_allows_acknowledge_and_field_report_only(
    body: dict[str, object], status: int, detail: str
) -> None:
    api, recorder = client(stored(ALERT))
    r = api.post(f"/api/v1/respond/{token_for()}", json=body)
    assert r.status_code == status
    assert detail in r.json()["detail"]
    assert recorder.actions == []


@pytest.mark.parametrize(
    ("make", "detail"),
    [
        (lambda: token_for(issued=NOW - timedelta(hours=2)), "responder link expired at"),
        (lambda: token_for()[:-2] + "AA", "signature does not match"),
        (lambda: "not-a-link", "malformed responder link"),
    ],
    ids=["expired", "tampered", "malformed"],
)
def test_a_bad_link_is_refused_with_401_and_audited(make: object, detail: str) -> None:
    api, recorder = client(stored(ALERT))
    token = make()  # type: ignore[operator]
    for r in (
        api.get(f"/api/v1/respond/{token}"),
        api.post(f"/api/v1/respond/{token}", json={"action": "acknowledge"}),
    ):
        assert r.status_code == 401
        assert r.json()["error"] == "unauthorized" and detail in r.json()["detail"]
    assert recorder.actions == []
    assert [(a.user, a.action) for a in recorder.audits] == [("link:?", "denied")] * 2
    assert all(detail in (a.detail or "") for a in recorder.audits)


def test_a_link_to_a_closed_alert_allows_nothing() -> None:
    closed = alert(status=AlertStatus.RESOLVED, workflow=Workflow.RESOLVED, sequence=2)
    api, recorder = client(stored(closed))
    assert api.get(f"/api/v1/respond/{token_for()}").json()["actions"] == []
    r = api.post(f"/api/v1/respond/{token_for()}", json={"action": "acknowledge"})
    assert r.status_code == 409
    assert (
        r.json()["detail"] == f"alert {ALERT.alert_id} is closed (resolved); nothing to acknowledge"
    )
    assert recorder.actions == []


def test_a_link_for_an_unknown_alert_or_another_district_is_not_found() -> None:
    api, _ = client(stored(ALERT))
    assert api.get(f"/api/v1/respond/{token_for('nope-1')}").status_code == 404
    moved = token_for(district="339902")  # the claims must name the alert's own district
    assert api.post(f"/api/v1/respond/{moved}", json={"action": "acknowledge"}).status_code == 404


def test_without_responder_links_configured_every_link_is_refused() -> None:
    api, _ = client(stored(ALERT), links=None)
    r = api.get(f"/api/v1/respond/{token_for()}")
    assert r.status_code == 401
    assert "responder links are not enabled" in r.json()["detail"]


def test_the_responder_page_is_served_without_a_token_check_and_not_cached() -> None:
    api, _ = client(stored(ALERT))
    r = api.get(f"/respond/{token_for()}")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert '<script type="module" src="/console/respond.js">' in r.text
    assert r.headers["referrer-policy"] == "no-referrer"
    assert api.get("/console/respond.js").status_code == 200


def test_bearer_tokens_are_not_needed_and_not_enough() -> None:
    """A user's token does not stand in for a link: the link itself is checked."""
    api, _ = client(stored(ALERT))
    r = api.get("/api/v1/respond/x", headers={"Authorization": f"Bearer {TOKENS['cc.duty']}"})
    assert r.status_code == 401


def test_the_openapi_document_describes_the_responder_routes() -> None:
    api, _ = client(stored(ALERT))
    paths = api.get("/openapi.json").json()["paths"]
    assert set(paths["/api/v1/respond/{token}"]) == {"get", "post"}
    assert "/respond/{token}" not in paths  # the page, not part of the API
