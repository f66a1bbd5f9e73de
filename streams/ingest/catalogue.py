"""The validate stage of ingest: a decoded event against the city's catalogue and the clock.

:class:`CatalogueCheck` accepts an event when its district, street and indicator
are in the city's config, the message key is the event's district (so it lands
on the partition that owns the district's state), the indicator arrives on its
own source topic, the unit is the canonical one or an accepted conversion and
the canonical value is physically possible (``unknown_district``,
``unknown_street``, ``key_mismatch``, ``unknown_indicator``, ``wrong_topic``,
``unknown_unit``, ``out_of_range``); and when the event time is neither more
than ``max_future_s`` ahead of the clock (``future_event_time``) nor more than
``max_age_s`` behind it (``too_old``).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from streams.core.config import CityConfig, Indicator
from streams.core.messages import EVENT_TOPICS, CityEvent, DeadLetterReason
from streams.ingest.rejection import Rejected, quoted
from streams.ingest.structs import FastEvent


def outside_range(indicator: Indicator, value: float) -> str | None:
    """Why ``value``, in the indicator's canonical unit, is physically impossible (the
    check behind ``out_of_range``), e.g. ``252 km/h is outside the physical range
    [0, 200]``; None when it lies within the catalogue's range, bounds included."""
    lo, hi = indicator.range
    if lo <= value <= hi:
        return None
    return f"{value:g} {indicator.unit} is outside the physical range [{lo:g}, {hi:g}]"


class CatalogueCheck:
    """Checks events against one city's catalogue and a clock read once per batch."""

    def __init__(self, cfg: CityConfig, *, max_future_s: float, max_age_s: float) -> None:
        self.max_future = timedelta(seconds=max_future_s)
        self.max_age = timedelta(seconds=max_age_s)
        self.max_future_s, self.max_age_s = max_future_s, max_age_s
        self._now: datetime | None = None
        self._now_ts = self._oldest = self._newest = 0.0
        self._years = (0, 0)
        self._source_of_topic = {topic: source for source, topic in EVENT_TOPICS.items()}
        # looked up per record: worked out once (enum values are slow to read)
        self._district_keys = {code: code.encode() for code in cfg.districts}
        self._districts, self._indicators = cfg.districts, cfg.indicators
        self._street_district = cfg.city.street_district
        self._topic_of = {c: EVENT_TOPICS[i.source.value] for c, i in cfg.indicators.items()}

    def check(
        self, topic: str, key: bytes | None, event: CityEvent | FastEvent, now: datetime
    ) -> tuple[float, float]:
        """The event's value in the canonical unit and its time in seconds since the epoch,
        or raise :class:`Rejected` (stage validate)."""
        district = self._districts.get(event.district)
        if district is None:
            raise Rejected(
                DeadLetterReason.UNKNOWN_DISTRICT,
                f"district {quoted(event.district)} is not in the city",
            )
        street = event.street
        if street and self._street_district.get(street) != event.district:
            raise Rejected(
                DeadLetterReason.UNKNOWN_STREET,
                f"street {quoted(street)} is not a street of district {quoted(event.district)}",
            )
        if key is None or self._district_keys.get(event.district) != key:
            shown = None if key is None else key.decode("utf-8", "replace")
            raise Rejected(
                DeadLetterReason.KEY_MISMATCH,
                f"message key {quoted(shown)} is not the event's district {quoted(event.district)}",
            )
        indicator = self._indicators.get(event.indicator)
        if indicator is None:
            raise Rejected(
                DeadLetterReason.UNKNOWN_INDICATOR,
                f"indicator {quoted(event.indicator)} is not in the catalogue",
            )
        if topic in self._source_of_topic and self._topic_of[indicator.code] != topic:
            raise Rejected(
                DeadLetterReason.WRONG_TOPIC,
                f"indicator {quoted(indicator.code)} belongs on {quoted(EVENT_TOPICS[indicator.source.value])}, not {quoted(topic)}",
            )
        canonical = indicator.to_canonical(event.value, event.unit)
        if canonical is None:
            accepted = [indicator.unit, *indicator.conversions]
            raise Rejected(
                DeadLetterReason.UNKNOWN_UNIT,
                f"unit {quoted(event.unit)} is not accepted for {quoted(indicator.code)}; accepted: {accepted}",
            )
        outside = outside_range(indicator, canonical)
        if outside is not None:
            raise Rejected(DeadLetterReason.OUT_OF_RANGE, f"{indicator.code} = {outside}")
        # the time's common case inline: its window is worked out once per clock reading
        when = event.event_time
        if now is not self._now:
            self._set_clock(now)
        year = when.year
        if self._years[0] <= year <= self._years[1]:
            t = when.timestamp()
            if self._oldest <= t <= self._newest:
                return canonical, t
        return canonical, self.check_time(when, now)

    def _set_clock(self, now: datetime) -> None:
        """One clock reading per batch: the bounds of an acceptable event time."""
        self._now, self._now_ts = now, now.timestamp()
        self._oldest = self._now_ts - self.max_age_s
        self._newest = self._now_ts + self.max_future_s
        self._years = (
            now.year - 1 - int(self.max_age_s // (365 * 86400)),
            now.year + 1 + int(self.max_future_s // (365 * 86400)),
        )

    def check_time(self, when: datetime, now: datetime) -> float:
        """The event time in seconds since the epoch, if neither too far ahead of the
        clock nor too far behind it."""
        if now is not self._now:
            self._set_clock(now)
        year = when.year
        # far years first: the timestamp of an aware time near year 1 or 9999 overflows
        if year <= self._years[1] and year >= self._years[0]:
            t = when.timestamp()
            if t - self._now_ts <= self.max_future_s:
                if self._now_ts - t <= self.max_age_s:
                    return t
                year = self._years[0] - 1
            else:
                year = self._years[1] + 1
        if year > self._years[1]:
            raise Rejected(
                DeadLetterReason.FUTURE_EVENT_TIME,
                f"event time {when.isoformat()} is more than {self.max_future} ahead of {now.isoformat()}",
            )
        raise Rejected(
            DeadLetterReason.TOO_OLD,
            f"event time {when.isoformat()} is more than {self.max_age} before {now.isoformat()}",
        )
