"""From readings to city.emergency-command on the real broker, across a worker crash."""

from __future__ import annotations

import signal
from datetime import UTC, datetime, timedelta
from pathlib import Path

from streams.core.config import load_config
from streams.core.messages import (
    ACTIONS_TOPIC,
    AlertAction,
    AlertActionType,
    AlertEvent,
    AlertKind,
    AlertStatus,
    Grade,
    Workflow,
)
from streams.sim.simulator import SimEvent
from tests.harness import (
    Worker,
    produce,
    published,
    replayed,
    run,
    signed,
    smog,
    summary,
    wait_for,
)

CFG = load_config()
DISTRICT = "339901"


def test_an_incident_raises_one_alert_through_a_crash_and_takes_operator_actions(
    broker_bootstrap: str, worker: Worker, fresh_topics: None, tmp_path: Path
) -> None:
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=3)
    # clean air, then smog building up over 20 minutes, holding, and clearing
    first = (
        smog(start, range(0, 25), 40)
        + smog(start, range(25, 45), 40, rise=8)
        + smog(start, range(45, 50), 200)
    )
    second = smog(start, range(50, 58), 200) + smog(start, range(58, 100), 30)
    expected = replayed(first + second, tmp_path)
    # the scenario itself: a trend warning, then one PM2.5 alarm that fires, climbs
    # to orange and resolves
    alarm = [e for e in expected if e["kind"] == "alarm"]
    assert len({e["alert_id"] for e in alarm}) == 1
    assert alarm[0]["status"] == "firing" and alarm[-1]["status"] == "resolved"
    assert min(e["grade"] for e in alarm) == Grade.II
    warning = [e for e in expected if e["kind"] == "warning"]
    assert [e["status"] for e in warning] == ["firing", "resolved"]

    run(produce(broker_bootstrap, first))
    worker.start()
    wait_for(
        lambda: any(
            e.status is AlertStatus.FIRING and e.kind is AlertKind.ALARM
            for e in published(broker_bootstrap)
        ),
        90,
        "the alarm to fire",
    )
    worker.stop(signal.SIGKILL)  # mid-incident
    # begin again at offset 0: everything is reprocessed on the restored state
    worker.forget_group(input_offsets=True)
    run(produce(broker_bootstrap, second))
    worker.start()
    wait_for(
        lambda: any(
            e.status is AlertStatus.RESOLVED and e.kind is AlertKind.ALARM
            for e in published(broker_bootstrap)
        ),
        120,
        "the alarm to resolve",
    )
    got = published(broker_bootstrap)
    # the same alerts; every (alert id, sequence) published at most in identical copies
    assert {e.alert_id for e in got} == {e["alert_id"] for e in expected}
    unique: dict[tuple[str, int], AlertEvent] = {}
    for e in got:
        assert unique.setdefault((e.alert_id, e.sequence), e) == e, (
            f"two events {e.alert_id}#{e.sequence}"
        )
    # the worker and the offline replay raise the same alerts, event for event
    assert sorted(summary(e) for e in unique.values()) == sorted(summary(e) for e in expected)
    assert sum(e.status is AlertStatus.FIRING for e in unique.values()) == 2  # warning, alarm
    assert worker.metric("cityvitals_alerts_open", {"grade": "II"}) == 0

    # an operator acknowledges the (now closed) alarm: recorded on its timeline
    alert = max((e for e in unique.values() if e.kind is AlertKind.ALARM), key=lambda e: e.sequence)
    action = AlertAction(
        action_id="ack-1",
        alert_id=alert.alert_id,
        district=DISTRICT,
        action=AlertActionType.ACKNOWLEDGE,
        actor="zhang.wei",
        role="operator",
        at=datetime.now(UTC),
    )
    run(
        produce(
            broker_bootstrap,
            [SimEvent(ACTIONS_TOPIC, DISTRICT.encode(), signed(action).to_json(), action.at)],
        )
    )
    wait_for(lambda: len(published(broker_bootstrap)) > len(got), 60, "the action to be applied")
    last = published(broker_bootstrap)[-1]
    assert last.alert_id == alert.alert_id and last.sequence == alert.sequence + 1
    assert last.workflow is Workflow.ACKNOWLEDGED
    assert [(a.action, a.actor) for a in last.actions] == [("acknowledge", "zhang.wei")]
