"""Ctrl-C or SIGTERM stops the demo within a bound, whatever its tasks do.

A client's orderly stop can wait on a broker that a busy machine keeps from
answering; :func:`streams.sim.demo.run_until_signalled` waits for nothing without a
bound. Each case runs in a process of its own, signalled as a terminal would."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

_DEMO_LIKE = """
import asyncio
import sys

from streams.sim.demo import run_until_signalled


async def stubborn() -> None:
    while True:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            pass  # ignores every cancellation


async def main(stop: asyncio.Event) -> None:
    task = asyncio.create_task(stubborn(), name="a stubborn task")
    print("running", flush=True)
    await stop.wait()
    if sys.argv[1] == "main-hangs":
        await stubborn()
    task.cancel()
    await asyncio.wait([task], timeout=0.2)


stopped = run_until_signalled(main, bound=0.5)
print("stopped by", stopped.by.name, "left:", ", ".join(stopped.left), flush=True)
"""


def _restore_sigint() -> None:
    # a job in a terminal has the default Ctrl-C; a background job would ignore it
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
@pytest.mark.parametrize("case", ["task-ignores-cancel", "main-hangs"])
def test_the_demo_loop_ends_after_the_signal_leaving_behind_what_does_not_stop(
    sig: signal.Signals, case: str
) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", _DEMO_LIKE, case],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=_restore_sigint,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "running\n"
        proc.send_signal(sig)
        out, _ = proc.communicate(timeout=60)  # bounds a hang; the stop takes seconds
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out
    left = ["a stubborn task", "the demo"] if case == "main-hangs" else ["a stubborn task"]
    # what was left behind is named, and its collection reports nothing
    assert out == f"stopped by {sig.name} left: {', '.join(left)}\n"


_INTERRUPTED_WHILE_LOADING = """
import sys

import streams


class CtrlC:  # the user presses Ctrl-C while the command's modules load
    def find_spec(self, name, path=None, target=None):
        if name == "streams.cli":
            raise KeyboardInterrupt
        return None


sys.meta_path.insert(0, CtrlC())
streams.main()
"""


def test_a_ctrl_c_while_the_command_loads_ends_it_with_130_and_no_traceback() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _INTERRUPTED_WHILE_LOADING],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (done.returncode, done.stdout, done.stderr) == (130, "", "")
