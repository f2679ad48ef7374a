"""Tiny random decoder LLMs that tests write themselves (no downloads): a Llama saved with
``save_pretrained`` and the same kind of model written as a GGUF file with the ``gguf`` package.

Imported by test modules as ``from tiny_llm import ...`` (``tests/`` is on pytest's ``pythonpath``).
"""

from __future__ import annotations

import random

import torch

WORDS = "alpha beta gamma delta eps zeta eta theta iota kappa".split()
EOS = "<|endoftext|>"


def reversal_rows(n: int, seed: int = 0, words: list[str] | None = None, longest: int = 5) -> list[dict]:
    """``n`` examples of a task a small model learns fast: ``prompt`` 2 to ``longest`` words of ``words``
    (default :data:`WORDS`), ``response`` the same words reversed."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        seq = [rng.choice(words or WORDS) for _ in range(rng.randint(2, longest))]
        out.append({"prompt": " ".join(seq), "response": " ".join(reversed(seq))})
    return out


def byte_vocab() -> list[str]:
    """A byte-level BPE vocabulary: the end-of-text token, the 256 byte symbols, and one token per word of
    :data:`WORDS` (with and without the leading space symbol ``Ġ``), with the merges that build them."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    return [EOS, *bytes_to_unicode().values()]


def _word_merges(vocab: list[str]) -> list[str]:
    """Merges that join each word of WORDS (and ``Ġword``) left to right; their results are appended to ``vocab``."""
    merges = []
    for word in WORDS:
        for spelled in (word, "Ġ" + word):
            piece = spelled[0]
            for ch in spelled[1:]:
                merge = f"{piece} {ch}"
                piece += ch
                if merge not in merges:
                    merges.append(merge)
                if piece not in vocab:
                    vocab.append(piece)
    return merges


def make_byte_tokenizer():
    """The tokenizer of :func:`write_tiny_gguf` as a transformers fast tokenizer (GPT-2 style, EOS, no pad)."""
    from transformers import GPT2TokenizerFast
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    vocab = byte_vocab()
    merges = _word_merges(vocab)
    backend = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(vocab)},
                                   merges=[tuple(m.split(" ")) for m in merges]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    return GPT2TokenizerFast(tokenizer_object=backend, bos_token=EOS, eos_token=EOS, unk_token=EOS)


def llama_config(vocab_size: int, layers: int = 2):
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
                       num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=64,
                       bos_token_id=0, eos_token_id=0, pad_token_id=None, tie_word_embeddings=False,
                       initializer_range=0.2, rms_norm_eps=1e-5)


def save_tiny_llama(folder, seed: int = 0):
    """A random 2-layer Llama causal LM (hidden 32, grouped key/value heads) with a byte-level BPE tokenizer
    that has no padding token, saved with ``save_pretrained`` into ``folder``; returns ``folder``."""
    from transformers import LlamaForCausalLM

    tokenizer = make_byte_tokenizer()
    torch.manual_seed(seed)
    LlamaForCausalLM(llama_config(len(tokenizer))).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def write_tiny_gguf(path, seed: int = 0, architecture: str = "llama"):
    """A random 2-layer Llama written as a GGUF file (F32 tensors, llama.cpp's tensor names, the byte-level
    tokenizer in its metadata) at ``path``; returns ``path``. ``architecture`` only changes the name the
    file states (to test an architecture transformers cannot read)."""
    import gguf
    import numpy as np
    from transformers import LlamaForCausalLM

    vocab = byte_vocab()
    merges = _word_merges(vocab)
    config = llama_config(len(vocab))
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    writer = gguf.GGUFWriter(str(path), architecture)
    writer.add_name("tiny-llama")
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_rope_dimension_count(config.head_dim)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_vocab_size(len(vocab))
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(vocab)
    writer.add_token_types([3] + [1] * (len(vocab) - 1))  # 3: control (end of text), 1: normal
    writer.add_token_merges(merges)
    writer.add_bos_token_id(0)
    writer.add_eos_token_id(0)
    names = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
             "lm_head.weight": "output.weight"}
    layer = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
             "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
             "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm"}
    for name, tensor in model.state_dict().items():
        if name in names:
            gguf_name = names[name]
        else:
            _model, _layers, index, *rest = name.split(".")
            module, leaf = ".".join(rest[:-1]), rest[-1]
            gguf_name = f"blk.{index}.{layer[module]}.{leaf}"
        writer.add_tensor(gguf_name, np.ascontiguousarray(tensor.detach().float().numpy()))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def save_tiny_chat_llama(folder, seed: int = 0):
    """:func:`save_tiny_llama` with a ChatML chat template (as SmolLM2-Instruct's): special tokens
    ``<|im_start|>`` and ``<|im_end|>``, the latter the end-of-text token; returns ``folder``."""
    from transformers import LlamaForCausalLM

    tokenizer = make_byte_tokenizer()
    tokenizer.add_tokens(["<|im_start|>", "<|im_end|>"], special_tokens=True)
    tokenizer.eos_token = "<|im_end|>"
    tokenizer.chat_template = CHATML
    torch.manual_seed(seed)
    model = LlamaForCausalLM(llama_config(len(tokenizer)))
    model.config.eos_token_id = model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


# -- a synthetic corpus whose answers exist only in it (generative QA, RAG training) -----------------

ATTRIBUTES = {"code": WORDS, "color": "red blue green white black pink gold grey".split(),
              "city": "paris rome oslo lima cairo delhi tokyo quito".split()}
NO_ANSWER = "unanswerable"


ATTRIBUTES_ZH = {"颜色": list("红黄蓝绿白黑紫灰"), "城市": list("京沪津渝港澳杭苏"), "代号": list("甲乙丙丁戊己庚辛")}
_ZH_USED = set("".join(ATTRIBUTES_ZH) + "".join("".join(v) for v in ATTRIBUTES_ZH.values()) + "的是什么。？")


def entity_names(n: int, chinese: bool = False) -> list[str]:
    """``e00``, ``e01``, ...; Chinese: ``n`` single CJK characters that no attribute or value uses."""
    if not chinese:
        return [f"e{i:02d}" for i in range(n)]
    names = [ch for ch in (chr(0x5f00 + i) for i in range(4 * n)) if ch not in _ZH_USED]
    return names[:n]


def codes_squad(path, entities: int = 40, seed: int = 0, chinese: bool = False) -> dict:
    """A SQuAD-format file at ``path``: one article per entity ``eNN``, one paragraph
    ``"eNN code is kappa . eNN color is red . eNN city is rome ."`` with random values, and one question
    per attribute (``"code of eNN ?"`` → ``kappa``); ``chinese``: ``"X的颜色是红。X的城市是京。..."`` and
    ``"X的颜色是什么？"`` → ``红``. The values are drawn at random, so a model can only know a test entity's
    answers from its passage. Returns the SQuAD dict."""
    import json

    rng = random.Random(seed)
    attributes = ATTRIBUTES_ZH if chinese else ATTRIBUTES
    data = []
    for name in entity_names(entities, chinese):
        values = {a: rng.choice(v) for a, v in attributes.items()}
        fact = (lambda a, v: f"{name}的{a}是{v}") if chinese else (lambda a, v: f"{name} {a} is {v}")
        context = ("" if chinese else " ").join(fact(a, v) + ("。" if chinese else " .") for a, v in values.items())
        qas = []
        for a, v in values.items():
            start = context.index(fact(a, v)) + len(fact(a, v)) - len(v)
            question = f"{name}的{a}是什么？" if chinese else f"{a} of {name} ?"
            qas.append({"id": f"{name}-{a}", "question": question, "answers": [{"text": v, "answer_start": start}]})
        data.append({"title": name, "paragraphs": [{"context": context, "qas": qas}]})
    squad = {"version": "1.1", "data": data}
    with open(path, "w", encoding="utf-8") as f:
        json.dump(squad, f, ensure_ascii=False)
    return squad


def codes_vocabulary(entities: int = 40, chinese: bool = False) -> list[str]:
    """The words of :func:`codes_squad` prompts and answers (and of ragtune's QA prompt format)."""
    attributes = ATTRIBUTES_ZH if chinese else ATTRIBUTES
    words = ["[UNK]", "[PAD]", *entity_names(entities, chinese), "Question", ":", "[", "]",
             *[str(i) for i in range(1, 10)], NO_ANSWER, "user", "assistant", "system", '"', "Answer", "Evidence"]
    words += list("".join(attributes)) + list("的是什么。？无法回答") if chinese else [*attributes, "is", "of", ".", "?"]
    for values in attributes.values():
        words += [v for v in values if v not in words]
    return list(dict.fromkeys(words))


def save_tiny_word_llama(folder, seed: int = 0, entities: int = 40, hidden: int = 64, layers: int = 2,
                         chat: bool = True, chinese: bool = False):
    """A random Llama causal LM (hidden ``hidden``, 256 positions) with a word-level tokenizer over
    :func:`codes_vocabulary` (whitespace and punctuation split, each CJK character a token; unknown words
    are ``[UNK]``), a padding token, and (``chat``) the ChatML template of :data:`CHATML`; saved with
    ``save_pretrained`` into ``folder``, which is returned."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    vocab = codes_vocabulary(entities, chinese)
    backend = Tokenizer(models.WordLevel(vocab={w: i for i, w in enumerate(vocab)}, unk_token="[UNK]"))
    backend.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, strip_accents=False,
                                                    lowercase=False)
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # words joined by spaces
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", pad_token="[PAD]")
    specials = ["<|im_start|>", "<|im_end|>"] if chat else ["</s>"]
    tokenizer.add_tokens(specials, special_tokens=True)
    tokenizer.eos_token = specials[-1]
    tokenizer.bos_token = specials[-1] if not chat else "<|im_start|>"
    if chat:
        tokenizer.chat_template = CHATML
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden,
                         num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2, head_dim=hidden // 4,
                         max_position_embeddings=256, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                         tie_word_embeddings=False, initializer_range=0.05, rms_norm_eps=1e-5)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
