"""What simulated citizens write in their appeals: per category, a title and a complaint
about a place, told calmly, annoyed, angry or beyond (threats, repeated exclamations),
with the personal data some of them leave; and the comments of service ratings.

Anger is a level: 0 calm, 1 annoyed, 2 angry, 3 extreme. The higher levels use what an
emotion scorer looks for: intensifiers (非常, 太, 实在), negations (不, 没有, 没人管),
threats to go to the government's gate, exclamation marks in a row.
"""

from __future__ import annotations

import random

from streams.sim import people

CALM, ANNOYED, ANGRY, EXTREME = 0, 1, 2, 3

#: category code -> (title, complaint); ``{p}`` is the place, ``{deg}`` a degree word.
TEMPLATES: dict[str, tuple[tuple[str, str], ...]] = {
    "noise": (
        ("夜间施工噪音扰民", "{p}旁边的工地每天夜里十一点以后还在施工，噪音{deg}大，没法休息。"),
        ("商铺音响声音大", "{p}楼下的商铺天天用大音箱放音乐，吵得{deg}厉害。"),
        ("广场舞噪音", "{p}每天晚上的广场舞音响开得{deg}响，孩子写不了作业。"),
    ),
    "odour": (
        ("小区附近有异味", "{p}附近一直有一股刺鼻的臭味，{deg}难闻，晚上更明显。"),
        ("垃圾站恶臭", "{p}的垃圾中转站臭味{deg}重，窗户都不敢开。"),
    ),
    "air": (
        ("饭店油烟扰民", "{p}的饭店油烟直接往居民楼排，{deg}呛人。"),
        ("工地扬尘", "{p}的工地不洒水不覆盖，扬尘{deg}大，车上全是灰。"),
    ),
    "water_supply": (
        ("自来水发黄", "{p}的自来水发黄还有味道，{deg}不放心，不敢喝。"),
        ("水压低", "{p}高层水压{deg}低，一到晚上就没水用。"),
    ),
    "drainage": (
        ("雨后积水严重", "{p}一下雨就积水，水深到小腿，{deg}不方便。"),
        ("下水道堵塞", "{p}的下水道堵了，污水漫到路面，{deg}脏。"),
    ),
    "road_traffic": (
        ("违章停车占道", "{p}门口车辆长期乱停，人行道被占，{deg}危险。"),
        ("信号灯故障", "{p}路口的信号灯坏了，车辆乱成一团，{deg}容易出事。"),
        ("道路破损", "{p}的路面坑坑洼洼，电动车经过{deg}颠，已经有人摔倒。"),
    ),
    "sanitation": (
        ("垃圾无人清运", "{p}的垃圾桶满出来好几天了，{deg}影响环境。"),
        ("乱倒建筑垃圾", "{p}路边有人乱倒建筑垃圾，{deg}影响通行。"),
    ),
    "heating_gas": (
        ("楼道燃气味", "{p}楼道里有一股燃气味，{deg}担心漏气，请尽快检查。"),
        ("燃气压力不稳", "{p}做饭时燃气火苗忽大忽小，{deg}不稳定。"),
    ),
    "power": (
        ("频繁停电", "{p}这周无故停电三次，也没有提前通知，{deg}影响生活。"),
        ("路灯不亮", "{p}的路灯坏了一个多星期，晚上走路{deg}不安全。"),
    ),
    "fire_safety": (
        ("消防通道被占", "{p}的消防通道被杂物堵住，{deg}危险，消防车根本进不来。"),
        ("楼道电动车充电", "{p}楼道里停满电动车在充电，火灾隐患{deg}大。"),
    ),
    "public_safety": (
        ("夜间聚集闹事", "{p}晚上经常有人聚集喝酒闹事，{deg}让人害怕。"),
        ("电动车被盗", "{p}这个月已经丢了好几辆电动车，{deg}让人不放心。"),
    ),
    "property": (
        ("电梯长期故障", "{p}的电梯坏了半个月，物业一直不修，老人上下楼{deg}困难。"),
        ("物业服务差", "{p}的物业只收费不办事，绿化和保洁{deg}差。"),
    ),
    "market_food": (
        ("无证摊贩", "{p}门口的流动摊贩无证经营，卫生{deg}差。"),
        ("食品变质", "在{p}的超市买到过期变质的食品，{deg}不负责任。"),
    ),
    "government_service": (
        ("办事效率低", "在{p}的便民服务中心办事，材料一次说不清，跑了三趟，{deg}麻烦。"),
        ("窗口服务态度", "{p}便民服务窗口的工作人员态度{deg}冷淡。"),
    ),
}
#: Degree words by anger level, to fill ``{deg}``.
_DEGREE = (
    ("有点", "比较"),
    ("很", "挺", "特别"),
    ("非常", "太", "实在太", "特别"),
    ("实在太", "极其"),
)
_OPENING = (("您好，", "你好，", ""), ("", "又来反映，"), ("", "强烈投诉！"), ("", "忍无可忍！！"))
_CLOSING = (
    ("麻烦相关部门看一下，谢谢。", "希望能尽快安排处理。", "请帮忙协调解决，谢谢！"),
    ("之前已经反映过一次了，到现在还没有解决。", "打了好几次电话也没有人来处理。"),
    ("已经反映好几次了，根本没人管！", "你们到底管不管？实在受不了了！", "太让人气愤了！"),
    (
        "再不解决我们就集体去市政府门口讨说法！！！",
        "投诉了十几次都没有用，没人管！！我们要去政府大门口拉横幅！！",
        "忍无可忍了！！！再没人管就找媒体曝光，去市政府上访！",
    ),
)
#: Personal data as citizens leave it in the text (see :func:`with_personal_data`).
_IN_TEXT = (
    "我叫{name}，电话{mobile}。",
    "联系人：{name}，手机{mobile}。",
    "我是{surname}先生，手机号{mobile}，请尽快回复。",
    "我是住这里的{surname}女士，处理结果请发邮箱{email}。",
    "本人身份证号{rid}，希望跟进处理。",
    "我家住{address}，随时可以上门查看。",
    "车牌号{plate}的车就停在那里。",
)

#: Comments on good ratings, and on bad ratings by anger level (1 to 3).
GOOD_COMMENTS = (
    "工作人员态度很好，一次就办完了。",
    "流程清楚，等候时间不长。",
    "窗口人员耐心解答，点赞！",
    "",
)
BAD_COMMENTS = (
    (),
    ("排队一个多小时，窗口只开了两个。", "系统老是卡，等了很久。"),
    (
        "材料要求一次说不清，跑了三趟还没办成，太让人失望了！",
        "工作人员非常不耐烦，问什么都不说清楚！",
    ),
    ("态度实在太恶劣，根本不理人！！再这样我就去市政府门口讨说法！！！",),
)


def appeal_text(rng: random.Random, category: str, place: str, anger: int) -> tuple[str, str]:
    """A title and the body of an appeal about ``place`` in ``category`` at ``anger``."""
    title, body = rng.choice(TEMPLATES.get(category) or TEMPLATES["government_service"])
    body = body.format(p=place, deg=rng.choice(_DEGREE[anger]))
    text = rng.choice(_OPENING[anger]) + body + rng.choice(_CLOSING[anger])
    if anger == EXTREME:
        title += "！！！"
    return title, text


def with_personal_data(rng: random.Random, text: str, district: str) -> str:
    """``text`` with one piece of the writer's personal data, as citizens add it."""
    surname = rng.choice(people.SURNAMES)
    extra = rng.choice(_IN_TEXT).format(
        name=surname + rng.choice(people.GIVEN_NAMES),
        surname=surname,
        mobile=people.mobile(rng),
        email=people.email(rng),
        rid=people.resident_id(rng, district),
        address=people.home_address(rng),
        plate=people.issued_plate(rng),
    )
    return text + extra
