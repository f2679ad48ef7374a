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
    messages_column: str | None = Field(None, description="Table files: a column holding each example as a conversation, a list of `{role: system|user|assistant, content}` (JSONL and Parquet lists, or their JSON text in a CSV cell). The last message is the assistant's reply the model learns; the messages before it are the prompt (earlier assistant turns are context, not learned). Replaces prompt_column and response_column. Null: off.")
    prompt_template: str | None = Field(None, description="Table files: the prompt written from each row's columns, e.g. `\"{context}\\n\\nQuestion: {question}\"` (Python `str.format` fields naming columns; `{{` and `}}` for literal braces). Replaces prompt_column; the response is response_column. A SQuAD `.json` file has the fields `context`, `question` and `title`, and its first answer is the response. Null: the prompt is prompt_column as it is.")
    chat_template: Literal["auto", "none"] = Field("auto", description="How a prompt becomes the input of a pretrained model (`model.backbone: hf`). `auto`: through the tokenizer's chat template when it has one (SmolLM2-Instruct, Qwen, Llama 3 Instruct, ...): the prompt is a user message (after `system_prompt`), the response the assistant's turn, the loss on that turn only; a tokenizer without a template uses ragtune's plain format (and `messages_column` data then needs `none`). `none`: ragtune's plain format `<s> prompt </s> response </s>` (conversations joined as `role: content` lines). ragtune's own models always use the plain format.")
    system_prompt: str | None = Field(None, description="A system message put before every prompt (a conversation that has its own keeps it): through the chat template, or before the prompt and a blank line in the plain format. Null: none.")
    packing: bool = Field(False, description="Join training examples, in order, into rows of up to `model.max_length` tokens (less padding, fewer and fuller batches; the loss stays on the response tokens of each). Attention is not blocked between the examples of a row, as TRL's `packing=True` without padding-free attention. Validation, test and inference are not packed.")

    def problems(self) -> list[str]:
        errors = super().problems()
        if self.prompt_column is not None and self.prompt_column == self.response_column and not self.messages_column:
            errors.append(f"data.response_column: must differ from data.prompt_column (both {self.prompt_column!r})")
        if self.messages_column and self.prompt_template:
            errors.append("data.prompt_template: not used with data.messages_column (the conversation is the prompt); set one of them")
        if (self.messages_column or self.prompt_template) and self.prompt_column is None:
            key = "messages_column" if self.messages_column else "prompt_template"
            errors.append(f"data.{key}: gives prompts, but data.prompt_column is null (texts to continue); "
                          "leave prompt_column at its default")
        if self.system_prompt is not None and not self.system_prompt.strip():
            errors.append("data.system_prompt: empty; give a text or null")
        if self.prompt_template is not None:
            from ragtune.data.seq2seq import template_fields

            try:
                template_fields(self.prompt_template)
            except Exception as exc:  # a RagtuneError or str.format's own ValueError (an unmatched brace)
                errors.append(str(exc) if str(exc).startswith("data.prompt_template") else
                              f"data.prompt_template: {exc} (write {{{{ and }}}} for literal braces)")
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
        if self.data.messages_column or self.data.prompt_template:
            return True
        return not (self.data.prompt_column is None or (isinstance(train, str) and Path(train).suffix.lower() in (".txt", ".text")))

    @property
    def default_metric(self) -> str:
        return "rougeL" if self.generation_prompts else "perplexity"  # texts to continue have no prompts to answer

    def problems(self) -> list[str]:
        errors = super().problems()
        d = self.data
        suffix = Path(d.train).suffix.lower() if isinstance(d.train, str) else ""
        if d.messages_column and suffix in (".txt", ".text", ".json"):
            errors.append(f"data.messages_column: needs a table file (CSV, TSV, JSONL, Parquet); data.train is {d.train}")
        if d.prompt_template and suffix in (".txt", ".text"):
            errors.append(f"data.prompt_template: needs a table file or a SQuAD .json file; data.train is {d.train}")
        if self.retrieval.top_k and not self.generation_prompts:
            errors.append(f"retrieval.top_k: passages are retrieved for prompts; the generation data has none "
                          f"(data.prompt_column is null or data.train is a .txt file) (got top_k {self.retrieval.top_k})")
        return errors
