"""A long pause fences the worker until the group has settled who owns its partitions."""

from __future__ import annotations

import time

from streams.kafka.pause import LiveClock, PauseFence


def paused(clock: LiveClock, ended_s_ago: float) -> None:
    """Record a pause of ``clock`` that ended ``ended_s_ago`` seconds ago."""
    clock.pauses += 1
    clock.last_pause_end = time.monotonic() - ended_s_ago


def test_a_worker_never_paused_is_not_fenced() -> None:
    assert not PauseFence(LiveClock(), fence_s=12).up()


def test_a_recent_pause_fences_until_a_reassignment_settles_it() -> None:
    clock = LiveClock()
    fence = PauseFence(clock, fence_s=12)
    paused(clock, ended_s_ago=1)
    assert fence.up()
    fence.settle()
    assert not fence.up()


def test_a_pause_without_a_rebalance_after_it_lifts_the_fence_for_good() -> None:
    clock = LiveClock()
    fence = PauseFence(clock, fence_s=12)
    paused(clock, ended_s_ago=13)
    assert not fence.up()
    clock.last_pause_end = time.monotonic()  # the same pause, seen again: settled already
    assert not fence.up()


def test_a_long_gap_between_ticks_counts_as_a_pause_and_for_at_most_the_cap() -> None:
    clock = LiveClock(cap_s=2.0, pause_s=3.0)
    clock._last -= 90  # the process was stopped for 90 s
    assert clock.tick() <= 2.0 + 0.1
    assert clock.pauses == 1
