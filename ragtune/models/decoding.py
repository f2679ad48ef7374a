"""Generating token ids with the encoder-decoder and the decoder-only models: greedy, beam search, sampling.

The common interface is a *stepper*, one per batch of inputs: called with the tokens generated
so far, ``step(generated (N, t)) -> logits (N, V)`` for token t + 1 of every row. It owns the
model-specific part (the encoder memory and ``<s>`` of a seq2seq model, the prompt of a language
model, the key/value cache) and has two more methods: ``reset()`` (back to the B input rows and an
empty cache; every decoding function calls it first, so one stepper serves many calls) and
``reorder(index)`` (keep rows ``index``: beam search expands each input to K rows and follows the
surviving beams). :class:`Seq2SeqStepper` and :class:`CausalLMStepper` are the two adapters; any
object with the same attributes works (``batch_size``, ``max_new_tokens``, ``eos_id``,
``pad_id``, ``banned_ids``, ``device``).

All functions return one list of token ids per input, without ``<s>``, ``</s>`` or padding, and stop
a row at ``</s>`` (or after ``max_new_tokens``). ``min_new_tokens`` forbids ``</s>`` until that many
tokens have been generated, so ``min_new_tokens=max_new_tokens=N`` forces every output to exactly N
tokens (e.g. to compare systems at the same output length). The ids in ``banned_ids`` (``<s>`` and
padding) are never generated. Put the model in ``eval()`` mode first: the steppers do not change it
(dropout left on makes every decoding random).

* :func:`greedy` takes the most probable token at every step.
* :func:`beam_search` keeps the ``beam_size`` best partial outputs of each input by total
  log-probability. A finished beam (``</s>``) stays in the beam, extended by padding at no cost.
  At the end the best of the K is chosen by ``score / len ** length_penalty``, ``len`` counting the
  generated tokens including ``</s>``: the exponent transformers' ``generate`` calls
  ``length_penalty`` (its default 1.0 ranks by log-probability per token). ``length_penalty=0``
  (this function's default) ranks by raw log-probability; larger values favour longer outputs. With
  ``beam_size=1`` it is greedy decoding. (Before ragtune 0.2 ``decode.length_penalty`` was GNMT's
  alpha, ``((5 + len) / 6) ** alpha``; the key kept its name and now means what it means in
  transformers, for every model.)
* :func:`sample` draws each token from the softmax of ``logits / temperature``, restricted to the
  ``top_k`` most probable tokens and/or the smallest set of tokens whose probability reaches
  ``top_p`` (nucleus sampling, Holtzman et al. 2020). The random numbers come from a
  ``torch.Generator`` seeded with ``seed``: same seed, same outputs. ``top_k=1`` is greedy.
* :func:`score_sequences` is the model's log-probability of given outputs (teacher forcing).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ragtune.errors import RagtuneError
from ragtune.models.seq2seq import TransformerForSeq2Seq, pad_batch

__all__ = [
    "CausalLMStepper",
    "Seq2SeqStepper",
    "Stepper",
    "beam_search",
    "greedy",
    "length_penalty_factor",
    "sample",
    "score_sequences",
]


class Stepper(Protocol):
    """What the decoding functions need from a model (see the module docstring)."""

    batch_size: int  # number of inputs B
    max_new_tokens: int  # most tokens the model can generate (its max_length minus the prefix)
    eos_id: int
    pad_id: int  # fills the rows that have finished
    banned_ids: list[int]  # never generated (<s>, padding)
    device: torch.device

    def reset(self) -> None: ...

    def reorder(self, index: torch.Tensor) -> None: ...

    def __call__(self, generated: torch.Tensor) -> torch.Tensor: ...


class Seq2SeqStepper:
    """Stepper of a :class:`~ragtune.models.seq2seq.TransformerForSeq2Seq` for a batch of sources.

    The sources are encoded once; the decoder input of row i is ``<s>`` + its generated tokens.
    ``use_cache=False`` re-runs the decoder on the whole prefix at every step (a reference for tests).
    """

    def __init__(
        self,
        model: TransformerForSeq2Seq,
        src_ids: torch.Tensor,
        src_mask: torch.Tensor | None = None,
        use_cache: bool = True,
    ) -> None:
        config = model.config
        self.model = model
        self.use_cache = use_cache
        self.eos_id, self.bos_id = config.eos_id, config.bos_id
        self.pad_id = config.pad_id
        self.banned_ids = [i for i in (config.bos_id, config.pad_id) if i != config.eos_id]  # (GPT-2: bos = eos)
        self.batch_size = src_ids.shape[0]
        self.max_new_tokens = config.max_length - 1  # position 0 holds <s>
        self.device = src_ids.device
        if src_mask is None:
            src_mask = (src_ids != config.pad_id).long()  # (B, S)
        with torch.no_grad():
            self._memory0 = model.encode(src_ids, src_mask)  # (B, S, d_model)
        self._mask0 = src_mask
        self.reset()

    def reset(self) -> None:
        self.memory, self.src_mask = self._memory0, self._mask0
        self.cache = self.model.new_cache() if self.use_cache else None

    def reorder(self, index: torch.Tensor) -> None:
        self.memory = self.memory.index_select(0, index)  # (N, S, d_model)
        self.src_mask = self.src_mask.index_select(0, index)  # (N, S)
        if self.cache is not None:
            self.cache.reorder(index)

    @torch.no_grad()
    def __call__(self, generated: torch.Tensor) -> torch.Tensor:
        N = generated.shape[0]
        bos = torch.full((N, 1), self.bos_id, dtype=torch.long, device=generated.device)
        prefix = torch.cat([bos, generated], dim=1)  # (N, 1+t)
        if self.cache is None:
            logits = self.model.decode(self.memory, self.src_mask, prefix)  # (N, 1+t, V)
        else:
            new = prefix[:, self.cache.length:]  # (N, tokens not fed yet)
            logits = self.model.decode(self.memory, self.src_mask, new, self.cache)  # (N, new, V)
        return logits[:, -1].float()  # (N, V)


class CausalLMStepper:
    """Stepper of a :class:`~ragtune.models.decoder.TransformerForCausalLM` for a batch of prompts.

    ``prompts``: one non-empty list of ids per row (include ``<s>`` if the model was trained with
    it). They are left-padded into one batch; the model gives each row its own positions.
    """

    def __init__(self, model, prompts: Sequence[Sequence[int]], use_cache: bool = True) -> None:
        config = model.config
        if not prompts or any(len(p) == 0 for p in prompts):
            raise RagtuneError("CausalLMStepper: every prompt needs at least one token")
        self.model = model
        self.use_cache = use_cache
        self.eos_id = config.eos_id
        self.pad_id = config.pad_id
        self.banned_ids = [i for i in (config.bos_id, config.pad_id) if i != config.eos_id]  # (GPT-2: bos = eos)
        self.device = next(model.parameters()).device
        self.prompt_ids, self.prompt_mask = pad_batch(prompts, config.pad_id, left=True, device=self.device)  # (B, P)
        self.batch_size = len(prompts)
        self.max_new_tokens = config.max_length - self.prompt_ids.shape[1]
        if self.max_new_tokens < 1:
            raise RagtuneError(
                f"the longest prompt has {self.prompt_ids.shape[1]} tokens: no room left to generate "
                f"within max_length={config.max_length}"
            )
        self.reset()

    def reset(self) -> None:
        self.ids, self.mask = self.prompt_ids, self.prompt_mask
        self.cache = self.model.new_cache() if self.use_cache else None

    def reorder(self, index: torch.Tensor) -> None:
        self.ids = self.ids.index_select(0, index)  # (N, P)
        self.mask = self.mask.index_select(0, index)  # (N, P)
        if self.cache is not None:
            self.cache.reorder(index)

    @torch.no_grad()
    def __call__(self, generated: torch.Tensor) -> torch.Tensor:
        ids = torch.cat([self.ids, generated], dim=1)  # (N, P+t)
        mask = torch.cat([self.mask, torch.ones_like(generated)], dim=1)  # (N, P+t)
        if self.cache is None:
            logits = self.model(ids, mask)  # (N, P+t, V)
        else:
            done = self.cache.length
            logits = self.model(ids[:, done:], mask[:, done:], self.cache)  # (N, new, V)
        return logits[:, -1].float()  # (N, V)


# ----------------------------------------------------------------------------------------------
# Shared helpers
# ----------------------------------------------------------------------------------------------


def _limits(step: Stepper, max_new_tokens: int | None, min_new_tokens: int) -> int:
    """Reset the stepper; the number of steps to run, after checking the length options."""
    limit = step.max_new_tokens if max_new_tokens is None else max_new_tokens
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise RagtuneError(f"max_new_tokens must be a positive integer, got {max_new_tokens!r}")
    if limit > step.max_new_tokens:
        raise RagtuneError(
            f"max_new_tokens={limit} does not fit: the model can generate at most {step.max_new_tokens} "
            "tokens here (its max_length minus the prefix)"
        )
    if isinstance(min_new_tokens, bool) or not isinstance(min_new_tokens, int) or not 0 <= min_new_tokens <= limit:
        raise RagtuneError(f"min_new_tokens must be an integer in [0, max_new_tokens={limit}], got {min_new_tokens!r}")
    step.reset()
    return limit


def _log_probs(step: Stepper, generated: torch.Tensor, t: int, min_new_tokens: int) -> torch.Tensor:
    """log p(next token) (N, V) with the banned ids (and </s> before ``min_new_tokens``) at -inf.

    The log-softmax is taken *before* the ban, so the values are the model's own log-probabilities
    (what :func:`score_sequences` computes), not renormalised over the allowed tokens.
    """
    logp = F.log_softmax(step(generated), dim=-1)  # (N, V)
    logp[:, step.banned_ids] = float("-inf")
    if t < min_new_tokens:
        logp[:, step.eos_id] = float("-inf")
    return logp


def _strip(generated: torch.Tensor, eos_id: int, banned: Sequence[int]) -> list[list[int]]:
    """Rows of (N, t) ids -> lists cut at the first </s>, without </s> and padding."""
    out = []
    for row in generated.tolist():
        if eos_id in row:
            row = row[: row.index(eos_id)]
        out.append([i for i in row if i not in banned])
    return out


def _run(
    step: Stepper,
    choose: Callable[[torch.Tensor], torch.Tensor],
    max_new_tokens: int | None,
    min_new_tokens: int,
) -> list[list[int]]:
    """One token per row per step, chosen by ``choose(log_probs (B, V)) -> (B,)``; finished rows get padding."""
    limit = _limits(step, max_new_tokens, min_new_tokens)
    generated = torch.empty((step.batch_size, 0), dtype=torch.long, device=step.device)  # (B, 0)
    done = torch.zeros(step.batch_size, dtype=torch.bool, device=step.device)  # (B,)
    for t in range(limit):
        nxt = choose(_log_probs(step, generated, t, min_new_tokens))  # (B,)
        nxt = nxt.masked_fill(done, step.pad_id)
        generated = torch.cat([generated, nxt[:, None]], dim=1)  # (B, t+1)
        done |= nxt == step.eos_id
        if bool(done.all()):
            break
    return _strip(generated, step.eos_id, step.banned_ids)


# ----------------------------------------------------------------------------------------------
# Decoding strategies
# ----------------------------------------------------------------------------------------------


def greedy(step: Stepper, max_new_tokens: int | None = None, min_new_tokens: int = 0) -> list[list[int]]:
    """The most probable token at every step, for every input."""
    return _run(step, lambda logp: logp.argmax(dim=-1), max_new_tokens, min_new_tokens)


def sample(
    step: Stepper,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int = 0,
    max_new_tokens: int | None = None,
    min_new_tokens: int = 0,
) -> list[list[int]]:
    """Random tokens from the (temperature-scaled, top-k/top-p-truncated) distribution; reproducible by ``seed``."""
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or temperature <= 0:
        raise RagtuneError(f"temperature must be a positive number, got {temperature!r}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise RagtuneError(f"top_k must be a positive integer or None, got {top_k!r}")
    if top_p is not None and (isinstance(top_p, bool) or not isinstance(top_p, (int, float)) or not 0 < top_p <= 1):
        raise RagtuneError(f"top_p must be a number in (0, 1] or None, got {top_p!r}")
    generator = torch.Generator(device=step.device).manual_seed(seed)

    def choose(logp: torch.Tensor) -> torch.Tensor:
        logits = logp / temperature  # (B, V); banned ids stay -inf
        if top_k is not None and top_k < logits.shape[-1]:
            kth = logits.topk(top_k, dim=-1).values[:, -1:]  # (B, 1)
            logits = logits.masked_fill(logits < kth, float("-inf"))
        if top_p is not None and top_p < 1:
            sorted_logits, order = logits.sort(dim=-1, descending=True)  # (B, V)
            probs = sorted_logits.softmax(dim=-1)
            # Drop a token when the tokens before it already reach top_p (the first one always stays).
            drop_sorted = probs.cumsum(dim=-1) - probs >= top_p  # (B, V)
            drop = drop_sorted.scatter(1, order, drop_sorted)  # back to vocabulary order
            logits = logits.masked_fill(drop, float("-inf"))
        probs = logits.softmax(dim=-1)  # (B, V)
        return torch.multinomial(probs, 1, generator=generator).squeeze(1)  # (B,)

    return _run(step, choose, max_new_tokens, min_new_tokens)


def length_penalty_factor(lengths: torch.Tensor, alpha: float) -> torch.Tensor:
    """``len ** alpha`` (1 for alpha = 0), transformers' ``length_penalty``; beam scores are divided by it."""
    return lengths.float().clamp(min=1) ** alpha


def beam_search(
    step: Stepper,
    beam_size: int = 4,
    length_penalty: float = 0.0,
    max_new_tokens: int | None = None,
    min_new_tokens: int = 0,
    return_scores: bool = False,
) -> list[list[int]] | tuple[list[list[int]], torch.Tensor]:
    """The best of ``beam_size`` beams per input (see the module docstring for the ranking).

    With ``return_scores`` also the chosen outputs' total log-probabilities (B,), </s> included.
    """
    if isinstance(beam_size, bool) or not isinstance(beam_size, int) or beam_size < 1:
        raise RagtuneError(f"beam_size must be a positive integer, got {beam_size!r}")
    if isinstance(length_penalty, bool) or not isinstance(length_penalty, (int, float)) or length_penalty < 0:
        raise RagtuneError(f"length_penalty must be a number >= 0, got {length_penalty!r}")
    limit = _limits(step, max_new_tokens, min_new_tokens)
    B, K, dev = step.batch_size, beam_size, step.device
    step.reorder(torch.arange(B, device=dev).repeat_interleave(K))  # row b*K + k = beam k of input b
    scores = torch.full((B, K), float("-inf"), device=dev)  # total log-prob of each beam
    scores[:, 0] = 0.0  # all beams start equal: keep only one, or the first step fills K copies of it
    generated = torch.empty((B * K, 0), dtype=torch.long, device=dev)  # (B*K, 0)
    done = torch.zeros(B * K, dtype=torch.bool, device=dev)  # (B*K,)
    lengths = torch.zeros(B * K, dtype=torch.long, device=dev)  # generated tokens, </s> included
    for t in range(limit):
        logp = _log_probs(step, generated, t, min_new_tokens)  # (B*K, V)
        V = logp.shape[-1]
        logp[done] = float("-inf")  # a finished beam continues only with padding, at no cost
        logp[done, step.pad_id] = 0.0
        candidates = (scores.view(B * K, 1) + logp).view(B, K * V)  # (B, K*V)
        scores, flat = candidates.topk(K, dim=-1)  # 2 x (B, K)
        rows = (torch.arange(B, device=dev)[:, None] * K + flat // V).view(-1)  # (B*K,) beam each came from
        tokens = (flat % V).view(-1)  # (B*K,)
        lengths = lengths[rows] + (~done[rows]).long()
        done = done[rows] | (tokens == step.eos_id)
        generated = torch.cat([generated[rows], tokens[:, None]], dim=1)  # (B*K, t+1)
        step.reorder(rows)
        if bool(done.all()):
            break
    ranked = scores / length_penalty_factor(lengths.view(B, K), length_penalty)  # (B, K)
    best = ranked.argmax(dim=-1)  # (B,)
    rows = torch.arange(B, device=dev) * K + best  # (B,)
    out = _strip(generated[rows], step.eos_id, step.banned_ids)
    if return_scores:
        return out, scores.gather(1, best[:, None]).squeeze(1)
    return out


def score_sequences(
    step: Stepper, sequences: Sequence[Sequence[int]], eos: bool | Sequence[bool] = True
) -> torch.Tensor:
    """The model's total log-probability (B,) of each row's output ``sequences[i]``, then </s> if ``eos``.

    ``eos`` may be one flag per row (e.g. False for outputs cut at ``max_new_tokens``). Uses the
    stepper's rows in their original order (it is reset first); one sequence per input.
    """
    if len(sequences) != step.batch_size:
        raise RagtuneError(f"score_sequences: {len(sequences)} sequences for {step.batch_size} inputs")
    flags = [eos] * len(sequences) if isinstance(eos, bool) else list(eos)
    full = [list(s) + ([step.eos_id] if e else []) for s, e in zip(sequences, flags)]
    T = max(len(s) for s in full)
    step.reset()
    total = torch.zeros(step.batch_size, device=step.device)
    if T == 0:
        return total
    ids, mask = pad_batch(full, step.pad_id, device=step.device)  # (B, T), right-padded
    for t in range(T):
        logp = F.log_softmax(step(ids[:, :t]), dim=-1)  # (B, V)
        total += logp.gather(1, ids[:, t : t + 1]).squeeze(1) * mask[:, t]
    return total


# The decoding settings and loop of a text run's predictor (translation, generation)

DEFAULT_DECODE = {"strategy": "beam", "beam_size": 4, "length_penalty": 1.0, "max_new_tokens": None, "top_k": None,
                  "top_p": None, "temperature": 1.0, "seed": 0, "repetition_penalty": 1.0, "stop": None}


def decode_settings(defaults: dict, overrides: dict, default_max_new: int, most_new: int) -> dict:
    """The decoding settings of one call: ``defaults`` (the run's ``decode:``) updated by the non-null
    ``overrides``; ``max_new_tokens`` null becomes ``default_max_new`` and may not exceed ``most_new``."""
    unknown = sorted(set(overrides) - set(DEFAULT_DECODE))
    if unknown:
        raise RagtuneError(f"unknown decoding option(s) {unknown}; choose from {list(DEFAULT_DECODE)}")
    settings = {**defaults, **{k: v for k, v in overrides.items() if v is not None}}
    if settings["strategy"] not in ("greedy", "beam", "sample"):
        raise RagtuneError(f"strategy must be one of greedy, beam, sample (got {settings['strategy']!r})")
    if settings["max_new_tokens"] is None:
        settings["max_new_tokens"] = default_max_new
    if isinstance(settings.get("stop"), str):
        settings["stop"] = [settings["stop"]]
    if settings.get("stop") is not None and (not all(isinstance(x, str) and x for x in settings["stop"]) or len(settings["stop"]) > 4):
        raise RagtuneError(f"stop: up to 4 non-empty strings (got {settings['stop']!r})")
    if settings["max_new_tokens"] > most_new:
        raise RagtuneError(f"max_new_tokens: at most {most_new} for this model (its max_length leaves no room for "
                           f"more) (got {settings['max_new_tokens']})")
    return settings


@torch.no_grad()
def decode_batches(model, inputs: Sequence[Sequence[int]], batch_size: int, s: dict, make_stepper, progress: bool,
                   desc: str, stop_tokenizer=None) -> list[list[int]]:
    """Decode ``inputs`` (id lists) in batches of ``batch_size`` sorted by length (less padding) with the
    strategy of the settings ``s``; ``make_stepper(rows)`` builds the Stepper of one batch. A model with
    a ``generate_ids`` method (the pretrained Hugging Face wrappers of :mod:`ragtune.models.hf_text`)
    decodes through ``model.generate`` instead (``stop_tokenizer``: the transformers tokenizer its
    stop strings need). The model runs in eval mode (its mode is restored). Returns the generated ids
    per input, in input order (stop strings are cut from the text by the caller)."""
    hf = getattr(model, "generate_ids", None)  # a pretrained Hugging Face model decodes with model.generate
    if hf is None and float(s.get("repetition_penalty") or 1.0) != 1.0:
        raise RagtuneError(f"repetition_penalty: only for pretrained Hugging Face models (model.backbone: hf); "
                           f"this run's model is ragtune's own (got {s['repetition_penalty']})")
    was_training = model.training
    model.eval()
    order = sorted(range(len(inputs)), key=lambda i: len(inputs[i]))
    out: list[list[int] | None] = [None] * len(inputs)
    starts = range(0, len(order), batch_size)
    try:
        for b, start in enumerate(tqdm(starts, desc=desc, disable=not progress, leave=False, dynamic_ncols=True)):
            rows = order[start:start + batch_size]
            if hf is not None:
                for i, generated in zip(rows, hf([inputs[i] for i in rows], {**s, "seed": int(s["seed"]) + b},
                                                 stop_tokenizer)):
                    out[i] = generated
                continue
            step = make_stepper([inputs[i] for i in rows])
            limit = min(s["max_new_tokens"], step.max_new_tokens)
            if s["strategy"] == "greedy":
                result = greedy(step, limit)
            elif s["strategy"] == "beam":
                result = beam_search(step, int(s["beam_size"]), float(s["length_penalty"]), limit)
            else:  # each batch its own seed, so a batch's draws do not depend on the others
                result = sample(step, float(s["temperature"]), s["top_k"], s["top_p"], int(s["seed"]) + b, limit)
            for i, generated in zip(rows, result):
                out[i] = generated
    finally:
        model.train(was_training)
    return out  # type: ignore[return-value]


def cut_at_stop(text: str, stop: Sequence[str] | None) -> tuple[str, bool]:
    """``(text before the first of the stop strings, whether one was found)``."""
    cut = min((i for i in (text.find(x) for x in stop or ()) if i >= 0), default=-1)
    return (text, False) if cut < 0 else (text[:cut], True)


def mean_token_nll(model, lengths: Sequence[int], batch_size: int,
                   logits_and_labels: Callable[[list[int]], tuple[torch.Tensor, torch.Tensor]], pad_id: int) -> float:
    """Mean negative log-likelihood per label token (``pad_id`` labels left out) over all rows, in nats.

    The rows go in batches of ``batch_size``, shortest first (by ``lengths``);
    ``logits_and_labels(rows)`` gives their logits (B, T, V) and labels (B, T). The model scores in
    eval mode and is put back in the mode it was in.
    """
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    try:
        for start in range(0, len(order), batch_size):
            logits, labels = logits_and_labels(order[start:start + batch_size])
            total += float(F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(),  # (B*T, V)
                                           labels.reshape(-1), ignore_index=pad_id, reduction="sum"))
            count += int((labels != pad_id).sum())
    finally:
        model.train(was_training)
    return total / max(1, count)
