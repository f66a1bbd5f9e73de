"""De-identification of personal data in free text before it goes downstream.

Citizen hotline complaints arrive as free text, and department events carry free-form
``attributes``; personal identifiers also turn up in envelope strings (``event_id``,
``source``) and in the messages built from them (dead-letter details, log lines). Nothing
downstream (windows, vitals, dashboards, the dead-letter topic) needs to read them. This
module replaces, in any string:

* mainland-China mobile numbers, bare or in the usual 3-4-4 groups separated by spaces,
  hyphens or dots, mixed too (``13812345678``, ``138 1234 5678``, ``138.1234.5678``,
  ``138-1234.5678``), with an optional country code (``+86 138 1234 5678``,
  ``(+86)13812345678``, ``0086-138-1234-5678``, ``8613812345678``);
* resident identity card numbers: 18 characters (17 digits + digit/``X``) and the legacy
  15-digit form, bare or in the 6-8-4 / 6-6-3 grouping with spaces, hyphens or dots
  (``110105 19491231 002X``, ``110105-19491231-002x``, ``110105.19491231.002X``), and
  only when the embedded birth date is a real calendar date (the checksum is
  deliberately *not* verified, because citizens mistype);
* e-mail addresses (ASCII ``local@domain.tld``, so that Chinese text written right next to
  an address, without spaces, is not swallowed);
* vehicle licence plates: ordinary (``京A12345``, ``京A·12345``), new-energy (``粤B·D12345``,
  ``京AD12345``) and special (``京A1234学``, ``粤B·0123警``, ``粤Z·1234港``); the serial must
  contain a digit.

Full-width digits, letters and punctuation typed with a Chinese IME (``１３８．１２３４…``,
``（＋８６）``, ``zhang＠example．com``, U+3000 as a space) are recognised as well, also
mixed with ASCII; the surrounding text is returned exactly as it came in.
:meth:`Deidentifier.scrub_attributes` applies this to every string value *and key* of an
event's attributes (keys that collide once scrubbed are kept as ``key#2``, ``key#3``...),
and also replaces numbers whose digits are a phone or an ID number
(``{"contact": 13812345678}``); :meth:`Deidentifier.scrub_identifier` is the same scrub
with a cheap pre-filter for ``event_id`` and ``source`` on the hot path, and
:meth:`Deidentifier.scrub_message` the uncounted one for messages.
For what citizens write about themselves (appeals on any channel),
:meth:`Deidentifier.scrub_narrative` also replaces landlines, exact addresses and names
introduced as names (``我叫...``, ``...先生``), shapes that are everyday data elsewhere.

Each identifier is replaced by a *keyed pseudonym* such as ``<phone:3f9a1c2b7d>``: the
kind plus the first 10 hex digits of ``HMAC-SHA256(key, kind + ":" + normalised value)``.
Why keyed rather than a plain hash: the value spaces are tiny (about 10^9 mobile numbers,
a few 10^9 plausible ID numbers), so an unkeyed hash is reversed by enumeration in
minutes. With a secret key the pseudonym is unreadable to anyone without the key, yet the
same person still maps to the same pseudonym (under the same key), so repeated complaints
from one caller or about one car can still be correlated. Values are normalised first
(separators and spaces removed, full-width folded, upper-cased, ``+86``/``0086`` dropped
from phones), so ``+86 138-1234-5678``, ``138.1234.5678`` and ``13812345678`` correlate.
Rotating the key breaks correlation with everything pseudonymised under the old key, by
design.

Matching uses digit lookarounds rather than ``\\b``: CJK characters are "word"
characters for Python's ``\\b``, so ``\\b`` would miss ``电话13812345678``. Digit
lookarounds also keep identifiers from matching inside longer digit runs such as
20-digit order numbers. Every repetition in the phone, ID and plate patterns is bounded
and the e-mail pattern only starts where a run of local-part characters starts, so a scan
is linear in the text. Measured once by hand (CPython 3.11, 2-core VM under load; the
tests assert no time): 64 KiB strings of digits and separators built to nearly match
(``138 1234 ``, ``(+86 ``, ``110105 19491231 002 `` or ``138.1234.567.`` repeated, random
``0-9 .-+()`` in ASCII or full width, one 65,536-digit run) scrub in 9-27 ms each, and
four times the text takes about four times as long.

Limitations (recall is favoured over precision, but this is pattern matching, not NER):
landline numbers and names (but see :meth:`Deidentifier.scrub_narrative`), bank card
numbers, internationalised (non-ASCII)
e-mail addresses, lowercase plates, ``。`` written for the dot of an e-mail address, and
separators other than space, ``-`` and ``.`` (``/``, ``·``, ``_`` between digit groups)
are not recognised in free text. A dot in only one of the two gaps is refused
(``138.12345678``, ``110105.194912310021``), because that is how decimals and
longitudes are written. Some non-personal strings are replaced because they look exactly
like an identifier: a 15- or 18-digit number that carries a valid date (tracking
numbers), an id built as ``<6-digit code>-<yyyymmdd>-<4 digits>``, and a number such as a
byte count of ``15000000000`` in an attribute (it is then a string).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from datetime import date
from string import Template
from typing import Any, Final

__all__ = ["ATTRIBUTE_KEY_KINDS", "KINDS", "NARRATIVE_KINDS", "Deidentifier"]

#: Kinds of identifier recognised in free text. Where matches could overlap, e-mail wins
#: over ID, ID over phone and phone over plate (see ``_DIGIT_KINDS_RE``).
KINDS: Final = ("phone", "id", "email", "plate")
#: Kinds :meth:`Deidentifier.scrub_narrative` also recognises (landlines are ``phone``).
NARRATIVE_KINDS: Final = ("phone", "address", "name")

#: Attribute keys (compared case-insensitively, ``-``/space treated as ``_``) whose values
#: are pseudonymised wholesale, whatever they look like, and the kind used for them.
ATTRIBUTE_KEY_KINDS: Final[Mapping[str, str]] = {
    "phone": "phone",
    "mobile": "phone",
    "tel": "phone",
    "id_number": "id",
    "id_card": "id",
    "email": "email",
    "plate": "plate",
    "licence_plate": "plate",
    "license_plate": "plate",
    "name": "name",
    "caller_name": "name",
}

_HEX_CHARS: Final = 10
_KIND_RE: Final = re.compile(r"[a-z][a-z0-9_]*")

# Full-width ASCII (U+FF01..U+FF5E) and the ideographic space map one-to-one onto ASCII,
# so matching on the translated text gives offsets that are valid in the original text.
_FULLWIDTH_TABLE: Final[dict[int, int]] = {cp: cp - 0xFEE0 for cp in range(0xFF01, 0xFF5F)}
_FULLWIDTH_TABLE[0x3000] = 0x20
# Translation (a dict lookup per character: several µs on a complaint) is only worthwhile
# when a character that can be part of an identifier is full-width: digits, letters, '@',
# '＋', '．', '－', '＿', or one of the characters that are also everyday Chinese punctuation
# where it touches a phone: '（' before a digit or '+', '）' after a digit, U+3000 next to a
# digit, '-' or '.'. Parentheses and ideographic spaces elsewhere are in many
# complaints. The pattern starts with one set of characters, so sre scans for it in C and
# only tries the lookarounds there (twice as fast as plain alternatives).
_FULLWIDTH_ID_CHARS: Final = "\uff0b\uff0d\uff0e\uff10-\uff19\uff20-\uff3a\uff3f\uff41-\uff5a"
_HAS_FULLWIDTH: Final = re.compile(
    f"[\u3000\uff08\uff09{_FULLWIDTH_ID_CHARS}]"
    f"(?:(?<=[{_FULLWIDTH_ID_CHARS}])|(?<=[0-9]\uff09)|(?<=\uff08)(?=[0-9+])"
    "|(?<=[-.0-9]\u3000)|(?<=\u3000)(?=[-.0-9]))"
)
# Fast path: without a digit or an '@' (either width) nothing can match (plates need a digit).
_TRIGGER: Final = re.compile("[0-9@\uff10-\uff19\uff20]")
_HAS_DIGIT: Final = re.compile("[0-9]")

_LOCAL_CHARS: Final = r"A-Za-z0-9._%+\-!#$&'*/=?^`{|}~"
# The local part only starts where a run of local-part characters starts: this keeps the
# scan linear on long English text (otherwise every letter would start a new attempt).
_EMAIL: Final = (
    rf"(?P<email>(?<![{_LOCAL_CHARS}])[{_LOCAL_CHARS}]+@"
    # a label may end in '-' here (DNS says it may not): a mistyped address is still one
    r"(?:[A-Za-z0-9][A-Za-z0-9-]{0,62}\.){1,126}"
    r"(?:xn--[A-Za-z0-9-]{1,59}|[A-Za-z]{2,63}))"
)

# Phone and ID numbers are written as templates over a few "atoms" and instantiated twice:
# over real characters (``_REAL``) for matching, and over the shapes of
# :meth:`Deidentifier.scrub_identifier` (``_SHAPE``: every digit is '0'), where they give a
# pattern that matches the shape of every string the real pattern matches in. Writing
# both from one template keeps the pre-filter from drifting away from the matcher.
#
# Between the 3-4-4 (phone), 6-8-4 (ID) or 6-6-3 (legacy ID) groups there is either a
# separator in *both* gaps, any of ' ', '-', '.' (a '-' or '.' may have a space either
# side), or in each gap an optional ' ' or '-'. A dot in one gap only is refused:
# ``138.12345678`` and ``131.12345678`` are how decimals and longitudes are written.
# Every repetition is bounded, so each start position costs a bounded amount of work and a
# scan is linear in the length of the text, whatever the text.
_GAP: Final = r"(?: ?[.\-] ?| )"
_GAP_NO_DOT: Final = r"(?: ?- ?| )?"
_ID18_T: Final = Template(
    r"(?P<id18>(?<!$D)$NZ$D{5}(?:$GAP$CENTURY$D{2}$MD$GAP|$GAPN$CENTURY$D{2}$MD$GAPN)"
    r"$D{3}$CHECK(?!$D))"
)
_ID15_T: Final = Template(
    r"(?P<id15>(?<!$D)$NZ$D{5}(?:$GAP$D{2}$MD$GAP|$GAPN$D{2}$MD$GAPN)$D{3}(?!$D))"
)
# Optional country code: +86, 0086, 86, each perhaps in parentheses, then perhaps a gap.
_PHONE_T: Final = Template(
    r"(?P<phone>(?<!$D)(?:(?:\((?:\+|$ZZ)?$CC\)|(?:\+|$ZZ)?$CC)$GAP?)?"
    r"$ONE$MOB$D(?:$GAP$D{4}$GAP|$GAPN$D{4}$GAPN)$D{4}(?!$D))"
)
_MONTH_DAY: Final = r"(?:0[1-9]|1[0-2])(?:0[1-9]|[12][0-9]|3[01])"
_REAL: Final = {
    "D": "[0-9]",
    "NZ": "[1-9]",
    "ONE": "1",
    "MOB": "[3-9]",
    "CC": "86",
    "ZZ": "00",
    "CENTURY": "(?:19|20)",
    "MD": _MONTH_DAY,
    "CHECK": "[0-9Xx]",
    "GAP": _GAP,
    "GAPN": _GAP_NO_DOT,
}
# The patterns over shapes (_shape_byte: a digit 1 stays 1, every other digit becomes 0):
# each class of the real patterns becomes the shapes of its digits, so a shape matches
# wherever the text might.
_SHAPE: Final = {
    **_REAL,
    "D": "[01]",
    "NZ": "[01]",
    "ONE": "1",
    "MOB": "0",
    "CC": "00",
    "ZZ": "00",
    "CENTURY": "(?:10|00)",
    "MD": "[01]{4}",
    "CHECK": "[01a]",
}
_ID18: Final = _ID18_T.substitute(_REAL)
_ID15: Final = _ID15_T.substitute(_REAL)
_PHONE: Final = _PHONE_T.substitute(_REAL)
_PROVINCES: Final = "京津沪渝冀豫云辽黑湘皖鲁新苏浙赣鄂桂甘晋蒙陕吉闽贵粤青藏川宁琼使领"
_PLATE: Final = (
    rf"(?P<plate>[{_PROVINCES}][A-Z][ \u3000·・.\-]?"
    r"(?=[A-Z0-9]{0,5}[0-9])(?:[A-Z0-9]{5,6}(?![0-9])[警学挂]?|[A-Z0-9]{4}[警学挂港澳领]))"
)

_EMAIL_RE: Final = re.compile(_EMAIL)
# E-mail addresses are found first (``13812345678@qq.com`` is one e-mail, not a phone), then
# the digit-bearing kinds in the text between them with one combined pattern: at any
# position the first alternative wins, so IDs take precedence over phones, then plates.
# The leading lookahead on the possible first characters makes every other position fail
# at once instead of entering each alternative (about 2.5x faster on complaint text).
_DIGIT_KINDS_RE: Final = re.compile(
    rf"(?=[0-9+({_PROVINCES}])(?:" + "|".join((_ID18, _ID15, _PHONE, _PLATE)) + ")"
)

_GROUP_KIND: Final[Mapping[str, str]] = {
    "email": "email",
    "id18": "id",
    "id15": "id",
    "phone": "phone",
    "plate": "plate",
}

#: (start, end, kind, value to pseudonymise or None for the span's own characters)
_Span = tuple[int, int, str, str | None]

# --- what only narratives hold (scrub_narrative) ---------------------------------------
_HAN: Final = "\u4e00-\u9fff"
# Area code (0 + 2 or 3 digits, perhaps in parentheses), a local number of 7 or 8 digits
# that does not start with 0 or 1, perhaps an extension. Bounded repetition throughout.
_LANDLINE: Final = (
    r"(?P<landline>(?<![0-9])(?:\(0[1-9][0-9]{1,2}\)|0[1-9][0-9]{1,2}) ?-? ?"
    r"[2-9][0-9]{2,3}[ \-]?[0-9]{4}(?:(?:转|-|ext\.? ?)[0-9]{1,5})?(?![0-9]))"
)
_LOCAL_LANDLINE: Final = (
    r"(?:电话|座机|固话|号码|联系方式)[:：]? ?"
    r"(?P<local>(?<![0-9])[2-9][0-9]{2,3}[ \-]?[0-9]{4}(?![0-9]))"
)
# Address parts: a number and what it numbers; then perhaps a bare room number (3 to 5
# digits: "5栋1201"; fewer is how times and counts are written: "3号5点").
_ADDRESS: Final = (
    r"(?P<address>(?<![0-9A-Za-z])(?:[0-9]{1,5}(?:-[0-9]{1,5})?"
    r"(?:号楼|号院|号|栋|幢|座|单元|层|室|户|楼)){1,5}"
    r"(?:[0-9]{3,5}(?![0-9])|[0-9]{1,5}[室房])?)"
)
_ADDRESS_PART: Final = re.compile(r"[0-9]+")
_ROAD_ENDS: Final = "路街巷弄道里村"
_ADDRESS_PREFIX: Final = 6  # Han characters before an address that are part of its value
_HAN_RUN_END: Final = re.compile(f"[{_HAN}]{{1,{_ADDRESS_PREFIX}}}$")
_DOUBLE_SURNAMES: Final = (
    "欧阳|司马|上官|诸葛|东方|皇甫|尉迟|公孙|慕容|长孙|宇文|司徒|夏侯|令狐|端木|西门"
)
# The most common surnames (about 85 % of the population), without characters that are
# mostly function words in running text (于, 和, 向, 那...): a false "王先生" is cheap,
# a missed one is not.
_SURNAMES: Final = (
    "王李张刘陈杨黄赵吴周徐孙马朱胡郭何林罗高郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘"
    "蒋蔡余杜叶程苏魏吕丁任沈姚卢姜崔钟谭陆汪范金石廖贾夏韦付方邹熊孟秦邱侯江尹"
    "薛闫段雷龙黎史陶贺顾毛郝龚邵万钱严覃武戴莫孔汤易常乔赖文庞樊兰殷施洪翟安"
)
_GIVEN_STOP: Final = "想要在是的和住家反投来打说电手就也还跟与"
_NAME: Final = (
    # after a cue that says a name follows
    rf"(?:我叫|名叫|叫做|(?:姓名|联系人|投诉人|来电人|举报人|反映人)[:：] ?)"
    rf"(?P<cued>(?:{_DOUBLE_SURNAMES}|[{_HAN}])[{_HAN}](?:(?![{_GIVEN_STOP}])[{_HAN}])?"
    r"|[A-Z][a-z]{1,20}(?: [A-Z][a-z]{1,20})?)"
    # a surname someone gives
    rf"|(?:我|本人|免贵|他|她)姓(?P<surname>{_DOUBLE_SURNAMES}|[{_HAN}])"
    # a surname and perhaps a given name before a form of address
    rf"|(?P<titled>(?:{_DOUBLE_SURNAMES}|[{_SURNAMES}])[{_HAN}]{{0,2}}?)(?=先生|女士|小姐)"
)
# Every character a narrative match can start with: a digit or '(' (landlines,
# addresses), the first character of a cue (电话..., 我叫..., 我姓..., 姓名：...) or of a
# surname. The pattern starts with a lookahead on them, so sre scans for them in C and
# tries the alternatives only there: the matches are the same, found in a quarter of the
# time (simulated appeals of 53 characters on average, median of 5 passes over 20,000:
# 1.9 µs a text against 7.0, which was two thirds of scrub_narrative's 10.9 µs). The
# tests derive each alternative's possible first characters from the parsed pattern and
# check that this set holds them all.
_NARRATIVE_FIRST: Final = (
    "0-9(电座固号联我名叫姓投来举反本免他她"
    + "".join(sorted({double[0] for double in _DOUBLE_SURNAMES.split("|")}))
    + _SURNAMES
)
_NARRATIVE_RE: Final = re.compile(
    f"(?=[{_NARRATIVE_FIRST}])(?:" + "|".join((_LANDLINE, _LOCAL_LANDLINE, _ADDRESS, _NAME)) + ")"
)
_NARRATIVE_GROUPS: Final[Mapping[str, str]] = {
    "landline": "phone",
    "local": "phone",
    "address": "address",
    "cued": "name",
    "surname": "name",
    "titled": "name",
}


def _narrative_spans(work: str) -> list[_Span]:
    """Landlines, exact addresses and introduced names in ``work`` (see scrub_narrative)."""
    spans: list[_Span] = []
    for match in _NARRATIVE_RE.finditer(work):
        group = next(g for g in _NARRATIVE_GROUPS if match.group(g) is not None)
        start, end = match.span(group)
        value = None
        if group == "address":
            before = work[max(0, start - _ADDRESS_PREFIX) : start]
            parts = len(_ADDRESS_PART.findall(match.group(group)))
            if parts < 2 and not (before and before[-1] in _ROAD_ENDS):
                continue
            prefix = _HAN_RUN_END.search(before)
            value = (prefix.group() if prefix else "") + match.group(group)
        spans.append((start, end, _NARRATIVE_GROUPS[group], value))
    return spans


_NON_DIGITS: Final = re.compile(r"[^0-9]")
_NON_ID_CHARS: Final = re.compile(r"[^0-9Xx]")
_WHITESPACE: Final = re.compile(r"\s+")
_SEPARATORS: Final = re.compile(r"[\s·・.\-]+")


def _shape_byte(byte: int) -> int:
    if byte == 0x31:
        return byte  # '1': a phone's first digit, which most ids' digit runs lack there
    if 0x30 <= byte <= 0x39:
        return 0x30  # '0'
    if byte in b" .-()+@":
        return byte
    return 0x75 if byte >= 0x80 else 0x61  # 'u' for any byte of a non-ASCII character, else 'a'


# UTF-8 bytes -> shape: what the phone and ID patterns can tell apart without looking at
# the digits' values. Any non-ASCII character or '@' makes a shape suspect at once: those
# are where plates, full-width forms and e-mails live, which scrub_text handles.
_SHAPE_TABLE: Final = bytes(_shape_byte(b) for b in range(256))
_SHAPE_SUSPECT_RE: Final = re.compile(
    "|".join(("[u@]", *(t.substitute(_SHAPE) for t in (_ID18_T, _ID15_T, _PHONE_T)))).encode()
)
# Verdicts per shape. Identifiers from one system share a handful of shapes (fixed-width
# counters and codes), so the cache stays small; it is cleared when full rather than
# evicted entry by entry, which is cheaper and good enough for a working set this small.
# Shared by all instances: a shape's verdict does not depend on the key. Plain dict
# operations are atomic under the GIL; a lost update only costs a recomputation.
_SHAPE_VERDICTS: Final[dict[bytes, bool]] = {}
_SHAPE_CACHE_ENTRIES: Final = 4096
_SHAPE_CACHE_MAX_BYTES: Final = 128

# Numbers: the smallest mobile number is 13000000000; nothing of 19 digits or more is a
# phone or an ID. Checked on the int before str(), which is costly (and refused beyond
# 4300 digits).
_NUMBER_MIN: Final = 13_000_000_000
_NUMBER_MAX: Final = 10**18


def _plausible_id_date(group: str, value: str) -> bool:
    """Whether the birth date embedded in an 18- or 15-character ID is a real date."""
    value = _NON_ID_CHARS.sub("", value)  # the separators of a grouped ID
    try:
        if group == "id18":
            date(int(value[6:10]), int(value[10:12]), int(value[12:14]))
            return True
        # Legacy IDs omit the century; accept the date if it exists in 19YY or 20YY.
        yy, month, day = int(value[6:8]), int(value[8:10]), int(value[10:12])
    except ValueError:
        return False
    for century in (1900, 2000):
        try:
            date(century + yy, month, day)
        except ValueError:
            continue
        return True
    return False


def _normalise(kind: str, value: str) -> str:
    """Canonical form of ``value`` so that formatting variants share one pseudonym."""
    value = value.translate(_FULLWIDTH_TABLE)
    if kind == "phone":
        digits = _NON_DIGITS.sub("", value)
        if digits.startswith("0086") and len(digits) > 4:
            return digits[4:]
        if digits.startswith("86") and len(digits) == 13:
            return digits[2:]
        return digits
    if kind == "email":
        # '.' and '-' are significant in addresses; only whitespace is noise.
        return _WHITESPACE.sub("", value).upper()
    return _SEPARATORS.sub("", value).upper()


def _number_identifier(number: float) -> tuple[str, str] | None:
    """(kind, digits) if the decimal digits of ``number`` are a phone or an ID number.

    A float counts when its value is integral (``13812345678.0``).
    """
    # Range first: cheap for the usual small numbers, and str() of an int beyond 4300
    # digits raises. Infinity fails the range, NaN every comparison.
    if not _NUMBER_MIN <= abs(number) < _NUMBER_MAX:
        return None
    if isinstance(number, float) and not number.is_integer():
        return None
    digits = str(abs(int(number)))  # int(): an IntEnum's str() is not its digits
    match = _DIGIT_KINDS_RE.fullmatch(digits)
    if match is None or match.lastgroup is None:
        return None
    group = match.lastgroup
    if group in ("id18", "id15") and not _plausible_id_date(group, digits):
        return None
    return _GROUP_KIND[group], digits


def _unused_key(taken: Mapping[Any, Any], key: Any) -> str:
    """``key#2``, ``key#3``, ...: the first that is not yet a key of ``taken``."""
    n = 2
    while f"{key}#{n}" in taken:
        n += 1
    return f"{key}#{n}"


class Deidentifier:
    """Replaces personal identifiers by keyed pseudonyms; thread-safe and reusable."""

    __slots__ = ("_mac",)

    def __init__(self, key: bytes) -> None:
        if not isinstance(key, bytes | bytearray):
            raise TypeError("key must be bytes")
        if not key:
            raise ValueError("key must not be empty")
        # Keyed once; each pseudonym copies the prepared HMAC state instead of re-keying.
        self._mac = hmac.new(bytes(key), digestmod=hashlib.sha256)

    def __repr__(self) -> str:
        return "Deidentifier(key=<hidden>)"

    def pseudonym(self, kind: str, value: str) -> str:
        """``<kind:hex10>`` for ``value``; equal for equal normalised values and key."""
        if not _KIND_RE.fullmatch(kind):
            raise ValueError(f"invalid kind {kind!r}")
        mac = self._mac.copy()
        # surrogatepass: a lone surrogate (JSON allows "\ud800") must not crash the hot
        # path; it changes nothing for any other string.
        mac.update(f"{kind}:{_normalise(kind, value)}".encode("utf-8", "surrogatepass"))
        return f"<{kind}:{mac.hexdigest()[:_HEX_CHARS]}>"

    def scrub_text(self, text: str) -> tuple[str, int]:
        """Return ``text`` with every recognised identifier pseudonymised, and how many."""
        if _TRIGGER.search(text) is None:
            return text, 0
        work = text.translate(_FULLWIDTH_TABLE) if _HAS_FULLWIDTH.search(text) else text
        return self._replace(text, work, self._pattern_spans(work))

    def scrub_narrative(self, text: str) -> tuple[str, int]:
        """:meth:`scrub_text`, and also what only a citizen's own words hold.

        For text a person wrote about themselves (a 12345 appeal, a mailbox letter, a
        message-board post) this also replaces:

        * landline numbers with an area code (``010-62345678``, ``(0571)8765 4321``,
          ``0571-87654321转123``), and local numbers of 7 or 8 digits right after
          ``电话``, ``座机``, ``固话``, ``号码`` or ``联系方式`` (kind ``phone``);
        * exact addresses: a house number after a road, lane or village (``新华路88号``,
          ``和平新村3幢``), or two address parts in a row anywhere (``3单元502``,
          ``5栋1201``, ``12号3单元502室``) become ``<address:...>``; the road name before
          them stays readable, so an operator still sees where (``新华路<address:...>``),
          and is part of what is pseudonymised, so equal house numbers on two roads do
          not correlate;
        * personal names introduced as names: after ``我叫``, ``名叫``, ``叫做`` or
          ``姓名：``, ``联系人：``, ``投诉人：``, ``来电人：``, ``举报人：`` (2-3 Chinese
          characters or a capitalised Latin name); the surname after ``我姓``,
          ``本人姓``, ``免贵姓``; and a common surname, with up to two given-name
          characters, before ``先生``, ``女士`` or ``小姐`` (kind ``name``).

        Not in :meth:`scrub_text` because these shapes are everyday data elsewhere: an
        area-code number is a product code in attributes, ``3单元502`` a bin's location,
        and a name cue needs prose around it. Identifiers :meth:`scrub_text` finds win
        where matches overlap. Still pattern matching, not NER: a name without a cue
        (``张三说``), a number written in Chinese numerals (``三单元五零二``) and a
        house number without a road or a second part (``住在88号``) stay as written.

        Linear in the text, as :meth:`scrub_text` is: every repetition in the patterns is
        bounded, and overlaps are settled in one walk. Measured once by hand (CPython
        3.11, the 2-core VM under load; the tests assert no time): 64 KiB of ``0571-8765 ``,
        ``12号3单元``, ``我叫`` or a whole appeal repeated scrub in 25-51 ms each, four
        times the text in about four times as long; an appeal of 48 characters with a
        name, a mobile and an address in 20 µs (``timeit``, median of 7, the machine
        quiet).
        """
        work = text.translate(_FULLWIDTH_TABLE) if _HAS_FULLWIDTH.search(text) else text
        found = self._pattern_spans(work) if _TRIGGER.search(text) else []
        # Both lists are sorted and free of overlaps within themselves, so one walk along
        # both finds each narrative span's first possible overlap (linear, not quadratic).
        extra: list[_Span] = []
        i = 0
        for span in _narrative_spans(work):
            while i < len(found) and found[i][1] <= span[0]:
                i += 1
            if i == len(found) or span[1] <= found[i][0]:
                extra.append(span)
        return self._replace(text, work, sorted(found + extra) if extra else found)

    def _pattern_spans(self, work: str) -> list[_Span]:
        """E-mails, then IDs, phones and plates between them, in ``work`` order."""
        found: list[_Span] = []
        gaps = [(0, len(work))]
        if "@" in work:
            gaps = []
            last = 0
            for match in _EMAIL_RE.finditer(work):
                start, end = match.span()
                found.append((start, end, "email", None))
                gaps.append((last, start))
                last = end
            gaps.append((last, len(work)))
        if _HAS_DIGIT.search(work) is not None:
            found.extend(
                span for lo, hi in gaps if hi > lo for span in self._digit_kinds(work, lo, hi)
            )
            found.sort()
        return found

    def _replace(self, text: str, work: str, found: list[_Span]) -> tuple[str, int]:
        """``text`` with each span replaced by the pseudonym of its value (by default the
        span's characters in ``work``, the full-width-folded text)."""
        if not found:
            return text, 0
        parts: list[str] = []
        last = 0
        for start, end, kind, value in found:
            parts.append(text[last:start])
            parts.append(self.pseudonym(kind, work[start:end] if value is None else value))
            last = end
        parts.append(text[last:])
        return "".join(parts), len(found)

    def scrub_identifier(self, text: str) -> tuple[str, int]:
        """:meth:`scrub_text` for short machine identifiers (``event_id``, ``source``).

        Same result as :meth:`scrub_text` for every string, but built for strings like
        ``tr-339901-0001`` or ``iot.pm25.339901001.01`` that run on every event and
        almost never hold personal data. The text is reduced to its *shape* (UTF-8 bytes
        through one ``bytes.translate``: the digit ``1`` stays, other digits become ``0``,
        letters ``a``, the separators and ``()+@`` stay, non-ASCII becomes ``u``; a
        phone starts with ``1``, which most ids' digit runs lack there: with every digit
        ``0``, an event id whose run tag ended in three digits, such as
        ``iot-339906-d8c252-00000300``, had the grouping of a phone and cost 4.1 µs instead
        of 0.16), and the shape's verdict
        is looked up in a small cache. A shape is suspect if it holds ``@`` or non-ASCII,
        or if the phone/ID patterns instantiated over shapes match it; only then does
        :meth:`scrub_text` run. Ids from one system share a few shapes (fixed-width
        codes and counters), so the cache almost always answers.

        Why this and not a library or a plainer test: no library pre-filters for these
        patterns; a digit count does not separate typical ids from phones
        (``iot.pm25.339901001.01`` has 13 digits, ``hl-339903-20261124-00042`` 19 and a
        real date: only its 5-digit tail makes it no ID); and every regex over the text
        pays sre's per-position cost at each digit. Measured with timeit (CPython 3.11,
        this 2-core VM while other test runs kept its load average at 1.3-2.7; median,
        and min, of 9 runs of 100,000 calls; per call):

        ===================================  ================  ==================
        typical id                           scrub_identifier  scrub_text
        ===================================  ================  ==================
        ``tr-339901-0001``                   0.41 µs (0.27)    6.6 µs (5.2)
        ``iot.pm25.339901001.01``            0.48 µs (0.42)    7.4 µs (5.5)
        ``fire.temperature_c.339901001.01``  0.57 µs (0.44)    10.6 µs (8.1)
        ``hl-339903-20261124-00042``         0.49 µs (0.24)    13.1 µs (10.0)
        ===================================  ================  ==================

        About 0.1 µs of each is the method call itself (a method that only returns
        ``(text, 0)``: 0.10-0.17 µs, min 0.07-0.12). Pre-filters measured on the same
        ids and rejected: ``isascii()``, no ``@`` and the full phone/ID regex, 2.6-7.6
        µs; the same with a pattern that first consumes ``[0-9+(]`` (so sre scans for
        that set in C) and then checks a digit-run start by lookbehind, 2.3-5.3 µs. A
        cache keyed by the whole text would only help ``source``: ``event_id`` never
        repeats. Strings longer than 128 UTF-8 bytes are looked up but not cached.
        """
        try:
            shape = text.encode().translate(_SHAPE_TABLE)
        except UnicodeEncodeError:  # a lone surrogate: not worth a fast path
            return self.scrub_text(text)
        suspect = _SHAPE_VERDICTS.get(shape)
        if suspect is None:
            suspect = _SHAPE_SUSPECT_RE.search(shape) is not None
            if len(shape) <= _SHAPE_CACHE_MAX_BYTES:
                if len(_SHAPE_VERDICTS) >= _SHAPE_CACHE_ENTRIES:
                    _SHAPE_VERDICTS.clear()
                _SHAPE_VERDICTS[shape] = suspect
        if suspect:
            return self.scrub_text(text)
        return text, 0

    def scrub_message(self, text: str) -> str:
        """``text`` with identifiers pseudonymised, for dead-letter details and log lines.

        E.g. ``street '13812345678' is not a street of district '339901'`` keeps the
        district code and loses the phone. Not counted: such messages are not data.
        """
        return self.scrub_text(text)[0]

    @staticmethod
    def _digit_kinds(work: str, lo: int, hi: int) -> list[_Span]:
        """IDs, phones and plates in ``work[lo:hi]`` (lookbehinds may see before ``lo``)."""
        spans: list[_Span] = []
        for match in _DIGIT_KINDS_RE.finditer(work, lo, hi):
            group = match.lastgroup
            if group is None:  # pragma: no cover - every alternative is a named group
                continue
            if group in ("id18", "id15") and not _plausible_id_date(group, match.group()):
                continue
            start, end = match.span()
            spans.append((start, end, _GROUP_KIND[group], None))
        return spans

    def scrub_attributes(self, attrs: Mapping[str, Any]) -> tuple[dict[str, Any], int]:
        """Return a scrubbed copy of ``attrs`` (never mutated) and the replacement count.

        At any depth of nested dicts/lists/tuples:

        * every ``str`` value goes through :meth:`scrub_text`;
        * every ``str`` key goes through :meth:`scrub_identifier` (same result), so a key
          that is itself an identifier becomes its pseudonym. If a key then equals one
          already in the output dict (two spellings of one phone, or a key that was
          already a pseudonym), the later key in the mapping's order becomes ``key#2``
          (or ``#3``, ... the first not taken), so no value is lost;
        * an ``int``, or a ``float`` with an integral value (``13812345678.0``), whose
          decimal digits are a phone (``1[3-9]`` and 9 digits, perhaps after ``86``) or
          an ID number (15 or 18 digits with a real birth date) becomes the pseudonym string; the sign is
          ignored. So does a numeric key. A float beyond 2**53 has lost digits: the
          pseudonym is then of the float's value, but the number is still replaced.

        A value under an identifier-named key (:data:`ATTRIBUTE_KEY_KINDS`) is replaced
        wholesale by ``pseudonym(kind, str(value))`` even if no pattern matches, e.g. a
        caller's name or a landline; containers under such a key have each leaf
        replaced (their keys are scrubbed like any key, not wholesale: they are usually
        labels such as ``home``). ``None``, empty strings and bools (flags such as
        ``"phone": True``) identify nobody and are kept. Other scalars are kept.
        Every replacement, in keys and values, counts one.
        """
        counter = [0]
        result = self._scrub_mapping(attrs, None, counter)
        return result, counter[0]

    def _scrub_mapping(
        self, mapping: Mapping[Any, Any], kind: str | None, counter: list[int]
    ) -> dict[Any, Any]:
        out: dict[Any, Any] = {}
        for key, value in mapping.items():
            key_kind = kind
            new_key: Any = key
            if isinstance(key, str):
                key_kind = _key_kind(key) or kind
                new_key, n = self.scrub_identifier(key)
                counter[0] += n
            elif isinstance(key, int | float) and not isinstance(key, bool):
                replaced = self._number_pseudonym(key, counter)
                new_key = key if replaced is None else replaced
            if new_key in out:
                new_key = _unused_key(out, new_key)
            out[new_key] = self._scrub_value(value, key_kind, counter)
        return out

    def _scrub_value(self, value: Any, kind: str | None, counter: list[int]) -> Any:
        if isinstance(value, Mapping):
            return self._scrub_mapping(value, kind, counter)
        if isinstance(value, list):
            return [self._scrub_value(item, kind, counter) for item in value]
        if isinstance(value, tuple):
            return tuple(self._scrub_value(item, kind, counter) for item in value)
        if kind is not None:
            if value is None or isinstance(value, bool) or value == "":
                return value
            counter[0] += 1
            return self.pseudonym(kind, str(value))
        if isinstance(value, str):
            scrubbed, n = self.scrub_text(value)
            counter[0] += n
            return scrubbed
        if isinstance(value, int | float) and not isinstance(value, bool):
            replaced = self._number_pseudonym(value, counter)
            return value if replaced is None else replaced
        return value

    def _number_pseudonym(self, number: float, counter: list[int]) -> str | None:
        found = _number_identifier(number)
        if found is None:
            return None
        counter[0] += 1
        return self.pseudonym(*found)


def _key_kind(key: str) -> str | None:
    """Identifier kind named by an attribute key, if any (``"Caller-Name"`` -> ``"name"``)."""
    return ATTRIBUTE_KEY_KINDS.get(key.strip().lower().replace("-", "_").replace(" ", "_"))
