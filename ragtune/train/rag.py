"""RAG training for ``task: qa``: the task loss trains the query encoder as well as the reader.

Following Lewis et al. (2020), the answer ``y`` of question ``x`` is marginalised over the top-k
retrieved passages ``z``::

    p(y | x) = sum_z p(z | x) p(y | x, z)
    p(z | x) = softmax_z( cos(q(x), d(z)) / temperature )          over the k retrieved passages
    p(y | x, z) = p_start(s) p_end(e)                               the reader's span probability
    loss = -log p(y | x)                                             averaged over the batch

``q`` is the query encoder (a sentence-transformers model, trained), ``d(z)`` the passage embeddings
(the index's; frozen, or re-encoded with the trained encoder every few epochs by the caller). A
passage that does not contain the answer has ``p(y | x, z) = 0``: it gets no reader gradient, but
its share of ``p(z | x)`` is pushed down, so the query encoder learns to rank passages that hold
the answer higher. Gradients reach the encoder through ``p(z | x)`` only (the retrieval itself, the
top-k choice, is not differentiable, as in RAG). With ``gold_passage`` the best-scoring passage of
the gold paragraph that holds the answer replaces the last retrieved one when the retriever missed
every passage with the answer, so every question trains (RAFT-style); without it such a question
is skipped for that step.

This module knows no config or run directory: the pipeline passes plain values.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from ragtune.data.squad import QARecord
from ragtune.devices import to_device
from ragtune.models.reader import ExtractiveReader, feature_batch, prepare_features, span_log_likelihood
from ragtune.train import distributed


def reader_and_encoder_scales(model: torch.nn.Module, lr: float, encoder_lr: float | None):
    """Learning-rate factors for a module with ``.reader`` and ``.query_encoder`` (RAG training): the reader
    at ``lr``, the query encoder at ``encoder_lr`` (``retrieval.query_encoder_lr``), as
    ``optimizer_and_scheduler``'s ``param_scales``. ``None`` when ``encoder_lr`` is ``None`` (one rate for
    both)."""
    if encoder_lr is None:
        return None
    return [(list(model.reader.parameters()), 1.0), (list(model.query_encoder.parameters()), encoder_lr / lr)]


def encode_queries_with_grad(encoder, texts: Sequence[str]) -> torch.Tensor:
    """L2-normalised query embeddings ``(B, d)`` through a ``SentenceTransformer``, keeping the graph."""
    # sentence-transformers >= 6: preprocess (tokenize is its deprecated alias)
    features = encoder.preprocess(list(texts)) if hasattr(encoder, "preprocess") else encoder.tokenize(list(texts))
    features = to_device(features, encoder.device)
    embeddings = encoder(features)["sentence_embedding"]  # (B, d)
    return F.normalize(embeddings.float(), dim=-1)  # (B, d)


@torch.no_grad()
def encode_passages(encoder, texts: Sequence[str], batch_size: int = 64) -> torch.Tensor:
    """L2-normalised passage embeddings ``(N, d)`` (no graph) on the encoder's device: the index side, for a refresh."""
    vectors = encoder.encode_document(list(texts), batch_size=batch_size, normalize_embeddings=True,
                                      convert_to_tensor=True, show_progress_bar=False)
    return vectors.float().to(encoder.device)  # (N, d)


def find_answer(passage: str, answers: Sequence[str]) -> tuple[str, int] | None:
    """The first of ``answers`` found in ``passage`` (case ignored) as ``(text as in the passage, start)``."""
    lowered = passage.lower()
    for a in answers:
        start = lowered.find(a.lower()) if a.strip() else -1
        if start >= 0:
            return passage[start:start + len(a)], start
    return None


def answer_rows(records: Sequence[QARecord], passages: Sequence[dict], doc_sha1: Callable[[str], str]) -> list[list[int]]:
    """Per question, the passage rows of its gold paragraph that contain one of its answers."""
    by_doc: dict[str, list[int]] = {}
    for row, p in enumerate(passages):
        by_doc.setdefault(p["doc_sha1"], []).append(row)
    return [[row for row in by_doc.get(doc_sha1(r.context), []) if find_answer(passages[row]["text"], r.answers)]
            for r in records]


def rag_batch_loss(reader: ExtractiveReader, tokenizer, encoder, passage_embeddings: torch.Tensor,
                   passages: Sequence[dict], records: Sequence[QARecord], gold_rows: Sequence[Sequence[int]],
                   top_k: int, temperature: float, gold_passage: bool, max_length: int, doc_stride: int,
                   counted: bool = True) -> tuple[torch.Tensor, int]:
    """``(loss, tokens)`` of one batch of questions: ``-mean log sum_z p(z|x) p(y|x,z)`` (module docstring).

    ``passage_embeddings`` ``(N, d)`` (on the encoder's device) and ``passages`` (dicts with ``text``) are
    the index rows; ``gold_rows[i]`` the rows of question ``i``'s gold paragraph that hold its answer.
    Under torchrun the mean is over the trained questions of the whole global batch
    (:func:`ragtune.train.distributed.global_mean`); ``counted=False`` marks a rank's stand-in row.
    """
    q = encode_queries_with_grad(encoder, [r.question for r in records])  # (B, d)
    with torch.no_grad():
        top = (q.detach() @ passage_embeddings.T).topk(top_k, dim=-1).indices  # (B, k)
    rows = top.tolist()
    for i, candidates in enumerate(rows):
        if gold_passage and gold_rows[i] and not any(find_answer(passages[z]["text"], records[i].answers) for z in candidates):
            sims = passage_embeddings[gold_rows[i]] @ q[i].detach()  # (G,)
            candidates[-1] = gold_rows[i][int(sims.argmax())]
    index = torch.tensor(rows, dtype=torch.long, device=passage_embeddings.device)  # (B, k)
    scores = torch.einsum("bd,bkd->bk", q, passage_embeddings[index]) / temperature  # (B, k)
    log_p_z = torch.log_softmax(scores, dim=-1)  # (B, k)

    # the reader reads every (question, passage) pair that holds the answer; the others have p(y|x,z) = 0
    pairs = [(i, j) for i in range(len(records)) for j in range(top_k)
             if find_answer(passages[rows[i][j]]["text"], records[i].answers)]
    log_p_y = torch.full((len(records), top_k), float("-inf"), device=scores.device)  # (B, k)
    tokens = 0
    if pairs:
        texts = [passages[rows[i][j]]["text"] for i, j in pairs]
        features = prepare_features(tokenizer, [records[i].question for i, _ in pairs], texts, max_length=max_length,
                                    doc_stride=doc_stride,
                                    answers=[find_answer(t, records[i].answers) for (i, _), t in zip(pairs, texts)])
        # one window per pair: the first that holds the whole answer
        chosen: dict[int, int] = {}
        for f, example in enumerate(features.example_index):
            if features.start_positions[f] != 0 and example not in chosen:
                chosen[example] = f
        if chosen:
            batch = to_device(feature_batch(features, list(chosen.values()), tokenizer.pad_token_id),
                              next(reader.parameters()).device)
            start_logits, end_logits = reader(batch["input_ids"], batch["attention_mask"],
                                              batch.get("token_type_ids"))  # (P, T), (P, T)
            span = span_log_likelihood(start_logits, end_logits, batch["start_positions"], batch["end_positions"],
                                       mask=batch["attention_mask"])  # (P,)
            where = torch.tensor([pairs[e] for e in chosen], dtype=torch.long, device=scores.device)  # (P, 2)
            log_p_y = log_p_y.index_put((where[:, 0], where[:, 1]), span.float().to(scores.device))  # (B, k)
            tokens = int(batch["attention_mask"].sum())
    marginal = torch.logsumexp(log_p_z + log_p_y, dim=-1)  # (B,)
    trained = torch.isfinite(marginal)
    n_trained = int(trained.sum()) if counted else 0
    if not bool(trained.any()):  # no retrieved passage held any answer: nothing to learn from this batch
        return distributed.global_mean(scores.sum() * 0.0, 0), tokens
    return distributed.global_mean(-marginal[trained].mean(), n_trained), tokens


def make_rag_batch_loss(reader: ExtractiveReader, tokenizer, encoder, embeddings: Callable[[], torch.Tensor],
                        passages: Sequence[dict], records: Sequence[QARecord], gold_rows: Sequence[Sequence[int]],
                        batch_indices: Callable[[int], torch.Tensor], top_k: int, temperature: float,
                        gold_passage: bool, max_length: int,
                        doc_stride: int) -> Callable[[int], tuple[torch.Tensor, int]]:
    """The ``batch_loss(k)`` of :func:`ragtune.train.loop.train_model` for RAG training; ``embeddings()``
    gives the current passage embeddings (they change when the caller refreshes them). Under torchrun
    this rank takes its share of the questions (:func:`ragtune.train.distributed.share`)."""

    def batch_loss(k: int) -> tuple[torch.Tensor, int]:
        chosen, count = distributed.share(batch_indices(k))
        return rag_batch_loss(reader, tokenizer, encoder, embeddings(), passages, [records[i] for i in chosen],
                              [gold_rows[i] for i in chosen], top_k, temperature, gold_passage, max_length,
                              doc_stride, counted=count > 0)

    return batch_loss


# -- retriever trained by a generative reader (REPLUG LSR / RA-DIT) --------------------------------
#
# With a causal LM reader the answer's likelihood given each retrieved passage is the LM's own, and
# the retriever learns to agree with it (Shi et al. 2023, REPLUG "LM-supervised retrieval"):
#
#     P_R(z | x)  = softmax_z( cos(q(x), d(z)) / temperature )                 over the top-k passages
#     Q_LM(z | x) = softmax_z( log p_LM(y | x, z) / lm_temperature )           each passage read alone
#     loss        = KL( Q_LM || P_R )                                          averaged over the batch
#
# Q_LM is a target (no gradient reaches the LM through it); the query encoder gets the gradient of the
# KL. Unlike the extractive marginal loss above, a passage that helps the LM write the answer counts
# even when it does not hold the answer string, and one that holds it but misleads the LM does not.


def lm_supervised_retrieval_loss(similarities: torch.Tensor, lm_log_likelihoods: torch.Tensor, temperature: float,
                                 lm_temperature: float) -> torch.Tensor:
    """``KL(Q_LM || P_R)`` averaged over the batch (see above): ``similarities`` ``(B, k)`` the cosine of each
    question to its top-k passages (with the query encoder's graph), ``lm_log_likelihoods`` ``(B, k)`` the
    LM's log p(answer | question, passage) of each (a target: detached here)."""
    log_p_r = torch.log_softmax(similarities.float() / temperature, dim=-1)  # (B, k)
    log_q = torch.log_softmax(lm_log_likelihoods.detach().float() / lm_temperature, dim=-1)  # (B, k)
    return F.kl_div(log_p_r, log_q, reduction="batchmean", log_target=True)
