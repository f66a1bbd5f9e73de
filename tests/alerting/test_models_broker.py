"""Two river detectors chosen in config/anomaly.yaml alert through the live worker on the real broker."""

from __future__ import annotations

import math
import shutil
import signal
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from streams.alerting.replay import replay_file
from streams.core.config import DEFAULT_CONFIG_DIR, load_config
from streams.core.messages import AlertEvent
from streams.sim.simulator import SimEvent
from tests import harness
from tests.harness import Worker, published, run, summary, wait_for

pytestmark = pytest.mark.broker

DISTRICT, STREET = "339903", "339903001"
MODELS = """\
models:
  - indicators: ["traffic.occupancy_pct"]
    model: river.anomaly.HalfSpaceTrees
    params: {n_trees: 10, height: 6, window_size: 30, seed: 5}
    settings: {warmup_readings: 30}
  - indicators: ["sanitation.collection_delay_min"]
    model: river.anomaly.StandardAbsoluteDeviation
    settings: {warmup_readings: 30}
"""
FEEDS = {
    "traffic.occupancy_pct": ("city.events.traffic", "%"),
    "traffic.speed_kmh": ("city.events.traffic", "km/h"),
    "sanitation.collection_delay_min": ("city.events.sanitation", "min"),
}


def event(indicator: str, t: datetime, value: float) -> SimEvent:
    topic, unit = FEEDS[indicator]
    body = {
        "event_id": f"{indicator}-{uuid.uuid4().hex[:12]}",
        "source": f"{indicator}.{STREET}.01",
        "district": DISTRICT,
        "street": STREET,
        "indicator": indicator,
        "value": value,
        "unit": unit,
        "event_time": t.isoformat(),
    }
    return SimEvent(topic, DISTRICT.encode(), orjson.dumps(body), t)


def test_two_river_detectors_from_config_alert_through_the_worker(
    broker_bootstrap: str, fresh_topics: None, tmp_path: Path
) -> None:
    config = tmp_path / "config"
    shutil.copytree(DEFAULT_CONFIG_DIR, config)
    (config / "anomaly.yaml").write_text(MODELS, encoding="utf-8")
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=3)
    incident = range(50, 56)  # minutes 50-55: occupancy jams, collections run hours late
    events = []
    for second in range(0, 70 * 60, 20):
        minute, t = second // 60, start + timedelta(seconds=second)
        bad = minute in incident
        events.append(event("traffic.occupancy_pct", t, 95.0 if bad else 20.0 + second % 3))
        delay = 900.0 if bad else 30.0 + 2 * (second // 20 % 4)
        events.append(event("sanitation.collection_delay_min", t, delay))
    worker = Worker(broker_bootstrap, tmp_path, env={"CITYVITALS_CONFIG_DIR": str(config)})
    try:
        run(harness.produce(broker_bootstrap, events))
        worker.start()

        def anomalies() -> list[AlertEvent]:
            return [
                e
                for e in published(broker_bootstrap)
                if e.evidence.rule.startswith("anomaly.") and e.status.value == "firing"
            ]

        wait_for(lambda: len({e.evidence.rule for e in anomalies()}) >= 2, 180, "both models")
    finally:
        worker.stop(signal.SIGKILL)
    fired = anomalies()
    assert {(e.evidence.rule, e.indicators[0]) for e in fired} == {
        ("anomaly.HalfSpaceTrees", "traffic.occupancy_pct"),
        ("anomaly.StandardAbsoluteDeviation", "sanitation.collection_delay_min"),
    }
    first_bad = start + timedelta(minutes=incident[0])
    for e in fired:
        assert e.district == DISTRICT and e.kind.value == "alarm"
        assert first_bad <= e.evidence.window_start < start + timedelta(minutes=incident[-1] + 1)
        assert e.evidence.baseline is None and e.evidence.score is not None
        assert e.evidence.score >= 0.47


SITE = """\
sites:
  - name: lane-1
    indicators: [traffic.speed_kmh, traffic.occupancy_pct]
"""


def lane(start: datetime, minutes: int, stalled: range) -> list[tuple[datetime, float, float]]:
    """(time, speed, occupancy) a minute: speed falls as occupancy rises, except when a
    lane stalls (free-flow occupancy, a jam's speed)."""
    out = []
    for m in range(minutes):
        occupancy = 12.0 + 8.0 * math.sin(m / 15.0) + (m * 7 % 5) * 0.3
        speed = 95.0 - 1.5 * occupancy + (m * 3 % 4) * 0.5
        if m in stalled:
            speed = 35.0
        out.append((start + timedelta(minutes=m, seconds=30), speed, occupancy))
    return out


def test_a_site_group_alerts_identically_in_the_worker_and_in_replay(
    broker_bootstrap: str, fresh_topics: None, tmp_path: Path
) -> None:
    config = tmp_path / "config"
    shutil.copytree(DEFAULT_CONFIG_DIR, config)
    (config / "anomaly.yaml").write_text(SITE, encoding="utf-8")
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=5)
    readings = lane(start, 240, stalled=range(200, 204))
    events = [
        event(code, t, value)
        for t, speed, occupancy in readings
        for code, value in (("traffic.speed_kmh", speed), ("traffic.occupancy_pct", occupancy))
    ]
    src = tmp_path / "lane.csv"
    rows = ["timestamp,speed,occupancy"] + [f"{t.isoformat()},{s},{o}" for t, s, o in readings]
    src.write_text("\n".join(rows) + "\n", encoding="utf-8")
    mapping = {"speed": "traffic.speed_kmh", "occupancy": "traffic.occupancy_pct"}
    expected, _ = replay_file(src, load_config(config), district=DISTRICT, mapping=mapping)
    site_events = [e for e in expected if e["evidence"]["rule"] == "anomaly.site"]
    assert [e["status"] for e in site_events][:1] == ["firing"]  # the stalled lane is seen

    worker = Worker(broker_bootstrap, tmp_path, env={"CITYVITALS_CONFIG_DIR": str(config)})
    try:
        run(harness.produce(broker_bootstrap, events))
        worker.start()
        last = max(e["sequence"] for e in site_events)
        wait_for(
            lambda: any(
                e.evidence.rule == "anomaly.site" and e.sequence == last
                for e in published(broker_bootstrap)
            ),
            180,
            "the site alert's last event",
        )
        # every window of the run closed: the last minute's vitals are out
        wait_for(
            lambda: (
                len({summary(e) for e in published(broker_bootstrap)})
                >= len({summary(e) for e in expected})
            ),
            120,
            "every alert event of the replay",
        )
    finally:
        worker.stop(signal.SIGKILL)
    got = {summary(e) for e in published(broker_bootstrap)}
    assert got == {summary(e) for e in expected}
