"""A long pause fences the worker until the group has settled who owns its partitions."""

from __future__ import annotations

import time

import pytest

from streams.kafka.pause import HearingClock, LiveClock, PauseFence


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


class Moments:
    """A running-time clock, a wall clock and the broker's answers, moved by the test.

    The clock under test is read every quarter second, as the input feed reads it
    after every fetch.
    """

    def __init__(self) -> None:
        self.live = 100.0
        self.wall = 5000.0
        self.sign: float | None = None
        self.clock = HearingClock(lambda: self.live, lambda: self.sign, 3.0, lambda: self.wall)
        self.read: list[float] = []

    def run(self, seconds: float, answers_every: float | None) -> float:
        """``seconds`` of running and wall time, the broker answering this often (never
        with None); the clock's advance."""
        start = self.clock.now()
        for _ in range(round(seconds / 0.25)):
            self.live += 0.25
            self.wall += 0.25
            if answers_every is not None and self.wall - (self.sign or -1e9) >= answers_every:
                self.sign = self.wall
            self.read.append(self.clock.now())
        return self.clock.now() - start


def test_the_silence_clock_runs_while_the_broker_answers() -> None:
    m = Moments()
    assert m.run(20, answers_every=0.5) == pytest.approx(20.0)
    assert m.run(20, answers_every=2.5) == pytest.approx(20.0)  # slow answers, not deaf


def test_a_broker_outage_counts_for_the_grace_only() -> None:
    m = Moments()
    m.run(5, answers_every=0.25)  # the last answer comes at the end
    assert m.run(15, answers_every=None) == pytest.approx(3.0)
    # back: it runs again from the first answer, a quarter second in
    assert m.run(4, answers_every=0.5) == pytest.approx(4.0 - 0.25)
    assert m.read == sorted(m.read), "the clock went back"


def test_an_outage_seen_only_when_it_ends_counts_for_the_grace_too() -> None:
    m = Moments()
    m.run(5, answers_every=0.25)  # the last answer comes at the end
    before = m.clock.now()
    m.live += 15  # nobody read the clock meanwhile
    m.wall += 15
    m.sign = m.wall - 0.5  # the first answer after it, half a second ago
    assert m.clock.now() - before == pytest.approx(3.0 + 0.5)


def test_a_paused_worker_is_not_deaf() -> None:
    m = Moments()
    m.run(5, answers_every=0.25)  # the last answer comes at the end
    before = m.clock.now()
    m.wall += 90  # stopped 90 s: the running clock counts 2 of them
    m.live += 2
    m.run(1, answers_every=0.5)
    assert m.clock.now() - before == pytest.approx(3.0)


def test_before_any_answer_the_clock_runs_as_the_running_time() -> None:
    m = Moments()
    assert m.run(10, answers_every=None) == pytest.approx(10.0)
