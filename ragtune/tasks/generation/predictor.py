"""Inference for a ``task: generation`` run: load RUN_DIR, write responses, score examples.

The one path shared by the recipe (validation each epoch, the final metrics), ``ragtune predict``,
``ragtune eval`` and ``POST /v1/generate``::

    p = GenerationPredictor.from_run_dir("runs/squad_gen")
    p.generate(["Which team won Super Bowl 50?"])        # [{"output": "Denver Broncos", "passages": [...]}]
    p.generate(texts, strategy="sample", top_p=0.9)      # any key of the config's `decode:` section
    p.evaluate(prompts, responses)                       # {"rougeL", "rouge1", "rouge2", "bleu", "loss", "perplexity", ...}

How a decoder-only model reads an example (``TransformerForCausalLM``, ``ragtune/models/decoder.py``)::

    prompt → response:   <s> prompt [passages] </s> response </s>     (loss on "response </s>" only)
    text to continue:    <s> text </s>                                 (loss on every token)

At inference a prompt becomes ``<s> prompt [passages] </s>`` and the model writes until ``</s>``; in
a run without prompts (texts to continue) the input is a beginning, ``<s> beginning``, and the model
continues it. With retrieval (``retrieval.top_k`` > 0) the prompt is followed by its ``top_k``
passages from the run's index, best first, each after the separator ``<p>``; when the whole is longer
than the model allows, the passages are cut first (the prompt comes first).

Evaluation: ROUGE-1/2/L (Chinese-aware, :func:`ragtune.evaluate.text_metrics.rouge`) and BLEU of
the decoded responses against the references, and the loss (mean cross-entropy per response token)
and its perplexity. Texts to continue are scored by continuing the first half of each text (words,
or characters for text without spaces) and comparing with the second half.

**Devices.** ``from_run_dir(..., device=...)`` loads the model, and the dense encoder of its index,
on ``auto`` (CUDA, else MPS, else the CPU), ``cpu``, ``cuda``, ``cuda:N`` or ``mps``
(:mod:`ragtune.devices`; a device the machine lacks is a RagtuneError naming ``--device``). Prompts
are padded on the device of the model (also one the caller moved it to, as the training loop does);
the generated ids and the loss come back to the CPU.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch

from ragtune.data.seq2seq_tokenizer import Seq2SeqTokenizer
from ragtune.errors import RagtuneError
from ragtune.evaluate.text_metrics import bleu, perplexity, rouge
from ragtune.models.decoder import DecoderConfig, TransformerForCausalLM, build_decoder
from ragtune.models.decoding import (DEFAULT_DECODE, CausalLMStepper, cut_at_stop, decode_batches, decode_settings,
                                     mean_token_nll)
from ragtune.models.seq2seq import pad_batch
from ragtune.runs import decode_rows, inference_device, load_run_model, model_device, read_run_meta

IGNORE_INDEX = -100  # the label of a token the loss leaves out (the prompt, padding), as in transformers
PASSAGE_SEPARATOR = "<p>"  # between the prompt and each retrieved passage
DEFAULT_NEW_TOKENS = 64  # decode.max_new_tokens null: at most this many (and what fits in model.max_length)


def split_for_continuation(text: str) -> tuple[str, str]:
    """``(first half, second half)`` of a text by words, or by characters when it has no spaces (Chinese)."""
    words = text.split()
    if len(words) >= 2:
        half = len(words) // 2
        return " ".join(words[:half]), " ".join(words[half:])
    half = max(1, len(text) // 2)
    return text[:half], text[half:]


def add_passages(prompts: Sequence[str], retriever) -> list[str]:
    """``prompt <p> passage 1 <p> passage 2 ...`` for each prompt; the prompts as they are when
    ``retriever`` (a :class:`~ragtune.retrieval.augment.ContextRetriever`) is None."""
    prompts = [str(p) for p in prompts]
    if retriever is None:
        return prompts
    sep = f" {PASSAGE_SEPARATOR} "
    return [f"{p}{sep}{c}" for p, c in zip(prompts, retriever.contexts(prompts))]


def pack_examples(examples: Sequence[tuple[list[int], int]], max_length: int) -> list[tuple[list[int], list[bool]]]:
    """Training examples ``(ids, prompt_length)`` joined, in order, into rows of at most ``max_length``
    tokens: ``(ids, learned)`` with one flag per token (True on response tokens, where the loss is).
    Fewer, fuller rows mean less padding; attention is not blocked between the examples of a row (as
    TRL's ``packing=True`` without padding-free attention), and each keeps its own tokens whole."""
    rows: list[tuple[list[int], list[bool]]] = []
    ids: list[int] = []
    learned: list[bool] = []
    for example, given in examples:
        if ids and len(ids) + len(example) > max_length:
            rows.append((ids, learned))
            ids, learned = [], []
        ids = ids + list(example)
        learned = learned + [i >= given for i in range(len(example))]
    if ids:
        rows.append((ids, learned))
    return rows


class GenerationPredictor:
    """A trained decoder-only language model, its tokenizer and (optionally) its retriever.

    Args:
        model: a :class:`TransformerForCausalLM`.
        tokenizer: its :class:`Seq2SeqTokenizer` (one joint vocabulary).
        meta: the run's ``model.json`` (``prompts``, ``decode`` defaults).
        batch_size: prompts per decoding batch.
        retriever: a :class:`~ragtune.retrieval.augment.ContextRetriever`, or None (no passages).
    """

    def __init__(self, model: TransformerForCausalLM, tokenizer: Seq2SeqTokenizer, meta: dict, batch_size: int = 32,
                 retriever=None):
        self.model = model
        self.tokenizer = tokenizer
        self.meta = meta
        self.batch_size = batch_size
        self.max_length = model.config.max_length
        self.prompts = bool(meta.get("prompts", True))
        self.decode_defaults = {**DEFAULT_DECODE, **(meta.get("decode") or {})}
        self.bleu_tokenize = meta.get("bleu_tokenize")
        self.retriever = retriever
        self.chat_settings = dict(meta.get("chat") or {})  # {"template": bool, "system_prompt": str | None}

    @classmethod
    def from_run_dir(cls, run_dir: str | Path, batch_size: int = 32,
                     device: str | torch.device | None = None) -> GenerationPredictor:
        """Load a finished generation run (and its index, when it retrieves) on ``device``
        (:func:`ragtune.runs.inference_device`; None: ``auto``)."""
        run_dir = Path(run_dir)
        device = inference_device(device)
        meta = read_run_meta(run_dir, "generation")
        tokenizer, model = load_run_model(run_dir, meta, lambda: build_decoder(DecoderConfig(**meta["model"])), device)
        retriever = None
        if meta.get("retrieval"):
            from ragtune.retrieval.augment import ContextRetriever, index_folder
            from ragtune.retrieval.index import load_index

            r = meta["retrieval"]
            retriever = ContextRetriever(load_index(index_folder(run_dir, r["index"]), device=device), r["top_k"],
                                         PASSAGE_SEPARATOR)
        return cls(model, tokenizer, meta, batch_size, retriever)

    # -- inputs ------------------------------------------------------------------------------------
    @property
    def uses_chat_template(self) -> bool:
        """Whether prompts go through the tokenizer's chat template (``data.chat_template`` of the run)."""
        return bool(self.chat_settings.get("template"))

    def conversation(self, prompt) -> list[dict]:
        """The messages of one prompt: a list of ``{"role", "content"}`` as given, or a text as one
        user message; the run's system prompt first when the prompt brings none."""
        if isinstance(prompt, (list, tuple)):
            messages = [{"role": str(m["role"]), "content": str(m["content"])} for m in prompt]
        else:
            messages = [{"role": "user", "content": "" if prompt is None else str(prompt)}]
        system = self.chat_settings.get("system_prompt")
        if system and not any(m["role"] == "system" for m in messages):
            messages = [{"role": "system", "content": system}] + messages
        return messages

    def prompt_texts(self, prompts) -> list[str]:
        """Each prompt (a text or a list of messages) as the text the model reads, its passages
        included (after the last user message): the chat template's rendering with the assistant's
        turn opened, or (no template) the text itself, after the system prompt and a blank line when
        there is one; a longer conversation without a template is joined as ``role: content`` lines."""
        conversations = [self.conversation(p) for p in prompts]
        if self.retriever is not None:  # one retrieval call for the batch
            last = [max((i for i, m in enumerate(c) if m["role"] == "user"), default=None) for c in conversations]
            queries = [c[i]["content"] if i is not None else "" for c, i in zip(conversations, last)]
            for c, i, text in zip(conversations, last, self.with_passages(queries)):
                if i is not None:
                    c[i] = {**c[i], "content": text}
        out = []
        for messages in conversations:
            if self.uses_chat_template:
                out.append(self.tokenizer.hf.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))
            elif [m["role"] for m in messages] in (["user"], ["system", "user"]):
                out.append("\n\n".join(m["content"] for m in messages))
            else:
                out.append("\n".join(f"{m['role']}: {m['content']}" for m in messages))
        return out

    def with_passages(self, prompts: Sequence[str]) -> list[str]:
        """Each prompt followed by its retrieved passages (the prompts unchanged without a retriever)."""
        return add_passages(prompts, self.retriever)

    def _cut_middle(self, ids: list[int], room: int) -> list[int]:
        """A chat prompt cut to ``room`` ids: its beginning and its end (the opened assistant turn) kept."""
        if len(ids) <= room:
            return ids
        head = room // 2
        return ids[:head] + ids[len(ids) - (room - head):]

    def _prompt_tokens(self, prompts) -> list[list[int]]:
        """Tokens of each prompt (a text or messages, with its passages): ``prompt </s>``, the chat
        template's rendering, or a bare beginning to continue."""
        if not self.prompts:
            return self.tokenizer.encode_plain_batch([str(p) for p in prompts])
        texts = self.prompt_texts(prompts)
        if self.uses_chat_template:
            return self.tokenizer.encode_plain_batch(texts)
        return self.tokenizer.encode_source_batch(texts)

    def _start(self) -> list[int]:
        """The ids before a prompt: ``<s>``, or nothing with a chat template (it writes its own)."""
        return [] if self.uses_chat_template else [self.model.config.bos_id]

    def encode_example(self, prompt_ids: list[int], response: list[int]) -> tuple[list[int], int]:
        """``(ids, prompt_length)`` of one training example: ``<s> prompt_ids response``, cut to
        ``max_length``. The prompt gives way first (keeping its last token, ``</s>``; a chat prompt
        keeps its beginning and its end), but keeps at least half of ``max_length`` when it is that
        long; then the response is cut."""
        start = self._start()
        room = self.max_length - len(start)
        keep = min(len(prompt_ids), max(room // 2, room - len(response)))
        if keep < len(prompt_ids):
            if self.uses_chat_template:
                prompt_ids = self._cut_middle(prompt_ids, keep)
            else:
                prompt_ids = prompt_ids[:keep - 1] + prompt_ids[-1:] if keep > 1 else prompt_ids[-1:][:keep]
        ids = start + prompt_ids + response
        return ids[:self.max_length], len(start) + len(prompt_ids)

    def _response_tokens(self, prompts, responses: Sequence[str]) -> list[list[int]]:
        """The ids the model learns to write after each prompt: ``response </s>``; with a chat
        template, the assistant's turn as the template writes it (its end-of-turn token included)."""
        if not self.uses_chat_template:
            return [ids[1:] for ids in self.tokenizer.encode_target_batch([str(r) for r in responses])]
        hf, out = self.tokenizer.hf, []
        for prompt, response in zip(prompts, responses):
            messages = self.conversation(prompt)
            opened = hf.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            full = hf.apply_chat_template(messages + [{"role": "assistant", "content": str(response)}], tokenize=False)
            turn = full[len(opened):] if full.startswith(opened) else str(response)
            ids = hf(turn.rstrip(), add_special_tokens=False)["input_ids"]
            if not any(i in self.end_ids for i in ids[-2:]):
                ids.append(self.tokenizer.eos_id)
            out.append(ids)
        return out

    @property
    def end_ids(self) -> list[int]:
        """Ids that end an output (the end-of-text token; an instruct model's end of turn too)."""
        return list(getattr(self.model.config, "eos_ids", None) or [self.model.config.eos_id])

    def training_examples(self, prompts, responses: Sequence[str],
                          counts: dict | None = None) -> list[tuple[list[int], int]]:
        """:meth:`encode_example` of each (prompt with its passages, response) pair; a prompt is a text
        or a list of messages. ``counts`` (a dict) receives ``truncated_prompts`` and
        ``truncated_responses``: how many examples lost tokens to ``max_length``."""
        prompt_ids = self._prompt_tokens(prompts) if self.prompts else [[] for _ in prompts]
        response_ids = self._response_tokens(prompts, responses)
        out = [self.encode_example(p, r) for p, r in zip(prompt_ids, response_ids)]
        if counts is not None:
            start = len(self._start())
            counts["truncated_prompts"] = sum(n - start < len(p) for p, (_, n) in zip(prompt_ids, out))
            counts["truncated_responses"] = sum(len(ids) - n < len(r) for r, (ids, n) in zip(response_ids, out))
        return out

    # -- decoding ----------------------------------------------------------------------------------
    def _settings(self, overrides: dict) -> dict:
        return decode_settings(self.decode_defaults, overrides, min(DEFAULT_NEW_TOKENS, self.max_length // 2),
                               self.max_length - 2)

    def _decoder_inputs(self, prompts, max_new_tokens: int) -> list[list[int]]:
        """``<s> prompt`` ids, each cut so that ``max_new_tokens`` still fit (a prompt keeps its ``</s>``,
        a chat prompt its beginning and end)."""
        start = self._start()
        room = self.max_length - len(start) - max_new_tokens
        out = []
        for ids in self._prompt_tokens(prompts):
            if len(ids) > room:
                if self.uses_chat_template:
                    ids = self._cut_middle(ids, room)
                else:
                    ids = ids[:room - 1] + ids[-1:] if self.prompts else ids[:room]
            out.append(start + ids)
        return out

    def decode(self, prompts, progress: bool = False, **overrides) -> list[dict]:
        """``[{"output", "finish_reason", "prompt_tokens", "completion_tokens"}, ...]``, one per prompt (a
        text, or a list of ``{"role", "content"}`` messages), in the OpenAI API's terms:
        ``finish_reason`` is ``stop`` (the end-of-text token or a stop string) or ``length`` (cut at
        ``max_new_tokens``); the token counts are the model's own (the prompt as read, passages and
        template included)."""
        prompts = [p if isinstance(p, (list, tuple)) else "" if p is None else str(p) for p in prompts]
        if not prompts:
            return []
        s = self._settings(overrides)
        inputs = self._decoder_inputs(prompts, s["max_new_tokens"])
        hf = getattr(self.tokenizer, "hf", None)
        ids = decode_batches(self.model, inputs, self.batch_size, s, lambda rows: CausalLMStepper(self.model, rows),
                             progress, "generating", stop_tokenizer=hf)
        out = []
        for given, new, text in zip(inputs, ids, self.tokenizer.decode_batch(ids)):
            text, stopped = cut_at_stop(text, s.get("stop"))
            limit = min(s["max_new_tokens"], self.max_length - len(given))
            out.append({"output": text, "finish_reason": "stop" if stopped or len(new) < limit else "length",
                        "prompt_tokens": len(given), "completion_tokens": len(new)})
        return out

    def complete(self, prompts, progress: bool = False, **overrides) -> list[str]:
        """The generated text for each prompt (or the continuation of each beginning)."""
        return [d["output"] for d in self.decode(prompts, progress=progress, **overrides)]

    def passages_of(self, prompts) -> list[list[dict]]:
        """The retrieved passages of each prompt (id, doc_id, score, text, title, source), best first;
        a list of messages retrieves for its last user message."""
        queries = []
        for p in prompts:
            if isinstance(p, (list, tuple)):
                users = [m["content"] for m in p if m["role"] == "user"]
                queries.append(str(users[-1]) if users else "")
            else:
                queries.append(str(p))
        out = []
        for rows in self.retriever.rows(queries):
            passages = []
            for row, score in rows:
                p = self.retriever.index.passages[row]
                passages.append({"id": p["id"], "doc_id": p["doc_id"], "score": round(float(score), 4),
                                 "text": p["text"], "title": p.get("title"), "source": p.get("source")})
            out.append(passages)
        return out

    def generate(self, prompts, progress: bool = False, details: bool = False, **overrides) -> list[dict]:
        """``[{"output": text[, "passages": [...]]}, ...]``, one per prompt (a text or a list of messages);
        ``overrides`` are keys of the ``decode:`` section. ``passages``: the retrieved passages, best
        first. ``details``: also ``finish_reason``, ``prompt_tokens`` and ``completion_tokens`` (see
        :meth:`decode`)."""
        outputs = self.decode(prompts, progress=progress, **overrides)
        if not details:
            outputs = [{"output": o["output"]} for o in outputs]
        if self.retriever is not None:
            for o, passages in zip(outputs, self.passages_of(prompts)):
                o["passages"] = passages
        return outputs

    def chat(self, conversations: Sequence[Sequence[dict]], **overrides) -> list[dict]:
        """:meth:`generate` with ``details`` for conversations: each a list of ``{"role": system|user|assistant,
        "content"}``; the reply is the assistant's next turn. A malformed message is a RagtuneError
        naming it."""
        for i, conv in enumerate(conversations):
            if not isinstance(conv, (list, tuple)) or not conv:
                raise RagtuneError(f"messages[{i}]: a non-empty list of {{role, content}} messages")
            for j, m in enumerate(conv):
                if not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant") or "content" not in m:
                    raise RagtuneError(f"messages[{i}][{j}]: needs role (system, user or assistant) and content "
                                       f"(got {m!r:.80})")
        return self.generate([list(c) for c in conversations], details=True, **overrides)

    def stream(self, prompt, **overrides) -> Iterator[dict]:
        """The reply to one prompt (a text or a list of messages) piece by piece: ``{"text": piece}``
        events while it is written, then ``{"text": "", "finish_reason", "prompt_tokens",
        "completion_tokens"}``. A pretrained Hugging Face model streams token by token
        (transformers' ``TextIteratorStreamer``, ``model.generate`` in a thread); text that may be the
        start of a stop string is held back until it is not. ragtune's own models write the reply
        whole and send it as one piece."""
        s = self._settings(overrides)
        if getattr(self.model, "generate_ids", None) is None:
            done = self.decode([prompt], **overrides)[0]
            if done["output"]:
                yield {"text": done["output"]}
            yield {"text": "", **{k: done[k] for k in ("finish_reason", "prompt_tokens", "completion_tokens")}}
            return
        import threading

        from transformers import TextIteratorStreamer

        given = self._decoder_inputs([prompt], s["max_new_tokens"])[0]
        streamer = TextIteratorStreamer(self.tokenizer.hf, skip_prompt=True, skip_special_tokens=True, timeout=600)
        result: dict = {}

        def work():
            try:
                result["ids"] = self.model.generate_ids([given], s, self.tokenizer.hf, streamer=streamer)[0]
            except BaseException as exc:  # handed to the reader below
                result["error"] = exc
                streamer.end()

        was_training = self.model.training
        self.model.eval()
        thread = threading.Thread(target=work, daemon=True)
        thread.start()
        stops, text, sent, stopped = s.get("stop") or [], "", 0, False
        try:
            for piece in streamer:
                text += piece
                cut, stopped = cut_at_stop(text, stops)
                hold = 0 if stopped else max((k for x in stops for k in range(1, len(x)) if cut.endswith(x[:k])), default=0)
                ready = cut[:len(cut) - hold]
                if len(ready) > sent:
                    yield {"text": ready[sent:]}
                    sent = len(ready)
                if stopped:
                    break
            thread.join()
        finally:
            self.model.train(was_training)
        if "error" in result:
            raise result["error"]
        cut, stopped = cut_at_stop(text, stops)
        if not stopped and len(cut) > sent:
            yield {"text": cut[sent:]}
        new = result.get("ids", [])
        limit = min(s["max_new_tokens"], self.max_length - len(given))
        yield {"text": "", "finish_reason": "stop" if stopped or len(new) < limit else "length",
               "prompt_tokens": len(given), "completion_tokens": len(new)}

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Tokens of each text in the model's tokenizer (no special tokens)."""
        return [len(ids) for ids in self.tokenizer.encode_plain_batch([str(t) for t in texts])]

    # -- scoring -----------------------------------------------------------------------------------
    def batch_labels(self, examples: Sequence[tuple[list[int], int | list[bool]]]
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(ids (B, T), mask (B, T), labels (B, T-1))`` of encoded examples, on the model's device:
        labels are the next tokens, with :data:`IGNORE_INDEX` (-100, transformers' convention: left out of
        the loss) on prompt positions and padding. An example is ``(ids, prompt_length)``, or ``(ids,
        learned)`` with one flag per token (a packed row, :func:`pack_examples`)."""
        pad = self.model.config.pad_id
        ids, mask = pad_batch([ids for ids, _ in examples], pad, device=model_device(self.model))  # (B, T)
        labels = ids[:, 1:].masked_fill(mask[:, 1:] == 0, IGNORE_INDEX)  # (B, T-1): position t predicts token t+1
        for row, (_, given) in enumerate(examples):
            if isinstance(given, int):
                labels[row, :given - 1] = IGNORE_INDEX  # the prompt is given, not learned
            else:
                learned = torch.tensor(given[1:], dtype=torch.bool, device=labels.device)  # (T_row - 1,)
                labels[row, :len(learned)][~learned] = IGNORE_INDEX
        return ids, mask, labels

    def batch_logits(self, examples: Sequence[tuple[list[int], int | list[bool]]]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(logits (B, T-1, V), labels (B, T-1))`` of encoded examples (:meth:`batch_labels`). For a
        pretrained model only the learned positions come back, ``(logits (1, N, V), labels (1, N))``: its
        output layer runs on those alone (the same loss, less work and memory)."""
        ids, mask, labels = self.batch_labels(examples)
        if isinstance(self.model, TransformerForCausalLM):
            return self.model(ids[:, :-1], mask[:, :-1]), labels  # (B, T-1, V), (B, T-1)
        # a pretrained model: the output layer only where a label is learned (the prompt needs no logits)
        keep = labels != IGNORE_INDEX  # (B, T-1)
        logits = self.model(ids[:, :-1], mask[:, :-1], keep=keep)  # (N, V)
        return logits[None], labels[keep][None]  # (1, N, V), (1, N)

    def example_log_likelihoods(self, examples: Sequence[tuple[list[int], int | list[bool]]]) -> torch.Tensor:
        """``(B,)`` the summed log-probability of each encoded example's learned tokens (its response),
        with the graph when gradients are on; the output layer runs only on those positions."""
        ids, mask, labels = self.batch_labels(examples)
        keep = labels != IGNORE_INDEX  # (B, T-1)
        if isinstance(self.model, TransformerForCausalLM):
            logits = self.model(ids[:, :-1], mask[:, :-1])[keep]  # (N, V)
        else:
            logits = self.model(ids[:, :-1], mask[:, :-1], keep=keep)  # (N, V)
        picked = torch.log_softmax(logits.float(), dim=-1).gather(-1, labels[keep][:, None]).squeeze(-1)  # (N,)
        rows = keep.nonzero(as_tuple=True)[0]  # (N,): the example of each kept position, in mask order
        return torch.zeros(len(examples), device=picked.device).index_add(0, rows, picked)  # (B,)

    @torch.no_grad()
    def loss(self, prompts: Sequence[str], responses: Sequence[str]) -> float:
        """Mean negative log-likelihood per response token (``</s>`` included), in nats."""
        examples = self.training_examples(prompts, responses)
        return mean_token_nll(self.model, [len(ids) for ids, _ in examples], self.batch_size,
                              lambda rows: self.batch_logits([examples[i] for i in rows]), IGNORE_INDEX)

    def evaluate(self, prompts: Sequence[str], responses: Sequence[str], max_decode_rows: int | None = None,
                 seed: int = 0, progress: bool = False, **overrides) -> dict:
        """``{"rougeL", "rouge1", "rouge2", "bleu", "loss", "perplexity", "n", "decoded", "strategy", "examples"}``.

        The loss uses every example; the decoded metrics decode every example, or a seeded random
        sample of ``max_decode_rows`` (``decoded`` says how many).
        """
        prompts, responses = ["" if p is None else str(p) for p in prompts], [str(r) for r in responses]
        if len(prompts) != len(responses):
            raise RagtuneError(f"{len(prompts)} prompts but {len(responses)} responses")
        if not prompts:
            raise RagtuneError("nothing to evaluate: no examples")
        rows = decode_rows(len(prompts), max_decode_rows, seed)
        if self.prompts:
            given, refs = [prompts[i] for i in rows], [responses[i] for i in rows]
        else:  # continue the first half of each text; compare with the second half
            given, refs = map(list, zip(*(split_for_continuation(responses[i]) for i in rows)))
        hyps = self.complete(given, progress=progress, **overrides)
        scores = rouge(hyps, refs)
        b = bleu(hyps, refs, tokenize=self.bleu_tokenize)
        loss = self.loss(prompts, responses)
        ppl = perplexity(loss)
        return {"rougeL": scores["rougeL"], "rouge1": scores["rouge1"], "rouge2": scores["rouge2"], "bleu": b["bleu"],
                "loss": loss, "perplexity": ppl if math.isfinite(ppl) else None, "n": len(prompts),
                "decoded": len(rows), "strategy": self._settings(overrides)["strategy"],
                "examples": [{"prompt": p, "reference": r, "output": h} for p, r, h in list(zip(given, refs, hyps))[:5]]}
