"""Decoding speed of a pretrained LLM through ragtune against a bare ``model.generate`` call: SmolLM2-135M-Instruct.

    python benchmarks/llm_decode_speed.py --threads 2          # ~5 min on 2 cores

ragtune's path is :class:`ragtune.tasks.generation.predictor.GenerationPredictor` (the one ``ragtune predict``,
``eval``, ``/v1/generate`` and the OpenAI endpoints use): the prompts rendered through the chat template,
tokenised, left-padded into batches, ``decode:`` settings mapped onto a ``GenerationConfig``, the outputs cut
at the end of turn and decoded. The bare path is what a user writes by hand: the same ids, the same padding,
``model.generate(input_ids, attention_mask, do_sample=False, num_beams=..., max_new_tokens=...)``, then
``batch_decode``. Both decode the same ``--prompts`` questions in batches of ``--batch`` with at most
``--new-tokens`` new tokens, greedy and beam 4; the median of ``--repeats`` passes, the two taking turns.
The outputs must be equal (checked); the ratio ragtune / bare shows the overhead ragtune adds (1.0: none).

Output: a Markdown table, ``benchmarks/results/llm_decode_speed.json`` and a last line
``RESULT greedy_ratio=.. beam4_ratio=..``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

QUESTIONS = ["What is the capital of France?", "Name three primary colours.", "How many legs does a spider have?",
             "What is the boiling point of water?", "Who wrote Romeo and Juliet?", "What is 12 times 12?",
             "Which planet is the largest?", "What language is spoken in Brazil?"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    import torch

    from ragtune.models.hf_text import load_hf_text_model
    from ragtune.models.seq2seq import pad_batch
    from ragtune.tasks.generation.predictor import GenerationPredictor

    torch.set_num_threads(args.threads)
    tok, model, _ = load_hf_text_model("smollm2-135m-instruct", "causal", 512)
    model.eval()
    prompts = [QUESTIONS[i % len(QUESTIONS)] for i in range(args.prompts)]
    rows = {}
    for mode, beams in (("greedy", 1), ("beam4", 4)):
        decode = {"strategy": "greedy" if beams == 1 else "beam", "beam_size": beams, "max_new_tokens": args.new_tokens,
                  "length_penalty": 1.0}
        predictor = GenerationPredictor(model, tok, {"prompts": True, "chat": {"template": True}, "decode": decode},
                                        batch_size=args.batch)
        inputs = predictor._decoder_inputs(prompts, args.new_tokens)
        order = sorted(range(len(inputs)), key=lambda i: len(inputs[i]))  # the same batches as the predictor's

        def ours() -> list[str]:
            return predictor.complete(prompts)

        @torch.no_grad()
        def bare() -> list[str]:
            out: list[str | None] = [None] * len(inputs)
            for start in range(0, len(order), args.batch):
                rows_ = order[start:start + args.batch]
                ids, mask = pad_batch([inputs[i] for i in rows_], tok.pad_id, left=True)
                gen = model.hf.generate(input_ids=ids, attention_mask=mask.long(), do_sample=False, num_beams=beams,
                                        max_new_tokens=args.new_tokens, pad_token_id=tok.pad_id,
                                        eos_token_id=model.config.eos_ids, length_penalty=1.0, early_stopping=False)
                for i, text in zip(rows_, tok.hf.batch_decode(gen[:, ids.shape[1]:], skip_special_tokens=True)):
                    out[i] = text.strip()
            return out

        a, b = ours(), bare()  # warm-up, and the outputs compared
        same = sum(x == y for x, y in zip(a, b))
        times = {"ragtune": [], "bare": []}
        for _ in range(args.repeats):
            for name, fn in (("ragtune", ours), ("bare", bare)):
                started = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - started)
        med = {k: statistics.median(v) for k, v in times.items()}
        rows[mode] = {"ragtune_s": round(med["ragtune"], 3), "bare_s": round(med["bare"], 3),
                      "ratio": round(med["bare"] / med["ragtune"], 3), "same_outputs": f"{same}/{len(a)}"}
    print(f"SmolLM2-135M-Instruct, {args.prompts} prompts, batch {args.batch}, {args.new_tokens} new tokens at most, "
          f"{args.threads} threads, {platform.processor() or platform.machine()}")
    print("| mode | ragtune s | bare generate s | speed ratio (ragtune / bare) | same outputs |")
    print("|---|---|---|---|---|")
    for mode, r in rows.items():
        print(f"| {mode} | {r['ragtune_s']} | {r['bare_s']} | {r['ratio']} | {r['same_outputs']} |")
    (ROOT / "benchmarks" / "results" / "llm_decode_speed.json").write_text(json.dumps(
        {"settings": vars(args), "results": rows}, indent=1))
    print(f"RESULT greedy_ratio={rows['greedy']['ratio']} beam4_ratio={rows['beam4']['ratio']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
