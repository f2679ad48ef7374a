"""A decoder-only causal language model (GPT-style), from scratch, built from the blocks of seq2seq.py.

The model is :class:`~ragtune.models.seq2seq.TransformerDecoder` without cross-attention (token +
learned position embeddings, ``layers`` pre-LN blocks of causal self-attention and feed-forward,
final LayerNorm) and an output projection to the vocabulary, optionally tied to the token table.
Read :mod:`ragtune.models.transformer` and :mod:`ragtune.models.seq2seq` for the pieces; this file
only adds what is specific to a language model: positions and masks for padded batches.

``forward(ids (B, T), mask (B, T)) -> logits (B, T, V)``: position t holds the distribution of the
token at t + 1. Padding may be on the right (training batches) or on the left (prompts of
different lengths, for generation): each row's positions count its real tokens only, so the first
real token is at position 0 either way, and padding is masked out as keys. Training: the labels
are the inputs shifted left by one, e.g. ``seq2seq_loss(logits[:, :-1], ids[:, 1:], pad_id)``
(set a label to ``pad_id`` to leave it out of the loss, e.g. the prompt part).

With a :class:`~ragtune.models.seq2seq.KVCache` (:meth:`TransformerForCausalLM.new_cache`) the ids
of each call are only the new tokens; see :mod:`ragtune.models.decoding` for generation.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ragtune.errors import RagtuneError
from ragtune.models.seq2seq import (
    KVCache,
    TransformerDecoder,
    causal_mask,
    check_common,
    check_ids,
    check_positive_ints,
    check_token_id,
)

__all__ = ["DecoderConfig", "TransformerForCausalLM", "build_decoder"]


@dataclass
class DecoderConfig:
    """Shape and behaviour of a decoder-only language model. Validated on creation."""

    vocab_size: int  # token ids are in [0, vocab_size)
    max_length: int  # longest sequence (prompt + generated tokens)
    d_model: int  # width of the residual stream
    heads: int  # attention heads per layer
    head_dim: int  # width of one head; heads * head_dim need not equal d_model
    layers: int  # number of decoder blocks
    ffn_dim: int  # hidden width of the feed-forward network
    dropout: float = 0.1  # dropout probability, in [0, 1)
    pad_id: int = 0  # padding id (read from the ids when no mask is given; ignored by the loss)
    bos_id: int = 2  # start-of-text id (prepend it yourself: the model does not add it)
    eos_id: int = 3  # end-of-text id; generation stops there
    tie_output: bool = True  # output projection weight = token table
    activation: str = "gelu"  # "gelu" | "relu"

    def __post_init__(self) -> None:
        check_positive_ints(self, ("vocab_size", "max_length", "d_model", "heads", "head_dim", "layers", "ffn_dim"))
        check_common(self)
        for name in ("pad_id", "bos_id", "eos_id"):
            check_token_id(name, getattr(self, name), self.vocab_size)


class TransformerForCausalLM(nn.Module):
    """Decoder stack + output projection: ``forward(ids, mask) -> logits (B, T, V)``."""

    def __init__(self, config: DecoderConfig) -> None:
        super().__init__()
        self.config = config
        self.decoder = TransformerDecoder(config, config.vocab_size, config.layers, cross=False)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        if config.tie_output:
            self.lm_head.weight = self.decoder.tok_emb.weight  # the same tensor
        else:
            nn.init.normal_(self.lm_head.weight, mean=0.0, std=0.02)

    def forward(
        self, ids: torch.Tensor, mask: torch.Tensor | None = None, cache: KVCache | None = None
    ) -> torch.Tensor:
        """Next-token logits (B, T, V). ``mask`` (B, T): 1 = real token (None: read from ``ids != pad_id``).

        With a ``cache`` the ids are the tokens after the ``cache.length`` already fed; the cache
        is updated in place.
        """
        check_ids(ids, self.config.vocab_size, "ids", "vocab_size")
        B, T = ids.shape
        if mask is not None and mask.shape != ids.shape:
            raise RagtuneError(f"mask shape {tuple(mask.shape)} does not match ids shape {tuple(ids.shape)}")
        past = 0 if cache is None else cache.length
        if past + T > self.config.max_length:
            raise RagtuneError(
                f"sequence length {past + T} exceeds the model's max_length={self.config.max_length}; "
                "use a shorter prompt, generate fewer tokens or build the model with a larger max_length"
            )
        real = (ids != self.config.pad_id) if mask is None else mask.bool()  # (B, T)
        if past and cache.key_real is not None:
            key_real = torch.cat([cache.key_real, real], dim=1)  # (B, P+T)
            start = cache.next_pos  # (B,)
        else:
            key_real = real  # (B, T)
            start = torch.zeros(B, dtype=torch.long, device=ids.device)  # (B,)
        # Each row counts its own real tokens: left pads share position 0 with the first real token.
        pos = (start[:, None] + real.long().cumsum(dim=1) - 1).clamp(min=0)  # (B, T)
        attn_mask, is_causal = causal_mask(T, past, key_real, device=ids.device)
        hidden = self.decoder(ids, pos, attn_mask, is_causal, cache=cache)  # (B, T, d_model)
        if cache is not None:
            cache.length += T
            cache.key_real = key_real  # (B, P+T)
            cache.next_pos = start + real.long().sum(dim=1)  # (B,)
        return self.lm_head(hidden)  # (B, T, V)

    def new_cache(self) -> KVCache:
        """An empty key/value cache for :meth:`forward`."""
        return KVCache(self.config.layers)

    def num_parameters(self, non_embedding: bool = True) -> int:
        """Number of parameters (tied tensors once); with ``non_embedding`` the token/position tables are left out."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= self.decoder.tok_emb.weight.numel() + self.decoder.pos_emb.weight.numel()
        return n


def build_decoder(config: DecoderConfig) -> TransformerForCausalLM:
    """A decoder-only language model with freshly initialised weights."""
    return TransformerForCausalLM(config)
