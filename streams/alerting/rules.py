"""Loading ``config/thresholds.yaml``: expert threshold rules, per department, with overrides.

The file is validated against the city and the catalogue when it is loaded;
anything wrong stops start-up with a :class:`~streams.core.config.ConfigError` naming
the file, line, rule and reason, e.g.::

    config/thresholds.yaml:41: rules[0] (environment.pm25.mean15).grades: grade boundaries must increase from IV to I, got (75.0, 60.0, None, None)

:meth:`ThresholdRules.specs_for` resolves the rules of one indicator for one
place (district, and street for street-scoped rules) into
:class:`~detectors.thresholds.ThresholdSpec` s, overrides applied.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, NoReturn

import orjson
from pydantic import AwareDatetime, BeforeValidator, Field

from detectors.thresholds import Aggregate, Direction, MissingData, ThresholdSpec
from streams.alerting.lifecycle import Silence
from streams.core.config import (
    CityConfig,
    Code,
    ConfigError,
    _Strict,
    format_path,
    load_model,
    nearest_line,
)
from streams.core.messages import AlertKind

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)?\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}


def _seconds(value: Any) -> Any:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        m = _DURATION.match(value)
        if m is None:
            raise ValueError(f"{value!r} is not a duration (e.g. 90, '90s', '15m', '2h')")
        return float(m.group(1)) * _UNITS[m.group(2)]
    return value


Duration = Annotated[float, BeforeValidator(_seconds), Field(ge=0)]
GradeName = Literal["IV", "III", "II", "I"]


class Defaults(_Strict):
    pending: Duration = 120.0
    hold: Duration = 600.0
    hysteresis: float = Field(0.0, ge=0)
    missing: MissingData = MissingData.KEEP
    missing_after: Duration = 600.0
    silence_factor: float = Field(3.0, gt=1)


class Override(_Strict):
    """Changes to a rule for one district or one street."""

    district: Code | None = None
    street: Code | None = None
    grades: dict[GradeName, float] | None = None
    pending: Duration | None = None
    hold: Duration | None = None
    hysteresis: float | None = Field(None, ge=0)
    missing: MissingData | None = None
    missing_after: Duration | None = None
    enabled: bool | None = None


class Rule(_Strict):
    id: Code
    department: Code
    indicator: Code
    aggregate: Aggregate = Aggregate.READING
    window: Duration = 0.0
    scope: Literal["district", "street"] = "district"
    direction: Direction
    grades: dict[GradeName, float]
    pending: Duration | None = None
    hold: Duration | None = None
    hysteresis: float | None = Field(None, ge=0)
    missing: MissingData | None = None
    missing_after: Duration | None = None
    enabled: bool = True
    overrides: list[Override] = Field(default_factory=list)


def _cluster() -> dict[GradeName, float]:
    return {"IV": 4.0, "III": 6.0, "II": 9.0, "I": 14.0}


def _surge() -> dict[GradeName, float]:
    return {"IV": 3.0, "III": 5.0, "II": 8.0}


def _bad_ratings() -> dict[GradeName, float]:
    return {"IV": 0.3, "III": 0.5}


class PublicOpinion(_Strict):
    """Public-opinion warnings (舆情预警) from citizens' appeals, per category
    (:mod:`streams.alerting.public_opinion`). Counts are of one category's appeals over
    the last ``window``; a grade's boundary is the least count, ratio or share that
    reaches it."""

    enabled: bool = True
    window: Duration = 900.0
    # appeals about one category in one street: a cluster about one place
    cluster: dict[GradeName, float] = Field(default_factory=_cluster)
    # once a street's usual count is known, its boundaries are lifted (keeping their
    # distances) until a count at grade IV's is at most this likely in a window (Poisson
    # about the usual count); None: not lifted
    cluster_chance: float | None = Field(0.001, gt=0, lt=1)
    # a district's appeals of one category against its usual count over the window
    surge: dict[GradeName, float] = Field(default_factory=_surge)
    surge_min: int = Field(6, ge=1)  # fewer appeals than this are no surge
    baseline_half_life: Duration = 7 * 86400.0  # how fast the usual count follows the city
    baseline_floor: float = Field(1.0, gt=0)  # usual count per window, at least
    warmup: Duration = 86400.0  # a district's category surges only after this much history
    # an hour of the day's own usual count weighs as much as the day's once the district
    # has seen this much of that hour (3600 s: about a day of history)
    hourly_prior: Duration = 3600.0
    # the share of bad ratings among a district's ratings of one category
    bad_ratings: dict[GradeName, float] = Field(default_factory=_bad_ratings)
    ratings_min: int = Field(10, ge=1)
    # a warning whose appeals are this angry is raised one grade (IV -> III ... II -> I)
    extreme_share: float = Field(0.5, gt=0, le=1)
    extreme_min: int = Field(3, ge=1)
    hold: Duration = 1800.0  # no grade for this long resolves the warning
    informed: Code = "command_centre"  # co-handles grades II and I
    samples: int = Field(5, ge=0, le=20)  # appeals the evidence shows, angriest first


class ThresholdsFile(_Strict):
    defaults: Defaults = Field(default_factory=Defaults)
    rules: list[Rule] = Field(default_factory=list)
    public_opinion: PublicOpinion = Field(default_factory=PublicOpinion)


def _bounds(
    grades: Mapping[str, float],
) -> tuple[float | None, float | None, float | None, float | None]:
    return (grades.get("IV"), grades.get("III"), grades.get("II"), grades.get("I"))


@dataclass(frozen=True)
class ThresholdRules:
    """The validated rules, indexed by indicator."""

    defaults: Defaults
    rules: tuple[Rule, ...]
    street_district: Mapping[str, str]
    # indicators whose physical range starts at 0 or above (ingest rejects the rest), so
    # a window sum of them only grows while the window fills
    nonnegative: frozenset[str] = frozenset()
    opinion: PublicOpinion = field(default_factory=PublicOpinion)

    def by_indicator(self, indicator: str) -> tuple[Rule, ...]:
        return tuple(r for r in self.rules if r.indicator == indicator and r.enabled)

    def spec(self, rule: Rule, district: str, street: str | None = None) -> ThresholdSpec | None:
        """The rule resolved for one place, overrides applied; None if disabled there."""
        fields: dict[str, Any] = {
            "grades": rule.grades,
            "pending": rule.pending if rule.pending is not None else self.defaults.pending,
            "hold": rule.hold if rule.hold is not None else self.defaults.hold,
            "hysteresis": rule.hysteresis
            if rule.hysteresis is not None
            else self.defaults.hysteresis,
            "missing": rule.missing or self.defaults.missing,
            "missing_after": rule.missing_after
            if rule.missing_after is not None
            else self.defaults.missing_after,
            "enabled": True,
        }
        applicable = [o for o in rule.overrides if o.district == district and o.street is None]
        if street is not None:
            applicable += [o for o in rule.overrides if o.street == street]
        for o in applicable:
            fields.update(
                {
                    k: v
                    for k, v in o.model_dump(exclude={"district", "street"}).items()
                    if v is not None
                }
            )
        if not fields["enabled"]:
            return None
        return ThresholdSpec(
            rule_id=rule.id,
            indicator=rule.indicator,
            aggregate=rule.aggregate,
            window_s=rule.window,
            direction=rule.direction,
            bounds=_bounds(fields["grades"]),
            pending_s=fields["pending"],
            hold_s=fields["hold"],
            hysteresis=fields["hysteresis"],
            missing=fields["missing"],
            missing_after_s=fields["missing_after"],
            version=_digest(rule, fields),
            nonnegative=rule.indicator in self.nonnegative,
        )

    def specs_for(self, indicator: str, district: str, street: str | None) -> list[ThresholdSpec]:
        """Every rule on ``indicator`` that applies to a reading from this place.

        District-scoped rules watch the district's series; street-scoped rules the
        street's (a reading without a street feeds no street-scoped rule).
        """
        out = []
        for rule in self.by_indicator(indicator):
            if rule.scope == "street" and street is None:
                continue
            spec = self.spec(rule, district, street if rule.scope == "street" else None)
            if spec is not None:
                out.append(spec)
        return out


def _digest(rule: Rule, fields: Mapping[str, Any]) -> str:
    """A short content hash of the resolved rule: evidence names the exact version that fired."""
    doc = {"rule": rule.model_dump(mode="json", exclude={"overrides"}), "resolved": fields}
    return hashlib.sha256(orjson.dumps(doc, option=orjson.OPT_SORT_KEYS, default=str)).hexdigest()[
        :12
    ]


#: Stops loading with the config error at a place in the file (a pydantic location).
_Fail = Callable[[tuple[str | int, ...], str], NoReturn]


def load_thresholds(cfg: CityConfig, path: Path | str | None = None) -> ThresholdRules:
    """Load and check ``thresholds.yaml`` (by default from the city's config directory)."""
    file = Path(path) if path is not None else cfg.directory / "thresholds.yaml"
    data, lines = load_model(file, ThresholdsFile)

    def fail(loc: tuple[str | int, ...], reason: str) -> NoReturn:
        where = loc
        if len(loc) >= 2 and loc[0] == "rules" and isinstance(loc[1], int):
            rule_id = data.rules[loc[1]].id
            shown = f"rules[{loc[1]}] ({rule_id})" + format_path(("x", *loc[2:]))[1:]
        else:
            shown = format_path(loc)
        raise ConfigError(file, shown, reason, nearest_line(lines, where))

    street_district = cfg.city.street_district
    nonnegative = frozenset(code for code, ind in cfg.indicators.items() if ind.range[0] >= 0)
    rules = ThresholdRules(
        data.defaults, tuple(data.rules), street_district, nonnegative, data.public_opinion
    )
    _check_opinion(cfg, data.public_opinion, fail)
    seen: set[str] = set()
    for i, rule in enumerate(data.rules):
        if rule.id in seen:
            fail(("rules", i, "id"), f"duplicate rule id {rule.id!r}")
        seen.add(rule.id)
        _check_rule(cfg, i, rule, fail)
        _check_overrides(cfg, i, rule, fail)
        _check_specs(rules, i, rule, fail)
    return rules


def _check_opinion(cfg: CityConfig, opinion: PublicOpinion, fail: _Fail) -> None:
    """Grade boundaries increase from IV to I, shares are shares, and the department
    informed is one the city knows."""
    for name in ("cluster", "surge", "bad_ratings"):
        bounds = [b for b in _bounds(getattr(opinion, name)) if b is not None]
        if not bounds:
            fail(("public_opinion", name), "give at least one grade boundary")
        if any(b <= 0 for b in bounds) or bounds != sorted(set(bounds)):
            fail(
                ("public_opinion", name),
                f"grade boundaries must be positive and increase from IV to I, got {bounds}",
            )
    if any(b > 1 for b in opinion.bad_ratings.values()):
        fail(("public_opinion", "bad_ratings"), "a share of bad ratings is at most 1")
    if opinion.window < 60:
        fail(("public_opinion", "window"), "at least one minute (60 s)")
    if opinion.informed not in cfg.catalogue.departments:
        fail(
            ("public_opinion", "informed"),
            f"unknown department {opinion.informed!r}; known: {sorted(cfg.catalogue.departments)}",
        )


def _check_rule(cfg: CityConfig, i: int, rule: Rule, fail: _Fail) -> None:
    """The rule's indicator and department are known, the department has a say in the
    indicator, and its aggregate, window and grades make sense together."""
    indicator = cfg.indicators.get(rule.indicator)
    if indicator is None:
        fail(("rules", i, "indicator"), f"unknown indicator {rule.indicator!r}")
    if rule.department not in cfg.catalogue.departments:
        fail(
            ("rules", i, "department"),
            f"unknown department {rule.department!r}; known: {sorted(cfg.catalogue.departments)}",
        )
    owners = {indicator.department, *indicator.co_departments}
    if rule.department not in owners:
        fail(
            ("rules", i, "department"),
            f"department {rule.department!r} does not own {rule.indicator!r} "
            f"(owned by {indicator.department!r}"
            + (
                f", co-handled by {sorted(indicator.co_departments)}"
                if indicator.co_departments
                else ""
            )
            + ")",
        )
    if rule.aggregate is not Aggregate.READING and rule.window <= 0:
        fail(
            ("rules", i, "window"),
            f"aggregate {rule.aggregate.value!r} needs a window, e.g. '15m'",
        )
    if rule.aggregate is Aggregate.READING and rule.window:
        fail(("rules", i, "window"), "a rule on each reading has no window; use an aggregate")
    if not rule.grades:
        fail(("rules", i, "grades"), "at least one grade boundary (IV, III, II or I) is needed")


def _check_overrides(cfg: CityConfig, i: int, rule: Rule, fail: _Fail) -> None:
    """Each override names one known place, and a street only for a street-scoped rule."""
    for j, o in enumerate(rule.overrides):
        if (o.district is None) == (o.street is None):
            fail(
                ("rules", i, "overrides", j),
                "an override names exactly one district or one street",
            )
        if o.district is not None and o.district not in cfg.districts:
            fail(("rules", i, "overrides", j, "district"), f"unknown district {o.district!r}")
        if o.street is not None:
            if o.street not in cfg.city.street_district:
                fail(("rules", i, "overrides", j, "street"), f"unknown street {o.street!r}")
            if rule.scope != "street":
                fail(
                    ("rules", i, "overrides", j, "street"),
                    "a street override needs a street-scoped rule (scope: street)",
                )


def _check_specs(rules: ThresholdRules, i: int, rule: Rule, fail: _Fail) -> None:
    """The rule and each override must make a valid spec."""
    places: list[tuple[tuple[str | int, ...], str, str | None]] = [
        (("rules", i, "grades"), "", None)  # the rule alone: no override matches ""
    ]
    for j, o in enumerate(rule.overrides):
        if o.district is not None:
            places.append((("rules", i, "overrides", j), o.district, None))
        elif o.street is not None:
            places.append((("rules", i, "overrides", j), rules.street_district[o.street], o.street))
    for loc, district, street in places:
        try:
            rules.spec(rule, district, street)
        except ValueError as exc:
            fail(loc, str(exc))


# --- maintenance windows: config/silences.yaml ------------------------------------


class SilenceEntry(_Strict):
    id: Code
    start: AwareDatetime
    end: AwareDatetime
    district: Code | None = None
    street: Code | None = None
    rule: str | None = None
    indicator: Code | None = None
    domain: Code | None = None
    kind: AlertKind | None = None
    comment: str = ""


class SilencesFile(_Strict):
    silences: list[SilenceEntry] = Field(default_factory=list)


def load_silences(
    cfg: CityConfig, rules: ThresholdRules, path: Path | str | None = None
) -> tuple[Silence, ...]:
    """Load ``silences.yaml`` (optional: no file, no maintenance windows) and check it."""
    file = Path(path) if path is not None else cfg.directory / "silences.yaml"
    if path is None and not file.exists():
        return ()
    data, lines = load_model(file, SilencesFile)

    def fail(loc: tuple[str | int, ...], reason: str) -> NoReturn:
        raise ConfigError(file, format_path(loc), reason, nearest_line(lines, loc))

    seen: set[str] = set()
    out = []
    rule_ids = {r.id for r in rules.rules}
    for i, e in enumerate(data.silences):
        if e.id in seen:
            fail(("silences", i, "id"), f"duplicate silence id {e.id!r}")
        seen.add(e.id)
        if e.end <= e.start:
            fail(
                ("silences", i, "end"),
                f"end {e.end.isoformat()} is not after start {e.start.isoformat()}",
            )
        matchers = (e.district, e.street, e.rule, e.indicator, e.domain, e.kind)
        if all(m is None for m in matchers):
            fail(
                ("silences", i),
                "a silence must match something (district, street, rule, indicator, domain or kind)",
            )
        if e.district is not None and e.district not in cfg.districts:
            fail(("silences", i, "district"), f"unknown district {e.district!r}")
        if e.street is not None:
            owner = rules.street_district.get(e.street)
            if owner is None:
                fail(("silences", i, "street"), f"unknown street {e.street!r}")
            if e.district is not None and owner != e.district:
                fail(
                    ("silences", i, "street"),
                    f"street {e.street!r} is not in district {e.district!r}",
                )
        if e.indicator is not None and e.indicator not in cfg.indicators:
            fail(("silences", i, "indicator"), f"unknown indicator {e.indicator!r}")
        if e.domain is not None and e.domain not in cfg.catalogue.domains:
            fail(
                ("silences", i, "domain"),
                f"unknown domain {e.domain!r}; known: {sorted(cfg.catalogue.domains)}",
            )
        if (
            e.rule is not None
            and e.rule.removesuffix(".forecast") not in rule_ids
            and not e.rule.startswith(("anomaly.", "composite.", "data_quality."))
        ):
            fail(("silences", i, "rule"), f"unknown rule {e.rule!r}")
        out.append(
            Silence(
                silence_id=e.id,
                start=e.start.timestamp(),
                end=e.end.timestamp(),
                district=e.district,
                street=e.street,
                rule=e.rule,
                indicator=e.indicator,
                domain=e.domain,
                kind=e.kind,
                comment=e.comment,
            )
        )
    return tuple(out)
