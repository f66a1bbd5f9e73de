"""An appeal's text as simplified-character words: conversion, then segmentation.

Traditional characters are converted to simplified first, because the lexicons are
simplified: character by character, with the table of traditional characters
``opencc-python-reimplemented`` ships (``TSCharacters.txt``, 4,113 characters, the first
of a character's candidates, as OpenCC takes it), through ``str.translate``.
``bench/emotion.py`` chose it among four converters by what the scorer needs: of the
labelled set's simplified texts turned traditional by each of three converters, it
gives the same intensity and category as the simplified original for 1,196 of 1,209,
as opencc's full phrase-level conversion does at twenty times the cost (about 2.5 µs a
text against 46 to 59); it alters no simplified text (hanziconv alters five: 糊弄
becomes 煳弄); and its package is Apache-licensed (zhconv, 1,206 of 1,209, is GPL). One
character for one keeps the text's length, so each word also has its place in the
text as the citizen wrote it: the evidence an operator reads is in the citizen's own
characters.

Words come from ``jieba``'s dictionary, with the appeal words added so that they stay
whole. jieba builds a prefix dictionary from the word list it ships when a tokenizer
starts (under a second) and caches it; the cache goes in a directory of the
user's own (``$XDG_CACHE_HOME/cityvitals``, else ``~/.cache/cityvitals``, mode 0700)
rather than jieba's default, a fixed name in the shared temporary directory that anyone
on the host could write first. Nothing is fetched: the dictionary is a file of the
installed jieba package.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

import jieba


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


@dataclass(frozen=True)
class Segmented:
    """An appeal cut into words: the simplified words, and each one as written."""

    text: str
    simplified: str
    words: tuple[str, ...]
    #: each word in the original text's characters
    written: tuple[str, ...]


class Segmenter:
    """Converts to simplified characters and cuts into words, offline."""

    def __init__(self, user_words: Iterable[str] = (), cache_dir: Path | None = None) -> None:
        jieba.setLogLevel(logging.WARNING)  # its start-up lines are not the worker's log
        self._jieba = jieba.Tokenizer()
        self._jieba.tmp_dir = str(_private_dir(cache_dir or default_cache_dir()))
        self._jieba.initialize()
        for word in user_words:
            self._jieba.add_word(word)
        self._simplified = traditional_to_simplified()

    def simplified(self, text: str) -> str:
        """``text`` in simplified characters, one character for one."""
        return text.translate(self._simplified)

    def cut(self, text: str) -> Segmented:
        simplified = self.simplified(text)
        words = tuple(self._jieba.lcut(simplified, HMM=False))
        written, start = [], 0
        for word in words:
            written.append(text[start : start + len(word)])
            start += len(word)
        return Segmented(text, simplified, words, tuple(written))
