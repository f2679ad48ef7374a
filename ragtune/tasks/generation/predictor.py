"""Inference for a ``task: generation`` run: load RUN_DIR, write responses, score examples.

The one path shared by the recipe (validation each epoch, the final metrics), ``ragtune predict``,
``ragtune eval`` and ``POST /v1/generate``::

    p = GenerationPredictor.from_run_dir("runs/squad_gen")
    p.generate(["Which team won Super Bowl 50?"])        # [{"output": "Denver Broncos", "passages": [...]}]
    p.generate(texts, strategy="sample", top_p=0.9)      # any key of the config's `decode:` section
    p.evaluate(prompts, responses)                       # {"rougeL", "rouge1", "rouge2", "bleu", "loss", "perplexity", ...}

How a decoder-only model reads an example (``TransformerForCausalLM``, ``ragtune/models/decoder.py``)::

    prompt → response:   <s> prompt [passages] </s> response </s>     (loss on "response </s>" only)
    text to continue:    <s> text </s>                                 (loss on every token)

At inference a prompt becomes ``<s> prompt [passages] </s>`` and the model writes until ``</s>``; in
a run without prompts (texts to continue) the input is a beginning, ``<s> beginning``, and the model
continues it. With retrieval (``retrieval.top_k`` > 0) the prompt is followed by its ``top_k``
passages from the run's index, best first, each after the separator ``<p>``; when the whole is longer
than the model allows, the passages are cut first (the prompt comes first).

Evaluation: ROUGE-1/2/L (Chinese-aware, :func:`ragtune.evaluate.text_metrics.rouge`) and BLEU of
the decoded responses against the references, and the loss (mean cross-entropy per response token)
and its perplexity. Texts to continue are scored by continuing the first half of each text (words,
or characters for text without spaces) and comparing with the second half.

**Devices.** ``from_run_dir(..., device=...)`` loads the model, and the dense encoder of its index,
on ``auto`` (CUDA, else MPS, else the CPU), ``cpu``, ``cuda``, ``cuda:N`` or ``mps``
(:mod:`ragtune.devices`; a device the machine lacks is a RagtuneError naming ``--device``). Prompts
are padded on the device of the model (also one the caller moved it to, as the training loop does);
the generated ids and the loss come back to the CPU.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch

from ragtune.data.seq2seq_tokenizer import Seq2SeqTokenizer
from ragtune.errors import RagtuneError
from ragtune.evaluate.text_metrics import bleu, perplexity, rouge
from ragtune.models.decoder import DecoderConfig, TransformerForCausalLM, build_decoder
from ragtune.models.decoding import DEFAULT_DECODE, CausalLMStepper, decode_batches, decode_settings, mean_token_nll
from ragtune.models.seq2seq import pad_batch
from ragtune.runs import decode_rows, inference_device, load_run_model, model_device, read_run_meta

PASSAGE_SEPARATOR = "<p>"  # between the prompt and each retrieved passage
DEFAULT_NEW_TOKENS = 64  # decode.max_new_tokens null: at most this many (and what fits in model.max_length)


def split_for_continuation(text: str) -> tuple[str, str]:
    """``(first half, second half)`` of a text by words, or by characters when it has no spaces (Chinese)."""
    words = text.split()
    if len(words) >= 2:
        half = len(words) // 2
        return " ".join(words[:half]), " ".join(words[half:])
    half = max(1, len(text) // 2)
    return text[:half], text[half:]


def add_passages(prompts: Sequence[str], retriever) -> list[str]:
    """``prompt <p> passage 1 <p> passage 2 ...`` for each prompt; the prompts as they are when
    ``retriever`` (a :class:`~ragtune.retrieval.augment.ContextRetriever`) is None."""
    prompts = [str(p) for p in prompts]
    if retriever is None:
        return prompts
    sep = f" {PASSAGE_SEPARATOR} "
    return [f"{p}{sep}{c}" for p, c in zip(prompts, retriever.contexts(prompts))]


class GenerationPredictor:
    """A trained decoder-only language model, its tokenizer and (optionally) its retriever.

    Args:
        model: a :class:`TransformerForCausalLM`.
        tokenizer: its :class:`Seq2SeqTokenizer` (one joint vocabulary).
        meta: the run's ``model.json`` (``prompts``, ``decode`` defaults).
        batch_size: prompts per decoding batch.
        retriever: a :class:`~ragtune.retrieval.augment.ContextRetriever`, or None (no passages).
    """

    def __init__(self, model: TransformerForCausalLM, tokenizer: Seq2SeqTokenizer, meta: dict, batch_size: int = 32,
                 retriever=None):
        self.model = model
        self.tokenizer = tokenizer
        self.meta = meta
        self.batch_size = batch_size
        self.max_length = model.config.max_length
        self.prompts = bool(meta.get("prompts", True))
        self.decode_defaults = {**DEFAULT_DECODE, **(meta.get("decode") or {})}
        self.bleu_tokenize = meta.get("bleu_tokenize")
        self.retriever = retriever

    @classmethod
    def from_run_dir(cls, run_dir: str | Path, batch_size: int = 32,
                     device: str | torch.device | None = None) -> GenerationPredictor:
        """Load a finished generation run (and its index, when it retrieves) on ``device``
        (:func:`ragtune.runs.inference_device`; None: ``auto``)."""
        run_dir = Path(run_dir)
        device = inference_device(device)
        meta = read_run_meta(run_dir, "generation")
        tokenizer, model = load_run_model(run_dir, meta, lambda: build_decoder(DecoderConfig(**meta["model"])), device)
        retriever = None
        if meta.get("retrieval"):
            from ragtune.retrieval.augment import ContextRetriever, index_folder
            from ragtune.retrieval.index import load_index

            r = meta["retrieval"]
            retriever = ContextRetriever(load_index(index_folder(run_dir, r["index"]), device=device), r["top_k"],
                                         PASSAGE_SEPARATOR)
        return cls(model, tokenizer, meta, batch_size, retriever)

    # -- inputs ------------------------------------------------------------------------------------
    def with_passages(self, prompts: Sequence[str]) -> list[str]:
        """Each prompt followed by its retrieved passages (the prompts unchanged without a retriever)."""
        return add_passages(prompts, self.retriever)

    def _prompt_tokens(self, texts: Sequence[str]) -> list[list[int]]:
        """Tokens of each prompt (with its passages): ``prompt </s>``, or a bare beginning to continue."""
        if not self.prompts:
            return self.tokenizer.encode_plain_batch(texts)
        return self.tokenizer.encode_source_batch(list(texts))

    def encode_example(self, prompt_ids: list[int], response: list[int]) -> tuple[list[int], int]:
        """``(ids, prompt_length)`` of one training example: ``<s> prompt_ids response``, cut to
        ``max_length``. The prompt gives way first (keeping its last token, ``</s>``), but keeps at
        least half of ``max_length`` when it is that long; then the response is cut."""
        room = self.max_length - 1
        keep = min(len(prompt_ids), max(room // 2, room - len(response)))
        if keep < len(prompt_ids):
            prompt_ids = prompt_ids[:keep - 1] + prompt_ids[-1:] if keep > 1 else prompt_ids[-1:][:keep]
        ids = [self.model.config.bos_id] + prompt_ids + response
        return ids[:self.max_length], 1 + len(prompt_ids)

    def training_examples(self, prompts: Sequence[str], responses: Sequence[str]) -> list[tuple[list[int], int]]:
        """:meth:`encode_example` of each (prompt with its passages, response) pair."""
        prompt_ids = self._prompt_tokens(self.with_passages(prompts)) if self.prompts else [[] for _ in prompts]
        response_ids = [ids[1:] for ids in self.tokenizer.encode_target_batch(list(responses))]  # response </s>
        return [self.encode_example(p, r) for p, r in zip(prompt_ids, response_ids)]

    # -- decoding ----------------------------------------------------------------------------------
    def _settings(self, overrides: dict) -> dict:
        return decode_settings(self.decode_defaults, overrides, min(DEFAULT_NEW_TOKENS, self.max_length // 2),
                               self.max_length - 2)

    def _decoder_inputs(self, prompts: Sequence[str], max_new_tokens: int) -> list[list[int]]:
        """``<s> prompt`` ids, each cut so that ``max_new_tokens`` still fit (a prompt keeps its ``</s>``)."""
        room = self.max_length - 1 - max_new_tokens
        out = []
        for ids in self._prompt_tokens(self.with_passages(prompts)):
            if len(ids) > room:
                ids = ids[:room - 1] + ids[-1:] if self.prompts else ids[:room]
            out.append([self.model.config.bos_id] + ids)
        return out

    def complete(self, prompts: Sequence[str], progress: bool = False, **overrides) -> list[str]:
        """The generated text for each prompt (or the continuation of each beginning)."""
        prompts = ["" if p is None else str(p) for p in prompts]
        if not prompts:
            return []
        s = self._settings(overrides)
        ids = decode_batches(self.model, self._decoder_inputs(prompts, s["max_new_tokens"]), self.batch_size, s,
                             lambda rows: CausalLMStepper(self.model, rows), progress, "generating")
        return self.tokenizer.decode_batch(ids)  # generated ids without </s>, in input order

    def generate(self, prompts: Sequence[str], progress: bool = False, **overrides) -> list[dict]:
        """``[{"output": text[, "passages": [...]]}, ...]``, one per prompt; ``overrides`` are keys of
        the ``decode:`` section. ``passages``: the retrieved passages (id, doc_id, score, text, title,
        source), best first."""
        outputs = self.complete(prompts, progress=progress, **overrides)
        if self.retriever is None:
            return [{"output": o} for o in outputs]
        out = []
        for o, rows in zip(outputs, self.retriever.rows([str(p) for p in prompts])):
            passages = []
            for row, score in rows:
                p = self.retriever.index.passages[row]
                passages.append({"id": p["id"], "doc_id": p["doc_id"], "score": round(float(score), 4),
                                 "text": p["text"], "title": p.get("title"), "source": p.get("source")})
            out.append({"output": o, "passages": passages})
        return out

    # -- scoring -----------------------------------------------------------------------------------
    def batch_logits(self, examples: Sequence[tuple[list[int], int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(logits (B, T-1, V), labels (B, T-1))`` of encoded examples; prompt positions and padding
        have the label ``pad_id`` (left out of the loss)."""
        pad = self.model.config.pad_id
        ids, mask = pad_batch([ids for ids, _ in examples], pad, device=model_device(self.model))  # (B, T)
        labels = ids[:, 1:].clone()  # (B, T-1): position t predicts token t+1
        for row, (_, prompt_len) in enumerate(examples):
            labels[row, :prompt_len - 1] = pad  # the prompt is given, not learned
        logits = self.model(ids[:, :-1], mask[:, :-1])  # (B, T-1, V)
        return logits, labels

    @torch.no_grad()
    def loss(self, prompts: Sequence[str], responses: Sequence[str]) -> float:
        """Mean negative log-likelihood per response token (``</s>`` included), in nats."""
        examples = self.training_examples(prompts, responses)
        return mean_token_nll(self.model, [len(ids) for ids, _ in examples], self.batch_size,
                              lambda rows: self.batch_logits([examples[i] for i in rows]), self.model.config.pad_id)

    def evaluate(self, prompts: Sequence[str], responses: Sequence[str], max_decode_rows: int | None = None,
                 seed: int = 0, progress: bool = False, **overrides) -> dict:
        """``{"rougeL", "rouge1", "rouge2", "bleu", "loss", "perplexity", "n", "decoded", "strategy", "examples"}``.

        The loss uses every example; the decoded metrics decode every example, or a seeded random
        sample of ``max_decode_rows`` (``decoded`` says how many).
        """
        prompts, responses = ["" if p is None else str(p) for p in prompts], [str(r) for r in responses]
        if len(prompts) != len(responses):
            raise RagtuneError(f"{len(prompts)} prompts but {len(responses)} responses")
        if not prompts:
            raise RagtuneError("nothing to evaluate: no examples")
        rows = decode_rows(len(prompts), max_decode_rows, seed)
        if self.prompts:
            given, refs = [prompts[i] for i in rows], [responses[i] for i in rows]
        else:  # continue the first half of each text; compare with the second half
            given, refs = map(list, zip(*(split_for_continuation(responses[i]) for i in rows)))
        hyps = self.complete(given, progress=progress, **overrides)
        scores = rouge(hyps, refs)
        b = bleu(hyps, refs, tokenize=self.bleu_tokenize)
        loss = self.loss(prompts, responses)
        ppl = perplexity(loss)
        return {"rougeL": scores["rougeL"], "rouge1": scores["rouge1"], "rouge2": scores["rouge2"], "bleu": b["bleu"],
                "loss": loss, "perplexity": ppl if math.isfinite(ppl) else None, "n": len(prompts),
                "decoded": len(rows), "strategy": self._settings(overrides)["strategy"],
                "examples": [{"prompt": p, "reference": r, "output": h} for p, r, h in list(zip(given, refs, hyps))[:5]]}
