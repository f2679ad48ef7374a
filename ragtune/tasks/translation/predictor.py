"""Inference for a ``task: translation`` run: load RUN_DIR, translate texts, score pairs.

The one path shared by the recipe (validation each epoch, the final metrics), ``ragtune predict``
and ``ragtune eval``::

    p = Seq2SeqPredictor.from_run_dir("runs/multi30k")
    p.generate(["A man is sleeping."])                       # [{"output": "Ein Mann schläft."}]
    p.generate(texts, strategy="sample", top_p=0.9, seed=1)  # any key of the config's `decode:` section
    p.evaluate(sources, targets)                             # {"bleu", "chrf", "loss", "perplexity", ...}

Decoding runs with the model in ``eval()`` mode (its previous mode is restored), under
``torch.no_grad``, in batches of ``batch_size`` sources sorted by token length (less padding);
outputs come back in input order. The decoding settings default to the run's ``decode:`` section
(stored in ``model.json``); keyword overrides change them per call.

**Devices.** ``from_run_dir(..., device=...)`` loads the model on ``auto`` (CUDA, else MPS, else the
CPU), ``cpu``, ``cuda``, ``cuda:N`` or ``mps`` (:mod:`ragtune.devices`; a device the machine lacks is a
RagtuneError naming ``--device``). Whatever device the model is on (also one the caller moved it to,
as the training loop does), the source and target tensors are built there and the decoded ids and
the loss come back to the CPU as Python lists and floats.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import torch

from ragtune.data.seq2seq_tokenizer import Seq2SeqTokenizer
from ragtune.errors import RagtuneError
from ragtune.evaluate.text_metrics import bleu, chrf, perplexity
from ragtune.models.decoding import (DEFAULT_DECODE, Seq2SeqStepper, cut_at_stop, decode_batches, decode_settings,
                                     mean_token_nll)
from ragtune.models.seq2seq import Seq2SeqConfig, TransformerForSeq2Seq, build_seq2seq, pad_batch
from ragtune.runs import decode_rows, inference_device, load_run_model, model_device, read_run_meta


class Seq2SeqPredictor:
    """A trained encoder-decoder and its tokenizer.

    Args:
        model: a :class:`TransformerForSeq2Seq`.
        tokenizer: its :class:`Seq2SeqTokenizer`.
        meta: the run's ``model.json`` (``decode`` defaults, ``bleu_tokenize``).
        batch_size: sources per decoding batch.
    """

    def __init__(self, model: TransformerForSeq2Seq, tokenizer: Seq2SeqTokenizer, meta: dict, batch_size: int = 64):
        self.model = model
        self.tokenizer = tokenizer
        self.meta = meta
        self.batch_size = batch_size
        self.max_length = model.config.max_length
        self.decode_defaults = {**DEFAULT_DECODE, **(meta.get("decode") or {})}
        self.bleu_tokenize = meta.get("bleu_tokenize")
        self.memory = None  # a TranslationMemory when the run was trained with one (retrieval.top_k > 0)
        self.memory_k = 0

    def use_memory(self, memory, k: int) -> None:
        """Read every source with its ``k`` most similar pairs of ``memory`` (ragtune/retrieval/memory.py)."""
        self.memory, self.memory_k = memory, int(k)

    def _sources(self, texts: list[str]) -> list[str]:
        """The encoder's input texts: the sources, followed by their translation-memory hits when there is a memory."""
        return self.memory.augment(texts, self.memory_k) if self.memory is not None and self.memory_k else texts

    @classmethod
    def from_run_dir(cls, run_dir: str | Path, batch_size: int = 64,
                     device: str | torch.device | None = None) -> Seq2SeqPredictor:
        """Load a finished translation run on ``device`` (:func:`ragtune.runs.inference_device`; None: ``auto``)."""
        run_dir = Path(run_dir)
        device = inference_device(device)
        meta = read_run_meta(run_dir, "translation")
        tokenizer, model = load_run_model(run_dir, meta, lambda: build_seq2seq(Seq2SeqConfig(**meta["model"])), device)
        predictor = cls(model, tokenizer, meta, batch_size)
        if meta.get("memory"):  # trained with a translation memory: rebuild it from the saved training pairs
            from ragtune.retrieval.memory import TranslationMemory

            pairs = [json.loads(line) for line in (run_dir / meta["memory"]["file"]).read_text(encoding="utf-8").splitlines()]
            predictor.use_memory(TranslationMemory([p["source"] for p in pairs], [p["target"] for p in pairs],
                                                   separator=meta["memory"]["separator"]), meta["memory"]["top_k"])
        return predictor

    # -- decoding ----------------------------------------------------------------------------------
    def _settings(self, overrides: dict) -> dict:
        return decode_settings(self.decode_defaults, overrides, self.max_length - 1, self.max_length - 1)

    def translate(self, texts: Sequence[str], progress: bool = False, **overrides) -> list[str]:
        """The output text of each source text."""
        texts = ["" if t is None else str(t) for t in texts]
        if not texts:
            return []
        src = self.tokenizer.encode_source_batch(self._sources(texts), self.max_length)
        pad, device = self.model.config.pad_id, model_device(self.model)
        s = self._settings(overrides)
        ids = decode_batches(self.model, src, self.batch_size, s,
                             lambda rows: Seq2SeqStepper(self.model, *pad_batch(rows, pad, device=device)), progress,
                             "decoding", stop_tokenizer=getattr(self.tokenizer, "hf", None))
        # target ids without <s>/</s>, in input order; each cut before its first stop string
        return [cut_at_stop(t, s.get("stop"))[0] for t in self.tokenizer.decode_batch(ids)]

    def generate(self, texts: Sequence[str], progress: bool = False, **overrides) -> list[dict]:
        """``[{"output": text}, ...]``, one per input text; ``overrides`` are keys of the ``decode:`` section."""
        return [{"output": o} for o in self.translate(texts, progress=progress, **overrides)]

    # -- scoring -----------------------------------------------------------------------------------
    @torch.no_grad()
    def loss(self, sources: Sequence[str], targets: Sequence[str]) -> float:
        """Mean negative log-likelihood per target token (teacher forcing, no label smoothing), in nats."""
        src = self.tokenizer.encode_source_batch(self._sources(list(sources)), self.max_length)
        tgt = self.tokenizer.encode_target_batch(list(targets), self.max_length)
        pad, device = self.model.config.pad_id, model_device(self.model)

        def logits_and_labels(rows: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
            ids, mask = pad_batch([src[i] for i in rows], pad, device=device)  # (B, S)
            tgt_in, _ = pad_batch([tgt[i][:-1] for i in rows], pad, device=device)  # <s> y1 .. yn  (B, T)
            labels, _ = pad_batch([tgt[i][1:] for i in rows], pad, device=device)  # y1 .. yn </s>  (B, T)
            return self.model(ids, mask, tgt_in), labels  # (B, T, V), (B, T)

        return mean_token_nll(self.model, [len(x) for x in src], self.batch_size, logits_and_labels, pad)

    def evaluate(self, sources: Sequence[str], targets: Sequence[str], max_decode_rows: int | None = None,
                 seed: int = 0, progress: bool = False, **overrides) -> dict:
        """``{"bleu", "chrf", "loss", "perplexity", "n", "decoded", "bleu_tokenize", "strategy"}`` of the pairs.

        The loss uses every pair; BLEU and chrF decode every pair, or a seeded random sample of
        ``max_decode_rows`` of them (``decoded`` says how many).
        """
        sources, targets = list(sources), list(targets)
        if len(sources) != len(targets):
            raise RagtuneError(f"{len(sources)} sources but {len(targets)} targets")
        if not sources:
            raise RagtuneError("nothing to evaluate: no source/target pairs")
        rows = decode_rows(len(sources), max_decode_rows, seed)
        hyps = self.translate([sources[i] for i in rows], progress=progress, **overrides)
        refs = [targets[i] for i in rows]
        b = bleu(hyps, refs, tokenize=self.bleu_tokenize)
        loss = self.loss(sources, targets)
        ppl = perplexity(loss)
        return {"bleu": b["bleu"], "chrf": chrf(hyps, refs)["chrf"], "loss": loss,
                "perplexity": ppl if math.isfinite(ppl) else None, "n": len(sources), "decoded": len(rows),
                "bleu_tokenize": b["tokenize"], "strategy": self._settings(overrides)["strategy"],
                "examples": [{"source": sources[i], "reference": targets[i], "output": h}
                             for i, h in list(zip(rows, hyps))[:5]]}
