"""The cityvitals Grafana dashboards, as code.

``python deploy/grafana/dashboards.py`` writes ``deploy/grafana/dashboards/*.json``;
``--check`` only compares them with what this module generates (exit status 1 on
a difference). Grafana loads the JSON through the provider in
``deploy/grafana/provisioning/dashboards/cityvitals.yml``.

Queries use the recording rules of ``deploy/prometheus/rules/cityvitals-recording.yml``
where one exists, and the metrics of ``streams/core/metrics.py`` otherwise. Every
dashboard takes its Prometheus from the ``datasource`` variable, so the JSON can
also be imported into an existing Grafana.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from grafana_foundation_sdk.builders import bargauge, stat, statetimeline, table, timeseries
from grafana_foundation_sdk.builders.common import (
    ReduceDataOptions,
    StackingConfig,
    VizLegendOptions,
    VizTooltipOptions,
)
from grafana_foundation_sdk.builders.dashboard import (
    Dashboard,
    DatasourceVariable,
    QueryVariable,
    Row,
    ThresholdsConfig,
)
from grafana_foundation_sdk.builders.prometheus import Dataquery
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.common import (
    BarGaugeDisplayMode,
    BigValueColorMode,
    BigValueGraphMode,
    BigValueTextMode,
    LegendDisplayMode,
    LegendPlacement,
    SortOrder,
    StackingMode,
    TooltipDisplayMode,
    VisibilityMode,
    VizOrientation,
)
from grafana_foundation_sdk.models.dashboard import (
    DashboardCursorSync,
    DataSourceRef,
    DynamicConfigValue,
    Panel,
    RowPanel,
    Threshold,
    ThresholdsMode,
    ValueMap,
    ValueMappingResult,
    VariableOption,
    VariableRefresh,
    VariableSort,
)
from grafana_foundation_sdk.models.prometheus import Dataquery as PrometheusQuery
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

from streams.core.messages import GRADE_COLOURS, Grade

OUT_DIR = Path(__file__).resolve().parent / "dashboards"
DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
TAGS = ["cityvitals"]

# The public warning levels, the least serious first; their colours (the product's one
# table of labels) are also Grafana colour names.
GRADES = sorted(Grade, reverse=True)


def severity(grade: Grade) -> int:
    """How district:cityvitals_alerts_open_severity:max encodes a district's most serious
    open grade: 1 for IV up to 4 for I (0: none open)."""
    return len(Grade) + 1 - grade


def grade_label(grade: Grade) -> str:
    return f"{grade.roman} {GRADE_COLOURS[grade]}"


SEVERITY_MAPPING = ValueMap(
    options={
        "0": ValueMappingResult(text="none", color="green", index=0),
        **{
            str(severity(g)): ValueMappingResult(
                text=grade_label(g), color=GRADE_COLOURS[g], index=severity(g)
            )
            for g in GRADES
        },
    }
)
SEVERITY_TEXT = "0 none, then " + ", ".join(grade_label(g) for g in GRADES) + "."


# --- small helpers over the SDK's builders -----------------------------------------


def query(expr: str, legend: str = "", *, instant: bool = False) -> Dataquery:
    q = Dataquery().expr(expr).datasource(DATASOURCE)
    if legend:
        q = q.legend_format(legend)
    return q.instant() if instant else q.range()


def index_thresholds() -> ThresholdsConfig:
    """0-100 health: red below 40, orange below 60, yellow below 80, green above."""
    return (
        ThresholdsConfig()
        .mode(ThresholdsMode.ABSOLUTE)
        .steps(
            [
                Threshold(value=None, color="red"),
                Threshold(value=40, color="orange"),
                Threshold(value=60, color="yellow"),
                Threshold(value=80, color="green"),
            ]
        )
    )


def plain_thresholds(*steps: tuple[float, str]) -> ThresholdsConfig:
    return (
        ThresholdsConfig()
        .mode(ThresholdsMode.ABSOLUTE)
        .steps(
            [Threshold(value=None, color="green")] + [Threshold(value=v, color=c) for v, c in steps]
        )
    )


def grade_colour_overrides(panel: timeseries.Panel | stat.Panel) -> None:
    for grade in GRADES:  # the alert metrics' grade label is the Roman numeral
        colour = {"mode": "fixed", "fixedColor": GRADE_COLOURS[grade]}
        panel.override_by_name(grade.roman, [DynamicConfigValue(id_val="color", value=colour)])


def graph(
    title: str,
    description: str,
    targets: Sequence[Dataquery],
    *,
    unit: str = "short",
    width: int = 12,
    height: int = 8,
    stacked: bool = False,
    min_val: float | None = 0,
    max_val: float | None = None,
    thresholds: ThresholdsConfig | None = None,
) -> timeseries.Panel:
    panel = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .unit(unit)
        .span(width)
        .height(height)
        .line_width(1)
        .fill_opacity(10 if not stacked else 40)
        .legend(
            VizLegendOptions()
            .display_mode(LegendDisplayMode.LIST)
            .placement(LegendPlacement.BOTTOM)
            .show_legend(True)
        )
        .tooltip(VizTooltipOptions().mode(TooltipDisplayMode.MULTI).sort(SortOrder.DESCENDING))
    )
    if stacked:
        panel = panel.stacking(StackingConfig().mode(StackingMode.NORMAL))
    if min_val is not None:
        panel = panel.min(min_val)
    if max_val is not None:
        panel = panel.max(max_val)
    if thresholds is not None:
        panel = panel.thresholds(thresholds)
    for t in targets:
        panel = panel.with_target(t)
    return panel


def single_stat(
    title: str,
    description: str,
    targets: Sequence[Dataquery],
    *,
    unit: str = "short",
    width: int = 6,
    height: int = 5,
    thresholds: ThresholdsConfig | None = None,
    min_val: float | None = None,
    max_val: float | None = None,
    background: bool = False,
    sparkline: bool = False,
) -> stat.Panel:
    panel = (
        stat.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .unit(unit)
        .span(width)
        .height(height)
        .reduce_options(ReduceDataOptions().calcs(["lastNotNull"]).values(False))
        .color_mode(BigValueColorMode.BACKGROUND if background else BigValueColorMode.VALUE)
        .graph_mode(BigValueGraphMode.AREA if sparkline else BigValueGraphMode.NONE)
        .text_mode(BigValueTextMode.AUTO)
        .orientation(VizOrientation.AUTO)
    )
    if thresholds is not None:
        panel = panel.thresholds(thresholds)
    if min_val is not None:
        panel = panel.min(min_val)
    if max_val is not None:
        panel = panel.max(max_val)
    for t in targets:
        panel = panel.with_target(t)
    return panel


def bars(
    title: str,
    description: str,
    targets: Sequence[Dataquery],
    *,
    unit: str,
    width: int = 12,
    height: int = 8,
    thresholds: ThresholdsConfig | None = None,
    max_val: float | None = None,
) -> bargauge.Panel:
    panel = (
        bargauge.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .unit(unit)
        .span(width)
        .height(height)
        .min(0)
        .display_mode(BarGaugeDisplayMode.GRADIENT)
        .orientation(VizOrientation.HORIZONTAL)
        .reduce_options(ReduceDataOptions().calcs(["lastNotNull"]).values(False))
        .thresholds(thresholds or plain_thresholds())
    )
    if max_val is not None:
        panel = panel.max(max_val)
    for t in targets:
        panel = panel.with_target(t)
    return panel


def datasource_variable() -> DatasourceVariable:
    return DatasourceVariable("datasource").label("Prometheus").type("prometheus")


def label_variable(name: str, label: str, metric: str) -> QueryVariable:
    return (
        QueryVariable(name)
        .label(label)
        .datasource(DATASOURCE)
        .query(f"label_values({metric}, {name})")
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(VariableSort.NATURAL_ASC)
        .multi(True)
        .include_all(True)
        .all_value(".*")
        .current(VariableOption(selected=True, text="All", value="$__all"))
    )


def new_dashboard(uid: str, title: str, description: str) -> Dashboard:
    return (
        Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(TAGS)
        .editable()
        .tooltip(DashboardCursorSync.CROSSHAIR)
        .refresh("30s")
        .time("now-6h", "now")
        .timezone("browser")
        .with_variable(datasource_variable())
    )


# --- the dashboards ---------------------------------------------------------------

DISTRICT = 'district=~"$district"'
DEPARTMENT = 'department=~"$department"'


def city_vital_signs() -> Dashboard:
    d = (
        new_dashboard(
            "cityvitals-city",
            "City vital signs",
            "Each district's composite index and domain sub-indices (0-100, 100 healthy) "
            "and the city alerts open now.",
        )
        .with_variable(
            label_variable(
                "district", "District", "district:cityvitals_city_composite_index:current"
            )
        )
        .with_variable(
            label_variable(
                "domain", "Domain", "district_domain:cityvitals_city_vital_index:current"
            )
        )
    )
    d.with_row(Row("Now"))
    d.with_panel(
        single_stat(
            "City composite (mean of districts)",
            "Mean composite index over the districts that published a window in the last 5 minutes.",
            [query("city:cityvitals_city_composite_index:avg", instant=True)],
            thresholds=index_thresholds(),
            min_val=0,
            max_val=100,
            width=4,
            sparkline=True,
        )
    )
    d.with_panel(
        single_stat(
            "Worst district",
            "Lowest composite index among the districts.",
            [query("city:cityvitals_city_composite_index:min", instant=True)],
            thresholds=index_thresholds(),
            min_val=0,
            max_val=100,
            width=4,
            sparkline=True,
        )
    )
    open_by_grade = single_stat(
        "Open alerts by grade",
        "City alerts open now, by grade (I most serious).",
        [query("grade:cityvitals_alerts_open:sum", "{{grade}}", instant=True)],
        width=16,
        thresholds=plain_thresholds(),
    )
    grade_colour_overrides(open_by_grade)
    d.with_panel(open_by_grade)
    d.with_panel(
        single_stat(
            "Composite index per district",
            "Latest composite index of each district.",
            [
                query(
                    f"district:cityvitals_city_composite_index:current{{{DISTRICT}}}",
                    "{{district}}",
                    instant=True,
                )
            ],
            thresholds=index_thresholds(),
            min_val=0,
            max_val=100,
            width=24,
            height=6,
            background=True,
        )
    )
    d.with_panel(
        single_stat(
            "Most serious open grade per district",
            "The grade map: for each district, the most serious grade among its open alerts.",
            [
                query(
                    f"district:cityvitals_alerts_open_severity:max{{{DISTRICT}}}",
                    "{{district}}",
                    instant=True,
                )
            ],
            width=24,
            height=5,
            background=True,
            thresholds=plain_thresholds(),
        ).mappings([SEVERITY_MAPPING])
    )
    d.with_row(Row("Over time"))
    d.with_panel(
        graph(
            "Composite index per district",
            "Composite vital-sign index of each district, as published each closed minute.",
            [
                query(
                    f"district:cityvitals_city_composite_index:current{{{DISTRICT}}}",
                    "{{district}}",
                )
            ],
            max_val=100,
            thresholds=index_thresholds(),
        )
    )
    d.with_panel(
        graph(
            "Domain sub-index, mean of districts",
            "Each domain's sub-index averaged over the districts.",
            [query('domain:cityvitals_city_vital_index:avg{domain=~"$domain"}', "{{domain}}")],
            max_val=100,
        )
    )
    d.with_panel(
        graph(
            "Sub-index per district and domain",
            "Domain sub-index of each selected district.",
            [
                query(
                    f'district_domain:cityvitals_city_vital_index:current{{{DISTRICT}, domain=~"$domain"}}',
                    "{{district}} {{domain}}",
                )
            ],
            max_val=100,
            width=24,
            height=10,
        )
    )
    d.with_panel(
        statetimeline.Panel()
        .title("Most serious open grade per district over time")
        .description(SEVERITY_TEXT)
        .datasource(DATASOURCE)
        .span(24)
        .height(8)
        .mappings([SEVERITY_MAPPING])
        .thresholds(plain_thresholds())
        .show_value(VisibilityMode.NEVER)
        .with_target(
            query(f"district:cityvitals_alerts_open_severity:max{{{DISTRICT}}}", "{{district}}")
        )
    )
    new_alerts = graph(
        "New city alerts per hour by grade",
        "Alerts raised (firing events on city.emergency-command), per hour, by grade.",
        [
            query(
                'sum by (grade) (grade_status:cityvitals_alerts_alert_events:rate5m{status="firing"}) * 3600',
                "{{grade}}",
            )
        ],
        stacked=True,
        width=24,
    )
    grade_colour_overrides(new_alerts)
    d.with_panel(new_alerts)
    return d


def pipeline_health() -> Dashboard:
    instance = 'job="cityvitals", instance=~"$instance"'
    rate_window = "[$__rate_interval]"
    d = (
        new_dashboard(
            "cityvitals-pipeline",
            "Pipeline health",
            "cityvitals workers: throughput, event-time lag, batch latency, dead letters, "
            "notifications.",
        )
        .with_variable(label_variable("instance", "Worker", 'up{job="cityvitals"}'))
        .with_variable(
            label_variable("district", "District", "cityvitals_vitals_watermark_lag_seconds")
        )
    )
    d.with_row(Row("Overview"))
    d.with_panel(
        single_stat(
            "Workers up",
            "Workers Prometheus scraped successfully.",
            [query('sum(up{job="cityvitals"})', instant=True)],
            thresholds=ThresholdsConfig()
            .mode(ThresholdsMode.ABSOLUTE)
            .steps([Threshold(value=None, color="red"), Threshold(value=1, color="green")]),
        )
    )
    d.with_panel(
        single_stat(
            "Events in",
            "Raw events consumed per second, all topics and workers.",
            [query("sum(topic:cityvitals_ingest_events_in:rate1m)", instant=True)],
            unit="ops",
            sparkline=True,
        )
    )
    d.with_panel(
        single_stat(
            "Dead-letter ratio",
            "Share of the consumed events sent to city.deadletter over 5 minutes.",
            [query("sum(job:cityvitals_ingest_deadletter_ratio:rate5m)", instant=True)],
            unit="percentunit",
            thresholds=plain_thresholds((0.02, "yellow"), (0.05, "red")),
            sparkline=True,
        )
    )
    d.with_panel(
        single_stat(
            "Pipeline alerts firing",
            "Alerts of deploy/prometheus/rules/cityvitals-alerts.yml firing now.",
            [
                query(
                    'count(ALERTS{alertstate="firing", alertname=~"Cityvitals.*"}) or vector(0)',
                    instant=True,
                )
            ],
            thresholds=plain_thresholds((1, "red")),
            background=True,
        )
    )
    d.with_row(Row("Throughput"))
    d.with_panel(
        graph(
            "Events in per topic",
            "Raw events consumed per second from each city.events.* topic.",
            [query("topic:cityvitals_ingest_events_in:rate1m", "{{topic}}")],
            unit="ops",
            stacked=True,
        )
    )
    d.with_panel(
        graph(
            "Readings out per domain",
            "Valid readings published on city.readings per second, by domain.",
            [query("domain:cityvitals_ingest_readings:rate1m", "{{domain}}")],
            unit="ops",
            stacked=True,
        )
    )
    d.with_panel(
        graph(
            "Records out per topic",
            "Records published per second on each output topic, once the broker acknowledged them.",
            [
                query(
                    f"sum by (topic) (rate(cityvitals_pipeline_events_out_total{{{instance}}}{rate_window}))",
                    "{{topic}}",
                )
            ],
            unit="ops",
            stacked=True,
        )
    )
    d.with_panel(
        graph(
            "Events in per worker",
            "Raw events consumed per second by each worker.",
            [
                query(
                    f"sum by (instance) (rate(cityvitals_ingest_events_in_total{{{instance}}}{rate_window}))",
                    "{{instance}}",
                )
            ],
            unit="ops",
        )
    )
    d.with_panel(
        graph(
            "Windows published per minute",
            "District windows closed and published on city.vitals, by trigger "
            "(watermark, or idle after CITYVITALS_IDLE_CLOSE_S of silence).",
            [query("trigger:cityvitals_vitals_windows_closed:rate5m * 60", "{{trigger}}")],
            stacked=True,
        )
    )
    d.with_row(Row("Lag and latency"))
    d.with_panel(
        graph(
            "Watermark lag per district",
            "Wall clock minus the end of the district's latest published window, at "
            "publication. About window length plus allowed lateness when the input is live.",
            [
                query(
                    f"district:cityvitals_vitals_watermark_lag_seconds:current{{{DISTRICT}}}",
                    "{{district}}",
                )
            ],
            unit="s",
            thresholds=plain_thresholds((600, "red")),
        )
    )
    d.with_panel(
        graph(
            "Batch duration quantiles",
            "Time to process one input batch, including the awaited sends.",
            [
                query(
                    f"histogram_quantile({q}, sum by (le) (rate(cityvitals_ingest_batch_duration_seconds_bucket{{{instance}}}{rate_window})))",
                    f"p{round(q * 100)}",
                )
                for q in (0.5, 0.9, 0.99)
            ],
            unit="s",
        )
    )
    d.with_panel(
        graph(
            "Mean batch size",
            "Events per processed batch (at most CITYVITALS_BATCH_MAX).",
            [
                query(
                    f"sum(rate(cityvitals_ingest_batch_size_events_sum{{{instance}}}{rate_window}))"
                    f" / sum(rate(cityvitals_ingest_batch_size_events_count{{{instance}}}{rate_window}))",
                    "events per batch",
                )
            ],
        )
    )
    d.with_panel(
        graph(
            "Redelivered events skipped, identifiers scrubbed",
            "Events recognised as already applied after a restart, and personal "
            "identifiers replaced by pseudonyms, per second.",
            [
                query(
                    f"sum(rate(cityvitals_ingest_duplicates_skipped_total{{{instance}}}{rate_window}))",
                    "duplicates skipped",
                ),
                query(
                    f"sum(rate(cityvitals_ingest_identifiers_scrubbed_total{{{instance}}}{rate_window}))",
                    "identifiers scrubbed",
                ),
            ],
            unit="ops",
        )
    )
    d.with_row(Row("State and detection"))
    d.with_panel(
        graph(
            "Table keys",
            "Districts in each Faust table, counted by the worker that owns them: "
            "district-windows, district-detection, notify-groups.",
            [
                query(
                    f"sum by (table) (cityvitals_pipeline_table_keys{{{instance}}})",
                    "{{table}}",
                )
            ],
            width=6,
        )
    )
    d.with_panel(
        graph(
            "Partitions owned per worker",
            "Partitions each worker owns and processes: 0 during a rebalance, and on a "
            "standby worker (more workers than partitions).",
            [query(f"cityvitals_pipeline_partitions_owned{{{instance}}}", "{{instance}}")],
            width=6,
        )
    )
    d.with_panel(
        graph(
            "Table writes",
            "Bytes of table values written per second (one changelog record per write), by table.",
            [
                query(
                    f"sum by (table) (rate(cityvitals_pipeline_table_value_bytes_sum{{{instance}}}{rate_window}))",
                    "{{table}}",
                )
            ],
            unit="Bps",
            width=6,
        )
    )
    d.with_panel(
        graph(
            "Detection time per window, p99",
            "99th percentile of the time detection takes on one closed district window, by "
            "detector family.",
            [
                query(
                    f"histogram_quantile(0.99, sum by (family, le) (rate(cityvitals_detection_scoring_duration_seconds_bucket{{{instance}}}{rate_window})))",
                    "{{family}}",
                )
            ],
            unit="s",
            width=6,
        )
    )
    d.with_row(Row("Dead letters, actions and notifications"))
    d.with_panel(
        graph(
            "Dead letters by reason",
            "Events sent to city.deadletter per second, by the check that rejected them.",
            [query("reason:cityvitals_ingest_deadletters:rate5m", "{{reason}}")],
            unit="ops",
            stacked=True,
        )
    )
    d.with_panel(
        graph(
            "Webhook deliveries by outcome",
            "Notification webhook deliveries per second, by receiver and outcome.",
            [
                query(
                    f"sum by (receiver, outcome) (rate(cityvitals_notify_deliveries_total{{{instance}}}{rate_window}))",
                    "{{receiver}} {{outcome}}",
                )
            ],
            unit="ops",
            stacked=True,
        )
    )
    d.with_panel(
        graph(
            "Operator actions applied",
            "Actions from city.alert-actions applied to alerts, per minute, by action.",
            [
                query(
                    f"sum by (action) (rate(cityvitals_alerts_actions_applied_total{{{instance}}}{rate_window})) * 60",
                    "{{action}}",
                )
            ],
            stacked=True,
        )
    )
    d.with_panel(
        graph(
            "API requests refused",
            "Command-centre API requests refused per minute: 401 unauthenticated, 403 out of scope.",
            [
                query(
                    f"sum by (status) (rate(cityvitals_api_refusals_total{{{instance}}}{rate_window})) * 60",
                    "{{status}}",
                )
            ],
            stacked=True,
        )
    )
    return d


def department_performance() -> Dashboard:
    rng = "[$__range]"

    def quantile(metric: str, q: float, window: str) -> str:
        return (
            f"histogram_quantile({q}, sum by (department, le) "
            f"(increase({metric}_bucket{{{DEPARTMENT}}}{window})))"
        )

    ack = "cityvitals_alerts_time_to_acknowledge_seconds"
    res = "cityvitals_alerts_time_to_resolve_seconds"
    d = new_dashboard(
        "cityvitals-departments",
        "Department performance",
        "How fast each department acknowledges and resolves the city alerts it owns, "
        "how many it closes and how many were false positives (the same figures as "
        "GET /api/v1/performance, from the workers' metrics).",
    ).with_variable(
        label_variable("department", "Department", "cityvitals_alerts_alert_events_total")
    )
    d.with_row(Row("Over the selected time range"))
    for title, metric, q in (
        ("Median time to acknowledge", ack, 0.5),
        ("90th percentile time to acknowledge", ack, 0.9),
        ("Median time to resolve", res, 0.5),
        ("90th percentile time to resolve", res, 0.9),
    ):
        d.with_panel(
            bars(
                title,
                "From an alert's first event to its first acknowledgement or dispatch."
                if metric == ack
                else "From an alert's first event to its closing (resolved or false positive).",
                [query(quantile(metric, q, rng), "{{department}}", instant=True)],
                unit="s",
                thresholds=plain_thresholds((900, "yellow"), (3600, "red")),
            )
        )
    d.with_panel(
        bars(
            "Closure rate",
            "Alerts closed (resolved, false positive or cleared) over alerts raised.",
            [
                query(
                    f"sum by (department) (increase(cityvitals_alerts_closed_total{{{DEPARTMENT}}}{rng}))"
                    f' / sum by (department) (increase(cityvitals_alerts_alert_events_total{{status="firing", {DEPARTMENT}}}{rng}))',
                    "{{department}}",
                    instant=True,
                )
            ],
            unit="percentunit",
            max_val=1,
            thresholds=ThresholdsConfig()
            .mode(ThresholdsMode.ABSOLUTE)
            .steps(
                [
                    Threshold(value=None, color="red"),
                    Threshold(value=0.5, color="yellow"),
                    Threshold(value=0.8, color="green"),
                ]
            ),
        )
    )
    d.with_panel(
        bars(
            "False-positive rate",
            "Alerts an operator marked false positive over closed alerts.",
            [
                query(
                    f'sum by (department) (increase(cityvitals_alerts_closed_total{{outcome="false_positive", {DEPARTMENT}}}{rng}))'
                    f" / sum by (department) (increase(cityvitals_alerts_closed_total{{{DEPARTMENT}}}{rng}))",
                    "{{department}}",
                    instant=True,
                )
            ],
            unit="percentunit",
            max_val=1,
            thresholds=plain_thresholds((0.1, "yellow"), (0.3, "red")),
        )
    )
    d.with_panel(
        table.Panel()
        .title("Alerts closed by outcome")
        .description("Per department: resolved by an operator, false positive, or cleared.")
        .datasource(DATASOURCE)
        .span(24)
        .height(8)
        .with_target(
            query(
                f"sum by (department, outcome) (increase(cityvitals_alerts_closed_total{{{DEPARTMENT}}}{rng}))",
                instant=True,
            ).format(PromQueryFormat.TABLE)
        )
    )
    d.with_row(Row("Over time"))
    for title, metric in (("Time to acknowledge", ack), ("Time to resolve", res)):
        d.with_panel(
            graph(
                f"{title}, median and 90th percentile over the last hour",
                "Rolling one-hour window.",
                [
                    query(quantile(metric, q, "[1h]"), f"{{{{department}}}} p{round(q * 100)}")
                    for q in (0.5, 0.9)
                ],
                unit="s",
            )
        )
    d.with_panel(
        graph(
            "Alerts raised per hour by department",
            "Firing events on city.emergency-command, per hour.",
            [
                query(
                    f'department_status:cityvitals_alerts_alert_events:rate5m{{status="firing", {DEPARTMENT}}} * 3600',
                    "{{department}}",
                )
            ],
            stacked=True,
            width=24,
        )
    )
    return d


# --- output -----------------------------------------------------------------------


@dataclass(frozen=True)
class Board:
    filename: str
    build: Callable[[], Dashboard]


BOARDS = (
    Board("city-vital-signs.json", city_vital_signs),
    Board("pipeline-health.json", pipeline_health),
    Board("department-performance.json", department_performance),
)


def render() -> dict[str, str]:
    """File name -> JSON text of every dashboard."""
    out: dict[str, str] = {}
    for board in BOARDS:
        built = board.build().build()
        assign_ids(built.panels or [])
        out[board.filename] = JSONEncoder(sort_keys=True, indent=2).encode(built) + "\n"
    return out


def assign_ids(panels: Sequence[Panel | RowPanel]) -> None:
    """Stable panel ids (1, 2, ...) and query ref ids (A, B, ...) in layout order."""
    for n, panel in enumerate(panels, start=1):
        panel.id_val = n
        if isinstance(panel, Panel):
            for i, target in enumerate(panel.targets or []):
                if isinstance(target, PrometheusQuery):
                    target.ref_id = chr(ord("A") + i)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--check", action="store_true", help="compare with the files instead of writing them"
    )
    args = parser.parse_args(argv)
    rendered = render()
    if args.check:
        stale = [
            name
            for name, text in rendered.items()
            if not (OUT_DIR / name).is_file() or (OUT_DIR / name).read_text("utf-8") != text
        ]
        for name in stale:
            print(f"{OUT_DIR / name} differs from the generator's output", file=sys.stderr)
        return 1 if stale else 0
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    for name, text in rendered.items():
        (OUT_DIR / name).write_text(text, "utf-8")
        print(OUT_DIR / name)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
