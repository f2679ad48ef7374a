"""A decoder-only causal language model (GPT-style), from scratch, in one file.

The model: token + learned position embeddings, ``layers`` pre-LN decoder blocks of causal
self-attention and feed-forward (:class:`~ragtune.models.layers.DecoderBlock` without
cross-attention, the decoder layer of :mod:`ragtune.models.seq2seq`), a final LayerNorm and an
output projection to the vocabulary, optionally tied to the token table. The shared pieces
(attention, feed-forward, masks, key/value cache, initialisation) live in
:mod:`ragtune.models.layers`; this file writes the forward pass and what is specific to a
language model: positions and masks for padded batches.

``forward(ids (B, T), mask (B, T)) -> logits (B, T, V)``: position t holds the distribution of the
token at t + 1. Padding may be on the right (training batches) or on the left (prompts of
different lengths, for generation): each row's positions count its real tokens only, so the first
real token is at position 0 either way, and padding is masked out as keys. Training: the labels
are the inputs shifted left by one, e.g. ``seq2seq_loss(logits[:, :-1], ids[:, 1:], pad_id)``
(set a label to ``pad_id`` to leave it out of the loss, e.g. the prompt part).

With a :class:`~ragtune.models.layers.KVCache` (:meth:`TransformerForCausalLM.new_cache`) the ids
of each call are only the new tokens; see :mod:`ragtune.models.decoding` for generation.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ragtune.memory import building_model
from ragtune.models.layers import (DecoderBlock, KVCache, causal_mask, check_config, check_distinct_ids, check_ids,
                                   check_length, check_token_id, count_parameters, embeddings_and_blocks, output_head,
                                   real_tokens)

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
        check_config(self, ("vocab_size", "max_length", "d_model", "heads", "head_dim", "layers", "ffn_dim"),
                     flags=("tie_output",))
        check_distinct_ids(self)
        for name in ("pad_id", "bos_id", "eos_id"):
            check_token_id(name, getattr(self, name), self.vocab_size)


class TransformerForCausalLM(nn.Module):
    """Decoder stack + output projection: ``forward(ids, mask) -> logits (B, T, V)``.

    ``decoder`` holds ``tok_emb``, ``pos_emb``, ``drop``, ``blocks`` and ``ln_f``; :meth:`forward` runs them.
    """

    def __init__(self, config: DecoderConfig) -> None:
        super().__init__()
        self.config = config
        blocks = (DecoderBlock(config, cross=False) for _ in range(config.layers))
        self.decoder = embeddings_and_blocks(config, config.vocab_size, blocks, config.layers)
        self.lm_head = output_head(config.d_model, config.vocab_size, self.decoder.tok_emb, config.tie_output)

    def forward(
        self, ids: torch.Tensor, mask: torch.Tensor | None = None, cache: KVCache | None = None
    ) -> torch.Tensor:
        """Next-token logits (B, T, V). ``mask`` (B, T): 1 = real token (None: read from ``ids != pad_id``).

        With a ``cache`` the ids are the tokens after the ``cache.length`` already fed; the cache
        is updated in place.
        """
        dec = self.decoder
        check_ids(ids, self.config.vocab_size, "ids", "vocab_size")
        B, T = ids.shape
        real = real_tokens(ids, mask, self.config.pad_id)  # (B, T)
        past = 0 if cache is None else cache.length
        check_length(past + T, self.config.max_length, "sequence", "use a shorter prompt, generate fewer tokens")
        if past and cache.key_real is not None:
            key_real = torch.cat([cache.key_real, real], dim=1)  # (B, P+T)
            start = cache.next_pos  # (B,)
        else:
            key_real = real  # (B, T)
            start = torch.zeros(B, dtype=torch.long, device=ids.device)  # (B,)
        # Each row counts its own real tokens: left pads share position 0 with the first real token.
        pos = (start[:, None] + real.long().cumsum(dim=1) - 1).clamp(min=0)  # (B, T)
        attn_mask, is_causal = causal_mask(T, past, key_real, device=ids.device)  # (B, 1, T, P+T) or None
        x = dec.drop(dec.tok_emb(ids) + dec.pos_emb(pos))  # (B, T, d_model)
        for i, block in enumerate(dec.blocks):
            x = block(x, attn_mask, is_causal, cache=None if cache is None else cache.layers[i])  # (B, T, d_model)
        if cache is not None:
            cache.length += T
            cache.key_real = key_real  # (B, P+T)
            cache.next_pos = start + real.long().sum(dim=1)  # (B,)
        return self.lm_head(dec.ln_f(x))  # (B, T, d_model) -> (B, T, V)

    def new_cache(self) -> KVCache:
        """An empty key/value cache for :meth:`forward`."""
        return KVCache(self.config.layers)

    def num_parameters(self, non_embedding: bool = True) -> int:
        """Number of parameters (tied tensors once); with ``non_embedding`` the token/position tables are left out."""
        return count_parameters(self, non_embedding, self.decoder.tok_emb, self.decoder.pos_emb)


def build_decoder(config: DecoderConfig) -> TransformerForCausalLM:
    """A decoder-only language model with freshly initialised weights."""
    with building_model(f"model.d_model {config.d_model}, model.layers {config.layers}, model.ffn_dim {config.ffn_dim}, "
                        f"tokenizer.vocab_size {config.vocab_size}"):
        return TransformerForCausalLM(config)
