"""The ``ragtune`` command line.

::

    ragtune run CONFIG [KEY=VALUE ...] [--out RUN_DIR] [--overwrite] [--resume RUN_DIR]
    ragtune validate CONFIG [KEY=VALUE ...] [--show]
    ragtune eval RUN_DIR --data FILE
    ragtune tune CONFIG [KEY=VALUE ...] --out DIR [--trials N] [--storage URL] [--workers K]
    ragtune predict RUN_DIR "some text" ...   |   --input in.csv --output out.csv
    ragtune index CORPUS... --out INDEX_DIR [--kind bm25|dense|hybrid] [--encoder minilm]
                  [--faiss flat|hnsw|ivfpq] [--chunk-tokens N] [--chunk-overlap N] [--add] [--overwrite]
    ragtune retrieve INDEX_DIR "query" ... [-k 5] [--rerank RERANKER_DIR] [--candidates 20]
    ragtune eval-retrieval INDEX_DIR --questions SQUAD.json [-k 1 5 10 20] [--rerank RERANKER_DIR] [--candidates 20]
    ragtune train-reranker INDEX_DIR --questions SQUAD.json --out RERANKER_DIR [--base minilm] [--epochs 1]
                  [--negatives 3] [--batch-size 16] [--lr 2e-5] [--max-length 256] [--seed 0] [--overwrite]
    ragtune serve RUN_DIR [--host 127.0.0.1] [--port 8000] [--api-key KEY] [--workers N] [--engine torch|onnx]
    ragtune export RUN_DIR --format onnx [--quantize int8] --out DIR [--data FILE] [--overwrite]
    ragtune explain RUN_DIR "text" [--target LABEL] [--out explanation.html] [--steps 32]
    ragtune env [--json]
    ragtune configs                                   (the packaged example configs; ragtune run NAME runs one)
    ragtune cp NAME [DEST] [--overwrite]
    ragtune rerun RUN_DIR [--out DIR] [--overwrite]

``predict``, ``eval``, ``serve``, ``explain``, ``index``, ``retrieve``, ``eval-retrieval`` and ``train-reranker``
take ``--device`` (default ``auto``: CUDA, else MPS, else the CPU): where the model, the index's encoder
and the reranker run. A device this machine lacks is a user error naming ``--device`` and the choices,
given before anything is loaded or written (ragtune/devices.py).

User errors print one message and exit with code 2 (``--debug`` shows the traceback); Ctrl-C prints one
line (how to resume, where there is something to resume) and exits with code 130.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import logging
import os
import sys
import time
import traceback
from pathlib import Path

from ragtune.version import __version__
from ragtune.errors import RagtuneError, check_regular_file
from ragtune.locks import folder_lock
from ragtune.paths import check_writable_file, check_writable_folder, write_atomically

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for Ctrl-C
#: OSErrors that are the environment's doing (main() reports them as user errors, exit 2).
_ENVIRONMENT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENAMETOOLONG}

EPILOG = """examples:
  ragtune run demo                                    # the packaged demo, a few minutes on 2 cores
  ragtune configs                                     # the packaged example configs; ragtune cp NAME to edit one
  ragtune run configs/seed_news.yaml train.epochs=3 model.layers=4 --out runs/seed
  ragtune run configs/seed_news.yaml --resume runs/seed   # continue a killed run
  ragtune validate configs/seed_news.yaml --show      # check a config, print it resolved
  ragtune tune configs/seed_tune.yaml --out tunes/seed  # Optuna study; the same command resumes it
  ragtune eval runs/seed --data ../shared/data/bbc_news/test.csv
  ragtune predict runs/seed "The chancellor cut interest rates"
  ragtune index ../shared/data/squad_v1.1/dev-part1.json --out indexes/squad --kind hybrid --encoder minilm
  ragtune index more_docs/ --out indexes/squad --add    # add documents to an existing index
  ragtune retrieve indexes/squad "Which team won Super Bowl 50?" -k 3
  ragtune eval-retrieval indexes/squad --questions ../shared/data/squad_v1.1/dev-part1.json
  ragtune train-reranker indexes/squad --questions ../shared/data/squad_v1.1/dev-part1.json --out rerankers/squad
  ragtune retrieve indexes/squad "Which team won Super Bowl 50?" -k 3 --rerank rerankers/squad
  ragtune eval-retrieval indexes/squad --questions other.json --rerank rerankers/squad   # questions not trained on
  ragtune serve runs/seed --port 8000                 # HTTP API + web page at http://127.0.0.1:8000/
  ragtune export runs/seed --format onnx --quantize int8 --out exports/seed
  ragtune serve exports/seed --engine onnx            # serve the int8 ONNX model
  ragtune explain runs/seed "The chancellor cut interest rates" --out why.html
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ragtune",
        description="Build, train, evaluate and use Transformer text models from one YAML file.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"ragtune {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for user errors too")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    parser.commands = sub.choices  # {name: its parser}, for parse_args
    common = argparse.ArgumentParser(add_help=False)  # --debug may also come after the command
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)

    def command(name: str, **kwargs) -> argparse.ArgumentParser:
        return sub.add_parser(name, parents=[common], **kwargs)

    p = command("run", help="prepare data, build, train, evaluate and report (steps 1-4)",
                       description="Run the pipeline for CONFIG; KEY=VALUE pairs override config keys (key=null unsets).")
    p.add_argument("config", help="YAML config file")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides, e.g. train.epochs=3")
    p.add_argument("--out", help="run directory (default: a new folder under runs/)")
    p.add_argument("--overwrite", action="store_true", help="allow --out to be an existing non-empty folder (its contents are replaced)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a killed run from its last checkpoint")
    p.add_argument("--quiet", action="store_true", help="no progress bars")

    p = command("rerun", help="run a finished run again, exactly (its saved config and tokenizer)",
                description="Re-run RUN_DIR from its config.yaml, with its own tokenizer.json for a model trained "
                            "from scratch (a tokenizer trained again differs from process to process), into --out "
                            "(default RUN_DIR-rerun-<date>-<time>). The same seed, data and versions give the same metrics.")
    p.add_argument("run_dir", help="a finished run directory")
    p.add_argument("--out", help="the new run directory")
    p.add_argument("--overwrite", action="store_true", help="replace --out when it holds an earlier run")
    p.add_argument("--quiet", action="store_true", help="no progress bars")

    p = command("configs", help="list the example configs that ship with ragtune (run one by its name)",
                description="The example configs in the package: `ragtune run NAME` runs one, `ragtune cp NAME` "
                            "copies one to edit.")
    p = command("cp", help="copy a packaged example config to edit it (torchtune-style)",
                description="Copy the packaged config NAME to DEST (default ./NAME.yaml; a folder: DEST/NAME.yaml).")
    p.add_argument("name", help="a name from `ragtune configs`, e.g. demo")
    p.add_argument("dest", nargs="?", help="file or folder (default: ./NAME.yaml)")
    p.add_argument("--overwrite", action="store_true", help="replace DEST when it exists")

    p = command("env", help="print what this machine runs: library versions, git commit, CPU and GPUs",
                description="The versions of ragtune and the libraries its results depend on, the git commit of "
                            "the current folder's repository, the CPU (and its vector flags) and the GPUs: what "
                            "every run records in RUN_DIR/environment.json.")
    p.add_argument("--json", action="store_true", help="print JSON (as environment.json) instead of a table")

    p = command("validate", help="check a config and report every error at once",
                       description="Validate CONFIG with overrides and check every input file it names; --show prints it resolved.")
    p.add_argument("config", nargs="?", help="YAML config file (omit with --reference)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    p.add_argument("--show", action="store_true", help="print the resolved config as YAML")
    p.add_argument("--reference", action="store_true", help="print every config key of each task with its type, default and description (Markdown)")
    p.add_argument("--json-schema", action="store_true",
                   help="print the config's JSON Schema, for editors (e.g. VS Code's YAML extension: "
                        "`# yaml-language-server: $schema=ragtune.schema.json` atop a config)")

    p = command("tune", help="tune hyperparameters: an Optuna study whose trials are runs (steps 5-6)",
                       description="Search CONFIG's tune.space with Optuna: each trial is a ragtune run in "
                                   "OUT/trials/ that trains and reports its validation metric each epoch (bad "
                                   "trials are pruned). The study is kept in OUT/study.db (or --storage), so the "
                                   "same command resumes a killed study. Then writes OUT/best.yaml, trials.csv, "
                                   "history/importance/intermediate PNGs, report.md, and evaluates the best "
                                   "trial on the test split once.",
                       epilog="examples:\n"
                              "  ragtune tune configs/seed_tune.yaml --out tunes/seed\n"
                              "  ragtune tune configs/seed_tune.yaml --out tunes/seed --trials 40    # resume, run to 40\n"
                              "  ragtune tune configs/seed_tune.yaml --out tunes/seed --workers 2\n"
                              "  ragtune tune cfg.yaml --out tunes/x --storage postgresql://user:pw@db/optuna   # on each machine\n"
                              "  ragtune run tunes/seed/best.yaml                                    # retrain the best",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", help="YAML config file with a tune: section (tune.space)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides of the base config, e.g. train.epochs=3")
    p.add_argument("--out", required=True, metavar="DIR", help="the study folder (trials, study.db, results); an existing study there resumes")
    p.add_argument("--trials", type=int, metavar="N", help="run until N trials have finished (default: tune.trials)")
    p.add_argument("--timeout", type=float, metavar="SECONDS", help="start no new trial after this long (default: tune.timeout_s)")
    p.add_argument("--storage", metavar="URL",
                   help="Optuna RDB storage URL shared by several processes or machines, e.g. "
                        "postgresql://user:pw@host/db (default: sqlite:///DIR/study.db)")
    p.add_argument("--study-name", help="study name in the storage (default: the config's name, or ragtune)")
    p.add_argument("--workers", type=int, default=1, metavar="K", help="trial processes on this machine (default: 1)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)

    p = command("eval", help="score a labelled file with a trained run; prints metrics as JSON")
    p.add_argument("run_dir", help="a finished run directory")
    p.add_argument("--data", required=True, help="CSV/TSV/JSONL/Parquet file with the run's text and label columns "
                                                 "(translation: its source and target columns, or the source text file with --target)")
    p.add_argument("--target", metavar="FILE", help="translation: the reference text file, line-aligned with --data (a text file of sources)")
    _add_device_option(p)

    p = command("predict", help="predict texts with a trained run; one JSON line per text",
                       description="Predict the given texts, or every row of --input into --output.")
    p.add_argument("run_dir", help="a finished run directory")
    p.add_argument("texts", nargs="*", help="texts to predict")
    p.add_argument("--input", help="file of texts (CSV/TSV/JSONL/Parquet)")
    p.add_argument("--output", help="where to write predictions (CSV; with --input)")
    p.add_argument("--text-column", help="text column of --input (default: the run's data.text_column; `question` for a QA run; "
                                              "a translation run's data.source_column, a generation run's "
                                              "data.prompt_column, else `text`)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --output file")
    p.add_argument("--engine", choices=["torch", "onnx"], default="torch",
                   help="torch: the run's PyTorch model; onnx: RUN_DIR is a `ragtune export` folder (default: torch)")
    _add_device_option(p)
    g = p.add_argument_group("translation / generation decoding (default: the run's decode: section)")
    g.add_argument("--strategy", choices=["greedy", "beam", "sample"], help="decoding strategy")
    g.add_argument("--beam-size", type=int, metavar="K", help="beam: beams per input")
    g.add_argument("--length-penalty", type=float, metavar="E", help="beam: beams ranked by log-probability / length ** E "
                   "(transformers' length_penalty)")
    g.add_argument("--max-new-tokens", type=int, metavar="N", help="most tokens generated per output")
    g.add_argument("--top-k", type=int, metavar="K", help="sample: only the K most probable tokens")
    g.add_argument("--top-p", type=float, metavar="P", help="sample: nucleus sampling")
    g.add_argument("--temperature", type=float, metavar="T", help="sample: softmax temperature")
    g.add_argument("--seed", type=int, help="sample: random seed")
    g.add_argument("--repetition-penalty", type=float, metavar="R", help="pretrained models: transformers' repetition_penalty")
    g.add_argument("--stop", action="append", metavar="TEXT", help="end an output before TEXT (repeatable, up to 4)")

    p = command("index", help="index corpus files for retrieval (BM25, dense or hybrid)",
                       description="Read CORPUS files/folders (txt, md, jsonl, csv/tsv incl. subject/relation/object "
                                   "triples, SQuAD json, pdf), cut them into overlapping passages and build a "
                                   "search index in --out; prints a one-line summary.")
    p.add_argument("corpus", nargs="+", metavar="CORPUS", help="corpus files or folders (searched recursively)")
    p.add_argument("--out", required=True, metavar="INDEX_DIR", help="the index folder (new or empty; see --overwrite, --add)")
    p.add_argument("--kind", choices=["bm25", "dense", "hybrid"],
                   help="bm25 (lexical), dense (embeddings + FAISS) or hybrid (both, fused by RRF); default: bm25")
    p.add_argument("--encoder",
                   help="sentence-transformers model for dense/hybrid: minilm, a local folder or a Hub id (default: minilm)")
    p.add_argument("--faiss", choices=["flat", "hnsw", "ivfpq"],
                   help="FAISS index for dense/hybrid: flat (exact), hnsw, ivfpq (needs 256+ passages); default: flat")
    p.add_argument("--chunk-tokens", type=int, metavar="N", help="passage length in tokens (default: 128)")
    p.add_argument("--chunk-overlap", type=int, metavar="N", help="tokens shared by consecutive passages (default: 32)")
    p.add_argument("--batch-size", type=int, default=64, metavar="N", help="passages per encoder batch (default: 64)")
    p.add_argument("--vectors", metavar="FILE.npy",
                   help="dense/hybrid: precomputed embeddings (rows × dim, one row per corpus record in reading "
                        "order, from --encoder) instead of encoding the passages; --encoder still encodes queries")
    p.add_argument("--add", action="store_true",
                   help="add CORPUS to the existing index INDEX_DIR (its kind, encoder and chunking are kept)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty INDEX_DIR (once the new index is complete)")
    _add_device_option(p)
    p.add_argument("--quiet", action="store_true", help="no progress bars")

    p = command("retrieve", help="search an index; one JSON line per hit",
                       description="Search INDEX_DIR for each query; prints one JSON line per hit, best first: "
                                   "query, rank, id, doc_id, score, title, text, source (and retrieval_score "
                                   "with --rerank).")
    p.add_argument("index_dir", metavar="INDEX_DIR", help="a folder written by `ragtune index`")
    p.add_argument("queries", nargs="+", metavar="QUERY", help="query text(s)")
    p.add_argument("-k", type=int, default=5, help="hits per query (default: 5)")
    _add_rerank_options(p)

    p = command("eval-retrieval", help="score an index on SQuAD-format questions; prints metrics as JSON",
                       description="Retrieve for every answerable question of --questions and score the ranks of "
                                   "its paragraph: recall@k for each -k, mrr@10, ndcg@10, n_questions.")
    p.add_argument("index_dir", metavar="INDEX_DIR", help="a folder written by `ragtune index`")
    p.add_argument("--questions", required=True, metavar="FILE",
                   help="SQuAD-format JSON whose paragraphs are in the index")
    p.add_argument("-k", type=int, nargs="+", default=[1, 5, 10, 20], metavar="K",
                   help="ranks for recall@k (default: 1 5 10 20)")
    _add_rerank_options(p)
    p.add_argument("--quiet", action="store_true", help="no progress bars")

    p = command("train-reranker", help="train a cross-encoder reranker on SQuAD-format questions",
                       description="Train a cross-encoder (initialised from --base) to score (question, passage) "
                                   "pairs: the question's gold passages in INDEX_DIR are positives, the index's "
                                   "top non-gold hits are hard negatives. Writes the model and reranker.json to "
                                   "--out; prints a one-line summary. Use it with retrieve/eval-retrieval --rerank.")
    p.add_argument("index_dir", metavar="INDEX_DIR", help="a folder written by `ragtune index` holding the paragraphs")
    p.add_argument("--questions", required=True, metavar="FILE",
                   help="SQuAD-format JSON whose paragraphs are in the index (answered questions are used)")
    p.add_argument("--out", required=True, metavar="RERANKER_DIR", help="the reranker folder (new or empty; see --overwrite)")
    p.add_argument("--base", default="minilm",
                   help="model to start from: minilm, a local Hugging Face folder (e.g. the reader/ folder of a "
                        "`task: qa` run, which learns much faster than minilm) or a Hub id (default: minilm)")
    p.add_argument("--epochs", type=int, default=1, metavar="N", help="passes over the training pairs (default: 1)")
    p.add_argument("--negatives", type=int, default=3, metavar="N", help="hard negatives per question (default: 3)")
    p.add_argument("--batch-size", type=int, default=16, metavar="N", help="pairs per training step (default: 16)")
    p.add_argument("--lr", type=float, default=2e-5, help="peak learning rate, AdamW (default: 2e-5)")
    p.add_argument("--max-length", type=int, default=256, metavar="N", help="tokens per question+passage pair (default: 256)")
    p.add_argument("--seed", type=int, default=0, metavar="N", help="seed for the new head, shuffling, random negatives (default: 0)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty RERANKER_DIR (once the new reranker is complete)")
    _add_device_option(p)
    p.add_argument("--quiet", action="store_true", help="no progress bars")

    p = command("serve", help="serve a run, an ONNX export or an index over HTTP (FastAPI + uvicorn)",
                       description="Serve PATH (a run directory, a `ragtune export` folder with --engine onnx, or "
                                   "an index folder): POST /v1/predict, /v1/answer or /v1/retrieve (what fits), "
                                   "GET /healthz, /metrics (Prometheus), /docs, /openapi.json, and a web page at /. "
                                   "Batching and limits come from the run's serve: section; the flags override them.",
                       epilog="examples:\n"
                              "  ragtune serve runs/demo                       # http://127.0.0.1:8000/\n"
                              "  RAGTUNE_API_KEY=s3cret ragtune serve runs/demo --host 0.0.0.0\n"
                              "  curl -H 'Authorization: Bearer s3cret' -H 'Content-Type: application/json' \\\n"
                              "       -d '{\"texts\": [\"Parliament passed the budget\"]}' http://127.0.0.1:8000/v1/predict\n"
                              "  ragtune serve exports/demo --engine onnx --workers 2 --threads 1",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("path", metavar="RUN_DIR", help="a finished run, a `ragtune export` folder (--engine onnx) or an index folder")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1; 0.0.0.0 for every interface)")
    p.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    p.add_argument("--api-key", metavar="KEY",
                   help="require this key on every /v1/* call (Authorization: Bearer KEY or X-API-Key: KEY); "
                        "default: the RAGTUNE_API_KEY environment variable, else no key")
    p.add_argument("--workers", type=int, default=1, metavar="N", help="server processes, each with its own copy of the model (default: 1)")
    p.add_argument("--threads", type=int, metavar="N", help="torch / ONNX Runtime threads per process (default: torch's default)")
    p.add_argument("--engine", choices=["torch", "onnx"], default="torch",
                   help="torch: the run's PyTorch model; onnx: a folder written by `ragtune export` (default: torch)")
    _add_device_option(p)
    p.add_argument("--max-batch-size", type=int, metavar="N", help="texts per forward pass (default: serve.max_batch_size, 32)")
    p.add_argument("--max-batch-tokens", type=int, metavar="N",
                   help="token slots per forward pass, 0 for no cap (default: serve.max_batch_tokens, 1024)")
    p.add_argument("--max-wait-ms", type=float, metavar="MS", help="how long a text waits for a batch to fill, 0-1000 (default: serve.max_wait_ms, 5)")
    p.add_argument("--body-timeout-s", type=float, metavar="S",
                   help="seconds a client may take to send a request body; slower or missing bodies get 408 (default: serve.body_timeout_s, 30)")
    p.add_argument("--shutdown-timeout-s", type=float, metavar="S",
                   help="seconds SIGTERM / Ctrl-C waits for requests in flight before cancelling them (default: serve.shutdown_timeout_s, 5)")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"], help="uvicorn log level")

    p = command("board", help="a web page to launch, watch and compare runs and studies",
                description="Start ragtune board: every run and study under --runs with its status and curves\n"
                            "(live while it trains), a study's trials, compare runs, launch `ragtune run` / `tune`\n"
                            "from a form generated from the config schema or pasted YAML, stop and resume them,\n"
                            "serve, export or explain a finished run. Binds to 127.0.0.1 unless --host says\n"
                            "otherwise (another address needs --api-key).",
                epilog="examples:\n"
                       "  ragtune board                                   # ./runs and ./configs, http://127.0.0.1:7860/\n"
                       "  ragtune board --runs tunes --max-parallel 2     # two jobs at once, the rest queued\n"
                       "  RAGTUNE_API_KEY=s3cret ragtune board --host 0.0.0.0",
                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", default="runs", metavar="DIR", help="the folder of runs and studies (default: runs)")
    p.add_argument("--configs", default="configs", metavar="DIR",
                   help="the folder of configs to launch and where pasted configs are saved (default: configs)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    p.add_argument("--port", type=int, default=7860, help="port (default: 7860)")
    p.add_argument("--api-key", metavar="KEY", help="require this key to launch, stop, resume, serve, export and explain (default: the "
                                                     "RAGTUNE_API_KEY environment variable, else none)")
    p.add_argument("--max-parallel", type=int, default=1, metavar="N", help="jobs running at once; more are queued (default: 1)")

    p = command("export", help="export a run to ONNX (optionally int8-quantised) and check it against PyTorch",
                       description="Export a classification or regression run to ONNX with dynamic batch and "
                                   "sequence axes, optionally quantise it to int8 (ONNX Runtime dynamic "
                                   "quantisation), then run both engines on real inputs (the run's test split, or "
                                   "--data) and print the max logit difference and the test metric before and after.",
                       epilog="examples:\n"
                              "  ragtune export runs/demo --format onnx --out exports/demo\n"
                              "  ragtune export runs/demo --format onnx --quantize int8 --out exports/demo-int8\n"
                              "  ragtune serve exports/demo-int8 --engine onnx",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", help="a finished classification or regression run")
    p.add_argument("--format", required=True, choices=["onnx"], help="export format")
    p.add_argument("--quantize", choices=["int8"], help="also write an int8 model (dynamic quantisation of the weights) and serve that")
    p.add_argument("--out", required=True, metavar="DIR", help="the export folder (new or empty; see --overwrite)")
    p.add_argument("--data", metavar="FILE", help="labelled file to check on (default: the run's test split)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out folder")

    p = command("explain", help="which tokens made the prediction: integrated gradients (Captum)",
                       description="Attribute the prediction for TEXT to its tokens with layer integrated "
                                   "gradients on the embeddings (Captum). Prints the explanation as JSON; with "
                                   "--out also writes it as highlighted HTML and a PNG chart beside it. For "
                                   "retrieval runs it lists the passages read, with their retrieval scores and "
                                   "how much leaving each out changes the prediction.",
                       epilog="examples:\n"
                              "  ragtune explain runs/demo \"The central bank raised interest rates\"\n"
                              "  ragtune explain runs/demo \"央行宣布降息\" --target economy --out why.html   # + why.png",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", help="a finished classification or regression run")
    p.add_argument("text", help="the text to explain")
    p.add_argument("--target", metavar="LABEL", help="class to explain (default: the predicted one)")
    p.add_argument("--steps", type=int, default=32, metavar="N", help="integration steps, 1-1000 (default: 32; more is slower and more exact)")
    p.add_argument("--out", metavar="FILE.html", help="write the highlighted text as HTML here, and a PNG chart beside it")
    p.add_argument("--overwrite", action="store_true", help="replace existing --out files")
    _add_device_option(p)
    return parser


def _add_rerank_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rerank", metavar="RERANKER_DIR",
                   help="rerank the hits with a reranker written by `ragtune train-reranker` (scores become its logits)")
    p.add_argument("--candidates", type=int, metavar="N",
                   help="with --rerank: passages retrieved per query before reranking, at least k (default: 20)")
    _add_device_option(p)


DEVICE_HELP = "auto (CUDA, else MPS, else CPU), cpu, cuda, cuda:N or mps; default auto"


def _add_device_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help=DEVICE_HELP)


def _device(args) -> str:
    """``--device``, checked before anything is loaded or written: a device this machine lacks, or a name
    that is no device, is a RagtuneError naming ``--device`` and the choices (:func:`ragtune.devices.resolve`).
    ``auto`` and ``cpu`` need no check, and no torch (a BM25 index never loads it)."""
    spec = str(args.device).strip().lower()
    if spec not in ("auto", "cpu"):
        from ragtune.devices import resolve

        resolve(spec, key="--device")
    return spec


# Upper bounds of the integer flags that size work or memory (an absurd value would run for days or
# allocate without end before failing); each is far above any useful setting. README "Limits" lists them.
FLAG_LIMITS = {
    "--steps": 1000,  # integrated-gradients steps (Captum: 20-300 is plenty)
    "-k": 10_000, "--candidates": 10_000,  # hits per query (retrieve, eval-retrieval), reranked candidates
    "--chunk-tokens": 8192, "--chunk-overlap": 8191,
    "--batch-size": 4096, "--max-length": 8192, "--negatives": 1000, "--epochs": 1000,
    "--beam-size": 128, "--max-new-tokens": 8192, "--top-k": 1_000_000,
    "--workers": 256, "--threads": 1024, "--max-batch-size": 4096, "--max-batch-tokens": 1_048_576,
}


def _check_range(flag: str, value: int | None, low: int = 1, high: int | None = None) -> None:
    """``flag``'s ``value`` must lie in ``low..high`` (``high``: :data:`FLAG_LIMITS`); None (not given) passes."""
    high = FLAG_LIMITS[flag] if high is None else high
    if value is not None and not low <= value <= high:
        raise RagtuneError(f"{flag} must be {low}-{high:,} (got {value:,})")


def _check_ranges(args, flags: dict[str, int]) -> None:
    """The upper bound of each ``{flag: lowest value}`` that ``args`` holds (a value below the lowest is
    refused, in its own words, where the value is used); the message gives the whole range."""
    for flag, low in flags.items():
        value = getattr(args, flag.lstrip("-").replace("-", "_"))
        if value is not None and value > FLAG_LIMITS[flag]:
            _check_range(flag, value, low)


# -------------------------------------------------------------------------------------------------


def cmd_run(args) -> int:
    from ragtune import api

    if args.resume and args.out and Path(args.out).resolve() != Path(args.resume).resolve():
        raise RagtuneError("give either --resume RUN_DIR or --out RUN_DIR, not two different folders")
    plan = api.plan_run(args.config, args.resume or args.out, args.overrides, resume=bool(args.resume),
                        overwrite=args.overwrite)
    args.resume_hint = plan.interrupt_hint
    result = api.execute(plan, progress=not args.quiet)
    if int(os.environ.get("RANK", "0")) != 0:  # torchrun: the other ranks trained in a scratch folder; rank 0 reports
        return 0
    summary = {split: m if split == "retrieval" else {k: v for k, v in m.items() if isinstance(v, (int, float)) or v is None}
               for split, m in result.metrics.items()}  # retrieval: the neighbours' own accuracy per split
    print(json.dumps(summary, indent=2, ensure_ascii=False))
    print(f"run directory: {plan.run_dir}\nreport: {plan.run_dir / 'report.md'}")
    return 0


class _TuneConsole(logging.Filter):
    """During a study only its own lines (and warnings) reach the console; each trial logs into its run.log."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.name.startswith("ragtune.tune") or record.levelno >= logging.WARNING


def cmd_tune(args) -> int:
    from ragtune.config import check_inputs
    from ragtune.tuning.study import check_storage_url

    for flag, value in (("--trials", args.trials), ("--workers", args.workers)):
        if value is not None and value < 1:
            raise RagtuneError(f"{flag} must be at least 1 (got {value})")
    _check_ranges(args, {"--workers": 1})
    if args.timeout is not None and not args.timeout > 0:
        raise RagtuneError(f"--timeout must be a positive number of seconds (got {args.timeout:g})")
    if args.storage is not None:
        check_storage_url(args.storage)
    from ragtune.api import config_file, load_config as load_config_and_data, packaged_data_hint  # hf:// data too

    args.config = config_file(args.config)  # or a packaged config's name
    cfg = load_config_and_data(args.config, args.overrides)
    try:
        check_inputs(cfg, args.config)
    except RagtuneError as exc:
        raise RagtuneError(f"{exc}{packaged_data_hint(args.config, str(exc))}") from None
    from ragtune.train import tracking

    tracking.check_available(cfg.train.report_to)
    out = Path(args.out)
    # The study folder has one parent process; its --worker children share the parent's lock.
    with contextlib.nullcontext() if args.worker else folder_lock(out):
        return _tune(args, cfg, out)


def _tune(args, cfg, out: Path) -> int:
    from ragtune.tuning import tune

    from ragtune.api import check_study_folder

    check_study_folder(out, args.storage)
    console = [h for h in logging.getLogger("ragtune").handlers if isinstance(h, logging.StreamHandler)
               and getattr(h, "stream", None) is sys.stderr]
    for h in console:
        h.addFilter(_TuneConsole())
    worker_args = [str(Path(args.config).resolve()), *args.overrides, "--out", str(out.resolve()), "--quiet"]
    args.resume_hint = "run the same command again to resume the study"
    if args.study_name:
        worker_args += ["--study-name", args.study_name]
    if args.timeout is not None:
        worker_args += ["--timeout", str(args.timeout)]
    result = tune(cfg, out, config_path=args.config, trials=args.trials, storage=args.storage,
                  study_name=args.study_name, workers=args.workers, timeout_s=args.timeout,
                  progress=not args.quiet and not args.worker, worker_args=worker_args, worker=args.worker)
    if result is None:
        return 0
    print(json.dumps({"best_trial": result.best_trial, f"validation_{result.metric}": round(result.best_value, 6),
                      "best_params": result.best_params,
                      "test": {k: v for k, v in result.test_metrics.items() if isinstance(v, (int, float))},
                      "trials": result.counts, "study_minutes": round(result.wall_seconds / 60, 1)},
                     indent=2, ensure_ascii=False))
    print(f"best config: {out / 'best.yaml'}\nreport: {out / 'report.md'}")
    return 0


def cmd_rerun(args) -> int:
    from ragtune import api

    result = api.rerun(args.run_dir, args.out, overwrite=args.overwrite, progress=not args.quiet)
    print(json.dumps({split: {k: v for k, v in m.items() if isinstance(v, (int, float))} for split, m in
                      result.metrics.items() if isinstance(m, dict)}, indent=2, ensure_ascii=False))
    print(f"run directory: {result.run_dir}")
    return 0


def cmd_configs(args) -> int:
    from ragtune.api import describe_config, packaged_configs

    configs = packaged_configs()
    width = max(map(len, configs), default=0)
    for name, path in configs.items():
        print(f"{name:<{width}}  {describe_config(path)}")
    print(f"\n{len(configs)} configs in {next(iter(configs.values())).parent if configs else '-'}: "
          "ragtune run NAME runs one, ragtune cp NAME copies one to edit")
    return 0


def cmd_cp(args) -> int:
    from ragtune.api import packaged_configs

    configs = packaged_configs()
    if args.name not in configs:
        from difflib import get_close_matches

        close = get_close_matches(args.name, list(configs), n=1)
        raise RagtuneError(f"no packaged config {args.name!r}" + (f" (did you mean {close[0]!r}?)" if close else "")
                           + f"; choose one of {', '.join(configs)}")
    source = configs[args.name]
    dest = Path(args.dest) if args.dest else Path(f"{args.name}.yaml")
    if dest.is_dir():
        dest = dest / source.name
    if dest.exists() and not args.overwrite:
        raise RagtuneError(f"{dest} exists; choose another DEST or add --overwrite")
    check_writable_file(dest, "DEST")
    text = source.read_text(encoding="utf-8")
    write_atomically(dest, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"), "DEST")
    print(f"copied {args.name} to {dest}")
    if "../" in text:
        print("its data paths are relative to the copy's folder now: edit data.* (the header says where the data "
              "comes from)")
    return 0


def cmd_env(args) -> int:
    from ragtune import environment

    info = environment.describe()
    print(json.dumps(info, indent=2, ensure_ascii=False) if args.json else "\n".join(environment.lines(info)))
    return 0


def cmd_validate(args) -> int:
    from ragtune.config import check_inputs, to_yaml
    from ragtune.tasks import config_reference, load_config

    if args.reference:
        print(config_reference())
        return 0
    if args.json_schema:
        from ragtune.tasks import config_json_schema

        print(json.dumps(config_json_schema(), indent=1, ensure_ascii=False))
        return 0
    if not args.config:
        raise RagtuneError("validate needs a CONFIG file (or --reference, or --json-schema)")
    from ragtune.api import config_file

    args.config = config_file(args.config)  # or a packaged config's name
    cfg = load_config(args.config, args.overrides)
    try:
        check_inputs(cfg, args.config)
    except RagtuneError as exc:
        from ragtune.api import packaged_data_hint

        raise RagtuneError(f"{exc}{packaged_data_hint(args.config, str(exc))}") from None
    if cfg.tune.space:  # a tuning config: its space is checked too
        from ragtune.tuning import parse_space

        parse_space(cfg, cfg.tune.space, cfg.tune.sampler)
    if args.show:
        print(to_yaml(cfg), end="")
    else:
        print(f"{args.config}: OK")
    return 0


def _run_config(run_dir: Path):
    from ragtune.api import run_config

    return run_config(run_dir)


def cmd_eval(args) -> int:
    from ragtune.tasks import task_of

    run_dir = Path(args.run_dir)
    device = _device(args)
    cfg = _run_config(run_dir)
    if args.data is not None:
        check_regular_file(args.data, "--data")
    metrics = task_of(cfg.task).recipe().evaluate_file(cfg, run_dir, args.data, args.target, device)
    print(json.dumps(metrics, indent=2, ensure_ascii=False))
    return 0


def _check_utf8(texts: list[str], noun: str, numbered: bool = True) -> None:
    """Refuse command-line texts holding bytes that are not UTF-8 (argv decodes them to lone surrogates)."""
    for i, text in enumerate(texts, start=1):
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            try:  # bytes that were not UTF-8 (argv's surrogateescape): show them as \\xNN
                shown = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
            except UnicodeEncodeError:  # another lone surrogate (a text passed to main() from Python)
                shown = text.encode("utf-8", "backslashreplace").decode("utf-8")
            where = f"{noun} {i}" if numbered else noun
            raise RagtuneError(f"{where} ('{shown}') is not valid UTF-8; give the text in UTF-8 "
                               "(or set a UTF-8 locale in the terminal)") from None


def cmd_predict(args) -> int:
    from ragtune.tasks import task_of

    run_dir = Path(args.run_dir)
    _check_utf8(args.texts, "text")
    _check_ranges(args, {"--beam-size": 1, "--max-new-tokens": 1, "--top-k": 1})
    device = _device(args)
    if bool(args.texts) == bool(args.input):
        raise RagtuneError("give texts to predict, or --input FILE (with --output FILE), not both or neither")
    if args.input:
        _check_output(args)  # before the model is loaded
    cfg = _run_config(run_dir)
    task = task_of(cfg.task)
    predictor = task.load_predictor(run_dir, cfg.eval.batch_size, engine=args.engine, device=device)
    if task.endpoint == "/v1/answer":
        return _predict_qa(args, predictor)
    if task.endpoint == "/v1/translate":
        return _predict_text(args, predictor, cfg.data.source_column, "translations")
    if task.endpoint == "/v1/generate":
        return _predict_text(args, predictor, cfg.data.prompt_column or cfg.data.text_column, "outputs")
    if args.texts:
        _warn_empty(args.texts, "text")
        return _print_json_lines(predictor.predict(args.texts))
    df, texts = _read_input_texts(args, args.text_column or cfg.data.text_column)
    predictions = predictor.predict(texts)
    if predictor.labels:  # classification (a regression run has no labels)
        df["predicted_label"] = [p["label"] for p in predictions]
        for label in predictor.labels:
            df[f"score_{label}"] = [p["scores"][label] for p in predictions]
        if predictor.retriever is not None:  # the passages each text was read with, best first
            df["passage_ids"] = [" ".join(h["id"] for h in p["passages"]) for p in predictions]
    else:
        df["predicted_value"] = [p["value"] for p in predictions]
    return _write_predictions(df, args.output, "predictions")


def _check_output(args) -> None:
    """``--output`` is given, may be written, and is not an existing file without ``--overwrite``."""
    if not args.output:
        raise RagtuneError("--input needs --output FILE (a CSV to write the predictions to)")
    check_writable_file(args.output, "--output")
    if Path(args.output).exists() and not args.overwrite:
        raise RagtuneError(f"--output {args.output} exists; add --overwrite to replace it")


def _read_input_texts(args, column: str):
    """``(table, texts)`` of ``--input``, every row in file order (a blank line of a CSV/TSV is a row with
    an empty text); checks first that ``--output`` is given and may be written. Empty or whitespace-only
    texts are kept (rows in = rows out) and named in one warning on stderr."""
    from ragtune.data.io import read_table, require_columns

    _check_output(args)
    check_regular_file(args.input, "--input")
    df = read_table(args.input, keep_blank_lines=True)
    require_columns(df, args.input, [column])
    texts = df[column].fillna("").astype(str).tolist()
    _warn_empty(texts, "row", f" of {args.input}")
    return df, texts


def _warn_empty(texts: list[str], noun: str, where: str = "") -> None:
    """One warning on stderr naming the (1-based) numbers of the texts that are empty or whitespace only
    (``noun``: "row", "text", "question"; ``where``: e.g. " of in.csv"). They are still predicted."""
    empty = [i for i, t in enumerate(texts, start=1) if not t.strip()]
    if not empty:
        return
    shown = ", ".join(map(str, empty[:20])) + (f" and {len(empty) - 20} more" if len(empty) > 20 else "")
    if len(empty) == 1:
        print(f"warning: {noun} {shown}{where} is empty or whitespace only; its prediction carries no information",
              file=sys.stderr)
    else:
        print(f"warning: {noun}s {shown}{where} are empty or whitespace only; their predictions carry no "
              "information", file=sys.stderr)


def _write_atomically(path: Path, write, flag: str | None = None) -> None:
    """``write(tmp)``, then move the temporary file onto ``path``, so a failure leaves no half-written file
    and no temporary file; an OSError (a full disk) becomes a RagtuneError naming ``flag`` and ``path``."""
    write_atomically(path, write, flag)


def _write_predictions(df, output: str, noun: str) -> int:
    """Write ``df`` to the CSV ``output`` (through a temporary file) and say how many ``noun`` it holds."""
    _write_atomically(Path(output), lambda tmp: df.to_csv(tmp, index=False), "--output")
    print(f"wrote {len(df)} {noun} to {output}")
    return 0


def _print_json_lines(rows) -> int:
    """Print each row as one line of JSON."""
    for row in rows:
        print(json.dumps(row, ensure_ascii=False))
    return 0


def _predict_text(args, predictor, own_column: str, noun: str) -> int:
    """``ragtune predict`` on a translation or generation run: each text gets its ``output``."""
    overrides = {k: getattr(args, k) for k in ("strategy", "beam_size", "length_penalty", "max_new_tokens", "top_k",
                                               "top_p", "temperature", "seed", "repetition_penalty", "stop")}
    if args.texts:
        _warn_empty(args.texts, "text")
        return _print_json_lines(predictor.generate(args.texts, **overrides))
    column = args.text_column
    if column is None and args.input and args.output and Path(args.input).is_file():
        from ragtune.data.io import read_table

        columns = [str(c) for c in read_table(args.input).columns]  # the run's own column, else `text`
        column = own_column if own_column in columns or "text" not in columns else "text"
    df, texts = _read_input_texts(args, column or own_column)
    df["output"] = [r["output"] for r in predictor.generate(texts, progress=True, **overrides)]
    return _write_predictions(df, args.output, noun)


def _predict_qa(args, predictor) -> int:
    """``ragtune predict`` on a QA run: the texts are questions; each gets its answer and the passages read."""
    if args.texts:
        _warn_empty(args.texts, "question")
        return _print_json_lines(predictor.answer(args.texts))
    df, questions = _read_input_texts(args, args.text_column or "question")
    results = predictor.answer(questions)
    df["answer"] = [r["answer"] for r in results]
    df["answer_score"] = [r["score"] for r in results]
    df["answer_passage_id"] = [(r.get("passage") or {}).get("id") for r in results]
    if results and "citations" in results[0]:  # a generative reader
        df["answer_citations"] = [" ".join(r["citations"]) for r in results]
        df["abstained"] = [r["abstained"] for r in results]
    return _write_predictions(df, args.output, "answers")


def cmd_index(args) -> int:
    from ragtune.retrieval import add_to_index, build_index
    from ragtune.retrieval import index as defaults
    from ragtune.retrieval.manifest import read_manifest

    start = time.perf_counter()
    out = Path(args.out)
    _check_ranges(args, {"--chunk-tokens": 1, "--chunk-overlap": 0, "--batch-size": 1})
    device = _device(args)
    settings = {"--kind": args.kind, "--encoder": args.encoder, "--faiss": args.faiss,
                "--chunk-tokens": args.chunk_tokens, "--chunk-overlap": args.chunk_overlap, "--vectors": args.vectors}
    if args.add:
        if args.overwrite:
            raise RagtuneError("give either --add (extend INDEX_DIR) or --overwrite (replace it), not both")
        given = [name for name, value in settings.items() if value is not None]
        if given:
            raise RagtuneError(f"--add keeps the settings the index was built with; leave out {', '.join(given)} "
                               "(or rebuild the index with --overwrite)")
        with folder_lock(out):
            add_to_index(out, args.corpus, batch_size=args.batch_size, progress=not args.quiet, device=device)
    else:
        with folder_lock(out):
            build_index(args.corpus, out, kind=args.kind or defaults.DEFAULT_KIND,
                        encoder=args.encoder or defaults.DEFAULT_ENCODER, faiss_index=args.faiss or defaults.DEFAULT_FAISS,
                        chunk_tokens=defaults.DEFAULT_CHUNK_TOKENS if args.chunk_tokens is None else args.chunk_tokens,
                        chunk_overlap=defaults.DEFAULT_CHUNK_OVERLAP if args.chunk_overlap is None else args.chunk_overlap,
                        batch_size=args.batch_size, progress=not args.quiet, overwrite=args.overwrite,
                        vectors=args.vectors, device=device)
    manifest = read_manifest(out)
    last = manifest["history"][-1]
    verb = "added" if args.add else "indexed"
    print(f"{verb} {last['documents']} documents as {last['passages_added']} passages "
          f"({last['duplicates_removed']} duplicates removed) in {time.perf_counter() - start:.1f} s: "
          f"{out} ({manifest['kind']}, {manifest['passages']} passages in all)")
    return 0


def _maybe_reranked(args, index):
    """``index`` wrapped in a RerankedIndex when ``--rerank`` is given."""
    if args.rerank is None:
        if args.candidates is not None:
            raise RagtuneError("--candidates applies to reranking; add --rerank RERANKER_DIR (or leave out --candidates)")
        return index
    from ragtune.retrieval.rerank import DEFAULT_CANDIDATES, RerankedIndex, load_reranker

    candidates = DEFAULT_CANDIDATES if args.candidates is None else args.candidates
    if candidates < 1:
        raise RagtuneError(f"--candidates must be at least 1 (got {candidates})")
    _check_range("--candidates", candidates)
    return RerankedIndex(index, load_reranker(args.rerank, device=args.device), candidates=candidates)


def cmd_retrieve(args) -> int:
    from ragtune.retrieval import load_index

    _check_utf8(args.queries, "QUERY")
    _check_ranges(args, {"-k": 1, "--candidates": 1})
    device = _device(args)
    index = _maybe_reranked(args, load_index(args.index_dir, device=device))
    return _print_json_lines({"query": query, "rank": rank, **hit.to_dict()}
                             for query, hits in zip(args.queries, index.search_batch(args.queries, args.k))
                             for rank, hit in enumerate(hits, start=1))


def cmd_eval_retrieval(args) -> int:
    from ragtune.retrieval import evaluate_retrieval, load_index

    for k in args.k:
        if k > FLAG_LIMITS["-k"]:
            _check_range("-k", k)
    _check_ranges(args, {"--candidates": 1})
    device = _device(args)
    index = _maybe_reranked(args, load_index(args.index_dir, device=device))
    metrics = evaluate_retrieval(index, args.questions, ks=args.k, progress=not args.quiet)
    print(json.dumps(metrics, indent=2, ensure_ascii=False))
    return 0


def cmd_train_reranker(args) -> int:
    from ragtune.retrieval import load_index
    from ragtune.retrieval.rerank import read_reranker_info, train_reranker

    start = time.perf_counter()
    out = check_writable_folder(args.out, "--out")  # before the index and the base model are loaded
    _check_ranges(args, {"--epochs": 1, "--negatives": 0, "--batch-size": 1, "--max-length": 1})
    device = _device(args)
    index = load_index(args.index_dir, progress=not args.quiet, device=device)
    with folder_lock(out):
        train_reranker(index, args.questions, out, base=args.base, negatives=args.negatives, epochs=args.epochs,
                       batch_size=args.batch_size, lr=args.lr, max_length=args.max_length, seed=args.seed,
                       progress=not args.quiet, overwrite=args.overwrite, device=device)
    info = read_reranker_info(out)
    counts, loss = info["counts"], info["loss"]
    print(f"trained a reranker on {counts['questions']} questions ({counts['positives']} positive, "
          f"{counts['hard_negatives'] + counts['random_negatives']} negative pairs; {counts['steps']} steps, "
          f"loss {loss['first_epoch']:.4f} -> {loss['last_epoch']:.4f}) in {time.perf_counter() - start:.1f} s: {out}")
    return 0


def cmd_serve(args) -> int:
    from ragtune.serve.server import run_server

    if args.workers < 1:
        raise RagtuneError(f"--workers must be at least 1 (got {args.workers})")
    if args.threads is not None and args.threads < 1:
        raise RagtuneError(f"--threads must be at least 1 (got {args.threads})")
    if not 0 <= args.port <= 65535:
        raise RagtuneError(f"--port must be 0-65535 (got {args.port})")
    _check_ranges(args, {"--workers": 1, "--threads": 1, "--max-batch-size": 1, "--max-batch-tokens": 0})
    device = _device(args)
    overrides = {k: v for k in ("max_batch_size", "max_batch_tokens", "max_wait_ms", "body_timeout_s", "shutdown_timeout_s")
                 if (v := getattr(args, k)) is not None}
    if overrides.get("max_batch_tokens") == 0:
        overrides["max_batch_tokens"] = None  # --max-batch-tokens 0: no cap (checked by the serve: schema)
    if args.api_key is not None:
        api_key, source = args.api_key, "--api-key"
    else:
        api_key, source = os.environ.get("RAGTUNE_API_KEY"), "RAGTUNE_API_KEY"
    if api_key is not None and not api_key.strip():  # an empty key would turn authentication off
        raise RagtuneError(f"{source} is empty; give a non-empty key (--api-key KEY or RAGTUNE_API_KEY), "
                           "or leave both unset to serve without one")
    run_server(args.path, host=args.host, port=args.port, engine=args.engine, api_key=api_key,
               workers=args.workers, threads=args.threads, overrides=overrides, log_level=args.log_level,
               device=device)
    return 0


def cmd_board(args) -> int:
    import uvicorn

    from ragtune.board.app import create_board

    _check_range("--port", args.port, 1, 65535)
    _check_range("--max-parallel", args.max_parallel, 1, 64)
    key = args.api_key or os.environ.get("RAGTUNE_API_KEY") or None
    from ragtune.serve.server import bind_socket

    app = create_board(Path(args.runs), Path(args.configs), api_key=key, host=args.host, max_parallel=args.max_parallel)
    sock = bind_socket(args.host, args.port)  # a port in use is one message, before anything starts
    print(f"ragtune board: http://{args.host}:{args.port}/ (runs {Path(args.runs).resolve()}); Ctrl-C stops it",
          file=sys.stderr)
    uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[sock])
    return 0


def cmd_export(args) -> int:
    from ragtune.export.onnx import export_run

    run_dir, out = Path(args.run_dir), Path(args.out)
    if args.data is not None:
        check_regular_file(args.data, "--data")
    cfg = _run_config(run_dir)
    with folder_lock(out):
        info, check = export_run(cfg, run_dir, out, quantize=args.quantize, data_file=args.data,
                                 overwrite=args.overwrite)
    metric = "accuracy" if "accuracy_reference" in check else "mse"  # classification, else regression
    before, after = check.get(f"{metric}_reference"), check.get(f"{metric}_candidate")
    print(f"exported {info['model_file']} ({info.get('quantize') or 'fp32'}) to {out}")
    print(f"checked on {check['checked_on']} ({check['n']} texts): max |logit difference| vs PyTorch "
          f"{check['max_abs_diff']:.3g}" + (f", predictions agree on {check['agreement']:.2%}" if "agreement" in check else ""))
    if before is not None:
        print(f"test {metric}: PyTorch {before:.4f} -> ONNX {after:.4f}")
    print(f"serve it: ragtune serve {out} --engine onnx")
    return 0


def cmd_explain(args) -> int:
    from ragtune.explain import explain, to_html, to_png
    from ragtune.tasks import task_of
    from ragtune.tasks.classification.predictor import Predictor

    run_dir = Path(args.run_dir)
    _check_utf8([args.text], "text", numbered=False)
    _check_range("--steps", args.steps)
    device = _device(args)
    cfg = _run_config(run_dir)
    if "onnx" not in task_of(cfg.task).engines:  # the tasks with one output vector per text
        raise RagtuneError(f"{run_dir} is a task: {cfg.task} run; `ragtune explain` explains classification and regression runs")
    html_path = png_path = None
    if args.out:
        html_path = Path(args.out)
        png_path = html_path.with_suffix(".png")
        for path in (html_path, png_path):
            check_writable_file(path, "--out")
            if path.is_dir():
                raise RagtuneError(f"--out: {path} is a folder; give a file name such as explanation.html")
            if path.exists() and not args.overwrite:
                raise RagtuneError(f"{path} exists; add --overwrite to replace it")
    predictor = Predictor.from_run_dir(run_dir, batch_size=cfg.eval.batch_size, device=device)
    result = explain(predictor, args.text, target=args.target, n_steps=args.steps)
    if html_path is not None:
        _write_atomically(html_path, lambda tmp: tmp.write_text(to_html(result), encoding="utf-8"), "--out")
        _write_atomically(png_path, lambda tmp: to_png(result, tmp), "--out")
        print(f"wrote {html_path} and {png_path}", file=sys.stderr)
    return _print_json_lines([result])


COMMANDS = {"run": cmd_run, "validate": cmd_validate, "eval": cmd_eval, "predict": cmd_predict,
            "index": cmd_index, "retrieve": cmd_retrieve, "eval-retrieval": cmd_eval_retrieval,
            "train-reranker": cmd_train_reranker, "tune": cmd_tune, "serve": cmd_serve, "export": cmd_export,
            "explain": cmd_explain, "env": cmd_env, "configs": cmd_configs, "cp": cmd_cp, "rerun": cmd_rerun,
            "board": cmd_board}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line's arguments. Options may stand anywhere among a command's positional
    arguments (``ragtune predict RUN --strategy greedy "text"``, ``ragtune run cfg --out X
    train.epochs=3``): when the plain parse leaves something over, the command's own parser reads
    its arguments again, intermixed (``argparse``'s ``parse_known_intermixed_args``)."""
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    args, extra = parser.parse_known_args(argv)
    if extra:
        command = parser.commands[args.command]
        mixed, extra = command.parse_known_intermixed_args(argv[argv.index(args.command) + 1:])
        vars(args).update(vars(mixed))
    if extra:
        command.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(logging.Formatter("%(message)s"))
    logging.getLogger("ragtune").addHandler(console)
    logging.getLogger("ragtune").setLevel(logging.INFO)
    try:
        return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        if args.debug:
            traceback.print_exc()
        hint = getattr(args, "resume_hint", None)  # set once there is a run directory / study to resume
        print(f"interrupted: {hint}" if hint else "interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # e.g. `ragtune eval ... | head`
        sys.stderr.close()
        return 0
    except RagtuneError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except ImportError as exc:  # an optional package that is not installed: name its extra (ragtune/extras.py)
        from ragtune.extras import missing_extra

        error = missing_extra(exc)
        if error is None:
            raise
        if args.debug:
            traceback.print_exc()
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USER_ERROR
    except OSError as exc:
        # The machine's, not ragtune's: a full disk, a read-only file system, no permission, a name too
        # long. The commands check their output paths up front (ragtune/paths.py); this is the net.
        if exc.errno not in _ENVIRONMENT_ERRNOS:
            raise
        if args.debug:
            traceback.print_exc()
        from ragtune.paths import reason

        where = f"{exc.filename}: " if exc.filename else ""
        print(f"error: {where}{reason(exc)}", file=sys.stderr)
        return EXIT_USER_ERROR
    finally:
        logging.getLogger("ragtune").removeHandler(console)


if __name__ == "__main__":
    sys.exit(main())
