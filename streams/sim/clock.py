"""The simulated city's time of day: its UTC offset, and the daily and weekly patterns
(activity, rush hours, traffic, smog, water demand, evening power, citizens' appeals)
that shape values and event rates at each local minute."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

MS_PER_HOUR = 3_600_000
MS_PER_MINUTE = 60_000


def _bump(h: float, centre: float, width: float) -> float:
    """A daily Gaussian bump around ``centre`` o'clock, wrapping at midnight."""
    d = abs(h - centre)
    d = min(d, 24.0 - d)
    return math.exp(-0.5 * (d / width) ** 2)


@dataclass(frozen=True, slots=True)
class Clock:
    """The daily and weekly pattern at one local minute (cached per minute)."""

    hour: float
    weekend: bool
    day: float  # daytime activity 0..1, lowest at 03:00, highest at 15:00
    rush: float  # rush-hour strength, 0..~1
    traffic: float  # traffic load 0..~1.05
    smog: float  # PM2.5 multiplier: stagnant night and morning air
    demand: float  # water demand peaks (morning and evening)
    evening: float  # evening power peak
    appeals: float  # citizens' appeals: few at night, peaks late morning and evening; mean ~1

    @staticmethod
    def at(local_minute: int) -> Clock:
        h = (local_minute % 1440) / 60.0
        weekend = ((local_minute // 1440) + 3) % 7 >= 5  # 1970-01-01 was a Thursday
        day = 0.5 - 0.5 * math.cos(2 * math.pi * (h - 3.0) / 24.0)
        rush = _bump(h, 8.0, 0.9) + _bump(h, 18.0, 1.0)
        if weekend:
            rush *= 0.3
            traffic = (0.12 + 0.42 * day + rush * 0.5) * 0.85
        else:
            traffic = 0.12 + 0.45 * day + 0.55 * rush
        return Clock(
            hour=h,
            weekend=weekend,
            day=day,
            rush=rush,
            traffic=traffic,
            smog=1.0 + 0.15 * math.cos(2 * math.pi * (h - 5.0) / 24.0),
            demand=_bump(h, 7.5, 1.2) + _bump(h, 19.5, 1.5),
            evening=_bump(h, 20.0, 2.0),
            appeals=(
                0.2
                + 1.68 * _bump(h, 10.5, 2.0)
                + 0.92 * _bump(h, 15.0, 2.0)
                + 1.51 * _bump(h, 20.0, 1.6)
            )
            * (0.85 if weekend else 1.0),
        )


class LocalTime:
    """The city's UTC offset and :class:`Clock` at an instant: the offset worked out once
    per UTC hour (at the hour's first instant asked for), the clock once per local minute."""

    def __init__(self, tz: ZoneInfo) -> None:
        self._tz = tz
        self._offsets: dict[int, tuple[int, timezone]] = {}
        self._clocks: dict[int, Clock] = {}

    def at(self, abs_ms: int) -> tuple[timezone, Clock]:
        """The offset and the clock at ``abs_ms`` milliseconds since the epoch."""
        hour = abs_ms // MS_PER_HOUR
        off = self._offsets.get(hour)
        if off is None:
            delta = datetime.fromtimestamp(abs_ms / 1000, self._tz).utcoffset()
            assert delta is not None
            off = (int(delta.total_seconds() * 1000), timezone(delta))
            self._offsets[hour] = off
        minute = (abs_ms + off[0]) // MS_PER_MINUTE
        clock = self._clocks.get(minute)
        if clock is None:
            if len(self._clocks) > 4096:
                self._clocks.clear()
            clock = self._clocks[minute] = Clock.at(minute)
        return off[1], clock
