"""Signed operator actions: which records on ``city.alert-actions`` the alert lifecycle trusts.

Whoever may write to ``city.alert-actions`` could otherwise publish an action as any user
(an acknowledgement by ``cc.duty``, a resolution, a silence). The writers the lifecycle
trusts, the API's publisher (operators' actions and responder links) and the notifier's
escalations, hold the action key (``CITYVITALS_ACTION_KEY``) and sign every action they
publish; the worker applies only an action whose ``signature`` one of its action keys
makes, and dead-letters any other as ``unauthenticated``.

The signature is HMAC-SHA256, in hex, over :data:`CONTEXT` followed by the action's
canonical form (:func:`canonical`): its JSON in the model's own JSON mode, every field but
``signature``, null fields left out, keys sorted, no whitespace (orjson). It is computed
from the parsed model rather than from the record's bytes, so that another serialiser's
whitespace, key order or spelling of an equal value (``3600`` for ``3600.0``, ``+00:00``
for ``Z``) does not matter, while any change of what a field means does: every field
(``action_id``, ``alert_id``, ``district``, ``action``, ``actor``, ``role``, ``at``,
``department``, ``note``, ``silence_s``, ``source_ip``, ``kind``) is bound. Null fields
are left out, as on the topic, so an optional field a later release adds leaves the
signatures of actions that do not use it unchanged.

Rotation: the worker signs with the current key and accepts it and the previous keys
(``CITYVITALS_ACTION_KEY_PREVIOUS``), so workers on the old and the new key can run side
by side (docs/operations.md, "Secrets").
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

import orjson

from streams.core.messages import AlertAction

CONTEXT = b"cityvitals alert-action v1\n"
"""What a signature is for, signed with the action: a key shared with another use, or a
later form of the canonical encoding, cannot turn a signature made for one into the other."""


def canonical(action: AlertAction) -> bytes:
    """The bytes an action's signature covers: every field but the signature."""
    doc = action.model_dump(mode="json", exclude={"signature"}, exclude_none=True)
    return CONTEXT + orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)


def signature_of(action: AlertAction, key: bytes) -> str:
    """The signature ``key`` makes for ``action``."""
    return hmac.new(key, canonical(action), hashlib.sha256).hexdigest()


class ActionSigner:
    """Signs actions with the current action key; checks them against it and the previous ones."""

    def __init__(self, key: bytes, previous: Sequence[bytes] = ()) -> None:
        if not key:
            raise ValueError("an action key is needed to sign actions")
        self._key = key
        self._accepted = (key, *(k for k in previous if k and k != key))

    def sign(self, action: AlertAction) -> AlertAction:
        """The action with its signature under the current key (a signature it had is replaced)."""
        return action.model_copy(update={"signature": signature_of(action, self._key)})

    def problem(self, action: AlertAction) -> str | None:
        """Why the action is not one a trusted writer signed, or None when it is.

        The reason never quotes the record: it may be an attacker's text."""
        if action.signature is None:
            return (
                "the action carries no signature; only the API and the notifier may publish actions"
            )
        given = action.signature.encode("utf-8", "replace")
        message = canonical(action)
        found = False
        for key in self._accepted:  # every key, so the time taken does not tell which matched
            expected = hmac.new(key, message, hashlib.sha256).hexdigest().encode()
            found |= hmac.compare_digest(expected, given)
        if found:
            return None
        return (
            "the action's signature does not match its fields under any action key: "
            "forged, altered after signing, or signed with a key this worker does not hold"
        )
