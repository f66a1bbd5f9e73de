"""The hot path's msgspec Struct is derived from CityEvent: every field and constraint of
the model is in it, it decodes as the model does, and a change to the model changes it."""

from __future__ import annotations

import json
import typing
from datetime import datetime
from typing import Annotated, Any

import msgspec
import pytest
from annotated_types import BaseMetadata
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError
from pydantic.fields import FieldInfo

from streams.core.messages import CityEvent, Location
from streams.ingest.decoding import _quote_counter, _quote_plan, _quotes_if_unique
from streams.ingest.structs import FastEvent, UnsupportedField, struct_of

# pydantic's constraint attribute -> the msgspec type info attribute that carries it
SAME_NAME = ("min_length", "max_length", "ge", "gt", "le", "lt", "multiple_of")


def constraints(annotation: Any, metadata: list[Any]) -> dict[str, Any]:
    """Every length and bound pydantic holds for a field, wherever in its type it sits."""
    found: dict[str, Any] = {}
    for item in metadata:
        inner = item.metadata if isinstance(item, FieldInfo) else [item]
        for c in inner:
            if isinstance(c, BaseMetadata):
                found.update({k: getattr(c, k) for k in SAME_NAME if hasattr(c, k)})
    for arg in typing.get_args(annotation):
        if typing.get_origin(arg) is Annotated:
            found.update(constraints(arg, list(arg.__metadata__)))
    return found


def quotes_inside(value: Any) -> int:
    """Quote characters inside the keys and strings of a JSON value (written escaped)."""
    if isinstance(value, str):
        return value.count('"')
    if isinstance(value, dict):
        return sum(quotes_inside(k) + quotes_inside(v) for k, v in value.items())
    if isinstance(value, list):
        return sum(quotes_inside(v) for v in value)
    return 0


def without_null(kind: msgspec.inspect.Type) -> msgspec.inspect.Type:
    if isinstance(kind, msgspec.inspect.UnionType):
        (only,) = [k for k in kind.types if not isinstance(k, msgspec.inspect.NoneType)]
        return only
    return kind


@pytest.mark.parametrize("model", [CityEvent, Location])
def test_every_field_and_constraint_of_the_model_is_in_the_struct(
    model: type[BaseModel],
) -> None:
    info = msgspec.inspect.type_info(struct_of(model))
    assert isinstance(info, msgspec.inspect.StructType)
    assert info.forbid_unknown_fields
    fields = {f.name: f for f in info.fields}
    assert list(fields) == list(model.model_fields)
    for name, field in model.model_fields.items():
        derived = fields[name]
        assert derived.required == field.is_required(), name
        if not field.is_required():  # absent reads UNSET, so a count can tell it from null
            assert msgspec.structs.fields(struct_of(model))[list(fields).index(name)].default is (
                msgspec.UNSET
            )
        kind = without_null(derived.type)
        for constraint, value in constraints(field.annotation, field.metadata).items():
            assert getattr(kind, constraint) == value, (name, constraint)


def test_the_event_time_must_carry_a_time_zone_and_the_value_be_finite() -> None:
    info = msgspec.inspect.type_info(FastEvent)
    assert isinstance(info, msgspec.inspect.StructType)
    fields = {f.name: f.type for f in info.fields}
    assert fields["event_time"] == msgspec.inspect.DateTimeType(tz=True)
    value = fields["value"]
    assert isinstance(value, msgspec.inspect.FloatType)
    assert value.ge is not None and value.le is not None  # no infinity gets through
    assert isinstance(without_null(fields["location"]), msgspec.inspect.StructType)


class _Reading(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    code: Annotated[str, Field(min_length=2, max_length=4)]
    level: float = Field(gt=0, lt=10)
    at: AwareDatetime
    note: Annotated[str, Field(max_length=3)] | None = None
    tags: list[str] = Field(default_factory=list)
    where: Location | None = None


def test_a_change_to_a_model_is_a_change_to_its_struct() -> None:
    decoder = msgspec.json.Decoder(struct_of(_Reading))
    ok = decoder.decode(b'{"code":"ab","level":5,"at":"2026-11-24T07:59:30Z","tags":["x"]}')
    assert (ok.code, ok.level, ok.tags, ok.note) == ("ab", 5.0, ["x"], msgspec.UNSET)
    for wrong in (
        b'{"code":"abcde","level":5,"at":"2026-11-24T07:59:30Z"}',  # max_length
        b'{"code":"ab","level":10,"at":"2026-11-24T07:59:30Z"}',  # lt
        b'{"code":"ab","level":5,"at":"2026-11-24T07:59:30"}',  # no time zone
        b'{"code":"ab","level":5,"at":"2026-11-24T07:59:30Z","note":"long"}',  # in a union
        b'{"code":"ab","level":5,"at":"2026-11-24T07:59:30Z","more":1}',  # unknown field
    ):
        with pytest.raises(msgspec.ValidationError):
            decoder.decode(wrong)
        with pytest.raises(ValidationError):
            _Reading.model_validate_json(wrong)


class _Pattern(BaseModel):
    model_config = ConfigDict(extra="forbid")
    code: str = Field(pattern="^[0-9]+$")


class _Lax(BaseModel):
    code: str


class _Default(BaseModel):
    model_config = ConfigDict(extra="forbid")
    level: float = 1.0


@pytest.mark.parametrize("model", [_Pattern, _Lax, _Default])
def test_a_model_the_struct_cannot_follow_stops_the_derivation(model: type[BaseModel]) -> None:
    # rather than a fast path that accepts what the model refuses, or reads another default
    with pytest.raises(UnsupportedField):
        struct_of(model)


def test_the_duplicate_key_count_knows_every_optional_field_of_the_event() -> None:
    info = msgspec.inspect.type_info(FastEvent)
    assert isinstance(info, msgspec.inspect.StructType)
    # seven keys of fixed shape, six of them with string values; street and location
    # of fixed shape when present; attributes counted per record
    assert _quote_plan(info) == (26, (("street", 4), ("location", 6), ("attributes", None)))


def documents(model: type[BaseModel]) -> st.SearchStrategy[dict[str, Any]]:
    text = st.text(alphabet='ab"\\é', min_size=2, max_size=3)
    return st.fixed_dictionaries(
        {"code": text, "level": st.floats(0.5, 9), "at": st.just("2026-11-24T07:59:30Z")},
        optional={
            "note": st.one_of(st.none(), st.text(alphabet='a"', max_size=3)),
            "tags": st.lists(text, max_size=3),
            "where": st.one_of(st.none(), st.just({"lat": 1.5, "lon": 2.5})),
        },
    )


@settings(max_examples=200, deadline=None)
@given(doc=documents(_Reading), repeat=st.sampled_from([None, "code", "level", "note", "where"]))
def test_the_quote_count_of_any_derived_struct_finds_a_repeated_key(
    doc: dict[str, Any], repeat: str | None
) -> None:
    struct = struct_of(_Reading)
    info = msgspec.inspect.type_info(struct)
    assert isinstance(info, msgspec.inspect.StructType)
    count = _quote_counter(*_quote_plan(info))
    raw = json.dumps(doc, ensure_ascii=False).encode()
    repeated = repeat in doc
    if repeat is not None and repeated:
        value = json.dumps(doc[repeat], ensure_ascii=False)
        raw = raw[:-1] + f', "{repeat}": {value}}}'.encode()
    decoded = msgspec.json.decode(raw, type=struct)
    # equal exactly when no key repeats and no string holds a quote (escaped, it counts)
    assert (raw.count(b'"') == count(decoded)) == (not repeated and not quotes_inside(doc))


@settings(max_examples=300, deadline=None)
@given(
    changes=st.dictionaries(
        st.sampled_from(list(CityEvent.model_fields)),
        st.one_of(
            st.none(),
            st.booleans(),
            st.integers(-(2**70), 2**70),
            st.floats(),
            st.text(max_size=3),
            st.just("x" * 257),
            st.sampled_from(["2026-11-24T07:59:30Z", "2026-11-24T07:59:30"]),
            st.dictionaries(st.sampled_from(["lat", "lon", "alt"]), st.floats(-200, 200)),
        ),
        max_size=3,
    )
)
def test_whatever_the_struct_decodes_the_model_decodes_to_the_same_event(
    changes: dict[str, Any],
) -> None:
    doc: dict[str, Any] = {
        "event_id": "a",
        "source": "s",
        "district": "339901",
        "indicator": "traffic.speed_kmh",
        "value": 1.5,
        "unit": "km/h",
        "event_time": "2026-11-24T07:59:30+08:00",
        **changes,
    }
    raw = json.dumps(doc).encode()
    try:
        fast = msgspec.json.decode(raw, type=FastEvent)
    except msgspec.DecodeError:
        return  # the model decides these
    slow = CityEvent.model_validate_json(raw)
    for name in CityEvent.model_fields:
        got = getattr(fast, name)
        want = getattr(slow, name)
        if got is msgspec.UNSET or got is None:
            assert not want, name
        elif name == "location":
            assert (got.lat, got.lon) == (want.lat, want.lon)
        else:
            assert got == want and type(got) is type(want), name
    assert isinstance(slow.event_time, datetime)
    assert _quotes_if_unique(fast) == raw.count(b'"') - quotes_inside(doc)
