"""From readings to city.emergency-command on the real broker, across a worker crash."""

from __future__ import annotations

import signal
import uuid
from datetime import UTC, datetime, timedelta

import orjson

from streams.config import load_config
from streams.detection import DetectionContext, DistrictDetection
from streams.rules import load_thresholds
from streams.schemas import (
    ACTIONS_TOPIC,
    ALERTS_TOPIC,
    AlertAction,
    AlertActionType,
    AlertEvent,
    AlertStatus,
    Grade,
    Workflow,
)
from streams.simulator import SimEvent
from streams.windows import DistrictWindows
from tests.harness import Worker, produce, read_topic, run, wait_for

CFG = load_config()
DISTRICT, STREET = "339901", "339901001"
IOT = "city.events.iot"
LATENESS_S = 120.0  # the worker's default allowed lateness


def smog(start: datetime, minutes: range, level: float) -> list[SimEvent]:
    """PM2.5 readings every 30 s of event time in one street, at ``level``."""
    out = []
    for m in minutes:
        for half in (0, 30):
            t = start + timedelta(minutes=m, seconds=half)
            body = {
                "event_id": f"pm25-{uuid.uuid4().hex[:12]}",
                "source": "iot.pm25.339901001.01",
                "district": DISTRICT,
                "street": STREET,
                "indicator": "iot.pm25",
                "value": level + (m % 3),
                "unit": "µg/m³",
                "event_time": t.isoformat(),
            }
            out.append(SimEvent(IOT, DISTRICT.encode(), orjson.dumps(body), t))
    return out


def offline_alerts(events: list[SimEvent]) -> list[AlertEvent]:
    """The same events through the same windows and detection, in this process."""
    ctx = DetectionContext(CFG, load_thresholds(CFG))
    windows = DistrictWindows(DISTRICT)
    detection = DistrictDetection(DISTRICT)
    out: list[AlertEvent] = []
    for ev in events:
        body = orjson.loads(ev.value)
        key = f"iot.pm25@{STREET}" if "iot.pm25" in ctx.street_indicators else None
        windows.add("iot.pm25", body["value"], ev.event_time.timestamp(), IOT, key)
        for w in windows.close_due(LATENESS_S, [IOT]):
            out += detection.on_window(w, ctx)
    for w in windows.close_all():
        out += detection.on_window(w, ctx)
    return out


def published(bootstrap: str) -> list[AlertEvent]:
    return [
        AlertEvent.model_validate_json(v)
        for v in run(read_topic(bootstrap, ALERTS_TOPIC, idle_s=1))
    ]


def test_an_incident_raises_one_alert_through_a_crash_and_takes_operator_actions(
    broker_bootstrap: str, worker: Worker, fresh_topics: None
) -> None:
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=3)
    first = smog(start, range(0, 15), 40) + smog(start, range(15, 30), 200)
    second = smog(start, range(30, 38), 200) + smog(start, range(38, 80), 30)
    expected = offline_alerts(first + second)
    # the scenario itself: one PM2.5 alert that fires, climbs to orange and resolves
    assert len({e.alert_id for e in expected}) == 1
    assert expected[0].status is AlertStatus.FIRING and expected[-1].status is AlertStatus.RESOLVED
    assert max(expected, key=lambda e: -e.grade.value).grade is Grade.II

    run(produce(broker_bootstrap, first))
    worker.start()
    wait_for(
        lambda: any(e.status is AlertStatus.FIRING for e in published(broker_bootstrap)),
        90,
        "the alert to fire",
    )
    worker.stop(signal.SIGKILL)  # mid-incident
    # begin again at offset 0: everything is reprocessed on the restored state
    worker.forget_group(input_offsets=True)
    run(produce(broker_bootstrap, second))
    worker.start()
    wait_for(
        lambda: any(e.status is AlertStatus.RESOLVED for e in published(broker_bootstrap)),
        120,
        "the alert to resolve",
    )
    got = published(broker_bootstrap)
    # one alert; every (alert id, sequence) published at most in identical copies
    assert {e.alert_id for e in got} == {expected[0].alert_id}
    by_seq: dict[int, AlertEvent] = {}
    for e in got:
        assert by_seq.setdefault(e.sequence, e) == e, f"two different events #{e.sequence}"
    assert [by_seq[s] for s in sorted(by_seq)] == expected
    assert sum(e.status is AlertStatus.FIRING for e in by_seq.values()) == 1
    assert worker.metric("cityvitals_alerts_alert_events_total", 'status="resolved"') == 1
    assert worker.metric("cityvitals_alerts_open", 'grade="II"') == 0

    # an operator acknowledges the (now closed) alert: recorded on its timeline
    alert = expected[-1]
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
            [SimEvent(ACTIONS_TOPIC, DISTRICT.encode(), action.to_json(), action.at)],
        )
    )
    wait_for(lambda: len(published(broker_bootstrap)) > len(got), 60, "the action to be applied")
    last = published(broker_bootstrap)[-1]
    assert last.alert_id == alert.alert_id and last.sequence == alert.sequence + 1
    assert last.workflow is Workflow.ACKNOWLEDGED
    assert [(a.action, a.actor) for a in last.actions] == [("acknowledge", "zhang.wei")]
