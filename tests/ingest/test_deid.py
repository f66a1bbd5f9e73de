"""Tests for streams.ingest.deid: identifiers in free text become keyed pseudonyms."""

from __future__ import annotations

import copy
import hashlib
import hmac
import random
import re
import re._constants as sre_constants
import re._parser as sre_parser
import string
from collections.abc import Mapping
from datetime import date
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.ingest import deid as deid_module
from streams.ingest.deid import KINDS, Deidentifier

KEY = b"test-key-not-for-production"
TOKEN = re.compile(r"<(phone|id|email|plate|name):[0-9a-f]{10}>")
PROVINCES = "京津沪渝冀豫云辽黑湘皖鲁新苏浙赣鄂桂甘晋蒙陕吉闽贵粤青藏川宁琼使领"

PHONE = "13812345678"
ID18 = "110105194912310021"
ID18_X = "11010519800229123X"
ID15 = "110105491231002"
EMAIL = "zhang.san+hotline@mail.example.com"
PLATE = "浙A12345"
PLATE_NEW_ENERGY = "粤B·D12345"


@pytest.fixture
def deid() -> Deidentifier:
    return Deidentifier(KEY)


def _tokens(text: str) -> list[str]:
    return [m.group(1) for m in TOKEN.finditer(text)]


# --- construction and pseudonyms -------------------------------------------------------


def test_empty_key_is_rejected() -> None:
    with pytest.raises(ValueError):
        Deidentifier(b"")


def test_repr_does_not_reveal_the_key(deid: Deidentifier) -> None:
    assert KEY.decode() not in repr(deid)


def test_kinds_constant_lists_the_free_text_kinds() -> None:
    assert KINDS == ("phone", "id", "email", "plate")


def test_pseudonym_is_kind_plus_first_10_hex_of_hmac_sha256_of_normalised_value(
    deid: Deidentifier,
) -> None:
    expected = hmac.new(KEY, b"phone:13812345678", hashlib.sha256).hexdigest()[:10]
    assert deid.pseudonym("phone", "+86 138-1234-5678") == f"<phone:{expected}>"


def test_same_value_and_key_give_the_same_pseudonym() -> None:
    assert Deidentifier(KEY).pseudonym("id", ID18) == Deidentifier(KEY).pseudonym("id", ID18)


def test_different_key_gives_a_different_pseudonym() -> None:
    assert Deidentifier(KEY).pseudonym("phone", PHONE) != Deidentifier(b"other").pseudonym(
        "phone", PHONE
    )


def test_different_kind_gives_a_different_pseudonym_for_the_same_value(
    deid: Deidentifier,
) -> None:
    assert deid.pseudonym("phone", PHONE) != deid.pseudonym("id", PHONE)


@pytest.mark.parametrize(
    "variant",
    [
        "13812345678",
        "+8613812345678",
        "+86 138 1234 5678",
        "+86-138-1234-5678",
        "008613812345678",
        "0086 13812345678",
        "8613812345678",
        "138-1234-5678",
        "138 1234 5678",
        "１３８１２３４５６７８",
    ],
)
def test_phone_with_and_without_country_prefix_or_separators_gets_the_same_pseudonym(
    deid: Deidentifier, variant: str
) -> None:
    assert deid.pseudonym("phone", variant) == deid.pseudonym("phone", PHONE)
    scrubbed, count = deid.scrub_text(f"电话{variant}。")
    assert (scrubbed, count) == (f"电话{deid.pseudonym('phone', PHONE)}。", 1)


def test_formatting_variants_of_ids_plates_and_emails_share_a_pseudonym(
    deid: Deidentifier,
) -> None:
    assert deid.pseudonym("id", ID18_X) == deid.pseudonym("id", ID18_X.lower())
    assert deid.pseudonym("plate", "粤B·D12345") == deid.pseudonym("plate", "粤BD12345")
    assert deid.pseudonym("plate", "京A 12345") == deid.pseudonym("plate", "京A-12345")
    assert deid.pseudonym("email", "Zhang@Example.COM") == deid.pseudonym(
        "email", "zhang@example.com"
    )


def test_email_dots_are_significant_for_the_pseudonym(deid: Deidentifier) -> None:
    assert deid.pseudonym("email", "a.b@example.com") != deid.pseudonym("email", "ab@example.com")


# --- each kind in Chinese and English sentences --------------------------------------

SENTENCES = [
    ("phone", PHONE, "我的电话是{}，请尽快回电。"),
    ("phone", "138 1234 5678", "Please call me back on {} tonight."),
    ("phone", "+86-138-1234-5678", "联系方式：{}（白天）"),
    ("id", ID18, "身份证号{}，户籍在朝阳区。"),
    ("id", ID18_X, "My ID card number is {}."),
    ("id", ID15, "老身份证{}还能用吗"),
    ("email", EMAIL, "邮箱{}谢谢"),
    ("email", "13812345678@qq.com", "Send the photos to {} please."),
    ("plate", PLATE, "车牌{}的车占用消防通道"),
    ("plate", PLATE_NEW_ENERGY, "A car with plate {} is parked on the pavement."),
    ("plate", "京AD12345", "新能源车{}一直停在这里"),
    ("plate", "京A·1234学", "教练车{}在小区里练车"),
]


@pytest.mark.parametrize(("kind", "value", "template"), SENTENCES)
def test_each_identifier_kind_in_a_sentence_is_replaced_and_counted(
    deid: Deidentifier, kind: str, value: str, template: str
) -> None:
    text = template.format(value)
    scrubbed, count = deid.scrub_text(text)
    assert count == 1
    assert _tokens(scrubbed) == [kind]
    assert value not in scrubbed
    assert scrubbed == template.format(deid.pseudonym(kind, value))


def test_several_identifiers_in_one_complaint_are_all_replaced_and_counted(
    deid: Deidentifier,
) -> None:
    text = (
        f"我叫张三，电话{PHONE}，身份证{ID18}，邮箱{EMAIL}，"
        f"车牌{PLATE}和{PLATE_NEW_ENERGY}每天晚上停在3号楼下，再打{PHONE}找我。"
    )
    scrubbed, count = deid.scrub_text(text)
    assert count == 6
    assert sorted(_tokens(scrubbed)) == ["email", "id", "phone", "phone", "plate", "plate"]
    for value in (PHONE, ID18, EMAIL, PLATE, PLATE_NEW_ENERGY):
        assert value not in scrubbed
    assert "3号楼" in scrubbed


def test_identifier_glued_to_cjk_characters_is_found_without_word_boundaries(
    deid: Deidentifier,
) -> None:
    scrubbed, count = deid.scrub_text(f"电话{PHONE}身份证{ID18}车牌{PLATE}谢谢")
    assert count == 3
    assert _tokens(scrubbed) == ["phone", "id", "plate"]


def test_full_width_digits_typed_with_an_ime_are_scrubbed_and_rest_kept(
    deid: Deidentifier,
) -> None:
    scrubbed, count = deid.scrub_text("电话：１３８－１２３４－５６７８，（急）")
    assert (scrubbed, count) == (f"电话：{deid.pseudonym('phone', PHONE)}，（急）", 1)


def test_id_with_wrong_checksum_is_still_scrubbed(deid: Deidentifier) -> None:
    mistyped = ID18[:-1] + "9"
    scrubbed, count = deid.scrub_text(f"身份证{mistyped}")
    assert count == 1
    assert mistyped not in scrubbed


def test_email_made_of_a_phone_number_is_one_email_not_a_phone(deid: Deidentifier) -> None:
    scrubbed, count = deid.scrub_text("qq邮箱13812345678@qq.com")
    assert (scrubbed, count) == (f"qq邮箱{deid.pseudonym('email', '13812345678@qq.com')}", 1)


def test_email_does_not_swallow_adjacent_chinese_or_trailing_full_stop(
    deid: Deidentifier,
) -> None:
    scrubbed, _ = deid.scrub_text("请发到wang@example.org。")
    assert scrubbed == f"请发到{deid.pseudonym('email', 'wang@example.org')}。"
    scrubbed, _ = deid.scrub_text("Mail wang@example.org.")
    assert scrubbed == f"Mail {deid.pseudonym('email', 'wang@example.org')}."


# --- text without identifiers is left alone --------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "",
        "小区门口垃圾堆积好几天了，气味很大。",
        "3号楼 12 层楼道灯坏了",
        "2026-11-24 晚上 8:30 发现",
        "已经交了120元维修费，还有 1,380.50 元没退",
        "订单号20261124123456789012未处理",
        "Order 20261124123456789012 was never delivered",
        "号码138123456789多了一位",  # 12 digits: longer than a mobile
        "号码913812345678多了一位",  # a mobile at the end of a longer digit run
        "流水号9110105194912310021",  # an 18-character ID at the end of 19 digits
        "流水号1101051949123100219",  # ... and at the start of 19 digits
        "身份证110105194913310021月份不对",  # month 13
        "身份证110105194902300021日期不对",  # 30 February
        "车牌京A1234567太长了",
        "京ABCDEF 不是车牌，没有数字",
        "email me at home @ 8pm",
        "Room 1203, floor 12, building 3, call 110 or 12345",
    ],
)
def test_text_without_identifiers_comes_back_unchanged_with_count_zero(
    deid: Deidentifier, text: str
) -> None:
    assert deid.scrub_text(text) == (text, 0)


def test_text_without_identifiers_is_returned_as_the_same_object(deid: Deidentifier) -> None:
    text = "西湖区文三路3号楼12层，2026-11-24"
    assert deid.scrub_text(text)[0] is text


# --- grouped, dotted and full-width forms -----------------------------------------------

# Full-width ASCII is U+FF01..U+FF5E (ASCII + 0xFEE0); the IME's space is U+3000.
_TO_FULLWIDTH = {cp: cp + 0xFEE0 for cp in range(0x21, 0x7F)} | {0x20: 0x3000}
_FROM_FULLWIDTH = {cp + 0xFEE0: cp for cp in range(0x21, 0x7F)} | {0x3000: 0x20}


def fullwidth(text: str) -> str:
    return text.translate(_TO_FULLWIDTH)


def ascii_fold(text: str) -> str:
    return text.translate(_FROM_FULLWIDTH)


GROUPED_PHONES = [
    "138.1234.5678",
    "138 1234 5678",
    "138-1234.5678",
    "138.1234-5678",
    "138 - 1234 - 5678",
    "138. 1234 .5678",
    "1381234 5678",
    "138 12345678",
    "+86 138 1234 5678",
    "+86.138.1234.5678",
    "(+86)13812345678",
    "(+86) 138-1234-5678",
    "(0086)13812345678",
    "(86)138 1234 5678",
    "0086-138-1234-5678",
    "86 138 1234 5678",
]


@pytest.mark.parametrize(
    "variant",
    [
        *GROUPED_PHONES,
        *(fullwidth(v) for v in GROUPED_PHONES),
        "138－1234－5678",  # ASCII digits, full-width separators: how an IME mixes them
        "138．1234．5678",
        "138　1234　5678",
        "（+86）13812345678",
        "（＋８６）１３８ 1234 5678",
    ],
)
def test_grouped_and_full_width_mobiles_are_one_phone_with_the_bare_pseudonym(
    deid: Deidentifier, variant: str
) -> None:
    for template in ("电话{}。", "call {} now", "{}"):
        scrubbed, count = deid.scrub_text(template.format(variant))
        assert (scrubbed, count) == (template.format(deid.pseudonym("phone", PHONE)), 1)


ID18_X_BARE = "11010519491231002X"
GROUPED_IDS = [
    ("110105 19491231 002X", ID18_X_BARE),
    ("110105-19491231-002x", ID18_X_BARE),
    ("110105.19491231.002X", ID18_X_BARE),
    ("110105 - 19491231 - 002X", ID18_X_BARE),
    ("110105-19491231.002X", ID18_X_BARE),
    ("110105 194912310021", ID18),
    ("11010519491231 0021", ID18),
    ("110105 491231 002", ID15),
    ("110105-491231-002", ID15),
    ("110105.491231.002", ID15),
]


@pytest.mark.parametrize(
    ("variant", "bare"),
    [*GROUPED_IDS, *((fullwidth(v), bare) for v, bare in GROUPED_IDS)],
)
def test_grouped_and_full_width_id_numbers_are_one_id_with_the_bare_pseudonym(
    deid: Deidentifier, variant: str, bare: str
) -> None:
    scrubbed, count = deid.scrub_text(f"身份证号{variant}，请核实")
    assert (scrubbed, count) == (f"身份证号{deid.pseudonym('id', bare)}，请核实", 1)


@pytest.mark.parametrize(
    "variant",
    [
        "zhang.san＠example．com",
        "zhang．san＠example．com",
        "zhang.san@example．com",
        fullwidth("zhang.san@example.com"),
    ],
)
def test_full_width_at_sign_and_dots_in_emails_give_the_ascii_pseudonym(
    deid: Deidentifier, variant: str
) -> None:
    scrubbed, count = deid.scrub_text(f"邮箱{variant}，谢谢")
    assert (scrubbed, count) == (f"邮箱{deid.pseudonym('email', 'zhang.san@example.com')}，谢谢", 1)


@pytest.mark.parametrize(
    "variant", ["京A12345", "京A 12345", "京A.12345", "京A·12345", "京A-12345", "京Ａ１２３４５"]
)
def test_plates_with_separators_or_full_width_give_one_pseudonym(
    deid: Deidentifier, variant: str
) -> None:
    scrubbed, count = deid.scrub_text(f"车牌{variant}占道")
    assert (scrubbed, count) == (f"车牌{deid.pseudonym('plate', '京A12345')}占道", 1)


@pytest.mark.parametrize(
    "text",
    [
        "9138 1234 5678",  # the first group is 4 digits: part of a longer number
        "138 1234 56789",
        "1110105 19491231 002X",  # 7-digit region
        "110105 19491231 002X1",
        "110105 19490230 002X",  # 30 February, grouped
        "110105-19491331-002X",  # month 13, grouped
        "110105 491331 002",
        "138.12345678",  # a decimal, not a dotted phone: only one gap has a dot
        "131.12345678",  # a longitude in Heilongjiang
        "0.1381234567",  # ten decimals
        "110105.194912310021",
        "138 1234  5678",  # two spaces are not one gap
        "138/1234/5678",
        "（物业说下周）　请处理",  # full-width brackets and spaces without digits nearby
    ],
)
def test_grouped_look_alikes_that_are_not_identifiers_are_left_alone(
    deid: Deidentifier, text: str
) -> None:
    assert deid.scrub_text(text) == (text, 0)
    assert deid.scrub_identifier(text) == (text, 0)


# Envelope strings and values of a normal event: none of these is personal data.
NOT_PERSONAL = [
    "339901",  # district code
    "339901001",  # street code
    "2026-11-24T08:15:00+08:00",
    "2026-11-24T08:15:00.123456Z",
    "20261124T081500+0800",
    "iot.pm25.339901001.01",
    "fire.temperature_c.339901001.01",
    "traffic.speed_kmh.339901001.01",
    "hotline.complaints.339901",
    "tr-339901-0001",
    "hl-339903-20261124-00042",
    "traffic-339901-3fa9c2-00000042",
    "iot-339906-d8c252-00000300",  # run tags ending in digits: phone-like if digits were alike
    "fire-339901-e28469-00012345",
    "31.5",
    "120.17,30.25",
    "20261124123456789012",  # 20-digit order number
    "order 20261124123456789012 shipped",
    "1764000000000",  # epoch milliseconds
    "v1.13.2-rc.1",
    "",
]


@pytest.mark.parametrize("text", NOT_PERSONAL)
def test_envelope_strings_without_personal_data_are_untouched(
    deid: Deidentifier, text: str
) -> None:
    assert deid.scrub_text(text) == (text, 0)
    scrubbed, count = deid.scrub_identifier(text)
    assert scrubbed is text
    assert count == 0
    assert deid.scrub_message(text) == text


# --- envelope strings: scrub_identifier, and messages: scrub_message -------------------


@pytest.mark.parametrize(
    ("text", "kind", "value", "template"),
    [
        ("13812345678-0001", "phone", PHONE, "{}-0001"),
        ("zhang.san@example.com", "email", "zhang.san@example.com", "{}"),
        ("hl-339903-138.1234.5678", "phone", PHONE, "hl-339903-{}"),
        ("src.(+86)13812345678.01", "phone", PHONE, "src.{}.01"),
        ("kiosk-110105194912310021", "id", ID18, "kiosk-{}"),
        ("hotline.浙A12345", "plate", PLATE, "hotline.{}"),
        ("热线１３８１２３４５６７８", "phone", PHONE, "热线{}"),
    ],
)
def test_scrub_identifier_replaces_personal_data_in_envelope_strings(
    deid: Deidentifier, text: str, kind: str, value: str, template: str
) -> None:
    expected = (template.format(deid.pseudonym(kind, value)), 1)
    assert deid.scrub_identifier(text) == expected
    assert deid.scrub_identifier(text) == expected  # second time from the shape cache
    assert deid.scrub_text(text) == expected


def test_scrub_identifier_survives_a_lone_surrogate(deid: Deidentifier) -> None:
    # JSON may carry "\ud800"; such a string cannot be UTF-8 encoded.
    assert deid.scrub_identifier("\ud800-1") == ("\ud800-1", 0)
    assert deid.scrub_identifier("\ud80013812345678") == (
        f"\ud800{deid.pseudonym('phone', PHONE)}",
        1,
    )
    assert TOKEN.fullmatch(deid.pseudonym("name", "\ud800"))


@st.composite
def identifiers(draw: st.DrawFn) -> str:
    """Id-like strings (codes, counters, hex tags, separators), some with a phone or an ID
    number inside, grouped as people write them."""
    parts = draw(
        st.lists(
            st.one_of(
                st.text("0123456789", min_size=1, max_size=12),
                st.text("0123456789abcdef", min_size=1, max_size=8),
                st.sampled_from([PHONE, "13912345678", ID18, ID18_X, "110105491231002"]),
                st.sampled_from(["138 1234 5678", "138-1234-5678", "110105 19491231 002X"]),
            ),
            min_size=1,
            max_size=5,
        )
    )
    seps = draw(st.lists(st.sampled_from(["-", ".", "", " ", "(", ")", "+"]), min_size=len(parts)))
    return "".join(p + sep for p, sep in zip(parts, seps, strict=False))


@settings(max_examples=500)
@given(text=identifiers())
def test_scrub_identifier_answers_as_scrub_text(text: str) -> None:
    """The identifiers' pre-filter (the text's shape) never lets personal data through."""
    deid = Deidentifier(KEY)
    assert deid.scrub_identifier(text) == deid.scrub_text(text)


@pytest.mark.parametrize(
    "text", ["iot-339906-d8c252-00000300", "fire-339901-e28469-00012345", "tr-339901-0001"]
)
def test_ids_without_a_phone_s_first_digits_are_cleared_by_their_shape(text: str) -> None:
    """A sensor id whose run tag ends in digits is cleared by its shape (one dict lookup
    per event), not by the full patterns: a run of the simulated city has such a tag
    on every event id now and then, and the patterns cost every event 4 µs."""
    Deidentifier(KEY).scrub_identifier(text)
    shape = text.encode().translate(deid_module._SHAPE_TABLE)
    assert deid_module._SHAPE_VERDICTS[shape] is False


def test_shape_cache_stays_bounded() -> None:
    deid = Deidentifier(KEY)
    for n in range(deid_module._SHAPE_CACHE_ENTRIES + 10):
        deid.scrub_identifier("x" * (n % 100) + "-" * (n // 100))
    assert 0 < len(deid_module._SHAPE_VERDICTS) <= deid_module._SHAPE_CACHE_ENTRIES


def test_scrub_message_scrubs_dead_letter_details(deid: Deidentifier) -> None:
    detail = "street '13812345678' is not a street of district '339901'"
    assert deid.scrub_message(detail) == (
        f"street '{deid.pseudonym('phone', PHONE)}' is not a street of district '339901'"
    )


# --- linear time -------------------------------------------------------------------------


def _unbounded_repeats(pattern: str) -> list[str]:
    """Repetitions without an upper bound anywhere in ``pattern``'s parse tree."""
    found: list[str] = []

    def walk(items: Any) -> None:
        for op, av in items:
            if op in (sre_constants.MAX_REPEAT, sre_constants.MIN_REPEAT):
                if av[1] == sre_constants.MAXREPEAT:
                    found.append(str(op))
                walk(av[2])
            elif op is sre_constants.BRANCH:
                for branch in av[1]:
                    walk(branch)
            elif op is sre_constants.SUBPATTERN:
                walk(av[3])
            elif op in (sre_constants.ASSERT, sre_constants.ASSERT_NOT):
                walk(av[1])

    walk(sre_parser.parse(pattern))
    return found


@pytest.mark.parametrize("name", ["_ID18", "_ID15", "_PHONE", "_PLATE"])
def test_digit_kind_patterns_only_use_bounded_repetition(name: str) -> None:
    # Why this stands in for a timing test: with every repetition bounded, each start
    # position costs a bounded amount of work, so a scan is linear in the text whatever
    # the text. (The e-mail pattern has one '+', on the local part, and only starts
    # where a run of local-part characters starts.)
    assert _unbounded_repeats(getattr(deid_module, name)) == []
    assert _unbounded_repeats(r"a+[0-9]{2,}") == ["MAX_REPEAT", "MAX_REPEAT"]


def _adversarial_64k() -> dict[str, str]:
    size = 64 * 1024
    rng = random.Random(20261124)
    return {
        "random": "".join(rng.choice("0123456789 .-+()") for _ in range(size)),
        "random full-width": "".join(
            rng.choice("０１２３４５６７８９　．－＋（）") for _ in range(size)
        ),
        "near phones": ("138 1234 " * size)[:size],
        "near dotted phones": ("138.1234.567." * size)[:size],
        "prefixes": ("(+86 " * size)[:size],
        "near ids": ("110105 19491231 002 " * size)[:size],
        "one digit run": "1" * size,
        "near e-mails": ("a.a-" * size)[:size] + "@" + ("a-" * size)[:size],
    }


@pytest.mark.parametrize("name", list(_adversarial_64k()))
def test_adversarial_64k_input_scrubs_consistently(deid: Deidentifier, name: str) -> None:
    # Timed once by hand (see the module docstring); tests assert no wall-clock bound.
    text = _adversarial_64k()[name]
    scrubbed, count = deid.scrub_text(text)
    assert deid.scrub_identifier(text) == (scrubbed, count)
    assert len(_tokens(scrubbed)) == count
    if name.startswith(("near", "prefixes", "one")):
        assert (scrubbed, count) == (text, 0)


def test_many_identifiers_in_64k_are_all_found(deid: Deidentifier) -> None:
    text = "x138 1234 5678 " * 4369  # 65,535 characters
    scrubbed, count = deid.scrub_text(text)
    assert count == 4369
    assert scrubbed == f"x{deid.pseudonym('phone', PHONE)} " * 4369


# --- property tests ---------------------------------------------------------------------

# Surrounding text that cannot itself contain an identifier: no digits (ASCII or
# full-width), no '@'. It does include province characters and uppercase letters, so a
# plate's neighbours can look like plate prefixes, and the full-width brackets and space
# that decide whether a text is folded to ASCII.
SAFE_CHARS = st.one_of(
    st.characters(min_codepoint=0x4E00, max_codepoint=0x9FFF),
    st.sampled_from(string.ascii_letters + PROVINCES + " ，。：！,.!?-（）\u3000"),
)
SAFE_TEXT = st.text(SAFE_CHARS, max_size=30)

DIGITS = string.digits
# Separators in both gaps (dots allowed), or an optional dot-free one in each gap.
GAPS_BOTH = [" ", "-", ".", " - ", " . ", "- ", " -", ". ", " ."]
GAPS_EACH = ["", " ", "-", " - ", "- ", " -"]
PREFIXES = ["", "+86", "0086", "86", "(+86)", "(0086)", "(86)"]
PREFIX_GAPS = ["", " ", "-", ".", " - "]


@st.composite
def maybe_fullwidth(draw: st.DrawFn, text: str) -> str:
    """``text`` as typed: ASCII, all full-width, or a mix character by character."""
    mode = draw(st.sampled_from(["ascii", "full", "mixed"]))
    if mode == "ascii":
        return text
    if mode == "full":
        return fullwidth(text)
    mask = draw(st.integers(0, 2 ** len(text) - 1))  # one draw, not one per character
    return "".join(fullwidth(c) if mask >> i & 1 else c for i, c in enumerate(text))


def _grouped(draw: st.DrawFn, groups: list[str]) -> str:
    gaps = GAPS_BOTH if draw(st.booleans()) else GAPS_EACH
    return groups[0] + "".join(draw(st.sampled_from(gaps)) + group for group in groups[1:])


@st.composite
def mobiles(draw: st.DrawFn) -> tuple[str, str]:
    """(mobile as written, its bare 11 digits)."""
    bare = "1" + draw(st.sampled_from("3456789")) + draw(st.text(DIGITS, min_size=9, max_size=9))
    prefix = draw(st.sampled_from(PREFIXES))
    if prefix:
        prefix += draw(st.sampled_from(PREFIX_GAPS))
    written = prefix + _grouped(draw, [bare[:3], bare[3:7], bare[7:]])
    return draw(maybe_fullwidth(written)), bare


@st.composite
def id_numbers(draw: st.DrawFn, check: str = DIGITS + "Xx") -> tuple[str, str]:
    """(ID number as written, its 18 or 15 bare characters upper-cased)."""
    region = draw(st.sampled_from("123456789")) + draw(st.text(DIGITS, min_size=5, max_size=5))
    seq = draw(st.text(DIGITS, min_size=3, max_size=3))
    if draw(st.booleans()):
        born = draw(st.dates(min_value=date(1900, 1, 1), max_value=date(2099, 12, 31)))
        groups = [region, f"{born:%Y%m%d}", seq + draw(st.sampled_from(check))]
    else:
        born = draw(st.dates(min_value=date(1900, 1, 1), max_value=date(1999, 12, 31)))
        groups = [region, f"{born:%y%m%d}", seq]
    written = _grouped(draw, groups)
    return draw(maybe_fullwidth(written)), "".join(groups).upper()


_ALNUM = string.ascii_lowercase + DIGITS


def _word(inner: str, max_inner: int) -> st.SearchStrategy[str]:
    """Alphanumeric at both ends, ``inner`` characters between (cheaper than from_regex)."""
    return st.builds(
        lambda first, middle, last: first + middle + last,
        st.sampled_from(_ALNUM),
        st.text(inner, max_size=max_inner),
        st.sampled_from(["", *_ALNUM]),
    )


SIMPLE_EMAILS = st.builds(
    lambda local, labels, tld: f"{local}@{'.'.join(labels)}.{tld}",
    _word(_ALNUM + "._+-", 15),
    st.lists(_word(_ALNUM + "-", 10), min_size=1, max_size=3),
    st.text(string.ascii_lowercase, min_size=2, max_size=6),
)


@st.composite
def emails(draw: st.DrawFn) -> tuple[str, str]:
    """(address as written, the ASCII address)."""
    address = draw(SIMPLE_EMAILS)
    return draw(maybe_fullwidth(address)), address


@st.composite
def plates(draw: st.DrawFn) -> tuple[str, str]:
    """(plate as written, plate without separator)."""
    province = draw(st.sampled_from(PROVINCES))
    letter = draw(st.sampled_from(string.ascii_uppercase))
    alnum = string.ascii_uppercase + DIGITS
    form = draw(st.sampled_from(["ordinary", "new-energy", "special"]))
    size = {"ordinary": 5, "new-energy": 6, "special": 4}[form]
    serial = list(draw(st.text(alnum, min_size=size, max_size=size)))
    serial[draw(st.integers(0, size - 1))] = draw(st.sampled_from(DIGITS))  # needs a digit
    suffix = draw(st.sampled_from("警学挂")) if form == "special" else ""
    if form == "ordinary":
        suffix = draw(st.sampled_from(["", "警", "学", "挂"]))
    sep = draw(st.sampled_from(["", "·", "・", ".", "-", " "]))
    bare = province + letter + "".join(serial) + suffix
    typed = draw(maybe_fullwidth(letter + sep + "".join(serial)))
    return province + typed + suffix, bare


IDENTIFIERS = st.one_of(
    mobiles().map(lambda m: ("phone", *m)),
    id_numbers().map(lambda i: ("id", *i)),
    emails().map(lambda e: ("email", *e)),
    plates().map(lambda p: ("plate", *p)),
)


def _digits(text: str) -> str:
    return re.sub(r"[^0-9]", "", ascii_fold(text))


def _assert_gone(scrubbed: str, kind: str, bare: str) -> None:
    """The normalised identifier is nowhere in ``scrubbed``, whatever its spelling."""
    folded = ascii_fold(scrubbed)
    if kind == "phone":
        assert bare not in _digits(scrubbed)
    elif kind == "id":
        assert bare[:17] not in _digits(scrubbed)
    elif kind == "email":
        assert bare.lower() not in folded.lower()
        assert bare.split("@")[0].lower() + "@" not in folded.lower()
    else:
        assert bare not in re.sub(r"[\s\-·・.]", "", folded)


def _no_plate_prefix(before: str) -> str:
    # A province and a letter right before a grouped ID make a plate of its first group
    # ("京A110105 ..."): the earlier match wins, by design. Text does not run that way.
    return before + "的" if before[-1:].isascii() and before[-1:].isupper() else before


@settings(max_examples=2000, deadline=None)
@given(before=SAFE_TEXT, identifier=IDENTIFIERS, after=SAFE_TEXT)
def test_property_any_identifier_in_any_spelling_in_random_text_never_survives(
    before: str, identifier: tuple[str, str, str], after: str
) -> None:
    kind, written, bare = identifier
    deid = Deidentifier(KEY)
    if kind in ("phone", "id"):
        before = _no_plate_prefix(before)
    scrubbed, count = deid.scrub_text(before + written + after)
    assert count == 1
    assert _tokens(scrubbed) == [kind]
    _assert_gone(scrubbed, kind, bare)
    if kind in ("phone", "id"):
        # exactly the identifier was replaced, by its spelling-independent pseudonym
        assert deid.pseudonym(kind, written) == deid.pseudonym(kind, bare)
        assert scrubbed == before + deid.pseudonym(kind, bare) + after
    assert deid.scrub_identifier(before + written + after) == (scrubbed, count)


@settings(max_examples=300)
@given(before=SAFE_TEXT, email=st.emails(), after=SAFE_TEXT)
def test_property_any_valid_email_in_random_text_never_survives(
    before: str, email: str, after: str
) -> None:
    scrubbed, count = Deidentifier(KEY).scrub_text(before + email + after)
    assert count >= 1
    assert email not in scrubbed
    assert email.split("@")[0] + "@" not in scrubbed


@settings(max_examples=300)
@given(
    pieces=st.lists(
        st.tuples(
            # Non-empty glue without space, hyphen, dot, '@' or uppercase letters, so
            # numbers cannot join into a grouped mobile and letters cannot start a plate.
            st.text(
                st.one_of(
                    st.characters(min_codepoint=0x4E00, max_codepoint=0x9FFF),
                    st.sampled_from(string.ascii_lowercase + PROVINCES + "，。元号楼层:/"),
                ),
                min_size=1,
                max_size=6,
            ),
            st.integers(min_value=0, max_value=9_999_999_999),
        ),
        max_size=8,
    )
)
def test_property_text_with_only_ordinary_numbers_is_unchanged(
    pieces: list[tuple[str, int]],
) -> None:
    text = "".join(f"{glue}{number}" for glue, number in pieces)
    assert Deidentifier(KEY).scrub_text(text) == (text, 0)


@given(text=SAFE_TEXT)
def test_property_text_without_digits_or_at_sign_is_unchanged(text: str) -> None:
    assert Deidentifier(KEY).scrub_text(text) == (text, 0)


# Pieces of machine identifiers, and things that make them suspect.
ID_PIECES = st.one_of(
    st.text(DIGITS, min_size=1, max_size=20),
    st.sampled_from(
        [
            *(" ", ".", "-", " - ", "(", ")", "+", "+86", "(+86)", "0086", "86", "_", "x", "X"),
            *(
                "iot",
                "pm25",
                "tr",
                "hl",
                "fire",
                "temperature_c",
                "@",
                "＠",
                "．",
                "１",
                "京A",
                "中",
            ),
        ]
    ),
    mobiles().map(lambda m: m[0]),
    id_numbers().map(lambda i: i[0]),
)


@settings(max_examples=500, deadline=None)
@given(pieces=st.lists(ID_PIECES, max_size=8))
def test_property_scrub_identifier_gives_what_scrub_text_gives(pieces: list[str]) -> None:
    text = "".join(pieces)
    deid = Deidentifier(KEY)
    assert deid.scrub_identifier(text) == deid.scrub_text(text)
    assert deid.scrub_identifier(text) == deid.scrub_text(text)  # cached verdict too


@settings(max_examples=300, deadline=None)
@given(
    district=st.integers(100000, 999999),
    street=st.integers(1, 999),
    n=st.integers(0, 10**8 - 1),
    day=st.dates(min_value=date(2020, 1, 1), max_value=date(2035, 12, 31)),
    template=st.sampled_from(
        [
            "tr-{d}-{n4}",
            "iot.pm25.{d}{s}.01",
            "fire.temperature_c.{d}{s}.{n2}",
            "hl-{d}-{day:%Y%m%d}-{n5}",
            "traffic-{d}-3fa9c2-{n8}",
            "hotline.complaints.{d}",
            "{day:%Y-%m-%d}T08:15:00+08:00",
        ]
    ),
)
def test_property_typical_envelope_ids_are_untouched(
    district: int, street: int, n: int, day: date, template: str
) -> None:
    text = template.format(
        d=district, s=f"{street:03d}", n2=f"{n % 100:02d}", n4=f"{n % 10**4:04d}",
        n5=f"{n % 10**5:05d}", n8=f"{n:08d}", day=day,
    )  # fmt: skip
    assert Deidentifier(KEY).scrub_identifier(text) == (text, 0)


# --- attributes -------------------------------------------------------------------------


def test_scrub_attributes_scrubs_nested_dicts_and_lists_and_counts(
    deid: Deidentifier,
) -> None:
    attrs: dict[str, Any] = {
        "description": f"电话{PHONE}",
        "reporter": {"notes": [f"车牌{PLATE}", "没问题", {"deep": f"mail {EMAIL}"}]},
        "history": [[f"身份证{ID18}"]],
    }
    scrubbed, count = deid.scrub_attributes(attrs)
    assert count == 4
    assert scrubbed["description"] == f"电话{deid.pseudonym('phone', PHONE)}"
    assert scrubbed["reporter"]["notes"][0] == f"车牌{deid.pseudonym('plate', PLATE)}"
    assert scrubbed["reporter"]["notes"][1] == "没问题"
    assert scrubbed["reporter"]["notes"][2]["deep"] == f"mail {deid.pseudonym('email', EMAIL)}"
    assert scrubbed["history"][0][0] == f"身份证{deid.pseudonym('id', ID18)}"


@pytest.mark.parametrize(
    ("key", "value", "kind"),
    [
        ("phone", "010-12345678", "phone"),  # a landline: no pattern, still replaced
        ("Mobile", 13812345678, "phone"),  # stored as a number
        ("TEL", "12345", "phone"),
        ("id_number", "not-an-id", "id"),
        ("ID_Card", ID18, "id"),
        ("email", "someone at example dot com", "email"),
        ("plate", "京A?????", "plate"),
        ("licence_plate", "浙A12345", "plate"),
        ("License_Plate", "unknown", "plate"),
        ("name", "张三", "name"),
        ("Caller_Name", "John Smith", "name"),
    ],
)
def test_scrub_attributes_replaces_values_under_identifier_named_keys_wholesale(
    deid: Deidentifier, key: str, value: Any, kind: str
) -> None:
    scrubbed, count = deid.scrub_attributes({key: value, "other": "ok"})
    assert scrubbed == {key: deid.pseudonym(kind, str(value)), "other": "ok"}
    assert count == 1


def test_scrub_attributes_applies_identifier_key_to_every_leaf_below_it(
    deid: Deidentifier,
) -> None:
    scrubbed, count = deid.scrub_attributes(
        {"caller": {"phone": ["13812345678", "021-5555 6666"], "name": {"family": "张"}}}
    )
    assert scrubbed == {
        "caller": {
            "phone": [deid.pseudonym("phone", PHONE), deid.pseudonym("phone", "021-5555 6666")],
            "name": {"family": deid.pseudonym("name", "张")},
        }
    }
    assert count == 3


def test_scrub_attributes_leaves_ordinary_numbers_bools_and_none_alone(deid: Deidentifier) -> None:
    attrs: dict[str, Any] = {
        "floor": 12,
        "amount": 120.5,
        "urgent": True,
        "closed": False,
        "missing": None,
        "order": 20261124123456789012,
        "readings": [1, 2.5, True, None],
        "phone": None,  # no value to hide
        "email": "",
        "tel": True,  # a flag, not a number
    }
    scrubbed, count = deid.scrub_attributes(attrs)
    assert scrubbed == attrs
    assert count == 0
    assert scrubbed["urgent"] is True
    assert isinstance(scrubbed["floor"], int)


def test_scrub_attributes_does_not_mutate_its_input_and_returns_new_containers(
    deid: Deidentifier,
) -> None:
    attrs: dict[str, Any] = {
        "phone": PHONE,
        "nested": {"text": f"车牌{PLATE}", "items": [f"mail {EMAIL}", 3]},
    }
    before = copy.deepcopy(attrs)
    scrubbed, count = deid.scrub_attributes(attrs)
    assert attrs == before
    assert count == 3
    assert scrubbed is not attrs
    assert scrubbed["nested"] is not attrs["nested"]
    assert scrubbed["nested"]["items"] is not attrs["nested"]["items"]


def test_scrub_attributes_output_contains_no_original_values(deid: Deidentifier) -> None:
    attrs: dict[str, Any] = {
        "text": f"电话{PHONE} 邮箱{EMAIL}",
        "caller_name": "李四",
        "extra": [{"plate": PLATE}, f"身份证{ID18}"],
    }
    scrubbed, count = deid.scrub_attributes(attrs)
    assert count == 5
    rendered = repr(scrubbed)
    for value in (PHONE, EMAIL, "李四", PLATE, ID18):
        assert value not in rendered


# --- attributes: keys and numbers ------------------------------------------------------


def test_scrub_attributes_scrubs_keys_at_any_depth(deid: Deidentifier) -> None:
    attrs: dict[str, Any] = {
        PHONE: 1,
        "notes": [{"reported by 138.1234.5678": {"110105 19491231 002X": "x"}}],
        "ok": {"339901": "district"},
    }
    scrubbed, count = deid.scrub_attributes(attrs)
    assert scrubbed == {
        deid.pseudonym("phone", PHONE): 1,
        "notes": [
            {
                f"reported by {deid.pseudonym('phone', PHONE)}": {
                    deid.pseudonym("id", ID18_X_BARE): "x"
                }
            }
        ],
        "ok": {"339901": "district"},
    }
    assert count == 3


def test_keys_that_collide_after_scrubbing_are_all_kept_with_a_numbered_suffix(
    deid: Deidentifier,
) -> None:
    token = deid.pseudonym("phone", PHONE)
    scrubbed, count = deid.scrub_attributes(
        {PHONE: "a", "138-1234-5678": "b", "+86 138 1234 5678": "c", "other": "d"}
    )
    assert scrubbed == {token: "a", f"{token}#2": "b", f"{token}#3": "c", "other": "d"}
    assert list(scrubbed) == [token, f"{token}#2", f"{token}#3", "other"]
    assert count == 3


def test_a_key_that_already_is_a_pseudonym_keeps_its_place_and_the_later_key_is_suffixed(
    deid: Deidentifier,
) -> None:
    token = deid.pseudonym("phone", PHONE)
    assert deid.scrub_attributes({token: 1, PHONE: 2}) == ({token: 1, f"{token}#2": 2}, 1)
    # ... and a suffix that is taken is skipped, deterministically
    assert deid.scrub_attributes({PHONE: 1, token: 2, f"{token}#2": 3}) == (
        {token: 1, f"{token}#2": 2, f"{token}#2#2": 3},
        1,
    )


def test_an_identifier_named_key_still_applies_when_its_value_is_a_dict_with_pii_keys(
    deid: Deidentifier,
) -> None:
    scrubbed, count = deid.scrub_attributes({"phone": {PHONE: "home"}})
    assert scrubbed == {"phone": {deid.pseudonym("phone", PHONE): deid.pseudonym("phone", "home")}}
    assert count == 2


@pytest.mark.parametrize(
    ("number", "kind", "digits"),
    [
        (13812345678, "phone", PHONE),
        (8613812345678, "phone", PHONE),
        (-13812345678, "phone", PHONE),
        (13812345678.0, "phone", PHONE),
        (110105194912310021, "id", ID18),
        (110105491231002, "id", ID15),
        (110105491231002.0, "id", ID15),
    ],
)
def test_numbers_whose_digits_are_a_phone_or_id_become_pseudonyms(
    deid: Deidentifier, number: int | float, kind: str, digits: str
) -> None:
    token = deid.pseudonym(kind, digits)
    assert deid.scrub_attributes({"contact": number}) == ({"contact": token}, 1)
    assert deid.scrub_attributes({"xs": [[{"v": number}]]}) == ({"xs": [[{"v": token}]]}, 1)
    assert deid.scrub_attributes({number: "k"}) == ({token: "k"}, 1)  # type: ignore[dict-item]


@pytest.mark.parametrize(
    "number",
    [
        339901,
        339901001,
        31.5,
        1.0,
        -7,
        0,
        20261124123456789012,  # order number
        1764000000000,  # epoch milliseconds
        1764000000,
        12812345678,  # 12x is no mobile prefix
        138123456789,  # 12 digits
        110105194902300021,  # 30 February
        13812345678.5,
        2**70,
        pytest.param(10**5000, id="10**5000"),  # str() would refuse it
        float("inf"),
        1e300,
    ],
)
def test_ordinary_numbers_are_left_alone(deid: Deidentifier, number: int | float) -> None:
    scrubbed, count = deid.scrub_attributes({"v": number, "xs": [number]})
    assert count == 0
    assert scrubbed["v"] is number
    assert scrubbed["xs"][0] is number


def test_bools_are_flags_not_numbers(deid: Deidentifier) -> None:
    assert deid.scrub_attributes({"a": True, "b": [False], True: 1}) == (  # type: ignore[dict-item]
        {"a": True, "b": [False], True: 1},
        0,
    )


# Keys and values a department system may send that identify nobody.
CLEAN_KEYS = st.sampled_from(["a", "notes", "items", "meta", "x-1", "339901", "street", "题"])
CLEAN_LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**9), 10**9),
    st.floats(allow_nan=False).filter(lambda x: not x.is_integer()),
    SAFE_TEXT,
)


@st.composite
def numeric_identifiers(draw: st.DrawFn) -> tuple[str, int | float, str]:
    """(kind, number, the digits that must not survive)."""
    if draw(st.booleans()):
        _, bare = draw(mobiles())
        number = int(("86" if draw(st.booleans()) else "") + bare)
        kind = "phone"
    else:
        _, bare = draw(id_numbers(check=DIGITS))
        number, kind = int(bare), "id"
    sign = draw(st.sampled_from([1, -1]))
    # floats are exact below 2**53: phones and 15-digit IDs
    as_float = number < 2**53 and draw(st.booleans())
    return kind, float(sign * number) if as_float else sign * number, bare[:17]


@st.composite
def nested_attributes(draw: st.DrawFn) -> tuple[dict[Any, Any], str, str]:
    """(attributes with one identifier at depth 1..8, its kind, the digits to hide)."""
    where = draw(st.sampled_from(["key", "value", "number"]))
    if where == "number":
        kind, number, needle = draw(numeric_identifiers())
        inner: Any = {draw(CLEAN_KEYS): number}
    else:
        kind, written, bare = draw(
            st.one_of(
                mobiles().map(lambda m: ("phone", *m)), id_numbers().map(lambda i: ("id", *i))
            )
        )
        needle = bare[:17]
        leaf = draw(CLEAN_LEAVES)
        inner = {written: leaf} if where == "key" else {draw(CLEAN_KEYS): written}
    for _ in range(draw(st.integers(0, 7))):
        sibling = draw(CLEAN_LEAVES)
        if draw(st.booleans()):
            inner = {draw(CLEAN_KEYS): inner, "sibling": sibling}
        else:
            inner = [sibling, inner] if draw(st.booleans()) else [inner]
    attrs = inner if isinstance(inner, dict) else {"root": inner}
    return attrs, kind, needle


def _all_strings(obj: Any) -> list[str]:
    if isinstance(obj, Mapping):
        return [s for k, v in obj.items() for s in (*_all_strings(k), *_all_strings(v))]
    if isinstance(obj, list | tuple):
        return [s for item in obj for s in _all_strings(item)]
    return [obj if isinstance(obj, str) else repr(obj)]


@settings(max_examples=500, deadline=None)
@given(case=nested_attributes())
def test_property_identifiers_in_keys_values_and_numbers_at_any_depth_never_survive(
    case: tuple[dict[Any, Any], str, str],
) -> None:
    attrs, kind, needle = case
    before = copy.deepcopy(attrs)
    scrubbed, count = Deidentifier(KEY).scrub_attributes(attrs)
    assert attrs == before
    assert count == 1
    strings = _all_strings(scrubbed)
    assert [t for s in strings for t in _tokens(s)] == [kind]
    for s in strings:
        assert needle not in _digits(s)


def test_an_address_whose_domain_label_ends_in_a_hyphen_is_still_an_email(
    deid: Deidentifier,
) -> None:
    scrubbed, count = deid.scrub_text("a@a-.aa")
    assert count == 1 and scrubbed.startswith("<email:")
