"""Which anomaly model watches which indicator (``config/anomaly.yaml``).

Every anomaly model is a river anomaly detector (:mod:`detectors.ensemble`,
:mod:`detectors.anomaly`, :mod:`detectors.calibrated`, :mod:`detectors.site`), chosen per
indicator or indicator family::

    models:
      - indicators: ["iot.water_pressure_kpa", "iot.water_flow_*"]
        model: river.anomaly.HalfSpaceTrees
        params: {n_trees: 10, height: 8, window_size: 250, seed: 1}
        settings: {fire_score: 0.5, holdoff_readings: 60}

``indicators`` are glob patterns over indicator codes (``*`` alone: every indicator);
the first entry that matches an indicator chooses its model, and an indicator no entry
matches gets the built-in ``seasonal_context`` with the product's defaults.
``model`` is ``seasonal_context`` (:class:`~detectors.ensemble.Ensemble`: the seasonal
likelihood and the contextual detector, the contextual one on the indicator's usual band
from the catalogue), ``seasonal_likelihood`` (:class:`~detectors.anomaly.SeriesDetector`
alone; for both, ``params`` are not used: their parameters are ``settings``) or any detector of
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
from detectors.ensemble import Ensemble
from detectors.site import SiteModel
from streams.core.config import CityConfig, ConfigError, format_path, load_model, nearest_line

SEASONAL = "seasonal_likelihood"
ENSEMBLE = "seasonal_context"  # the default: seasonal likelihood and contexts
SITE_MODEL = "site_mahalanobis"
SITE_RULE = "anomaly.site"
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
    [
        "anomaly.seasonal-context",
        "anomaly.seasonal-likelihood",
        SITE_RULE,
        *(f"anomaly.{name}" for name in RIVER_DETECTORS),
    ]
)


class ModelEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    indicators: list[str] = Field(min_length=1)
    model: str
    params: dict[str, Any] = Field(default_factory=dict)
    settings: dict[str, Any] = Field(default_factory=dict)


class SiteEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")
    indicators: list[str] = Field(min_length=2)
    model: str = SITE_MODEL
    params: dict[str, Any] = Field(default_factory=dict)
    settings: dict[str, Any] = Field(default_factory=dict)


class AnomalyFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    models: list[ModelEntry] = Field(default_factory=list)
    sites: list[SiteEntry] = Field(default_factory=list)


def context_range(
    value_range: tuple[float, float] | None, normal: tuple[float, float] | None
) -> tuple[float, float] | None:
    """The contextual detector's range: the catalogue's usual band widened by half its
    span on each side, within the physical range; None (learn it) without a band."""
    if normal is None or not normal[1] > normal[0]:
        return None
    lo, hi = normal
    span = hi - lo
    lo, hi = lo - span / 2, hi + span / 2
    if value_range is not None:
        lo, hi = max(lo, value_range[0]), min(hi, value_range[1])
    return (lo, hi)


@dataclass(frozen=True)
class ModelChoice:
    """One resolved model: its name, river parameters and settings."""

    name: str
    params: tuple[tuple[str, Any], ...] = ()
    settings: AnomalyConfig = dataclasses.field(default_factory=AnomalyConfig)

    @cached_property
    def rule(self) -> str:
        """Evidence's rule: ``anomaly.seasonal-context``, ``anomaly.seasonal-likelihood``
        or ``anomaly.<river name>``."""
        if self.name in (SEASONAL, ENSEMBLE):
            return "anomaly." + self.name.replace("_", "-")
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
        self,
        value_range: tuple[float, float] | None = None,
        normal: tuple[float, float] | None = None,
    ) -> tuple[AnomalyScorer, AnomalyGate]:
        """A fresh model and gate for one series (``value_range``: the catalogue's physical
        range, ``normal``: its usual band)."""
        if self.name == SEASONAL:
            return SeriesDetector(self.settings), AnomalyGate(self.settings)
        if self.name == ENSEMBLE:
            model = Ensemble(self.settings, context_range(value_range, normal))
            return model, AnomalyGate(self.settings)
        cls = RIVER_DETECTORS[self.name.removeprefix(RIVER_PREFIX)]
        params = dict(self.params)
        if value_range is not None and "limits" in inspect.signature(cls).parameters:
            params.setdefault("limits", {"value": value_range})
        detector = cls(**params)
        return Calibrated(detector, self.settings), AnomalyGate(self.settings)


@dataclass(frozen=True)
class SiteChoice:
    """One site group: co-located indicators scored jointly by one model."""

    name: str
    indicators: tuple[str, ...]
    model: str = SITE_MODEL
    params: tuple[tuple[str, Any], ...] = ()
    settings: AnomalyConfig = dataclasses.field(default_factory=AnomalyConfig)

    rule = SITE_RULE

    @property
    def key(self) -> str:
        """The site's series key in detection state (not an indicator code)."""
        return f"site:{self.name}"

    @cached_property
    def version(self) -> str:
        """A digest of the group, its model and every setting."""
        doc = {
            "site": self.name,
            "indicators": list(self.indicators),
            "model": self.model,
            "params": dict(self.params),
            "settings": dataclasses.asdict(self.settings),
        }
        blob = orjson.dumps(doc, option=orjson.OPT_SORT_KEYS, default=repr)
        return hashlib.sha256(blob).hexdigest()[:12]

    def build(
        self, ranges: dict[str, tuple[float, float]] | None = None
    ) -> tuple[Calibrated, AnomalyGate]:
        """A fresh joint model and gate (``ranges``: each indicator's catalogue range)."""
        params = dict(self.params)
        if self.model == SITE_MODEL:
            detector: base.AnomalyDetector = SiteModel(**params)
        else:
            cls = RIVER_DETECTORS[self.model.removeprefix(RIVER_PREFIX)]
            if ranges and "limits" in inspect.signature(cls).parameters:
                params.setdefault("limits", dict(ranges))
            detector = cls(**params)  # type: ignore[assignment]
        settle = detector.settle if isinstance(detector, SiteModel) else 30
        model = Calibrated(detector, self.settings, value_key=None, settle=settle)
        return model, AnomalyGate(self.settings)


@dataclass(frozen=True)
class AnomalyModels:
    """The model choice of every indicator (the first matching entry, else the default)
    and the site groups whose indicators are also scored jointly."""

    entries: tuple[tuple[tuple[str, ...], ModelChoice], ...] = ()
    default: ModelChoice = dataclasses.field(default_factory=lambda: ModelChoice(ENSEMBLE))
    sites: tuple[SiteChoice, ...] = ()
    # indicator -> its choice, resolved once (asked for every series of every closed minute)
    _chosen: dict[str, ModelChoice] = dataclasses.field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def choice(self, indicator: str) -> ModelChoice:
        chosen = self._chosen.get(indicator)
        if chosen is None:
            chosen = self._chosen[indicator] = next(
                (
                    choice
                    for patterns, choice in self.entries
                    if any(fnmatch.fnmatchcase(indicator, p) for p in patterns)
                ),
                self.default,
            )
        return chosen

    def with_site(self, site: SiteChoice) -> AnomalyModels:
        """These models and one more site group."""
        return dataclasses.replace(self, sites=(*self.sites, site))


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


Fail = Callable[[tuple[str | int, ...], str], NoReturn]


def _settings(
    doc: dict[str, Any], base: AnomalyConfig, at: tuple[str | int, ...], fail: Fail
) -> AnomalyConfig:
    """``base`` with an entry's settings; a bad one fails naming its key."""
    fields = {f.name for f in dataclasses.fields(AnomalyConfig)}
    for key in doc:
        if key not in fields:
            fail((*at, "settings", key), f"unknown setting {key!r}")
    doc = dict(doc)
    if "grade_bands" in doc:
        doc["grade_bands"] = tuple(doc["grade_bands"])
    try:
        return dataclasses.replace(base, **doc)
    except (TypeError, ValueError) as exc:
        key = _culprit(doc, lambda one: dataclasses.replace(base, **one))
        fail((*at, "settings", *([key] if key else [])), str(exc))


def _check_params(
    name: str,
    params: dict[str, Any],
    at: tuple[str | int, ...],
    fail: Fail,
    attempt: Callable[[dict[str, Any]], object],
) -> None:
    """Every parameter is the model's, and the model builds and learns with them."""
    short = name.removeprefix(RIVER_PREFIX)
    builtin: dict[str, type] = {SITE_MODEL: SiteModel, SEASONAL: SeriesDetector, ENSEMBLE: Ensemble}
    cls = builtin.get(name) or RIVER_DETECTORS[short]
    accepted = inspect.signature(cls).parameters
    for key in params:
        if key not in accepted:
            fail(
                (*at, "params", key),
                f"{short} has no parameter {key!r}; it takes {', '.join(accepted)}",
            )
    try:
        attempt(params)
    except Exception as exc:  # the model's own checks of its parameters, reported where
        key = _culprit(params, attempt)
        fail((*at, "params", *([key] if key else [])), f"{short}: {type(exc).__name__}: {exc}")


def _matching(cfg: CityConfig, patterns: list[str]) -> list[str]:
    return [c for c in cfg.indicators if any(fnmatch.fnmatchcase(c, p) for p in patterns)]


def _attempt_site(
    site: SiteChoice, ranges: dict[str, tuple[float, float]], params: dict[str, Any]
) -> None:
    """Build the site's model with ``params`` and feed it joint readings."""
    model, gate = dataclasses.replace(site, params=tuple(sorted(params.items()))).build(ranges)
    for i in range(3):
        x: dict[base.typing.FeatureName, float] = {
            code: (lo + hi) / 2 + i for code, (lo, hi) in ranges.items()
        }
        gate.update(60.0 * i, model.update_features(60.0 * i, x))


def load_anomaly_models(
    cfg: CityConfig, path: Path | str | None = None, default: AnomalyConfig | None = None
) -> AnomalyModels:
    """Load and check ``anomaly.yaml`` (by default from the city's config directory).

    A missing file at the default path means the built-in model everywhere; ``default``
    is that model's settings (the product's defaults when None).
    """
    base_settings = default if default is not None else AnomalyConfig()
    fallback = ModelChoice(ENSEMBLE, (), base_settings)
    file = Path(path) if path is not None else cfg.directory / "anomaly.yaml"
    if path is None and not file.exists():
        return AnomalyModels((), fallback)
    data, lines = load_model(file, AnomalyFile)

    def fail(loc: tuple[str | int, ...], reason: str) -> NoReturn:
        raise ConfigError(file, format_path(loc), reason, nearest_line(lines, loc))

    river_names = [RIVER_PREFIX + n for n in RIVER_DETECTORS]
    entries = []
    for i, entry in enumerate(data.models):
        at: tuple[str | int, ...] = ("models", i)
        name = entry.model
        if name not in (SEASONAL, ENSEMBLE) and name not in river_names:
            known = ", ".join(sorted([ENSEMBLE, SEASONAL, *river_names]))
            fail((*at, "model"), f"unknown model {name!r}; known: {known}")
        settings = _settings(entry.settings, base_settings, at, fail)
        if name in (SEASONAL, ENSEMBLE) and entry.params:
            fail((*at, "params"), f"{name} takes its parameters as settings")
        for j, pattern in enumerate(entry.indicators):
            if not _matching(cfg, [pattern]):
                fail((*at, "indicators", j), f"{pattern!r} matches no indicator of the catalogue")
        lo, hi = cfg.indicators[_matching(cfg, entry.indicators)[0]].range
        _check_params(
            name, entry.params, at, fail, functools.partial(_attempt, name, settings, (lo, hi))
        )
        choice = ModelChoice(name, tuple(sorted(entry.params.items())), settings)
        entries.append((tuple(entry.indicators), choice))
    sites: list[SiteChoice] = []
    for i, site in enumerate(data.sites):
        at = ("sites", i)
        if any(s.name == site.name for s in sites):
            fail((*at, "name"), f"site {site.name!r} is defined twice")
        for j, code in enumerate(site.indicators):
            if code not in cfg.indicators:
                fail((*at, "indicators", j), f"unknown indicator {code!r}")
            if code in site.indicators[:j]:
                fail((*at, "indicators", j), f"{code!r} is listed twice")
        unsupervised = [
            RIVER_PREFIX + n
            for n, cls in RIVER_DETECTORS.items()
            if issubclass(cls, base.AnomalyDetector)
        ]
        if site.model != SITE_MODEL and site.model not in unsupervised:
            known = ", ".join(sorted([SITE_MODEL, *unsupervised]))
            fail((*at, "model"), f"unknown site model {site.model!r}; known: {known}")
        settings = _settings(site.settings, base_settings, at, fail)
        group = SiteChoice(site.name, tuple(site.indicators), site.model, (), settings)
        ranges = {code: cfg.indicators[code].range for code in site.indicators}
        _check_params(
            site.model, site.params, at, fail, functools.partial(_attempt_site, group, ranges)
        )
        sites.append(dataclasses.replace(group, params=tuple(sorted(site.params.items()))))
    return AnomalyModels(tuple(entries), fallback, tuple(sites))
