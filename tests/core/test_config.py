"""Config is validated at load: errors name the file, the line, the key path and the reason."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from streams.cli import cli
from streams.core.config import DEFAULT_CONFIG_DIR, ConfigError, load_config


@pytest.fixture
def config_copy(tmp_path: Path) -> Path:
    for name in ("city.yaml", "indicators.yaml", "thresholds.yaml"):
        shutil.copy(DEFAULT_CONFIG_DIR / name, tmp_path / name)
    return tmp_path


def replace(path: Path, old: str, new: str) -> int:
    """Replace the first occurrence; return its 1-based line number."""
    text = path.read_text(encoding="utf-8")
    at = text.index(old)
    path.write_text(text.replace(old, new, 1), encoding="utf-8")
    return text[:at].count("\n") + 1


def test_shipped_demo_city_has_at_least_eight_districts_with_streets_and_the_required_indicators() -> (
    None
):
    cfg = load_config()
    assert len(cfg.districts) >= 8
    assert all(len(d.streets) >= 2 for d in cfg.city.districts)
    required = {
        "traffic.speed_kmh",
        "traffic.congestion_index",
        "iot.pm25",
        "iot.water_pressure_kpa",
        "fire.smoke_alarms",
        "fire.hydrant_pressure_kpa",
        "sanitation.bin_fill_pct",
        "sanitation.overflow_reports",
        "hotline.complaints",
    }
    assert required <= set(cfg.indicators)
    assert {i.sharing.value for i in cfg.catalogue.indicators} == {
        "not_shared",
        "on_request",
        "open",
    }


def test_unit_conversions_give_the_canonical_unit() -> None:
    ind = load_config().indicators
    assert ind["iot.water_pressure_kpa"].to_canonical(3.5, "bar") == pytest.approx(350.0)
    assert ind["traffic.speed_kmh"].to_canonical(10, "m/s") == pytest.approx(36.0)
    assert ind["fire.temperature_c"].to_canonical(212, "degF") == pytest.approx(100.0)
    assert ind["iot.pm25"].to_canonical(1, "furlongs") is None


def test_range_with_minimum_above_maximum_names_file_line_path_and_reason(
    config_copy: Path,
) -> None:
    path = config_copy / "indicators.yaml"
    line = replace(path, "range: [0, 200]", "range: [300, 200]")
    with pytest.raises(ConfigError) as exc:
        load_config(config_copy)
    assert exc.value.file == str(path)
    assert exc.value.line == line
    assert exc.value.path == "indicators[0].range"
    assert "minimum 300.0 is not below maximum 200.0" in exc.value.reason


def test_unknown_domain_of_an_indicator_is_reported_with_its_position(config_copy: Path) -> None:
    path = config_copy / "indicators.yaml"
    line = replace(path, "domain: fire\n", "domain: firefighting\n")
    with pytest.raises(ConfigError) as exc:
        load_config(config_copy)
    assert exc.value.line == line
    assert exc.value.path.endswith(".domain")
    assert "unknown domain 'firefighting'" in exc.value.reason


def test_domain_weights_must_add_up_to_one(config_copy: Path) -> None:
    replace(config_copy / "indicators.yaml", "weight: 0.20}", "weight: 0.50}")
    with pytest.raises(ConfigError, match="domain weights must add up to 1"):
        load_config(config_copy)


def test_duplicate_street_code_is_rejected(config_copy: Path) -> None:
    path = config_copy / "city.yaml"
    line = replace(path, '{code: "339901002"', '{code: "339901001"')
    with pytest.raises(ConfigError) as exc:
        load_config(config_copy)
    assert exc.value.line == line
    assert exc.value.path == "districts[0].streets[1].code"
    assert "duplicate code '339901001'" in exc.value.reason


def test_unknown_key_is_rejected_not_ignored(config_copy: Path) -> None:
    path = config_copy / "city.yaml"
    line = replace(path, "    kind: industrial\n", "    kind: industrial\n    polution: high\n")
    with pytest.raises(ConfigError) as exc:
        load_config(config_copy)
    assert exc.value.path == "districts[6].polution"
    assert exc.value.line == line + 1
    assert "Extra inputs are not permitted" in exc.value.reason


def test_broken_yaml_names_the_line(config_copy: Path) -> None:
    path = config_copy / "city.yaml"
    line = replace(path, "  name_en: Linjiang\n", "  name_en: [Linjiang\n")
    with pytest.raises(ConfigError) as exc:
        load_config(config_copy)
    assert "not valid YAML" in exc.value.reason
    assert exc.value.line is not None and exc.value.line >= line


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path)


def test_cli_stops_with_the_error_and_no_traceback(config_copy: Path) -> None:
    replace(config_copy / "indicators.yaml", "range: [0, 200]", "range: [300, 200]")
    result = CliRunner().invoke(cli, ["check-config", "--config-dir", str(config_copy)])
    assert result.exit_code == 2
    assert "indicators.yaml:" in result.output and "indicators[0].range" in result.output
    assert "Traceback" not in result.output


def test_cli_check_config_summarises_a_valid_city() -> None:
    result = CliRunner().invoke(cli, ["check-config"])
    assert result.exit_code == 0, result.output
    assert "10 districts" in result.output
    # the files only the API and the notifications read are checked too; the
    # terminal may wrap the line anywhere, so compare words
    shown = " ".join(result.output.split())
    assert "API users (roles.yaml)" in shown and "notification receivers (routes.yaml)" in shown


def test_worker_collects_young_garbage_every_configured_number_of_allocations() -> None:
    import gc

    from streams.core.settings import Settings
    from streams.kafka.worker import tune_gc

    before = gc.get_threshold()
    try:
        tune_gc(Settings(gc_young=0))
        assert gc.get_threshold() == before  # 0 keeps Python's own
        tune_gc(Settings(gc_young=25_000))
        assert gc.get_threshold() == (25_000, 20, 10)
        assert gc.get_freeze_count() > 0  # start-up objects are no longer scanned
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


@pytest.mark.parametrize(
    ("name", "old", "new", "where"),
    [
        ("roles.yaml", "    role: operator\n", "    role: overlord\n", "users[0].role"),
        ("routes.yaml", "  receiver: command-centre\n", "  receiver: nobody\n", "route.receiver"),
    ],
)
def test_check_config_stops_on_the_roles_and_routes_the_worker_loads(
    tmp_path: Path, name: str, old: str, new: str, where: str
) -> None:
    for path in DEFAULT_CONFIG_DIR.glob("*.yaml"):
        shutil.copy(path, tmp_path / path.name)
    line = replace(tmp_path / name, old, new)
    result = CliRunner().invoke(cli, ["check-config", "--config-dir", str(tmp_path)])
    assert result.exit_code == 2, result.output
    assert f"{name}:{line}" in result.output.replace("\n", ""), result.output
    assert where in result.output.replace("\n", ""), result.output
