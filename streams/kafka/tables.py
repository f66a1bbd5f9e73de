"""The worker's state tables: their names, how their values go on and come off their
changelogs, and the writes that make a batch's state durable after its outputs.

Three tables, each keyed by district code: ``district-windows`` (event-time windows
and applied offsets, :mod:`streams.state.windows`, JSON), ``district-detection``
(alert state and online models, :mod:`streams.alerting.detection`) and
``notify-groups`` (:mod:`streams.notify.planner`), both as versioned state documents
(:mod:`streams.core.state`). A value a release cannot restore is held as
:class:`Unrestorable` and stops the worker once recovery ends, rather than Faust's
endless recovery.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson
from faust.serializers import codecs

from streams.alerting.detection import DistrictDetection
from streams.alerting.lifecycle import DEGRADED, STATE_MAX_BYTES
from streams.core import metrics
from streams.core.state import StateError
from streams.kafka.feed import Fenced, Outputs
from streams.notify.planner import DistrictNotify
from streams.state.windows import DistrictWindows

TABLE_NAME = "district-windows"
DETECTION_TABLE = "district-detection"
NOTIFY_TABLE = "notify-groups"
log = logging.getLogger(__name__)


def changelog_topic(app_id: str, table: str) -> str:
    """The changelog topic of ``table`` in the app ``app_id`` (Faust's naming)."""
    return f"{app_id}-{table}-changelog"


class MemoryTable(dict[bytes, Any]):
    """A Faust table's face for :class:`VitalsProcessor` (item access and its store,
    ``data``), held in memory: to run the handler without Kafka (fuzzing, benches)."""

    @property
    def data(self) -> MemoryTable:
        return self


class DurableValues:
    """The bytes each district's table value was last encoded as or restored from.

    A codec sees every value it encodes at the end of a batch or restores; keeping
    its bytes lets a batch that fails midway put back exactly what the batches before
    it left (the changelog gets those bytes by the next offset commit), without
    copying state on the hot path.
    """

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}

    def keep(self, district: str, data: bytes) -> None:
        self.data[district] = data


WINDOWS_DURABLE = DurableValues()
DETECTION_DURABLE = DurableValues()


T = TypeVar("T")


@dataclass(frozen=True)
class Unrestorable:
    """A changelog value this release cannot restore, held in its key's place until recovery
    ends: a later value of the key (a document written by ``cityvitals migrate-state``
    after the pickle it converts) replaces it; if none does, :func:`stop_if_unrestorable`
    stops the worker before it handles anything."""

    table: str
    reason: str


def restored(table: str, decode: Callable[[bytes], T], data: bytes) -> T | Unrestorable:
    """A table value read back from its changelog, or what says why it cannot be.

    Faust's recovery would log a decoding error as a warning and then never end, so the
    worker would never be ready; the error is kept as the key's value instead, and
    judged once recovery has read every record (:func:`stop_if_unrestorable`).
    """
    try:
        return decode(data)
    except StateError as exc:
        return Unrestorable(table, str(exc))


def stop_if_unrestorable(*tables: Any) -> None:
    """Stop the worker (exit status 2) if a recovered table holds a value it cannot restore.

    Called when a rebalance's recovery has ended and before the worker takes its inputs:
    nothing has been processed or produced for these partitions yet.
    """
    for table in tables:
        for key, value in list(table.data.items()):
            if isinstance(value, Unrestorable):
                district = key.decode("utf-8", "replace") if isinstance(key, bytes) else key
                message = (
                    f"cannot restore table {value.table} from its changelog "
                    f"(district {district}): {value.reason}"
                )
                log.critical(message)
                print(f"cityvitals worker: {message}", file=sys.stderr, flush=True)
                logging.shutdown()
                os._exit(2)


def _windows_from_json(data: bytes) -> DistrictWindows:
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise StateError(f"table {TABLE_NAME}: the value is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise StateError(f"table {TABLE_NAME}: the value is not a JSON object")
    return DistrictWindows.from_dict(doc)


class StateTableCodec(codecs.Codec):
    """One state table's values on its changelog, read back with :func:`restored`.

    ``encode`` gives the value's bytes and what was dropped to keep it within
    ``max_bytes`` (reported as degraded, :class:`~streams.alerting.lifecycle.DegradeLog`):
    a changelog record over the broker's limit would fail the write and stop the worker.
    ``durable`` keeps the bytes of each district's last value written or restored, for a
    failed batch to put back (:class:`DurableValues`).
    """

    max_bytes = STATE_MAX_BYTES  # create_app sets CITYVITALS_STATE_MAX_BYTES

    def __init__(
        self,
        children: tuple[codecs.CodecT, ...] | None = None,
        *,
        table: str,
        encode: Callable[[Any, int], tuple[bytes, list[str]]],
        decode: Callable[[bytes], Any],
        durable: DurableValues | None = None,
    ) -> None:
        # as keyword arguments, so that Faust's clone() keeps them
        super().__init__(children, table=table, encode=encode, decode=decode, durable=durable)
        self.table, self._encode, self._decode, self._durable = table, encode, decode, durable

    def _dumps(self, obj: Any) -> bytes:
        data, dropped = self._encode(obj, self.max_bytes)
        if dropped:
            DEGRADED.report(self.table, obj.district, dropped)
        metrics.observe_table_value(self.table, len(data))
        if self._durable is not None:
            self._durable.keep(obj.district, data)
        return data

    def _loads(self, s: bytes) -> Any:
        value = restored(self.table, self._decode, s)
        if self._durable is not None and not isinstance(value, Unrestorable):
            self._durable.keep(value.district, s)
        return value


def _windows_json(value: DistrictWindows, max_bytes: int) -> tuple[bytes, list[str]]:
    # compact JSON (read on every recovery); the windows bound their own size
    return orjson.dumps(value.to_dict()), []


WINDOWS_CODEC = StateTableCodec(
    table=TABLE_NAME, encode=_windows_json, decode=_windows_from_json, durable=WINDOWS_DURABLE
)
DETECTION_CODEC = StateTableCodec(
    table=DETECTION_TABLE,
    encode=DistrictDetection.encode,
    decode=DistrictDetection.loads,
    durable=DETECTION_DURABLE,
)
NOTIFY_CODEC = StateTableCodec(
    table=NOTIFY_TABLE, encode=DistrictNotify.encode, decode=DistrictNotify.loads
)
codecs.register("district_windows", WINDOWS_CODEC)
codecs.register("district_detection", DETECTION_CODEC)
codecs.register("district_notify", NOTIFY_CODEC)


class TableWriter:
    """Makes a batch durable: its outputs first, then the detection and windows tables,
    each acknowledged by the broker before what depends on it.

    If the worker crashes in between, the events are redelivered and their outputs
    repeated (at-least-once), never lost; once the state is written they are
    recognised as applied. The state goes to the changelogs through the feed's own
    producer and is awaited, rather than through Faust's table writes: Faust buffers
    those and its flush gives up waiting after 0.1 s, so input offsets committed
    after it could run ahead of the state a crash leaves behind.
    """

    def __init__(
        self,
        windows: Any,
        detection: Any,
        *,
        outputs: Callable[[], Outputs],
        fenced: Callable[[], bool],
        changelogs: tuple[str, str],
    ) -> None:
        self.windows, self.detection = windows, detection
        self.changelogs = changelogs  # of the windows and the detection tables
        self._outputs, self._fenced = outputs, fenced
        # windows written and not yet acknowledged: each send's futures, with its districts
        self._unacked: list[tuple[list[asyncio.Future[Any]], frozenset[str]]] = []
        # windows encoded at the end of a batch and not yet sent: the latest per district,
        # sent once before each offset commit (flush) rather than after each batch
        self._unwritten: dict[str, bytes] = {}

    async def commit(
        self,
        touched: dict[str, DistrictWindows],
        out: Outputs,
        detected: dict[str, DistrictDetection] | None = None,
        *,
        defer: bool = False,
    ) -> None:
        """Send ``out``, then the ``detected`` detection values, then the ``touched``
        windows.

        With ``defer`` (a batch of input) the windows are encoded now and sent by
        :meth:`flush`, once per district before the next offset commit: the
        embedded broker does not compact changelogs, and every recovery reads each
        record, so one write a second instead of one a batch makes recovery several
        times faster (measured on two cores, two simulated hours at 60x: 8,100
        changelog records and 30 s of recovery per batch, 1,114 records and 8 s per
        commit). Until the commit, a crash redelivers the batches either way.
        """
        await out.send()
        if self._fenced():
            raise Fenced  # paused meanwhile: this worker may no longer own the partitions
        if detected:
            # Detection before windows, made durable in between: a crash after it
            # re-closes the windows, and detection skips the minutes it has seen
            # (a crash before it repeats the same alert events, ids and sequences).
            state = self._outputs()
            for district, det in detected.items():
                self._write(state, self.detection, self.changelogs[1], district, det)
            await state.send(counted=False)
        if defer:
            for district, windows in touched.items():
                self._unwritten[district] = self.keep(self.windows, district, windows)
            return
        state = self._outputs()
        for district, windows in touched.items():
            self._unwritten.pop(district, None)
            self._write(state, self.windows, self.changelogs[0], district, windows)
        # the windows are acknowledged before the input offsets are committed
        # (flush), not before the next batch: a crash in between redelivers
        # the batch, and the state that did reach the changelog recognises it
        self._unacked.append((await state.send(wait=False, counted=False), frozenset(touched)))

    async def write_detection(self, district: str, state: DistrictDetection) -> None:
        """One district's detection value, written and acknowledged now."""
        written = self._outputs()
        self._write(written, self.detection, self.changelogs[1], district, state)
        await written.send(counted=False)

    async def flush(self) -> None:
        """Wait until every table value written so far is on its changelog (before the
        input offsets are committed).

        The windows batches left unwritten go first, the latest value per district;
        after a pause that may have cost the worker its partitions nothing is sent
        (:class:`Fenced` is raised, and no offset is committed). A write the producer
        gave up on (a batch that expired while the worker was paused, a broker outage)
        is written again with the district's current value, which holds everything
        the lost one did, and the error is raised: the offsets are committed once
        that write is acknowledged, at the next commit.
        """
        if self._unwritten:
            if self._fenced():
                raise Fenced
            state = self._outputs()
            for district, data in self._unwritten.items():
                state.add(self.changelogs[0], district.encode(), data)
            districts = frozenset(self._unwritten)
            self._unwritten = {}
            self._unacked.append((await state.send(wait=False, counted=False), districts))
        while self._unacked:
            pending, self._unacked = self._unacked, []
            results = await asyncio.gather(
                *(f for futures, _ in pending for f in futures), return_exceptions=True
            )
            failures = [r for r in results if isinstance(r, BaseException)]
            if not failures:
                continue
            lost: set[str] = set()
            n = 0
            for futures, districts in pending:
                if any(isinstance(r, BaseException) for r in results[n : n + len(futures)]):
                    lost |= districts
                n += len(futures)
            for district in sorted(lost):
                windows = self.windows.data.get(district.encode())
                if windows is not None:
                    self._unwritten[district] = self.keep(self.windows, district, windows)
            log.warning(
                "the state of %d districts did not reach its changelog (%s); written again",
                len(lost),
                type(failures[0]).__name__,
            )
            raise failures[0]

    def forget_unwritten(self) -> None:
        """Drop the windows not yet sent (the partitions were revoked).

        Not written before the revocation (a pause fenced the worker): the next owner
        reads again from the committed offsets, and a district kept here is written
        whole with its next batch.
        """
        self._unwritten = {}

    def rollback(
        self, touched: dict[str, DistrictWindows], detected: dict[str, DistrictDetection]
    ) -> None:
        """Put back the values a failed batch changed, as the changelogs have them."""
        for district in touched:
            key = district.encode()
            data = WINDOWS_DURABLE.data.get(district)
            if data is not None:
                self.windows.data[key] = DistrictWindows.from_dict(orjson.loads(data))
            elif key in self.windows.data:
                del self.windows.data[key]
        for district in detected:
            self.restore_detection(district)

    def restore_detection(self, district: str) -> None:
        """Put back one district's detection value as its changelog has it."""
        key = district.encode()
        data = DETECTION_DURABLE.data.get(district)
        if data is not None:
            self.detection.data[key] = DistrictDetection.loads(data)
        elif key in self.detection.data:
            del self.detection.data[key]

    @classmethod
    def _write(cls, out: Outputs, table: Any, changelog: str, district: str, value: Any) -> None:
        """A table value into the worker's memory and, with ``out``, onto its changelog."""
        out.add(changelog, district.encode(), cls.keep(table, district, value))

    @staticmethod
    def keep(table: Any, district: str, value: Any) -> bytes:
        """A table value into the worker's memory, and its changelog bytes."""
        key = district.encode()
        codec = "district_windows" if isinstance(value, DistrictWindows) else "district_detection"
        data: bytes = codecs.get_codec(codec).dumps(value)
        table.data[key] = value
        sensor = getattr(table, "_sensor_on_set", None)
        if sensor is not None:  # Faust's own table metrics count the write as theirs
            sensor(table, key, value)
        return data
