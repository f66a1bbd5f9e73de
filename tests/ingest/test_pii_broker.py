"""Personal data placed anywhere in a record never comes out: not on any topic the worker
writes, not in its log, not in its API's answers (property test on the real broker)."""

from __future__ import annotations

import contextlib
import itertools
import json
import re
import unicodedata
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from streams.core.messages import DEADLETTER_TOPIC, READINGS_TOPIC
from streams.sim.simulator import SimEvent
from tests.harness import ApiWorker, Produced, read_records, run, wait_for
from tests.ingest.test_deid import IDENTIFIERS
from tests.kafka.test_poison_broker import produce_all

pytestmark = pytest.mark.broker
DISTRICT = "339901"
IOT = "city.events.iot"
# where a generated identifier goes, and what the record then is
_SENT = itertools.count()
PLACES = (
    "event_id",
    "source",
    "attribute_key",
    "attribute_text",
    "attribute_number",
    "nested_attribute",
    "street",
    "district",
    "indicator",
    "unit",
    "extra_field",
    "message_key",
    "event_time",
    "garbage",
)


def record(place: str, written: str, bare: str, kind: str, n: int, at: datetime) -> SimEvent:
    body: dict[str, Any] = {
        "event_id": f"pm25-{n}",
        "source": "iot.pm25.339901001.01",
        "district": DISTRICT,
        "street": "339901001",
        "indicator": "iot.pm25",
        "value": 30.0 + n % 7,
        "unit": "µg/m³",
        "event_time": at.isoformat(),
    }
    key = DISTRICT.encode()
    if place in ("event_id", "source", "street", "district", "indicator", "unit", "event_time"):
        body[place] = written
    elif place == "attribute_key":
        body["attributes"] = {written: "yes"}
    elif place == "attribute_text":
        body["attributes"] = {"note": f"市民{written}反映"}
    elif place == "attribute_number":
        digits = "".join(c for c in unicodedata.normalize("NFKC", bare) if c.isdigit())
        body["attributes"] = {"contact": int(digits) if kind == "phone" else written}
    elif place == "nested_attribute":
        body["attributes"] = {"a": {"b": [{"c": written}]}}
    elif place == "extra_field":
        body[written] = 1
    elif place == "message_key":
        key = written.encode()
    value = json.dumps(body, ensure_ascii=False).encode()
    if place == "garbage":
        value = f"not json {written} {{".encode()
    return SimEvent(IOT, key, value, at)


def leaks(text: str, secrets: list[tuple[str, str, str]]) -> list[tuple[str, str]]:
    """The secrets found in ``text``: as written, as their bare value, or either folded
    from full-width. Sealed blobs (base64) are left out: they are ciphertext."""
    text = _SEALED.sub("", text)
    wide = unicodedata.normalize("NFKC", text)
    found = []
    for kind, written, bare in secrets:
        forms = {written, bare, unicodedata.normalize("NFKC", written)}
        if any(f in text or f in wide for f in forms):
            found.append((kind, written))
    return found


_SEALED = re.compile(r"[A-Za-z0-9+/]{40,}={0,2}")


def every_output(bootstrap: str, app_id: str) -> str:
    """Every record of every topic the worker writes (the city's topics but the inputs,
    and its own changelogs), as text (keys and values)."""

    async def topics() -> list[str]:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            return [
                t
                for t in await admin.list_topics()
                if (t.startswith("city.") and not t.startswith("city.events."))
                or t.startswith(f"{app_id}-")
            ]
        finally:
            await admin.close()

    parts = []
    for topic in run(topics()):
        for r in run(read_records(bootstrap, topic, idle_s=0.5)):
            for raw in (r.key, r.value):
                if raw:
                    text = raw.decode("utf-8", "replace")
                    parts.append(text)
                    if raw[:1] in (b"{", b"["):
                        with contextlib.suppress(orjson.JSONDecodeError):  # \\u escapes
                            parts.append(json.dumps(orjson.loads(raw), ensure_ascii=False))
    return "\n".join(parts)


@settings(
    max_examples=6,
    deadline=None,
    derandomize=True,
    # each example is 200 records through the broker: shrinking one would take hours,
    # and the failure report lists the records and what leaked already
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
    ],
)
@given(placed=st.lists(st.tuples(st.sampled_from(PLACES), IDENTIFIERS), min_size=200, max_size=200))
def test_personal_data_in_any_field_reaches_no_topic_log_or_api_answer(
    api_worker: ApiWorker, placed: list[tuple[str, tuple[str, str, str]]]
) -> None:
    bootstrap = api_worker.bootstrap
    start = datetime.now(UTC) - timedelta(hours=1)
    events = []
    for place, (kind, written, bare) in placed:
        n = next(_SENT)  # event times go on rising across the examples
        events.append(record(place, written, bare, kind, n, start + timedelta(seconds=n)))
    produced: list[Produced] = run(produce_all(bootstrap, events))
    wanted = {(p.topic, p.partition, p.offset) for p in produced}

    def every_record_has_an_outcome() -> bool:
        seen = set()
        for topic in (READINGS_TOPIC, DEADLETTER_TOPIC):
            for r in run(read_records(bootstrap, topic, idle_s=0.5)):
                o = orjson.loads(r.value)["origin"]
                seen.add((o["topic"], o["partition"], o["offset"]))
        return wanted <= seen

    wait_for(every_record_has_an_outcome, 120, "a reading or a dead letter for every record")
    secrets = [(kind, written, bare) for _, (kind, written, bare) in placed]
    assert leaks(every_output(bootstrap, api_worker.worker.app_id), secrets) == []
    assert leaks(api_worker.worker.log_tail(100_000), secrets) == []
    answers = [
        api_worker.get(path, **params).text
        for path, params in (
            ("/api/v1/alerts", {"open": "false"}),
            ("/api/v1/districts", {}),
            ("/api/v1/audit", {}),
            ("/api/v1/catalogue", {}),
        )
    ]
    answers.append(httpx.get(f"{api_worker.url}/metrics", timeout=10).text)
    assert leaks("\n".join(answers), secrets) == []
