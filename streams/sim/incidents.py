"""Scripted incidents: what each kind moves, the demo's script, the ground truth, and the
effect of an incident on each sensor and feed of its district.

An incident moves a gauge's values (a fire heats its street, a burst main drops the
pressure) or adds events to a department feed (smoke alarms, 119 calls, complaints),
with an intensity that ramps in and out as the kind of incident does. A citizen-only
incident (``public_opinion``: a cluster of appeals about one place and category that no
sensor shows) moves no indicator: only the simulated appeals
(:mod:`streams.sim.appeals`) show it.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from streams.core.config import CityConfig, District
from streams.sim.clock import MS_PER_MINUTE

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
#: Incidents only citizens report: they move no indicator, only appeals show them.
CITIZEN_INCIDENTS = frozenset({"public_opinion"})


@dataclass(frozen=True)
class Incident:
    """One scripted incident and its ground truth."""

    kind: str
    district: str
    street: str | None
    start: datetime
    end: datetime
    indicators: tuple[str, ...]
    #: a citizen-only incident's appeal category and the department that owns it
    category: str | None = None
    department: str | None = None

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
        record: dict[str, Any] = {
            "incident": self.kind,
            "district": self.district,
            "street": self.street,
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "indicators": list(self.indicators),
        }
        if self.category is not None:
            record |= {"category": self.category, "department": self.department}
        return record


def write_ground_truth(path: Path, incidents: Iterable[Incident]) -> int:
    """Write incidents as JSON lines (one :meth:`Incident.to_json` each); return the count."""
    lines = [orjson.dumps(i.to_json()) + b"\n" for i in incidents]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(lines))
    return len(lines)


def default_incidents(
    cfg: CityConfig, start: datetime, *, appeals: bool = False
) -> tuple[Incident, ...]:
    """The demo script: four incidents within the first 45 simulated minutes; with
    ``appeals``, a fifth that only citizens report (:func:`odour_complaints`).

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
    if appeals:
        out.append(odour_complaints(cfg, pick("complaints_h")[0], start + timedelta(minutes=15)))
    return tuple(out)


def odour_complaints(cfg: CityConfig, district: District, start: datetime) -> Incident:
    """A smell in one street of ``district`` that no sensor measures: for 30 minutes from
    ``start`` citizens complain about it on several channels, more and angrier as it
    goes on. It is in the district's last street, away from the other incidents' first
    streets; its owner is the odour category's department in ``config/appeals.yaml``."""
    from streams.voice.appeals import load_appeals  # read only when appeals are on

    owner = load_appeals(cfg).categories["odour"].department
    street = district.streets[-1].code
    end = start + timedelta(minutes=30)
    return Incident("public_opinion", district.code, street, start, end, (), "odour", owner)


def check_incident(cfg: CityConfig, inc: Incident) -> None:
    """Raise ValueError unless ``inc`` is of a known kind, in a street of a district of
    the city, with an aware start before its end."""
    d = cfg.districts.get(inc.district)
    if inc.kind not in INCIDENT_INDICATORS and inc.kind not in CITIZEN_INCIDENTS:
        known = [*INCIDENT_INDICATORS, *sorted(CITIZEN_INCIDENTS)]
        raise ValueError(f"unknown incident kind {inc.kind!r}; known: {known}")
    if inc.kind in CITIZEN_INCIDENTS and (
        inc.category is None or inc.street is None or inc.indicators
    ):
        raise ValueError(
            f"incident {inc.kind}: needs a street and an appeal category, and moves no indicator"
        )
    if d is None:
        raise ValueError(f"incident {inc.kind}: unknown district {inc.district!r}")
    if inc.street is not None and inc.street not in {s.code for s in d.streets}:
        raise ValueError(f"incident {inc.kind}: street {inc.street!r} is not in {inc.district}")
    if inc.start.tzinfo is None or inc.end.tzinfo is None or inc.end <= inc.start:
        raise ValueError(f"incident {inc.kind}: needs aware start < end")


@dataclass(slots=True)
class Effect:
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


def effects(
    incidents: Sequence[Incident],
    seed: int,
    start_ms: int,
    code: str,
    district: str,
    street: str | None,
    *,
    periodic: bool,
) -> list[Effect]:
    """The effects of ``incidents`` on one stream of indicator ``code``: a gauge in
    ``street`` (``periodic``) or a district's feed."""
    out: list[Effect] = []
    for n, inc in enumerate(incidents):
        if inc.district != district or code not in inc.indicators:
            continue
        begin_ms = round(inc.start.timestamp() * 1000) - start_ms
        end_ms = round(inc.end.timestamp() * 1000) - start_ms
        dur = end_ms - begin_ms
        frac_in, frac_out = _RAMPS[inc.kind]
        ramp_in = max(MS_PER_MINUTE, int(dur * frac_in))
        ramp_out = max(MS_PER_MINUTE, int(dur * frac_out))
        # The episode's own peak level, fixed per incident so all its sensors agree.
        peak = random.Random(f"cityvitals-incident-{seed}-{n}").random()
        target = {"air_quality_episode": 150.0 + 100.0 * peak}.get(inc.kind, 97.5)
        if periodic:
            gauge = _GAUGE_EFFECTS.get((inc.kind, code))
            if gauge is None:
                continue
            apply, spill = gauge
            strength = 1.0 if inc.street in (None, street) else spill
            if strength > 0:
                out.append(Effect(begin_ms, end_ms, ramp_in, ramp_out, strength, target, apply))
        else:
            boost = _FEED_BOOST.get((inc.kind, code))
            if boost is not None:
                out.append(
                    Effect(
                        begin_ms,
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
    return out
