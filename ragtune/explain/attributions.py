"""Why did the model say that? Token attributions with integrated gradients, and passage influence.

:func:`explain` takes a loaded :class:`~ragtune.tasks.classification.predictor.Predictor` (``classification`` or
``regression``) and one text, and scores every token the model read by how much it moved the output::

    from pathlib import Path

    from ragtune.explain import explain, to_html
    from ragtune.tasks.classification.predictor import Predictor

    p = Predictor.from_run_dir("runs/news")
    e = explain(p, "Parliament passed the budget bill")          # explains the predicted class
    e["label"], e["target"]                                        # 'politics', 'politics'
    [(t["token"], round(t["attribution"], 3)) for t in e["tokens"]]
    Path("why.html").write_text(to_html(e), encoding="utf-8")

Integrated gradients
--------------------
Let ``F`` be the quantity explained: the logit of the ``target`` class (classification; the logit,
not the probability, so that the scores add up without the softmax's coupling of the classes) or the
model's output (regression; the standardised prediction, ``value = output * target_std +
target_mean``, so multiply by ``target_std`` for the target's own units). The model is a function
of the token embeddings ``x`` (one ``d_model`` vector per token). Integrated gradients (Sundararajan
et al., 2017, https://arxiv.org/abs/1703.01365) walks a straight line from a *baseline* ``x'`` to the
input ``x`` and adds up the gradient along the way::

    attribution_i = (x_i - x'_i) · ∫_0^1 ∂F(x' + a (x - x')) / ∂x_i  da

The integral is approximated with ``n_steps`` points (Gauss-Legendre). The per-dimension scores of
a token are summed over the embedding dimension into one number per token. The method is
*complete*: the attributions add up to ``F(x) - F(x')``, the whole change of the output between the
baseline and the input. ``convergence_delta`` (Captum's) is how far the approximation misses that:
``sum(attributions) - (F(x) - F(x'))``. A delta that is large next to ``output - baseline_output``
means ``n_steps`` is too small; double it.

The attributions are computed with ``captum.attr.LayerIntegratedGradients`` on the token embedding
layer (``encoder.tok_emb`` of the scratch Transformer, ``get_input_embeddings()`` of a Hugging Face
model): the model is fed token ids as usual, and only the output of the embedding lookup is
interpolated. Position (and segment) embeddings are the same on the whole path.

Baseline
--------
The same token ids with every non-special token replaced by the padding id; the special tokens
(``[CLS]``, ``[SEP]``, also a separator between retrieved passages) stay, and the attention mask is
all ones, so the baseline is "a sequence of the same length that says nothing". Special tokens are
the same in the input and the baseline, so their attribution is exactly 0. An unknown word
(``[UNK]``) is not special: it is scored like any other token.

Reading the scores
------------------
* **Positive**: the token pushes the output *towards* the target class (up the logit; for
  regression, up the prediction). **Negative**: it pushes away from it, often towards another class.
* The size is in logit units (regression: standardised output units); scores of different texts
  are comparable in that unit, and tokens with the largest ``|attribution|`` matter most.
* Scores explain ``F(x) - F(baseline)``, i.e. relative to the empty (all-padding) text, not to a
  probability: a text can have strong positive tokens and still be predicted as another class whose
  logit rose even more. Explain another class with ``target=``.
* Attention lets tokens interact; integrated gradients splits the effect of such interactions
  between the tokens involved.

Cost
----
``n_steps`` forward and backward passes of the one text (run in batches of up to 16 path points), plus
two forward passes for the input and the baseline, and (retrieval-augmented runs) one batched forward
pass of the ``top_k`` leave-one-out inputs. For a small model and a short text that is well under a
second on a CPU; for a 12-layer model and 512 tokens, seconds. Memory grows with the batch of path
points (gradients are kept for the backward pass).

Passage influence (retrieval-augmented runs)
--------------------------------------------
With ``retrieval.top_k`` > 0 the text is read as ``[CLS] text [SEP] passage 1 [SEP] passage 2 ...``.
Tokens of the passages are attributed like the text's (``segment: "passage"``, offsets into that
passage's text). Each passage also gets an ``influence``, measured by leaving it out::

    influence = p(target | text, all passages) - p(target | text, the passages without this one)

The remaining passages are joined by the retriever's separator and read exactly as in training
(``encode_pairs``; a passage that was cut off by ``max_length`` can make room for the next one),
all in one batch. A positive influence means the passage supports the target class; a negative one
that it argues against it (e.g. a labelled neighbour of another class). Regression: the difference
of the predicted values. Leave-one-out measures each passage alone; two passages that say the same
thing can each look unimportant.

Thread safety
-------------
:func:`explain` sets the model to eval mode (and restores its mode), registers hooks on the
embedding layer for the duration of the call and, like ``Predictor.predict``, changes the
tokenizer's truncation settings while it encodes (restored afterwards). Do not run it at the same
time as another call on the same :class:`~ragtune.tasks.classification.predictor.Predictor`; the server runs both in
its one model thread.

Devices
-------
The attributions run where the predictor's model is (``Predictor.from_run_dir(..., device=...)``,
``ragtune explain --device``): the token ids, the baseline and the mask are made on the device of
the model's parameters, and every number in the result comes back to the CPU as a Python float.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from ragtune.data.tokenizer import _restore, _truncate, _unk_id, default_head_tokens, encode, encode_pairs
from ragtune.errors import RagtuneError
from ragtune.train.batches import pad_batch

if TYPE_CHECKING:
    from ragtune.tasks.classification.predictor import Predictor

__all__ = ["embedding_layer", "explain"]

TASKS = ("classification", "regression")
INTERNAL_BATCH = 16  # path points per forward/backward pass of the integrated gradients


def embedding_layer(model: nn.Module) -> nn.Module:
    """The token embedding module of a Predictor's model: scratch ``encoder.tok_emb``, hf ``get_input_embeddings()``."""
    inner = getattr(model, "model", None)  # HFSequenceModel wraps the HF model as .model
    if isinstance(inner, nn.Module) and hasattr(inner, "get_input_embeddings"):
        return inner.get_input_embeddings()
    tok_emb = getattr(getattr(model, "encoder", None), "tok_emb", None)
    if isinstance(tok_emb, nn.Module):
        return tok_emb
    if hasattr(model, "get_input_embeddings"):
        return model.get_input_embeddings()
    raise RagtuneError(f"cannot explain a {type(model).__name__}: no token embedding layer found "
                       "(expected encoder.tok_emb or get_input_embeddings())")


def _special_ids(tokenizer) -> set[int]:
    """Ids of the tokenizer's special added tokens ([CLS], [SEP], [PAD], ...), without the unknown token."""
    special = {i for i, tok in tokenizer.get_added_tokens_decoder().items() if tok.special}
    special.discard(_unk_id(tokenizer))
    return special


def _encode_one(tokenizer, text: str, context: str | None, max_length: int, truncation: str,
                head_tokens: int | None):
    """``(ids, offsets, sequence_ids, special_mask)`` of one input, cut exactly as ``encode``/``encode_pairs`` do.

    ``encode`` uses the tokenizers library's fast path, which has no offsets; this encodes the same
    input once more with offsets. The caller checks that the ids agree.
    """
    saved_truncation, saved_padding = tokenizer.truncation, tokenizer.padding
    tokenizer.no_padding()
    if context is not None:
        tokenizer.enable_truncation(max_length=max_length, strategy="longest_first")
    elif truncation == "head":
        tokenizer.enable_truncation(max_length=max_length)
    else:
        tokenizer.no_truncation()
    try:
        enc = tokenizer.encode(text, context) if context is not None else tokenizer.encode(text)
    finally:
        _restore(tokenizer, saved_truncation, saved_padding)
    positions = list(range(len(enc.ids)))
    if context is None and truncation != "head":
        head = default_head_tokens(max_length) if head_tokens is None else head_tokens
        positions = _truncate(positions, enc.special_tokens_mask, max_length, truncation, head)
    return ([enc.ids[p] for p in positions], [tuple(enc.offsets[p]) for p in positions],
            [enc.sequence_ids[p] for p in positions], [enc.special_tokens_mask[p] for p in positions])


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _forward(model: nn.Module, ids: list[list[int]], pad: int) -> torch.Tensor:
    """The model's outputs for token-id lists (right-padded into one batch, on the model's device),
    detached and on the CPU: (B, C) or (B,)."""
    input_ids, mask = pad_batch(ids, pad)  # (B, T) each
    device = _device(model)
    return model(input_ids.to(device), mask.to(device)).detach().float().cpu()


def explain(predictor: Predictor, text: str, target: str | None = None, n_steps: int = 32) -> dict:
    """Token attributions (integrated gradients) of one ``text``, and passage influence with retrieval.

    Args:
        predictor: a loaded :class:`~ragtune.tasks.classification.predictor.Predictor` of a ``classification`` or
            ``regression`` run (scratch or ``hf`` backbone, with or without retrieval).
        text: the text to explain.
        target: the class to explain (classification); default the predicted one. Must be None
            for regression.
        n_steps: points on the path from the baseline to the input (each a forward and a backward
            pass); more is more exact (``convergence_delta`` tells how exact).

    Returns:
        A JSON-serialisable dict::

            {"text": str, "task": "classification" | "regression",
             "label": str, "scores": {label: probability},        # classification
             "value": float,                                        # regression (target units)
             "target": str | None,                                  # the class explained (None: regression)
             "output": float, "baseline_output": float,             # F(input), F(baseline): logit / raw output
             "convergence_delta": float, "n_steps": int,
             "tokens": [{"token": str, "start": int, "end": int, "attribution": float,
                         "segment": "text" | "passage" | "special",
                         "passage": int}],                          # passage tokens: index into "passages"
             "passages": [{"id", "doc_id", "score", "text", "label"?, # retrieval runs only
                           "influence": float, "without": float}]}

        ``start``/``end`` are character offsets into ``text`` (``segment: "text"``) or into the
        passage's ``text`` (``"passage"``); special tokens have ``start == end == 0``. Tokens are in
        the order the model reads them; a text cut at ``max_length`` has tokens for the part read
        only. ``without`` is p(target) (regression: the value) with that passage left out.

    Raises:
        RagtuneError: a predictor of another task or of the ``onnx`` engine, an unknown ``target``,
            ``n_steps`` < 1.
    """
    from captum.attr import LayerIntegratedGradients

    task = getattr(predictor, "task", None)
    if task not in TASKS:
        raise RagtuneError(f"explain works for classification and regression runs (this run's task is {task!r})")
    if getattr(predictor, "engine", "torch") != "torch" or not isinstance(predictor.model, nn.Module):
        raise RagtuneError("explain needs gradients, which only the torch engine has: load the run directory "
                           "itself (engine torch), not an ONNX export")
    if isinstance(text, bool) or not isinstance(text, str):
        raise TypeError(f"text must be a string, not {type(text).__name__}")
    if isinstance(n_steps, bool) or not isinstance(n_steps, int) or n_steps < 1:
        raise RagtuneError(f"n_steps must be a positive integer (got {n_steps!r})")
    labels = list(predictor.labels)
    classes = bool(labels)  # classification; a regression model has one output and no labels
    if not classes and target is not None:
        raise RagtuneError("target: only classification runs have classes to explain (this run is regression)")
    if classes and target is not None and str(target) not in labels:
        raise RagtuneError(f"target: unknown class {target!r}; the model knows {labels}")

    from ragtune.tasks.classification.predictor import pad_id

    model, tokenizer, meta = predictor.model, predictor.tokenizer, predictor.meta
    pad = pad_id(meta)
    retriever = predictor.retriever

    # --- the input as the Predictor reads it, with character offsets ---------------------------------
    rows: list[tuple[int, float]] = []
    passage_texts: list[str] = []
    context = None
    if retriever is not None:
        rows = retriever.rows([text])[0]
        passage_texts = [retriever.passage_text(r) for r, _ in rows]
        context = retriever.contexts([text])[0]
        official = encode_pairs(tokenizer, [text], [context], predictor.max_length)[0]
    else:
        official = encode(tokenizer, [text], predictor.max_length, meta.get("truncation", "head"),
                          meta.get("head_tokens"))[0]
    ids, offsets, sequence_ids, special_mask = _encode_one(tokenizer, text, context, predictor.max_length,
                                                           meta.get("truncation", "head"), meta.get("head_tokens"))
    if ids != official:  # pragma: no cover - a change in ragtune.data.tokenizer not mirrored here
        raise RuntimeError("explain: the offset encoding differs from the Predictor's encoding")

    sep = f" {retriever.separator} " if retriever is not None else ""
    starts, pos = [], 0
    for p in passage_texts:
        starts.append(pos)
        pos += len(p) + len(sep)
    if context is not None and sep.join(passage_texts) != context:  # pragma: no cover
        raise RuntimeError("explain: the passages do not join into the retriever's context")

    special_ids = _special_ids(tokenizer)
    token_rows: list[dict] = []
    for tid, (s, e), seq, smask in zip(ids, offsets, sequence_ids, special_mask):
        row = {"token": tokenizer.id_to_token(tid) or "", "start": 0, "end": 0, "attribution": 0.0,
               "segment": "special"}
        if not smask and seq is not None and tid not in special_ids:
            if seq == 0:
                row.update(start=int(s), end=int(e), segment="text")
            else:  # a passage token: offsets into the passage it lies in
                for i, (p_start, p_text) in enumerate(zip(starts, passage_texts)):
                    if p_start <= s and e <= p_start + len(p_text):
                        row.update(start=int(s - p_start), end=int(e - p_start), segment="passage", passage=i)
                        break
        token_rows.append(row)

    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode(False), torch.enable_grad():
            # --- prediction and the class explained ----------------------------------------------
            out = _forward(model, [ids], pad)  # (1, C) or (1,): what Predictor.outputs gives
            result: dict = {"text": text, "task": task}
            if classes:
                probs = torch.softmax(out[0], dim=-1)
                predicted = int(probs.argmax())
                target_index = predicted if target is None else labels.index(str(target))
                result["label"] = labels[predicted]
                result["scores"] = {label: round(float(p), 6) for label, p in zip(labels, probs)}
                result["target"] = labels[target_index]
            else:
                target_index = None
                scale, shift = float(meta.get("target_std", 1.0)), float(meta.get("target_mean", 0.0))
                result["value"] = float(out[0]) * scale + shift
                result["target"] = None

            # --- integrated gradients on the token embeddings ----------------------------------------
            device = _device(model)
            input_ids = torch.tensor([ids], dtype=torch.long, device=device)  # (1, T)
            keep = torch.tensor([[r["segment"] == "special" for r in token_rows]], device=device)  # (1, T)
            baseline_ids = torch.where(keep, input_ids, torch.full_like(input_ids, pad))  # (1, T)
            mask = torch.ones_like(input_ids)  # (1, T): the baseline's pads are read, not masked
            lig = LayerIntegratedGradients(model, embedding_layer(model))  # model(input_ids, mask)
            attributions, delta = lig.attribute(
                input_ids, baselines=baseline_ids, target=target_index, additional_forward_args=(mask,),
                n_steps=n_steps, internal_batch_size=min(n_steps, INTERNAL_BATCH), return_convergence_delta=True)
            scores = attributions.detach().float().sum(dim=-1)[0].cpu()  # (T,): summed over the embedding dimension
            baseline_out = _forward(model, [baseline_ids[0].tolist()], pad)
            # what is explained: the target's logit (a model with classes), or the regression output
            result["output"] = float(out[0, target_index] if classes else out[0])
            result["baseline_output"] = float(baseline_out[0, target_index] if classes else baseline_out[0])
            result["convergence_delta"] = float(delta.detach().reshape(-1)[0].cpu())
            result["n_steps"] = n_steps
            for row, score in zip(token_rows, scores.tolist()):
                row["attribution"] = float(score) if math.isfinite(score) else 0.0
            result["tokens"] = token_rows

            # --- leave-one-out influence of each passage -----------------------------------------------
            if retriever is not None:
                result["passages"] = _passages(predictor, text, rows, passage_texts, sep, out, target_index, pad)
    finally:
        model.train(was_training)
    return result


def _passages(predictor: Predictor, text: str, rows, passage_texts: list[str], sep: str, out: torch.Tensor,
              target_index: int | None, pad: int) -> list[dict]:
    """The passages of a retrieval run with their leave-one-out influence on the explained quantity."""
    retriever = predictor.retriever
    passages = []
    for (r, score), p_text in zip(rows, passage_texts):
        p = retriever.index.passages[r]
        item = {"id": p["id"], "doc_id": p["doc_id"], "score": round(float(score), 4), "text": p_text}
        label = retriever.label_of(r)
        if label is not None:
            item["label"] = label
        passages.append(item)
    if not passages:
        return passages
    contexts = [sep.join(t for j, t in enumerate(passage_texts) if j != i) for i in range(len(passage_texts))]
    loo_ids = encode_pairs(predictor.tokenizer, [text] * len(contexts), contexts, predictor.max_length)
    loo = _forward(predictor.model, loo_ids, pad)  # (k, C) or (k,)
    if predictor.labels:  # classification
        full = float(torch.softmax(out[0], dim=-1)[target_index])
        without = torch.softmax(loo, dim=-1)[:, target_index].tolist()
    else:
        scale, shift = float(predictor.meta.get("target_std", 1.0)), float(predictor.meta.get("target_mean", 0.0))
        full = float(out[0]) * scale + shift
        without = (np.asarray(loo.tolist(), dtype=np.float64) * scale + shift).tolist()
    for item, w in zip(passages, without):
        item["influence"] = full - float(w)
        item["without"] = float(w)
    return passages
