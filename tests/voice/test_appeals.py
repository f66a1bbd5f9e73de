"""The appeal message and config/appeals.yaml: one shape for every channel, a catalogue
whose departments are the city's, and config errors that say file, line, key and why."""

from __future__ import annotations

import dataclasses
import functools
import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from streams.core.config import DEFAULT_CONFIG_DIR, ConfigError, load_config
from streams.core.messages import DeadLetterReason
from streams.voice.appeals import (
    MAX_TEXT_CHARS,
    Appeal,
    AppealDraft,
    AppealReason,
    AppealRejected,
    AppealsConfig,
    load_appeals,
)
from tests.core.test_config import replace

CST = timezone(timedelta(hours=8))
WHEN = datetime(2026, 11, 24, 23, 15, 3, tzinfo=CST)


@pytest.fixture(scope="module")
def appeals() -> AppealsConfig:
    return load_appeals(load_config())


def draft(**changes: object) -> AppealDraft:
    fields: dict[str, object] = {
        "appeal_id": "GD2026112400123",
        "category": "噪声扰民",
        "district": "339901",
        "street": "339901001",
        "event_time": WHEN,
        "text": "工地晚上十一点以后还在施工，噪音太大。",
    }
    fields.update(changes)
    return AppealDraft(**fields)  # type: ignore[arg-type]


# --- the shipped catalogue ---------------------------------------------------------------


def test_the_shipped_channels_are_the_five_the_city_runs(appeals: AppealsConfig) -> None:
    assert sorted(appeals.channels) == [
        "hotline_12345",
        "mayor_mailbox",
        "message_board",
        "service_rating",
        "wechat",
    ]
    assert {c for c, ch in appeals.channels.items() if ch.rating == "required"} == {
        "service_rating"
    }
    assert appeals.repeat_span == timedelta(hours=72)


def test_every_category_has_both_labels_and_departments_of_the_city(
    appeals: AppealsConfig,
) -> None:
    departments = set(load_config().catalogue.departments)
    assert len(appeals.categories) >= 12
    for category in appeals.categories.values():
        assert category.name_zh and category.name_en
        assert category.department in departments
        assert set(category.co_departments) <= departments
    assert {"noise", "odour", "water_supply", "drainage", "road_traffic", "sanitation"} <= set(
        appeals.categories
    )
    assert {"property", "heating_gas", "public_safety", "market_food", "air"} <= set(
        appeals.categories
    )
    assert "government_service" in appeals.categories


@pytest.mark.parametrize(
    "name", ["noise", "噪声扰民", "Noise nuisance", " noise NUISANCE ", "噪音"]
)
def test_a_category_is_found_by_code_either_label_or_alias(
    appeals: AppealsConfig, name: str
) -> None:
    assert appeals.category(name).code == "noise"


def test_the_old_hotline_categories_are_aliases_of_catalogue_categories(
    appeals: AppealsConfig,
) -> None:
    """The simulator's 12345 complaints name these; they map without a table of their own."""
    old = ("traffic", "noise", "environment", "sanitation", "water", "power", "gas", "fire")
    old += ("public_security", "property")
    assert [appeals.category(name).code for name in old] == [
        "road_traffic",
        "noise",
        "odour",
        "sanitation",
        "water_supply",
        "power",
        "heating_gas",
        "fire_safety",
        "public_safety",
        "property",
    ]


def test_an_unknown_category_is_refused_naming_it(appeals: AppealsConfig) -> None:
    with pytest.raises(AppealRejected) as exc:
        appeals.category("外星人入侵")
    assert (exc.value.reason, exc.value.field) == (AppealReason.UNKNOWN_CATEGORY, "category")
    assert "'外星人入侵'" in exc.value.detail


def test_every_appeal_reason_is_a_dead_letter_reason_of_the_same_name() -> None:
    # so that a refused appeal becomes a dead letter saying the same
    assert all(r.value == DeadLetterReason[r.name].value for r in AppealReason)
    assert {"UNKNOWN_CHANNEL", "UNKNOWN_CATEGORY", "UNKNOWN_DISTRICT"} <= {
        r.name for r in AppealReason
    }


# --- building an appeal ------------------------------------------------------------------


def test_an_appeal_takes_the_category_s_departments_and_a_channel_prefixed_id(
    appeals: AppealsConfig,
) -> None:
    appeal = appeals.appeal(appeals.channels["hotline_12345"], draft())
    assert appeal == Appeal(
        channel="hotline_12345",
        appeal_id="hotline_12345:GD2026112400123",
        category="noise",
        district="339901",
        street="339901001",
        event_time=WHEN,
        text="工地晚上十一点以后还在施工，噪音太大。",
        department="environment",
        co_departments=("public_security",),
    )
    assert appeal.version == 1 and appeal.rating is None and appeal.repeat_of is None


def test_an_appeal_round_trips_through_json_without_empty_fields(appeals: AppealsConfig) -> None:
    appeal = appeals.appeal(appeals.channels["hotline_12345"], draft(street=None))
    data = appeal.to_json()
    assert b'"street"' not in data and b'"rating"' not in data and b'"repeat_of"' not in data
    assert b'"version":1' in data
    assert Appeal.model_validate_json(data) == appeal


def test_a_later_version_of_the_appeal_is_not_read_as_this_one(appeals: AppealsConfig) -> None:
    data = appeals.appeal(appeals.channels["wechat"], draft()).to_json()
    assert data.startswith(b'{"version":1,')
    with pytest.raises(ValidationError, match="version"):
        Appeal.model_validate_json(data.replace(b'"version":1', b'"version":2'))


def test_an_appeal_without_a_time_zone_is_refused() -> None:
    with pytest.raises(ValidationError, match="event_time"):
        Appeal(
            channel="wechat",
            appeal_id="wechat:1",
            category="noise",
            district="339901",
            event_time=datetime(2026, 11, 24, 8, 0),
            text="太吵了",
            department="environment",
        )


@pytest.mark.parametrize(
    ("changes", "reason", "field"),
    [
        ({"district": "999999"}, AppealReason.UNKNOWN_DISTRICT, "district"),
        ({"street": "339902001"}, AppealReason.UNKNOWN_STREET, "street"),
        ({"category": "天气"}, AppealReason.UNKNOWN_CATEGORY, "category"),
        ({"text": "吵" * (MAX_TEXT_CHARS + 1)}, AppealReason.TOO_LARGE, "text"),
        ({"text": ""}, AppealReason.SCHEMA, "text"),
        ({"event_time": datetime(2026, 11, 24, 8, 0)}, AppealReason.SCHEMA, "event_time"),
        ({"appeal_id": "x" * 300}, AppealReason.TOO_LARGE, "appeal_id"),
        ({"rating": "good"}, AppealReason.SCHEMA, "rating"),
    ],
)
def test_what_does_not_fit_is_refused_naming_field_and_reason(
    appeals: AppealsConfig, changes: dict[str, object], reason: AppealReason, field: str
) -> None:
    with pytest.raises(AppealRejected) as exc:
        appeals.appeal(appeals.channels["hotline_12345"], draft(**changes))
    assert (exc.value.reason, exc.value.field) == (reason, field)
    assert str(exc.value).startswith(f"{reason.value}: {field}: ")


def test_a_service_rating_needs_its_rating_and_carries_it(appeals: AppealsConfig) -> None:
    channel = appeals.channels["service_rating"]
    with pytest.raises(AppealRejected) as exc:
        appeals.appeal(channel, draft(category="government_service"))
    assert (exc.value.reason, exc.value.field) == (AppealReason.SCHEMA, "rating")
    assert "service_rating needs a rating" in exc.value.detail
    appeal = appeals.appeal(channel, draft(category="government_service", rating="bad"))
    assert (appeal.rating, appeal.department) == ("bad", "hotline_office")


# --- config errors -----------------------------------------------------------------------


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    for name in ("city.yaml", "indicators.yaml", "appeals.yaml"):
        shutil.copy(DEFAULT_CONFIG_DIR / name, tmp_path / name)
    return tmp_path


def load_error(directory: Path) -> ConfigError:
    with pytest.raises(ConfigError) as exc:
        load_appeals(load_config(directory))
    return exc.value


@pytest.mark.parametrize(
    ("old", "new", "path", "reason", "at"),
    [
        (
            "    department: environment\n    co_departments: [public_security]",
            "    department: noise_office\n    co_departments: [public_security]",
            "categories.noise.department",
            "unknown department 'noise_office'; known: ['command_centre',",
            None,
        ),
        (
            "co_departments: [sanitation, traffic]",
            "co_departments: [sanitation, roads]",
            "categories.drainage.co_departments[1]",
            "unknown department 'roads'",
            None,
        ),
        (
            "aliases: [停电, 供电, 路灯]",
            "aliases: [停电, 供电, 路灯, 噪音]",
            "categories.power.aliases[3]",
            "'噪音' already names category 'noise'",
            None,
        ),
        (
            "adapter: streams.voice.channels.wechat",
            "adapter: streams.voice.nowhere.wechat",
            "channels.wechat.adapter",
            "cannot import module 'streams.voice.nowhere'",
            None,
        ),
        (
            "adapter: streams.voice.channels.wechat",
            "adapter: streams.voice.channels.telegram",
            "channels.wechat.adapter",
            "module 'streams.voice.channels' has no function 'telegram'",
            None,
        ),
        (
            "settings: {timezone: Asia/Shanghai}",
            "settings: {timezone: Asia/Linjiang}",
            "channels.hotline_12345.settings.timezone",
            "unknown time zone 'Asia/Linjiang'",
            None,
        ),
        (
            "bad: [不满意, 非常不满意]",
            "bad: [不满意, 非常不满意, 基本满意]",
            "channels.service_rating.settings",
            "grades both good and bad: ['基本满意']",
            "      good: [",
        ),
        (
            "adapter: streams.voice.channels.message_board\n",
            "adapter: streams.voice.channels.message_board\n    settings: {moderated: true}\n",
            "channels.message_board.settings.moderated",
            "Extra inputs are not permitted",
            "settings: {moderated",
        ),
        (
            "repeat_span_h: 72",
            "repeat_span_h: -1",
            "repeat_span_h",
            "Input should be greater than 0",
            None,
        ),
        (
            "    rating: required\n",
            "    rating: sometimes\n",
            "channels.service_rating.rating",
            "Input should be 'required' or 'forbidden'",
            None,
        ),
    ],
)
def test_a_config_error_names_file_line_key_and_reason(
    config_dir: Path, old: str, new: str, path: str, reason: str, at: str | None
) -> None:
    file = config_dir / "appeals.yaml"
    line = replace(file, old, new)
    error = load_error(config_dir)
    assert (error.file, error.path) == (str(file), path)
    assert reason in error.reason
    assert str(error).startswith(f"{file}:{error.line}: {path}: ")
    # the line of the key, or of the mapping that holds it when the error is the mapping's
    text = file.read_text(encoding="utf-8")
    expected = text[: text.index(at)].count("\n") + 1 if at else line
    assert error.line == expected


def test_broken_yaml_and_a_missing_file_say_so(config_dir: Path) -> None:
    file = config_dir / "appeals.yaml"
    line = replace(file, "repeat_span_h: 72", "repeat_span_h: [72")
    error = load_error(config_dir)
    assert "not valid YAML" in error.reason and error.line is not None and error.line >= line
    file.unlink()
    assert load_error(config_dir).reason == "file not found"


# --- an appeal built without pydantic's validation equals the validated one ---------------


def _outcome(appeals: AppealsConfig, channel: str, fields: dict[str, Any]) -> Any:
    try:
        appeal = appeals.appeal_of(appeals.channels[channel], **fields)
    except AppealRejected as exc:
        return ("rejected", exc.reason, exc.field, exc.detail)
    except Exception as exc:  # what validation raises is raised either way
        return ("raised", type(exc), str(exc))
    return (
        appeal,
        list(appeal.__dict__.items()),
        appeal.model_fields_set,
        appeal.to_json(),
        repr(appeal),
        hash(appeal),
    )


_ANY_TEXT = st.one_of(
    st.text(max_size=30),
    st.sampled_from(["", " ", "a\ud800b", "吵" * MAX_TEXT_CHARS, "吵" * (MAX_TEXT_CHARS + 1)]),
    st.sampled_from(["吵" * MAX_TEXT_CHARS, "吵" * (MAX_TEXT_CHARS + 1)]),
)
_TIMES = st.one_of(
    st.datetimes(timezones=st.just(CST)),
    st.datetimes(timezones=st.timezones()),
    st.datetimes(),  # no zone
    st.just(WHEN.replace(tzinfo=timezone(timedelta(seconds=-30)))),
)


@settings(max_examples=1500, deadline=None)
@given(
    channel=st.sampled_from(["hotline_12345", "wechat", "wechat", "service_rating"]),
    appeal_id=st.one_of(st.text(max_size=8), st.sampled_from(["x" * 186, "x" * 187, "\udfff"])),
    category=st.sampled_from(["噪声扰民", "noise", "noise", "government_service", "天气"]),
    district=st.sampled_from(["339901", "339901", "339901", "339902", "999999", "339901\n"]),
    street=st.sampled_from([None, "339901001", "339901001", "339902001", ""]),
    event_time=_TIMES,
    text=_ANY_TEXT,
    rating=st.sampled_from([None, None, None, "good", "bad", "meh"]),
)
def test_property_an_appeal_is_what_validation_makes_of_its_fields(
    channel: str,
    appeal_id: str,
    category: str,
    district: str,
    street: str | None,
    event_time: datetime,
    text: str,
    rating: Any,
) -> None:
    appeals = load_appeals_once()
    validated = dataclasses.replace(appeals)  # the same config, whose appeals pydantic checks
    validated.__dict__["_codes_are_codes"] = False
    fields = {
        "appeal_id": appeal_id,
        "category": category,
        "district": district,
        "street": street,
        "event_time": event_time,
        "text": text,
        "rating": rating,
    }
    assert _outcome(appeals, channel, fields) == _outcome(validated, channel, fields)


def test_the_shipped_catalogue_s_codes_need_no_checking_per_appeal(
    appeals: AppealsConfig,
) -> None:
    assert appeals._codes_are_codes


@functools.cache
def load_appeals_once() -> AppealsConfig:
    return load_appeals(load_config())
