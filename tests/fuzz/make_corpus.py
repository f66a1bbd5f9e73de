"""Writes the seed corpus of the batch fuzzer (``python -m tests.fuzz.make_corpus``).

Seeds are batches of simulated events (valid and malformed of every kind), the
hostile records users met (nesting, size, duplicate keys, far times, personal data
everywhere) and mixes of them. The fuzzer adds the inputs it finds that reach new
code to the same folder.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from streams.sim.simulator import CitySimulator
from tests.fuzz.batch import CFG, KEYS, SEPARATOR, TOPICS
from tests.kafka.test_poison_broker import iot_body

CORPUS = Path(__file__).parent / "corpus"
START = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)


def head(topic: str, key: bytes | None) -> bytes:
    return bytes((TOPICS.index(topic) + 16 * KEYS.index(key),))


def body(**over: Any) -> dict[str, Any]:
    return iot_body(START, **over)


def hostile() -> list[bytes]:
    iot = "city.events.iot"
    deep: dict[str, Any] = {}
    for _ in range(12):
        deep = {"a": deep}
    dup = orjson.dumps(body()).replace(b'"value":35.0', b'"value":35.0,"value":9e9')
    return [
        head(iot, b"339901") + json.dumps(body(attributes=deep)).encode(),
        head(iot, b"339901") + dup,
        head(iot, b"339901") + orjson.dumps(body(event_time="1970-01-01T00:00:00Z")),
        head(iot, b"339901") + orjson.dumps(body(event_time="0001-01-01T00:00:00+08:00")),
        head(iot, b"339901")
        + orjson.dumps(body(event_time=(START + timedelta(days=2)).isoformat())),
        head(iot, b"339901")
        + orjson.dumps(
            body(
                event_id="13812345678-1",
                source="zhang.san@example.com",
                attributes={"13812345678": 1, "contact": 13812345678, "t": "138.1234.5678"},
            )
        ),
        head(iot, b"339901") + orjson.dumps(body(street="13812345678")),
        head(iot, b"339901") + orjson.dumps(body(attributes={"text": "x" * 3000})),
        head(iot, None) + orjson.dumps(body()),
        bytes((0xFF,)),
        head(iot, b"339901") + b"\xff\xfe" + orjson.dumps(body())[:40],
    ]


def main() -> None:
    CORPUS.mkdir(exist_ok=True)
    sim = CitySimulator(CFG, seed=11, start=START, malformed_share=0.3)
    events = sim.take(120)
    seeds: list[bytes] = []
    for i in range(0, len(events), 12):
        seeds.append(
            SEPARATOR.join(
                head(e.topic, e.key if e.key in KEYS else b"339901") + e.value
                for e in events[i : i + 12]
            )
        )
    bad = hostile()
    seeds += bad
    seeds.append(SEPARATOR.join(bad))
    seeds.append(SEPARATOR.join([seeds[0], bad[4], seeds[1]]))
    for seed in seeds:
        name = hashlib.sha1(seed).hexdigest()
        (CORPUS / name).write_bytes(seed)
    print(f"{len(seeds)} seeds in {CORPUS}")


if __name__ == "__main__":
    main()
