"""Table state documents: what a restore accepts, and what it refuses with which reason.

Whoever can write a record to a changelog topic must not be able to run code in the
worker: these tests hand the codec pickles and documents that name code, and check that
nothing runs and the refusal says why.
"""

from __future__ import annotations

import os
import pickle
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import IntEnum
from pathlib import Path
from typing import Any

import msgspec
import pytest
import zstandard
from pydantic import BaseModel, ConfigDict

import streams.core.state as state_module
from streams.core.state import MAGIC, MAX_DOCUMENT_BYTES, StateCodec, StateError, tagged, untagged


class Level(IntEnum):
    LOW = 1
    HIGH = 2


class Counter:
    """A class that is not a dataclass: restored from its annotated attributes."""

    total: float
    recent: deque[tuple[float, float]]

    def __init__(self) -> None:
        self.total = 0.0
        self.recent = deque(maxlen=3)

    def add(self, t: float, v: float) -> None:
        self.total += v
        self.recent.append((t, v))


@dataclass
class Value:
    name: str
    level: Level = Level.LOW
    at: datetime | None = None
    counters: dict[int, Counter] = field(default_factory=dict)
    pairs: list[tuple[str, int]] = field(default_factory=list)


@dataclass
class ValueNext(Value):
    """The same value in a later release: one field added, with its default."""

    added: int = 7


def codec(root: type = Value, version: int = 1, **kw: Any) -> StateCodec[Any]:
    return StateCodec("test-table", root, version, [Counter], **kw)


def sample() -> Value:
    value = Value("a", Level.HIGH, datetime(2026, 12, 3, 8, 0, tzinfo=UTC), pairs=[("x", 1)])
    for i in range(3):
        value.counters[i] = Counter()
        for t in range(5):
            value.counters[i].add(float(t), float(i * t))
    return value


def test_a_value_round_trips_with_its_types() -> None:
    back = codec().decode(codec().encode(sample()))
    assert back.name == "a" and back.level is Level.HIGH and back.at == sample().at
    assert back.pairs == [("x", 1)] and type(back.pairs[0]) is tuple
    assert list(back.counters) == [0, 1, 2]  # number keys stay numbers, in order
    restored = back.counters[2]
    assert type(restored) is Counter and restored.total == 20.0
    assert restored.recent == deque([(2.0, 4.0), (3.0, 6.0), (4.0, 8.0)], maxlen=3)
    assert restored.recent.maxlen == 3 and type(restored.recent[0]) is tuple


def test_state_written_before_a_field_was_added_restores_with_its_default() -> None:
    data = codec().encode(sample())
    later = codec(ValueNext).decode(data)
    assert later.added == 7 and later.counters[2].total == 20.0


def test_a_document_of_a_newer_release_stops_the_restore_naming_both_versions() -> None:
    data = codec(version=3).encode(sample())
    with pytest.raises(StateError) as err:
        codec(version=2).decode(data)
    assert "state version 3 was written by a newer release" in str(err.value)
    assert "reads versions up to 2" in str(err.value) and "test-table" in str(err.value)


def test_an_older_document_is_upgraded_step_by_step() -> None:
    data = codec(version=1).encode(sample())

    def rename(doc: dict[str, Any]) -> dict[str, Any]:
        doc["name"] = doc["name"].upper()
        return doc

    assert codec(version=2, upgrades={1: rename}).decode(data).name == "A"
    with pytest.raises(StateError, match="state version 1 cannot be upgraded to 2"):
        codec(version=2).decode(data)


def test_another_tables_document_is_refused() -> None:
    other = StateCodec("other-table", Value, 1, [Counter]).encode(sample())
    with pytest.raises(StateError, match="a state document of table 'other-table'"):
        codec().decode(other)


class Plant:
    """A pickle that would create a file when loaded."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.path}",))


def test_a_pickle_on_the_changelog_runs_nothing_and_says_how_to_convert(tmp_path: Path) -> None:
    planted = tmp_path / "planted"
    with pytest.raises(StateError) as err:
        codec().decode(pickle.dumps(Plant(planted)))
    assert "cityvitals migrate-state" in str(err.value)
    assert not planted.exists()


def envelope(body: Any, encoding: str = "") -> bytes:
    return msgspec.msgpack.encode((MAGIC, "test-table", 1, encoding, body))


@pytest.mark.parametrize(
    "name",
    ["os:system", "builtins:eval", "tests.core.test_state:_Plant", "subprocess:Popen"],
)
def test_a_document_naming_a_class_not_registered_is_refused(name: str) -> None:
    body = {"name": "a", "counters": {1: [name, {"total": 1.0}]}}
    with pytest.raises(StateError, match="is not a class of table test-table"):
        codec().decode(envelope(body))


@pytest.mark.parametrize("name", ["os:system", "builtins:eval", "subprocess:Popen"])
def test_a_river_tree_naming_code_outside_river_is_refused(name: str) -> None:
    for node in (
        ["o", 0, name, []],
        ["x", 0, name, ["t", []], None],
        ["c", name],
        ["D", ["c", name], []],
    ):
        with pytest.raises(StateError, match="not a class or function of the river library"):
            untagged(node)


def test_a_document_of_the_wrong_shape_names_the_field() -> None:
    body = {"name": "a", "counters": {1: ["tests.core.test_state:Counter", {"total": "x"}]}}
    with pytest.raises(StateError, match="Expected `float`"):
        codec().decode(envelope(body))
    with pytest.raises(StateError, match="lacks state fields"):
        codec().decode(
            envelope({"name": "a", "counters": {1: ["tests.core.test_state:Counter", {}]}})
        )


def test_a_compressed_body_that_claims_too_much_is_refused_before_expanding() -> None:
    bomb = zstandard.ZstdCompressor(level=19).compress(b"\0" * (MAX_DOCUMENT_BYTES + 1))
    assert len(bomb) < 64 * 1024
    with pytest.raises(StateError, match="more than the"):
        codec().decode(envelope(bomb, "zstd"))


def test_what_is_no_state_document_is_refused() -> None:
    for data in (b"", b"{}", msgspec.msgpack.encode(["other", "test-table", 1, "", {}])):
        with pytest.raises(StateError, match="not a cityvitals state document"):
            codec().decode(data)


def test_a_class_that_cannot_be_written_fails_the_write_naming_it() -> None:
    value = sample()
    value.counters[9] = lambda: None  # type: ignore[assignment]
    with pytest.raises(TypeError, match="cannot be written to table test-table"):
        codec().encode(value)


def test_river_trees_keep_tuples_sets_and_key_types() -> None:
    value = {(1, "a"): {2: [1.5, None]}, "s": {3, 4}, "f": frozenset({"x"}), "b": b"\x00"}
    back = untagged(msgspec.msgpack.decode(msgspec.msgpack.encode(tagged(value))))
    assert back == value and type(next(iter(back))) is tuple


class Note(BaseModel):
    """A frozen message model, as the alert book holds alert events."""

    model_config = ConfigDict(frozen=True)
    text: str
    at: datetime
    tags: list[str] = []


@dataclass
class Book:
    notes: dict[str, Note] = field(default_factory=dict)


def test_a_frozen_model_is_written_the_same_however_often_and_after_it_is_replaced(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The codec reuses a frozen model's packed fields in later documents: a document is
    still the same bytes a fresh codec writes, after the model is replaced by another of
    the same key, and when more models are written than it keeps."""
    monkeypatch.setattr(state_module, "PACKED_MODELS", 3)
    at = datetime(2026, 12, 3, 8, 0, tzinfo=UTC)
    book = Book({f"n{i}": Note(text=f"note {i}", at=at, tags=["a"]) for i in range(5)})
    kept = StateCodec("test-table", Book, 1, [Note])
    for i in range(5):
        assert kept.encode(book) == StateCodec("test-table", Book, 1, [Note]).encode(book)
        book.notes[f"n{i}"] = book.notes[f"n{i}"].model_copy(update={"text": f"changed {i}"})
        assert len(kept._packed) <= 3
    back = kept.decode(kept.encode(book))
    assert back.notes == book.notes
    assert [n.text for n in back.notes.values()] == [f"changed {i}" for i in range(5)]
