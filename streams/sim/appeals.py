"""Citizens' appeals of the simulated city, on every channel of ``config/appeals.yaml``.

Each appeal is a record of topic ``city.events.appeals``, keyed by its district, whose
value is an envelope ``{"channel": "<channel code>", "payload": {...}}``: the payload in
the shape that channel's system sends (docs/appeals.md), which
:class:`streams.voice.channels.AppealIntake` accepts for that channel.

The mix is a city's: appeals arrive as a Poisson process whose rate follows each
district's ``complaints_h`` and the time of day (few at night, peaks late morning and
evening); the 12345 hotline takes most, then WeChat, the message board, service
ratings and the mayor's mailbox least. A district's kind leans its categories (an
industrial district smells and breathes, an old town's property and fire safety
suffer). Texts come from :mod:`streams.sim.appeal_texts`, calm to extreme; some repeat
a recent place and category, and some carry the writer's personal data, in the text
or in the fields a channel does not copy. A ``public_opinion`` incident adds a rising,
angrier run of appeals about its place and category, its first at the incident's start.
"""

from __future__ import annotations

import math
import random
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import orjson

from streams.core.config import CityConfig, District
from streams.sim import people
from streams.sim.appeal_texts import ANGRY, ANNOYED, CALM, EXTREME, appeal_text, with_personal_data
from streams.sim.channels import PAYLOADS, Draft
from streams.sim.clock import MS_PER_HOUR, MS_PER_MINUTE, LocalTime
from streams.sim.incidents import CITIZEN_INCIDENTS, Incident
from streams.voice.appeals import AppealsConfig, Rating, load_appeals

#: Background channel mix, of the channels ``config/appeals.yaml`` names.
CHANNEL_WEIGHTS: dict[str, float] = {
    "hotline_12345": 0.45,
    "wechat": 0.24,
    "message_board": 0.14,
    "service_rating": 0.11,
    "mayor_mailbox": 0.06,
}
#: The channels an incident's citizens use (service ratings rate services, not smells).
_INCIDENT_CHANNELS: dict[str, float] = {
    "hotline_12345": 0.4,
    "wechat": 0.3,
    "message_board": 0.2,
    "mayor_mailbox": 0.1,
}
#: How often each category is raised anywhere, before a district's kind leans it.
_CATEGORY_WEIGHTS: dict[str, float] = {
    "noise": 1.4,
    "odour": 0.5,
    "air": 0.5,
    "water_supply": 0.7,
    "drainage": 0.5,
    "road_traffic": 1.3,
    "sanitation": 1.0,
    "heating_gas": 0.4,
    "power": 0.5,
    "fire_safety": 0.4,
    "public_safety": 0.5,
    "property": 1.2,
    "market_food": 0.6,
    "government_service": 0.3,  # most reach the city as service ratings
}
#: A word of a district's ``kind`` -> the categories it raises, and by how much.
_KIND_LEANINGS: dict[str, dict[str, float]] = {
    "business": {"road_traffic": 1.6, "market_food": 1.4, "noise": 1.2},
    "historic": {"property": 1.5, "fire_safety": 1.6, "drainage": 1.4, "heating_gas": 1.3},
    "residential": {"property": 1.4, "noise": 1.2, "sanitation": 1.2},
    "technology": {"road_traffic": 1.3, "power": 1.3, "government_service": 1.5},
    "port": {"air": 2.0, "road_traffic": 1.5, "noise": 1.4},
    "industrial": {"odour": 2.5, "air": 2.2, "noise": 1.3},
    "new town": {"property": 1.5, "noise": 1.5, "road_traffic": 1.2},
    "airport": {"noise": 1.8, "road_traffic": 1.5},
    "university": {"noise": 1.3, "market_food": 1.5, "public_safety": 1.3},
    "suburban": {"water_supply": 1.4, "power": 1.3},
}
#: The landmark an appeal names after its street, by category where one fits.
_LANDMARKS: dict[str, tuple[str, ...]] = {
    "odour": ("污水泵站", "垃圾中转站", "化工厂东侧"),
    "road_traffic": ("人民路口", "地铁站B出口", "实验小学门口"),
    "government_service": ("便民服务中心",),
}
_PLACES = ("幸福里小区", "锦绣花园", "农贸市场", "滨河公园", "星光广场", "和平新村", "学府苑")
_ANGER_MIX = (0.5, 0.27, 0.16, 0.07)  # calm, annoyed, angry, extreme
#: What service ratings rate: mostly government services, some utilities' counters.
_RATED = {"government_service": 0.8, "water_supply": 0.07, "power": 0.07, "heating_gas": 0.06}
GOOD_RATING_SHARE = 0.65
REPEAT_SHARE = 0.12  # appeals about a recent appeal's place and category
PERSONAL_SHARE = 0.3  # appeals whose text carries the writer's personal data
_INCIDENT_PEAK_H = 90.0  # an incident's appeals per hour at its end


@dataclass(frozen=True, slots=True)
class SimAppeal:
    """One simulated appeal: its channel and payload, and what the simulator knows of
    it (the truth the payload states in the channel's own words)."""

    channel: str
    payload: dict[str, Any]
    district: str
    street: str
    category: str
    at: datetime  # UTC, whole seconds: every channel states seconds
    anger: int
    cause: str = ""  # the incident's kind, or "" for the city's everyday appeals

    def record(self) -> bytes:
        """The record's value: the envelope of channel and payload."""
        return orjson.dumps({"channel": self.channel, "payload": self.payload})


@dataclass(frozen=True, slots=True)
class _Spot:
    """A place and category an appeal was about: later ones may repeat it."""

    district: District
    street: str
    category: str
    place: str


def _category_weights(d: District, codes: Sequence[str]) -> list[float]:
    """How often district ``d`` raises each category of ``codes``: leaned by the words
    of its kind, and towards drainage along the river."""
    weights = []
    for code in codes:
        w = _CATEGORY_WEIGHTS.get(code, 0.5)  # a category a city adds: now and then
        for word, lean in _KIND_LEANINGS.items():
            if word in d.kind:
                w *= lean.get(code, 1.0)
        if code == "drainage" and d.profile.get("river", 0.0):
            w *= 1.5
        weights.append(w)
    return weights


class AppealSource:
    """The city's appeals, lazily, in event-time order, deterministic by seed and start.

    ``run`` is the simulator's run tag (it keeps ids apart across seeds and starts);
    ``incidents`` may hold ``public_opinion`` incidents, whose appeals join the city's.
    ``rate_scale`` multiplies the background rate (a benchmark's share of appeals).
    """

    def __init__(
        self,
        cfg: CityConfig,
        *,
        seed: int,
        start: datetime,
        run: str,
        incidents: Sequence[Incident] = (),
        appeals: AppealsConfig | None = None,
        rate_scale: float = 1.0,
    ) -> None:
        if rate_scale <= 0:
            raise ValueError(f"rate_scale must be positive, got {rate_scale}")
        self.cfg, self.seed, self.run = cfg, seed, run
        self.start = start.astimezone(UTC)
        self.appeals = load_appeals(cfg) if appeals is None else appeals
        self.incidents = tuple(i for i in incidents if i.kind in CITIZEN_INCIDENTS)
        for inc in self.incidents:
            if inc.category not in self.appeals.categories:
                known = sorted(self.appeals.categories)
                raise ValueError(f"incident {inc.kind}: category {inc.category!r}; known: {known}")
        self._start_ms = round(self.start.timestamp() * 1000)
        self._tz = ZoneInfo(cfg.city.city.timezone)
        self._districts = list(cfg.city.districts)
        self._district_rate = [d.profile.get("complaints_h", 10.0) for d in self._districts]
        # appeals per hour of the whole city at the day's average (rate_scale: a
        # benchmark's busier city)
        self._total_h = sum(self._district_rate) * rate_scale
        self._codes = list(self.appeals.categories)
        self._cat_weights = {d.code: _category_weights(d, self._codes) for d in self._districts}
        self._rated = [c for c in _RATED if c in self.appeals.categories]
        self._channels = [c for c in CHANNEL_WEIGHTS if c in self.appeals.channels]
        self._incident_channels = [c for c in _INCIDENT_CHANNELS if c in self.appeals.channels]
        self._run_no = 100 + int(run, 16) % 900  # three digits of the run tag, for the ids

    def _incident_rate(self, inc: Incident, t: int) -> float:
        """An incident's appeals per hour at ``t``: rising from a trickle to its peak."""
        begin = round(inc.start.timestamp() * 1000) - self._start_ms
        end = round(inc.end.timestamp() * 1000) - self._start_ms
        if not begin <= t < end:
            return 0.0
        return _INCIDENT_PEAK_H * (0.1 + 0.9 * (t - begin) / (end - begin))

    def appeals_in(self, duration: timedelta) -> Iterator[SimAppeal]:
        """Every appeal in ``[start, start + duration)``, in event-time order; each call
        starts afresh. The rate is redrawn every minute (exact for a Poisson process,
        which has no memory), as the simulator does for its feeds."""
        end_ms = round(duration.total_seconds() * 1000)
        rng = random.Random(f"cityvitals-appeals-{self.seed}")
        local = LocalTime(self._tz)
        recent: deque[_Spot] = deque(maxlen=40)
        firsts = deque(
            sorted(
                (round(inc.start.timestamp() * 1000) - self._start_ms, n)
                for n, inc in enumerate(self.incidents)
                if inc.start >= self.start
            )
        )
        seq, t = 0, 0
        while t < end_ms:
            _, clock = local.at(self._start_ms + t)
            parts = [self._total_h * clock.appeals]
            parts += [self._incident_rate(inc, t) for inc in self.incidents]
            rate = sum(parts)
            gap = rng.expovariate(rate / MS_PER_HOUR) if rate > 0 else math.inf
            minute_end = (t // MS_PER_MINUTE + 1) * MS_PER_MINUTE
            cause: int | None
            if firsts and firsts[0][0] < min(t + gap, minute_end):
                t, cause = firsts.popleft()  # an incident's first appeal: at its start
            elif t + gap < minute_end:
                t += int(gap)
                cause = _pick_cause(rng, parts)
            else:
                t = minute_end
                continue
            if t >= end_ms:
                return
            seq += 1
            yield self._appeal(rng, t, seq, cause, recent)

    def _appeal(
        self, rng: random.Random, t: int, seq: int, cause: int | None, recent: deque[_Spot]
    ) -> SimAppeal:
        at = datetime.fromtimestamp((self._start_ms + t) // 1000, UTC)
        if cause is not None:
            return self._incident_appeal(rng, at, seq, self.incidents[cause])
        channel = rng.choices(self._channels, [CHANNEL_WEIGHTS[c] for c in self._channels])[0]
        anger = rng.choices(range(4), _ANGER_MIX)[0]
        rating: Rating | None = None
        if channel == "service_rating":
            d = rng.choices(self._districts, self._district_rate)[0]
            category = rng.choices(self._rated, [_RATED[c] for c in self._rated])[0]
            spot = _Spot(d, rng.choice(d.streets).code, category, "")
            rating = "good" if rng.random() < GOOD_RATING_SHARE else "bad"
            anger = CALM if rating == "good" else max(ANNOYED, anger)
        elif recent and rng.random() < REPEAT_SHARE:
            spot = rng.choice(recent)
            anger = min(EXTREME, anger + 1)  # said before, and still not solved
        else:
            spot = self._new_spot(rng, at)
            recent.append(spot)
        return self._finish(rng, self._draft(rng, channel, spot, at, seq, anger, rating), "")

    def _new_spot(self, rng: random.Random, at: datetime) -> _Spot:
        """A place and category for a new appeal: the district by its rate, the category
        leaned by the district's kind and, at night, towards noise."""
        d = rng.choices(self._districts, self._district_rate)[0]
        street = rng.choice(d.streets)
        weights = self._cat_weights[d.code]
        hour = at.astimezone(self._tz).hour
        if hour >= 21 or hour < 6:  # at night, noise keeps people awake
            pairs = zip(self._codes, weights, strict=True)
            weights = [w * (2.5 if c == "noise" else 1.0) for c, w in pairs]
        category = rng.choices(self._codes, weights)[0]
        landmark = rng.choice(_LANDMARKS.get(category, _PLACES))
        return _Spot(d, street.code, category, street.name_zh + landmark)

    def _draft(
        self,
        rng: random.Random,
        channel: str,
        spot: _Spot,
        at: datetime,
        seq: int,
        anger: int,
        rating: Rating | None = None,
    ) -> Draft:
        title, text = appeal_text(rng, spot.category, spot.place, anger)
        if rng.random() < PERSONAL_SHARE:
            text = with_personal_data(rng, text, spot.district.code)
        local = at.astimezone(self._tz)
        return Draft(
            channel=channel,
            district=spot.district,
            street=spot.street,
            category=self.appeals.categories[spot.category],
            at=at,
            local=local,
            # 17 digits up to a million appeals a run: never the length of a mobile
            # (11) or an ID number (15, 18), so no intake takes an id for one
            number=f"{local:%Y%m%d}{self._run_no}{seq:06d}",
            title=title,
            text=text,
            anger=anger,
            writer=people.full_name(rng),
            rating=rating,
        )

    def _incident_appeal(
        self, rng: random.Random, at: datetime, seq: int, inc: Incident
    ) -> SimAppeal:
        """An appeal about ``inc``: its place and category, angrier as it goes on (no
        threats in its first half)."""
        assert inc.street is not None and inc.category is not None  # check_incident
        d = self.cfg.districts[inc.district]
        street = next(s for s in d.streets if s.code == inc.street)
        landmarks = _LANDMARKS.get(inc.category, _PLACES)
        place = street.name_zh + landmarks[self.incidents.index(inc) % len(landmarks)]
        share = (at - inc.start) / (inc.end - inc.start)
        anger = min(EXTREME, int(share * 3.0) + (rng.random() < 0.4))
        if share < 0.5:
            anger = min(anger, ANGRY)
        channels = self._incident_channels
        channel = rng.choices(channels, [_INCIDENT_CHANNELS[c] for c in channels])[0]
        spot = _Spot(d, street.code, inc.category, place)
        return self._finish(rng, self._draft(rng, channel, spot, at, seq, anger), inc.kind)

    def _finish(self, rng: random.Random, draft: Draft, cause: str) -> SimAppeal:
        channel = self.appeals.channels[draft.channel]
        return SimAppeal(
            channel=draft.channel,
            payload=PAYLOADS[draft.channel](rng, draft, channel),
            district=draft.district.code,
            street=draft.street,
            category=draft.category.code,
            at=draft.at,
            anger=draft.anger,
            cause=cause,
        )


def _pick_cause(rng: random.Random, parts: list[float]) -> int | None:
    """Which process made an appeal: None for the city's, else an incident's index."""
    pick = rng.random() * sum(parts)
    for n, w in enumerate(parts[1:]):
        pick -= w
        if pick < 0:
            return n
    return None
