"""The decode stage of ingest: a record's bytes -> a :class:`~streams.core.messages.CityEvent`.

:class:`EventDecoder` refuses, in this order, a record over ``max_event_bytes``
(``too_large``, before anything is parsed, so no parse costs more than that
size allows); one nesting deeper than ``max_depth`` (``too_deep``: the decoders
stop far deeper nesting themselves, and a walk with its own stack measures the
attributes, the only part that can nest); bytes that are not JSON matching the
model (``bad_json``, ``schema``, ``wrong_type``, ``not_finite``); and a JSON
object that names one key twice (``duplicate_key``).

msgspec decodes first, into the Struct derived from the model
(:mod:`streams.ingest.structs`); whatever it refuses goes through the model,
which alone decides and words a rejection.

Duplicate keys are found by counting, since JSON decoders keep the last of two
equal keys. Every key and string value of the document is delimited by two
quote characters, and the only other quotes are escaped ones inside strings.
So the quotes in the bytes are at least twice the keys and strings of the
decoded event (optional fields decode as absent or null, so their keys are
known too), and a key named twice, or an escaped quote, adds to them: when the
two numbers are equal no key can have been named twice. Only records where
they differ take the exact check, a decode that keeps every key. Counting
costs about 0.5 µs a record, the exact check about 8 µs.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import msgspec
from msgspec import UNSET
from pydantic import ValidationError

from streams.core.messages import CityEvent, DeadLetterReason
from streams.ingest.rejection import Rejected, quoted
from streams.ingest.structs import FastEvent, struct_of

_TYPE_ERRORS = ("_type", "_parsing", "model_attributes_type")

_FAST_DECODER = msgspec.json.Decoder(FastEvent)
# msgspec rounds a time's digits beyond the microsecond, the model truncates them:
# a document with a time of seven or more fractional digits goes the model's way
_SUB_MICRO = re.compile(rb":[0-9]{2}\.[0-9]{7}")


def _value_quotes(kind: msgspec.inspect.Type) -> int | None:
    """The quotes a value of this type always takes in JSON, None when they depend on
    the value. Counting too many would let a duplicate key through, too few only costs
    the exact check: only types that are always a JSON string count as strings."""
    if isinstance(kind, msgspec.inspect.StrType | msgspec.inspect.DateTimeType):
        return 2
    if isinstance(
        kind, msgspec.inspect.FloatType | msgspec.inspect.IntType | msgspec.inspect.BoolType
    ):
        return 0
    if isinstance(kind, msgspec.inspect.StructType):
        fixed, counted = _quote_plan(kind)
        return None if counted else fixed
    return None


def _quote_plan(
    info: msgspec.inspect.StructType,
) -> tuple[int, tuple[tuple[str, int | None], ...]]:
    """The quotes a Struct's fields of fixed shape always take, keys included, and the
    other fields, counted per record: each with the quotes of its key and value when
    the value is there and not null, None when those depend on the value."""
    fixed, counted = 0, []
    for field in info.fields:
        kinds = field.type.types if isinstance(field.type, msgspec.inspect.UnionType) else ()
        present = [k for k in kinds or (field.type,) if not isinstance(k, msgspec.inspect.NoneType)]
        value = _value_quotes(present[0]) if len(present) == 1 else None
        quotes = None if value is None else 2 + value
        if field.required and not kinds and quotes is not None:
            fixed += quotes
        else:
            counted.append((field.name, quotes))
    return fixed, tuple(counted)


_EVENT_INFO = msgspec.inspect.type_info(struct_of(CityEvent))
assert isinstance(_EVENT_INFO, msgspec.inspect.StructType)
_FIXED_QUOTES, _COUNTED_FIELDS = _quote_plan(_EVENT_INFO)


class _DuplicateKey(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            raise _DuplicateKey(key)
        seen.add(key)
    return dict(pairs)


def duplicate_key(value: bytes) -> str | None:
    """The first key named twice in one object of a valid JSON document, if any."""
    try:
        json.loads(value, object_pairs_hook=_no_duplicates)
    except _DuplicateKey as dup:
        return str(dup)
    except ValueError:  # the decoders disagree on the document: the model decides
        return None
    return None


def strings_in(value: Any) -> int:
    """Keys and string values in a decoded JSON value."""
    if isinstance(value, str):
        return 1
    if isinstance(value, dict):
        return len(value) + sum(strings_in(v) for v in value.values())
    if isinstance(value, list):
        return sum(strings_in(v) for v in value)
    if isinstance(value, msgspec.Struct):
        present = [v for v in msgspec.structs.astuple(value) if v is not UNSET]
        return len(present) + sum(strings_in(v) for v in present)
    return 0


def _quote_counter(
    fixed: int, counted: tuple[tuple[str, int | None], ...]
) -> Callable[[FastEvent], int]:
    """The quote characters a record holds if it names no key twice (module doc), from a
    plan of :func:`_quote_plan`."""

    def quotes_if_unique(event: FastEvent) -> int:
        quotes = fixed
        for name, present in counted:
            value = getattr(event, name)
            if value is not UNSET:
                # the field's key, and the value's quotes: fixed, or its keys and strings
                if value is None:
                    quotes += 2
                elif present is not None:
                    quotes += present
                else:
                    quotes += 2 + 2 * strings_in(value)
        return quotes

    return quotes_if_unique


_quotes_if_unique = _quote_counter(_FIXED_QUOTES, _COUNTED_FIELDS)


def nests_deeper(value: Any, limit: int) -> bool:
    """Whether a decoded JSON value nests more than ``limit`` objects and arrays deep
    (a walk with its own stack, which stops at the limit: no recursion to exhaust)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        children = item.values() if isinstance(item, dict) else item
        for child in children:
            if isinstance(child, dict | list):
                stack.append((child, depth + 1))
    return False


def _classify(exc: ValidationError) -> Rejected:
    err = exc.errors(include_url=False)[0]
    kind, loc = err["type"], ".".join(str(p) for p in err["loc"]) or "(document)"
    if "recursion limit" in str(err["msg"]):  # the parser's own guard against deep nesting
        return Rejected(
            DeadLetterReason.TOO_DEEP, "the record nests deeper than its JSON parser goes"
        )
    if kind in ("json_invalid", "json_type"):
        return Rejected(DeadLetterReason.BAD_JSON, f"not valid JSON: {err['msg']}")
    if kind == "finite_number":
        return Rejected(DeadLetterReason.NOT_FINITE, f"{loc}: NaN and infinity are not values")
    if kind == "model_type":
        return Rejected(DeadLetterReason.SCHEMA, "expected a JSON object")
    if kind.endswith(_TYPE_ERRORS):
        return Rejected(DeadLetterReason.WRONG_TYPE, f"{loc}: {err['msg']}")
    return Rejected(DeadLetterReason.SCHEMA, f"{loc}: {err['msg']}")


class EventDecoder:
    """Decodes records of at most ``max_event_bytes`` nesting at most ``max_depth`` deep."""

    def __init__(self, max_event_bytes: int, max_depth: int) -> None:
        self.max_event_bytes = max_event_bytes
        self.max_depth = max_depth

    def decode(self, value: bytes, *, fast: bool = True) -> CityEvent | FastEvent:
        """The event in ``value``, or raise :class:`Rejected` (stage decode).

        ``fast``: decode with msgspec first, falling back to the model for anything
        it does not take (``fast=False``: the model alone; both give the same result).
        """
        size = len(value)
        if size > self.max_event_bytes:
            raise Rejected(
                DeadLetterReason.TOO_LARGE,
                f"the record is {size} bytes; at most {self.max_event_bytes} are accepted",
            )
        event: CityEvent | FastEvent
        try:
            if not fast or _SUB_MICRO.search(value):
                raise msgspec.DecodeError
            event = _FAST_DECODER.decode(value)
        except (msgspec.DecodeError, RecursionError):
            try:
                event = CityEvent.model_validate_json(value)
            except ValidationError as exc:
                rejected = _classify(exc)
                if rejected.reason is DeadLetterReason.TOO_DEEP:
                    raise self._too_deep() from None
                raise rejected from None
            self._check_depth(event)
            duplicate = duplicate_key(value)
        else:
            if event.attributes:  # (inline: most events have none)
                self._check_depth(event)
            duplicate = None
            if value.count(b'"') != _quotes_if_unique(event):
                duplicate = duplicate_key(value)
        if duplicate is not None:
            raise Rejected(
                DeadLetterReason.DUPLICATE_KEY,
                f"key {quoted(duplicate)} appears twice in one object; which value counts is ambiguous",
            )
        return event

    def _check_depth(self, event: CityEvent | FastEvent) -> None:
        # the envelope is level 1 and its location level 2; only attributes nest further
        if event.attributes and nests_deeper(event.attributes, self.max_depth - 1):
            raise self._too_deep()

    def _too_deep(self) -> Rejected:
        return Rejected(
            DeadLetterReason.TOO_DEEP,
            f"the record nests deeper than {self.max_depth} levels of objects and arrays",
        )
