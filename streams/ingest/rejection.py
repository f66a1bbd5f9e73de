"""Why an event is rejected: the exception every ingest check raises, and its wording.

A check raises :class:`Rejected` with a reason and a detail; the ingestor turns it
into a dead letter (:class:`streams.ingest.ingestor.DeadLetters`), which scrubs the
detail, since it may quote the record.
"""

from __future__ import annotations

from dataclasses import dataclass

from streams.core.messages import DeadLetterReason, DeadLetterStage


@dataclass(frozen=True)
class Rejected(Exception):
    """An event that failed a check; becomes a dead letter."""

    reason: DeadLetterReason
    detail: str
    stage: DeadLetterStage | None = None


def quoted(value: object) -> str:
    """A value in a message, quoted but not escaped: ``repr`` would spell full-width
    spaces and other characters as escapes, which hide identifiers from the scrubber."""
    return "None" if value is None else f"'{value}'"


def failure_detail(exc: BaseException) -> str:
    """An unforeseen failure in a few words (its text may quote the record: scrubbed later)."""
    text = str(exc)
    return f"{type(exc).__name__}: {text[:300]}" if text else type(exc).__name__
