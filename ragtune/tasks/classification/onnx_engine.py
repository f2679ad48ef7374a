"""The ``onnx`` engine of the classification / regression :class:`~ragtune.tasks.classification.predictor.Predictor`:
a graph written by ``ragtune export`` (:mod:`ragtune.export.onnx`) run in onnxruntime behind the call
signature of ragtune's PyTorch models, so the predictor's tokenization, batching, retrieval and
metrics stay the same whichever engine runs the forward pass.

It lives beside the predictor, not in the exporter: serving an export needs onnxruntime only, not
the exporter's tracing and quantisation code (and the exporter imports the predictor it exports).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ragtune.errors import RagtuneError

INPUT_NAMES = ("input_ids", "attention_mask")
OUTPUT_NAME = "logits"


class OnnxSequenceModel:
    """An onnxruntime session with the call signature of ragtune's PyTorch models.

    ``model(input_ids, attention_mask) -> logits``: int64 tensors (B, T) in, a float32 tensor out,
    (B, C) for classification and (B,) for regression, as the PyTorch model returns them. Only
    inference: ``eval()`` and ``train(False)`` do nothing, ``train(True)`` is an error.

    Args:
        path: the ``.onnx`` file (inputs ``input_ids``, ``attention_mask``; output ``logits``).
        task: ``classification`` or ``regression``.
        threads: onnxruntime's intra-op threads; default ``torch.get_num_threads()``.
        pad_id: the padding id, used only when ``attention_mask`` is None.
        device: where the graph runs. The CPU (``CPUExecutionProvider``) unless it is a CUDA device and
            onnxruntime has the ``CUDAExecutionProvider`` (``onnxruntime-gpu``); then that GPU, with
            the CPU for the operators CUDA lacks. Inputs and outputs are CPU tensors either way.
        fallback: what a device onnxruntime cannot run on (CUDA without the provider, MPS) does:
            True (``--device auto``) runs on the CPU, False (a device named by the caller) is a
            RagtuneError naming ``--device``.
    """

    training = False

    def __init__(self, path: str | Path, task: str, threads: int | None = None, pad_id: int = 0,
                 device: torch.device | None = None, fallback: bool = True):
        import onnxruntime as ort

        path = Path(path)
        if not path.is_file():
            raise RagtuneError(f"ONNX model not found: {path}")
        chosen = providers(device, fallback)  # before the session: its errors would be taken for a bad graph
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(threads or torch.get_num_threads())
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3  # errors only
        try:
            self.session = ort.InferenceSession(str(path), options, providers=chosen)
        except Exception as exc:  # onnxruntime raises its own exception types for unreadable graphs
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise RagtuneError(f"{path}: cannot load the ONNX model ({reason}); export the run again") from None
        names = {i.name for i in self.session.get_inputs()}
        if names != set(INPUT_NAMES):
            raise RagtuneError(f"{path}: expected the inputs {list(INPUT_NAMES)}, the graph has {sorted(names)}; "
                               "export the run again with ragtune export")
        self.path = path
        self.task = task
        self.pad_id = pad_id

    @property
    def providers(self) -> list[str]:
        """The execution providers of the session, first choice first (``["CPUExecutionProvider"]`` on a CPU)."""
        return self.session.get_providers()

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        if attention_mask is None:
            attention_mask = (input_ids != self.pad_id).long()
        feeds = {"input_ids": np.ascontiguousarray(input_ids.detach().cpu().numpy(), dtype=np.int64),
                 "attention_mask": np.ascontiguousarray(attention_mask.detach().cpu().numpy(), dtype=np.int64)}
        (logits,) = self.session.run([OUTPUT_NAME], feeds)
        out = torch.from_numpy(np.asarray(logits, dtype=np.float32))
        if self.task == "regression" and out.dim() == 2:
            out = out.squeeze(-1)  # (B, 1) -> (B,), as TransformerForRegression and HFSequenceModel return
        return out

    forward = __call__

    def eval(self) -> OnnxSequenceModel:
        return self

    def train(self, mode: bool = True) -> OnnxSequenceModel:
        if mode:
            raise RagtuneError("an ONNX model serves predictions only; train the PyTorch run instead")
        return self

    def __repr__(self) -> str:
        return f"OnnxSequenceModel({str(self.path)!r}, task={self.task!r})"


def providers(device: torch.device | None, fallback: bool = True) -> list:
    """onnxruntime's execution providers for ``device`` (:class:`OnnxSequenceModel`'s ``device`` and ``fallback``)."""
    import onnxruntime as ort

    if device is None or device.type == "cpu":
        return ["CPUExecutionProvider"]
    if device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
        return [("CUDAExecutionProvider", {"device_id": device.index or 0}), "CPUExecutionProvider"]
    if fallback:
        return ["CPUExecutionProvider"]
    why = ("has no CUDAExecutionProvider (install onnxruntime-gpu for it)" if device.type == "cuda"
           else f"cannot run on {device.type}")
    raise RagtuneError(f"--device: {device}, but the onnx engine runs in onnxruntime {ort.__version__}, which {why}; "
                       "choose --device cpu (or auto) with --engine onnx, or --engine torch on the run directory")
