"""Public-opinion warnings: appeals of one category gathering in a street, surging in a
district, rating a service badly, or angry, raise ``public_opinion`` alerts to the
category's owner."""

from __future__ import annotations

import math
import random
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml

from streams.alerting.detection import DETECTION_STATE, DetectionContext, DistrictDetection
from streams.alerting.public_opinion import (
    CLUSTER_RULE,
    DISTRICT_RULE,
    SPREAD,
    SPREAD_RULE,
    _Hours,
    unlikely_count,
)
from streams.alerting.rules import load_thresholds
from streams.core.config import ConfigError, load_config
from streams.core.messages import AlertEvent, AlertKind, AlertStatus, Grade
from streams.kafka.worker import opinion_categories
from streams.state.windows import ClosedWindow
from streams.voice.appeals import load_appeals

CFG = load_config()
CATEGORIES = opinion_categories(load_appeals(CFG))
T0 = 1_795_000_000.0 - 1_795_000_000.0 % 60
DISTRICT, STREET = "339908", "339908003"

# the settings every test below states, whatever config/thresholds.yaml ships
OPINION = {
    "window": "60m",
    "cluster": {"IV": 4, "III": 6, "II": 9, "I": 14},
    "cluster_chance": None,
    "surge": {"IV": 3, "III": 5, "II": 8},
    "surge_min": 6,
    "baseline_half_life": "1d",
    "baseline_floor": 1,
    "warmup": "2h",
    "hourly_prior": "2h",
    "bad_ratings": {"IV": 0.3, "III": 0.5},
    "ratings_min": 10,
    "extreme_share": 0.5,
    "extreme_min": 3,
    "hold": "30m",
    "informed": "command_centre",
    "samples": 3,
}


def context(tmp_path: Path, **changes: Any) -> DetectionContext:
    doc = yaml.safe_load((CFG.directory / "thresholds.yaml").read_text("utf-8"))
    doc["public_opinion"] = {**OPINION, **changes}
    path = tmp_path / "thresholds.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True), "utf-8")
    rules = load_thresholds(CFG, path)
    return DetectionContext(
        CFG, rules, anomaly=None, forecast_horizon_s=0, opinion_categories=CATEGORIES
    )


def appeal(
    n: int, *, intensity: float = 0.4, extreme: bool = False, rating: str | None = None
) -> dict[str, Any]:
    return {
        "appeal_id": f"A{n}",
        "channel": "hotline_12345",
        "street": STREET,
        "time": "2026-11-24T10:00:00+00:00",
        "text": f"沙洲街道这边臭味很大，第{n}次反映了",
        "intensity": intensity,
        "emotion": "anger" if extreme else "disgust",
        "extreme": extreme,
        "words": ["臭味"],
        "repeat": False,
        "rating": rating,
    }


def minute(i: int, appeals: list[dict[str, Any]], category: str = "odour") -> ClosedWindow:
    """Minute ``i`` of the district: one air reading, and ``appeals`` tallied as the
    windows tally them (category, and category in the street)."""
    start = T0 + 60 * i
    aggs = {"iot.pm25": [1, 30.0, 30.0, 30.0]}
    tallies: dict[str, list[float]] = {}
    samples: dict[str, list[list[Any]]] = {}
    for a in appeals:
        rating = a.pop("rating")
        row = [
            1.0,
            float(a["extreme"]),
            a["intensity"],
            float(rating is not None),
            float(rating == "bad"),
            float(a["repeat"]),
        ]
        street = a["street"]
        for key in (category, f"{category}@{street}") if street else (category,):
            tallies[key] = [x + y for x, y in zip(tallies.get(key, [0.0] * 6), row, strict=True)]
        narrowest = f"{category}@{street}" if street else category
        samples.setdefault(narrowest, []).append([a["intensity"], a])
    for kept in samples.values():
        kept.sort(key=lambda s: -s[0])
    return ClosedWindow(DISTRICT, start, start + 60, aggs, aggs, tallies, samples)


def opinion(events: list[AlertEvent]) -> list[AlertEvent]:
    return [e for e in events if e.kind is AlertKind.PUBLIC_OPINION]


def test_a_street_cluster_fires_at_its_count_to_the_category_owner(tmp_path: Path) -> None:
    ctx = context(tmp_path)
    det = DistrictDetection(DISTRICT)
    events = []
    for i in range(3):  # three appeals about a smell in Shazhou: below the IV count of 4
        events += det.on_window(minute(i, [appeal(i, intensity=0.2 + 0.1 * i)]), ctx)
    assert opinion(events) == []
    (fired,) = opinion(det.on_window(minute(3, [appeal(3, intensity=0.3)]), ctx))
    assert fired.status is AlertStatus.FIRING and fired.grade is Grade.IV
    assert (fired.district, fired.street) == (DISTRICT, STREET)
    # config/appeals.yaml: odour is the environment bureau's, co-handled by sanitation
    assert fired.department == "environment" and fired.co_departments == ["sanitation"]
    assert fired.indicators == ["citizen.appeals"] and fired.domain == "citizen"
    assert "异味扰民" in fired.headline_zh and "沙洲街道" in fired.headline_zh
    assert "舆情预警" in fired.headline_zh and "Odour" in fired.headline_en
    ev = fired.evidence
    assert ev.rule == CLUSTER_RULE and ev.category == "odour"
    assert (ev.observed, ev.threshold) == (4, 4)
    assert [p.value for p in ev.values] == [1, 1, 1, 1]
    assert ev.values[-1].time.timestamp() == T0 + 240
    # the angriest three (samples: 3), angriest first; an equal one keeps the earlier
    assert [a.appeal_id for a in ev.appeals] == ["A2", "A1", "A3"]
    assert ev.appeals[0].words == ["臭味"] and ev.appeals[0].intensity == 0.4
    assert "4 appeals about odour in street 339908003" in (ev.detail or "")


def test_the_grade_follows_the_count_and_the_command_centre_joins_at_ii(
    tmp_path: Path,
) -> None:
    ctx = context(tmp_path)
    det = DistrictDetection(DISTRICT)
    raised = []
    for i in range(9):
        raised += opinion(det.on_window(minute(i, [appeal(i)]), ctx))
    # counts 4, 6 and 9 reach IV, III and II; the alert is updated, not raised again
    assert [(e.status, e.grade) for e in raised] == [
        (AlertStatus.FIRING, Grade.IV),
        (AlertStatus.UPDATED, Grade.III),
        (AlertStatus.UPDATED, Grade.II),
    ]
    assert len({e.alert_id for e in raised}) == 1
    assert raised[1].co_departments == ["sanitation"]
    assert raised[2].co_departments == ["sanitation", "command_centre"]


def test_a_count_wavering_about_a_boundary_moves_the_alert_down_only_after_the_hold(
    tmp_path: Path,
) -> None:
    # a 15-minute window and III from 8 appeals: one appeal every other minute makes 8
    # and 7 by turns, every third minute makes 5
    ctx = context(tmp_path, window="15m", cluster={"IV": 4, "III": 8, "II": 9, "I": 14})
    det = DistrictDetection(DISTRICT)
    raised = []
    for i in range(120):
        due = i % 2 == 0 if i < 60 else i % 3 == 0
        raised += opinion(det.on_window(minute(i, [appeal(i)] if due else []), ctx))
    assert [(e.status, e.grade, e.event_time.timestamp()) for e in raised] == [
        (AlertStatus.FIRING, Grade.IV, T0 + 7 * 60),  # 4 appeals by minute 6
        (AlertStatus.UPDATED, Grade.III, T0 + 15 * 60),  # 8 at minute 14: up at once
        # 7 and 8 by turns until minute 60 keep III; from minute 61 it has been below III,
        # and the alert comes down to IV once that has lasted the hold (30 min)
        (AlertStatus.UPDATED, Grade.IV, T0 + 62 * 60 + 1800),
    ]
    assert raised[-1].evidence.observed == 5 and raised[-1].evidence.threshold == 4


def test_a_category_clustering_in_several_streets_at_once_raises_one_alert_of_the_district(
    tmp_path: Path,
) -> None:
    ctx = context(tmp_path)
    det = DistrictDetection(DISTRICT)
    two_streets = [{**appeal(n), "street": s} for s in ("339908001", "339908002") for n in range(4)]
    (fired,) = opinion(det.on_window(minute(0, two_streets), ctx))
    # four appeals about a smell in each of two streets: one warning of the district
    assert fired.status is AlertStatus.FIRING and fired.grade is Grade.IV
    assert (fired.district, fired.street, fired.department) == (DISTRICT, None, "environment")
    assert fired.evidence.rule == SPREAD_RULE and fired.evidence.category == "odour"
    assert (fired.evidence.observed, fired.evidence.threshold) == (2, 2)
    assert "8 appeals about odour in the last 60 min" in (fired.evidence.detail or "")
    assert "clustering in 2 streets: 339908001, 339908002" in (fired.evidence.detail or "")
    assert len(fired.evidence.appeals) == 3
    # a third street's six (III) while it is open: no alert of its own, the district's up
    (up,) = opinion(det.on_window(minute(1, [appeal(n) for n in range(6)]), ctx))
    assert up.alert_id == fired.alert_id and up.status is AlertStatus.UPDATED
    assert up.grade is Grade.III and up.evidence.observed == 3
    assert up.evidence.streets == ["339908001", "339908002", STREET]
    events = []
    for i in range(2, 100):
        events += opinion(det.on_window(minute(i, []), ctx))
    # the third street's appeals (minute 1) leave the hour's window at minute 61; the
    # warning resolves 30 minutes later, and no street raised one of its own
    assert [(e.alert_id, e.status, e.event_time.timestamp()) for e in events] == [
        (fired.alert_id, AlertStatus.RESOLVED, T0 + 62 * 60 + 1800)
    ]


def test_a_street_joining_the_district_alert_updates_it_and_stays_named_to_its_end(
    tmp_path: Path,
) -> None:
    """The district's alert of several streets names each street that clustered while it
    was open (what lets that street's office see it), from the minute the street joins."""
    ctx = context(tmp_path)
    det = DistrictDetection(DISTRICT)
    first, second, third = "339908001", "339908002", "339908003"
    two_streets = [{**appeal(n), "street": s} for s in (first, second) for n in range(4)]
    (fired,) = opinion(det.on_window(minute(0, two_streets), ctx))
    assert fired.evidence.streets == [first, second]
    # a third street reaches IV too: the grade stands, the alert now names it
    (joined,) = opinion(det.on_window(minute(1, [appeal(n) for n in range(4)]), ctx))
    assert joined.alert_id == fired.alert_id and joined.status is AlertStatus.UPDATED
    assert joined.grade is Grade.IV and joined.evidence.streets == [first, second, third]
    assert "clustering in 3 streets" in (joined.evidence.detail or "")
    # more appeals in streets it names change nothing an office needs: no event
    assert opinion(det.on_window(minute(2, [appeal(9)]), ctx)) == []
    events = []
    for i in range(3, 100):
        events += opinion(det.on_window(minute(i, []), ctx))
    # the clusters leave the hour's window; the resolution still names all three streets
    (resolved,) = events
    assert resolved.status is AlertStatus.RESOLVED and resolved.alert_id == fired.alert_id
    assert resolved.evidence.streets == [first, second, third]
    assert det.opinion[f"odour@{SPREAD}"].named == []


def test_angry_appeals_raise_the_grade_one_step(tmp_path: Path) -> None:
    ctx = context(tmp_path)
    det = DistrictDetection(DISTRICT)
    angry = [appeal(n, intensity=0.9, extreme=True) for n in range(3)]
    calm = [appeal(3)]
    (fired,) = opinion(det.on_window(minute(0, angry + calm), ctx))
    # 4 appeals reach IV; 3 of them extreme (at least 3, and at least half): III
    assert fired.grade is Grade.III
    assert [a.extreme for a in fired.evidence.appeals] == [True, True, True]


def test_a_quiet_street_resolves_its_warning_after_the_hold(tmp_path: Path) -> None:
    ctx = context(tmp_path)
    det = DistrictDetection(DISTRICT)
    (fired,) = opinion(det.on_window(minute(0, [appeal(n) for n in range(4)]), ctx))
    events = []
    for i in range(1, 60 + 30 + 2):
        events += opinion(det.on_window(minute(i, []), ctx))
    (resolved,) = events
    # the appeals, of the minute ending at T0 + 60, leave the 60-minute window when the
    # minute ending an hour later closes; then 30 minutes without a grade
    assert resolved.status is AlertStatus.RESOLVED and resolved.alert_id == fired.alert_id
    assert resolved.event_time.timestamp() == T0 + 60 + 3600 + 1800
    assert DISTRICT_RULE not in {e.evidence.rule for e in events}
    quiet = det.opinion[f"odour@{STREET}"]  # its usual count stays; its appeals are gone
    assert quiet.minutes == [] and quiet.samples == [] and quiet.raised is None


def test_a_district_surge_is_judged_against_its_usual_count_after_the_warmup(
    tmp_path: Path,
) -> None:
    ctx = context(tmp_path, cluster={"IV": 100})  # streets out of the way

    def district_appeals(n: int) -> list[dict[str, Any]]:
        return [{**appeal(k), "street": None} for k in range(n)]

    quiet, busy = DistrictDetection(DISTRICT), DistrictDetection(DISTRICT)
    events: list[AlertEvent] = []
    for i in range(1800):  # thirty hours: the warmup (2 h) is long past
        # within the warmup, eight appeals in a minute surge against nothing known yet
        events += quiet.on_window(minute(i, district_appeals(8 if i == 60 else 0)), ctx)
        busy.on_window(minute(i, district_appeals(6 if i % 60 == 0 else 0)), ctx)
    assert opinion(events) == []
    (surge,) = opinion(quiet.on_window(minute(1800, district_appeals(8)), ctx))
    # eight appeals 29 hours ago and eight now: the usual count over an hour (their rate
    # smoothed with a half-life of a day, about 0.6) is below the floor of 1, so eight
    # appeals are eight times it: grade II (8)
    assert surge.grade is Grade.II and surge.street is None
    assert surge.evidence.rule == DISTRICT_RULE and surge.department == "environment"
    assert (surge.evidence.observed, surge.evidence.baseline) == (8, 1)
    # six an hour are usual in the busy district: eight are no surge there
    assert opinion(busy.on_window(minute(1800, district_appeals(8)), ctx)) == []


def test_a_busy_street_needs_a_surge_above_its_usual_count_to_cluster(tmp_path: Path) -> None:
    # the whole day's usual count alone (its hours: the tests below)
    ctx = context(tmp_path, hourly_prior="100000d")
    busy = DistrictDetection(DISTRICT)
    for i in range(1800):  # two appeals about smells an hour, for thirty hours
        assert opinion(busy.on_window(minute(i, [appeal(i)] if i % 30 == 0 else []), ctx)) == []
    # usual: about two an hour; the cluster boundary for grade IV is then the larger of 4
    # and three times the usual count (surge IV): five appeals in the hour (the one of
    # half an hour ago and four now) are not enough, seven are
    assert opinion(busy.on_window(minute(1800, [appeal(n) for n in range(4)]), ctx)) == []
    events = opinion(busy.on_window(minute(1801, [appeal(n) for n in range(2)]), ctx))
    (fired,) = [e for e in events if e.street == STREET]
    assert fired.grade is Grade.IV and fired.evidence.observed == 7
    assert fired.evidence.threshold is not None and 6 < fired.evidence.threshold <= 7


def test_a_busy_streets_boundaries_lift_until_its_count_is_unlikely(tmp_path: Path) -> None:
    """With ``cluster_chance``, a street's boundaries rise (keeping their distances) to the
    least count its usual count reaches with at most that chance in a window."""
    ctx = context(tmp_path, hourly_prior="100000d", cluster_chance=0.001)
    busy = DistrictDetection(DISTRICT)
    for i in range(1800):  # as above: two appeals about smells an hour, for thirty hours
        assert opinion(busy.on_window(minute(i, [appeal(i)] if i % 30 == 0 else []), ctx)) == []
    # seven in the hour (the one of half an hour ago and six now), which the surge ratio
    # alone lets through (the test above), are not unlikely enough for about two an hour
    # (the district's surge is judged apart)
    events = opinion(busy.on_window(minute(1800, [appeal(n) for n in range(6)]), ctx))
    assert [e for e in events if e.street is not None] == []
    events = opinion(busy.on_window(minute(1801, [appeal(n) for n in range(2)]), ctx))
    (fired,) = [e for e in events if e.street == STREET]
    usual, bound = fired.evidence.baseline, fired.evidence.threshold
    assert usual is not None and 2 < usual < 2.5 and bound is not None

    def at_least(n: int) -> float:  # P(X >= n), X Poisson about the usual count
        return 1 - sum(math.exp(-usual) * usual**k / math.factorial(k) for k in range(n))

    # nine reach grade IV's lifted boundary, the least count with at most a 0.1 % chance
    assert fired.grade is Grade.IV and fired.evidence.observed == 9 == bound
    assert at_least(9) <= 0.001 < at_least(8)


def test_a_street_of_hundreds_of_appeals_a_window_lifts_its_boundary_near_its_count() -> None:
    """Far beyond any street's count today, the lifted boundary still follows the usual
    count (P(X = 0) is no float there): about 3.1 standard deviations above it for a
    0.1 % chance, as the normal approximation of a Poisson count has it."""
    for usual in (800.0, 1000.0, 5000.0):
        lifted = unlikely_count(usual, 0.001)
        assert usual + 2.9 * math.sqrt(usual) < lifted < usual + 3.4 * math.sqrt(usual)
    assert unlikely_count(0.0, 0.001) == 1  # nothing usual: any appeal is unlikely


def rhythm_minutes(days: int, extra: dict[int, int] | None = None) -> list[ClosedWindow]:
    """``days`` of a district's minutes whose odour appeals follow the day: one a minute
    from 9 to 10 in the morning (city time), otherwise one every twelve minutes; ``extra``
    adds appeals to a minute (by its index)."""
    zone = ZoneInfo(CFG.city.city.timezone)
    out = []
    for i in range(days * 1440):
        local = datetime.fromtimestamp(T0 + 60 * i, zone)
        n = 1 if local.hour == 9 or local.minute % 12 == 0 else 0
        n += (extra or {}).get(i, 0)
        out.append(minute(i, [{**appeal(k), "street": None} for k in range(n)]))
    return out


def rhythm_context(tmp_path: Path, hours: bool) -> DetectionContext:
    """A 15-minute window, a day's warmup, a week's half-life; the usual count by the
    hours of the day (``hours``) or the whole day's alone; streets out of the way."""
    return context(
        tmp_path,
        window="15m",
        warmup="1d",
        baseline_half_life="7d",
        hourly_prior="2h" if hours else "100000d",
        cluster={"IV": 1000},
    )


@pytest.mark.parametrize(("hours", "peaks"), [(True, 0), (False, 6)])
def test_a_district_rush_hour_is_usual_by_its_hour_of_the_day(
    tmp_path: Path, hours: bool, peaks: int
) -> None:
    """A morning hour with twelve times the appeals of the rest of the day is no surge once
    the district's usual count follows the hours of its day; against the whole day's, it
    is one every morning after the warmup."""
    ctx = rhythm_context(tmp_path, hours)
    det = DistrictDetection(DISTRICT)
    fired = []
    for w in rhythm_minutes(7):
        fired += [e for e in opinion(det.on_window(w, ctx)) if e.status is AlertStatus.FIRING]
    zone = ZoneInfo(CFG.city.city.timezone)
    mornings = {e.event_time.astimezone(zone).date() for e in fired}
    assert len(fired) == len(mornings) == peaks  # days 2 to 7: one warning each, or none
    assert all(e.event_time.astimezone(zone).hour == 9 for e in fired)


def test_a_night_surge_is_judged_against_the_night_usual_count(tmp_path: Path) -> None:
    """Eight appeals in a minute at night, after a week of the rhythm above: the night
    hears five an hour (1.25 over the window) and the whole day about seven (1.8); the
    usual count the surge is judged by lies between, nearer the night's, and grades it
    III (five times the usual count), where the whole day's would grade it IV."""
    zone = ZoneInfo(CFG.city.city.timezone)
    night = next(
        i
        for i in range(7 * 1440, 8 * 1440)
        if datetime.fromtimestamp(T0 + 60 * i, zone).strftime("%H:%M") == "03:05"
    )
    graded = {}
    for hours in (True, False):
        ctx = rhythm_context(tmp_path, hours)
        det = DistrictDetection(DISTRICT)
        events = []
        for w in rhythm_minutes(8, {night: 8}):
            events += opinion(det.on_window(w, ctx))
        (surge,) = [e for e in events if e.event_time.timestamp() == T0 + 60 * night + 60]
        graded[hours] = surge.grade, surge.evidence.baseline
    (by_hours, usual), (by_day, day_usual) = graded[True], graded[False]
    assert usual is not None and day_usual is not None
    assert 1.25 < usual < 1.55 and 1.7 < day_usual < 1.9
    assert (by_hours, by_day) == (Grade.III, Grade.IV)


def test_a_district_of_an_earlier_release_takes_its_hours_from_its_restore(
    tmp_path: Path,
) -> None:
    """Series written before the hours were kept restore with the whole day's usual count
    and keep the hours of the day from then on."""
    ctx = context(tmp_path, window="15m", warmup="1h", baseline_half_life="7d")
    minutes = rhythm_minutes(2)
    det = DistrictDetection(DISTRICT)
    for w in minutes[:1440]:
        det.on_window(w, ctx)
    doc = det.dumps()
    for series in det.opinion.values():  # as an earlier release wrote them
        series.hourly, series.hourly_since, series.hourly_at = [], None, None
    old = DistrictDetection.loads(det.dumps())
    assert old.opinion["odour"].hourly == [] and old.opinion["odour"].baseline > 0
    for w in minutes[1440:]:
        old.on_window(w, ctx)
    series = old.opinion["odour"]
    # the hours take the minutes with appeals as they leave the window: from the oldest
    # in the window at the restore, to the newest 15 minutes before the last
    with_appeals = [w for w in minutes if w.tallies]
    since = min(w.start for w in with_appeals if w.end > minutes[1439].end - 900)
    at = max(w.end for w in with_appeals if w.end <= minutes[-1].end - 900)
    assert len(series.hourly) == 24 and (series.hourly_since, series.hourly_at) == (since, at)
    assert DistrictDetection.loads(doc).opinion["odour"].hourly_since == minutes[0].start


def test_an_hours_clock_moves_by_the_time_spent_in_that_hour_of_the_citys_day(
    tmp_path: Path,
) -> None:
    """What an hour's rate forgets in: the time spent in that hour of the day on the
    city's wall clock (Asia/Shanghai, eight hours ahead of UTC)."""
    conf = context(tmp_path)
    hours = _Hours(conf, T0, conf.rules.opinion, T0 - 86400)
    zone = ZoneInfo("Asia/Shanghai")

    def at(day: int, hh: int, mm: int) -> float:
        return datetime(2026, 12, day, hh, mm, tzinfo=zone).timestamp()

    def spent(a: float, b: float) -> dict[int, float]:
        found: dict[int, float] = {}
        for h, seconds in hours.spent(a, b):
            found[h] = found.get(h, 0.0) + seconds
        return found

    assert spent(at(3, 9, 14), at(3, 9, 15)) == {9: 60.0}
    assert spent(at(3, 23, 30), at(4, 1, 15)) == {23: 1800.0, 0: 3600.0, 1: 900.0}
    two_days_and_more = spent(at(3, 22, 0), at(5, 23, 30))
    assert two_days_and_more == {h: 7200.0 for h in range(24)} | {22: 10800.0, 23: 9000.0}
    assert spent(at(3, 9, 15), at(3, 9, 15)) == {} == spent(at(3, 9, 15), at(3, 9, 14))


def test_bad_ratings_of_a_service_warn_its_owner(tmp_path: Path) -> None:
    ctx = context(tmp_path)
    det = DistrictDetection(DISTRICT)
    ratings = [
        {**appeal(n), "street": None, "rating": "bad" if n < 6 else "good"} for n in range(10)
    ]
    (warned,) = opinion(det.on_window(minute(0, ratings, "government_service"), ctx))
    # 6 of 10 ratings bad: a share of 0.6 reaches III (0.5)
    assert warned.grade is Grade.III and warned.evidence.observed == 0.6
    assert warned.department == load_appeals(CFG).categories["government_service"].department
    assert "6 of 10 ratings bad" in (warned.evidence.detail or "")


def test_a_restored_district_goes_on_as_if_never_stopped(tmp_path: Path) -> None:
    ctx = context(tmp_path)
    straight, restarted = DistrictDetection(DISTRICT), DistrictDetection(DISTRICT)
    a: list[AlertEvent] = []
    b: list[AlertEvent] = []
    for i in range(12):
        appeals = [appeal(i, intensity=0.1 * (i % 7))]
        a += straight.on_window(minute(i, [dict(x) for x in appeals]), ctx)
        b += restarted.on_window(minute(i, [dict(x) for x in appeals]), ctx)
        restarted = DETECTION_STATE.decode(DETECTION_STATE.encode(restarted))
    assert opinion(a) and opinion(a) == opinion(b)


@pytest.mark.parametrize(
    ("change", "field", "reason"),
    [
        ({"cluster": {"IV": 5, "III": 4}}, "public_opinion.cluster", "increase from IV to I"),
        ({"bad_ratings": {"IV": 0.5, "III": 1.5}}, "public_opinion.bad_ratings", "at most 1"),
        ({"informed": "mayor"}, "public_opinion.informed", "unknown department 'mayor'"),
        ({"cluster": {}}, "public_opinion.cluster", "at least one grade boundary"),
    ],
)
def test_wrong_settings_stop_the_load_naming_the_field(
    tmp_path: Path, change: dict[str, Any], field: str, reason: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        context(tmp_path, **change)
    text = str(caught.value)
    assert "thresholds.yaml" in text and field in text and reason in text


def city_minutes(seed: int, n: int) -> list[ClosedWindow]:
    """``n`` minutes of a district's appeals about two categories in three streets (and
    none): quiet spells and bursts in one street or several, some angry, some rating a
    service, so that clusters, the district's alert of several streets, surges, holds and
    resolves all come and go."""
    rng = random.Random(seed)
    streets = ("339908001", "339908002", "339908003", None)
    burst: dict[tuple[str, str | None], int] = {}  # minutes left of a burst
    out = []
    for i in range(n):
        tallies: dict[str, list[float]] = {}
        samples: dict[str, list[list[Any]]] = {}
        for category in ("odour", "noise"):
            appeals = []
            for street in streets:
                if rng.random() < 0.02:
                    burst[(category, street)] = rng.randint(3, 12)
                busy = burst.get((category, street), 0)
                burst[(category, street)] = max(0, busy - 1)
                for _ in range(rng.randint(1, 3) if busy else int(rng.random() < 0.05)):
                    rating = rng.choice([None, None, "good", "bad"])
                    angry = rng.random() < 0.3
                    a = appeal(len(appeals) + 10 * i, intensity=rng.random(), extreme=angry)
                    appeals.append({**a, "street": street, "rating": rating})
            w = minute(i, appeals, category)
            tallies.update(w.tallies)
            samples.update(w.samples)
        w = minute(i, [])
        out.append(ClosedWindow(DISTRICT, w.start, w.end, w.minute, w.rolling, tallies, samples))
    return out


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_district_written_and_restored_between_any_minutes_raises_the_same_warnings(
    tmp_path: Path, seed: int
) -> None:
    """A worker that restarts from the written state between minutes (every minute, or
    now and then) raises every public-opinion event a worker that never stopped raises,
    before the warmup and after it, and ends with the same state."""
    ctx = context(
        tmp_path,
        window="15m",
        warmup="1h",
        baseline_half_life="2h",
        hold="10m",
        cluster={"IV": 3, "III": 5, "II": 7, "I": 10},
        surge={"IV": 2, "III": 3, "II": 5},
        surge_min=4,
        ratings_min=4,
    )
    n = 240
    straight, every, sometimes = (DistrictDetection(DISTRICT) for _ in range(3))
    cuts = set(random.Random(seed).sample(range(n), 20))
    events: dict[str, list[AlertEvent]] = {"straight": [], "every": [], "sometimes": []}
    for i, (a, b, c) in enumerate(zip(*(city_minutes(seed, n) for _ in range(3)), strict=True)):
        events["straight"] += opinion(straight.on_window(a, ctx))
        events["every"] += opinion(every.on_window(b, ctx))
        events["sometimes"] += opinion(sometimes.on_window(c, ctx))
        every = DistrictDetection.loads(every.dumps())
        if i in cuts:
            sometimes = DistrictDetection.loads(sometimes.dumps())
    raised = events["straight"]
    assert events["every"] == raised and events["sometimes"] == raised
    assert straight.dumps() == every.dumps() == sometimes.dumps()
    # the minutes exercised what a restart could lose: every rule, raised and resolved
    assert {e.evidence.rule for e in raised} == {CLUSTER_RULE, DISTRICT_RULE, SPREAD_RULE}
    assert {e.status for e in raised} >= {AlertStatus.FIRING, AlertStatus.RESOLVED}
    assert any(e.evidence.baseline is not None and e.street for e in raised)  # after warmup


def test_the_warnings_of_a_minute_come_in_the_order_of_their_categories(
    tmp_path: Path,
) -> None:
    """A minute's public-opinion events come category by category, in the order of the
    categories' series keys, including series the minute brings nothing to: here the
    odour district series (quiet, with one appeal in its window) comes before any series
    of "odour-x", so odour's street resolving comes before odour-x's street firing."""
    ctx = context(tmp_path, window="15m", hold="2m", cluster={"IV": 3, "III": 30})
    det = DistrictDetection(DISTRICT)
    other = {**appeal(0), "street": "339908002"}
    script = {
        0: [("odour", [appeal(n) for n in range(3)])],  # a cluster in the street: IV
        5: [("odour", [{**appeal(5), "street": None}])],  # one for the district
        17: [("odour-x", [dict(other, appeal_id=f"X{n}") for n in range(3)])],
    }
    events = []
    for i in range(20):
        tallies: dict[str, list[float]] = {}
        samples: dict[str, list[list[Any]]] = {}
        for category, appeals in script.get(i, []):
            w = minute(i, appeals, category)
            tallies.update(w.tallies)
            samples.update(w.samples)
        w = minute(i, [])
        window = ClosedWindow(DISTRICT, w.start, w.end, w.minute, w.rolling, tallies, samples)
        events.append(opinion(det.on_window(window, ctx)))
    assert [(e.status, e.street) for e in events[0]] == [(AlertStatus.FIRING, STREET)]
    # the street's appeals leave the window at minute 15: no grade for the hold (2 min)
    assert [(e.evidence.category, e.status, e.street) for e in events[17]] == [
        ("odour", AlertStatus.RESOLVED, STREET),
        ("odour-x", AlertStatus.FIRING, "339908002"),
    ]
