"""When a district's windows close, and what is published when they do.

A window closes on its district's watermark once every active source has passed it
(the end of each batch), when its district has been silent for ``idle_close_s`` and
the broker confirms nothing is left to read (a one-second timer), or when more
windows are open than the state may hold (``overflow``). Each closed window's vital
signs go to ``city.vitals``, its appeal tallies (if it counted any) to
``city.appeal-tallies``, and its detection runs (:class:`~streams.kafka.raising.AlertRaiser`).

Silence is measured in running time (:class:`streams.kafka.feed.InputFeed`'s clock),
so a paused worker does not take its own absence for the district's.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson

from streams.core import metrics
from streams.core.config import CityConfig
from streams.core.messages import (
    APPEAL_TALLIES_TOPIC,
    AUDIT_TOPIC,
    EVENT_TOPICS,
    VITALS_TOPIC,
    AppealTally,
    AuditRecord,
)
from streams.core.settings import Settings
from streams.ingest.ingestor import APPEAL_TALLY, FACET_PLACE_SEP
from streams.kafka.counting import Batch
from streams.kafka.feed import key_partition
from streams.kafka.raising import AlertRaiser
from streams.kafka.tables import TABLE_NAME
from streams.state.vitals import vitals_json
from streams.state.windows import ClosedWindow, DistrictWindows

log = logging.getLogger(__name__)


#: What :class:`~streams.core.messages.AppealTally` keeps of a facet's tally (the summed
#: intensity stays with the public-opinion series)
_TALLIED = tuple((name, APPEAL_TALLY.index(name)) for name in AppealTally.model_fields)


def _tally_doc(row: list[float]) -> dict[str, int]:
    return {name: int(row[i]) for name, i in _TALLIED}


def appeal_tallies_json(closed: ClosedWindow, now: datetime) -> bytes | None:
    """A closed window's ``AppealTallies`` document, or None when it counted no appeal.

    Built from the window's facets (:meth:`~streams.state.windows.DistrictWindows.tally`):
    ``<category>`` for the district, ``<category>@<street>`` for a street.
    """
    if not closed.tallies:
        return None
    categories: dict[str, dict[str, int]] = {}
    streets: dict[str, dict[str, dict[str, int]]] = {}
    for facet, row in closed.tallies.items():
        category, _, street = facet.partition(FACET_PLACE_SEP)
        if street:
            streets.setdefault(street, {})[category] = _tally_doc(row)
        else:
            categories[category] = _tally_doc(row)
    document = {
        "district": closed.district,
        "window_start": datetime.fromtimestamp(closed.start, UTC),
        "window_end": datetime.fromtimestamp(closed.end, UTC),
        "categories": categories,
        "streets": streets,
        "closed_at": now,
    }
    return orjson.dumps(document, option=orjson.OPT_UTC_Z)


class WindowCloser:
    """Decides which windows close, and publishes the vital signs of those that do."""

    def __init__(
        self,
        table: Any,
        cfg: CityConfig,
        settings: Settings,
        raiser: AlertRaiser,
        *,
        clock: Callable[[], float],
        progress: Callable[[str, int], tuple[int | None, int | None]],
        caught_up: Callable[[frozenset[int], float], bool] | None,
    ) -> None:
        self.table, self.cfg, self.settings, self._raiser = table, cfg, settings, raiser
        self._clock, self._progress, self._caught_up = clock, progress, caught_up
        # when this worker began consuming its current partitions; set by the first
        # batch after a start or a rebalance (joining the group takes seconds)
        self.started = clock()
        self.awaiting_first_batch = True
        # running time of each district's (and each district source's) last event:
        # in memory only, so that a restarted worker treats every source as active
        # and waits a full idle period before closing anything on silence
        self.last_activity: dict[str, float] = {}
        self.source_seen: dict[tuple[str, str], float] = {}
        self._held_logged: dict[str, float] = {}
        # idle districts waiting for the broker to confirm nothing is left to read
        self._idle_asked: float | None = None
        self.partition_of = {
            d: key_partition(d.encode(), settings.partitions) for d in cfg.districts
        }
        # source topic -> wall seconds its silence holds a district's windows open
        self._source_wait = {
            topic: settings.source_wait(name) for name, topic in EVENT_TOPICS.items()
        }
        self._close_delay = {
            t: metrics.window_close_delay.labels(t) for t in ("watermark", "idle", "overflow")
        }

    def assigned(self) -> None:
        """The worker took (or kept) its partitions: silence counts from now.

        The first batch starts the count again, since joining a group and restoring
        takes a while; but a district whose input has ended is still closed on
        silence, once the broker confirms there is nothing left to read.
        """
        self.started = self._clock()
        self.awaiting_first_batch = True

    def heard(self, live: float) -> None:
        """A batch arrived at running time ``live``."""
        if self.awaiting_first_batch:
            self.started, self.awaiting_first_batch = live, False

    def close_due(self, batch: Batch, live: float) -> None:
        """Close the windows of the batch's districts that their watermark has passed,
        and the oldest beyond ``max_open_windows``."""
        keep = self.settings.max_open_windows
        lateness = self.settings.allowed_lateness_s
        for district, state in batch.touched.items():
            closed = state.close_due(lateness, self._active_sources(district, live))
            self.publish(batch, closed, "watermark")
            if len(state.open) > keep:
                self._degrade(batch, state, keep)

    def publish(self, batch: Batch, closed: list[ClosedWindow], trigger: str) -> None:
        """Detection over the closed windows, then their vital signs onto ``city.vitals``."""
        self._raiser.windows_closed(batch, closed)
        out, now = batch.out, batch.now
        for window in closed:
            document, domains, composite = vitals_json(
                window, self.cfg, self.settings.rolling_windows, now
            )
            out.add(VITALS_TOPIC, window.district.encode(), document)
            if (tallies := appeal_tallies_json(window, now)) is not None:
                out.add(APPEAL_TALLIES_TOPIC, window.district.encode(), tallies)
            metrics.windows_closed.labels(trigger).inc()
            for domain, value in domains.items():
                if value is not None:
                    metrics.vital_index.labels(window.district, domain).set(value)
            if composite is not None:
                metrics.composite_index.labels(window.district).set(composite)
            delay = now.timestamp() - window.end
            metrics.watermark_lag.labels(window.district).set(delay)
            self._close_delay[trigger].observe(delay)

    def _degrade(self, batch: Batch, state: DistrictWindows, keep: int) -> None:
        """More open windows than the state may hold: close the oldest, and say so."""
        closed = state.close_oldest(keep)
        if not closed:
            return
        reason = (
            f"{len(closed)} open windows of district {state.district} closed before their "
            f"watermark (from {datetime.fromtimestamp(closed[0].start, UTC).isoformat()}): "
            f"more than CITYVITALS_MAX_OPEN_WINDOWS ({keep}) were open, a source is far behind"
        )
        log.warning("%s", reason)
        metrics.state_degraded.labels(TABLE_NAME).inc()
        batch.out.add(
            AUDIT_TOPIC,
            b"worker",
            AuditRecord(
                at=batch.now,
                user="worker",
                role="system",
                action="state_degraded",
                target=f"{TABLE_NAME}/{state.district}",
                detail=reason,
            ).to_json(),
        )
        self.publish(batch, closed, "overflow")

    def _active_sources(self, district: str, live: float) -> set[str]:
        """The sources whose mark the district's windows wait for: each one heard from
        within its wait (``CITYVITALS_SOURCE_WAIT_S``, else ``CITYVITALS_IDLE_CLOSE_S``),
        and each whose partition holds records this worker has not handled."""
        partition = self.partition_of[district]
        return {
            src
            for src, wait in self._source_wait.items()
            if live - self.source_seen.get((district, src), self.started) <= wait
            or self._behind(src, partition)
        }

    def _behind(self, topic: str, partition: int) -> bool:
        """Whether this worker has not yet processed everything the partition holds.

        Before the first fetch of a partition its high watermark is unknown: then it
        counts as behind, since its events may be anything but absent.
        """
        position, highwater = self._progress(topic, partition)
        return position is None or highwater is None or position < highwater

    def idle(
        self, active_partitions: frozenset[int], now_ts: float
    ) -> list[tuple[str, DistrictWindows]]:
        """The districts of ``active_partitions`` whose windows may close on silence now.

        A district qualifies once silent for ``idle_close_s`` with nothing of its
        partition left unread; then the broker must confirm, in a fetch answered after
        the question (asked at one call, answered by a later one), that the partitions
        hold nothing this worker has not handled.
        """
        live = self._clock()
        idle = self.settings.idle_close_s
        candidates: list[tuple[str, DistrictWindows]] = []
        for district, partition in self.partition_of.items():
            if partition not in active_partitions:
                continue
            state = self.table.get(district.encode())
            if state is None or not (state.open or state.held):
                continue
            if live - self.last_activity.get(district, self.started) < idle:
                continue
            # silent because its events wait behind another topic's is not idle
            behind = [src for src in EVENT_TOPICS.values() if self._behind(src, partition)]
            if behind:
                self._log_held_open(district, partition, behind, now_ts)
                continue
            candidates.append((district, state))
        if not candidates:
            self._idle_asked = None
            return []
        if self._idle_asked is None:
            self._idle_asked = now_ts  # ask the broker; the answer comes with a later fetch
            return []
        partitions = frozenset(self.partition_of[d] for d, _ in candidates)
        if self._caught_up is not None and not self._caught_up(partitions, self._idle_asked):
            return []
        self._idle_asked = None
        return candidates

    def _log_held_open(
        self, district: str, partition: int, behind: list[str], now_ts: float
    ) -> None:
        if now_ts - self._held_logged.get(district, 0.0) > 30:
            self._held_logged[district] = now_ts
            log.info(
                "district %s kept open: partition %d of %s not fully processed (%s)",
                district,
                partition,
                behind,
                "; ".join(
                    "{} at {} of {}".format(t, *self._progress(t, partition)) for t in behind
                ),
            )
