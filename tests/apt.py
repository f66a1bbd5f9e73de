"""Debian packages the tests install for themselves, one ``apt-get`` at a time.

The suite runs in two processes (:mod:`tests.xdist_scheduling`): an ``apt-get`` started
while the other process's holds dpkg's lock fails at once instead of waiting."""

from __future__ import annotations

import contextlib
import fcntl
import tempfile
from collections.abc import Iterator
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
