"""The building blocks of ragtune's from-scratch Transformers, each written once for the three models.

:mod:`ragtune.models.transformer` (encoder + classification/regression heads), :mod:`ragtune.models.seq2seq`
(encoder-decoder) and :mod:`ragtune.models.decoder` (decoder-only) each write their model's forward pass,
and its manual, in their own file from these pieces: one :class:`Attention` (self- or cross-attention,
optional key/value cache, through SDPA or, to train in bf16 on CPU, :func:`explicit_attention`), the
masks, :class:`FeedForward`, :class:`Dropout`, the encoder and decoder layers, :class:`KVCache`, the
initialisation, the tied output projection, and the config and input checks.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ragtune.errors import RagtuneError

ACTIVATIONS = ("gelu", "relu")


# --- Config and input checks ---


def check_config(config: object, positive: Sequence[str], flags: Sequence[str]) -> None:
    """Raise a RagtuneError at the first bad field: ``positive`` ints, ``dropout``, ``activation``, bool ``flags``."""
    for name in positive:
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise RagtuneError(f"model config: {name} must be a positive integer, got {value!r}")
    dropout = config.dropout
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
        raise RagtuneError(f"model config: dropout must be a number in [0, 1), got {dropout!r}")
    if config.activation not in ACTIVATIONS:
        raise RagtuneError(f"model config: activation must be one of {list(ACTIVATIONS)}, got {config.activation!r}")
    for name in flags:
        if not isinstance(getattr(config, name), bool):
            raise RagtuneError(f"model config: {name} must be true or false, got {getattr(config, name)!r}")


def check_token_id(name: str, value: object, vocab_size: int, vocab_name: str = "vocab_size") -> None:
    """Raise a RagtuneError unless ``value`` is an int in [0, vocab_size)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < vocab_size:
        raise RagtuneError(
            f"model config: {name} must be an integer in [0, {vocab_name}={vocab_size}), got {value!r}"
        )


def check_distinct_ids(config: object) -> None:
    """Raise a RagtuneError unless the config's pad_id, bos_id and eos_id are three different ids."""
    ids = {"pad_id": config.pad_id, "bos_id": config.bos_id, "eos_id": config.eos_id}
    if len(set(ids.values())) != 3:
        raise RagtuneError(f"model config: pad_id, bos_id and eos_id must be three different ids, got {ids}")


def check_ids(ids: torch.Tensor, vocab_size: int, name: str, vocab_name: str = "vocab_size", tag: bool = True) -> None:
    """Raise a RagtuneError unless ``ids`` is (B, T) with every id in [0, vocab_size); ``tag``: name it there too."""
    if ids.dim() != 2:
        raise RagtuneError(f"{name} must have shape (batch, seq_len), got shape {tuple(ids.shape)}")
    if torch.compiler.is_compiling():  # train.compile: the check reads the ids back (a graph break); eager runs keep it
        return
    if ids.numel() and not 0 <= int(ids.min()) <= int(ids.max()) < vocab_size:
        raise RagtuneError(
            f"{name + ': ' if tag else ''}token ids must be in [0, {vocab_name}={vocab_size}), got ids from "
            f"{int(ids.min())} to {int(ids.max())}; does the tokenizer match the model?"
        )


def check_length(length: int, max_length: int, what: str, advice: str) -> None:
    """Raise a RagtuneError if ``length`` positions do not fit the position table."""
    if length > max_length:
        raise RagtuneError(
            f"{what} length {length} exceeds the model's max_length={max_length}; {advice} "
            "or build the model with a larger max_length"
        )


# --- Masks ---


def real_tokens(
    ids: torch.Tensor, mask: torch.Tensor | None, pad_id: int, ids_name: str = "ids", mask_name: str = "mask"
) -> torch.Tensor:
    """(B, T) bool, True at real tokens: ``mask`` (B, T) 0/1 if given, else ``ids != pad_id``."""
    if mask is None:
        return ids != pad_id  # (B, T)
    if mask.shape != ids.shape:
        raise RagtuneError(
            f"{mask_name} shape {tuple(mask.shape)} does not match {ids_name} shape {tuple(ids.shape)}"
        )
    return mask.bool()  # (B, T)


def key_padding_mask(
    real: torch.Tensor, mask_name: str = "attention_mask", what: str = "sequence"
) -> torch.Tensor | None:
    """The boolean SDPA mask (B, 1, 1, S) from real keys (B, S): True = may be attended to; None if nothing is padded.

    Returning None when a batch has no padding lets SDPA run its fastest, unmasked kernel.
    """
    if bool(real.all()):
        return None
    if not bool(real.any(dim=1).all()):
        raise RagtuneError(f"a {what} in the batch has no real tokens ({mask_name} is all 0)")
    return real[:, None, None, :]  # (B, 1, 1, S), broadcast over heads and queries


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


# --- Key/value cache for incremental decoding ---


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


# --- Attention, feed-forward, dropout ---


class Attention(nn.Module):
    """Multi-head attention: ``softmax(Q K^T / sqrt(head_dim)) V`` per head, heads concatenated and projected.

    Self-attention (``cross=False``) maps ``x`` to the queries, keys and values of all heads with
    one fused Linear ``qkv`` (``3 * heads * head_dim`` outputs); cross-attention takes the queries
    from ``x`` (``q``) and the keys and values from the encoder ``memory`` (``kv``). The attention
    width ``heads * head_dim`` need not equal ``d_model``. ``mask`` is SDPA's boolean ``attn_mask``
    (True = may attend; from :func:`key_padding_mask` or :func:`causal_mask`), ``is_causal`` SDPA's
    causal flag. With a ``cache`` self-attention appends the new keys/values to the cached ones, and
    cross-attention computes the memory's keys/values on the first call and then reuses them.
    ``config`` is any config with ``d_model``, ``heads`` and ``head_dim``.
    """

    def __init__(self, config, cross: bool = False) -> None:
        super().__init__()
        self.heads = config.heads
        self.head_dim = config.head_dim
        self.cross = cross
        inner = config.heads * config.head_dim  # attention width, may differ from d_model
        if cross:
            self.q = nn.Linear(config.d_model, inner)
            self.kv = nn.Linear(config.d_model, 2 * inner)  # K and V of the memory in one matmul
        else:
            self.qkv = nn.Linear(config.d_model, 3 * inner)  # Q, K and V of every head in one matmul
        self.proj = nn.Linear(inner, config.d_model)  # concatenated heads back to d_model

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, is_causal: bool = False,
                memory: torch.Tensor | None = None, cache: LayerCache | None = None) -> torch.Tensor:
        B, T, _ = x.shape  # (B, T, d_model)
        if not self.cross:
            qkv = self.qkv(x).view(B, T, 3, self.heads, self.head_dim)  # (B, T, 3, H, hd)
            q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # 3 x (B, H, T, hd), views, no copy
            if cache is not None:
                k, v = cache.append(k, v)  # 2 x (B, H, P+T, hd): the cached positions, then these
        else:
            q = self.q(x).view(B, T, self.heads, self.head_dim).transpose(1, 2)  # (B, H, T, hd)
            if cache is not None and cache.cross_k is not None:
                k, v = cache.cross_k, cache.cross_v  # 2 x (B, H, S, hd), computed on the first call
            else:
                kv = self.kv(memory).view(B, memory.shape[1], 2, self.heads, self.head_dim)  # (B, S, 2, H, hd)
                k, v = kv.permute(2, 0, 3, 1, 4).unbind(0)  # 2 x (B, H, S, hd)
                if cache is not None:
                    cache.cross_k, cache.cross_v = k, v
        if q.requires_grad and q.dtype == torch.bfloat16 and q.device.type == "cpu":
            y = explicit_attention(q, k, v, mask, is_causal)  # (B, H, T, hd), faster to train here, see below
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal)  # (B, H, T, hd)
        y = y.transpose(1, 2).reshape(B, T, self.heads * self.head_dim)  # (B, T, H*hd)
        return self.proj(y)  # (B, T, d_model)


def explicit_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None,
                       is_causal: bool = False) -> torch.Tensor:
    """softmax(Q K^T / sqrt(hd)) V with plain matmuls: the same result as SDPA, stored T x S scores.

    Used only to train in bf16 on CPU: there the backward pass of SDPA's fused CPU kernel was
    measured at about twice the time of these batched matmuls (forward + backward of one
    16 x 4 x 256 x 64 attention: ~48 ms vs ~25 ms on one core), while in fp32 and for inference
    SDPA is as fast or faster and needs no T x S buffer. (Measured on the encoder's self-attention;
    the decoders' causal and cross-attention take the same path.)
    """
    att = (q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5  # (B, H, T, hd) @ (B, H, hd, S) -> (B, H, T, S)
    if is_causal:  # SDPA's is_causal: query i sees keys 0..i
        mask = torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool, device=q.device).tril()  # (T, S)
    if mask is not None:
        att = att.masked_fill(~mask, float("-inf"))  # masked keys get zero weight
    return att.softmax(dim=-1) @ v  # (B, H, T, S) @ (B, H, S, hd) -> (B, H, T, hd)


class FeedForward(nn.Module):
    """Position-wise feed-forward network: Linear -> activation -> Linear."""

    def __init__(self, config) -> None:
        super().__init__()
        self.fc = nn.Linear(config.d_model, config.ffn_dim)
        self.proj = nn.Linear(config.ffn_dim, config.d_model)
        self.act = F.gelu if config.activation == "gelu" else F.relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.act(self.fc(x)))  # (B, T, d_model) -> (B, T, ffn_dim) -> (B, T, d_model)


def dropout_cpu(x: torch.Tensor, p: float) -> torch.Tensor:
    """The training-mode forward of :class:`Dropout` as a function."""
    if x.device.type != "cpu":
        return F.dropout(x, p, training=True)
    dropped = round(p * 65536)  # how many of the 65536 16-bit patterns drop an element
    threshold = dropped - 32768  # int16 values >= threshold survive
    scale = 65536 / (65536 - dropped)  # 1 / (1 - rounded p)
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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        return dropout_cpu(x, self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}"


# --- The two layer types ---


class EncoderBlock(nn.Module):
    """One encoder layer: self-attention and feed-forward, each with a residual connection, pre-LN or post-LN."""

    def __init__(self, config, norm_first: bool = True) -> None:
        super().__init__()
        self.norm_first = norm_first
        self.ln1 = nn.LayerNorm(config.d_model)
        self.attn = Attention(config)
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


class DecoderBlock(nn.Module):
    """One pre-LN decoder layer: causal self-attention, cross-attention (if ``cross``), feed-forward."""

    def __init__(self, config, cross: bool) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(config.d_model)
        self.attn = Attention(config)
        self.ln2 = nn.LayerNorm(config.d_model) if cross else None
        self.cross = Attention(config, cross=True) if cross else None
        self.ln3 = nn.LayerNorm(config.d_model)
        self.ffn = FeedForward(config)
        self.drop = Dropout(config.dropout)

    def forward(self, x, mask, is_causal, memory=None, memory_mask=None, cache: LayerCache | None = None):
        """(B, T, d_model) -> (B, T, d_model); ``mask``/``is_causal`` from :func:`causal_mask`."""
        x = x + self.drop(self.attn(self.ln1(x), mask, is_causal, cache=cache))
        if self.cross is not None:
            x = x + self.drop(self.cross(self.ln2(x), memory_mask, memory=memory, cache=cache))
        return x + self.drop(self.ffn(self.ln3(x)))  # (B, T, d_model)


# --- Parameters: stacks, initialisation, output projection ---


def embeddings_and_blocks(config, vocab_size: int, blocks: Iterable[nn.Module], layers: int) -> nn.ModuleDict:
    """The parameters of a stack: ``tok_emb``, ``pos_emb``, ``drop``, ``blocks``, ``ln_f``, initialised.

    The models write the forward pass themselves:
    ``ln_f(blocks(drop(tok_emb(ids) + pos_emb(pos))))``.
    """
    stack = nn.ModuleDict(dict(
        tok_emb=nn.Embedding(vocab_size, config.d_model),
        pos_emb=nn.Embedding(config.max_length, config.d_model),
        drop=Dropout(config.dropout),
        blocks=nn.ModuleList(blocks),
        ln_f=nn.LayerNorm(config.d_model),
    ))
    init_weights(stack, layers)
    return stack


def init_weights(model: nn.Module, layers: int) -> None:
    """GPT-2/BERT initialisation; residual-stream projections scaled by 1/sqrt(2 * layers).

    Linear and Embedding weights ~ N(0, 0.02), biases zero, LayerNorm weight one and bias zero;
    the ``.proj`` Linears that write into the residual stream use std ``0.02 / sqrt(2 * layers)``.
    """
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


def output_head(d_model: int, vocab_size: int, tok_emb: nn.Embedding, tie: bool) -> nn.Linear:
    """``Linear(d_model -> vocab_size, no bias)``; with ``tie`` its weight *is* the token table (Press & Wolf 2017)."""
    head = nn.Linear(d_model, vocab_size, bias=False)
    if tie:
        head.weight = tok_emb.weight  # the same tensor
    else:
        nn.init.normal_(head.weight, mean=0.0, std=0.02)
    return head


def count_parameters(model: nn.Module, non_embedding: bool, *tables: nn.Embedding) -> int:
    """Parameters of ``model``, shared tensors once; with ``non_embedding`` the ``tables`` are left out."""
    n = sum(p.numel() for p in model.parameters())
    if non_embedding:
        n -= sum(w.numel() for w in {t.weight for t in tables})
    return n
