"""msgspec Structs derived from the pydantic messages, for the hot path's decoder.

:class:`~streams.core.messages.CityEvent` is the one definition of what
departments may send. msgspec decodes it in a quarter of pydantic's time, so the
worker decodes with :data:`FastEvent`, a Struct built from the model when this
module is imported: the same fields, types and constraints (lengths, bounds, an
aware time, no unknown fields), so a change to the model changes the fast path
with it. The Struct only ever accepts: whatever it refuses goes through the
model, which alone decides and words a rejection. A constraint the derivation
cannot carry over stops the import rather than let the fast path accept what
the model refuses.

An optional field of the Struct reads :data:`msgspec.UNSET` when the document
leaves it out and None when it is null (the model reads both as its default):
the duplicate-key count of :mod:`streams.ingest.decoding` needs to know which.
Both are falsy, so code reading either type tests optional fields by truth.
"""

from __future__ import annotations

import functools
import sys
import types
import typing
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, TypeAlias

import annotated_types
import msgspec
from pydantic import AwareDatetime, BaseModel, NaiveDatetime
from pydantic.fields import FieldInfo
from pydantic.types import AllowInfNan, Strict

from streams.core.messages import CityEvent

# pydantic's constraint -> msgspec.Meta's keyword of the same meaning
_BOUNDS: dict[type[annotated_types.BaseMetadata], str] = {
    annotated_types.MinLen: "min_length",
    annotated_types.MaxLen: "max_length",
    annotated_types.Ge: "ge",
    annotated_types.Gt: "gt",
    annotated_types.Le: "le",
    annotated_types.Lt: "lt",
    annotated_types.MultipleOf: "multiple_of",
}
_SCALARS = (str, float, int, bool, datetime, type(None))
# a float that may be neither NaN nor infinite is one within the largest finite bounds
_FINITE = {"ge": -sys.float_info.max, "le": sys.float_info.max}


class UnsupportedField(TypeError):
    """A model field whose type or constraint has no msgspec equivalent here."""


def meta_of(constraints: list[Any], where: str) -> dict[str, Any]:
    """msgspec.Meta keywords for a field's pydantic constraints (its ``FieldInfo.metadata``)."""
    meta: dict[str, Any] = {}
    finite = False
    for c in constraints:
        if isinstance(c, FieldInfo):  # Annotated[T, Field(...)] inside a union
            meta.update(meta_of(c.metadata, where))
        elif type(c) in _BOUNDS:
            name = _BOUNDS[type(c)]
            meta[name] = getattr(c, name)
        elif isinstance(c, AllowInfNan):
            finite = finite or not c.allow_inf_nan
        elif isinstance(c, Strict):
            pass  # msgspec never coerces: it is as strict as any model
        else:
            raise UnsupportedField(f"{where}: no msgspec equivalent for constraint {c!r}")
    if finite:
        if "ge" not in meta and "gt" not in meta:
            meta["ge"] = _FINITE["ge"]
        if "le" not in meta and "lt" not in meta:
            meta["le"] = _FINITE["le"]
    return meta


def type_of(annotation: Any, constraints: list[Any], where: str) -> Any:
    """The msgspec type of one annotation with its constraints."""
    if typing.get_origin(annotation) is Annotated:
        inner, *extra = typing.get_args(annotation)
        return type_of(inner, [*constraints, *extra], where)
    meta = meta_of(constraints, where)
    if annotation is AwareDatetime or annotation is NaiveDatetime:
        meta["tz"] = annotation is AwareDatetime
        annotation = datetime
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        if meta:
            raise UnsupportedField(f"{where}: constraints on a whole union")
        args = tuple(type_of(a, [], where) for a in typing.get_args(annotation))
        return typing.Union[args]  # noqa: UP007 - built from a tuple of types
    if origin in (dict, list):
        args = tuple(type_of(a, [], where) for a in typing.get_args(annotation))
        built = origin[args]
    elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
        built = struct_of(annotation)
    elif annotation is Any or annotation in _SCALARS:
        built = annotation
    else:
        raise UnsupportedField(f"{where}: no msgspec type for {annotation!r}")
    return Annotated[built, msgspec.Meta(**meta)] if meta else built


def _empty_default(field: FieldInfo) -> bool:
    """Whether an optional field's default is None or an empty container, which read
    the same as UNSET (falsy) where the Struct is read."""
    if field.default_factory is not None:
        return not field.default_factory()  # type: ignore[call-arg]
    return field.default is None


@functools.cache  # one Struct per model, however many fields hold it
def struct_of(model: type[BaseModel]) -> type[msgspec.Struct]:
    """A msgspec Struct with ``model``'s fields, types and constraints, in its order."""
    fields: list[tuple[str, Any] | tuple[str, Any, Any]] = []
    for name, field in model.model_fields.items():
        where = f"{model.__name__}.{name}"
        if field.alias not in (None, name):
            raise UnsupportedField(f"{where}: an alias")
        kind = type_of(field.annotation, field.metadata, where)
        if field.is_required():
            fields.append((name, kind))
        elif _empty_default(field):
            fields.append((name, kind | msgspec.UnsetType, msgspec.UNSET))
        else:
            raise UnsupportedField(f"{where}: a default other than None or empty")
    config = model.model_config
    if config.get("extra") != "forbid":
        raise UnsupportedField(f"{model.__name__}: unknown fields are not forbidden")
    return msgspec.defstruct(
        f"Fast{model.__name__}",
        fields,
        module=__name__,
        kw_only=True,  # optional fields may come before required ones, as in the model
        forbid_unknown_fields=True,
        frozen=bool(config.get("frozen")),
    )


if TYPE_CHECKING:
    # to a type checker the Struct reads as the model it is built from: the same fields
    # and value types (an optional field's UNSET reads as its falsy default)
    FastEvent: TypeAlias = CityEvent
else:
    FastEvent = struct_of(CityEvent)
