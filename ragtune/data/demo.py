"""The built-in demo data set: short synthetic news items in three topics.

This is a demo, not a benchmark. ragtune generates these texts itself, from templates and small
word lists, so that ``ragtune train --demo`` (``data.demo: true``) runs end to end in a couple of
minutes on a laptop without downloading anything. Accuracy on it says nothing about how a model
does on real text.

* Classes: ``politics``, ``economy``, ``entertainment`` (slightly unbalanced).
* Sizes: 600 train, 150 validation, 150 test rows (CSV, columns ``text,label``).
* Mostly English, with about 15% Chinese rows in every class, so Chinese text is exercised too.
* Every sentence mixes topic words with words shared by all topics and with ambiguous words
  (``budget``, ``campaign``, ``record``, ``deal``, ``ratings`` ...); some slots borrow another
  topic's words and 5% of the labels are flipped. A small model therefore learns it well (roughly
  85-97% accuracy) but not perfectly.
* Deterministic: the same seed writes byte-identical files. No text occurs twice.
"""

from __future__ import annotations

import csv
import random
from pathlib import Path

DEMO_LABELS = ("politics", "economy", "entertainment")
DEMO_SIZES = {"train": 600, "validation": 150, "test": 150}
DEMO_SEED = 20240917
DEMO_DESCRIPTION = (
    "Synthetic news-topic demo data written by ragtune.data.demo (3 classes: politics, economy, "
    "entertainment; 600/150/150 rows; English with ~15% Chinese; 5% label noise). A demo, not a benchmark."
)

_CLASS_WEIGHTS = (0.36, 0.34, 0.30)
_LABEL_NOISE = 0.05
_CHINESE_SHARE = 0.15
_P_OWN = 0.82  # a topic slot uses the row's own topic words
_P_AMBIGUOUS = 0.12  # ... words that fit several topics
# otherwise: another topic's words (a distractor)

# --- English -----------------------------------------------------------------------------------

_EN = {
    "politics": {
        "subj": [
            "the prime minister", "opposition lawmakers", "the senate committee", "the foreign minister",
            "the governing coalition", "the mayor", "party leaders", "the president", "the cabinet",
            "election officials", "the interior ministry", "a veteran senator", "the governor",
        ],
        "obj": [
            "a new immigration bill", "the election results", "a referendum on reform", "the peace treaty",
            "the voting law", "a cabinet reshuffle", "the party manifesto", "a motion of no confidence",
            "the constitutional amendment", "new border rules", "the coalition agreement", "a ballot recount",
        ],
        "topic": [
            "the upcoming election", "a parliamentary vote", "diplomatic tensions", "the opposition boycott",
            "calls for early elections", "a corruption inquiry", "the leadership contest", "polling day",
        ],
        "verb": ["vetoed", "voted on", "campaigned against", "ratified", "debated in parliament"],
    },
    "economy": {
        "subj": [
            "the central bank", "investors", "the finance ministry", "retail chains", "exporters",
            "the stock exchange", "bond traders", "the treasury", "small businesses", "manufacturers",
            "the statistics office", "economists", "major lenders",
        ],
        "obj": [
            "interest rates", "the inflation forecast", "quarterly earnings", "new tariffs on steel",
            "the jobless figures", "factory output data", "a bond issue", "mortgage rates",
            "the currency peg", "retail sales numbers", "a merger of two banks", "fuel prices",
        ],
        "topic": [
            "rising inflation", "a weaker currency", "slowing growth", "falling share prices",
            "higher borrowing costs", "the trade deficit", "a jump in unemployment", "fears of recession",
        ],
        "verb": ["raised", "cut", "invested in", "traded", "priced in"],
    },
    "entertainment": {
        "subj": [
            "the film's director", "the pop star", "the lead actress", "the studio", "festival organisers",
            "the band", "a popular comedian", "the streaming service", "the film crew", "the singer",
            "the theatre company", "the award jury", "fans of the series",
        ],
        "obj": [
            "a new album", "the film premiere", "a world concert tour", "the season finale",
            "the box office figures", "a musical adaptation", "the festival line-up", "a celebrity memoir",
            "the music video", "a sequel to the hit movie", "the red carpet show", "the soundtrack",
        ],
        "topic": [
            "the film festival", "a sold-out concert", "the awards season", "a casting controversy",
            "the series finale", "a chart-topping single", "opening weekend", "the talent show",
        ],
        "verb": ["starred in", "premiered", "recorded", "sang at", "directed"],
    },
}
_EN_AMBIGUOUS = {
    "subj": ["officials", "a spokesperson", "critics", "analysts", "local organisers", "the committee"],
    "obj": [
        "the budget", "a new campaign", "record ratings", "the final deal", "a public vote",
        "the new tour", "a surprise announcement", "the long-awaited report",
    ],
    "topic": [
        "the budget", "a record week", "the ratings", "a controversial deal", "the campaign",
        "a new poll", "public criticism", "the tour schedule",
    ],
    "verb": ["announced", "welcomed", "criticised", "questioned", "praised", "delayed", "unveiled", "discussed"],
}
_EN_WHEN = [
    "on Monday", "on Tuesday", "this week", "late on Friday", "last month", "earlier this year",
    "in the capital", "overnight", "on Thursday", "at the weekend",
]
_EN_TEMPLATES = [
    "{subj} {verb} {obj} {when}.",
    "{When}, {subj} {verb} {obj}.",
    "{subj} {verb} {obj} amid {topic}.",
    "Reports say {subj} {verb} {obj} after {topic}.",
    "{subj} {verb} {obj}, {subj2} said {when}.",
    "As {topic} continued, {subj} {verb} {obj}.",
    "{subj} {verb} {obj} ahead of {topic}.",
    "{subj} and {subj2} {verb} {obj} {when}.",
]

# --- Chinese -----------------------------------------------------------------------------------

_ZH = {
    "politics": {
        "subj": ["总理", "反对党议员", "参议院委员会", "外交部长", "执政联盟", "市长", "总统", "内阁"],
        "obj": ["新移民法案", "选举结果", "改革公投", "和平条约", "投票法", "内阁改组", "不信任动议", "宪法修正案"],
        "topic": ["大选", "议会投票", "外交紧张", "提前选举的呼声", "腐败调查", "党内选举"],
        "verb": ["否决了", "表决了", "签署了", "在议会辩论了"],
    },
    "economy": {
        "subj": ["央行", "投资者", "财政部", "零售企业", "出口商", "证券交易所", "债券交易员", "经济学家"],
        "obj": ["基准利率", "通胀预期", "季度财报", "钢铁关税", "失业数据", "工业产出", "房贷利率", "汇率政策"],
        "topic": ["通胀上升", "货币贬值", "增长放缓", "股价下跌", "贸易逆差", "经济衰退的担忧"],
        "verb": ["上调了", "下调了", "投资了", "发行了"],
    },
    "entertainment": {
        "subj": ["电影导演", "流行歌手", "女主角", "电影公司", "电影节组委会", "乐队", "喜剧演员", "流媒体平台"],
        "obj": ["新专辑", "电影首映", "巡回演唱会", "大结局", "票房成绩", "音乐剧", "电视剧续集", "电影原声"],
        "topic": ["电影节", "演唱会门票售罄", "颁奖季", "选角争议", "综艺节目", "新歌登顶排行榜"],
        "verb": ["主演了", "首映了", "录制了", "执导了"],
    },
}
_ZH_AMBIGUOUS = {
    "subj": ["官员", "发言人", "评论人士", "分析人士", "组委会"],
    "obj": ["预算", "新的活动", "创纪录的收视率", "最终协议", "公开投票", "新的巡演"],
    "topic": ["预算", "创纪录的一周", "收视率", "有争议的协议", "新的民调", "公众批评"],
    "verb": ["宣布了", "欢迎", "批评了", "质疑了", "推迟了", "讨论了"],
}
_ZH_WHEN = ["周一", "本周", "上周五", "上个月", "今年早些时候", "昨晚", "周末"]
_ZH_TEMPLATES = [
    "{when}，{subj}{verb}{obj}。",
    "{subj}{verb}{obj}，{subj2}{when}表示。",
    "在{topic}之际，{subj}{verb}{obj}。",
    "据报道，{subj}在{topic}后{verb}{obj}。",
    "{subj}和{subj2}{when}{verb}{obj}。",
]


def _pick(rng: random.Random, vocab: dict, ambiguous: dict, label: str, slot: str) -> str:
    r = rng.random()
    if r < _P_OWN:
        source = vocab[label]
    elif r < _P_OWN + _P_AMBIGUOUS:
        return rng.choice(ambiguous[slot])
    else:
        source = vocab[rng.choice([c for c in DEMO_LABELS if c != label])]
    return rng.choice(source[slot])


def _sentence(rng: random.Random, label: str, chinese: bool) -> str:
    vocab, ambiguous = (_ZH, _ZH_AMBIGUOUS) if chinese else (_EN, _EN_AMBIGUOUS)
    template = rng.choice(_ZH_TEMPLATES if chinese else _EN_TEMPLATES)
    when = rng.choice(_ZH_WHEN if chinese else _EN_WHEN)
    subj = _pick(rng, vocab, ambiguous, label, "subj")
    subj2 = _pick(rng, vocab, ambiguous, label, "subj")
    while subj2 == subj:
        subj2 = _pick(rng, vocab, ambiguous, label, "subj")
    text = template.format(
        subj=subj,
        subj2=subj2,
        verb=_pick(rng, vocab, ambiguous, label, "verb"),
        obj=_pick(rng, vocab, ambiguous, label, "obj"),
        topic=_pick(rng, vocab, ambiguous, label, "topic"),
        when=when,
        When=when[:1].upper() + when[1:],
    )
    return text[:1].upper() + text[1:]


def _document(rng: random.Random, label: str) -> str:
    chinese = rng.random() < _CHINESE_SHARE
    n_sentences = rng.choices((1, 2, 3), weights=(0.45, 0.4, 0.15))[0]
    joiner = "" if chinese else " "
    return joiner.join(_sentence(rng, label, chinese) for _ in range(n_sentences))


def generate_demo_rows(seed: int = DEMO_SEED) -> dict[str, list[tuple[str, str]]]:
    """The demo rows per split as ``(text, label)`` pairs; deterministic for a seed, no repeated text."""
    rng = random.Random(seed)
    seen: set[str] = set()
    splits: dict[str, list[tuple[str, str]]] = {}
    for split, size in DEMO_SIZES.items():
        rows = []
        while len(rows) < size:
            label = rng.choices(DEMO_LABELS, weights=_CLASS_WEIGHTS)[0]
            text = _document(rng, label)
            if text in seen:
                continue
            seen.add(text)
            if rng.random() < _LABEL_NOISE:
                label = rng.choice([c for c in DEMO_LABELS if c != label])
            rows.append((text, label))
        splits[split] = rows
    return splits


def write_demo_dataset(folder: str | Path, seed: int = DEMO_SEED) -> dict[str, Path]:
    """Write ``train.csv``, ``validation.csv`` and ``test.csv`` (columns ``text,label``) into ``folder``.

    Returns ``{"train": path, "validation": path, "test": path}``. The same seed writes
    byte-identical files.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    for split, rows in generate_demo_rows(seed).items():
        path = folder / f"{split}.csv"
        with path.open("w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(["text", "label"])
            writer.writerows(rows)
        paths[split] = path
    return paths
