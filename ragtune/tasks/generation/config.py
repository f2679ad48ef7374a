"""The config of ``task: generation``: a response to a prompt, or the continuation of a text, with a
decoder-only language model, from scratch or a pretrained Hugging Face causal model, with passages
from an index when ``retrieval.top_k`` > 0 (``ragtune/tasks/generation/recipe.py``). The shared sections
are in :mod:`ragtune.config`."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from ragtune.config import HFModel, ScratchDecoder, TableData, TextTaskConfig, _path_field, section, tagged_union

class GenerationData(TableData):
    """Prompt → response pairs, or texts to continue."""

    train: str | None = _path_field(None, "Training file: a table with `prompt_column` and `response_column` (or `text_column` when `prompt_column` is null), a `.txt` file of texts to continue, or SQuAD JSON (question → first answer). Required.")
    text_column: str = Field("text", description="Table files with `prompt_column: null`: column holding the texts.")
    prompt_column: str | None = Field("prompt", description="Table files: column holding the prompt. Null: no prompts; each text of `text_column` is an example the model learns to write (and `ragtune predict` continues a given beginning). A `.txt` file is always one such text per line; a SQuAD-format `.json` file gives question → first answer.")
    response_column: str = Field("response", description="Table files: column holding the response the model learns to write after the prompt.")

    def problems(self) -> list[str]:
        errors = super().problems()
        if self.prompt_column is not None and self.prompt_column == self.response_column:
            errors.append(f"data.response_column: must differ from data.prompt_column (both {self.prompt_column!r})")
        return errors


GenerationModel = tagged_union("backbone", "scratch", {"scratch": ScratchDecoder, "hf": HFModel})


class GenerationConfig(TextTaskConfig):
    """A generation run."""

    task: Literal["generation"] = Field("generation", description="`generation`: a response to a prompt, or the continuation of a text, with a decoder-only language model.")
    data: GenerationData = section(GenerationData, "Data preparation.")
    model: GenerationModel = section(ScratchDecoder, "Model building.")

    METRICS = {"generation": ("rougeL", "rouge1", "rouge2", "bleu", "loss", "perplexity")}

    @property
    def generation_prompts(self) -> bool:
        """Whether examples are prompt → response pairs (else texts to continue)."""
        train = self.data.train
        return not (self.data.prompt_column is None or (isinstance(train, str) and Path(train).suffix.lower() in (".txt", ".text")))

    @property
    def default_metric(self) -> str:
        return "rougeL" if self.generation_prompts else "perplexity"  # texts to continue have no prompts to answer

    def problems(self) -> list[str]:
        errors = super().problems()
        if self.retrieval.top_k and not self.generation_prompts:
            errors.append(f"retrieval.top_k: passages are retrieved for prompts; the generation data has none "
                          f"(data.prompt_column is null or data.train is a .txt file) (got top_k {self.retrieval.top_k})")
        return errors
