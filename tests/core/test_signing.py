"""Signed actions: only a writer holding the action key can make an action the lifecycle
applies, a signature binds every field, and rotation keeps the previous key's actions."""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest

from streams.core.messages import AlertAction, AlertActionType
from streams.core.signing import CONTEXT, ActionSigner, canonical, signature_of

KEY = b"k" * 32
OLD = b"o" * 32
OTHER = b"x" * 32

FULL: dict[str, Any] = {
    "action_id": "act-1",
    "alert_id": "alert-339901-pm25",
    "district": "339901",
    "action": "silence",
    "actor": "cc.duty",
    "role": "operator",
    "at": datetime(2026, 11, 24, 8, 15, 30, 250000, tzinfo=timezone(timedelta(hours=8))),
    "department": "environment",
    "note": "roadworks on 环城路",
    "silence_s": 3600.0,
    "source_ip": "10.0.0.7",
    "kind": "operator",
}

# a different value of every field but the signature, each still a valid action
TAMPERED: dict[str, Any] = {
    "action_id": "act-2",
    "alert_id": "alert-339901-no2",
    "district": "339902",
    "action": "resolve",
    "actor": "cc.duty2",
    "role": "responder",
    "at": FULL["at"] + timedelta(microseconds=1),
    "department": "fire",
    "note": "roadworks on 环城路.",
    "silence_s": 3601.0,
    "source_ip": "10.0.0.8",
    "kind": "system",
}


def action(**changes: Any) -> AlertAction:
    return AlertAction(**{**FULL, **changes})


def received(record: bytes) -> AlertAction:
    """The action as the worker reads it from the topic."""
    return AlertAction.model_validate_json(record)


def test_an_action_signed_with_the_key_is_accepted_after_the_trip_through_kafka() -> None:
    signer = ActionSigner(KEY)
    signed = signer.sign(action())
    assert signed.signature is not None and len(signed.signature) == 64
    assert signer.problem(received(signed.to_json())) is None
    # and as the API builds them: few fields, the time now
    now = AlertAction(
        action_id="a",
        alert_id="b",
        district="339901",
        action=AlertActionType.ACKNOWLEDGE,
        actor="cc.duty",
        role="operator",
        at=datetime.now(UTC),
    )
    assert signer.problem(received(signer.sign(now).to_json())) is None


def test_the_signature_covers_the_meaning_not_the_spelling_of_the_record() -> None:
    signer = ActionSigner(KEY)
    signed = signer.sign(action(at=datetime(2026, 11, 24, 0, 15, tzinfo=UTC)))
    doc = orjson.loads(signed.to_json())
    # another client's serialiser: keys reversed, whitespace, +00:00 for Z, 3600 for 3600.0
    respelled = {k: doc[k] for k in reversed(list(doc))}
    respelled["at"] = "2026-11-24T00:15:00+00:00"
    respelled["silence_s"] = 3600
    text = orjson.dumps(respelled, option=orjson.OPT_INDENT_2)
    assert text != signed.to_json()
    assert signer.problem(received(text)) is None


def test_the_canonical_form_is_the_sorted_compact_json_of_the_fields_set() -> None:
    """What another writer holding the key computes, spelled out."""
    act = AlertAction(
        action_id="a1",
        alert_id="al1",
        district="339901",
        action=AlertActionType.ACKNOWLEDGE,
        actor="cc.duty",
        role="operator",
        at=datetime(2026, 11, 24, 8, 0, tzinfo=UTC),
    )
    body = (
        b'{"action":"acknowledge","action_id":"a1","actor":"cc.duty","alert_id":"al1",'
        b'"at":"2026-11-24T08:00:00Z","district":"339901","kind":"operator","role":"operator"}'
    )
    assert canonical(act) == CONTEXT + body
    expected = hmac.new(KEY, b"cityvitals alert-action v1\n" + body, hashlib.sha256).hexdigest()
    assert signature_of(act, KEY) == expected
    assert ActionSigner(KEY).sign(act).signature == expected
    # signing again gives the same bytes; the signature is not part of what it covers
    once = ActionSigner(KEY).sign(act)
    assert ActionSigner(KEY).sign(once) == once


def test_every_field_is_bound_by_the_signature() -> None:
    assert set(TAMPERED) == set(AlertAction.model_fields) - {"signature"}, (
        "a field of AlertAction has no tampering case here"
    )
    signer = ActionSigner(KEY)
    signed = signer.sign(action())
    doc = orjson.loads(signed.to_json())
    for field, value in TAMPERED.items():
        forged_doc = {**doc, field: orjson.loads(orjson.dumps(value))}
        forged = received(orjson.dumps(forged_doc))
        assert getattr(forged, field) != getattr(signed, field), field
        assert forged.signature == signed.signature
        assert signer.problem(forged) is not None, f"{field} changed, signature still accepted"


def test_a_field_added_or_removed_after_signing_is_refused() -> None:
    signer = ActionSigner(KEY)
    bare = signer.sign(action(department=None, note=None, silence_s=None, source_ip=None))
    doc = orjson.loads(bare.to_json())
    for field in ("department", "note", "silence_s", "source_ip"):
        assert field not in doc
        added = received(orjson.dumps({**doc, field: TAMPERED[field]}))
        assert signer.problem(added) is not None, f"{field} added"
    full = orjson.loads(signer.sign(action()).to_json())
    for field in ("department", "note", "silence_s", "source_ip"):
        removed = received(orjson.dumps({k: v for k, v in full.items() if k != field}))
        assert signer.problem(removed) is not None, f"{field} removed"


def test_a_missing_signature_is_refused_and_said_so() -> None:
    problem = ActionSigner(KEY).problem(action())
    assert problem is not None and "carries no signature" in problem


@pytest.mark.parametrize(
    "signature",
    ["", "0" * 64, "A" * 64, "é" * 64, "z" * 128, "00"],
    ids=["empty", "zeros", "upper", "non-ascii", "long", "short"],
)
def test_a_made_up_signature_is_refused_without_error(signature: str) -> None:
    problem = ActionSigner(KEY).problem(action(signature=signature))
    assert problem is not None and "does not match" in problem


def test_a_signature_made_with_another_key_is_refused_and_the_reason_quotes_nothing() -> None:
    forged = action(signature=signature_of(action(), OTHER))
    problem = ActionSigner(KEY, [OLD]).problem(forged)
    assert problem is not None and "does not match" in problem
    for value in (FULL["actor"], FULL["note"], FULL["alert_id"], forged.signature):
        assert str(value) not in problem


def test_a_signature_moved_to_another_action_is_refused() -> None:
    signer = ActionSigner(KEY)
    genuine = signer.sign(action(action="acknowledge"))
    moved = action(action="resolve", signature=genuine.signature)
    assert signer.problem(moved) is not None


def test_rotation_signs_with_the_current_key_and_accepts_the_previous_ones() -> None:
    before = ActionSigner(OLD)
    after = ActionSigner(KEY, [OLD])
    by_old = before.sign(action())
    by_new = after.sign(action())
    assert by_new.signature == signature_of(action(), KEY) != by_old.signature
    assert after.problem(received(by_old.to_json())) is None  # still in flight at the change
    assert after.problem(received(by_new.to_json())) is None
    # once the previous key is dropped, what it signed is refused
    assert ActionSigner(KEY).problem(received(by_old.to_json())) is not None
    # a worker not yet given the new key refuses what the new key signed
    assert before.problem(received(by_new.to_json())) is not None
    # the first step of a rotation: the next key accepted before anyone signs with it
    assert ActionSigner(OLD, [KEY]).problem(received(by_new.to_json())) is None


def test_a_signer_needs_a_key() -> None:
    with pytest.raises(ValueError, match="an action key is needed"):
        ActionSigner(b"")
