"""Pauses of the worker and its broker: the clocks of silence, and the fence a pause raises.

Time for the idle rules is :class:`HearingClock` time: :class:`LiveClock` seconds
(wall seconds during which the process actually ran) during which the broker
answered. A pause (a VM freeze, SIGSTOP, a long GC, a blocked event loop) counts
for at most a couple of seconds, so a worker that wakes up does not take its own
absence for the city's silence; nor does a worker whose broker was down or
unreachable, since meanwhile no source could be heard, and the sources' own
producers hold their records until the broker is back and then send them in no
particular order across topics.

A pause longer than half the session timeout may have cost the worker its
group membership, and another worker its partitions. :class:`PauseFence` says
whether such a pause is still in doubt: until the consumer group has had time
to say whether this worker still owns its partitions (a rebalance moves them,
or the session turns out to have survived), the input feed handles and commits
nothing, since writing stale state after the new owner would be a zombie's write.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


class LiveClock:
    """Seconds during which this process ran: a pause counts for at most ``cap_s``.

    A thread of its own ticks four times a second and records every gap longer
    than ``pause_s``. A thread, not a task: a batch that keeps the event loop
    busy for seconds is work, not a pause (the consumer group's heartbeats run
    in Faust's consumer thread meanwhile), while a stopped or frozen process
    stops every thread.
    """

    def __init__(self, cap_s: float = 2.0, pause_s: float = 3.0, step_s: float = 0.25) -> None:
        self.cap_s = cap_s
        self.pause_s = pause_s
        self.step_s = step_s
        self._last = time.monotonic()
        self._live = 0.0
        self.pauses = 0
        self.last_pause_end = -math.inf  # monotonic time the last pause ended
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def tick(self) -> float:
        now = time.monotonic()
        gap = now - self._last
        if gap > self.pause_s:
            self.pauses += 1
            self.last_pause_end = now
            log.warning("the worker was paused for %.1f s", gap)
        self._live += min(gap, self.cap_s)
        self._last = now
        return self._live

    def now(self) -> float:
        return self._live + min(time.monotonic() - self._last, self.cap_s)

    def start(self) -> None:
        if self._thread is None:
            self._last = time.monotonic()
            self._stop.clear()
            self._thread = threading.Thread(target=self._ticker, name="live-clock", daemon=True)
            self._thread.start()

    async def stop(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join(timeout=2)
            self._thread = None

    def _ticker(self) -> None:
        while not self._stop.wait(self.step_s):
            self.tick()


class HearingClock:
    """Running seconds during which the broker answered: the clock silence is measured by.

    ``answered`` gives the wall time (seconds) of the newest sign of the broker: a
    fetch answered, or records handed over. A gap between two signs longer than
    ``grace_s`` counts for ``grace_s``: the broker was down, restarting or
    unreachable. The grace is well above the fetch wait of a quiet broker (0.5 s)
    and above what :class:`LiveClock` counts for a pause of the worker (2 s), so
    neither a quiet city nor a paused worker looks deaf. Before the first sign the
    clock runs as ``live`` does; it never goes back.

    Only the newest sign is known, so the clock must be read more often than the
    grace (the input feed reads it after every fetch).
    """

    def __init__(
        self,
        live: Callable[[], float],
        answered: Callable[[], float | None],
        grace_s: float = 3.0,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._live, self._answered, self._wall = live, answered, wall
        self.grace_s = grace_s
        self.deaf_s = 0.0  # running seconds of the gaps behind us, beyond the grace
        self.sign: float | None = None  # wall time of the newest sign seen
        self._live_at_sign = 0.0  # running time of that sign
        self._last = -math.inf

    def now(self) -> float:
        live = self._live()
        sign = self._answered()
        if sign is not None and sign != self.sign:
            # the sign came (wall - sign) seconds ago, after the previous one
            at = live - max(0.0, self._wall() - sign)
            if self.sign is not None:
                at = max(at, self._live_at_sign)
                self.deaf_s += max(0.0, at - self._live_at_sign - self.grace_s)
            self.sign, self._live_at_sign = sign, at
        ongoing = 0.0
        if self.sign is not None:
            ongoing = max(0.0, live - self._live_at_sign - self.grace_s)
        self._last = max(self._last, live - self.deaf_s - ongoing)
        return self._last


class PauseFence:
    """Whether a recent pause of ``clock`` leaves it open if this worker owns its partitions.

    The fence is up from the end of a pause the clock noticed until ``fence_s``
    seconds have passed without a rebalance (the group kept us), or until a
    rebalance has reassigned the partitions (:meth:`settle`).
    """

    def __init__(self, clock: LiveClock, fence_s: float) -> None:
        self.clock = clock
        self.fence_s = fence_s
        self._settled = 0  # pauses settled: a rebalance or no rebalance followed them

    def up(self) -> bool:
        clock = self.clock
        if clock.pauses == self._settled:
            return False
        if time.monotonic() - clock.last_pause_end < self.fence_s:
            return True
        self._settled = clock.pauses
        log.info("no rebalance followed the pause: this worker kept its partitions")
        return False

    def settle(self) -> None:
        """A reassignment restarts from committed offsets and recovered state: whatever
        the pauses before it put in doubt is settled."""
        self._settled = self.clock.pauses
