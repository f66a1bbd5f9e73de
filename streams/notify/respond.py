"""Responder links: a signed, expiring permission to act on one alert.

A notification carries, for each firing alert, a link
``{console_url}/respond/{token}``. Whoever holds it may acknowledge that alert
or add a field report to it (``POST /api/v1/respond/{token}``), and nothing
else: no other alert, no other action, no reading beyond the alert's summary.
The responder needs no account, which suits a field unit reached through a
duty group's chat.

The token is ``r1.<claims>.<signature>``: ``claims`` is base64url of a compact
JSON object (alert id ``a``, district ``d``, receiver ``r``, expiry ``e`` in
Unix seconds) and ``signature`` is base64url of HMAC-SHA256 over
``"cityvitals-respond-r1." + claims`` with the key of ``routes.yaml``'s
``responder_links`` (:class:`LinkSigner`). Tokens are deterministic in their
claims, so re-sending a notification from the outbox gives the same bytes.
Changing the key revokes every outstanding link.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import quote

import orjson

VERSION = "r1"
_DOMAIN = b"cityvitals-respond-r1."
MIN_KEY_BYTES = 32
MAX_TOKEN = 1024  # longer "tokens" are refused before decoding


class LinkError(Exception):
    """A refused responder link: why, ready to return to the caller (always a 401)."""


@dataclass(frozen=True)
class Grant:
    """What a responder link allows: acting on ``alert_id`` until ``expires``."""

    alert_id: str
    district: str
    receiver: str
    expires: int  # Unix seconds

    @property
    def expires_at(self) -> datetime:
        return datetime.fromtimestamp(self.expires, UTC)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class LinkSigner:
    """Signs and checks responder tokens with one key."""

    def __init__(self, key: bytes, ttl_s: float) -> None:
        if len(key) < MIN_KEY_BYTES:
            raise ValueError(f"a responder link key needs at least {MIN_KEY_BYTES} bytes")
        if ttl_s <= 0:
            raise ValueError("a responder link needs a positive time to live")
        self._key = key
        self.ttl_s = ttl_s

    def _mac(self, claims: str) -> bytes:
        return hmac.new(self._key, _DOMAIN + claims.encode(), hashlib.sha256).digest()

    def grant(self, alert_id: str, district: str, receiver: str, issued: datetime) -> Grant:
        """The grant of a link issued at ``issued`` (a notification's creation time)."""
        return Grant(alert_id, district, receiver, int(issued.timestamp() + self.ttl_s))

    def token(self, grant: Grant) -> str:
        claims = _b64(
            orjson.dumps(
                {"a": grant.alert_id, "d": grant.district, "r": grant.receiver, "e": grant.expires}
            )
        )
        return f"{VERSION}.{claims}.{_b64(self._mac(claims))}"

    def url(self, console_url: str, grant: Grant) -> str:
        """``{console_url}/respond/{token}``."""
        return f"{console_url.rstrip('/')}/respond/{quote(self.token(grant), safe='.')}"

    def verify(self, token: str, now: datetime) -> Grant:
        """The grant of a genuine, unexpired token; raises :class:`LinkError` saying why not."""
        if len(token) > MAX_TOKEN:
            raise LinkError("malformed responder link: too long")
        parts = token.split(".")
        if len(parts) != 3 or parts[0] != VERSION:
            raise LinkError(f"malformed responder link: expected {VERSION}.<claims>.<signature>")
        _, claims, signature = parts
        try:
            given = _unb64(signature)
        except (binascii.Error, ValueError):
            raise LinkError("malformed responder link: signature is not base64url") from None
        if not hmac.compare_digest(given, self._mac(claims)):
            raise LinkError("responder link signature does not match: altered or revoked")
        try:
            data = orjson.loads(_unb64(claims))
            grant = Grant(str(data["a"]), str(data["d"]), str(data["r"]), int(data["e"]))
        except (binascii.Error, ValueError, KeyError, TypeError):
            raise LinkError("malformed responder link: unreadable claims") from None
        if now.timestamp() >= grant.expires:
            raise LinkError(
                f"responder link expired at {grant.expires_at.isoformat().replace('+00:00', 'Z')}"
            )
        return grant
