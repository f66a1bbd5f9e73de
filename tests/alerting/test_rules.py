"""Threshold rules: validated at load with file, line, rule and reason; overrides resolve per place."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from detectors.thresholds import Aggregate, Direction
from streams.alerting.rules import load_thresholds
from streams.cli import cli
from streams.core.config import DEFAULT_CONFIG_DIR, ConfigError, load_config

CFG = load_config()


@pytest.fixture
def rules_file(tmp_path: Path) -> Path:
    path = tmp_path / "thresholds.yaml"
    shutil.copy(DEFAULT_CONFIG_DIR / "thresholds.yaml", path)
    return path


def replace(path: Path, old: str, new: str) -> int:
    """Replace the first occurrence; return its 1-based line number."""
    text = path.read_text(encoding="utf-8")
    at = text.index(old)
    path.write_text(text.replace(old, new, 1), encoding="utf-8")
    return text[:at].count("\n") + 1


def test_shipped_rules_load_and_cover_the_scripted_incident_indicators() -> None:
    rules = load_thresholds(CFG)
    covered = {r.indicator for r in rules.rules}
    assert {
        "iot.pm25",
        "iot.water_pressure_kpa",
        "fire.smoke_alarms",
        "fire.hydrant_pressure_kpa",
        "traffic.speed_kmh",
        "hotline.complaints",
        "sanitation.bin_fill_pct",
        "sanitation.overflow_reports",
    } <= covered
    departments = {r.department for r in rules.rules}
    assert len(departments) >= 8  # each department owns its rules


def test_a_district_override_applies_there_only() -> None:
    rules = load_thresholds(CFG)
    (laocheng,) = rules.specs_for("iot.pm25", "339902", None)
    (elsewhere,) = rules.specs_for("iot.pm25", "339901", None)
    assert laocheng.bounds == (60, 100, 150, 250)
    assert elsewhere.bounds == (75, 115, 150, 250)
    assert elsewhere.aggregate is Aggregate.MEAN and elsewhere.window_s == 900
    assert elsewhere.pending_s == 300 and elsewhere.hold_s == 900 and elsewhere.hysteresis == 10
    assert laocheng.version != elsewhere.version  # evidence names the exact resolved rule


def test_defaults_fill_what_a_rule_leaves_out() -> None:
    rules = load_thresholds(CFG)
    (noise,) = rules.specs_for("iot.noise_db", "339901", None)
    assert noise.hold_s == 600 and noise.missing_after_s == 600  # from defaults
    assert noise.pending_s == 600  # the rule's own "10m"
    assert noise.bounds == (70, 75, 85, None)


def test_street_scoped_rules_need_a_street() -> None:
    rules = load_thresholds(CFG)
    assert rules.specs_for("fire.smoke_alarms", "339901", None) == []
    (spec,) = rules.specs_for("fire.smoke_alarms", "339901", "339901001")
    assert spec.direction is Direction.ABOVE and spec.pending_s == 0


def test_street_override_applies_on_top_of_the_district_override(rules_file: Path) -> None:
    replace(
        rules_file,
        "    pending: 2m\n    hysteresis: 10\n\n  - id: fire.calls_119",
        "    pending: 2m\n    hysteresis: 10\n    overrides:\n"
        '      - {district: "339901", pending: 5m, hold: 20m}\n'
        '      - {street: "339901002", pending: 30s}\n\n  - id: fire.calls_119',
    )
    rules = load_thresholds(CFG, rules_file)
    (street,) = rules.specs_for("fire.hydrant_pressure_kpa", "339901", "339901002")
    (other,) = rules.specs_for("fire.hydrant_pressure_kpa", "339901", "339901001")
    assert (street.pending_s, street.hold_s) == (30, 1200)
    assert (other.pending_s, other.hold_s) == (300, 1200)


@pytest.mark.parametrize(
    ("old", "new", "where", "reason"),
    [
        (
            "grades: {IV: 75, III: 115, II: 150, I: 250}",
            "grades: {IV: 75, III: 60, II: 150, I: 250}",
            "rules[0] (environment.pm25.mean15).grades",
            "must increase from IV to I",
        ),
        (
            "indicator: iot.noise_db",
            "indicator: iot.noise_level",
            "rules[1] (environment.noise.mean15).indicator",
            "unknown indicator 'iot.noise_level'",
        ),
        (
            "department: fire\n    indicator: fire.smoke_alarms",
            "department: water\n    indicator: fire.smoke_alarms",
            "rules[2] (fire.smoke_alarms.sum5).department",
            "department 'water' does not own 'fire.smoke_alarms' (owned by 'fire')",
        ),
        (
            "pending: 5m\n    hold: 15m",
            "pending: 5 minutes\n    hold: 15m",
            "rules[0].pending",
            "is not a duration",
        ),
        (
            "window: 15m\n    direction: above\n    grades: {IV: 70",
            "window: 0\n    direction: above\n    grades: {IV: 70",
            "rules[1] (environment.noise.mean15).window",
            "aggregate 'mean' needs a window",
        ),
        (
            '- district: "339902"',
            '- district: "999999"',
            "rules[0] (environment.pm25.mean15).overrides[0].district",
            "unknown district '999999'",
        ),
        (
            '- district: "339902"',
            '- street: "339902001"',
            "rules[0] (environment.pm25.mean15).overrides[0].street",
            "needs a street-scoped rule",
        ),
        (
            "id: environment.noise.mean15",
            "id: environment.pm25.mean15",
            "rules[1] (environment.pm25.mean15).id",
            "duplicate rule id",
        ),
        (
            "direction: above\n    grades: {IV: 75",
            "direction: sideways\n    grades: {IV: 75",
            "rules[0].direction",
            "'above' or 'below'",
        ),
        (
            "grades: {IV: 85, III: 95, II: 105, I: 120}",
            "grades: {IV: 85, III: 95, II: 105, I: 120, O: 130}",
            "rules[10].grades.O",
            "'IV', 'III', 'II' or 'I'",
        ),
    ],
)
def test_invalid_rules_stop_with_file_line_rule_and_reason(
    rules_file: Path, old: str, new: str, where: str, reason: str
) -> None:
    line = replace(rules_file, old, new)
    with pytest.raises(ConfigError) as info:
        load_thresholds(CFG, rules_file)
    err = info.value
    assert err.file == str(rules_file)
    assert err.path.startswith(where), err
    assert reason in err.reason, err
    assert err.line is not None and abs(err.line - line) <= 3, (err.line, line)


def test_invalid_rules_stop_the_cli_with_no_traceback(tmp_path: Path) -> None:
    for name in ("city.yaml", "indicators.yaml", "thresholds.yaml"):
        shutil.copy(DEFAULT_CONFIG_DIR / name, tmp_path / name)
    replace(tmp_path / "thresholds.yaml", "indicator: iot.pm25", "indicator: iot.pm10")
    result = CliRunner().invoke(cli, ["check-config", "--config-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert "thresholds.yaml:" in result.output and "unknown indicator 'iot.pm10'" in result.output
    assert "Traceback" not in result.output


def test_maintenance_windows_load_and_silence_matching_alerts() -> None:
    from streams.alerting.rules import load_silences

    (works,) = load_silences(CFG, load_thresholds(CFG))
    assert works.silence_id == "works-2026-12-wangchao-water-main"
    assert (works.district, works.street, works.domain) == ("339901", "339901002", "utilities")
    assert works.end - works.start == 8 * 3600


@pytest.mark.parametrize(
    ("entry", "where", "reason"),
    [
        ('end: "2026-12-01T21:00:00+08:00"', "silences[0].end", "is not after start"),
        ('street: "339902001"', "silences[0].street", "is not in district '339901'"),
        ("domain: water", "silences[0].domain", "unknown domain 'water'"),
        ("rule: nope.rule", "silences[0].rule", "unknown rule 'nope.rule'"),
    ],
)
def test_invalid_maintenance_windows_stop_with_file_line_and_reason(
    tmp_path: Path, entry: str, where: str, reason: str
) -> None:
    from streams.alerting.rules import load_silences

    path = tmp_path / "silences.yaml"
    path.write_text(
        "silences:\n"
        "  - id: w1\n"
        '    start: "2026-12-01T22:00:00+08:00"\n'
        '    end: "2026-12-02T06:00:00+08:00"\n'
        '    district: "339901"\n'
        f"    {entry}\n",
        encoding="utf-8",
    )
    if entry.startswith("end:"):  # replace, not add, the end
        text = path.read_text(encoding="utf-8").replace(
            '    end: "2026-12-02T06:00:00+08:00"\n', ""
        )
        path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_silences(CFG, load_thresholds(CFG), path)
    assert info.value.path == where and reason in info.value.reason
    assert info.value.line is not None
