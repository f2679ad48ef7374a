"""Behaviour of the from-scratch Transformer encoder and its task heads (ragtune.models.transformer)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from ragtune.errors import RagtuneError
from ragtune.models.layers import explicit_attention
from ragtune.models.transformer import (
    Dropout,
    TransformerConfig,
    TransformerEncoder,
    TransformerForRegression,
    TransformerForSequenceClassification,
)

VOCAB = 50
PAD = 0


def tiny_config(**overrides) -> TransformerConfig:
    fields = dict(
        vocab_size=VOCAB, max_length=16, d_model=32, heads=3, head_dim=8, layers=2, ffn_dim=64,
        dropout=0.1, num_outputs=3, pad_id=PAD,
    )
    fields.update(overrides)
    return TransformerConfig(**fields)


def random_ids(batch: int, length: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(1, VOCAB, (batch, length), generator=g)  # never the pad id


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)  # (one thread per test: tests/conftest.py)


def test_shapes_with_attention_width_not_equal_to_d_model():
    # 6 heads x 64 = 384-wide attention inside a 256-wide model.
    config = tiny_config(d_model=256, heads=6, head_dim=64, ffn_dim=512, layers=1, max_length=12)
    model = TransformerForSequenceClassification(config).eval()
    attn = model.encoder.blocks[0].attn
    assert attn.qkv.weight.shape == (3 * 384, 256)
    assert attn.proj.weight.shape == (256, 384)
    ids = random_ids(4, 10)
    mask = torch.ones_like(ids)
    assert model.encoder(ids, mask).shape == (4, 10, 256)
    assert model(ids, mask).shape == (4, 3)


@pytest.mark.parametrize("pooling", ["mean", "cls"])
@pytest.mark.parametrize("norm_first", [True, False])
def test_appending_padding_does_not_change_logits(pooling, norm_first):
    model = TransformerForSequenceClassification(tiny_config(pooling=pooling, norm_first=norm_first)).eval()
    ids = random_ids(3, 7)
    base = model(ids, torch.ones_like(ids))
    padded = torch.cat([ids, torch.full((3, 5), PAD)], dim=1)  # (3, 12)
    mask = torch.cat([torch.ones(3, 7, dtype=torch.long), torch.zeros(3, 5, dtype=torch.long)], dim=1)
    with torch.no_grad():
        assert torch.allclose(model(padded, mask), base, atol=1e-5)
        # Without a mask the padding is read from pad_id: same answer.
        assert torch.allclose(model(padded), base, atol=1e-5)


def test_ragged_batch_matches_each_sequence_alone():
    model = TransformerForSequenceClassification(tiny_config()).eval()
    a, b = random_ids(1, 9, seed=1), random_ids(1, 4, seed=2)
    batch = torch.cat([a, torch.cat([b, torch.full((1, 5), PAD)], dim=1)])  # (2, 9)
    mask = (batch != PAD).long()
    with torch.no_grad():
        out = model(batch, mask)
        assert torch.allclose(out[0], model(a)[0], atol=1e-5)
        assert torch.allclose(out[1], model(b)[0], atol=1e-5)


def test_padding_mask_is_used():
    model = TransformerForSequenceClassification(tiny_config()).eval()
    ids = random_ids(2, 10)
    mask = torch.ones_like(ids)
    mask[:, 6:] = 0
    changed = ids.clone()
    changed[:, 6:] = torch.randint(1, VOCAB, (2, 4))  # different (non-pad) ids at masked positions
    with torch.no_grad():
        assert torch.allclose(model(ids, mask), model(changed, mask), atol=1e-6)
        hidden_a, hidden_b = model.encoder(ids, mask), model.encoder(changed, mask)
        assert torch.allclose(hidden_a[:, :6], hidden_b[:, :6], atol=1e-6)
        # Sanity: the same change at *real* positions does change the output.
        assert not torch.allclose(model(ids), model(changed), atol=1e-4)


def test_eval_is_deterministic_and_train_uses_dropout():
    model = TransformerForSequenceClassification(tiny_config(dropout=0.5))
    ids = random_ids(4, 8)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(ids), model(ids))
    model.train()
    assert not torch.allclose(model(ids), model(ids))


def test_classification_loss_goes_down():
    model = TransformerForSequenceClassification(tiny_config(dropout=0.0))
    ids = random_ids(8, 10, seed=3)
    labels = torch.arange(8) % 3
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        loss = F.cross_entropy(model(ids), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.25 * losses[0], losses


def test_regression_shape_and_loss_goes_down():
    model = TransformerForRegression(tiny_config(dropout=0.0))
    ids = random_ids(8, 10, seed=4)
    target = torch.linspace(-1.0, 1.0, 8)
    assert model(ids).shape == (8,)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    losses = []
    for _ in range(40):
        loss = F.mse_loss(model(ids), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.25 * losses[0], losses


def test_num_parameters():
    config = tiny_config()
    model = TransformerForSequenceClassification(config)
    total = sum(p.numel() for p in model.parameters())
    embeddings = (config.vocab_size + config.max_length) * config.d_model
    assert model.num_parameters(non_embedding=False) == total
    assert model.num_parameters(non_embedding=True) == total - embeddings


def test_init_std_and_zero_biases():
    model = TransformerForSequenceClassification(tiny_config(d_model=64, ffn_dim=256, layers=1))
    assert abs(model.encoder.tok_emb.weight.std().item() - 0.02) < 0.002
    assert abs(model.encoder.blocks[0].attn.qkv.weight.std().item() - 0.02) < 0.002
    assert torch.count_nonzero(model.encoder.blocks[0].ffn.fc.bias) == 0


@pytest.mark.parametrize(
    "field, value",
    [("heads", 0), ("head_dim", -1), ("layers", 0), ("vocab_size", 0), ("dropout", 1.0), ("dropout", -0.1),
     ("pooling", "max"), ("activation", "swish"), ("pad_id", 50)],
)
def test_config_validation_names_the_field(field, value):
    with pytest.raises(RagtuneError) as info:
        tiny_config(**{field: value})
    assert field in str(info.value)
    assert repr(value) in str(info.value)


def test_max_length_exceeded_is_a_clear_error():
    model = TransformerForSequenceClassification(tiny_config(max_length=8))
    with pytest.raises(RagtuneError, match="max_length=8"):
        model(random_ids(2, 9))


def test_all_padding_sequence_is_a_clear_error():
    model = TransformerForSequenceClassification(tiny_config())
    ids = random_ids(2, 5)
    mask = torch.ones_like(ids)
    mask[1] = 0
    with pytest.raises(RagtuneError, match="no real tokens"):
        model(ids, mask)


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_bf16_autocast_forward_and_backward(task):
    model = (TransformerForSequenceClassification if task == "classification" else TransformerForRegression)(tiny_config())
    ids = random_ids(2, 8)
    mask = torch.ones_like(ids)
    mask[0, 5:] = 0
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(ids, mask)
    assert out.shape == ((2, 3) if task == "classification" else (2,))
    assert torch.isfinite(out.float()).all()
    out.float().sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_encoder_is_usable_on_its_own():
    encoder = TransformerEncoder(tiny_config(activation="relu"))
    assert encoder(random_ids(2, 6)).shape == (2, 6, 32)


def test_config_is_a_plain_dataclass():
    config = tiny_config()
    assert dataclasses.asdict(config)["heads"] == 3
    assert dataclasses.replace(config, heads=4).heads == 4


@pytest.mark.parametrize("padded", [False, True])
def test_explicit_attention_matches_sdpa(padded):
    q, k, v = torch.randn(3, 2, 3, 7, 8).unbind(0)  # 3 x (B, H, T, hd)
    mask = None
    if padded:
        mask = torch.ones(2, 1, 1, 7, dtype=torch.bool)
        mask[1, ..., 4:] = False
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    assert torch.allclose(explicit_attention(q, k, v, mask), expected, atol=1e-5)


def test_bf16_training_attention_path_matches_fp32():
    # In bf16 training on CPU the model uses explicit_attention; it must agree with SDPA in fp32.
    model = TransformerForSequenceClassification(tiny_config(dropout=0.0))
    ids = random_ids(2, 8)
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0
    reference = model(ids, mask)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(ids, mask)  # grad enabled, bf16: explicit path
    assert torch.allclose(out.float(), reference, atol=0.05)


def test_dropout_drops_p_and_keeps_the_mean():
    drop = Dropout(0.1)
    x = torch.ones(256, 1024)
    y = drop(x)
    dropped = (y == 0).float().mean().item()
    assert abs(dropped - 0.1) < 0.005
    assert abs(y.mean().item() - 1.0) < 0.01
    assert torch.allclose(y[y != 0], torch.tensor(1 / (1 - 0.1)), atol=1e-4)
    drop.eval()
    assert drop(x) is x
    assert Dropout(0.0)(x) is x


def test_dropout_gradient_uses_the_same_mask():
    drop = Dropout(0.5)
    x = torch.randn(64, 32, requires_grad=True)
    y = drop(x)
    y.sum().backward()
    assert torch.equal(x.grad == 0, y == 0)


def test_token_id_outside_vocab_is_a_clear_error():
    model = TransformerForSequenceClassification(tiny_config())
    ids = random_ids(2, 5)
    ids[0, 2] = VOCAB  # one past the end
    with pytest.raises(RagtuneError, match="vocab_size=50"):
        model(ids)
