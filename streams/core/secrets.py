"""The worker's secrets: where each may come from, and what makes one unfit to run with.

A secret comes from a variable (``CITYVITALS_DEID_KEY``), from a file another variable
names (``CITYVITALS_DEID_KEY_FILE``, as Kubernetes and Docker mount secrets), or, in
``routes.yaml``, from a file or a literal the file names. One is unfit when it is unset,
shorter than :data:`MIN_SECRET_BYTES`, or holds a known placeholder
(:data:`PLACEHOLDERS`): the worker refuses to start with any such secret
(:class:`SecretProblem` says which and how to set it), never the value itself.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

MIN_SECRET_BYTES = 32
"""Keys of HMAC-SHA256 and of HKDF to AES-256: shorter ones weaken both."""

FILE_SUFFIX = "_FILE"
"""``<VARIABLE>_FILE`` names a file that holds what ``<VARIABLE>`` would."""

PLACEHOLDERS: tuple[str, ...] = (
    "change-me",
    "change_me",
    "changeme",
    "replace-with",
    "replace_with",
    "replace-me",
    "cityvitals-demo-key",
)
"""Text that marks a value as a placeholder, in any case. It covers every placeholder
the repository ships or shipped (``cityvitals-demo-key-change-me``, the
de-identification key's public default of earlier releases; ``demo-secret-change-me``;
``REPLACE-WITH-A-RANDOM-SECRET``), so none of them can reach a running worker."""


def is_placeholder(text: str) -> bool:
    """Whether ``text`` holds one of :data:`PLACEHOLDERS`."""
    lowered = text.lower()
    return any(mark in lowered for mark in PLACEHOLDERS)


def weakness(value: str | None) -> str | None:
    """Why ``value`` is unfit as a secret (never quoting it), or None when it is fit."""
    if not value:
        return "is not set"
    if is_placeholder(value):
        return "is a known placeholder"
    size = len(value.encode())
    if size < MIN_SECRET_BYTES:
        return f"is {size} bytes, shorter than {MIN_SECRET_BYTES}"
    return None


@dataclass(frozen=True)
class SecretProblem:
    """One secret the worker cannot run with: what it is, why, and what sets it."""

    secret: str  # e.g. "the de-identification key"
    reason: str  # e.g. "is not set"
    set_by: str  # e.g. "CITYVITALS_DEID_KEY or CITYVITALS_DEID_KEY_FILE"

    def __str__(self) -> str:
        return f"{self.secret} {self.reason}; set it with {self.set_by}"


class UnsafeSecrets(ValueError):
    """The worker was asked to run with secrets it cannot run with."""

    def __init__(self, problems: Sequence[SecretProblem]) -> None:
        super().__init__("; ".join(str(p) for p in problems))
        self.problems = tuple(problems)


def refuse_unsafe(problems: Sequence[SecretProblem]) -> None:
    """Raise :class:`UnsafeSecrets` when there is any problem."""
    if problems:
        raise UnsafeSecrets(problems)


@dataclass(frozen=True)
class Found:
    """A secret as read: its value (None when there is none), where it came from
    (``env:NAME``, ``env:NAME_FILE``, ``file:PATH``, ``literal`` or ``none``), and why it
    could not be read."""

    value: str | None
    source: str = "none"
    error: str | None = None


def variable_or_file(name: str) -> str:
    """How a secret variable is set, for messages."""
    return f"{name} or {name}{FILE_SUFFIX}"


def read_file(path: Path, what: str) -> Found:
    """A secret held in a file (a trailing line break is not part of it)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        return Found(None, error=f"{what}: cannot read {path}: {exc.strerror or exc}")
    except UnicodeDecodeError:
        return Found(None, error=f"{what}: {path} is not UTF-8 text")
    return Found(text.rstrip("\r\n"), f"file:{path}")


def from_variable(name: str, environ: Mapping[str, str]) -> Found:
    """The secret ``name`` sets, or the file ``<name>_FILE`` names; both set is an error
    (which one was meant is not ours to guess)."""
    value, path = environ.get(name), environ.get(name + FILE_SUFFIX)
    if value and path:
        return Found(None, error=f"both {name} and {name}{FILE_SUFFIX} are set; set one")
    if value:
        return Found(value, f"env:{name}")
    if path:
        found = read_file(Path(path), name + FILE_SUFFIX)
        return found if found.value is None else Found(found.value, f"env:{name}{FILE_SUFFIX}")
    return Found(None)
