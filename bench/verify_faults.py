"""The fault verifier's workers and faults: worker processes of one consumer group,
SIGKILL and restart, SIGSTOP past the session and idle-close times, and scaling
between one, two and three workers, scripted with a seeded random generator.

The embedded broker keeps a departed member in the group, and a worker that joins
a group where a member left while a join was pending can wait for good
(docs/architecture.md, "The embedded broker"). So when every worker is down the
group is deleted before the next one starts (the input offsets live in
``<app id>-input`` and are kept), and when the live workers do not all become
ready within ``READY_TIMEOUT_S`` the group is reset: every worker killed, the
group deleted, the same workers started again. Resets are counted apart from the
scripted kills.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from promtext import sums

from streams.core.messages import EVENT_TOPICS
from streams.kafka.child import WorkerProcess, free_port, generated_secrets, needed_secrets

REPO_ROOT = Path(__file__).resolve().parent.parent
READY_TIMEOUT_S = 60.0
CRASH_RESTARTS = 3  # restarts of a worker that exits on its own, before giving up on it
LAG = "cityvitals_pipeline_consumer_lag_records"

ROUTES_YAML = """\
# cityvitals verify: every alert is routed to a muted route (nothing is sent) and
# acknowledgement deadlines are a century, so no escalate action ever changes an alert.
version: 1
receivers:
  - name: nowhere
    url: http://127.0.0.1:9/cityvitals-verify
    format: native
time_intervals:
  - name: always
    time_intervals:
      - times: [{start_time: "00:00", end_time: "24:00"}]
route:
  receiver: nowhere
  routes:
    - name: muted
      mute_time_intervals: [always]
escalation:
  ack_deadlines: {I: 36500d, II: 36500d, III: 36500d, IV: 36500d}
  levels: {street: nowhere, district: nowhere, city: nowhere}
"""


@dataclass
class Slot:
    """One worker's place: its own web port, data directory and logs, across restarts."""

    index: int
    workdir: Path
    web_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0
    crashes: int = 0
    gave_up: bool = False
    paused: bool = False

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def log_path(self) -> Path:
        return self.workdir / f"worker-{self.index}.{self.starts}.log"

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


class Cluster:
    """Workers of one app id: started, killed, paused, watched; every change under one lock."""

    def __init__(
        self,
        bootstrap: str,
        workdir: Path,
        *,
        app_id: str,
        partitions: int,
        size: int,
        say: Callable[[str], None],
    ) -> None:
        self.bootstrap = bootstrap
        self.app_id = app_id
        self.say = say
        self.workdir = workdir
        routes = workdir / "routes.yaml"
        routes.write_text(ROUTES_YAML, encoding="utf-8")
        self.env = {
            **os.environ,
            "CITYVITALS_BOOTSTRAP": bootstrap,
            "CITYVITALS_APP_ID": app_id,
            "CITYVITALS_PARTITIONS": str(partitions),
            "CITYVITALS_IDLE_CLOSE_S": "10",
            "CITYVITALS_EMBEDDED_BROKER": "1",
            "CITYVITALS_ROUTES_FILE": str(routes),
            "CITYVITALS_LOG_LEVEL": "info",
        }
        # fresh secrets for this run, one set for all its workers (the environment's win)
        self.env.update(generated_secrets(workdir / "secrets", needed_secrets(self.env)))
        self.slots = [Slot(i, workdir) for i in range(size)]
        self.target: set[int] = set()  # the slots that should run
        self.lock = asyncio.Lock()
        self.counts: Counter[str] = Counter()
        self.timeline: list[dict[str, Any]] = []
        self.crash_logs: list[dict[str, Any]] = []
        self._t0 = time.monotonic()
        self._http = httpx.AsyncClient(timeout=2.0)

    def note(self, action: str, **detail: Any) -> None:
        entry = {"t": round(time.monotonic() - self._t0, 1), "action": action, **detail}
        self.timeline.append(entry)
        self.say(f"{action} {' '.join(f'{k}={v}' for k, v in detail.items())}".strip())

    def running(self) -> list[Slot]:
        return [s for s in self.slots if s.running]

    # -- processes -------------------------------------------------------------------
    def _launch(self, slot: Slot) -> None:
        slot.starts += 1
        env = {**self.env, "CITYVITALS_WEB_PORT": str(slot.web_port)}
        env["CITYVITALS_DATADIR"] = str(self.workdir / f"worker-{slot.index}-data")
        # from the main thread: the parent-death signal follows the forking thread
        child = WorkerProcess(env, slot.web_port, slot.log_path, cwd=REPO_ROOT, new_session=True)
        child.start()
        slot.proc = child.proc
        slot.paused = False

    async def _kill(self, slot: Slot) -> None:
        if slot.proc is not None and slot.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                slot.proc.kill()
            await asyncio.to_thread(slot.proc.wait)

    async def _terminate(self, slot: Slot, timeout: float = 20.0) -> None:
        proc = slot.proc
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.to_thread(proc.wait), timeout)
        except TimeoutError:
            await self._kill(slot)

    async def forget_group(self) -> None:
        """Delete the (memberless) consumer group; the input offsets stay."""

        def delete() -> None:
            from kafka.admin import KafkaAdminClient

            admin = KafkaAdminClient(bootstrap_servers=self.bootstrap)
            try:
                admin.delete_groups([self.app_id])
            finally:
                admin.close()

        try:
            await asyncio.to_thread(delete)
            self.counts["group_deletes"] += 1
        except Exception as exc:  # a group that does not exist yet, a broker hiccup
            self.note("group-delete-failed", error=type(exc).__name__)

    async def _start(self, slot: Slot) -> None:
        if not self.running():
            await self.forget_group()
        self._launch(slot)

    # -- observation -------------------------------------------------------------------
    async def ready(self, slot: Slot) -> bool:
        try:
            r = await self._http.get(f"http://127.0.0.1:{slot.web_port}/readyz")
        except httpx.HTTPError:
            return False
        return r.status_code == 200

    async def input_lag(self, slot: Slot) -> float | None:
        """Records of the owned input partitions not handled yet, from /metrics."""
        try:
            text = (await self._http.get(f"http://127.0.0.1:{slot.web_port}/metrics")).text
        except httpx.HTTPError:
            return None
        by_topic = sums(text, [LAG], by="topic")
        return sum(by_topic.get(f"{LAG}:{topic}", 0.0) for topic in EVENT_TOPICS.values())

    async def all_ready(self, timeout: float = READY_TIMEOUT_S) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            live = [self.slots[i] for i in sorted(self.target) if not self.slots[i].gave_up]
            if any(not s.running for s in live):
                return False  # one exited meanwhile: the supervisor takes it from here
            if all([await self.ready(s) for s in live]):
                return True
            await asyncio.sleep(0.3)
        return False

    async def settle(self, why: str) -> None:
        """Wait until the workers that should run are ready; reset the group if stuck."""
        if await self.all_ready():
            return
        if any(not self.slots[i].running and not self.slots[i].gave_up for i in self.target):
            return  # one exited on its own: the supervisor restarts it
        self.note("group-reset", after=why)
        self.counts["group_resets"] += 1
        for slot in self.running():
            await self._kill(slot)
        await self.forget_group()
        for i in sorted(self.target):
            if not self.slots[i].gave_up:
                self._launch(self.slots[i])
        if not await self.all_ready(READY_TIMEOUT_S * 1.5):
            self.note("still-not-ready", after=why)
            self.counts["stuck"] += 1

    # -- the faults ----------------------------------------------------------------------
    async def scale(self, n: int) -> None:
        async with self.lock:
            before = len(self.target)
            usable = [s for s in self.slots if not s.gave_up]
            while len(self.target) < n and len(self.target) < len(usable):
                slot = next(s for s in usable if s.index not in self.target)
                self.target.add(slot.index)
                await self._start(slot)
            while len(self.target) > n:
                slot = self.slots[max(self.target)]
                self.target.discard(slot.index)
                await self._terminate(slot)
            if len(self.target) != before:
                if before:  # the first start is no rebalance
                    self.counts["rebalances"] += 1
                self.note("scale", workers=f"{before}->{len(self.target)}")
            await self.settle(f"scale to {n}")

    async def kill_one(self, rng: random.Random) -> None:
        async with self.lock:
            live = [s for s in self.running() if s.index in self.target]
            if not live:
                return
            victim = rng.choice(live)
            await self._kill(victim)
            self.counts["kills"] += 1
            alone = not self.running()
            self.note("kill", worker=victim.index, of=len(live), all_down=alone)
            await asyncio.sleep(rng.uniform(0.5, 3.0))
            await self._start(victim)
            await self.settle(f"kill of worker {victim.index}")

    async def pause_one(self, rng: random.Random, seconds: float) -> None:
        async with self.lock:
            live = [s for s in self.running() if s.index in self.target]
            if not live:
                return
            victim = rng.choice(live)
            assert victim.proc is not None
            victim.proc.send_signal(signal.SIGSTOP)
            victim.paused = True
            self.counts["pauses"] += 1
            self.note("pause", worker=victim.index, of=len(live), seconds=round(seconds, 1))
            await asyncio.sleep(seconds)
            if victim.proc.poll() is None:
                victim.proc.send_signal(signal.SIGCONT)
            victim.paused = False
            self.note("resume", worker=victim.index)
            await self.settle(f"pause of worker {victim.index}")

    # -- a worker that exits on its own -------------------------------------------------
    async def supervise(self) -> None:
        """Restart a worker of the target set that exited without being told to, a few
        times; after that it is given up (a record that kills it every time)."""
        while True:
            await asyncio.sleep(0.5)
            async with self.lock:
                for i in sorted(self.target):
                    slot = self.slots[i]
                    if slot.gave_up or slot.proc is None or slot.proc.poll() is None:
                        continue
                    slot.crashes += 1
                    self.counts["crashes"] += 1
                    self.crash_logs.append(
                        {
                            "worker": i,
                            "start": slot.starts,
                            "status": slot.proc.returncode,
                            "log": str(slot.log_path),
                            "tail": slot.log_tail(),
                        }
                    )
                    if slot.crashes > CRASH_RESTARTS:
                        slot.gave_up = True
                        self.counts["given_up"] += 1
                        self.note("gave-up", worker=i, status=slot.proc.returncode)
                        continue
                    self.note("crash", worker=i, status=slot.proc.returncode, restart=slot.crashes)
                    await asyncio.sleep(2.0 * slot.crashes)
                    await self._start(slot)
                    await self.settle(f"crash of worker {i}")

    async def close(self) -> None:
        for slot in self.slots:
            if slot.paused and slot.proc is not None and slot.proc.poll() is None:
                slot.proc.send_signal(signal.SIGCONT)
        await asyncio.gather(*(self._terminate(s, timeout=10.0) for s in self.slots))
        await self._http.aclose()


async def cycle(
    cluster: Cluster,
    rng: random.Random,
    *,
    pause_with: int,
    burst: asyncio.Event | None,
) -> None:
    """One round of faults: up to three workers with kills (one while the back-fill is
    caught up, if ``burst`` is given), down to one, a pause of the only worker or of one
    of three, and a kill of the last one standing: six kills, four rebalances, a pause."""

    async def breathe() -> None:
        await asyncio.sleep(rng.uniform(1.5, 4.0))

    await breathe()
    await cluster.scale(2)
    await breathe()
    await cluster.kill_one(rng)
    await breathe()
    await cluster.scale(3)
    if pause_with == 3:
        await breathe()
        await cluster.pause_one(rng, rng.uniform(14.0, 20.0))
    await breathe()
    await cluster.kill_one(rng)
    await breathe()
    await cluster.kill_one(rng)
    if burst is not None:
        await burst.wait()  # a kill while the back-fill is being caught up
        await asyncio.sleep(rng.uniform(0.3, 2.0))
    else:
        await breathe()
    await cluster.kill_one(rng)
    await breathe()
    await cluster.scale(2)
    await breathe()
    await cluster.kill_one(rng)
    await breathe()
    await cluster.scale(1)
    if pause_with == 1:
        await breathe()
        await cluster.pause_one(rng, rng.uniform(14.0, 20.0))
    await breathe()
    await cluster.kill_one(rng)  # the only worker: every worker down


async def run_faults(
    cluster: Cluster, rng: random.Random, *, cycles: int, burst: asyncio.Event, burst_cycle: int
) -> None:
    for n in range(cycles):
        # the quick run pauses the only worker; the long run alternates
        pause_with = 1 if n % 2 == 0 else 3
        await cycle(cluster, rng, pause_with=pause_with, burst=burst if n == burst_cycle else None)
