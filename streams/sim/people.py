"""The simulated citizens' personal data, as they write it in complaints and appeals:
names, mobile numbers, resident ID numbers, licence plates, e-mail addresses and exact
home addresses. All made up from the seed; the ingest must remove every one."""

from __future__ import annotations

import random

#: Common surnames, most frequent first, and given names of one or two characters.
SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何林罗高郑梁谢宋唐许韩冯邓曹"
GIVEN_NAMES = (
    "伟",
    "芳",
    "娜",
    "敏",
    "静",
    "磊",
    "洋",
    "勇",
    "建国",
    "秀英",
    "志强",
    "丽华",
    "海燕",
    "晓东",
    "春梅",
    "子涵",
    "浩然",
    "雨萱",
    "文博",
    "欣怡",
)
_MAIL_USERS = ("zhangwei", "wangfang", "li.na", "liuyang", "chenjing", "zhaolei", "huang_min")
_MAIL_DOMAINS = ("163.com", "126.com", "qq.com", "sina.com", "foxmail.com")
_PLATE_CHARS = "0123456789ABCDEFGHJKLMNPQRSTUVWXYZ"
_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
#: Roads and estates of the city, where an exact address starts.
ROADS = ("新华路", "人民路", "解放路", "建设路", "中山路", "文化路", "和平新村", "阳光里小区")


def full_name(rng: random.Random) -> str:
    """A citizen's name: a common surname and a given name."""
    return rng.choice(SURNAMES) + rng.choice(GIVEN_NAMES)


def mobile(rng: random.Random) -> str:
    """An 11-digit mainland mobile number."""
    return f"1{rng.choice('3456789')}{rng.randrange(10**9):09d}"


def email(rng: random.Random) -> str:
    return f"{rng.choice(_MAIL_USERS)}{rng.randrange(100)}@{rng.choice(_MAIL_DOMAINS)}"


def plate(rng: random.Random) -> str:
    """A Zhejiang licence plate of the city's kind (``浙A12B45``): five characters after
    the prefecture's letter, drawn alike from letters and digits, so some hold no digit
    at all (``浙HRRHLM``), which no issued plate does: see :func:`issued_plate`."""
    return "浙" + rng.choice("ABCDFGHJ") + "".join(rng.choice(_PLATE_CHARS) for _ in range(5))


def issued_plate(rng: random.Random) -> str:
    """A plate as issued: of the five characters after the prefecture's letter at most
    two are letters (never I or O), the rest digits (``浙A1B234``)."""
    serial = [str(rng.randrange(10)) for _ in range(5)]
    for at in rng.sample(range(5), rng.choice((0, 0, 1, 2))):
        serial[at] = rng.choice(_PLATE_CHARS[10:])
    return "浙" + rng.choice("ABCDFGHJ") + "".join(serial)


def resident_id(rng: random.Random, region: str) -> str:
    """An 18-digit resident ID with a valid GB 11643 check digit."""
    born = f"{rng.randint(1950, 2005)}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}"
    body = f"{region[:6]:0<6}{born}{rng.randint(0, 999):03d}"
    check = "10X98765432"[sum(int(c) * w for c, w in zip(body, _ID_WEIGHTS, strict=True)) % 11]
    return body + check


def home_address(rng: random.Random) -> str:
    """An exact home address: road or estate, house number, unit and flat."""
    return (
        f"{rng.choice(ROADS)}{rng.randint(1, 199)}号{rng.randint(1, 6)}单元"
        f"{rng.randint(1, 18)}{rng.randint(1, 4):02d}"
    )
