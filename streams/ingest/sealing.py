"""Sealing dead letters: the original record, encrypted, so nothing is lost and nothing leaks.

A record is dead-lettered because something in it is wrong, and what is wrong
is often personal data in the wrong place (a phone number typed into the street
field, a caller's name as the sensor id). Publishing the original bytes on
``city.deadletter`` would copy that data to every reader of the topic. Throwing
them away would lose the record. So the dead letter carries the original key
and value **sealed**: AES-256-GCM (the ``cryptography`` package) under the
dead-letter key, with the record's origin (topic, partition, offset) as
associated data, so a sealed blob cannot be passed off as another record's.
Whoever repairs and replays dead letters holds the key
(``CITYVITALS_DEADLETTER_KEY``); everyone else reads the reason, the scrubbed
detail and a scrubbed preview.

Without a key of its own the sealing key is derived from the
de-identification key with HKDF-SHA256 (a distinct ``info`` label, so the two
keys are independent as far as either use can tell). Rotating either key makes
earlier dead letters unreadable with the new one: keep old keys as long as old
dead letters matter.

Blob layout (then base64): version byte ``1`` | 12-byte random nonce |
ciphertext and 16-byte tag of ``len(key)`` (4 bytes big-endian,
``0xFFFFFFFF`` for no key) | key | value. Sealing a 300-byte record costs
a few microseconds; dead letters are a small share of the input.
"""

from __future__ import annotations

import base64
import os
import struct

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

_VERSION = 1
_NO_KEY = 0xFFFFFFFF
_HEADER = struct.Struct(">I")


class SealError(ValueError):
    """A sealed blob that this key cannot open (wrong key, origin or a damaged blob)."""


def derive_key(secret: bytes, label: str) -> bytes:
    """A 32-byte key for ``label`` from any secret (HKDF-SHA256, no salt)."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=label.encode("utf-8")).derive(
        secret
    )


class Sealer:
    """Seals and opens original records under one key."""

    __slots__ = ("_aead",)

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            key = derive_key(key, "cityvitals dead-letter sealing")
        self._aead = AESGCM(key)

    @classmethod
    def from_secrets(cls, deadletter_key: bytes | None, deid_key: bytes) -> Sealer:
        """The dead-letter key if set, else one derived from the de-identification key."""
        if deadletter_key:
            return cls(derive_key(deadletter_key, "cityvitals dead-letter sealing"))
        return cls(derive_key(deid_key, "cityvitals dead-letter sealing (from deid key)"))

    def __repr__(self) -> str:
        return "Sealer(key=<hidden>)"

    def seal(self, origin: str, key: bytes | None, value: bytes) -> str:
        """``origin`` is ``"topic:partition:offset"``; returns base64 text."""
        header = _HEADER.pack(_NO_KEY if key is None else len(key))
        nonce = os.urandom(12)
        body = self._aead.encrypt(nonce, header + (key or b"") + value, origin.encode())
        return base64.b64encode(bytes((_VERSION,)) + nonce + body).decode("ascii")

    def open(self, origin: str, sealed: str) -> tuple[bytes | None, bytes]:
        """The original (key, value) of a sealed record from ``origin``."""
        try:
            blob = base64.b64decode(sealed, validate=True)
        except ValueError as exc:
            raise SealError(f"not base64: {exc}") from None
        if len(blob) < 1 + 12 + 16 + 4 or blob[0] != _VERSION:
            raise SealError("not a sealed record of a known version")
        try:
            plain = self._aead.decrypt(blob[1:13], blob[13:], origin.encode())
        except Exception:  # cryptography's InvalidTag says nothing more useful
            raise SealError(f"cannot open: another key, or not the record of {origin}") from None
        (length,) = _HEADER.unpack_from(plain)
        if length == _NO_KEY:
            return None, plain[4:]
        return plain[4 : 4 + length], plain[4 + length :]
