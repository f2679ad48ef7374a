"""Training throughput of ragtune's Transformer encoder against Hugging Face BERT, on CPU.

    python benchmarks/train_throughput.py [--steps 8] [--warmup 2] [--batch 16] [--seq 256]
                                          [--threads N] [--out table.md]

What it measures, in one process:

* the ceiling: best of 10 square 2048^3 matmuls, fp32 and bf16, in GFLOP/s;
* training steps (forward, cross-entropy, backward, SGD lr 1e-3 momentum 0.9) of
  - ragtune ``TransformerForSequenceClassification``, 4 heads x 64 (the shape BERT can also build),
  - Hugging Face ``BertForSequenceClassification`` at the same shape (random init, SDPA attention),
  - ragtune at the seed config's shape, 6 heads x 64 inside d_model 256,
  - for reference, BERT with its attention-probability dropout set to 0 (ragtune has none),
  all 12 layers, width 256, FFN 1024, dropout 0.1, 3 outputs, batch x seq tokens with no padding,
  in fp32 and in bf16 autocast (``torch.autocast("cpu", dtype=torch.bfloat16)``).

The models of one precision are stepped in turn (round robin), so a busy machine slows all of them
alike; the median step time gives tokens/s. Model FLOPs per step are
6 x non-embedding parameters x tokens + 3 x 2 x 2 x B x H x T^2 x hd x layers (QK^T and AV, forward
and backward); MFU is the achieved GFLOP/s over the bf16 matmul ceiling.

The last line printed is ``RESULT ratio_vs_hf_fp32=<x> ratio_vs_hf_bf16=<x> mfu_bf16=<fraction>``,
where the ratios are ragtune tokens/s over Hugging Face tokens/s at 4 x 64.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone

import torch
import torch.nn.functional as F

from ragtune.models.transformer import TransformerConfig, TransformerForSequenceClassification

LAYERS, WIDTH, FFN, HEAD_DIM, OUTPUTS, DROPOUT = 12, 256, 1024, 64, 3, 0.1


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=8, help="timed training steps per model and precision")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--vocab", type=int, default=30522, help="vocabulary size (BERT's by default)")
    p.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch intra-op threads")
    p.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    p.add_argument("--no-reference", action="store_true", help="skip the BERT row without attention dropout")
    p.add_argument("--out", help="also write the markdown table to this file")
    return p.parse_args(argv)


# --------------------------------------------------------------------------- ceiling


def matmul_gflops(dtype: torch.dtype, n: int = 2048, repeats: int = 10) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    for _ in range(2):
        a @ b
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


# --------------------------------------------------------------------------- models


@dataclass
class Case:
    name: str
    heads: int
    model: torch.nn.Module
    forward: object  # (input_ids, attention_mask) -> logits
    non_embedding_params: int
    times: list[float] = field(default_factory=list)


def ragtune_case(heads: int, args: argparse.Namespace) -> Case:
    config = TransformerConfig(
        vocab_size=args.vocab, max_length=max(512, args.seq), d_model=WIDTH, heads=heads, head_dim=HEAD_DIM,
        layers=LAYERS, ffn_dim=FFN, dropout=DROPOUT, num_outputs=OUTPUTS,
    )
    model = TransformerForSequenceClassification(config)
    return Case(f"ragtune {heads}x{HEAD_DIM}", heads, model, model, model.num_parameters(non_embedding=True))


def hf_case(args: argparse.Namespace, attention_dropout: float = DROPOUT) -> Case:
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(
        vocab_size=args.vocab, hidden_size=WIDTH, num_hidden_layers=LAYERS, num_attention_heads=4,
        intermediate_size=FFN, hidden_act="gelu", hidden_dropout_prob=DROPOUT,
        attention_probs_dropout_prob=attention_dropout, max_position_embeddings=max(512, args.seq),
        num_labels=OUTPUTS,
    )
    config._attn_implementation = "sdpa"
    model = BertForSequenceClassification(config)
    assert model.config._attn_implementation == "sdpa", model.config._attn_implementation
    emb = model.bert.embeddings
    embedding_params = sum(p.numel() for m in (emb.word_embeddings, emb.position_embeddings, emb.token_type_embeddings) for p in m.parameters())
    non_embedding = sum(p.numel() for p in model.parameters()) - embedding_params

    def forward(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return model(input_ids=input_ids, attention_mask=attention_mask).logits

    name = "HF BERT 4x64" if attention_dropout else "HF BERT 4x64, attn-prob dropout 0 (reference)"
    return Case(name, 4, model, forward, non_embedding)


def flops_per_step(case: Case, batch: int, seq: int) -> float:
    dense = 6 * case.non_embedding_params * batch * seq
    attention = 3 * 2 * 2 * batch * case.heads * seq * seq * HEAD_DIM * LAYERS
    return dense + attention


# --------------------------------------------------------------------------- timing


def run_precision(cases: list[Case], precision: str, args: argparse.Namespace) -> None:
    """Warm up, then step the models round robin, recording each step's wall time."""
    g = torch.Generator().manual_seed(0)
    input_ids = torch.randint(1, args.vocab, (args.batch, args.seq), generator=g)
    attention_mask = torch.ones_like(input_ids)  # no padding
    labels = torch.randint(0, OUTPUTS, (args.batch,), generator=g)
    optimizers = [torch.optim.SGD(c.model.parameters(), lr=1e-3, momentum=0.9) for c in cases]
    autocast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if precision == "bf16" else contextlib.nullcontext

    def step(case: Case, optimizer: torch.optim.Optimizer) -> None:
        optimizer.zero_grad(set_to_none=True)
        with autocast():
            logits = case.forward(input_ids, attention_mask)
        loss = F.cross_entropy(logits.float(), labels)
        loss.backward()
        optimizer.step()

    for case, optimizer in zip(cases, optimizers):
        case.model.train()
        case.times = []
        for _ in range(args.warmup):
            step(case, optimizer)
    for _ in range(args.steps):
        for case, optimizer in zip(cases, optimizers):
            t = time.perf_counter()
            step(case, optimizer)
            case.times.append(time.perf_counter() - t)


# --------------------------------------------------------------------------- report


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return platform.processor() or "unknown"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    tokens = args.batch * args.seq
    command = "python benchmarks/train_throughput.py " + " ".join(sys.argv[1:] if argv is None else argv)
    header = [
        f"- command: `{command.strip()}`",
        f"- date: {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- CPU: {cpu_model()}, {os.cpu_count()} logical CPUs, torch threads {torch.get_num_threads()}",
        f"- torch {torch.__version__}, transformers {__import__('transformers').__version__}, python {platform.python_version()}",
        f"- shape: {LAYERS} layers, width {WIDTH}, FFN {FFN}, head_dim {HEAD_DIM}, dropout {DROPOUT}, "
        f"batch {args.batch} x seq {args.seq} = {tokens} tokens/step, no padding, vocab {args.vocab}; "
        f"SGD lr 1e-3 momentum 0.9; {args.warmup} warm-up + {args.steps} timed steps, median step time",
        f"- load average before: {os.getloadavg()[0]:.2f}",
    ]
    print("\n".join(header), flush=True)

    # The ceiling is measured before and after the training runs; the better of the two counts.
    before = {"fp32": matmul_gflops(torch.float32), "bf16": matmul_gflops(torch.bfloat16)}
    print(f"matmul 2048^3 before: fp32 {before['fp32']:.0f} GFLOP/s, bf16 {before['bf16']:.0f} GFLOP/s", flush=True)

    rows = []  # (name, precision, median s, best s, tokens/s, achieved GFLOP/s)
    for precision in args.precisions:
        torch.manual_seed(0)
        cases = [ragtune_case(4, args), hf_case(args), ragtune_case(6, args)]
        if not args.no_reference:
            cases.append(hf_case(args, attention_dropout=0.0))
        run_precision(cases, precision, args)
        for case in cases:
            median = statistics.median(case.times)
            achieved = flops_per_step(case, args.batch, args.seq) / median / 1e9
            rows.append((case.name, precision, median, min(case.times), tokens / median, achieved))
            print(f"{case.name:48s} {precision}  median {median * 1000:7.0f} ms/step  {tokens / median:7.0f} tokens/s  "
                  f"{achieved:6.0f} GFLOP/s", flush=True)
        del cases

    after = {"fp32": matmul_gflops(torch.float32), "bf16": matmul_gflops(torch.bfloat16)}
    print(f"matmul 2048^3 after:  fp32 {after['fp32']:.0f} GFLOP/s, bf16 {after['bf16']:.0f} GFLOP/s", flush=True)
    ceiling = {k: max(before[k], after[k]) for k in before}

    tok_s = {(name, precision): rate for name, precision, _, _, rate, _ in rows}
    gflops = {(name, precision): achieved for name, precision, _, _, _, achieved in rows}

    def ratio(precision: str) -> float:
        hf, rt = tok_s.get(("HF BERT 4x64", precision)), tok_s.get(("ragtune 4x64", precision))
        return rt / hf if hf and rt else float("nan")

    table = [
        "| model | precision | ms/step (median) | ms/step (best) | tokens/s | vs HF same precision | GFLOP/s | MFU (of bf16 ceiling) |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, precision, median, best, rate, achieved in rows:
        hf = tok_s.get(("HF BERT 4x64", precision))
        vs = f"{rate / hf:.2f}x" if hf else "-"
        table.append(f"| {name} | {precision} | {median * 1000:.0f} | {best * 1000:.0f} | {rate:.0f} | {vs} | "
                     f"{achieved:.0f} | {achieved / ceiling['bf16']:.1%} |")
    for precision in ("fp32", "bf16"):
        table.append(f"| matmul 2048³, best of 10 (ceiling) | {precision} | | | | | {ceiling[precision]:.0f} | "
                     f"{ceiling[precision] / ceiling['bf16']:.1%} |")
    mfu_bf16 = gflops.get(("ragtune 4x64", "bf16"), float("nan")) / ceiling["bf16"]
    header.append(f"- load average after: {os.getloadavg()[0]:.2f}")
    result = f"RESULT ratio_vs_hf_fp32={ratio('fp32'):.2f} ratio_vs_hf_bf16={ratio('bf16'):.2f} mfu_bf16={mfu_bf16:.3f}"
    report = "\n".join(header) + "\n\n" + "\n".join(table) + "\n\n`" + result + "`\n"
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(report)
    print()
    print("\n".join(table))
    print(result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
