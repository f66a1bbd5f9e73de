"""How ``make test`` shares the suite between two processes (pytest-xdist,
``-n 2 --dist loadgroup``).

- Tests that start a broker (:func:`starts_broker`) form the group ``broker`` and run
  one after another in the first process, gw0: two brokers with their workers at
  once on a 2-core machine made timing-sensitive tests flaky.
- The ``long_run`` tests (group ``long_run``) judge the run started at collection
  (:mod:`tests.quiet_run`), which only gw0 starts; they go to gw0 once every other
  test has been handed out, so they still run last there.
- ``tests/api/test_api_openapi.py`` runs whole in one process: its last test checks
  what the schemathesis fuzzing before it saw.
- Every other test is a unit of its own, handed to whichever process is free; the
  other process runs at a lower CPU priority (:func:`yield_to_the_broker_process`).

xdist's scheduler (in the controlling process, which collects nothing) knows a test's
group only by a suffix on its nodeid, ``<nodeid>@<group>``, which each worker process
adds (:func:`group`). xdist 3.8 adds it for ``xdist_group`` marks by writing an
attribute pytest 9 no longer reads, so the groups are written here, and checked.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from xdist.workermanage import WorkerController

BROKER_GROUP = "broker"
LONG_RUN_GROUP = "long_run"
#: Fixtures that start a broker, or a worker on one (directly or through another fixture).
BROKER_FIXTURES = frozenset({"broker_bootstrap", "quiet_run"})
#: Modules whose tests must all run in one process, in their order.
WHOLE_MODULES = ("tests/api/test_api_openapi.py",)
#: The process that runs the broker tests and the long_run tests.
BROKER_PROCESS = "gw0"


def starts_broker(item: pytest.Item) -> bool:
    """Whether the test starts an embedded broker: marked ``broker``, in a ``*_broker.py``
    module (the suite's naming rule), or using a fixture that starts one."""
    return (
        item.get_closest_marker("broker") is not None
        or item.path.name.endswith("_broker.py")
        or not BROKER_FIXTURES.isdisjoint(getattr(item, "fixturenames", ()))
    )


def group(config: pytest.Config, items: list[pytest.Item]) -> None:
    """In a worker process of ``--dist loadgroup``: put the broker tests and the long_run
    tests in their groups, as suffixes on their nodeids."""
    if not getattr(config.option, "loadgroup", False):
        return
    for item in items:
        if item.get_closest_marker("long_run") is not None:
            _suffix(item, LONG_RUN_GROUP)
        elif starts_broker(item):
            _suffix(item, BROKER_GROUP)


def _suffix(item: pytest.Item, name: str) -> None:
    nodeid = f"{item.nodeid}@{name}"
    if hasattr(item, "_id"):  # pytest 9: the nodeid is made from a structured id
        item._id = type(item._id).parse(nodeid)
    else:
        item._nodeid = nodeid
    if item.nodeid != nodeid:
        raise pytest.UsageError(
            f"cannot put {item.nodeid} in the xdist group {name}: the broker tests would "
            "run in both processes at once (tests/xdist_scheduling.py)"
        )


def runs_long_run_tests() -> bool:
    """Whether this process runs the long_run tests: gw0, or the only process."""
    return os.environ.get("PYTEST_XDIST_WORKER", BROKER_PROCESS) == BROKER_PROCESS


def yield_to_the_broker_process() -> None:
    """In a process other than gw0: a lower CPU priority (nice 10), it and its children.
    The broker tests, one after another in gw0, are the longest part of the suite by far;
    the other process's tests fill the time they leave the CPU idle."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if worker is not None and worker != BROKER_PROCESS:
        os.nice(10)


def _number(node: WorkerController) -> int:
    return int(node.gateway.id.removeprefix("gw"))


def scheduler(config: pytest.Config, log: object) -> object:
    """The xdist scheduler of the suite (the ``pytest_xdist_make_scheduler`` hook)."""
    from xdist.scheduler import LoadGroupScheduling

    class SuiteScheduling(LoadGroupScheduling):
        """Loadgroup, with the broker group on gw0, the long_run group held back for gw0
        until the queue is empty, and whole modules kept together."""

        def __init__(self, config: pytest.Config, log: object = None) -> None:
            super().__init__(config, log)  # type: ignore[arg-type]
            self.held: dict[str, dict[str, bool]] = {}

        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return module if module in WHOLE_MODULES else super()._split_scope(nodeid)

        @property
        def tests_finished(self) -> bool:
            return not self.held and super().tests_finished

        @property
        def has_pending(self) -> bool:
            return bool(self.held) or super().has_pending

        def schedule(self) -> None:
            if self.collection is not None or not self._check_nodes_have_same_collection():
                super().schedule()
                return
            self.collection = list(next(iter(self.registered_collections.values())))
            units: dict[str, dict[str, bool]] = {}
            for nodeid in self.collection:
                units.setdefault(self._split_scope(nodeid), {})[nodeid] = False
            if LONG_RUN_GROUP in units:
                self.held = {LONG_RUN_GROUP: units.pop(LONG_RUN_GROUP)}
            broker = units.pop(BROKER_GROUP, None)
            # the largest units first, so that both processes end close together
            self.workqueue = OrderedDict(sorted(units.items(), key=lambda u: -len(u[1])))
            if broker is not None:
                self.workqueue[BROKER_GROUP] = broker
                self.workqueue.move_to_end(BROKER_GROUP, last=False)
            nodes = sorted(self.nodes, key=_number)
            for node in nodes:  # gw0 takes the first unit
                if self.workqueue:
                    self._assign_work_unit(node)
            # a process runs a test once it holds the next one (or is told to stop): each
            # gets a second unit where the first is a single test, or is stopped
            for node in nodes:
                self._reschedule(node)

        def _reschedule(self, node: WorkerController) -> None:
            if node.shutting_down:
                return
            if not self.workqueue and self.held and _number(node) == min(map(_number, self.nodes)):
                # straight to gw0, after whatever it still has to run, and its last
                self.workqueue.update(self.held)
                self.held = {}
                self._assign_work_unit(node)
                node.shutdown()
                return
            super()._reschedule(node)

    return SuiteScheduling(config, log)
