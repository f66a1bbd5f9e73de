"""Every Prometheus metric of cityvitals, defined once, with help text and labels.

Names follow Prometheus conventions (``cityvitals_<subsystem>_<name>_<unit>``,
``_total`` for counters, base units). Label values are bounded: topics, reasons,
districts, domains and indicators come from configuration, never from event data.

Faust's own metrics (its :class:`~faust.sensors.prometheus.PrometheusMonitor`)
join the same registry under ``cityvitals_faust_`` with Faust's names and units
(latencies in milliseconds), through :func:`streams.kafka.sensors.faust_monitor`.
"""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
)

# the *_created series double the exposition for no operational value
disable_created_metrics()

REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)  # process_* memory, CPU, open files of the worker
NAMESPACE = "cityvitals"

events_in = Counter(
    "events_in",
    "Raw events consumed, by input topic.",
    ["topic"],
    namespace=NAMESPACE,
    subsystem="ingest",
    registry=REGISTRY,
)
events_out = Counter(
    "events_out",
    "Records the worker published and the broker acknowledged, by output topic (readings, "
    "dead letters, vitals, alert events, notifications and their outcomes).",
    ["topic"],
    namespace=NAMESPACE,
    subsystem="pipeline",
    registry=REGISTRY,
)
readings_out = Counter(
    "readings",
    "Valid readings published on city.readings, by domain.",
    ["domain"],
    namespace=NAMESPACE,
    subsystem="ingest",
    registry=REGISTRY,
)
deadletters = Counter(
    "deadletters",
    "Events sent to city.deadletter, by reason.",
    ["reason"],
    namespace=NAMESPACE,
    subsystem="ingest",
    registry=REGISTRY,
)
identifiers_scrubbed = Counter(
    "identifiers_scrubbed",
    "Personal identifiers replaced by pseudonyms before publication.",
    namespace=NAMESPACE,
    subsystem="ingest",
    registry=REGISTRY,
)
duplicates_skipped = Counter(
    "duplicates_skipped",
    "Events reprocessed after a restart and recognised as already applied.",
    namespace=NAMESPACE,
    subsystem="ingest",
    registry=REGISTRY,
)
records_read_aside = Counter(
    "records_read_aside",
    "Records decoded, checked and de-identified (appeals also scored) by reader processes.",
    namespace=NAMESPACE,
    subsystem="ingest",
    registry=REGISTRY,
)
batch_reader_restarts = Counter(
    "batch_reader_restarts",
    "Times the reader processes failed a batch (the worker read it) and were restarted.",
    namespace=NAMESPACE,
    subsystem="ingest",
    registry=REGISTRY,
)
# -- records ahead of their stream, failures isolated, pauses -------------------------
held_records = Counter(
    "held_records",
    "Records ahead of their district's stream, by what became of them: held, confirmed "
    "(their stream caught up or went on from them), dropped (dead-lettered), full (no room "
    "to hold them: dead-lettered at once).",
    ["outcome"],
    namespace=NAMESPACE,
    subsystem="ingest",
    registry=REGISTRY,
)
batch_failures = Counter(
    "batch_failures",
    "Batches whose handling failed in a way no check foresaw, by what was done: "
    "split (retried in halves) or isolated (one record dead-lettered as unprocessable).",
    ["outcome"],
    namespace=NAMESPACE,
    subsystem="ingest",
    registry=REGISTRY,
)
state_degraded = Counter(
    "state_degraded",
    "Table values cut down to stay within their bound, by table (each also an audit "
    "record with what was dropped and why).",
    ["table"],
    namespace=NAMESPACE,
    subsystem="pipeline",
    registry=REGISTRY,
)
batch_retries = Counter(
    "batch_retries",
    "Batches read again, by why: broker (unavailable, the batch is retried) or pause "
    "(the worker was paused mid-batch and may have lost its partitions).",
    ["reason"],
    namespace=NAMESPACE,
    subsystem="ingest",
    registry=REGISTRY,
)
batch_size = Histogram(
    "batch_size_events",
    "Events per processed batch.",
    namespace=NAMESPACE,
    subsystem="ingest",
    buckets=(1, 10, 50, 100, 250, 500, 1000, 2000, 5000, 10_000),
    registry=REGISTRY,
)
batch_seconds = Histogram(
    "batch_duration_seconds",
    "Time to process one batch, including the awaited sends.",
    namespace=NAMESPACE,
    subsystem="ingest",
    registry=REGISTRY,
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
windows_closed = Counter(
    "windows_closed",
    "Event-time windows closed and published on city.vitals, by how.",
    ["trigger"],
    namespace=NAMESPACE,
    subsystem="vitals",
    registry=REGISTRY,
)
vital_index = Gauge(
    "vital_index",
    "District vital-sign sub-index per domain (0-100, 100 healthy).",
    ["district", "domain"],
    namespace=NAMESPACE,
    subsystem="city",
    registry=REGISTRY,
)
composite_index = Gauge(
    "composite_index",
    "District composite vital-sign index (0-100, 100 healthy).",
    ["district"],
    namespace=NAMESPACE,
    subsystem="city",
    registry=REGISTRY,
)
watermark_lag = Gauge(
    "watermark_lag_seconds",
    "Wall clock minus the end of the district's latest closed window, when it closed: how "
    "long the district's windows wait for its slowest active source and the lateness.",
    ["district"],
    namespace=NAMESPACE,
    subsystem="vitals",
    registry=REGISTRY,
)
window_close_delay = Histogram(
    "window_close_delay_seconds",
    "Wall time minus a window's end when it closed, by trigger (watermark, idle, overflow): "
    "how long the window's minute waited for its slowest active source and the lateness.",
    ["trigger"],
    namespace=NAMESPACE,
    subsystem="vitals",
    buckets=(1, 5, 15, 30, 60, 90, 120, 150, 180, 240, 300, 600, 1800, 3600),
    registry=REGISTRY,
)
alert_events = Counter(
    "alert_events",
    "Alert events published on city.emergency-command, by status, grade, kind and owning department.",
    ["status", "grade", "kind", "department"],
    namespace=NAMESPACE,
    subsystem="alerts",
    registry=REGISTRY,
)
open_alerts = Gauge(
    "open",
    "Open alerts per district and grade (I most serious).",
    ["district", "grade"],
    namespace=NAMESPACE,
    subsystem="alerts",
    registry=REGISTRY,
)
actions_applied = Counter(
    "actions_applied",
    "Operator actions from city.alert-actions applied to alerts, by action.",
    ["action"],
    namespace=NAMESPACE,
    subsystem="alerts",
    registry=REGISTRY,
)
_RESPONSE_BUCKETS = (30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400, 43200, 86400)
time_to_acknowledge = Histogram(
    "time_to_acknowledge_seconds",
    "From an alert's first event to its first acknowledgement or dispatch, by owning department and grade.",
    ["department", "grade"],
    namespace=NAMESPACE,
    subsystem="alerts",
    buckets=_RESPONSE_BUCKETS,
    registry=REGISTRY,
)
time_to_resolve = Histogram(
    "time_to_resolve_seconds",
    "From an alert's first event to its closing (resolved or false positive), by owning department and grade.",
    ["department", "grade"],
    namespace=NAMESPACE,
    subsystem="alerts",
    buckets=_RESPONSE_BUCKETS,
    registry=REGISTRY,
)
alerts_closed = Counter(
    "closed",
    "Alerts closed, by owning department, grade and outcome (resolved by an operator, "
    "false_positive, or cleared when the condition ended).",
    ["department", "grade", "outcome"],
    namespace=NAMESPACE,
    subsystem="alerts",
    registry=REGISTRY,
)
api_refusals = Counter(
    "refusals",
    "Command-centre API requests refused, by HTTP status (401 unauthenticated, 403 out of scope).",
    ["status"],
    namespace=NAMESPACE,
    subsystem="api",
    registry=REGISTRY,
)
stream_overflows = Counter(
    "stream_overflows",
    "Live-stream clients disconnected because they fell more than CITYVITALS_STREAM_QUEUE "
    "events behind (each is told so and resumes from its Last-Event-ID).",
    namespace=NAMESPACE,
    subsystem="api",
    registry=REGISTRY,
)
notify_planned = Counter(
    "planned",
    "Notifications written to the outbox, by receiver and reason (group_wait, "
    "group_interval, repeat, escalation).",
    ["receiver", "reason"],
    namespace=NAMESPACE,
    subsystem="notify",
    registry=REGISTRY,
)
notify_deliveries = Counter(
    "deliveries",
    "Notification outcomes by receiver: delivered, or dead after the last attempt.",
    ["receiver", "outcome"],
    namespace=NAMESPACE,
    subsystem="notify",
    registry=REGISTRY,
)
notify_seconds = Histogram(
    "delivery_seconds",
    "From a notification's first attempt to its outcome, by receiver.",
    ["receiver"],
    namespace=NAMESPACE,
    subsystem="notify",
    buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600),
    registry=REGISTRY,
)
notify_escalations_dropped = Counter(
    "escalations_dropped",
    "Alerts that stopped escalating one by one because their district had more than "
    "500 unacknowledged alerts (the least serious, newest first).",
    namespace=NAMESPACE,
    subsystem="notify",
    registry=REGISTRY,
)
consumer_lag = Gauge(
    "consumer_lag_records",
    "Records of a partition this worker reads that it has not handled yet (log end minus "
    "next offset), by topic and partition; input, alert and outbox feeds.",
    ["topic", "partition"],
    namespace=NAMESPACE,
    subsystem="pipeline",
    registry=REGISTRY,
)
event_to_alert = Histogram(
    "event_to_alert_seconds",
    "From the event time of the reading that raised an alert to the alert's publication, by "
    "kind and rule class: reading (a rule on each reading) and monotone (a window maximum or "
    "minimum) decided on the reading itself, window (decided when a window closed, timed from "
    "the window's end), model (anomaly, trend, composite and data-quality findings).",
    ["kind", "rule_class"],
    namespace=NAMESPACE,
    subsystem="alerts",
    buckets=(0.25, 0.5, 1, 2, 5, 15, 30, 60, 120, 180, 300, 600, 1800, 3600, 21600, 86400),
    registry=REGISTRY,
)
early_mismatches = Counter(
    "early_mismatches",
    "Transitions raised on a reading that the window's close then did not confirm (0 unless "
    "the early decision logic is wrong; the alert event stays as raised).",
    namespace=NAMESPACE,
    subsystem="detection",
    registry=REGISTRY,
)

TABLES = ("district-windows", "district-detection", "notify-groups")
table_keys = Gauge(
    "table_keys",
    "Keys (districts) of a Faust table in the partitions this worker owns and processes, by table.",
    ["table"],
    namespace=NAMESPACE,
    subsystem="pipeline",
    registry=REGISTRY,
)
table_value_bytes = Histogram(
    "table_value_bytes",
    "Serialised size of each value written to a Faust table (one changelog record), by table.",
    ["table"],
    namespace=NAMESPACE,
    subsystem="pipeline",
    buckets=(256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304),
    registry=REGISTRY,
)
partitions_owned = Gauge(
    "partitions_owned",
    "Partitions (of every co-partitioned topic) this worker owns and processes; 0 while it "
    "rebalances, and on a standby worker.",
    namespace=NAMESPACE,
    subsystem="pipeline",
    registry=REGISTRY,
)
DETECTOR_FAMILIES = (
    "threshold",
    "forecast",
    "anomaly",
    "data_quality",
    "composite",
    "public_opinion",
)
scoring_seconds = Histogram(
    "scoring_duration_seconds",
    "Time detection takes on one closed district window, by detector family (threshold "
    "rules, trend forecasts, anomaly models, data-quality silence checks, composite "
    "weak-signal correlation, public-opinion warnings from appeals).",
    ["family"],
    namespace=NAMESPACE,
    subsystem="detection",
    buckets=(1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 0.01, 0.025, 0.1),
    registry=REGISTRY,
)
for _family in DETECTOR_FAMILIES:
    scoring_seconds.labels(_family)  # each family's series exists from the start
for _table in TABLES:
    table_keys.labels(_table)
    table_value_bytes.labels(_table)
    state_degraded.labels(_table)
for _outcome in ("held", "confirmed", "dropped", "full"):
    held_records.labels(_outcome)
for _outcome in ("split", "isolated"):
    batch_failures.labels(_outcome)
for _reason in ("broker", "pause"):
    batch_retries.labels(_reason)

# --- bounded table values (streams.alerting.lifecycle.fit) -------------------------------------------
# One changelog record per table value: Kafka refuses a record over its message size
# limit, and a refused changelog write stops the worker. This shows how close each table
# comes; ``state_degraded`` (above) counts the values that had to be shrunk to fit.
table_value_max_bytes = Gauge(
    "table_value_max_bytes",
    "Largest serialised value written to a Faust table since the worker started, by table.",
    ["table"],
    namespace=NAMESPACE,
    subsystem="pipeline",
    registry=REGISTRY,
)
_table_value_max: dict[str, int] = {}
for _table in TABLES:
    table_value_max_bytes.labels(_table).set(0)


def observe_table_value(table: str, size: int) -> None:
    """One value of ``size`` bytes written to ``table``: its size histogram and the maximum."""
    table_value_bytes.labels(table).observe(size)
    if size > _table_value_max.get(table, -1):
        _table_value_max[table] = size
        table_value_max_bytes.labels(table).set(size)
