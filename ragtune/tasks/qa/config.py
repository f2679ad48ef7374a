"""The config of ``task: qa``: extractive question answering over SQuAD-format data with a
pretrained reader, and a retriever when ``retrieval.top_k`` > 0 (``ragtune/tasks/qa/recipe.py``). The
shared sections are in :mod:`ragtune.config`."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from ragtune.config import FAST_CPU_KERNELS, DataConfig, HFModel, RetrievalConfig, TaskConfig, _path_field, section

class QAData(DataConfig):
    """SQuAD-v1.1-format JSON files; a split without its own file is carved from train by whole articles."""

    train: str | None = _path_field(None, "Training file: SQuAD-format JSON (as `validation` and `test`). Required. Splits carved from it take whole articles.")


class QAModel(HFModel):
    """The reader: a pretrained Hugging Face encoder with a span head (`ragtune/models/reader.py`)."""

    max_length: int = Field(256, gt=1, description="Tokens per (question, passage window), special tokens included.")
    doc_stride: int = Field(128, gt=0, description="Context tokens shared by neighbouring windows when a passage is longer than `max_length`.")
    max_answer_length: int = Field(30, gt=0, description="The longest answer (in tokens) the reader may give.")
    fast_cpu_kernels: bool = Field(True, description=FAST_CPU_KERNELS)

    def problems(self) -> list[str]:
        errors = super().problems()
        if self.lora.load_in_4bit:
            errors.append("model.lora.load_in_4bit: QLoRA is for the language models of generation and translation runs; "
                          "the reader trains LoRA on its float32/bf16 base (set it to false)")
        return errors


class QARetrieval(RetrievalConfig):
    """The retriever of the passages each question is read with, and RAG training of its query encoder."""

    top_k: int = Field(0, ge=0, description="Passages retrieved per question. 0: retrieval off (the reader reads the gold paragraph).")
    train_query_encoder: bool = Field(False, description="Dense index: RAG training. The loss is -log sum_z p(z|x) p(y|x,z) over the top_k passages, with p(z|x) the softmax of query-passage similarities, so the task loss trains the query encoder as well as the reader.")
    temperature: float = Field(0.05, gt=0, description="RAG training: p(z|x) = softmax(cosine(q, z) / temperature).")
    refresh_every_epochs: int | None = Field(None, gt=0, description="RAG training: re-encode every passage with the trained encoder every N epochs (the index follows the encoder). Null: the passage side stays frozen (only queries move).")
    gold_passage: bool = Field(True, description="RAG training (`train_query_encoder`): when none of the top_k passages holds the answer, the best passage of the gold paragraph that does replaces the last one, so the question still trains (RAFT-style). False: such a question is skipped for that step.")
    distractors: int = Field(2, ge=0, description="Reader training without train_query_encoder: retrieved passages without the answer added to each question as negatives (the reader learns to score them low).")

    def problems(self) -> list[str]:
        errors = super().problems()
        if self.train_query_encoder:
            if not self.top_k:
                errors.append("retrieval.train_query_encoder: needs retrieval.top_k > 0")
            if not self.index and self.kind != "dense":
                errors.append(f"retrieval.train_query_encoder: needs a dense index (retrieval.kind: dense; got {self.kind!r})")
        if self.refresh_every_epochs and not self.train_query_encoder:
            errors.append("retrieval.refresh_every_epochs: only applies with retrieval.train_query_encoder: true")
        return errors


class QAConfig(TaskConfig):
    """A question-answering run."""

    task: Literal["qa"] = Field("qa", description="`qa`: extractive question answering over SQuAD-format data, with a retriever when `retrieval.top_k` > 0.")
    data: QAData = section(QAData, "Data preparation.")
    tokenizer: ClassVar[None] = None  # the reader's own
    model: QAModel = section(QAModel, "The reader.")
    decode: ClassVar[None] = None  # answers are spans of the passages
    retrieval: QARetrieval = section(QARetrieval, "Retrieval (RAG).")

    METRICS = {"qa": ("f1", "exact_match")}

    def problems(self) -> list[str]:
        return super().problems() + [
            f"{key}: not used by task qa (got {value!r}); remove it or set it to its default"
            for key, value in self.non_default("train.group_by_length", "train.label_smoothing", "train.layer_lr_decay")]
