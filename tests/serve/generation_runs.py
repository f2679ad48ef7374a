"""Two tiny ``task: generation`` runs for the server tests of the OpenAI-compatible API and the chat page:
one from scratch (ragtune's own decoder, the reversal task of ``tests/tasks/generation/test_recipe.py``:
it replies in one piece) and one fine-tuned from the tiny random Llama of ``tests/tiny_llm.py``
(``model.backbone: hf``: it streams token by token)."""

from __future__ import annotations

import json

from tiny_llm import save_tiny_llama

from ragtune.cli import main as cli_main
from tasks.generation.test_recipe import reversal_examples, tiny_config, write_jsonl


def train_reversal_run(folder):
    """A from-scratch decoder trained a few epochs on word reversal (enough to write words); returns its run dir."""
    train = write_jsonl(folder / "train.jsonl", reversal_examples(300, seed=0))
    config = tiny_config(folder, train, epochs=3, train__threads=1, eval__max_decode_rows=8)
    run_dir = folder / "reversal"
    assert cli_main(["run", config, "--out", str(run_dir), "--quiet"]) == 0
    return run_dir


def train_llama_run(folder):
    """The tiny random Llama fine-tuned one epoch on a few prompt → response pairs (greedy, 64 tokens)."""
    model = save_tiny_llama(folder / "llama")
    rows = [{"prompt": "alpha beta", "response": "gamma delta eps"}, {"prompt": "eta theta", "response": "iota kappa"}] * 12
    (folder / "chat.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    import yaml

    tree = {"task": "generation", "name": "tiny_llama_chat", "data": {"train": "chat.jsonl"},
            "model": {"backbone": "hf", "name_or_path": str(model), "max_length": 64},
            "train": {"epochs": 1, "batch_size": 8, "lr": 0.01, "optimizer": "adamw", "threads": 1, "seed": 0},
            "eval": {"max_decode_rows": 2}, "decode": {"strategy": "greedy", "max_new_tokens": 16}}
    (folder / "llama.yaml").write_text(yaml.safe_dump(tree), encoding="utf-8")
    run_dir = folder / "llama_run"
    assert cli_main(["run", str(folder / "llama.yaml"), "--out", str(run_dir), "--quiet"]) == 0
    return run_dir
