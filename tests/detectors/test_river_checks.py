"""Every shipped anomaly detector passes river's own estimator checks.

The checks run on a local stream (:mod:`tests.river_checks`), not river's downloadable
dataset; each detector's ``_unit_test_skips`` says which checks it skips and why.
"""

from __future__ import annotations

import pytest
from river import anomaly, base

from detectors.anomaly import SeriesDetector
from detectors.calibrated import Calibrated
from detectors.contextual import ContextDetector
from detectors.ensemble import Ensemble
from detectors.site import SiteModel
from tests.river_checks import local_stream, river_checks

DETECTORS: list[base.AnomalyDetector] = [
    SeriesDetector(),
    Calibrated(),
    Calibrated(anomaly.HalfSpaceTrees(seed=1)),
    SiteModel(),
    Calibrated(SiteModel(), value_key=None),
    ContextDetector(value_min=0.0, value_max=140.0),
    Ensemble(),
    Ensemble(value_range=(0.0, 140.0)),
]


def _cases() -> list[tuple[str, str, object]]:
    cases = []
    for model in DETECTORS:
        for name, run in river_checks(model):
            cases.append((type(model).__name__, name, run))
    return cases


CASES = _cases()


@pytest.mark.parametrize("run", [run for _, _, run in CASES], ids=[f"{m}-{c}" for m, c, _ in CASES])
def test_river_estimator_check(run: object) -> None:
    assert callable(run)
    run()


def test_every_dataset_check_ran_on_the_local_stream() -> None:
    names = {c for _, c, _ in CASES}
    assert {"check_roc_auc", "check_pickling", "check_bounded_memory_growth"} <= names


def test_the_local_stream_has_labelled_spikes() -> None:
    rows = local_stream(1000)
    spikes = [x["value"] for x, y in rows if y]
    assert 5 <= len(spikes) <= 40
    assert all(set(x) == {"t", "value", "load", "noise", "step"} for x, _ in rows)
