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
with the reason it should get.

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
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from itertools import islice
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import orjson

from streams.core.config import CityConfig, District, Indicator
from streams.core.messages import EVENT_TOPICS
from streams.kafka.publish import produce_events

DEFAULT_START = datetime(2026, 11, 24, tzinfo=UTC)

MALFORMED_KINDS: tuple[str, ...] = (
    "bad_json",
    "wrong_type",
    "not_finite",
    "unknown_district",
    "unknown_indicator",
    "out_of_range",
    "future_event_time",
    "unknown_unit",
)

#: The indicators each incident kind moves (the ground truth's ``indicators``).
INCIDENT_INDICATORS: dict[str, tuple[str, ...]] = {
    "building_fire": (
        "fire.smoke_alarms",
        "fire.temperature_c",
        "fire.hydrant_pressure_kpa",
        "fire.calls_119",
        "traffic.speed_kmh",
        "hotline.complaints",
    ),
    "air_quality_episode": ("iot.pm25",),
    "bin_overflow": ("sanitation.bin_fill_pct", "sanitation.overflow_reports"),
    "water_main_burst": ("iot.water_pressure_kpa", "hotline.complaints"),
}

#: Hotline complaint category -> the department the hotline office hands it to.
COMPLAINT_DEPARTMENT: dict[str, str] = {
    "traffic": "traffic",
    "noise": "environment",
    "environment": "environment",
    "sanitation": "sanitation",
    "water": "water",
    "power": "power",
    "gas": "gas",
    "fire": "fire",
    "public_security": "public_security",
    "property": "command_centre",
}

_MS_PER_H = 3_600_000
_MIN = 60_000


@dataclass(frozen=True)
class Incident:
    """One scripted incident and its ground truth."""

    kind: str
    district: str
    street: str | None
    start: datetime
    end: datetime
    indicators: tuple[str, ...]

    @classmethod
    def of(
        cls,
        kind: str,
        district: str,
        street: str | None,
        start: datetime,
        duration: timedelta,
    ) -> Incident:
        """An incident of ``kind`` affecting the indicators that kind usually moves."""
        return cls(kind, district, street, start, start + duration, INCIDENT_INDICATORS[kind])

    def to_json(self) -> dict[str, Any]:
        """The ground-truth record written as one JSON line."""
        return {
            "incident": self.kind,
            "district": self.district,
            "street": self.street,
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "indicators": list(self.indicators),
        }


@dataclass(frozen=True, slots=True)
class SimEvent:
    """One produced record; ``malformed`` names the rejection the ingest should give it."""

    topic: str
    key: bytes
    value: bytes
    event_time: datetime
    malformed: str | None = None


def write_ground_truth(path: Path, incidents: Iterable[Incident]) -> int:
    """Write incidents as JSON lines (one :meth:`Incident.to_json` each); return the count."""
    lines = [orjson.dumps(i.to_json()) + b"\n" for i in incidents]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(lines))
    return len(lines)


def default_incidents(cfg: CityConfig, start: datetime) -> tuple[Incident, ...]:
    """The demo script: four incidents within the first 45 simulated minutes.

    Districts are picked from their profiles (densest old town burns, the two
    dirtiest districts get the smog), and the affected street is always a
    district's first street because that one always has sensors.
    """
    ds = list(cfg.city.districts)
    used: set[str] = set()

    def pick(key: str, n: int = 1) -> list[District]:
        fresh = [d for d in ds if d.code not in used] or ds
        chosen = sorted(fresh, key=lambda d: -d.profile.get(key, 0.0))[:n]
        used.update(d.code for d in chosen)
        return chosen

    def make(kind: str, d: District, street: str | None, at_min: float, dur_min: float) -> Incident:
        inds = tuple(i for i in INCIDENT_INDICATORS[kind] if i in cfg.indicators)
        begin = start + timedelta(minutes=at_min)
        return Incident(kind, d.code, street, begin, begin + timedelta(minutes=dur_min), inds)

    fire_d = pick("density")[0]
    smog = pick("pm25_base", 2)
    bins_d = pick("complaints_h")[0]
    water_d = pick("water_pressure")[0]
    out = [make("building_fire", fire_d, fire_d.streets[0].code, 5, 12)]
    out += [make("air_quality_episode", d, None, 10, 15) for d in smog]
    out.append(make("bin_overflow", bins_d, None, 18, 14))
    out.append(make("water_main_burst", water_d, water_d.streets[0].code, 30, 11))
    return tuple(out)


# --- time of day -------------------------------------------------------------


def _bump(h: float, centre: float, width: float) -> float:
    """A daily Gaussian bump around ``centre`` o'clock, wrapping at midnight."""
    d = abs(h - centre)
    d = min(d, 24.0 - d)
    return math.exp(-0.5 * (d / width) ** 2)


@dataclass(frozen=True, slots=True)
class _Clock:
    """The daily and weekly pattern at one local minute (cached per minute)."""

    hour: float
    weekend: bool
    day: float  # daytime activity 0..1, lowest at 03:00, highest at 15:00
    rush: float  # rush-hour strength, 0..~1
    traffic: float  # traffic load 0..~1.05
    smog: float  # PM2.5 multiplier: stagnant night and morning air
    demand: float  # water demand peaks (morning and evening)
    evening: float  # evening power peak

    @staticmethod
    def at(local_minute: int) -> _Clock:
        h = (local_minute % 1440) / 60.0
        weekend = ((local_minute // 1440) + 3) % 7 >= 5  # 1970-01-01 was a Thursday
        day = 0.5 - 0.5 * math.cos(2 * math.pi * (h - 3.0) / 24.0)
        rush = _bump(h, 8.0, 0.9) + _bump(h, 18.0, 1.0)
        if weekend:
            rush *= 0.3
            traffic = (0.12 + 0.42 * day + rush * 0.5) * 0.85
        else:
            traffic = 0.12 + 0.45 * day + 0.55 * rush
        return _Clock(
            hour=h,
            weekend=weekend,
            day=day,
            rush=rush,
            traffic=traffic,
            smog=1.0 + 0.15 * math.cos(2 * math.pi * (h - 5.0) / 24.0),
            demand=_bump(h, 7.5, 1.2) + _bump(h, 19.5, 1.5),
            evening=_bump(h, 20.0, 2.0),
        )


# --- sensors and feeds --------------------------------------------------------

Model = Callable[[_Clock, float], float]  # (clock, hours since start) -> canonical value


@dataclass(slots=True)
class _Effect:
    """How one incident moves one stream: ramped intensity times a per-street strength."""

    start_ms: int
    end_ms: int
    ramp_in: int
    ramp_out: int
    strength: float
    target: float  # kind-specific level (e.g. the episode's PM2.5 peak)
    apply: Callable[[float, float, float], float]  # (value, intensity, target) -> value
    boost_h: float = 0.0  # extra events per hour for Poisson feeds
    street: str | None = None  # where boosted Poisson events happen
    kind: str = ""

    def intensity(self, t: int) -> float:
        if t < self.start_ms or t >= self.end_ms:
            return 0.0
        x = min(1.0, (t - self.start_ms) / self.ramp_in, (self.end_ms - t) / self.ramp_out)
        return self.strength * x * x * (3.0 - 2.0 * x)  # smoothstep: no step in the aggregates


@dataclass(slots=True)
class _Stream:
    """One sensor (periodic) or one district's department feed (Poisson)."""

    ind: Indicator
    topic: str
    prefix: str
    district: District
    street: str | None
    source_id: str
    unit: str
    factor: float
    offset: float
    decimals: int
    location: dict[str, float] | None
    model: Model
    sigma: float
    bias: float = 0.0
    phi: float = 0.0
    ar_sigma: float = 0.0
    interval_ms: int = 0  # 0 = Poisson feed
    phase_ms: int = 0
    rate_h: Callable[[_Clock], float] | None = None
    effects: list[_Effect] = field(default_factory=list)
    street_locations: dict[str, dict[str, float]] = field(default_factory=dict)  # feeds


def _round_unit(decimals: int, factor: float) -> int:
    """Decimals that keep the same precision after converting to an alternative unit."""
    return max(0, decimals + max(0, math.ceil(math.log10(abs(factor)))))


# Per-indicator (sensors per street, white noise, AR(1) drift sigma, decimals).
_SENSOR_SHAPE: dict[str, tuple[float, float, float, int]] = {
    "traffic.speed_kmh": (2.0, 3.0, 1.5, 1),
    "traffic.congestion_index": (1.0, 0.2, 0.12, 2),
    "traffic.occupancy_pct": (1.0, 1.5, 0.8, 1),
    "fire.temperature_c": (1.0, 0.3, 0.2, 1),
    "fire.hydrant_pressure_kpa": (1.0, 6.0, 2.0, 1),
    "iot.pm25": (1.0, 3.0, 2.0, 1),
    "iot.noise_db": (1.0, 1.5, 0.8, 1),
    "iot.water_pressure_kpa": (1.0, 6.0, 2.0, 1),
    "iot.water_level_m": (1.0, 0.02, 0.01, 3),
    "iot.gas_ppm": (0.5, 0.6, 0.3, 2),
    "iot.power_load_pct": (0.5, 1.5, 0.8, 1),
    "iot.crowd_density": (1.0, 0.08, 0.04, 2),
    "sanitation.bin_fill_pct": (2.0, 1.5, 0.0, 1),
}

# Poisson feeds: base events per hour per district (before the daily pattern).
_FEED_RATE: dict[str, float] = {
    "fire.smoke_alarms": 0.25,
    "fire.calls_119": 0.4,
    "traffic.accidents": 0.35,
    "sanitation.overflow_reports": 0.4,
    "sanitation.collection_delay_min": 1.5,
}

# (kind, indicator) -> (apply, spill-over strength to the district's other streets).
_Apply = Callable[[float, float, float], float]
_GAUGE_EFFECTS: dict[tuple[str, str], tuple[_Apply, float]] = {
    ("building_fire", "fire.temperature_c"): (lambda v, e, _t: v + 78.0 * e, 0.0),
    ("building_fire", "fire.hydrant_pressure_kpa"): (lambda v, e, _t: v * (1 - 0.78 * e), 0.0),
    ("building_fire", "traffic.speed_kmh"): (lambda v, e, _t: v * (1 - 0.72 * e), 0.0),
    ("air_quality_episode", "iot.pm25"): (lambda v, e, t: v + e * (t - v), 1.0),
    ("bin_overflow", "sanitation.bin_fill_pct"): (lambda v, e, t: v + e * (t - v), 1.0),
    ("water_main_burst", "iot.water_pressure_kpa"): (lambda v, e, _t: v * (1 - 0.85 * e), 0.5),
}
# How fast each kind of incident sets in and fades, as shares of its duration:
# smog builds and clears slowly, a main bursts at once, full bins are emptied at once.
_RAMPS: dict[str, tuple[float, float]] = {
    "building_fire": (0.2, 0.2),
    "air_quality_episode": (0.25, 0.25),
    "bin_overflow": (0.1, 0.05),
    "water_main_burst": (0.08, 0.2),
}
# (kind, indicator) -> extra events per hour in the incident's street at full intensity.
_FEED_BOOST: dict[tuple[str, str], float] = {
    ("building_fire", "fire.smoke_alarms"): 80.0,
    ("building_fire", "fire.calls_119"): 45.0,
    ("building_fire", "hotline.complaints"): 90.0,
    ("bin_overflow", "sanitation.overflow_reports"): 60.0,
    ("water_main_burst", "hotline.complaints"): 100.0,
}


def _gauge_model(code: str, ind: Indicator, d: District, rng: random.Random) -> tuple[Model, float]:
    """The canonical baseline of one sensor, and its calibration bias."""
    p = d.profile
    tl = p.get("traffic_load", 1.0)
    stl = math.sqrt(tl)
    wp = p.get("water_pressure", 380.0)
    if code == "traffic.speed_kmh":
        free = rng.uniform(56.0, 68.0)  # arterial vs. side road
        return (lambda c, _h: free - 28.0 * c.traffic * stl), 0.0
    if code == "traffic.congestion_index":
        return (lambda c, _h: tl * (0.4 + 2.2 * c.traffic)), rng.uniform(-0.1, 0.1)
    if code == "traffic.occupancy_pct":
        return (lambda c, _h: 4.0 + 24.0 * c.traffic * stl), rng.uniform(-1.0, 1.0)
    if code == "fire.temperature_c":
        # Some monitors sit indoors (warmer), some outside; a mild November day.
        return (lambda c, _h: 11.0 + 5.0 * math.sin(2 * math.pi * (c.hour - 9.0) / 24.0)), (
            rng.uniform(-1.0, 9.0)
        )
    if code == "fire.hydrant_pressure_kpa":
        return (lambda c, _h: 0.92 * wp * (1 - 0.05 * c.demand)), rng.uniform(-0.04, 0.04) * wp
    if code == "iot.pm25":
        base = p.get("pm25_base", 35.0)
        return (lambda c, _h: base * c.smog + 0.08 * base * c.rush), rng.uniform(-3.0, 3.0)
    if code == "iot.noise_db":
        return (lambda c, _h: 40.0 + 16.0 * c.day + 5.0 * c.rush + 3.0 * (tl - 1)), (
            rng.uniform(-2.0, 2.0)
        )
    if code == "iot.water_pressure_kpa":
        return (lambda c, _h: wp * (1 - 0.07 * c.demand)), rng.uniform(-0.05, 0.05) * wp
    if code == "iot.water_level_m":
        tide = zlib.crc32(d.code.encode()) % 628 / 100  # one tide per district, period 12.42 h
        return (lambda _c, h: 1.4 + 0.35 * math.sin(2 * math.pi * h / 12.42 + tide)), (
            rng.uniform(-0.2, 0.2)
        )
    if code == "iot.gas_ppm":
        return (lambda _c, _h: 3.0), rng.uniform(0.0, 2.0)
    if code == "iot.power_load_pct":
        dens = p.get("density", 1.0)
        return (lambda c, _h: 38.0 + 12.0 * c.day + 24.0 * c.evening + 5.0 * (dens - 1)), (
            rng.uniform(-3.0, 3.0)
        )
    if code == "iot.crowd_density":
        dens = p.get("density", 1.0)
        return (
            lambda c, _h: dens * (0.08 + 0.7 * c.day + 0.2 * c.rush) * (1.1 if c.weekend else 1.0)
        ), rng.uniform(-0.05, 0.05)
    if code == "sanitation.bin_fill_pct":
        # Sawtooth: filled at a steady rate, emptied twice a day by the round.
        first, per_h = rng.uniform(4.0, 7.0), rng.uniform(3.5, 5.2)
        return (lambda c, _h: 5.0 + per_h * ((c.hour - first) % 12.0)), 0.0
    # An indicator the simulator has no model for: sit comfortably inside its normal band.
    lo, hi = ind.normal
    level = {"high": 0.35, "low": 0.65, "both": 0.5}[ind.bad]
    return (lambda _c, _h: lo + level * (hi - lo)), 0.0


def _complaints_rate(d: District) -> Callable[[_Clock], float]:
    per_h = d.profile.get("complaints_h", 10.0)
    # Citizens call in the daytime; the average over a day stays per_h.
    return lambda c: per_h * (0.25 + 1.5 * c.day) * (0.85 if c.weekend else 1.0)


def _feed_rate(code: str, d: District) -> Callable[[_Clock], float]:
    if code == "hotline.complaints":
        return _complaints_rate(d)
    base = _FEED_RATE.get(code, 0.5)
    if code == "traffic.accidents":
        tl = d.profile.get("traffic_load", 1.0)
        return lambda c: base * tl * (0.4 + 1.6 * c.traffic)
    return lambda c: base


# --- hotline complaint text ---------------------------------------------------

_PLACES = (
    "幸福里小区",
    "锦绣花园",
    "农贸市场",
    "人民路口",
    "地铁站B出口",
    "实验小学门口",
    "新华路88号",
    "滨河公园",
    "星光广场",
    "和平新村3幢",
    "文化路与建设路交叉口",
    "第一人民医院东门",
)
_COMPLAINTS: dict[str, tuple[float, tuple[str, ...]]] = {
    "traffic": (
        0.35,
        (
            "{p}附近早晚高峰堵得很厉害，红绿灯配时不合理，希望交警部门调整。",
            "{p}门口有辆车牌号为{plate}的车长期违停，占用了人行道。",
            "{p}路口的信号灯坏了，车辆乱成一团，很危险。",
        ),
    ),
    "noise": (
        0.45,
        (
            "{p}附近工地晚上十一点以后还在施工，噪音太大，严重影响休息。",
            "{p}楼下的烧烤店每天营业到凌晨两点，吵得睡不着。",
            "{p}广场舞音响声音太大，希望有关部门管一管。",
        ),
    ),
    "sanitation": (
        0.35,
        (
            "{p}的垃圾桶满出来好几天了，一直没人清运，臭味很大。",
            "{p}路边有人乱倒建筑垃圾，影响通行。",
        ),
    ),
    "environment": (
        0.45,
        (
            "{p}附近的工厂排放刺鼻气味，晚上特别明显。",
            "{p}旁边的河道发黑发臭，请环保部门来看看。",
        ),
    ),
    "water": (
        0.5,
        (
            "{p}自来水发黄，有异味，不敢饮用。",
            "{p}水压很低，楼上几层基本没水用。",
        ),
    ),
    "power": (
        0.45,
        (
            "{p}今天下午无故停电两次，也没有提前通知。",
            "{p}的路灯坏了一个多星期，晚上走路很不安全。",
        ),
    ),
    "gas": (0.6, ("{p}楼道里有一股燃气味，担心漏气，请燃气公司尽快检查。",)),
    "fire": (
        0.55,
        (
            "{p}消防通道被杂物堵住了，出了事消防车根本进不来。",
            "{p}楼道里停满电动车在充电，存在很大火灾隐患。",
        ),
    ),
    "public_security": (0.5, ("{p}晚上经常有人聚集喝酒闹事，希望加强巡逻。",)),
    "property": (0.4, ("{p}物业不作为，电梯坏了半个月一直没修。",)),
}
_INCIDENT_COMPLAINTS: dict[str, tuple[str, float, tuple[str, ...]]] = {
    "building_fire": (
        "fire",
        0.85,
        (
            "{p}有浓烟冒出，好像着火了，火势不小，请赶快派人！",
            "{p}那栋楼起火了，烟很大，楼里可能还有人！",
            "{p}着火了，路口被堵死，消防车进不来！",
        ),
    ),
    "water_main_burst": (
        "water",
        0.65,
        (
            "{p}突然停水了，家里一滴水都没有，什么时候能恢复？",
            "{p}路面往外冒水，好像水管爆了，水都漫到马路上了。",
            "{p}整个小区停水，老人孩子没法做饭，太着急了！",
        ),
    ),
}
_PII = (
    "联系电话：{mobile}。",
    "我的手机号{mobile}，请尽快回复。",
    "处理结果请发到我的邮箱{email}。",
    "肇事车辆车牌号{plate}。",
    "本人身份证号{rid}，希望跟进处理。",
)
_ANGRY = ("已经反映三次了，到底有没有人管？！", "实在忍无可忍了！", "再不处理我就向媒体反映！")
_MAIL_USERS = ("zhangwei", "wangfang", "li.na", "liuyang", "chenjing", "zhaolei", "huang_min")
_MAIL_DOMAINS = ("163.com", "126.com", "qq.com", "sina.com", "foxmail.com")
_PLATE_CHARS = "0123456789ABCDEFGHJKLMNPQRSTUVWXYZ"
_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)


def _resident_id(rng: random.Random, region: str) -> str:
    """An 18-digit resident ID with a valid GB 11643 check digit."""
    born = f"{rng.randint(1950, 2005)}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}"
    body = f"{region[:6]:0<6}{born}{rng.randint(0, 999):03d}"
    check = "10X98765432"[sum(int(c) * w for c, w in zip(body, _ID_WEIGHTS, strict=True)) % 11]
    return body + check


def _complaint_text(
    rng: random.Random, category: str, template: str, place: str, district: str
) -> str:
    plate = "浙" + rng.choice("ABCDFGHJ") + "".join(rng.choice(_PLATE_CHARS) for _ in range(5))
    text = template.format(p=place, plate=plate)
    if rng.random() < 0.3:  # some callers leave personal data the ingest must remove
        mobile = f"1{rng.choice('3456789')}{rng.randrange(10**9):09d}"
        email = f"{rng.choice(_MAIL_USERS)}{rng.randrange(100)}@{rng.choice(_MAIL_DOMAINS)}"
        text += rng.choice(_PII).format(
            mobile=mobile, email=email, plate=plate, rid=_resident_id(rng, district)
        )
    return text


def _normals(seed: int) -> Iterator[float]:
    """Standard normals drawn by numpy in blocks: per-reading random.gauss is the hot spot."""
    gen = np.random.Generator(np.random.PCG64([seed, 0x5EED]))
    while True:
        yield from gen.standard_normal(16384).tolist()


# --- the simulator --------------------------------------------------------------


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
            default_incidents(cfg, self.start) if incidents is None else tuple(incidents)
        )
        for inc in self.incidents:
            self._check_incident(inc)
        self._start_ms = round(self.start.timestamp() * 1000)
        self._tz = ZoneInfo(cfg.city.city.timezone)
        # Run tag in every event id: ids stay unique across runs with other seeds or starts.
        self._run = hashlib.blake2b(
            f"{seed}|{self.start.isoformat()}".encode(), digest_size=3
        ).hexdigest()
        self._streams = self._layout()

    def _check_incident(self, inc: Incident) -> None:
        d = self.cfg.districts.get(inc.district)
        if inc.kind not in INCIDENT_INDICATORS:
            raise ValueError(
                f"unknown incident kind {inc.kind!r}; known: {list(INCIDENT_INDICATORS)}"
            )
        if d is None:
            raise ValueError(f"incident {inc.kind}: unknown district {inc.district!r}")
        if inc.street is not None and inc.street not in {s.code for s in d.streets}:
            raise ValueError(f"incident {inc.kind}: street {inc.street!r} is not in {inc.district}")
        if inc.start.tzinfo is None or inc.end.tzinfo is None or inc.end <= inc.start:
            raise ValueError(f"incident {inc.kind}: needs aware start < end")

    # -- layout: which sensors exist, where, and how they behave (fixed per seed)

    def _layout(self) -> list[_Stream]:
        rng = random.Random(f"cityvitals-layout-{self.seed}")
        streams: list[_Stream] = []
        n_d = len(self.cfg.city.districts)
        for di, d in enumerate(self.cfg.city.districts):
            # A made-up geography around Linjiang's centre, districts on a ring.
            ang = 2 * math.pi * di / n_d
            d_lat, d_lon = 30.25 + 0.07 * math.sin(ang), 120.17 + 0.08 * math.cos(ang)
            street_pos = {
                s.code: (d_lat + rng.uniform(-0.015, 0.015), d_lon + rng.uniform(-0.015, 0.015))
                for s in d.streets
            }
            for ind in self.cfg.catalogue.indicators:
                if ind.expected_interval_s is None:
                    streams.append(self._feed(ind, d, street_pos))
                else:
                    streams.extend(self._sensors(ind, d, street_pos, rng))
        for st in streams:
            self._attach_effects(st)
        return streams

    def _sensors(
        self,
        ind: Indicator,
        d: District,
        street_pos: dict[str, tuple[float, float]],
        rng: random.Random,
    ) -> list[_Stream]:
        if ind.code == "iot.water_level_m" and not d.profile.get("river", 0.0):
            return []  # no river gauge away from the river
        per_street, sigma, ar_sigma, decimals = _SENSOR_SHAPE.get(ind.code, (1.0, 0.0, 0.0, 2))
        if ind.code not in _SENSOR_SHAPE:
            sigma = 0.03 * (ind.normal[1] - ind.normal[0])
        n = max(
            1,
            round(len(d.streets) * per_street * d.profile.get("sensors", 1.0) * self.sensor_scale),
        )
        interval_ms = round(ind.expected_interval_s * 1000) if ind.expected_interval_s else _MIN
        alt_units = sorted(ind.conversions)
        out = []
        for k in range(n):
            street = d.streets[k % len(d.streets)].code  # the first street always has one
            model, bias = _gauge_model(ind.code, ind, d, rng)
            unit, factor, offset, dec = ind.unit, 1.0, 0.0, decimals
            if alt_units and rng.random() < 0.2:  # older devices report in another unit
                unit = rng.choice(alt_units)
                conv = ind.conversions[unit]
                factor, offset = conv.factor, conv.offset
                dec = _round_unit(decimals, factor)
            lat, lon = street_pos[street]
            out.append(
                _Stream(
                    ind=ind,
                    topic=EVENT_TOPICS[ind.source.value],
                    prefix=f"{ind.source.value}-{d.code}-{self._run}-",
                    district=d,
                    street=street,
                    source_id=f"{ind.code}.{street}.{k + 1:02d}",
                    unit=unit,
                    factor=factor,
                    offset=offset,
                    decimals=dec,
                    location={
                        "lat": round(lat + rng.uniform(-0.004, 0.004), 5),
                        "lon": round(lon + rng.uniform(-0.004, 0.004), 5),
                    },
                    model=model,
                    sigma=sigma,
                    bias=bias,
                    phi=0.9,
                    ar_sigma=ar_sigma,
                    interval_ms=interval_ms,
                    phase_ms=rng.randrange(interval_ms),
                )
            )
        return out

    def _feed(
        self, ind: Indicator, d: District, street_pos: dict[str, tuple[float, float]]
    ) -> _Stream:
        return _Stream(
            ind=ind,
            topic=EVENT_TOPICS[ind.source.value],
            prefix=f"{ind.source.value}-{d.code}-{self._run}-",
            district=d,
            street=None,
            source_id=f"{ind.code}.{d.code}",
            unit=ind.unit,
            factor=1.0,
            offset=0.0,
            decimals=1,
            location=None,
            street_locations={
                s: {"lat": round(la, 5), "lon": round(lo, 5)} for s, (la, lo) in street_pos.items()
            },
            model=lambda _c, _h: 1.0,  # unused: a feed's value is drawn per event
            sigma=0.0,
            rate_h=_feed_rate(ind.code, d),
        )

    def _attach_effects(self, st: _Stream) -> None:
        code = st.ind.code
        for n, inc in enumerate(self.incidents):
            if inc.district != st.district.code or code not in inc.indicators:
                continue
            start_ms = round(inc.start.timestamp() * 1000) - self._start_ms
            end_ms = round(inc.end.timestamp() * 1000) - self._start_ms
            dur = end_ms - start_ms
            frac_in, frac_out = _RAMPS[inc.kind]
            ramp_in, ramp_out = max(_MIN, int(dur * frac_in)), max(_MIN, int(dur * frac_out))
            # The episode's own peak level, fixed per incident so all its sensors agree.
            peak = random.Random(f"cityvitals-incident-{self.seed}-{n}").random()
            target = {"air_quality_episode": 150.0 + 100.0 * peak}.get(inc.kind, 97.5)
            if st.interval_ms:
                gauge = _GAUGE_EFFECTS.get((inc.kind, code))
                if gauge is None:
                    continue
                apply, spill = gauge
                strength = 1.0 if inc.street in (None, st.street) else spill
                if strength > 0:
                    st.effects.append(
                        _Effect(start_ms, end_ms, ramp_in, ramp_out, strength, target, apply)
                    )
            else:
                boost = _FEED_BOOST.get((inc.kind, code))
                if boost is not None:
                    st.effects.append(
                        _Effect(
                            start_ms,
                            end_ms,
                            ramp_in,
                            ramp_out,
                            1.0,
                            target,
                            lambda v, _e, _t: v,
                            boost_h=boost,
                            street=inc.street,
                            kind=inc.kind,
                        )
                    )

    # -- generation

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
        end_ms = round(duration.total_seconds() * 1000)
        rng = random.Random(f"cityvitals-values-{self.seed}")
        # Separate streams of randomness: changing the malformed or dropout share
        # leaves all other values as they were.
        bad_rng = random.Random(f"cityvitals-malformed-{self.seed}")
        drop_rng = random.Random(f"cityvitals-dropout-{self.seed}")
        normal = _normals(self.seed)
        streams = self._streams
        # Per-stream state lives here, not on the streams: two generators never interfere.
        ticks = [0] * len(streams)  # periodic: emissions scheduled so far
        due = [False] * len(streams)  # Poisson: the queued heap entry is an event
        drift = [0.0] * len(streams)  # periodic: AR(1) drift
        heap: list[tuple[int, int]] = []
        for i, st in enumerate(streams):
            heap.append((st.phase_ms if st.interval_ms else 0, i))
        heapq.heapify(heap)

        clocks: dict[int, _Clock] = {}
        offsets: dict[int, tuple[int, timezone]] = {}
        start, start_ms = self.start, self._start_ms
        dumps = orjson.dumps
        malformed_share, dropout_share = self.malformed_share, self.dropout_share
        seq = 0
        while heap:
            t, i = heap[0]
            if t >= end_ms:
                return
            st = streams[i]
            abs_ms = start_ms + t
            hour = abs_ms // _MS_PER_H
            off = offsets.get(hour)
            if off is None:
                delta = datetime.fromtimestamp(abs_ms / 1000, self._tz).utcoffset()
                assert delta is not None
                off = (int(delta.total_seconds() * 1000), timezone(delta))
                offsets[hour] = off
            minute = (abs_ms + off[0]) // _MIN
            clock = clocks.get(minute)
            if clock is None:
                if len(clocks) > 4096:
                    clocks.clear()
                clock = clocks[minute] = _Clock.at(minute)

            if st.interval_ms:
                k = ticks[i] = ticks[i] + 1
                nxt = st.phase_ms + k * st.interval_ms
                if dropout_share and drop_rng.random() < dropout_share:
                    skip = drop_rng.randint(3, 8)  # the sensor goes silent for a few intervals
                    ticks[i] += skip
                    nxt += skip * st.interval_ms
                # Small transmission jitter, less than an interval: per-sensor order holds.
                heapq.heapreplace(heap, (nxt + int(rng.random() * st.interval_ms * 0.05), i))
                body = self._gauge(st, t, clock, normal, drift, i)
            else:
                emit = due[i]
                rate = st.rate_h(clock) if st.rate_h else 0.0
                for eff in st.effects:
                    rate += eff.boost_h * eff.intensity(t)
                gap = rng.expovariate(rate / _MS_PER_H) if rate > 0 else math.inf
                # Rates change with the clock and incidents: redraw at least every minute
                # (exact for a Poisson process, which has no memory).
                nxt_min = (t // _MIN + 1) * _MIN
                if t + gap < nxt_min:
                    due[i] = True
                    heapq.heapreplace(heap, (t + int(gap), i))
                else:
                    due[i] = False
                    heapq.heapreplace(heap, (nxt_min, i))
                if not emit:
                    continue
                body = self._feed_event(st, t, clock, rng)
            seq += 1
            utc = start + timedelta(milliseconds=t)
            body["event_id"] = f"{st.prefix}{seq:08d}"
            body["event_time"] = utc.astimezone(off[1])
            key = st.district.code.encode()
            if malformed_share and bad_rng.random() < malformed_share:
                kind = bad_rng.choice(MALFORMED_KINDS)
                value, key = self._malform(kind, body, st, bad_rng)
                yield SimEvent(st.topic, key, value, utc, kind)
            else:
                yield SimEvent(st.topic, key, dumps(body), utc, None)

    def _gauge(
        self,
        st: _Stream,
        t: int,
        clock: _Clock,
        normal: Iterator[float],
        drift: list[float],
        i: int,
    ) -> dict[str, Any]:
        ind = st.ind
        # AR(1) drift: real sensors wander slowly rather than scatter independently.
        ar = drift[i] = st.phi * drift[i] + st.ar_sigma * next(normal)
        v = st.model(clock, t / _MS_PER_H) + st.bias + ar + st.sigma * next(normal)
        busy = 0.0
        for eff in st.effects:
            e = eff.intensity(t)
            if e > 0.0:
                v = eff.apply(v, e, eff.target)
                busy = max(busy, e)
        lo, hi = ind.range
        if busy > 0.01:
            v += busy * 2.0 * st.sigma * next(normal)  # incidents are noisier than quiet days
        else:
            # Quiet times stay inside the normal band: alerts should have a cause.
            lo, hi = ind.normal
            margin = 0.01 * (hi - lo)
            lo, hi = lo + margin, hi - margin
        v = min(max(v, lo), hi)
        return self._body(st, st.street, v)

    def _body(self, st: _Stream, street: str | None, canonical: float) -> dict[str, Any]:
        value = round(canonical, st.decimals)
        unit = st.unit
        if st.factor != 1.0 or st.offset != 0.0:
            value = round((canonical - st.offset) / st.factor, st.decimals)
            back = value * st.factor + st.offset
            if not st.ind.range[0] <= back <= st.ind.range[1]:  # rounding crossed a bound
                value, unit = round(canonical, 1), st.ind.unit
        body: dict[str, Any] = {
            "event_id": "",
            "source": st.source_id,
            "district": st.district.code,
            "street": street,
            "indicator": st.ind.code,
            "value": value,
            "unit": unit,
            "event_time": None,
        }
        location = st.location or st.street_locations.get(street or "")
        if location is not None:
            body["location"] = location
        return body

    def _feed_event(self, st: _Stream, t: int, clock: _Clock, rng: random.Random) -> dict[str, Any]:
        streets = st.district.streets
        street: str | None = None
        cause = ""
        # Which process produced this event: the background rate or an incident?
        base = st.rate_h(clock) if st.rate_h else 0.0
        parts = [(eff, eff.boost_h * eff.intensity(t)) for eff in st.effects]
        pick = rng.random() * (base + sum(w for _, w in parts))
        for eff, w in parts:
            if pick < w:
                street, cause = eff.street, eff.kind
                break
            pick -= w
        if street is None:
            street = streets[rng.randrange(len(streets))].code
        code = st.ind.code
        value: float = 1.0
        if code == "fire.smoke_alarms" and cause:
            value = float(rng.randint(1, 3))  # several detectors in the burning building
        elif code == "sanitation.collection_delay_min":
            value = min(28.0, rng.lognormvariate(math.log(8.0), 0.6))
        body = self._body(st, street, value)
        if code == "hotline.complaints":
            body["attributes"] = self._complaint(st, street, cause, clock, rng)
        return body

    def _complaint(
        self, st: _Stream, street: str, cause: str, clock: _Clock, rng: random.Random
    ) -> dict[str, Any]:
        street_name = next(s.name_zh for s in st.district.streets if s.code == street)
        place = street_name + rng.choice(_PLACES)
        if cause in _INCIDENT_COMPLAINTS:
            category, level, templates = _INCIDENT_COMPLAINTS[cause]
        else:
            h = clock.hour
            weights = [
                1.0 + 2.0 * clock.rush,  # traffic
                2.5 if h >= 21 or h < 6 else 0.8,  # noise: at night
                1.0,  # sanitation
                0.6,  # environment
                0.6,  # water
                0.4,  # power
                0.2,  # gas
                0.3,  # fire
                0.5,  # public_security
                0.8,  # property
            ]
            category = rng.choices(list(_COMPLAINTS), weights)[0]
            level, templates = _COMPLAINTS[category]
        text = _complaint_text(rng, category, rng.choice(templates), place, st.district.code)
        intensity = level + rng.gauss(0.0, 0.08)
        if rng.random() < 0.15:
            text += rng.choice(_ANGRY)
            intensity += 0.25
        return {
            "category": category,
            "text": text,
            "intensity": round(min(1.0, max(0.0, intensity)), 2),
        }

    # -- malformed events

    def _malform(
        self, kind: str, body: dict[str, Any], st: _Stream, rng: random.Random
    ) -> tuple[bytes, bytes]:
        """Bytes that the ingest must reject for reason ``kind``, and the record key."""
        key = st.district.code.encode()
        ind = st.ind
        if kind == "bad_json":
            raw = orjson.dumps(body)
            style = rng.randrange(3)
            if style == 0:  # cut off mid-message: a strict prefix of an object never parses
                return raw[: rng.randrange(1, len(raw) - 1)], key
            if style == 1:  # binary garbage in the middle
                cut = rng.randrange(1, len(raw) - 1)
                return raw[:cut] + b"\xff\xfe\x00" + raw[cut:], key
            return raw.replace(b'"event_id"', b"event_id", 1), key  # an unquoted key
        if kind == "wrong_type":
            if rng.random() < 0.5:
                body["value"] = str(body["value"])
            else:
                body["event_time"] = body["event_time"].timestamp()
            return orjson.dumps(body), key
        if kind == "not_finite":
            body["value"] = "__VALUE__"
            literal = rng.choice((b"NaN", b"Infinity", b"-Infinity"))
            return orjson.dumps(body).replace(b'"__VALUE__"', literal, 1), key
        if kind == "unknown_district":
            code = f"99{rng.randrange(10000):04d}"
            while code in self.cfg.districts:
                code = f"99{rng.randrange(10000):04d}"
            body["district"] = code
            body["street"] = None  # so the district check is the one that fails
            return orjson.dumps(body), code.encode()
        if kind == "unknown_indicator":
            prefix = ind.source.value
            name = rng.choice(("radiation_usv", "parking_free", "humidity_pct", "vibration_mm"))
            code = f"{prefix}.{name}"
            while code in self.cfg.indicators:
                code += "_x"
            body["indicator"] = code
            return orjson.dumps(body), key
        if kind == "out_of_range":
            lo, hi = ind.range
            span = hi - lo
            body["value"] = round(
                hi + span * rng.uniform(0.1, 2.0)
                if rng.random() < 0.5
                else lo - span * rng.uniform(0.1, 2.0),
                2,
            )
            body["unit"] = ind.unit
            return orjson.dumps(body), key
        if kind == "future_event_time":
            body["event_time"] = body["event_time"] + timedelta(
                days=rng.randint(2, 30), minutes=rng.randrange(1440)
            )
            return orjson.dumps(body), key
        if kind == "unknown_unit":
            accepted = {ind.unit, *ind.conversions}
            unit = rng.choice(("mmHg", "furlong/fortnight", "ppb", "kn", "gal", "lux", "Pa·s"))
            while unit in accepted:
                unit += "?"
            body["unit"] = unit
            return orjson.dumps(body), key
        raise ValueError(f"unknown malformed kind {kind!r}")


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
