"""deploy/: compose stack, Kubernetes manifests, Prometheus rules and Grafana dashboards.

Structural checks of every file, the generated files against their generators,
every metric name in a rule or a dashboard query against ``streams.core.metrics``,
and Prometheus' own tools (promtool, amtool) on the configuration and the rule
unit tests in deploy/prometheus/tests.
"""

from __future__ import annotations

import base64
import functools
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from streams.core import metrics
from streams.core.secrets import FILE_SUFFIX, PLACEHOLDERS, is_placeholder
from streams.notify.routing import secret_variables
from tests.apt import install

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"
PROM = DEPLOY / "prometheus"
RULE_FILES = (PROM / "rules" / "cityvitals-recording.yml", PROM / "rules" / "cityvitals-alerts.yml")
K8S = DEPLOY / "k8s"
GRAFANA = DEPLOY / "grafana"
COMPOSE = DEPLOY / "compose.yaml"
# what a worker on the shipped configuration cannot start without
WORKER_SECRETS = [
    "CITYVITALS_DEID_KEY",
    "CITYVITALS_ACTION_KEY",
    *secret_variables(REPO / "config" / "routes.yaml"),
]

# Series used in rules or dashboards that streams/core/metrics.py does not define, and why.
EXTERNAL_METRICS = {
    "up": "written by Prometheus for every scrape target",
    "ALERTS": "written by Prometheus for every pending or firing alert",
}


# --- tools ------------------------------------------------------------------------


@functools.cache
def ensure_tool(binary: str, package: str) -> str:
    """The path of ``binary``, installing Debian's ``package`` if it is missing."""
    found = shutil.which(binary)
    if found:
        return found
    ok, log = install(package, done=lambda: shutil.which(binary) is not None)
    found = shutil.which(binary)
    if ok and found:
        return found
    pytest.fail(
        f"{binary} is needed and could not be installed from the Debian package {package!r} "
        f"(as root: apt-get install -y --no-install-recommends {package}):\n{log}"
    )


def run_tool(args: list[str], cwd: Path = REPO) -> str:
    proc = subprocess.run(args, capture_output=True, text=True, cwd=cwd, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{' '.join(args)} failed ({proc.returncode}):\n{out}"
    return out


# --- loading ----------------------------------------------------------------------


def yaml_files() -> list[Path]:
    return sorted(p for ext in ("yml", "yaml") for p in DEPLOY.rglob(f"*.{ext}"))


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text("utf-8"))


def load_docs(path: Path) -> list[Any]:
    return [d for d in yaml.safe_load_all(path.read_text("utf-8")) if d is not None]


def load_module(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"deploy_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def rule_groups() -> list[dict[str, Any]]:
    return [g for f in RULE_FILES for g in load_yaml(f)["groups"]]


def rules() -> Iterator[dict[str, Any]]:
    for group in rule_groups():
        yield from group["rules"]


def dashboards() -> dict[str, dict[str, Any]]:
    return {
        p.name: json.loads(p.read_text("utf-8"))
        for p in sorted((GRAFANA / "dashboards").glob("*.json"))
    }


def panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in board.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def dashboard_queries() -> Iterator[tuple[str, str, str]]:
    """(dashboard file, panel title, PromQL) of every panel target."""
    for name, board in dashboards().items():
        for panel in panels(board):
            for target in panel.get("targets", []):
                yield name, panel["title"], target["expr"]


def variable_queries() -> Iterator[tuple[str, str, str]]:
    """(dashboard file, variable, metric selector) of every label_values() variable."""
    for name, board in dashboards().items():
        for var in board["templating"]["list"]:
            if var["type"] == "query":
                m = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", var["query"])
                assert m, f"{name}: variable {var['name']}: not label_values(metric, label)"
                yield name, var["name"], m.group(1)


def service_env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


# --- PromQL names -------------------------------------------------------------------

# fmt: off
PROMQL_FUNCTIONS = frozenset((
    "abs", "absent", "absent_over_time", "avg_over_time", "ceil", "changes", "clamp",
    "clamp_max", "clamp_min", "count_over_time", "day_of_month", "day_of_week", "day_of_year",
    "days_in_month", "delta", "deriv", "exp", "floor", "histogram_quantile", "holt_winters",
    "hour", "idelta", "increase", "irate", "label_join", "label_replace", "last_over_time", "ln",
    "log10", "log2", "max_over_time", "min_over_time", "minute", "month", "predict_linear",
    "present_over_time", "quantile_over_time", "rate", "resets", "round", "scalar", "sgn",
    "sort", "sort_desc", "sqrt", "stddev_over_time", "stdvar_over_time", "sum_over_time",
    "time", "timestamp", "vector", "year",
    # aggregation operators
    "avg", "bottomk", "count", "count_values", "group", "max", "min", "quantile", "stddev",
    "stdvar", "sum", "topk",
))
PROMQL_KEYWORDS = frozenset((
    "and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "group_left",
    "group_right", "inf", "nan",
))
# fmt: on


def promql_metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (functions, keywords, labels left out)."""
    s = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    s = re.sub(r"'(?:[^'\\]|\\.)*'", "''", s)
    s = re.sub(r"#[^\n]*", "", s)
    s = re.sub(r"\{[^}]*\}", " ", s)  # label matchers
    s = re.sub(r"\[[^\]]*\]", " ", s)  # ranges and subqueries
    s = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s)
    names: set[str] = set()
    for m in re.finditer(r"(?<![\w:.$])([A-Za-z_:][\w:]*)(\s*\()?", s):
        name, call = m.group(1), m.group(2)
        if name.lower() in PROMQL_KEYWORDS:
            continue
        if call:
            assert name in PROMQL_FUNCTIONS, f"unknown PromQL function {name}() in {expr!r}"
        else:
            names.add(name)
    return names


@functools.cache
def registry_families() -> dict[str, str]:
    """Metric family name -> type, for every metric of streams/core/metrics.py."""
    return {family.name: family.type for family in metrics.REGISTRY.collect()}


def resolve(name: str) -> str | None:
    """Why ``name`` is not a series the worker exports, or None if it is."""
    families = registry_families()
    if families.get(name) in ("gauge", "untyped"):
        return None
    m = re.fullmatch(r"(.+?)_(bucket|sum|count|total)", name)
    if m is None:
        return "no metric of that name in streams/core/metrics.py"
    base, suffix = m.groups()
    kind = families.get(base)
    if kind is None:
        return f"no metric {base} in streams/core/metrics.py"
    allowed = {
        "counter": {"total"},
        "histogram": {"bucket", "sum", "count"},
        "summary": {"sum", "count"},
    }
    if suffix not in allowed.get(kind, set()):
        return f"{base} is a {kind}, it has no _{suffix} series"
    return None


def recorded_names() -> set[str]:
    return {r["record"] for r in rules() if "record" in r}


def test_promql_metric_names_parses_functions_keywords_labels_and_ranges() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (job, le) (rate(a_bucket{x=~"$district", y="b c"}[$__rate_interval])))'
        " / on (job) group_left() max without (instance) (b_total offset 1h) > bool 0"
        ' and c:d:e unless absent(up{job="cityvitals"} == 1) or vector(0)'
    )
    assert promql_metric_names(expr) == {"a_bucket", "b_total", "c:d:e", "up"}
    assert promql_metric_names("sum(rate(x_total[5m])) by (topic) * 60") == {"x_total"}
    assert promql_metric_names("(a > bool 0) * 2 or(b)") == {"a", "b"}
    with pytest.raises(AssertionError, match="unknown PromQL function"):
        promql_metric_names("rated(x_total[5m])")


def test_resolve_knows_the_suffix_of_each_metric_type() -> None:
    assert resolve("cityvitals_ingest_events_in_total") is None
    assert resolve("cityvitals_ingest_batch_duration_seconds_bucket") is None
    assert resolve("cityvitals_ingest_batch_duration_seconds_count") is None
    assert resolve("cityvitals_city_vital_index") is None
    assert "no _bucket series" in (resolve("cityvitals_ingest_events_in_bucket") or "")
    assert "no metric" in (resolve("cityvitals_ingest_events_total") or "")
    assert resolve("cityvitals_ingest_events_in") is not None  # a counter is read as *_total


# --- every file -----------------------------------------------------------------------


def test_every_yaml_and_json_file_of_deploy_parses() -> None:
    files = yaml_files()
    assert len(files) >= 15, files
    for path in files:
        docs = load_docs(path)
        assert docs, f"{path} is empty"
    for name, board in dashboards().items():
        assert board["uid"] and board["title"], name


# --- compose --------------------------------------------------------------------------


def compose() -> dict[str, Any]:
    return load_yaml(COMPOSE)


def kafka_services(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        n: s
        for n, s in doc["services"].items()
        if str(s.get("image", "")).startswith("apache/kafka:")
    }


def worker_services(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        n: s
        for n, s in doc["services"].items()
        if s.get("build", {}).get("dockerfile") == "deploy/Dockerfile"
        and s.get("command") == ["worker"]
    }


def listeners(value: str) -> dict[str, tuple[str, int]]:
    out = {}
    for item in value.split(","):
        m = re.fullmatch(r"(\w+)://([\w.-]*):(\d+)", item.strip())
        assert m, f"listener {item!r}"
        out[m.group(1)] = (m.group(2), int(m.group(3)))
    return out


def test_compose_runs_three_kafka_brokers_in_kraft_mode_with_one_controller_quorum() -> None:
    doc = compose()
    brokers = kafka_services(doc)
    assert len(brokers) == 3, sorted(brokers)
    envs = {name: service_env(s) for name, s in brokers.items()}
    for name, env in envs.items():
        assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}, name
        assert not any("ZOOKEEPER" in k for k in env), f"{name}: ZooKeeper settings in KRaft mode"
        assert env["KAFKA_CONTROLLER_LISTENER_NAMES"] in listeners(env["KAFKA_LISTENERS"])
    assert len({e["CLUSTER_ID"] for e in envs.values()}) == 1, "one cluster id for all brokers"
    cluster_id = next(iter(envs.values()))["CLUSTER_ID"]
    assert len(base64.urlsafe_b64decode(cluster_id + "==")) == 16, "CLUSTER_ID is a base64 UUID"
    voters = {e["KAFKA_CONTROLLER_QUORUM_VOTERS"] for e in envs.values()}
    assert len(voters) == 1, f"the brokers disagree on the quorum: {voters}"
    expected = set()
    for name, env in envs.items():
        host = brokers[name].get("hostname", name)
        controller = env["KAFKA_CONTROLLER_LISTENER_NAMES"]
        port = listeners(env["KAFKA_LISTENERS"])[controller][1]
        expected.add(f"{env['KAFKA_NODE_ID']}@{host}:{port}")
        inter = env["KAFKA_INTER_BROKER_LISTENER_NAME"]
        assert listeners(env["KAFKA_ADVERTISED_LISTENERS"])[inter][0] == host, name
    assert set(voters.pop().split(",")) == expected
    assert len({e["KAFKA_NODE_ID"] for e in envs.values()}) == 3, "distinct node ids"
    for env in envs.values():
        rf = int(env["KAFKA_DEFAULT_REPLICATION_FACTOR"])
        assert int(env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"]) <= 3 and rf <= 3
        assert int(env["KAFKA_MIN_INSYNC_REPLICAS"]) < rf, "one broker may be down"
        assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    volumes = [v.split(":")[0] for s in brokers.values() for v in s.get("volumes", [])]
    assert len(set(volumes)) == 3 and set(volumes) <= set(doc["volumes"]), "a volume per broker"


def test_compose_workers_use_the_brokers_and_agree_on_the_topic_layout() -> None:
    doc = compose()
    brokers = kafka_services(doc)
    internal = set()
    for s in brokers.values():
        env = service_env(s)
        host, port = listeners(env["KAFKA_ADVERTISED_LISTENERS"])[
            env["KAFKA_INTER_BROKER_LISTENER_NAME"]
        ]
        internal.add(f"{host}:{port}")
    workers = worker_services(doc)
    assert len(workers) >= 2, sorted(doc["services"])
    envs = [service_env(s) for s in workers.values()]
    for name, s in workers.items():
        env = service_env(s)
        assert set(env["CITYVITALS_BOOTSTRAP"].split(",")) == internal, name
        assert env["CITYVITALS_WEB_HOST"] == "0.0.0.0", f"{name}: Prometheus must reach /metrics"
        for secret in WORKER_SECRETS:
            assert env[secret].startswith(f"${{{secret}:?"), (
                f"{name}: {secret} must be given, not defaulted"
            )
        assert set(s["depends_on"]) == set(brokers), name
        assert env.get("CITYVITALS_EMBEDDED_BROKER", "false").lower() in ("false", "0")
    for key in ("CITYVITALS_APP_ID", "CITYVITALS_PARTITIONS", "CITYVITALS_REPLICATION_FACTOR"):
        assert len({e[key] for e in envs}) == 1, f"workers disagree on {key}"
    partitions = int(envs[0]["CITYVITALS_PARTITIONS"])
    assert len(workers) <= partitions, "more workers than partitions leaves some idle"
    assert int(envs[0]["CITYVITALS_REPLICATION_FACTOR"]) <= len(brokers)
    simulator = doc["services"]["simulator"]
    assert service_env(simulator)["CITYVITALS_PARTITIONS"] == str(partitions)
    assert any(
        a.startswith("--bootstrap=") and set(a.split("=", 1)[1].split(",")) == internal
        for a in simulator["command"]
    )
    # Prometheus scrapes exactly these workers on their web port
    scrape = load_yaml(PROM / "prometheus.yml")
    job = next(j for j in scrape["scrape_configs"] if j["job_name"] == "cityvitals")
    targets = {t for sc in job["static_configs"] for t in sc["targets"]}
    assert targets == {
        f"{s.get('hostname', n)}:{service_env(s)['CITYVITALS_WEB_PORT']}"
        for n, s in workers.items()
    }


def test_compose_mounts_files_that_exist_and_wires_prometheus_alertmanager_grafana() -> None:
    doc = compose()
    services = doc["services"]
    for name, s in services.items():
        for volume in s.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name} mounts {source}, which does not exist"
            else:
                assert source in doc["volumes"], f"{name}: volume {source} is not declared"
        for dep in s.get("depends_on", []):
            assert dep in services, f"{name} depends on unknown {dep}"
    mounts = {v.split(":")[1]: v.split(":")[0] for v in services["prometheus"]["volumes"]}
    assert mounts["/etc/prometheus/prometheus.yml"] == "./prometheus/prometheus.yml"
    assert mounts["/etc/prometheus/rules"] == "./prometheus/rules"
    scrape = load_yaml(PROM / "prometheus.yml")
    assert scrape["rule_files"] == [f"rules/{f.name}" for f in RULE_FILES]
    assert scrape["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == [
        "alertmanager:9093"
    ]
    assert "alertmanager" in services and "9093:9093" in services["alertmanager"]["ports"]
    grafana = {v.split(":")[1]: v.split(":")[0] for v in services["grafana"]["volumes"]}
    provider = load_yaml(GRAFANA / "provisioning" / "dashboards" / "cityvitals.yml")["providers"][0]
    assert grafana[provider["options"]["path"]] == "./grafana/dashboards"
    assert grafana["/etc/grafana/provisioning/datasources"] == "./grafana/provisioning/datasources"
    datasource = load_yaml(GRAFANA / "provisioning" / "datasources" / "prometheus.yml")[
        "datasources"
    ][0]
    assert datasource["url"] == "http://prometheus:9090" and datasource["type"] == "prometheus"
    home = services["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert (GRAFANA / "dashboards" / Path(home).name).is_file()


def docker_compose_usable() -> bool:
    if shutil.which("docker") is None:
        return False
    proc = subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=60)
    return proc.returncode == 0


COMPOSE_TOP_LEVEL = {"name", "services", "volumes", "networks", "configs", "secrets"}
COMPOSE_SERVICE_KEYS = {
    "image", "build", "hostname", "ports", "volumes", "environment", "command", "depends_on",
    "restart", "healthcheck", "profiles", "stop_grace_period",
}  # fmt: skip


def test_compose_file_is_valid() -> None:
    """``docker compose config`` where the client has the plugin; else the schema's main rules."""
    if docker_compose_usable():
        proc = subprocess.run(
            ["docker", "compose", "-f", str(COMPOSE), "config", "--quiet"],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, **{secret: "k" * 32 for secret in WORKER_SECRETS}},
        )
        assert proc.returncode == 0, proc.stderr
    doc = compose()
    assert set(doc) <= COMPOSE_TOP_LEVEL | {k for k in doc if k.startswith("x-")}
    for name, s in doc["services"].items():
        assert re.fullmatch(r"[a-z0-9][a-z0-9_.-]*", name), name
        assert set(s) <= COMPOSE_SERVICE_KEYS, (
            f"{name}: unknown keys {set(s) - COMPOSE_SERVICE_KEYS}"
        )
        assert "image" in s or "build" in s, name
        for port in s.get("ports", []):
            assert re.fullmatch(r"\d+:\d+", str(port)), f"{name}: port {port!r}"
        assert isinstance(s.get("command", []), list), f"{name}: command as a list"
        if "healthcheck" in s:
            assert s["healthcheck"]["test"][0] in ("CMD", "CMD-SHELL"), name
        depends = s.get("depends_on", {})
        for dep, cond in depends.items() if isinstance(depends, dict) else []:
            assert cond["condition"] in ("service_started", "service_healthy"), name
            if cond["condition"] == "service_healthy":
                assert "healthcheck" in doc["services"][dep], f"{name} waits for {dep}'s health"
    dockerfile = (DEPLOY / "Dockerfile").read_text("utf-8")
    assert dockerfile.startswith("# ") and "FROM python:3.11-slim" in dockerfile
    assert "RUN pip install ." in dockerfile
    assert 'ENTRYPOINT ["cityvitals"]' in dockerfile and 'CMD ["worker"]' in dockerfile
    for copied in re.findall(r"^COPY (\S+)", dockerfile, re.M):
        assert (REPO / copied).exists(), f"Dockerfile copies {copied}, which does not exist"


# --- Kubernetes -------------------------------------------------------------------------


def k8s_docs() -> dict[str, dict[str, Any]]:
    """kind -> manifest of the kustomization's resources."""
    kustomization = load_yaml(K8S / "kustomization.yaml")
    out = {}
    for resource in kustomization["resources"]:
        for doc in load_docs(K8S / resource):
            assert doc["kind"] not in out, f"two {doc['kind']} manifests"
            out[doc["kind"]] = doc
    return out


def container_env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def test_k8s_worker_probes_ports_resources_and_settings() -> None:
    docs = k8s_docs()
    deployment = docs["Deployment"]
    pod = deployment["spec"]["template"]
    assert (
        deployment["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    )
    (container,) = pod["spec"]["containers"]
    env = container_env(container)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": int(env["CITYVITALS_WEB_PORT"])}
    assert env["CITYVITALS_WEB_HOST"] == "0.0.0.0"
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    resources = container["resources"]
    for kind in ("cpu", "memory"):
        assert resources["requests"][kind] and resources["limits"][kind], kind
    assert quantity(resources["requests"]["memory"]) <= quantity(resources["limits"]["memory"])
    assert quantity(resources["requests"]["cpu"]) <= quantity(resources["limits"]["cpu"])
    assert deployment["spec"]["replicas"] <= int(env["CITYVITALS_PARTITIONS"])
    assert env.get("CITYVITALS_EMBEDDED_BROKER", "false") == "false"
    # secrets are files of the Secret, whose example names every key used
    example = load_yaml(K8S / "secret.example.yaml")
    assert not any(isinstance(v, dict) and "secretKeyRef" in v for v in env.values())
    assert "secret.example.yaml" not in load_yaml(K8S / "kustomization.yaml")["resources"]
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert volumes[mounts[env["CITYVITALS_CONFIG_DIR"]]]["configMap"]["name"] == "cityvitals-config"
    files = [Path(env["CITYVITALS_ROLES_FILE"])]
    files += [Path(env[f"{n}{FILE_SUFFIX}"]) for n in [*WORKER_SECRETS, "CITYVITALS_SASL_PASSWORD"]]
    for file in files:
        secret = volumes[mounts[str(file.parent)]]["secret"]
        assert secret["secretName"] == example["metadata"]["name"], file
        keys = {i["path"]: i["key"] for i in secret["items"]}
        assert keys[file.name] in example["stringData"], file
    assert not {n for n in WORKER_SECRETS if n in env}, "a secret's value in the manifest"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert any(Path(env["CITYVITALS_DATADIR"]).is_relative_to(p) for p in mounts), (
        "datadir writable"
    )


def kustomized_files(directory: Path = K8S) -> list[Path]:
    """The kustomization and every file it includes: its resources (a directory: its
    own kustomization, recursively), patches, and the files and env files of its
    ConfigMap and Secret generators."""
    kustomization = directory / "kustomization.yaml"
    doc = load_yaml(kustomization)
    files = [kustomization]
    patches = [p["path"] for p in doc.get("patches", []) if "path" in p]
    for entry in [*doc.get("resources", []), *patches, *doc.get("patchesStrategicMerge", [])]:
        path = (directory / entry).resolve()
        files += kustomized_files(path) if path.is_dir() else [path]
    for generator in [*doc.get("configMapGenerator", []), *doc.get("secretGenerator", [])]:
        named = [f.split("=", 1)[-1] for f in generator.get("files", [])]
        files += [(directory / f).resolve() for f in [*named, *generator.get("envs", [])]]
    return files


def placeholders_in(path: Path) -> list[str]:
    return [
        f"{path.relative_to(REPO)}:{n}: {line.strip()}"
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if is_placeholder(line)
    ]


def test_no_placeholder_secret_is_reachable_from_the_k8s_manifests() -> None:
    files = kustomized_files()
    assert (REPO / "config" / "routes.yaml").resolve() in files  # the ConfigMap's files too
    assert K8S / "deployment.yaml" in files
    found = [hit for path in files for hit in placeholders_in(path)]
    assert not found, "placeholder secrets reach the cluster:\n" + "\n".join(found)
    # the check sees the placeholders the example Secret (applied by hand, with
    # values replaced) holds: every value of it
    example = K8S / "secret.example.yaml"
    assert example.resolve() not in files
    values = load_yaml(example)["stringData"]
    assert all(is_placeholder(v) for k, v in values.items() if k != "roles.yaml"), PLACEHOLDERS
    assert len(placeholders_in(example)) >= len(values)


def test_the_shipped_routes_name_their_secrets_and_hold_none() -> None:
    routes = load_yaml(REPO / "config" / "routes.yaml")
    for receiver in routes["receivers"]:
        assert "secret" not in receiver, receiver["name"]
        assert "?" not in receiver.get("url", ""), f"{receiver['name']}: a key in the url"
    assert "key" not in routes["responder_links"]


def quantity(value: str | int) -> float:
    units = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
    m = re.fullmatch(r"([\d.]+)(m|Ki|Mi|Gi)?", str(value))
    assert m, value
    return float(m.group(1)) * units.get(m.group(2) or "", 1)


def test_k8s_service_servicemonitor_and_config_map_fit_the_deployment() -> None:
    docs = k8s_docs()
    pod_labels = docs["Deployment"]["spec"]["template"]["metadata"]["labels"]
    service = docs["Service"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    (port,) = service["spec"]["ports"]
    assert port["targetPort"] == "http"
    monitor = docs["ServiceMonitor"]
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == port["name"] and endpoint["path"] == "/metrics"
    job = service["metadata"]["labels"][monitor["spec"]["jobLabel"]]
    assert job == "cityvitals", "the alerting rules select job=cityvitals"
    assert (
        docs["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    )
    kustomization = load_yaml(K8S / "kustomization.yaml")
    (generator,) = kustomization["configMapGenerator"]
    assert generator["name"] == "cityvitals-config"
    shipped = {(K8S / f).resolve() for f in generator["files"]}
    config = {p.resolve() for p in (REPO / "config").glob("*.yaml") if p.name != "roles.yaml"}
    assert shipped == config, (
        "the ConfigMap carries every file of config/ but roles.yaml (a Secret)"
    )


def test_prometheusrule_carries_the_rule_files_groups() -> None:
    manifest = k8s_docs()["PrometheusRule"]
    assert manifest["apiVersion"] == "monitoring.coreos.com/v1"
    assert manifest["spec"]["groups"] == rule_groups()
    generator = load_module(K8S / "prometheusrule.py")
    assert (K8S / "prometheusrule.yaml").read_text("utf-8") == generator.render(), (
        "deploy/k8s/prometheusrule.yaml is stale: run python deploy/k8s/prometheusrule.py"
    )


# --- rules and dashboards ---------------------------------------------------------------


def test_every_metric_in_rules_and_dashboards_is_exported_by_the_worker() -> None:
    recorded = recorded_names()
    used: list[tuple[str, str]] = [
        (f"rule {r.get('record') or r.get('alert')}", r["expr"]) for r in rules()
    ]
    used += [(f"{board}: {title}", expr) for board, title, expr in dashboard_queries()]
    used += [(f"{board}: variable {var}", sel) for board, var, sel in variable_queries()]
    problems = []
    seen: set[str] = set()
    for where, expr in used:
        for name in promql_metric_names(expr):
            seen.add(name)
            if name in recorded or name in EXTERNAL_METRICS:
                continue
            why = resolve(name)
            if why:
                problems.append(f"{where}: {name}: {why}")
    assert not problems, "\n".join(problems)
    assert set(EXTERNAL_METRICS) <= seen, "EXTERNAL_METRICS lists a series nothing uses"
    for name in recorded:
        level, metric, ops = name.split(":")
        assert level and ops and metric.startswith("cityvitals_"), (
            f"{name}: level:metric:operations"
        )


def test_rules_select_the_scrape_job_and_alerts_carry_severity_and_runbook() -> None:
    scrape = load_yaml(PROM / "prometheus.yml")
    assert "cityvitals" in {j["job_name"] for j in scrape["scrape_configs"]}
    docs = (REPO / "docs" / "operations.md").read_text("utf-8")
    anchors = {heading_anchor(h) for h in re.findall(r"^#+ (.+)$", docs, re.M)}
    for rule in rules():
        if "alert" not in rule:
            continue
        assert rule["alert"].startswith("Cityvitals"), rule["alert"]
        assert rule["labels"]["severity"] in ("critical", "warning"), rule["alert"]
        assert {"summary", "description", "runbook"} <= set(rule["annotations"]), rule["alert"]
        anchor = rule["annotations"]["runbook"].removeprefix("docs/operations.md#")
        assert anchor in anchors, f"{rule['alert']}: no section #{anchor} in docs/operations.md"
        for job in re.findall(r'job="([^"]+)"', rule["expr"]):
            assert job == "cityvitals", rule["alert"]


def heading_anchor(heading: str) -> str:
    """GitHub's anchor of a Markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_dashboards_equal_the_generators_output() -> None:
    try:
        generator = load_module(GRAFANA / "dashboards.py")
    except ModuleNotFoundError as exc:
        pytest.fail(
            f"deploy/grafana/dashboards.py needs {exc.name}: the dev extras of pyproject.toml "
            "must install grafana-foundation-sdk"
        )
    rendered = generator.render()
    on_disk = {p.name: p.read_text("utf-8") for p in (GRAFANA / "dashboards").glob("*.json")}
    assert set(on_disk) == set(rendered), (
        "deploy/grafana/dashboards/ has files the generator does not make"
    )
    stale = [name for name, text in rendered.items() if on_disk[name] != text]
    assert not stale, f"{stale} differ from the generator: run python deploy/grafana/dashboards.py"


def test_dashboards_have_their_variables_and_use_only_those() -> None:
    boards = dashboards()
    titles = {b["title"]: b for b in boards.values()}
    assert set(titles) == {"City vital signs", "Pipeline health", "Department performance"}
    assert len({b["uid"] for b in boards.values()}) == len(boards)
    wanted = {
        "City vital signs": {"datasource", "district", "domain"},
        "Pipeline health": {"datasource", "district", "instance"},
        "Department performance": {"datasource", "department"},
    }
    builtin = {"__rate_interval", "__range", "__interval"}
    for title, board in titles.items():
        variables = {v["name"] for v in board["templating"]["list"]}
        assert variables == wanted[title], title
        for panel in panels(board):
            if panel["type"] == "row":
                continue
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel[
                "title"
            ]
            assert panel.get("targets"), f"{title}: {panel['title']} has no query"
            for target in panel["targets"]:
                for var in re.findall(r"\$\{?(\w+)", target["expr"]):
                    assert var in variables | builtin, f"{title}: {panel['title']}: ${var}"
                assert target["refId"], panel["title"]
        ids = [p["id"] for p in panels(board)]
        assert len(ids) == len(set(ids)), f"{title}: duplicate panel ids"


# --- Prometheus' and Alertmanager's own checks ----------------------------------------


def test_promtool_checks_the_config_and_the_rules() -> None:
    promtool = ensure_tool("promtool", "prometheus")
    out = run_tool([promtool, "check", "config", str(PROM / "prometheus.yml")])
    assert "SUCCESS" in out
    out = run_tool([promtool, "check", "rules", *map(str, RULE_FILES)])
    assert out.count("SUCCESS") == len(RULE_FILES)


def test_promtool_unit_tests_pass_and_cover_every_alert_firing_and_not() -> None:
    promtool = ensure_tool("promtool", "prometheus")
    tests = sorted((PROM / "tests").glob("*.yml"))
    assert tests
    out = run_tool([promtool, "test", "rules", *map(str, tests)])
    assert "FAILED" not in out
    firing: set[str] = set()
    quiet: set[str] = set()
    for path in tests:
        for case in load_yaml(path)["tests"]:
            for check in case.get("alert_rule_test", []):
                (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    alerts = {r["alert"] for r in rules() if "alert" in r}
    assert alerts - firing == set(), "alerts never tested firing"
    assert alerts - quiet == set(), "alerts never tested not firing"
    tested_records = {
        e["expr"]
        for path in tests
        for case in load_yaml(path)["tests"]
        for e in case.get("promql_expr_test", [])
    }
    assert tested_records, "the recording rules have unit tests too"


def test_amtool_checks_the_alertmanager_config_and_inhibitions_name_real_alerts() -> None:
    amtool = ensure_tool("amtool", "prometheus-alertmanager")
    config = DEPLOY / "alertmanager" / "alertmanager.yml"
    assert "SUCCESS" in run_tool([amtool, "check-config", str(config)])
    alerts = {r["alert"] for r in rules() if "alert" in r}
    for inhibit in load_yaml(config)["inhibit_rules"]:
        for matcher in inhibit["source_matchers"] + inhibit["target_matchers"]:
            m = re.fullmatch(r'alertname(=~?|!=)"([^"]+)"', matcher)
            assert m, matcher
            if m.group(1) == "=":
                assert m.group(2) in alerts, matcher
            elif m.group(1) == "=~":
                assert any(re.fullmatch(m.group(2), a) for a in alerts), matcher
