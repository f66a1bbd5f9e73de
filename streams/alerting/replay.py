"""Offline replay: the live detection and alert lifecycle over a CSV file.

``cityvitals replay --input FILE.csv`` reads a file with a ``timestamp`` column
and one or more numeric value columns (each column one series of the same
site), in file order, and runs exactly what the worker runs: every value is
counted in its district's event-time windows (:mod:`streams.state.windows`, the
worker's lateness), and each closed minute goes through
:class:`~streams.alerting.detection.DistrictDetection` (threshold rules and anomaly
models) and the alert lifecycle. Each AlertEvent becomes one JSON line.

- ``--indicator COLUMN=CODE`` maps a column to a catalogue indicator: its
  threshold rules apply (district-scoped ones), and so do the anomaly models.
  An unmapped column is watched by the anomaly models alone, as indicator
  ``replay.<column>``, and takes any finite value.
- A mapped column's values are in the indicator's catalogue unit
  (``config/indicators.yaml``): a CSV says no unit, so none of the worker's unit
  conversions applies. Each value must pass the worker's own check,
  :func:`streams.ingest.ingestor.outside_range`: the first row holding a value the worker
  would dead-letter as ``out_of_range`` stops the replay with a
  :class:`ReplayError` naming file, line, column, indicator, value and range.
- ``--site`` scores all value columns of the file jointly as one site (the site
  model of ``config/anomaly.yaml``'s ``sites``, :mod:`detectors.site`), so a
  reading that breaks the columns' usual relationship is seen; without it each
  column is scored on its own (it still is with it).
- Timestamps without a time zone (NAB's ``YYYY-MM-DD HH:MM:SS``) are wall time
  in the city's time zone; ISO 8601 with an offset is taken as is.
- Irregular sampling, gaps of days and duplicate timestamps are simply data; a
  value whose minute has already closed (a backward time step beyond the
  lateness) is skipped and counted, as the worker dead-letters it as ``late``.
- Each line's ``event_time`` is the timestamp, as written in the input, of the
  reading that decided the event on its own (rules on each reading, window
  maxima and minima: :mod:`streams.alerting.early`), else of the last reading in the
  minute that caused the event (the latest reading before
  it when the event came from a minute without readings, e.g. a hold expiring).
"""

from __future__ import annotations

import csv
import dataclasses
import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson

from streams.alerting.detection import DetectionContext, DistrictDetection
from streams.alerting.early import partials
from streams.alerting.models import SiteChoice, load_anomaly_models
from streams.alerting.rules import load_silences, load_thresholds
from streams.core.config import CityConfig
from streams.core.messages import AlertEvent
from streams.ingest.ingestor import outside_range
from streams.state.windows import DistrictWindows

SOURCE = "replay"
SITE_NAME = "replay"  # the site group of ``--site``


class ReplayError(ValueError):
    """The input cannot be replayed: which file, row or column, and why."""


@dataclass
class ReplayStats:
    rows: int = 0
    values: int = 0
    late: int = 0
    blank: int = 0
    alerts: int = 0
    events: int = 0


@dataclass
class Replayer:
    """Feeds rows through windows, detection and the lifecycle, like the worker does."""

    cfg: CityConfig
    district: str
    window_s: int = 60
    rolling_windows: int = 15
    lateness_s: float = 120.0
    ctx: DetectionContext | None = None
    stats: ReplayStats = field(default_factory=ReplayStats)

    def __post_init__(self) -> None:
        if self.ctx is None:
            rules = load_thresholds(self.cfg)
            self.ctx = DetectionContext(self.cfg, rules, silences=load_silences(self.cfg, rules))
        self.windows = DistrictWindows(
            self.district, window_s=self.window_s, rolling_windows=self.rolling_windows
        )
        self.detection = DistrictDetection(self.district)
        # window start -> the input timestamp text of its last reading
        self._stamp: dict[float, str] = {}
        # a kept early reading -> its input timestamp text
        self._reading_stamp: dict[str, str] = {}
        self._last_stamp: tuple[float, str] | None = None

    def add(self, t: float, stamp: str, values: Mapping[str, float]) -> list[AlertEvent]:
        """One input row at event time ``t`` (``stamp`` as written in the input)."""
        assert self.ctx is not None
        self.stats.rows += 1
        early: list[AlertEvent] = []
        for indicator, value in values.items():
            if self.windows.add(indicator, value, t, SOURCE):
                self.stats.values += 1
                self._stamp[self.windows.window_of(t)] = stamp
                if self._last_stamp is None or t >= self._last_stamp[0]:
                    self._last_stamp = (t, stamp)
                if indicator in self.ctx.early_indicators:
                    ref = f"row {self.stats.rows} {indicator}"
                    self._reading_stamp[ref] = stamp
                    totals = None
                    if indicator in self.ctx.running_indicators:
                        totals = partials(self.windows.open, (indicator,))
                    early += self.detection.on_reading(
                        indicator,
                        None,
                        t,
                        value,
                        ref,
                        self.ctx,
                        self.windows.open,
                        self.window_s,
                        totals,
                    )
            else:
                self.stats.late += 1
        self._count(early)
        return early + self._closed(self.windows.close_due(self.lateness_s, [SOURCE]))

    def finish(self) -> list[AlertEvent]:
        """Close what is still open (the end of the input)."""
        return self._closed(self.windows.close_all())

    def _count(self, events: list[AlertEvent]) -> None:
        self.stats.events += len(events)
        self.stats.alerts += sum(e.status.value == "firing" for e in events)

    def stamp_of(self, event: AlertEvent) -> str:
        """The input timestamp of the reading behind an event (see the module docstring)."""
        reading = event.evidence.reading
        if reading is not None and reading.origin in self._reading_stamp:
            return self._reading_stamp[reading.origin]
        start = event.event_time.timestamp() - self.window_s
        stamp = self._stamp.get(start)
        if stamp is not None:
            return stamp
        earlier = [s for s in self._stamp if s <= start]
        if earlier:
            return self._stamp[max(earlier)]
        return self._last_stamp[1] if self._last_stamp else event.event_time.isoformat()

    def _closed(self, windows: Iterable[Any]) -> list[AlertEvent]:
        assert self.ctx is not None
        out: list[AlertEvent] = []
        closed = False
        for window in windows:
            out += self.detection.on_window(window, self.ctx)
            closed = True
        if closed:
            out += self.detection.catch_up(self.windows.open, self.window_s, self.ctx)
        self._count(out)
        if len(self._reading_stamp) > 4096:  # only kept readings can still raise an event
            kept = {r.ref for s in self.detection.early.values() for r in s.readings}
            kept |= {e.evidence.reading.origin or "" for e in out if e.evidence.reading is not None}
            self._reading_stamp = {k: v for k, v in self._reading_stamp.items() if k in kept}
        # keep the stamps of recent minutes only: bounded memory on long files
        horizon = self.windows.closed_until - 24 * 3600
        if len(self._stamp) > 4096:
            self._stamp = {s: v for s, v in self._stamp.items() if s >= horizon}
        return out


def parse_time(text: str, zone: ZoneInfo) -> float:
    """Seconds since the epoch; a naive timestamp is wall time in ``zone``."""
    when = datetime.fromisoformat(text.strip())
    if when.tzinfo is None:
        when = when.replace(tzinfo=zone)
    return when.timestamp()


def read_rows(
    path: Path, mapping: Mapping[str, str]
) -> tuple[list[str], Iterator[tuple[int, str, dict[str, str]]]]:
    """The value columns (mapped to indicator codes) and the rows, lazily."""
    handle = path.open(newline="", encoding="utf-8-sig")
    reader = csv.DictReader(handle)
    if reader.fieldnames is None or "timestamp" not in reader.fieldnames:
        handle.close()
        raise ReplayError(f"{path}: no 'timestamp' column in the header")
    columns = [c for c in reader.fieldnames if c != "timestamp"]
    if not columns:
        handle.close()
        raise ReplayError(f"{path}: no value column besides 'timestamp'")
    unknown = sorted(set(mapping) - set(columns))
    if unknown:
        handle.close()
        raise ReplayError(f"{path}: --indicator names columns not in the file: {unknown}")

    def rows() -> Iterator[tuple[int, str, dict[str, str]]]:
        with handle:
            for line, row in enumerate(reader, start=2):
                yield line, row.get("timestamp") or "", {c: row.get(c) or "" for c in columns}

    return columns, rows()


def replay_file(
    path: Path,
    cfg: CityConfig,
    *,
    district: str,
    mapping: Mapping[str, str] | None = None,
    ctx: DetectionContext | None = None,
    progress: Any = None,
    site: bool = False,
) -> tuple[list[dict[str, Any]], ReplayStats]:
    """Replay one CSV file; return the output lines (as dicts) and counts.

    ``site``: the value columns are also one site group (``replay``), scored jointly by
    the site model with the built-in model's settings, besides each column on its own.
    """
    mapping = dict(mapping or {})
    for column, code in mapping.items():
        if code not in cfg.indicators:
            raise ReplayError(f"--indicator {column}={code}: unknown indicator {code!r}")
    columns, rows = read_rows(path, mapping)
    codes = {c: mapping.get(c, f"replay.{c}") for c in columns}
    catalogued = {column: cfg.indicators[code] for column, code in mapping.items()}
    zone = ZoneInfo(cfg.city.city.timezone)
    if site:
        if len(codes) < 2:
            raise ReplayError(f"{path}: --site needs at least two value columns")
        if ctx is None:
            rules = load_thresholds(cfg)
            ctx = DetectionContext(cfg, rules, silences=load_silences(cfg, rules))
        models = ctx.models or load_anomaly_models(cfg)
        group = SiteChoice(SITE_NAME, tuple(codes.values()), settings=models.default.settings)
        ctx = dataclasses.replace(ctx, models=models.with_site(group))
    replayer = Replayer(cfg, district, ctx=ctx)
    lines: list[dict[str, Any]] = []

    def emit(events: list[AlertEvent]) -> None:
        for event in events:
            doc = orjson.loads(event.to_json())
            doc["event_time_utc"] = doc["event_time"]
            doc["event_time"] = replayer.stamp_of(event)
            lines.append(doc)

    for line, stamp, raw in rows:
        try:
            t = parse_time(stamp, zone)
        except ValueError:
            raise ReplayError(f"{path}:{line}: timestamp {stamp!r} is not ISO 8601") from None
        values: dict[str, float] = {}
        for column, text in raw.items():
            if not text.strip():
                replayer.stats.blank += 1
                continue
            try:
                value = float(text)
            except ValueError:
                raise ReplayError(
                    f"{path}:{line}: column {column!r}: {text!r} is not a number"
                ) from None
            if math.isfinite(value):
                indicator = catalogued.get(column)
                if indicator is not None:
                    outside = outside_range(indicator, value)
                    if outside is not None:
                        raise ReplayError(
                            f"{path}:{line}: column {column!r} ({indicator.code}) = {outside}"
                        )
                values[codes[column]] = value
            else:
                replayer.stats.blank += 1
        emit(replayer.add(t, stamp.strip(), values))
        if progress is not None:
            progress()
    emit(replayer.finish())
    return lines, replayer.stats


def write_jsonl(lines: Iterable[Mapping[str, Any]], out: Path) -> int:
    n = 0
    with out.open("wb") as handle:
        for doc in lines:
            handle.write(orjson.dumps(doc) + b"\n")
            n += 1
    return n
