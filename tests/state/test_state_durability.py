"""Offsets are committed only after the state they depend on is on its changelog: a
state write the producer gives up on (a batch expired during a pause, a broker
outage) is written again from the district's current value, and the commit waits."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from aiokafka.errors import KafkaTimeoutError

from streams.core.settings import Settings
from streams.kafka.feed import Fenced, InputRecord
from streams.kafka.processor import VitalsProcessor
from streams.kafka.tables import MemoryTable
from streams.sim.simulator import CitySimulator
from streams.state.windows import DistrictWindows
from tests.fuzz.batch import CFG, CTX

CHANGELOG = "cityvitals-vitals-changelog"


class FailingOutputs:
    """Outputs whose changelog sends fail while ``world.failing`` is set."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.records: list[tuple[str, bytes | None, bytes]] = []

    def add(self, topic: str, key: bytes | None, value: bytes) -> None:
        self.records.append((topic, key, value))

    def __len__(self) -> int:
        return len(self.records)

    async def send(self, *, wait: bool = True, counted: bool = True) -> list[Any]:
        futures = []
        for topic, key, value in self.records:
            future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            if topic == CHANGELOG and self.world.failing:
                future.set_exception(KafkaTimeoutError())
            else:
                future.set_result(None)
                self.world.acked.append((topic, key, value))
            futures.append(future)
        self.records = []
        if wait:
            await asyncio.gather(*futures)
            return []
        return futures


class World:
    def __init__(self) -> None:
        self.failing = False
        self.paused = False
        self.acked: list[tuple[str, bytes | None, bytes]] = []
        self.table = MemoryTable()
        self.processor = VitalsProcessor(
            self.table,
            CFG,
            Settings(partitions=4),
            outputs=lambda: FailingOutputs(self),  # type: ignore[arg-type,return-value]
            progress=lambda topic, partition: (0, 0),
            detection_table=MemoryTable(),
            detection=CTX,
            changelogs=(CHANGELOG, "cityvitals-detection-changelog"),
            fenced=lambda: self.paused,
        )

    def changelog(self) -> dict[bytes, dict[str, Any]]:
        """The last value acknowledged on the windows changelog, per district."""
        return {k: orjson.loads(v) for t, k, v in self.acked if t == CHANGELOG and k}


def records(n: int, first_offset: int) -> list[InputRecord]:
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=2)
    events = CitySimulator(CFG, seed=5, start=start).take(n)
    return [
        InputRecord(ev.topic, 0, first_offset + i, ev.key, ev.value) for i, ev in enumerate(events)
    ]


def test_a_state_write_lost_by_the_producer_is_written_again_before_any_commit() -> None:
    world = World()
    loop = asyncio.new_event_loop()
    batch = records(400, 0)
    loop.run_until_complete(world.processor.process_batch(batch))
    districts = {r.key for r in batch}
    world.failing = True
    # the commit must not go ahead while the state is not durable
    with pytest.raises(KafkaTimeoutError):
        loop.run_until_complete(world.processor.flush_state())
    assert world.changelog() == {}  # nothing reached the changelog
    world.failing = False  # the broker is back
    loop.run_until_complete(world.processor.flush_state())  # the rewrite is acknowledged
    durable = world.changelog()
    assert set(durable) == districts
    for key in districts:
        in_memory: DistrictWindows = world.table[key]
        restored = DistrictWindows.from_dict(durable[key])
        assert restored.to_dict() == in_memory.to_dict()
    loop.run_until_complete(world.processor.flush_state())  # nothing left to wait for
    loop.close()


def test_batches_between_two_commits_write_each_district_once_with_its_latest_value() -> None:
    """The changelog is read whole by every recovery (the embedded broker does not
    compact it): the windows go there once per district per offset commit."""
    world = World()
    loop = asyncio.new_event_loop()
    batches = [records(300, 0), records(300, 300)[150:], records(600, 600)[300:]]
    for batch in batches:
        loop.run_until_complete(world.processor.process_batch(batch))
    assert world.changelog() == {}  # nothing is written before a commit asks for it
    loop.run_until_complete(world.processor.flush_state())
    written = [k for t, k, _ in world.acked if t == CHANGELOG]
    districts = {r.key for batch in batches for r in batch}
    assert sorted(written) == sorted(districts)  # one record per district
    for key, value in world.changelog().items():
        assert DistrictWindows.from_dict(value).to_dict() == world.table[key].to_dict()
    loop.close()


def test_after_a_pause_that_may_have_cost_the_partitions_nothing_is_written() -> None:
    world = World()
    loop = asyncio.new_event_loop()
    loop.run_until_complete(world.processor.process_batch(records(300, 0)))
    world.paused = True  # another worker may own the districts now: a write would be a zombie's
    with pytest.raises(Fenced):
        loop.run_until_complete(world.processor.flush_state())
    assert world.changelog() == {}
    world.paused = False  # no rebalance followed: the worker kept them
    loop.run_until_complete(world.processor.flush_state())
    assert set(world.changelog()) == {r.key for r in records(300, 0)}
    loop.close()
