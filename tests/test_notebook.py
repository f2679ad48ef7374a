"""examples/quickstart.ipynb runs from top to bottom and shows metrics, a picture and predictions.

The notebook is executed with nbclient in a kernel that is *this* Python (``sys.executable``): the
test writes a temporary ``python3`` kernelspec and puts it first on ``JUPYTER_PATH``, so neither a
kernelspec installed elsewhere on the machine nor the PATH decides which interpreter (and which
ragtune) runs the notebook. The working directory of the kernel is ``examples/``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat", reason="nbformat is in the [test] extras: pip install -e '.[test]'")
nbclient = pytest.importorskip("nbclient", reason="nbclient is in the [test] extras: pip install -e '.[test]'")
pytest.importorskip("ipykernel", reason="ipykernel is in the [test] extras: pip install -e '.[test]'")

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
NOTEBOOK = EXAMPLES / "quickstart.ipynb"
DEMO_LABELS = {"politics", "economy", "entertainment"}


@pytest.fixture
def this_python_kernel(tmp_path, monkeypatch) -> str:
    """A ``python3`` kernelspec whose argv runs ``sys.executable``, found before any other."""
    spec_dir = tmp_path / "jupyter" / "kernels" / "python3"
    spec_dir.mkdir(parents=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (ragtune test)",
        "language": "python",
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec), encoding="utf-8")
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    runtime = tmp_path / "runtime"
    runtime.mkdir()
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(runtime))

    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        argv = KernelSpecManager().get_kernel_spec("python3").argv
    except NoSuchKernel:  # pragma: no cover - only on a broken Jupyter install
        pytest.skip("no python3 Jupyter kernel could be found, even after writing one")
    assert argv[0] == sys.executable, f"the python3 kernel would run {argv[0]}, not {sys.executable}"
    return "python3"


def _texts(cell) -> str:
    """Everything a code cell printed or displayed as text."""
    parts = []
    for out in cell.get("outputs", []):
        if out.get("output_type") == "stream":
            parts.append(out.get("text", ""))
        elif "data" in out:
            parts.append(out["data"].get("text/plain", ""))
    return "".join(parts)


def test_notebook_is_saved_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code, "the notebook has no code cells"
    assert all(not c.outputs and c.execution_count is None for c in code), "save the notebook without outputs"
    assert "scripts/install.sh" in nb.cells[0].source and nb.cells[0].cell_type == "markdown"


@pytest.mark.timeout(900)
def test_quickstart_notebook_runs(this_python_kernel):
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=600, kernel_name=this_python_kernel, resources={"metadata": {"path": str(EXAMPLES)}}
    )
    client.execute()  # raises CellExecutionError (with the cell's traceback) if any cell fails

    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.get("output_type") == "error"]
    assert not errors, errors

    code = [c for c in nb.cells if c.cell_type == "code"]
    metrics_cell = next(c for c in code if "metrics.json" in c.source)
    printed = _texts(metrics_cell)
    for key in ("validation", "test", "'accuracy'", "'macro_f1'", "'loss'", "training", "'tokens_per_s'"):
        assert key in printed, f"{key} missing from the metrics cell's output:\n{printed}"

    assert any("image/png" in o.get("data", {}) for c in code for o in c.outputs), "no picture was displayed"

    predict_cell = next(c for c in code if "predictor.predict" in c.source)
    lines = [line for line in _texts(predict_cell).splitlines() if line and not line.startswith(" ")]
    assert len(lines) == 2, _texts(predict_cell)
    for line, text in zip(lines, ["central bank", "电影导演"]):
        label = line.split()[0]
        assert label in DEMO_LABELS, line
        assert text in line, line
