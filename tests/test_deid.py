"""Tests for streams.deid: identifiers in free text become keyed pseudonyms."""

from __future__ import annotations

import copy
import hashlib
import hmac
import re
import string
from datetime import date
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.deid import KINDS, Deidentifier

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


# --- property tests ---------------------------------------------------------------------

# Surrounding text that cannot itself contain an identifier: no digits (ASCII or
# full-width), no '@'. It does include province characters and uppercase letters, so a
# plate's neighbours can look like plate prefixes.
SAFE_CHARS = st.one_of(
    st.characters(min_codepoint=0x4E00, max_codepoint=0x9FFF),
    st.sampled_from(string.ascii_letters + PROVINCES + " ，。：！,.!?-"),
)
SAFE_TEXT = st.text(SAFE_CHARS, max_size=30)

DIGITS = string.digits


@st.composite
def mobiles(draw: st.DrawFn) -> tuple[str, str]:
    """(mobile as written, its bare 11 digits)."""
    bare = "1" + draw(st.sampled_from("3456789")) + draw(st.text(DIGITS, min_size=9, max_size=9))
    sep = draw(st.sampled_from(["", " ", "-"]))
    prefix = draw(st.sampled_from(["", "+86", "+86 ", "+86-", "0086", "0086 ", "86"]))
    return prefix + bare[:3] + sep + bare[3:7] + sep + bare[7:], bare


@st.composite
def id_numbers(draw: st.DrawFn) -> str:
    region = draw(st.sampled_from("123456789")) + draw(st.text(DIGITS, min_size=5, max_size=5))
    seq = draw(st.text(DIGITS, min_size=3, max_size=3))
    if draw(st.booleans()):
        born = draw(st.dates(min_value=date(1900, 1, 1), max_value=date(2099, 12, 31)))
        check = draw(st.sampled_from(DIGITS + "Xx"))
        return f"{region}{born:%Y%m%d}{seq}{check}"
    born = draw(st.dates(min_value=date(1900, 1, 1), max_value=date(1999, 12, 31)))
    return f"{region}{born:%y%m%d}{seq}"


SIMPLE_EMAILS = st.builds(
    lambda local, labels, tld: f"{local}@{'.'.join(labels)}.{tld}",
    st.from_regex(r"[a-z0-9]([a-z0-9._+-]{0,15}[a-z0-9])?", fullmatch=True),
    st.lists(
        st.from_regex(r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True),
        min_size=1,
        max_size=3,
    ),
    st.from_regex(r"[a-z]{2,6}", fullmatch=True),
)


@st.composite
def plates(draw: st.DrawFn) -> tuple[str, str]:
    """(plate as written, plate without separator)."""
    head = draw(st.sampled_from(PROVINCES)) + draw(st.sampled_from(string.ascii_uppercase))
    alnum = string.ascii_uppercase + DIGITS
    form = draw(st.sampled_from(["ordinary", "new-energy", "special"]))
    size = {"ordinary": 5, "new-energy": 6, "special": 4}[form]
    serial = list(draw(st.text(alnum, min_size=size, max_size=size)))
    serial[draw(st.integers(0, size - 1))] = draw(st.sampled_from(DIGITS))  # needs a digit
    suffix = draw(st.sampled_from("警学挂")) if form == "special" else ""
    if form == "ordinary":
        suffix = draw(st.sampled_from(["", "警", "学", "挂"]))
    sep = draw(st.sampled_from(["", "·", "・", ".", "-", " "]))
    bare = head + "".join(serial) + suffix
    return head + sep + "".join(serial) + suffix, bare


def _assert_value_gone(scrubbed: str, *values: str) -> None:
    without_separators = re.sub(r"[\s\-·・.]", "", scrubbed)
    for value in values:
        assert value not in scrubbed
        assert value not in without_separators


@settings(max_examples=300)
@given(before=SAFE_TEXT, mobile=mobiles(), after=SAFE_TEXT)
def test_property_generated_mobile_in_random_text_never_survives(
    before: str, mobile: tuple[str, str], after: str
) -> None:
    written, bare = mobile
    scrubbed, count = Deidentifier(KEY).scrub_text(before + written + after)
    assert count >= 1
    _assert_value_gone(scrubbed, written, bare)


@settings(max_examples=300)
@given(before=SAFE_TEXT, id_number=id_numbers(), after=SAFE_TEXT)
def test_property_generated_id_number_in_random_text_never_survives(
    before: str, id_number: str, after: str
) -> None:
    scrubbed, count = Deidentifier(KEY).scrub_text(before + id_number + after)
    assert count >= 1
    _assert_value_gone(scrubbed, id_number, id_number[:17])


@settings(max_examples=300)
@given(before=SAFE_TEXT, email=st.one_of(SIMPLE_EMAILS, st.emails()), after=SAFE_TEXT)
def test_property_generated_email_in_random_text_never_survives(
    before: str, email: str, after: str
) -> None:
    scrubbed, count = Deidentifier(KEY).scrub_text(before + email + after)
    assert count >= 1
    _assert_value_gone(scrubbed, email, email.split("@")[0] + "@")


@settings(max_examples=300)
@given(before=SAFE_TEXT, plate=plates(), after=SAFE_TEXT)
def test_property_generated_plate_in_random_text_never_survives(
    before: str, plate: tuple[str, str], after: str
) -> None:
    written, bare = plate
    scrubbed, count = Deidentifier(KEY).scrub_text(before + written + after)
    assert count >= 1
    _assert_value_gone(scrubbed, written, bare)


@settings(max_examples=300)
@given(
    pieces=st.lists(
        st.tuples(
            # Non-empty glue without space, hyphen, '@' or uppercase letters, so numbers
            # cannot join into a grouped mobile and letters cannot start a plate.
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


def test_scrub_attributes_leaves_numbers_bools_and_none_alone(deid: Deidentifier) -> None:
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
