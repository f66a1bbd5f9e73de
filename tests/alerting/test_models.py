"""Anomaly models chosen per indicator (config/anomaly.yaml): any river detector, checked at load."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from river import anomaly

from detectors.anomaly import AnomalyConfig, SeriesDetector
from detectors.calibrated import Calibrated
from streams.alerting.detection import ANOMALY_RULE, DetectionContext
from streams.alerting.models import (
    ENSEMBLE,
    SEASONAL,
    AnomalyModels,
    ModelChoice,
    context_range,
    load_anomaly_models,
)
from streams.alerting.rules import load_thresholds
from streams.core.config import ConfigError, load_config
from streams.state.windows import ClosedWindow

CFG = load_config()

TWO_RIVER = """\
models:
  - indicators: ["traffic.occupancy_pct"]
    model: river.anomaly.HalfSpaceTrees
    params: {n_trees: 5, height: 6, window_size: 50, seed: 3}
    settings: {warmup_readings: 30, holdoff_readings: 20}
  - indicators: ["sanitation.*"]
    model: river.anomaly.StandardAbsoluteDeviation
  - indicators: ["*"]
    model: seasonal_likelihood
    settings: {fire_score: 0.5}
"""


def assert_stops(tmp_path: Path, text: str, where: str, reason: str) -> None:
    """Loading ``text`` fails at ``<file>{where}: `` for ``reason``."""
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_anomaly_models(CFG, path)
    message = str(info.value)
    assert message.startswith(f"{path}{where}: "), message
    assert reason in message


def minute(i: int, value: float) -> ClosedWindow:
    """Closed minute ``i`` of district 339901 with one lane-occupancy reading."""
    start = 1_795_000_000.0 - 1_795_000_000.0 % 60 + 60 * i
    agg = {"traffic.occupancy_pct": [1, value, value, value]}
    return ClosedWindow("339901", start, start + 60, agg, agg)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "anomaly.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_the_shipped_file_keeps_the_built_in_model_everywhere() -> None:
    models = load_anomaly_models(CFG)
    for code in CFG.indicators:
        choice = models.choice(code)
        assert choice.name == ENSEMBLE and choice.rule == ANOMALY_RULE
        assert choice.settings == AnomalyConfig()


def test_first_matching_entry_chooses_the_model_with_its_params_and_settings(
    tmp_path: Path,
) -> None:
    models = load_anomaly_models(CFG, write(tmp_path, TWO_RIVER))
    hst = models.choice("traffic.occupancy_pct")
    assert hst.rule == "anomaly.HalfSpaceTrees"
    assert hst.settings.warmup_readings == 30 and hst.settings.holdoff_readings == 20
    assert hst.settings.fire_score == AnomalyConfig().fire_score  # unset: the default
    model, gate = hst.build((0.0, 100.0))
    assert isinstance(model, Calibrated) and isinstance(model.detector, anomaly.HalfSpaceTrees)
    assert model.detector.n_trees == 5 and model.detector.seed == 3
    assert model.detector.limits == {"value": (0.0, 100.0)}  # the catalogue range
    assert gate.config.holdoff_readings == 20
    sad = models.choice("sanitation.bin_fill_pct")
    assert sad.rule == "anomaly.StandardAbsoluteDeviation"
    built, _ = sad.build()
    assert isinstance(built, Calibrated)
    assert isinstance(built.detector, anomaly.StandardAbsoluteDeviation)
    rest = models.choice("iot.pm25")
    assert rest.name == SEASONAL and rest.settings.fire_score == 0.5
    seasonal, _ = rest.build()
    assert isinstance(seasonal, SeriesDetector)
    assert len({hst.version, sad.version, rest.version}) == 3


def test_a_river_model_alerts_through_the_same_gate(tmp_path: Path) -> None:
    choice = load_anomaly_models(CFG, write(tmp_path, TWO_RIVER)).choice("sanitation.bin_fill_pct")
    model, gate = choice.build((0.0, 100.0))
    events = []
    for i in range(400):
        value = 40.0 + (i % 5) + (45.0 if 300 <= i < 306 else 0.0)
        decision = gate.update(60.0 * i, model.update(60.0 * i, value))
        if decision.event == "firing":
            events.append(i)
    assert events and all(300 <= i < 306 for i in events)


@pytest.mark.parametrize(
    ("text", "where", "reason"),
    [
        (
            "models:\n  - indicators: ['iot.pm25']\n    model: river.anomaly.Nope\n",
            ":3: models[0].model",
            "unknown model 'river.anomaly.Nope'; known: river.anomaly.GaussianScorer",
        ),
        (
            "models:\n  - indicators: ['iot.pm25']\n    model: river.anomaly.LODA\n"
            "    params:\n      n_bin: 10\n",
            ":5: models[0].params.n_bin",
            "LODA has no parameter 'n_bin'; it takes n_bins, n_random_cuts, seed",
        ),
        (
            "models:\n  - indicators: ['iot.pm25']\n    model: river.anomaly.HalfSpaceTrees\n"
            "    params:\n      n_trees: ten\n",
            ":5: models[0].params.n_trees",
            "HalfSpaceTrees: TypeError",
        ),
        (
            "models:\n  - indicators: ['iot.pm25']\n    model: seasonal_likelihood\n"
            "    settings:\n      fire_scor: 0.5\n",
            ":5: models[0].settings.fire_scor",
            "unknown setting 'fire_scor'",
        ),
        (
            "models:\n  - indicators: ['iot.pm25']\n    model: seasonal_likelihood\n"
            "    settings:\n      holdoff_readings: -1\n",
            ":5: models[0].settings.holdoff_readings",
            "holdoff_readings and holdoff_seconds must be >= 0",
        ),
        (
            "models:\n  - indicators: ['iot.pm25', 'iot.pm10*']\n    model: seasonal_likelihood\n",
            ":2: models[0].indicators[1]",
            "'iot.pm10*' matches no indicator of the catalogue",
        ),
        (
            "models:\n  - indicators: ['iot.pm25']\n",
            ":2: models[0].model",
            "Field required",
        ),
    ],
)
def test_a_bad_model_stops_loading_with_file_line_key_and_reason(
    tmp_path: Path, text: str, where: str, reason: str
) -> None:
    assert_stops(tmp_path, text, where, reason)


def test_detection_loads_the_city_file_so_a_bad_model_stops_start_up(tmp_path: Path) -> None:
    import shutil

    from streams.core.config import DEFAULT_CONFIG_DIR

    for name in ("city.yaml", "indicators.yaml", "thresholds.yaml"):
        shutil.copy(DEFAULT_CONFIG_DIR / name, tmp_path / name)
    write(tmp_path, "models:\n  - indicators: ['*']\n    model: river.anomaly.Nope\n")
    cfg = load_config(tmp_path)
    with pytest.raises(ConfigError, match=r"unknown model 'river\.anomaly\.Nope'"):
        DetectionContext(cfg, load_thresholds(cfg))
    write(tmp_path, TWO_RIVER)
    ctx = DetectionContext(cfg, load_thresholds(cfg))
    model, _ = ctx.anomaly_model("traffic.occupancy_pct")
    assert isinstance(model, Calibrated)
    assert model.detector.limits == {"value": (0.0, 100.0)}
    assert DetectionContext(cfg, load_thresholds(cfg), anomaly=None).models is None


def test_a_river_model_ignores_non_finite_values() -> None:
    model = Calibrated(anomaly.StandardAbsoluteDeviation())
    score = model.update(0.0, math.nan)
    assert score.score == 0.0 and not score.learned and score.expected is None


def test_a_bad_model_stops_the_cli_with_no_traceback(tmp_path: Path) -> None:
    import shutil

    from typer.testing import CliRunner

    from streams.cli import cli
    from streams.core.config import DEFAULT_CONFIG_DIR

    for name in ("city.yaml", "indicators.yaml", "thresholds.yaml", "silences.yaml"):
        shutil.copy(DEFAULT_CONFIG_DIR / name, tmp_path / name)
    write(
        tmp_path,
        "models:\n  - indicators: ['*']\n    model: river.anomaly.HalfSpaceTrees\n"
        "    params: {n_trees: ten}\n",
    )
    result = CliRunner().invoke(cli, ["check-config", "--config-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert "anomaly.yaml:4: models[0].params.n_trees: HalfSpaceTrees: TypeError" in result.output
    assert "Traceback" not in result.output


SITES = """\
sites:
  - name: lane-1
    indicators: [traffic.speed_kmh, traffic.occupancy_pct]
    settings: {holdoff_seconds: 1800}
  - name: main-7
    indicators: [iot.water_pressure_kpa, fire.hydrant_pressure_kpa]
    model: river.anomaly.HalfSpaceTrees
    params: {n_trees: 5, height: 6, window_size: 50, seed: 2}
"""


def test_site_groups_load_with_their_model_and_catalogue_ranges(tmp_path: Path) -> None:
    from detectors.site import SiteModel

    models = load_anomaly_models(CFG, write(tmp_path, SITES))
    lane, main = models.sites
    assert lane.indicators == ("traffic.speed_kmh", "traffic.occupancy_pct")
    assert lane.rule == "anomaly.site" and lane.key == "site:lane-1"
    assert lane.settings.holdoff_seconds == 1800
    model, _ = lane.build()
    assert isinstance(model, Calibrated) and isinstance(model.detector, SiteModel)
    assert model.value_key is None and model.settle == model.detector.settle
    hst, _ = main.build({c: CFG.indicators[c].range for c in main.indicators})
    assert isinstance(hst, Calibrated) and isinstance(hst.detector, anomaly.HalfSpaceTrees)
    assert hst.detector.limits == {
        "iot.water_pressure_kpa": (0.0, 1600.0),
        "fire.hydrant_pressure_kpa": (0.0, 1600.0),
    }
    assert lane.version != main.version
    # the members are still each watched on their own
    assert models.choice("traffic.speed_kmh").name == ENSEMBLE


@pytest.mark.parametrize(
    ("text", "where", "reason"),
    [
        (
            "sites:\n  - name: a\n    indicators: [iot.pm25, iot.pm10]\n",
            ":3: sites[0].indicators[1]",
            "unknown indicator 'iot.pm10'",
        ),
        (
            "sites:\n  - name: a\n    indicators: [iot.pm25, iot.pm25]\n",
            ":3: sites[0].indicators[1]",
            "'iot.pm25' is listed twice",
        ),
        (
            "sites:\n  - name: a\n    indicators: [iot.pm25]\n",
            ":3: sites[0].indicators",
            "at least 2 items",
        ),
        (
            "sites:\n  - name: a\n    indicators: [iot.pm25, iot.noise_db]\n"
            "  - name: a\n    indicators: [iot.pm25, iot.noise_db]\n",
            ":4: sites[1].name",
            "site 'a' is defined twice",
        ),
        (
            "sites:\n  - name: a\n    indicators: [iot.pm25, iot.noise_db]\n"
            "    model: river.anomaly.StandardAbsoluteDeviation\n",
            ":4: sites[0].model",
            "unknown site model 'river.anomaly.StandardAbsoluteDeviation'",
        ),
        (
            "sites:\n  - name: a\n    indicators: [iot.pm25, iot.noise_db]\n"
            "    params: {fading: 0.1}\n",
            ":4: sites[0].params.fading",
            "site_mahalanobis has no parameter 'fading'; it takes fading_factor",
        ),
    ],
)
def test_a_bad_site_stops_loading_with_file_line_key_and_reason(
    tmp_path: Path, text: str, where: str, reason: str
) -> None:
    assert_stops(tmp_path, text, where, reason)


def test_the_default_model_takes_the_contextual_range_from_the_catalogue_band() -> None:
    from detectors.ensemble import Ensemble

    ctx_model, _ = (
        load_anomaly_models(CFG)
        .choice("iot.water_pressure_kpa")
        .build((0.0, 1600.0), (250.0, 650.0))
    )
    assert isinstance(ctx_model, Ensemble)
    assert ctx_model.value_range == (50.0, 850.0)  # the band widened by half its span
    assert context_range((0.0, 100.0), (0.0, 35.0)) == (0.0, 52.5)  # within the range
    assert context_range((0.0, 50.0), (0.0, 0.0)) is None  # no band: learned from data
    assert context_range(None, None) is None


def test_a_changed_model_takes_over_each_series_once_no_alert_of_it_is_open(
    tmp_path: Path,
) -> None:
    from streams.alerting.detection import DistrictDetection

    rules = load_thresholds(CFG)
    before = DetectionContext(CFG, rules)
    det = DistrictDetection("339901")
    for i in range(200):
        det.on_window(minute(i, 20.0 + i % 3), before)
    model, gate = det.anomaly["traffic.occupancy_pct"]
    assert not isinstance(model, Calibrated) and not gate.active
    restored = DistrictDetection.loads(det.dumps())  # as after a restart
    after = DetectionContext(
        CFG, rules, models=load_anomaly_models(CFG, write(tmp_path, TWO_RIVER))
    )
    restored.on_window(minute(200, 21.0), after)
    changed, _ = restored.anomaly["traffic.occupancy_pct"]
    assert isinstance(changed, Calibrated)
    assert isinstance(changed.detector, anomaly.HalfSpaceTrees)
    version = after.models.choice("traffic.occupancy_pct").version  # type: ignore[union-attr]
    assert restored.anomaly_versions["traffic.occupancy_pct"] == ("anomaly.HalfSpaceTrees", version)
    # the same model from then on: it learns, it is not rebuilt each minute
    restored.on_window(minute(201, 22.0), after)
    assert restored.anomaly["traffic.occupancy_pct"][0] is changed
    # an open alert keeps the model that raised it until it resolves
    det.anomaly["traffic.occupancy_pct"][1].active = True
    det.on_window(minute(200, 21.0), after)
    assert not isinstance(det.anomaly["traffic.occupancy_pct"][0], Calibrated)


def test_an_alert_open_across_a_model_change_resolves_under_its_own_rule(tmp_path: Path) -> None:
    """State from before the change: the open alert keeps its model and rule, resolves
    under that rule, and only then does the series take the new model."""
    from detectors.anomaly import AnomalyGate, AnomalyScore
    from streams.alerting.detection import LEGACY_RULE, DistrictDetection

    class Scripted:
        """A model whose scores are given: an onset, then quiet."""

        def __init__(self, scores: list[float]) -> None:
            self.scores = scores

        def update(self, t: float, value: float) -> AnomalyScore:
            return AnomalyScore(self.scores.pop(0), 0.0, value, True, True)

    rules = load_thresholds(CFG)
    key = "traffic.occupancy_pct"
    legacy = DetectionContext(CFG, rules, models=AnomalyModels((), ModelChoice(SEASONAL)))
    assert legacy.models is not None
    det = DistrictDetection("339901")
    det.anomaly[key] = (Scripted([0.9] + [0.1] * 12), AnomalyGate())
    det.anomaly_versions[key] = (LEGACY_RULE, legacy.models.default.version)
    events = det.on_window(minute(0, 20.0), legacy)  # the alert opens under the old model
    del det.anomaly_versions[key]  # as in state written before models were recorded
    after = DetectionContext(
        CFG, rules, models=load_anomaly_models(CFG, write(tmp_path, TWO_RIVER))
    )
    for i in range(1, 13):
        events += det.on_window(minute(i, 20.0), after)
    anomaly_events = [e for e in events if e.evidence.rule.startswith("anomaly.")]
    assert [e.status.value for e in anomaly_events] == ["firing", "resolved"]
    assert {e.evidence.rule for e in anomaly_events} == {LEGACY_RULE}
    assert anomaly_events[0].alert_id == anomaly_events[1].alert_id
    det.on_window(minute(13, 20.0), after)  # no alert open: the configured model now
    assert isinstance(det.anomaly[key][0], Calibrated)
