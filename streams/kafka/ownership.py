"""Which districts this worker reports: the per-district gauges handed over at each
rebalance, and the table keys it owns.

A district's gauges are reported only by the worker that owns the district, so that
no district is reported twice and none goes missing after it moves.
"""

from __future__ import annotations

from typing import Any

from streams.core import metrics
from streams.kafka.feed import key_partition
from streams.kafka.raising import AlertRaiser

# per-district gauges: reported only by the worker that owns the district
DISTRICT_GAUGES = (
    metrics.vital_index,
    metrics.composite_index,
    metrics.watermark_lag,
    metrics.open_alerts,
)


class DistrictReports:
    """The district gauges of the partitions this worker owns."""

    def __init__(
        self,
        partition_of: dict[str, int],
        partitions: int,
        detection_table: Any,
        raiser: AlertRaiser,
    ) -> None:
        self._partition_of, self._partitions = partition_of, partitions
        self._key_partition = {d.encode(): p for d, p in partition_of.items()}
        self._detection_table, self._raiser = detection_table, raiser
        # the district gauges' last values while a rebalance is under way
        self._released: list[tuple[Any, dict[str, str], float]] = []

    def release(self) -> None:
        """Stop reporting every district (call once the partitions are revoked).

        Between the revocation and the end of the rebalance this worker owns no
        district, and whichever worker gets one reports it from then on, so no
        district is reported by two workers. The last values are kept, for the
        districts the worker turns out to keep (:meth:`take`).
        """
        self._released = [
            (gauge, sample.labels, sample.value)
            for gauge in DISTRICT_GAUGES
            for family in gauge.collect()
            for sample in family.samples
        ]
        for gauge in DISTRICT_GAUGES:
            gauge.clear()

    def take(self, partitions: frozenset[int] | set[int]) -> None:
        """Report the districts of ``partitions`` (call once their tables are recovered).

        Districts the worker kept get back the values it last set; the open alerts of
        every owned district are counted from its recovered detection state, so a
        district that moved here reports its open alerts before its next alert event.
        """
        for gauge, labels, value in self._released:
            if self._partition_of.get(labels["district"]) in partitions:
                gauge.labels(**labels).set(value)
        self._released = []
        for district, partition in self._partition_of.items():
            if partition in partitions:
                state = self._detection_table.get(district.encode())
                if state is not None:
                    self._raiser.count_open(state)

    def owned_keys(self, table: Any, partitions: frozenset[int] | set[int]) -> int:
        """How many keys of a district-keyed table lie on ``partitions``.

        The in-memory store can also hold standby replicas and keys of partitions that
        moved away: those are not counted.
        """
        partition_of = self._key_partition
        count = 0
        for key in table:
            partition = partition_of.get(key)
            if partition is None:
                partition = key_partition(key, self._partitions)
            if partition in partitions:
                count += 1
        return count
