"""Debian packages the tests install for themselves, one ``apt-get`` at a time.

The suite runs in two processes (:mod:`tests.xdist_scheduling`): an ``apt-get`` started
while the other process's holds dpkg's lock fails at once instead of waiting."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

LOCK = Path(tempfile.gettempdir()) / "cityvitals-tests-apt.lock"


@contextlib.contextmanager
def one_at_a_time() -> Iterator[None]:
    """Hold the suite's apt lock (every process of this machine's suites shares it)."""
    with LOCK.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def install(*packages: str, done: Callable[[], bool] = lambda: False) -> tuple[bool, str]:
    """``apt-get install`` the packages under the suite's lock, with an ``apt-get
    update`` and one more try if the first fails; whether it worked, and the log's tail.
    ``done`` is asked first under the lock: the other process may have installed them."""
    if shutil.which("apt-get") is None:
        return False, "apt-get is not available on this machine"
    install = ["apt-get", "install", "-y", "--no-install-recommends", *packages]
    logs: list[str] = []
    with one_at_a_time():
        if done():
            return True, ""
        for step in ([install], [["apt-get", "update"], install]):
            failed = False
            for cmd in step:
                try:
                    proc = subprocess.run(
                        cmd,
                        capture_output=True,
                        text=True,
                        timeout=900,
                        env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
                    )
                except (OSError, subprocess.TimeoutExpired) as exc:
                    logs.append(f"$ {' '.join(cmd)}: {exc}")
                    failed = True
                    break
                tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
                logs.append(f"$ {' '.join(cmd)} -> {proc.returncode}\n{tail}")
                if proc.returncode != 0:
                    failed = True
                    break
            if not failed:
                return True, ""
    return False, "\n".join(logs)
