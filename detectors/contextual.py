"""A contextual anomaly detector: how much of what the recent past predicted came true.

The detector belongs to the class of the Contextual Anomaly Detector (CAD OSE, M. Smirnov,
2016): a reading is anomalous when the *contexts* it completes were not foreseen by the
contexts that led up to it. This module is an independent implementation written from the
published description of that algorithm, with the choices below where the description
leaves room.

The algorithm
-------------

1. **Facts of a reading.** The value is clipped to ``[value_min, value_max]`` and cut into
   ``2 ** num_norm_value_bits`` equal buckets. The bucket's binary code gives one *fact*
   per prefix length: the first bit alone (lower or upper half of the range), the first
   two bits (quarter), and so on to the full code. Close values share their coarse facts,
   so a reading one bucket away from a known one is partly, not wholly, new.
2. **Contexts.** A context is a pair (left semi-context, right semi-context): the left one
   is a fact that held at the previous step, the right one a fact of the current reading.
   The dictionary of contexts maps each pair to a *neuron*, an identifier that itself
   becomes a fact: when a context is recognised at step ``t`` (both of its halves held),
   its neuron is a left fact at step ``t + 1``. Contexts whose left half is a neuron
   describe longer histories (a neuron of order ``k`` stands for ``k + 1`` consecutive
   readings), which is how the detector learns sequences, not only transitions.
3. **Prediction and score.** Every left fact that has been seen before as the left half
   of some context *predicts*: the recorded contexts starting from it are what it expects
   next. For each predicting left fact the detector looks for the finest fact of the
   current reading that it had been followed by: the full code confirms the prediction,
   a coarser prefix confirms it in part, nothing confirms none of it. The raw score is
   the unconfirmed share averaged over all predicting left facts: 0 when everything the
   recent history predicted came true, 1 when nothing did. Left facts that predict nothing
   (never seen before, or the newest, deepest neurons) take no part.
4. **Active neurons.** For each left fact, the context of its finest confirmed fact is
   recognised; at most ``max_active_neurons`` of those neurons (deepest order first)
   are carried to the next step as left facts, together with the current reading's facts.
5. **Learning.** Every (left fact, current fact) pair finer than the confirmed one is
   added as a new context, unless its left fact is a neuron of the maximum order
   ``max_left_semi_contexts``: histories are at most that many readings deep. Learning
   never stops; after a detection (an output score at or above ``base_threshold``) the
   output is damped for ``rest_period`` readings, rising linearly back to the raw score,
   so one anomaly is reported once while the model keeps learning through it.
6. **Bounded memory.** Every use of a context stamps it with the reading count. When the
   dictionary exceeds ``max_contexts`` entries, the least recently used quarter is
   dropped (ties in insertion order). A dropped context's neuron can no longer be
   recognised; contexts built on top of it are no longer reached and age out in turn.

Choices where the published description is open
-----------------------------------------------

* Facts of a value are the prefixes of its bucket code (hierarchical), not one fact per
  bit position: a one-bucket step then keeps its coarse facts and scores lower than a
  jump across the range.
* Left semi-contexts are single facts (a previous fact or a neuron), not arbitrary sets
  of facts crossed with each other: every look-up is then one dictionary probe, which
  keeps an update within a few dozen of them. Higher-order structure comes from the
  neurons alone.
* ``max_left_semi_contexts`` bounds the depth of the history a left semi-context stands
  for (the neuron order), which keeps a periodic series from creating new deeper contexts
  forever.
* A left fact that predicts nothing is ignored, and a reading with no predicting left
  fact at all (the first reading, or the one after a never-seen value) scores 0.
* The rest period damps the output (``raw * (k + 1) / (rest_period + 1)`` at the
  ``k``-th reading after a detection) instead of zeroing it, so scores stay continuous;
  the model learns as usual during it.
* The dictionary is capped by least-recent use, pruned in batches of a quarter so the
  sort runs rarely.
* ``max_left_semi_contexts`` defaults to 2, not CAD OSE's 7: under the reading above,
  depth 7 scored far lower on NAB (see below), as deep contexts keep being created on
  noisy series and crowd the bounded dictionary.

The reading is ``x["value"]``; other keys are ignored. A missing, non-numeric or
non-finite value scores 0 and is not learned. There is no randomness. :meth:`update`
scores then learns in one pass (the hot path) and returns what :meth:`score_one` would
have returned just before :meth:`learn_one`.

Measured figures
----------------

Cost and state (defaults, Python 3.11): ``update`` takes 3.9 µs per reading (median of
7 runs of ``time.perf_counter`` around a loop of ``update`` over NAB's
``realKnownCause/machine_temperature_system_failure.csv``, 22,695 rows, range = the
file's min/max). The dictionary is nested by left fact (``{left: {right: neuron and
last use}}``), so a left fact that predicts nothing costs one probe, and neurons of the
deepest order, which are the left half of no context, are not carried; one flat
dictionary keyed by the pair, carrying every neuron, took 6.1 µs in the same runs
(alternating, same process) and gave the same scores on every NAB file. After 100,000 updates of a noisy daily-plus-weekly wave (``sin`` of
period 288 plus ``0.3 sin`` of period 2016 plus gaussian noise sd 0.2, range [-2, 2])
the dictionary holds 803 contexts and the pickled detector is 13.8 KB.

NAB v1.1 (``bench/nabscore.py``; standard / reward_low_FP / reward_low_FN, whole corpus
and the ten city files of ``bench/nab.py``). Each file is fed row by row to a fresh
detector; a detection is a score at or above a threshold with no detection in the
previous ``hold`` rows. Threshold (0.2 to 0.9) and hold (0 to 800 rows) are chosen for
the best whole-corpus standard score, so these figures are in-sample; "LOCO" is the
mean over the 7 categories of the standard score of each category with the threshold
and hold chosen on the other six (artificialNoAnomaly, with no windows, counts 0).

============================================  ==================  ==================  ====
Variant (range = file min/max unless said)    whole               city                LOCO
============================================  ==================  ==================  ====
max_left_semi_contexts 7 (thr .4, hold 400)   46.1 / 33.4 / 52.0  36.7 / 18.6 / 44.5  26.3
... and max_contexts 3000 (.4, 200)           52.0 / 36.3 / 59.1  65.5 / 45.4 / 74.4  37.0
max_left_semi_contexts 3 (.3, 200)            60.3 / 50.6 / 65.5  62.9 / 57.4 / 65.9  51.3
max_left_semi_contexts 2, default (.3, 100)   64.2 / 55.8 / 69.0  63.2 / 58.7 / 66.2  55.5
max_left_semi_contexts 1 (.2, 100)            66.0 / 60.3 / 69.9  64.4 / 61.2 / 66.9  55.7
default, range from first 15% (.3, 100)       46.4 / 29.3 / 53.9  48.6 / 41.2 / 52.4  40.1
============================================  ==================  ==================  ====

"Range from first 15%" is the 0.5% to 99.5% quantiles of the file's first 15% rows,
widened by a quarter of their span on each side (a stand-in for a catalogue range;
unwidened it scores 41.6 whole / 51.0 city). With ``max_left_semi_contexts`` 1 no
context has a neuron as its left half, so the detector reduces to first-order
transitions between hierarchical facts; 2 keeps one level of sequence memory at almost
the same figures and is the default. Finer buckets scored lower (7 levels deep:
``num_norm_value_bits`` 4 gives 41.4 whole / 49.5 city, 5 gives 35.8 / 37.6).

As a second opinion behind :class:`~detectors.anomaly.AnomalyGate` (shipped
configuration), with the gate fed ``max(seasonal score, min(0.999, cad * 0.47 / c))``
where the seasonal score is :class:`~detectors.anomaly.SeriesDetector`'s: seasonal
alone 57.1 / 43.3 / 63.6 whole, 72.7 / 67.6 / 76.4 city; with the default detector on
the file's min/max and ``c`` 0.3, 63.5 / 41.8 / 72.5 whole, 80.7 / 70.4 / 85.8 city
(LOCO over ``c`` 54.1); on the first-15% range and ``c`` 0.6, 63.5 / 46.6 / 71.1 whole,
78.1 / 71.3 / 82.8 city (LOCO 59.0). ``c`` was tried from 0.3 to 0.9.
"""

from __future__ import annotations

import math
from functools import cache
from typing import Any

from river import base

#: Sensory facts lie below this; neuron facts are ``_SPAN + (serial << _ORDER_BITS | order)``.
#: A context's key is ``left * _SPAN + right`` (right is always a sensory fact).
_SPAN = 1 << 16
_ORDER_BITS = 4
_ORDER_MASK = (1 << _ORDER_BITS) - 1
#: A context's value is ``neuron << _STAMP_BITS | last_used``.
_STAMP_BITS = 32
_STAMP_MASK = (1 << _STAMP_BITS) - 1
#: The largest supported ``num_norm_value_bits`` (facts must stay below ``_SPAN``).
MAX_BITS = 12


@cache
def _fact_table(bits: int) -> tuple[tuple[int, ...], ...]:
    """The facts of every bucket, finest first: prefix of length ``k`` is ``2**k + prefix``."""
    return tuple(
        tuple((1 << k) + (q >> (bits - k)) for k in range(bits, 0, -1)) for q in range(1 << bits)
    )


class ContextDetector(base.AnomalyDetector):
    """Contextual anomaly detector: the share of the recent context's predictions not confirmed.

    See the module docstring for the algorithm. Scores are in [0, 1]: 0 when every
    prediction of the recent history came true, 1 when none did.

    Parameters
    ----------
    value_min
        Lower end of the value range; smaller values are clipped to it.
    value_max
        Upper end of the value range (must exceed ``value_min``); larger values are
        clipped to it.
    num_norm_value_bits
        The range is cut into ``2 ** num_norm_value_bits`` buckets (1 to 12).
    max_left_semi_contexts
        Deepest history a left semi-context may stand for, in readings (1 to 15).
    max_active_neurons
        Recognised contexts carried to the next step as left facts.
    max_contexts
        Capacity of the dictionary of contexts; the least recently used quarter is
        dropped when it is exceeded.
    base_threshold
        An output score at or above this is a detection and starts a rest period.
    rest_period
        Readings after a detection during which the output is damped (0: never).

    Examples
    --------
    >>> from detectors.contextual import ContextDetector
    >>> model = ContextDetector(value_min=0.0, value_max=10.0)
    >>> for _ in range(20):
    ...     for v in (1.0, 5.0, 9.0, 5.0):
    ...         _ = model.update(v)

    The stream ends with 9 then 5: 1 comes next. 9 also follows 5, but only after 1, 5:
    the single previous value allows it, the two-reading context does not.

    >>> model.score_one({"value": 1.0})
    0.0
    >>> model.score_one({"value": 9.0})
    0.5
    >>> model.score_one({"value": 3.0}) > 0.5
    True
    """

    # the state (streams.core.state restores it from these annotations)
    value_min: float
    value_max: float
    num_norm_value_bits: int
    max_left_semi_contexts: int
    max_active_neurons: int
    max_contexts: int
    base_threshold: float
    rest_period: int
    _followers: dict[int, dict[int, int]]
    _size: int
    _left: tuple[int, ...]
    _serial: int
    _stamp: int
    _since: int

    def __init__(
        self,
        value_min: float = 0.0,
        value_max: float = 1.0,
        num_norm_value_bits: int = 3,
        max_left_semi_contexts: int = 2,
        max_active_neurons: int = 15,
        max_contexts: int = 1000,
        base_threshold: float = 0.75,
        rest_period: int = 0,
    ) -> None:
        if not (math.isfinite(value_min) and math.isfinite(value_max) and value_max > value_min):
            raise ValueError("value_max must exceed value_min, both finite")
        if not 1 <= num_norm_value_bits <= MAX_BITS:
            raise ValueError(f"num_norm_value_bits must be in [1, {MAX_BITS}]")
        if not 1 <= max_left_semi_contexts <= _ORDER_MASK:
            raise ValueError(f"max_left_semi_contexts must be in [1, {_ORDER_MASK}]")
        if max_active_neurons < 0 or max_contexts < 4 or rest_period < 0:
            raise ValueError("max_active_neurons, rest_period >= 0 and max_contexts >= 4")
        self.value_min = value_min
        self.value_max = value_max
        self.num_norm_value_bits = num_norm_value_bits
        self.max_left_semi_contexts = max_left_semi_contexts
        self.max_active_neurons = max_active_neurons
        self.max_contexts = max_contexts
        self.base_threshold = base_threshold
        self.rest_period = rest_period
        # left fact -> {right fact -> neuron << _STAMP_BITS | last use}: the contexts
        self._followers: dict[int, dict[int, int]] = {}
        self._size = 0  # number of contexts
        # left facts of the next reading: active neurons (deepest first), then facts
        self._left: tuple[int, ...] = ()
        self._serial = 0
        self._stamp = 0
        self._since = rest_period

    @property
    def n_contexts(self) -> int:
        """Number of contexts in the dictionary (at most ``max_contexts``)."""
        return self._size

    def __setstate__(self, state: dict[str, Any]) -> None:
        contexts = state.pop("_contexts", None)
        if contexts is not None:  # written with one flat dictionary keyed left * _SPAN + right
            del state["_lefts"]
            followers: dict[int, dict[int, int]] = {}
            for key, value in contexts.items():
                followers.setdefault(key // _SPAN, {})[key % _SPAN] = value
            state["_followers"], state["_size"] = followers, len(contexts)
        self.__dict__.update(state)

    @classmethod
    def _unit_test_skips(cls) -> set[str]:
        # every river check applies
        return set()

    def _process(self, value: float, learn: bool) -> float:
        """The output score of ``value``; with ``learn`` the model also learns it."""
        bits = self.num_norm_value_bits
        n = 1 << bits
        q = int((value - self.value_min) / (self.value_max - self.value_min) * n)
        facts = _fact_table(bits)[0 if q < 0 else n - 1 if q >= n else q]
        followers = self._followers
        known = 0
        missed = 0
        if not learn:
            for left in self._left:
                after = followers.get(left)
                if after is None:
                    continue  # the left half of no context: predicts nothing
                known += 1
                for fact in facts:
                    if fact in after:
                        break
                    missed += 1
            raw = missed / (known * bits) if known else 0.0
            since = self._since
            return raw * (since + 1) / (self.rest_period + 1) if since < self.rest_period else raw
        stamp = self._stamp = (self._stamp + 1) & _STAMP_MASK
        max_order = self.max_left_semi_contexts
        max_neurons = self.max_active_neurons
        new: list[tuple[int, int]] = []
        neurons: list[int] = []
        for left in self._left:
            # a left fact's order: 0 for a fact of a reading, the neuron's for a neuron
            learns = (left & _ORDER_MASK if left >= _SPAN else 0) < max_order
            after = followers.get(left)
            if after is None:  # predicts nothing: every fact of the reading is new to it
                if learns:
                    new += [(left, fact) for fact in facts]
                continue
            known += 1
            j = 0
            for fact in facts:
                hit = after.get(fact)
                if hit is not None:
                    neuron = hit >> _STAMP_BITS
                    after[fact] = neuron << _STAMP_BITS | stamp
                    # a neuron of the deepest order is the left half of no context
                    if len(neurons) < max_neurons and neuron & _ORDER_MASK < max_order:
                        neurons.append(neuron)
                    break
                j += 1
            missed += j
            if learns and j:
                new += [(left, fact) for fact in facts[:j]]
        raw = missed / (known * bits) if known else 0.0
        since = self._since
        score = raw * (since + 1) / (self.rest_period + 1) if since < self.rest_period else raw
        self._since = 0 if score >= self.base_threshold else min(since + 1, self.rest_period)
        if new:
            # each pair is new: its probe above missed, and the left facts are distinct
            serial = self._serial
            for left, fact in new:
                order = left & _ORDER_MASK if left >= _SPAN else 0
                serial += 1
                neuron = _SPAN + (serial << _ORDER_BITS | (order + 1))
                after = followers.get(left)
                if after is None:
                    after = followers[left] = {}
                after[fact] = neuron << _STAMP_BITS | stamp
            self._serial = serial
            self._size += len(new)
            if self._size > self.max_contexts:
                self._prune()
        self._left = (*neurons, *facts)
        return score

    def _prune(self) -> None:
        """Drop the least recently used contexts down to three quarters of the capacity."""
        followers = self._followers
        stamp = self._stamp
        # oldest first (age since last use, robust to the stamp wrapping around), then
        # in order of creation (the neuron's serial)
        by_age = sorted(
            (
                (-((stamp - v) & _STAMP_MASK), v >> _STAMP_BITS, left, fact)
                for left, after in followers.items()
                for fact, v in after.items()
            )
        )
        drop = self._size - self.max_contexts * 3 // 4
        for _, _, left, fact in by_age[:drop]:
            after = followers[left]
            del after[fact]
            if not after:
                del followers[left]
        self._size -= drop

    @staticmethod
    def _value_of(x: dict[Any, Any]) -> float | None:
        value = x.get("value") if isinstance(x, dict) else None
        if value is None:
            return None
        try:
            v = float(value)
        except (TypeError, ValueError):
            return None
        return v if math.isfinite(v) else None

    def learn_one(self, x: dict[Any, Any]) -> None:
        """Learn the reading ``x["value"]`` (ignored if missing or not finite)."""
        v = self._value_of(x)
        if v is not None:
            self._process(v, learn=True)

    def score_one(self, x: dict[Any, Any]) -> float:
        """The anomaly score of ``x["value"]`` in [0, 1], without learning it."""
        v = self._value_of(x)
        return 0.0 if v is None else self._process(v, learn=False)

    def update(self, value: float) -> float:
        """Score ``value``, then learn it: ``score_one`` followed by ``learn_one`` in one pass."""
        try:
            v = float(value)
        except (TypeError, ValueError):
            return 0.0
        if not math.isfinite(v):
            return 0.0
        return self._process(v, learn=True)
