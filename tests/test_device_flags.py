"""`--device` on the eight commands that run a model, and predictors that follow their model's device.

On this CPU-only machine every command runs with ``--device cpu`` and ``--device auto`` (which is the
CPU here); ``--device cuda``, ``cuda:3`` and ``gpu`` are refused with one ``error:`` line naming
``--device`` and the choices, before anything is loaded or written. Predictors put their inputs on the
device of their model's parameters, also when the caller moved the model (the training loop does):
:class:`OnDevice` reports a ``meta`` parameter first and records where its inputs arrive.
"""

from __future__ import annotations

import json

import pytest
import torch
from test_bad_input import digest, expect_user_error, finished_run, good_rows  # noqa: F401  (the session's run)
from tiny_hf import save_tiny_encoder

from ragtune.cli import main
from ragtune.errors import RagtuneError

SQUAD = {"version": "1.1", "data": [{"title": "toy", "paragraphs": [
    {"context": "Mount Etna is an active volcano in Sicily.",
     "qas": [{"id": "q1", "question": "Where is Etna?", "answers": [{"text": "Sicily", "answer_start": 35}]}]},
    {"context": "The Great Wall stretches across northern China.",
     "qas": [{"id": "q2", "question": "Where is the Great Wall?",
              "answers": [{"text": "northern China", "answer_start": 32}]}]},
    {"context": "Glaciers are slowly moving rivers of ice.", "qas": []},
]}]}


@pytest.fixture(scope="module")
def world(finished_run, tmp_path_factory):  # noqa: F811  (the imported session fixture)
    """The session's classification run, a labelled file, a SQuAD file, a tiny dense index and a reranker
    on it (built with ``--device cpu``)."""
    root = tmp_path_factory.mktemp("devices")
    squad = root / "squad.json"
    squad.write_text(json.dumps(SQUAD), encoding="utf-8")
    good_rows(9).to_csv(root / "eval.csv", index=False)
    encoder = save_tiny_encoder(root / "encoder", seed=0)
    assert main(["index", str(squad), "--out", str(root / "index"), "--kind", "dense", "--encoder", str(encoder),
                 "--quiet", "--device", "cpu"]) == 0
    assert main(["train-reranker", str(root / "index"), "--questions", str(squad), "--out", str(root / "reranker"),
                 "--base", str(encoder), "--negatives", "1", "--batch-size", "8", "--max-length", "32", "--quiet",
                 "--device", "cpu"]) == 0
    return {"run": finished_run / "run", "data": root / "eval.csv", "squad": squad, "encoder": encoder,
            "index": root / "index", "reranker": root / "reranker", "root": root}


def argv_of(command: str, w: dict, out) -> list[str]:
    """A working command line of ``command`` on ``world``'s folders (new outputs under ``out``)."""
    return {
        "predict": ["predict", str(w["run"]), "match goal team"],
        "eval": ["eval", str(w["run"]), "--data", str(w["data"])],
        "serve": ["serve", str(w["run"]), "--port", "0"],
        "explain": ["explain", str(w["run"]), "match goal team", "--steps", "2"],
        "index": ["index", str(w["squad"]), "--out", str(out / "index"), "--kind", "dense", "--encoder",
                  str(w["encoder"]), "--quiet"],
        "retrieve": ["retrieve", str(w["index"]), "Where is Etna?", "-k", "2", "--rerank", str(w["reranker"])],
        "eval-retrieval": ["eval-retrieval", str(w["index"]), "--questions", str(w["squad"]), "-k", "1", "2",
                           "--rerank", str(w["reranker"]), "--quiet"],
        "train-reranker": ["train-reranker", str(w["index"]), "--questions", str(w["squad"]), "--out",
                           str(out / "reranker"), "--base", str(w["encoder"]), "--negatives", "1", "--batch-size",
                           "8", "--max-length", "32", "--quiet"],
    }[command]


COMMANDS = ("predict", "eval", "serve", "explain", "index", "retrieve", "eval-retrieval", "train-reranker")


@pytest.fixture
def served(monkeypatch):
    """`ragtune serve` up to the point where uvicorn would serve: the service it built, not a live server."""
    import uvicorn

    import ragtune.serve.app as app_module

    seen = {}
    real_create_app = app_module.create_app

    def create_app(service, **kwargs):
        seen["service"] = service
        return real_create_app(service, **kwargs)

    def run(self, sockets=None):
        self.started = True

    monkeypatch.setattr(app_module, "create_app", create_app)
    monkeypatch.setattr(uvicorn.Server, "run", run)
    return seen


@pytest.mark.parametrize("device", ["cpu", "auto"])
@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_runs_on_the_cpu(world, command, device, served, tmp_path, capsys):
    capsys.readouterr()
    assert main([*argv_of(command, world, tmp_path), "--device", device]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    if command == "predict":
        assert json.loads(out)["label"] in ("sport", "economy", "culture")
    elif command == "eval":
        assert 0 <= json.loads(out)["accuracy"] <= 1
    elif command == "explain":
        assert json.loads(out)["tokens"]
    elif command == "retrieve":
        hits = [json.loads(line) for line in out.splitlines()]
        assert len(hits) == 2 and all("retrieval_score" in h for h in hits)  # reranked
    elif command == "eval-retrieval":
        assert json.loads(out)["n_questions"] == 2
    elif command == "index":
        assert (tmp_path / "index" / "faiss.index").is_file()
    elif command == "train-reranker":
        assert (tmp_path / "reranker" / "reranker.json").is_file()
    elif command == "serve":
        assert "device cpu" in out
        model = served["service"].predictor.model
        assert next(model.parameters()).device == torch.device("cpu")


@pytest.mark.parametrize("device, needles", [
    ("cuda", ("--device: cuda, but torch", "choose auto or cpu")),
    ("cuda:3", ("--device: cuda:3", "choose auto or cpu")),
    ("gpu", ("--device: 'gpu' is not a device", "auto, cpu, cuda, cuda:n or mps")),
])
@pytest.mark.parametrize("command", COMMANDS)
def test_a_device_this_machine_lacks_is_one_error_line(world, command, device, needles, served, tmp_path, capsys):
    if torch.cuda.is_available() and device != "gpu":
        pytest.skip("this machine has a GPU")
    before = digest(world["root"])
    err = expect_user_error(capsys, [*argv_of(command, world, tmp_path), "--device", device], *needles)
    assert len(err.strip().splitlines()) == 1, err
    assert "service" not in served  # serve: refused before the model loads
    assert not any(tmp_path.iterdir()), "a refused command wrote something"
    assert digest(world["root"]) == before


def test_device_in_every_help(capsys):
    for command in COMMANDS:
        with pytest.raises(SystemExit):
            main([command, "--help"])
        shown = " ".join(capsys.readouterr().out.split())  # argparse wraps the help
        assert "--device DEVICE auto (CUDA, else MPS, else CPU), cpu, cuda, cuda:N or mps; default auto" in shown, command


# ------------------------------------------------------------------------------------------------
# predictors on the device of their model
# ------------------------------------------------------------------------------------------------

class OnDevice(torch.nn.Module):
    """A model whose parameters are on ``meta``: a stand-in for a GPU on a CPU-only machine (a meta tensor
    keeps its shape, not its data). It records the device of every tensor it is called with and answers
    zeros ``(B, outputs)`` on the CPU."""

    def __init__(self, outputs: int):
        super().__init__()
        self.marker = torch.nn.Parameter(torch.empty(1, device="meta"))  # next(parameters()): the meta device
        self.outputs = outputs
        self.seen: list[torch.device] = []

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        self.seen += [t.device for t in (input_ids, attention_mask) if t is not None]
        return torch.zeros(input_ids.shape[0], self.outputs)  # (B, C)


def test_the_classification_predictor_puts_its_inputs_on_its_models_device(world):
    from ragtune.tasks.classification.predictor import Predictor

    predictor = Predictor.from_run_dir(world["run"], device="cpu")
    predictor.model = OnDevice(len(predictor.labels))  # as a recipe builds it with a model it moved itself
    predictions = predictor.predict(["match goal team", "bank market shares"])
    assert predictor.model.seen and set(predictor.model.seen) == {torch.device("meta")}
    assert [set(p["scores"].values()) for p in predictions] == [{round(1 / 3, 6)}] * 2  # outputs back on the CPU


def test_explain_runs_on_the_models_device():
    from ragtune.explain.attributions import _forward

    model = OnDevice(3)
    out = _forward(model, [[1, 2], [3]], pad=0)  # (B, C)
    assert set(model.seen) == {torch.device("meta")}
    assert out.device == torch.device("cpu") and out.shape == (2, 3)


def test_model_device_and_inference_device(world):
    from ragtune.runs import inference_device, model_device
    from ragtune.tasks.classification.predictor import Predictor

    assert model_device(OnDevice(torch.nn.Linear(1, 1))) == torch.device("meta")
    assert model_device(object()) == torch.device("cpu")  # the onnx engine: no parameters
    assert inference_device("auto") == inference_device(None) == inference_device(torch.device("cpu"))
    if not torch.cuda.is_available():
        with pytest.raises(RagtuneError, match="--device: cuda, but torch"):
            Predictor.from_run_dir(world["run"], device="cuda")
    model = Predictor.from_run_dir(world["run"], device=" CPU ").model
    assert next(model.parameters()).device == torch.device("cpu")


def test_the_onnx_engine_refuses_a_gpu_onnxruntime_cannot_use(monkeypatch):
    import onnxruntime as ort

    from ragtune.tasks.classification.onnx_engine import providers

    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    assert providers(torch.device("cpu"), fallback=False) == ["CPUExecutionProvider"]
    assert providers(torch.device("cuda", 1), fallback=True) == ["CPUExecutionProvider"]  # --device auto
    with pytest.raises(RagtuneError, match=r"--device: cuda:1, but the onnx engine .* no CUDAExecutionProvider"):
        providers(torch.device("cuda", 1), fallback=False)
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert providers(torch.device("cuda", 1), fallback=False) == [
        ("CUDAExecutionProvider", {"device_id": 1}), "CPUExecutionProvider"]


def test_faiss_stays_on_the_cpu_without_faiss_gpu(world):
    from ragtune.retrieval.dense import faiss_on_device, load_faiss

    index = load_faiss(world["index"] / "faiss.index")
    assert faiss_on_device(index, torch.device("cpu")) is index
    assert faiss_on_device(index, torch.device("cuda", 0)) is index or torch.cuda.is_available()


def test_a_search_deeper_than_faiss_gpu_allows_uses_the_cpu_copy(world, monkeypatch):
    from ragtune.retrieval import dense
    from ragtune.retrieval.index import load_index

    index = load_index(world["index"], device="cpu")
    assert index.faiss_cpu is None  # nothing was copied to a GPU
    expected = index.search_rows(["Where is Etna?"], k=2)

    class GpuCopy:  # stands in for the faiss-gpu copy, which answers at most GPU_MAX_K hits
        def __init__(self, real):
            self.real, self.calls = real, []

        def search(self, vectors, k):
            self.calls.append(k)
            return self.real.search(vectors, k)

    index.faiss_cpu, index.faiss_index = index.faiss_index, GpuCopy(index.faiss_index)
    monkeypatch.setattr(dense, "GPU_MAX_K", 1)
    assert index.search_rows(["Where is Etna?"], k=2) == expected and index.faiss_index.calls == []
    assert index.search_rows(["Where is Etna?"], k=1) == [expected[0][:1]] and index.faiss_index.calls == [1]


def test_the_translation_predictor_pads_on_its_models_device(monkeypatch):
    import ragtune.tasks.translation.predictor as module
    from ragtune.data.seq2seq_tokenizer import train_seq2seq_tokenizer
    from ragtune.models.seq2seq import Seq2SeqConfig, build_seq2seq, pad_batch

    sources, targets = ["a man sleeps", "a dog runs", "two cats eat"], ["ein mann schläft", "ein hund rennt", "zwei"]
    tokenizer = train_seq2seq_tokenizer(sources * 3, targets * 3, vocab_size=300, min_frequency=1)
    model = build_seq2seq(Seq2SeqConfig(src_vocab_size=tokenizer.source_vocab_size, max_length=16, d_model=16,
                                        heads=2, head_dim=8, encoder_layers=1, decoder_layers=1, ffn_dim=32))
    predictor = module.Seq2SeqPredictor(model.eval(), tokenizer, {"decode": {"max_new_tokens": 3}}, batch_size=2)
    asked = []

    def recording_pad_batch(rows, pad, left=False, device=None):
        asked.append(device)
        return pad_batch(rows, pad, left=left, device=device)

    monkeypatch.setattr(module, "pad_batch", recording_pad_batch)
    assert len(predictor.translate(sources)) == 3 and isinstance(predictor.loss(sources, targets), float)
    assert asked and set(asked) == {next(model.parameters()).device}  # each batch made where the model is
