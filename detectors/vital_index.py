"""Vital-sign index math: indicator health, domain sub-index, district composite.

Every score is 0–100, 100 being healthy. See docs/vital-index.md for a worked example.

>>> health_score(95.0, [(0, 100), (35, 90), (75, 65), (115, 45)])
55.0
>>> domain_index([90.0, 50.0])
60.0
>>> composite_index({"traffic": 80.0, "fire": None, "citizen": 60.0}, {"traffic": 0.5, "fire": 0.3, "citizen": 0.2})
74.3
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Mapping, Sequence

#: Share of the worst indicator in a domain's sub-index: one failing indicator
#: must pull its domain down even when the others are fine.
WORST_SHARE = 0.5


def health_score(value: float, points: Sequence[tuple[float, float]]) -> float:
    """Piecewise-linear map of a value to 0–100; beyond the end points, the end scores."""
    xs = [p[0] for p in points]
    if value <= xs[0]:
        return float(points[0][1])
    if value >= xs[-1]:
        return float(points[-1][1])
    i = bisect_right(xs, value)
    (x0, y0), (x1, y1) = points[i - 1], points[i]
    return round(y0 + (y1 - y0) * (value - x0) / (x1 - x0), 1)


def domain_index(scores: Iterable[float]) -> float | None:
    """Blend of the mean and the worst indicator health; None when there is no data."""
    values = list(scores)
    if not values:
        return None
    mean = sum(values) / len(values)
    return round((1 - WORST_SHARE) * mean + WORST_SHARE * min(values), 1)


def composite_index(
    domains: Mapping[str, float | None], weights: Mapping[str, float]
) -> float | None:
    """Weighted mean over the domains that have data; weights renormalised over those."""
    present = [(d, v) for d, v in domains.items() if v is not None and weights.get(d, 0) > 0]
    total = sum(weights[d] for d, _ in present)
    if not present or total <= 0:
        return None
    return round(sum(weights[d] * v for d, v in present) / total, 1)
