"""A simulated appeal in each channel's own shape: a 12345 work order, a letter to the
mayor's mailbox, a message-board post, a service rating, a WeChat message (the shapes
of docs/appeals.md), with the fields the channel's system carries and the adapter does
not copy (the caller's name and number, the writer, the nickname, the account)."""

from __future__ import annotations

import random
import string
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal
from zoneinfo import ZoneInfo

from streams.core.config import District
from streams.sim import people
from streams.sim.appeal_texts import ANGRY, BAD_COMMENTS, GOOD_COMMENTS
from streams.voice.appeals import Category, Channel
from streams.voice.channels import HotlineSettings, ServiceRatingSettings


@dataclass(frozen=True, slots=True)
class Draft:
    """What one appeal says, before a channel shapes it."""

    channel: str
    district: District
    street: str
    category: Category
    at: datetime  # UTC
    local: datetime  # the city's local time
    number: str  # the local date, three digits of the run tag and a 6-digit counter
    title: str
    text: str
    anger: int
    writer: str
    rating: Literal["good", "bad"] | None = None


def _word(rng: random.Random, category: Category) -> str:
    """The category as a citizen or a clerk names it: its Chinese label or an alias."""
    chinese = [a for a in category.aliases if not a.isascii()]
    return rng.choice([category.name_zh, *chinese]) if chinese else category.name_zh


def hotline(rng: random.Random, d: Draft, channel: Channel) -> dict[str, Any]:
    """A 12345 work order: the accepting clerk's local time without a zone."""
    zone = channel.settings_as(HotlineSettings).timezone
    local = d.local if zone is None else d.at.astimezone(ZoneInfo(zone))
    return {
        "order_no": f"GD{d.number}",
        "accepted_at": f"{local:%Y-%m-%d %H:%M:%S}",
        "category": d.category.name_zh if rng.random() < 0.8 else _word(rng, d.category),
        "district_code": d.district.code,
        "street_code": d.street,
        "content": d.text,
        "caller_name": d.writer,
        "caller_phone": people.mobile(rng),
        "address": people.home_address(rng),
    }


def mayor_mailbox(rng: random.Random, d: Draft, channel: Channel) -> dict[str, Any]:
    """A letter to the mayor: the writer's contact details travel with it."""
    return {
        "letter_id": f"SZXX{d.number}",
        "submitted_at": d.local.isoformat(),
        "kind": rng.choice(("投诉", "建议", "求助", "咨询")),
        "subject": d.title,
        "body": d.text,
        "category": d.category.code,
        "district": d.district.code,
        "street": d.street,
        "writer": {
            "name": d.writer,
            "phone": people.mobile(rng),
            "email": people.email(rng),
            "id_number": people.resident_id(rng, d.district.code),
        },
    }


def message_board(rng: random.Random, d: Draft, channel: Channel) -> dict[str, Any]:
    """A post on the leaders' message board, under a nickname."""
    return {
        "post_id": int(d.number),
        "posted_at": d.local.isoformat(),
        "title": d.title,
        "content": d.text,
        "topic": _word(rng, d.category),
        "area": {"district": d.district.code, "street": d.street},
        "nickname": rng.choice(("临江市民", "热心居民", "老街坊", "上班族"))
        + str(rng.randrange(1000)),
    }


#: The services citizens rate, by category.
_SERVICES: dict[str, tuple[str, ...]] = {
    "government_service": ("不动产登记", "社保卡办理", "营业执照办理", "户籍迁移", "公积金提取"),
    "water_supply": ("供水报装", "水费缴纳"),
    "power": ("用电报装", "电费缴纳"),
    "heating_gas": ("燃气开户", "燃气过户"),
}


def service_rating(rng: random.Random, d: Draft, channel: Channel) -> dict[str, Any]:
    """A good/bad rating of a service at the district's service centre; a rating of a
    government service names no category (the channel's setting supplies it)."""
    grades = channel.settings_as(ServiceRatingSettings)
    if d.rating == "good":
        grade, comment = rng.choice(grades.good), rng.choice(GOOD_COMMENTS)
    else:
        grade = grades.bad[-1] if d.anger >= ANGRY else grades.bad[0]
        comment = rng.choice(BAD_COMMENTS[max(1, d.anger)])
    payload: dict[str, Any] = {
        "rating_id": f"HCP{d.number}",
        "rated_at": d.local.isoformat(),
        "service": rng.choice(_SERVICES.get(d.category.code, _SERVICES["government_service"])),
        "hall": f"{d.district.name_zh}政务服务中心",
        "grade": grade,
        "district": d.district.code,
        "street": d.street,
        "applicant": {"name": d.writer, "phone": people.mobile(rng)},
    }
    if comment:
        payload["comment"] = comment
    if d.category.code != grades.category:
        payload["category"] = d.category.code
    return payload


_OPENID = string.ascii_letters + string.digits + "-_"


def wechat(rng: random.Random, d: Draft, channel: Channel) -> dict[str, Any]:
    """A text message to the city's WeChat account, with its appeal form's fields."""
    return {
        "MsgId": int(d.number[8:11] + d.number[:8] + d.number[11:]),  # run tag first
        "CreateTime": int(d.at.timestamp()),
        "MsgType": "text",
        "FromUserName": "o" + "".join(rng.choice(_OPENID) for _ in range(27)),
        "Content": d.text,
        "district": d.district.code,
        "street": d.street,
        "category": _word(rng, d.category),
    }


#: channel code -> the function that shapes a draft as that channel's payload.
PAYLOADS: dict[str, Callable[[random.Random, Draft, Channel], dict[str, Any]]] = {
    "hotline_12345": hotline,
    "mayor_mailbox": mayor_mailbox,
    "message_board": message_board,
    "service_rating": service_rating,
    "wechat": wechat,
}
