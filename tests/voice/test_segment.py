"""streams/voice/segment.py: words of either script, offline, with a private cache."""

from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.voice.emotion import Scorer
from streams.voice.segment import (
    Segmented,
    Segmenter,
    default_cache_dir,
    traditional_to_simplified,
)


@pytest.fixture(scope="module")
def segmenter(tmp_path_factory: pytest.TempPathFactory) -> Segmenter:
    return Segmenter(["踢皮球"], cache_dir=tmp_path_factory.mktemp("jieba"))


def test_traditional_text_is_cut_as_simplified_and_kept_as_written(segmenter: Segmenter) -> None:
    cut = segmenter.cut("物業一直踢皮球，電梯壞了半個月")
    assert cut.simplified == "物业一直踢皮球，电梯坏了半个月"
    assert "".join(cut.words) == cut.simplified
    assert "".join(cut.written) == cut.text
    assert "踢皮球" in cut.words  # a word added to the dictionary stays whole
    assert [len(w) for w in cut.written] == [len(w) for w in cut.words]
    assert "電梯" in cut.written and "电梯" in cut.words


def test_characters_outside_the_dictionary_are_words_of_their_own(segmenter: Segmenter) -> None:
    cut = segmenter.cut("楼下太吵了😡😡！踢皮球")
    assert "".join(cut.words) == cut.simplified
    assert cut.words.count("😡") == 2
    assert cut.words[-1] == "踢皮球"


def test_the_cache_goes_to_the_users_own_directory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", "/srv/cache")
    assert default_cache_dir() == Path("/srv/cache/cityvitals")
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_cache_dir() == Path.home() / ".cache" / "cityvitals"


def test_an_unwritable_cache_directory_still_gives_a_segmenter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cache then goes to a fresh private temporary directory of its own."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    cut = Segmenter(cache_dir=blocked / "cityvitals").cut("楼下太吵了")
    assert "".join(cut.words) == "楼下太吵了"
    (private,) = tmp_path.glob("cityvitals-jieba-*")
    assert private.stat().st_mode & 0o777 == 0o700
    assert (private / "jieba.cache").is_file()


def test_the_scorer_loads_only_local_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No network at all while the lexicons and the segmenter load and score; jieba's
    cache goes to the directory given, private to the user."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the scorer reached for the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    cache = tmp_path / "cache"
    scorer = Scorer(segmenter=Segmenter(cache_dir=cache))
    assert scorer.score("楼下太吵了").intensity > 0
    assert [p.name for p in cache.iterdir()] == ["jieba.cache"]
    assert cache.stat().st_mode & 0o777 == 0o700


def test_the_scorer_needs_none_of_the_packages_only_the_bench_compares() -> None:
    """zhconv (GPL), hanziconv and snownlp serve bench/emotion.py alone."""
    script = (
        "import sys\n"
        "for name in ('zhconv', 'hanziconv', 'snownlp'):\n"
        "    sys.modules[name] = None  # importing it now fails\n"
        "from streams.voice.emotion import score\n"
        "print(score('樓下太吵了！').category)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120
    )
    assert done.stdout.strip() == "disgust"


WORDS_TEXT = st.one_of(
    st.text(max_size=40),
    st.text(
        alphabet="物業一直踢皮球電梯壞了半個月楼下太吵😡！，。 abc123噪音施工\ud7ff", max_size=40
    ),
)


@settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(text=WORDS_TEXT)
def test_property_the_words_are_the_text_cut_at_the_automatons_matches(
    segmenter: Segmenter, text: str
) -> None:
    # the words come from the automaton as strings; they are the slices of the
    # simplified text at the places it finds, with each character between them alone
    simplified = segmenter.simplified(text)
    at, expected = 0, []
    for _, start, end in segmenter._words.find_matches_as_indexes(simplified):
        expected += [*simplified[at:start], simplified[start:end]]
        at = end
    expected += simplified[at:]
    assert segmenter.cut(text) == Segmented(text, simplified, tuple(expected))


TABLE = traditional_to_simplified()
TABLE_CHARS = sorted(map(chr, TABLE))
SCRIPT_TEXT = st.one_of(
    st.text(max_size=30),
    st.lists(
        st.one_of(
            st.sampled_from(TABLE_CHARS),
            st.sampled_from([c for c in TABLE_CHARS if ord(c) > 0xFFFF]),
            st.sampled_from([*"物业电梯坏了，。😡a1", "\U0001f600", "\U00020000", "\uffff"]),
        ),
        max_size=20,
    ).map("".join),
)


@settings(
    max_examples=600, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(text=SCRIPT_TEXT)
def test_property_a_text_is_simplified_by_the_table_where_it_holds_a_character_of_it(
    segmenter: Segmenter, text: str
) -> None:
    traditional = not frozenset(TABLE_CHARS).isdisjoint(text)
    assert segmenter.simplified(text) == (text.translate(TABLE) if traditional else text)
