"""Closing windows on silence: only after running silence, only when the broker confirms
nothing is left to read, never while a pause is in doubt, and also for a worker that
restarted after its input ended."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from streams.core.messages import VITALS_TOPIC, DistrictVitals
from streams.core.settings import Settings
from streams.kafka.feed import key_partition
from streams.kafka.processor import VitalsProcessor
from streams.kafka.tables import MemoryTable
from streams.state.windows import DistrictWindows
from tests.fuzz.batch import CFG, CTX, _Outputs

DISTRICT = "339901"
PARTITIONS = 4
OWNED = frozenset(range(PARTITIONS))


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class World:
    """A processor whose clock, broker answers and pause state the test sets."""

    def __init__(self) -> None:
        self.clock = Clock()
        self.sent: list[tuple[str, bytes | None, bytes]] = []
        self.broker_caught_up = True
        self.asked: list[float] = []
        self.paused = False
        self.table = MemoryTable()
        self.position = {"city.events.iot": (7, 7)}  # everything handled

        def caught_up(partitions: frozenset[int], since: float) -> bool:
            self.asked.append(since)
            return self.broker_caught_up

        self.processor = VitalsProcessor(
            self.table,
            CFG,
            Settings(partitions=PARTITIONS, idle_close_s=60),
            outputs=lambda: _Outputs(self.sent),  # type: ignore[arg-type,return-value]
            progress=lambda topic, partition: self.position.get(topic, (0, 0)),
            detection_table=MemoryTable(),
            detection=CTX,
            clock=self.clock,
            caught_up=caught_up,
            fenced=lambda: self.paused,
        )
        # a district restored with two open minutes, an hour in the past
        start = (datetime.now(UTC) - timedelta(hours=1)).timestamp() // 60 * 60
        state = DistrictWindows(DISTRICT)
        for minute in range(2):
            state.add("iot.pm25", 30.0, start + 60 * minute + 5, "city.events.iot")
        self.table[DISTRICT.encode()] = state

    def tick(self, seconds: float) -> list[DistrictVitals]:
        self.clock.t += seconds
        before = len(self.sent)
        asyncio.run(self.processor.close_idle(OWNED))
        return [
            DistrictVitals.model_validate_json(v)
            for topic, _, v in self.sent[before:]
            if topic == VITALS_TOPIC
        ]


def test_a_worker_restarted_after_its_input_ended_still_closes_its_windows() -> None:
    world = World()
    world.processor.assigned()  # no batch will ever come
    assert world.tick(30) == []  # not silent long enough
    assert world.tick(31) == [] and world.asked == []  # silent: the question is put
    closed = world.tick(1)  # a later tick reads the broker's answer
    assert len(world.asked) == 1
    assert [v.district for v in closed] == [DISTRICT, DISTRICT]
    assert world.table[DISTRICT.encode()].open == {}


def test_nothing_closes_while_the_broker_has_not_confirmed_the_input_is_read() -> None:
    world = World()
    world.processor.assigned()
    world.broker_caught_up = False
    for _ in range(5):
        assert world.tick(61) == []
    assert world.asked  # it kept asking
    assert len(world.table[DISTRICT.encode()].open) == 2


def test_nothing_closes_while_a_pause_leaves_the_partitions_in_doubt() -> None:
    world = World()
    world.processor.assigned()
    world.paused = True
    for _ in range(3):
        assert world.tick(61) == []
    assert world.asked == []
    world.paused = False
    world.tick(1)
    assert len(world.tick(1)) == 2


def test_a_partition_with_unread_records_keeps_its_districts_open() -> None:
    world = World()
    world.processor.assigned()
    partition = key_partition(DISTRICT.encode(), PARTITIONS)
    assert partition in OWNED
    world.position = {"city.events.iot": (7, 9)}  # two records not handled yet
    for _ in range(3):
        assert world.tick(61) == []
    assert world.asked == []
