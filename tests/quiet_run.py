"""A worker left running beside the suite, so that a ten-minute run is tested without
adding ten minutes to the suite.

When a test marked ``long_run`` is selected, the session starts the run as soon as
the tests are collected: an embedded broker of its own (the suite recreates the city
topics on its shared broker), a worker with Faust's default stall timeout, and the
simulated city published in real time. The ``long_run`` tests are moved to the end
of the session, where the ``quiet_run`` fixture hands them the run; they wait until
it has lasted :data:`QUIET_RUN_S` (no wait at all after a full suite).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from streams.kafka.broker import EmbeddedBroker
from tests.harness import PARTITIONS, Worker

#: How long the run lasts before it is judged: twice Faust's stall timeout (300 s).
QUIET_RUN_S = 600.0
#: Simulated minutes published: more than any session lasts.
SIMULATED_MINUTES = 90


class QuietRun:
    """A broker, a worker and the simulated city, running until :meth:`stop`."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.broker: EmbeddedBroker | None = None
        self.worker: Worker | None = None
        self.simulate: subprocess.Popen[bytes] | None = None
        self.started = time.monotonic()
        self.error: BaseException | None = None

    def start(self) -> QuietRun:
        """Start everything; a failure is kept for the test to report, not raised."""
        try:
            self.broker = EmbeddedBroker(log_path=self.workdir / "broker.log").start()
            self.worker = Worker(self.broker.bootstrap, self.workdir).start(timeout=180)
            self.started = time.monotonic()
            with open(self.workdir / "simulate.log", "wb") as log:
                command = [sys.executable, "-m", "streams.cli", "simulate", "--start", "now"]
                command += ["--bootstrap", self.broker.bootstrap, "--speed", "1"]
                self.simulate = subprocess.Popen(
                    [*command, "--minutes", str(SIMULATED_MINUTES)],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env={**os.environ, "CITYVITALS_PARTITIONS": str(PARTITIONS)},
                )
        except BaseException as exc:  # reported by the test that needs the run
            self.error = exc
            self.stop()
        return self

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def simulate_log(self) -> str:
        return (self.workdir / "simulate.log").read_text(errors="replace")

    def worker_log(self) -> str:
        assert self.worker is not None
        return (self.workdir / f"worker-{self.worker.starts}.log").read_text(errors="replace")

    def stop(self) -> None:
        if self.simulate is not None and self.simulate.poll() is None:
            self.simulate.terminate()
            self.simulate.wait(30)
        if self.worker is not None:
            self.worker.stop()
        if self.broker is not None:
            self.broker.stop()
            self.broker = None
