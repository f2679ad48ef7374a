"""An encoder-decoder Transformer for sequence-to-sequence tasks (translation), from scratch in one file.

The companion of :mod:`ragtune.models.transformer` (read that file first: its encoder is the
encoder here) and of :mod:`ragtune.models.decoder` (a decoder-only language model). The blocks all
three share (attention, feed-forward, dropout, the encoder and decoder layers, the key/value cache,
the masks, initialisation) live in :mod:`ragtune.models.layers`; this file writes the forward pass.
Decoding (greedy, beam search, sampling) lives in :mod:`ragtune.models.decoding`.

Architecture
------------
Inputs: ``src_ids`` (B, S) source token ids with ``src_mask`` (B, S), 1 for real tokens and 0 for
padding, and ``tgt_in_ids`` (B, T), the target shifted right: ``<s> y1 .. y(n-1)``, with the
labels ``y1 .. yn </s>`` (see :func:`teacher_forcing_batch`). Output: logits (B, T, V) over the
target vocabulary, one distribution per target position for the *next* token.

1. **Encoder.** The encoder of :class:`~ragtune.models.transformer.TransformerEncoder` in its pre-LN
   layout (token + learned position embeddings, ``encoder_layers`` pre-LN blocks of self-attention
   and feed-forward, final LayerNorm; source padding masked out as keys). Its output, the
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
   All attention is the encoder's (:class:`~ragtune.models.layers.Attention`): SDPA, or the explicit
   matmul form when training in bf16 on CPU, and no dropout on the attention probabilities.

4. **Final LayerNorm and output projection** ``Linear(d_model -> target vocab, no bias)``. With
   ``tie_output`` its weight *is* the target token table (Press & Wolf 2017), one tensor.

Incremental decoding: :meth:`TransformerForSeq2Seq.decode` takes an optional
:class:`~ragtune.models.layers.KVCache`. With one, the call feeds only the *new* target tokens; each
layer appends their keys and values to the cache and reads the earlier ones from it, and the
cross-attention keys/values of the memory are computed on the first call and then reused. Generating n tokens then costs O(n) per step
instead of O(n^2). ``KVCache.reorder`` selects/permutes the batch rows (beam search).

Initialisation: :func:`~ragtune.models.layers.init_weights`, for each half (N(0, 0.02), the ``.proj``
layers that write into the residual stream scaled by ``1/sqrt(2 * encoder_layers)`` or
``1/sqrt(2 * decoder_layers)``).

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
from ragtune.memory import building_model
from ragtune.models.layers import (DecoderBlock, EncoderBlock, KVCache, causal_mask, check_config, check_distinct_ids,
                                   check_ids, check_length, check_token_id, count_parameters, embeddings_and_blocks,
                                   key_padding_mask, output_head, real_tokens)

__all__ = ["KVCache", "Seq2SeqConfig", "TransformerForSeq2Seq", "build_seq2seq", "pad_batch", "seq2seq_loss",
           "teacher_forcing_batch"]


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
        sizes = ("src_vocab_size", "max_length", "d_model", "heads", "head_dim", "encoder_layers", "decoder_layers",
                 "ffn_dim") + (("tgt_vocab_size",) if self.tgt_vocab_size is not None else ())
        check_config(self, sizes, flags=("tie_output", "share_embeddings"))
        check_distinct_ids(self)
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


# ----------------------------------------------------------------------------------------------
# The encoder-decoder model
# ----------------------------------------------------------------------------------------------


class TransformerForSeq2Seq(nn.Module):
    """Encoder + decoder + output projection: ``forward(src_ids, src_mask, tgt_in_ids) -> logits (B, T, V)``.

    ``encoder`` and ``decoder`` hold each side's ``tok_emb``, ``pos_emb``, ``drop``, ``blocks`` and
    ``ln_f``; :meth:`encode` and :meth:`decode` run them.
    """

    def __init__(self, config: Seq2SeqConfig) -> None:
        super().__init__()
        self.config = config
        encoder_blocks = (EncoderBlock(config) for _ in range(config.encoder_layers))  # pre-LN
        self.encoder = embeddings_and_blocks(config, config.src_vocab_size, encoder_blocks, config.encoder_layers)
        decoder_blocks = (DecoderBlock(config, cross=True) for _ in range(config.decoder_layers))
        self.decoder = embeddings_and_blocks(config, config.target_vocab_size, decoder_blocks, config.decoder_layers)
        if config.share_embeddings:
            self.decoder.tok_emb = self.encoder.tok_emb  # one table, registered under both names
        self.lm_head = output_head(config.d_model, config.target_vocab_size, self.decoder.tok_emb, config.tie_output)

    def encode(self, src_ids: torch.Tensor, src_mask: torch.Tensor | None = None) -> torch.Tensor:
        """The memory (B, S, d_model). Without ``src_mask`` padding is read from ``src_ids == pad_id``."""
        enc = self.encoder
        check_ids(src_ids, self.config.src_vocab_size, "input_ids", tag=False)
        B, S = src_ids.shape
        check_length(S, self.config.max_length, "sequence", "truncate the inputs")
        real = real_tokens(src_ids, src_mask, self.config.pad_id, "input_ids", "attention_mask")  # (B, S)
        mask = key_padding_mask(real)  # (B, 1, 1, S), True = a real source token; None = no padding
        x = enc.drop(enc.tok_emb(src_ids) + enc.pos_emb(torch.arange(S, device=src_ids.device)))  # (B, S, d_model)
        for block in enc.blocks:
            x = block(x, mask)  # (B, S, d_model)
        return enc.ln_f(x)  # (B, S, d_model)

    def decode(self, memory: torch.Tensor, src_mask: torch.Tensor | None, tgt_ids: torch.Tensor,
               cache: KVCache | None = None) -> torch.Tensor:
        """Next-token logits (B, T, V) for the decoder inputs ``tgt_ids`` (B, T) given the memory.

        ``src_mask`` (B, S) marks the real source tokens (None: no source padding). With a
        ``cache`` (see :meth:`new_cache`) ``tgt_ids`` are only the tokens not fed before; they take
        positions ``cache.length ..`` and the cache is updated in place.
        """
        dec = self.decoder
        check_ids(tgt_ids, self.config.target_vocab_size, "tgt_ids", "tgt_vocab_size")
        B, T = tgt_ids.shape
        if memory.shape[0] != B:
            raise RagtuneError(f"memory has batch size {memory.shape[0]} but tgt_ids has {B}")
        past = 0 if cache is None else cache.length
        check_length(past + T, self.config.max_length, "target", "generate fewer tokens")
        if src_mask is not None and src_mask.shape != memory.shape[:2]:
            raise RagtuneError(
                f"src_mask shape {tuple(src_mask.shape)} does not match the memory's (batch, src_len) "
                f"{tuple(memory.shape[:2])}"
            )
        memory_mask = None if src_mask is None else key_padding_mask(src_mask.bool(), "src_mask", "source sequence")
        mask, is_causal = causal_mask(T, past, device=tgt_ids.device)  # targets are right-padded: causal is enough
        pos = torch.arange(past, past + T, device=tgt_ids.device)  # (T,)
        x = dec.drop(dec.tok_emb(tgt_ids) + dec.pos_emb(pos))  # (B, T, d_model)
        for i, block in enumerate(dec.blocks):
            x = block(x, mask, is_causal, memory, memory_mask, None if cache is None else cache.layers[i])
        if cache is not None:
            cache.length += T
        return self.lm_head(dec.ln_f(x))  # (B, T, d_model) -> (B, T, V)

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
        return count_parameters(self, non_embedding, self.encoder.tok_emb, self.encoder.pos_emb,
                                self.decoder.tok_emb, self.decoder.pos_emb)


def build_seq2seq(config: Seq2SeqConfig) -> TransformerForSeq2Seq:
    """An encoder-decoder Transformer with freshly initialised weights."""
    with building_model(f"model.d_model {config.d_model}, model.layers {config.encoder_layers}, model.ffn_dim "
                        f"{config.ffn_dim}, tokenizer.vocab_size {config.src_vocab_size}"):
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
