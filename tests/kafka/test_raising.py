"""Operator actions as the worker takes them from ``city.alert-actions``, without a broker:
the API is not the only writer of that topic, so the lifecycle's own bounds hold there."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from streams.alerting.detection import DetectionContext, DistrictDetection
from streams.alerting.rules import load_thresholds
from streams.core.config import load_config
from streams.core.messages import (
    ACTIONS_TOPIC,
    ALERTS_TOPIC,
    AlertAction,
    AlertActionType,
    AlertEvent,
    DeadLetter,
    DeadLetterReason,
    DeadLetterStage,
)
from streams.core.signing import ActionSigner
from streams.ingest.deid import Deidentifier
from streams.ingest.ingestor import DeadLetters
from streams.ingest.sealing import Sealer
from streams.kafka.raising import AlertRaiser
from tests.api.test_auth import alert

CFG = load_config()
NOW = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)
SIGNER = ActionSigner(b"a" * 32)


@dataclass
class Sent:
    """What the raiser produced: records by topic, dead letters, state writes."""

    records: list[tuple[str, bytes]] = field(default_factory=list)
    letters: list[DeadLetter] = field(default_factory=list)
    written: list[str] = field(default_factory=list)


class Out:
    def __init__(self, sent: Sent) -> None:
        self.sent = sent

    def add(self, topic: str, key: bytes | None, value: bytes) -> None:
        self.sent.records.append((topic, value))

    async def send(self, **_: Any) -> list[Any]:
        return []


class Writer:
    def __init__(self, sent: Sent) -> None:
        self.sent = sent

    async def write_detection(self, district: str, state: DistrictDetection) -> None:
        self.sent.written.append(district)

    def restore_detection(self, district: str) -> None:
        raise AssertionError("a refused note needs no restore: it changed nothing")


@dataclass
class Msg:
    key: bytes | None
    value: bytes | None
    topic: str = ACTIONS_TOPIC
    partition: int = 0
    offset: int = 0


def raiser(state: DistrictDetection, max_notes: int) -> tuple[AlertRaiser, Sent]:
    sent = Sent()
    ctx = DetectionContext(CFG, load_thresholds(CFG), anomaly=None, max_notes=max_notes)
    out = Out(sent)
    raising = AlertRaiser(
        {state.district.encode(): state},
        ctx,
        CFG,
        window_s=60.0,
        max_action_bytes=64 * 1024,
        outputs=lambda: out,  # type: ignore[arg-type, return-value]
        writer=Writer(sent),  # type: ignore[arg-type]
        dead_letters=DeadLetters(Deidentifier(b"d" * 32), Sealer(b"s" * 32)),
        dead_letter=lambda _out, _key, letter: sent.letters.append(letter),
        signer=SIGNER,
    )
    return raising, sent


def action_record(
    target: AlertEvent,
    n: int,
    note: str | None,
    sign: Callable[[AlertAction], AlertAction] = SIGNER.sign,
    **fields: Any,
) -> Msg:
    action = AlertAction(
        action_id=uuid.UUID(int=n).hex,
        alert_id=target.alert_id,
        district=target.district,
        action="note" if note else "acknowledge",
        at=NOW + timedelta(seconds=n),
        note=note,
        **{"actor": "someone", "role": "operator", **fields},
    )
    return Msg(target.district.encode(), sign(action).to_json(), offset=n)


def test_a_note_past_the_alert_s_bound_on_the_actions_topic_is_dead_lettered() -> None:
    state = DistrictDetection("339901")
    target = alert()
    state.book.open[target.fingerprint] = target
    raising, sent = raiser(state, max_notes=2)

    async def run() -> None:
        for n in range(2):
            await raising.apply_action(action_record(target, n, f"note {n}"))
        await raising.apply_action(action_record(target, 2, "x" * 4000))
        await raising.apply_action(action_record(target, 3, None))  # no note: still taken

    asyncio.run(run())
    events = [AlertEvent.model_validate_json(v) for t, v in sent.records if t == ALERTS_TOPIC]
    assert [e.actions[-1].note for e in events] == ["note 0", "note 1", None]
    (letter,) = sent.letters
    assert letter.reason is DeadLetterReason.TOO_LARGE
    assert letter.stage is DeadLetterStage.ACTION
    assert "already holds 2 notes" in letter.detail
    assert state.book.notes == {target.alert_id: 2}


def test_an_action_without_a_valid_signature_changes_nothing_and_is_dead_lettered() -> None:
    state = DistrictDetection("339901")
    target = alert()
    state.book.open[target.fingerprint] = target
    raising, sent = raiser(state, max_notes=10)
    wrong_key = ActionSigner(b"w" * 32).sign

    def altered(action: AlertAction) -> AlertAction:  # signed as a note, then made a resolve
        return SIGNER.sign(action).model_copy(update={"action": AlertActionType.RESOLVE})

    forged = [
        action_record(target, 1, None, sign=lambda a: a, actor="cc.duty"),
        action_record(target, 2, None, sign=wrong_key, actor="cc.duty"),
        action_record(target, 3, "quietly", sign=altered),
        action_record(target, 4, None, sign=lambda a: a.model_copy(update={"signature": "0" * 64})),
    ]

    async def run() -> None:
        for record in forged:
            await raising.apply_action(record)

    asyncio.run(run())
    assert sent.records == [] and sent.written == []
    assert state.book.open[target.fingerprint] is target  # the alert as it was
    assert [letter.origin.offset for letter in sent.letters] == [1, 2, 3, 4]
    for letter in sent.letters:
        assert letter.reason is DeadLetterReason.UNAUTHENTICATED
        assert letter.stage is DeadLetterStage.ACTION
        assert "cc.duty" not in letter.detail and "quietly" not in letter.detail
    assert "carries no signature" in sent.letters[0].detail
    assert all("does not match" in letter.detail for letter in sent.letters[1:])
    # the same action, signed with the worker's key, is applied
    asyncio.run(raising.apply_action(action_record(target, 5, None, actor="cc.duty")))
    (event,) = [AlertEvent.model_validate_json(v) for t, v in sent.records if t == ALERTS_TOPIC]
    assert event.workflow == "acknowledged" and event.actions[-1].actor == "cc.duty"
    assert sent.written == ["339901"]
