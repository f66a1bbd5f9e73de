"""Two river detectors chosen in config/anomaly.yaml alert through the live worker on the real broker."""

from __future__ import annotations

import shutil
import signal
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from streams.config import DEFAULT_CONFIG_DIR
from streams.schemas import AlertEvent
from streams.simulator import SimEvent
from tests import harness
from tests.harness import Worker, published, run, wait_for

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
