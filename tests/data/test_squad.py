"""Reading SQuAD-v1.1-format files (ragtune.data.squad): records, every error case, the article split,
and iter_squad (paragraphs, questions unchecked) with the same structure messages."""

import copy
import json
import logging

import pytest

from ragtune.data.squad import QARecord, answers_by_id, iter_squad, parse_squad, read_squad, split_by_article
from ragtune.errors import RagtuneError

CONTEXT = "Super Bowl 50 was an American football game. The Denver Broncos defeated the Carolina Panthers."


def _squad(n_articles: int = 4, paragraphs: int = 3, questions: int = 2) -> dict:
    """A well-formed SQuAD dict: article a, paragraph p, question q has id 'a-p-q' and answer 'Denver Broncos'."""
    start = CONTEXT.index("Denver Broncos")
    data = []
    for a in range(n_articles):
        paras = []
        for p in range(paragraphs):
            qas = [{"id": f"{a}-{p}-{q}", "question": f"Who won (article {a}, paragraph {p}, question {q})?",
                    "answers": [{"text": "Denver Broncos", "answer_start": start},
                                {"text": "The Denver Broncos", "answer_start": start - 4}]}
                   for q in range(questions)]
            paras.append({"context": f"[{a}.{p}] " + CONTEXT, "qas": qas})
        data.append({"title": f"Article_{a}", "paragraphs": paras})
    # the contexts carry a prefix "[a.p] ", so shift the starts by its length
    for article in data:
        for para in article["paragraphs"]:
            shift = para["context"].index(CONTEXT)
            for qa in para["qas"]:
                for ans in qa["answers"]:
                    ans["answer_start"] += shift
    return {"version": "1.1", "data": data}


def _write(tmp_path, obj, name="squad.json") -> str:
    path = tmp_path / name
    path.write_text(json.dumps(obj, ensure_ascii=False), encoding="utf-8")
    return str(path)


def test_read_squad_flat_records(tmp_path):
    records = read_squad(_write(tmp_path, _squad()))
    assert len(records) == 4 * 3 * 2
    r = records[7]  # article 1, paragraph 0, question 1
    assert isinstance(r, QARecord)
    assert (r.id, r.title, r.article, r.paragraph) == ("1-0-1", "Article_1", 1, 0)
    assert r.question.startswith("Who won (article 1, paragraph 0")
    assert r.answers == ("Denver Broncos", "The Denver Broncos")
    for text, start in zip(r.answers, r.answer_starts):
        assert r.context[start:start + len(text)] == text
    assert answers_by_id(records[:2]) == {"0-0-0": ["Denver Broncos", "The Denver Broncos"],
                                          "0-0-1": ["Denver Broncos", "The Denver Broncos"]}


def test_read_squad_chinese_bom_int_ids_and_missing_title(tmp_path):
    context = "中国的首都是北京，上海是中国最大的城市。"
    obj = {"version": "v1.0", "data": [{"id": "DEV_0", "paragraphs": [{"id": "DEV_0_P", "context": context, "qas": [
        {"id": 17, "question": "中国的首都是哪里？", "answers": [{"text": "北京", "answer_start": 6}]},
        {"id": "DEV_0_Q1", "question": "中国最大的城市是哪里？", "answers": [{"text": "上海", "answer_start": 9}]}]}]}]}
    path = tmp_path / "cmrc.json"
    path.write_bytes("\ufeff".encode() + json.dumps(obj, ensure_ascii=False).encode("utf-8"))  # with a BOM
    records = read_squad(path)
    assert [r.id for r in records] == ["17", "DEV_0_Q1"]
    assert records[0].title == ""
    assert [(r.answers, r.answer_starts) for r in records] == [(("北京",), (6,)), (("上海",), (9,))]


def test_answer_start_off_by_a_few_characters_is_fixed_with_a_warning(tmp_path, caplog):
    obj = _squad(1, 1, 1)
    answer = obj["data"][0]["paragraphs"][0]["qas"][0]["answers"][0]
    good = answer["answer_start"]
    answer["answer_start"] = good + 2
    with caplog.at_level(logging.WARNING, logger="ragtune"):
        records = read_squad(_write(tmp_path, obj))
    assert records[0].answer_starts[0] == good
    assert "moved 1 answer_start" in caplog.text and "data[0].paragraphs[0].qas[0].answers[0]" in caplog.text
    # with the fix-up switched off, the same file is an error
    with pytest.raises(RagtuneError, match=r"answers\[0\] \(id '0-0-0'\): answer 'Denver Broncos' does not start"):
        read_squad(_write(tmp_path, obj), max_start_shift=0)


def test_answer_start_far_off_is_an_error_that_quotes_the_context(tmp_path):
    obj = _squad(2, 2, 1)
    answer = obj["data"][1]["paragraphs"][1]["qas"][0]["answers"][1]
    answer["answer_start"] = 0
    with pytest.raises(RagtuneError) as info:
        read_squad(_write(tmp_path, obj))
    message = str(info.value)
    assert "data[1].paragraphs[1].qas[0].answers[1] (id '1-1-0')" in message
    assert "'The Denver Broncos' does not start at answer_start 0" in message
    assert "the context there reads '[1.1] Super Bowl 5'" in message
    assert "occurs at character(s) [51]" in message
    # a text that is nowhere in the context
    answer["text"] = "Seattle Seahawks"
    with pytest.raises(RagtuneError, match="does not occur in the context at all"):
        read_squad(_write(tmp_path, obj))
    answer["answer_start"] = 10_000
    with pytest.raises(RagtuneError, match=r"answer_start \(id '1-1-0'\): 10000 is outside the context"):
        read_squad(_write(tmp_path, obj))


def test_missing_file_folder_bad_json_and_bad_encoding(tmp_path):
    with pytest.raises(RagtuneError, match="SQuAD file not found: .*nope.json"):
        read_squad(tmp_path / "nope.json")
    with pytest.raises(RagtuneError, match="it is a folder"):
        read_squad(tmp_path)
    bad = tmp_path / "bad.json"
    bad.write_text('{"data": [\n  {"title": "x",, }\n]}', encoding="utf-8")
    with pytest.raises(RagtuneError, match=r"bad.json: not valid JSON: .* at line 2, column"):
        read_squad(bad)
    latin = tmp_path / "latin1.json"
    latin.write_bytes('{"data": [{"title": "caf\u00e9"}]}'.encode("latin-1"))
    with pytest.raises(RagtuneError, match="latin1.json: not UTF-8"):
        read_squad(latin)


@pytest.mark.parametrize("edit, match", [
    (lambda o: o.pop("data"), r"the top level: missing key 'data' \(the list of articles\); keys present: 'version'"),
    (lambda o: o.update(data={"a": 1}), r"the top level.data: must be a list"),
    (lambda o: o["data"][2].pop("paragraphs"), r"data\[2\]: missing key 'paragraphs'"),
    (lambda o: o["data"][3]["paragraphs"][1].pop("context"), r"data\[3\].paragraphs\[1\]: missing key 'context'"),
    (lambda o: o["data"][3]["paragraphs"][1].update(context="  "), r"data\[3\].paragraphs\[1\].context: is empty"),
    (lambda o: o["data"][3]["paragraphs"][2].pop("qas"), r"data\[3\].paragraphs\[2\]: missing key 'qas'"),
    (lambda o: o["data"][3]["paragraphs"][2]["qas"][0].pop("question"),
     r"data\[3\].paragraphs\[2\].qas\[0\] \(id '3-2-0'\): missing key 'question' \(the question text\)"),
    (lambda o: o["data"][3]["paragraphs"][2]["qas"][1].pop("id"), r"data\[3\].paragraphs\[2\].qas\[1\]: missing key 'id'"),
    (lambda o: o["data"][3]["paragraphs"][2]["qas"][1].update(id=[1]),
     r"qas\[1\].id: must be a string or integer \(the question id\), got list"),
    (lambda o: o["data"][0]["paragraphs"][0]["qas"][0].pop("answers"), r"qas\[0\] \(id '0-0-0'\): missing key 'answers'"),
    (lambda o: o["data"][0]["paragraphs"][0]["qas"][0]["answers"][1].pop("text"),
     r"qas\[0\].answers\[1\] \(id '0-0-0'\): missing key 'text'"),
    (lambda o: o["data"][0]["paragraphs"][0]["qas"][0]["answers"][0].pop("answer_start"),
     r"answers\[0\] \(id '0-0-0'\): missing key 'answer_start'"),
    (lambda o: o["data"][0]["paragraphs"][0]["qas"][0]["answers"][0].update(answer_start="177"),
     r"answers\[0\].answer_start \(id '0-0-0'\): must be an integer .*got str '177'"),
    (lambda o: o["data"][0]["paragraphs"][0]["qas"][0]["answers"][0].update(text=""),
     r"answers\[0\].text \(id '0-0-0'\): is empty"),
    (lambda o: o["data"][0]["paragraphs"][0]["qas"][0].update(question=" "), r"qas\[0\].question \(id '0-0-0'\): is empty"),
    (lambda o: o["data"][0]["paragraphs"].__setitem__(0, "text"), r"data\[0\].paragraphs\[0\]: must be a JSON object"),
    (lambda o: o["data"][1]["paragraphs"][0]["qas"][0].update(id="0-0-1"),
     r"data\[1\].paragraphs\[0\].qas\[0\] \(id '0-0-1'\): question id '0-0-1' is already used at "
     r"data\[0\].paragraphs\[0\].qas\[1\]"),
])
def test_structure_errors_name_the_place_in_the_json(tmp_path, edit, match):
    obj = _squad()
    edit(obj)
    with pytest.raises(RagtuneError, match=match) as info:
        read_squad(_write(tmp_path, obj))
    assert "squad.json" in str(info.value)


def test_questions_without_answers_and_files_without_questions(tmp_path):
    obj = _squad(2, 1, 2)
    obj["data"][1]["paragraphs"][0]["qas"][1]["answers"] = []
    with pytest.raises(RagtuneError, match=r"data\[1\].paragraphs\[0\].qas\[1\].answers \(id '1-0-1'\): is empty; "
                                           r"every question needs at least one answer"):
        read_squad(_write(tmp_path, obj))
    records = read_squad(_write(tmp_path, obj), require_answers=False)
    assert records[-1].answers == () and records[-1].answer_starts == ()
    empty = {"data": [{"title": "t", "paragraphs": [{"context": "some text", "qas": []}]}]}
    with pytest.raises(RagtuneError, match=r"holds no questions \(1 articles, 1 paragraphs"):
        read_squad(_write(tmp_path, empty))
    with pytest.raises(RagtuneError, match="holds no questions"):
        read_squad(_write(tmp_path, {"data": []}))
    with pytest.raises(RagtuneError, match="<SQuAD data>: the top level: must be a JSON object"):
        parse_squad([1, 2])


def test_split_by_article_is_disjoint_seeded_and_complete(tmp_path):
    records = read_squad(_write(tmp_path, _squad(n_articles=10)))
    train, test = split_by_article(records, test_fraction=0.3, seed=0)
    assert len(train) + len(test) == len(records)
    assert {r.id for r in train} | {r.id for r in test} == {r.id for r in records}
    assert {r.article for r in train}.isdisjoint({r.article for r in test})
    assert {r.context for r in train}.isdisjoint({r.context for r in test})  # no paragraph on both sides
    assert len({r.article for r in test}) == 3
    assert [r.id for r in test] == [r.id for r in records if r in test]  # input order kept
    again = split_by_article(records, test_fraction=0.3, seed=0)
    assert [r.id for r in again[1]] == [r.id for r in test]
    others = {tuple(sorted({r.article for r in split_by_article(records, 0.3, seed)[1]})) for seed in range(10)}
    assert len(others) > 1  # the seed matters
    # tiny fractions still give one test article, large ones leave one for train
    assert len({r.article for r in split_by_article(records, 0.01, 0)[1]}) == 1
    assert len({r.article for r in split_by_article(records, 0.99, 0)[0]}) == 1


def test_split_by_article_errors(tmp_path):
    records = read_squad(_write(tmp_path, _squad(n_articles=3)))
    for bad in (0, 1, 1.5, -0.1, True, "0.2"):
        with pytest.raises(RagtuneError, match="test_fraction must be a number between 0 and 1"):
            split_by_article(records, bad, 0)
    one_article = [r for r in records if r.article == 0]
    with pytest.raises(RagtuneError, match="at least 2 articles, got 1"):
        split_by_article(one_article, 0.5, 0)


def test_real_squad_dev_file_reads_and_splits(shared_data):
    path = shared_data / "squad_v1.1" / "dev-part1.json"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    records = read_squad(path)
    assert len(records) == 5696
    assert len({r.article for r in records}) == 24
    assert len({(r.article, r.paragraph) for r in records}) == 1048
    first = records[0]
    assert first.question == "Which NFL team represented the AFC at Super Bowl 50?"
    assert first.answers[0] == "Denver Broncos"
    assert all(r.context[s:s + len(t)] == t for r in records for t, s in zip(r.answers, r.answer_starts))
    train, test = split_by_article(records, test_fraction=0.25, seed=0)
    assert len({r.article for r in test}) == 6
    assert {r.context for r in train}.isdisjoint({r.context for r in test})
    assert len(train) + len(test) == len(records)


def test_parse_squad_does_not_change_its_input():
    obj = _squad(1, 1, 1)
    obj["data"][0]["paragraphs"][0]["qas"][0]["answers"][0]["answer_start"] += 1
    before = copy.deepcopy(obj)
    parse_squad(obj)
    assert obj == before


def test_iter_squad_yields_paragraphs_and_leaves_the_questions_unchecked(tmp_path):
    obj = {"data": [{"paragraphs": [{"context": "no questions"}, {"context": "", "qas": [{"question": "no id"}]}]},
                    {"title": "T", "paragraphs": [{"context": "c", "qas": None}]}]}
    assert list(iter_squad(_write(tmp_path, obj))) == [
        ("article0", 0, "no questions", []), ("article0", 1, "", [{"question": "no id"}]), ("T", 0, "c", [])]
    obj["data"][1]["paragraphs"][0]["qas"] = "text"
    with pytest.raises(RagtuneError, match=r"squad.json: data\[1\].paragraphs\[0\].qas: must be a list"):
        list(iter_squad(_write(tmp_path, obj)))
    for reader in (iter_squad, read_squad):  # one set of messages for the file and its structure
        with pytest.raises(RagtuneError, match=r"squad.json: the top level: missing key 'data' .*; a SQuAD format file is"):
            list(reader(_write(tmp_path, {"rows": []})))
        with pytest.raises(RagtuneError, match=r"squad.json: data\[0\]: missing key 'paragraphs'"):
            list(reader(_write(tmp_path, {"data": [{"title": "x"}]})))
        with pytest.raises(RagtuneError, match="SQuAD file not found"):
            list(reader(tmp_path / "missing.json"))
