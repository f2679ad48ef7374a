"""LLM fine-tuning on SQuAD with SmolLM2-135M-Instruct: zero-shot, ragtune's LoRA SFT, and TRL's SFTTrainer.

    python benchmarks/llm_sft.py --steps 120 --batch 8 --eval-questions 200        # ~1 h on 2 cores (fp32)
    python benchmarks/llm_sft.py --stages zero-shot,ragtune --steps 4 --eval-questions 8 --out /tmp/sft_quick

The instruction set is built from ``../shared/data/squad_v1.1/dev-part1.json``: its articles split 70/30
(seeded, by article, as ``benchmarks/squad_rag.py``), each question with its gold paragraph cut to
``--context-tokens`` (220) SmolLM2 tokens (questions whose answer falls outside the cut are left out), the
first answer as the response. The model reads, through its chat template, the system prompt "Answer the
question with a short phrase copied from the passage." and the user turn ``{context}\\n\\nQuestion:
{question}``. Every row is trained on the same ``--steps x --batch`` training questions, one epoch (each
tool shuffles them its own way); the same seeded ``--eval-questions`` test questions score each model, with
the same code (greedy ``generate``, the chat template, at most 32 new tokens, SQuAD EM/F1, and the held-out
loss per answer token) whatever trained it.

Stages (each kept in ``OUT/results.json`` as it finishes; a killed run continues):

* ``zero-shot``: the instruct model as it is.
* ``ragtune``: ``ragtune run`` of ``configs/squad_smollm2_sft.yaml`` with the data paths, steps and LoRA
  settings of this run (LoRA r ``--rank`` alpha 2r dropout 0.05 on q/k/v/o, AdamW ``--lr``, linear decay,
  clip 1.0, fp32); tokens/s, peak memory (process RSS) and the loss from the run's own logs.
* ``trl``: ``benchmarks/llm_sft_trl.py`` in ``--peer-python`` (a virtual environment with trl and the same
  torch/transformers/peft): the same model folder, rows, order and settings with ``SFTTrainer``.
* ``ragtune-gc``: ragtune with ``model.gradient_checkpointing: true``, as TRL runs: its ``SFTConfig`` turns
  gradient checkpointing on by default (TRL 1.16), so this is the row at TRL's own settings.
* ``ragtune-best``: ragtune with ``--best-lr`` (the settings a user of ragtune would pick; not a peer row).

LLaMA-Factory is the peer the issue names first; its release on PyPI pins older transformers, peft and trl
than ragtune's, so TRL's ``SFTTrainer`` stands in for it (see BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SQUAD = ROOT.parent / "shared" / "data" / "squad_v1.1" / "dev-part1.json"
CONFIG = ROOT / "configs" / "squad_smollm2_sft.yaml"
SYSTEM = "Answer the question with a short phrase copied from the passage."


def save(out: Path, results: dict) -> None:
    (out / "results.json").write_text(json.dumps(results, indent=1, ensure_ascii=False))


def build_data(out: Path, tokenizer, context_tokens: int, n_train: int, n_eval: int) -> tuple[Path, Path]:
    """OUT/train.jsonl and OUT/test.jsonl: context (cut), question, answer (the first; test: all of them)."""
    from benchmarks.squad_rag import split_file

    train_out, test_out = out / "train.jsonl", out / "test.jsonl"
    if train_out.exists() and test_out.exists():
        return train_out, test_out
    train_json, test_json = split_file(out, 0.3, 0, None)

    def rows(path: Path) -> list[dict]:
        found = []
        for article in json.loads(path.read_text(encoding="utf-8"))["data"]:
            for para in article["paragraphs"]:
                ids = tokenizer(para["context"], add_special_tokens=False)["input_ids"]
                context = tokenizer.decode(ids[:context_tokens]) if len(ids) > context_tokens else para["context"]
                for qa in para["qas"]:
                    answers = [a["text"] for a in qa["answers"] if a["text"].strip()]
                    if answers and answers[0] in context:
                        found.append({"id": qa["id"], "context": context, "question": qa["question"].strip(),
                                      "answer": answers[0], "answers": sorted(set(answers))})
        return found

    train, test = rows(train_json), rows(test_json)
    random.Random(0).shuffle(train)
    test = random.Random(1).sample(test, min(n_eval, len(test)))
    train_out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in train[:n_train]), encoding="utf-8")
    test_out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in test), encoding="utf-8")
    return train_out, test_out


def evaluate(model_dir: str, test: Path, threads: int, batch: int = 16) -> dict:
    """EM/F1 (0-100) of greedy answers of the model in ``model_dir`` on the test rows, and the decoding time."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ragtune.evaluate.qa_metrics import answer_exact_match, answer_f1

    torch.set_num_threads(threads)
    tok = AutoTokenizer.from_pretrained(model_dir)
    tok.padding_side = "left"
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    rows = [json.loads(line) for line in test.read_text(encoding="utf-8").splitlines()]
    prompts = [tok.apply_chat_template([{"role": "system", "content": SYSTEM},
                                        {"role": "user", "content": f"{r['context']}\n\nQuestion: {r['question']}"}],
                                       tokenize=False, add_generation_prompt=True) for r in rows]
    answers, started = [], time.perf_counter()
    with torch.no_grad():
        for i in range(0, len(prompts), batch):
            enc = tok(prompts[i:i + batch], return_tensors="pt", padding=True, add_special_tokens=False)
            out = model.generate(**enc, do_sample=False, max_new_tokens=32, pad_token_id=tok.pad_token_id)
            answers += [t.strip() for t in tok.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)]
    # the held-out loss: mean cross-entropy per answer token (the answer and its end of turn), teacher forced
    total, count = 0.0, 0
    with torch.no_grad():
        for prompt, r in zip(prompts, rows):
            p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
            a_ids = tok(r["answer"] + tok.eos_token, add_special_tokens=False)["input_ids"]
            ids = torch.tensor([p_ids + a_ids])
            logits = model(input_ids=ids).logits[0, len(p_ids) - 1:-1]  # (A, V): the positions predicting the answer
            total += float(torch.nn.functional.cross_entropy(logits.float(), ids[0, len(p_ids):], reduction="sum"))
            count += len(a_ids)
    em = [answer_exact_match(a, r["answers"]) for a, r in zip(answers, rows)]
    f1 = [answer_f1(a, r["answers"]) for a, r in zip(answers, rows)]
    return {"em": round(100 * sum(em) / len(em), 1), "f1": round(100 * sum(f1) / len(f1), 1), "n": len(rows),
            "answer_loss": round(total / count, 4),
            "decode_s": round(time.perf_counter() - started, 1),
            "examples": [{"q": r["question"], "gold": r["answer"], "out": a} for r, a in list(zip(rows, answers))[:5]]}


def run_ragtune(out: Path, name: str, train: Path, test: Path, base: str, args, lr: float,
                gradient_checkpointing: bool = False) -> dict:
    """``ragtune run`` of configs/squad_smollm2_sft.yaml on this run's data and settings; its numbers."""
    import yaml

    run_dir = out / name
    tree = yaml.safe_load(CONFIG.read_text(encoding="utf-8"))
    # validation = test = the test rows: ragtune's own ROUGE on them (decoded once); the epoch's check decodes 20
    tree["data"].update(train=str(train), validation=str(test), test=str(test))
    tree["data"].pop("max_rows", None)
    tree["model"].update(name_or_path=base, max_length=args.max_length, gradient_checkpointing=gradient_checkpointing)
    tree["model"]["lora"].update(r=args.rank, alpha=2 * args.rank, dropout=0.05, save="merged",
                                 target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])
    tree["train"].update(lr=lr, epochs=1, batch_size=args.batch, steps_per_epoch=args.steps, schedule="linear",
                         warmup_steps=0, threads=args.threads, group_by_length=False, precision="fp32",
                         log_every_steps=1)
    tree["eval"]["batch_size"] = args.batch  # the validation loss's batch no larger than training's (peak memory)
    config = out / f"{name}.yaml"
    config.write_text(yaml.safe_dump(tree, allow_unicode=True), encoding="utf-8")
    if not (run_dir / "metrics.json").exists():
        subprocess.run([sys.executable, "-m", "ragtune", "run", str(config), "--out", str(run_dir), "--quiet",
                        "eval.max_decode_rows=20"], check=True)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    steps = [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]
    losses = [s["loss"] for s in steps if "loss" in s]
    t = metrics["training"]
    seconds = [s["elapsed_s"] for s in steps if "loss" in s][-1]  # the training steps, without the epoch's validation
    return {"seconds": seconds, "tokens": t.get("tokens"), "tokens_per_s": round(t["tokens"] / seconds, 1),
            "peak_rss_gib": t.get("peak_memory_gib"), "steps": len(losses),
            "final_loss_last10": round(sum(losses[-10:]) / max(1, len(losses[-10:])), 4), "losses": losses,
            "model_dir": str(run_dir / "hf_model")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="bench_out/llm_sft")
    ap.add_argument("--stages", default="zero-shot,ragtune,trl")
    ap.add_argument("--steps", type=int, default=120)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--best-lr", type=float, default=1e-3)
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--max-length", type=int, default=320)
    ap.add_argument("--context-tokens", type=int, default=220)
    ap.add_argument("--eval-questions", type=int, default=200)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--peer-python", default="/work/venv-peer/bin/python")
    ap.add_argument("--results", default=str(ROOT / "benchmarks" / "results" / "llm_sft.json"),
                    help="the JSON summary written at the end (default benchmarks/results/llm_sft.json)")
    args = ap.parse_args()
    if not SQUAD.exists():
        print(f"skipped: {SQUAD} is not here (see ../shared/data/README.md)")
        return 0
    out = Path(args.out).resolve()  # the run configs name their data by absolute path
    out.mkdir(parents=True, exist_ok=True)
    results = json.loads((out / "results.json").read_text()) if (out / "results.json").exists() else {}
    results["setup"] = {"cpu": platform.processor() or platform.machine(), "threads": args.threads,
                        **{k: getattr(args, k) for k in ("steps", "batch", "lr", "best_lr", "rank", "max_length",
                                                          "context_tokens", "eval_questions")}}
    from transformers import AutoTokenizer

    from ragtune.models.gguf import alias_path, dequantised_folder

    base = out / "base"
    if not (base / "config.json").exists():  # the de-quantised model as a save_pretrained folder, for every tool
        import shutil

        shutil.copytree(dequantised_folder(alias_path("smollm2-135m-instruct")), base)
    train, test = build_data(out, AutoTokenizer.from_pretrained(base), args.context_tokens, args.steps * args.batch,
                             args.eval_questions)
    for stage in args.stages.split(","):
        if stage in results and "answer_loss" in results[stage].get("eval", {}):
            continue
        if stage in results and "eval" in results[stage] and Path(results[stage]["model_dir"]).exists():
            results[stage]["eval"] = evaluate(results[stage]["model_dir"], test, args.threads)  # older results
            save(out, results)
            continue
        print(f"== {stage}", flush=True)
        if stage == "zero-shot":
            row = {"model_dir": str(base)}
        elif stage == "ragtune":
            row = run_ragtune(out, "ragtune", train, test, str(base), args, args.lr)
        elif stage == "ragtune-gc":  # as TRL's SFTConfig does by default (gradient_checkpointing=True)
            row = run_ragtune(out, "ragtune_gc", train, test, str(base), args, args.lr, gradient_checkpointing=True)
        elif stage == "ragtune-best":
            row = run_ragtune(out, "ragtune_best", train, test, str(base), args, args.best_lr)
        elif stage == "trl":
            if not (out / "trl" / "stats.json").exists():
                subprocess.run([args.peer_python, str(ROOT / "benchmarks" / "llm_sft_trl.py"), "--model", str(base),
                                "--train", str(train), "--out", str(out / "trl"), "--steps", str(args.steps),
                                "--batch", str(args.batch), "--lr", str(args.lr), "--rank", str(args.rank),
                                "--max-length", str(args.max_length), "--threads", str(args.threads)],
                               check=True, env={**os.environ, "PYTHONPATH": ""})
            row = {**json.loads((out / "trl" / "stats.json").read_text()), "model_dir": str(out / "trl" / "model")}
        else:
            raise SystemExit(f"unknown stage {stage!r}; choose from zero-shot, ragtune, ragtune-gc, trl, ragtune-best")
        results[stage] = row
        save(out, results)
        row["eval"] = evaluate(row["model_dir"], test, args.threads)
        save(out, results)
        print(json.dumps({k: v for k, v in row.items() if k not in ("losses", "examples")}, ensure_ascii=False), flush=True)
    print("| row | EM | F1 | held-out answer loss | tokens/s | peak RSS GiB | training loss (last 10 steps) | train s |")
    print("|---|---|---|---|---|---|---|---|")
    for stage, row in results.items():
        if stage == "setup" or "eval" not in row:
            continue
        print(f"| {stage} | {row['eval']['em']} | {row['eval']['f1']} | {row['eval'].get('answer_loss', '–')} | "
              f"{row.get('tokens_per_s', '–')} | "
              f"{row.get('peak_rss_gib', '–')} | {row.get('final_loss_last10', '–')} | {row.get('seconds', '–')} |")
    results_file = Path(args.results)
    results_file.write_text(json.dumps({k: ({kk: vv for kk, vv in v.items() if kk != "losses"} if isinstance(v, dict) else v)
                                        for k, v in results.items()}, indent=1, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
