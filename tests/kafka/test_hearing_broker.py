"""Silence is not counted while the broker is down.

Windows close once a district's sources have been silent for their wait; a broker
restart silences every source at once, and their producers send what they held
afterwards, in no particular order across topics. The input feed's silence clock
(:class:`streams.kafka.pause.HearingClock`) therefore stands still while the
broker gives no answer, beyond a grace of a few seconds.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from streams.kafka.broker import EmbeddedBroker
from streams.kafka.feed import InputFeed
from tests.kafka.test_broker_restart_broker import _produce_numbers

pytestmark = pytest.mark.broker

DOWN_S = 10.0


async def until(predicate: Any, timeout: float, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


def answered(feed: InputFeed) -> bool:
    feed.hearing.now()  # the clock takes note of the broker's newest answer
    return feed.hearing.sign is not None


async def outage(broker: EmbeddedBroker) -> tuple[float, float, float]:
    """(running seconds, silence-clock seconds, grace) across a broker restart."""

    async def nothing(records: Any = None) -> None:
        return None

    feed = InputFeed(
        bootstrap=broker.bootstrap,
        group_id="hearing",
        topics=("hearing.in",),
        handler=nothing,
        flush_state=nothing,
    )
    await feed.start()
    try:
        await feed.assign({0})
        await until(lambda: answered(feed), 60, "a fetch answered")
        live0, heard0 = feed.clock.now(), feed.hearing.now()
        await asyncio.to_thread(broker.restart, kill=True, down_s=DOWN_S)
        live1, heard1 = feed.clock.now(), feed.hearing.now()
        # back: the clock runs again once the broker answers
        await until(lambda: feed.hearing.now() > heard1 + 1.0, 120, "the silence clock to run")
        return live1 - live0, heard1 - heard0, feed.hearing.grace_s
    finally:
        await feed.stop()


def test_the_silence_clock_stands_still_while_the_broker_is_down(tmp_path: Path) -> None:
    with EmbeddedBroker(storage="local-s3", log_path=tmp_path / "broker.log") as broker:
        _produce_numbers(broker.bootstrap, "hearing.in", 3)
        live, heard, grace = asyncio.run(outage(broker))
    assert live >= DOWN_S
    # the broker gave no answer for at least DOWN_S: all of it but the grace is deaf
    assert live - heard >= DOWN_S - grace
