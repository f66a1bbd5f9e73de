"""Event-time windows, lateness, the rolling view, dedup after a crash, and the index math."""

from __future__ import annotations

import pickle
from datetime import UTC, datetime

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detectors.vital_index import composite_index, domain_index, health_score
from streams.core.config import load_config
from streams.core.messages import DistrictVitals
from streams.state.vitals import district_vitals
from streams.state.windows import DistrictWindows

T0 = datetime(2026, 11, 24, 10, 0, tzinfo=UTC).timestamp()
CFG = load_config()


def test_window_closes_only_when_the_watermark_passes_end_plus_lateness() -> None:
    w = DistrictWindows("339901")
    assert w.add("iot.pm25", 40.0, T0 + 5)
    assert w.add("iot.pm25", 60.0, T0 + 179)
    assert w.close_due(lateness_s=120) == []  # watermark 10:02:59 < 10:01 + 120 s
    assert w.add("iot.pm25", 50.0, T0 + 181)  # watermark 10:03:01
    (closed,) = w.close_due(lateness_s=120)
    assert (closed.start, closed.end) == (T0, T0 + 60)
    assert closed.minute == {"iot.pm25": [1, 40.0, 40.0, 40.0]}


def test_event_for_a_closed_window_is_late_and_one_for_an_open_window_is_counted() -> None:
    w = DistrictWindows("339901")
    w.add("iot.pm25", 40.0, T0 + 5)
    w.add("iot.pm25", 50.0, T0 + 181)
    w.close_due(lateness_s=120)
    assert not w.add("iot.pm25", 99.0, T0 + 30)  # 10:00:30, its window has closed
    assert w.add("iot.pm25", 70.0, T0 + 90)  # 10:01:30, still open
    assert w.open[T0 + 60]["iot.pm25"] == [1, 70.0, 70.0, 70.0]


def test_rolling_view_merges_the_last_fifteen_closed_minutes() -> None:
    w = DistrictWindows("339901", rolling_windows=15)
    for minute in range(20):
        w.add("traffic.speed_kmh", float(minute), T0 + 60 * minute + 1)
    closed = w.close_all()
    assert len(closed) == 20
    last = closed[-1].rolling["traffic.speed_kmh"]
    assert last == [15, float(sum(range(5, 20))), 5.0, 19.0]


def test_offsets_already_applied_are_recognised() -> None:
    w = DistrictWindows("339901")
    w.mark_applied("city.events.iot:3", 10)
    assert w.is_applied("city.events.iot:3", 10) and w.is_applied("city.events.iot:3", 2)
    assert not w.is_applied("city.events.iot:3", 11)
    assert not w.is_applied("city.events.fire:3", 0)


def test_state_survives_the_changelog_round_trip() -> None:
    w = DistrictWindows("339901")
    w.add("iot.pm25", 40.0, T0 + 5)
    w.add("iot.pm25", 50.0, T0 + 200)
    w.close_due(120)
    w.mark_applied("city.events.iot:0", 7)
    back = DistrictWindows.from_dict(orjson.loads(orjson.dumps(w.to_dict())))
    assert back == w
    assert pickle.loads(pickle.dumps(w)) == w
    fresh = DistrictWindows("339902")
    assert DistrictWindows.from_dict(orjson.loads(orjson.dumps(fresh.to_dict()))) == fresh


def test_facets_tally_with_their_window_and_keep_its_highest_samples() -> None:
    w = DistrictWindows("339908")
    street = "odour@339908003"
    for n, rank in enumerate([0.2, 0.9, 0.5, 0.9, 0.1]):
        assert w.add("citizen.appeals", rank, T0 + 10 + n)
        w.tally(T0 + 10 + n, ("odour", street), (1.0, float(rank > 0.8)), {"n": n}, rank)
    assert w.add("citizen.appeals", 0.3, T0 + 70)  # the next minute
    w.tally(T0 + 70, ("odour",), (1.0, 0.0), {"n": 5}, 0.3)
    # written to the changelog and read back while open, then closed
    w = DistrictWindows.from_dict(orjson.loads(orjson.dumps(w.to_dict())))
    first, second = w.close_all()
    assert first.tallies == {"odour": [5.0, 2.0], street: [5.0, 2.0]}
    # the three highest of the street (its narrowest facet), an equal one after the earlier
    assert first.samples == {street: [[0.9, {"n": 1}], [0.9, {"n": 3}], [0.5, {"n": 2}]]}
    assert second.tallies == {"odour": [1.0, 0.0]} and second.samples == {
        "odour": [[0.3, {"n": 5}]]
    }
    assert w.tallies == {} and w.samples == {}  # nothing kept past the close
    # a value written before facets were tallied restores with none
    doc = w.to_dict()
    del doc["tallies"], doc["samples"]
    assert DistrictWindows.from_dict(doc) == w


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 3600), st.floats(0, 100)), min_size=1, max_size=200))
def test_every_accepted_value_is_counted_in_exactly_one_closed_window(
    events: list[tuple[float, float]],
) -> None:
    w = DistrictWindows("339901")
    closed, accepted, total = [], 0, 0.0
    for offset, value in events:
        if w.add("iot.pm25", value, T0 + offset):
            accepted += 1
            total += value
        closed += w.close_due(lateness_s=120)
    closed += w.close_all()
    assert sum(c.minute["iot.pm25"][0] for c in closed if "iot.pm25" in c.minute) == accepted
    assert sum(c.minute["iot.pm25"][1] for c in closed if "iot.pm25" in c.minute) == pytest.approx(
        total
    )
    starts = [c.start for c in closed]
    assert starts == sorted(set(starts))


def test_health_score_interpolates_and_clamps() -> None:
    points = [(0.0, 100.0), (35.0, 90.0), (75.0, 65.0), (250.0, 0.0)]
    assert health_score(-5, points) == 100.0
    assert health_score(55, points) == 77.5
    assert health_score(999, points) == 0.0


def test_domain_index_is_pulled_down_by_its_worst_indicator() -> None:
    assert domain_index([100.0, 100.0, 10.0]) == 40.0  # half the mean 70, half the worst 10
    assert domain_index([]) is None


def test_composite_renormalises_weights_over_domains_with_data() -> None:
    weights = {"traffic": 0.5, "fire": 0.3, "citizen": 0.2}
    assert composite_index({"traffic": 80.0, "fire": None, "citizen": 60.0}, weights) == 74.3
    assert composite_index({"traffic": None}, weights) is None


def test_district_vitals_of_a_quiet_minute_counts_missing_alarms_as_healthy() -> None:
    w = DistrictWindows("339901")
    w.add("iot.pm25", 95.0, T0 + 1)
    w.add("traffic.speed_kmh", 40.0, T0 + 2)
    (closed,) = w.close_all()
    v = district_vitals(closed, CFG, 15, datetime.now(UTC))
    assert v.events == 2
    assert v.indicators["iot.pm25"].health == 55.0
    assert v.indicators["fire.smoke_alarms"].rolling.count == 0
    assert v.indicators["fire.smoke_alarms"].health == 100.0
    assert v.domains["environment"] == 55.0
    assert v.domains["utilities"] is None
    assert v.composite is not None and 0 <= v.composite <= 100


def test_a_source_running_ahead_does_not_make_another_active_source_late() -> None:
    w = DistrictWindows("339901")
    w.add("iot.pm25", 40.0, T0 + 600, source="city.events.iot")  # iot is 10 minutes ahead
    w.add("traffic.speed_kmh", 30.0, T0 + 5, source="city.events.traffic")
    both = {"city.events.iot", "city.events.traffic"}
    assert w.close_due(120, active=both) == []  # traffic's mark holds the watermark back
    assert w.add("traffic.speed_kmh", 32.0, T0 + 30, source="city.events.traffic")
    closed = w.close_due(120, active={"city.events.iot"})  # traffic went quiet
    assert [c.start for c in closed] == [T0]
    assert closed[0].minute["traffic.speed_kmh"][0] == 2


def test_an_active_source_not_seen_yet_holds_every_window_open() -> None:
    w = DistrictWindows("339901")
    w.add("iot.pm25", 40.0, T0 + 900, source="city.events.iot")
    assert w.close_due(120, active={"city.events.iot", "city.events.fire"}) == []
    w.add("iot.pm25", 40.0, T0 + 60, source="city.events.iot")
    closed = w.close_due(120, active={"city.events.iot"})  # fire went idle
    assert [c.start for c in closed] == [T0 + 60]


def test_a_gauge_in_acute_failure_counts_at_once_not_after_the_rolling_view_dilutes_it() -> None:
    w = DistrictWindows("339903")
    for minute in range(14):
        w.add("iot.water_pressure_kpa", 420.0, T0 + 60 * minute + 1)
    w.add("iot.water_pressure_kpa", 60.0, T0 + 60 * 14 + 1)  # the main bursts
    closed = w.close_all()[-1]
    v = district_vitals(closed, CFG, 15, datetime.now(UTC))
    # rolling mean 396 kPa alone would be healthy (100); the minute's 60 kPa is not
    assert v.indicators["iot.water_pressure_kpa"].rolling.mean == pytest.approx(396.0)
    assert v.indicators["iot.water_pressure_kpa"].health == health_score(
        60.0, CFG.indicators["iot.water_pressure_kpa"].health
    )
    assert v.indicators["iot.water_pressure_kpa"].health < 10


def test_the_published_vitals_document_is_exactly_a_district_vitals() -> None:
    """The worker builds the JSON by hand: it must survive the schema unchanged (no field
    the schema would drop, add or rewrite), and the metrics must match it."""
    from streams.sim.simulator import CitySimulator
    from streams.state.vitals import vitals_json

    sim = CitySimulator(CFG, seed=3, start=datetime(2026, 11, 20, 6, 0, tzinfo=UTC))
    windows: dict[str, DistrictWindows] = {}
    checked = 0
    now = datetime(2026, 11, 24, 8, 0, 0, 123456, tzinfo=UTC)
    for ev in sim.take(20_000):
        body = orjson.loads(ev.value)
        state = windows.setdefault(body["district"], DistrictWindows(body["district"]))
        state.add(body["indicator"], float(body["value"]), ev.event_time.timestamp(), ev.topic)
        for closed in state.close_due(120, None):
            fast, domains, composite = vitals_json(closed, CFG, 15, now)
            slow = district_vitals(closed, CFG, 15, now)
            assert orjson.loads(fast) == orjson.loads(slow.to_json())
            assert DistrictVitals.model_validate_json(fast) == slow
            assert (domains, composite) == (slow.domains, slow.composite)
            checked += 1
    assert checked > 100


@settings(max_examples=100, deadline=None)
@given(
    minutes=st.lists(
        st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=1, max_size=5),
        min_size=1,
        max_size=40,
    ),
    gaps=st.lists(st.integers(0, 3), min_size=40, max_size=40),
)
def test_every_rolling_view_is_exactly_the_merge_of_the_minutes_within_the_last_fifteen(
    minutes: list[list[float]], gaps: list[int]
) -> None:
    w = DistrictWindows("339901", rolling_windows=15)
    closed_minutes: list[tuple[float, list[float]]] = []
    start = T0
    for values, gap in zip(minutes, gaps, strict=False):
        start += 60 * gap  # minutes without readings in between
        for v in values:
            assert w.add("iot.pm25", v, start + 1)
        (closed,) = w.close_all()
        closed_minutes.append((start, values))
        kept = [vs for s, vs in closed_minutes if s >= closed.end - 15 * 60]
        flat = [v for vs in kept for v in vs]
        expected_sum = 0.0
        for vs in kept:  # minute sums added oldest first, as the windows keep them
            expected_sum += sum(vs[1:], vs[0])
        assert closed.rolling["iot.pm25"] == [len(flat), expected_sum, min(flat), max(flat)]
        start += 60


# --- records ahead of their district's stream -------------------------------------------

AHEAD = 60.0
ROOM = 10_000


def offer(w: DistrictWindows, t: float, source: str = "iot", tag: str = "") -> str:
    """Admit a record and count whatever the admission says to count; the verdict."""
    a = w.admit(T0 + t, source, tag or f"{source}@{t:g}", 100, AHEAD, ROOM)
    for held in a.confirmed:
        w.add("x", 1.0, held[0], held[1])
    if a.verdict == "count":
        w.add("x", 1.0, T0 + t, source)
    return a.verdict


def test_a_single_record_far_ahead_is_held_and_dropped_when_its_stream_goes_on() -> None:
    w = DistrictWindows("339901")
    offer(w, 0)  # the district's first record waits for a second one
    assert offer(w, 5) == "count" and w.top == T0 + 5
    a = w.admit(T0 + 2 * 86400, "iot", "typo", 100, AHEAD, ROOM)  # a date two days ahead
    assert a.verdict == "hold" and w.top == T0 + 5
    a = w.admit(T0 + 10, "iot", "next", 100, AHEAD, ROOM)
    assert a.verdict == "count" and a.confirmed == []
    ((held, why),) = a.contradicted
    assert held[2] == "typo" and "is 172790 s earlier" in why
    assert w.held == {}


def test_two_wrong_dates_in_a_row_confirm_neither_and_move_nothing() -> None:
    """Two consecutive records of one stream dated days ahead, each drawn anew (as a
    sensor's garbled dates are): the second is no confirmation of the first."""
    w = DistrictWindows("339901")
    offer(w, 0)
    assert offer(w, 5) == "count"
    assert offer(w, 9 * 86400, tag="first") == "hold"
    a = w.admit(T0 + 11 * 86400, "iot", "second", 100, AHEAD, ROOM)
    assert a.verdict == "hold"  # it vouches for nothing, and waits for its own verdict
    assert a.confirmed == [] and a.contradicted == []
    assert [h[2] for h in w.held["iot"]] == ["first", "second"]
    a = w.admit(T0 + 10, "iot", "next", 100, AHEAD, ROOM)  # the stream goes on where it was
    assert a.verdict == "count" and a.confirmed == []
    assert [h[2] for h, _ in a.contradicted] == ["first", "second"]
    assert w.top == T0 + 5 and w.held == {}


def test_a_held_record_is_not_judged_by_a_wrong_date_that_follows_it() -> None:
    """A sparse source read ahead of its district in a catch-up, its next record a
    garbled date days ahead: the held record waits on for a real confirmation."""
    w = DistrictWindows("339901")
    offer(w, 0)
    offer(w, 5)
    assert offer(w, 600, "sanitation", "valid") == "hold"
    a = w.admit(T0 + 6 * 86400, "sanitation", "garbled", 100, AHEAD, ROOM)
    assert a.verdict == "hold" and a.contradicted == [] and a.confirmed == []
    a = w.admit(T0 + 640, "sanitation", "next", 100, AHEAD, ROOM)
    assert [h[2] for h in a.confirmed] == ["valid"]
    assert [h[2] for h, _ in a.contradicted] == ["garbled"]


def test_a_sparse_source_read_hours_ahead_of_its_district_loses_none_of_its_records() -> None:
    """A catch-up reads a hotline feed (calls hours apart at night) far ahead of the
    district's busy feeds: each call is held, none vouches for the one before it, and
    every one is counted once the district reaches it."""
    w = DistrictWindows("339901")
    offer(w, 0)
    offer(w, 5)
    calls = [4000, 9000, 16000]
    verdicts = [offer(w, t, "hotline", f"call@{t}") for t in calls]
    assert verdicts == ["hold"] * 3 and len(w.held["hotline"]) == 3
    # the fourth call, within the hour of the third, vouches for it and the earlier ones
    a = w.admit(T0 + 16100, "hotline", "call@16100", 100, AHEAD, ROOM)
    assert sorted(h[2] for h in a.confirmed) == ["call@16000", "call@4000", "call@9000"]
    assert a.contradicted == [] and a.verdict == "hold"  # the district is still behind it
    for held in a.confirmed:
        w.add("x", 1.0, held[0], held[1])
    # the busy feed reaching it releases the last one
    a = w.admit(T0 + 16050, "iot", "iot", 100, AHEAD, ROOM)
    assert a.verdict == "count" and [h[2] for h in a.confirmed] == ["call@16100"]
    assert w.held == {}


def test_held_records_of_a_sparse_source_are_released_as_the_district_reaches_each() -> None:
    w = DistrictWindows("339901")
    offer(w, 0)
    offer(w, 5)
    for t in (4000, 9000):
        assert offer(w, t, "hotline") == "hold"
    released: list[tuple[float, float]] = []
    for t in range(30, 9001, 30):  # the busy feed catching up, half a minute at a time
        a = w.admit(T0 + t, "iot", "iot", 100, AHEAD, ROOM)
        assert a.verdict == "count" and a.contradicted == []
        released += [(held[0] - T0, t) for held in a.confirmed]
        w.add("x", 1.0, T0 + t, "iot")
    assert released == [(4000, 3960), (9000, 8940)] and w.held == {}


def test_a_stream_that_jumps_ahead_is_followed_once_its_next_record_agrees() -> None:
    w = DistrictWindows("339901")
    offer(w, 0)
    offer(w, 5)
    assert offer(w, 3600) == "hold"  # an hour's gap in the feed
    a = w.admit(T0 + 3605, "iot", "after the gap", 100, AHEAD, ROOM)
    assert a.verdict == "count" and [h[0] for h in a.confirmed] == [T0 + 3600]
    assert a.contradicted == []


def test_one_source_ahead_is_released_when_the_district_catches_up_with_it() -> None:
    w = DistrictWindows("339901")
    offer(w, 0, "iot")
    offer(w, 5, "iot")
    assert offer(w, 300, "fire") == "hold"  # a sparse source, ahead of the rest for now
    for t in range(30, 240, 30):
        assert offer(w, t, "iot") == "count"
        assert "fire" in w.held
    a = w.admit(T0 + 240, "iot", "iot", 100, AHEAD, ROOM)
    assert a.verdict == "count" and [h[1] for h in a.confirmed] == ["fire"]


def test_records_ahead_of_the_district_are_not_held_beyond_the_room() -> None:
    w = DistrictWindows("339901")
    offer(w, 0)
    offer(w, 5)
    assert w.admit(T0 + 9000, "iot", "a", 6000, AHEAD, ROOM).verdict == "hold"
    assert w.admit(T0 + 9000, "fire", "b", 6000, AHEAD, ROOM).verdict == "full"


def test_going_quiet_counts_the_held_records_the_clock_vouches_for_and_drops_the_rest() -> None:
    now = T0 + 1000
    w = DistrictWindows("339901")
    offer(w, 0)
    offer(w, 5)
    offer(w, 40, "fire")  # within AHEAD of the district: counted at once
    assert offer(w, 200, "traffic") == "hold"  # far ahead, and long before `now`
    assert offer(w, 950, "hotline") == "hold"  # the district's next call, a fresh one
    counted, dropped = w.settle_held(now, AHEAD, quiet_s=60)
    assert [h[1] for h in counted] == ["hotline"]
    assert [h[1] for h, _ in dropped] == ["traffic"] and "went quiet" in dropped[0][1]
    assert w.held == {}


def test_closing_on_silence_leaves_windows_the_clock_has_not_finished() -> None:
    w = DistrictWindows("339901")
    w.add("x", 1.0, T0 + 10, "iot")
    w.add("x", 1.0, T0 + 70, "iot")
    closed = w.close_all(until=T0 + 100)
    assert [c.start for c in closed] == [T0]
    assert list(w.open) == [T0 + 60]


def test_held_records_and_the_newest_time_survive_the_changelog() -> None:
    w = DistrictWindows("339901")
    offer(w, 0)
    offer(w, 5)
    offer(w, 9000, "fire", tag="payload")
    back = DistrictWindows.from_dict(orjson.loads(orjson.dumps(w.to_dict())))
    assert back.held == w.held and back.top == w.top == T0 + 5
    # a value written before the newest time was kept takes it from the marks
    old = w.to_dict()
    del old["top"], old["held"]
    assert DistrictWindows.from_dict(old).top == T0 + 5
