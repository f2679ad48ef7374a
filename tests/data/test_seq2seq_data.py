"""Translation / generation data reading and the seq2seq BPE tokenizer; English, German and Chinese."""

import json

import pandas as pd
import pytest

from ragtune.data.seq2seq import read_generation, read_lines, read_pairs
from ragtune.data.seq2seq_tokenizer import (
    BYTE_TOKENS,
    SPECIAL_TOKENS,
    load_seq2seq_tokenizer,
    train_seq2seq_tokenizer,
)
from ragtune.errors import RagtuneError

EN = [
    "Two young, White males are outside near many bushes.",
    "Several men in hard hats are operating a giant pulley system.",
    "A little girl climbing into a wooden playhouse.",
    "A man in a blue shirt is standing on a ladder (cleaning a window)!",
    "Two men are at the stove preparing food.",
]
DE = [
    "Zwei junge weiße Männer sind im Freien in der Nähe vieler Büsche.",
    "Mehrere Männer mit Schutzhelmen bedienen ein Antriebsradsystem.",
    "Ein kleines Mädchen klettert in ein Spielhaus aus Holz.",
    "Ein Mann in einem blauen Hemd steht auf einer Leiter und putzt ein Fenster.",
    "Zwei Männer stehen am Herd und bereiten Essen zu.",
]
ZH = [
    "两个年轻的白人男子在户外的灌木丛附近。",
    "几个戴着安全帽的男人正在操作一个巨大的滑轮系统。",
    "一个小女孩爬进木制的游戏屋。",
    "一个穿蓝色衬衫的男人站在梯子上擦窗户。",
    "两个男人在炉子前准备食物。",
]


def write(path, text, encoding="utf-8"):
    path.write_bytes(text.encode(encoding))
    return path


# ---------------------------------------------------------------- read_pairs: tables


def test_pairs_from_columns_csv_and_jsonl(tmp_path):
    csv = tmp_path / "pairs.csv"
    pd.DataFrame({"en": EN[:3], "zh": ZH[:3], "id": [1, 2, 3]}).to_csv(csv, index=False)
    df = read_pairs(csv, source_column="en", target_column="zh")
    assert list(df.columns) == ["source", "target"]
    assert list(zip(df.source, df.target)) == list(zip(EN[:3], ZH[:3]))

    jsonl = tmp_path / "pairs.jsonl"
    write(jsonl, "\n".join(json.dumps({"de": d, "en": e}, ensure_ascii=False) for d, e in zip(DE, EN)) + "\n")
    df = read_pairs(jsonl, source_column="de", target_column="en", max_rows=2)
    assert df.source.tolist() == DE[:2] and df.target.tolist() == EN[:2]


def test_pairs_unknown_column_lists_existing(tmp_path):
    csv = write(tmp_path / "pairs.csv", "En,de\nHello,Hallo\n")
    with pytest.raises(RagtuneError) as err:
        read_pairs(csv, source_column="en", target_column="de")
    msg = str(err.value)
    assert "pairs.csv" in msg and "'en'" in msg and "did you mean 'En'" in msg
    assert "the file has columns: 'En', 'de'" in msg


def test_pairs_empty_target_in_table_names_row(tmp_path):
    tsv = write(tmp_path / "pairs.tsv", "source\ttarget\nHello\tHallo\nWorld\t  \n")
    with pytest.raises(RagtuneError, match=r"pairs\.tsv: row 2 .*empty target text in column 'target'"):
        read_pairs(tsv)


def test_pairs_same_column_twice(tmp_path):
    csv = write(tmp_path / "p.csv", "a,b\nx,y\n")
    with pytest.raises(RagtuneError, match="both 'a'"):
        read_pairs(csv, source_column="a", target_column="a")


def test_pairs_text_file_as_table_points_to_two_file_form(tmp_path):
    en = write(tmp_path / "train.en", "Hello\n")
    with pytest.raises(RagtuneError, match=r"train\.en.*\{source: a\.en, target: a\.de\}"):
        read_pairs(en)


# ---------------------------------------------------------------- read_pairs: two text files


def test_pairs_from_two_line_aligned_files(tmp_path):
    en = write(tmp_path / "train.en", "\n".join(EN) + "\n")
    de = write(tmp_path / "train.de", "\r\n".join(DE))  # CRLF, no final newline
    df = read_pairs({"source": en, "target": str(de)})
    assert df.source.tolist() == EN and df.target.tolist() == DE
    assert read_pairs({"source": en, "target": de}, max_rows=2).target.tolist() == DE[:2]


def test_pairs_chinese_target_with_bom(tmp_path):
    en = write(tmp_path / "a.en", "\n".join(EN) + "\n")
    zh = write(tmp_path / "a.zh", "\ufeff" + "\n".join(ZH) + "\n")
    assert read_pairs({"source": en, "target": zh}).target.tolist() == ZH


def test_unicode_line_separators_do_not_shift_lines(tmp_path):
    path = write(tmp_path / "a.en", "one\u2028still one\x0cstill\ntwo\n")
    assert read_lines(path) == ["one\u2028still one\x0cstill", "two"]


def test_pairs_misaligned_names_both_files_and_counts(tmp_path):
    en = write(tmp_path / "train.en", "\n".join(EN) + "\n")
    de = write(tmp_path / "train.de", "\n".join(DE[:4]) + "\n")
    with pytest.raises(RagtuneError) as err:
        read_pairs({"source": en, "target": de})
    msg = str(err.value)
    assert f"{en} has 5 lines" in msg and f"{de} has 4 lines" in msg and "not line-aligned" in msg


def test_pairs_empty_target_line_names_file_and_line(tmp_path):
    en = write(tmp_path / "train.en", "\n".join(EN) + "\n")
    de = write(tmp_path / "train.de", "\n".join(DE[:2] + [" "] + DE[3:]) + "\n")
    with pytest.raises(RagtuneError, match=r"train\.de: line 3 is empty"):
        read_pairs({"source": en, "target": de})


def test_pairs_not_utf8_names_file(tmp_path):
    en = write(tmp_path / "train.en", "Men\n")
    de = write(tmp_path / "train.de", "Männer\n", encoding="latin-1")
    with pytest.raises(RagtuneError, match=r"train\.de: not UTF-8 text"):
        read_pairs({"source": en, "target": de})


def test_pairs_empty_file(tmp_path):
    en = write(tmp_path / "train.en", "")
    de = write(tmp_path / "train.de", "Hallo\n")
    with pytest.raises(RagtuneError, match=r"train\.en: the file is empty"):
        read_pairs({"source": en, "target": de})
    with pytest.raises(RagtuneError, match=r"empty\.csv: the file is empty"):
        read_pairs(write(tmp_path / "empty.csv", ""))


def test_pairs_missing_file_and_bad_keys(tmp_path):
    de = write(tmp_path / "train.de", "Hallo\n")
    with pytest.raises(RagtuneError, match="data file not found"):
        read_pairs({"source": tmp_path / "nope.en", "target": de})
    with pytest.raises(RagtuneError, match="exactly the keys 'source' and 'target'.*got keys: src, target"):
        read_pairs({"src": de, "target": de})


# ---------------------------------------------------------------- read_generation


def test_generation_prompt_response(tmp_path):
    jsonl = tmp_path / "qa.jsonl"
    rows = [{"q": "中国的首都是哪里？", "a": "北京。"}, {"q": "", "a": "Ein freier Text."}]
    write(jsonl, "\n".join(json.dumps(r, ensure_ascii=False) for r in rows))
    df = read_generation(jsonl, prompt_column="q", response_column="a")
    assert list(df.columns) == ["prompt", "response"]
    assert df.prompt.tolist() == ["中国的首都是哪里？", ""]  # an empty prompt is allowed
    assert df.response.tolist() == ["北京。", "Ein freier Text."]


def test_generation_text_column_and_txt(tmp_path):
    csv = tmp_path / "poems.csv"
    pd.DataFrame({"poem": ZH[:2], "x": [1, 2]}).to_csv(csv, index=False)
    df = read_generation(csv, text_column="poem")
    assert df.prompt.tolist() == ["", ""] and df.response.tolist() == ZH[:2]
    txt = write(tmp_path / "texts.txt", EN[0] + "\n\n" + ZH[0] + "\n")
    df = read_generation(txt)
    assert df.response.tolist() == [EN[0], ZH[0]] and df.prompt.tolist() == ["", ""]


def test_generation_errors(tmp_path):
    csv = write(tmp_path / "gen.csv", "text,prompt\nhello,hi\n")
    with pytest.raises(RagtuneError, match=r"no response column 'response'.*'text', 'prompt'.*set text_column"):
        read_generation(csv)
    empty = tmp_path / "gen2.jsonl"
    write(empty, '{"prompt": "p", "response": "r"}\n{"prompt": "p", "response": null}\n')
    with pytest.raises(RagtuneError, match=r"gen2\.jsonl: row 2 .*empty response"):
        read_generation(empty)
    with pytest.raises(RagtuneError, match=r"blank\.txt: the file is empty"):
        read_generation(write(tmp_path / "blank.txt", "\n \n"))


# ---------------------------------------------------------------- tokenizer

CORPUS_SRC = EN * 3
CORPUS_TGT = (DE + ZH) * 3


@pytest.fixture(scope="module")
def joint():
    return train_seq2seq_tokenizer(CORPUS_SRC, CORPUS_TGT, vocab_size=500, min_frequency=2)


def test_special_token_ids_fixed(joint):
    assert [joint.target.token_to_id(t) for t in SPECIAL_TOKENS] == [0, 1, 2, 3]
    assert [joint.pad_id, joint.unk_id, joint.bos_id, joint.eos_id] == [0, 1, 2, 3]
    assert joint.target.token_to_id(BYTE_TOKENS[0]) == 4 and joint.target.token_to_id(BYTE_TOKENS[-1]) == 259
    assert joint.joint


@pytest.mark.parametrize(
    "text",
    EN + DE + ZH + [
        "Männer",
        "Hello, world! (It's \"fine\"), isn't it?",
        "两个男人 and 2 women: 大约 30 岁。",
        "Unseen: Öl, ß, 龘, emoji 🙂!",  # characters never seen in training go through byte fallback
    ],
)
def test_round_trip(joint, text):
    ids = joint.encode_target(text)
    assert ids[0] == 2 and ids[-1] == 3
    assert joint.unk_id not in ids
    assert joint.decode(ids) == text
    assert joint.decode(joint.encode_source(text), side="source") == text


def test_umlaut_is_one_character_and_chinese_per_character(joint):
    tokens = joint.target.encode("Männer", add_special_tokens=False).tokens
    assert "".join(tokens).replace("\u2581", "") == "Männer"
    assert not any(t.startswith("<0x") for t in tokens)  # ä is in the alphabet, not bytes
    tokens = joint.target.encode("男人在", add_special_tokens=False).tokens
    # one token per character (a leading "▁" may be a token of its own when "▁男" was not learned)
    assert [t.replace("\u2581", "") for t in tokens if t != "\u2581"] == ["男", "人", "在"]


def test_normalisation_and_decode_stops_at_eos(joint):
    decomposed = "Ma\u0308nner  im\tFreien "
    assert joint.decode(joint.encode_target(decomposed)) == joint.normalize(decomposed) == "Männer im Freien"
    ids = joint.encode_target("Zwei Männer") + [5, 6, 0, 0]  # junk after </s>, padding
    assert joint.decode(ids) == "Zwei Männer"
    assert joint.decode_batch([ids, joint.encode_target("你好")]) == ["Zwei Männer", "你好"]


def test_truncation_keeps_bos_and_eos(joint):
    ids = joint.encode_target(DE[0], max_length=6)
    assert len(ids) == 6 and ids[0] == 2 and ids[-1] == 3
    src = joint.encode_source_batch(EN, max_length=5)
    assert all(len(s) <= 5 and s[-1] == 3 for s in src)
    assert joint.encode_source("Hi", max_length=50) == joint.encode_source("Hi")
    with pytest.raises(RagtuneError, match="max_length must be at least 3"):
        joint.encode_target("Hi", max_length=2)


def test_save_load_gives_identical_ids(joint, tmp_path):
    path = joint.save(tmp_path / "tok" / "seq2seq_tokenizer.json")
    loaded = load_seq2seq_tokenizer(path)
    texts = EN + DE + ZH
    assert loaded.encode_target_batch(texts) == joint.encode_target_batch(texts)
    assert loaded.encode_source_batch(texts) == joint.encode_source_batch(texts)
    assert loaded.target.get_vocab() == joint.target.get_vocab()


def test_training_is_reproducible():
    a = train_seq2seq_tokenizer(CORPUS_SRC, CORPUS_TGT, vocab_size=400)
    b = train_seq2seq_tokenizer(list(reversed(CORPUS_SRC)), list(reversed(CORPUS_TGT)), vocab_size=400)
    assert a.target.get_vocab() == b.target.get_vocab()


def test_separate_tokenizers(tmp_path):
    tok = train_seq2seq_tokenizer(EN * 2, ZH * 2, vocab_size=400, min_frequency=1, joint=False)
    assert not tok.joint
    assert tok.target.token_to_id("▁Two") is None and tok.source.token_to_id("▁Two") is not None
    assert tok.decode(tok.encode_target(ZH[0])) == ZH[0]
    assert tok.decode(tok.encode_source(EN[0]), side="source") == EN[0]
    loaded = load_seq2seq_tokenizer(tok.save(tmp_path / "t.json"))
    assert not loaded.joint
    assert loaded.encode_target(ZH[1]) == tok.encode_target(ZH[1])
    assert loaded.encode_source(EN[1]) == tok.encode_source(EN[1])


def test_tokenizer_errors(tmp_path):
    with pytest.raises(RagtuneError, match="at least 261"):
        train_seq2seq_tokenizer(EN, DE, vocab_size=100)
    with pytest.raises(RagtuneError, match="no target texts"):
        train_seq2seq_tokenizer(EN, ["", " "])
    with pytest.raises(RagtuneError, match="tokenizer file not found"):
        load_seq2seq_tokenizer(tmp_path / "missing.json")
    bad = write(tmp_path / "bad.json", "{not json")
    with pytest.raises(RagtuneError, match="not valid JSON"):
        load_seq2seq_tokenizer(bad)
    other = write(tmp_path / "other.json", '{"model": {}}')
    with pytest.raises(RagtuneError, match="not a translation/generation tokenizer"):
        load_seq2seq_tokenizer(other)


# ---------------------------------------------------------------- real data


def test_multi30k_round_trip(shared_data):
    folder = shared_data / "multi30k"
    if not folder.is_dir():
        pytest.skip(f"{folder} not found")
    pairs = read_pairs({"source": folder / "train.en", "target": folder / "train.de"}, max_rows=200)
    assert len(pairs) == 200
    tok = train_seq2seq_tokenizer(pairs.source, pairs.target, vocab_size=1000)
    for en, de in zip(pairs.source, pairs.target):
        assert tok.decode(tok.encode_source(en), side="source") == tok.normalize(en)
        assert tok.decode(tok.encode_target(de)) == tok.normalize(de)
    assert sum(en == tok.normalize(en) for en in pairs.source) >= 190  # the data is already clean text
    val = read_pairs({"source": folder / "val.en", "target": folder / "val.de"})
    assert len(val) == 1014
    for de in val.target[:200]:  # unseen text: byte fallback, still no <unk>, still round-trips
        ids = tok.encode_target(de)
        assert tok.unk_id not in ids and tok.decode(ids) == tok.normalize(de)
