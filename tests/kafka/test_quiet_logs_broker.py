"""A healthy worker's log holds no ERROR and no WARNING, past Faust's stall checks too."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from streams.core.config import load_config
from streams.core.logs import records
from streams.sim.simulator import CitySimulator
from tests.harness import NOISY, Worker, produce, run, wait_for
from tests.quiet_run import QUIET_RUN_S, QuietRun

STALL_S = 5.0  # Faust's stream_processing_timeout, 300 s by default
# Faust checks every held partition every 2.5 commit intervals (2.8 s by default)
CHECK_EVERY_S = 2.5 * 2.8


def test_a_healthy_worker_logs_no_error_or_warning_past_the_stall_checks(
    broker_bootstrap: str, tmp_path: Path
) -> None:
    """Faust reported every table changelog partition as a stream that "has not
    started processing" once the stall timeout had passed, at ERROR, at every check:
    false alarms an operator could not tell from real ones. With the timeout cut to
    5 s the worker runs through several checks after it, with state in every table."""
    worker = Worker(broker_bootstrap, tmp_path, env={"CITYVITALS_STREAM_STALL_S": str(STALL_S)})
    worker.start()
    started = time.monotonic()
    try:
        start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=2)
        events = CitySimulator(load_config(), seed=5, start=start).take(4000)
        run(produce(broker_bootstrap, events))
        wait_for(
            lambda: worker.metric("cityvitals_ingest_readings_total") >= len(events),
            120,
            "every event read",
        )
        wait_for(
            lambda: worker.metric("cityvitals_pipeline_table_value_max_bytes") > 0,
            60,
            "state written to the changelogs",
        )
        # the behaviour under test is what the log holds once time has passed: run
        # until three checks after the stall timeout have looked at every partition
        wait_for(
            lambda: time.monotonic() - started >= STALL_S + 3 * CHECK_EVERY_S,
            120,
            "three stall checks past the timeout",
        )
        assert worker.proc is not None and worker.proc.poll() is None
    finally:
        worker.stop()
    text = (tmp_path / "worker-1.log").read_text(errors="replace")
    lines = [line for line in text.splitlines() if line.strip()]
    logged = records(text)
    # every line is one structured record (JSON: the log is a file, not a terminal)
    assert len(logged) == len(lines) and len(logged) > 10, lines[:5]
    assert all({"timestamp", "level", "logger", "event", "pid"} <= set(r) for r in logged)
    noisy = [r for r in logged if r["level"] in NOISY]
    assert not noisy, noisy[:10]


@pytest.mark.long_run
@pytest.mark.timeout(QUIET_RUN_S + 120)
def test_a_worker_running_ten_minutes_beside_the_suite_logs_no_error_or_warning(
    quiet_run: QuietRun,
) -> None:
    """The worker left running since collection, fed the simulated city in real time with
    Faust's own stall timeout (300 s), logs nothing an operator must look at in its
    first ten minutes, and nothing but structured records."""
    assert quiet_run.error is None, f"the run did not start: {quiet_run.error!r}"
    worker = quiet_run.worker
    assert worker is not None
    wait_for(lambda: quiet_run.elapsed() >= QUIET_RUN_S, QUIET_RUN_S + 60, "ten minutes of running")
    assert worker.proc is not None and worker.proc.poll() is None, worker.log_tail()
    assert quiet_run.simulate is not None and quiet_run.simulate.poll() is None, (
        quiet_run.simulate_log()
    )
    # the city was flowing through it: readings counted, windows closed, state written
    read = worker.metric("cityvitals_ingest_readings_total")
    assert read > 1000, f"only {read} readings in ten minutes"
    assert worker.metric("cityvitals_vitals_windows_closed_total") > 0
    assert worker.metric("cityvitals_pipeline_table_value_max_bytes") > 0
    text = quiet_run.worker_log()
    lines = [line for line in text.splitlines() if line.strip()]
    logged = records(text)
    assert len(logged) == len(lines), [line for line in lines if not line.startswith("{")][:5]
    noisy = [r for r in logged if r["level"] in NOISY]
    assert not noisy, noisy[:10]
