"""ragtune.tasks.run called as a library (the CLI's own path is in test_cli.py)."""

import pytest
import yaml

from ragtune.tasks import load_config
from ragtune.tasks.classification.data import prepare_data
from ragtune.tasks import run
from ragtune.tasks.classification.predictor import Predictor


@pytest.mark.parametrize("reports", [True, False])
def test_validation_metrics_are_those_of_the_saved_model(tiny_config, tmp_path, reports):
    """The validation metrics in metrics.json are the restored best epoch's (reused from training, not
    evaluated again), so they must equal a fresh evaluation of the saved model; reports=False (a tuning
    trial) writes the model and metrics but no data report, plots or report.md."""
    cfg = load_config(tiny_config, ["train.epochs=3", "train.restore_best=true"])
    out = tmp_path / "run"
    result = run(cfg, out, progress=False, evaluate_test=False, reports=reports)
    assert result.train.best_epoch is not None
    data = prepare_data(cfg)
    fresh = Predictor.from_run_dir(out).evaluate(data.validation.text.tolist(), data.validation.label.tolist())
    saved = result.metrics["validation"]
    assert saved["accuracy"] == pytest.approx(fresh["accuracy"])
    assert saved["loss"] == pytest.approx(fresh["loss"], rel=1e-5)
    assert saved["confusion_matrix"] == fresh["confusion_matrix"]
    assert "test" not in result.metrics
    for name in ("model.safetensors", "model.json", "metrics.json", "history.json", "config.yaml"):
        assert (out / name).exists(), name
    for name in ("report.md", "data_report.json", "curves.png", "confusion_matrix_validation.png"):
        assert (out / name).exists() == reports, name
    assert yaml.safe_load((out / "config.yaml").read_text())["train"]["epochs"] == 3


def test_max_batch_tokens_cuts_batches_without_changing_outputs(tiny_config, tmp_path):
    """A token budget changes only how texts are grouped into forward passes, never the outputs."""
    import numpy as np

    out = tmp_path / "run"
    run(load_config(tiny_config, ["train.epochs=1"]), out, progress=False, reports=False)
    p = Predictor.from_run_dir(out, batch_size=8)
    texts = ["vote", "market shares bank today", "film " * 20, "选举 政府", "a b c d e f g", "music award"] * 3
    full = p.outputs(texts)
    assert p._chunks([0, 1, 2], [3, 3, 10]) == [[0, 1, 2]]
    p.max_batch_tokens = 9
    assert p._chunks([0, 1, 2], [3, 3, 10]) == [[0, 1], [2]]  # 3 x 3 fits in 9; the 10-token text runs alone
    calls = []
    real = p.model.forward

    def spy(ids, mask):
        calls.append(tuple(ids.shape))
        return real(ids, mask)

    p.model.forward = spy
    np.testing.assert_allclose(p.outputs(texts), full, atol=1e-5)
    assert all(b * t <= 9 or b == 1 for b, t in calls) and len(calls) > 3
