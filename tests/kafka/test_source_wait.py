"""How long a silent source holds a district's windows open: bounded, and set per source.

A district's windows close on the lowest mark among its active sources. A source
that has gone quiet stays active for its wait (``CITYVITALS_SOURCE_WAIT_S``, else
``CITYVITALS_IDLE_CLOSE_S``), then stops holding the others back.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import orjson
import pytest
from pydantic import ValidationError

from streams.core import metrics
from streams.core.messages import VITALS_TOPIC, DistrictVitals
from streams.core.settings import Settings
from streams.kafka.feed import InputRecord
from streams.kafka.processor import VitalsProcessor
from streams.kafka.tables import MemoryTable
from tests.fuzz.batch import CFG, CTX, _Outputs

DISTRICT = "339901"


class Feed:
    """A worker's batch handler with a clock the test moves (running seconds)."""

    def __init__(self, settings: Settings) -> None:
        self.t = 1000.0
        self.sent: list[tuple[str, bytes | None, bytes]] = []
        self.offsets: dict[str, int] = {}
        self.processor = VitalsProcessor(
            MemoryTable(),
            CFG,
            settings,
            outputs=lambda: _Outputs(self.sent),  # type: ignore[arg-type,return-value]
            progress=lambda topic, partition: (self.offsets.get(topic, 0),) * 2,
            detection_table=MemoryTable(),
            detection=CTX,
            clock=lambda: self.t,
        )
        now = datetime.now(UTC).timestamp()
        self.t0 = now - now % 60 - 600  # ten minutes ago, on a minute

    def send(self, source: str, seconds: float, **fields: object) -> None:
        topic = f"city.events.{source}"
        doc = {
            "event_id": f"{source}-{seconds}",
            "source": f"{source}.test",
            "district": DISTRICT,
            "street": "339901001",
            "event_time": datetime.fromtimestamp(self.t0 + seconds, UTC).isoformat(),
            **fields,
        }
        offset = self.offsets.get(topic, 0)
        self.offsets[topic] = offset + 1
        record = InputRecord(topic, 0, offset, DISTRICT.encode(), orjson.dumps(doc))
        asyncio.run(self.processor.process_batch([record]))

    def iot(self, seconds: float) -> None:
        self.send("iot", seconds, indicator="iot.pm25", value=30.0, unit="µg/m³")

    def closed(self) -> list[float]:
        """Window starts published on city.vitals, seconds after t0."""
        return [
            DistrictVitals.model_validate_json(v).window_start.timestamp() - self.t0
            for topic, _, v in self.sent
            if topic == VITALS_TOPIC
        ]


def delay_count() -> float:
    name = "cityvitals_vitals_window_close_delay_seconds_count"
    return metrics.REGISTRY.get_sample_value(name, {"trigger": "watermark"}) or 0.0


def run(settings: Settings) -> tuple[list[float], list[float]]:
    """A hotline call, then four minutes of air quality after the hotline falls silent:
    the windows closed while the hotline still counted as active, and then after."""
    feed = Feed(settings)
    feed.send("hotline", 5, indicator="hotline.complaints", value=1.0, unit="count")
    for s in range(10, 250, 10):
        feed.iot(s)
    before = feed.closed()
    feed.t += 20  # twenty running seconds without a hotline call
    feed.iot(250)
    return before, feed.closed()


def test_a_quiet_source_holds_the_windows_until_its_own_wait_runs_out() -> None:
    # the sources this district never hears from are quick to give up on too
    waits = {"hotline": 15.0, "traffic": 5.0, "fire": 5.0, "sanitation": 5.0, "appeals": 5.0}
    counted, started = delay_count(), time.time()
    before, after = run(Settings(partitions=4, idle_close_s=60, source_wait_s=waits))
    assert before == []  # the hotline's mark (00:05) holds every window
    # how long each closed window waited past its end is measured, per district too
    assert delay_count() == counted + 2
    last = metrics.REGISTRY.get_sample_value(
        "cityvitals_vitals_watermark_lag_seconds", {"district": DISTRICT}
    )
    end = started - started % 60 - 600 + 120  # the second window's end
    assert last is not None and started - end - 60 <= last <= time.time() - end + 60
    # after 15 s of silence it no longer counts: the iot mark (04:10) closes what it passed
    assert after == [0.0, 60.0]
    # given 30 s, the hotline still holds them after its 20 s of silence
    _, held = run(Settings(partitions=4, source_wait_s={**waits, "hotline": 30.0}))
    assert held == []


def test_without_a_wait_of_its_own_a_source_waits_the_idle_close_time() -> None:
    before, after = run(Settings(partitions=4, idle_close_s=60))
    assert before == [] and after == []  # 20 s of silence is within the 60 s


@pytest.mark.parametrize(
    ("wait", "message"),
    [
        ({"radio": 10}, "unknown source 'radio'"),
        ({"hotline": 0}, "the wait for 'hotline' must be more than 0 s"),
    ],
)
def test_a_wrong_source_wait_stops_start_up_naming_the_variable(
    wait: dict[str, float], message: str
) -> None:
    with pytest.raises(ValidationError) as err:
        Settings(source_wait_s=wait)
    assert "CITYVITALS_SOURCE_WAIT_S" in str(err.value) and message in str(err.value)
