"""ONNX export of a classification or regression run, optionally with int8 weights.

Exporting
---------
From the command line::

    ragtune export runs/news --format onnx --out exports/news                  # fp32
    ragtune export runs/news --format onnx --quantize int8 --out exports/news8  # + int8 weights

or from Python::

    from pathlib import Path
    from ragtune.export.onnx import compare_engines, export_onnx
    from ragtune.tasks.classification.predictor import Predictor

    torch_p = Predictor.from_run_dir("runs/news")
    export_onnx(torch_p, Path("exports/news"), quantize="int8", source="runs/news")
    onnx_p = Predictor.from_run_dir("exports/news", engine="onnx")
    compare_engines(torch_p, onnx_p, texts, labels)
    # {"n": 200, "max_abs_diff": 0.44, "mean_abs_diff": 0.11, "agreement": 0.99,
    #  "accuracy_reference": 0.895, "accuracy_candidate": 0.9}      (int8 MiniLM, see below)

Any classification or regression run exports: the scratch Transformer and ``model.backbone: hf``
runs (BERT, MiniLM, ...; a LoRA run is exported with its adapters merged into the weights), with or
without retrieval. ``task: qa`` runs do not (their reader is saved in Hugging Face format in
``RUN_DIR/reader``, which other tools export).

Files written
-------------
The export folder is self-contained: it can be copied to another machine and served without the
run directory.

``model.onnx``
    The fp32 graph (opset 17). Inputs ``input_ids`` and ``attention_mask``, both int64 of shape
    (batch, sequence) (1 = real token, 0 = padding); output ``logits``, float32 (batch, classes),
    or (batch,) for regression (standardised: multiply by ``target_std`` and add ``target_mean``
    of ``model.json``). Batch size and sequence length are dynamic; the sequence may be at most
    ``max_length`` of ``model.json`` long (there are no more position embeddings).
``model.int8.onnx``
    Only with ``quantize="int8"``: the same graph with int8 weights (see below).
``model.json``
    The run's model description (task, labels, ``max_length``, truncation, pad id, target scaling).
    For a retrieval-augmented run its ``retrieval.index`` points at the copied ``index/``.
``tokenizer.json``
    The run's tokenizer (for an ``hf`` run the pretrained fast tokenizer's ``backend_tokenizer``,
    with any tokens the run added); it gives exactly the token ids the run was trained on.
``index/``, ``neighbour_labels.json``
    Retrieval-augmented runs only: a copy of the index the run reads passages from and, for
    ``retrieval.source: train``, the labels of the neighbours. A ``dense`` or ``hybrid`` index
    still loads its sentence encoder from where its manifest says (an alias such as ``minilm``,
    or the folder it was built with); the encoder itself is not copied.
``export.json``
    ``format`` (``onnx``), ``quantize`` (null or ``int8``), ``model_file`` (the graph an ``onnx``
    engine serves: ``model.int8.onnx`` when quantised), ``opset``, ``source`` (the run directory),
    ``ragtune_version``, ``task``, ``labels``, and ``check``: the largest logit difference between
    the graph(s) and the PyTorch model on the export-time check batches. Written last: a folder
    without it is not a finished export.

Every file is written under a temporary name and renamed into place.

Serving
-------
``Predictor.from_run_dir(EXPORT_DIR, engine="onnx")`` (and ``ragtune serve EXPORT_DIR --engine onnx``,
which goes through it) reads the export folder. Tokenization,
truncation, retrieval, batching and the label/score output are those of the PyTorch engine; only
the forward pass runs in onnxruntime (:class:`ragtune.tasks.classification.onnx_engine.OnnxSequenceModel`: ``CPUExecutionProvider``,
``torch.get_num_threads()`` intra-op threads). Other runtimes can feed the graph directly: encode
each text with ``tokenizer.json`` (it adds ``[CLS]``/``[SEP]``), cut it to ``max_length``, pad
with ``pad_id`` (``model.json``; 0 when absent) and set ``attention_mask`` to 1 on real tokens.

How the graph is made
---------------------
``torch.onnx.export`` with the TorchScript tracer (``dynamo=False``) and ``dynamic_axes``. The
``torch.export``-based exporter (PyTorch's default since 2.9) cannot export the scratch model: its
input checks (token ids within the vocabulary, "is anything padded?") are Python branches on tensor
values, which ``torch.export`` rejects (``GuardOnDataDependentSymNode``); for an ``hf`` BERT it
works but took about 8x longer (11 s against 1.4 s for a 2-layer toy). The tracer records the
path the example batch takes. The example is padded, so the graph always applies the attention
mask (for a batch without padding an all-ones mask gives the same result as none); the input
checks are not in the graph (the tracer's warnings about them are silenced). Each export is
checked right away: the graph and the PyTorch model run on batches of other sizes and lengths than
the traced one (batch 1 without padding, a padded batch with one row of ``max_length`` tokens) and
must agree within 1e-4 (relative to the largest logit, when that is above 1; ``export.json``'s ``check``
records the difference). A single ONNX protobuf holds at most 2 GB of
weights (about 500M fp32 parameters), far above the models ragtune trains.

**Fused operators.** For a Hugging Face model of a family onnxruntime knows (:data:`FUSABLE`: BERT,
MiniLM, RoBERTa, XLM-R, ELECTRA) the model is traced with plain ("eager") attention, in a copy, and
the graph is rewritten by onnxruntime's transformer optimizer
(``onnxruntime.transformers.optimizer.optimize_model``): each layer's attention becomes one
``Attention`` op, each residual + LayerNorm a ``SkipLayerNormalization``, each bias + GELU a
``BiasGelu``, and the embeddings one ``EmbedLayerNormalization`` (onnxruntime's own CPU kernels).
``export.json``'s ``fused_ops`` counts them; the fused graph is checked against PyTorch like the
plain one. The scratch Transformer keeps the plain graph (onnxruntime still applies its generic
optimisations when it loads it).

int8 quantisation
-----------------
``quantize="int8"`` runs onnxruntime's *dynamic* quantisation
(``onnxruntime.quantization.quantize_dynamic``). The weights of every ``MatMul`` (the ``Linear``
layers), ``Gather`` (the embedding tables) and, in a fused graph, ``Attention`` (the Q/K/V
projection) and ``EmbedLayerNormalization`` are stored as int8 (``QInt8``) with one scale per
output channel; at run time each product's input activations are quantised to uint8 with a scale
computed from the batch itself, so no calibration data is needed, and the products run in integer
kernels. LayerNorm, softmax, GELU and the residual additions stay fp32. A plain (unfused) graph
first goes through ``quant_pre_process`` (shape inference and graph clean-up).

Measured (``python benchmarks/serve_model.py``; BENCHMARKS.md, "Step 7"): on a fine-tuned MiniLM
(all-MiniLM-L6-v2, BBC News, 256 tokens) the int8 file is a quarter of the fp32 one (23 MB against
91 MB) and the test accuracy did not change; logits move by up to a few tenths, so predictions near
a decision boundary can change. One scale per output channel (rather than one per tensor) keeps
the weights of small-norm channels from being rounded to zero.

So compare before serving it (:func:`compare_engines`; ``ragtune export`` does this on the run's
test split and writes ``check.json``); scores are not bit-identical to PyTorch's. The fp32 graph
matches PyTorch within 1e-5. Dynamic int8 is meant for CPU serving; on a GPU serve the fp32 graph.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ragtune.version import __version__
from ragtune.errors import RagtuneError
from ragtune.paths import os_errors, reason
from ragtune.staging import inputs_inside, swap_into_place
from ragtune.tasks.classification.onnx_engine import INPUT_NAMES, OUTPUT_NAME, OnnxSequenceModel

OPSET = 17
MODEL_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"
EXPORT_META = "export.json"
QUANTIZE_CHOICES = ("int8",)
INT8_OP_TYPES = ["MatMul", "Gather"]  # Linear layers and embedding tables (see the module docstring)
INT8_FUSED_OP_TYPES = ["Attention", "EmbedLayerNormalization"]  # the fused graph's Q/K/V products and embeddings
CHECK_TOLERANCE = 1e-4  # largest |logit difference| (per unit of the largest |logit|, at least 1) accepted at export


# --------------------------------------------------------------------------------------------- exporting


def export_onnx(predictor, out_dir: Path, quantize: str | None = None, source: str | None = None) -> dict:
    """Write ``predictor``'s model as ONNX, with its tokenizer and settings, into ``out_dir``.

    Args:
        predictor: a :class:`ragtune.tasks.classification.predictor.Predictor` of a classification or regression run,
            loaded with the PyTorch engine (``Predictor.from_run_dir(RUN_DIR)``).
        out_dir: a new or empty folder (created if missing).
        quantize: None (fp32 only) or ``"int8"`` (also ``model.int8.onnx``, which is then served).
        source: where the run came from (its directory), recorded in ``export.json``.

    Returns the content of ``export.json``. The files are described in the module docstring.
    """
    from ragtune.data.tokenizer import save_tokenizer
    from ragtune.tasks.classification.predictor import MODEL_META, TOKENIZER_FILE, Predictor, pad_id

    if quantize is not None and quantize not in QUANTIZE_CHOICES:
        raise RagtuneError(f"quantize: unknown choice {quantize!r}; valid choices: {list(QUANTIZE_CHOICES)} "
                           "(or none for fp32 only)")
    if not isinstance(predictor, Predictor):
        hint = " (task: qa runs cannot be exported to ONNX)" if type(predictor).__name__ == "QAPredictor" else ""
        raise RagtuneError(f"ONNX export takes a classification or regression run loaded as a ragtune Predictor, "
                           f"not a {type(predictor).__name__}{hint}")
    if getattr(predictor, "engine", "torch") != "torch" or isinstance(predictor.model, OnnxSequenceModel):
        raise RagtuneError("this predictor already runs an ONNX graph; export from the run directory "
                           "(Predictor.from_run_dir(RUN_DIR), engine torch)")
    if predictor.task not in ("classification", "regression"):
        raise RagtuneError(f"ONNX export supports task classification and regression, not {predictor.task!r}")
    if not isinstance(predictor.model, torch.nn.Module):
        raise RagtuneError(f"cannot export a {type(predictor.model).__name__} model to ONNX: expected a torch module")

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model = _exportable(predictor.model)
    pad = pad_id(predictor.meta)
    vocab = _vocab_size(predictor)
    was_training = model.training
    model.eval()
    try:
        fp32 = out_dir / MODEL_FILE
        _write_via_temp(fp32, lambda tmp: _trace_to_onnx(model, _example_batch(predictor.max_length, vocab, pad), tmp))
        diff, scale = _check_graph(model, fp32, predictor.task, predictor.max_length, vocab, pad)
        check = {"fp32_max_abs_diff": diff}
        if diff > CHECK_TOLERANCE * max(1.0, scale):
            raise RuntimeError(f"the exported graph {fp32} differs from the PyTorch model by up to {diff:.3g} "
                               f"(outputs up to {scale:.3g}; more than {CHECK_TOLERANCE} relative): an export bug")
        fused = _fuse_transformer_ops(model, fp32)
        if fused:
            diff, scale = _check_graph(model, fp32, predictor.task, predictor.max_length, vocab, pad)
            check["fused_max_abs_diff"] = diff
            if diff > CHECK_TOLERANCE * max(1.0, scale):
                raise RuntimeError(f"the fused graph {fp32} differs from the PyTorch model by up to {diff:.3g}: "
                                   "an export bug")
        model_file = MODEL_FILE
        if quantize == "int8":
            _write_via_temp(out_dir / INT8_FILE, lambda tmp: quantize_int8(fp32, tmp))
            check["int8_max_abs_diff"], _ = _check_graph(model, out_dir / INT8_FILE, predictor.task,
                                                         predictor.max_length, vocab, pad)
            model_file = INT8_FILE
    finally:
        model.train(was_training)

    _write_via_temp(out_dir / TOKENIZER_FILE, lambda tmp: save_tokenizer(predictor.tokenizer, tmp))
    meta = copy.deepcopy(predictor.meta)
    if predictor.retriever is not None:
        meta["retrieval"] = _copy_retrieval(predictor, out_dir)
    _write_json(out_dir / MODEL_META, meta)
    info = {
        "format": "onnx",
        "quantize": quantize,
        "model_file": model_file,
        "opset": OPSET,
        "source": None if source is None else str(source),
        "ragtune_version": __version__,
        "task": predictor.task,
        "labels": list(predictor.labels),
        "check": {k: float(f"{v:.3g}") for k, v in check.items()},
        "fused_ops": fused,
    }
    _write_json(out_dir / EXPORT_META, info)  # last: its presence marks a finished export
    return info


def quantize_int8(src: str | Path, dst: str | Path) -> Path:
    """Write ``dst``: the ONNX graph ``src`` with int8 weights (onnxruntime dynamic quantisation).

    ``quant_pre_process`` first (ONNX shape inference and onnxruntime's basic graph clean-up; its
    symbolic shape inference is skipped: it fails on the slices of BERT's buffered position and
    token-type ids), then ``quantize_dynamic`` with ``QInt8`` weights, one scale per output
    channel, on :data:`INT8_OP_TYPES`. See the module docstring for what it costs.
    """
    import logging

    from onnxruntime.quantization import QuantType, quant_pre_process, quantize_dynamic

    import onnx

    src, dst = Path(src), Path(dst)
    fused = any(node.domain == "com.microsoft" for node in onnx.load(str(src), load_external_data=False).graph.node)
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.ERROR))  # onnxruntime.quantization logs advice through the root logger
    try:
        with tempfile.TemporaryDirectory(dir=dst.parent, prefix=".quantize-") as tmp:
            if fused:  # onnxruntime's own ops: ONNX shape inference cannot type their outputs, so say float
                quantize_dynamic(src, dst, op_types_to_quantize=INT8_OP_TYPES + INT8_FUSED_OP_TYPES, per_channel=True,
                                 weight_type=QuantType.QInt8,
                                 extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
            else:
                prepared = Path(tmp) / "prepared.onnx"
                quant_pre_process(str(src), str(prepared), skip_symbolic_shape=True)
                quantize_dynamic(prepared, dst, op_types_to_quantize=INT8_OP_TYPES, per_channel=True,
                                 weight_type=QuantType.QInt8)
    finally:
        root.setLevel(level)
    return dst


def _exportable(model: torch.nn.Module) -> torch.nn.Module:
    """The module to trace, in a copy where it must change: a LoRA model (peft) gets its adapters merged
    into the weights, and a Hugging Face model of a family onnxruntime can fuse (:data:`FUSABLE`) runs
    its attention as plain ("eager") matrix products, the pattern the fusion recognises (SDPA exports as
    one opaque op sequence it does not)."""
    inner = getattr(model, "model", None)
    copied = False
    if inner is not None and hasattr(inner, "merge_and_unload"):
        model = copy.deepcopy(model)
        model.model = model.model.merge_and_unload()
        copied = True
    config = _fusable_config(model)
    if config is not None and getattr(config, "_attn_implementation", "eager") != "eager":
        if not copied:
            model = copy.deepcopy(model)
        model.model.set_attn_implementation("eager")
    return model


#: Hugging Face ``model_type`` → onnxruntime transformer-optimizer type, for the families whose
#: attention, LayerNorm and GELU onnxruntime fuses into its own CPU kernels.
FUSABLE = {"bert": "bert", "roberta": "bert", "xlm-roberta": "bert", "electra": "bert"}


def _fusable_config(model: torch.nn.Module):
    """The Hugging Face config of ``model`` (an :class:`HFSequenceModel`) when it can be fused, else None."""
    config = getattr(getattr(model, "model", None), "config", None)
    if config is None or getattr(config, "model_type", None) not in FUSABLE:
        return None
    return config


def _fuse_transformer_ops(model: torch.nn.Module, path: Path) -> dict:
    """Rewrite the graph at ``path`` with onnxruntime's transformer optimizer (``onnxruntime.transformers
    .optimizer.optimize_model``): each layer's attention becomes one ``Attention`` op, residual + LayerNorm
    ``SkipLayerNormalization``, bias + GELU ``BiasGelu``, the embeddings ``EmbedLayerNormalization``
    (contrib ops of onnxruntime's CPU provider). Returns the counts of fused ops ({} when the model is
    not of a :data:`FUSABLE` family, which keeps the plain graph; onnxruntime still applies its generic
    optimisations when it loads it)."""
    config = _fusable_config(model)
    if config is None:
        return {}
    import logging

    from onnxruntime.transformers.optimizer import optimize_model

    logger = logging.getLogger("onnxruntime.transformers")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        optimized = optimize_model(str(path), model_type=FUSABLE[config.model_type],
                                   num_heads=int(config.num_attention_heads), hidden_size=int(config.hidden_size))
    finally:
        logger.setLevel(level)
    stats = {k: int(v) for k, v in optimized.get_fused_operator_statistics().items() if v}
    _write_via_temp(path, lambda tmp: optimized.save_model_to_file(str(tmp)))
    return stats


def _vocab_size(predictor) -> int:
    """How many token ids the check batches may use: the tokenizer's vocabulary, at most the model's embedding rows."""
    n = int(predictor.tokenizer.get_vocab_size(with_added_tokens=True))
    model = predictor.model
    rows = getattr(getattr(model, "config", None), "vocab_size", None)  # the scratch Transformer
    inner = getattr(model, "model", None)
    if rows is None and inner is not None and hasattr(inner, "get_input_embeddings"):  # hf
        rows = inner.get_input_embeddings().num_embeddings
    return max(2, min(n, int(rows)) if rows else n)


def _batch(lengths: Sequence[int], vocab: int, pad: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Random token ids (never the pad id) of the given lengths, right-padded: (input_ids, attention_mask)."""
    rng = np.random.default_rng(seed)
    width = max(lengths)
    ids = np.full((len(lengths), width), pad, dtype=np.int64)
    mask = np.zeros((len(lengths), width), dtype=np.int64)
    for row, n in enumerate(lengths):
        drawn = rng.integers(0, vocab - 1, size=n)
        ids[row, :n] = drawn + (drawn >= pad)  # skip the pad id
        mask[row, :n] = 1
    return torch.from_numpy(ids), torch.from_numpy(mask)


def _example_batch(max_length: int, vocab: int, pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch the tracer runs: two rows, the second padded, so the graph keeps the attention mask."""
    n = min(8, max_length)
    return _batch([n, max(1, n // 2)], vocab, pad, seed=0)


def _trace_to_onnx(model: torch.nn.Module, example: tuple[torch.Tensor, torch.Tensor], path: Path) -> None:
    axes = {0: "batch", 1: "sequence"}
    with torch.no_grad(), warnings.catch_warnings():
        # the tracer warns about the model's Python-level input checks, which the graph leaves out;
        # the TorchScript exporter itself is marked deprecated (see the module docstring for why it is used)
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", message=r"Exporting aten::index operator")
        torch.onnx.export(
            model, example, str(path), dynamo=False, export_params=True, opset_version=OPSET,
            do_constant_folding=True, input_names=list(INPUT_NAMES), output_names=[OUTPUT_NAME],
            dynamic_axes={"input_ids": axes, "attention_mask": dict(axes), OUTPUT_NAME: {0: "batch"}},
        )


def _check_graph(model: torch.nn.Module, path: Path, task: str, max_length: int, vocab: int,
                 pad: int) -> tuple[float, float]:
    """The largest |output difference| between ``model`` and the graph at ``path`` on batches unlike the
    traced one, and the largest |output| of ``model`` there (the scale the difference is judged against)."""
    session = OnnxSequenceModel(path, task, threads=torch.get_num_threads(), pad_id=pad)
    batches = [_batch([max(1, min(5, max_length))], vocab, pad, seed=1),  # batch 1, nothing padded
               _batch([max_length, max(1, max_length // 3), max(1, min(3, max_length)), max(1, max_length - 1)],
                      vocab, pad, seed=2)]
    worst = scale = 0.0
    with torch.no_grad():
        for ids, mask in batches:
            expected = model(ids, mask).float()
            worst = max(worst, float((session(ids, mask) - expected).abs().max()))
            scale = max(scale, float(expected.abs().max()))
    return worst, scale


def _copy_retrieval(predictor, out_dir: Path) -> dict:
    """Copy the run's index (and neighbour labels) into ``out_dir``; the ``retrieval`` entry pointing at them."""
    from ragtune.retrieval.augment import INDEX_DIR, NEIGHBOUR_LABELS

    retriever = predictor.retriever
    entry = dict(predictor.meta.get("retrieval") or {})
    index_src = Path(retriever.index.path)
    target = out_dir / INDEX_DIR
    tmp = out_dir / f".{INDEX_DIR}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        shutil.copytree(index_src, tmp)
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    entry.update({"index": INDEX_DIR, "top_k": retriever.top_k, "separator": retriever.separator, "labels": None})
    if retriever.labels is not None:
        _write_json(out_dir / NEIGHBOUR_LABELS, retriever.labels)
        entry["labels"] = NEIGHBOUR_LABELS
    return entry


def _write_via_temp(path: Path, write) -> None:
    """``write(tmp)`` to a temporary name beside ``path``, then rename it into place."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _write_json(path: Path, data) -> None:
    _write_via_temp(path, lambda tmp: tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n",
                                                      encoding="utf-8"))


# -------------------------------------------------------------------------------------------- comparing


def compare_engines(reference, candidate, texts: Sequence[str], labels: Sequence | None = None) -> dict:
    """How closely ``candidate`` (e.g. an ONNX export) reproduces ``reference`` (the PyTorch run) on ``texts``.

    Returns ``n`` (texts compared), ``max_abs_diff`` and ``mean_abs_diff`` (over all logits, or the
    standardised predictions of a regression run), and for classification ``agreement``: the share
    of texts both predict the same class for. With ``labels`` (class names; numbers for regression)
    also ``accuracy_reference`` and ``accuracy_candidate`` (regression: ``mse_reference`` and
    ``mse_candidate``, in the target's units).
    """
    if isinstance(texts, str):
        raise TypeError("texts must be a list of strings, not one string")
    texts = list(texts)
    if reference.task != candidate.task or list(reference.labels) != list(candidate.labels):
        raise RagtuneError(f"the two models differ in task or labels ({reference.task} {list(reference.labels)} vs "
                           f"{candidate.task} {list(candidate.labels)}); compare a run with its own export")
    if labels is not None and len(labels) != len(texts):
        raise RagtuneError(f"{len(texts)} texts but {len(labels)} labels")
    a, b = reference.outputs(texts), candidate.outputs(texts)
    diff = np.abs(a.astype(np.float64) - b.astype(np.float64))
    out: dict = {"n": len(texts), "max_abs_diff": float(diff.max()) if diff.size else 0.0,
                 "mean_abs_diff": float(diff.mean()) if diff.size else 0.0}
    if reference.labels:  # classification (a regression run has no labels)
        pa, pb = a.argmax(-1), b.argmax(-1)
        out["agreement"] = float((pa == pb).mean()) if len(texts) else 1.0
        if labels is not None:
            index = {label: i for i, label in enumerate(reference.labels)}
            unknown = sorted({str(t) for t in labels if t not in index})
            if unknown:
                raise RagtuneError(f"labels {unknown} were never seen in training; the model knows {reference.labels}")
            y = np.asarray([index[t] for t in labels], dtype=np.int64)
            out["accuracy_reference"] = float((pa == y).mean()) if len(y) else float("nan")
            out["accuracy_candidate"] = float((pb == y).mean()) if len(y) else float("nan")
    elif labels is not None:
        y = np.asarray(labels, dtype=np.float64)
        out["mse_reference"] = float(np.mean((reference._unscale(a) - y) ** 2)) if len(y) else float("nan")
        out["mse_candidate"] = float(np.mean((candidate._unscale(b) - y) ** 2)) if len(y) else float("nan")
    return out


# ------------------------------------------------------------------------------------ `ragtune export`


def export_run(cfg, run_dir: Path, out: Path, *, quantize: str | None = None, data_file: str | None = None,
               overwrite: bool = False) -> tuple[dict, dict]:
    """``ragtune export RUN_DIR --out DIR``: ``(export.json's info, check.json)``.

    The export is written to ``DIR.partial`` and renamed to ``out`` only once it has been checked
    against PyTorch on ``data_file`` (a labelled file) or the run's test split; a failure removes the
    partial folder and leaves an older ``out`` as it was. ``cfg`` is the run's config.
    """
    from ragtune.tasks import task_of
    from ragtune.tasks.classification.predictor import Predictor

    if "onnx" not in task_of(cfg.task).engines:
        raise RagtuneError(f"{run_dir} is a task: {cfg.task} run; `ragtune export` exports classification and regression runs "
                           "(the reader is in Hugging Face format in RUN_DIR/reader for other tools)")
    if out.resolve() == run_dir.resolve() or run_dir.resolve() in out.resolve().parents:
        raise RagtuneError(f"--out {out} is inside the run directory {run_dir}; export to a folder of its own")
    if out.exists() and not out.is_dir():
        raise RagtuneError(f"--out {out} is a file, not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise RagtuneError(f"--out {out} exists and is not empty; choose another folder or add --overwrite")
    if out.is_dir() and any(out.iterdir()):  # --overwrite: only an earlier export, and never an input of this one
        if not (out / EXPORT_META).is_file():
            raise RagtuneError(f"--out {out} is not a ragtune export (it holds no {EXPORT_META}), and --overwrite "
                               "replaces only exports; choose another folder, or empty it yourself")
        if data_file is not None and inputs_inside(out, [("--data", data_file)]):
            raise RagtuneError(f"--overwrite would delete --data {data_file}, which lies inside --out {out}; "
                               "move it or choose another folder")
    torch_predictor = Predictor.from_run_dir(run_dir, batch_size=cfg.eval.batch_size)
    texts, targets, what = _check_data(run_dir, cfg, data_file, torch_predictor.labels)  # before writing anything
    staging = out.with_name(out.name + ".partial")
    with os_errors(staging, "--out"):  # e.g. a name too long once ".partial" is added
        if staging.exists():
            shutil.rmtree(staging)
        staging.mkdir(parents=True)
    try:
        info = export_onnx(torch_predictor, staging, quantize=quantize, source=str(run_dir))
        shutil.copy2(run_dir / "config.yaml", staging / "config.yaml")  # the serve: settings travel along
        onnx_predictor = Predictor.from_run_dir(staging, batch_size=cfg.eval.batch_size, engine="onnx")
        check = {"checked_on": what, **compare_engines(torch_predictor, onnx_predictor, texts, targets)}
        (staging / "check.json").write_text(json.dumps(check, indent=2), encoding="utf-8")
        swap_into_place(staging, out)
    except OSError as exc:  # a full disk, a name too long: the partial folder goes, the error names --out
        shutil.rmtree(staging, ignore_errors=True)
        raise RagtuneError(f"--out {out}: cannot write the export ({reason(exc)})") from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return info, check


def _check_data(run_dir: Path, cfg, data_file: str | None, labels: list[str]):
    """``(texts, targets, what)`` to check an export on: ``data_file``, else the run's test split."""
    from ragtune.tasks.classification.data import load_eval_file, prepare_data

    if data_file:
        df = load_eval_file(data_file, cfg, labels)
        return df.text.tolist(), df.label.tolist(), data_file
    try:
        data = prepare_data(cfg, demo_dir=run_dir / "demo_data" if cfg.data.demo else None)
    except RagtuneError as exc:
        raise RagtuneError(f"cannot prepare the run's test split to check the export ({exc}); "
                           "give a labelled file with --data FILE") from exc
    if not len(data.test):
        raise RagtuneError(f"{run_dir}: the run has no test split to check the export on; give --data FILE")
    return data.test.text.tolist(), data.test.label.tolist(), "the run's test split"
