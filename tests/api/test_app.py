"""What every error answer of the API holds: never more than a bounded piece of input."""

from __future__ import annotations

from streams.api.common import DETAIL_CHARS, ECHO_CHARS, echo
from tests.api.test_api import auth, client, stored
from tests.api.test_auth import alert


def test_echo_cuts_a_value_to_a_bounded_length_with_an_ellipsis() -> None:
    assert echo("fp0001") == "'fp0001'"
    long = echo("x" * 10_000)
    assert long == repr("x" * ECHO_CHARS + "…")


def test_an_unknown_alert_id_is_repeated_cut_not_whole() -> None:
    api, _ = client(stored(alert()))
    huge = "A" * 60_000  # a test client sends no longer address
    for method, path, body in (
        ("GET", f"/api/v1/alerts/{huge}", None),
        ("POST", f"/api/v1/alerts/{huge}/actions", {"action": "acknowledge"}),
    ):
        r = api.request(method, path, headers=auth("cc.duty"), json=body)
        assert r.status_code == 404
        assert r.json() == {"error": "not_found", "detail": f"no alert {echo(huge)}"}
        assert len(r.content) < 200


def test_a_bad_parameter_or_body_key_is_repeated_cut_not_whole() -> None:
    api, _ = client(stored(alert()))
    huge = "B" * 60_000
    r = api.get("/api/v1/alerts", params={"grade": huge}, headers=auth("cc.duty"))
    assert r.status_code == 400
    assert r.json()["detail"].startswith(f"grade {echo(huge)} is not one of")
    r = api.post(
        "/api/v1/alerts/fp0001-1795999500/actions",
        headers=auth("cc.duty"),
        json={"action": "note", "note": "x", huge: 1},
    )
    assert r.status_code == 422
    assert len(r.json()["detail"]) <= DETAIL_CHARS + 1
    assert huge[: ECHO_CHARS + 1] not in r.text
    cursor = "v1." + "C" * 1_000_000
    r = api.get("/api/v1/stream", headers={**auth("cc.duty"), "Last-Event-ID": cursor})
    assert r.status_code == 400
    assert len(r.content) < 400
