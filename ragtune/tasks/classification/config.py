"""The config of ``task: classification`` (labels) and ``task: regression`` (a number): one schema,
since both read a text column and a label column and train the same encoders (a Transformer from
scratch, or a pretrained Hugging Face encoder with ``model.backbone: hf``). The shared sections are
in :mod:`ragtune.config`."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator

from ragtune.config import (FAST_CPU_KERNELS, HFModel, RetrievalConfig, ScratchModel, TableData, TaskConfig,
                            TokenizerConfig, _path_field, _Section, section, tagged_union)

class ClassificationData(TableData):
    """A table of texts and their labels (class names, or numbers for regression), or the built-in demo data."""

    train: str | None = _path_field(None, "Training file (CSV, TSV, JSONL or Parquet). Required unless `demo: true`. Splits carved from it are stratified by label (classification).")
    text_column: str = Field("text", description="Column holding the input text.")
    label_column: str = Field("label", description="Column holding the label (class name or number).")
    keep_labels: list[str] | None = Field(None, description="Classification: keep only rows with these labels, in every split and every evaluation file; dropped rows are counted in the data report.")
    empty_text: Literal["skip", "error"] = Field("skip", description="Rows whose text is empty: `skip` counts and drops them, `error` stops with the row numbers.")
    demo: bool = Field(False, description="Use the small built-in demo data set (synthetic classification data, written by ragtune itself) instead of files.")

    @field_validator("keep_labels", mode="before")
    @classmethod
    def _labels_as_text(cls, value: Any) -> Any:
        """Labels are compared as text: ``keep_labels: [0, 1]`` means the labels "0" and "1"."""
        if isinstance(value, list):
            return [str(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v for v in value]
        return value

    def problems(self) -> list[str]:
        errors = super().problems()
        if self.label_column == self.text_column:
            errors.append(f"data.label_column: must differ from data.text_column (both {self.text_column!r})")
        return errors


class ClassificationTokenizer(TokenizerConfig):
    """The subword tokenizer trained on the training texts with Hugging Face `tokenizers`."""

    kind: Literal["bpe", "wordpiece"] = Field("wordpiece", description="Subword algorithm.")
    lowercase: bool = Field(True, description="Lowercase text before tokenizing.")


class _Truncation(_Section):
    """How a text longer than ``model.max_length`` is cut (both backbones)."""

    truncation: Literal["head", "tail", "head_tail"] = Field("head", description="Which tokens of a text longer than `max_length` are kept (training and inference alike): `head` the first ones, `tail` the last ones, `head_tail` the first `head_tokens` and the last ones that fit. Special tokens ([CLS] first, and [SEP] last where the tokenizer adds it) always stay.")
    head_tokens: int | None = Field(None, ge=0, description="`truncation: head_tail` only: text tokens kept from the start (special tokens not counted); the rest of `max_length` goes to the end of the text. Null: a quarter of `max_length` (e.g. 128 of 512).")

    def problems(self) -> list[str]:
        errors = super().problems()
        if self.head_tokens is not None:
            if self.truncation != "head_tail":
                errors.append(f"model.head_tokens: only applies to model.truncation: head_tail (truncation is {self.truncation!r})")
            elif self.head_tokens >= self.max_length:  # type: ignore[attr-defined]
                errors.append(f"model.head_tokens: must be smaller than model.max_length ({self.max_length}) "  # type: ignore[attr-defined]
                              f"(got {self.head_tokens})")
        return errors


class ScratchClassifier(_Truncation, ScratchModel):
    """A Transformer encoder built from scratch (`ragtune/models/transformer.py`)."""

    pooling: Literal["mean", "cls"] = Field("mean", description="How token states become one vector: mean over tokens, or the first ([CLS]) token.")


class HFClassifier(_Truncation, HFModel):
    """A pretrained Hugging Face encoder with a new head (`ragtune/models/hf.py`)."""

    freeze_embeddings: bool = Field(False, description="Do not train the embedding layer (word, position and type embeddings).")
    freeze_layers: int = Field(0, ge=0, description="Do not train the first N encoder layers (counted from the embeddings up).")
    extend_vocab: int | None = Field(None, ge=1, description="Add every character of the training texts that the pretrained tokenizer turns into its unknown token and that occurs at least this many times as a new token, with a new input-embedding row (drawn around the mean of the pretrained rows) trained with the model. For a script the pretrained vocabulary barely covers, e.g. Chinese with an English model. Null: off.")
    fast_cpu_kernels: bool = Field(True, description=FAST_CPU_KERNELS)

    def problems(self) -> list[str]:
        errors = super().problems()
        if self.lora.load_in_4bit:
            errors.append("model.lora.load_in_4bit: QLoRA is for the language models of generation and translation runs; "
                          "a classifier trains LoRA on its float32/bf16 base (set it to false)")
        if self.lora.enabled:
            errors += [f"model.{key}: not used with model.lora.enabled: true (got {value!r}); LoRA already keeps every "
                       "pretrained weight frozen, so set it to its default or disable model.lora"
                       for key, value in self.non_default("freeze_embeddings", "freeze_layers")]
            if self.extend_vocab:
                errors.append(f"model.extend_vocab: not used with model.lora.enabled: true (got {self.extend_vocab!r}); "
                              "LoRA freezes the input embeddings, so the new tokens' rows would never train; disable one of them")
        if self.extend_vocab and self.freeze_embeddings:
            errors.append(f"model.extend_vocab: not used with model.freeze_embeddings: true (got {self.extend_vocab!r}); "
                          "the new tokens' embedding rows would stay at their starting value; disable one of them")
        return errors


ClassificationModel = tagged_union("backbone", "scratch", {"scratch": ScratchClassifier, "hf": HFClassifier})


class ClassificationRetrieval(RetrievalConfig):
    """Retrieval in the loop: each text is read with its top passages (classification only)."""

    top_k: int = Field(0, ge=0, description="Passages retrieved per text (classification only). 0: retrieval off.")
    source: Literal["corpus", "train"] = Field("corpus", description="Where the passages come from. `corpus`: the index (`index`) or the files the run indexes (`corpus`). `train`: the labelled training texts themselves, indexed by the run (an example never retrieves itself), so the model reads its nearest labelled neighbours.")
    with_labels: bool = Field(True, description="With `source: train`: each neighbour is given to the model as `label: text`. False: the text alone.")

    def problems(self) -> list[str]:
        errors = super().problems()
        if self.source == "train" and (self.index or self.corpus):
            errors.append("retrieval.source: train indexes the training texts itself; remove retrieval.index/retrieval.corpus or set source: corpus")
        return errors


class ClassificationConfig(TaskConfig):
    """A classification or regression run (`ragtune/tasks/classification/recipe.py`)."""

    task: Literal["classification", "regression"] = Field("classification", description="What the model learns: `classification` (labels) or `regression` (a number). Other tasks: `qa`, `translation`, `generation` (their own tables).")
    data: ClassificationData = section(ClassificationData, "Data preparation.")
    tokenizer: ClassificationTokenizer = section(ClassificationTokenizer, "Tokenizer (`model.backbone: scratch`).")
    model: ClassificationModel = section(ScratchClassifier, "Model building.")
    decode: ClassVar[None] = None  # outputs are labels or numbers
    retrieval: ClassificationRetrieval = section(ClassificationRetrieval, "Retrieval (RAG).")

    METRICS = {
        "classification": ("accuracy", "macro_f1", "micro_f1", "weighted_f1", "macro_precision", "macro_recall", "loss", "log_loss"),
        "regression": ("mse", "mae", "rmse", "r2", "pearson", "loss"),
    }

    def problems(self) -> list[str]:
        errors = super().problems()
        if self.task == "regression":
            errors += [f"{key}: only applies to classification (task is regression; got {value!r})"
                       for key, value in self.non_default("train.label_smoothing", "data.keep_labels")]
            if self.retrieval.top_k:
                errors.append("retrieval.top_k: retrieval in the loop is available for tasks classification and qa (task is 'regression')")
        if self.model.backbone != "hf":
            errors += [f"{key}: only applies to model.backbone: hf (got {value!r} with backbone {self.model.backbone!r})"
                       for key, value in self.non_default("train.layer_lr_decay")]
        return errors
