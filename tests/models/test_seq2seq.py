"""Behaviour of the encoder-decoder and decoder-only Transformers and their decoding.

(ragtune.models.seq2seq, ragtune.models.decoder, ragtune.models.decoding.) The two learning tests
train tiny models on CPU for a few seconds each (module-scoped fixtures, shared by the decoding
tests): copying and reversing random token sequences, and repeating a prefix after a separator.
"""

from __future__ import annotations

import dataclasses

import pytest
import sacrebleu
import torch
import torch.nn.functional as F

from ragtune.errors import RagtuneError
from ragtune.models.decoder import DecoderConfig, TransformerForCausalLM, build_decoder
from ragtune.models.decoding import (
    CausalLMStepper,
    Seq2SeqStepper,
    beam_search,
    greedy,
    length_penalty_factor,
    sample,
    score_sequences,
)
from ragtune.models.seq2seq import (
    Seq2SeqConfig,
    TransformerForSeq2Seq,
    build_seq2seq,
    pad_batch,
    seq2seq_loss,
    teacher_forcing_batch,
)

VOCAB = 20
PAD, BOS, EOS, SEP = 0, 1, 2, 3  # SEP: the decoder-only task's separator
FIRST = 4  # random tokens are drawn from [FIRST, VOCAB)


def s2s_config(**overrides) -> Seq2SeqConfig:
    fields = dict(
        src_vocab_size=VOCAB, max_length=12, d_model=64, heads=4, head_dim=16, encoder_layers=2,
        decoder_layers=2, ffn_dim=128, dropout=0.0, pad_id=PAD, bos_id=BOS, eos_id=EOS,
    )
    fields.update(overrides)
    return Seq2SeqConfig(**fields)


def lm_config(**overrides) -> DecoderConfig:
    fields = dict(
        vocab_size=VOCAB, max_length=20, d_model=64, heads=4, head_dim=16, layers=2, ffn_dim=128,
        dropout=0.0, pad_id=PAD, bos_id=BOS, eos_id=EOS,
    )
    fields.update(overrides)
    return DecoderConfig(**fields)


def random_seqs(n: int, generator: torch.Generator, low: int = 4, high: int = 7) -> list[list[int]]:
    """n lists of random tokens in [FIRST, VOCAB), lengths in [low, high]."""
    lengths = torch.randint(low, high + 1, (n,), generator=generator).tolist()
    return [torch.randint(FIRST, VOCAB, (n_,), generator=generator).tolist() for n_ in lengths]


def random_ids(batch: int, length: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(FIRST, VOCAB, (batch, length), generator=g)


def warmup_adamw(model: torch.nn.Module, lr: float = 3e-3, warmup: int = 50):
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: min(1.0, (i + 1) / warmup))
    return opt, sched


def train_seq2seq(task: str, steps: int) -> TransformerForSeq2Seq:
    torch.manual_seed(0)
    config = s2s_config()
    model = build_seq2seq(config)
    opt, sched = warmup_adamw(model)
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        sources = random_seqs(64, g)
        targets = sources if task == "copy" else [s[::-1] for s in sources]
        src, mask = pad_batch(sources, PAD)
        tgt_in, labels = teacher_forcing_batch(targets, config)
        loss = seq2seq_loss(model(src, mask, tgt_in), labels, PAD)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return model.eval()


def bleu(hyps: list[list[int]], refs: list[list[int]]) -> float:
    join = lambda seqs: [" ".join(map(str, s)) for s in seqs]
    return sacrebleu.corpus_bleu(join(hyps), [join(refs)]).score


def token_accuracy(hyps: list[list[int]], refs: list[list[int]]) -> float:
    right = sum(sum(a == b for a, b in zip(h, r)) for h, r in zip(hyps, refs))
    return right / sum(max(len(h), len(r)) for h, r in zip(hyps, refs))


def trained(task: str, steps: int) -> TransformerForSeq2Seq:
    """train_seq2seq on one thread (module fixtures run before tests/conftest.py's per-test one)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng():
            return train_seq2seq(task, steps)
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def copy_model() -> TransformerForSeq2Seq:
    return trained("copy", steps=200)


@pytest.fixture(scope="module")
def reverse_model() -> TransformerForSeq2Seq:
    return trained("reverse", steps=300)


@pytest.fixture(scope="module")
def test_sources() -> list[list[int]]:
    return random_seqs(200, torch.Generator().manual_seed(99))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)  # (one thread per test: tests/conftest.py)


# ----------------------------------------------------------------------------------------------
# Encoder-decoder model
# ----------------------------------------------------------------------------------------------


def test_shapes_with_separate_vocabularies():
    config = s2s_config(tgt_vocab_size=30, share_embeddings=False, heads=3, head_dim=8, encoder_layers=1)
    model = build_seq2seq(config).eval()
    src, tgt = random_ids(3, 9), random_ids(3, 5)
    mask = torch.ones_like(src)
    memory = model.encode(src, mask)
    assert memory.shape == (3, 9, 64)
    assert model.decode(memory, mask, tgt).shape == (3, 5, 30)
    assert model(src, mask, tgt).shape == (3, 5, 30)
    assert model.decoder.blocks[0].cross.kv.weight.shape == (2 * 24, 64)
    assert model.encoder.tok_emb.weight.shape == (VOCAB, 64)
    assert model.decoder.tok_emb.weight.shape == (30, 64)


def test_shared_and_tied_weights_are_one_tensor():
    model = build_seq2seq(s2s_config())
    assert model.encoder.tok_emb.weight is model.decoder.tok_emb.weight
    assert model.lm_head.weight is model.decoder.tok_emb.weight
    total = sum(p.numel() for p in model.parameters())  # parameters() lists a shared tensor once
    untied = build_seq2seq(s2s_config(share_embeddings=False, tie_output=False))
    assert untied.lm_head.weight is not untied.decoder.tok_emb.weight
    assert untied.encoder.tok_emb.weight is not untied.decoder.tok_emb.weight
    assert sum(p.numel() for p in untied.parameters()) == total + 2 * VOCAB * 64
    assert model.num_parameters(non_embedding=False) == total
    assert model.num_parameters() == total - (VOCAB + 12 + 12) * 64
    lm = build_decoder(lm_config())
    assert lm.lm_head.weight is lm.decoder.tok_emb.weight
    assert build_decoder(lm_config(tie_output=False)).lm_head.weight is not lm.decoder.tok_emb.weight


def test_causal_mask_hides_future_target_tokens():
    model = build_seq2seq(s2s_config()).eval()
    src, tgt = random_ids(2, 6, seed=1), random_ids(2, 8, seed=2)
    changed = tgt.clone()
    changed[:, 5:] = random_ids(2, 3, seed=3)
    with torch.no_grad():
        a, b = model(src, None, tgt), model(src, None, changed)
    assert torch.allclose(a[:, :5], b[:, :5], atol=1e-6)
    assert not torch.allclose(a[:, 5:], b[:, 5:], atol=1e-4)


def test_source_padding_does_not_change_the_output():
    model = build_seq2seq(s2s_config()).eval()
    long, short = random_ids(1, 9, seed=1), random_ids(1, 5, seed=2)
    tgt = random_ids(2, 4, seed=3)
    src, mask = pad_batch([long[0].tolist(), short[0].tolist()], PAD)  # (2, 9), row 1 padded
    with torch.no_grad():
        batch = model(src, mask, tgt)
        assert torch.allclose(batch[0], model(long, None, tgt[:1])[0], atol=1e-5)
        assert torch.allclose(batch[1], model(short, None, tgt[1:])[0], atol=1e-5)
        # Padded positions are masked, whatever ids they hold; without a mask pads are read from pad_id.
        noisy = src.clone()
        noisy[1, 5:] = random_ids(1, 4, seed=4)
        assert torch.allclose(model(noisy, mask, tgt), batch, atol=1e-6)
        assert torch.allclose(model(src, None, tgt), batch, atol=1e-6)
        assert not torch.allclose(model(noisy, None, tgt), batch, atol=1e-4)


def test_incremental_decoding_with_cache_matches_full_decoding():
    model = build_seq2seq(s2s_config()).eval()
    src, mask = pad_batch([[5, 6, 7, 8, 9], [10, 11, 12]], PAD)
    tgt = random_ids(2, 7, seed=5)
    with torch.no_grad():
        memory = model.encode(src, mask)
        full = model.decode(memory, mask, tgt)
        cache = model.new_cache()
        parts = [model.decode(memory, mask, tgt[:, :3], cache)]  # a chunk, then one token at a time
        parts += [model.decode(memory, mask, tgt[:, t : t + 1], cache) for t in range(3, 7)]
    assert cache.length == 7
    assert torch.allclose(torch.cat(parts, dim=1), full, atol=1e-5)


def test_seq2seq_loss_is_the_mean_over_real_tokens():
    logits = torch.randn(2, 4, VOCAB)
    targets = torch.tensor([[5, 6, EOS, PAD], [7, 8, 9, EOS]])
    real = targets != PAD
    expected = F.cross_entropy(logits[real], targets[real])  # 7 real tokens
    assert torch.allclose(seq2seq_loss(logits, targets, PAD), expected)
    smoothed = seq2seq_loss(logits, targets, PAD, label_smoothing=0.1)
    assert torch.allclose(smoothed, F.cross_entropy(logits[real], targets[real], label_smoothing=0.1))
    with pytest.raises(RagtuneError, match="label_smoothing"):
        seq2seq_loss(logits, targets, PAD, label_smoothing=1.0)


def test_teacher_forcing_batch_shifts_by_one():
    tgt_in, labels = teacher_forcing_batch([[5, 6, 7], [8]], s2s_config())
    assert tgt_in.tolist() == [[BOS, 5, 6, 7], [BOS, 8, PAD, PAD]]
    assert labels.tolist() == [[5, 6, 7, EOS], [8, EOS, PAD, PAD]]


def test_bf16_autocast_forward_and_backward():
    model = build_seq2seq(s2s_config(dropout=0.1))
    src, mask = pad_batch([[5, 6, 7, 8], [9, 10]], PAD)
    tgt_in, labels = teacher_forcing_batch([[5, 6], [7, 8]], model.config)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = seq2seq_loss(model(src, mask, tgt_in), labels, PAD)
    assert torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize(
    "field, value",
    [("heads", 0), ("decoder_layers", 0), ("encoder_layers", -1), ("dropout", 1.0), ("eos_id", 20),
     ("activation", "swish"), ("tgt_vocab_size", 0), ("tie_output", "yes")],
)
def test_config_validation_names_the_field(field, value):
    with pytest.raises(RagtuneError) as info:
        s2s_config(**{field: value})
    assert field in str(info.value)
    assert repr(value) in str(info.value)


def test_config_rejects_sharing_two_vocabularies_and_clashing_special_ids():
    with pytest.raises(RagtuneError, match="share_embeddings"):
        s2s_config(tgt_vocab_size=30)
    with pytest.raises(RagtuneError, match="three different ids"):
        s2s_config(bos_id=EOS)
    with pytest.raises(RagtuneError, match="layers"):
        lm_config(layers=0)
    assert dataclasses.replace(s2s_config(), heads=2).heads == 2


def test_too_long_target_and_bad_ids_are_clear_errors():
    model = build_seq2seq(s2s_config(max_length=6))
    src = random_ids(2, 4)
    with pytest.raises(RagtuneError, match="max_length=6"):
        model(src, None, random_ids(2, 7))
    bad = random_ids(2, 3)
    bad[0, 1] = VOCAB
    with pytest.raises(RagtuneError, match="tgt_vocab_size=20"):
        model(src, None, bad)


# ----------------------------------------------------------------------------------------------
# Learning: copy and reverse
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("task", ["copy", "reverse"])
def test_encoder_decoder_learns_copy_and_reverse(task, copy_model, reverse_model, test_sources):
    model = copy_model if task == "copy" else reverse_model
    refs = test_sources if task == "copy" else [s[::-1] for s in test_sources]
    src, mask = pad_batch(test_sources, PAD)
    hyps = greedy(Seq2SeqStepper(model, src, mask))
    score, accuracy = bleu(hyps, refs), token_accuracy(hyps, refs)
    print(f"{task}: BLEU {score:.1f}, token accuracy {accuracy:.3f}")
    # Chance: a random token is right 1 time in 16; the BLEU of random outputs is about 0.
    assert score > 90, (score, accuracy)
    assert accuracy > 0.95, (score, accuracy)
    assert bleu(beam_search(Seq2SeqStepper(model, src, mask), beam_size=3), refs) > 90


# ----------------------------------------------------------------------------------------------
# Decoding
# ----------------------------------------------------------------------------------------------


def random_stepper(use_cache: bool = True, n: int = 6) -> Seq2SeqStepper:
    """An untrained model, where beams really differ, with an output layer scaled up for sharper distributions."""
    torch.manual_seed(3)
    model = build_seq2seq(s2s_config(max_length=9, tie_output=False))
    with torch.no_grad():
        model.lm_head.weight.mul_(10.0)  # at initialisation every next token is about equally likely
    src, mask = pad_batch(random_seqs(n, torch.Generator().manual_seed(7)), PAD)
    return Seq2SeqStepper(model.eval(), src, mask, use_cache=use_cache)


def test_cached_and_uncached_steppers_decode_the_same():
    cached, plain = random_stepper(True), random_stepper(False)
    assert greedy(cached) == greedy(plain)
    assert beam_search(cached, beam_size=3) == beam_search(plain, beam_size=3)
    assert sample(cached, seed=4) == sample(plain, seed=4)


def test_greedy_equals_beam_search_with_one_beam(copy_model, test_sources):
    step = random_stepper()
    assert beam_search(step, beam_size=1) == greedy(step)
    src, mask = pad_batch(test_sources[:50], PAD)
    trained = Seq2SeqStepper(copy_model, src, mask)
    assert beam_search(trained, beam_size=1) == greedy(trained)


def test_beam_search_scores_at_least_as_well_as_greedy():
    step = random_stepper(n=12)
    limit = step.max_new_tokens
    ended = lambda hyps: [len(h) < limit for h in hyps]
    greedy_hyps = greedy(step)
    beam_hyps, beam_scores = beam_search(step, beam_size=4, return_scores=True)
    greedy_scores = score_sequences(step, greedy_hyps, ended(greedy_hyps))
    rescored = score_sequences(step, beam_hyps, ended(beam_hyps))
    assert torch.allclose(rescored, beam_scores, atol=1e-4)  # beam search reports the model's own score
    assert (beam_scores >= greedy_scores - 1e-4).all(), (beam_scores, greedy_scores)
    assert (beam_scores > greedy_scores + 1e-3).any()  # and it does find better outputs somewhere
    assert beam_hyps != greedy_hyps


def test_length_penalty():
    lengths = torch.tensor([1, 5, 10])
    assert torch.equal(length_penalty_factor(lengths, 0.0), torch.ones(3))
    assert torch.allclose(length_penalty_factor(lengths, 1.0), torch.tensor([1.0, 5.0, 10.0]))  # transformers: len ** lp
    step = random_stepper()
    short = beam_search(step, beam_size=4, length_penalty=0.0)
    long = beam_search(step, beam_size=4, length_penalty=2.0)
    assert sum(map(len, long)) >= sum(map(len, short))


def test_sampling_is_reproducible_by_seed():
    step = random_stepper(n=8)
    first = sample(step, seed=1, temperature=1.5)
    assert sample(step, seed=1, temperature=1.5) == first
    assert sample(step, seed=2, temperature=1.5) != first
    nucleus = sample(step, seed=1, top_p=0.9, top_k=5)
    assert sample(step, seed=1, top_p=0.9, top_k=5) == nucleus


def test_top_k_one_and_tiny_top_p_are_greedy():
    step = random_stepper()
    expected = greedy(step)
    assert sample(step, top_k=1, seed=5) == expected
    assert sample(step, top_p=1e-6, seed=6) == expected


def test_min_new_tokens_suppresses_eos(copy_model):
    step = random_stepper()
    for decode in (greedy, beam_search, sample):
        assert all(len(h) == 5 for h in decode(step, min_new_tokens=5, max_new_tokens=5))
    # The copy model wants to stop after the input's 4 tokens; it may not before 8.
    src, mask = pad_batch([[5, 6, 7, 8], [9, 10, 11, 12, 13]], PAD)
    trained = Seq2SeqStepper(copy_model, src, mask)
    assert greedy(trained) == [[5, 6, 7, 8], [9, 10, 11, 12, 13]]
    forced = greedy(trained, min_new_tokens=8)
    assert min(len(h) for h in forced) >= 8
    assert [h[:4] for h in forced] == [[5, 6, 7, 8], [9, 10, 11, 12]]
    assert all(BOS not in h and PAD not in h for h in forced)


def test_decoding_length_errors():
    step = random_stepper()
    with pytest.raises(RagtuneError, match="max_new_tokens=9"):
        greedy(step, max_new_tokens=9)  # max_length 9 leaves 8 after <s>
    with pytest.raises(RagtuneError, match="min_new_tokens"):
        greedy(step, min_new_tokens=5, max_new_tokens=4)
    with pytest.raises(RagtuneError, match="temperature"):
        sample(step, temperature=0)


# ----------------------------------------------------------------------------------------------
# Decoder-only language model
# ----------------------------------------------------------------------------------------------


def test_decoder_only_shapes_causality_and_left_padding():
    model = build_decoder(lm_config()).eval()
    ids = random_ids(2, 8, seed=1)
    with torch.no_grad():
        logits = model(ids)
        assert logits.shape == (2, 8, VOCAB)
        changed = ids.clone()
        changed[:, 6:] = random_ids(2, 2, seed=2)
        assert torch.allclose(model(changed)[:, :6], logits[:, :6], atol=1e-6)
        # A left-padded row gets the same logits at its real positions as alone.
        short = ids[1, :5]
        batch, mask = pad_batch([ids[0].tolist(), short.tolist()], PAD, left=True)
        padded = model(batch, mask)
        assert torch.allclose(padded[1, 3:], model(short[None])[0], atol=1e-5)
        assert torch.isfinite(padded).all()
        # And the cache, fed a token at a time, agrees with the full pass.
        cache = model.new_cache()
        parts = [model(batch[:, :4], mask[:, :4], cache)]
        parts += [model(batch[:, t : t + 1], mask[:, t : t + 1], cache) for t in range(4, 8)]
        assert torch.allclose(torch.cat(parts, dim=1), padded, atol=1e-5)


def test_decoder_only_learns_to_repeat_the_prefix():
    torch.manual_seed(0)
    model = build_decoder(lm_config())
    opt, sched = warmup_adamw(model)
    g = torch.Generator().manual_seed(1)
    for _ in range(400):
        prefixes = random_seqs(64, g)
        ids, mask = pad_batch([[BOS, *x, SEP, *x, EOS] for x in prefixes], PAD)
        labels = ids[:, 1:].clone()  # (B, T-1): the next token at every position
        for row, x in enumerate(prefixes):
            labels[row, : len(x) + 1] = PAD  # the random prefix cannot be predicted: not in the loss
        loss = seq2seq_loss(model(ids, mask)[:, :-1], labels, PAD)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    model.eval()
    prefixes = random_seqs(100, torch.Generator().manual_seed(5))
    step = CausalLMStepper(model, [[BOS, *x, SEP] for x in prefixes])  # prompts of different lengths
    hyps = greedy(step)
    accuracy = token_accuracy(hyps, prefixes)
    print(f"decoder-only repeat: token accuracy {accuracy:.3f}, BLEU {bleu(hyps, prefixes):.1f}")
    assert accuracy > 0.9
    assert beam_search(step, beam_size=1) == hyps
    assert greedy(CausalLMStepper(model, [[BOS, *x, SEP] for x in prefixes], use_cache=False)) == hyps


def test_causal_lm_stepper_errors():
    model = TransformerForCausalLM(lm_config(max_length=6))
    with pytest.raises(RagtuneError, match="at least one token"):
        CausalLMStepper(model, [[BOS], []])
    with pytest.raises(RagtuneError, match="no room"):
        CausalLMStepper(model, [[BOS, 5, 6, 7, 8, 9]])
