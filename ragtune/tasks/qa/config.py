"""The config of ``task: qa``: question answering over SQuAD-format data with a pretrained reader,
extractive (an encoder with a span head) or generative (a causal language model that writes the
answer), and a retriever when ``retrieval.top_k`` > 0 (``ragtune/tasks/qa/recipe.py``,
``ragtune/tasks/qa/generative.py``). The shared sections are in :mod:`ragtune.config`."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from ragtune.config import (FAST_CPU_KERNELS, DataConfig, DecodeConfig, EvalConfig, HFModel, RetrievalConfig, TaskConfig,
                            _Section, _path_field, section)

class QAData(DataConfig):
    """SQuAD-v1.1-format JSON files; a split without its own file is carved from train by whole articles."""

    train: str | None = _path_field(None, "Training file: SQuAD-format JSON (as `validation` and `test`). Required. Splits carved from it take whole articles.")


class QAModel(HFModel):
    """The reader: a pretrained Hugging Face encoder with a span head (`ragtune/models/reader.py`), or a
    causal language model that writes the answer (`ragtune/tasks/qa/generative.py`)."""

    reader: Literal["auto", "extractive", "generative"] = Field("auto", description="`extractive`: an encoder (BERT, MiniLM, ...) with a span head picks the answer out of a passage. `generative`: a causal language model (SmolLM2, Gemma 3, Llama, ...) reads the question with its passages (through its chat template) and writes the answer. `auto`: generative when `name_or_path` is a causal language model (a `.gguf` file, the aliases `smollm2-135m-instruct` and `gemma3-270m`, a folder or hub id whose config names a `...ForCausalLM` architecture), else extractive.")
    max_length: int = Field(256, gt=1, description="Extractive: tokens per (question, passage window), special tokens included. Generative: tokens per prompt (system prompt, passages, question) and answer; the passages give way first.")
    doc_stride: int = Field(128, gt=0, description="Extractive: context tokens shared by neighbouring windows when a passage is longer than `max_length`.")
    max_answer_length: int = Field(30, gt=0, description="Extractive: the longest answer (in tokens) the reader may give. (Generative: `decode.max_new_tokens`.)")
    fast_cpu_kernels: bool = Field(True, description=FAST_CPU_KERNELS)

    def problems(self) -> list[str]:
        errors = super().problems()
        if self.lora.load_in_4bit and self.reader != "generative":
            errors.append("model.lora.load_in_4bit: QLoRA is for language models (model.reader: generative); "
                          "the extractive reader trains LoRA on its float32/bf16 base (set it to false)")
        return errors


class QASettings(_Section):
    """A generative reader (`model.reader: generative`): what the model reads and learns to write (`ragtune/tasks/qa/generative.py`)."""

    train_passages: Literal["auto", "none", "gold", "retrieved", "raft"] = Field("auto", description="The passages each training question is read with. `none`: no passages, closed-book (the baseline that shows what retrieval adds; also read so at inference). `gold`: the passage of its gold paragraph that holds the answer, alone (what SFT on (paragraph, question) pairs gives). `retrieved`: the top `retrieval.top_k` passages the retriever returns (the gold may be absent; the answer is still the target). `raft`: the gold passage plus `top_k - 1` retrieved distractors from other paragraphs in random order, the gold left out with probability `p_no_gold` (then the target is `no_answer`), RAFT (Zhang et al. 2024). `auto`: `raft` with retrieval, `gold` without.")
    p_no_gold: float = Field(0.2, ge=0, lt=1, description="`raft`: probability that a training question is read without its gold passage (only distractors) and learns to answer `no_answer`.")
    no_answer: str = Field("unanswerable", min_length=1, description="What the model answers when its passages do not hold the answer (learned with `raft`; abstention is measured as the share of questions read without their gold paragraph that get this answer).")
    cite: bool = Field(False, description="The model learns to cite the passage it answers from: `answer [2]` (the passages are numbered [1], [2], ... in the prompt). Answers are scored without the citation; `citation_precision` is the share of cited passages that belong to the gold paragraph. Predictions list the cited passage ids.")
    quote_evidence: bool = Field(False, description="RAFT's answer format: the model first quotes the sentence of the passage that holds the answer, then writes `Answer: ...` (`Evidence: \"...\"\nAnswer: ...`); only the part after `Answer:` is scored and returned.")
    passage_tokens: int = Field(160, gt=0, description="Each passage in a prompt is cut to this many of the model's tokens (the gold passage around its answer).")
    system_prompt: str | None = Field(None, description="The system message of every prompt. Null: ragtune's instruction (answer with a short phrase from the passages; with `raft`, answer `no_answer` when they do not hold it; with `cite`, cite the passage).")
    chat_template: Literal["auto", "none"] = Field("auto", description="`auto`: prompts go through the tokenizer's chat template when it has one; `none` (or no template): ragtune's plain format.")

    def problems(self) -> list[str]:
        errors = super().problems()
        if self.system_prompt is not None and not self.system_prompt.strip():
            errors.append("qa.system_prompt: empty; give a text or null")
        if not self.no_answer.strip():
            errors.append("qa.no_answer: empty; give the text the model answers when the passages lack the answer")
        return errors


class QADecode(DecodeConfig):
    """How a generative reader writes its answers (`model.reader: generative`)."""

    strategy: Literal["greedy", "beam", "sample"] = Field("greedy", description="`greedy` (most probable token each step), `beam` (beam search) or `sample` (top-k / top-p sampling).")
    max_new_tokens: int | None = Field(32, gt=0, description="Most tokens generated per answer (with `qa.quote_evidence`, the quote included). Null: 64 or half of `model.max_length`, whichever is less.")


class QAEval(EvalConfig):
    """Evaluation of a QA run."""

    max_decode_rows: int = Field(200, gt=0, description="Generative reader: the validation of each epoch answers a seeded sample of at most this many validation questions (the final metrics answer them all, or `max_questions`).")
    max_questions: int | None = Field(None, gt=0, description="Generative reader: the final metrics of each split score a seeded sample of at most this many questions (writing thousands of answers takes long on a CPU). Null: every question.")


class QARetrieval(RetrievalConfig):
    """The retriever of the passages each question is read with, and RAG training of its query encoder."""

    top_k: int = Field(0, ge=0, description="Passages retrieved per question. 0: retrieval off (the reader reads the gold paragraph).")
    train_query_encoder: bool = Field(False, description="Dense index: RAG training. The loss is -log sum_z p(z|x) p(y|x,z) over the top_k passages, with p(z|x) the softmax of query-passage similarities, so the task loss trains the query encoder as well as the reader.")
    temperature: float = Field(0.05, gt=0, description="RAG training: p(z|x) = softmax(cosine(q, z) / temperature).")
    refresh_every_epochs: int | None = Field(None, gt=0, description="RAG training: re-encode every passage with the trained encoder every N epochs (the index follows the encoder). Null: the passage side stays frozen (only queries move).")
    query_encoder_lr: float | None = Field(None, gt=0, description="RAG training (`train_query_encoder`): the peak learning rate of the query encoder, which follows the same schedule as the reader's `train.lr`. A fully trained sentence encoder usually wants ~1e-5, far below a LoRA reader's ~3e-4. Null: `train.lr`.")
    lm_temperature: float = Field(0.1, gt=0, description="Generative reader with `train_query_encoder`: the LM's distribution over the top_k passages is softmax(log p_LM(answer | question, passage) / lm_temperature), the target the retriever's distribution learns (REPLUG's LM-supervised retrieval). Smaller: the retriever is pushed harder toward the one passage the LM likes best.")
    gold_passage: bool = Field(True, description="RAG training (`train_query_encoder`): when none of the top_k passages holds the answer, the best passage of the gold paragraph that does replaces the last one, so the question still trains (RAFT-style). False: such a question is skipped for that step.")
    distractors: int = Field(2, ge=0, description="Reader training without train_query_encoder: retrieved passages without the answer added to each question as negatives (the reader learns to score them low).")

    def problems(self) -> list[str]:
        errors = super().problems()
        if self.train_query_encoder:
            if not self.top_k:
                errors.append("retrieval.train_query_encoder: needs retrieval.top_k > 0")
            if not self.index and self.kind != "dense":
                errors.append(f"retrieval.train_query_encoder: needs a dense index (retrieval.kind: dense; got {self.kind!r})")
        if self.query_encoder_lr is not None and not self.train_query_encoder:
            errors.append("retrieval.query_encoder_lr: only applies with retrieval.train_query_encoder: true")
        if self.refresh_every_epochs and not self.train_query_encoder:
            errors.append("retrieval.refresh_every_epochs: only applies with retrieval.train_query_encoder: true")
        return errors


class QAConfig(TaskConfig):
    """A question-answering run."""

    task: Literal["qa"] = Field("qa", description="`qa`: question answering over SQuAD-format data, extractive or generative (`model.reader`), with a retriever when `retrieval.top_k` > 0.")
    data: QAData = section(QAData, "Data preparation.")
    tokenizer: ClassVar[None] = None  # the reader's own
    model: QAModel = section(QAModel, "The reader.")
    qa: QASettings = section(QASettings, "Generative reader: prompts, training passages (RAFT), abstention, citations.")
    decode: QADecode = section(QADecode, "Decoding of a generative reader (an extractive reader picks spans).")
    eval: QAEval = section(QAEval, "Evaluation.")
    retrieval: QARetrieval = section(QARetrieval, "Retrieval (RAG).")

    METRICS = {"qa": ("f1", "exact_match")}

    def problems(self) -> list[str]:
        errors = super().problems() + [
            f"{key}: not used by task qa (got {value!r}); remove it or set it to its default"
            for key, value in self.non_default("train.group_by_length", "train.label_smoothing", "train.layer_lr_decay")]
        q = self.qa
        if q.train_passages == "none" and self.retrieval.top_k:
            errors.append(f"qa.train_passages: 'none' reads no passages; set retrieval.top_k: 0 (got {self.retrieval.top_k})")
        if q.train_passages in ("retrieved", "raft") and not self.retrieval.top_k:
            errors.append(f"qa.train_passages: {q.train_passages!r} reads retrieved passages; set retrieval.top_k > 0 "
                          "(or qa.train_passages: gold)")
        if self.model.reader == "extractive":
            errors += [f"qa.{key}: only for a generative reader (model.reader: generative); got {value!r}"
                       for key, value in q.non_default("train_passages", "p_no_gold", "no_answer", "cite", "quote_evidence",
                                                       "passage_tokens", "system_prompt", "chat_template")]
            errors += [f"decode.{key}: only for a generative reader (model.reader: generative); got {value!r}"
                       for key, value in self.decode.non_default(*DecodeConfig.model_fields)]
            errors += [f"eval.{key}: only for a generative reader (model.reader: generative); got {value!r}"
                       for key, value in self.eval.non_default("max_decode_rows", "max_questions")]
        if self.decode.max_new_tokens is not None and self.decode.max_new_tokens >= self.model.max_length:
            errors.append(f"decode.max_new_tokens: must be smaller than model.max_length ({self.model.max_length}) "
                          f"(got {self.decode.max_new_tokens})")
        return errors

    @property
    def train_passages(self) -> str:
        """``qa.train_passages`` with ``auto`` resolved: ``raft`` with retrieval, ``gold`` without."""
        if self.qa.train_passages != "auto":
            return self.qa.train_passages
        return "raft" if self.retrieval.top_k else "gold"
