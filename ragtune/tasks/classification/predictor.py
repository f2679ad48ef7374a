"""The one inference path: :class:`Predictor` turns texts into predictions and scores files.

``ragtune predict``, ``ragtune eval``, the evaluation inside ``ragtune run`` and the HTTP server all
go through this class, so a model scores the same way everywhere::

    from ragtune.tasks.classification.predictor import Predictor
    p = Predictor.from_run_dir("runs/demo")
    p.predict(["Parliament passed the budget bill"])
    # [{"label": "politics", "scores": {"economy": 0.08, "entertainment": 0.02, "politics": 0.90}}]

A run directory holds ``model.json`` (task, labels, model sizes, target scaling), ``tokenizer.json``
and ``model.safetensors``; a ``model.backbone: hf`` run holds its weights in Hugging Face format in
``hf_model/`` instead, loaded through :func:`ragtune.models.hf.load_hf_classifier`.

Two engines run the forward pass (``from_run_dir(..., engine=...)``): ``torch`` (the default) loads a
run directory; ``onnx`` loads a folder written by ``ragtune export RUN_DIR --format onnx --out DIR``
(:func:`ragtune.export.onnx.export_onnx`) and runs the graph in onnxruntime. Tokenization, retrieval,
batching and the output format are the same for both::

    p = Predictor.from_run_dir("exports/demo", engine="onnx")

**Devices.** ``from_run_dir(..., device=...)`` loads the model, and the dense encoder of a retrieval
run's index, on ``auto`` (CUDA, else MPS, else the CPU), ``cpu``, ``cuda``, ``cuda:N`` or ``mps``
(:mod:`ragtune.devices`; a device the machine lacks is a RagtuneError naming ``--device``). The
input ids go to the device of the model's parameters (also when the caller moved the model itself,
as the training loop does) and the outputs come back to the CPU as NumPy arrays. The ``onnx``
engine runs on the CPU; on a GPU it runs on CUDA when onnxruntime has the ``CUDAExecutionProvider``
(``onnxruntime-gpu``), and ``device="cuda"`` without it is refused (``auto`` falls back to the CPU).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ragtune.data.tokenizer import encode, encode_pairs, load_tokenizer
from ragtune.errors import RagtuneError, bad_model_meta, read_model_meta
from ragtune.memory import building_model
from ragtune.evaluate.metrics import classification_metrics, regression_metrics
from ragtune.models.transformer import TransformerConfig, TransformerForRegression, TransformerForSequenceClassification
from ragtune.runs import MODEL_META, TOKENIZER_FILE, WEIGHTS_FILE, inference_device, model_device
from ragtune.train.batches import pad_batch
from ragtune.train.checkpoint import load_weights

ENGINES = ("torch", "onnx")
SEQUENCE_TASKS = ("classification", "regression")  # the tasks this predictor serves (model.json's task)
EXPORT_META = "export.json"  # in a folder written by ragtune.export.onnx.export_onnx
HF_MODEL_DIR = "hf_model"  # model.backbone: hf — the fine-tuned model in Hugging Face format
ADAPTER_WEIGHTS_FILE = "adapter_model.safetensors"  # model.lora.save: adapter — hf_model/ holds the LoRA adapter


def compute_loss(task: str, outputs: torch.Tensor, targets: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Cross-entropy for classification (``outputs`` are logits (B, C)), MSE for regression ((B,))."""
    if task == "classification":
        return F.cross_entropy(outputs.float(), targets, label_smoothing=label_smoothing)
    if task == "regression":
        return F.mse_loss(outputs.float(), targets.float())
    raise RagtuneError(f"task: unknown task {task!r}; choose one of ['classification', 'regression']")


def scratch_model(config: TransformerConfig, task: str) -> torch.nn.Module:
    """The from-scratch Transformer of a ``classification`` or ``regression`` run, freshly initialised."""
    with building_model(f"model.d_model {config.d_model}, model.layers {config.layers}, model.ffn_dim {config.ffn_dim}, "
                        f"tokenizer.vocab_size {config.vocab_size}"):
        return TransformerForRegression(config) if task == "regression" else TransformerForSequenceClassification(config)


def _load_retriever(run_dir: Path, meta: dict, device: torch.device | str = "cpu"):
    """The run's ContextRetriever when it was trained with retrieval (``model.json``'s ``retrieval``), else None;
    a dense index encodes its queries on ``device``."""
    r = meta.get("retrieval")
    if not r:
        return None
    from ragtune.retrieval.augment import ContextRetriever, index_folder, read_neighbour_labels
    from ragtune.retrieval.index import load_index

    labels = read_neighbour_labels(run_dir / r["labels"]) if r.get("labels") else None
    return ContextRetriever(load_index(index_folder(run_dir, r["index"]), device=device), int(r["top_k"]),
                            r["separator"], labels)


def _read_tokenizer_file(path: Path):
    """A ``tokenizers.Tokenizer`` from ``path`` (any pretrained tokenizer.json), or a RagtuneError."""
    from tokenizers import Tokenizer

    try:
        return Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises a plain Exception for bad files
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise RagtuneError(f"{path}: not a valid tokenizer file ({reason}); export the run again") from None


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
        retriever: the ContextRetriever of a retrieval-augmented run, else None.
        engine: what runs the forward pass: ``torch`` (``model`` is a torch module) or ``onnx``
            (``model`` is a :class:`ragtune.tasks.classification.onnx_engine.OnnxSequenceModel`).

    Attributes:
        max_batch_tokens: if set, a forward pass also holds at most this many token slots (texts ×
            the longest one's length, padding included; a longer text still runs, alone). On a CPU,
            long texts run faster in small batches that stay in cache (the server sets it from
            ``serve.max_batch_tokens``); short texts still fill ``batch_size``.
    """

    def __init__(self, model: torch.nn.Module, tokenizer, meta: dict, batch_size: int = 64, retriever=None,
                 engine: str = "torch"):
        self.model = model
        self.engine = engine
        self.retriever = retriever  # retrieval.top_k > 0: a ContextRetriever (ragtune/retrieval/augment.py)
        self.tokenizer = tokenizer
        self.meta = meta
        self.task = meta["task"]
        self.labels: list[str] = list(meta.get("labels", []))
        self.max_length = int(meta["max_length"])
        self.batch_size = batch_size
        self.max_batch_tokens: int | None = None

    @classmethod
    def from_run_dir(cls, run_dir: str | Path, batch_size: int = 64, engine: str = "torch",
                     device: str | torch.device | None = None) -> Predictor:
        """Load a finished run on ``device`` (:func:`ragtune.runs.inference_device`; None: ``auto``). A
        folder that is not a run gets a RagtuneError naming what is missing.

        ``engine="onnx"``: ``run_dir`` is a folder written by ``ragtune export RUN_DIR --format onnx``
        (it holds ``export.json``); its ``model_file`` runs in onnxruntime (module docstring, Devices).
        """
        if engine not in ENGINES:
            raise RagtuneError(f"unknown engine {engine!r}; valid choices: {list(ENGINES)}")
        run_dir = Path(run_dir)
        asked = device
        device = inference_device(device)
        if not run_dir.is_dir():
            raise RagtuneError(f"{'export' if engine == 'onnx' else 'run'} directory not found: {run_dir}")
        if engine == "onnx":
            return cls._from_onnx_export(run_dir, batch_size, device, explicit=str(asked or "auto").strip().lower() != "auto")
        if (run_dir / EXPORT_META).exists() and not (run_dir / WEIGHTS_FILE).exists():
            raise RagtuneError(f"{run_dir} is an ONNX export, not a run directory; load it with engine onnx "
                               "(--engine onnx)")
        meta = read_model_meta(run_dir / MODEL_META, SEQUENCE_TASKS) if (run_dir / MODEL_META).exists() else None
        try:
            return cls._from_meta(run_dir, meta, batch_size, device)
        except RagtuneError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise bad_model_meta(run_dir / MODEL_META, (meta or {}).get("task", "classification"), exc) from None

    @classmethod
    def _from_meta(cls, run_dir: Path, meta: dict | None, batch_size: int, device: torch.device) -> Predictor:
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
                                                              meta["task"] == "regression")
            else:
                hf_model, hf_tokenizer = load_hf_classifier(folder, num_outputs, labels, meta["task"] == "regression")
            model = HFSequenceModel(hf_model, regression=meta["task"] == "regression").to(device)
            model.eval()
            return cls(model, hf_tokenizer.backend_tokenizer, meta, batch_size, _load_retriever(run_dir, meta, device))
        model = scratch_model(TransformerConfig(**meta["model_config"]), meta["task"])
        load_weights(model, run_dir / WEIGHTS_FILE)  # read on the CPU, then moved
        model.to(device).eval()
        return cls(model, load_tokenizer(run_dir / TOKENIZER_FILE), meta, batch_size,
                   _load_retriever(run_dir, meta, device))

    @classmethod
    def _from_onnx_export(cls, export_dir: Path, batch_size: int, device: torch.device, explicit: bool) -> Predictor:
        """``engine="onnx"``: the folder ``export_onnx`` wrote, its graph in an onnxruntime session on
        ``device`` where onnxruntime can run there (``explicit``: the caller named the device, so the
        CPU is no fallback)."""
        if not (export_dir / EXPORT_META).exists():
            raise RagtuneError(f"{export_dir} is not an ONNX export (no {EXPORT_META}); export the run first: "
                               f"ragtune export RUN_DIR --format onnx --out DIR, then load DIR with engine onnx")
        try:
            info = json.loads((export_dir / EXPORT_META).read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise RagtuneError(f"{export_dir / EXPORT_META}: not valid JSON ({exc.msg}); "
                               "export the run again") from None
        if not isinstance(info, dict) or info.get("format") != "onnx" or not isinstance(info.get("model_file"), str):
            raise RagtuneError(f"{export_dir / EXPORT_META}: not an ONNX export (format onnx and model_file expected)")
        if Path(info["model_file"]).name != info["model_file"]:  # a file of the export folder, nothing outside it
            raise RagtuneError(f"{export_dir / EXPORT_META}: model_file must name a file in the folder, "
                               f"got {info['model_file']!r}")
        missing = [n for n in (MODEL_META, TOKENIZER_FILE, info["model_file"]) if not (export_dir / n).exists()]
        if missing:
            raise RagtuneError(f"{export_dir} is an incomplete ONNX export: missing {', '.join(missing)}; "
                               "export the run again")
        from ragtune.tasks.classification.onnx_engine import OnnxSequenceModel

        meta = read_model_meta(export_dir / MODEL_META, SEQUENCE_TASKS)
        if meta.get("backbone") == "hf":  # the pretrained tokenizer: its pad id need not be 0
            tokenizer = _read_tokenizer_file(export_dir / TOKENIZER_FILE)
        else:
            tokenizer = load_tokenizer(export_dir / TOKENIZER_FILE)
        model = OnnxSequenceModel(export_dir / info["model_file"], meta["task"], pad_id=pad_id(meta), device=device,
                                  fallback=not explicit)
        return cls(model, tokenizer, meta, batch_size, _load_retriever(export_dir, meta, device), engine="onnx")

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
        device = model_device(self.model)  # the CPU for the onnx engine (it reads NumPy arrays)
        for chunk in self._chunks(order, [len(x) for x in ids]):
            input_ids, mask = pad_batch([ids[i] for i in chunk], pad_id(self.meta))  # (B, T) each
            result = self.model(input_ids.to(device), mask.to(device)).float().cpu().numpy()
            for row, i in enumerate(chunk):
                out[i] = result[row]
        self.model.train(was_training)
        if not ids:
            return np.zeros((0, len(self.labels)) if self.task == "classification" else (0,), dtype=np.float32)
        return np.stack(out)

    def _chunks(self, order: list[int], lengths: list[int]) -> list[list[int]]:
        """``order`` (indices sorted by length) cut into batches of at most ``batch_size`` texts and, when
        ``max_batch_tokens`` is set, at most that many padded token slots."""
        chunks: list[list[int]] = []
        for i in order:
            chunk = chunks[-1] if chunks else None
            fits = chunk is not None and len(chunk) < self.batch_size and (
                self.max_batch_tokens is None or (len(chunk) + 1) * lengths[i] <= self.max_batch_tokens)
            if fits:
                chunk.append(i)
            else:
                chunks.append([i])
        return chunks

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
