"""Decoding speed: ragtune's encoder-decoder (``ragtune/models/decoding.py``) against Hugging Face
``generate`` on a same-sized BART, both forced to the same output length.

    python benchmarks/decode_speed.py --threads 1

Both models are randomly initialised at the same shape (``--layers`` encoder and decoder layers,
``--d-model``, ``--heads`` × d_model/heads, FFN ``--ffn``, a shared ``--vocab``-token embedding tied
to the output layer, learned positions, no dropout at inference) and decode the same batches of
random source ids (``--src-len`` tokens, no padding). Every output is forced to exactly
``--new-tokens`` tokens: ragtune with ``min_new_tokens = max_new_tokens = N`` (end-of-sequence
banned until N), Hugging Face with ``min_new_tokens = max_new_tokens = N``. Both reuse their
key/value caches. Modes: greedy, and beam search with 4 beams (length penalty 1.0 on both; with
forced lengths it does not change the ranking). Speed = sentences per second over
``--sentences`` sentences in batches of ``--batch``, after one warm-up batch; the median of
``--repeats`` passes, the two systems taking turns pass by pass.

Output: a Markdown table, JSON in ``benchmarks/results/decode_speed.json`` and a last line
``RESULT greedy_ratio=.. beam4_ratio=..`` (ragtune sentences/s over Hugging Face's).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--vocab", type=int, default=8000)
    ap.add_argument("--d-model", type=int, default=256)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--ffn", type=int, default=1024)
    ap.add_argument("--layers", type=int, default=3)
    ap.add_argument("--src-len", type=int, default=16)
    ap.add_argument("--new-tokens", type=int, default=20)
    ap.add_argument("--sentences", type=int, default=128)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "decode_speed.json")
    args = ap.parse_args()

    import torch
    from transformers import BartConfig, BartForConditionalGeneration

    from ragtune.models.decoding import Seq2SeqStepper, beam_search, greedy
    from ragtune.models.seq2seq import Seq2SeqConfig, build_seq2seq

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    pad, bos, eos = 0, 2, 3
    max_length = args.src_len + args.new_tokens + 2
    ours = build_seq2seq(Seq2SeqConfig(
        src_vocab_size=args.vocab, max_length=max_length, d_model=args.d_model, heads=args.heads,
        head_dim=args.d_model // args.heads, encoder_layers=args.layers, decoder_layers=args.layers,
        ffn_dim=args.ffn, dropout=0.0, pad_id=pad, bos_id=bos, eos_id=eos)).eval()
    hf = BartForConditionalGeneration(BartConfig(
        vocab_size=args.vocab, d_model=args.d_model, encoder_layers=args.layers, decoder_layers=args.layers,
        encoder_attention_heads=args.heads, decoder_attention_heads=args.heads, encoder_ffn_dim=args.ffn,
        decoder_ffn_dim=args.ffn, max_position_embeddings=max_length, dropout=0.0, attention_dropout=0.0,
        activation_dropout=0.0, pad_token_id=pad, bos_token_id=bos, eos_token_id=eos,
        decoder_start_token_id=bos, forced_bos_token_id=None, forced_eos_token_id=None,
        tie_word_embeddings=True)).eval()
    params = {"ragtune": sum(p.numel() for p in ours.parameters()), "hf_bart": sum(p.numel() for p in hf.parameters())}
    print(f"parameters: {params}", flush=True)
    gen = torch.Generator().manual_seed(1)
    batches = [torch.randint(4, args.vocab, (args.batch, args.src_len), generator=gen)
               for _ in range(max(1, args.sentences // args.batch))]
    n = args.new_tokens

    def run_ours(ids, beams):
        mask = torch.ones_like(ids)
        step = Seq2SeqStepper(ours, ids, mask)
        if beams == 1:
            out = greedy(step, max_new_tokens=n, min_new_tokens=n)
        else:
            out = beam_search(step, beam_size=beams, length_penalty=1.0, max_new_tokens=n, min_new_tokens=n)
        assert all(len(o) == n for o in out), [len(o) for o in out]

    def run_hf(ids, beams):
        out = hf.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, min_new_tokens=n,
                          num_beams=beams, do_sample=False, length_penalty=1.0, early_stopping=False)
        assert out.shape[1] - 1 == n, out.shape  # decoder_start + n tokens

    rows = []
    systems = (("ragtune", run_ours), ("hf_generate", run_hf))
    with torch.inference_mode():
        for mode, beams in (("greedy", 1), ("beam4", 4)):
            times: dict[str, list[float]] = {name: [] for name, _ in systems}
            for name, fn in systems:
                fn(batches[0], beams)  # warm-up
            for _ in range(args.repeats):  # the systems take turns, so a change in machine load hits both
                for name, fn in systems:
                    t = time.perf_counter()
                    for ids in batches:
                        fn(ids, beams)
                    times[name].append(time.perf_counter() - t)
            for name, _ in systems:
                sentences = len(batches) * args.batch
                row = {"system": name, "mode": mode, "sentences": sentences,
                       "seconds_median": round(statistics.median(times[name]), 3),
                       "sentences_per_s": round(sentences / statistics.median(times[name]), 1)}
                print(json.dumps(row), flush=True)
                rows.append(row)

    print("\n| mode | system | sentences/s |\n|---|---|---|")
    for r in rows:
        print(f"| {r['mode']} | {r['system']} | {r['sentences_per_s']} |")

    def sps(system, mode):
        return next(r["sentences_per_s"] for r in rows if r["system"] == system and r["mode"] == mode)

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"command": " ".join(["python", "benchmarks/decode_speed.py", *sys.argv[1:]]),
                                    "settings": vars(args) | {"out": str(args.out)}, "parameters": params,
                                    "rows": rows}, indent=2))
    print(f"RESULT greedy_ratio={sps('ragtune', 'greedy') / sps('hf_generate', 'greedy'):.2f} "
          f"beam4_ratio={sps('ragtune', 'beam4') / sps('hf_generate', 'beam4'):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
