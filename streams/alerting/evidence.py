"""What an alert's evidence shows of its series: the last minutes' values, and the words
for a threshold rule's aggregate.

A district keeps the values of each window key's last closed minutes
(``DistrictDetection.recent``, oldest first), so that every alert it raises, whether
decided at a window's close or by a model, shows how its series got there.
"""

from __future__ import annotations

from collections import deque
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from detectors.thresholds import ThresholdSpec
from streams.core.messages import EvidencePoint
from streams.state.windows import STREET_SEP, ClosedWindow

if TYPE_CHECKING:
    from streams.alerting.detection import DetectionContext

RECENT_VALUES = 15  # minutes of values an alert's evidence shows

#: The recent minute values of each window key: (minute's end, value), oldest first.
Recent = dict[str, deque[tuple[float, float]]]


def describe(spec: ThresholdSpec) -> str:
    if spec.aggregate.value == "reading":
        return "reading"
    minutes = spec.window_s / 60
    span = f"{minutes:g} min" if minutes < 120 else f"{minutes / 60:g} h"
    what = {"rate": "rate per minute"}.get(spec.aggregate.value, spec.aggregate.value)
    return f"{what} over {span}"


def remember(recent: Recent, window: ClosedWindow, ctx: DetectionContext) -> None:
    """Keep the closed minute's value of every key that had readings: a gauge's mean, a
    count's sum."""
    for key, agg in window.minute.items():
        if agg[0] <= 0:
            continue
        ind = ctx.cfg.indicators.get(key.partition(STREET_SEP)[0])
        value = agg[1] if ind is not None and ind.aggregation == "sum" else agg[1] / agg[0]
        series = recent.get(key)
        if series is None:
            series = recent[key] = deque(maxlen=RECENT_VALUES)
        series.append((window.end, value))


def recent_values(recent: Recent, indicator: str, street: str | None) -> list[EvidencePoint]:
    """The series' last minutes, as an alert's evidence shows them."""
    key = indicator if street is None else f"{indicator}{STREET_SEP}{street}"
    return [
        EvidencePoint(time=datetime.fromtimestamp(t, UTC), value=v) for t, v in recent.get(key, ())
    ]
