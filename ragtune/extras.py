"""Optional dependencies: which ``pip install 'ragtune[EXTRA]'`` brings which package.

The core install (``pip install ragtune``) builds, trains, evaluates and reports classification and
regression models, from scratch or from a pretrained Hugging Face model. The rest comes with extras:

===============  ==============================================================  ==========================
extra            packages                                                        for
===============  ==============================================================  ==========================
``retrieval``    sentence-transformers, bm25s, faiss-cpu, PyStemmer, pypdf       indexes, RAG, ``task: qa``
``serve``        fastapi, uvicorn, prometheus-client, swagger-ui-bundle          ``ragtune serve``
``export``       onnx, onnxruntime, onnxscript                                   ``ragtune export``, ONNX
``explain``      captum                                                          ``ragtune explain``
``tune``         optuna                                                          ``ragtune tune``
``zh``           jieba                                                           Chinese BM25 (word cuts)
``text``         sacrebleu, rouge-score                                          translation and generation
``llm``          peft, gguf                                                      LoRA, ``.gguf`` models
``tracking``     tensorboard, mlflow-skinny                                      ``train.report_to``
``data``         datasets                                                        ``hf://`` data
``all``          every extra above
===============  ==============================================================  ==========================

A command or config that needs a package that is not installed stops with one message naming the
extra (:func:`missing_extra`; the command line exits with code 2), e.g.::

    error: this needs the package optuna, which is not installed: pip install 'ragtune[tune]' (or pip install optuna)
"""

from __future__ import annotations

from ragtune.errors import RagtuneError

#: import name -> (pip package, extra)
PACKAGES: dict[str, tuple[str, str]] = {
    "sentence_transformers": ("sentence-transformers", "retrieval"), "bm25s": ("bm25s", "retrieval"),
    "faiss": ("faiss-cpu", "retrieval"), "Stemmer": ("PyStemmer", "retrieval"), "pypdf": ("pypdf", "retrieval"),
    "fastapi": ("fastapi", "serve"), "uvicorn": ("uvicorn", "serve"), "prometheus_client": ("prometheus-client", "serve"),
    "starlette": ("fastapi", "serve"),
    "onnx": ("onnx", "export"), "onnxruntime": ("onnxruntime", "export"), "onnxscript": ("onnxscript", "export"),
    "captum": ("captum", "explain"), "optuna": ("optuna", "tune"), "jieba": ("jieba", "zh"),
    "sacrebleu": ("sacrebleu", "text"), "rouge_score": ("rouge-score", "text"),
    "peft": ("peft", "llm"), "gguf": ("gguf", "llm"),
    "tensorboard": ("tensorboard", "tracking"), "mlflow": ("mlflow-skinny", "tracking"), "wandb": ("wandb", "wandb"),
    "datasets": ("datasets", "data"),
}


def missing_extra(exc: ImportError) -> RagtuneError | None:
    """The user error for an ``ImportError`` of an optional package (None for any other import error)."""
    name = (getattr(exc, "name", None) or "").split(".")[0]
    if name not in PACKAGES:
        return None
    package, extra = PACKAGES[name]
    return RagtuneError(f"this needs the package {package}, which is not installed: pip install 'ragtune[{extra}]' "
                        f"(or pip install {package})")
