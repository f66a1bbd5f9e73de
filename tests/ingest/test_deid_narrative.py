"""Tests for Deidentifier.scrub_narrative: what a citizen writes about themselves.

Landlines, exact addresses and names introduced as names are replaced in appeals' text,
on top of everything scrub_text replaces, and scrub_text itself is left as it was.
"""

from __future__ import annotations

import re
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.ingest import deid as deid_module
from streams.ingest.deid import NARRATIVE_KINDS, Deidentifier
from tests.ingest.test_deid import _unbounded_repeats
from tests.regex_first import first_chars, lookahead_chars

KEY = b"test-key-not-for-production"
TOKEN = re.compile(r"<(phone|id|email|plate|name|address):[0-9a-f]{10}>")


@pytest.fixture
def deid() -> Deidentifier:
    return Deidentifier(KEY)


def _tokens(text: str) -> list[str]:
    return [m.group(1) for m in TOKEN.finditer(text)]


def test_narrative_kinds_name_what_is_added() -> None:
    assert NARRATIVE_KINDS == ("phone", "address", "name")


@pytest.mark.parametrize(
    "text",
    [
        "座机010-62345678",
        "座机010 62345678",
        "座机(010)62345678",
        "座机0571-8765 4321",
        "座机0571-8765432",
        "座机０５７１－８７６５４３２１",
        "座机0571-87654321转123",
        "座机0571-87654321-8008",
    ],
)
def test_a_landline_with_an_area_code_is_replaced_whole(deid: Deidentifier, text: str) -> None:
    scrubbed, count = deid.scrub_narrative(text)
    assert count == 1
    assert re.fullmatch(r"座机<phone:[0-9a-f]{10}>", scrubbed), scrubbed


def test_one_landline_written_three_ways_has_one_pseudonym(deid: Deidentifier) -> None:
    ways = ("0571-87654321", "(0571)8765 4321", "０５７１８７６５４３２１")
    assert len({deid.scrub_narrative(w)[0] for w in ways}) == 1
    assert deid.scrub_narrative(ways[0])[0] == deid.pseudonym("phone", "057187654321")


@pytest.mark.parametrize("cue", ["电话", "座机", "固话", "号码", "联系方式：", "电话 "])
def test_a_local_number_after_a_phone_cue_is_replaced_and_the_cue_kept(
    deid: Deidentifier, cue: str
) -> None:
    scrubbed, count = deid.scrub_narrative(f"{cue}87654321，谢谢")
    assert (scrubbed, count) == (f"{cue}{deid.pseudonym('phone', '87654321')}，谢谢", 1)


@pytest.mark.parametrize(
    ("text", "kept", "address"),
    [
        ("住新华路12号3单元502", "住新华路", "住新华路12号3单元502"),
        ("新华路88号门口", "新华路", "新华路88号"),
        ("和平新村3幢2单元301室漏水", "和平新村", "和平新村3幢2单元301室"),
        ("幸福里小区5栋1201漏水", "幸福里小区", "幸福里小区5栋1201"),
        ("锦绣花园3单元502", "锦绣花园", "锦绣花园3单元502"),
        ("建设路12-3号", "建设路", "建设路12-3号"),
    ],
)
def test_an_exact_address_loses_its_numbers_but_keeps_the_place(
    deid: Deidentifier, text: str, kept: str, address: str
) -> None:
    scrubbed, count = deid.scrub_narrative(text)
    assert count == 1
    assert scrubbed.startswith(kept + "<address:")
    assert not re.search(r"[0-9]号|单元|[0-9]幢|[0-9]栋|[0-9]室", scrubbed)
    # the place before the numbers is part of the value: one road's "12号" is not another's
    assert deid.pseudonym("address", address) in scrubbed


def test_equal_house_numbers_on_two_roads_do_not_correlate(deid: Deidentifier) -> None:
    one, _ = deid.scrub_narrative("新华路12号3单元502")
    two, _ = deid.scrub_narrative("人民路12号3单元502")
    assert one.removeprefix("新华路") != two.removeprefix("人民路")


@pytest.mark.parametrize(
    "text",
    [
        "12月3号5点开始施工",  # a date and an hour
        "12月3号15:30停水",
        "车停在3号楼下",  # one part, no road before it: where, not who
        "地铁3号线B出口",
        "住在88号",
        "3楼的灯坏了",
        "2026-11-24 08:15:00",  # a time is no landline
        "订单号20261124000421",
        "有一位女士和这位先生",  # forms of address without a surname
        "老百姓反映很久了",
        "人民路口红绿灯坏了",
    ],
)
def test_everyday_text_that_only_looks_close_is_left_alone(deid: Deidentifier, text: str) -> None:
    assert deid.scrub_narrative(text) == (text, 0)


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("我叫张三，想反映噪音", "张三"),
        ("我叫王伟想反映噪音", "王伟"),  # 想 starts the sentence, not the name
        ("我叫李小明。", "李小明"),
        ("名叫赵敏的住户", "赵敏"),  # 的 ends the name
        ("我叫欧阳娜娜啊", "欧阳娜娜"),  # a double surname and two more
        ("姓名：陈静", "陈静"),
        ("联系人：John Smith", "John Smith"),
        ("投诉人: 刘洋", "刘洋"),
        ("我姓王，住这里", "王"),
        ("免贵姓欧阳", "欧阳"),
        ("请王先生回电", "王"),
        ("张小明先生说", "张小明"),
        ("欧阳女士反映", "欧阳"),
        ("物业的李小姐", "李"),
    ],
)
def test_a_name_introduced_as_a_name_is_replaced(deid: Deidentifier, text: str, name: str) -> None:
    scrubbed, count = deid.scrub_narrative(text)
    assert count == 1
    assert scrubbed == text.replace(name, deid.pseudonym("name", name), 1)


def test_a_whole_appeal_keeps_its_sense_and_loses_every_identifier(deid: Deidentifier) -> None:
    text = (
        "我叫张三，电话13812345678，座机0571-87654321，身份证11010519800229123X，"
        "住新华路12号3单元502。楼下王先生的车京AD12345天天堵消防通道，"
        "邮箱zhang.san@example.com。"
    )
    scrubbed, count = deid.scrub_narrative(text)
    assert count == 8
    assert sorted(_tokens(scrubbed)) == sorted(
        ["name", "phone", "phone", "id", "address", "name", "plate", "email"]
    )
    for gone in ("张三", "13812345678", "87654321", "123X", "12号", "502", "王先生", "AD12345"):
        assert gone not in scrubbed
    assert "天天堵消防通道" in scrubbed and "新华路" in scrubbed


def test_what_scrub_text_finds_wins_where_matches_overlap(deid: Deidentifier) -> None:
    # a mobile number after a phone cue is a phone, once, not a local landline
    scrubbed, count = deid.scrub_narrative("电话13812345678")
    assert (scrubbed, count) == (f"电话{deid.pseudonym('phone', '13812345678')}", 1)


def test_scrub_text_still_leaves_narrative_kinds_alone(deid: Deidentifier) -> None:
    """Event attributes and ids keep today's behaviour: product codes that look like
    landlines and bin locations that look like addresses are data there."""
    text = "我叫张三，座机0571-87654321，3单元502"
    assert deid.scrub_text(text) == (text, 0)


def test_text_without_anything_to_replace_comes_back_as_it_was(deid: Deidentifier) -> None:
    text = "工地晚上十一点以后还在施工，噪音太大，严重影响休息。"
    assert deid.scrub_narrative(text) == (text, 0)


def test_thousands_of_identifiers_in_64k_of_appeals_are_all_found(deid: Deidentifier) -> None:
    # an appeal with one of each narrative kind and a mobile, repeated to 64 KiB: each
    # is found once, and the overlaps are settled without comparing every pair
    one = "我叫张三，电话13812345678，座机0571-87654321，住新华路12号3单元502。"
    text = one * (64 * 1024 // len(one))
    scrubbed, count = deid.scrub_narrative(text)
    assert count == 4 * (64 * 1024 // len(one))
    assert sorted(set(_tokens(scrubbed))) == ["address", "name", "phone"]
    assert not re.search(r"[0-9]{4}", TOKEN.sub("", scrubbed))


def test_the_narrative_pattern_only_uses_bounded_repetition() -> None:
    # as for the digit kinds: every repetition bounded keeps a scan linear in the text
    assert _unbounded_repeats(deid_module._NARRATIVE_RE.pattern) == []


# --- the narrative pattern's lookahead: the matches the plain alternatives give ---------

REFERENCE_NARRATIVE = re.compile(
    "|".join(
        (
            deid_module._LANDLINE,
            deid_module._LOCAL_LANDLINE,
            deid_module._ADDRESS,
            deid_module._NAME,
        )
    )
)
NARRATIVE_PIECES = st.sampled_from(
    [
        *"0123456789０１２３４５６７８９()（） -.:：转室号栋幢座层户楼房路街村，。！",
        *"我叫名做姓联系人投诉来电举报反映本免贵他她先生女士小姐座机固话码方式",
        *"欧阳司马王李张三丰新华和平单元号楼号院ext",
        "Wang Li",
        "13812345678",
        "0571-87654321",
        "(010)6234 5678",
        "新华路88号",
        "12号3单元502室",
        "张先生",
        "诸葛女士",
    ]
)
NARRATIVE_TEXT = st.one_of(
    st.text(max_size=60), st.lists(NARRATIVE_PIECES, max_size=24).map("".join)
)


def test_the_narrative_lookahead_holds_every_first_character_of_every_alternative() -> None:
    ahead, rest = lookahead_chars(deid_module._NARRATIVE_RE)
    assert rest == REFERENCE_NARRATIVE.pattern
    assert first_chars(rest) <= ahead


@settings(max_examples=1500, deadline=None)
@given(text=NARRATIVE_TEXT)
def test_property_the_narrative_pattern_matches_what_its_alternatives_match(text: str) -> None:
    def found(pattern: re.Pattern[str]) -> list[tuple[tuple[int, int], dict[str, str | None]]]:
        return [(m.span(), m.groupdict()) for m in pattern.finditer(text)]

    assert found(deid_module._NARRATIVE_RE) == found(REFERENCE_NARRATIVE)
    fast = Deidentifier(KEY).scrub_narrative(text)
    with mock.patch.object(deid_module, "_NARRATIVE_RE", REFERENCE_NARRATIVE):
        assert Deidentifier(KEY).scrub_narrative(text) == fast
