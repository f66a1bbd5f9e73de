"""streams/voice/emotion.py: what an operator relies on in an appeal's emotion score."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.voice.emotion import (
    CUES,
    ESCALATING,
    IRONIC_PRAISE,
    SARCASM,
    Emotion,
    Scorer,
    Weights,
    default_scorer,
    score,
)
from streams.voice.lexicon import CATEGORIES
from tests.regex_first import first_chars, lookahead_chars

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

import emotion as emotion_bench  # noqa: E402

LABELLED = ROOT / "data" / "appeals" / "labelled.jsonl"


def rows() -> list[dict[str, Any]]:
    return [json.loads(line) for line in LABELLED.read_text("utf-8").splitlines() if line]


@pytest.mark.parametrize(
    ("plain", "negated"),
    [
        ("晚上很吵", "晚上不吵"),
        ("楼道里有臭味", "楼道里没有臭味"),
        ("家里人很担心", "家里人别担心"),
        ("现场发现危险", "现场未发现危险"),
        ("房间有异味", "房间无异味"),
        ("楼下噪音很大", "楼下没噪音了"),
    ],
)
def test_a_negated_complaint_word_no_longer_counts(plain: str, negated: str) -> None:
    assert score(plain).intensity > 0
    assert score(negated).intensity == 0
    assert score(negated).category == "none"


@pytest.mark.parametrize(
    ("praise", "negated"),
    [("对处理结果很满意", "对处理结果很不满意"), ("工作人员很耐心", "工作人员没耐心")],
)
def test_negated_praise_is_a_complaint(praise: str, negated: str) -> None:
    assert score(praise).intensity == 0 and score(praise).category == "joy"
    assert score(negated).intensity > 0 and score(negated).category == "disgust"


def test_a_double_negation_is_no_complaint() -> None:
    assert score("我并没有什么不满意的").intensity == 0


def test_degree_adverbs_order_the_intensity() -> None:
    mild, plain = score("楼下有点吵").intensity, score("楼下吵").intensity
    very = [score(f"楼下{adverb}吵").intensity for adverb in ("很", "太", "特别")]
    most = [score(f"楼下{adverb}吵").intensity for adverb in ("非常", "极其", "十分")]
    assert 0 < mild < plain < min(very)
    assert max(very) < min(most) < 1


def test_exclamation_marks_and_repetition_raise_the_intensity() -> None:
    once = score("太吵了").intensity
    assert once < score("太吵了！").intensity < score("太吵了！！！").intensity
    assert score("太吵了太吵了太吵了").intensity > score("太吵了！！！").intensity


@pytest.mark.parametrize(
    ("sarcastic", "sincere"),
    [
        ("真是好样的，一个章盖了半个月", "一个章盖了半个月"),
        ("谢谢你们啊。。。问题还是老样子", "谢谢你们啊。问题还是老样子"),
        ("呵呵，服务真贴心", "服务真贴心"),
        ("物业的服务真“贴心”", "物业的服务真贴心"),
    ],
)
def test_sarcasm_turns_praise_into_a_complaint(sarcastic: str, sincere: str) -> None:
    got = score(sarcastic)
    assert got.intensity > score(sincere).intensity
    assert got.intensity > 0 and got.category == "disgust"


def test_praise_itself_is_no_complaint() -> None:
    got = score("谢谢你们啊。")
    assert got.intensity == 0 and got.category == "joy"


@pytest.mark.parametrize(
    "sincere", ["社区工作人员效率真高，谢谢！", "这次办事效率真高，工作人员很热情，给你们点赞！"]
)
def test_praise_that_could_be_sarcasm_is_sincere_beside_thanks_and_no_complaint(
    sincere: str,
) -> None:
    got = score(sincere)
    assert got.intensity == 0 and got.category == "joy"
    ironic = score("效率真高啊，投诉噪音三个月，终于等来了一条短信")
    assert ironic.intensity > 0 and ironic.category == "disgust"
    assert "效率真高" in ironic.evidence


@pytest.mark.parametrize(
    ("traditional", "simplified"),
    [
        (
            "樓下酒吧每天凌晨還在放音樂，真是氣死人了！",
            "楼下酒吧每天凌晨还在放音乐，真是气死人了！",
        ),
        ("服務態度差到極點，我問個問題就被吼", "服务态度差到极点，我问个问题就被吼"),
        ("感謝社區工作人員，真的太溫暖了", "感谢社区工作人员，真的太温暖了"),
        ("再不來水我們就去堵自來水公司的大門！", "再不来水我们就去堵自来水公司的大门！"),
    ],
)
def test_traditional_and_simplified_characters_score_the_same(
    traditional: str, simplified: str
) -> None:
    t, s = score(traditional), score(simplified)
    assert (t.intensity, t.category, t.extreme) == (s.intensity, s.category, s.extreme)
    assert t.evidence and len(t.evidence) == len(s.evidence)
    # the operator reads each appeal's evidence in its own characters
    assert all(word in traditional for word in t.evidence)
    assert all(word in simplified for word in s.evidence)


def test_every_evidence_word_stands_in_its_appeal() -> None:
    for row in rows():
        got = score(row["text"])
        assert all(word and word in row["text"] for word in got.evidence), row["id"]
        if got.intensity > 0:
            assert got.evidence, row["id"]


def test_threats_to_escalate_are_extreme_and_enquiries_are_calm() -> None:
    threat = score("投诉五次都没用，再不处理我们就去市政府门口拉横幅！")
    assert threat.extreme and threat.category == "anger"
    assert "拉横幅" in threat.evidence
    enquiry = score("请问公积金可以用来付房租吗？需要什么材料")
    assert enquiry == Emotion(0.0, "none", False, ())


def test_an_appeal_scores_the_same_the_first_time_and_every_time_after() -> None:
    """The scorer keeps what each word means once it has seen it; that changes nothing."""
    texts = [row["text"] for row in rows()[:80]]
    seasoned = default_scorer()
    before = [seasoned.score(text) for text in texts]
    fresh = Scorer(seasoned.weights, seasoned.lexicon, seasoned.segmenter)
    assert [fresh.score(text) for text in texts] == before
    assert [seasoned.score(text) for text in texts] == before


def test_the_result_is_bounded_and_named() -> None:
    for row in rows()[:120]:
        got = score(row["text"])
        assert 0 <= got.intensity <= 1
        assert got.category in {*CATEGORIES, "none"}
        assert got.extreme == (got.intensity >= default_scorer().weights.extreme)


def test_the_labelled_set_follows_its_rubric_and_keeps_its_held_out_part() -> None:
    labelled = rows()
    assert len(labelled) >= 400
    assert len({r["text"] for r in labelled}) == len(labelled)
    assert {r["band"] for r in labelled} == set(emotion_bench.BAND_VALUE)
    assert {r["category"] for r in labelled} == {*CATEGORIES, "none"}
    assert all(r["extreme"] == (r["band"] == "extreme") for r in labelled)
    held = [r for r in labelled if r["split"] == "heldout"]
    assert 0.28 <= len(held) / len(labelled) <= 0.32
    assert {r["split"] for r in labelled} == {"tune", "heldout"}
    # no personal data: no mobile number, ID number or e-mail address in any text
    personal = re.compile(r"1[3-9]\d{9}|\d{17}[\dXx]|[\w.]+@[\w.]+")
    assert not [r["id"] for r in labelled if personal.search(r["text"])]


def test_extreme_negative_vs_not_reaches_the_acceptance_on_the_held_out_part() -> None:
    """The bench's own figures: F1 of "extreme vs not" on appeals never used to tune."""
    labelled = emotion_bench.load(LABELLED)
    tune, heldout = emotion_bench.part(labelled, "tune"), emotion_bench.part(labelled, "heldout")
    report = emotion_bench.evaluate(emotion_bench.rules(default_scorer()), tune, heldout)
    assert report["extreme"]["threshold"] == default_scorer().weights.extreme
    assert report["extreme"]["f1"] >= 0.75


def test_the_shipped_threshold_is_the_one_the_tuning_part_chooses() -> None:
    labelled = emotion_bench.load(LABELLED)
    best = emotion_bench.tune_grid(default_scorer(), emotion_bench.part(labelled, "tune"))[0]
    weights = Weights()
    assert (best["scale"], best["escalation"]) == (weights.scale, weights.escalation)
    assert best["threshold"] == pytest.approx(weights.extreme, abs=1e-4)


def test_the_bench_times_the_scorer_of_a_revision_beside_todays() -> None:
    """``bench/emotion.py --against REV``: the scorer as committed, in this process."""
    then = emotion_bench.scorer_at("HEAD")
    assert type(then).__module__ == "voice_at_HEAD.emotion"
    texts = [row["text"] for row in rows()[:40]]
    report = emotion_bench.against(then, default_scorer(), texts, runs=1)
    assert report["same_intensity_and_category"] == report["appeals"] == len(texts)
    assert set(report) >= {"then_us", "now_us"}


def test_the_example_in_docs_emotion_md_prints_what_it_says() -> None:
    doc = (ROOT / "docs" / "emotion.md").read_text(encoding="utf-8")
    example = re.search(r'score\("(.+?)"\)\n((?:# .*\n)+)```', doc)
    assert example is not None
    documented = " ".join(line[2:].strip() for line in example.group(2).splitlines())
    assert repr(score(example.group(1))) == documented


def test_the_cues_lookahead_holds_every_first_character_of_every_pattern() -> None:
    # the lookahead only lets sre skip where no sarcasm or escalation pattern can start
    patterns = (*SARCASM, IRONIC_PRAISE, *(p for p, _ in ESCALATING))
    ahead, rest = lookahead_chars(CUES)
    assert rest == "|".join(p.pattern for p in patterns)
    assert set().union(*(first_chars(p.pattern) for p in patterns)) <= ahead


@settings(max_examples=500, deadline=None)
@given(
    text=st.one_of(
        st.text(max_size=40),
        st.lists(
            st.sampled_from(
                [*"呵谢感太所真效厉名去堵举砸省网坐待站马立赶快门口路不走。！…", "派人"]
            ),
            max_size=20,
        ).map("".join),
    )
)
def test_property_the_cues_find_an_appeal_where_one_of_their_patterns_does(text: str) -> None:
    patterns = (*SARCASM, IRONIC_PRAISE, *(p for p, _ in ESCALATING))
    assert (CUES.search(text) is not None) == any(p.search(text) for p in patterns)
