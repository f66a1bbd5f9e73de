"""How intense a citizen's negative emotion is in an appeal, which emotion leads, and why.

``score(text)`` gives an :class:`Emotion`: ``intensity`` 0..1 of negative emotion,
``category`` the dominant one of DUTIR's seven classes (joy 好, happiness 乐, anger 怒,
sorrow 哀, fear 惧, disgust 恶, surprise 惊) or ``none``, ``extreme`` (intensity at or
above :attr:`Weights.extreme`), and ``evidence``, the words that drove it as the citizen
wrote them.

Method: a lexicon and rules (:mod:`streams.voice.lexicon`) over the words of the
simplified text (:mod:`streams.voice.segment`). Clause by clause, each emotion word
counts for its categories, times the degree adverbs before it (HowNet's four strengths:
非常 ×2, 太 ×1.6, 更 ×1.3, 有点 ×0.6); an odd number of negations before it in the clause
(不, 没有, 没, 别, 未, 无, 并不 ...), or a negating first character (不满意 when only 满意
is a word), turns a positive word into disgust (不满意, 不及时) and cancels a negative one
(不吵, 没有异味). Words and phrases of escalation (上访, 曝光, 去……门口; 救命, 出人命;
活不下去) count four times an emotion word, for anger, fear and sorrow. Exclamation
marks (up to six) and a word or phrase said three times over (堵堵堵, 差！差！差！)
multiply the negative sum. Sarcasm, by the rules in :data:`SARCASM` and :data:`IRONIC_PRAISE` (呵呵, thanks
trailing off in 。。。 or …, praise in scare quotes: “便民”; 真是好样的, 效率真高 unless
beside sincere thanks), turns every positive word of the appeal into disgust. The
positive words that remain offset the negative sum by half, and
``intensity = 1 - exp(-max(sum, 0) / scale)``.

Chosen by measurement, ``.venv/bin/python bench/emotion.py --tune``: the held-out 30 %
of ``data/appeals/labelled.jsonl`` (131 appeals, 18 extreme, labelled by
``docs/emotion-rubric.md``; every threshold and weight chosen on the other 70 % only);
cost on the shared 2-core machine, median of 5 passes over the 434 appeals (the rules
re-measured with the machine quiet after the cue lookahead: 21.5 to 21.8 µs in three
runs; ``cnsenti`` and ``snownlp`` as measured when the method was chosen, under load)::

    method      category  extreme  extreme   Spearman  Brier    µs per appeal
                macro-F1  F1       accuracy  vs band   vs band
    rules       0.782     0.895    0.969     0.817     0.049    22 (cut 9, score 13)
    cnsenti     0.256     0.361    0.702     0.327     0.240    4,397
    snownlp     -         0.311    0.763     0.377     0.290    4,672

The rules' cost is a quarter of what it was with jieba's cut and every rule run on every
word (``bench/emotion.py --against a34e73a``, both timed in one process pass for pass in
turn: median of five runs 31 µs against 132). Each word's part in the rules is worked
out once and kept (:meth:`Scorer._meaning`), and the sarcasm and escalation patterns run
only on an appeal where one pattern of them all (:data:`CUES`) finds something. The
tally walks in Python only the words that mean something (``itertools.compress`` over
their meanings skips the others in C: 27 of an appeal's 38 words, on average, mean
nothing), takes a word as written from the text only when characters were converted, and
counts an emotion word's categories in the loop rather than through a method call each:
7.2 µs → 4.8 µs an appeal for the tally (median of 5 passes over the throughput
benchmark's 10,000 appeals).

``cnsenti`` is that package's own counts (the most frequent DUTIR class; the negative
share of its HowNet sentiment), ``snownlp`` 1 minus its probability of a positive text.
On a real labelled corpus, 1,000 of the hotel and shop reviews snownlp ships (its own
training data), "any negative emotion" is right for 0.669 of them here against snownlp's
in-sample 0.755. The rules were chosen: the only method with an extreme F1 over 0.75,
calibrated (mean intensity by band none 0.03, low 0.18, medium 0.42, high 0.60, extreme
0.99) and 100 times cheaper or more. Figures, rubric and limits: ``docs/emotion.md``.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from itertools import compress, repeat
from operator import itemgetter
from types import MappingProxyType
from typing import Any

import msgspec

from streams.voice.lexicon import CATEGORIES, NEGATIVE, POSITIVE, Lexicon, load_lexicon
from streams.voice.segment import Segmented, Segmenter


class Emotion(msgspec.Struct, frozen=True):
    """The emotion of one appeal."""

    #: 0..1: how intense the negative emotion is (0 none, 1 at the edge)
    intensity: float
    #: joy, happiness, anger, sorrow, fear, disgust, surprise, or none
    category: str
    #: intensity at or above the extreme threshold: the appeals to read first
    extreme: bool
    #: the words that drove the score, strongest first, as written in the appeal
    evidence: tuple[str, ...]


#: Sarcasm: praise that means its opposite. Each is matched on the simplified text.
SARCASM: tuple[re.Pattern[str], ...] = tuple(
    re.compile(p)
    for p in (
        r"呵呵",
        r"(谢谢|感谢|太感谢)[^，。！？!?,]{0,6}(。{2,}|…+|\.{3,})",  # thanks trailing off
        r"所谓的",
    )
)
#: Praise that is sarcasm unless the appeal also thanks or praises in other words and
#: complains of nothing: "效率真高，谢谢！" is sincere, "效率真高啊，等了三个月" is not.
IRONIC_PRAISE = re.compile(r"真是好样的|效率真高|厉害了|名不虚传|真是辛苦|真是好会")
#: Escalation that takes more than one word: to a gate, a placard, smashing, the media.
ESCALATING: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(p), category)
    for p, category in (
        (r"去[^，。！？!?]{0,10}(门口|大门)", "anger"),
        (r"堵[^，。！？!?]{0,8}(大门|门|路)", "anger"),
        (r"举牌|砸了|省里|网上|去告", "anger"),
        (r"(坐|待|站)[^，。！？!?]{0,6}不走", "anger"),
        (r"(马上|立刻|立即|赶紧|快)(派人|出警|来人|封路|出动|来)", "fear"),
    )
)
QUOTES = {"“": True, "「": True, "『": True, "”": False, "」": False, "』": False}
CLAUSE_ENDS = frozenset("，。！？；,.!?;…：:、\n ～~")
NEGATING_FIRST = frozenset("不没无未别")
#: What may follow an emotion word inside one word of the segmenter's dictionary.
TAILS = ("你们", "人", "们", "了", "啊", "呀", "吧")
#: A word or short phrase said three times running, punctuation between or not.
#: (Separators taken possessively: a repeat starts with a word character, so the match is
#: the same, found in four fifths of the time.)
REPEATED = re.compile(r"(\w{1,4}?)[！!，,、]*+\1[！!，,、]*+\1")
#: How many words back a negation still reaches.
NEGATION_REACH = 4
#: The characters a match of the sarcasm and escalation patterns can start with (the
#: tests derive them from the parsed patterns and check that this holds them all).
CUE_FIRST = "举厉去名呵坐堵太待快感所效省真砸立站网谢赶马"
#: The sarcasm and escalation patterns in one: an appeal none of them finds skips them
#: all (1.8 µs an appeal, against 5.6 for the families one by one). The lookahead on
#: :data:`CUE_FIRST` lets sre scan for those characters in C and try the alternatives
#: only there: the same answer in about a third of the time.
CUES = re.compile(
    f"(?=[{CUE_FIRST}])(?:"
    + "|".join(p.pattern for p in (*SARCASM, IRONIC_PRAISE, *(p for p, _ in ESCALATING)))
    + ")"
)
#: The categories that may lead an appeal whose sum is negative, and one whose is not.
_NEGATIVE_LED = NEGATIVE | {"surprise"}
_POSITIVE_LED = POSITIVE | {"surprise"}


#: An appeal with no word of emotion, escalation or sarcasm.
CALM = Emotion(0.0, "none", False, ())


@dataclass(frozen=True)
class Weights:
    """The rules' numbers. ``escalation``, ``scale`` and ``extreme`` were chosen on the
    tuning part of the labelled set (``bench/emotion.py --tune``: the best extreme F1,
    then the best Brier score); the others are set by reasoning, not fitted."""

    degree: Mapping[str, float] = field(
        default_factory=lambda: MappingProxyType(
            {"Extremes": 2.0, "Verys": 1.6, "Mores": 1.3, "Ishs": 0.6}
        )
    )
    negated_positive: float = 0.8  # 不满意: less than 讨厌, more than nothing
    surprise: float = 0.4  # share of a surprise word that is negative in an appeal
    escalation: float = 4.0
    positive: float = 0.5
    exclamation: float = 0.15  # per mark, up to six
    repetition: float = 0.5
    sarcasm: float = 1.5  # the marker itself, as disgust
    #: below this much evidence, no category leads
    least: float = 0.5
    scale: float = 2.0
    extreme: float = 0.9256


@dataclass
class _Tally:
    """What the words of one appeal add up to."""

    #: per category, from emotion words
    scores: dict[str, float] = field(default_factory=dict)
    #: per category, from words of escalation
    escalations: dict[str, float] = field(default_factory=dict)
    #: (weight, the word as written, whether it counts as negative)
    hits: list[tuple[float, str, bool]] = field(default_factory=list)

    def add(self, category: str, weight: float, written: str, *, escalation: bool = False) -> None:
        into = self.escalations if escalation else self.scores
        into[category] = into.get(category, 0.0) + weight
        self.hits.append((weight, written, category in NEGATIVE or category == "surprise"))


#: What a word does in the rules, worked out once per word and kept, so that the rules
#: read one entry a word: ("clause", None) ends a clause, ("quote", opens) opens or
#: closes a quote, ("negation", None) negates, ("degree", factor) strengthens,
#: ("escalation", category) escalates, ("emotion", (categories, negating_first)) carries
#: emotion, its first character negating it when only the rest is a word (不满意).
_Meaning = tuple[str, Any]
#: A word not yet worked out.
_UNSEEN: _Meaning = ("unseen", None)
#: How many words' meanings a scorer keeps: more than its segmenter's dictionary holds,
#: a bound on memory whatever characters the appeals bring.
_MEANINGS_KEPT = 500_000


class Scorer:
    """Scores appeals; building one loads the lexicons and the segmenter (one to two seconds)."""

    def __init__(
        self,
        weights: Weights | None = None,
        lexicon: Lexicon | None = None,
        segmenter: Segmenter | None = None,
    ) -> None:
        self.weights = weights or Weights()
        self.lexicon = lexicon or load_lexicon()
        self.segmenter = segmenter or Segmenter(self.lexicon.user_words())
        self._meanings: dict[str, _Meaning | None] = {}

    def score(self, text: str) -> Emotion:
        return self.score_words(self.segmenter.cut(text))

    def cut(self, text: str) -> Segmented:
        return self.segmenter.cut(text)

    def score_words(self, seg: Segmented) -> Emotion:
        w = self.weights
        cued = CUES.search(seg.simplified) is not None
        sarcasm = self._sarcasm(seg) if cued else []
        tally = self._tally(seg, sarcastic=bool(sarcasm))
        for marker in sarcasm:
            tally.add("disgust", w.sarcasm, marker)
        if cued:
            for pattern, category in ESCALATING:
                for found in self._matches(seg, pattern):
                    tally.add(category, w.escalation, found, escalation=True)
        if not tally.hits:
            return CALM
        scores, escalations = tally.scores, tally.escalations
        negative, positive = sum(escalations.values()), 0.0
        for category, weight in scores.items():
            if category in NEGATIVE:
                negative += weight
            elif category in POSITIVE:
                positive += weight
            elif category == "surprise":
                negative += w.surprise * weight
        raw = (negative * self._arousal(seg) if negative else 0.0) - w.positive * positive
        intensity = round(1.0 - math.exp(-max(raw, 0.0) / w.scale), 4)
        category = self._category(scores, escalations, negative_led=raw > 0)
        # strongest first, in the order found among equals (a reversed sort stays stable)
        led = raw > 0
        hits = sorted((h for h in tally.hits if h[2] == led), key=itemgetter(0), reverse=True)
        evidence: list[str] = []
        for _, word, _ in hits:  # strongest first; a word inside a listed one adds nothing
            if word.strip() and not any(word in e or e in word for e in evidence):
                evidence.append(word)
        return Emotion(intensity, category, intensity >= w.extreme, tuple(evidence[:6]))

    def _tally(self, seg: Segmented, *, sarcastic: bool) -> _Tally:
        w, words = self.weights, seg.words
        tally = _Tally()
        negations: list[int] = []  # where the negations of this clause stand
        degree, quoted = 1.0, False
        meanings = list(map(self._meanings.get, words, repeat(_UNSEEN)))
        # the words as written are the words themselves unless characters were converted
        written = words if seg.simplified == seg.text else seg.written
        # only the words that mean something (most do not: None) are walked in Python
        for i, known in compress(enumerate(meanings), meanings):
            meaning = self._meaning(words[i]) if known is _UNSEEN else known
            if meaning is None:
                continue
            kind, what = meaning
            if kind == "emotion":
                categories, negating_first = what
                flips = negating_first
                if negations:
                    flips += sum(1 for n in negations if i - n <= NEGATION_REACH)
                share, negated = degree / len(categories), flips % 2 == 1
                for category in categories:
                    # a negated or ironic positive word is disgust; a negated negative one nothing
                    if category in POSITIVE and (negated or sarcastic or quoted):
                        weight = share * (w.negated_positive if negated else 1.0)
                        tally.add("disgust", weight, written[i])
                    elif not negated:
                        tally.add(category, share, written[i])
                negations, degree = [], 1.0
            elif kind == "clause":
                negations, degree = [], 1.0
            elif kind == "quote":
                quoted = bool(what)
            elif kind == "negation":
                negations.append(i)
            elif kind == "degree":
                degree *= what
            else:  # escalation
                tally.add(what, w.escalation, written[i], escalation=True)
                negations, degree = [], 1.0
        return tally

    def _meaning(self, word: str) -> _Meaning | None:
        """What ``word`` does in the rules (kept for the next time it comes)."""
        lex = self.lexicon
        meaning: _Meaning | None
        if word in CLAUSE_ENDS:
            meaning = ("clause", None)
        elif word in QUOTES:
            meaning = ("quote", QUOTES[word])
        elif word in lex.negations:
            meaning = ("negation", None)
        elif word in lex.degrees:
            meaning = ("degree", self.weights.degree[lex.degrees[word]])
        elif word in lex.escalations:
            meaning = ("escalation", lex.escalations[word])
        else:
            categories = lex.emotions.get(word)
            negating_first = categories is None and word[:1] in NEGATING_FIRST
            if negating_first:
                categories = lex.emotions.get(word[1:])
            if categories is None and len(word) > 2:
                categories = self._with_tail(word)
            meaning = ("emotion", (categories, negating_first)) if categories else None
        if len(self._meanings) < _MEANINGS_KEPT:
            self._meanings[word] = meaning
        return meaning

    def _with_tail(self, word: str) -> tuple[str, ...] | None:
        """A word of the segmenter's dictionary that is an emotion word with a particle or
        pronoun after it (气死人, 谢谢你们, 烦透了): the emotion word's categories."""
        for tail in TAILS:
            if word.endswith(tail) and word[: -len(tail)] in self.lexicon.emotions:
                return self.lexicon.emotions[word[: -len(tail)]]
        return None

    def _sarcasm(self, seg: Segmented) -> list[str]:
        """The sarcasm markers of the appeal, as written; none when its praise is sincere."""
        found = [m for pattern in SARCASM for m in self._matches(seg, pattern)]
        ironic = self._matches(seg, IRONIC_PRAISE)
        if ironic and not found:
            plain = self._tally(seg, sarcastic=False)
            complains = any(negative for _, _, negative in plain.hits)
            praises = any(
                not negative and not any(word in marker for marker in ironic)
                for _, word, negative in plain.hits
            )
            if praises and not complains:
                return []
        return found + ironic

    @staticmethod
    def _matches(seg: Segmented, pattern: re.Pattern[str]) -> list[str]:
        """What ``pattern`` finds in the simplified text, as written in the appeal (the
        conversion keeps every character's place)."""
        return [seg.text[m.start() : m.end()] for m in pattern.finditer(seg.simplified)]

    def _arousal(self, seg: Segmented) -> float:
        w = self.weights
        marks = seg.text.count("!") + seg.text.count("！")
        repeated = 1 if REPEATED.search(seg.simplified) else 0
        return 1.0 + w.exclamation * min(marks, 6) + w.repetition * repeated

    def _category(
        self, scores: Mapping[str, float], escalations: Mapping[str, float], *, negative_led: bool
    ) -> str:
        allowed = _NEGATIVE_LED if negative_led else _POSITIVE_LED
        led, most = "none", 0.0
        for category in CATEGORIES:  # in this order, so that a tie goes the same way always
            if category in allowed:
                total = scores.get(category, 0.0) + escalations.get(category, 0.0)
                if total > most:
                    led, most = category, total
        return led if most >= self.weights.least else "none"


@functools.cache
def default_scorer() -> Scorer:
    """The scorer :func:`score` uses, built on first use."""
    return Scorer()


def score(text: str) -> Emotion:
    """The emotion of one appeal's text (simplified or traditional characters)."""
    return default_scorer().score(text)
