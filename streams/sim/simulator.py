"""A deterministic simulated city: every department's events, plus scripted incidents.

The simulator stands in for the city's department systems. Every gauge sensor
(speed loops, PM2.5 monitors, water-main pressure, bins, ...) reports its
indicator at the indicator's ``expected_interval_s``; count indicators (smoke
alarms, accidents, 119 calls, overflow reports, 12345 complaints) arrive as
Poisson event streams whose rate follows the district profile and the time of
day. Values follow per-district baselines (``profile`` in ``config/city.yaml``),
daily and weekly patterns and sensor noise, and stay inside their normal band
in quiet times, so alerts come from the scripted incidents (the
ground truth, see :func:`write_ground_truth`) and rarely from anything else.
``malformed_share`` mixes in events the ingest must dead-letter, each labelled
with the reason it should get. With ``appeals=True`` citizens' appeals on every
channel join the stream (topic ``city.events.appeals``, :mod:`streams.sim.appeals`),
and the demo script gains an incident only citizens report; without it the stream is
what it has always been.

This module runs the city's clock and says which stream emits next; the rest is
in :mod:`streams.sim.layout` (the sensors and feeds), :mod:`streams.sim.sources`
(what each sends), :mod:`streams.sim.incidents`, :mod:`streams.sim.complaints`
(hotline text), :mod:`streams.sim.malformed` and :mod:`streams.sim.clock` (time
of day).

Same config + seed + start + arguments -> byte-identical events, so runs,
tests and benchmarks are reproducible::

    sim = CitySimulator(load_config(), seed=7, malformed_share=0.01)
    for ev in sim.events(timedelta(hours=1)):
        ...  # ev.topic, ev.key, ev.value (bytes), ev.event_time, ev.malformed
"""

from __future__ import annotations

import gc
import hashlib
import heapq
import math
import random
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import islice
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import orjson

from streams.core.config import CityConfig
from streams.core.messages import APPEALS_TOPIC
from streams.kafka.publish import produce_events
from streams.sim.appeals import AppealSource
from streams.sim.clock import MS_PER_HOUR, MS_PER_MINUTE, Clock, LocalTime
from streams.sim.complaints import COMPLAINT_DEPARTMENT
from streams.sim.incidents import (
    INCIDENT_INDICATORS,
    Incident,
    check_incident,
    default_incidents,
    write_ground_truth,
)
from streams.sim.layout import Stream, city_layout
from streams.sim.malformed import MALFORMED_KINDS, malform
from streams.sim.sources import feed_event, gauge_reading

#: What callers of the simulator import from here, wherever it is defined.
__all__ = [
    "APPEALS_TOPIC",
    "COMPLAINT_DEPARTMENT",
    "DEFAULT_START",
    "INCIDENT_INDICATORS",
    "MALFORMED_KINDS",
    "CitySimulator",
    "Incident",
    "SimEvent",
    "default_incidents",
    "publish",
    "write_ground_truth",
]

DEFAULT_START = datetime(2026, 11, 24, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class SimEvent:
    """One produced record; ``malformed`` names the rejection the ingest should give it."""

    topic: str
    key: bytes
    value: bytes
    event_time: datetime
    malformed: str | None = None


def _normals(seed: int) -> Iterator[float]:
    """Standard normals drawn by numpy in blocks: per-reading random.gauss is the hot spot."""
    gen = np.random.Generator(np.random.PCG64([seed, 0x5EED]))
    while True:
        yield from gen.standard_normal(16384).tolist()


class _Schedule:
    """When each stream emits next: a heap of (ms since the start, stream index).

    Per-stream state lives here, not on the streams: two generators never interfere.
    """

    def __init__(
        self,
        streams: Sequence[Stream],
        rng: random.Random,
        drop_rng: random.Random,
        dropout_share: float,
    ) -> None:
        self.heap = [(st.phase_ms if st.interval_ms else 0, i) for i, st in enumerate(streams)]
        heapq.heapify(self.heap)
        self._rng, self._drop_rng, self._dropout_share = rng, drop_rng, dropout_share
        self._ticks = [0] * len(streams)  # periodic: emissions scheduled so far
        self._due = [False] * len(streams)  # Poisson: the queued heap entry is an event

    def periodic(self, i: int, st: Stream) -> None:
        """Schedule gauge ``st``'s next reading."""
        k = self._ticks[i] = self._ticks[i] + 1
        nxt = st.phase_ms + k * st.interval_ms
        drop_rng = self._drop_rng
        if self._dropout_share and drop_rng.random() < self._dropout_share:
            skip = drop_rng.randint(3, 8)  # the sensor goes silent for a few intervals
            self._ticks[i] += skip
            nxt += skip * st.interval_ms
        # Small transmission jitter, less than an interval: per-sensor order holds.
        jitter = int(self._rng.random() * st.interval_ms * 0.05)
        heapq.heapreplace(self.heap, (nxt + jitter, i))

    def poisson(self, i: int, st: Stream, t: int, clock: Clock) -> bool:
        """Schedule feed ``st``'s next draw; whether its entry at ``t`` is an event."""
        emit = self._due[i]
        rate = st.rate_h(clock) if st.rate_h else 0.0
        for eff in st.effects:
            rate += eff.boost_h * eff.intensity(t)
        gap = self._rng.expovariate(rate / MS_PER_HOUR) if rate > 0 else math.inf
        # Rates change with the clock and incidents: redraw at least every minute
        # (exact for a Poisson process, which has no memory).
        nxt_min = (t // MS_PER_MINUTE + 1) * MS_PER_MINUTE
        if t + gap < nxt_min:
            self._due[i] = True
            heapq.heapreplace(self.heap, (t + int(gap), i))
        else:
            self._due[i] = False
            heapq.heapreplace(self.heap, (nxt_min, i))
        return emit


class CitySimulator:
    """Generates the city's events lazily, in event-time order, deterministically."""

    def __init__(
        self,
        cfg: CityConfig,
        *,
        seed: int = 7,
        start: datetime | None = None,
        malformed_share: float = 0.0,
        dropout_share: float = 0.002,
        incidents: Sequence[Incident] | None = None,
        sensor_scale: float = 1.0,
        appeals: bool = False,
    ) -> None:
        if not 0.0 <= malformed_share <= 1.0:
            raise ValueError(f"malformed_share must lie in [0, 1], got {malformed_share}")
        if not 0.0 <= dropout_share < 1.0:
            raise ValueError(f"dropout_share must lie in [0, 1), got {dropout_share}")
        if sensor_scale <= 0:
            raise ValueError(f"sensor_scale must be positive, got {sensor_scale}")
        start = DEFAULT_START if start is None else start
        if start.tzinfo is None:
            raise ValueError("start must be timezone-aware")
        self.cfg = cfg
        self.seed = seed
        self.start = start.astimezone(UTC)
        self.malformed_share = malformed_share
        self.dropout_share = dropout_share
        self.sensor_scale = sensor_scale
        self.incidents: tuple[Incident, ...] = (
            default_incidents(cfg, self.start, appeals=appeals)
            if incidents is None
            else tuple(incidents)
        )
        for inc in self.incidents:
            check_incident(cfg, inc)
        self._start_ms = round(self.start.timestamp() * 1000)
        self._tz = ZoneInfo(cfg.city.city.timezone)
        # Run tag in every event id: ids stay unique across runs with other seeds or starts.
        # Its last character is a letter: a tag ending in digits such as "14e172" ran into
        # the counter after it ("172-00000016"), which reads as a mobile number, and the
        # ingest stage rightly pseudonymised such ids.
        tag = hashlib.blake2b(f"{seed}|{self.start.isoformat()}".encode(), digest_size=3)
        digits = tag.hexdigest()
        self._run = digits[:-1] + "abcdef"[int(digits[-1], 16) % 6]
        self._streams = city_layout(
            cfg,
            seed=seed,
            run=self._run,
            sensor_scale=sensor_scale,
            incidents=self.incidents,
            start_ms=self._start_ms,
        )
        # Appeals draw from randomness of their own: the city's other events stay as
        # they are with appeals on or off.
        self.appeals: AppealSource | None = (
            AppealSource(cfg, seed=seed, start=self.start, run=self._run, incidents=self.incidents)
            if appeals
            else None
        )

    @property
    def run_tag(self) -> str:
        """The tag in every event id of this run (of its seed and start)."""
        return self._run

    def take(self, n: int) -> list[SimEvent]:
        """Exactly the first ``n`` events (for tests and benchmarks)."""
        if n < 0:
            raise ValueError(f"n must not be negative, got {n}")
        # Keeping 10^5 events alive makes the cyclic GC rescan them over and over
        # (more than half the time); events hold no cycles, so pause it meanwhile.
        was_enabled = gc.isenabled()
        gc.disable()
        try:
            return list(islice(self.events(timedelta(days=365_000)), n))
        finally:
            if was_enabled:
                gc.enable()

    def events(self, duration: timedelta) -> Iterator[SimEvent]:
        """Every event in ``[start, start + duration)``, lazily, in non-decreasing event time.

        Each call starts from scratch, so a shorter run is a prefix of a longer one.
        """
        if self.appeals is None:
            return self._city_events(duration)
        appeals = (
            SimEvent(APPEALS_TOPIC, a.district.encode(), a.record(), a.at)
            for a in self.appeals.appeals_in(duration)
        )
        return heapq.merge(self._city_events(duration), appeals, key=_event_time)

    def _city_events(self, duration: timedelta) -> Iterator[SimEvent]:
        """The sensors' and feeds' events (all but the appeals), as :meth:`events`."""
        end_ms = round(duration.total_seconds() * 1000)
        rng = random.Random(f"cityvitals-values-{self.seed}")
        # Separate streams of randomness: changing the malformed or dropout share
        # leaves all other values as they were.
        bad_rng = random.Random(f"cityvitals-malformed-{self.seed}")
        drop_rng = random.Random(f"cityvitals-dropout-{self.seed}")
        normal = _normals(self.seed)
        streams = self._streams
        schedule = _Schedule(streams, rng, drop_rng, self.dropout_share)
        heap = schedule.heap
        drift = [0.0] * len(streams)  # periodic: AR(1) drift
        local = LocalTime(self._tz)
        start, start_ms = self.start, self._start_ms
        dumps = orjson.dumps
        malformed_share = self.malformed_share
        seq = 0
        while heap:
            t, i = heap[0]
            if t >= end_ms:
                return
            st = streams[i]
            offset, clock = local.at(start_ms + t)
            if st.interval_ms:
                schedule.periodic(i, st)
                body = gauge_reading(st, t, clock, normal, drift, i)
            elif schedule.poisson(i, st, t, clock):
                body = feed_event(st, t, clock, rng)
            else:
                continue
            seq += 1
            utc = start + timedelta(milliseconds=t)
            body["event_id"] = f"{st.prefix}{seq:08d}"
            body["event_time"] = utc.astimezone(offset)
            key = st.district.code.encode()
            if malformed_share and bad_rng.random() < malformed_share:
                kind = bad_rng.choice(MALFORMED_KINDS)
                value, key = malform(self.cfg, kind, body, st, bad_rng)
                yield SimEvent(st.topic, key, value, utc, kind)
            else:
                yield SimEvent(st.topic, key, dumps(body), utc, None)


def _event_time(ev: SimEvent) -> datetime:
    return ev.event_time


# --- producing to Kafka -------------------------------------------------------


async def publish(
    bootstrap: str,
    events: Iterable[SimEvent],
    *,
    rate: float | None = None,
    speed: float | None = None,
    ground_truth: Path | None = None,
    incidents: Sequence[Incident] = (),
    progress: bool = False,
    client_options: Mapping[str, object] | None = None,
) -> int:
    """Produce ``events`` to Kafka (:func:`streams.kafka.publish.produce_events`, which
    says what ``rate``, ``speed`` and ``client_options`` do); return how many were
    produced. With ``ground_truth``, the incidents are written there first."""
    if ground_truth is not None:
        write_ground_truth(ground_truth, incidents)
    return await produce_events(
        bootstrap,
        events,
        rate=rate,
        speed=speed,
        progress=progress,
        client_options=client_options,
    )
