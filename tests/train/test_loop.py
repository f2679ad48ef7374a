"""The training loop: learning, batching, schedules, checkpoints and exact resume."""

import copy
import json

import pytest
import torch

from ragtune.config import TrainConfig
from ragtune.errors import RagtuneError
from ragtune.models.transformer import TransformerConfig, TransformerForRegression, TransformerForSequenceClassification
from ragtune.train.batches import BatchStream, pad_batch
from ragtune.train.checkpoint import load_checkpoint
from ragtune.tasks.classification.recipe import sequence_batch_loss
from ragtune.train.loop import TrainState, train_model
from ragtune.train.optim import lr_factor, optimizer_and_scheduler


def _toy_data(n=64, seed=0):
    """Class 1 texts contain token 5, class 0 texts token 6; lengths vary (padding is exercised)."""
    g = torch.Generator().manual_seed(seed)
    seqs, labels = [], []
    for i in range(n):
        label = i % 2
        length = int(torch.randint(3, 10, (1,), generator=g))
        body = torch.randint(7, 30, (length,), generator=g).tolist()
        body[int(torch.randint(0, length, (1,), generator=g))] = 5 if label else 6
        seqs.append([1] + body)
        labels.append(label)
    return seqs, torch.tensor(labels)


def _model(task="classification", seed=0):
    torch.manual_seed(seed)
    cfg = TransformerConfig(vocab_size=32, max_length=16, d_model=32, heads=2, head_dim=16, layers=1, ffn_dim=64,
                            dropout=0.1, num_outputs=2 if task == "classification" else 1)
    return (TransformerForSequenceClassification if task == "classification" else TransformerForRegression)(cfg)


def _train(model, stream, task, *, cfg, **kw):
    """train_model with the classification recipe's batch loss and the optimizer and schedule of ``cfg``."""
    return train_model(model, stream, sequence_batch_loss(model, stream, task, cfg),
                       *optimizer_and_scheduler(model, cfg, stream.batches_per_pass), cfg=cfg, **kw)


def _evaluator(model, seqs, labels):
    def evaluate():
        model.eval()
        with torch.no_grad():
            ids, mask = pad_batch(seqs)
            logits = model(ids, mask)
        model.train()
        loss = torch.nn.functional.cross_entropy(logits, labels).item()
        return {"loss": loss, "accuracy": (logits.argmax(-1) == labels).float().mean().item()}
    return evaluate


def test_pad_batch_shapes_and_mask():
    ids, mask = pad_batch([[1, 2, 3], [4]])
    assert ids.tolist() == [[1, 2, 3], [4, 0, 0]]
    assert mask.tolist() == [[1, 1, 1], [1, 0, 0]]


def test_stream_is_seeded_and_reshuffles_each_pass():
    seqs, labels = _toy_data(10)
    a, b = BatchStream(seqs, labels, 4, seed=1), BatchStream(seqs, labels, 4, seed=1)
    assert a.batches_per_pass == 3
    first_pass = torch.cat([a.indices(k) for k in range(3)]).tolist()
    assert sorted(first_pass) == list(range(10))  # one pass visits every example once
    second_pass = torch.cat([a.indices(k) for k in range(3, 6)]).tolist()
    assert sorted(second_pass) == list(range(10)) and second_pass != first_pass
    assert [b.indices(k).tolist() for k in (4, 0, 5)] == [a.indices(k).tolist() for k in (4, 0, 5)]


def test_loss_goes_down_and_model_learns(tmp_path):
    seqs, labels = _toy_data()
    model = _model()
    cfg = TrainConfig(optimizer="adamw", lr=3e-3, epochs=6, batch_size=8, seed=0, log_every_steps=1)
    result = _train(model, BatchStream(seqs, labels, 8, seed=0), "classification", cfg=cfg,
                         evaluate=_evaluator(model, seqs, labels), selection_metric="accuracy",
                         out_dir=tmp_path, progress=False)
    losses = [h["train_loss"] for h in result.history]
    assert losses[-1] < 0.5 * losses[0]
    assert result.history[-1]["validation_accuracy"] >= 0.9
    assert result.optimizer_steps == 6 * 8
    log = [json.loads(line) for line in (tmp_path / "train_log.jsonl").read_text().splitlines()]
    assert len(log) == 48 and {"step", "loss", "lr", "tokens_per_s"} <= set(log[0])
    assert (tmp_path / "checkpoints" / "best" / "model.safetensors").exists()


def test_steps_per_epoch_and_grad_accumulation_count_batches(tmp_path):
    seqs, labels = _toy_data(20)
    model = _model()
    stream = BatchStream(seqs, labels, 4, seed=0)  # 5 batches per pass
    cfg = TrainConfig(epochs=2, steps_per_epoch=7, grad_accum_steps=2, batch_size=4)
    seen = []
    original = stream.batch
    stream.batch = lambda k: (seen.append(k), original(k))[1]
    result = _train(model, stream, "classification", cfg=cfg, evaluate=_evaluator(model, seqs, labels),
                         selection_metric="accuracy", progress=False)
    assert result.optimizer_steps == 14
    assert seen == list(range(28))  # one continuous stream across epochs: 14 steps x 2 batches


def test_regression_loss_goes_down():
    seqs, labels = _toy_data()
    targets = labels.float() * 2 - 1
    model = _model("regression")
    cfg = TrainConfig(optimizer="adamw", lr=3e-3, epochs=5, batch_size=8)

    def evaluate():
        with torch.no_grad():
            ids, mask = pad_batch(seqs)
            return {"mse": torch.nn.functional.mse_loss(model(ids, mask), targets).item()}

    before = evaluate()["mse"]
    result = _train(model, BatchStream(seqs, targets, 8, seed=0), "regression", cfg=cfg,
                         evaluate=evaluate, selection_metric="mse", progress=False)
    assert result.history[-1]["validation_mse"] < 0.5 * before


def test_early_stopping_and_epoch_hook():
    seqs, labels = _toy_data(16)
    model = _model()
    calls = []
    cfg = TrainConfig(epochs=10, batch_size=8, early_stopping_patience=2, lr=1e-9, optimizer="sgd")
    result = _train(model, BatchStream(seqs, labels, 8, seed=0), "classification", cfg=cfg,
                         evaluate=lambda: {"accuracy": 0.5, "loss": 1.0}, selection_metric="accuracy",
                         on_epoch_end=lambda epoch, m: calls.append(epoch) or False, progress=False)
    assert result.stopped_early and len(result.history) == 3 and calls == [1, 2, 3]
    result = _train(_model(), BatchStream(seqs, labels, 8, seed=0), "classification",
                         cfg=TrainConfig(epochs=10, batch_size=8), evaluate=lambda: {"accuracy": 0.5},
                         selection_metric="accuracy", on_epoch_end=lambda epoch, m: epoch == 2, progress=False)
    assert result.stopped_early and len(result.history) == 2


def test_a_tie_on_the_metric_goes_to_the_lower_validation_loss():
    seqs, labels = _toy_data(16)
    scores = iter([{"accuracy": 0.5, "loss": 1.0}, {"accuracy": 0.75, "loss": 0.9}, {"accuracy": 0.75, "loss": 0.6},
                   {"accuracy": 0.75, "loss": 0.7}, {"accuracy": 0.5, "loss": 0.1}])
    result = _train(_model(), BatchStream(seqs, labels, 8, seed=0), "classification",
                         cfg=TrainConfig(epochs=5, batch_size=8), evaluate=lambda: next(scores),
                         selection_metric="accuracy", progress=False)
    assert (result.best_epoch, result.best_metric, result.best_loss) == (3, 0.75, 0.6)
    # selecting on the loss itself: no tie-break needed, the lowest loss wins
    scores = iter([{"accuracy": 0.5, "loss": 1.0}, {"accuracy": 0.75, "loss": 0.4}, {"accuracy": 0.9, "loss": 0.4}])
    result = _train(_model(), BatchStream(seqs, labels, 8, seed=0), "classification",
                         cfg=TrainConfig(epochs=3, batch_size=8), evaluate=lambda: next(scores),
                         selection_metric="loss", progress=False)
    assert result.best_epoch == 2


def test_schedules():
    assert lr_factor(0, "constant", 4, 100) == 0.25
    assert lr_factor(3, "linear", 4, 100) == 1.0
    assert lr_factor(52, "linear", 4, 100) == pytest.approx(0.5)
    assert lr_factor(52, "cosine", 4, 100) == pytest.approx(0.5)
    assert lr_factor(100, "cosine", 4, 100) == pytest.approx(0.0)
    assert lr_factor(80, "constant", 0, 100) == 1.0


def test_divergence_names_the_step():
    seqs, labels = _toy_data(16)
    model = _model()
    with torch.no_grad():
        model.encoder.token_embedding.weight.fill_(float("nan")) if hasattr(model, "encoder") and hasattr(model.encoder, "token_embedding") else next(model.parameters()).fill_(float("nan"))
    with pytest.raises(RagtuneError, match=r"loss is nan at epoch 1, step 1"):
        _train(model, BatchStream(seqs, labels, 8, seed=0), "classification",
                    cfg=TrainConfig(epochs=1, batch_size=8), evaluate=lambda: {"accuracy": 0.0},
                    selection_metric="accuracy", progress=False)


def test_resume_after_a_crash_matches_an_uninterrupted_run(tmp_path):
    seqs, labels = _toy_data(40)
    cfg = TrainConfig(optimizer="adamw", lr=2e-3, epochs=3, batch_size=8, schedule="linear", warmup_steps=2,
                      checkpoint_every_steps=3, seed=3)

    def go(out, evaluate_factory, resume=False):
        torch.manual_seed(0)
        model = _model(seed=0)
        result = _train(model, BatchStream(seqs, labels, 8, seed=3), "classification", cfg=cfg,
                             evaluate=evaluate_factory(model), selection_metric="accuracy", out_dir=out,
                             resume=resume, progress=False)
        return model, result

    reference, ref_result = go(tmp_path / "a", lambda m: _evaluator(m, seqs, labels))

    class Crash(Exception):
        pass

    def crashing(model):
        inner, count = _evaluator(model, seqs, labels), [0]

        def evaluate():
            count[0] += 1
            if count[0] == 2:  # die during epoch 2's validation: the newest checkpoint is mid-epoch 2
                raise Crash
            return inner()
        return evaluate

    with pytest.raises(Crash):
        go(tmp_path / "b", crashing)
    state = torch.load(tmp_path / "b" / "checkpoints" / "last" / "state.pt", weights_only=True)
    assert state["epoch"] == 1 and state["step_in_epoch"] == 4  # step 9 of 15
    resumed, res_result = go(tmp_path / "b", lambda m: _evaluator(m, seqs, labels), resume=True)
    for (name, a), (_, b) in zip(reference.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(a, b), name
    assert [h["validation_accuracy"] for h in res_result.history] == [h["validation_accuracy"] for h in ref_result.history]
    assert [round(h["train_loss"], 10) for h in res_result.history] == [round(h["train_loss"], 10) for h in ref_result.history]


def test_train_state_keeps_the_checkpoint_keys_of_earlier_releases():
    state = TrainState(epoch=2, bad_epochs=1, history=[{"epoch": 1}], best_loss=0.5, tokens=7)
    saved = state.state_dict()
    assert set(saved) == {"epoch", "step_in_epoch", "batch_index", "epoch_loss_sum", "epoch_loss_count", "bad_epochs",
                          "history_json", "best_epoch", "best_metric", "best_loss", "optimizer_steps", "tokens"}
    again = TrainState()
    again.load_state_dict(saved)
    assert again == state
    older = {k: v for k, v in saved.items() if k != "best_loss"}  # written before best_loss existed
    again = TrainState()
    again.load_state_dict(older)
    assert again.best_loss is None and again.history == [{"epoch": 1}]


def test_corrupted_checkpoint_is_detected(tmp_path):
    seqs, labels = _toy_data(16)
    model = _model()
    _train(model, BatchStream(seqs, labels, 8, seed=0), "classification",
                cfg=TrainConfig(epochs=1, batch_size=8), evaluate=lambda: {"accuracy": 0.5},
                selection_metric="accuracy", out_dir=tmp_path, progress=False)
    weights = tmp_path / "checkpoints" / "last" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(RagtuneError, match="corrupted"):
        load_checkpoint(tmp_path / "checkpoints" / "last", _model())


def _padding_share(stream, n_batches):
    padded = total = 0
    for k in range(n_batches):
        _, mask, _ = stream.batch(k)
        padded += int((mask == 0).sum())
        total += mask.numel()
    return padded / total


def test_group_by_length_cuts_padding_visits_every_example_and_is_deterministic():
    g = torch.Generator().manual_seed(0)
    seqs = [[1] * int(torch.randint(2, 60, (1,), generator=g)) for _ in range(403)]
    labels = torch.zeros(len(seqs), dtype=torch.long)
    plain = BatchStream(seqs, labels, 4, seed=3)
    grouped = BatchStream(seqs, labels, 4, seed=3, group_by_length=True)
    assert grouped.batches_per_pass == plain.batches_per_pass == 101
    assert _padding_share(grouped, 101) < 0.5 * _padding_share(plain, 101)
    for p in range(2):  # every pass visits every example once, in batches of batch_size (one short batch)
        batches = [grouped.indices(p * 101 + k).tolist() for k in range(101)]
        assert sorted(i for b in batches for i in b) == list(range(len(seqs)))
        assert sorted(len(b) for b in batches) == [3] + [4] * 100
    first = [grouped.indices(k).tolist() for k in range(101)]
    second = [grouped.indices(101 + k).tolist() for k in range(101)]
    assert first != second  # each pass reshuffles
    again = BatchStream(seqs, labels, 4, seed=3, group_by_length=True)
    assert [again.indices(k).tolist() for k in (150, 3, 101, 0)] == [second[49], first[3], second[0], first[0]]
    other = BatchStream(seqs, labels, 4, seed=4, group_by_length=True)
    assert [other.indices(k).tolist() for k in range(101)] != first


def test_layer_lr_decay_groups_and_schedule():
    from ragtune.train.optim import build_optimizer, build_scheduler, layer_decay_scales

    layers = torch.nn.ModuleList([torch.nn.Linear(3, 3) for _ in range(4)])  # embeddings, 2 layers, head
    groups = [list(m.parameters()) for m in layers]
    scales = layer_decay_scales(groups, 0.5)
    assert [s for _, s in scales] == [0.25, 0.5, 1.0, 1.0]  # embeddings lowest; top layer and head get lr
    opt = build_optimizer(layers, "adamw", 0.1, weight_decay=0.01, param_scales=scales)
    lrs = [(g["lr"], g["weight_decay"]) for g in opt.param_groups]
    assert lrs == [(0.025, 0.01), (0.025, 0.0), (0.05, 0.01), (0.05, 0.0), (0.1, 0.01), (0.1, 0.0), (0.1, 0.01), (0.1, 0.0)]
    sched = build_scheduler(opt, "linear", warmup_steps=2, total_steps=10)
    assert [g["lr"] for g in opt.param_groups][::2] == pytest.approx([0.0125, 0.025, 0.05, 0.05])  # warmup step 1 of 2
    opt.step()
    sched.step()
    assert [g["lr"] for g in opt.param_groups][::2] == pytest.approx([0.025, 0.05, 0.1, 0.1])
    sgd = build_optimizer(layers, "sgd", 0.1, param_scales=scales)
    assert [g["lr"] for g in sgd.param_groups] == [0.025, 0.05, 0.1, 0.1]
    with pytest.raises(ValueError, match="leaves out"):
        build_optimizer(layers, "adamw", 0.1, param_scales=scales[:2])
    # the optimizer refuses layer_lr_decay for a model that gives no layer groups (the scratch backbone)
    seqs, labels = _toy_data(8)
    model = _model()
    cfg = TrainConfig(epochs=1, batch_size=4, layer_lr_decay=0.9)
    with pytest.raises(RagtuneError, match="train.layer_lr_decay: 0.9 needs a model with encoder layers"):
        _train(model, BatchStream(seqs, labels, 4, 0), "classification", cfg=cfg,
                    evaluate=_evaluator(model, seqs, labels), selection_metric="accuracy", progress=False)


def test_adamw_runs_the_fused_kernel_and_matches_the_foreach_update():
    from ragtune.train.optim import build_optimizer

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.LayerNorm(4), torch.nn.Linear(4, 2))
    twin = copy.deepcopy(model)
    fused = build_optimizer(model, "adamw", 0.01, weight_decay=0.1)
    assert fused.defaults["fused"] is True  # CPU float parameters: the fused kernel
    reference = torch.optim.AdamW([{"params": g["params_twin"], "weight_decay": g["weight_decay"]} for g in (
        {"params_twin": [p for p in twin.parameters() if p.ndim >= 2], "weight_decay": 0.1},
        {"params_twin": [p for p in twin.parameters() if p.ndim < 2], "weight_decay": 0.0})], lr=0.01, foreach=True)
    x = torch.randn(8, 5)
    start = model[0].weight.detach().clone()
    for _ in range(5):
        for m, opt in ((model, fused), (twin, reference)):
            opt.zero_grad()
            m(x).pow(2).mean().backward()
            opt.step()
    for a, b in zip(model.parameters(), twin.parameters()):
        assert torch.allclose(a, b, atol=1e-6)
    assert not torch.allclose(model[0].weight, start)  # the steps did move the weights


def test_without_timing_drops_only_wall_clock_keys():
    from ragtune.train.loop import without_timing

    metrics = {"test": {"accuracy": 0.9, "n": 10}, "training": {"seconds": 3.2, "tokens_per_s": 100.0, "best_epoch": 2},
               "history": [{"epoch": 1, "elapsed_s": 1.0, "validation_loss": 0.5}], "wall_time": 9.0}
    assert without_timing(metrics) == {"test": {"accuracy": 0.9, "n": 10}, "training": {"best_epoch": 2},
                                       "history": [{"epoch": 1, "validation_loss": 0.5}]}
