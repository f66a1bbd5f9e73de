"""The worker on the real embedded broker: events in, readings, dead letters and vitals out."""

from __future__ import annotations

import signal
import statistics
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from streams.core.config import load_config
from streams.core.messages import (
    DEADLETTER_TOPIC,
    READINGS_TOPIC,
    VITALS_TOPIC,
    CityEvent,
    DeadLetter,
    DistrictVitals,
    Reading,
)
from streams.core.settings import Settings
from streams.ingest.sealing import Sealer
from streams.sim.simulator import CitySimulator
from tests.harness import Produced, Worker, produce, read_records, read_topic, run, wait_for

pytestmark = pytest.mark.broker
CFG = load_config()


def worker_sealer() -> Sealer:
    """The key test workers seal dead letters with (derived from the session's deid key)."""
    settings = Settings()
    return Sealer.from_secrets(None, settings.deid_secret())


def sim_events(n: int, malformed: float, seed: int) -> list:
    # start two hours back so that "future" malformed events are in the future whatever the date
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=2)
    return CitySimulator(CFG, seed=seed, start=start, malformed_share=malformed).take(n)


def expected_window_sums(produced: list[Produced]) -> tuple[Counter, defaultdict]:
    """Per (district, indicator, window start): the count and sum of the valid events."""
    counts: Counter = Counter()
    sums: defaultdict = defaultdict(float)
    for p in produced:
        if p.event.malformed is None:
            ev = CityEvent.model_validate_json(p.event.value)
            ind = CFG.indicators[ev.indicator]
            canonical = ind.to_canonical(ev.value, ev.unit)
            ts = ev.event_time.timestamp()
            key = (ev.district, ev.indicator, ts - ts % 60)
            counts[key] += 1
            sums[key] += canonical
    return counts, sums


def window_sums(vitals: list[DistrictVitals]) -> tuple[Counter, defaultdict]:
    """Counts and sums per window; a window published twice (at-least-once) counts once."""
    latest = {(v.district, v.window_start): v for v in vitals}
    counts: Counter = Counter()
    sums: defaultdict = defaultdict(float)
    for v in latest.values():
        for code, iv in v.indicators.items():
            if iv.minute is not None:
                key = (v.district, code, v.window_start.timestamp())
                counts[key] += iv.minute.count
                sums[key] += iv.minute.sum
    return counts, sums


def input_committed(bootstrap: str, app_id: str, produced: list[Produced]) -> bool:
    """Whether the worker has committed every produced event's offset: it commits a
    batch only once its outputs are acknowledged (streams/kafka/feed.py), so nothing
    it wrote for them is still in flight."""
    from kafka.admin import KafkaAdminClient

    ends: dict[tuple[str, int], int] = {}
    for p in produced:
        ends[p.topic, p.partition] = max(ends.get((p.topic, p.partition), 0), p.offset + 1)
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        group = f"{app_id}-input"
        offsets = admin.list_group_offsets(group).get(group, {})
    finally:
        admin.close()
    committed = {(tp.topic, tp.partition): meta.offset for tp, meta in offsets.items()}
    return all(committed.get(tp, -1) >= end for tp, end in ends.items())


def all_windows_published(
    bootstrap: str, expected: Counter, timeout: float = 90
) -> list[DistrictVitals]:
    """Read city.vitals until every expected window has been published."""
    got: list[DistrictVitals] = []
    missing: set = set()

    def done() -> bool:
        values = run(read_topic(bootstrap, VITALS_TOPIC, idle_s=1))
        got[:] = [DistrictVitals.model_validate_json(v) for v in values]
        counts, _ = window_sums(got)
        missing.clear()
        missing.update(set(expected) - set(counts))
        return not missing

    try:
        wait_for(done, timeout=timeout, what="every window on city.vitals", interval=2)
    except AssertionError as exc:
        dead = [
            DeadLetter.model_validate_json(v) for v in run(read_topic(bootstrap, DEADLETTER_TOPIC))
        ]
        found = [
            (d.reason.value, d.origin.topic, d.origin.partition, d.origin.offset, d.detail)
            for d in dead
        ]
        raise AssertionError(
            f"{exc}: {len(missing)} missing, e.g. {sorted(missing)[:5]}; dead letters: {found[:5]}"
        ) from None
    return got


def test_ten_thousand_events_with_five_percent_malformed_every_event_is_accounted_for(
    broker_bootstrap: str, worker: Worker, fresh_topics: None
) -> None:
    events = sim_events(10_000, 0.05, seed=11)
    produced = run(produce(broker_bootstrap, events))
    malformed = {
        (p.topic, p.partition, p.offset): p.event.malformed for p in produced if p.event.malformed
    }
    assert 400 <= len(malformed) <= 600
    worker.start()
    expected_counts, expected_sums = expected_window_sums(produced)
    vitals = all_windows_published(broker_bootstrap, expected_counts)

    # every malformed event is on the dead-letter topic, with its reason and original bytes
    dead = [
        DeadLetter.model_validate_json(v)
        for v in run(read_topic(broker_bootstrap, DEADLETTER_TOPIC))
    ]
    by_origin = {(d.origin.topic, d.origin.partition, d.origin.offset): d for d in dead}
    assert set(by_origin) == set(malformed)
    for where, reason in malformed.items():
        assert by_origin[where].reason.value == reason, by_origin[where].detail
    originals = {(p.topic, p.partition, p.offset): (p.event.key, p.event.value) for p in produced}
    sealer = worker_sealer()
    assert all(
        sealer.open("{}:{}:{}".format(*k), d.sealed) == originals[k] for k, d in by_origin.items()
    )

    # every valid event became exactly one reading, on its district's partition ...
    records = run(read_records(broker_bootstrap, READINGS_TOPIC))
    readings = [Reading.model_validate_json(r.value) for r in records]
    input_partition = {p.event.key: p.partition for p in produced}
    assert all(r.partition == input_partition[r.key] for r in records)
    valid = len(produced) - len(malformed)
    assert len(readings) == valid
    assert len({r.event_id for r in readings}) == valid

    # ... and is counted in exactly one window, with the right sums
    counts, sums = window_sums(vitals)
    assert counts == expected_counts
    for key, total in expected_sums.items():
        assert sums[key] == pytest.approx(total, rel=1e-9, abs=1e-6)
    assert len({(v.district, v.window_start) for v in vitals}) == len(
        vitals
    )  # one record per window
    assert worker.metric("cityvitals_ingest_deadletters_total") == len(malformed)
    assert worker.metric("cityvitals_city_composite_index") > 0


def test_worker_restarts_graceful_and_sigkill_lose_nothing_and_count_nothing_twice(
    broker_bootstrap: str, worker: Worker, fresh_topics: None
) -> None:
    events = sim_events(12_000, 0.0, seed=23)
    first, second, third = events[:4_000], events[4_000:8_000], events[8_000:]
    produced = run(produce(broker_bootstrap, first))
    worker.start()
    wait_for(
        lambda: worker.metric("cityvitals_ingest_readings_total") >= len(first), 60, "first third"
    )
    worker.stop(signal.SIGTERM)  # graceful

    produced += run(produce(broker_bootstrap, second))
    worker.forget_group()
    worker.start()
    # SIGKILL in the middle of the second third: offsets not yet committed are redelivered
    wait_for(
        lambda: worker.metric("cityvitals_ingest_readings_total") > 500, 60, "processing to resume"
    )
    # the graceful stop committed everything it had handled: nothing was read twice
    assert worker.metric("cityvitals_ingest_duplicates_skipped_total") == 0
    worker.stop(signal.SIGKILL)

    produced += run(produce(broker_bootstrap, third))
    # begin again at offset 0, so that every event handled before is seen again
    worker.forget_group(input_offsets=True)
    worker.start()
    expected_counts, expected_sums = expected_window_sums(produced)
    all_windows_published(broker_bootstrap, expected_counts)
    # a record the worker has not handled yet would still show up as an extra window
    wait_for(
        lambda: input_committed(broker_bootstrap, worker.app_id, produced),
        60,
        "every event handled and its offset committed",
    )
    vitals = [
        DistrictVitals.model_validate_json(v)
        for v in run(read_topic(broker_bootstrap, VITALS_TOPIC))
    ]

    dead = [
        DeadLetter.model_validate_json(v)
        for v in run(read_topic(broker_bootstrap, DEADLETTER_TOPIC))
    ]
    assert [(d.reason.value, d.detail) for d in dead] == []  # nothing malformed, nothing late
    counts, sums = window_sums(vitals)
    assert counts == expected_counts, "a window was counted twice or lost an event"
    for key, total in expected_sums.items():
        assert sums[key] == pytest.approx(total, rel=1e-9, abs=1e-6)
    readings = [
        orjson.loads(v)["event_id"] for v in run(read_topic(broker_bootstrap, READINGS_TOPIC))
    ]
    # every event once at least on the readings topic (a redelivered batch may repeat)
    ids = {CityEvent.model_validate_json(p.event.value).event_id for p in produced}
    missing, extra = sorted(ids - set(readings)), sorted(set(readings) - ids)
    assert (len(missing), len(extra)) == (0, 0), f"missing {missing[:5]}, extra {extra[:5]}"
    # the restarts began at offset 0: the table recognised what it had already applied
    assert worker.metric("cityvitals_ingest_duplicates_skipped_total") >= len(first)


def test_scripted_incidents_pull_down_the_vital_signs_of_their_district(
    broker_bootstrap: str, worker: Worker, fresh_topics: None
) -> None:
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=3)
    sim = CitySimulator(CFG, seed=3, start=start)
    run(produce(broker_bootstrap, sim.events(timedelta(minutes=50))))
    worker.start()
    wait_for(
        lambda: worker.metric("cityvitals_vitals_windows_closed_total") >= 10 * 48,
        120,
        "50 minutes of vitals",
    )
    vitals = [
        DistrictVitals.model_validate_json(v)
        for v in run(read_topic(broker_bootstrap, VITALS_TOPIC))
    ]

    domain_of = {
        "building_fire": "fire",
        "air_quality_episode": "environment",
        "bin_overflow": "sanitation",
        "water_main_burst": "utilities",
    }
    for incident in sim.incidents:
        domain = domain_of[incident.kind]
        series = [
            v
            for v in vitals
            if v.district == incident.district and v.domains.get(domain) is not None
        ]
        during = [
            v.domains[domain] for v in series if incident.start < v.window_end <= incident.end
        ]
        before = [v.domains[domain] for v in series if v.window_end <= incident.start]
        assert during, incident
        assert min(during) < 60, (incident.kind, incident.district, min(during))
        if before:
            baseline = statistics.median(before)
            assert baseline >= 65, (incident.kind, incident.district, baseline)
            assert min(during) < baseline - 15
