"""``cityvitals worker`` as a child process: the one launcher the demo, the benches and the
tests share.

The child runs ``python -m streams.cli worker`` with the settings in its environment
(:func:`worker_environment`), writes its log to a file, dies with this process (a
parent-death signal on Linux, :func:`~streams.kafka.broker.parent_death_preexec`), and
is ready when its ``/readyz`` answers 200: partitions assigned, tables restored.

A worker does not start without secrets of its own; the demo, the benches and the tests
have none, so :func:`generated_secrets` makes fresh random ones for each run, kept in
files the child reads through ``<VARIABLE>_FILE``. The worker itself knows nothing of
demos.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from streams.core.config import DEFAULT_CONFIG_DIR
from streams.core.secrets import FILE_SUFFIX
from streams.kafka.broker import parent_death_preexec
from streams.notify.routing import ROUTES_FILE, secret_variables

DEID_KEY = "CITYVITALS_DEID_KEY"
ACTION_KEY = "CITYVITALS_ACTION_KEY"


def free_port() -> int:
    """A TCP port free on loopback now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def generated_secrets(directory: Path, names: list[str]) -> dict[str, str]:
    """A random secret for each variable in ``names``, each in a file of ``directory``
    named after it (readable by its owner only), as the ``<VARIABLE>_FILE`` variables
    that name the files. A file already there is kept: a restarted worker keeps its keys."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    env = {}
    for name in names:
        path = directory / name
        if not path.exists():
            # 256 bits; hex, so the value is printable wherever it must be pasted
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w", encoding="ascii") as out:
                out.write(secrets.token_hex(32) + "\n")
        env[name + FILE_SUFFIX] = str(path)
    return env


def needed_secrets(env: dict[str, str]) -> list[str]:
    """The secret variables a worker with this environment needs and that it leaves unset
    (neither ``NAME`` nor ``NAME_FILE``): the de-identification key, the action key and
    what its routes file reads from variables."""
    routes = env.get("CITYVITALS_ROUTES_FILE") or (
        Path(env.get("CITYVITALS_CONFIG_DIR") or DEFAULT_CONFIG_DIR) / ROUTES_FILE
    )
    names = [DEID_KEY, ACTION_KEY, *secret_variables(routes)]
    return [n for n in names if not env.get(n) and not env.get(n + FILE_SUFFIX)]


def worker_environment(
    bootstrap: str,
    app_id: str,
    web_port: int,
    datadir: Path,
    *,
    secrets_dir: Path | None = None,
    **settings: object,
) -> dict[str, str]:
    """This process's environment with a worker's settings: ``CITYVITALS_<NAME>`` for each
    keyword (``idle_close_s=10`` sets ``CITYVITALS_IDLE_CLOSE_S``), and random secrets
    (:func:`generated_secrets`, in ``secrets_dir``, default ``<datadir>/secrets``) for
    those the environment does not set. Workers that share an app id must share their
    secrets: give them one ``secrets_dir``."""
    env = {
        **os.environ,
        "CITYVITALS_BOOTSTRAP": bootstrap,
        "CITYVITALS_APP_ID": app_id,
        "CITYVITALS_WEB_PORT": str(web_port),
        "CITYVITALS_DATADIR": str(datadir),
    }
    for name, value in settings.items():
        env[f"CITYVITALS_{name.upper()}"] = value if isinstance(value, str) else f"{value:g}"
    missing = needed_secrets(env)
    if missing:
        env.update(generated_secrets(secrets_dir or datadir / "secrets", missing))
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
