"""The worker's metrics without a broker: table sizes, scoring time, Faust's monitor, the
exposition's validity, per-district and lag series after a rebalance, and readiness."""

from __future__ import annotations

import asyncio
import dataclasses
import subprocess
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiokafka import TopicPartition
from faust.sensors.prometheus import PrometheusMonitor
from faust.serializers import codecs
from prometheus_client import generate_latest

from streams.alerting.detection import DetectionContext, DistrictDetection
from streams.alerting.rules import load_thresholds
from streams.core import metrics
from streams.core.config import load_config
from streams.core.settings import Settings
from streams.kafka import sensors
from streams.kafka.feed import InputFeed, Outputs, key_partition
from streams.kafka.processor import VitalsProcessor
from streams.kafka.tables import DETECTION_TABLE, NOTIFY_TABLE, TABLE_NAME
from streams.kafka.worker import Readiness, create_app
from streams.state.windows import ClosedWindow, DistrictWindows
from tests.test_deploy import ensure_tool

CFG = load_config()
RULES = load_thresholds(CFG)
CTX = DetectionContext(CFG, RULES)
PARTITIONS = 4
T0 = 1_795_000_000.0 - 1_795_000_000.0 % 60


def sample(name: str, **labels: str) -> float:
    value = metrics.REGISTRY.get_sample_value(name, labels)
    return 0.0 if value is None else value


def series(gauge: Any) -> dict[tuple[str, ...], float]:
    """label values -> value of every child of a labelled metric."""
    return {tuple(s.labels.values()): s.value for family in gauge.collect() for s in family.samples}


def minute(i: int, district: str = "339901", **values: float) -> ClosedWindow:
    start = T0 + 60 * i
    aggs = {k.replace("_", ".", 1): [1, v, v, v] for k, v in values.items()}
    return ClosedWindow(district, start, start + 60, aggs, aggs)


def processor(detection_table: dict[bytes, DistrictDetection] | None = None) -> VitalsProcessor:
    def outputs() -> Outputs:
        raise AssertionError("no output in these tests")

    return VitalsProcessor(
        {},
        CFG,
        Settings(partitions=PARTITIONS),
        outputs=outputs,
        progress=lambda topic, partition: (None, None),
        detection_table=detection_table if detection_table is not None else {},
        detection=CTX,
    )


def by_partition() -> dict[int, list[str]]:
    out: dict[int, list[str]] = {}
    for district in CFG.districts:
        out.setdefault(key_partition(district.encode(), PARTITIONS), []).append(district)
    return out


# --- names and exposition ------------------------------------------------------------


def test_new_metrics_follow_the_naming_conventions_and_exist_for_every_label_value() -> None:
    assert metrics.TABLES == (TABLE_NAME, DETECTION_TABLE, NOTIFY_TABLE)
    assert set(series(metrics.table_keys)) == {(t,) for t in metrics.TABLES}
    families = {f.name: f for f in metrics.REGISTRY.collect()}
    scoring = families["cityvitals_detection_scoring_duration_seconds"]
    assert scoring.type == "histogram" and scoring.documentation
    assert {s.labels["family"] for s in scoring.samples if s.name.endswith("_count")} == set(
        metrics.DETECTOR_FAMILIES
    )
    sizes = families["cityvitals_pipeline_table_value_bytes"]
    assert sizes.type == "histogram"
    assert {s.labels["table"] for s in sizes.samples if s.name.endswith("_count")} == set(
        metrics.TABLES
    )
    assert families["cityvitals_pipeline_table_keys"].type == "gauge"
    assert families["cityvitals_pipeline_partitions_owned"].type == "gauge"


def test_the_exposition_with_faust_s_metrics_is_valid_and_only_faust_s_names_are_linted() -> None:
    create_app(Settings(app_id="cv-metrics-lint", partitions=PARTITIONS), CFG)
    text = generate_latest(metrics.REGISTRY)
    names = {f.name for f in metrics.REGISTRY.collect()}
    faust_names = {n for n in names if n.startswith(sensors.FAUST_PREFIX + "_")}
    assert "cityvitals_faust_table_operations" in faust_names and len(faust_names) >= 20
    promtool = ensure_tool("promtool", "prometheus")
    proc = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, timeout=60
    )
    problems = (proc.stdout + proc.stderr).decode().splitlines()
    # exit status 3 is a lint finding; a parse error would be 1
    assert proc.returncode == 3, problems
    assert problems == [
        "cityvitals_faust_events_runtime_ms metric names should not contain abbreviated units"
    ]


def test_faust_s_monitor_writes_to_the_worker_s_registry() -> None:
    app = create_app(Settings(app_id="cv-metrics-monitor", partitions=PARTITIONS), CFG)
    monitor = app.monitor
    assert isinstance(monitor, PrometheusMonitor)
    # one set of Faust metrics per process, one sensor per app
    other = create_app(Settings(app_id="cv-metrics-monitor-2", partitions=PARTITIONS), CFG)
    assert other.monitor is not monitor
    labels = {"table": f"table.{TABLE_NAME}", "operation": "keys_updated"}
    before = sample("cityvitals_faust_table_operations_total", **labels)
    monitor.on_table_set(app.tables[TABLE_NAME], b"339901", None)
    assert sample("cityvitals_faust_table_operations_total", **labels) == before + 1


# --- table sizes -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("codec", "table", "value"),
    [
        (
            "district_windows",
            TABLE_NAME,
            DistrictWindows("339901", window_s=60, rolling_windows=15),
        ),
        ("district_detection", DETECTION_TABLE, DistrictDetection("339901")),
    ],
)
def test_every_table_write_observes_its_serialised_size(codec: str, table: str, value: Any) -> None:
    count = sample("cityvitals_pipeline_table_value_bytes_count", table=table)
    total = sample("cityvitals_pipeline_table_value_bytes_sum", table=table)
    data = codecs.get_codec(codec).dumps(value)
    assert sample("cityvitals_pipeline_table_value_bytes_count", table=table) == count + 1
    assert sample("cityvitals_pipeline_table_value_bytes_sum", table=table) == total + len(data)


def test_owned_keys_counts_only_the_keys_of_the_given_partitions() -> None:
    proc = processor()
    parts = by_partition()
    table = {d.encode(): object() for d in CFG.districts}
    table[b"not-a-district"] = object()  # hashed like any other key
    stray = key_partition(b"not-a-district", PARTITIONS)
    for owned in ({0}, {1, 2}, set(range(PARTITIONS)), set()):
        expected = sum(len(parts.get(p, [])) for p in owned) + (stray in owned)
        assert proc.reports.owned_keys(table, frozenset(owned)) == expected


# --- scoring time ----------------------------------------------------------------------


def scoring_counts() -> dict[str, float]:
    return {
        f: sample("cityvitals_detection_scoring_duration_seconds_count", family=f)
        for f in metrics.DETECTOR_FAMILIES
    }


def test_each_fed_window_is_timed_once_per_enabled_detector_family() -> None:
    det = DistrictDetection("339901")
    before = scoring_counts()
    threshold_s = sample("cityvitals_detection_scoring_duration_seconds_sum", family="threshold")
    for i in range(3):
        det.on_window(minute(i, iot_pm25=200.0 + 20 * i, traffic_speed_kmh=40), CTX)
    det.on_window(minute(2, iot_pm25=260.0), CTX)  # closed again after a crash: skipped
    assert {f: n - before[f] for f, n in scoring_counts().items()} == {
        f: 3 for f in metrics.DETECTOR_FAMILIES
    }
    assert sample("cityvitals_detection_scoring_duration_seconds_sum", family="threshold") > (
        threshold_s
    )

    plain = DetectionContext(CFG, RULES, anomaly=None, forecast_horizon_s=0)
    before = scoring_counts()
    DistrictDetection("339902").on_window(minute(0, "339902", iot_pm25=30.0), plain)
    assert {f: n - before[f] for f, n in scoring_counts().items()} == {
        "threshold": 1,
        "forecast": 0,
        "anomaly": 0,
        "data_quality": 1,
        "composite": 1,
        "public_opinion": 1,
    }


# --- rebalances ------------------------------------------------------------------------


def test_released_districts_disappear_and_only_the_kept_ones_come_back() -> None:
    parts = by_partition()
    kept, lost = parts[min(parts)][0], parts[max(parts)][0]
    kept_partition = min(parts)
    # an open grade III alert in the kept district, from its detection state
    det = DistrictDetection(kept)
    window = minute(0, kept, fire_smoke_alarms=3)
    street = next(s for s, d in CFG.city.street_district.items() if d == kept)
    window.minute[f"fire.smoke_alarms@{street}"] = [3, 3.0, 1.0, 1.0]
    (alert,) = det.on_window(window, dataclasses.replace(CTX, early=False))  # judged at close
    proc = processor({kept.encode(): det})
    # the registry is the process's: start from no district, whatever earlier tests set
    for gauge in (metrics.composite_index, metrics.vital_index, metrics.watermark_lag):
        gauge.clear()
    metrics.open_alerts.clear()
    for district, value in ((kept, 71.5), (lost, 42.0)):
        metrics.composite_index.labels(district).set(value)
        metrics.vital_index.labels(district, "air").set(value - 1)
        metrics.watermark_lag.labels(district).set(180.0)
        metrics.open_alerts.labels(district, "IV").set(2)

    proc.reports.release()
    for gauge in (metrics.composite_index, metrics.vital_index, metrics.watermark_lag):
        assert series(gauge) == {}
    assert series(metrics.open_alerts) == {}

    proc.reports.take(frozenset({kept_partition}))
    assert series(metrics.composite_index) == {(kept,): 71.5}
    assert series(metrics.vital_index) == {(kept, "air"): 70.5}
    assert series(metrics.watermark_lag) == {(kept,): 180.0}
    # open alerts come from the recovered state, not from the last value set
    assert series(metrics.open_alerts) == {
        (kept, g): float(g == alert.grade.roman) for g in ("I", "II", "III", "IV")
    }
    # a later rebalance that keeps nothing restores nothing
    proc.reports.release()
    proc.reports.take(frozenset())
    assert series(metrics.composite_index) == {} and series(metrics.open_alerts) == {}


class FakeConsumer:
    """What InputFeed asks of aiokafka's consumer when it assigns and reports lag."""

    def __init__(self) -> None:
        self.highwaters: dict[TopicPartition, int] = {}
        self.assigned: list[TopicPartition] = []

    def assign(self, tps: list[TopicPartition]) -> None:
        self.assigned = list(tps)

    async def position(self, tp: TopicPartition) -> int:
        return 10

    def highwater(self, tp: TopicPartition) -> int | None:
        return self.highwaters.get(tp)

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        return None


def run(step: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(step())


def test_lag_series_of_partitions_given_up_are_removed() -> None:
    topics = ("test.lag-a", "test.lag-b")

    async def nothing(records: Any = None) -> None:
        return None

    feed = InputFeed(
        bootstrap="unused:9092",
        group_id="unused",
        topics=topics,
        handler=nothing,
        flush_state=nothing,
    )
    consumer = FakeConsumer()
    feed._consumer = consumer

    def lag() -> dict[tuple[str, ...], float]:
        return {k: v for k, v in series(metrics.consumer_lag).items() if k[0] in topics}

    async def steps() -> None:
        await feed.assign({0, 1})
        for tp in consumer.assigned:
            consumer.highwaters[tp] = 15
        feed._report_lag()
        assert lag() == {(t, str(p)): 5.0 for t in topics for p in (0, 1)}
        await feed.assign({1, 2})  # 0 moved to another worker, 2 came here
        assert lag() == {(t, "1"): 5.0 for t in topics}
        await feed.revoke()
        assert lag() == {}

    run(steps)


def test_readiness_follows_every_rebalance_and_a_worker_without_partitions_is_ready() -> None:
    state = {"rebalancing": False, "recovered": False}
    ready = Readiness(lambda: state["rebalancing"], lambda: state["recovered"])
    assert not ready()  # before the first assignment

    def rebalance_starts() -> None:  # Faust's flag first, then the revocation handler
        state["rebalancing"] = True
        ready.revoked()

    def rebalance_completes(epoch: int) -> None:  # inputs taken, then Faust's recovery ends
        ready.settled(epoch)
        assert not ready()
        state["rebalancing"], state["recovered"] = False, True

    rebalance_starts()
    rebalance_completes(ready.epoch)
    assert ready()

    rebalance_starts()
    assert not ready()  # revoked: not ready until this rebalance completes
    rebalance_completes(ready.epoch)  # with no partition at all: a standby is ready too
    assert ready()

    # inputs taken for a rebalance that another one superseded meanwhile settle nothing
    rebalance_starts()
    stale = ready.epoch
    rebalance_starts()
    ready.settled(stale)
    state["rebalancing"] = False
    assert not ready()
    ready.settled(ready.epoch)
    assert ready()


def test_a_rebalance_completing_after_the_next_one_began_takes_no_inputs() -> None:
    """Faust signals a superseded rebalance's completion too; its partitions are being
    recovered again by the newer one, and input read meanwhile would be overwritten."""
    ready = Readiness(lambda: True, lambda: True)
    ready.revoked()  # rebalance 1: revocation, then Faust begins the assignment
    ready.assigning()
    assert ready.current()  # its completion takes the inputs
    ready.revoked()  # rebalance 2 revokes before rebalance 1's recovery completes
    assert not ready.current()  # rebalance 1's late completion takes nothing
    ready.assigning()
    assert ready.current()  # rebalance 2's completion does
