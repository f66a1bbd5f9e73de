"""The simulated city's layout: which sensors and feeds exist, where, and how they behave.

Every gauge (speed loops, PM2.5 monitors, water-main pressure, bins, ...) is a
stream of its own, with a baseline model from its district's ``profile``, a
calibration bias, noise, a drift and, for some older devices, another unit;
every count indicator is one Poisson feed per district whose rate follows the
district and the time of day. All of it is fixed by the seed.
"""

from __future__ import annotations

import math
import random
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from streams.core.config import CityConfig, District, Indicator, Source
from streams.core.messages import EVENT_TOPICS
from streams.sim.clock import MS_PER_MINUTE, Clock
from streams.sim.incidents import Effect, Incident, effects

Model = Callable[[Clock, float], float]  # (clock, hours since start) -> canonical value


@dataclass(slots=True)
class Stream:
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
    rate_h: Callable[[Clock], float] | None = None
    effects: list[Effect] = field(default_factory=list)
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


def _complaints_rate(d: District) -> Callable[[Clock], float]:
    per_h = d.profile.get("complaints_h", 10.0)
    # Citizens call in the daytime; the average over a day stays per_h.
    return lambda c: per_h * (0.25 + 1.5 * c.day) * (0.85 if c.weekend else 1.0)


def _feed_rate(code: str, d: District) -> Callable[[Clock], float]:
    if code == "hotline.complaints":
        return _complaints_rate(d)
    base = _FEED_RATE.get(code, 0.5)
    if code == "traffic.accidents":
        tl = d.profile.get("traffic_load", 1.0)
        return lambda c: base * tl * (0.4 + 1.6 * c.traffic)
    return lambda c: base


def city_layout(
    cfg: CityConfig,
    *,
    seed: int,
    run: str,
    sensor_scale: float,
    incidents: Sequence[Incident],
    start_ms: int,
) -> list[Stream]:
    """Every stream of the city, each with the incidents' effects on it. ``run`` tags
    the event ids; ``start_ms`` is the start of the simulation, since the epoch."""
    rng = random.Random(f"cityvitals-layout-{seed}")
    streams: list[Stream] = []
    n_d = len(cfg.city.districts)
    for di, d in enumerate(cfg.city.districts):
        # A made-up geography around Linjiang's centre, districts on a ring.
        ang = 2 * math.pi * di / n_d
        d_lat, d_lon = 30.25 + 0.07 * math.sin(ang), 120.17 + 0.08 * math.cos(ang)
        street_pos = {
            s.code: (d_lat + rng.uniform(-0.015, 0.015), d_lon + rng.uniform(-0.015, 0.015))
            for s in d.streets
        }
        for ind in cfg.catalogue.indicators:
            if ind.source is Source.APPEALS:  # appeals are texts, not department feeds
                continue
            prefix = f"{ind.source.value}-{d.code}-{run}-"
            if ind.expected_interval_s is None:
                streams.append(_feed(ind, d, street_pos, prefix))
            else:
                streams.extend(_sensors(ind, d, street_pos, rng, prefix, sensor_scale))
    for st in streams:
        st.effects = effects(
            incidents,
            seed,
            start_ms,
            st.ind.code,
            st.district.code,
            st.street,
            periodic=bool(st.interval_ms),
        )
    return streams


def _sensors(
    ind: Indicator,
    d: District,
    street_pos: dict[str, tuple[float, float]],
    rng: random.Random,
    prefix: str,
    sensor_scale: float,
) -> list[Stream]:
    """The gauges of one indicator in one district, spread over its streets."""
    if ind.code == "iot.water_level_m" and not d.profile.get("river", 0.0):
        return []  # no river gauge away from the river
    per_street, sigma, ar_sigma, decimals = _SENSOR_SHAPE.get(ind.code, (1.0, 0.0, 0.0, 2))
    if ind.code not in _SENSOR_SHAPE:
        sigma = 0.03 * (ind.normal[1] - ind.normal[0])
    n = max(
        1,
        round(len(d.streets) * per_street * d.profile.get("sensors", 1.0) * sensor_scale),
    )
    interval_ms = (
        round(ind.expected_interval_s * 1000) if ind.expected_interval_s else MS_PER_MINUTE
    )
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
            Stream(
                ind=ind,
                topic=EVENT_TOPICS[ind.source.value],
                prefix=prefix,
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
    ind: Indicator, d: District, street_pos: dict[str, tuple[float, float]], prefix: str
) -> Stream:
    """One district's department feed of a count indicator."""
    return Stream(
        ind=ind,
        topic=EVENT_TOPICS[ind.source.value],
        prefix=prefix,
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
