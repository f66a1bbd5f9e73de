"""A real Prometheus scrapes a worker on the broker, with deploy/'s rules and dashboards.

One worker processes an hour of the simulated city (a fixed weekday morning,
scripted incidents, 2 % malformed events) in four parts a few seconds apart,
operators act on some of its alerts, and a Prometheus (Debian's
``/usr/bin/prometheus``) scrapes it every second with the recording and
alerting rules of deploy/prometheus/rules. Then
the key series, the rules' health, and every query of the generated Grafana
dashboards are checked through Prometheus' HTTP API.
"""

from __future__ import annotations

import asyncio
import math
import signal
import subprocess
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
import yaml

from streams.core.config import load_config
from streams.core.messages import (
    ACTIONS_TOPIC,
    ALERTS_TOPIC,
    AlertAction,
    AlertActionType,
    AlertEvent,
    AlertStatus,
)
from streams.kafka.topics import CITY_TOPICS, EVENT_TOPICS, ensure_topics
from streams.sim.simulator import CitySimulator, SimEvent
from tests.harness import (
    PARTITIONS,
    Worker,
    free_port,
    produce,
    read_topic,
    run,
    signed,
    wait_for,
)
from tests.test_deploy import GRAFANA, RULE_FILES, dashboards, ensure_tool, panels

pytestmark = pytest.mark.broker
CFG = load_config()

# Dashboard panels that may legitimately return no data in this test, and why.
NO_DATA_ALLOWED: dict[tuple[str, str], str] = {}

# every alert to one loopback webhook, so that deliveries show in the metrics
ROUTES = """version: 1
console_url: http://127.0.0.1:6066
receivers:
  - {{name: ops, url: "http://127.0.0.1:{port}/ops", format: native}}
route:
  receiver: ops
  group_by: [district]
  group_wait: 1s
  group_interval: 5s
  repeat_interval: 1h
escalation:
  ack_deadlines: {{I: 1h, II: 1h, III: 1h, IV: 1h}}
  levels: {{street: ops, district: ops, city: ops}}
"""


def webhook_receiver() -> ThreadingHTTPServer:
    """A webhook on loopback that takes every notification (204), in a thread of its own."""

    class Accept(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            self.send_response(204)
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Accept)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


# Dashboard panels whose values may all be NaN here, and why.
NAN_ALLOWED = {
    ("department-performance.json", "Closure rate"): (
        "a counter series of a (department, grade, status or outcome) appears at its first "
        "event, which increase() cannot see; with a few alerts per series both sides of the "
        "ratio are 0"
    ),
    ("department-performance.json", "False-positive rate"): "as for the closure rate",
}
# What Grafana puts in for its built-in variables (the data source's scrape interval is 15 s).
GRAFANA_BUILTINS = {"$__rate_interval": "1m", "$__range": "1h", "$__interval": "15s"}


@dataclass
class Stack:
    worker: Worker
    url: str
    acted: dict[str, AlertEvent] = field(default_factory=dict)
    false_positive: AlertEvent | None = None

    def api(self, path: str, **params: Any) -> Any:
        r = httpx.get(f"{self.url}{path}", params=params, timeout=10)
        body = r.json()
        assert r.status_code == 200 and body["status"] == "success", (path, params, body)
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        return list(self.api("/api/v1/query", query=expr)["result"])

    def values(self, expr: str, label: str) -> dict[str, float]:
        return {s["metric"].get(label, ""): float(s["value"][1]) for s in self.query(expr)}


def published(bootstrap: str) -> list[AlertEvent]:
    return [
        AlertEvent.model_validate_json(v)
        for v in asyncio.run(read_topic(bootstrap, ALERTS_TOPIC, idle_s=1))
    ]


def recreate_city_topics(bootstrap: str) -> None:
    from aiokafka.admin import AIOKafkaAdminClient

    async def go() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            doomed = [t for t in CITY_TOPICS if t in set(await admin.list_topics())]
            if doomed:
                await admin.delete_topics(doomed)
        finally:
            await admin.close()
        await ensure_topics(bootstrap, PARTITIONS)

    asyncio.run(go())


def prometheus_config(tmp: Path, target: str) -> Path:
    path = tmp / "prometheus.yml"
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(f) for f in RULE_FILES],
        "scrape_configs": [
            {
                "job_name": "cityvitals",
                "metrics_path": "/metrics",
                "static_configs": [{"targets": [target]}],
            }
        ],
    }
    path.write_text(yaml.safe_dump(config), "utf-8")
    return path


def start_prometheus(tmp: Path, config: Path) -> tuple[subprocess.Popen[bytes], str]:
    binary = ensure_tool("prometheus", "prometheus")
    port = free_port()
    log = (tmp / "prometheus.log").open("wb")
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--storage.tsdb.retention.time=1d",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"prometheus exited with {proc.returncode}: "
                + (tmp / "prometheus.log").read_text(errors="replace")[-3000:]
            )
        try:
            if httpx.get(f"{url}/-/ready", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise TimeoutError("prometheus not ready in 60 s")


def act(bootstrap: str, stack: Stack, alert: AlertEvent, action: AlertActionType) -> None:
    a = AlertAction(
        action_id=f"{action.value}-{alert.alert_id}",
        alert_id=alert.alert_id,
        district=alert.district,
        action=action,
        actor="duty.officer",
        role="operator",
        at=datetime.now(UTC),
    )
    record = SimEvent(ACTIONS_TOPIC, alert.district.encode(), signed(a).to_json(), a.at)
    run(produce(bootstrap, [record]))
    stack.acted[a.action_id] = alert


def simulation_start() -> datetime:
    """The last Tuesday 09:00 in the city at least two hours ago: the same hour of the
    same weekday every run, so the simulated city raises the same alerts."""
    now = datetime.now(ZoneInfo(CFG.city.city.timezone))
    start = (now - timedelta(days=(now.weekday() - 1) % 7)).replace(
        hour=9, minute=0, second=0, microsecond=0
    )
    return start if start <= now - timedelta(hours=2) else start - timedelta(days=7)


def settled_alerts(bootstrap: str) -> list[AlertEvent]:
    """The latest event of every alert, once two reads a few seconds apart agree,
    oldest alert first."""
    seen: list[list[AlertEvent]] = []

    def settled() -> bool:
        latest = {e.alert_id: e for e in published(bootstrap)}
        seen.append(sorted(latest.values(), key=lambda e: (e.first_seen, e.alert_id)))
        return len(seen) > 1 and seen[-1] == seen[-2]

    wait_for(settled, 60, "the alerts to settle", interval=2)
    return seen[-1]


def in_two_rounds(alerts: list[AlertEvent]) -> list[list[AlertEvent]]:
    """The first alert of each (department, grade), then the second of each."""
    by_owner: dict[tuple[str, str], list[AlertEvent]] = defaultdict(list)
    for alert in alerts:
        by_owner[(alert.department, alert.grade.roman)].append(alert)
    return [[g[i] for g in by_owner.values() if len(g) > i] for i in (0, 1)]


def scraped(stack: Stack, expr: str, what: str) -> None:
    """Wait until Prometheus has a sample of ``expr`` above zero."""
    wait_for(lambda: any(float(s["value"][1]) > 0 for s in stack.query(expr)), 30, what)


def more_scrapes(stack: Stack, n: int) -> None:
    """Wait until Prometheus has scraped the worker ``n`` more times (once a second), so
    that it holds several samples of what stands now, however loaded the machine is."""

    def last() -> float:
        found = stack.query('timestamp(up{job="cityvitals"})')
        return float(found[0]["value"][1]) if found else 0.0

    since = last()
    wait_for(lambda: last() >= since + n - 0.5, 30, f"{n} more scrapes")


@pytest.fixture(scope="module")
def stack(broker_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("prometheus-stack")
    recreate_city_topics(broker_bootstrap)
    hooks = webhook_receiver()
    routes = tmp / "routes.yaml"
    routes.write_text(ROUTES.format(port=hooks.server_address[1]), encoding="utf-8")
    worker = Worker(broker_bootstrap, tmp, env={"CITYVITALS_ROUTES_FILE": str(routes)})
    prometheus: subprocess.Popen[bytes] | None = None
    try:
        worker.start()
        config = prometheus_config(tmp, f"127.0.0.1:{worker.web_port}")
        prometheus, url = start_prometheus(tmp, config)
        s = Stack(worker, url)
        wait_for(
            lambda: s.values('up{job="cityvitals"}', "job") == {"cityvitals": 1.0}, 30, "a scrape"
        )

        # an hour of the city (last Tuesday morning) in four parts that Prometheus sees apart
        start = simulation_start()
        sim = CitySimulator(CFG, seed=7, start=start, malformed_share=0.02, appeals=True)
        parts: dict[int, list[SimEvent]] = defaultdict(list)
        for ev in sim.events(timedelta(minutes=60)):
            # the simulator's "future" events lie 2 to 30 days after the simulated hour,
            # which may already be past: accepted, they would move the watermark
            if ev.malformed != "future_event_time":
                parts[int((ev.event_time - start).total_seconds() // 900)].append(ev)
        for n in sorted(parts):
            run(produce(broker_bootstrap, parts[n]))
            total = sum(len(parts[k]) for k in parts if k <= n)
            scraped(
                s,
                f"sum(cityvitals_ingest_events_in_total) >= {total}",
                f"part {n} consumed and scraped",
            )
            more_scrapes(s, 2)

        # once the last windows are closed (idle, after CITYVITALS_IDLE_CLOSE_S = 10 s)
        # and the alerts stand still, operators act on them in two rounds, so that
        # Prometheus sees the response-time histograms grow (increase() cannot see a
        # series' first sample)
        scraped(
            s,
            'sum(cityvitals_vitals_windows_closed_total{trigger="idle"})',
            "the last windows closed for silence",
        )
        alerts = settled_alerts(broker_bootstrap)
        assert len(alerts) >= 4, alerts
        still_open = [e for e in alerts if e.status is not AlertStatus.RESOLVED]
        closing = in_two_rounds(still_open)
        # the false positive opens a (department, grade) with a second open alert, so
        # that department gets both rounds of acknowledgements and of closings
        s.false_positive = next(
            a
            for a in closing[0]
            if any((b.department, b.grade) == (a.department, a.grade) for b in closing[1])
        )
        acks = in_two_rounds(alerts)
        done = 0
        for n, alerts in enumerate(acks + closing):
            for alert in alerts:
                kind = (
                    AlertActionType.ACKNOWLEDGE
                    if n < 2
                    else AlertActionType.FALSE_POSITIVE
                    if alert.alert_id == s.false_positive.alert_id
                    else AlertActionType.RESOLVE
                )
                act(broker_bootstrap, s, alert, kind)
            done += len(alerts)
            scraped(
                s,
                f"sum(cityvitals_alerts_actions_applied_total) >= {done}",
                f"round {n} of operator actions applied and scraped",
            )
            more_scrapes(s, 2)
        # a request without a token: a refusal for the API panel
        assert httpx.get(f"http://127.0.0.1:{worker.web_port}/api/v1/alerts").status_code == 401
        scraped(s, "sum(cityvitals_api_refusals_total)", "the refusal")
        scraped(
            s,
            'sum(cityvitals_notify_deliveries_total{outcome="delivered"})',
            "webhook deliveries",
        )
        more_scrapes(s, 3)  # rate() and increase() need two samples of a series
        yield s
    finally:
        if prometheus is not None:
            prometheus.terminate()
            try:
                prometheus.wait(timeout=20)
            except subprocess.TimeoutExpired:
                prometheus.kill()
                prometheus.wait()
        worker.stop(signal.SIGKILL)
        hooks.shutdown()


def test_prometheus_scrapes_the_worker_and_evaluates_every_rule(stack: Stack) -> None:
    (target,) = stack.api("/api/v1/targets")["activeTargets"]
    assert target["health"] == "up" and target["labels"]["job"] == "cityvitals"

    # every rule of both files is loaded and evaluates without error on real series
    expected = {
        g["name"]: len(g["rules"])
        for f in RULE_FILES
        for g in yaml.safe_load(f.read_text())["groups"]
    }

    def healthy() -> bool:
        groups = stack.api("/api/v1/rules")["groups"]
        loaded = {g["name"]: len(g["rules"]) for g in groups}
        return loaded == expected and all(r["health"] == "ok" for g in groups for r in g["rules"])

    wait_for(healthy, 30, "every rule evaluated")
    errors = [
        (r["name"], r.get("lastError"))
        for g in stack.api("/api/v1/rules")["groups"]
        for r in g["rules"]
        if r.get("lastError")
    ]
    assert not errors

    readings = stack.values("sum by (domain) (cityvitals_ingest_readings_total)", "domain")
    assert set(readings) == set(CFG.catalogue.domains) and min(readings.values()) > 0
    events_in = stack.values("sum by (topic) (cityvitals_ingest_events_in_total)", "topic")
    assert set(events_in) == set(EVENT_TOPICS.values()) and min(events_in.values()) > 0
    districts = set(CFG.districts)
    assert (
        set(stack.values("count by (district) (cityvitals_city_vital_index)", "district"))
        == districts
    )
    composite = stack.values("cityvitals_city_composite_index", "district")
    assert set(composite) == districts and all(0 <= v <= 100 for v in composite.values())
    alerts = stack.values("sum by (status) (cityvitals_alerts_alert_events_total)", "status")
    assert alerts.get("firing", 0) >= 4 and alerts.get("updated", 0) > 0
    actions = stack.values("sum(cityvitals_alerts_actions_applied_total)", "")
    assert actions == {"": len(stack.acted)}
    dead = stack.values("sum by (reason) (cityvitals_ingest_deadletters_total)", "reason")
    assert len(dead) >= 5 and sum(dead.values()) > 0
    # records out per topic agree with what each stage counts of its own
    out = stack.values("sum by (topic) (cityvitals_pipeline_events_out_total)", "topic")
    assert out["city.readings"] == sum(readings.values())
    assert out["city.deadletter"] == sum(dead.values())
    assert out["city.emergency-command"] == sum(alerts.values())
    assert out["city.notifications"] > 0 and out["city.vitals"] > 0
    # every input topic's owned partitions report their backlog (all read by now)
    lag = stack.values(
        'sum by (topic) (cityvitals_pipeline_consumer_lag_records{topic=~"city.events.*"})', "topic"
    )
    assert set(lag) == set(events_in) and all(v == 0 for v in lag.values())
    # the city's hour lies in the past: alerts came hours after their readings' event time
    delays = stack.values("sum by (kind) (cityvitals_alerts_event_to_alert_seconds_count)", "kind")
    assert delays.get("alarm", 0) >= 1
    assert (
        stack.values(
            "histogram_quantile(0.5, sum by (le) (cityvitals_alerts_event_to_alert_seconds_bucket))",
            "",
        )[""]
        > 3600
    )

    # recording rules over the same series
    current = stack.values("district:cityvitals_city_composite_index:current", "district")
    assert set(current) == districts and current == pytest.approx(composite)
    per_domain = stack.values("domain:cityvitals_city_vital_index:avg", "domain")
    assert set(per_domain) <= set(CFG.catalogue.domains) and len(per_domain) >= 5
    severity = stack.values("district:cityvitals_alerts_open_severity:max", "district")
    assert severity and set(severity.values()) <= {0, 1, 2, 3, 4}
    closed = stack.values("sum by (outcome) (cityvitals_alerts_closed_total)", "outcome")
    assert closed.get("resolved", 0) > 0 and closed.get("false_positive", 0) > 0

    # the city's hour lies in the past, so every district's vital signs are hours behind
    # the clock: the lag alert holds each district pending (it fires after 10 minutes)
    lagging = stack.values(
        'ALERTS{alertname="CityvitalsWatermarkLagHigh", alertstate="pending"}', "district"
    )
    assert set(lagging) == districts
    # with input flowing, the input alerts stay quiet
    assert (
        stack.query(
            'ALERTS{alertname=~"CityvitalsNoInput|CityvitalsWorkerDown|CityvitalsNoWorkerUp"}'
        )
        == []
    )


def substitute(expr: str, values: dict[str, str]) -> str:
    for name, value in {**GRAFANA_BUILTINS, **values}.items():
        expr = expr.replace(name, value)
    assert "$" not in expr, expr
    return expr


def test_every_dashboard_query_is_valid_promql_and_has_data(stack: Stack) -> None:
    districts = sorted(stack.values("district:cityvitals_city_composite_index:current", "district"))
    assert districts and stack.false_positive is not None
    values = {
        "$district": districts[0],
        "$department": stack.false_positive.department,
        "$domain": "traffic",
        "$instance": f"127.0.0.1:{stack.worker.web_port}",
    }
    boards = dashboards()
    assert boards.keys() == {p.name for p in (GRAFANA / "dashboards").glob("*.json")}
    problems: list[str] = []
    now = time.time()
    for name, board in boards.items():
        for var in board["templating"]["list"]:
            if var["type"] != "query":
                continue
            metric, label = (
                var["query"].removeprefix("label_values(").removesuffix(")").rsplit(",", 1)
            )
            got = stack.api(f"/api/v1/label/{label.strip()}/values", **{"match[]": metric})
            if not got:
                problems.append(f"{name}: variable {var['name']} has no values")
        for panel in panels(board):
            for target in panel.get("targets", []):
                expr = substitute(target["expr"], values)
                if target.get("instant"):
                    r = httpx.get(f"{stack.url}/api/v1/query", params={"query": expr}, timeout=10)
                else:
                    r = httpx.get(
                        f"{stack.url}/api/v1/query_range",
                        params={"query": expr, "start": now - 120, "end": now, "step": 5},
                        timeout=10,
                    )
                body = r.json()
                where = f"{name}: {panel['title']} [{target['refId']}] {expr}"
                if r.status_code != 200 or body["status"] != "success":
                    problems.append(f"{where}: {body.get('errorType')}: {body.get('error')}")
                    continue
                result = body["data"]["result"]
                numbers = [
                    float(v[1])
                    for series in result
                    for v in series.get("values", [series.get("value")])
                ]
                finite = any(math.isfinite(v) for v in numbers)
                if not result and (name, panel["title"]) not in NO_DATA_ALLOWED:
                    problems.append(f"{where}: no data")
                elif result and not finite and (name, panel["title"]) not in NAN_ALLOWED:
                    problems.append(f"{where}: only NaN or infinite values")
    assert not problems, "\n".join(problems)


def test_table_sizes_scoring_time_and_faust_s_own_metrics_reach_prometheus(stack: Stack) -> None:
    districts = set(CFG.districts)
    alerted = {e.district for e in published(stack.worker.bootstrap)}
    # one worker owns every partition: its tables hold every district it has seen
    keys = stack.values("cityvitals_pipeline_table_keys", "table")
    assert keys == {
        "district-windows": len(districts),
        "district-detection": len(districts),
        "notify-groups": len(alerted),
    }
    assert stack.values("cityvitals_pipeline_partitions_owned", "") == {"": PARTITIONS}
    written = stack.values("cityvitals_pipeline_table_value_bytes_count", "table")
    size = stack.values(
        "cityvitals_pipeline_table_value_bytes_sum / cityvitals_pipeline_table_value_bytes_count",
        "table",
    )
    assert set(written) == set(keys) and min(written.values()) > 0
    assert all(256 < size[t] < 1024 * 1024 for t in keys), size

    # every closed window went through every detector family once
    windows = stack.values("sum(cityvitals_vitals_windows_closed_total)", "")[""]
    scored = stack.values(
        "sum by (family) (cityvitals_detection_scoring_duration_seconds_count)", "family"
    )
    assert windows > 0
    assert scored == dict.fromkeys(
        ("threshold", "forecast", "anomaly", "data_quality", "composite", "public_opinion"),
        windows,
    )
    p99 = stack.values(
        "histogram_quantile(0.99, sum by (family, le) "
        "(cityvitals_detection_scoring_duration_seconds_bucket))",
        "family",
    )
    assert set(p99) == set(scored) and all(0 < v <= 0.1 for v in p99.values()), p99

    # Faust's own monitor counts the same table writes as the codecs
    faust_sets = stack.values(
        'cityvitals_faust_table_operations_total{operation="keys_updated"}', "table"
    )
    for table in ("district-windows", "district-detection"):
        assert faust_sets[f"table.{table}"] == written[table] > 0
    assert stack.values("cityvitals_faust_assignment_operations_total", "operation") == {
        "completed": 1
    }
