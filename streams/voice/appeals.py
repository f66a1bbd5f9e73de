"""The appeal, and the catalogue of channels and categories it is read against.

An :class:`Appeal` is one citizen's appeal from any channel (the 12345 hotline, the
mayor's mailbox, the message board, good/bad ratings of a government service, WeChat),
in one shape: de-identified text, a category of the city's catalogue and the department
that owns it. ``config/appeals.yaml`` names the channels (each with the adapter function
that reads its payloads, :mod:`streams.voice.channels`), the categories with their owning
and co-handling departments (which must be departments of ``config/indicators.yaml``),
and the span within which a second appeal about one place and category is a repeat.
Anything wrong in it stops start-up with a :class:`~streams.core.config.ConfigError`
naming the file, the line, the key path and the reason, e.g.::

    config/appeals.yaml:48: categories.noise.department: unknown department 'noise_office'; ...

An appeal that does not fit raises :class:`AppealRejected`, naming the field and a
reason worded as the dead letters' (``schema``, ``wrong_type``, ``too_large``,
``unknown_district``, ``unknown_street``), plus the two only appeals have
(``unknown_channel``, ``unknown_category``).

:class:`Appeal` is a pydantic model, as the config files' models are, and whatever
reads an appeal (tests, tools, ``Appeal.model_validate_json``) validates it. The
worker's intake alone builds its appeals without pydantic's validation when checks
written here vouch for every field (:meth:`AppealsConfig.appeal_of`,
:func:`_checked_appeal`): the config's codes once per config, the rest per appeal.
Measured with timeit, 100,000 appeals on the shared 2-core machine: validation 2.4 µs
an appeal, ``model_construct`` 3.9, the checks and the build together about 1.5. A
msgspec Struct of the same fields builds in 0.1 µs against this build's 0.8, but is not
an :class:`Appeal`: the 0.7 µs keep one type of appeal for the intake, the readings and
the tests. An appeal the checks do not vouch for (too long a text, a lone surrogate, a
time without a zone, a config built by hand with codes pydantic refuses) is validated,
so its dead letter names what pydantic finds; a property test holds the two ways equal,
field by field and byte by byte.

:class:`AppealDraft`, which an adapter builds for every appeal and which only the intake
reads, is a frozen msgspec Struct: 0.1 µs a draft against 1.3 as a frozen dataclass
(timeit, 100,000 drafts of eight fields, each of which the dataclass sets through
``object.__setattr__``).
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar
from zoneinfo import ZoneInfo

import msgspec
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from streams.core.config import (
    CityConfig,
    Code,
    ConfigError,
    Named,
    format_path,
    load_model,
    nearest_line,
)
from streams.core.messages import DeadLetterReason

#: The version of :class:`Appeal` this code writes and reads.
APPEAL_VERSION: Literal[1] = 1
#: An appeal's text beyond this many characters is refused (``too_large``): a long
#: mailbox letter is about 3,000.
MAX_TEXT_CHARS = 8000
#: How a citizen rated a service, on the channels that rate one.
Rating = Literal["good", "bad"]


class AppealReason(StrEnum):
    """Why an appeal was refused; the dead letters' words where they fit."""

    SCHEMA = DeadLetterReason.SCHEMA.value  # a field missing, unknown, or not as it must be
    WRONG_TYPE = DeadLetterReason.WRONG_TYPE.value
    TOO_LARGE = DeadLetterReason.TOO_LARGE.value
    UNKNOWN_DISTRICT = DeadLetterReason.UNKNOWN_DISTRICT.value
    UNKNOWN_STREET = DeadLetterReason.UNKNOWN_STREET.value
    UNPROCESSABLE = DeadLetterReason.UNPROCESSABLE.value  # an adapter failed unforeseen
    UNKNOWN_CHANNEL = "unknown_channel"
    UNKNOWN_CATEGORY = "unknown_category"


class AppealRejected(Exception):
    """An appeal (or a channel payload) that does not fit: which field, and why.

    ``detail`` may quote the payload: whoever publishes it scrubs it first, as the
    ingest scrubs dead-letter details.
    """

    def __init__(self, reason: AppealReason, field: str, detail: str) -> None:
        self.reason, self.field, self.detail = reason, field, detail
        super().__init__(f"{reason}: {field}: {detail}")


class Appeal(BaseModel):
    """One citizen's appeal, from any channel, de-identified and categorised.

    Example::

        {"version": 1, "channel": "hotline_12345", "appeal_id": "hotline_12345:GD2026112400123",
         "category": "noise", "district": "339901", "street": "339901001",
         "event_time": "2026-11-24T23:15:03+08:00",
         "text": "工地晚上十一点以后还在施工，我叫<name:1c23889e80>，电话<phone:3c241b959a>",
         "department": "environment", "co_departments": ["public_security"]}

    ``appeal_id`` is the channel's own id behind the channel's code, so ids of two
    channels never collide. ``rating`` is set only by channels that rate a service
    (``rating: required`` in ``config/appeals.yaml``). ``repeat_of`` is the id of the
    first appeal of a run about the same place (district and street) and category,
    when this one falls within the configured span of it.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    version: Literal[1] = APPEAL_VERSION
    channel: Code
    appeal_id: Annotated[str, Field(min_length=1, max_length=200)]
    category: Code
    district: Code
    street: Code | None = None
    event_time: AwareDatetime
    text: Annotated[str, Field(min_length=1, max_length=MAX_TEXT_CHARS)]
    rating: Rating | None = None
    repeat_of: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    department: Code
    co_departments: tuple[Code, ...] = ()

    def to_json(self) -> bytes:
        return self.__pydantic_serializer__.to_json(self, exclude_none=True)


class AppealDraft(msgspec.Struct, frozen=True):
    """What an adapter reads from a channel's payload, in the channel's own words: the
    category as the channel names it, the text as the citizen wrote it. The intake
    (:class:`streams.voice.channels.AppealIntake`) de-identifies it and resolves it
    against the catalogue, so no adapter can forget either. (A frozen msgspec Struct,
    for its cost: see the module's doc.)"""

    appeal_id: str
    category: str
    district: str
    street: str | None
    event_time: datetime
    text: str
    rating: Rating | None = None
    #: what the payload's own contact fields say about the citizen, as (kind, value):
    #: ("name", caller's name), ("phone", ...), ("email", ...), ("address", ...),
    #: ("id", ...); never copied, and replaced wherever the text repeats them, which
    #: finds a name that pattern matching cannot (one written without a cue)
    personal: tuple[tuple[str, str], ...] = ()


# --- configuration ---------------------------------------------------------------------


class ChannelSettings(BaseModel):
    """A channel's ``settings`` when its adapter declares none: there must be none."""

    model_config = ConfigDict(extra="forbid", frozen=True)


S = TypeVar("S", bound=ChannelSettings)
Adapter = Callable[[Mapping[str, Any], "ChannelContext"], AppealDraft]
A = TypeVar("A", bound=Adapter)


def adapter(settings: type[ChannelSettings]) -> Callable[[A], A]:
    """Declare the settings model of an adapter function, so a channel's ``settings`` are
    checked when the config is loaded (file, line and key), not when a payload arrives."""

    def declare(fn: A) -> A:
        fn.settings_model = settings  # type: ignore[attr-defined]
        return fn

    return declare


class _ChannelEntry(Named):
    adapter: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+$")
    rating: Literal["required", "forbidden"] = "forbidden"
    settings: dict[str, Any] = Field(default_factory=dict)


class _CategoryEntry(Named):
    department: Code
    co_departments: tuple[Code, ...] = ()
    aliases: tuple[str, ...] = ()


class _AppealsFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    version: Literal[1]
    repeat_span_h: float = Field(gt=0, le=24 * 90)
    channels: dict[Code, _ChannelEntry] = Field(min_length=1)
    categories: dict[Code, _CategoryEntry] = Field(min_length=1)


@dataclass(frozen=True)
class Channel:
    """A channel as loaded: its adapter resolved and its settings checked."""

    code: str
    name_zh: str
    name_en: str
    adapter: Adapter
    rating: Literal["required", "forbidden"]
    settings: ChannelSettings

    def settings_as(self, model: type[S]) -> S:
        """The settings, as the model the adapter declared (for the adapter's own typing)."""
        if not isinstance(self.settings, model):
            raise TypeError(f"channel {self.code!r} settings are not {model.__name__}")
        return self.settings


@dataclass(frozen=True)
class ChannelContext:
    """What an adapter is given besides the payload: its channel and the city."""

    channel: Channel
    appeals: AppealsConfig

    @cached_property
    def timezone(self) -> ZoneInfo:
        """The city's time zone, for channels that send local times without one (the
        intake keeps each channel's context, so it is looked up once)."""
        return ZoneInfo(self.appeals.city.city.city.timezone)


@dataclass(frozen=True)
class Category:
    code: str
    name_zh: str
    name_en: str
    department: str
    co_departments: tuple[str, ...]
    aliases: tuple[str, ...]


def _label(text: str) -> str:
    """How a category name is compared: spaces around it and ASCII case do not count."""
    return text.strip().casefold()


@dataclass(frozen=True)
class AppealsConfig:
    """``config/appeals.yaml``, cross-checked against the city's config."""

    channels: Mapping[str, Channel]
    categories: Mapping[str, Category]
    repeat_span: timedelta
    city: CityConfig
    file: Path

    @cached_property
    def _by_label(self) -> dict[str, Category]:
        return {
            _label(label): c
            for c in self.categories.values()
            for label in (c.code, c.name_zh, c.name_en, *c.aliases)
        }

    def category(self, name: str) -> Category:
        """The category a channel's wording names: its code, either label or an alias."""
        found = self._by_label.get(_label(name))
        if found is None:
            raise AppealRejected(
                AppealReason.UNKNOWN_CATEGORY,
                "category",
                f"'{name}' is not a category of the catalogue or an alias of one",
            )
        return found

    def appeal(self, channel: Channel, draft: AppealDraft) -> Appeal:
        """The appeal ``draft`` of ``channel`` makes: its category resolved to the
        catalogue's and the department with it, checked against the city and the
        channel's rating rule. The draft's text and id must already be de-identified."""
        return self.appeal_of(
            channel,
            draft.appeal_id,
            draft.category,
            draft.district,
            draft.street,
            draft.event_time,
            draft.text,
            draft.rating,
        )

    def appeal_of(
        self,
        channel: Channel,
        appeal_id: str,
        category: str,
        district: str,
        street: str | None,
        event_time: datetime,
        text: str,
        rating: Rating | None,
    ) -> Appeal:
        """:meth:`appeal` for a draft's fields given one by one (the intake's, which
        de-identifies the text and id, so need not build a second draft)."""
        found = self.category(category)
        if district not in self.city.districts:
            raise AppealRejected(
                AppealReason.UNKNOWN_DISTRICT, "district", f"'{district}' is not in the city"
            )
        if street is not None and self.city.city.street_district.get(street) != district:
            raise AppealRejected(
                AppealReason.UNKNOWN_STREET,
                "street",
                f"'{street}' is not a street of district '{district}'",
            )
        if (rating is None) == (channel.rating == "required"):
            said = "needs a rating" if rating is None else "takes no rating"
            raise AppealRejected(AppealReason.SCHEMA, "rating", f"channel {channel.code} {said}")
        appeal_id = f"{channel.code}:{appeal_id}"
        if (
            self._codes_are_codes
            and self.channels.get(channel.code) is channel
            and type(district) is str
            and (street is None or type(street) is str)
            and type(text) is str
            and 0 < len(text) <= MAX_TEXT_CHARS
            and len(appeal_id) <= _MAX_ID_CHARS
            and type(event_time) is datetime
            and event_time.utcoffset() is not None
            and (rating is None or (type(rating) is str and rating in _RATINGS))
            and _SURROGATE.search(text) is None
            and _SURROGATE.search(appeal_id) is None
        ):
            return _checked_appeal(
                {
                    "version": APPEAL_VERSION,
                    "channel": channel.code,
                    "appeal_id": appeal_id,
                    "category": found.code,
                    "district": district,
                    "street": street,
                    "event_time": event_time,
                    "text": text,
                    "rating": rating,
                    "repeat_of": None,
                    "department": found.department,
                    "co_departments": found.co_departments,
                }
            )
        try:
            return Appeal(
                channel=channel.code,
                appeal_id=appeal_id,
                category=found.code,
                district=district,
                street=street,
                event_time=event_time,
                text=text,
                rating=rating,
                department=found.department,
                co_departments=found.co_departments,
            )
        except ValidationError as exc:
            raise _rejected(exc) from None

    @cached_property
    def _codes_are_codes(self) -> bool:
        """Whether every code of this config that an appeal may hold (channels,
        categories, departments, districts, streets) is one :class:`Appeal` takes as it
        is: then an appeal's codes need no checking (:func:`_checked_appeal`)."""
        cats = self.categories.values()
        if not all(type(c.co_departments) is tuple for c in cats):
            return False
        codes = [
            *(c.code for c in self.channels.values()),
            *(code for c in cats for code in (c.code, c.department, *c.co_departments)),
            *self.city.districts,
            *self.city.city.street_district,
        ]
        return all(type(c) is str and _CODE.fullmatch(c) is not None for c in codes)


_TYPE_ERRORS = ("_type", "_parsing")
#: What :data:`~streams.core.config.Code` accepts (pydantic's ``$`` is the text's end).
_CODE = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
_MAX_ID_CHARS = 200
_RATINGS = ("good", "bad")
#: pydantic refuses a string holding a lone surrogate (``string_unicode``)
_SURROGATE = re.compile("[\ud800-\udfff]")
#: the fields :meth:`AppealsConfig.appeal_of` gives an appeal (the others keep defaults)
_APPEAL_GIVEN = frozenset(Appeal.model_fields) - {"version", "repeat_of"}
_new = object.__new__
_set = object.__setattr__


def _checked_appeal(fields: dict[str, Any]) -> Appeal:
    """The :class:`Appeal` of ``fields``, which the caller has checked to be what
    validation accepts and keeps as they are (all of :class:`Appeal`'s fields, in its
    order): set as :meth:`~pydantic.BaseModel.model_construct` sets them, with the
    fields set that validation records, so it equals the validated appeal in every way.

    Why not validation: pydantic's is 2.4 µs of an appeal (strict, ten fields, the
    codes' patterns) and ``model_construct`` 3.9 µs, where the checks the intake's
    appeals need (every code comes from the config and is checked once,
    :attr:`AppealsConfig._codes_are_codes`) and this take about 1.5 µs (timeit, 100,000
    appeals). Anything the checks do not vouch for is validated by pydantic, whose
    errors are the appeal's dead letters; the tests hold the two ways equal.
    """
    appeal = _new(Appeal)
    _set(appeal, "__dict__", fields)
    _set(appeal, "__pydantic_fields_set__", set(_APPEAL_GIVEN))
    _set(appeal, "__pydantic_extra__", None)
    _set(appeal, "__pydantic_private__", None)
    return appeal


def _rejected(exc: ValidationError) -> AppealRejected:
    err = exc.errors(include_url=False)[0]
    field, kind = format_path(err["loc"]) or "(appeal)", err["type"]
    if kind == "string_too_long":
        return AppealRejected(AppealReason.TOO_LARGE, field, err["msg"])
    if kind.endswith(_TYPE_ERRORS):
        return AppealRejected(AppealReason.WRONG_TYPE, field, err["msg"])
    return AppealRejected(AppealReason.SCHEMA, field, err["msg"])


# --- loading ---------------------------------------------------------------------------

_Fail = Callable[[tuple[str | int, ...], str], ConfigError]


def load_appeals(cfg: CityConfig, file: Path | str | None = None) -> AppealsConfig:
    """Load ``appeals.yaml`` (by default from the city's config directory) and check it
    against the city's departments; every adapter is imported and its settings checked."""
    path = Path(file) if file is not None else cfg.directory / "appeals.yaml"
    data, lines = load_model(path, _AppealsFile)

    def fail(loc: tuple[str | int, ...], reason: str) -> ConfigError:
        return ConfigError(path, format_path(loc), reason, nearest_line(lines, loc))

    seen: dict[str, str] = {}  # every label of every category -> the category
    categories = {
        code: _category(code, entry, set(cfg.catalogue.departments), seen, fail)
        for code, entry in data.categories.items()
    }
    channels = {code: _channel(code, entry, fail) for code, entry in data.channels.items()}
    return AppealsConfig(
        channels=channels,
        categories=categories,
        repeat_span=timedelta(hours=data.repeat_span_h),
        city=cfg,
        file=path,
    )


def _category(
    code: str, entry: _CategoryEntry, departments: set[str], seen: dict[str, str], fail: _Fail
) -> Category:
    """One category, its departments known to the city and its labels its own."""
    owners: list[tuple[tuple[str | int, ...], str]] = [(("department",), entry.department)]
    owners += [(("co_departments", i), dep) for i, dep in enumerate(entry.co_departments)]
    for where, dep in owners:
        if dep not in departments:
            raise fail(
                ("categories", code, *where),
                f"unknown department '{dep}'; known: {sorted(departments)}",
            )
    labels: list[tuple[tuple[str | int, ...], str]] = [
        ((), code),
        (("name_zh",), entry.name_zh),
        (("name_en",), entry.name_en),
    ]
    labels += [(("aliases", i), alias) for i, alias in enumerate(entry.aliases)]
    for where, label in labels:
        other = seen.setdefault(_label(label), code)
        if other != code:
            raise fail(("categories", code, *where), f"'{label}' already names category '{other}'")
    return Category(
        code, entry.name_zh, entry.name_en, entry.department, entry.co_departments, entry.aliases
    )


def _channel(code: str, entry: _ChannelEntry, fail: _Fail) -> Channel:
    """One channel, its adapter imported by its dotted path and its settings checked
    against the model the adapter declares (:func:`adapter`)."""
    where = ("channels", code, "adapter")
    module_name, _, name = entry.adapter.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise fail(where, f"cannot import module '{module_name}': {exc}") from None
    fn = getattr(module, name, None)
    if not callable(fn):
        raise fail(where, f"module '{module_name}' has no function '{name}'")
    model: type[ChannelSettings] = getattr(fn, "settings_model", ChannelSettings)
    try:
        settings = model.model_validate(entry.settings)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        reason = err["msg"].removeprefix("Value error, ")
        raise fail(("channels", code, "settings", *err["loc"]), reason) from None
    return Channel(code, entry.name_zh, entry.name_en, fn, entry.rating, settings)
