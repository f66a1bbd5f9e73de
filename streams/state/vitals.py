"""From closed windows to the published vital signs of a district.

For every indicator with data in the rolling view: its health (0–100) through the
catalogue's health curve. Gauges take the worse of the closed minute's mean and the
rolling mean: the rolling view keeps a steady reading from flickering, the minute
makes an acute failure (a burst main) count at once instead of after a quarter of
an hour of dilution. Counts take the rolling sum. Count indicators with no events
in the rolling view are healthy: no smoke alarm is good news. Then a sub-index per domain and the weighted composite
(:mod:`detectors.vital_index`). Worked example: docs/vital-index.md.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson

from detectors.vital_index import composite_index, domain_index, health_score
from streams.core.config import CityConfig
from streams.core.messages import DistrictVitals
from streams.state.windows import STREET_SEP, Agg, ClosedWindow

_EMPTY: Agg = [0, 0.0, 0.0, 0.0]


def district_vitals(
    closed: ClosedWindow, cfg: CityConfig, rolling_minutes: int, now: datetime
) -> DistrictVitals:
    """The vital signs of a closed window as the schema's model (see :func:`vitals_json`)."""
    return DistrictVitals.model_validate_json(vitals_json(closed, cfg, rolling_minutes, now)[0])


def _stats_doc(agg: Agg) -> dict[str, Any]:
    count = int(agg[0])
    return {
        "count": count,
        "sum": agg[1],
        "min": agg[2],
        "max": agg[3],
        "mean": agg[1] / count if count else 0.0,
    }


def vitals_json(
    closed: ClosedWindow, cfg: CityConfig, rolling_minutes: int, now: datetime
) -> tuple[bytes, dict[str, float | None], float | None]:
    """A closed window's ``DistrictVitals`` document, with its domains and composite.

    The worker publishes one per closed window, so the document is built as a dict
    and written with orjson rather than through the models (a third of the cost);
    the tests check that it validates as a ``DistrictVitals``.
    """
    indicators: dict[str, Any] = {}
    by_domain: dict[str, list[float]] = {d: [] for d in cfg.catalogue.domains}
    for ind in cfg.catalogue.indicators:
        rolling = closed.rolling.get(ind.code)
        if rolling is None:
            if ind.aggregation != "sum":
                continue
            rolling = _EMPTY
        count = rolling[0]
        minute = closed.minute.get(ind.code)
        if ind.aggregation == "sum":
            health = health_score(rolling[1], ind.health)
        else:
            health = health_score(rolling[1] / count if count else 0.0, ind.health)
            if minute:
                health = min(health, health_score(minute[1] / minute[0], ind.health))
        doc: dict[str, Any] = {}
        if minute:
            doc["minute"] = _stats_doc(minute)
        doc["rolling"] = _stats_doc(rolling)
        doc["health"] = health
        indicators[ind.code] = doc
        by_domain[ind.domain].append(health)
    domains = {d: domain_index(scores) for d, scores in by_domain.items()}
    weights = {d: dom.weight for d, dom in cfg.catalogue.domains.items()}
    composite = composite_index(domains, weights)
    document: dict[str, Any] = {
        "district": closed.district,
        "window_start": datetime.fromtimestamp(closed.start, UTC),
        "window_end": datetime.fromtimestamp(closed.end, UTC),
        "rolling_minutes": rolling_minutes,
        "events": int(sum(a[0] for k, a in closed.minute.items() if STREET_SEP not in k)),
        "indicators": indicators,
        "domains": domains,
    }
    if composite is not None:
        document["composite"] = composite
    document["closed_at"] = now
    return orjson.dumps(document, option=orjson.OPT_UTC_Z), domains, composite
