"""The simulated city's appeals: every channel's payload is one its adapter accepts, the
mix and the day's rhythm are a city's, the texts carry emotion and personal data, and
the odour incident shows in appeals only. Without ``appeals=True`` nothing changes."""

from __future__ import annotations

import re
import statistics
from collections import Counter
from collections.abc import Iterable
from dataclasses import replace
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import orjson
import pytest

from streams.core.config import CityConfig, load_config
from streams.core.messages import APPEALS_TOPIC
from streams.ingest.deid import Deidentifier
from streams.sim import people
from streams.sim.appeals import SimAppeal
from streams.sim.incidents import Incident, check_incident, default_incidents
from streams.sim.simulator import DEFAULT_START, CitySimulator, SimEvent
from streams.voice.appeals import Appeal, AppealsConfig, load_appeals
from streams.voice.channels import AppealIntake, ServiceRatingSettings

KEY = b"test-key-not-for-production-0123456789"
SHANGHAI = ZoneInfo("Asia/Shanghai")
ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)


@pytest.fixture(scope="module")
def cfg() -> CityConfig:
    return load_config()


@pytest.fixture(scope="module")
def catalogue(cfg: CityConfig) -> AppealsConfig:
    return load_appeals(cfg)


@pytest.fixture(scope="module")
def sim(cfg: CityConfig) -> CitySimulator:
    return CitySimulator(cfg, appeals=True)


@pytest.fixture(scope="module")
def day(sim: CitySimulator) -> list[SimAppeal]:
    """One simulated day of appeals, with the demo script's odour incident."""
    assert sim.appeals is not None
    return list(sim.appeals.appeals_in(timedelta(days=1)))


@pytest.fixture(scope="module")
def accepted(catalogue: AppealsConfig, day: list[SimAppeal]) -> list[Appeal]:
    intake = AppealIntake(catalogue, Deidentifier(KEY))
    return [intake.accept(a.channel, a.payload) for a in day]


@pytest.fixture(scope="module")
def odour(sim: CitySimulator) -> Incident:
    (incident,) = [i for i in sim.incidents if i.kind == "public_opinion"]
    return incident


def _fingerprint(
    events: Iterable[SimEvent],
) -> list[tuple[str, bytes, bytes, datetime, str | None]]:
    return [(e.topic, e.key, e.value, e.event_time, e.malformed) for e in events]


def _native_id(a: SimAppeal) -> str:
    key = {
        "hotline_12345": "order_no",
        "mayor_mailbox": "letter_id",
        "message_board": "post_id",
        "service_rating": "rating_id",
        "wechat": "MsgId",
    }[a.channel]
    return str(a.payload[key])


def _texts(day: list[SimAppeal]) -> str:
    return "\n".join(orjson.dumps(a.payload).decode() for a in day)


# --- opt-in: the default stream is what it was ---------------------------------------


def test_without_appeals_the_stream_is_the_same_and_holds_no_appeal(cfg: CityConfig) -> None:
    default = CitySimulator(cfg, seed=11, malformed_share=0.05).take(30_000)
    off = CitySimulator(cfg, seed=11, malformed_share=0.05, appeals=False).take(30_000)
    assert _fingerprint(default) == _fingerprint(off)
    assert not [e for e in default if e.topic == APPEALS_TOPIC]
    assert CitySimulator(cfg).appeals is None
    assert CitySimulator(cfg).incidents == default_incidents(cfg, DEFAULT_START)
    assert all(i.kind != "public_opinion" for i in default_incidents(cfg, DEFAULT_START))


def test_with_appeals_every_other_event_stays_as_it_was(cfg: CityConfig) -> None:
    """The appeals draw on randomness of their own, and the odour incident moves no
    sensor: take the appeals out and the stream is the one without them."""
    hour = timedelta(hours=1)  # the odour incident runs from minute 15 to 45
    with_appeals = list(CitySimulator(cfg, seed=5, appeals=True).events(hour))
    others = [e for e in with_appeals if e.topic != APPEALS_TOPIC]
    assert _fingerprint(others) == _fingerprint(CitySimulator(cfg, seed=5).events(hour))
    assert len(with_appeals) - len(others) > 100
    times = [e.event_time for e in with_appeals]
    assert times == sorted(times)


def test_appeal_records_are_envelopes_keyed_by_district(sim: CitySimulator) -> None:
    records = [e for e in sim.events(timedelta(minutes=30)) if e.topic == APPEALS_TOPIC]
    assert records
    assert sim.appeals is not None
    for ev, appeal in zip(records, sim.appeals.appeals_in(timedelta(minutes=30)), strict=True):
        envelope = orjson.loads(ev.value)
        assert set(envelope) == {"channel", "payload"}
        assert envelope == {"channel": appeal.channel, "payload": appeal.payload}
        assert ev.key == appeal.district.encode()
        assert ev.event_time == appeal.at and ev.malformed is None


# --- every payload fits its channel ---------------------------------------------------


def test_every_payload_is_accepted_for_its_channel_as_what_it_says(
    day: list[SimAppeal], accepted: list[Appeal]
) -> None:
    assert len(day) > 2000
    for sim_appeal, appeal in zip(day, accepted, strict=True):
        assert appeal.channel == sim_appeal.channel
        assert appeal.appeal_id == f"{sim_appeal.channel}:{_native_id(sim_appeal)}"
        assert (appeal.district, appeal.street) == (sim_appeal.district, sim_appeal.street)
        assert appeal.category == sim_appeal.category
        assert appeal.event_time == sim_appeal.at
        assert (appeal.rating is not None) == (sim_appeal.channel == "service_rating")
    assert len({a.appeal_id for a in accepted}) == len(accepted)


def test_every_channel_and_every_category_appear_in_a_day(
    catalogue: AppealsConfig, accepted: list[Appeal]
) -> None:
    assert {a.channel for a in accepted} == set(catalogue.channels)
    assert {a.category for a in accepted} == set(catalogue.categories)


def test_the_hotline_takes_most_appeals_and_the_mailbox_fewest(accepted: list[Appeal]) -> None:
    ranked = [channel for channel, _ in Counter(a.channel for a in accepted).most_common()]
    assert ranked == ["hotline_12345", "wechat", "message_board", "service_rating", "mayor_mailbox"]


def test_few_appeals_come_at_night_and_most_late_morning_and_evening(
    day: list[SimAppeal],
) -> None:
    by_hour = Counter(a.at.astimezone(SHANGHAI).hour for a in day)
    night = statistics.mean(by_hour[h] for h in range(1, 6))
    late_morning = statistics.mean(by_hour[h] for h in (10, 11))
    afternoon = statistics.mean(by_hour[h] for h in (15, 16))
    evening = statistics.mean(by_hour[h] for h in (19, 20))
    assert night * 4 < late_morning
    assert afternoon < late_morning and afternoon < evening
    assert night * 3 < evening


def test_an_industrial_district_complains_more_of_smell_and_air(
    cfg: CityConfig, day: list[SimAppeal]
) -> None:
    (industrial,) = [d.code for d in cfg.city.districts if "industrial" in d.kind]

    def share(appeals: list[SimAppeal]) -> float:
        return sum(a.category in {"odour", "air"} for a in appeals) / len(appeals)

    everyday = [a for a in day if not a.cause]
    there = [a for a in everyday if a.district == industrial]
    assert share(there) > 1.5 * share(everyday)


# --- what citizens write ------------------------------------------------------------


def test_texts_run_from_calm_to_extreme(day: list[SimAppeal], accepted: list[Appeal]) -> None:
    levels = Counter(a.anger for a in day)
    assert set(levels) == {0, 1, 2, 3}
    assert 0.03 < levels[3] / len(day) < 0.15 < levels[0] / len(day)
    written = [
        (s, a.text) for s, a in zip(day, accepted, strict=True) if s.channel != "service_rating"
    ]
    calm = [text for s, text in written if s.anger == 0]
    angry = [text for s, text in written if s.anger == 2]
    extreme = [text for s, text in written if s.anger == 3]
    assert not [t for t in calm if "！！" in t or "政府" in t]
    assert all(re.search("非常|太|实在|特别|根本", t) for t in angry)
    assert all(re.search("没人管|不管|受不了|到底", t) or "气愤" in t for t in angry)
    assert all("！！" in t for t in extreme)
    threats = [t for t in extreme if re.search("政府门口|政府大门口|上访", t)]
    assert len(threats) == len(extreme)


def test_service_ratings_use_the_grades_of_appeals_yaml(
    catalogue: AppealsConfig, day: list[SimAppeal], accepted: list[Appeal]
) -> None:
    grades = catalogue.channels["service_rating"].settings_as(ServiceRatingSettings)
    rated = [(s, a) for s, a in zip(day, accepted, strict=True) if s.channel == "service_rating"]
    assert {s.payload["grade"] for s, _ in rated} == {*grades.good, *grades.bad}
    for s, a in rated:
        assert a.rating == ("good" if s.payload["grade"] in grades.good else "bad")
        assert (a.rating == "good") == (s.anger == 0)
    good = sum(a.rating == "good" for _, a in rated) / len(rated)
    assert 0.55 < good < 0.75


def test_some_appeals_repeat_a_place_and_category_on_other_channels(
    accepted: list[Appeal],
) -> None:
    first = {a.appeal_id: a for a in accepted}
    repeats = [a for a in accepted if a.repeat_of is not None]
    assert len(repeats) > len(accepted) // 2
    for a in repeats:
        run = first[str(a.repeat_of)]
        assert (run.district, run.street, run.category) == (a.district, a.street, a.category)
    assert any(first[str(a.repeat_of)].channel != a.channel for a in repeats)


def _valid_id(number: str) -> bool:
    total = sum(int(c) * w for c, w in zip(number[:17], ID_WEIGHTS, strict=True))
    return number[17] == "10X98765432"[total % 11]


def test_personal_data_is_in_the_raw_payloads(day: list[SimAppeal]) -> None:
    """The de-identification's input: each kind of identifier, as citizens write it."""
    raw = _texts(day)
    mobiles = re.findall(r"(?<![0-9])1[3-9][0-9]{9}(?![0-9])", raw)
    ids = re.findall(r"(?<![0-9])[1-9][0-9]{16}[0-9X](?![0-9])", raw)
    plates = re.findall(r"浙[A-HJ][A-HJ-NP-Z0-9]{5}", raw)
    emails = re.findall(r"[a-z_.]+[0-9]*@[a-z0-9]+\.com", raw)
    addresses = re.findall(r"(?:路|新村|小区)[0-9]{1,3}号[0-9]单元[0-9]{3,4}", raw)
    names = re.findall("(?:我叫|联系人：)([\u4e00-\u9fff]{2,3})，", raw)
    titled = re.findall("([\u4e00-\u9fff])(?:先生|女士)", raw)
    assert min(map(len, (mobiles, ids, plates, emails, addresses, names, titled))) >= 20
    assert all(_valid_id(n) for n in ids)
    assert all(n[0] in people.SURNAMES and n[1:] in people.GIVEN_NAMES for n in names)
    assert set(titled) <= set(people.SURNAMES)
    in_text = [a for a in day if re.search(r"1[3-9][0-9]{9}|@", _body(a))]
    assert 0.05 < len(in_text) / len(day) < 0.3
    hotline = [a.payload for a in day if a.channel == "hotline_12345"]
    assert all(p["caller_name"][0] in people.SURNAMES for p in hotline)
    assert all(re.fullmatch("1[3-9][0-9]{9}", p["caller_phone"]) for p in hotline)


def _body(a: SimAppeal) -> str:
    p = a.payload
    return str(p.get("content") or p.get("body") or p.get("Content") or p.get("comment") or "")


def test_no_number_or_address_of_the_payloads_reaches_an_appeal(
    day: list[SimAppeal], accepted: list[Appeal]
) -> None:
    """What the intake keeps: none of the writers' numbers, mail, plates, house numbers
    or names."""
    found = re.compile(r"[0-9]{11}|[0-9]{17}[0-9X]|@|号[0-9]+单元|浙[A-Z][A-Z0-9]{5}")
    left = [a.text for a in accepted if found.search(a.text)]
    assert left == []
    cued = re.compile("(?:我叫|联系人：)([\u4e00-\u9fff]{2,3})，|我是([\u4e00-\u9fff])先生")
    named = 0
    for sim_appeal, appeal in zip(day, accepted, strict=True):
        for match in cued.finditer(_body(sim_appeal)):
            name = match.group(1) or match.group(2)
            named += 1
            assert f"{name}，" not in appeal.text and f"是{name}先生" not in appeal.text
    assert named > 50


# --- the odour incident: citizens only ------------------------------------------------


def test_the_odour_incident_is_scripted_only_with_appeals(
    cfg: CityConfig, catalogue: AppealsConfig, odour: Incident
) -> None:
    with_appeals = default_incidents(cfg, DEFAULT_START, appeals=True)
    assert with_appeals == (*default_incidents(cfg, DEFAULT_START), odour)
    record = odour.to_json()
    assert record == {
        "incident": "public_opinion",
        "district": odour.district,
        "street": odour.street,
        "start": (DEFAULT_START + timedelta(minutes=15)).isoformat(),
        "end": (DEFAULT_START + timedelta(minutes=45)).isoformat(),
        "indicators": [],
        "category": "odour",
        "department": catalogue.categories["odour"].department,
    }
    district = cfg.districts[odour.district]
    assert odour.street in {s.code for s in district.streets}
    others = with_appeals[:-1]
    assert odour.district not in {i.district for i in others}
    assert all("department" not in i.to_json() for i in others)


def test_the_incidents_appeals_share_its_place_and_category_from_its_start(
    catalogue: AppealsConfig, day: list[SimAppeal], odour: Incident
) -> None:
    run = [a for a in day if a.cause == "public_opinion"]
    intake = AppealIntake(catalogue, Deidentifier(KEY))
    appeals = [intake.accept(a.channel, a.payload) for a in run]
    assert len(appeals) >= 15
    assert {(a.district, a.street, a.category) for a in appeals} == {
        (odour.district, odour.street, "odour")
    }
    assert appeals[0].event_time == odour.start
    assert all(odour.start <= a.event_time < odour.end for a in appeals)
    assert len({a.channel for a in appeals}) >= 3
    assert appeals[0].repeat_of is None
    assert {a.repeat_of for a in appeals[1:]} == {appeals[0].appeal_id}
    assert {a.department for a in appeals} == {odour.department}
    middle = odour.start + (odour.end - odour.start) / 2
    assert sum(a.event_time >= middle for a in appeals) > sum(
        a.event_time < middle for a in appeals
    )


def test_the_incidents_appeals_grow_angrier(day: list[SimAppeal], odour: Incident) -> None:
    run = [a for a in day if a.cause == "public_opinion"]
    third = len(run) // 3
    early, late = run[:third], run[-third:]
    assert statistics.mean(a.anger for a in late) > statistics.mean(a.anger for a in early) + 1
    middle = odour.start + (odour.end - odour.start) / 2
    assert all(a.anger < 3 for a in run if a.at < middle)

    def bangs(appeals: list[SimAppeal]) -> float:
        return statistics.mean(_body(a).count("！") for a in appeals)

    assert bangs(late) > bangs(early)


def test_a_citizen_only_incident_needs_a_street_and_a_category_and_moves_no_indicator(
    cfg: CityConfig, odour: Incident
) -> None:
    check_incident(cfg, odour)
    wrong = (
        replace(odour, category=None),
        replace(odour, street=None),
        replace(odour, indicators=("iot.pm25",)),
    )
    for incident in wrong:
        with pytest.raises(ValueError, match="needs a street and an appeal category"):
            check_incident(cfg, incident)
    with pytest.raises(ValueError, match="category 'smog'"):
        CitySimulator(cfg, incidents=(replace(odour, category="smog"),), appeals=True)


# --- determinism ----------------------------------------------------------------------


def test_appeals_are_the_same_for_a_seed_and_differ_between_seeds(cfg: CityConfig) -> None:
    def records(seed: int) -> list[tuple[bytes, bytes, datetime]]:
        sim = CitySimulator(cfg, seed=seed, incidents=(), sensor_scale=0.1, appeals=True)
        return [
            (e.key, e.value, e.event_time)
            for e in sim.events(timedelta(hours=3))
            if e.topic == APPEALS_TOPIC
        ]

    first = records(3)
    assert len(first) > 100
    assert records(3) == first
    assert records(4) != first
