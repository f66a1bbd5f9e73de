"""An appeal's text as simplified-character words: conversion, then segmentation.

Traditional characters are converted to simplified with ``zhconv`` (its zh-cn table)
first, because the lexicons are simplified; ``bench/emotion.py`` chose it over
``opencc-python-reimplemented`` and ``hanziconv``: of the labelled set's simplified texts
turned traditional by each of the three, zhconv brought 1,190 of 1,209 back exactly
(hanziconv 1,050, opencc 919), in 9 µs a text (14 and 45). Conversion keeps the text's
length on every appeal of the set, so each word also has its place in the text as the
citizen wrote it: the evidence an operator reads is in the citizen's own characters.

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
from pathlib import Path

import jieba
import zhconv


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
    #: each word in the original text's characters (the same word when conversion
    #: changed the text's length, which no appeal of the labelled set does)
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

    @staticmethod
    def simplified(text: str) -> str:
        return str(zhconv.convert(text, "zh-cn"))

    def cut(self, text: str) -> Segmented:
        simplified = self.simplified(text)
        words = tuple(self._jieba.lcut(simplified, HMM=False))
        if len(simplified) != len(text):
            return Segmented(text, simplified, words, words)
        written, start = [], 0
        for word in words:
            written.append(text[start : start + len(word)])
            start += len(word)
        return Segmented(text, simplified, words, tuple(written))
