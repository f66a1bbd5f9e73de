"""The JSON Schemas of docs/schemas/: up to date, and true of the messages on the topics."""

from __future__ import annotations

import contextlib
import json
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jsonschema
import orjson
import pytest
from typer.testing import CliRunner

from streams.cli import SCHEMAS_DIR, cli
from streams.core.messages import (
    ACTIONS_TOPIC,
    ALERTS_TOPIC,
    TOPIC_MESSAGES,
    AlertAction,
    AlertActionType,
    json_schemas,
)
from streams.kafka.feed import InputRecord, key_partition
from streams.sim.simulator import CitySimulator
from tests.api.test_auth import alert
from tests.fuzz.batch import CFG, Harness


def validator(topic: str) -> jsonschema.Draft202012Validator:
    schema = json.loads((SCHEMAS_DIR / f"{topic}.schema.json").read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())


def test_the_published_schemas_are_the_ones_the_code_gives() -> None:
    files = {p.name: json.loads(p.read_text("utf-8")) for p in SCHEMAS_DIR.glob("*.json")}
    assert files == json_schemas(), "docs/schemas is out of date: run `cityvitals schemas`"
    assert {name.removesuffix(".schema.json") for name in files} == set(TOPIC_MESSAGES)


def test_the_command_writes_them_and_removes_a_stale_one(tmp_path: Path) -> None:
    (tmp_path / "city.gone.schema.json").write_text("{}", encoding="utf-8")
    result = CliRunner().invoke(cli, ["schemas", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    written = {p.name: json.loads(p.read_text("utf-8")) for p in tmp_path.iterdir()}
    assert written == json_schemas()


@pytest.fixture(scope="module")
def outputs() -> dict[str, Any]:
    """What the worker's handler writes for an hour of the simulated city, with a few
    malformed events among them, by topic; and the events it read."""
    start = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)
    sim = CitySimulator(CFG, seed=3, start=start, malformed_share=0.02, appeals=True)
    harness = Harness()
    records = [
        InputRecord(ev.topic, key_partition(ev.key, 4) if ev.key else 0, i, ev.key, ev.value)
        for i, ev in enumerate(sim.events(timedelta(hours=1)))
    ]
    for i in range(0, len(records), 500):
        harness.loop.run_until_complete(harness.processor.process_batch(records[i : i + 500]))
    by_topic: dict[str, Any] = defaultdict(list)
    for topic, _, value in harness.sent:
        if not topic.endswith("-changelog"):
            by_topic[topic].append(orjson.loads(value))
    events: dict[str, list[tuple[int, Any]]] = defaultdict(list)
    for record in records:
        # a malformed event that is not even JSON: no schema to hold it to
        with contextlib.suppress(orjson.JSONDecodeError):
            events[record.topic].append((record.offset, orjson.loads(record.value or b"")))
    by_topic["events"] = events
    return by_topic


def test_what_the_worker_writes_fits_the_schemas(outputs: dict[str, Any]) -> None:
    written = {t: docs for t, docs in outputs.items() if t != "events"}
    assert {"city.readings", "city.deadletter", "city.vitals"} <= set(written)
    for topic, docs in written.items():
        check = validator(topic)
        for doc in docs:
            errors = [e.message for e in check.iter_errors(doc)]
            assert not errors, f"{topic}: {errors[:3]} in {str(doc)[:300]}"


def test_the_input_schemas_accept_what_the_worker_accepts_and_refuse_bad_shapes(
    outputs: dict[str, Any],
) -> None:
    """An event the worker made a reading of fits its topic's schema; one it refused
    for its shape (a missing or unknown field, a wrong type) does not. (Range, unit,
    district and time are the catalogue's and the clock's checks, not the schema's.)"""
    read = {d["origin"]["offset"] for d in outputs["city.readings"]}
    shape = {
        d["origin"]["offset"]
        for d in outputs["city.deadletter"]
        if d["reason"] in ("schema", "wrong_type")
    }
    assert read and shape, "the hour gave no reading or no badly shaped event"
    seen_read = seen_shape = 0
    for topic, events in outputs["events"].items():
        check = validator(topic)
        for offset, doc in events:
            if offset in read:
                seen_read += 1
                errors = [e.message for e in check.iter_errors(doc)]
                assert not errors, f"{topic}: the worker read {doc}, the schema says {errors}"
            elif offset in shape:
                seen_shape += 1
                assert not check.is_valid(doc), f"{topic}: the worker refused {doc}"
    assert seen_read == len(read) and seen_shape > 0


def test_alerts_and_actions_fit_their_schemas() -> None:
    event = orjson.loads(alert().to_json())
    assert validator(ALERTS_TOPIC).is_valid(event)
    assert not validator(ALERTS_TOPIC).is_valid({**event, "grade": 7})
    action = AlertAction(
        action_id="a1",
        alert_id=event["alert_id"],
        district="339901",
        action=AlertActionType.ACKNOWLEDGE,
        actor="op1",
        role="operator",
        at=datetime(2026, 11, 24, 8, 0, tzinfo=UTC),
    )
    check = validator(ACTIONS_TOPIC)
    assert check.is_valid(orjson.loads(action.to_json()))
    assert not check.is_valid({**orjson.loads(action.to_json()), "action": "delete"})
