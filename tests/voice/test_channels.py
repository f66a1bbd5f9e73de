"""Channel adapters, the intake and repeats: every channel's payload becomes one Appeal,
with no personal identifier left in it, its category's department, and the first appeal
of its run when it repeats one."""

from __future__ import annotations

import functools
import re
import shutil
import sys
import types
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from streams.core.config import DEFAULT_CONFIG_DIR, load_config
from streams.ingest.deid import Deidentifier
from streams.voice.appeals import (
    Appeal,
    AppealDraft,
    AppealReason,
    AppealRejected,
    AppealsConfig,
    ChannelContext,
    ChannelSettings,
    adapter,
    load_appeals,
)
from streams.voice.channels import AppealIntake, RepeatIndex, repeat_in, required_text

KEY = b"test-key-not-for-production-0123456789"
CST = timezone(timedelta(hours=8))
TOKEN = r"<(?:phone|id|email|plate|name|address):[0-9a-f]{10}>"


@pytest.fixture(scope="module")
def appeals() -> AppealsConfig:
    return load_appeals(load_config())


@pytest.fixture
def intake(appeals: AppealsConfig) -> AppealIntake:
    return AppealIntake(appeals, Deidentifier(KEY))


def hotline(**changes: Any) -> dict[str, Any]:
    payload = {
        "order_no": "GD2026112400123",
        "accepted_at": "2026-11-24 23:15:03",
        "category": "噪声扰民",
        "district_code": "339901",
        "street_code": "339901001",
        "content": "工地晚上十一点以后还在施工，我叫张三，电话13812345678。",
        "caller_name": "张三",
        "caller_phone": "13812345678",
        "address": "新华路12号3单元502",
        "channel_detail": "电话",
    }
    return {**payload, **changes}


def mailbox(**changes: Any) -> dict[str, Any]:
    payload = {
        "letter_id": "SZXX-2026-004211",
        "submitted_at": "2026-11-24T09:02:00+08:00",
        "kind": "投诉",
        "subject": "小区停水三天",
        "body": "和平新村3幢2单元301室停水三天，座机0571-87654321。",
        "category": "water_supply",
        "district": "339902",
        "street": "339902003",
        "writer": {"name": "李小明", "phone": "13912345678", "email": "li@example.com"},
    }
    return {**payload, **changes}


def board(**changes: Any) -> dict[str, Any]:
    payload = {
        "post_id": 88231,
        "posted_at": "2026-11-24T21:40:00+08:00",
        "title": "烧烤店油烟太大",
        "content": "楼下烧烤店油烟直排，王先生家窗户都不敢开。",
        "topic": "油烟",
        "area": {"district": "339903", "street": "339903002"},
        "nickname": "江滨老王",
    }
    return {**payload, **changes}


def rating(**changes: Any) -> dict[str, Any]:
    payload = {
        "rating_id": "HCP-339901-000917",
        "rated_at": "2026-11-24T10:20:00+08:00",
        "service": "不动产登记",
        "hall": "江滨区政务服务中心",
        "grade": "非常不满意",
        "comment": "排队两个小时，身份证11010519800229123X复印了三次。",
        "district": "339901",
        "street": "339901003",
        "applicant": {"name": "赵敏", "phone": "13612345678"},
    }
    return {**payload, **changes}


def wechat(**changes: Any) -> dict[str, Any]:
    payload = {
        "MsgId": 24568893311203,
        "CreateTime": 1795536000,
        "MsgType": "text",
        "FromUserName": "o6_bmjrPTlm6_2sgVt7hMZOPfL2M",
        "Content": "路灯坏了一个星期，晚上很黑。邮箱chen.jing@example.com",
        "district": "339904",
        "street": "339904001",
        "category": "路灯",
    }
    return {**payload, **changes}


PAYLOADS = {
    "hotline_12345": hotline,
    "mayor_mailbox": mailbox,
    "message_board": board,
    "service_rating": rating,
    "wechat": wechat,
}


# --- each channel ------------------------------------------------------------------------


def test_a_hotline_work_order_becomes_an_appeal_in_local_time(intake: AppealIntake) -> None:
    deid = Deidentifier(KEY)
    appeal = intake.accept("hotline_12345", hotline())
    assert appeal == Appeal(
        channel="hotline_12345",
        appeal_id="hotline_12345:GD2026112400123",
        category="noise",
        district="339901",
        street="339901001",
        event_time=datetime(2026, 11, 24, 23, 15, 3, tzinfo=CST),
        text=f"工地晚上十一点以后还在施工，我叫{deid.pseudonym('name', '张三')}，"
        f"电话{deid.pseudonym('phone', '13812345678')}。",
        department="environment",
        co_departments=("public_security",),
    )
    assert appeal.event_time.utcoffset() == timedelta(hours=8)


def test_a_mailbox_letter_leads_with_its_subject_and_loses_its_writer(
    intake: AppealIntake,
) -> None:
    appeal = intake.accept("mayor_mailbox", mailbox())
    assert re.fullmatch(f"小区停水三天：和平新村{TOKEN}停水三天，座机{TOKEN}。", appeal.text)
    assert (appeal.category, appeal.department, appeal.street) == (
        "water_supply",
        "water",
        "339902003",
    )
    assert appeal.appeal_id == "mayor_mailbox:SZXX-2026-004211"
    data = appeal.to_json().decode()
    for gone in ("李小明", "13912345678", "li@example.com", "87654321", "3幢"):
        assert gone not in data


def test_a_board_post_keeps_title_and_content_and_takes_its_area(intake: AppealIntake) -> None:
    appeal = intake.accept("message_board", board())
    assert re.fullmatch(
        f"烧烤店油烟太大：楼下烧烤店油烟直排，{TOKEN}先生家窗户都不敢开。", appeal.text
    )
    assert (appeal.appeal_id, appeal.category, appeal.district, appeal.street) == (
        "message_board:88231",
        "air",
        "339903",
        "339903002",
    )
    assert "江滨老王" not in appeal.to_json().decode()


@pytest.mark.parametrize(
    ("grade", "expected"), [("非常满意", "good"), ("基本满意", "good"), ("不满意", "bad")]
)
def test_a_service_rating_maps_the_grade_to_good_or_bad(
    intake: AppealIntake, grade: str, expected: str
) -> None:
    appeal = intake.accept("service_rating", rating(grade=grade, comment=None))
    assert (appeal.rating, appeal.text) == (expected, f"不动产登记：{grade}")
    assert (appeal.category, appeal.department) == ("government_service", "hotline_office")


def test_a_service_rating_comment_is_scrubbed_and_the_applicant_not_copied(
    intake: AppealIntake,
) -> None:
    appeal = intake.accept("service_rating", rating())
    assert re.fullmatch(
        f"不动产登记：非常不满意。排队两个小时，身份证{TOKEN}复印了三次。", appeal.text
    )
    assert appeal.rating == "bad"
    assert "赵敏" not in appeal.to_json().decode() and "13612345678" not in appeal.text


def test_a_wechat_message_takes_its_time_from_seconds_since_the_epoch(
    intake: AppealIntake,
) -> None:
    appeal = intake.accept("wechat", wechat())
    assert appeal.event_time == datetime.fromtimestamp(1795536000, UTC)
    assert appeal.appeal_id == "wechat:24568893311203"
    assert (appeal.category, appeal.department) == ("power", "power")
    assert re.fullmatch(f"路灯坏了一个星期，晚上很黑。邮箱{TOKEN}", appeal.text)
    assert "o6_bmjr" not in appeal.to_json().decode()


def test_an_id_that_is_a_phone_number_is_pseudonymised_too(intake: AppealIntake) -> None:
    appeal = intake.accept("hotline_12345", hotline(order_no="13812345678"))
    assert re.fullmatch(f"hotline_12345:{TOKEN}", appeal.appeal_id)


# --- refusals ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("channel", "payload", "reason", "field", "detail"),
    [
        (
            "hotline_12345",
            hotline(category="天气预报"),
            "unknown_category",
            "category",
            "'天气预报'",
        ),
        ("hotline_12345", hotline(content=42), "wrong_type", "content", "expected text, got int"),
        ("hotline_12345", hotline(content="  "), "schema", "content", "missing or empty"),
        ("hotline_12345", hotline(order_no=None), "schema", "order_no", "missing or empty"),
        ("hotline_12345", hotline(district_code="999999"), "unknown_district", "district", ""),
        ("hotline_12345", hotline(street_code="339902001"), "unknown_street", "street", ""),
        ("hotline_12345", hotline(accepted_at="昨天晚上"), "schema", "accepted_at", "ISO 8601"),
        (
            "mayor_mailbox",
            mailbox(submitted_at="2026-11-24T09:02:00"),
            "schema",
            "submitted_at",
            "a time needs its time zone",
        ),
        ("message_board", board(area="江滨区"), "schema", "area", "not an object"),
        ("service_rating", rating(grade="一般"), "schema", "grade", "'一般' is not one of"),
        ("wechat", wechat(MsgType="image"), "schema", "MsgType", "only text is an appeal"),
        ("wechat", wechat(CreateTime="1795536000"), "wrong_type", "CreateTime", "seconds"),
        ("wechat", wechat(CreateTime=10**20), "schema", "CreateTime", "not a time"),
        ("telegram", wechat(), "unknown_channel", "channel", "'telegram' is not a channel"),
        ("wechat", ["not", "an", "object"], "schema", "(payload)", "expected an object"),
    ],
)
def test_a_payload_that_does_not_fit_is_refused_naming_field_and_reason(
    intake: AppealIntake, channel: str, payload: Any, reason: str, field: str, detail: str
) -> None:
    with pytest.raises(AppealRejected) as exc:
        intake.accept(channel, payload)
    assert (exc.value.reason.value, exc.value.field) == (reason, field)
    assert detail in exc.value.detail


# --- adding a channel --------------------------------------------------------------------


class CityAppSettings(ChannelSettings):
    source_tag: str


@adapter(CityAppSettings)
def city_app(payload: Mapping[str, Any], ctx: ChannelContext) -> AppealDraft:
    """A channel only this test knows: the city's own app. It does nothing about personal
    data; the intake does that for every channel."""
    tag = ctx.channel.settings_as(CityAppSettings).source_tag
    return AppealDraft(
        appeal_id=f"{tag}-{payload['ticket']}",
        category=required_text(payload, "kind"),
        district=payload["where"][0],
        street=payload["where"][1],
        event_time=datetime.fromisoformat(payload["at"]),
        text=payload["says"],
    )


def broken(payload: Mapping[str, Any], ctx: ChannelContext) -> AppealDraft:
    return payload["nothing here"]  # type: ignore[no-any-return]


def not_a_draft(payload: Mapping[str, Any], ctx: ChannelContext) -> dict[str, Any]:
    return dict(payload)


@pytest.fixture
def extended(tmp_path: Path) -> AppealsConfig:
    for name in ("city.yaml", "indicators.yaml"):
        shutil.copy(DEFAULT_CONFIG_DIR / name, tmp_path / name)
    data = yaml.safe_load((DEFAULT_CONFIG_DIR / "appeals.yaml").read_text(encoding="utf-8"))
    data["channels"]["city_app"] = {
        "name_zh": "城市 App",
        "name_en": "City app",
        "adapter": f"{__name__}.city_app",
        "settings": {"source_tag": "app"},
    }
    for name in ("broken", "not_a_draft"):
        data["channels"][name] = {"name_zh": name, "name_en": name, "adapter": f"{__name__}.{name}"}
    (tmp_path / "appeals.yaml").write_text(yaml.safe_dump(data, allow_unicode=True), "utf-8")
    return load_appeals(load_config(tmp_path))


def test_a_channel_is_added_by_a_config_entry_and_an_adapter_function(
    extended: AppealsConfig,
) -> None:
    intake = AppealIntake(extended, Deidentifier(KEY))
    appeal = intake.accept(
        "city_app",
        {
            "ticket": 7,
            "kind": "积水",
            "where": ["339901", "339901002"],
            "at": "2026-11-24T07:30:00+08:00",
            "says": "地下通道积水没过膝盖，我叫周杰，电话13512345678，车牌浙AD12345熄火了",
        },
    )
    assert (appeal.channel, appeal.appeal_id) == ("city_app", "city_app:app-7")
    assert (appeal.category, appeal.department, appeal.co_departments) == (
        "drainage",
        "water",
        ("sanitation", "traffic"),
    )
    assert re.fullmatch(
        f"地下通道积水没过膝盖，我叫{TOKEN}，电话{TOKEN}，车牌{TOKEN}熄火了", appeal.text
    )


def test_an_adapter_that_fails_or_returns_no_draft_is_refused_as_unprocessable(
    extended: AppealsConfig,
) -> None:
    intake = AppealIntake(extended, Deidentifier(KEY))
    for channel, detail in (("broken", "KeyError"), ("not_a_draft", "returned dict")):
        with pytest.raises(AppealRejected) as exc:
            intake.accept(channel, {"a": 1})
        assert (exc.value.reason, exc.value.field) == (AppealReason.UNPROCESSABLE, "(payload)")
        assert detail in exc.value.detail


def test_a_new_channel_s_settings_are_checked_at_load(tmp_path: Path) -> None:
    for name in ("city.yaml", "indicators.yaml"):
        shutil.copy(DEFAULT_CONFIG_DIR / name, tmp_path / name)
    text = (DEFAULT_CONFIG_DIR / "appeals.yaml").read_text(encoding="utf-8")
    text = text.replace(
        "channels:\n",
        f"channels:\n  city_app:\n    name_zh: 城市 App\n    name_en: City app\n"
        f"    adapter: {__name__}.city_app\n",
        1,
    )
    (tmp_path / "appeals.yaml").write_text(text, encoding="utf-8")
    with pytest.raises(Exception) as exc:
        load_appeals(load_config(tmp_path))
    assert str(exc.value) == (
        f"{tmp_path / 'appeals.yaml'}:17: channels.city_app.settings.source_tag: Field required"
    )


# --- repeats -----------------------------------------------------------------------------

T0 = datetime(2026, 11, 24, 8, 0, tzinfo=CST)
SPAN = timedelta(hours=72)


def test_a_repeat_is_within_the_span_of_the_run_s_first_appeal_both_ends_included() -> None:
    index = RepeatIndex(SPAN)
    place = ("339901", "339901001", "noise")
    assert index.observe(*place, "a1", T0) is None
    assert index.observe(*place, "a2", T0 + timedelta(hours=30)) == "a1"
    assert index.observe(*place, "a3", T0 + SPAN) == "a1"  # exactly the span: still a repeat
    # past the span of a1 (though within the span of a3): a new run starts
    assert index.observe(*place, "a4", T0 + SPAN + timedelta(seconds=1)) is None
    assert index.observe(*place, "a5", T0 + SPAN + timedelta(hours=1)) == "a4"


def test_another_street_category_or_district_is_no_repeat() -> None:
    index = RepeatIndex(SPAN)
    assert index.observe("339901", "339901001", "noise", "a1", T0) is None
    assert index.observe("339901", "339901002", "noise", "a2", T0) is None
    assert index.observe("339901", "339901001", "odour", "a3", T0) is None
    assert index.observe("339902", None, "noise", "a4", T0) is None
    assert index.observe("339902", None, "noise", "a5", T0 + timedelta(hours=1)) == "a4"
    assert len(index) == 4


def test_an_appeal_older_than_its_run_s_first_repeats_nothing_and_changes_nothing() -> None:
    index = RepeatIndex(SPAN)
    place = ("339901", "339901001", "noise")
    assert index.observe(*place, "a1", T0) is None
    assert index.observe(*place, "late", T0 - timedelta(hours=1)) is None
    assert index.observe(*place, "a2", T0 + timedelta(hours=1)) == "a1"


def test_a_year_of_hourly_appeals_keeps_one_entry_per_place() -> None:
    index = RepeatIndex(SPAN)
    places = [("339901", f"33990100{i}", "noise") for i in range(1, 4)]
    firsts = 0
    for hour in range(365 * 24):
        for n, place in enumerate(places):
            if index.observe(*place, f"{n}-{hour}", T0 + timedelta(hours=hour)) is None:
                firsts += 1
        assert len(index) <= len(places)
    # runs of 73 hourly appeals (0 h to 72 h inclusive), each place on its own
    assert firsts == len(places) * -(-365 * 24 // 73)


def test_runs_are_forgotten_by_event_time() -> None:
    index = RepeatIndex(timedelta(hours=1))
    for minute in range(10_000):  # a new place every minute: at most 61 runs are open
        index.observe("339901", f"s{minute}", "noise", f"a{minute}", T0 + timedelta(minutes=minute))
        assert len(index) <= 61


def test_a_district_s_own_runs_mark_repeats_by_the_same_rules_and_drop_ended_runs() -> None:
    runs: dict[str, list[Any]] = {}
    t0, span = T0.timestamp(), SPAN.total_seconds()
    assert repeat_in(runs, "339901001@noise", "a1", t0, span) is None
    assert repeat_in(runs, "339901001@noise", "a2", t0 + span, span) == "a1"  # both ends in
    assert repeat_in(runs, "339901001@noise", "late", t0 - 1, span) is None
    assert repeat_in(runs, "339901002@noise", "b1", t0 + 10, span) is None
    assert runs == {"339901001@noise": [t0, "a1"], "339901002@noise": [t0 + 10, "b1"]}
    # past a1's span a new run starts, and the run that ended before it is dropped
    assert repeat_in(runs, "339901001@noise", "a3", t0 + span + 11, span) is None
    assert runs == {"339901001@noise": [t0 + span + 11, "a3"]}


APPEAL_STREAMS = st.lists(
    st.tuples(
        st.sampled_from(["339901", "339902"]),
        st.sampled_from(["339901001", "339901002", None]),
        st.sampled_from(["noise", "odour"]),
        st.integers(min_value=0, max_value=6 * 3600),  # seconds after the previous appeal
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(stream=APPEAL_STREAMS)
def test_property_district_runs_follow_the_rules_and_keep_one_entry_per_place(
    stream: list[tuple[str, str | None, str, int]],
) -> None:
    span = 12 * 3600
    runs: dict[str, dict[str, list[Any]]] = {}
    # the rules, kept naively: every place's current run, never forgotten
    current: dict[tuple[str, str | None, str], tuple[float, str]] = {}
    at = T0.timestamp()
    for n, (district, street, category, gap) in enumerate(stream):
        at += gap
        place = (district, street, category)
        run = current.get(place)
        if run is None or at > run[0] + span:
            expected, current[place] = None, (at, f"a{n}")
        else:
            expected = run[1]
        got = repeat_in(
            runs.setdefault(district, {}), f"{street or ''}@{category}", f"a{n}", at, span
        )
        assert got == expected, (n, place)
        assert len(runs[district]) <= 6  # a district's streets and categories at most


def test_repeats_are_found_across_channels(intake: AppealIntake) -> None:
    first = intake.accept("hotline_12345", hotline(category="路灯"))
    second = intake.accept(
        "wechat", wechat(district="339901", street="339901001", CreateTime=1795536000)
    )
    assert (first.repeat_of, second.repeat_of) == (None, "hotline_12345:GD2026112400123")
    assert second.category == first.category == "power"


# --- no personal identifier survives any adapter -----------------------------------------

FILLERS = (
    "工地晚上还在施工，噪音太大。",
    "垃圾桶满出来好几天了，一直没人清运。",
    "自来水发黄，有异味，不敢饮用。",
    "楼道里停满电动车在充电，存在很大火灾隐患。",
    "物业不作为，电梯坏了半个月一直没修。",
    "实在忍无可忍了！",
    "路口的信号灯坏了，车辆乱成一团。",
)
SURNAMES = ("王", "李", "张", "刘", "陈", "杨", "黄", "赵", "周", "吴", "徐", "孙", "欧阳", "诸葛")
GIVEN = "伟芳娜敏静丽强磊军洋勇艳杰娟涛超秀霞刚英华玉兰梅"
PROVINCES = "京津沪渝冀豫云辽黑湘皖鲁新苏浙赣鄂桂甘晋蒙陕吉闽贵粤青藏川宁琼"
PLATE_LETTERS = "ABCDEFGHJKLMNPQRSTUVWXYZ"
ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)


@st.composite
def mobiles(draw: st.DrawFn) -> str:
    digits = (
        "1" + draw(st.sampled_from("3456789")) + draw(st.text("0123456789", min_size=9, max_size=9))
    )
    sep = draw(st.sampled_from(["", " ", "-"]))
    return f"{digits[:3]}{sep}{digits[3:7]}{sep}{digits[7:]}"


@st.composite
def resident_ids(draw: st.DrawFn) -> str:
    born = draw(
        st.dates(min_value=datetime(1930, 1, 1).date(), max_value=datetime(2020, 12, 31).date())
    )
    region = draw(st.integers(110000, 659999))
    body = f"{region}{born:%Y%m%d}{draw(st.integers(0, 999)):03d}"
    check = "10X98765432"[sum(int(c) * w for c, w in zip(body, ID_WEIGHTS, strict=True)) % 11]
    return body + (check if draw(st.booleans()) or check != "X" else "x")


@st.composite
def plates(draw: st.DrawFn) -> str:
    head = draw(st.sampled_from(PROVINCES)) + draw(st.sampled_from(PLATE_LETTERS))
    serial_chars = "0123456789" + PLATE_LETTERS
    if draw(st.booleans()):  # new energy: 8 characters, D or F then five
        serial = draw(st.sampled_from("DF")) + draw(st.text("0123456789", min_size=5, max_size=5))
    else:
        serial = draw(st.text(serial_chars, min_size=4, max_size=4)) + draw(
            st.sampled_from("0123456789")
        )
    return head + draw(st.sampled_from(["", "·"])) + serial


@st.composite
def emails(draw: st.DrawFn) -> str:
    local = draw(st.from_regex(r"[a-z][a-z0-9._]{2,10}[a-z0-9]", fullmatch=True))
    return f"{local}@{draw(st.sampled_from(['163.com', 'qq.com', 'mail.example.cn']))}"


@st.composite
def names(draw: st.DrawFn) -> str:
    return draw(st.sampled_from(SURNAMES)) + draw(st.text(GIVEN, min_size=1, max_size=2))


NAME_CUES = ("我叫{}，", "{}先生反映，", "{}女士说，", "联系人：{}，", "姓名：{}，")


@st.composite
def landlines(draw: st.DrawFn) -> str:
    area = draw(st.sampled_from(["010", "021", "0571", "0755", "0898"]))
    local = draw(st.sampled_from("2345678")) + draw(st.text("0123456789", min_size=6, max_size=7))
    form = draw(st.sampled_from(["{a}-{n}", "({a}){n}", "{a} {n}", "{a}-{n}转{x}"]))
    return form.format(a=area, n=local, x=draw(st.integers(1, 9999)))


@st.composite
def addresses(draw: st.DrawFn) -> tuple[str, str]:
    """An exact address, and its numbers (what must go: the place before them stays)."""
    place = draw(st.sampled_from(["新华路", "解放街", "和平新村", "幸福里小区", "锦绣花园"]))
    house, unit, room = draw(st.integers(1, 999)), draw(st.integers(1, 9)), draw(st.integers(1, 33))
    room = room * 100 + draw(st.integers(1, 4))
    form = draw(st.sampled_from(["{h}号{u}单元{r}", "{h}栋{r}", "{h}幢{u}单元{r}室", "{h}号楼{r}"]))
    numbers = form.format(h=house, u=unit, r=room)
    return place + numbers, numbers


@st.composite
def seeded_texts(draw: st.DrawFn) -> tuple[str, list[str], list[str]]:
    """An appeal's text with identifiers in it, what of them must vanish, and the names."""
    address, numbers = draw(addresses())
    seeds = [
        ("电话{}，", draw(mobiles()), None),
        ("身份证号{}，", draw(resident_ids()), None),
        ("车牌{}的车，", draw(plates()), None),
        ("邮箱{} 。", draw(emails()), None),
        ("座机{}，", draw(landlines()), None),
        ("住{}，", address, numbers),
    ]
    seeds = draw(st.lists(st.sampled_from(seeds), min_size=1, max_size=6))
    people = draw(st.lists(names(), min_size=1, max_size=2))
    parts = [cue.format(value) for cue, value, _ in seeds]
    parts += [draw(st.sampled_from(NAME_CUES)).format(n) for n in people]
    parts += draw(st.lists(st.sampled_from(FILLERS), max_size=4))
    text = "".join(draw(st.permutations(parts)))
    return text, [vanish or value for _, value, vanish in seeds], people


@functools.cache
def shipped() -> AppealsConfig:
    return load_appeals(load_config())


def _flat(text: str) -> str:
    return re.sub(r"[\s\-·.]", "", text).upper()


@given(seeded=seeded_texts(), channel=st.sampled_from(sorted(PAYLOADS)))
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_no_identifier_leaves_any_adapter_intact(
    seeded: tuple[str, list[str], list[str]], channel: str
) -> None:
    text, identifiers, people = seeded
    assume(all(name not in filler for name in people for filler in FILLERS))
    field = {"hotline_12345": "content", "mayor_mailbox": "body", "message_board": "content"}
    field |= {"service_rating": "comment", "wechat": "Content"}
    appeals = shipped()
    intake = AppealIntake(appeals, Deidentifier(KEY), RepeatIndex(appeals.repeat_span))
    appeal = intake.accept(channel, PAYLOADS[channel](**{field[channel]: text}))
    published = appeal.to_json().decode()
    flat = _flat(re.sub(TOKEN, "", appeal.text))
    for value in identifiers:
        assert value not in published
        assert _flat(value) not in flat
    for name in people:
        assert name not in published
    # no text around the seeds has digits: none of the seeds' digits may remain
    assert not re.search("[0-9]", flat)
    assert "@" not in appeal.text


def test_the_documented_way_to_add_a_channel_works_as_written(tmp_path: Path) -> None:
    doc = (DEFAULT_CONFIG_DIR.parent / "docs" / "appeals.md").read_text(encoding="utf-8")
    section = doc.split("## Adding a channel", 1)[1]
    (code,) = re.findall(r"```python\n(.*?)```", section, re.S)
    (entry,) = re.findall(r"```yaml\n(.*?)```", section, re.S)
    module = types.ModuleType("citypkg_appeals_example")
    exec(compile(code, "docs/appeals.md", "exec"), module.__dict__)
    sys.modules[module.__name__] = module
    try:
        for name in ("city.yaml", "indicators.yaml"):
            shutil.copy(DEFAULT_CONFIG_DIR / name, tmp_path / name)
        data = yaml.safe_load((DEFAULT_CONFIG_DIR / "appeals.yaml").read_text(encoding="utf-8"))
        data["channels"] |= yaml.safe_load(entry.replace("citypkg.appeals", module.__name__))[
            "channels"
        ]
        (tmp_path / "appeals.yaml").write_text(yaml.safe_dump(data, allow_unicode=True), "utf-8")
        intake = AppealIntake(load_appeals(load_config(tmp_path)), Deidentifier(KEY))
        appeal = intake.accept(
            "city_app",
            {
                "ticket": 9,
                "kind": "垃圾",
                "district": "339905",
                "at": "2026-11-24T07:00+08:00",
                "says": "垃圾三天没收了，联系人：陈静",
            },
        )
    finally:
        del sys.modules[module.__name__]
    assert (appeal.appeal_id, appeal.category, appeal.department) == (
        "city_app:app-9",
        "sanitation",
        "sanitation",
    )
    assert re.fullmatch(f"垃圾三天没收了，联系人：{TOKEN}", appeal.text)


def test_a_name_or_number_the_payload_gives_is_replaced_wherever_the_text_repeats_it(
    intake: AppealIntake,
) -> None:
    # no cue before the name: only the payload's contact field tells it is one
    text = "张三反映：楼下烧烤店油烟太大，张三已经打过三次电话了，新华路12号3单元502。"
    appeal = intake.accept("hotline_12345", hotline(content=text, caller_name="张三"))
    assert "张三" not in appeal.text
    assert appeal.text.count(intake.deid.pseudonym("name", "张三")) == 2
    letter = mailbox(subject="李小明反映停水", body="李小明家停水三天了。")
    appeal = intake.accept("mayor_mailbox", letter)
    assert "李小明" not in appeal.text
    assert appeal.text.startswith(intake.deid.pseudonym("name", "李小明"))
