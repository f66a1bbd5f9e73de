"""An appeal's text as simplified-character words: conversion, then segmentation.

Traditional characters are converted to simplified first, because the lexicons are
simplified: character by character, with the table of traditional characters
``opencc-python-reimplemented`` ships (``TSCharacters.txt``, 4,113 characters, the first
of a character's candidates, as OpenCC takes it), through ``str.translate``.
``bench/emotion.py`` chose it among four converters by what the scorer needs: of the
labelled set's simplified texts turned traditional by each of three converters, it
gives the same intensity and category as the simplified original for 1,196 of 1,209,
as opencc's full phrase-level conversion does at twenty times the cost (about 2 µs a
text against 42 to 59); it alters no simplified text (hanziconv alters five: 糊弄
becomes 煳弄); and its package is Apache-licensed (zhconv, 1,206 of 1,209, is GPL). One
character for one keeps the text's length, so each word also has its place in the
text as the citizen wrote it: the evidence an operator reads is in the citizen's own
characters.

Words are the longest words, left to right, of a dictionary: ``jieba``'s words counted
at least :data:`LEAST_FREQUENCY` (5) times in its corpus, 136,547 of 349,045, with the
appeal words added so that they stay whole, and every character standing alone where no
longer word starts, as in jieba's own cut. One pass of an Aho-Corasick automaton in
leftmost-longest mode finds them (``ahocorasick-rs``, the Rust ``aho-corasick`` crate,
Apache-licensed). It was chosen by measurement, the cut alone over the 434 labelled
appeals in one process on the shared 2-core machine: jieba's own cut, which weighs
every path through the text by its words' frequencies, 85 µs an appeal; a longest match
written in Python, 37 µs; the automaton, 12 µs. pyahocorasick's automaton (C) took 37
µs where jieba took 60, each node's children searched one by one. The rare words are
left out because a longest match takes them over common ones (有异, counted 3 times,
would hide 异味 in 房间有异味). The longest match cuts 231 of the 434 appeals otherwise
than jieba, mostly in words the scorer does not read: the scorer gives the same
intensity and category for 281 of the 303 appeals of the labelled set's tuning part
(299 for the whole dictionary cut both ways, the likelier cut kept by jieba's
frequencies, at about twice the cost an appeal); the held-out figures are in
``docs/emotion.md``. The automaton takes about a second to build, and jieba's prefix
dictionary is not kept once it is read.

A cut is a frozen msgspec Struct (:class:`Segmented`): 0.07 µs to build against 0.45 for
the frozen dataclass it was (timeit, 100,000), for every appeal.
Whether the words cover the text is asked of sre, which looks for a character outside
the characters every one of which is a word, in 0.25 µs an appeal; summing the words'
lengths, which it spares unless sre finds one, took 0.83 (median of 7 passes over the
throughput benchmark's 10,000 appeals).

jieba reads its dictionary from the installed package and caches the parsed form; the
cache goes in a directory of the user's own (``$XDG_CACHE_HOME/cityvitals``, else
``~/.cache/cityvitals``, mode 0700) rather than jieba's default, a fixed name in the
shared temporary directory that anyone on the host could write first. Nothing is
fetched: the dictionary is a file of the installed jieba package.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from collections.abc import Iterable
from importlib.resources import files
from pathlib import Path

import jieba
import msgspec
from ahocorasick_rs import AhoCorasick, Implementation, MatchKind


def traditional_to_simplified() -> dict[int, str]:
    """OpenCC's table of traditional characters and their simplified form, as
    ``str.translate`` takes it, read from the installed opencc-python-reimplemented."""
    table = files("opencc") / "dictionary" / "TSCharacters.txt"
    pairs = {}
    for line in table.read_text(encoding="utf-8").splitlines():
        traditional, _, simplified = line.partition("\t")
        candidates = simplified.split()
        if len(traditional) == 1 and candidates and len(candidates[0]) == 1:
            pairs[ord(traditional)] = candidates[0]
    return pairs


def default_cache_dir() -> Path:
    """Where jieba's prefix-dictionary cache is kept: the user's cache directory."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "cityvitals"


def _private_dir(wanted: Path) -> Path:
    try:
        wanted.mkdir(mode=0o700, parents=True, exist_ok=True)
        if os.access(wanted, os.W_OK):
            return wanted
    except OSError:
        pass
    return Path(tempfile.mkdtemp(prefix="cityvitals-jieba-"))  # private, rebuilt each start


class Segmented(msgspec.Struct, frozen=True):
    """An appeal cut into words: the simplified words, and each one as written."""

    text: str
    simplified: str
    words: tuple[str, ...]

    @property
    def written(self) -> tuple[str, ...]:
        """Each word in the original text's characters, at the same place."""
        written, start = [], 0
        for word in self.words:
            written.append(self.text[start : start + len(word)])
            start += len(word)
        return tuple(written)


class Segmenter:
    """Converts to simplified characters and cuts into words, offline."""

    def __init__(self, user_words: Iterable[str] = (), cache_dir: Path | None = None) -> None:
        self._simplified = traditional_to_simplified()
        self._traditional = frozenset(map(chr, self._simplified))
        # the table's characters of the Basic Multilingual Plane, and every character
        # beyond it (emoji and the rare characters the table also holds): a text with
        # none of them is simplified as it is
        self._maybe_traditional = re.compile(
            f"[{_char_class(c for c in self._traditional if c <= _BMP_END)}"
            f"{_BEYOND_BMP}-{chr(0x10FFFF)}]"
        )
        vocabulary = dict.fromkeys(_dictionary(user_words, cache_dir))
        # every character an appeal is written in is a word too (as in jieba's cut, a
        # character no longer word covers stands alone): the words then cover the text
        vocabulary.update(dict.fromkeys(map(chr, _CHARACTERS)))
        self._words = AhoCorasick(
            list(vocabulary),  # the dictionary's own order: twice as fast to build as a set's
            matchkind=MatchKind.LeftmostLongest,
            # the smallest of the three, and as fast here as the DFA (a gigabyte)
            implementation=Implementation.ContiguousNFA,
        )

    def simplified(self, text: str) -> str:
        """``text`` in simplified characters, one character for one."""
        # most appeals hold no traditional character. sre scans for the set in C in
        # 0.2 µs an appeal, where the set's isdisjoint takes 1.9 (it makes a string of
        # each character to hash it), and translate 2.3. Beyond the BMP (an emoji)
        # the set decides: sre looks up such characters in a list, one by one.
        if self._maybe_traditional.search(text) is None or self._traditional.isdisjoint(text):
            return text
        return text.translate(self._simplified)

    def cut(self, text: str) -> Segmented:
        simplified = self.simplified(text)
        # the words as strings straight from the automaton: 4.1 µs an appeal, against
        # 6.7 for their places and a slice of the text at each (20,000 simulated appeals)
        words = self._words.find_matches_as_strings(simplified)
        # only where a character of none of _CHARACTERS is can a character be in no word
        if _UNCOVERED.search(simplified) is not None and sum(map(len, words)) < len(simplified):
            words = _with_the_rest(simplified, self._words.find_matches_as_indexes(simplified))
        return Segmented(text, simplified, tuple(words))


#: The characters appeals are written in: ASCII, general punctuation, CJK symbols and
#: punctuation, CJK ideographs (extension A and the unified block), full-width forms.
_CHARACTERS = (
    *range(0x09, 0x0E),
    *range(0x20, 0x7F),
    *range(0x2000, 0x2070),
    *range(0x3000, 0x3040),
    *range(0x3400, 0x4DC0),
    *range(0x4E00, 0xA000),
    *range(0xFF00, 0xFFF0),
)
_BMP_END = "\uffff"
_BEYOND_BMP = chr(0x10000)


def _char_class(chars: Iterable[str]) -> str:
    """The inside of a regex character set of ``chars``, runs of code points as ranges."""
    points = sorted(map(ord, set(chars)))
    parts: list[str] = []
    i = 0
    while i < len(points):
        j = i
        while j + 1 < len(points) and points[j + 1] == points[j] + 1:
            j += 1
        first, last = re.escape(chr(points[i])), re.escape(chr(points[j]))
        parts.append(first if i == j else f"{first}-{last}")
        i = j + 1
    return "".join(parts)


#: A character of none of :data:`_CHARACTERS`, which perhaps no word covers.
_UNCOVERED = re.compile(f"[^{_char_class(map(chr, _CHARACTERS))}]")

#: The least count in jieba's dictionary of a word the cut knows (see the module's doc).
LEAST_FREQUENCY = 5


def _with_the_rest(text: str, found: list[tuple[int, int, int]]) -> list[str]:
    """The words ``found`` in ``text``, with each character between them as a word."""
    words: list[str] = []
    at = 0
    for _, start, end in found:
        words += text[at:start]  # one word a character
        words.append(text[start:end])
        at = end
    words += text[at:]
    return words


def _dictionary(user_words: Iterable[str], cache_dir: Path | None) -> list[str]:
    """The words of jieba's dictionary counted :data:`LEAST_FREQUENCY` times or more, as
    jieba loads and caches it, and ``user_words``."""
    jieba.setLogLevel(logging.WARNING)  # its start-up lines are not the worker's log
    tokenizer = jieba.Tokenizer()
    tokenizer.tmp_dir = str(_private_dir(cache_dir or default_cache_dir()))
    tokenizer.initialize()
    # (the prefix dictionary also holds every word's prefixes, at frequency 0)
    known = [word for word, frequency in tokenizer.FREQ.items() if frequency >= LEAST_FREQUENCY]
    return [*(word for word in user_words if word), *known]
