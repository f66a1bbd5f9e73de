"""Which anomaly model watches which indicator (``config/anomaly.yaml``).

Every anomaly model is a river anomaly detector (:mod:`detectors.anomaly`,
:mod:`detectors.calibrated`), chosen per indicator or indicator family::

    models:
      - indicators: ["iot.water_pressure_kpa", "iot.water_flow_*"]
        model: river.anomaly.HalfSpaceTrees
        params: {n_trees: 10, height: 8, window_size: 250, seed: 1}
        settings: {fire_score: 0.5, holdoff_readings: 60}

``indicators`` are glob patterns over indicator codes (``*`` alone: every indicator);
the first entry that matches an indicator chooses its model, and an indicator no entry
matches gets the built-in ``seasonal_likelihood`` with the product's defaults.
``model`` is ``seasonal_likelihood`` (:class:`~detectors.anomaly.SeriesDetector`,
``params`` are not used: its parameters are ``settings``) or any detector of
``river.anomaly`` by its name (``river.anomaly.HalfSpaceTrees``, ``LODA``,
``OneClassSVM``, ``StandardAbsoluteDeviation``, ...), built with ``params`` and wrapped in
:class:`~detectors.calibrated.Calibrated` so that its scores reach the same gate,
lifecycle, evidence and replay. Where a river detector takes the value's range
(``HalfSpaceTrees``' ``limits``) and ``params`` do not give it, the indicator's
catalogue range is used. ``settings`` override fields of
:class:`~detectors.anomaly.AnomalyConfig`: the gate (``fire_score``, ``clear_score``,
``hold_readings``, ``holdoff_readings``, ``holdoff_seconds``, ``grade_bands``, ...), the
likelihood and, for the seasonal model, its own parameters.

A bad model name, parameter or setting stops start-up with the file, the line, the key
and the reason: each entry is built and fed one reading when the file is loaded.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import functools
import hashlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, NoReturn

import orjson
from pydantic import BaseModel, ConfigDict, Field
from river import anomaly, base

from detectors.anomaly import AnomalyConfig, AnomalyGate, AnomalyScorer, SeriesDetector
from detectors.calibrated import Calibrated
from streams.config import CityConfig, ConfigError, _format_path, _load_model, _nearest_line

SEASONAL = "seasonal_likelihood"
RIVER_PREFIX = "river.anomaly."
#: river.anomaly's detectors that score a reading on their own (its filters wrap one).
RIVER_DETECTORS: dict[str, type[base.AnomalyDetector | base.SupervisedAnomalyDetector]] = {
    name: cls
    for name in anomaly.__all__
    if isinstance(cls := getattr(anomaly, name), type)
    and issubclass(cls, base.AnomalyDetector | base.SupervisedAnomalyDetector)
    and not issubclass(cls, base.AnomalyFilter)
}

#: Every rule name an anomaly model's alert can carry (routes may match any of them).
ANOMALY_RULES = frozenset(
    ["anomaly.seasonal-likelihood", *(f"anomaly.{name}" for name in RIVER_DETECTORS)]
)


class ModelEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    indicators: list[str] = Field(min_length=1)
    model: str
    params: dict[str, Any] = Field(default_factory=dict)
    settings: dict[str, Any] = Field(default_factory=dict)


class AnomalyFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    models: list[ModelEntry] = Field(default_factory=list)


@dataclass(frozen=True)
class ModelChoice:
    """One resolved model: its name, river parameters and settings."""

    name: str
    params: tuple[tuple[str, Any], ...] = ()
    settings: AnomalyConfig = dataclasses.field(default_factory=AnomalyConfig)

    @property
    def rule(self) -> str:
        """Evidence's rule: ``anomaly.seasonal-likelihood`` or ``anomaly.<river name>``."""
        if self.name == SEASONAL:
            return "anomaly.seasonal-likelihood"
        return "anomaly." + self.name.removeprefix(RIVER_PREFIX)

    @cached_property
    def version(self) -> str:
        """A digest of the model and every setting: evidence names the exact model."""
        doc = {
            "model": self.name,
            "params": dict(self.params),
            "settings": dataclasses.asdict(self.settings),
        }
        blob = orjson.dumps(doc, option=orjson.OPT_SORT_KEYS, default=repr)
        return hashlib.sha256(blob).hexdigest()[:12]

    def build(
        self, value_range: tuple[float, float] | None = None
    ) -> tuple[AnomalyScorer, AnomalyGate]:
        """A fresh model and gate for one series (``value_range``: the catalogue range)."""
        if self.name == SEASONAL:
            return SeriesDetector(self.settings), AnomalyGate(self.settings)
        cls = RIVER_DETECTORS[self.name.removeprefix(RIVER_PREFIX)]
        params = dict(self.params)
        if value_range is not None and "limits" in inspect.signature(cls).parameters:
            params.setdefault("limits", {"value": value_range})
        detector = cls(**params)
        return Calibrated(detector, self.settings), AnomalyGate(self.settings)


@dataclass(frozen=True)
class AnomalyModels:
    """The model choice of every indicator: the first matching entry, else the default."""

    entries: tuple[tuple[tuple[str, ...], ModelChoice], ...] = ()
    default: ModelChoice = dataclasses.field(default_factory=lambda: ModelChoice(SEASONAL))

    def choice(self, indicator: str) -> ModelChoice:
        for patterns, choice in self.entries:
            if any(fnmatch.fnmatchcase(indicator, p) for p in patterns):
                return choice
        return self.default


def _probe(built: tuple[AnomalyScorer, AnomalyGate], value: float) -> None:
    """Feed a fresh model readings: parameters river only checks when used fail here."""
    model, gate = built
    for i in range(3):
        gate.update(60.0 * i, model.update(60.0 * i, value + i))


def _attempt(
    name: str, settings: AnomalyConfig, value_range: tuple[float, float], params: dict[str, Any]
) -> None:
    """Build the model with ``params`` for a series of this range and feed it readings."""
    lo, hi = value_range
    _probe(
        ModelChoice(name, tuple(sorted(params.items())), settings).build((lo, hi)), (lo + hi) / 2
    )


def _culprit(doc: dict[str, Any], attempt: Callable[[dict[str, Any]], object]) -> str:
    """The first key of ``doc`` with which ``attempt`` fails on its own, else ""."""
    for key, value in doc.items():
        try:
            attempt({key: value})
        except Exception:
            return key
    return ""


def load_anomaly_models(
    cfg: CityConfig, path: Path | str | None = None, default: AnomalyConfig | None = None
) -> AnomalyModels:
    """Load and check ``anomaly.yaml`` (by default from the city's config directory).

    A missing file at the default path means the built-in model everywhere; ``default``
    is that model's settings (the product's defaults when None).
    """
    base_settings = default if default is not None else AnomalyConfig()
    fallback = ModelChoice(SEASONAL, (), base_settings)
    file = Path(path) if path is not None else cfg.directory / "anomaly.yaml"
    if path is None and not file.exists():
        return AnomalyModels((), fallback)
    data, lines = _load_model(file, AnomalyFile)

    def fail(loc: tuple[str | int, ...], reason: str) -> NoReturn:
        raise ConfigError(file, _format_path(loc), reason, _nearest_line(lines, loc))

    known = sorted([SEASONAL] + [RIVER_PREFIX + n for n in RIVER_DETECTORS])
    fields = {f.name for f in dataclasses.fields(AnomalyConfig)}
    entries = []
    for i, entry in enumerate(data.models):
        at: tuple[str | int, ...] = ("models", i)
        name = entry.model
        short = name.removeprefix(RIVER_PREFIX)
        if name != SEASONAL and not (name.startswith(RIVER_PREFIX) and short in RIVER_DETECTORS):
            fail((*at, "model"), f"unknown model {name!r}; known: {', '.join(known)}")
        for key in entry.settings:
            if key not in fields:
                fail((*at, "settings", key), f"unknown setting {key!r}")
        settings_doc = dict(entry.settings)
        if "grade_bands" in settings_doc:
            settings_doc["grade_bands"] = tuple(settings_doc["grade_bands"])
        try:
            settings = dataclasses.replace(base_settings, **settings_doc)
        except (TypeError, ValueError) as exc:
            key = _culprit(settings_doc, lambda one: dataclasses.replace(base_settings, **one))
            fail((*at, "settings", *([key] if key else [])), str(exc))
        if name == SEASONAL and entry.params:
            fail((*at, "params"), "seasonal_likelihood takes its parameters as settings")
        if name != SEASONAL:
            accepted = inspect.signature(RIVER_DETECTORS[short]).parameters
            for key in entry.params:
                if key not in accepted:
                    fail(
                        (*at, "params", key),
                        f"{short} has no parameter {key!r}; it takes {', '.join(accepted)}",
                    )
        choice = ModelChoice(name, tuple(sorted(entry.params.items())), settings)
        for j, pattern in enumerate(entry.indicators):
            if not any(fnmatch.fnmatchcase(code, pattern) for code in cfg.indicators):
                fail((*at, "indicators", j), f"{pattern!r} matches no indicator of the catalogue")
        ranges = [
            ind.range
            for code, ind in cfg.indicators.items()
            if any(fnmatch.fnmatchcase(code, p) for p in entry.indicators)
        ]
        attempt = functools.partial(_attempt, name, settings, ranges[0])
        try:
            attempt(entry.params)
        except Exception as exc:  # the model's own checks of its parameters, reported where
            key = _culprit(entry.params, attempt)
            fail((*at, "params", *([key] if key else [])), f"{short}: {type(exc).__name__}: {exc}")
        entries.append((tuple(entry.indicators), choice))
    return AnomalyModels(tuple(entries), fallback)
