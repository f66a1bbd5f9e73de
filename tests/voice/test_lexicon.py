"""streams/voice/lexicon.py: the DUTIR classes as shipped, with the appeal words."""

from __future__ import annotations

import pytest

from streams.voice.lexicon import (
    APPEAL_WORDS,
    CATEGORIES,
    ESCALATION,
    NEUTRAL_IN_APPEALS,
    Lexicon,
    load_lexicon,
)


@pytest.fixture(scope="module")
def lexicon() -> Lexicon:
    return load_lexicon()


def test_every_dutir_class_is_loaded_from_the_installed_package(lexicon: Lexicon) -> None:
    sizes = {c: sum(c in cats for cats in lexicon.emotions.values()) for c in CATEGORIES}
    assert all(size > 100 for size in sizes.values()), sizes
    # DUTIR's own words, in its own classes
    assert lexicon.emotions["愤怒"] == ("anger",)
    assert lexicon.emotions["恐惧"] == ("fear",)
    assert len(lexicon.emotions) > 20_000


def test_negation_and_degree_words_are_the_ones_appeals_use(lexicon: Lexicon) -> None:
    assert {"不", "没有", "没", "别", "未", "无", "并不"} <= lexicon.negations
    assert lexicon.degrees["非常"] == "Extremes" and lexicon.degrees["太"] == "Verys"
    assert lexicon.degrees["有点"] == "Ishs"
    # a qualifier is never counted as an emotion of its own
    assert not (lexicon.negations | set(lexicon.degrees)) & set(lexicon.emotions) - set(
        APPEAL_WORDS
    )


def test_appeal_words_win_and_request_formulas_carry_no_emotion(lexicon: Lexicon) -> None:
    assert all(lexicon.emotions[w] == (c,) for w, c in APPEAL_WORDS.items())
    assert not NEUTRAL_IN_APPEALS & set(lexicon.emotions)
    assert set(ESCALATION.values()) == {"anger", "fear", "sorrow"}
    assert set(lexicon.user_words()) >= set(APPEAL_WORDS) | set(ESCALATION)
