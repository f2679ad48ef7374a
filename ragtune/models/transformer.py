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
   softmax (:func:`explicit_attention`), because the backward pass of SDPA's fused CPU kernel
   is about twice as slow there (see ``BENCHMARKS.md``). Both paths give the same result.

   *Position-wise feed-forward.* ``Linear(d_model -> ffn_dim)``, the activation (GELU or
   ReLU), ``Linear(ffn_dim -> d_model)``, i.e. ``y = W2 f(W1 x + b1) + b2`` on every token
   independently.

   *Dropout* (probability ``dropout``) is applied to the embeddings, to the output of each
   sub-layer before it joins the residual stream, and to the pooled vector in the heads.
   It is not applied to the attention probabilities (BERT does that; GPT-style models
   often do not): keeping it off lets SDPA keep its fused kernel during training, where
   dropout on the probabilities forces a kernel that materialises the T x T matrix.
   :class:`Dropout` is ``nn.Dropout`` with a cheaper random mask on CPU.

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

This module knows nothing about files, the CLI or YAML configs: build a
:class:`TransformerConfig` and call :func:`build_transformer`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ragtune.errors import RagtuneError

__all__ = [
    "TransformerConfig",
    "TransformerEncoder",
    "TransformerForSequenceClassification",
    "TransformerForRegression",
    "build_transformer",
    "TASKS",
]

ACTIVATIONS = ("gelu", "relu")
POOLINGS = ("mean", "cls")
TASKS = ("classification", "regression")


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
        for name in ("vocab_size", "max_length", "d_model", "heads", "head_dim", "layers", "ffn_dim", "num_outputs"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise RagtuneError(f"model config: {name} must be a positive integer, got {value!r}")
        if isinstance(self.pad_id, bool) or not isinstance(self.pad_id, int) or not 0 <= self.pad_id < self.vocab_size:
            raise RagtuneError(
                f"model config: pad_id must be an integer in [0, vocab_size={self.vocab_size}), got {self.pad_id!r}"
            )
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, (int, float)) or not 0.0 <= self.dropout < 1.0:
            raise RagtuneError(f"model config: dropout must be a number in [0, 1), got {self.dropout!r}")
        if self.activation not in ACTIVATIONS:
            raise RagtuneError(f"model config: activation must be one of {list(ACTIVATIONS)}, got {self.activation!r}")
        if self.pooling not in POOLINGS:
            raise RagtuneError(f"model config: pooling must be one of {list(POOLINGS)}, got {self.pooling!r}")
        if not isinstance(self.norm_first, bool):
            raise RagtuneError(f"model config: norm_first must be true or false, got {self.norm_first!r}")


def dropout_cpu(x: torch.Tensor, p: float, threshold: int | None = None, scale: float | None = None) -> torch.Tensor:
    """The training-mode forward of :class:`Dropout` as a function (``threshold``/``scale`` derive from ``p``)."""
    if x.device.type != "cpu":
        return F.dropout(x, p, training=True)
    if threshold is None or scale is None:
        dropped = round(p * 65536)
        threshold, scale = dropped - 32768, 65536 / (65536 - dropped)
    n = x.numel()
    words = torch.empty((n + 3) // 4, dtype=torch.int64).random_(-(2**63), 2**63 - 1)  # 64 random bits each
    bits = words.view(torch.int16)[:n].view(x.shape)  # 16 random bits per element
    keep = torch.empty(x.shape, dtype=torch.int8)
    torch.ge(bits, threshold, out=keep)  # 1 = keep, 0 = drop (int8 output is the fast path)
    return x * keep.to(x.dtype).mul_(scale)


class Dropout(nn.Module):
    """Inverted dropout: in training, zero each element with probability ``p`` and scale the rest by 1/(1-p).

    Same contract as ``nn.Dropout``, with a cheaper random mask on CPU. ``nn.Dropout`` draws one
    random number per element through ``bernoulli_``, which runs on one thread and dominated the
    CPU profile (about 10 ms per (16, 256, 256) tensor, 25 of them per step in a 12-layer model).
    Here each int64 draw gives the random bits for four elements: an element survives when its
    16 bits, read as a signed integer, are at least ``threshold``. ``p`` is therefore rounded to a
    multiple of 1/65536 (0.1 becomes 0.100006) and the scale uses that rounded value, so the
    expected output still equals the input. Off the CPU the fused ``F.dropout`` is used.
    """

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p
        dropped = round(p * 65536)  # how many of the 65536 16-bit patterns drop an element
        self.threshold = dropped - 32768  # int16 values >= threshold survive
        self.scale = 65536 / (65536 - dropped)  # 1 / (1 - rounded p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        return dropout_cpu(x, self.p, self.threshold, self.scale)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class SelfAttention(nn.Module):
    """Multi-head self-attention with a fused QKV projection and a key-padding mask."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.heads = config.heads
        self.head_dim = config.head_dim
        inner = config.heads * config.head_dim  # attention width, may differ from d_model
        self.qkv = nn.Linear(config.d_model, 3 * inner)  # Q, K and V of every head in one matmul
        self.proj = nn.Linear(inner, config.d_model)  # concatenated heads back to d_model

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        B, T, _ = x.shape  # (B, T, d_model)
        qkv = self.qkv(x).view(B, T, 3, self.heads, self.head_dim)  # (B, T, 3, H, hd)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # 3 x (B, H, T, hd), views, no copy
        # mask: (B, 1, 1, T) bool, True = this key may be attended to; None = no padding.
        if q.requires_grad and q.dtype == torch.bfloat16 and q.device.type == "cpu":
            y = explicit_attention(q, k, v, mask)  # (B, H, T, hd), faster to train here, see below
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, H, T, hd)
        y = y.transpose(1, 2).reshape(B, T, self.heads * self.head_dim)  # (B, T, H*hd)
        return self.proj(y)  # (B, T, d_model)


def explicit_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """softmax(Q K^T / sqrt(hd)) V with plain matmuls: the same result as SDPA, stored T x T scores.

    Used only to train in bf16 on CPU: there the backward pass of SDPA's fused CPU kernel was
    measured at about twice the time of these batched matmuls (forward + backward of one
    16 x 4 x 256 x 64 attention: ~48 ms vs ~25 ms on one core), while in fp32 and for inference
    SDPA is as fast or faster and needs no T x T buffer.
    """
    att = (q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5  # (B, H, T, hd) @ (B, H, hd, T) -> (B, H, T, T)
    if mask is not None:
        att = att.masked_fill(~mask, float("-inf"))  # pad keys get zero weight
    return att.softmax(dim=-1) @ v  # (B, H, T, T) @ (B, H, T, hd) -> (B, H, T, hd)


class FeedForward(nn.Module):
    """Position-wise feed-forward network: Linear -> activation -> Linear."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.fc = nn.Linear(config.d_model, config.ffn_dim)
        self.proj = nn.Linear(config.ffn_dim, config.d_model)
        self.act = F.gelu if config.activation == "gelu" else F.relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.act(self.fc(x)))  # (B, T, d_model) -> (B, T, ffn_dim) -> (B, T, d_model)


class Block(nn.Module):
    """One encoder layer: self-attention and feed-forward, each with a residual connection."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.norm_first = config.norm_first
        self.ln1 = nn.LayerNorm(config.d_model)
        self.attn = SelfAttention(config)
        self.ln2 = nn.LayerNorm(config.d_model)
        self.ffn = FeedForward(config)
        self.drop = Dropout(config.dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        if self.norm_first:  # pre-LN
            x = x + self.drop(self.attn(self.ln1(x), mask))
            x = x + self.drop(self.ffn(self.ln2(x)))
        else:  # post-LN
            x = self.ln1(x + self.drop(self.attn(x, mask)))
            x = self.ln2(x + self.drop(self.ffn(x)))
        return x  # (B, T, d_model)


def key_padding_mask(
    input_ids: torch.Tensor, attention_mask: torch.Tensor | None, pad_id: int
) -> torch.Tensor | None:
    """The boolean SDPA mask (B, 1, 1, T), True where a key is a real token; None if nothing is padded.

    Without ``attention_mask`` the padding is read from ``input_ids == pad_id``.
    """
    if attention_mask is None:
        real = input_ids != pad_id  # (B, T)
    else:
        if attention_mask.shape != input_ids.shape:
            raise RagtuneError(
                f"attention_mask shape {tuple(attention_mask.shape)} does not match "
                f"input_ids shape {tuple(input_ids.shape)}"
            )
        real = attention_mask.bool()  # (B, T)
    if bool(real.all()):
        return None  # no padding: let SDPA use its unmasked fast path
    if not bool(real.any(dim=1).all()):
        raise RagtuneError("a sequence in the batch has no real tokens (attention_mask is all 0)")
    return real[:, None, None, :]  # (B, 1, 1, T), broadcast over heads and queries


def init_weights(model: nn.Module, layers: int) -> None:
    """GPT-2/BERT initialisation; residual-stream projections scaled by 1/sqrt(2 * layers)."""
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            std = 0.02 / math.sqrt(2 * layers) if name.endswith(".proj") else 0.02
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


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
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.layers))
        # Post-LN blocks already end with a LayerNorm; a second one would do nothing useful.
        self.ln_f = nn.LayerNorm(config.d_model) if config.norm_first else nn.Identity()
        init_weights(self, config.layers)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        if input_ids.dim() != 2:
            raise RagtuneError(f"input_ids must have shape (batch, seq_len), got shape {tuple(input_ids.shape)}")
        B, T = input_ids.shape
        if T > self.config.max_length:
            raise RagtuneError(
                f"sequence length {T} exceeds the model's max_length={self.config.max_length}; "
                "truncate the inputs or build the model with a larger max_length"
            )
        if input_ids.numel() and not 0 <= int(input_ids.min()) <= int(input_ids.max()) < self.config.vocab_size:
            raise RagtuneError(
                f"token ids must be in [0, vocab_size={self.config.vocab_size}), got ids from "
                f"{int(input_ids.min())} to {int(input_ids.max())}; does the tokenizer match the model?"
            )
        mask = key_padding_mask(input_ids, attention_mask, self.config.pad_id)  # (B, 1, 1, T) or None
        pos = torch.arange(T, device=input_ids.device)  # (T,)
        x = self.drop(self.tok_emb(input_ids) + self.pos_emb(pos))  # (B, T, d_model)
        for block in self.blocks:
            x = block(x, mask)  # (B, T, d_model)
        return self.ln_f(x)  # (B, T, d_model)


def pool(hidden: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, config: TransformerConfig) -> torch.Tensor:
    """One vector per sequence: (B, T, d_model) -> (B, d_model)."""
    if config.pooling == "cls":
        return hidden[:, 0]  # (B, d_model)
    real = (input_ids != config.pad_id) if attention_mask is None else attention_mask.bool()  # (B, T)
    weights = real.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
    counts = weights.sum(dim=1).clamp(min=1.0)  # (B, 1)
    return (hidden * weights).sum(dim=1) / counts  # (B, d_model)


def count_parameters(model: nn.Module, encoder: TransformerEncoder, non_embedding: bool) -> int:
    """Parameters of ``model``; with ``non_embedding`` the token and position tables are left out."""
    n = sum(p.numel() for p in model.parameters())
    if non_embedding:
        n -= encoder.tok_emb.weight.numel() + encoder.pos_emb.weight.numel()
    return n


class TransformerForSequenceClassification(nn.Module):
    """Encoder + pooling + dropout + Linear: ``forward(input_ids, attention_mask) -> logits (B, num_outputs)``."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = TransformerEncoder(config)
        self.drop = Dropout(config.dropout)
        self.head = nn.Linear(config.d_model, config.num_outputs)
        init_weights(self.head, config.layers)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        hidden = self.encoder(input_ids, attention_mask)  # (B, T, d_model)
        pooled = pool(hidden, input_ids, attention_mask, self.config)  # (B, d_model)
        return self.head(self.drop(pooled))  # (B, num_outputs)

    def num_parameters(self, non_embedding: bool = True) -> int:
        """Number of parameters; with ``non_embedding`` the token and position tables are left out."""
        return count_parameters(self, self.encoder, non_embedding)


class TransformerForRegression(nn.Module):
    """Encoder + pooling + dropout + Linear to one value: ``forward(input_ids, attention_mask) -> (B,)``."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = TransformerEncoder(config)
        self.drop = Dropout(config.dropout)
        self.head = nn.Linear(config.d_model, 1)
        init_weights(self.head, config.layers)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        hidden = self.encoder(input_ids, attention_mask)  # (B, T, d_model)
        pooled = pool(hidden, input_ids, attention_mask, self.config)  # (B, d_model)
        return self.head(self.drop(pooled)).squeeze(-1)  # (B, 1) -> (B,)

    def num_parameters(self, non_embedding: bool = True) -> int:
        """Number of parameters; with ``non_embedding`` the token and position tables are left out."""
        return count_parameters(self, self.encoder, non_embedding)


def build_transformer(config: TransformerConfig, task: str) -> nn.Module:
    """The model for ``task`` ("classification" or "regression") with freshly initialised weights."""
    if task == "classification":
        return TransformerForSequenceClassification(config)
    if task == "regression":
        return TransformerForRegression(config)
    raise RagtuneError(f"unknown task {task!r}; valid choices: {list(TASKS)}")
