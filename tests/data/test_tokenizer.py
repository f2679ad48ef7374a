"""Tokenizer training, encoding, saving and loading; English, accented and Chinese text."""

import pytest

from ragtune.data.tokenizer import (
    SPECIAL_TOKENS,
    encode,
    load_tokenizer,
    save_tokenizer,
    token_lengths,
    train_tokenizer,
    unk_rate,
)
from ragtune.errors import RagtuneError

ENGLISH = [
    "The central bank raised interest rates on Monday.",
    "The film premiere drew a huge crowd of fans.",
    "Parliament voted on the new immigration bill.",
    "Investors welcomed the quarterly earnings of the bank.",
] * 5
CHINESE = [
    "体验2D巅峰 倚天屠龙记十大创新概览",
    "60年铁树开花形状似玉米芯(组图)",
    "同步A股首秀：港股缩量回调",
    "中青宝sg现场抓拍 兔子舞热辣表演",
    "国足主帅：球队状态良好，目标小组出线",
]
ACCENTED = ["Für die Straße gilt das Übereinkommen.", "Le café est très élégant à Paris."] * 3


@pytest.fixture(params=["wordpiece", "bpe"])
def kind(request):
    return request.param


def test_special_token_ids_and_cls(kind):
    tok = train_tokenizer(ENGLISH, kind=kind, vocab_size=200, min_frequency=1)
    assert [tok.token_to_id(t) for t in SPECIAL_TOKENS] == [0, 1, 2, 3]
    enc = tok.encode("The bank raised rates.")
    assert enc.ids[0] == tok.token_to_id("[CLS]")
    assert "[UNK]" not in enc.tokens
    assert tok.decode(enc.ids) == "the bank raised rates."


def test_chinese_tokenizes_to_characters_without_unk(kind):
    tok = train_tokenizer(CHINESE + ENGLISH, kind=kind, vocab_size=300, min_frequency=2)
    for title in CHINESE:
        tokens = tok.encode(title).tokens
        assert "[UNK]" not in tokens, tokens
    tokens = tok.encode("倚天屠龙记").tokens
    assert tokens == ["[CLS]", "倚", "天", "屠", "龙", "记"]
    assert unk_rate(tok, CHINESE) == 0.0


def test_accents_kept_when_lowercasing(kind):
    tok = train_tokenizer(ACCENTED, kind=kind, vocab_size=300, min_frequency=1, lowercase=True)
    tokens = tok.encode("Über Straße").tokens
    assert "[UNK]" not in tokens
    text = "".join(t.removeprefix("##") for t in tokens[1:])
    assert "ü" in text and "ß" in text  # accents kept, lowercased


def test_lowercase_off(kind):
    tok = train_tokenizer(ENGLISH, kind=kind, vocab_size=300, min_frequency=1, lowercase=False)
    assert "The" in tok.encode("The bank").tokens


def test_unk_rate_counts_unseen_characters(kind):
    tok = train_tokenizer(ENGLISH, kind=kind, vocab_size=300, min_frequency=1)
    assert unk_rate(tok, ENGLISH) == 0.0
    rate = unk_rate(tok, ["bank ω"])  # "ω" never seen in training
    assert 0.0 < rate <= 0.5
    assert unk_rate(tok, []) == 0.0


def test_encode_truncates_and_restores_state(kind):
    tok = train_tokenizer(ENGLISH + CHINESE, kind=kind, vocab_size=300, min_frequency=1)
    ids = encode(tok, ENGLISH[:3] + CHINESE[:1] + [""], max_length=5)
    assert len(ids) == 5
    assert all(1 <= len(x) <= 5 and x[0] == 2 for x in ids)
    assert ids[-1] == [2]  # an empty text is just [CLS]
    assert tok.truncation is None and tok.padding is None
    long = encode(tok, [CHINESE[0]], max_length=512)[0]
    assert len(long) == token_lengths(tok, [CHINESE[0]])[0] > 10  # untruncated: [CLS] + one token per character
    with pytest.raises(RagtuneError, match="max_length"):
        encode(tok, ["x"], max_length=0)


def test_generator_input():
    tok = train_tokenizer((t for t in ENGLISH), vocab_size=200, min_frequency=1)
    assert tok.get_vocab_size() > 4


def test_no_texts_is_an_error():
    with pytest.raises(RagtuneError, match="no training texts"):
        train_tokenizer([], vocab_size=200)


def test_unknown_kind():
    with pytest.raises(RagtuneError, match="wordpiece, bpe"):
        train_tokenizer(ENGLISH, kind="unigram")


def test_save_and_load_round_trip(tmp_path, kind):
    tok = train_tokenizer(ENGLISH + CHINESE, kind=kind, vocab_size=300, min_frequency=1)
    file = save_tokenizer(tok, tmp_path / "tok" / "tokenizer.json")
    assert file.is_file()
    loaded = load_tokenizer(file)
    texts = ENGLISH[:2] + CHINESE
    assert encode(loaded, texts, 64) == encode(tok, texts, 64)
    assert encode(load_tokenizer(tmp_path / "tok"), texts, 64) == encode(tok, texts, 64)  # folder works too


def test_load_missing(tmp_path):
    with pytest.raises(RagtuneError, match=r"tokenizer file not found: .*tokenizer\.json"):
        load_tokenizer(tmp_path / "tokenizer.json")


@pytest.mark.parametrize("content", ["{not json", '{"version": "1.0", "model": 3}'])
def test_load_corrupt(tmp_path, content):
    path = tmp_path / "tokenizer.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(RagtuneError, match=r"tokenizer\.json: not a valid tokenizer file"):
        load_tokenizer(path)


LONG_CHINESE = "一二三四五六七八九十"


def _char_ids(tok, text):
    return [tok.token_to_id(ch) for ch in text]


def test_truncation_strategies_keep_exact_ids_scratch_tokenizer():
    tok = train_tokenizer([LONG_CHINESE, "short text"], kind="wordpiece", vocab_size=100, min_frequency=1)
    c = _char_ids(tok, LONG_CHINESE)
    assert None not in c and encode(tok, [LONG_CHINESE], 64)[0] == [2] + c  # [CLS] + one id per character
    assert encode(tok, [LONG_CHINESE], 5) == encode(tok, [LONG_CHINESE], 5, "head") == [[2] + c[:4]]
    assert encode(tok, [LONG_CHINESE], 5, "tail") == [[2] + c[-4:]]
    assert encode(tok, [LONG_CHINESE], 5, "head_tail") == [[2] + c[:1] + c[-3:]]  # default head: 5 // 4 = 1
    assert encode(tok, [LONG_CHINESE], 7, "head_tail", head_tokens=2) == [[2] + c[:2] + c[-4:]]
    assert encode(tok, [LONG_CHINESE], 5, "head_tail", head_tokens=9) == [[2] + c[:4]]  # head larger than the room
    assert encode(tok, [LONG_CHINESE], 5, "head_tail", head_tokens=0) == [[2] + c[-4:]]
    short = encode(tok, ["short text"], 64)[0]
    for strategy in ("head", "tail", "head_tail"):
        assert encode(tok, ["short text", ""], 64, strategy) == [short, [2]]  # short texts are untouched
    assert tok.truncation is None  # the tokenizer's own settings are restored
    with pytest.raises(RagtuneError, match="model.truncation.*'middle'.*head_tail"):
        encode(tok, ["x"], 5, "middle")


def test_truncation_keeps_cls_first_and_sep_last_for_hf_tokenizers():
    from transformers import BertTokenizerFast

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *LONG_CHINESE, "the", "end"]
    tok = BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)}).backend_tokenizer
    text = LONG_CHINESE + " the end"
    c = _char_ids(tok, LONG_CHINESE) + [tok.token_to_id("the"), tok.token_to_id("end")]  # 12 text tokens
    assert encode(tok, [text], 64)[0] == [2] + c + [3]
    assert encode(tok, [text], 6, "head") == [[2] + c[:4] + [3]]
    assert encode(tok, [text], 6, "tail") == [[2] + c[-4:] + [3]]
    assert encode(tok, [text], 8, "head_tail") == [[2] + c[:2] + c[-4:] + [3]]  # default head: 8 // 4 = 2
    assert encode(tok, [text], 8, "head_tail", head_tokens=3) == [[2] + c[:3] + c[-3:] + [3]]


def test_training_is_reproducible_across_processes(tmp_path):
    """The trainers number equally frequent tokens in hash-map order (random per process); ragtune
    renumbers them, so two processes train the same tokenizer, ids included, when the vocabulary is
    not cut among ties (see tokenizer.path for the general case)."""
    import subprocess
    import sys

    script = (
        "import sys\n"
        "from ragtune.data.tokenizer import train_tokenizer\n"
        "texts = [f'word{i % 37} token{i % 11} 今天{i % 5} 北京' for i in range(300)]\n"
        "sys.stdout.write(train_tokenizer(texts, kind='wordpiece', vocab_size=1000, min_frequency=1).to_str())\n"
    )
    outputs = [subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
               for _ in range(3)]
    assert outputs[0] == outputs[1] == outputs[2]
