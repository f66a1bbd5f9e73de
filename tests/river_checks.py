"""river's own estimator checks, run on a local stream instead of a downloaded dataset.

``river.checks.yield_checks`` yields every check river applies to an estimator; the ones
that need data take river's CreditCard dataset, which is downloaded on first use. Here
those checks get :func:`local_stream` instead: a seasonal series (5-minute readings, a
daily cycle and noise) with injected spikes labelled True, and a few other numeric
features, as ``({"t": ..., "value": ..., "load": ..., "noise": ..., "step": ...}, label)``
pairs. Checks named in the estimator's ``_unit_test_skips()`` are skipped, as river does.
"""

from __future__ import annotations

import functools
import math
import random
from collections.abc import Callable, Iterator
from typing import Any

from river import base, checks

T0 = 1_420_070_400.0  # 2015-01-01 00:00


def local_stream(n: int = 1000, seed: int = 11) -> list[tuple[dict[str, float], bool]]:
    """``n`` labelled readings: a daily cycle with noise, about 2 % injected spikes."""
    rng = random.Random(seed)
    rows: list[tuple[dict[str, float], bool]] = []
    for i in range(n):
        t = T0 + 300.0 * i
        hour = (t % 86_400) / 3600
        value = 50.0 + 20.0 * math.sin(2 * math.pi * hour / 24) + rng.gauss(0, 1.5)
        spike = i > 150 and rng.random() < 0.02
        if spike:
            value += rng.choice((-1, 1)) * rng.uniform(40, 80)
        x = {
            "t": t,
            "value": value,
            "load": 0.5 * value + rng.gauss(0, 1),
            "noise": rng.random(),
            "step": float(i % 7),
        }
        rows.append((x, spike))
    return rows


def river_checks(model: base.Estimator) -> Iterator[tuple[str, Callable[[], Any]]]:
    """``(name, run)`` for each of river's checks that applies to ``model``."""
    skips = model._unit_test_skips()
    for check in checks.yield_checks(model):
        name = check.__name__
        if name in skips:
            continue
        if isinstance(check, functools.partial) and "dataset" in check.keywords:
            scale = 10 if name == "check_bounded_memory_growth" else 1
            data = local_stream(1000 * scale)
            yield name, functools.partial(check.func, model.clone(), dataset=iter(data))
        else:
            yield name, functools.partial(check, model.clone())
