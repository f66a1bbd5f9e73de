"""The city's configuration: districts and streets, and the indicator catalogue.

Configuration is data the city owns (``config/*.yaml``). It is validated when it
is loaded; anything wrong stops start-up with a :class:`ConfigError` naming the
file, the line, the key path and the reason, e.g.::

    config/indicators.yaml:102: indicators[4].range: minimum 10.0 is not below maximum 5.0
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

DEFAULT_CONFIG_DIR = Path(__file__).resolve().parents[2] / "config"

M = TypeVar("M", bound=BaseModel)

Code = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")]


class ConfigError(Exception):
    """Invalid configuration: where it is and why, ready to print to an operator."""

    def __init__(self, file: Path | str, path: str, reason: str, line: int | None = None) -> None:
        self.file = str(file)
        self.path = path
        self.reason = reason
        self.line = line
        where = f"{self.file}:{line}" if line else self.file
        super().__init__(f"{where}: {path}: {reason}" if path else f"{where}: {reason}")


class Sharing(StrEnum):
    """Data-sharing class of an indicator's data (共享属性)."""

    NOT_SHARED = "not_shared"
    ON_REQUEST = "on_request"
    OPEN = "open"


class Source(StrEnum):
    """The department system an event comes from; one input topic each."""

    IOT = "iot"
    TRAFFIC = "traffic"
    FIRE = "fire"
    SANITATION = "sanitation"
    HOTLINE = "hotline"
    APPEALS = "appeals"  # citizens' appeals from every channel (streams.voice)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Named(_Strict):
    name_zh: str = Field(min_length=1)
    name_en: str = Field(min_length=1)


class Domain(Named):
    weight: float = Field(gt=0, le=1)


class Conversion(_Strict):
    """canonical value = value * factor + offset."""

    factor: float
    offset: float = 0.0

    @field_validator("factor")
    @classmethod
    def _non_zero(cls, v: float) -> float:
        if v == 0 or not math.isfinite(v):
            raise ValueError("factor must be a finite non-zero number")
        return v


class Indicator(Named):
    code: Code
    source: Source
    domain: Code
    unit: str = Field(min_length=1)
    conversions: dict[str, Conversion] = Field(default_factory=dict)
    department: Code
    co_departments: tuple[Code, ...] = ()
    sharing: Sharing
    range: tuple[float, float]
    normal: tuple[float, float]
    bad: Literal["high", "low", "both"]
    aggregation: Literal["mean", "sum"]
    expected_interval_s: float | None = Field(default=None, gt=0)
    health: tuple[tuple[float, float], ...] = Field(min_length=2)

    @field_validator("code")
    @classmethod
    def _dotted(cls, v: str) -> str:
        if "." not in v:
            raise ValueError("indicator code must be '<source-or-domain>.<name>', e.g. iot.pm25")
        return v

    @field_validator("range", "normal")
    @classmethod
    def _ordered(cls, v: tuple[float, float]) -> tuple[float, float]:
        lo, hi = v
        if not (math.isfinite(lo) and math.isfinite(hi)):
            raise ValueError("bounds must be finite numbers")
        if lo > hi:
            raise ValueError(f"minimum {lo} is not below maximum {hi}")
        return v

    @field_validator("health")
    @classmethod
    def _increasing(cls, v: tuple[tuple[float, float], ...]) -> tuple[tuple[float, float], ...]:
        xs = [x for x, _ in v]
        if any(b <= a for a, b in itertools.pairwise(xs)):
            raise ValueError("health points must have strictly increasing values")
        if any(not 0 <= s <= 100 for _, s in v):
            raise ValueError("health scores must lie between 0 and 100")
        return v

    @model_validator(mode="after")
    def _normal_inside_range(self) -> Indicator:
        if self.normal[0] < self.range[0] or self.normal[1] > self.range[1]:
            raise ValueError(
                f"normal band {list(self.normal)} lies outside range {list(self.range)}"
            )
        if self.unit in self.conversions:
            raise ValueError(f"conversions must not list the canonical unit {self.unit!r}")
        return self

    def to_canonical(self, value: float, unit: str) -> float | None:
        """The value in the canonical unit, or None when the unit is not accepted."""
        if unit == self.unit:
            return value
        conv = self.conversions.get(unit)
        if conv is None:
            return None
        return value * conv.factor + conv.offset


class Catalogue(_Strict):
    version: Literal[1]
    departments: dict[Code, Named]
    domains: dict[Code, Domain]
    indicators: tuple[Indicator, ...] = Field(min_length=1)

    @cached_property
    def by_code(self) -> dict[str, Indicator]:
        return {i.code: i for i in self.indicators}


class Street(Named):
    code: Code


class District(Named):
    code: Code
    kind: str = ""
    population: int = Field(ge=0)
    area_km2: float = Field(gt=0)
    profile: dict[str, float] = Field(default_factory=dict)
    streets: tuple[Street, ...] = Field(min_length=1)


class CityInfo(Named):
    code: Code
    timezone: str = "Asia/Shanghai"


class City(_Strict):
    version: Literal[1]
    city: CityInfo
    districts: tuple[District, ...] = Field(min_length=1)

    @cached_property
    def by_code(self) -> dict[str, District]:
        return {d.code: d for d in self.districts}

    @cached_property
    def streets(self) -> dict[str, Street]:
        """Street code -> the street."""
        return {s.code: s for d in self.districts for s in d.streets}

    @cached_property
    def street_district(self) -> dict[str, str]:
        """Street code -> the code of the district it belongs to."""
        return {s.code: d.code for d in self.districts for s in d.streets}


@dataclass(frozen=True)
class CityConfig:
    """Everything loaded from a config directory, cross-checked."""

    city: City
    catalogue: Catalogue
    directory: Path

    @cached_property
    def indicators(self) -> Mapping[str, Indicator]:
        return self.catalogue.by_code

    @cached_property
    def districts(self) -> Mapping[str, District]:
        return self.city.by_code


# --- loading -----------------------------------------------------------------


def _line_index(text: str) -> dict[tuple[str | int, ...], int]:
    """Map every key path in a YAML document to its 1-based line number."""
    index: dict[tuple[str | int, ...], int] = {}

    def walk(node: yaml.Node, path: tuple[str | int, ...]) -> None:
        index[path] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                k = key.value if isinstance(key, yaml.ScalarNode) else str(key)
                index[(*path, k)] = key.start_mark.line + 1
                walk(value, (*path, k))
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                walk(item, (*path, i))

    root = yaml.compose(text, Loader=yaml.SafeLoader)
    if root is not None:
        walk(root, ())
    return index


def format_path(loc: Sequence[str | int]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def nearest_line(
    index: Mapping[tuple[str | int, ...], int], loc: Sequence[str | int]
) -> int | None:
    loc = tuple(loc)
    while loc:
        if loc in index:
            return index[loc]
        loc = loc[:-1]
    return index.get(())


def load_model(path: Path, model: type[M]) -> tuple[M, dict[tuple[str | int, ...], int]]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(path, "", "file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(path, "", f"cannot read file: {exc}") from None
    try:
        data = yaml.safe_load(text)
        index = _line_index(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(
            path, "", f"not valid YAML: {problem}", mark.line + 1 if mark else None
        ) from None
    if not isinstance(data, dict):
        raise ConfigError(path, "", "expected a mapping at the top level", 1)
    try:
        return model.model_validate(data), index
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        loc = [p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-"))]
        # pydantic appends tuple indexes and literal tags after the field; drop
        # trailing parts the YAML does not have so the line stays meaningful.
        reason = err["msg"].removeprefix("Value error, ")
        if len(exc.errors()) > 1:
            reason += f" (and {len(exc.errors()) - 1} more problem(s) in this file)"
        raise ConfigError(path, format_path(loc), reason, nearest_line(index, loc)) from None


def _cross_check(
    city: City, cat: Catalogue, city_path: Path, cat_path: Path, cat_lines: Any, city_lines: Any
) -> None:
    def fail(file: Path, lines: Mapping[Any, int], loc: tuple[str | int, ...], reason: str) -> None:
        raise ConfigError(file, format_path(loc), reason, nearest_line(lines, loc))

    weights = sum(d.weight for d in cat.domains.values())
    if abs(weights - 1.0) > 1e-6:
        fail(
            cat_path,
            cat_lines,
            ("domains",),
            f"domain weights must add up to 1, they add up to {weights:g}",
        )
    seen: set[str] = set()
    for i, ind in enumerate(cat.indicators):
        if ind.code in seen:
            fail(
                cat_path,
                cat_lines,
                ("indicators", i, "code"),
                f"duplicate indicator code {ind.code!r}",
            )
        seen.add(ind.code)
        if ind.domain not in cat.domains:
            fail(
                cat_path,
                cat_lines,
                ("indicators", i, "domain"),
                f"unknown domain {ind.domain!r}; known: {sorted(cat.domains)}",
            )
        for field, deps in (
            ("department", [ind.department]),
            ("co_departments", list(ind.co_departments)),
        ):
            for dep in deps:
                if dep not in cat.departments:
                    fail(
                        cat_path,
                        cat_lines,
                        ("indicators", i, field),
                        f"unknown department {dep!r}; known: {sorted(cat.departments)}",
                    )
    codes: set[str] = set()
    for i, d in enumerate(city.districts):
        if d.code in codes:
            fail(
                city_path,
                city_lines,
                ("districts", i, "code"),
                f"duplicate district code {d.code!r}",
            )
        codes.add(d.code)
        for j, s in enumerate(d.streets):
            if s.code in codes:
                fail(
                    city_path,
                    city_lines,
                    ("districts", i, "streets", j, "code"),
                    f"duplicate code {s.code!r}",
                )
            codes.add(s.code)


def load_config(directory: Path | str | None = None) -> CityConfig:
    """Load and cross-check ``city.yaml`` and ``indicators.yaml`` from a config directory."""
    base = Path(directory) if directory is not None else DEFAULT_CONFIG_DIR
    city_path, cat_path = base / "city.yaml", base / "indicators.yaml"
    city, city_lines = load_model(city_path, City)
    cat, cat_lines = load_model(cat_path, Catalogue)
    _cross_check(city, cat, city_path, cat_path, cat_lines, city_lines)
    return CityConfig(city=city, catalogue=cat, directory=base)


def iter_indicators_of(cfg: CityConfig, source: Source) -> Iterator[Indicator]:
    """The catalogue's indicators that arrive on one source topic."""
    return (i for i in cfg.catalogue.indicators if i.source is source)
