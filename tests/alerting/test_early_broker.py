"""Alarms decided on the reading, on the real broker: through a SIGKILL that falls between
an early firing and the close of its window, the worker publishes exactly the alert events
that the offline judgement of the same records in the canonical order gives."""

from __future__ import annotations

import signal
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from bench.verify_oracle import (
    ExpectedReading,
    Produced,
    detection_context,
    expected_alerts,
    expected_windows,
)
from streams.core.config import load_config
from streams.core.messages import VITALS_TOPIC, AlertEvent
from streams.sim.simulator import SimEvent
from tests import harness
from tests.harness import Worker, published, read_topic, run, wait_for

pytestmark = pytest.mark.broker

CFG = load_config()
DISTRICT, STREET = "339901", "339901001"
UNITS = {
    "fire.temperature_c": "°C",
    "fire.smoke_alarms": "count",
    "iot.noise_db": "dB(A)",
    "traffic.speed_kmh": "km/h",
    "sanitation.bin_fill_pct": "%",
    "hotline.complaints": "count",
}
TOPICS = {"fire": "city.events.fire", "iot": "city.events.iot", "traffic": "city.events.traffic"}
TOPICS |= {"sanitation": "city.events.sanitation", "hotline": "city.events.hotline"}


def event(indicator: str, t: datetime, value: float) -> SimEvent:
    body = {
        "event_id": f"{indicator}-{uuid.uuid4().hex[:12]}",
        "source": f"{indicator}.{STREET}.01",
        "district": DISTRICT,
        "street": STREET,
        "indicator": indicator,
        "value": value,
        "unit": UNITS[indicator],
        "event_time": t.isoformat(),
    }
    topic = TOPICS[indicator.partition(".")[0]]
    return SimEvent(topic, DISTRICT.encode(), orjson.dumps(body), t)


def calm(start: datetime, seconds: range) -> list[SimEvent]:
    """A street at rest: a temperature every 10 s (fire topic), noise every 15 s (iot)."""
    out = []
    for s in seconds:
        t = start + timedelta(seconds=s)
        if s % 10 == 0:
            out.append(event("fire.temperature_c", t, 24.0 + s % 3))
        if s % 15 == 0:
            out.append(event("iot.noise_db", t, 52.0))
    return out


def vitals_starts(bootstrap: str) -> set[str]:
    docs = [orjson.loads(v) for v in run(read_topic(bootstrap, VITALS_TOPIC, idle_s=1))]  # type: ignore[union-attr]
    return {d["window_start"] for d in docs if d.get("district") == DISTRICT}


def as_oracle_input(produced: list[harness.Produced]) -> list[Produced]:
    out = []
    for p in produced:
        body = orjson.loads(p.event.value)
        reading = ExpectedReading(
            DISTRICT,
            body["indicator"],
            STREET,
            float(body["value"]),
            p.event.event_time.timestamp(),
        )
        out.append(Produced(p.topic, p.partition, p.offset, body["indicator"], None, reading))
    return out


def test_an_early_alarm_is_published_once_through_a_sigkill_before_its_window_closes(
    broker_bootstrap: str, fresh_topics: None, tmp_path: Path
) -> None:
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=3)
    fire_at = start + timedelta(minutes=6, seconds=5)
    # six calm minutes, then a fire: 320 °C (grade I at once) and three smoke alarms
    # within the minute (fire.smoke_alarms.sum5: grade IV on the second, III on the third)
    # one reading of each other feed at the start: then silent, each holds the district's
    # windows back for its wait (1 s), judged when the district's next batch ends
    first = [event("traffic.speed_kmh", start, 40.0), event("sanitation.bin_fill_pct", start, 30.0)]
    first += [event("hotline.complaints", start, 1.0)]
    first += calm(start, range(0, 365))
    first += [event("fire.temperature_c", fire_at, 320.0)]
    first += [event("fire.smoke_alarms", fire_at + timedelta(seconds=s), 1.0) for s in (5, 7, 9)]
    # windows close on the fire and iot feeds alone; nothing closes for silence meanwhile
    env = {
        "CITYVITALS_IDLE_CLOSE_S": "3600",
        "CITYVITALS_SOURCE_WAIT_S": orjson.dumps(
            {"traffic": 1, "sanitation": 1, "hotline": 1, "appeals": 1}
        ).decode(),
    }
    worker = Worker(broker_bootstrap, tmp_path, env=env)
    try:
        produced = run(harness.produce(broker_bootstrap, first))
        worker.start()

        def early() -> list[AlertEvent]:
            return [e for e in published(broker_bootstrap) if e.evidence.decided == "reading"]

        wait_for(lambda: len(early()) >= 3, 120, "the alarms decided on the readings")
        raised = {(e.evidence.rule, e.grade.roman) for e in early()}
        assert raised == {
            ("fire.temperature.max", "I"),
            ("fire.smoke_alarms.sum5", "IV"),  # the second alarm
            ("fire.smoke_alarms.sum5", "III"),  # the third
        }
        minute6 = (start + timedelta(minutes=6)).isoformat().replace("+00:00", "Z")
        assert minute6 not in vitals_starts(broker_bootstrap), "the fire's minute closed"
        worker.stop(signal.SIGKILL)  # after the early firing, before its window closes
        worker.forget_group()  # the next worker joins an empty group (harness.Worker)

        # late readings within the allowed lateness (two more smoke alarms in minute 6:
        # grade II on the reading), more of the calm street on both feeds, the fire out
        second = [event("fire.smoke_alarms", fire_at + timedelta(seconds=s), 1.0) for s in (30, 31)]
        second += calm(start, range(365, 1620))
        produced += run(harness.produce(broker_bootstrap, second))
        worker.start()
        last = (start + timedelta(minutes=26)).isoformat().replace("+00:00", "Z")
        fed = [1620]

        def closed_else_feed() -> bool:
            """Minute 26 closed; else 30 s more of the street, as a live feed goes on."""
            if last in vitals_starts(broker_bootstrap):
                return True
            produced.extend(
                run(harness.produce(broker_bootstrap, calm(start, range(fed[0], fed[0] + 30))))
            )
            fed[0] += 30
            return False

        wait_for(closed_else_feed, 300, "minute 26 to close")
    finally:
        worker.stop(signal.SIGKILL)

    got = published(broker_bootstrap)
    unique: dict[tuple[str, int], dict[str, Any]] = {}
    for e in got:
        doc = orjson.loads(e.to_json())
        assert unique.setdefault((e.alert_id, e.sequence), doc) == doc, (
            f"two different events {e.alert_id}#{e.sequence}"
        )
    # the offline judgement of the same records, in the canonical order
    records = as_oracle_input(produced)  # type: ignore[arg-type]
    ctx = detection_context(CFG)
    expected = expected_alerts(CFG, expected_windows(records, ctx.street_indicators), ctx, records)
    # what both decided by the end of minute 26 (the worker may have closed more)
    upto = (start + timedelta(minutes=27)).timestamp()

    def upto_26(docs: Iterable[dict[str, Any]]) -> dict[tuple[str, int], dict[str, Any]]:
        return {
            (d["alert_id"], d["sequence"]): d
            for d in docs
            if datetime.fromisoformat(d["event_time"]).timestamp() <= upto
        }

    assert upto_26(expected) == upto_26(unique.values())
    smoke = sorted(
        (d["sequence"], d["grade"], d["evidence"]["decided"])
        for d in upto_26(unique.values()).values()
        if d["evidence"]["rule"] == "fire.smoke_alarms.sum5"
    )
    assert smoke[:3] == [(1, 4, "reading"), (2, 3, "reading"), (3, 2, "reading")]
    for rule in ("fire.temperature.max", "fire.smoke_alarms.sum5"):  # one alert each
        assert len({d["alert_id"] for d in unique.values() if d["evidence"]["rule"] == rule}) == 1
