"""Any river anomaly detector behind the product's calibrated score and alert gate.

river's anomaly detectors (``river.anomaly.HalfSpaceTrees``, ``StandardAbsoluteDeviation``,
``LODA``, ``OneClassSVM``, ...) each score on their own scale: some in [0, 1], some
unbounded, some exactly 1.0 on long flat stretches. The gate (:class:`~detectors.anomaly.AnomalyGate`)
needs one scale that says how unusual a reading is for *this* series, so :class:`Calibrated`
passes the wrapped detector's raw scores, compressed with ``log1p``, through the same
anomaly likelihood the seasonal model uses (:mod:`detectors.anomaly`, step 3): the mean of the last ``short_window`` raw
scores against an exponentially weighted normal fit of such means, ``nl = -log10`` of its
upper tail probability, and ``score = nl / (nl + score_half)``, continuous in [0, 1).

Learning follows river's anomaly filters (``protect_anomaly_detector``): once warmed up,
a reading that follows one scored at or above ``protect_score`` is not learned, so a long
anomaly does not become the detector's new normal; with ``protect_weight`` 1 every reading
is learned. A reading's features are ``{value_key: value}``; detectors that need the
value range (``HalfSpaceTrees``' ``limits``) get the indicator's catalogue range from the
configuration (:mod:`streams.alerting.models`).
"""

from __future__ import annotations

import math
from typing import Any, cast

from river import anomaly, base

from detectors.anomaly import COUNT_CAP, AnomalyConfig, AnomalyScore, _Likelihood


class Calibrated(base.AnomalyDetector):
    """A river anomaly detector whose raw scores become a calibrated score in [0, 1).

    Parameters
    ----------
    detector
        The river anomaly detector that scores each reading (None: river's
        ``StandardAbsoluteDeviation``). An unsupervised one sees ``{value_key: value}``;
        a supervised one (``StandardAbsoluteDeviation``, ``PredictiveAnomalyDetection``),
        which judges a target given features, sees the value as the target of empty
        features.
    config
        Likelihood, warm-up and protection settings (:class:`~detectors.anomaly.AnomalyConfig`:
        ``short_window``, ``dist_alpha``, ``sd_floor``, ``score_half``,
        ``warmup_readings``, ``protect_score``, ``protect_weight``).
    value_key
        The feature of ``x`` holding the reading's value; None: every number of ``x`` is
        one feature of a joint reading (a site's indicators, :mod:`detectors.site`), for
        an unsupervised detector.
    settle
        Readings the detector learns before its scores enter the likelihood's fit (its
        first scores, from a deviation or covariance learned from a handful of readings,
        say little); no alert before them either. About three memories of the detector.

    >>> from river import anomaly
    >>> model = Calibrated(anomaly.StandardAbsoluteDeviation())
    >>> for i in range(300):
    ...     model.learn_one({"value": 10.0 + (i % 5)})
    >>> model.score_one({"value": 12.0}) < 0.2 < model.score_one({"value": 60.0})
    True
    """

    # the state (streams.core.state restores it from these annotations)
    detector: base.Estimator  # an AnomalyDetector or a SupervisedAnomalyDetector
    config: AnomalyConfig
    value_key: str | None
    settle: int
    _lk: _Likelihood
    _n: int
    _last_score: float

    def __init__(
        self,
        detector: base.AnomalyDetector | base.SupervisedAnomalyDetector | None = None,
        config: AnomalyConfig | None = None,
        value_key: str | None = "value",
        settle: int = 30,
    ) -> None:
        self.detector = detector if detector is not None else anomaly.StandardAbsoluteDeviation()
        self.config = config if config is not None else AnomalyConfig()
        self.value_key = value_key
        self.settle = settle
        if value_key is None and isinstance(self.detector, base.SupervisedAnomalyDetector):
            raise ValueError("a supervised detector judges one value: value_key must be set")
        self._lk = _Likelihood(self.config.short_window)
        self._n = 0
        self._last_score = 0.0

    @classmethod
    def _unit_test_params(cls) -> Any:
        yield {}
        yield {"detector": anomaly.HalfSpaceTrees(seed=1)}

    def _unit_test_skips(self) -> set[str]:
        return set()  # every river check applies

    def _inputs(
        self, x: dict[base.typing.FeatureName, Any]
    ) -> dict[base.typing.FeatureName, float] | None:
        """The reading's features: ``{value_key: value}``, or every finite number of ``x``
        when ``value_key`` is None (a joint reading); None when there is nothing to judge."""
        keys = x if self.value_key is None else (self.value_key,)
        features = {
            k: float(v)
            for k in keys
            if isinstance(v := x.get(k), int | float)
            and not isinstance(v, bool)
            and math.isfinite(v)
        }
        return features or None

    def _raw(self, features: dict[base.typing.FeatureName, float]) -> float:
        if isinstance(self.detector, base.SupervisedAnomalyDetector):
            raw = float(self.detector.score_one({}, next(iter(features.values()))))
        else:
            raw = float(cast(base.AnomalyDetector, self.detector).score_one(features))
        # compressed as the seasonal model's residuals are: a detector's first scores (a
        # deviation of nothing yet) can be astronomically large and must not own the fit
        return math.log1p(raw) if raw > 0.0 and math.isfinite(raw) else 0.0

    def learn_one(self, x: dict[base.typing.FeatureName, Any]) -> None:
        """Learn one reading."""
        features = self._inputs(x)
        if features is not None:
            self.update_features(0.0, features)

    def score_one(self, x: dict[base.typing.FeatureName, Any]) -> float:
        """The calibrated score of one reading, in [0, 1); learns nothing."""
        features = self._inputs(x)
        if features is None:
            return 0.0
        nl = self._lk.peek(self._raw(features), self.config.sd_floor)
        return nl / (nl + self.config.score_half)

    def update(self, t: float, value: float) -> AnomalyScore:
        """Score one value (``t`` is not used), then learn it unless protected."""
        if not math.isfinite(value):
            return AnomalyScore(0.0, 0.0, None, self._n >= self.config.warmup_readings, False)
        return self.update_features(t, {self.value_key or "value": value})

    def update_features(
        self, t: float, features: dict[base.typing.FeatureName, float]
    ) -> AnomalyScore:
        """Score one reading of finite features, then learn it unless protected."""
        c = self.config
        warmed_up = self._n >= c.warmup_readings and self._n >= self.settle
        raw = self._raw(features)
        learn = not (warmed_up and self._last_score >= c.protect_score and c.protect_weight < 1.0)
        # the detector's first scores (of a deviation learned from a handful of readings)
        # say little: the fit starts after them
        fit = learn and self._n >= self.settle
        nl = self._lk.update(raw, c.dist_alpha, c.sd_floor, fit)
        score = nl / (nl + c.score_half)
        if learn:
            if isinstance(self.detector, base.SupervisedAnomalyDetector):
                self.detector.learn_one({}, next(iter(features.values())))
            else:
                cast(base.AnomalyDetector, self.detector).learn_one(dict(features))
            if self._n < COUNT_CAP:
                self._n += 1
        self._last_score = score
        return AnomalyScore(score, raw, None, warmed_up, learn)
