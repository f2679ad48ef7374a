"""The retriever trained by a generative reader (REPLUG LSR, ragtune/train/rag.py) and the LM scores it learns from
(GenerationPredictor.example_log_likelihoods)."""

import torch

from tiny_llm import save_tiny_llama

from ragtune.train.rag import lm_supervised_retrieval_loss


def test_the_kl_pulls_the_retriever_toward_the_passage_the_lm_likes():
    sims = torch.tensor([[0.30, 0.20, 0.10]], requires_grad=True)  # the retriever prefers passage 0
    lm = torch.tensor([[-9.0, -1.0, -8.0]])  # the LM writes the answer best after passage 1
    loss = lm_supervised_retrieval_loss(sims, lm, temperature=0.05, lm_temperature=0.1)
    loss.backward()
    assert loss > 0 and sims.grad[0, 1] < 0 < sims.grad[0, 0]  # a step of descent raises passage 1, lowers 0
    agreeing = lm_supervised_retrieval_loss(torch.tensor([[0.1, 0.3, 0.1]]), lm, 0.05, 0.1)
    assert agreeing < loss
    lm_grad = torch.tensor([[-9.0, -1.0, -8.0]], requires_grad=True)
    assert not lm_supervised_retrieval_loss(sims.detach(), lm_grad, 0.05, 0.1).requires_grad  # the LM's scores: a target


def test_example_log_likelihoods_sum_the_response_tokens(tmp_path):
    from ragtune.tasks.generation.predictor import GenerationPredictor
    from ragtune.models.hf_text import load_hf_text_model

    folder = save_tiny_llama(tmp_path / "m")
    tokenizer, model, _ = load_hf_text_model(str(folder), "causal", 48)
    model.eval()
    lm = GenerationPredictor(model, tokenizer, {"prompts": True, "chat": {"template": False}})
    examples = lm.training_examples(["alpha beta", "gamma"], ["beta alpha", "delta delta gamma"])
    with torch.no_grad():
        scores = lm.example_log_likelihoods(examples)  # (2,)
        for row, (ids, prompt_length) in enumerate(examples):  # by hand: the full logits of each example alone
            x = torch.tensor([ids])
            logits = model.hf(input_ids=x).logits[0, :-1]  # (T-1, V)
            logp = torch.log_softmax(logits.float(), -1)[torch.arange(len(ids) - 1), x[0, 1:]]
            assert torch.allclose(scores[row], logp[prompt_length - 1:].sum(), atol=1e-4)


def test_the_query_encoder_trains_at_its_own_learning_rate():
    """retrieval.query_encoder_lr: one AdamW step moves each weight by about its group's rate (Adam's first
    step is lr × sign(grad)), the schedule scales both rates alike."""
    from ragtune.config import TrainConfig
    from ragtune.train.optim import optimizer_and_scheduler
    from ragtune.train.rag import reader_and_encoder_scales

    torch.manual_seed(0)
    model = torch.nn.Module()
    model.reader, model.query_encoder = torch.nn.Linear(4, 4), torch.nn.Linear(4, 4)
    cfg = TrainConfig(optimizer="adamw", lr=3e-4, weight_decay=0.0, warmup_steps=0, schedule="linear", epochs=1,
                      steps_per_epoch=10)
    scales = reader_and_encoder_scales(model, cfg.lr, 1e-5)
    optimizer, scheduler = optimizer_and_scheduler(model, cfg, 10, param_scales=scales)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    (model.reader(torch.randn(8, 4)).sum() + model.query_encoder(torch.randn(8, 4)).pow(2).sum()).backward()
    optimizer.step()
    scheduler.step()
    moved = {k: (v - before[k]).abs().max().item() for k, v in model.state_dict().items()}
    assert abs(moved["reader.weight"] - 3e-4) < 3e-5 and abs(moved["query_encoder.weight"] - 1e-5) < 1e-6
    rates = sorted({round(g["lr"], 12) for g in optimizer.param_groups})
    assert rates == [round(1e-5 * 0.9, 12), round(3e-4 * 0.9, 12)]  # linear decay: 9 of 10 steps left
    assert reader_and_encoder_scales(model, cfg.lr, None) is None  # one rate for both


def test_query_encoder_lr_needs_the_lm_trained_retriever():
    import pytest

    from ragtune.errors import RagtuneError
    from ragtune.tasks import load_config

    with pytest.raises(RagtuneError) as err:
        load_config(None, ["task=qa", "data.train=x.json", "model.name_or_path=m", "retrieval.top_k=2",
                           "retrieval.query_encoder_lr=1e-5"])
    assert "retrieval.query_encoder_lr: only applies with retrieval.train_query_encoder: true" in str(err.value)
