"""Subword tokenizers trained on the training texts, with Hugging Face ``tokenizers``.

One pipeline for both kinds (``wordpiece`` and ``bpe``), so they differ only in the subword
algorithm:

* normalizer: ``BertNormalizer`` – cleans control characters, puts spaces around every CJK
  character (so Chinese is tokenized per character, and frequent characters are never [UNK]),
  optionally lowercases, and keeps accents (``strip_accents=False``: German/French words keep
  their meaning: ``für`` is not ``fur``);
* pre-tokenizer: ``BertPreTokenizer`` – splits on whitespace and punctuation;
* model: WordPiece, or BPE with the same ``##`` continuation prefix, both with ``[UNK]``;
* post-processor: ``[CLS]`` in front of every text (``[CLS] A [SEP] B`` for pairs);
* decoder: ``WordPiece`` (joins ``##`` pieces) for both kinds.

Special tokens and ids: ``[PAD]`` = 0, ``[UNK]`` = 1, ``[CLS]`` = 2, ``[SEP]`` = 3.

Why character-level BPE and not byte-level BPE: byte-level BPE never produces [UNK], but it needs
its own pre-tokenizer (incompatible with the CJK splitting above) and turns every Chinese character
that did not merge into three byte tokens, which wastes ``max_length`` and makes tokens unreadable.
With character-level BPE the whole training alphabet is in the vocabulary (a Chinese character seen
once in training is a token), and characters never seen in training become [UNK], which
:func:`unk_rate` measures and the data report shows.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

from ragtune.errors import RagtuneError

PAD, UNK, CLS, SEP = "[PAD]", "[UNK]", "[CLS]", "[SEP]"
SPECIAL_TOKENS = [PAD, UNK, CLS, SEP]  # ids 0, 1, 2, 3
KINDS = ("wordpiece", "bpe")
TOKENIZER_FILE = "tokenizer.json"


class _Counted:
    """Wrap an iterable of texts: count them and turn None into ''."""

    def __init__(self, texts: Iterable[str]):
        self.texts = texts
        self.count = 0

    def __iter__(self) -> Iterator[str]:
        for text in self.texts:
            self.count += 1
            yield _text(text)


def train_tokenizer(
    texts: Iterable[str],
    kind: str = "wordpiece",
    vocab_size: int = 8000,
    min_frequency: int = 2,
    lowercase: bool = True,
) -> Tokenizer:
    """Train a ``wordpiece`` or ``bpe`` tokenizer on ``texts`` (any iterable of strings)."""
    if kind not in KINDS:
        raise RagtuneError(f"tokenizer.kind: unknown kind {kind!r}; choose one of {', '.join(KINDS)}")
    if vocab_size < len(SPECIAL_TOKENS) + 1:
        raise RagtuneError(f"tokenizer.vocab_size: must be larger than {len(SPECIAL_TOKENS)} (got {vocab_size})")
    if kind == "wordpiece":
        tok = Tokenizer(models.WordPiece(unk_token=UNK, continuing_subword_prefix="##", max_input_chars_per_word=100))
    else:
        tok = Tokenizer(models.BPE(unk_token=UNK, continuing_subword_prefix="##", fuse_unk=True))
    trainer = (trainers.WordPieceTrainer if kind == "wordpiece" else trainers.BpeTrainer)(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=SPECIAL_TOKENS,
        continuing_subword_prefix="##",
        show_progress=False,
    )
    tok.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=False, lowercase=lowercase
    )
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece(prefix="##")
    counted = _Counted(texts)
    tok.train_from_iterator(counted, trainer=trainer)
    if counted.count == 0:
        raise RagtuneError("cannot train a tokenizer: there are no training texts")
    if tok.get_vocab_size() <= len(SPECIAL_TOKENS):
        raise RagtuneError("cannot train a tokenizer: the training texts contain no characters to learn from")
    tok = _canonical_ids(tok)
    for expected_id, token in enumerate(SPECIAL_TOKENS):
        assert tok.token_to_id(token) == expected_id, (token, tok.token_to_id(token))
    tok.post_processor = processors.TemplateProcessing(
        single=f"{CLS} $A",
        pair=f"{CLS} $A {SEP} $B:1",
        special_tokens=[(CLS, tok.token_to_id(CLS)), (SEP, tok.token_to_id(SEP))],
    )
    return tok


def _canonical_ids(tok: Tokenizer) -> Tokenizer:
    """The same tokenizer with its ids in a fixed order: special tokens first, then the rest sorted.

    The trainers of ``tokenizers`` learn the same vocabulary in every process but number tokens of
    equal count in hash-map order, which differs from process to process; the embedding row a token
    gets would then differ, and so would a seeded run's result. Renumbering makes training a
    tokenizer, and with it a whole run, reproducible.
    """
    spec = json.loads(tok.to_str())
    vocab: dict[str, int] = spec["model"]["vocab"]
    special = [t for t in SPECIAL_TOKENS if t in vocab]
    rest = sorted((t for t in vocab if t not in special), key=lambda t: (t.startswith("##"), t))
    spec["model"]["vocab"] = {t: i for i, t in enumerate(special + rest)}
    for added in spec.get("added_tokens", []):
        added["id"] = spec["model"]["vocab"].get(added["content"], added["id"])
    return Tokenizer.from_str(json.dumps(spec, ensure_ascii=False))


def _encode_batch(tokenizer: Tokenizer, texts: list, add_special_tokens: bool = True, **truncation):
    """Encode texts (or ``(text, context)`` pairs; None counts as '') without padding, truncated as
    ``truncation`` says (not at all when empty); the tokenizer's own settings are restored after."""
    texts = [tuple(_text(t) for t in x) if isinstance(x, tuple) else _text(x) for x in texts]
    saved_truncation, saved_padding = tokenizer.truncation, tokenizer.padding
    tokenizer.no_padding()
    if truncation:
        tokenizer.enable_truncation(**truncation)
    else:
        tokenizer.no_truncation()
    try:
        fast = getattr(tokenizer, "encode_batch_fast", None)  # tokenizers >= 0.21: no offsets, faster
        if fast is not None:
            return fast(texts, add_special_tokens=add_special_tokens)
        return tokenizer.encode_batch(texts, add_special_tokens=add_special_tokens)
    finally:
        _restore(tokenizer, saved_truncation, saved_padding)


def _text(text) -> str:
    return "" if text is None else str(text)


TRUNCATIONS = ("head", "tail", "head_tail")


def default_head_tokens(max_length: int) -> int:
    """Text tokens ``head_tail`` keeps from the start when ``head_tokens`` is null: a quarter of ``max_length``."""
    return max_length // 4


def encode(
    tokenizer: Tokenizer,
    texts: list[str],
    max_length: int,
    truncation: str = "head",
    head_tokens: int | None = None,
) -> list[list[int]]:
    """Token ids of each text: ``[CLS]`` + subwords, truncated to ``max_length`` ids in all. No padding.

    Works for any ``tokenizers.Tokenizer``, including a pretrained fast tokenizer's
    ``backend_tokenizer`` (``model.backbone: hf``): its post-processor adds the model's own special
    tokens (e.g. ``[CLS] ... [SEP]``), and truncation keeps them, cutting the text tokens instead.

    ``truncation`` says which text tokens a long text keeps (the special tokens always stay in place):
    ``head`` the first ones, ``tail`` the last ones, ``head_tail`` the first ``head_tokens`` (null:
    :func:`default_head_tokens`) and as many of the last ones as fit.
    """
    if max_length < 1:
        raise RagtuneError(f"max_length must be at least 1 (got {max_length})")
    if truncation not in TRUNCATIONS:
        raise RagtuneError(f"model.truncation: unknown strategy {truncation!r}; choose one of {list(TRUNCATIONS)}")
    if head_tokens is not None and head_tokens < 0:
        raise RagtuneError(f"model.head_tokens: must be 0 or more (got {head_tokens})")
    encodings = _encode_batch(tokenizer, list(texts), **({"max_length": max_length} if truncation == "head" else {}))
    if truncation == "head":
        return [enc.ids for enc in encodings]
    head = default_head_tokens(max_length) if head_tokens is None else head_tokens
    return [_truncate(enc.ids, enc.special_tokens_mask, max_length, truncation, head) for enc in encodings]


def encode_pairs(tokenizer: Tokenizer, texts: list[str], contexts: list[str], max_length: int) -> list[list[int]]:
    """Token ids of each ``(text, context)`` pair: ``[CLS] text [SEP] context`` (the tokenizer's pair
    template), at most ``max_length`` ids. A longer pair loses tokens from the end of its longer segment
    first, one at a time (the tokenizers library's ``longest_first``), so a short text keeps all of
    its tokens and the context takes the rest. For retrieval-augmented classification
    (:mod:`ragtune.retrieval.augment`).
    """
    if max_length < 1:
        raise RagtuneError(f"max_length must be at least 1 (got {max_length})")
    if len(texts) != len(contexts):
        raise ValueError(f"texts and contexts differ in length: {len(texts)} vs {len(contexts)}")
    encodings = _encode_batch(tokenizer, list(zip(texts, contexts)), max_length=max_length, strategy="longest_first")
    return [enc.ids for enc in encodings]


def _truncate(ids: list[int], special: list[int], max_length: int, truncation: str, head: int) -> list[int]:
    """Cut the text tokens between the leading and trailing special tokens down to what fits in ``max_length``."""
    if len(ids) <= max_length:
        return ids
    start = 0
    while start < len(ids) and special[start]:
        start += 1
    end = len(ids)
    while end > start and special[end - 1]:
        end -= 1
    prefix, text, suffix = ids[:start], ids[start:end], ids[end:]
    budget = max_length - len(prefix) - len(suffix)
    if budget <= 0:  # not even the special tokens fit: keep the first max_length ids, like head
        return ids[:max_length]
    if truncation == "tail":
        kept = text[len(text) - budget :]
    else:  # head_tail
        n_head = min(head, budget)
        kept = text[:n_head] + text[len(text) - (budget - n_head) :]
    return prefix + kept + suffix


def token_lengths(tokenizer: Tokenizer, texts: list[str]) -> list[int]:
    """Untruncated number of tokens of each text, ``[CLS]`` included (what ``max_length`` is compared with)."""
    return [len(enc.ids) for enc in _encode_batch(tokenizer, list(texts))]


def _restore(tokenizer: Tokenizer, truncation: dict | None, padding: dict | None) -> None:
    if truncation:
        tokenizer.enable_truncation(**truncation)
    else:
        tokenizer.no_truncation()
    if padding:
        tokenizer.enable_padding(**{k: v for k, v in padding.items() if k != "length" or v is not None})
    else:
        tokenizer.no_padding()


def unk_rate(tokenizer: Tokenizer, texts: Iterable[str]) -> float:
    """Share of the tokens produced for ``texts`` (special tokens excluded, no truncation) that are [UNK]."""
    unk_id = _unk_id(tokenizer)
    total = unknown = 0
    for enc in _encode_batch(tokenizer, list(texts), add_special_tokens=False):
        total += len(enc.ids)
        unknown += sum(1 for i in enc.ids if i == unk_id)
    return unknown / total if total else 0.0


def _unk_id(tokenizer: Tokenizer) -> int | None:
    """Id of the unknown token: ``[UNK]`` for ragtune's tokenizers, the model's own for pretrained ones."""
    unk = tokenizer.token_to_id(UNK)
    if unk is None:
        name = getattr(tokenizer.model, "unk_token", None)
        unk = tokenizer.token_to_id(name) if isinstance(name, str) else getattr(tokenizer.model, "unk_id", None)
    return unk


def _tokenizer_file(path: str | Path) -> Path:
    path = Path(path)
    return path / TOKENIZER_FILE if path.is_dir() else path


def save_tokenizer(tokenizer: Tokenizer, path: str | Path) -> Path:
    """Write ``tokenizer.json`` to ``path`` (a file path, or an existing folder). Returns the file path."""
    file = _tokenizer_file(path)
    file.parent.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(file), pretty=True)
    return file


def load_tokenizer(path: str | Path) -> Tokenizer:
    """Read a tokenizer saved by :func:`save_tokenizer` (a ``tokenizer.json`` file, or its folder)."""
    file = _tokenizer_file(path)
    if not file.exists():
        raise RagtuneError(f"tokenizer file not found: {file}")
    try:
        tok = Tokenizer.from_file(str(file))
    except Exception as exc:  # tokenizers raises a plain Exception for bad JSON / unknown fields
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        try:
            json.loads(file.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError):
            reason = "not valid JSON"
        raise RagtuneError(f"{file}: not a valid tokenizer file ({reason}); retrain or restore it") from None
    if tok.token_to_id(UNK) is None or tok.token_to_id(PAD) != 0:
        raise RagtuneError(f"{file}: not a ragtune tokenizer ([PAD] must be id 0 and [UNK] must exist)")
    return tok
