"""The shared attention of ragtune.models.layers: KV cache, causal and key-padding masks, the bf16 CPU path."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from ragtune.models.layers import Attention, LayerCache, causal_mask, explicit_attention, key_padding_mask

CONFIG = SimpleNamespace(d_model=24, heads=3, head_dim=8)


def inputs(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("left_padded", [False, True])
def test_kv_cached_incremental_attention_equals_the_full_causal_pass(left_padded):
    torch.manual_seed(0)
    attn = Attention(CONFIG).eval()
    x = inputs(2, 7, 24)  # (B, T, d_model)
    real = torch.ones(2, 7, dtype=torch.bool)
    if left_padded:
        real[1, :2] = False  # row 1 starts with two pads
    with torch.no_grad():
        full = attn(x, *causal_mask(7, 0, real))  # (B, T, d_model)
        cache, parts = LayerCache(), []
        for start, stop in [(0, 3), (3, 4), (4, 5), (5, 7)]:  # a chunk, single tokens, a chunk
            mask, is_causal = causal_mask(stop - start, start, real[:, :stop])
            parts.append(attn(x[:, start:stop], mask, is_causal, cache=cache))
    assert cache.self_k.shape == (2, 3, 7, 8)  # (B, H, T, hd)
    assert torch.allclose(torch.cat(parts, dim=1), full, atol=1e-6)
    # Causal: changing the last token changes nothing before it.
    changed = x.clone()
    changed[:, -1] += 1.0
    with torch.no_grad():
        assert torch.allclose(attn(changed, *causal_mask(7, 0, real))[:, :-1], full[:, :-1], atol=1e-6)


def test_padded_keys_have_no_influence():
    torch.manual_seed(0)
    attn = Attention(CONFIG).eval()
    x = inputs(2, 6, 24)
    real = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]], dtype=torch.bool)
    mask = key_padding_mask(real)  # (B, 1, 1, T)
    noisy = x.clone()
    noisy[1, 4:] = inputs(2, 24, seed=1) * 10  # other values at the padded positions
    with torch.no_grad():
        out, out_noisy = attn(x, mask), attn(noisy, mask)
        alone = attn(x[1:, :4])  # the real tokens of row 1 without any padding
        assert torch.allclose(out_noisy[1, :4], out[1, :4], atol=1e-6)
        assert torch.allclose(out[1, :4], alone[0], atol=1e-6)
        assert not torch.allclose(attn(noisy)[1, :4], out[1, :4], atol=1e-3)  # unmasked, the pads do count
    assert key_padding_mask(torch.ones(2, 6, dtype=torch.bool)) is None  # no padding: SDPA's unmasked kernel


def test_cross_attention_masks_memory_padding_and_caches_its_keys():
    torch.manual_seed(0)
    cross = Attention(CONFIG, cross=True).eval()
    x, memory = inputs(2, 3, 24), inputs(2, 5, 24, seed=1)
    mask = key_padding_mask(torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], dtype=torch.bool))
    noisy = memory.clone()
    noisy[1, 3:] += 5.0
    cache = LayerCache()
    with torch.no_grad():
        out = cross(x, mask, memory=memory, cache=cache)
        assert torch.allclose(cross(x, mask, memory=noisy), out, atol=1e-6)
        assert torch.allclose(cross(x[1:], memory=memory[1:, :3])[0], out[1], atol=1e-6)
        # A cached call reuses the memory's keys/values computed on the first call.
        assert torch.allclose(cross(x, mask, memory=torch.zeros_like(memory), cache=cache), out, atol=1e-6)


@pytest.mark.parametrize("masked", ["causal", "mask"])
def test_bf16_cpu_training_path_matches_sdpa(masked):
    q, k, v = inputs(3, 2, 3, 6, 8).unbind(0)  # 3 x (B, H, T, hd)
    mask, is_causal = causal_mask(6, 0, torch.tensor([[1] * 6, [0, 0, 1, 1, 1, 1]], dtype=torch.bool))
    if masked == "causal":
        mask, is_causal = None, True
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal)
    assert torch.allclose(explicit_attention(q, k, v, mask, is_causal), expected, atol=1e-5)
    torch.manual_seed(0)
    attn = Attention(CONFIG)
    x = inputs(2, 6, 24)
    reference = attn(x, mask, is_causal)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = attn(x, mask, is_causal)  # grad enabled, bf16 on CPU: the explicit path
    assert out.dtype == torch.bfloat16
    assert torch.allclose(out.float(), reference, atol=0.05)
