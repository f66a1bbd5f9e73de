"""Summing samples of a worker's ``/metrics`` page, for the benches and the tests.

The page is parsed by prometheus_client's own parser
(:func:`prometheus_client.parser.text_string_to_metric_families`); a sample counts
towards a metric when its name is the metric's (a counter's ``_total`` sample, not its
``_created`` one) and its labels include every label asked for.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping

from prometheus_client.parser import text_string_to_metric_families


def sample_sum(text: str, name: str, labels: Mapping[str, str] | None = None) -> float:
    """The sum of the samples of ``name`` whose labels include ``labels``."""
    want = dict(labels or {})
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in want.items())
    )


def sums(text: str, names: Iterable[str], by: str | None = None) -> dict[str, float]:
    """Each of ``names`` summed over its samples (0.0 when absent); with ``by``, also
    ``"<name>:<value>"`` per value of that label."""
    wanted = set(names)
    out: dict[str, float] = defaultdict(float, dict.fromkeys(wanted, 0.0))
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name in wanted:
                out[s.name] += s.value
                if by is not None and by in s.labels:
                    out[f"{s.name}:{s.labels[by]}"] += s.value
    return dict(out)
