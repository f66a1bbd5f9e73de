"""Faust's own metrics in the product's registry: a Prometheus sensor for the worker's app.

Faust's :class:`~faust.sensors.prometheus.PrometheusMonitor` writes to
:data:`streams.core.metrics.REGISTRY` under ``cityvitals_faust_``, with Faust's names and
units (latencies in milliseconds), so ``/metrics`` shows them beside the product's own.
"""

from __future__ import annotations

import functools

from faust.sensors.prometheus import FaustMetrics, PrometheusMonitor

from streams.core.metrics import REGISTRY

FAUST_PREFIX = "cityvitals_faust"


@functools.cache
def _faust_metrics() -> FaustMetrics:
    return FaustMetrics.create(REGISTRY, FAUST_PREFIX)


def faust_monitor() -> PrometheusMonitor:
    """A Faust Prometheus sensor for one app, writing to :data:`REGISTRY` (``app.monitor``).

    Its metrics are created on the first call, once per process: ``cityvitals_faust_*``
    (messages and events received, table operations, sends, commits, assignments and
    rebalances), with Faust's names and units: latencies in milliseconds.
    """
    return PrometheusMonitor(metrics=_faust_metrics())
