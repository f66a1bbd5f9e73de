"""A second worker joins the group on the real broker: the first one is not ready during
the rebalance and ready after it, and the two never report the same district or
partition."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from streams.core.config import load_config
from streams.kafka.feed import key_partition
from streams.sim.simulator import CitySimulator
from tests.harness import PARTITIONS, Worker, produce, run, wait_for, worker_pair

pytestmark = pytest.mark.broker
CFG = load_config()
DISTRICT_SERIES = (
    "cityvitals_city_vital_index",
    "cityvitals_city_composite_index",
    "cityvitals_vitals_watermark_lag_seconds",
    "cityvitals_alerts_open",
)


def scrape(worker: Worker) -> dict[str, list[dict[str, str]]]:
    """Metric name -> the label sets of its samples, from the worker's /metrics."""
    text = httpx.get(f"http://127.0.0.1:{worker.web_port}/metrics", timeout=5).text
    out: dict[str, list[dict[str, str]]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, []).append({**s.labels, "value": str(s.value)})
    return out


def districts(worker: Worker) -> dict[str, set[str]]:
    """Per per-district series, the districts a worker reports."""
    scraped = scrape(worker)
    return {name: {s["district"] for s in scraped.get(name, [])} for name in DISTRICT_SERIES}


def lag_partitions(worker: Worker) -> set[int]:
    """The partitions a worker reports a backlog of (after its first fetch of them)."""
    lag = scrape(worker).get("cityvitals_pipeline_consumer_lag_records", [])
    return {int(s["partition"]) for s in lag}


def gauge(worker: Worker, name: str, **labels: str) -> float:
    (value,) = [
        float(s["value"])
        for s in scrape(worker)[name]
        if all(s.get(k) == v for k, v in labels.items())
    ]
    return value


@pytest.fixture
def two_workers(
    broker_bootstrap: str, tmp_path: Path, fresh_topics: None
) -> Iterator[tuple[Worker, Worker]]:
    a, b = worker_pair(broker_bootstrap, tmp_path, {"CITYVITALS_IDLE_CLOSE_S": "5"})
    yield a, b
    a.stop(signal.SIGKILL)
    b.stop(signal.SIGKILL)


def test_a_rebalance_makes_workers_unready_until_done_and_moves_district_series(
    broker_bootstrap: str, two_workers: tuple[Worker, Worker]
) -> None:
    first, second = two_workers
    everything = set(CFG.districts)
    first.start()
    sim = CitySimulator(CFG, seed=7, start=datetime.now(UTC) - timedelta(hours=3))
    run(produce(broker_bootstrap, sim.events(timedelta(minutes=6))))
    # every district's windows closed (the last ones after 5 s of silence)
    wait_for(
        lambda: districts(first)["cityvitals_city_composite_index"] == everything,
        60,
        "the first worker to report every district",
    )
    assert gauge(first, "cityvitals_pipeline_partitions_owned") == PARTITIONS
    assert gauge(first, "cityvitals_pipeline_table_keys", table="district-windows") == len(
        everything
    )
    assert lag_partitions(first) == set(range(PARTITIONS))

    statuses: list[int] = []
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            try:
                r = httpx.get(f"http://127.0.0.1:{first.web_port}/readyz", timeout=2)
                statuses.append(r.status_code)
            except httpx.HTTPError:
                statuses.append(0)
            time.sleep(0.1)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    try:
        second.start()  # returns once it is ready: the rebalance has completed for it

        def first_ready_again() -> bool:
            return 503 in statuses and statuses[-1] == 200

        wait_for(first_ready_again, 60, "the first worker to be ready after the rebalance")
    finally:
        stop.set()
        poller.join(5)
    assert statuses[0] == 200 and 0 not in statuses  # ready before; /readyz answered always

    # each owns a share of the partitions, together all, none twice
    owned = {w.web_port: gauge(w, "cityvitals_pipeline_partitions_owned") for w in two_workers}
    assert sorted(owned.values()) == [PARTITIONS / 2, PARTITIONS / 2]
    parts: dict[int, set[int]] = {}

    def lag_split() -> bool:
        parts.update({w.web_port: lag_partitions(w) for w in two_workers})
        return parts[first.web_port] | parts[second.web_port] == set(range(PARTITIONS))

    wait_for(lag_split, 30, "both workers to report the backlog of their partitions")
    assert len(parts[first.web_port]) == len(parts[second.web_port]) == PARTITIONS / 2

    # the first worker reports only the districts of its partitions, with their last
    # values; the second reports the open alerts of its districts from their
    # restored state, before any new window
    def on(partitions: set[int]) -> set[str]:
        return {d for d in everything if key_partition(d.encode(), PARTITIONS) in partitions}

    kept = districts(first)
    for name in DISTRICT_SERIES:
        assert kept[name] == on(parts[first.web_port]), name
    taken = districts(second)
    assert taken["cityvitals_alerts_open"] == on(parts[second.web_port])
    for name in DISTRICT_SERIES:
        assert not kept[name] & taken[name], name
    keys = [
        gauge(w, "cityvitals_pipeline_table_keys", table="district-detection") for w in two_workers
    ]
    assert keys == [len(on(parts[w.web_port])) for w in two_workers]
