"""The one inference path: :class:`Predictor` turns texts into predictions and scores files.

``ragtune predict``, ``ragtune eval``, the evaluation inside ``ragtune run`` and the HTTP server all
go through this class, so a model scores the same way everywhere::

    from ragtune.predictor import Predictor
    p = Predictor.from_run_dir("runs/demo")
    p.predict(["Parliament passed the budget bill"])
    # [{"label": "politics", "scores": {"economy": 0.08, "entertainment": 0.02, "politics": 0.90}}]

A run directory holds ``model.json`` (task, labels, model sizes, target scaling), ``tokenizer.json``
and ``model.safetensors``; a ``model.backbone: hf`` run holds its weights in Hugging Face format in
``hf_model/`` instead, loaded through :func:`ragtune.models.hf.load_hf_classifier`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ragtune.data.tokenizer import encode, encode_pairs, load_tokenizer
from ragtune.errors import RagtuneError
from ragtune.evaluate.metrics import classification_metrics, regression_metrics
from ragtune.models.transformer import TransformerConfig, build_transformer
from ragtune.train.batches import pad_batch
from ragtune.train.checkpoint import load_weights
from ragtune.train.loop import compute_loss

MODEL_META = "model.json"
TOKENIZER_FILE = "tokenizer.json"
WEIGHTS_FILE = "model.safetensors"
HF_MODEL_DIR = "hf_model"  # model.backbone: hf — the fine-tuned model in Hugging Face format
ADAPTER_WEIGHTS_FILE = "adapter_model.safetensors"  # model.lora.save: adapter — hf_model/ holds the LoRA adapter


def _load_retriever(run_dir: Path, meta: dict):
    """The run's ContextRetriever when it was trained with retrieval (``model.json``'s ``retrieval``), else None."""
    r = meta.get("retrieval")
    if not r:
        return None
    from ragtune.retrieval.augment import ContextRetriever, index_folder, read_neighbour_labels
    from ragtune.retrieval.index import load_index

    labels = read_neighbour_labels(run_dir / r["labels"]) if r.get("labels") else None
    return ContextRetriever(load_index(index_folder(run_dir, r["index"])), int(r["top_k"]), r["separator"], labels)


def _is_adapter(meta: dict) -> bool:
    """Whether ``hf_model/`` holds only a LoRA adapter (``model.lora.save: adapter``) rather than a whole model."""
    return bool(meta.get("lora")) and meta["lora"].get("save") == "adapter"


def pad_id(meta: dict) -> int:
    """The padding token id of a run: ``pad_id`` in ``model.json`` (the HF tokenizer's for ``hf``), else 0."""
    return int(meta.get("pad_id", meta.get("model_config", {}).get("pad_id", 0)))


def _required_files(meta: dict | None) -> list[str]:
    """The files a finished run holds: hf runs keep their weights in ``hf_model/`` instead of ``model.safetensors``."""
    if meta is not None and meta.get("backbone") == "hf":
        weights = ADAPTER_WEIGHTS_FILE if _is_adapter(meta) else WEIGHTS_FILE
        return [MODEL_META, TOKENIZER_FILE, f"{meta.get('hf_model', HF_MODEL_DIR)}/{weights}"]
    return [MODEL_META, TOKENIZER_FILE, WEIGHTS_FILE]


class Predictor:
    """A trained model with its tokenizer and label set.

    Args:
        model: a ``...ForSequenceClassification`` / ``...ForRegression`` module.
        tokenizer: the ``tokenizers.Tokenizer`` the model was trained with (for ``hf``, the
            pretrained fast tokenizer's ``backend_tokenizer``).
        meta: ``task``, ``labels`` (classification), ``max_length``, ``truncation``/``head_tokens``
            (how long texts are cut, as in training; ``head`` when absent), ``target_mean``/``target_std``
            (regression: the model predicts standardised targets).
        batch_size: texts per forward pass.
    """

    def __init__(self, model: torch.nn.Module, tokenizer, meta: dict, batch_size: int = 64, retriever=None):
        self.model = model
        self.retriever = retriever  # retrieval.top_k > 0: a ContextRetriever (ragtune/retrieval/augment.py)
        self.tokenizer = tokenizer
        self.meta = meta
        self.task = meta["task"]
        self.labels: list[str] = list(meta.get("labels", []))
        self.max_length = int(meta["max_length"])
        self.batch_size = batch_size

    @classmethod
    def from_run_dir(cls, run_dir: str | Path, batch_size: int = 64) -> Predictor:
        """Load a finished run. A folder that is not a run gets a RagtuneError naming what is missing."""
        run_dir = Path(run_dir)
        if not run_dir.is_dir():
            raise RagtuneError(f"run directory not found: {run_dir}")
        meta = json.loads((run_dir / MODEL_META).read_text(encoding="utf-8")) if (run_dir / MODEL_META).exists() else None
        missing = [n for n in _required_files(meta) if not (run_dir / n).exists()]
        if missing:
            raise RagtuneError(
                f"{run_dir} is not a finished ragtune run: missing {', '.join(missing)} "
                "(a run still training, or killed, can be continued with `ragtune run CONFIG --resume RUN_DIR`)"
            )
        assert meta is not None
        if meta.get("backbone") == "hf":
            from ragtune.models.hf import HFSequenceModel, load_hf_classifier, load_lora_classifier

            labels = list(meta.get("labels", []))
            folder = str(run_dir / meta.get("hf_model", HF_MODEL_DIR))
            num_outputs = len(labels) if meta["task"] == "classification" else 1
            if _is_adapter(meta):  # the base model (name_or_path) plus the saved adapter and head
                hf_model, hf_tokenizer = load_lora_classifier(meta["name_or_path"], folder, num_outputs, labels,
                                                              meta["task"])
            else:
                hf_model, hf_tokenizer = load_hf_classifier(folder, num_outputs, labels, meta["task"])
            model = HFSequenceModel(hf_model, meta["task"])
            model.eval()
            return cls(model, hf_tokenizer.backend_tokenizer, meta, batch_size, _load_retriever(run_dir, meta))
        model = build_transformer(TransformerConfig(**meta["model_config"]), meta["task"])
        load_weights(model, run_dir / WEIGHTS_FILE)
        model.eval()
        return cls(model, load_tokenizer(run_dir / TOKENIZER_FILE), meta, batch_size, _load_retriever(run_dir, meta))

    # -- raw model outputs -------------------------------------------------------------------------
    @torch.no_grad()
    def outputs(self, texts: Sequence[str]) -> np.ndarray:
        """Logits (N, C) for classification, standardised predictions (N,) for regression."""
        if isinstance(texts, str):
            raise TypeError("texts must be a list of strings, not one string")
        was_training = self.model.training
        self.model.eval()
        if self.retriever is not None:  # each text read with its retrieved passages
            ids = encode_pairs(self.tokenizer, list(texts), self.retriever.contexts(list(texts)), self.max_length)
        else:
            ids = encode(self.tokenizer, list(texts), self.max_length, self.meta.get("truncation", "head"),
                         self.meta.get("head_tokens"))
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))  # similar lengths share a batch
        out: list[np.ndarray | None] = [None] * len(ids)
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            input_ids, mask = pad_batch([ids[i] for i in chunk], pad_id(self.meta))
            result = self.model(input_ids, mask).float().numpy()
            for row, i in enumerate(chunk):
                out[i] = result[row]
        self.model.train(was_training)
        if not ids:
            return np.zeros((0, len(self.labels)) if self.task == "classification" else (0,), dtype=np.float32)
        return np.stack(out)

    # -- predictions -------------------------------------------------------------------------------
    def predict(self, texts: Sequence[str]) -> list[dict]:
        """One dict per text: ``{"label", "scores": {label: probability}}`` or ``{"value"}`` (regression).

        With retrieval on, each dict also has ``passages``: the passages the text was read with,
        best first (``id``, ``doc_id``, ``score`` and, for labelled neighbours, ``label``).
        """
        raw = self.outputs(texts)
        if self.task == "classification":
            probs = torch.softmax(torch.from_numpy(raw), dim=-1).numpy()
            out = [
                {
                    "label": self.labels[int(p.argmax())],
                    "scores": {label: round(float(s), 6) for label, s in zip(self.labels, p)},
                }
                for p in probs
            ]
            if self.retriever is not None:
                for row, hits in zip(out, self.retriever.hits(list(texts))):
                    row["passages"] = hits
            return out
        return [{"value": float(v)} for v in self._unscale(raw)]

    def _unscale(self, raw: np.ndarray) -> np.ndarray:
        return raw * float(self.meta.get("target_std", 1.0)) + float(self.meta.get("target_mean", 0.0))

    def evaluate(self, texts: Sequence[str], targets: Sequence) -> dict:
        """Metrics of the task on (texts, targets): class names for classification, numbers for regression."""
        raw = self.outputs(texts)
        if self.task == "classification":
            index = {label: i for i, label in enumerate(self.labels)}
            unknown = sorted({t for t in targets if t not in index})
            if unknown:
                raise RagtuneError(f"labels {unknown} were never seen in training; the model knows {self.labels}")
            y_true = [index[t] for t in targets]
            logits = torch.from_numpy(raw)
            loss = compute_loss("classification", logits, torch.tensor(y_true, dtype=torch.long)).item() if y_true else float("nan")
            probs = torch.softmax(logits, dim=-1).numpy()
            metrics = classification_metrics(y_true, probs.argmax(-1).tolist(), self.labels, probs=probs)
        else:
            y = np.asarray(targets, dtype=np.float64)
            preds = self._unscale(raw)
            scaled = (y - float(self.meta.get("target_mean", 0.0))) / float(self.meta.get("target_std", 1.0))
            loss = compute_loss("regression", torch.from_numpy(raw), torch.from_numpy(scaled)).item()
            metrics = regression_metrics(y.tolist(), preds.tolist())
        metrics["loss"] = loss
        return metrics
