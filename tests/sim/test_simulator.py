"""The simulated city: deterministic, valid, realistic, and its incidents show."""

from __future__ import annotations

import re
import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import orjson
import pytest
from pydantic import ValidationError

from streams.core.config import CityConfig, Source, load_config
from streams.core.messages import EVENT_TOPICS, CityEvent
from streams.sim.simulator import (
    COMPLAINT_DEPARTMENT,
    DEFAULT_START,
    INCIDENT_INDICATORS,
    MALFORMED_KINDS,
    CitySimulator,
    Incident,
    SimEvent,
    default_incidents,
    write_ground_truth,
)

SHANGHAI = ZoneInfo("Asia/Shanghai")


@pytest.fixture(scope="module")
def cfg() -> CityConfig:
    return load_config()


@pytest.fixture(scope="module")
def default_run(cfg: CityConfig) -> tuple[CitySimulator, list[SimEvent]]:
    """Two hours of the default demo city with its incident script, no dropouts."""
    sim = CitySimulator(cfg, dropout_share=0.0)
    return sim, list(sim.events(timedelta(hours=2)))


def _fingerprint(
    events: Iterable[SimEvent],
) -> list[tuple[str, bytes, bytes, datetime, str | None]]:
    return [(e.topic, e.key, e.value, e.event_time, e.malformed) for e in events]


def _rejection(cfg: CityConfig, ev: SimEvent) -> str | None:
    """What an ingest following the schema and the config would reject ``ev`` for."""
    try:
        city_event = CityEvent.model_validate_json(ev.value)
    except ValidationError as exc:
        types = {err["type"] for err in exc.errors()}
        if "json_invalid" in types:
            return "bad_json"
        if "finite_number" in types:
            return "not_finite"
        if types & {"float_type", "string_type", "datetime_type"}:
            return "wrong_type"
        return f"schema:{sorted(types)}"
    district = cfg.districts.get(city_event.district)
    if district is None:
        return "unknown_district"
    if city_event.street is not None and city_event.street not in {
        s.code for s in district.streets
    }:
        return "unknown_street"
    ind = cfg.indicators.get(city_event.indicator)
    if ind is None:
        return "unknown_indicator"
    if EVENT_TOPICS[ind.source.value] != ev.topic:
        return "wrong_topic"
    canonical = ind.to_canonical(city_event.value, city_event.unit)
    if canonical is None:
        return "unknown_unit"
    if not ind.range[0] <= canonical <= ind.range[1]:
        return "out_of_range"
    if city_event.event_time - ev.event_time > timedelta(days=1):
        return "future_event_time"
    return None


def _readings(
    cfg: CityConfig, events: Iterable[SimEvent]
) -> list[tuple[datetime, str, str | None, str, float, dict[str, object]]]:
    """Valid events as (time, district, street, indicator, canonical value, attributes)."""
    out = []
    for ev in events:
        if ev.malformed is not None:
            continue
        d = orjson.loads(ev.value)
        ind = cfg.indicators[d["indicator"]]
        value = ind.to_canonical(d["value"], d["unit"])
        assert value is not None
        out.append(
            (
                ev.event_time,
                d["district"],
                d["street"],
                d["indicator"],
                value,
                d.get("attributes", {}),
            )
        )
    return out


def _values(
    rows: Iterable[tuple[datetime, str, str | None, str, float, dict[str, object]]],
    indicator: str,
    district: str,
    start: datetime,
    end: datetime,
    street: str | None = None,
) -> list[float]:
    return [
        v
        for t, d, s, i, v, _ in rows
        if i == indicator and d == district and start <= t < end and street in (None, s)
    ]


# --- determinism and shape ------------------------------------------------------


def test_same_seed_start_and_arguments_give_byte_identical_events(cfg: CityConfig) -> None:
    a = CitySimulator(cfg, seed=11, malformed_share=0.05, dropout_share=0.01).take(3000)
    b = CitySimulator(cfg, seed=11, malformed_share=0.05, dropout_share=0.01).take(3000)
    assert _fingerprint(a) == _fingerprint(b)


def test_another_seed_gives_different_events(cfg: CityConfig) -> None:
    a = CitySimulator(cfg, seed=11).take(500)
    b = CitySimulator(cfg, seed=12).take(500)
    assert [e.value for e in a] != [e.value for e in b]


def test_repeated_and_interleaved_runs_of_one_simulator_agree(cfg: CityConfig) -> None:
    sim = CitySimulator(cfg, malformed_share=0.02)
    first = sim.events(timedelta(hours=1))
    second = sim.events(timedelta(hours=1))
    pairs = list(zip(first, second, strict=True))
    assert pairs
    assert all(a == b for a, b in pairs)
    assert _fingerprint(sim.take(len(pairs))) == _fingerprint(a for a, _ in pairs)


def test_shorter_run_is_a_prefix_of_a_longer_run(cfg: CityConfig) -> None:
    sim = CitySimulator(cfg, sensor_scale=0.3)
    short = list(sim.events(timedelta(minutes=10)))
    long = list(sim.events(timedelta(minutes=25)))
    assert len(long) > len(short) > 0
    assert _fingerprint(long[: len(short)]) == _fingerprint(short)


@pytest.mark.parametrize("n", [0, 1, 2500])
def test_take_returns_exactly_n_events(cfg: CityConfig, n: int) -> None:
    assert len(CitySimulator(cfg).take(n)) == n


def test_events_come_in_non_decreasing_event_time_within_the_duration(cfg: CityConfig) -> None:
    sim = CitySimulator(cfg, dropout_share=0.01, malformed_share=0.01)
    events = list(sim.events(timedelta(minutes=40)))
    times = [e.event_time for e in events]
    assert times == sorted(times)
    assert times[0] >= DEFAULT_START
    assert times[-1] < DEFAULT_START + timedelta(minutes=40)
    assert all(t.tzinfo is not None and t.utcoffset() == timedelta(0) for t in times)


def test_start_defaults_to_a_fixed_time_so_runs_never_read_the_clock(cfg: CityConfig) -> None:
    sim = CitySimulator(cfg)
    assert sim.start == DEFAULT_START == datetime(2026, 11, 24, tzinfo=UTC)
    assert sim.take(1)[0].event_time - DEFAULT_START < timedelta(minutes=1)


def test_event_ids_are_unique_and_name_source_and_district(cfg: CityConfig) -> None:
    events = CitySimulator(cfg).take(20_000)
    ids = [orjson.loads(e.value)["event_id"] for e in events]
    assert len(set(ids)) == len(ids)
    assert all(
        re.fullmatch(r"(iot|traffic|fire|sanitation|hotline)-\d{6}-[0-9a-f]{6}-\d{8}", i)
        for i in ids
    )


def test_event_ids_differ_between_runs_with_other_seeds(cfg: CityConfig) -> None:
    a = {orjson.loads(e.value)["event_id"] for e in CitySimulator(cfg, seed=1).take(200)}
    b = {orjson.loads(e.value)["event_id"] for e in CitySimulator(cfg, seed=2).take(200)}
    assert not a & b


# --- validity -------------------------------------------------------------------


def test_every_valid_event_is_a_city_event_the_config_accepts(cfg: CityConfig) -> None:
    events = CitySimulator(cfg, dropout_share=0.01).take(20_000)
    seen_indicators = set()
    for ev in events:
        assert ev.malformed is None
        city_event = CityEvent.model_validate_json(ev.value)
        ind = cfg.indicators[city_event.indicator]
        district = cfg.districts[city_event.district]
        assert ev.topic == EVENT_TOPICS[ind.source.value]
        assert ev.key == city_event.district.encode()
        assert city_event.street in {s.code for s in district.streets}
        canonical = ind.to_canonical(city_event.value, city_event.unit)
        assert canonical is not None, (city_event.indicator, city_event.unit)
        assert ind.range[0] <= canonical <= ind.range[1]
        assert city_event.event_time == ev.event_time
        assert _rejection(cfg, ev) is None
        seen_indicators.add(city_event.indicator)
    # every indicator but the appeals', which are texts on their own topic
    assert seen_indicators == {
        code for code, ind in cfg.indicators.items() if ind.source is not Source.APPEALS
    }


def test_event_time_is_written_in_the_city_time_zone(cfg: CityConfig) -> None:
    ev = CitySimulator(cfg).take(1)[0]
    assert orjson.loads(ev.value)["event_time"].endswith("+08:00")


def test_sensors_have_stable_source_ids_on_a_street_of_their_district(cfg: CityConfig) -> None:
    events = CitySimulator(cfg, incidents=()).take(10_000)
    sources: dict[str, tuple[str, str]] = {}
    for ev in events:
        d = orjson.loads(ev.value)
        ind = cfg.indicators[d["indicator"]]
        if ind.expected_interval_s is None:
            assert d["source"] == f"{ind.code}.{d['district']}"  # a department feed
            continue
        m = re.fullmatch(re.escape(ind.code) + r"\.(\d{9})\.(\d{2})", d["source"])
        assert m is not None, d["source"]
        assert m.group(1) == d["street"]
        assert d["street"] in {s.code for s in cfg.districts[d["district"]].streets}
        assert sources.setdefault(d["source"], (d["district"], d["unit"])) == (
            d["district"],
            d["unit"],
        )
    again = {orjson.loads(e.value)["source"] for e in CitySimulator(cfg, incidents=()).take(10_000)}
    assert set(sources) <= again


def test_sensor_count_follows_profile_and_sensor_scale(cfg: CityConfig) -> None:
    def pm25_sensors(scale: float, district: str) -> int:
        sim = CitySimulator(cfg, incidents=(), sensor_scale=scale, dropout_share=0.0)
        return len(
            {
                d["source"]
                for e in sim.events(timedelta(minutes=2))
                if (d := orjson.loads(e.value))["indicator"] == "iot.pm25"
                and d["district"] == district
            }
        )

    # Gaoxin has 3 streets and profile.sensors 1.5; Beishan 3 streets and 0.8.
    assert pm25_sensors(1.0, "339903") == 4
    assert pm25_sensors(1.0, "339905") == 2
    assert pm25_sensors(2.0, "339903") == 9


def test_gauges_report_at_their_expected_interval(cfg: CityConfig) -> None:
    sim = CitySimulator(cfg, incidents=(), dropout_share=0.0, sensor_scale=0.3)
    last: dict[str, datetime] = {}
    gaps: dict[str, list[float]] = defaultdict(list)
    for ev in sim.events(timedelta(hours=1)):
        d = orjson.loads(ev.value)
        if cfg.indicators[d["indicator"]].expected_interval_s is None:
            continue
        if d["source"] in last:
            gaps[d["indicator"]].append((ev.event_time - last[d["source"]]).total_seconds())
        last[d["source"]] = ev.event_time
    for code, observed in gaps.items():
        interval = cfg.indicators[code].expected_interval_s
        assert interval is not None
        assert min(observed) >= 0.94 * interval, code
        assert max(observed) <= 1.06 * interval, code


def test_dropouts_silence_a_sensor_for_several_intervals(cfg: CityConfig) -> None:
    sim = CitySimulator(cfg, incidents=(), dropout_share=0.02, sensor_scale=0.3)
    last: dict[str, datetime] = {}
    silences = []
    for ev in sim.events(timedelta(hours=2)):
        d = orjson.loads(ev.value)
        interval = cfg.indicators[d["indicator"]].expected_interval_s
        if interval is None:
            continue
        if d["source"] in last:
            missed = (ev.event_time - last[d["source"]]).total_seconds() / interval
            if missed > 1.5:
                silences.append(missed)
        last[d["source"]] = ev.event_time
    assert len(silences) >= 10
    assert all(3.5 <= m <= 9.5 for m in silences)  # 3-8 missed reports, then back


def test_quiet_gauges_stay_inside_their_normal_band(cfg: CityConfig) -> None:
    sim = CitySimulator(cfg, incidents=(), sensor_scale=0.2)
    checked = 0
    for t, _, _, code, value, _ in _readings(cfg, sim.events(timedelta(hours=24))):
        ind = cfg.indicators[code]
        if ind.expected_interval_s is not None:
            assert ind.normal[0] <= value <= ind.normal[1], (t, code, value)
            checked += 1
    assert checked > 50_000


def test_some_sensors_report_in_an_accepted_alternative_unit(cfg: CityConfig) -> None:
    events = CitySimulator(cfg, incidents=()).take(5_000)
    alt: dict[str, set[str]] = defaultdict(set)
    for ev in events:
        d = orjson.loads(ev.value)
        ind = cfg.indicators[d["indicator"]]
        if d["unit"] != ind.unit:
            assert d["unit"] in ind.conversions
            alt[ind.code].add(d["unit"])
    assert len(alt) >= 5
    share = sum(
        orjson.loads(e.value)["unit"] != cfg.indicators[orjson.loads(e.value)["indicator"]].unit
        for e in events
    ) / len(events)
    assert 0.05 < share < 0.35


# --- daily and weekly patterns ----------------------------------------------------


def _mean(cfg: CityConfig, local_start: datetime, indicator: str, minutes: int = 30) -> float:
    sim = CitySimulator(cfg, start=local_start, incidents=(), sensor_scale=0.5)
    rows = _readings(cfg, sim.events(timedelta(minutes=minutes)))
    return statistics.fmean(v for _, _, _, i, v, _ in rows if i == indicator)


def test_rush_hour_slows_traffic_and_raises_congestion_on_weekdays(cfg: CityConfig) -> None:
    night = datetime(2026, 11, 24, 3, 0, tzinfo=SHANGHAI)  # a Tuesday
    rush = datetime(2026, 11, 24, 17, 45, tzinfo=SHANGHAI)
    weekend_rush = datetime(2026, 11, 28, 17, 45, tzinfo=SHANGHAI)  # a Saturday
    assert _mean(cfg, rush, "traffic.speed_kmh") < 0.7 * _mean(cfg, night, "traffic.speed_kmh")
    assert _mean(cfg, rush, "traffic.congestion_index") > 2.5 * _mean(
        cfg, night, "traffic.congestion_index"
    )
    assert _mean(cfg, weekend_rush, "traffic.speed_kmh") > 1.15 * _mean(
        cfg, rush, "traffic.speed_kmh"
    )


def test_pm25_is_higher_in_the_early_morning_than_in_the_afternoon(cfg: CityConfig) -> None:
    morning = datetime(2026, 11, 24, 5, 0, tzinfo=SHANGHAI)
    afternoon = datetime(2026, 11, 24, 16, 0, tzinfo=SHANGHAI)
    assert _mean(cfg, morning, "iot.pm25") > 1.15 * _mean(cfg, afternoon, "iot.pm25")


def test_power_load_peaks_in_the_evening(cfg: CityConfig) -> None:
    evening = datetime(2026, 11, 24, 20, 0, tzinfo=SHANGHAI)
    night = datetime(2026, 11, 24, 3, 0, tzinfo=SHANGHAI)
    assert _mean(cfg, evening, "iot.power_load_pct") > 1.5 * _mean(cfg, night, "iot.power_load_pct")


def test_complaints_come_mostly_in_the_daytime(cfg: CityConfig) -> None:
    def complaints(local_start: datetime) -> int:
        sim = CitySimulator(cfg, start=local_start, incidents=(), sensor_scale=0.1)
        return sum(1 for e in sim.events(timedelta(hours=2)) if e.topic == EVENT_TOPICS["hotline"])

    day = complaints(datetime(2026, 11, 24, 13, 0, tzinfo=SHANGHAI))
    night = complaints(datetime(2026, 11, 24, 2, 0, tzinfo=SHANGHAI))
    assert day > 3 * night > 0


# --- hotline complaints ------------------------------------------------------------

_MOBILE = re.compile(r"(?<!\d)1[3-9]\d{9}(?!\d)")
_EMAIL = re.compile(r"[\w.]+@[\w.]+\.com")
_PLATE = re.compile(r"浙[A-Z][0-9A-Z]{5}")
_RESIDENT_ID = re.compile(r"(?<!\d)\d{17}[\dX](?!\d)")


def _id_checksum_ok(rid: str) -> bool:
    weights = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
    return (
        "10X98765432"[sum(int(c) * w for c, w in zip(rid, weights, strict=False)) % 11] == rid[-1]
    )


def test_complaints_carry_category_chinese_text_and_intensity(cfg: CityConfig) -> None:
    sim = CitySimulator(cfg, incidents=(), sensor_scale=0.1)
    rows = _readings(cfg, sim.events(timedelta(hours=6)))
    complaints = [(v, a) for _, _, _, i, v, a in rows if i == "hotline.complaints"]
    assert len(complaints) > 300
    categories: Counter[str] = Counter()
    for value, attrs in complaints:
        assert value == 1.0
        assert set(attrs) == {"category", "text", "intensity"}
        assert attrs["category"] in COMPLAINT_DEPARTMENT
        assert isinstance(attrs["text"], str) and re.search(r"[\u4e00-\u9fff]{4}", attrs["text"])
        assert isinstance(attrs["intensity"], float) and 0.0 <= attrs["intensity"] <= 1.0
        categories[attrs["category"]] += 1
    assert len(categories) >= 8


def test_some_complaints_contain_personal_data_for_the_ingest_to_remove(cfg: CityConfig) -> None:
    sim = CitySimulator(cfg, incidents=(), sensor_scale=0.1)
    texts = [
        str(a["text"])
        for _, _, _, i, _, a in _readings(cfg, sim.events(timedelta(hours=6)))
        if i == "hotline.complaints"
    ]
    with_pii = [
        t for t in texts if any(p.search(t) for p in (_MOBILE, _EMAIL, _PLATE, _RESIDENT_ID))
    ]
    assert 0.15 < len(with_pii) / len(texts) < 0.6
    assert sum(bool(_MOBILE.search(t)) for t in texts) >= 10
    assert sum(bool(_EMAIL.search(t)) for t in texts) >= 10
    assert sum(bool(_PLATE.search(t)) for t in texts) >= 10
    ids = [m.group(0) for t in texts if (m := _RESIDENT_ID.search(t))]
    assert len(ids) >= 10
    assert all(_id_checksum_ok(i) for i in ids)


# --- malformed events ----------------------------------------------------------------


def test_malformed_share_is_kept_and_every_kind_occurs(cfg: CityConfig) -> None:
    events = CitySimulator(cfg, malformed_share=0.05).take(20_000)
    kinds = Counter(e.malformed for e in events if e.malformed is not None)
    # 1000 expected; binomial sd ~31, so +-160 is five sd.
    assert 840 <= sum(kinds.values()) <= 1160
    assert set(kinds) == set(MALFORMED_KINDS)
    assert min(kinds.values()) >= 60


def test_each_malformed_event_fails_the_check_it_names(cfg: CityConfig) -> None:
    events = CitySimulator(cfg, malformed_share=0.2).take(10_000)
    bad = [e for e in events if e.malformed is not None]
    assert len(bad) > 1500
    for ev in bad:
        assert ev.key, ev
        assert ev.topic in EVENT_TOPICS.values()
        assert _rejection(cfg, ev) == ev.malformed, (ev.malformed, ev.value)


def test_not_finite_events_carry_a_literal_nan_or_infinity(cfg: CityConfig) -> None:
    events = CitySimulator(cfg, malformed_share=0.3).take(5_000)
    nonfinite = [e.value for e in events if e.malformed == "not_finite"]
    assert nonfinite
    assert all(re.search(rb'"value":-?(NaN|Infinity)[,}]', v) for v in nonfinite)


def test_malformed_events_replace_valid_ones_and_leave_the_rest_unchanged(
    cfg: CityConfig,
) -> None:
    clean = CitySimulator(cfg).take(5_000)
    dirty = CitySimulator(cfg, malformed_share=0.1).take(5_000)
    for a, b in zip(clean, dirty, strict=True):
        assert a.event_time == b.event_time
        assert a.topic == b.topic
        if b.malformed is None:
            assert a.value == b.value


def test_no_malformed_events_by_default(cfg: CityConfig) -> None:
    assert all(e.malformed is None for e in CitySimulator(cfg).take(5_000))


# --- incidents ----------------------------------------------------------------------


def test_default_incidents_fall_in_the_first_45_minutes_and_last_8_to_15(cfg: CityConfig) -> None:
    incidents = default_incidents(cfg, DEFAULT_START)
    assert {i.kind for i in incidents} == set(INCIDENT_INDICATORS)
    assert sum(i.kind == "air_quality_episode" for i in incidents) == 2
    assert len({i.district for i in incidents if i.kind == "air_quality_episode"}) == 2
    for inc in incidents:
        assert DEFAULT_START <= inc.start < inc.end <= DEFAULT_START + timedelta(minutes=45)
        assert timedelta(minutes=8) <= inc.end - inc.start <= timedelta(minutes=15)
        district = cfg.districts[inc.district]
        assert inc.street is None or inc.street in {s.code for s in district.streets}
        assert set(inc.indicators) <= set(cfg.indicators)
    fire = next(i for i in incidents if i.kind == "building_fire")
    assert fire.street is not None
    assert set(fire.indicators) >= {
        "fire.smoke_alarms",
        "fire.temperature_c",
        "fire.hydrant_pressure_kpa",
        "traffic.speed_kmh",
        "hotline.complaints",
    }


def test_simulator_uses_the_default_script_unless_given_incidents(cfg: CityConfig) -> None:
    start = datetime(2026, 12, 1, 6, tzinfo=UTC)
    assert CitySimulator(cfg, start=start).incidents == default_incidents(cfg, start)
    assert CitySimulator(cfg, incidents=()).incidents == ()


def test_air_quality_episode_lifts_pm25_far_above_the_hour_before(cfg: CityConfig) -> None:
    begin = DEFAULT_START + timedelta(hours=2)
    episode = [
        Incident.of("air_quality_episode", d, None, begin, timedelta(minutes=15))
        for d in ("339904", "339907")
    ]
    sim = CitySimulator(cfg, incidents=episode, dropout_share=0.0)
    rows = _readings(cfg, sim.events(timedelta(hours=2, minutes=20)))
    plateau = (begin + timedelta(minutes=5), begin + timedelta(minutes=12))
    hour_before = (plateau[0] - timedelta(hours=1), plateau[1] - timedelta(hours=1))
    for inc in episode:
        during = _values(rows, "iot.pm25", inc.district, *plateau)
        before = _values(rows, "iot.pm25", inc.district, *hour_before)
        assert len(during) >= 10 and len(before) >= 10
        assert 150 <= statistics.fmean(during) <= 250
        assert statistics.fmean(during) > 2 * statistics.fmean(before)
        assert max(before) <= cfg.indicators["iot.pm25"].normal[1]
    # Other districts breathe normally.
    others = _values(rows, "iot.pm25", "339905", *plateau)
    assert max(others) <= cfg.indicators["iot.pm25"].normal[1]


def test_building_fire_shows_in_its_street(
    cfg: CityConfig, default_run: tuple[CitySimulator, list[SimEvent]]
) -> None:
    sim, events = default_run
    fire = next(i for i in sim.incidents if i.kind == "building_fire")
    rows = _readings(cfg, events)
    plateau = (fire.start + timedelta(minutes=4), fire.end - timedelta(minutes=3))
    later = (fire.end + timedelta(minutes=20), fire.end + timedelta(minutes=80))
    window = (fire.start, fire.end)
    d, s = fire.district, fire.street

    def mean(code: str, span: tuple[datetime, datetime]) -> float:
        return statistics.fmean(_values(rows, code, d, *span, street=s))

    assert mean("fire.hydrant_pressure_kpa", plateau) < 0.4 * mean(
        "fire.hydrant_pressure_kpa", later
    )
    assert mean("fire.temperature_c", plateau) > 60
    assert mean("fire.temperature_c", later) < 45
    assert mean("traffic.speed_kmh", plateau) < 0.5 * mean("traffic.speed_kmh", later)
    assert sum(_values(rows, "fire.smoke_alarms", d, *window, street=s)) >= 8
    assert sum(_values(rows, "fire.smoke_alarms", d, *later)) <= 2
    fire_calls = [
        a
        for t, dd, ss, i, _, a in rows
        if i == "hotline.complaints" and dd == d and ss == s and window[0] <= t < window[1]
    ]
    assert sum(a["category"] == "fire" for a in fire_calls) >= 8
    # Streets next door see no fire.
    other = next(x.code for x in cfg.districts[d].streets if x.code != s)
    assert max(_values(rows, "fire.temperature_c", d, *plateau, street=other)) < 45


def test_water_main_burst_collapses_pressure_and_brings_no_water_complaints(
    cfg: CityConfig, default_run: tuple[CitySimulator, list[SimEvent]]
) -> None:
    sim, events = default_run
    burst = next(i for i in sim.incidents if i.kind == "water_main_burst")
    rows = _readings(cfg, events)
    plateau = (burst.start + timedelta(minutes=3), burst.end - timedelta(minutes=3))
    before = (burst.start - timedelta(minutes=25), burst.start)
    code = "iot.water_pressure_kpa"
    in_street = statistics.fmean(_values(rows, code, burst.district, *plateau, street=burst.street))
    district = statistics.fmean(_values(rows, code, burst.district, *plateau))
    normal = statistics.fmean(_values(rows, code, burst.district, *before))
    assert in_street < 0.3 * normal
    assert district < 0.6 * normal
    water = [
        a
        for t, d, _, i, _, a in rows
        if i == "hotline.complaints"
        and d == burst.district
        and burst.start <= t < burst.end
        and a["category"] == "water"
    ]
    assert len(water) >= 8


def test_bin_overflow_fills_bins_and_brings_overflow_reports(
    cfg: CityConfig, default_run: tuple[CitySimulator, list[SimEvent]]
) -> None:
    sim, events = default_run
    bins = next(i for i in sim.incidents if i.kind == "bin_overflow")
    rows = _readings(cfg, events)
    plateau = (bins.start + timedelta(minutes=4), bins.end - timedelta(minutes=3))
    fill = _values(rows, "sanitation.bin_fill_pct", bins.district, *plateau)
    assert len(fill) >= 5
    assert 93 <= statistics.fmean(fill) <= 100
    assert (
        sum(_values(rows, "sanitation.overflow_reports", bins.district, bins.start, bins.end)) >= 5
    )


def test_default_incidents_stand_out_in_15_minute_aggregates(
    cfg: CityConfig, default_run: tuple[CitySimulator, list[SimEvent]]
) -> None:
    sim, events = default_run
    rows = _readings(cfg, events)
    primary = {
        "building_fire": "fire.smoke_alarms",
        "air_quality_episode": "iot.pm25",
        "bin_overflow": "sanitation.bin_fill_pct",
        "water_main_burst": "iot.water_pressure_kpa",
    }
    for inc in sim.incidents:
        code = primary[inc.kind]
        ind = cfg.indicators[code]
        span = (inc.end - timedelta(minutes=15), inc.end)  # the rolling view at its fullest
        quiet = (span[0] + timedelta(hours=1), span[1] + timedelta(hours=1))
        now = _values(rows, code, inc.district, *span)
        then = _values(rows, code, inc.district, *quiet)
        if ind.aggregation == "sum":
            assert sum(now) >= 8 and sum(then) <= 2, inc
        elif ind.bad == "high":
            assert statistics.fmean(now) > max(1.5 * statistics.fmean(then), ind.normal[1]), inc
        else:
            assert statistics.fmean(now) < 0.75 * statistics.fmean(then), inc


def test_incidents_outside_the_config_are_refused(cfg: CityConfig) -> None:
    with pytest.raises(ValueError, match="unknown district"):
        CitySimulator(
            cfg,
            incidents=[
                Incident.of("bin_overflow", "000000", None, DEFAULT_START, timedelta(minutes=9))
            ],
        )
    with pytest.raises(ValueError, match="not in"):
        CitySimulator(
            cfg,
            incidents=[
                Incident.of(
                    "building_fire", "339901", "339902001", DEFAULT_START, timedelta(minutes=9)
                )
            ],
        )
    with pytest.raises(ValueError, match="unknown incident kind"):
        CitySimulator(
            cfg,
            incidents=[
                Incident(
                    "meteor",
                    "339901",
                    None,
                    DEFAULT_START,
                    DEFAULT_START + timedelta(minutes=9),
                    (),
                )
            ],
        )


# --- ground truth -------------------------------------------------------------------


def test_ground_truth_is_one_json_line_per_incident_with_the_documented_keys(
    cfg: CityConfig, tmp_path: Path
) -> None:
    incidents = default_incidents(cfg, DEFAULT_START)
    path = tmp_path / "out" / "ground_truth.jsonl"
    assert write_ground_truth(path, incidents) == len(incidents)
    lines = path.read_bytes().splitlines()
    assert len(lines) == len(incidents)
    for line, inc in zip(lines, incidents, strict=True):
        record = orjson.loads(line)
        assert set(record) == {"incident", "district", "street", "start", "end", "indicators"}
        assert record["incident"] == inc.kind
        assert record["district"] == inc.district
        assert record["street"] == inc.street
        assert datetime.fromisoformat(record["start"]) == inc.start
        assert datetime.fromisoformat(record["end"]) == inc.end
        assert datetime.fromisoformat(record["start"]).tzinfo is not None
        assert record["indicators"] == list(inc.indicators)


# --- a large backlog ------------------------------------------------------------------
# (how fast it is generated is a benchmark figure, not a test assertion)


def test_a_200k_event_backlog_comes_in_event_time_order(cfg: CityConfig) -> None:
    events = CitySimulator(cfg, malformed_share=0.01).take(200_000)
    assert len(events) == 200_000
    times = [e.event_time for e in events]
    assert times == sorted(times)


def test_no_event_id_of_any_run_reads_as_personal_data() -> None:
    """The run tag in every event id never runs into the counter as a phone number would
    (a tag ending in "172" made "172-00000016" one): the ingest stage would pseudonymise
    such ids, and a consumer could no longer find its events by them. Every hour of
    forty days of simulated starts, each with a tag of its own."""
    from streams.ingest.deid import Deidentifier

    cfg = load_config()
    deid = Deidentifier(b"test-key-not-for-production")
    start = datetime(2026, 10, 1, tzinfo=UTC)
    tags, scrubbed = set(), []
    for hour in range(24 * 40):
        sim = CitySimulator(cfg, seed=7, start=start + timedelta(hours=hour))
        tags.add(sim.run_tag)
        for ev in sim.take(20):
            event_id = orjson.loads(ev.value).get("event_id")
            if isinstance(event_id, str) and deid.scrub_text(event_id)[1]:
                scrubbed.append(event_id)
    assert len(tags) == 24 * 40
    assert scrubbed == []
