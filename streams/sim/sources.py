"""What each stream sends: a gauge's reading, a department feed's event, as the JSON body
of a :class:`~streams.core.messages.CityEvent` (its ``event_id`` and ``event_time``
set by the simulator)."""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from typing import Any

from streams.sim.clock import MS_PER_HOUR, Clock
from streams.sim.complaints import complaint
from streams.sim.layout import Stream


def gauge_reading(
    st: Stream,
    t: int,
    clock: Clock,
    normal: Iterator[float],
    drift: list[float],
    i: int,
) -> dict[str, Any]:
    """The event body of gauge ``st`` (the ``i``-th stream) at ``t`` ms after the start:
    its baseline, bias, drift and noise, moved by incidents; ``drift`` holds every
    gauge's drift, carried from one reading to the next."""
    ind = st.ind
    # AR(1) drift: real sensors wander slowly rather than scatter independently.
    ar = drift[i] = st.phi * drift[i] + st.ar_sigma * next(normal)
    v = st.model(clock, t / MS_PER_HOUR) + st.bias + ar + st.sigma * next(normal)
    busy = 0.0
    for eff in st.effects:
        e = eff.intensity(t)
        if e > 0.0:
            v = eff.apply(v, e, eff.target)
            busy = max(busy, e)
    lo, hi = ind.range
    if busy > 0.01:
        v += busy * 2.0 * st.sigma * next(normal)  # incidents are noisier than quiet days
    else:
        # Quiet times stay inside the normal band: alerts should have a cause.
        lo, hi = ind.normal
        margin = 0.01 * (hi - lo)
        lo, hi = lo + margin, hi - margin
    v = min(max(v, lo), hi)
    return event_body(st, st.street, v)


def event_body(st: Stream, street: str | None, canonical: float) -> dict[str, Any]:
    """An event body for ``canonical`` in the stream's own unit, without its id and time."""
    value = round(canonical, st.decimals)
    unit = st.unit
    if st.factor != 1.0 or st.offset != 0.0:
        value = round((canonical - st.offset) / st.factor, st.decimals)
        back = value * st.factor + st.offset
        if not st.ind.range[0] <= back <= st.ind.range[1]:  # rounding crossed a bound
            value, unit = round(canonical, 1), st.ind.unit
    body: dict[str, Any] = {
        "event_id": "",
        "source": st.source_id,
        "district": st.district.code,
        "street": street,
        "indicator": st.ind.code,
        "value": value,
        "unit": unit,
        "event_time": None,
    }
    location = st.location or st.street_locations.get(street or "")
    if location is not None:
        body["location"] = location
    return body


def feed_event(st: Stream, t: int, clock: Clock, rng: random.Random) -> dict[str, Any]:
    """The body of an event of feed ``st`` at ``t`` ms after the start, in a street of its
    district or in an incident's street."""
    streets = st.district.streets
    street: str | None = None
    cause = ""
    # Which process produced this event: the background rate or an incident?
    base = st.rate_h(clock) if st.rate_h else 0.0
    parts = [(eff, eff.boost_h * eff.intensity(t)) for eff in st.effects]
    pick = rng.random() * (base + sum(w for _, w in parts))
    for eff, w in parts:
        if pick < w:
            street, cause = eff.street, eff.kind
            break
        pick -= w
    if street is None:
        street = streets[rng.randrange(len(streets))].code
    code = st.ind.code
    value: float = 1.0
    if code == "fire.smoke_alarms" and cause:
        value = float(rng.randint(1, 3))  # several detectors in the burning building
    elif code == "sanitation.collection_delay_min":
        value = min(28.0, rng.lognormvariate(math.log(8.0), 0.6))
    event = event_body(st, street, value)
    if code == "hotline.complaints":
        event["attributes"] = complaint(st.district, street, cause, clock, rng)
    return event
