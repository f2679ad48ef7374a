"""Optional packages (ragtune/extras.py): the core runs without any of them, and a missing one is one message
naming its extra, exit code 2."""

import subprocess
import sys

import pytest
import yaml

from ragtune.cli import main
from ragtune.extras import PACKAGES, missing_extra


def test_every_optional_import_names_an_extra_of_pyproject():
    import tomllib
    from pathlib import Path

    project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    core = " ".join(project["dependencies"])
    for module, (package, extra) in PACKAGES.items():
        assert extra in extras, (module, extra)
        assert any(req.startswith(package) for req in extras[extra]), (package, extra)
        assert package not in core, f"{package} is optional: not in the core dependencies"
    assert missing_extra(ModuleNotFoundError("no", name="optuna.trial")).args[0].startswith(
        "this needs the package optuna, which is not installed: pip install 'ragtune[tune]'")
    assert missing_extra(ModuleNotFoundError("no", name="some_other_module")) is None  # not ours: a real bug


def test_a_missing_optional_package_is_one_message_with_its_extra(tmp_path, monkeypatch, capsys):
    cfg = {"task": "classification", "data": {"demo": True}, "tune": {"space": {"train.lr": {"choice": [0.1, 0.01]}}}}
    (tmp_path / "t.yaml").write_text(yaml.safe_dump(cfg), encoding="utf-8")
    (tmp_path / "doc.txt").write_text("a passage about bees", encoding="utf-8")
    monkeypatch.setitem(sys.modules, "optuna", None)  # import optuna now fails, as if not installed
    assert main(["tune", str(tmp_path / "t.yaml"), "--out", str(tmp_path / "study")]) == 2
    assert "this needs the package optuna, which is not installed: pip install 'ragtune[tune]'" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "bm25s", None)
    assert main(["index", str(tmp_path / "doc.txt"), "--out", str(tmp_path / "idx"), "--quiet"]) == 2
    assert "pip install 'ragtune[retrieval]'" in capsys.readouterr().err
    import ragtune
    from ragtune.errors import RagtuneError

    with pytest.raises(RagtuneError, match=r"ragtune\[retrieval\]"):  # the Python API says the same
        ragtune.index(tmp_path / "doc.txt", out=tmp_path / "idx2", progress=False)


def test_an_english_bm25_index_needs_no_jieba(tmp_path, monkeypatch, capsys):
    """jieba (`ragtune[zh]`) is loaded at the first Chinese text only: `ragtune[retrieval]` indexes English."""
    from ragtune.retrieval import bm25

    bm25._jieba.cache_clear()
    monkeypatch.setitem(sys.modules, "jieba", None)
    (tmp_path / "en").mkdir()
    (tmp_path / "en" / "doc.txt").write_text("a passage about bees and honey", encoding="utf-8")
    assert main(["index", str(tmp_path / "en"), "--out", str(tmp_path / "idx"), "--quiet"]) == 0
    (tmp_path / "zh").mkdir()
    (tmp_path / "zh" / "doc.txt").write_text("北京是中国的首都", encoding="utf-8")
    assert main(["index", str(tmp_path / "zh"), "--out", str(tmp_path / "idz"), "--quiet"]) == 2
    assert "this needs the package jieba, which is not installed: pip install 'ragtune[zh]'" in capsys.readouterr().err
    assert not (tmp_path / "idz").exists()
    bm25._jieba.cache_clear()


CORE_ONLY = """
import sys
for name in {optional!r}:
    sys.modules[name] = None  # as if only the core were installed
from ragtune.cli import main
code = main(["run", "demo", "train.epochs=1", "train.steps_per_epoch=3", "model.layers=1", "--out", "r", "--quiet"])
code = code or main(["predict", "r", "The bank raised interest rates"])
sys.exit(code)
"""


def test_the_core_alone_trains_and_predicts_the_classification_demo(tmp_path):
    optional = sorted(set(PACKAGES) | {"swagger_ui_bundle"})
    done = subprocess.run([sys.executable, "-c", CORE_ONLY.format(optional=optional)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert '"label"' in done.stdout.splitlines()[-1]
