"""Joint anomaly scores for the co-located indicators of one site.

A traffic detector's volume and occupancy, a road's speed and occupancy, a water main's
pressure and flow move together: a normal volume at an abnormal occupancy is a stalled
lane, a normal pressure at an abnormal flow a burst, and neither series alone looks
unusual. :class:`SiteModel` learns the site's usual relationship as an exponentially
weighted mean and covariance matrix of its indicators (river's ``stats.EWMean`` and
``covariance.EwaCovariance``), and scores a reading by its Mahalanobis distance from
that mean (the covariance, with a ridge of a millionth of its mean variance, inverted by
numpy at scoring time: a site has two to four indicators): how far it
lies from the usual relationship, in units of the usual spread along each direction. A
reading that moves along the relationship (rush hour: volume and occupancy both high)
stays close; one that breaks it lies far off the axis.

Behind :class:`~detectors.calibrated.Calibrated` (the same likelihood as the other
models) the distance becomes a calibrated score and reaches the same gate. The site is
scored once per closed minute, not per input record.

river's ``covariance.EwaPrecision`` (which updates the inverse directly) was tried first
and dropped: on series whose mean is far from zero its matrix was far from the inverse
of ``EwaCovariance`` of the same data (a lane's speed and occupancy, 200 readings:
precision entries 0.0007 / -0.004 / 0.027 against 3.2 / 4.8 / 7.3), and a stalled
lane scored a distance of 1.7 instead of hundreds.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from river import base, covariance, stats


class SiteModel(base.AnomalyDetector):
    """Mahalanobis distance of a site's readings from their usual joint behaviour.

    Parameters
    ----------
    fading_factor
        Weight of the newest reading in the mean and precision (memory about
        ``1 / fading_factor`` readings). The estimate settles after about three memories:
        :attr:`settle` readings, before which its distances say little.

    ``x`` maps each indicator to its value; features that are not numbers or not finite
    are left out. The site's indicators are the features of the first reading learned:
    a reading missing any of them is not learned, and is scored on those it has; other
    features are ignored. Until two readings are learned the score is 0.

    >>> model = SiteModel()
    >>> for i in range(500):
    ...     volume = 100.0 + 50.0 * math.sin(i / 20)
    ...     model.learn_one({"volume": volume, "occupancy": 0.2 * volume + (i % 3)})
    >>> along = model.score_one({"volume": 150.0, "occupancy": 31.0})
    >>> across = model.score_one({"volume": 100.0, "occupancy": 45.0})
    >>> along < 3 < across
    True
    """

    # the state (streams.core.state restores it from these annotations)
    fading_factor: float
    _covariance: covariance.EwaCovariance
    _means: dict[Any, stats.EWMean]
    _n: int

    def __init__(self, fading_factor: float = 0.02) -> None:
        self.fading_factor = fading_factor
        self._covariance = covariance.EwaCovariance(fading_factor=fading_factor)
        self._means: dict[base.typing.FeatureName, stats.EWMean] = {}
        self._n = 0

    @property
    def settle(self) -> int:
        """Readings before the distances are worth calibrating: three memories."""
        return math.ceil(3.0 / self.fading_factor)

    def _unit_test_skips(self) -> set[str]:
        return set()  # every river check applies

    @staticmethod
    def _features(x: dict[base.typing.FeatureName, Any]) -> dict[base.typing.FeatureName, float]:
        return {
            k: float(v)
            for k, v in x.items()
            if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
        }

    def learn_one(self, x: dict[base.typing.FeatureName, Any]) -> None:
        """Learn one joint reading."""
        features = self._features(x)
        if self._means:  # the site's indicators are those of its first reading
            if any(k not in features for k in self._means):
                return  # a joint reading needs every one of them
            features = {k: features[k] for k in self._means}
        if not features:
            return
        self._covariance.update(features)
        for k, v in features.items():
            mean = self._means.get(k)
            if mean is None:
                mean = self._means[k] = stats.EWMean(fading_factor=self.fading_factor)
            mean.update(v)
        self._n += 1

    def score_one(self, x: dict[base.typing.FeatureName, Any]) -> float:
        """The Mahalanobis distance of the features the model knows; 0 before it knows any."""
        if self._n < 2:
            return 0.0
        features = self._features(x)
        known = [k for k in features if k in self._means]
        if not known:
            return 0.0
        delta = np.array([features[k] - self._means[k].get() for k in known])
        cov = np.array([[self._covariance[i, j] for j in known] for i in known], dtype=float)
        ridge = 1e-6 * float(np.trace(cov)) / len(known) + 1e-12
        try:
            solved = np.linalg.solve(cov + ridge * np.eye(len(known)), delta)
        except np.linalg.LinAlgError:
            return 0.0
        squared = float(delta @ solved)
        return math.sqrt(squared) if squared > 0.0 and math.isfinite(squared) else 0.0
