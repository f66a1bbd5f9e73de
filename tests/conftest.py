"""Shared pytest fixtures for the cityvitals test suite."""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from streams.kafka.broker import EmbeddedBroker
from streams.kafka.child import generated_secrets, needed_secrets
from tests import xdist_scheduling
from tests.harness import ApiWorker, Worker
from tests.quiet_run import QuietRun

_QUIET_RUN = pytest.StashKey[QuietRun]()
_SECRETS = pytest.StashKey[Path]()


def pytest_configure(config: pytest.Config) -> None:
    """Fresh random secrets for this session's workers, which do not start without them:
    files in a directory of their own, named by ``CITYVITALS_<NAME>_FILE`` in this
    process's environment, so that workers in this process and in every child (all
    of one session share them: pseudonyms, sealed dead letters and responder links
    agree across workers and restarts) read the same ones. The suite's xdist processes
    start once the controlling process has set them, and so use its files too."""
    directory = Path(tempfile.mkdtemp(prefix="cityvitals-test-secrets-"))
    config.stash[_SECRETS] = directory
    os.environ.update(generated_secrets(directory, needed_secrets(dict(os.environ))))
    xdist_scheduling.yield_to_the_broker_process()


@pytest.hookimpl(tryfirst=True)  # before any hook that reads the nodeids
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Broker tests and ``long_run`` tests get their xdist groups
    (:mod:`tests.xdist_scheduling`); tests marked ``long_run`` go last, and the run they
    judge starts now (:mod:`tests.quiet_run`), in the one process that runs them."""
    xdist_scheduling.group(config, items)
    long = [item for item in items if item.get_closest_marker("long_run")]
    if not long:
        return
    items[:] = [item for item in items if item not in long] + long
    if xdist_scheduling.runs_long_run_tests():
        workdir = Path(tempfile.mkdtemp(prefix="cityvitals-quiet-run-"))
        config.stash[_QUIET_RUN] = QuietRun(workdir).start()


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object | None:
    """``--dist loadgroup`` shares the suite as :mod:`tests.xdist_scheduling` says."""
    if config.getvalue("dist") != "loadgroup":
        return None
    return xdist_scheduling.scheduler(config, log)


def pytest_unconfigure(config: pytest.Config) -> None:
    run = config.stash.get(_QUIET_RUN, None)
    if run is not None:
        run.stop()
    secrets = config.stash.get(_SECRETS, None)
    if secrets is not None:
        shutil.rmtree(secrets, ignore_errors=True)


@pytest.fixture(scope="session")
def quiet_run(request: pytest.FixtureRequest) -> QuietRun:
    """The worker left running since collection (:mod:`tests.quiet_run`)."""
    run = request.config.stash.get(_QUIET_RUN, None)
    if run is None:
        pytest.fail(
            "the run is started in the process that runs the long_run tests: gw0 under "
            "`-n 2 --dist loadgroup` (tests/xdist_scheduling.py), or the only one"
        )
    return run


@pytest.fixture(scope="session")
def broker_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Kafka ``bootstrap_servers`` for the whole test session.

    ``CITYVITALS_TEST_BOOTSTRAP`` (e.g. ``localhost:9092``) selects an external Kafka;
    otherwise one embedded broker runs for the session, its log kept under pytest's tmp dir.
    """
    external = os.environ.get("CITYVITALS_TEST_BOOTSTRAP", "").strip()
    if external:
        yield external
        return
    log_path = tmp_path_factory.mktemp("embedded-broker") / "broker.log"
    with EmbeddedBroker(log_path=log_path) as broker:
        yield broker.bootstrap


@pytest.fixture
def worker(broker_bootstrap: str, tmp_path: Path) -> Iterator[Worker]:
    """A worker subprocess on the session's broker, with a fresh app id; killed afterwards."""
    w = Worker(broker_bootstrap, tmp_path)
    yield w
    w.stop(signal.SIGKILL)


@pytest.fixture
def fresh_topics(broker_bootstrap: str) -> Iterator[None]:
    """Empty city topics for one test (they have fixed names, unlike the app ids)."""
    from tests.harness import recreate_city_topics, run

    run(recreate_city_topics(broker_bootstrap))
    yield


@pytest.fixture
def api_worker(broker_bootstrap: str, tmp_path: Path, fresh_topics: None) -> Iterator[ApiWorker]:
    """A started worker on empty city topics, with a token for every user of
    config/roles.yaml (``.tokens``); its API and console at ``.url``."""
    with ApiWorker.started(broker_bootstrap, tmp_path) as api:
        yield api
