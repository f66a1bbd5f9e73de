"""The shipped default anomaly model: seasonal likelihood and contexts, the larger score.

Two models that miss different anomalies watch each series:

* :class:`~detectors.anomaly.SeriesDetector`, the seasonal anomaly likelihood: a value
  unusual for this hour of this kind of day, a sudden jump, a sustained shift;
* :class:`~detectors.contextual.ContextDetector`, the contextual detector: a sequence of
  values the recent past did not foresee, whatever their size (a stuck sensor, a rhythm
  that breaks, a plateau at an unusual level).

The contextual detector's raw score (the share of what the recent contexts predicted
that did not come true) goes through the same anomaly likelihood as the seasonal
residuals (:mod:`detectors.anomaly`, step 3), so both say how unusual the last readings
are for this series, on one scale. The ensemble's score is the seasonal score, raised to
the contextual one where that is larger *and* the seasonal score is at least
``context_gate`` (0.35, a tail probability of about 0.02): alone, the contextual
detector cries wolf on healthy series, whose novel little sequences never end. The
seasonal model gives the baseline and the warm-up.

Measured on the NAB corpus, row by row (standard, whole / city; ``docs/detection.md``
has every alternative): the seasonal model alone 57.1 / 72.7; the larger score
everywhere 63.4 / 81.2 but 33 false alarms on ten quiet two-week series against 11;
with the gate at 0.35, 61.2 / 82.3 and no more false alarms on quiet series than the
seasonal model alone (20 against 19 on twenty). Cost (``bench/detector_cost.py``,
NAB's machine temperature, median of 5 runs on a loaded 2-core host): 24.4 µs a
reading against 9.9 µs for the seasonal model alone, measured side by side; 8.1 KB
of state (the detection table's document, uncompressed) after 100,000 readings.

The contextual detector needs the value's range. ``value_range`` is the indicator's
usual band from the catalogue (``normal`` in ``config/indicators.yaml``, widened by half
its span on each side, within the physical range); without one (a replayed column, a
degenerate band) the range is learned from the first ``range_readings`` readings, widened
by ``widen`` of their span on each side, and the contextual detector starts then.
"""

from __future__ import annotations

import math
from typing import Any

from river import base

from detectors.anomaly import AnomalyConfig, AnomalyScore, SeriesDetector, _Likelihood
from detectors.contextual import ContextDetector


class Ensemble(base.AnomalyDetector):
    """The seasonal likelihood and the contextual detector of one series; the larger score.

    Parameters
    ----------
    config
        Settings of the seasonal model, the likelihood and the gate (:class:`AnomalyConfig`).
    value_range
        The contextual detector's value range; None: learned from the first readings.
    range_readings
        Readings that set a learned range.
    widen
        A learned range is widened by this share of its span on each side.
    context_gate
        The contextual score counts only where the seasonal score is at least this.
    time_key
        The feature of ``x`` holding the reading's time (seconds since the epoch).
    value_key
        The feature of ``x`` holding the reading's value.

    Without a range, the contextual detector starts once the first readings set one:

    >>> model = Ensemble()
    >>> for i in range(200):
    ...     score = model.update(300.0 * i, 10.0 + (i % 4))
    >>> model.context.value_min, model.context.value_max
    (8.5, 14.5)
    """

    # the state (streams.core.state restores it from these annotations)
    config: AnomalyConfig
    value_range: tuple[float, float] | None
    range_readings: int
    widen: float
    context_gate: float
    time_key: str
    value_key: str
    seasonal: SeriesDetector
    context: ContextDetector | None
    _lk: _Likelihood
    _low: float
    _high: float
    _seen: int

    def __init__(
        self,
        config: AnomalyConfig | None = None,
        value_range: tuple[float, float] | None = None,
        range_readings: int = 150,
        widen: float = 0.5,
        context_gate: float = 0.35,
        time_key: str = "t",
        value_key: str = "value",
    ) -> None:
        self.config = config if config is not None else AnomalyConfig()
        self.value_range = value_range
        self.range_readings = range_readings
        self.widen = widen
        self.context_gate = context_gate
        self.time_key = time_key
        self.value_key = value_key
        self.seasonal = SeriesDetector(self.config, time_key=time_key, value_key=value_key)
        self.context: ContextDetector | None = None
        if value_range is not None:
            self.context = ContextDetector(value_min=value_range[0], value_max=value_range[1])
        self._lk = _Likelihood(self.config.short_window)
        self._low = math.inf
        self._high = -math.inf
        self._seen = 0

    def _unit_test_skips(self) -> set[str]:
        return set()  # every river check applies

    def _start_context(self, value: float) -> None:
        """Learn the range from the first readings; start the contextual detector then."""
        self._low = min(self._low, value)
        self._high = max(self._high, value)
        self._seen += 1
        if self._seen >= self.range_readings:
            span = self._high - self._low
            if span <= 0.0:
                span = max(abs(self._high), 1.0)
            lo, hi = self._low - self.widen * span, self._high + self.widen * span
            self.context = ContextDetector(value_min=lo, value_max=hi)

    def update(self, t: float, value: float) -> AnomalyScore:
        """Score ``value`` at ``t`` with both models, then learn it: the larger score."""
        seasonal = self.seasonal.update(t, value)
        if not math.isfinite(value) or not math.isfinite(t):
            return seasonal
        context = self.context
        if context is None:
            self._start_context(value)
            return seasonal
        c = self.config
        raw = context.update(value)
        if seasonal.score < self.context_gate:
            # contexts count where the seasonal model sees something too: learn only
            self._lk.update(raw, c.dist_alpha, c.sd_floor, True, score=False)
            return seasonal
        nl = self._lk.update(raw, c.dist_alpha, c.sd_floor, True)
        score = nl / (nl + c.score_half)
        return seasonal._replace(score=score) if score > seasonal.score else seasonal

    def learn_one(self, x: dict[base.typing.FeatureName, Any]) -> None:
        """Learn one reading (``x[time_key]``, ``x[value_key]``)."""
        reading = self.seasonal._reading(x)  # the same reading of x for both models
        if reading is not None:
            self.update(*reading)

    def score_one(self, x: dict[base.typing.FeatureName, Any]) -> float:
        """The ensemble's calibrated score, in [0, 1); learns nothing."""
        reading = self.seasonal._reading(x)
        if reading is None:
            return 0.0
        score = self.seasonal.score_one(x)
        if self.context is not None:
            raw = self.context.score_one({"value": reading[1]})
            nl = self._lk.peek(raw, self.config.sd_floor)
            if score >= self.context_gate:
                score = max(score, nl / (nl + self.config.score_half))
        return score
