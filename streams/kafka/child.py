"""``cityvitals worker`` as a child process: the one launcher the demo, the benches and the
tests share.

The child runs ``python -m streams.cli worker`` with the settings in its environment
(:func:`worker_environment`), writes its log to a file, dies with this process (a
parent-death signal on Linux, :func:`~streams.kafka.broker.parent_death_preexec`), and
is ready when its ``/readyz`` answers 200: partitions assigned, tables restored.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from streams.kafka.broker import parent_death_preexec


def free_port() -> int:
    """A TCP port free on loopback now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def worker_environment(
    bootstrap: str, app_id: str, web_port: int, datadir: Path, **settings: object
) -> dict[str, str]:
    """This process's environment with a worker's settings: ``CITYVITALS_<NAME>`` for each
    keyword (``idle_close_s=10`` sets ``CITYVITALS_IDLE_CLOSE_S``)."""
    env = {
        **os.environ,
        "CITYVITALS_BOOTSTRAP": bootstrap,
        "CITYVITALS_APP_ID": app_id,
        "CITYVITALS_WEB_PORT": str(web_port),
        "CITYVITALS_DATADIR": str(datadir),
    }
    for name, value in settings.items():
        env[f"CITYVITALS_{name.upper()}"] = value if isinstance(value, str) else f"{value:g}"
    return env


@dataclass
class WorkerProcess:
    """One ``cityvitals worker`` child; :meth:`start` again after it ends restarts it."""

    env: dict[str, str]
    web_port: int
    log_path: Path
    cwd: Path | None = None
    new_session: bool = False  # a Ctrl-C at the terminal reaches only this process
    # what the child gets when the thread that started it ends (None: it outlives us)
    death_signal: signal.Signals | None = signal.SIGKILL
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "streams.cli", "worker"],
                cwd=self.cwd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=self.new_session,
                preexec_fn=None
                if self.death_signal is None
                else parent_death_preexec(self.death_signal),
            )

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int:
        assert self.proc is not None, "worker not started"
        return self.proc.pid

    def check_alive(self) -> None:
        """Raise RuntimeError, with the log's tail, if the worker has exited."""
        assert self.proc is not None, "worker not started"
        code = self.proc.poll()
        if code is not None:
            raise RuntimeError(f"worker exited with {code}: {self.log_tail()}")

    def ready(self) -> bool:
        with contextlib.suppress(httpx.HTTPError):
            url = f"http://127.0.0.1:{self.web_port}/readyz"
            return httpx.get(url, timeout=1.0).status_code == 200
        return False

    def wait_ready(self, timeout: float) -> None:
        """Wait until ``/readyz`` answers 200; RuntimeError if the worker exits first,
        TimeoutError (with the log's tail) after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            if self.ready():
                return
            time.sleep(0.3)
        raise TimeoutError(f"worker not ready in {timeout:g} s: {self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError as exc:
            return f"(cannot read {self.log_path}: {exc})"
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> None:
        """Send ``sig`` and wait up to ``timeout`` seconds, then kill."""
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            self.proc.wait()
