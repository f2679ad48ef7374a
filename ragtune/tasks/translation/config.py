"""The config of ``task: translation``: source text to target text with an encoder-decoder, from
scratch, a pretrained Hugging Face seq2seq model, or a BERT2BERT warm start
(``ragtune/tasks/translation/recipe.py``). The shared sections are in :mod:`ragtune.config`."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from ragtune.config import HFModel, ScratchDecoder, TableData, TextTaskConfig, TokenizerConfig, _path_field, _Section, section, tagged_union

class TranslationData(TableData):
    """Sentence pairs: a table with a source and a target column, or two line-aligned text files."""

    train: str | dict[str, str] | None = _path_field(None, "Training file: a table with `source_column` and `target_column`, or a mapping `{source: train.en, target: train.de}` of two line-aligned UTF-8 text files. Required.")
    validation: str | dict[str, str] | None = _path_field(None, "Validation file (same forms as `train`).")
    test: str | dict[str, str] | None = _path_field(None, "Test file (same forms as `train`).")
    source_column: str = Field("source", description="Table files: column holding the source text.")
    target_column: str = Field("target", description="Table files: column holding the target text (the reference translation).")

    def problems(self) -> list[str]:
        errors = super().problems()
        for key in ("train", "validation", "test"):
            value = getattr(self, key)
            if isinstance(value, dict) and set(value) != {"source", "target"}:
                errors.append(f"data.{key}: two-file translation data needs exactly the keys 'source' and 'target' "
                              f"(e.g. {{source: train.en, target: train.de}}); got keys: {', '.join(map(str, value)) or 'none'}")
        if self.source_column == self.target_column:
            errors.append(f"data.target_column: must differ from data.source_column (both {self.source_column!r})")
        return errors


class TranslationTokenizer(TokenizerConfig):
    """The byte-fallback BPE tokenizer (`ragtune/data/seq2seq_tokenizer.py`): it keeps case and spacing, so outputs are clean text."""

    joint: bool = Field(True, description="One BPE vocabulary of `vocab_size` for source and target (needed by `model.share_embeddings`); false: one of `vocab_size` per side.")


class ScratchTranslator(ScratchDecoder):
    """An encoder-decoder Transformer built from scratch (`ragtune/models/seq2seq.py`)."""

    layers: int = Field(2, gt=0, description="Encoder layers and decoder layers, each.")
    share_embeddings: bool = Field(True, description="One token table for source and target (needs `tokenizer.joint: true`).")


TranslationModel = tagged_union("backbone", "scratch", {"scratch": ScratchTranslator, "hf": HFModel})


class TranslationMemory(_Section):
    """A translation memory of the training pairs (`ragtune/retrieval/memory.py`)."""

    top_k: int = Field(0, ge=0, description="Training pairs retrieved per source sentence. 0: the source alone.")
    source: Literal["corpus", "train"] = Field("corpus", description="`train` (required with `top_k` > 0): each source is read with its `top_k` most similar training sources and their translations (a training sentence never retrieves itself).")

    def problems(self) -> list[str]:
        if self.top_k and self.source != "train":
            return [f"retrieval.top_k: task translation retrieves from its training pairs (a translation memory); "
                    f"set retrieval.source: train (got {self.source!r})"]
        return []


class TranslationConfig(TextTaskConfig):
    """A translation run."""

    task: Literal["translation"] = Field("translation", description="`translation`: source text to target text with an encoder-decoder.")
    data: TranslationData = section(TranslationData, "Data preparation.")
    tokenizer: TranslationTokenizer = section(TranslationTokenizer, "Tokenizer (`model.backbone: scratch`).")
    model: TranslationModel = section(ScratchTranslator, "Model building.")
    retrieval: TranslationMemory = section(TranslationMemory, "Retrieval: the translation memory.")

    METRICS = {"translation": ("bleu", "chrf", "loss", "perplexity")}

    def problems(self) -> list[str]:
        errors = super().problems()
        if self.model.backbone == "scratch" and self.model.share_embeddings and not self.tokenizer.joint:
            errors.append("model.share_embeddings: needs one vocabulary for both sides (tokenizer.joint: true); "
                          "set model.share_embeddings: false or tokenizer.joint: true")
        return errors
