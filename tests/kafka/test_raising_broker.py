"""Forged records on ``city.alert-actions``: whoever can write to the topic but holds no
action key cannot act as a user, on a real broker with the API as the trusted writer."""

from __future__ import annotations

import secrets
import uuid
from datetime import UTC, datetime
from typing import Any

import orjson

from streams.core.messages import (
    ACTIONS_TOPIC,
    DEADLETTER_TOPIC,
    AlertAction,
    AlertActionType,
    DeadLetter,
    DeadLetterReason,
    DeadLetterStage,
)
from streams.core.settings import Settings
from streams.core.signing import ActionSigner
from streams.sim.simulator import SimEvent
from tests.api.test_api_broker import actions_in, detail, open_alarm
from tests.harness import ApiWorker, produce, read_records, run, wait_for

UNAUTHENTICATED = {"reason": DeadLetterReason.UNAUTHENTICATED.value}


def as_duty_officer(alarm: dict[str, Any], action: AlertActionType) -> AlertAction:
    """An action claiming to come from the command centre's duty officer."""
    return AlertAction(
        action_id=f"forged-{uuid.uuid4().hex}",
        alert_id=alarm["alert_id"],
        district=alarm["district"],
        action=action,
        actor="cc.duty",
        role="operator",
        at=datetime.now(UTC),
        note="nothing to see here",
    )


def write_raw(api: ApiWorker, district: str, values: list[bytes]) -> list[int]:
    """Records straight onto city.alert-actions, as any client of the cluster can; their
    offsets."""
    now = datetime.now(UTC)
    events = [SimEvent(ACTIONS_TOPIC, district.encode(), v, now) for v in values]
    return [p.offset for p in run(produce(api.bootstrap, events))]


def refused(api: ApiWorker) -> list[DeadLetter]:
    letters = [
        DeadLetter.model_validate_json(r.value)
        for r in run(read_records(api.bootstrap, DEADLETTER_TOPIC, idle_s=1))
        if r.value is not None
    ]
    return [d for d in letters if d.origin.topic == ACTIONS_TOPIC]


def genuine_records(api: ApiWorker) -> list[bytes]:
    """The records on city.alert-actions signed with the workers' action key: the API's."""
    workers = ActionSigner(*Settings().action_keys())
    return [
        r.value
        for r in run(read_records(api.bootstrap, ACTIONS_TOPIC, idle_s=1))
        if r.value is not None and workers.problem(AlertAction.model_validate_json(r.value)) is None
    ]


def test_forged_actions_on_the_topic_are_not_applied_and_are_dead_lettered(
    api_worker: ApiWorker,
) -> None:
    api = api_worker
    api.produce_incident()
    alarm = open_alarm(api)
    alert_id, district = alarm["alert_id"], alarm["district"]
    assert alarm["workflow"] == "open" and alarm["status"] != "resolved"

    # claiming to be the duty officer: an acknowledgement without a signature, and a
    # resolution signed with a key the workers do not hold
    unsigned = as_duty_officer(alarm, AlertActionType.ACKNOWLEDGE)
    wrong_key = ActionSigner(secrets.token_bytes(32)).sign(
        as_duty_officer(alarm, AlertActionType.RESOLVE)
    )
    assert unsigned.signature is None and wrong_key.signature is not None
    forged_at = write_raw(api, district, [unsigned.to_json(), wrong_key.to_json()])

    # a genuine action after them, on the same partition: once it shows, they were handled
    r = api.post(f"/api/v1/alerts/{alert_id}/actions", {"action": "note", "note": "checked"})
    assert r.status_code == 202, r.text
    wait_for(lambda: actions_in(detail(api, alert_id)), 60, "the genuine note on the alert")
    doc = detail(api, alert_id)
    assert actions_in(doc) == [("note", "cc.duty", "checked")]
    assert doc["alert"]["workflow"] == "open" and doc["alert"]["status"] != "resolved"

    letters = refused(api)
    assert [(d.origin.offset, d.reason, d.stage) for d in letters] == [
        (offset, DeadLetterReason.UNAUTHENTICATED, DeadLetterStage.ACTION) for offset in forged_at
    ]
    assert "carries no signature" in letters[0].detail
    assert "does not match its fields under any action key" in letters[1].detail
    for letter in letters:
        assert "cc.duty" not in letter.detail and "nothing to see" not in letter.detail
    assert api.worker.metric("cityvitals_ingest_deadletters_total", UNAUTHENTICATED) == 2

    # the API's own record, taken off the topic: altered, its signature no longer fits;
    # replayed as it is, the lifecycle has already applied its action id
    (note,) = genuine_records(api)
    altered = orjson.dumps({**orjson.loads(note), "action": "resolve", "note": None})
    replay_at = write_raw(api, district, [altered, note])
    r = api.post(f"/api/v1/alerts/{alert_id}/actions", {"action": "acknowledge", "note": "mine"})
    assert r.status_code == 202, r.text
    wait_for(lambda: len(actions_in(detail(api, alert_id))) == 2, 60, "the genuine acknowledgement")
    doc = detail(api, alert_id)
    assert actions_in(doc) == [("note", "cc.duty", "checked"), ("acknowledge", "cc.duty", "mine")]
    assert doc["alert"]["workflow"] == "acknowledged" and doc["alert"]["status"] != "resolved"
    letters = refused(api)
    assert [(d.origin.offset, d.reason) for d in letters[2:]] == [
        (replay_at[0], DeadLetterReason.UNAUTHENTICATED)
    ]
    assert api.worker.metric("cityvitals_ingest_deadletters_total", UNAUTHENTICATED) == 3
    # the replayed note was not applied again: no event holds a third action
    lengths = [len(e.get("actions") or []) for e in doc["timeline"]]
    assert max(lengths) == 2 and lengths == sorted(lengths), lengths
