"""Table state pickled by releases before versioned state documents, read for
``cityvitals migrate-state`` alone.

An operator runs the migration once, with no worker running, on the changelog topics
those releases wrote (:mod:`streams.kafka.migrate`); the worker never reads a pickle
(:mod:`streams.core.state`), and nothing in ``streams/`` imports :mod:`pickle`. The
unpickler here lets through only this project's and river's classes and the builtins
such values hold, so even a planted record names no other code.
"""

from __future__ import annotations

import _compat_pickle
import io
import pickle

from streams.alerting.detection import DistrictDetection
from streams.notify.planner import DistrictNotify

#: Where the classes of state written before the package layout by concern now live.
MOVED = {
    "streams.config": "streams.core.config",
    "streams.settings": "streams.core.settings",
    "streams.schemas": "streams.core.messages",
    "streams.metrics": "streams.core.metrics",
    "streams.ingest": "streams.ingest.ingestor",
    "streams.deid": "streams.ingest.deid",
    "streams.sealing": "streams.ingest.sealing",
    "streams.windows": "streams.state.windows",
    "streams.vitals": "streams.state.vitals",
    "streams.detection": "streams.alerting.detection",
    "streams.early": "streams.alerting.early",
    "streams.rules": "streams.alerting.rules",
    "streams.lifecycle": "streams.alerting.lifecycle",
    "streams.cap": "streams.alerting.cap",
    "streams.models": "streams.alerting.models",
    "streams.replay": "streams.alerting.replay",
    "streams.tail": "streams.alerting.tail",
    "streams.routing": "streams.notify.routing",
    "streams.payloads": "streams.notify.payloads",
    "streams.delivery": "streams.notify.delivery",
    "streams.respond": "streams.notify.respond",
    "streams.notify": "streams.notify.planner",
    "streams.api": "streams.api.app",
    "streams.auth": "streams.api.auth",
    "streams.alertstore": "streams.api.store",
    "streams.embedded_broker": "streams.kafka.broker",
    "streams.source": "streams.kafka.feed",
    "streams.topics": "streams.kafka.topics",
    "streams.pipeline": "streams.kafka.worker",
    "streams.serve": "streams.kafka.serve",
    "streams.simulator": "streams.sim.simulator",
    "streams.demo": "streams.sim.demo",
}


#: What a pickled state value may name besides this project's and river's classes.
_ALLOWED = frozenset(
    {
        ("builtins", "object"),
        ("builtins", "set"),
        ("builtins", "frozenset"),
        ("builtins", "bytearray"),
        ("builtins", "float"),
        ("builtins", "int"),
        ("builtins", "dict"),
        ("builtins", "list"),
        ("copyreg", "_reconstructor"),
        ("_codecs", "encode"),
        ("collections", "deque"),
        ("collections", "OrderedDict"),
        ("collections", "defaultdict"),
        ("collections", "Counter"),
        ("datetime", "datetime"),
        ("datetime", "timezone"),
        ("datetime", "timedelta"),
        ("random", "Random"),
        ("functools", "partial"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("streams.notify.planner", "_brief"),
    }
)


class _Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> object:
        # protocol 2 names builtins as Python 2 did
        module = _compat_pickle.IMPORT_MAPPING.get(module, MOVED.get(module, module))
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        if module.partition(".")[0] in ("streams", "detectors", "river") and "." not in name:
            found = super().find_class(module, name)
            if isinstance(found, type):
                return found
        raise pickle.UnpicklingError(f"{module}.{name} has no place in a table value")


def read_pickled_state(data: bytes) -> object:
    """A table value pickled by a release before versioned state documents.

    Only this project's and river's classes and the few builtins such values hold are
    let through (classes written before the package layout by concern are found where
    they now live).
    """
    return _Unpickler(io.BytesIO(data)).load()


def detection_from_pickle(data: bytes) -> DistrictDetection:
    """A district's detection state as a pickling release wrote it, in today's layout:
    notes dropped from alerts that kept every action's note, fields added since at their
    defaults."""
    value = read_pickled_state(data)
    if not isinstance(value, DistrictDetection):
        raise TypeError(f"not a DistrictDetection: {type(value).__name__}")
    value.book.upgrade()
    if "early" not in value.__dict__:  # written before early decisions
        value.early = {}
    if "anomaly_versions" not in value.__dict__:  # before models were configurable
        value.anomaly_versions = {}
    return value


def notify_from_pickle(data: bytes) -> DistrictNotify:
    """A district's notification state as a pickling release wrote it, in today's layout."""
    value = read_pickled_state(data)
    if not isinstance(value, DistrictNotify):
        raise TypeError(f"not a DistrictNotify: {type(value).__name__}")
    value.upgrade_layout()
    return value
