"""Hotline (12345) complaints: their categories, the departments they go to, and their
text, in Chinese, some with the caller's personal data that ingest must remove."""

from __future__ import annotations

import random
from typing import Any

from streams.core.config import District
from streams.sim import people
from streams.sim.clock import Clock

#: Hotline complaint category -> the department the hotline office hands it to.
COMPLAINT_DEPARTMENT: dict[str, str] = {
    "traffic": "traffic",
    "noise": "environment",
    "environment": "environment",
    "sanitation": "sanitation",
    "water": "water",
    "power": "power",
    "gas": "gas",
    "fire": "fire",
    "public_security": "public_security",
    "property": "command_centre",
}

_PLACES = (
    "幸福里小区",
    "锦绣花园",
    "农贸市场",
    "人民路口",
    "地铁站B出口",
    "实验小学门口",
    "新华路88号",
    "滨河公园",
    "星光广场",
    "和平新村3幢",
    "文化路与建设路交叉口",
    "第一人民医院东门",
)
_COMPLAINTS: dict[str, tuple[float, tuple[str, ...]]] = {
    "traffic": (
        0.35,
        (
            "{p}附近早晚高峰堵得很厉害，红绿灯配时不合理，希望交警部门调整。",
            "{p}门口有辆车牌号为{plate}的车长期违停，占用了人行道。",
            "{p}路口的信号灯坏了，车辆乱成一团，很危险。",
        ),
    ),
    "noise": (
        0.45,
        (
            "{p}附近工地晚上十一点以后还在施工，噪音太大，严重影响休息。",
            "{p}楼下的烧烤店每天营业到凌晨两点，吵得睡不着。",
            "{p}广场舞音响声音太大，希望有关部门管一管。",
        ),
    ),
    "sanitation": (
        0.35,
        (
            "{p}的垃圾桶满出来好几天了，一直没人清运，臭味很大。",
            "{p}路边有人乱倒建筑垃圾，影响通行。",
        ),
    ),
    "environment": (
        0.45,
        (
            "{p}附近的工厂排放刺鼻气味，晚上特别明显。",
            "{p}旁边的河道发黑发臭，请环保部门来看看。",
        ),
    ),
    "water": (
        0.5,
        (
            "{p}自来水发黄，有异味，不敢饮用。",
            "{p}水压很低，楼上几层基本没水用。",
        ),
    ),
    "power": (
        0.45,
        (
            "{p}今天下午无故停电两次，也没有提前通知。",
            "{p}的路灯坏了一个多星期，晚上走路很不安全。",
        ),
    ),
    "gas": (0.6, ("{p}楼道里有一股燃气味，担心漏气，请燃气公司尽快检查。",)),
    "fire": (
        0.55,
        (
            "{p}消防通道被杂物堵住了，出了事消防车根本进不来。",
            "{p}楼道里停满电动车在充电，存在很大火灾隐患。",
        ),
    ),
    "public_security": (0.5, ("{p}晚上经常有人聚集喝酒闹事，希望加强巡逻。",)),
    "property": (0.4, ("{p}物业不作为，电梯坏了半个月一直没修。",)),
}
_INCIDENT_COMPLAINTS: dict[str, tuple[str, float, tuple[str, ...]]] = {
    "building_fire": (
        "fire",
        0.85,
        (
            "{p}有浓烟冒出，好像着火了，火势不小，请赶快派人！",
            "{p}那栋楼起火了，烟很大，楼里可能还有人！",
            "{p}着火了，路口被堵死，消防车进不来！",
        ),
    ),
    "water_main_burst": (
        "water",
        0.65,
        (
            "{p}突然停水了，家里一滴水都没有，什么时候能恢复？",
            "{p}路面往外冒水，好像水管爆了，水都漫到马路上了。",
            "{p}整个小区停水，老人孩子没法做饭，太着急了！",
        ),
    ),
}
_PII = (
    "联系电话：{mobile}。",
    "我的手机号{mobile}，请尽快回复。",
    "处理结果请发到我的邮箱{email}。",
    "肇事车辆车牌号{plate}。",
    "本人身份证号{rid}，希望跟进处理。",
)
_ANGRY = ("已经反映三次了，到底有没有人管？！", "实在忍无可忍了！", "再不处理我就向媒体反映！")


def _complaint_text(
    rng: random.Random, category: str, template: str, place: str, district: str
) -> str:
    car = people.plate(rng)
    text = template.format(p=place, plate=car)
    if rng.random() < 0.3:  # some callers leave personal data the ingest must remove
        phone = people.mobile(rng)
        mail = people.email(rng)
        text += rng.choice(_PII).format(
            mobile=phone, email=mail, plate=car, rid=people.resident_id(rng, district)
        )
    return text


def complaint(
    district: District, street: str, cause: str, clock: Clock, rng: random.Random
) -> dict[str, Any]:
    """The attributes of one 12345 complaint in ``street``: its category, its text and how
    upset the caller is; ``cause`` names the incident behind it, if any."""
    street_name = next(s.name_zh for s in district.streets if s.code == street)
    place = street_name + rng.choice(_PLACES)
    if cause in _INCIDENT_COMPLAINTS:
        category, level, templates = _INCIDENT_COMPLAINTS[cause]
    else:
        h = clock.hour
        weights = [
            1.0 + 2.0 * clock.rush,  # traffic
            2.5 if h >= 21 or h < 6 else 0.8,  # noise: at night
            1.0,  # sanitation
            0.6,  # environment
            0.6,  # water
            0.4,  # power
            0.2,  # gas
            0.3,  # fire
            0.5,  # public_security
            0.8,  # property
        ]
        category = rng.choices(list(_COMPLAINTS), weights)[0]
        level, templates = _COMPLAINTS[category]
    text = _complaint_text(rng, category, rng.choice(templates), place, district.code)
    intensity = level + rng.gauss(0.0, 0.08)
    if rng.random() < 0.15:
        text += rng.choice(_ANGRY)
        intensity += 0.25
    return {
        "category": category,
        "text": text,
        "intensity": round(min(1.0, max(0.0, intensity)), 2),
    }
