"""A Transformer encoder for text, written from scratch in one file.

This is the model behind every ragtune text classifier and regressor. It is a plain
BERT-style encoder with a pre-LayerNorm layout (GPT-2 / nanoGPT style) by default; the
file is meant to be read top to bottom like a manual.

Architecture
------------
Input: ``input_ids`` (B, T) token ids and ``attention_mask`` (B, T), 1 for real tokens and 0
for padding. ``B`` is the batch size, ``T`` the sequence length (at most ``max_length``).

1. **Embeddings.** Each id is looked up in a token table (``vocab_size`` x ``d_model``) and
   added to a learned position vector (``max_length`` x ``d_model``, one per position 0..T-1).
   Dropout follows.

2. **``layers`` encoder blocks.** With ``norm_first=True`` (pre-LN, the default) a block is::

       x = x + Dropout(Attention(LayerNorm(x)))
       x = x + Dropout(FeedForward(LayerNorm(x)))

   and with ``norm_first=False`` (post-LN, the original Transformer and BERT)::

       x = LayerNorm(x + Dropout(Attention(x)))
       x = LayerNorm(x + Dropout(FeedForward(x)))

   *Multi-head self-attention.* One fused Linear maps ``d_model`` to the queries, keys and
   values of all heads at once (``3 * heads * head_dim`` outputs). The attention width
   ``heads * head_dim`` does not have to equal ``d_model``: 6 heads of 64 give a 384-wide
   attention inside a 256-wide model. Each head computes
   ``Attention(Q, K, V) = softmax(Q K^T / sqrt(head_dim)) V`` through
   ``torch.nn.functional.scaled_dot_product_attention`` (SDPA), which picks a fused kernel
   that never stores the T x T score matrix. Padding positions are masked out as *keys*, so
   no real token ever looks at a pad token. When a batch has no padding, no mask is passed
   at all, which lets SDPA run its fastest kernel. The heads are concatenated and a second
   Linear projects ``heads * head_dim`` back to ``d_model``. One exception, for speed only:
   when training in bf16 on CPU the same formula is written out as two batched matmuls and a
   softmax (:func:`~ragtune.models.layers.explicit_attention`), because the backward pass of
   SDPA's fused CPU kernel is about twice as slow there (see ``BENCHMARKS.md``). Both paths give
   the same result.

   *Position-wise feed-forward.* ``Linear(d_model -> ffn_dim)``, the activation (GELU or
   ReLU), ``Linear(ffn_dim -> d_model)``, i.e. ``y = W2 f(W1 x + b1) + b2`` on every token
   independently.

   *Dropout* (probability ``dropout``) is applied to the embeddings, to the output of each
   sub-layer before it joins the residual stream, and to the pooled vector in the heads.
   It is not applied to the attention probabilities (BERT does that; GPT-style models
   often do not): keeping it off lets SDPA keep its fused kernel during training, where
   dropout on the probabilities forces a kernel that materialises the T x T matrix.
   :class:`~ragtune.models.layers.Dropout` is ``nn.Dropout`` with a cheaper random mask on CPU.

3. **Final LayerNorm** (pre-LN only; in post-LN every block already ends with one).
   :class:`TransformerEncoder` returns these hidden states, (B, T, d_model).

4. **Task heads.** :class:`TransformerForSequenceClassification` and
   :class:`TransformerForRegression` each own an encoder, pool its output to one vector per
   sequence (``pooling="mean"``: the mean over real tokens; ``pooling="cls"``: the first
   token), apply dropout and a Linear layer. The classifier returns logits (B, num_outputs),
   the regressor returns one prediction per sequence (B,). Losses are not part of the model;
   the training loop computes cross-entropy or MSE.

Initialisation follows GPT-2/BERT: Linear and Embedding weights ~ N(0, 0.02), biases zero,
LayerNorm weight one and bias zero; the two projections that write into the residual stream
(attention output and second feed-forward Linear) use std ``0.02 / sqrt(2 * layers)`` so the
residual stream does not grow with depth.

The attention, feed-forward, dropout, block and initialisation code is shared with the other two
models and lives in :mod:`ragtune.models.layers`; this file writes the encoder's forward pass. It
knows nothing about files, the CLI or YAML configs: build a :class:`TransformerConfig` and one of
the two models (``TransformerForSequenceClassification(config)``, ``TransformerForRegression(config)``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ragtune.errors import RagtuneError
from ragtune.models.layers import (Dropout, EncoderBlock, check_config, check_ids, check_length, check_token_id,
                                   count_parameters, init_weights, key_padding_mask, real_tokens)

__all__ = ["TransformerConfig", "TransformerEncoder", "TransformerForSequenceClassification",
           "TransformerForRegression"]

POOLINGS = ("mean", "cls")


@dataclass
class TransformerConfig:
    """Shape and behaviour of a Transformer encoder. Validated on creation."""

    vocab_size: int  # number of token ids; ids must be in [0, vocab_size)
    max_length: int  # longest sequence the position table covers
    d_model: int  # width of the residual stream (embedding size)
    heads: int  # attention heads per layer
    head_dim: int  # width of one head; heads * head_dim need not equal d_model
    layers: int  # number of encoder blocks
    ffn_dim: int  # hidden width of the feed-forward network
    dropout: float = 0.1  # dropout probability, in [0, 1)
    num_outputs: int = 2  # classes for classification (regression always predicts 1 value)
    pad_id: int = 0  # id of the padding token (used when no attention_mask is given)
    activation: str = "gelu"  # "gelu" | "relu"
    pooling: str = "mean"  # "mean" over real tokens | "cls" = first token
    norm_first: bool = True  # True: pre-LN (GPT-2); False: post-LN (BERT)

    def __post_init__(self) -> None:
        check_config(self, ("vocab_size", "max_length", "d_model", "heads", "head_dim", "layers", "ffn_dim",
                            "num_outputs"), flags=("norm_first",))
        check_token_id("pad_id", self.pad_id, self.vocab_size)
        if self.pooling not in POOLINGS:
            raise RagtuneError(f"model config: pooling must be one of {list(POOLINGS)}, got {self.pooling!r}")


class TransformerEncoder(nn.Module):
    """Token + position embeddings, ``layers`` encoder blocks, final LayerNorm.

    ``forward(input_ids (B, T), attention_mask (B, T)) -> hidden states (B, T, d_model)``.
    """

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.config = config
        self.tok_emb = nn.Embedding(config.vocab_size, config.d_model)
        self.pos_emb = nn.Embedding(config.max_length, config.d_model)
        self.drop = Dropout(config.dropout)
        self.blocks = nn.ModuleList(EncoderBlock(config, config.norm_first) for _ in range(config.layers))
        # Post-LN blocks already end with a LayerNorm; a second one would do nothing useful.
        self.ln_f = nn.LayerNorm(config.d_model) if config.norm_first else nn.Identity()
        init_weights(self, config.layers)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        check_ids(input_ids, self.config.vocab_size, "input_ids", tag=False)
        B, T = input_ids.shape
        check_length(T, self.config.max_length, "sequence", "truncate the inputs")
        real = real_tokens(input_ids, attention_mask, self.config.pad_id, "input_ids", "attention_mask")  # (B, T)
        mask = key_padding_mask(real)  # (B, 1, 1, T), True = a real key; None = no padding
        pos = torch.arange(T, device=input_ids.device)  # (T,)
        x = self.drop(self.tok_emb(input_ids) + self.pos_emb(pos))  # (B, T, d_model)
        for block in self.blocks:
            x = block(x, mask)  # (B, T, d_model)
        return self.ln_f(x)  # (B, T, d_model)


def pool(hidden: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, config: TransformerConfig) -> torch.Tensor:
    """One vector per sequence: (B, T, d_model) -> (B, d_model)."""
    if config.pooling == "cls":
        return hidden[:, 0]  # (B, d_model)
    weights = real_tokens(input_ids, attention_mask, config.pad_id).unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
    counts = weights.sum(dim=1).clamp(min=1.0)  # (B, 1)
    return (hidden * weights).sum(dim=1) / counts  # (B, d_model)


# The two task models are the same network (encoder, pooling, dropout, Linear head); they differ in
# the head's width and in the regressor squeezing its one output. These functions are that network.


def init_task_model(model: nn.Module, config: TransformerConfig, outputs: int) -> None:
    """Give a task model its ``config``, ``encoder``, ``drop`` and ``head`` (Linear d_model -> outputs)."""
    model.config = config
    model.encoder = TransformerEncoder(config)
    model.drop = Dropout(config.dropout)
    model.head = nn.Linear(config.d_model, outputs)
    init_weights(model.head, config.layers)


def task_forward(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """Encoder, pooling, dropout and head: (B, T) -> (B, outputs)."""
    hidden = model.encoder(input_ids, attention_mask)  # (B, T, d_model)
    pooled = pool(hidden, input_ids, attention_mask, model.config)  # (B, d_model)
    return model.head(model.drop(pooled))  # (B, outputs)


def num_parameters(model: nn.Module, non_embedding: bool = True) -> int:
    """Number of parameters; with ``non_embedding`` the token and position tables are left out."""
    return count_parameters(model, non_embedding, model.encoder.tok_emb, model.encoder.pos_emb)


class TransformerForSequenceClassification(nn.Module):
    """Encoder + pooling + dropout + Linear: ``forward(input_ids, attention_mask) -> logits (B, num_outputs)``."""

    num_parameters = num_parameters

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        init_task_model(self, config, config.num_outputs)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return task_forward(self, input_ids, attention_mask)  # (B, num_outputs)


class TransformerForRegression(nn.Module):
    """Encoder + pooling + dropout + Linear to one value: ``forward(input_ids, attention_mask) -> (B,)``."""

    num_parameters = num_parameters

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        init_task_model(self, config, 1)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return task_forward(self, input_ids, attention_mask).squeeze(-1)  # (B, 1) -> (B,)

