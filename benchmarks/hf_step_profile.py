"""One MiniLM fine-tuning step on the CPU: transformers' attention kernels vs ragtune's, side by side.

    python benchmarks/hf_step_profile.py --threads 2 --steps 6

The same all-MiniLM-L6-v2 sequence classifier (3 labels), the same random batch of 16 × 256 tokens
(optionally with the last 56 positions padded), bf16 autocast, AdamW, gradient clipping; timed per
step (forward / backward / optimizer) after one warm-up step, for:

* ``sdpa``   — transformers' default attention (``torch.nn.functional.scaled_dot_product_attention``)
  and ``nn.Dropout``: what the Hugging Face ``Trainer`` runs;
* ``eager``  — transformers' eager attention and ``nn.Dropout``;
* ``ragtune`` — ``model.fast_cpu_kernels: true``: ragtune's attention registered through
  ``transformers.AttentionInterface`` (eager math, cheaper dropout mask) and ragtune's dropout modules.

All three compute the same function (tests/models/test_hf_backbone.py checks outputs and gradients);
only the kernels differ. Prints a Markdown table and, last, ``RESULT sdpa_s=.. eager_s=.. ragtune_s=.. speedup_vs_sdpa=..``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--padded", action="store_true", help="pad the last 56 positions of every row but the first")
    ap.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "hf_step_profile.json"))
    args = ap.parse_args()

    import torch
    import transformers
    from transformers import AutoModelForSequenceClassification

    from ragtune.models.hf import resolve_name_or_path, use_fast_cpu_kernels

    torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()
    source = resolve_name_or_path("minilm")
    batch, length = 16, 256
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 20000, (batch, length), generator=generator)
    mask = torch.ones(batch, length, dtype=torch.long)
    if args.padded:
        mask[1:, length - 56:] = 0
    labels = torch.randint(0, 3, (batch,), generator=generator)

    def build(kind: str):
        torch.manual_seed(0)
        model = AutoModelForSequenceClassification.from_pretrained(
            source, num_labels=3, dtype=torch.float32, attn_implementation="eager" if kind == "eager" else "sdpa")
        if kind == "ragtune":
            use_fast_cpu_kernels(model)
        return model.train()

    rows = {}
    for kind in ("sdpa", "eager", "ragtune"):
        model = build(kind)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
        parts = {"forward": 0.0, "backward": 0.0, "optimizer": 0.0}
        for step in range(args.steps + 1):
            t0 = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16):
                logits = model(input_ids=ids, attention_mask=mask).logits
            loss = torch.nn.functional.cross_entropy(logits.float(), labels)
            t1 = time.perf_counter()
            loss.backward()
            t2 = time.perf_counter()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            t3 = time.perf_counter()
            if step:  # step 0 warms up
                parts["forward"] += t1 - t0
                parts["backward"] += t2 - t1
                parts["optimizer"] += t3 - t2
        rows[kind] = {k: v / args.steps for k, v in parts.items()}
        rows[kind]["step"] = sum(rows[kind].values())
        print(f"[hf_step_profile] {kind}: {rows[kind]['step']:.3f} s/step", file=sys.stderr, flush=True)

    print("| attention / dropout | forward s | backward s | optimizer s | step s | vs sdpa |\n|---|---|---|---|---|---|")
    for kind, r in rows.items():
        print(f"| {kind} | {r['forward']:.3f} | {r['backward']:.3f} | {r['optimizer']:.3f} | {r['step']:.3f} | "
              f"{rows['sdpa']['step'] / r['step']:.2f}x |")
    dest = Path(args.json)
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps({"rows": rows, "threads": args.threads, "steps": args.steps, "padded": args.padded,
                                "batch": [batch, length], "torch": torch.__version__,
                                "transformers": transformers.__version__,
                                "command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]])},
                               indent=2))
    print(f"RESULT sdpa_s={rows['sdpa']['step']:.3f} eager_s={rows['eager']['step']:.3f} "
          f"ragtune_s={rows['ragtune']['step']:.3f} speedup_vs_sdpa={rows['sdpa']['step'] / rows['ragtune']['step']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
