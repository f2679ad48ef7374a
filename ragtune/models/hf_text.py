"""Pretrained Hugging Face models for translation and generation, behind ragtune's own model interface.

Three kinds, chosen from ``model.name_or_path`` (a Hub id, a local ``save_pretrained`` folder, a
``.gguf`` file, or an alias: ``minilm``, ``smollm2-135m-instruct``, ``gemma3-270m``; GGUF files are
de-quantised once per process by :mod:`ragtune.models.gguf`) and the task:

=========================  ==========================================  ===============================
kind                       what is loaded                              used for
=========================  ==========================================  ===============================
``seq2seq``                ``AutoModelForSeq2SeqLM`` (T5, BART, Marian)  ``task: translation``
``bert2bert``              ``EncoderDecoderModel`` warm-started from    ``task: translation`` when the
                           one encoder-only checkpoint (e.g. MiniLM)    checkpoint is encoder-only
                           for both halves; cross-attention is new
``causal``                 ``AutoModelForCausalLM`` (GPT-2, Llama, ...)  ``task: generation``
=========================  ==========================================  ===============================

:class:`HFSeq2SeqLM` and :class:`HFCausalLM` wrap the model with the interface of ragtune's
from-scratch models (``forward``, ``encode``/``decode``, ``config.pad_id/bos_id/eos_id/max_length``),
so the pipelines, the losses and the predictors are the same for both families. Decoding goes
through transformers' own ``model.generate`` (key/value cache, beams, sampling, stop strings,
repetition penalty): :meth:`HFCausalLM.generate_ids` / :meth:`HFSeq2SeqLM.generate_ids` map the
``decode:`` settings onto a ``GenerationConfig`` (:func:`generation_config`) under the names
transformers uses; ragtune's own decoding (:mod:`ragtune.models.decoding`) stays for its from-scratch
models.
:class:`HFTokenizer` gives a transformers tokenizer the interface of
:class:`~ragtune.data.seq2seq_tokenizer.Seq2SeqTokenizer`.

BERT2BERT from MiniLM: its vocabulary is uncased English and strips accents ("Männer" → "manner"),
so it suits English targets only; :func:`check_target_vocabulary` stops a run whose targets the
tokenizer cannot give back (German or Chinese targets need a tokenizer trained on the data:
``model.backbone: scratch``).

Example::

    tok, model, kind = load_hf_text_model("minilm", family="seq2seq", max_length=64)   # bert2bert
    logits = model(src_ids, src_mask, tgt_in)   # (B, T, V)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ragtune.errors import RagtuneError

HF_DIR = "hf_model"  # in a run directory: the fine-tuned model and its tokenizer (save_pretrained)


@dataclass
class HFTextConfig:
    """The few settings ragtune's decoding and losses read from a model."""

    pad_id: int
    bos_id: int  # the decoder's first token (seq2seq: decoder_start_token_id; causal: the BOS token)
    eos_id: int
    max_length: int
    vocab_size: int
    eos_ids: list[int] | None = None  # causal: every id that ends an output (the tokenizer's and generation_config's)


class HFTokenizer:
    """A transformers fast tokenizer with the methods of ``Seq2SeqTokenizer`` that ragtune uses.

    Source ids are the tokenizer's own encoding (its special tokens, e.g. ``[CLS] x [SEP]`` or
    ``x </s>``); target ids are ``bos tokens eos`` with the model's decoder start token as ``bos``.
    """

    joint = True

    def __init__(self, tokenizer, bos_id: int, eos_id: int):
        self.hf = tokenizer
        self.pad_id = int(tokenizer.pad_token_id)
        self.bos_id, self.eos_id = int(bos_id), int(eos_id)
        self.unk_id = tokenizer.unk_token_id
        self.source_vocab_size = self.target_vocab_size = len(tokenizer)

    def _plain(self, texts) -> list[list[int]]:
        return self.hf(["" if t is None else str(t) for t in texts], add_special_tokens=False)["input_ids"]

    def encode_plain_batch(self, texts) -> list[list[int]]:
        return self._plain(texts)

    def encode_source_batch(self, texts, max_length: int | None = None) -> list[list[int]]:
        """Tokens then ``eos`` (at most ``max_length`` ids, ``eos`` kept)."""
        keep = None if max_length is None else max_length - 1
        return [ids[:keep] + [self.eos_id] for ids in self._plain(texts)]

    def encode_target_batch(self, texts, max_length: int | None = None) -> list[list[int]]:
        """``bos`` tokens ``eos`` (at most ``max_length`` ids, both kept)."""
        keep = None if max_length is None else max_length - 2
        return [[self.bos_id] + ids[:keep] + [self.eos_id] for ids in self._plain(texts)]

    def decode_batch(self, batch, side: str = "target") -> list[str]:
        return [s.strip() for s in self.hf.batch_decode([list(ids) for ids in batch], skip_special_tokens=True,
                                                        clean_up_tokenization_spaces=self.wordpiece)]

    @property
    def wordpiece(self) -> bool:
        """Whether the tokenizer is WordPiece (BERT): its decoded text has spaces before punctuation that
        transformers' clean-up removes ("hello , world" → "hello, world"); for BPE the clean-up would
        corrupt text, so it is off there."""
        backend = getattr(self.hf, "backend_tokenizer", None)
        return type(getattr(backend, "model", None)).__name__ == "WordPiece"

    def save(self, folder: str | Path) -> None:
        self.hf.save_pretrained(str(folder))


def generation_config(s: dict, eos_ids: list[int], pad_id: int, max_new_tokens: int):
    """A ``transformers.GenerationConfig`` for the decoding settings ``s`` (the ``decode:`` keys).

    ============================  =============================================================
    ``decode:``                   ``GenerationConfig``
    ============================  =============================================================
    ``strategy: greedy``          ``do_sample=False, num_beams=1``
    ``strategy: beam``            ``num_beams=beam_size, length_penalty`` (the same exponent:
                                  beams ranked by log-probability / length ** length_penalty)
    ``strategy: sample``          ``do_sample=True, temperature, top_k`` (null → 0: off),
                                  ``top_p`` (null → 1.0: off); the draws seeded by ``seed``
    ``max_new_tokens``            ``max_new_tokens``
    ``repetition_penalty``        ``repetition_penalty`` (CTRL's; 1.0: off)
    ``stop``                      ``stop_strings`` (the output is cut before the first one)
    ============================  =============================================================

    Every knob is set explicitly, so nothing is taken over from the model's own
    ``generation_config.json`` (whose defaults, e.g. sampling at temperature 0.2, would otherwise apply).
    """
    from transformers import GenerationConfig

    strategy = s["strategy"]
    return GenerationConfig(
        max_new_tokens=int(max_new_tokens), do_sample=strategy == "sample",
        num_beams=int(s["beam_size"]) if strategy == "beam" else 1,
        length_penalty=float(s["length_penalty"]), early_stopping=False,
        temperature=float(s["temperature"]) if strategy == "sample" else 1.0,
        top_k=int(s["top_k"] or 0) if strategy == "sample" else 50,  # 50: the default, not a "flag set for greedy" warning
        top_p=float(s["top_p"] or 1.0) if strategy == "sample" else 1.0,
        repetition_penalty=float(s.get("repetition_penalty") or 1.0),
        stop_strings=list(s["stop"]) if s.get("stop") else None,
        eos_token_id=list(eos_ids), pad_token_id=int(pad_id), bos_token_id=None,
        num_return_sequences=1, use_cache=True,
    )


def _new_tokens(out: torch.Tensor, eos_ids: list[int], pad_id: int) -> list[list[int]]:
    """Rows of generated ids (N, t) cut at the first end-of-text id, without it and padding."""
    ends = set(eos_ids)
    rows = []
    for row in out.tolist():
        cut = next((i for i, t in enumerate(row) if t in ends), len(row))
        rows.append([t for t in row[:cut] if t != pad_id])
    return rows


def _run_generate(hf_model, s: dict, tokenizer, **inputs) -> torch.Tensor:
    """``hf_model.generate(**inputs)``; sampling draws from a generator seeded by ``s["seed"]`` without
    touching the caller's random state."""
    devices = [inputs["input_ids"].device] if inputs["input_ids"].device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(int(s["seed"]))
        return hf_model.generate(**inputs, generation_config=s["_generation_config"],
                                 tokenizer=tokenizer if s.get("stop") else None)


class HFSeq2SeqLM(nn.Module):
    """An encoder-decoder of transformers with ``TransformerForSeq2Seq``'s interface."""

    def __init__(self, model: nn.Module, config: HFTextConfig):
        super().__init__()
        self.hf = model
        self.config = config

    def encode(self, src_ids: torch.Tensor, src_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.hf.get_encoder()(input_ids=src_ids, attention_mask=src_mask).last_hidden_state  # (B, S, d)

    def decode(self, memory: torch.Tensor, src_mask: torch.Tensor, tgt_ids: torch.Tensor, cache=None) -> torch.Tensor:
        from transformers.modeling_outputs import BaseModelOutput

        out = self.hf(encoder_outputs=BaseModelOutput(last_hidden_state=memory), attention_mask=src_mask,
                      decoder_input_ids=tgt_ids, use_cache=False)
        return out.logits  # (B, T, V)

    def forward(self, src_ids: torch.Tensor, src_mask: torch.Tensor, tgt_ids: torch.Tensor) -> torch.Tensor:
        return self.hf(input_ids=src_ids, attention_mask=src_mask, decoder_input_ids=tgt_ids, use_cache=False).logits

    def new_cache(self):
        return None  # ragtune's decoding is not used for these models: generate_ids is

    @torch.no_grad()
    def generate_ids(self, sources: list[list[int]], s: dict, tokenizer=None) -> list[list[int]]:
        """Target ids (without the start token, ``</s>`` or padding) for source id lists, through
        ``model.generate`` with the decoding settings ``s`` (see :func:`generation_config`); at most
        ``s["max_new_tokens"]`` and ``max_length - 1`` of them."""
        from ragtune.models.seq2seq import pad_batch

        max_new_tokens = min(int(s["max_new_tokens"]), self.config.max_length - 1)
        device = next(self.parameters()).device
        ids, mask = pad_batch(sources, self.config.pad_id, device=device)  # (B, S), right-padded
        s = {**s, "_generation_config": generation_config(s, [self.config.eos_id], self.config.pad_id, max_new_tokens)}
        s["_generation_config"].decoder_start_token_id = self.config.bos_id
        out = _run_generate(self.hf, s, tokenizer, input_ids=ids, attention_mask=mask.long())  # (B, 1+t)
        return _new_tokens(out[:, 1:], [self.config.eos_id], self.config.pad_id)

    def num_parameters(self, non_embedding: bool = True) -> int:
        return sum(p.numel() for p in self.parameters())


class HFCausalLM(nn.Module):
    """A causal language model of transformers with ``TransformerForCausalLM``'s interface:
    left or right padding, each row's positions counting its real tokens only."""

    def __init__(self, model: nn.Module, config: HFTextConfig):
        super().__init__()
        self.hf = model
        self.config = config

    def forward(self, ids: torch.Tensor, mask: torch.Tensor | None = None, cache=None,
                keep: torch.Tensor | None = None) -> torch.Tensor:
        """Next-token logits (B, T, V); with ``keep`` (a boolean (B, T) mask) only those positions' logits,
        flattened to (N, V): the output layer (a vocabulary of 49k for SmolLM2) runs on the N positions a
        loss needs, not on every prompt token (transformers' ``logits_to_keep``)."""
        mask = (ids != self.config.pad_id).long() if mask is None else mask.long()  # (B, T)
        pos = (mask.cumsum(dim=1) - 1).clamp(min=0)  # (B, T)
        if keep is None:
            return self.hf(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False).logits  # (B, T, V)
        if self._keeps_logits():
            return self.hf(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False,
                           logits_to_keep=keep).logits  # (N, V)
        return self.hf(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False).logits[keep]  # (N, V)

    def _keeps_logits(self) -> bool:
        """Whether the model's forward takes ``logits_to_keep`` (most causal LMs of transformers 5 do)."""
        import inspect

        base = self.hf.get_base_model() if hasattr(self.hf, "get_base_model") else self.hf
        return "logits_to_keep" in inspect.signature(type(base).forward).parameters

    def new_cache(self):
        return None  # ragtune's decoding is not used for these models: generate_ids is

    @torch.no_grad()
    def generate_ids(self, prompts: list[list[int]], s: dict, tokenizer=None, streamer=None) -> list[list[int]]:
        """The generated ids (without the prompt, the end-of-text token or padding) for prompt id
        lists, left-padded into one batch, through ``model.generate`` with the decoding settings ``s``
        (see :func:`generation_config`); ``config.eos_ids`` end an output, which has at most
        ``s["max_new_tokens"]`` tokens and what fits in ``max_length`` after the longest prompt.
        ``streamer``: a transformers streamer (e.g. ``TextIteratorStreamer``) fed each new token."""
        from ragtune.models.seq2seq import pad_batch

        longest = max(len(p) for p in prompts)
        max_new_tokens = min(int(s["max_new_tokens"]), self.config.max_length - longest)
        if max_new_tokens < 1:
            raise RagtuneError(f"the longest prompt has {longest} tokens: no room left to generate within "
                               f"max_length={self.config.max_length}")
        device = next(self.parameters()).device
        ids, mask = pad_batch(prompts, self.config.pad_id, left=True, device=device)  # (B, P), left-padded
        eos = self.config.eos_ids or [self.config.eos_id]
        s = {**s, "_generation_config": generation_config(s, eos, self.config.pad_id, max_new_tokens)}
        extra = {} if streamer is None else {"streamer": streamer}
        out = _run_generate(self.hf, s, tokenizer, input_ids=ids, attention_mask=mask.long(), **extra)  # (B, P+t)
        return _new_tokens(out[:, ids.shape[1]:], eos, self.config.pad_id)

    def num_parameters(self, non_embedding: bool = True) -> int:
        return sum(p.numel() for p in self.parameters())


def _is_encoder_only(hf_config) -> bool:
    return not hf_config.is_encoder_decoder and hf_config.model_type in ("bert", "roberta", "xlm-roberta", "electra",
                                                                        "distilbert", "mpnet", "deberta-v2")


def _mean_rows(model: nn.Module, old_size: int) -> None:
    """Rows of tokens added after ``old_size`` (e.g. a padding token) set to the mean of the pretrained
    rows, in the input embeddings and an untied output layer: the same values every time the base
    model is loaded (transformers draws them at random), so a LoRA adapter saved without the
    embeddings reloads to exactly the trained model."""
    with torch.no_grad():
        for layer in {id(x): x for x in (model.get_input_embeddings(), model.get_output_embeddings()) if x is not None}.values():
            if layer.weight.shape[0] > old_size:
                layer.weight[old_size:] = layer.weight[:old_size].mean(dim=0, keepdim=True)


def load_hf_text_model(name_or_path: str, family: str, max_length: int, folder: str | Path | None = None,
                       adapter: bool = False, load_in_4bit: bool = False, device=None):
    """``(HFTokenizer, model wrapper, kind)``: ``family`` ``seq2seq`` (an encoder-decoder: ``seq2seq`` or
    ``bert2bert``, for translation) or ``causal`` (a decoder-only language model, for generation).

    ``folder``: a run's ``hf_model`` folder (a fine-tuned model; with ``adapter``, a LoRA adapter that
    is loaded onto the pretrained ``name_or_path``); else ``name_or_path`` (alias, local folder, ``.gguf``
    file or Hub id) is loaded as pretrained. ``load_in_4bit``: the base in 4-bit NF4 on the CUDA
    ``device`` (QLoRA, :func:`ragtune.models.hf.quantization_config`).
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer, EncoderDecoderModel

    from ragtune.models.hf import _offline_error, check_source, load_lora_adapter, quantization_config

    if folder is not None and adapter:  # the pretrained base, then the adapter onto it
        tok, wrapper, kind = load_hf_text_model(name_or_path, family, max_length)
        wrapper.hf = load_lora_adapter(wrapper.hf, folder, name_or_path)
        return tok, wrapper, kind
    source = str(folder) if folder is not None else check_source(name_or_path)
    try:
        hf_config = AutoConfig.from_pretrained(source)
        tokenizer = AutoTokenizer.from_pretrained(source)
    except OSError as exc:
        raise _offline_error(source, "the model of ", exc) from None
    quantized = {} if not load_in_4bit else {"quantization_config": quantization_config(True),
                                             "device_map": {"": str(device)}}
    if family == "seq2seq":
        if hf_config.model_type == "encoder-decoder":
            model, kind = EncoderDecoderModel.from_pretrained(source), "bert2bert"
        elif hf_config.is_encoder_decoder:
            model, kind = AutoModelForSeq2SeqLM.from_pretrained(source, **quantized), "seq2seq"
        elif _is_encoder_only(hf_config):
            model = EncoderDecoderModel.from_encoder_decoder_pretrained(source, source)
            kind = "bert2bert"
        else:
            raise RagtuneError(f"model.name_or_path: {name_or_path!r} is a {hf_config.model_type!r} model; task translation "
                               "needs an encoder-decoder (T5, BART, Marian, ...) or an encoder-only checkpoint to warm-start "
                               "BERT2BERT (e.g. minilm)")
        if kind == "bert2bert":
            start = tokenizer.cls_token_id if tokenizer.cls_token_id is not None else tokenizer.bos_token_id
            eos = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id
            model.config.decoder_start_token_id, model.config.eos_token_id = start, eos
            model.config.pad_token_id = tokenizer.pad_token_id
        else:
            start, eos = model.config.decoder_start_token_id, model.config.eos_token_id
        if start is None or eos is None or tokenizer.pad_token_id is None:
            raise RagtuneError(f"model.name_or_path: {name_or_path!r} lacks a decoder start, end or padding token "
                               f"(decoder_start_token_id={start}, eos_token_id={eos}, pad={tokenizer.pad_token_id})")
        tok = HFTokenizer(tokenizer, start, eos)
        wrapper = HFSeq2SeqLM(model, HFTextConfig(tok.pad_id, tok.bos_id, tok.eos_id, max_length, len(tokenizer)))
        return tok, wrapper, kind
    if family != "causal":
        raise ValueError(f"family must be seq2seq or causal (got {family!r})")
    if hf_config.is_encoder_decoder or _is_encoder_only(hf_config):
        raise RagtuneError(f"model.name_or_path: {name_or_path!r} is a {hf_config.model_type!r} model; task generation "
                           "needs a causal language model (GPT-2, Llama, Qwen, ...)")
    model = AutoModelForCausalLM.from_pretrained(source, **quantized)
    eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.cls_token_id
    if eos is None:
        raise RagtuneError(f"model.name_or_path: the tokenizer of {name_or_path!r} has no end-of-text token")
    bos = eos if bos is None else bos
    if tokenizer.pad_token_id is None or tokenizer.pad_token_id == eos:  # padding must not hide the end of text
        old_size = model.get_input_embeddings().weight.shape[0]
        tokenizer.add_special_tokens({"pad_token": "<|pad|>"})
        if len(tokenizer) > old_size:
            model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
            _mean_rows(model, old_size)
    model.config.pad_token_id = tokenizer.pad_token_id
    limit = getattr(hf_config, "max_position_embeddings", None) or getattr(hf_config, "n_positions", None)
    if limit is not None and max_length > limit:
        raise RagtuneError(f"model.max_length: {max_length} is more than {name_or_path!r} has positions for ({limit})")
    tok = HFTokenizer(tokenizer, bos, eos)
    ends = getattr(getattr(model, "generation_config", None), "eos_token_id", None)  # e.g. an instruct model's end of turn
    ends = [ends] if isinstance(ends, int) else list(ends or [])
    eos_ids = [eos] + [int(e) for e in ends if e != eos and e != tokenizer.pad_token_id]
    wrapper = HFCausalLM(model, HFTextConfig(tok.pad_id, tok.bos_id, tok.eos_id, max_length, len(tokenizer), eos_ids))
    return tok, wrapper, "causal"


def tune_text_model(wrapper: nn.Module, kind: str, gradient_checkpointing: bool, lora) -> None:
    """Gradient checkpointing and LoRA (``model.lora``, a :class:`ragtune.config.LoraConfig`) on a
    loaded text model, in place: ``wrapper.hf`` becomes the peft model. A BERT2BERT model also
    trains its new cross-attention and output layer whole (they start random)."""
    from ragtune.models.hf import apply_lora, enable_gradient_checkpointing

    if gradient_checkpointing:
        enable_gradient_checkpointing(wrapper.hf)
    if lora is not None and lora.enabled:
        whole = ["crossattention", "cls"] if kind == "bert2bert" else None
        targets = lora.target_modules or (["query", "value"] if kind == "bert2bert" else None)  # peft has no default there
        wrapper.hf = apply_lora(wrapper.hf, lora.r, lora.alpha, lora.dropout, targets,
                                task="causal" if kind == "causal" else "seq2seq", modules_to_save=whole)


def save_hf_text_model(tokenizer: HFTokenizer, model: nn.Module, folder: str | Path, lora: dict | None = None) -> None:
    """Write the fine-tuned model and its tokenizer with ``save_pretrained`` (safetensors). With LoRA
    (``lora``: the run's ``model.lora`` as a dict), ``save: merged`` merges the adapters into the
    weights first (``model.hf`` becomes the plain merged model, so what is evaluated next is what
    was saved); ``save: adapter`` writes only the adapters (:func:`ragtune.models.hf.save_lora_adapter`)."""
    from ragtune.models.hf import merge_lora, save_lora_adapter

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if lora and lora.get("save") == "adapter":
        save_lora_adapter(model.hf, folder)
    else:
        if lora:
            model.hf = merge_lora(model.hf)
        model.hf.save_pretrained(str(folder), safe_serialization=True)
    tokenizer.save(folder)


def check_target_vocabulary(tokenizer: HFTokenizer, texts: list[str], source: str, max_lost: float = 0.02) -> None:
    """Stop when more than ``max_lost`` of the target texts do not come back from the tokenizer
    (up to case and spacing): an uncased English vocabulary strips accents ("Männer" → "manner")
    and has no pieces for most Chinese text."""
    if not texts:
        return
    sample = texts[:2000]
    back = tokenizer.decode_batch(tokenizer.encode_plain_batch(sample))

    def norm(s: str) -> str:
        return "".join(s.lower().split())

    lost = [(t, b) for t, b in zip(sample, back) if norm(t) != norm(b)]
    if len(lost) > max_lost * len(sample):
        t, b = lost[0]
        raise RagtuneError(
            f"model.name_or_path: the tokenizer of {source!r} cannot write {len(lost)} of {len(sample)} target texts "
            f"back (e.g. {t[:60]!r} -> {b[:60]!r}); its vocabulary does not cover the target language. Use "
            "model.backbone: scratch (a tokenizer trained on the data) or a pretrained model made for that language"
        )
