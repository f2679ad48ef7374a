"""`torchrun --nproc_per_node 2` for every task on 2 CPU processes (gloo), against one process.

Each rank takes its share of every global batch, weights its loss by that share of the batch's units
(examples, target tokens, answer windows, trained questions: `distributed.global_mean`), and the loop
averages the gradients once per step. So the 2-process run follows the 1-process run with the same global
batch step by step, up to the order of floating-point sums: TOLERANCE below, per logged step. Dropout
is off (its masks differ per rank) and both runs read one tokenizer file (tokenizer training is not
reproducible across processes). The classification test is tests/train/test_distributed.py.

Also checked for each task: one run directory, no scratch folder of rank 1 left, and rank 1 prints
nothing of ragtune's (torchrun's `--redirects 3` keeps each rank's output apart).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from tiny_hf import _small_rows, save_tiny_encoder

from ragtune.cli import main

#: per-step training loss, absolute; the losses are ~0.5-5. Measured: at most ~1e-6 (float32 sums in
#: another order, and a mean of two shares instead of one).
TOLERANCE = 1e-4


def _losses(run_dir: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (run_dir / "train_log.jsonl").read_text().splitlines()]


def _write(folder: Path, tree: dict) -> Path:
    path = folder / "cfg.yaml"
    path.write_text(yaml.safe_dump(tree, allow_unicode=True), encoding="utf-8")
    return path


def _regression(folder: Path, **_) -> Path:
    rows = _small_rows(96, 0)
    rows["label"] = [float(len(t)) / 10 for t in rows.text]  # a number to predict: the text's length
    rows.to_csv(folder / "train.csv", index=False)
    return _write(folder, {
        "task": "regression", "data": {"train": "train.csv"},
        "tokenizer": {"vocab_size": 200, "min_frequency": 1},
        "model": {"heads": 2, "head_dim": 16, "layers": 1, "d_model": 32, "ffn_dim": 64, "max_length": 32, "dropout": 0.0},
        "train": {"optimizer": "adamw", "lr": 3e-3, "epochs": 2, "batch_size": 7, "seed": 1, "threads": 1,
                  "log_every_steps": 1}})


def _translation(folder: Path, **_) -> Path:
    from tasks.translation.test_recipe import make_pairs, write_files

    train = write_files(folder, "train", make_pairs(120, seed=1))
    return _write(folder, {
        "task": "translation", "data": {"train": train},
        "tokenizer": {"vocab_size": 300, "min_frequency": 1},
        "model": {"heads": 2, "head_dim": 16, "layers": 1, "d_model": 32, "ffn_dim": 64, "dropout": 0.0, "max_length": 24},
        "train": {"epochs": 2, "batch_size": 9, "lr": 0.003, "steps_per_epoch": 8, "threads": 1, "seed": 0,
                  "log_every_steps": 1, "label_smoothing": 0.1},
        "eval": {"max_decode_rows": 8}, "decode": {"strategy": "greedy"}})


def _generation(folder: Path, **_) -> Path:
    from tasks.generation.test_recipe import reversal_examples, write_jsonl

    train = write_jsonl(folder / "train.jsonl", reversal_examples(120, seed=0))
    return _write(folder, {
        "task": "generation", "data": {"train": train},
        "tokenizer": {"vocab_size": 300, "min_frequency": 1},
        "model": {"heads": 2, "head_dim": 16, "layers": 1, "d_model": 32, "ffn_dim": 64, "dropout": 0.0, "max_length": 32},
        "train": {"epochs": 2, "batch_size": 9, "lr": 0.003, "optimizer": "adamw", "steps_per_epoch": 8, "threads": 1,
                  "seed": 0, "log_every_steps": 1},
        "eval": {"max_decode_rows": 8}, "decode": {"strategy": "greedy"}})


def _qa(folder: Path, tiny_reader_folder, squad, rag: bool = False, qa_tokenizer=None) -> Path:
    (folder / "squad.json").write_text(json.dumps(squad), encoding="utf-8")
    retrieval = {"corpus": ["squad.json"], "kind": "bm25", "top_k": 2, "distractors": 1, "chunk_tokens": 16,
                 "chunk_overlap": 4}
    if rag:  # RAG training: a dense index whose query encoder trains, re-encoded (on rank 0) after epoch 1
        retrieval = {"corpus": ["squad.json"], "kind": "dense", "top_k": 3, "chunk_tokens": 16, "chunk_overlap": 4,
                     "encoder": str(save_tiny_encoder(folder / "encoder", seed=0, tokenizer=qa_tokenizer)),
                     "train_query_encoder": True, "temperature": 0.1, "refresh_every_epochs": 1}
    return _write(folder, {
        "task": "qa", "data": {"train": "squad.json", "validation_fraction": 0.2, "test_fraction": 0.2},
        "model": {"backbone": "hf", "name_or_path": str(tiny_reader_folder), "max_length": 48, "doc_stride": 8},
        "retrieval": retrieval,
        "train": {"optimizer": "adamw", "lr": 3e-3, "epochs": 2, "batch_size": 7, "seed": 0, "threads": 1,
                  "steps_per_epoch": 6, "log_every_steps": 1},
        "eval": {"batch_size": 16}})


def _torchrun(config: Path, out: Path, tmp_path: Path, extra: list[str]) -> tuple[subprocess.CompletedProcess, Path, Path]:
    scratch, logs = tmp_path / "scratch", tmp_path / "logs"
    scratch.mkdir()
    env = {**os.environ, "TMPDIR": str(scratch), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "--log-dir", str(logs), "--redirects", "3",
                           "-m", "ragtune", "run", str(config), *extra, "--out", str(out), "--quiet"],
                          capture_output=True, text=True, env=env, timeout=600)
    return done, scratch, logs


def _rank_output(logs: Path, rank: int) -> str:
    return "".join(p.read_text(errors="replace") for p in sorted(logs.rglob("*.log")) if p.parent.name == str(rank))


@pytest.mark.parametrize("task", ["regression", "qa", "qa-rag", "translation", "generation"])
def test_two_processes_match_one(task, tmp_path, tiny_reader_folder, people_squad, qa_tokenizer):
    pytest.importorskip("torch.distributed")
    build = {"regression": _regression, "translation": _translation, "generation": _generation,
             "qa": _qa, "qa-rag": lambda f, **kw: _qa(f, rag=True, **kw)}[task]
    config = build(tmp_path, tiny_reader_folder=tiny_reader_folder, squad=people_squad, qa_tokenizer=qa_tokenizer)
    extra = []
    if task not in ("qa", "qa-rag"):  # one tokenizer file for both runs
        from ragtune.tasks import load_config, train_tokenizer_for

        tokenizer = train_tokenizer_for(load_config(str(config)), tmp_path / "tokenizer.json", tmp_path / "demo")
        extra = [f"tokenizer.path={tokenizer}"]

    assert main(["run", str(config), *extra, "--out", str(tmp_path / "single"), "--quiet"]) == 0
    done, scratch, logs = _torchrun(config, tmp_path / "two", tmp_path, extra)
    assert done.returncode == 0, (done.stderr[-3000:], _rank_output(logs, 0)[-3000:], _rank_output(logs, 1)[-3000:])

    single, two = _losses(tmp_path / "single"), _losses(tmp_path / "two")
    assert len(single) == len(two) >= 12
    worst = max(abs(a - b) for a, b in zip(single, two))
    assert worst <= TOLERANCE, (worst, single[:4], two[:4])
    print(f"{task}: largest per-step loss difference over {len(single)} steps: {worst:.2e}")
    m1 = json.loads((tmp_path / "single" / "metrics.json").read_text())
    m2 = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert m2["training"]["tokens"] == m1["training"]["tokens"]  # each rank's tokens counted once
    assert m2["training"]["device"] == "cpu" and m2["training"]["peak_memory_gib"] > 0
    assert list(scratch.iterdir()) == []  # rank 1 worked in a temporary folder and removed it
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("two")) == ["two"]  # one run directory
    assert (tmp_path / "two" / "report.md").exists()
    rank0, rank1 = _rank_output(logs, 0), _rank_output(logs, 1)
    assert "run directory:" in rank0
    ours = [line for line in rank1.splitlines() if line.strip()]
    assert ours == [], ours[:10]  # only rank 0 prints
