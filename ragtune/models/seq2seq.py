"""An encoder-decoder Transformer for sequence-to-sequence tasks (translation), from scratch in one file.

The companion of :mod:`ragtune.models.transformer` (read that file first: this one reuses its
encoder, feed-forward network, dropout and initialisation by import) and the home of the
decoder building blocks that :mod:`ragtune.models.decoder` (a decoder-only language model)
imports. Decoding (greedy, beam search, sampling) lives in :mod:`ragtune.models.decoding`.

Architecture
------------
Inputs: ``src_ids`` (B, S) source token ids with ``src_mask`` (B, S), 1 for real tokens and 0 for
padding, and ``tgt_in_ids`` (B, T), the target shifted right: ``<s> y1 .. y(n-1)``, with the
labels ``y1 .. yn </s>`` (see :func:`teacher_forcing_batch`). Output: logits (B, T, V) over the
target vocabulary, one distribution per target position for the *next* token.

1. **Encoder.** Exactly :class:`~ragtune.models.transformer.TransformerEncoder` in its pre-LN
   layout (``encoder_layers`` blocks, learned positions, final LayerNorm). Its output, the
   *memory* (B, S, d_model), is computed once per source and read by every decoder layer.

2. **Decoder embeddings.** Target token table plus a learned position table (``max_length`` x
   ``d_model``; learned like the encoder's, so both sides look alike. The decoder input starts
   with ``<s>``, so at most ``max_length - 1`` tokens can be generated). With
   ``share_embeddings`` (needs one vocabulary for both sides) the source and target token tables
   are the same ``nn.Embedding``. Dropout follows.

3. **``decoder_layers`` decoder blocks**, pre-LN (GPT-2 style), three sub-layers each::

       x = x + Dropout(CausalSelfAttention(LayerNorm(x)))
       x = x + Dropout(CrossAttention(LayerNorm(x), memory))
       x = x + Dropout(FeedForward(LayerNorm(x)))

   *Causal self-attention*: fused QKV projection like the encoder's, and a causal mask: position
   ``t`` attends to target positions ``<= t`` only, so training on a whole target sequence at once
   (teacher forcing) is the same computation as generating it token by token.
   *Cross-attention*: queries from the decoder, keys and values from the memory; source padding
   is masked out as keys (the same ``(B, 1, 1, S)`` mask the encoder uses).
   All attention goes through ``torch.nn.functional.scaled_dot_product_attention`` (SDPA); like the
   encoder, no dropout on the attention probabilities.

4. **Final LayerNorm and output projection** ``Linear(d_model -> target vocab, no bias)``. With
   ``tie_output`` its weight *is* the target token table (Press & Wolf 2017), one tensor.

Incremental decoding: :meth:`TransformerForSeq2Seq.decode` takes an optional :class:`KVCache`.
With one, the call feeds only the *new* target tokens; each layer appends their keys and values
to the cache and reads the earlier ones from it, and the cross-attention keys/values of the memory
are computed on the first call and then reused. Generating n tokens then costs O(n) per step
instead of O(n^2). :meth:`KVCache.reorder` selects/permutes the batch rows (beam search).

Initialisation: the encoder initialises itself; the decoder uses the same
:func:`~ragtune.models.transformer.init_weights` (N(0, 0.02), the ``.proj`` layers that write into
the residual stream scaled by ``1/sqrt(2 * decoder_layers)``).

Loss: :func:`seq2seq_loss`, padding-aware cross-entropy (mean over real target tokens) with optional
label smoothing. This module knows nothing about files, the CLI or YAML configs: build a
:class:`Seq2SeqConfig` and call :func:`build_seq2seq`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ragtune.errors import RagtuneError
from ragtune.models.transformer import (
    ACTIVATIONS,
    Dropout,
    FeedForward,
    TransformerConfig,
    TransformerEncoder,
    init_weights,
)

__all__ = [
    "CausalSelfAttention",
    "CrossAttention",
    "DecoderBlock",
    "KVCache",
    "LayerCache",
    "Seq2SeqConfig",
    "TransformerDecoder",
    "TransformerForSeq2Seq",
    "build_seq2seq",
    "causal_mask",
    "pad_batch",
    "seq2seq_loss",
    "teacher_forcing_batch",
]


def check_positive_ints(config: object, names: Sequence[str]) -> None:
    """Raise a RagtuneError naming the first field of ``config`` in ``names`` that is not a positive int."""
    for name in names:
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise RagtuneError(f"model config: {name} must be a positive integer, got {value!r}")


def check_token_id(name: str, value: object, vocab_size: int, vocab_name: str = "vocab_size") -> None:
    """Raise a RagtuneError unless ``value`` is an int in [0, vocab_size)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < vocab_size:
        raise RagtuneError(
            f"model config: {name} must be an integer in [0, {vocab_name}={vocab_size}), got {value!r}"
        )


def check_common(config: object) -> None:
    """Validation shared by :class:`Seq2SeqConfig` and the decoder-only ``DecoderConfig``."""
    dropout = config.dropout
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
        raise RagtuneError(f"model config: dropout must be a number in [0, 1), got {dropout!r}")
    if config.activation not in ACTIVATIONS:
        raise RagtuneError(f"model config: activation must be one of {list(ACTIVATIONS)}, got {config.activation!r}")
    for name in ("tie_output",) + (("share_embeddings",) if hasattr(config, "share_embeddings") else ()):
        if not isinstance(getattr(config, name), bool):
            raise RagtuneError(f"model config: {name} must be true or false, got {getattr(config, name)!r}")
    ids = {"pad_id": config.pad_id, "bos_id": config.bos_id, "eos_id": config.eos_id}
    if len(set(ids.values())) != 3:
        raise RagtuneError(f"model config: pad_id, bos_id and eos_id must be three different ids, got {ids}")


@dataclass
class Seq2SeqConfig:
    """Shape and behaviour of an encoder-decoder Transformer. Validated on creation."""

    src_vocab_size: int  # source token ids are in [0, src_vocab_size); also the target vocab when shared
    max_length: int  # longest source, and longest decoder input (<s> + generated tokens)
    d_model: int  # width of the residual stream (embedding size), both sides
    heads: int  # attention heads per layer (self- and cross-attention)
    head_dim: int  # width of one head; heads * head_dim need not equal d_model
    encoder_layers: int  # number of encoder blocks
    decoder_layers: int  # number of decoder blocks
    ffn_dim: int  # hidden width of the feed-forward networks
    tgt_vocab_size: int | None = None  # None: one vocabulary shared by source and target
    dropout: float = 0.1  # dropout probability, in [0, 1)
    pad_id: int = 0  # padding id on both sides (ignored by the loss)
    bos_id: int = 2  # first token of every decoder input (<s>; ragtune's seq2seq tokenizer: 2)
    eos_id: int = 3  # ends every target (</s>; ragtune's seq2seq tokenizer: 3)
    share_embeddings: bool = True  # one token table for source and target (needs one vocabulary)
    tie_output: bool = True  # output projection weight = target token table
    activation: str = "gelu"  # "gelu" | "relu", in the feed-forward networks

    def __post_init__(self) -> None:
        check_positive_ints(
            self, ("src_vocab_size", "max_length", "d_model", "heads", "head_dim", "encoder_layers",
                   "decoder_layers", "ffn_dim")
        )
        if self.tgt_vocab_size is not None:
            check_positive_ints(self, ("tgt_vocab_size",))
        check_common(self)
        check_token_id("pad_id", self.pad_id, min(self.src_vocab_size, self.target_vocab_size),
                       "min(src_vocab_size, tgt_vocab_size)")
        for name in ("bos_id", "eos_id"):
            check_token_id(name, getattr(self, name), self.target_vocab_size, "tgt_vocab_size")
        if self.share_embeddings and self.target_vocab_size != self.src_vocab_size:
            raise RagtuneError(
                f"model config: share_embeddings needs one vocabulary for both sides, got "
                f"src_vocab_size={self.src_vocab_size} and tgt_vocab_size={self.tgt_vocab_size}; "
                "set share_embeddings: false or use a joint tokenizer"
            )
        if self.max_length < 2:
            raise RagtuneError(f"model config: max_length must be at least 2 (<s> and one token), got {self.max_length!r}")

    @property
    def target_vocab_size(self) -> int:
        """Size of the target vocabulary (the source one when shared)."""
        return self.src_vocab_size if self.tgt_vocab_size is None else self.tgt_vocab_size

    def encoder_config(self) -> TransformerConfig:
        """The :class:`TransformerConfig` of the encoder half (pre-LN)."""
        return TransformerConfig(
            vocab_size=self.src_vocab_size, max_length=self.max_length, d_model=self.d_model, heads=self.heads,
            head_dim=self.head_dim, layers=self.encoder_layers, ffn_dim=self.ffn_dim, dropout=self.dropout,
            pad_id=self.pad_id, activation=self.activation, norm_first=True,
        )


# ----------------------------------------------------------------------------------------------
# Key/value cache for incremental decoding
# ----------------------------------------------------------------------------------------------


class LayerCache:
    """Cached keys/values of one decoder layer: self-attention (grows by T each call) and cross-attention (fixed)."""

    def __init__(self) -> None:
        self.self_k: torch.Tensor | None = None  # (B, H, P, hd)
        self.self_v: torch.Tensor | None = None  # (B, H, P, hd)
        self.cross_k: torch.Tensor | None = None  # (B, H, S, hd)
        self.cross_v: torch.Tensor | None = None  # (B, H, S, hd)

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Add the new self-attention keys/values (B, H, T, hd); return all of them (B, H, P+T, hd)."""
        if self.self_k is not None:
            k = torch.cat([self.self_k, k], dim=2)  # (B, H, P+T, hd)
            v = torch.cat([self.self_v, v], dim=2)  # (B, H, P+T, hd)
        self.self_k, self.self_v = k, v
        return k, v

    def reorder(self, index: torch.Tensor) -> None:
        for name in ("self_k", "self_v", "cross_k", "cross_v"):
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, value.index_select(0, index))


class KVCache:
    """Per-layer key/value cache of a decoder, for feeding the target a few tokens at a time.

    ``length`` is the number of positions already fed. The decoder-only model also keeps
    ``key_real`` (B, length), which cached keys are real tokens (prompts are left-padded), and
    ``next_pos`` (B,), the position of each row's next token.
    """

    def __init__(self, layers: int) -> None:
        self.layers = [LayerCache() for _ in range(layers)]
        self.length = 0
        self.key_real: torch.Tensor | None = None  # (B, length) bool, decoder-only models
        self.next_pos: torch.Tensor | None = None  # (B,) long, decoder-only models

    def reorder(self, index: torch.Tensor) -> None:
        """Keep batch rows ``index`` (N,), in that order (rows may repeat): beam search's bookkeeping."""
        for layer in self.layers:
            layer.reorder(index)
        if self.key_real is not None:
            self.key_real = self.key_real.index_select(0, index)
        if self.next_pos is not None:
            self.next_pos = self.next_pos.index_select(0, index)


# ----------------------------------------------------------------------------------------------
# Decoder building blocks (also used by ragtune.models.decoder)
# ----------------------------------------------------------------------------------------------


def causal_mask(
    T: int, past: int, key_real: torch.Tensor | None = None, device: torch.device | None = None
) -> tuple[torch.Tensor | None, bool]:
    """SDPA's ``(attn_mask, is_causal)`` for T new queries that follow ``past`` cached positions.

    Query ``i`` (absolute position ``past + i``) may attend to keys ``0 .. past + i``. ``key_real``
    (B, past + T) bool marks real keys; None means every key is real. Without padding and without a
    cache no mask tensor is built at all (``is_causal=True``), which keeps SDPA on its fastest kernel.
    With padding, a query whose visible keys are all padding (a left pad) may attend to itself, so no
    row of the mask is empty (SDPA would return NaN there, and NaN * 0 poisons later layers).
    """
    if key_real is not None and bool(key_real.all()):
        key_real = None
    if key_real is None:
        if past == 0:
            return None, T > 1
        if T == 1:
            return None, False  # one new query sees every cached key
    allowed = torch.ones(T, past + T, dtype=torch.bool, device=device).tril(diagonal=past)  # (T, P+T)
    if key_real is None:
        return allowed, False
    mask = allowed[None, None] & key_real[:, None, None, :]  # (B, 1, T, P+T)
    diagonal = torch.zeros(T, past + T, dtype=torch.bool, device=device)  # (T, P+T)
    diagonal[torch.arange(T), past + torch.arange(T)] = True
    return mask | diagonal, False  # (B, 1, T, P+T)


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention under a causal mask, with an optional key/value cache.

    ``config`` is any config with ``d_model``, ``heads`` and ``head_dim``.
    """

    def __init__(self, config) -> None:
        super().__init__()
        self.heads = config.heads
        self.head_dim = config.head_dim
        inner = config.heads * config.head_dim
        self.qkv = nn.Linear(config.d_model, 3 * inner)  # Q, K and V of every head in one matmul
        self.proj = nn.Linear(inner, config.d_model)  # concatenated heads back to d_model

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None, is_causal: bool, cache: LayerCache | None = None
    ) -> torch.Tensor:
        B, T, _ = x.shape  # (B, T, d_model)
        qkv = self.qkv(x).view(B, T, 3, self.heads, self.head_dim)  # (B, T, 3, H, hd)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # 3 x (B, H, T, hd)
        if cache is not None:
            k, v = cache.append(k, v)  # 2 x (B, H, P+T, hd): the cached positions, then these
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal)  # (B, H, T, hd)
        y = y.transpose(1, 2).reshape(B, T, self.heads * self.head_dim)  # (B, T, H*hd)
        return self.proj(y)  # (B, T, d_model)


class CrossAttention(nn.Module):
    """Multi-head attention from the decoder (queries) to the encoder memory (keys and values)."""

    def __init__(self, config) -> None:
        super().__init__()
        self.heads = config.heads
        self.head_dim = config.head_dim
        inner = config.heads * config.head_dim
        self.q = nn.Linear(config.d_model, inner)
        self.kv = nn.Linear(config.d_model, 2 * inner)  # K and V of the memory in one matmul
        self.proj = nn.Linear(inner, config.d_model)

    def forward(
        self, x: torch.Tensor, memory: torch.Tensor, mask: torch.Tensor | None, cache: LayerCache | None = None
    ) -> torch.Tensor:
        B, T, _ = x.shape  # (B, T, d_model)
        q = self.q(x).view(B, T, self.heads, self.head_dim).transpose(1, 2)  # (B, H, T, hd)
        if cache is not None and cache.cross_k is not None:
            k, v = cache.cross_k, cache.cross_v  # 2 x (B, H, S, hd), computed on the first call
        else:
            S = memory.shape[1]  # (B, S, d_model)
            kv = self.kv(memory).view(B, S, 2, self.heads, self.head_dim)  # (B, S, 2, H, hd)
            k, v = kv.permute(2, 0, 3, 1, 4).unbind(0)  # 2 x (B, H, S, hd)
            if cache is not None:
                cache.cross_k, cache.cross_v = k, v
        # mask: (B, 1, 1, S) bool, True = a real source token; None = no source padding.
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, H, T, hd)
        y = y.transpose(1, 2).reshape(B, T, self.heads * self.head_dim)  # (B, T, H*hd)
        return self.proj(y)  # (B, T, d_model)


class DecoderBlock(nn.Module):
    """One pre-LN decoder layer: causal self-attention, cross-attention (if ``cross``), feed-forward."""

    def __init__(self, config, cross: bool) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(config.d_model)
        self.attn = CausalSelfAttention(config)
        self.ln2 = nn.LayerNorm(config.d_model) if cross else None
        self.cross = CrossAttention(config) if cross else None
        self.ln3 = nn.LayerNorm(config.d_model)
        self.ffn = FeedForward(config)
        self.drop = Dropout(config.dropout)

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None,
        is_causal: bool,
        memory: torch.Tensor | None = None,
        memory_mask: torch.Tensor | None = None,
        cache: LayerCache | None = None,
    ) -> torch.Tensor:
        x = x + self.drop(self.attn(self.ln1(x), mask, is_causal, cache))
        if self.cross is not None:
            x = x + self.drop(self.cross(self.ln2(x), memory, memory_mask, cache))
        return x + self.drop(self.ffn(self.ln3(x)))  # (B, T, d_model)


class TransformerDecoder(nn.Module):
    """Token + position embeddings, ``layers`` decoder blocks, final LayerNorm -> hidden states (B, T, d_model).

    The caller supplies the positions and the self-attention mask (see :func:`causal_mask`), so the
    same stack serves the encoder-decoder model (``cross=True``) and the decoder-only one.
    """

    def __init__(self, config, vocab_size: int, layers: int, cross: bool) -> None:
        super().__init__()
        self.tok_emb = nn.Embedding(vocab_size, config.d_model)
        self.pos_emb = nn.Embedding(config.max_length, config.d_model)
        self.drop = Dropout(config.dropout)
        self.blocks = nn.ModuleList(DecoderBlock(config, cross) for _ in range(layers))
        self.ln_f = nn.LayerNorm(config.d_model)
        init_weights(self, layers)

    def forward(
        self,
        ids: torch.Tensor,
        pos: torch.Tensor,
        mask: torch.Tensor | None,
        is_causal: bool,
        memory: torch.Tensor | None = None,
        memory_mask: torch.Tensor | None = None,
        cache: KVCache | None = None,
    ) -> torch.Tensor:
        x = self.drop(self.tok_emb(ids) + self.pos_emb(pos))  # (B, T, d_model); pos (T,) or (B, T)
        for i, block in enumerate(self.blocks):
            x = block(x, mask, is_causal, memory, memory_mask, None if cache is None else cache.layers[i])
        return self.ln_f(x)  # (B, T, d_model)


def check_ids(ids: torch.Tensor, vocab_size: int, name: str, vocab_name: str) -> None:
    """Raise a RagtuneError unless ``ids`` is (B, T) with every id in [0, vocab_size)."""
    if ids.dim() != 2:
        raise RagtuneError(f"{name} must have shape (batch, seq_len), got shape {tuple(ids.shape)}")
    if ids.numel() and not 0 <= int(ids.min()) <= int(ids.max()) < vocab_size:
        raise RagtuneError(
            f"{name}: token ids must be in [0, {vocab_name}={vocab_size}), got ids from "
            f"{int(ids.min())} to {int(ids.max())}; does the tokenizer match the model?"
        )


def memory_key_mask(src_mask: torch.Tensor | None, memory: torch.Tensor) -> torch.Tensor | None:
    """The cross-attention SDPA mask (B, 1, 1, S) from a 0/1 source mask (B, S); None if nothing is padded."""
    if src_mask is None:
        return None
    if src_mask.shape != memory.shape[:2]:
        raise RagtuneError(
            f"src_mask shape {tuple(src_mask.shape)} does not match the memory's (batch, src_len) "
            f"{tuple(memory.shape[:2])}"
        )
    real = src_mask.bool()  # (B, S)
    if bool(real.all()):
        return None
    if not bool(real.any(dim=1).all()):
        raise RagtuneError("a source sequence in the batch has no real tokens (src_mask is all 0)")
    return real[:, None, None, :]  # (B, 1, 1, S)


# ----------------------------------------------------------------------------------------------
# The encoder-decoder model
# ----------------------------------------------------------------------------------------------


class TransformerForSeq2Seq(nn.Module):
    """Encoder + decoder + output projection: ``forward(src_ids, src_mask, tgt_in_ids) -> logits (B, T, V)``."""

    def __init__(self, config: Seq2SeqConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = TransformerEncoder(config.encoder_config())
        self.decoder = TransformerDecoder(config, config.target_vocab_size, config.decoder_layers, cross=True)
        if config.share_embeddings:
            self.decoder.tok_emb = self.encoder.tok_emb  # one table, registered under both names
        self.lm_head = nn.Linear(config.d_model, config.target_vocab_size, bias=False)
        if config.tie_output:
            self.lm_head.weight = self.decoder.tok_emb.weight  # the same tensor
        else:
            nn.init.normal_(self.lm_head.weight, mean=0.0, std=0.02)

    def encode(self, src_ids: torch.Tensor, src_mask: torch.Tensor | None = None) -> torch.Tensor:
        """The memory (B, S, d_model). Without ``src_mask`` padding is read from ``src_ids == pad_id``."""
        return self.encoder(src_ids, src_mask)  # (B, S, d_model)

    def decode(
        self,
        memory: torch.Tensor,
        src_mask: torch.Tensor | None,
        tgt_ids: torch.Tensor,
        cache: KVCache | None = None,
    ) -> torch.Tensor:
        """Next-token logits (B, T, V) for the decoder inputs ``tgt_ids`` (B, T) given the memory.

        ``src_mask`` (B, S) marks the real source tokens (None: no source padding). With a
        ``cache`` (see :meth:`new_cache`) ``tgt_ids`` are only the tokens not fed before; they take
        positions ``cache.length ..`` and the cache is updated in place.
        """
        check_ids(tgt_ids, self.config.target_vocab_size, "tgt_ids", "tgt_vocab_size")
        B, T = tgt_ids.shape
        if memory.shape[0] != B:
            raise RagtuneError(f"memory has batch size {memory.shape[0]} but tgt_ids has {B}")
        past = 0 if cache is None else cache.length
        if past + T > self.config.max_length:
            raise RagtuneError(
                f"target length {past + T} exceeds the model's max_length={self.config.max_length}; "
                "generate fewer tokens or build the model with a larger max_length"
            )
        mask, is_causal = causal_mask(T, past, device=tgt_ids.device)  # targets are right-padded: causal is enough
        pos = torch.arange(past, past + T, device=tgt_ids.device)  # (T,)
        hidden = self.decoder(tgt_ids, pos, mask, is_causal, memory, memory_key_mask(src_mask, memory), cache)
        if cache is not None:
            cache.length += T
        return self.lm_head(hidden)  # (B, T, V)

    def forward(
        self, src_ids: torch.Tensor, src_mask: torch.Tensor | None, tgt_in_ids: torch.Tensor
    ) -> torch.Tensor:
        if src_mask is None:
            src_mask = (src_ids != self.config.pad_id).long()  # (B, S)
        memory = self.encode(src_ids, src_mask)  # (B, S, d_model)
        return self.decode(memory, src_mask, tgt_in_ids)  # (B, T, V)

    def new_cache(self) -> KVCache:
        """An empty key/value cache for :meth:`decode`."""
        return KVCache(self.config.decoder_layers)

    def num_parameters(self, non_embedding: bool = True) -> int:
        """Number of parameters (shared tensors once); with ``non_embedding`` the token/position tables are left out."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            tables = {self.encoder.tok_emb.weight, self.encoder.pos_emb.weight,
                      self.decoder.tok_emb.weight, self.decoder.pos_emb.weight}
            n -= sum(t.numel() for t in tables)
        return n


def build_seq2seq(config: Seq2SeqConfig) -> TransformerForSeq2Seq:
    """An encoder-decoder Transformer with freshly initialised weights."""
    return TransformerForSeq2Seq(config)


# ----------------------------------------------------------------------------------------------
# Batches and loss
# ----------------------------------------------------------------------------------------------


def seq2seq_loss(
    logits: torch.Tensor, targets: torch.Tensor, pad_id: int, label_smoothing: float = 0.0
) -> torch.Tensor:
    """Cross-entropy of logits (B, T, V) against targets (B, T), mean over the non-pad targets.

    With ``label_smoothing`` eps the target distribution is (1 - eps) on the label plus eps spread
    uniformly over the vocabulary (Szegedy et al. 2016); padding positions count for nothing.
    """
    if logits.shape[:2] != targets.shape:
        raise RagtuneError(f"logits shape {tuple(logits.shape)} does not match targets shape {tuple(targets.shape)}")
    if not 0.0 <= label_smoothing < 1.0:
        raise RagtuneError(f"label_smoothing must be a number in [0, 1), got {label_smoothing!r}")
    return F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]).float(),  # (B*T, V)
        targets.reshape(-1),  # (B*T,)
        ignore_index=pad_id,
        label_smoothing=label_smoothing,
    )


def pad_batch(
    sequences: Sequence[Sequence[int]], pad_id: int, left: bool = False, device: torch.device | str | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token id lists -> (ids (B, T), mask (B, T)), padded with ``pad_id`` on the right (or the left)."""
    if not sequences:
        raise RagtuneError("pad_batch: no sequences given")
    T = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), T), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), T), dtype=torch.long)
    for i, s in enumerate(sequences):
        if len(s):
            cols = slice(T - len(s), T) if left else slice(0, len(s))
            ids[i, cols] = torch.as_tensor(list(s), dtype=torch.long)
            mask[i, cols] = 1
    return ids.to(device), mask.to(device)


def teacher_forcing_batch(
    targets: Sequence[Sequence[int]], config: Seq2SeqConfig, device: torch.device | str | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Target id lists (no <s>/</s>) -> decoder inputs ``<s> y1 .. yn`` and labels ``y1 .. yn </s>``, both (B, T)."""
    tgt_in, _ = pad_batch([[config.bos_id, *t] for t in targets], config.pad_id, device=device)
    labels, _ = pad_batch([[*t, config.eos_id] for t in targets], config.pad_id, device=device)
    return tgt_in, labels
