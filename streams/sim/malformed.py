"""Malformed events: bytes the ingest must dead-letter, each for a known reason."""

from __future__ import annotations

import random
from datetime import timedelta
from typing import Any

import orjson

from streams.core.config import CityConfig
from streams.sim.layout import Stream

MALFORMED_KINDS: tuple[str, ...] = (
    "bad_json",
    "wrong_type",
    "not_finite",
    "unknown_district",
    "unknown_indicator",
    "out_of_range",
    "future_event_time",
    "unknown_unit",
)


def malform(
    cfg: CityConfig, kind: str, body: dict[str, Any], st: Stream, rng: random.Random
) -> tuple[bytes, bytes]:
    """Bytes that the ingest must reject for reason ``kind``, and the record key."""
    key = st.district.code.encode()
    ind = st.ind
    if kind == "bad_json":
        raw = orjson.dumps(body)
        style = rng.randrange(3)
        if style == 0:  # cut off mid-message: a strict prefix of an object never parses
            return raw[: rng.randrange(1, len(raw) - 1)], key
        if style == 1:  # binary garbage in the middle
            cut = rng.randrange(1, len(raw) - 1)
            return raw[:cut] + b"\xff\xfe\x00" + raw[cut:], key
        return raw.replace(b'"event_id"', b"event_id", 1), key  # an unquoted key
    if kind == "wrong_type":
        if rng.random() < 0.5:
            body["value"] = str(body["value"])
        else:
            body["event_time"] = body["event_time"].timestamp()
        return orjson.dumps(body), key
    if kind == "not_finite":
        body["value"] = "__VALUE__"
        literal = rng.choice((b"NaN", b"Infinity", b"-Infinity"))
        return orjson.dumps(body).replace(b'"__VALUE__"', literal, 1), key
    if kind == "unknown_district":
        code = f"99{rng.randrange(10000):04d}"
        while code in cfg.districts:
            code = f"99{rng.randrange(10000):04d}"
        body["district"] = code
        body["street"] = None  # so the district check is the one that fails
        return orjson.dumps(body), code.encode()
    if kind == "unknown_indicator":
        prefix = ind.source.value
        name = rng.choice(("radiation_usv", "parking_free", "humidity_pct", "vibration_mm"))
        code = f"{prefix}.{name}"
        while code in cfg.indicators:
            code += "_x"
        body["indicator"] = code
        return orjson.dumps(body), key
    if kind == "out_of_range":
        lo, hi = ind.range
        span = hi - lo
        body["value"] = round(
            hi + span * rng.uniform(0.1, 2.0)
            if rng.random() < 0.5
            else lo - span * rng.uniform(0.1, 2.0),
            2,
        )
        body["unit"] = ind.unit
        return orjson.dumps(body), key
    if kind == "future_event_time":
        body["event_time"] = body["event_time"] + timedelta(
            days=rng.randint(2, 30), minutes=rng.randrange(1440)
        )
        return orjson.dumps(body), key
    if kind == "unknown_unit":
        accepted = {ind.unit, *ind.conversions}
        unit = rng.choice(("mmHg", "furlong/fortnight", "ppb", "kn", "gal", "lux", "Pa·s"))
        while unit in accepted:
            unit += "?"
        body["unit"] = unit
        return orjson.dumps(body), key
    raise ValueError(f"unknown malformed kind {kind!r}")
