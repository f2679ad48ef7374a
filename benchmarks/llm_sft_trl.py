"""The peer of ``benchmarks/llm_sft.py``: the same LoRA fine-tune with TRL's ``SFTTrainer`` and peft.

Run by ``llm_sft.py`` in a separate virtual environment that has ``trl`` (the same torch, transformers and
peft as ragtune's), never imported by ragtune::

    /work/venv-peer/bin/python benchmarks/llm_sft_trl.py --model OUT/base --train OUT/train.jsonl \\
        --out OUT/trl --steps 120 --batch 8 --lr 3e-4 --rank 16 --max-length 320

The data are the same rows ragtune trains on (``context``, ``question``, ``answer``) as a conversational
prompt-completion dataset (system prompt, user turn with the passage and question; the assistant's answer
as the completion), so TRL applies the tokenizer's chat template and puts the loss on the completion only,
as ragtune does. One epoch over ``steps x batch`` rows (asked for in file order with a ``SequentialSampler``;
ragtune shuffles them with its seeded stream, so the batches differ), fp32, LoRA on
q/k/v/o, AdamW, linear decay without warmup, gradient clipping at 1.0. Writes ``OUT/trl/model`` (the merged
model, ``save_pretrained``) and ``OUT/trl/stats.json``: training seconds, tokens (every non-padding token of
the rows trained, as ragtune counts them), tokens/s, peak memory of the process, the loss of each step.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

SYSTEM = "Answer the question with a short phrase copied from the passage."


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--train", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--steps", type=int, default=120)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--max-length", type=int, default=320)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = [json.loads(line) for line in Path(args.train).read_text(encoding="utf-8").splitlines()][:args.steps * args.batch]
    data = Dataset.from_list([{
        "prompt": [{"role": "system", "content": SYSTEM},
                   {"role": "user", "content": f"{r['context']}\n\nQuestion: {r['question']}"}],
        "completion": [{"role": "assistant", "content": r["answer"]}]} for r in rows])
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    config = SFTConfig(output_dir=str(out / "checkpoints"), per_device_train_batch_size=args.batch, num_train_epochs=1,
                       max_steps=args.steps, learning_rate=args.lr, lr_scheduler_type="linear", warmup_steps=0,
                       weight_decay=0.0, max_grad_norm=1.0, logging_steps=1, save_strategy="no", report_to=[],
                       max_length=args.max_length, packing=False, completion_only_loss=True, bf16=False, fp16=False,
                       use_cpu=True, dataloader_num_workers=0, seed=0, data_seed=0, disable_tqdm=True)
    lora = LoraConfig(r=args.rank, lora_alpha=2 * args.rank, lora_dropout=0.05, task_type="CAUSAL_LM",
                      target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])
    trainer = SFTTrainer(model=model, args=config, train_dataset=data, processing_class=tokenizer, peft_config=lora)
    # file order (ragtune's batches come from its own seeded shuffle, so they differ anyway)
    trainer._get_train_sampler = lambda *a, **k: torch.utils.data.SequentialSampler(trainer.train_dataset)
    tokens = sum(len(ids) for ids in trainer.train_dataset["input_ids"])
    started = time.perf_counter()
    result = trainer.train()
    seconds = time.perf_counter() - started
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    merged = trainer.model.merge_and_unload()
    merged.save_pretrained(out / "model")
    tokenizer.save_pretrained(out / "model")
    import transformers
    import trl

    stats = {"seconds": round(seconds, 1), "train_runtime": result.metrics.get("train_runtime"), "tokens": tokens,
             "tokens_per_s": round(tokens / seconds, 1), "steps": trainer.state.global_step,
             "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
             "losses": losses, "final_loss_last10": round(sum(losses[-10:]) / len(losses[-10:]), 4),
             "versions": {"trl": trl.__version__, "transformers": transformers.__version__, "torch": torch.__version__}}
    (out / "stats.json").write_text(json.dumps(stats, indent=1))
    print(json.dumps({k: v for k, v in stats.items() if k != "losses"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
