"""Subword tokenizers for translation and text generation (Hugging Face ``tokenizers``, BPE).

Unlike the classification tokenizer (:mod:`ragtune.data.tokenizer`), these tokenizers must turn
ids back into *clean text*: a model's output is shown to people and scored with BLEU. So nothing is
lowercased, and every space is kept inside the tokens, SentencePiece style, so that decoding puts
back exactly the spaces the text had::

    tok = train_seq2seq_tokenizer(sources, targets, vocab_size=8000)
    ids = tok.encode_target("Zwei junge Männer, im Freien.", max_length=64)  # <s> ... </s>
    tok.decode(ids)                                                         # 'Zwei junge Männer, im Freien.'
    tok.save("runs/x/seq2seq_tokenizer.json"); tok = load_seq2seq_tokenizer("runs/x/seq2seq_tokenizer.json")

The pipeline (the same for source and target):

* normalizer: Unicode NFC (``Männer`` typed with a combining diaeresis becomes the one-character
  ``ä``), every run of whitespace (tabs, newlines, double spaces) becomes one space, and the ends
  are stripped. :meth:`Seq2SeqTokenizer.normalize` shows what a text becomes.
* pre-tokenizer: ``Metaspace`` turns each space into ``▁`` and starts a word there (a ``▁`` is also put
  in front of the text); then every CJK ideograph becomes a word of its own (with the ``▁`` before
  it, if any), so Chinese is split per character and never merged across characters; then every
  punctuation character (``,.!?'"()``, ``，。`` ...) becomes a word of its own.
* model: BPE learned on these words, with **byte fallback**: a character never seen in training is
  encoded as its UTF-8 bytes (tokens ``<0x00>`` ... ``<0xFF>``, always in the vocabulary) instead of
  ``<unk>``. So any text round-trips, a rare Chinese character in the test set included, at the cost
  of 256 vocabulary entries (counted in ``vocab_size``) and of 3 tokens for such a character.
  ``<unk>`` is kept for compatibility but the encoder never produces it.
* decoder: ``ByteFallback`` (bytes back to characters) then ``Metaspace`` (``▁`` back to a space, the
  leading one dropped). Punctuation and Chinese characters carry no ``▁``, so they are glued to the
  preceding text: ``Männer,`` and ``我爱你`` come back without stray spaces.

So ``decode(encode_target(text)) == normalize(text)`` for every text that is not truncated.

Special tokens and ids (fixed): ``<pad>`` = 0, ``<unk>`` = 1, ``<s>`` = 2, ``</s>`` = 3; the byte
tokens are ids 4-259; the learned tokens follow, in sorted order (so the ids do not depend on the
process that trained them). :meth:`encode_source` appends ``</s>``; :meth:`encode_target` wraps the
text in ``<s> ... </s>`` (the decoder's input starts with ``<s>``, its labels end with ``</s>``).

One tokenizer for both sides (``joint=True``, the default: German and English share most of
their alphabet and many subwords, and a shared vocabulary allows tying the embeddings), or one per
side (``joint=False``, e.g. English to Chinese). Either way it is saved as one JSON file.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path

from tokenizers import (
    Regex,
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    trainers,
)

from ragtune.errors import RagtuneError

__all__ = [
    "BOS",
    "BYTE_TOKENS",
    "EOS",
    "PAD",
    "SPECIAL_TOKENS",
    "UNK",
    "Seq2SeqTokenizer",
    "load_seq2seq_tokenizer",
    "train_seq2seq_tokenizer",
]

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<s>", "</s>"
SPECIAL_TOKENS = [PAD, UNK, BOS, EOS]  # ids 0, 1, 2, 3
PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3
BYTE_TOKENS = [f"<0x{b:02X}>" for b in range(256)]  # ids 4 .. 259
FORMAT = "ragtune-seq2seq-tokenizer"
VERSION = 1
_SPACE = "\u2581"  # ▁
# CJK Unified Ideographs (and extension A, B and the compatibility block), as in qa_metrics
_CJK = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002a6df"
_MIN_VOCAB = len(SPECIAL_TOKENS) + len(BYTE_TOKENS) + 1


def _new_tokenizer() -> Tokenizer:
    tok = Tokenizer(models.BPE(unk_token=UNK, byte_fallback=True))
    tok.normalizer = normalizers.Sequence(
        [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Strip()]
    )
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Metaspace(replacement=_SPACE, prepend_scheme="always", split=True),
            pre_tokenizers.Split(Regex(f"{_SPACE}?[{_CJK}]"), behavior="isolated"),
            pre_tokenizers.Punctuation(behavior="isolated"),
        ]
    )
    tok.decoder = decoders.Sequence(
        [decoders.ByteFallback(), decoders.Metaspace(replacement=_SPACE, prepend_scheme="always", split=True)]
    )
    return tok


def _texts(texts: Iterable[str], what: str) -> list[str]:
    out = ["" if t is None else str(t) for t in texts]
    if not any(t.strip() for t in out):
        raise RagtuneError(f"cannot train a tokenizer: there are no {what} texts")
    return out


def _train(texts: list[str], vocab_size: int, min_frequency: int) -> Tokenizer:
    tok = _new_tokenizer()
    trainer = trainers.BpeTrainer(
        vocab_size=max(vocab_size - len(BYTE_TOKENS), len(SPECIAL_TOKENS) + 1),
        min_frequency=min_frequency,
        special_tokens=SPECIAL_TOKENS,
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return _canonical_ids(tok)


def _canonical_ids(tok: Tokenizer) -> Tokenizer:
    """Special tokens 0-3, byte tokens 4-259, then the learned tokens sorted (reproducible ids)."""
    spec = json.loads(tok.to_str())
    vocab: dict[str, int] = spec["model"]["vocab"]
    fixed = SPECIAL_TOKENS + BYTE_TOKENS
    rest = sorted(t for t in vocab if t not in set(fixed))
    spec["model"]["vocab"] = {t: i for i, t in enumerate(fixed + rest)}
    for added in spec.get("added_tokens", []):
        added["id"] = spec["model"]["vocab"][added["content"]]
    out = Tokenizer.from_str(json.dumps(spec, ensure_ascii=False))
    for expected_id, token in enumerate(SPECIAL_TOKENS):
        assert out.token_to_id(token) == expected_id, (token, out.token_to_id(token))
    return out


class Seq2SeqTokenizer:
    """A source tokenizer and a target tokenizer (the same object when ``joint``).

    Build one with :func:`train_seq2seq_tokenizer` or :func:`load_seq2seq_tokenizer`. Ids are plain
    lists of ints, without padding.
    """

    pad_id, unk_id, bos_id, eos_id = PAD_ID, UNK_ID, BOS_ID, EOS_ID

    def __init__(self, source: Tokenizer, target: Tokenizer | None = None):
        self.source = source
        self.target = source if target is None else target

    @property
    def joint(self) -> bool:
        """True when source and target share one vocabulary."""
        return self.source is self.target

    @property
    def source_vocab_size(self) -> int:
        return self.source.get_vocab_size()

    @property
    def target_vocab_size(self) -> int:
        return self.target.get_vocab_size()

    def normalize(self, text: str) -> str:
        """What ``text`` becomes before tokenizing (NFC, whitespace runs to one space, ends stripped);
        :meth:`decode` gives back exactly this."""
        return self.target.normalizer.normalize_str("" if text is None else str(text))

    @staticmethod
    def _encode(tok: Tokenizer, texts: list[str]) -> list[list[int]]:
        encs = tok.encode_batch(["" if t is None else str(t) for t in texts], add_special_tokens=False)
        return [e.ids for e in encs]

    @staticmethod
    def _check_length(max_length: int | None, specials: int) -> None:
        if max_length is not None and max_length < specials + 1:
            raise RagtuneError(f"max_length must be at least {specials + 1} (got {max_length})")

    def encode_plain_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """The source-side tokens of each text, without special tokens (a beginning to continue)."""
        return self._encode(self.source, list(texts))

    def encode_source(self, text: str, max_length: int | None = None) -> list[int]:
        """Ids of a source text: its tokens then ``</s>``, at most ``max_length`` ids (``</s>`` kept)."""
        return self.encode_source_batch([text], max_length)[0]

    def encode_source_batch(self, texts: Sequence[str], max_length: int | None = None) -> list[list[int]]:
        """:meth:`encode_source` for many texts (faster: one call into the Rust library)."""
        self._check_length(max_length, 1)
        keep = None if max_length is None else max_length - 1
        return [ids[:keep] + [EOS_ID] for ids in self._encode(self.source, list(texts))]

    def encode_target(self, text: str, max_length: int | None = None) -> list[int]:
        """Ids of a target text: ``<s>``, its tokens, ``</s>``; at most ``max_length`` ids (both kept)."""
        return self.encode_target_batch([text], max_length)[0]

    def encode_target_batch(self, texts: Sequence[str], max_length: int | None = None) -> list[list[int]]:
        """:meth:`encode_target` for many texts."""
        self._check_length(max_length, 2)
        keep = None if max_length is None else max_length - 2
        return [[BOS_ID] + ids[:keep] + [EOS_ID] for ids in self._encode(self.target, list(texts))]

    def decode(self, ids: Sequence[int], side: str = "target") -> str:
        """Text of ``ids`` (a model's output): a leading ``<s>`` is skipped, decoding stops at the
        first ``</s>``, and ``<pad>`` / ``<unk>`` are dropped. ``side`` is ``target`` or ``source``
        (they differ only for separate tokenizers)."""
        if side not in ("source", "target"):
            raise RagtuneError(f"side must be 'source' or 'target' (got {side!r})")
        tok = self.target if side == "target" else self.source
        ids = [int(i) for i in ids]
        if EOS_ID in ids:
            ids = ids[: ids.index(EOS_ID)]
        return tok.decode(ids, skip_special_tokens=True)

    def decode_batch(self, batch: Sequence[Sequence[int]], side: str = "target") -> list[str]:
        """:meth:`decode` for each id list of ``batch``."""
        return [self.decode(ids, side) for ids in batch]

    def to_dict(self) -> dict:
        return {
            "format": FORMAT,
            "version": VERSION,
            "joint": self.joint,
            "source": json.loads(self.source.to_str()),
            "target": None if self.joint else json.loads(self.target.to_str()),
        }

    def save(self, path: str | Path) -> Path:
        """Write the tokenizer(s) as one JSON file at ``path``; returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), ensure_ascii=False), encoding="utf-8")
        return path


def train_seq2seq_tokenizer(
    sources: Iterable[str],
    targets: Iterable[str] | None = None,
    vocab_size: int = 8000,
    min_frequency: int = 2,
    joint: bool = True,
) -> Seq2SeqTokenizer:
    """Train BPE on the texts: one joint vocabulary of ``vocab_size`` on sources + targets, or
    (``joint=False``) one of ``vocab_size`` per side. ``targets`` may be None for a joint tokenizer
    (e.g. a generation model trained on one list of texts).

    ``vocab_size`` counts the 4 special and 256 byte tokens, so it must be at least 261; the
    training alphabet (every character seen) is always in the vocabulary, even when that makes it
    larger than ``vocab_size``. Subwords must occur ``min_frequency`` times to be merged.
    """
    if vocab_size < _MIN_VOCAB:
        raise RagtuneError(
            f"tokenizer.vocab_size: must be at least {_MIN_VOCAB} (4 special and 256 byte tokens "
            f"come first; got {vocab_size})"
        )
    if min_frequency < 1:
        raise RagtuneError(f"tokenizer.min_frequency: must be at least 1 (got {min_frequency})")
    src = _texts(sources, "source")
    if targets is None:
        if not joint:
            raise RagtuneError("separate source and target tokenizers (joint=False) need target texts")
        return Seq2SeqTokenizer(_train(src, vocab_size, min_frequency))
    tgt = _texts(targets, "target")
    if joint:
        return Seq2SeqTokenizer(_train(src + tgt, vocab_size, min_frequency))
    return Seq2SeqTokenizer(_train(src, vocab_size, min_frequency), _train(tgt, vocab_size, min_frequency))


def load_seq2seq_tokenizer(path: str | Path) -> Seq2SeqTokenizer:
    """Read a file written by :meth:`Seq2SeqTokenizer.save`."""
    path = Path(path)
    if not path.is_file():
        raise RagtuneError(f"tokenizer file not found: {path}")
    try:
        spec = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        raise RagtuneError(f"{path}: not a valid tokenizer file (not valid JSON); retrain or restore it") from None
    if not isinstance(spec, dict) or spec.get("format") != FORMAT:
        raise RagtuneError(
            f"{path}: not a translation/generation tokenizer file (no \"format\": \"{FORMAT}\"); "
            "classification tokenizers are read with ragtune.data.tokenizer.load_tokenizer"
        )

    def build(side: str) -> Tokenizer:
        try:
            tok = Tokenizer.from_str(json.dumps(spec[side], ensure_ascii=False))
        except Exception as exc:  # noqa: BLE001 - tokenizers raises a plain Exception for unknown fields
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise RagtuneError(f"{path}: the {side} tokenizer cannot be read ({reason}); retrain it") from None
        if [tok.token_to_id(t) for t in SPECIAL_TOKENS] != [0, 1, 2, 3]:
            raise RagtuneError(f"{path}: the {side} tokenizer must have {', '.join(SPECIAL_TOKENS)} as ids 0-3")
        return tok

    if spec.get("joint", True):
        return Seq2SeqTokenizer(build("source"))
    return Seq2SeqTokenizer(build("source"), build("target"))


def bpe_tokenizer(cfg, tok_path: Path, resume: bool, train):
    """The byte-fallback BPE of a text run: a resumed run's own ``tok_path`` (BPE training is not
    reproducible to the token), else ``tokenizer.path``, else ``train()``."""
    if resume and tok_path.exists():
        return load_seq2seq_tokenizer(tok_path)
    if cfg.tokenizer.path:
        return load_seq2seq_tokenizer(cfg.tokenizer.path)
    return train()
