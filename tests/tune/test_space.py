"""tune.space: parsing, every error at once, grid values, sampling through a real Optuna trial."""

import optuna
import pytest

from ragtune.tasks import config_from_dict
from ragtune.errors import RagtuneError
from ragtune.tuning.space import Param, parse_space, suggest, trial_tree

CFG = config_from_dict({"data": {"demo": True}, "retrieval": {"source": "train"}})


def test_every_form_parses():
    params = parse_space(CFG, {
        "train.lr": {"log_uniform": [1e-5, 1e-2]},
        "model.dropout": {"uniform": [0.0, 0.3], "step": 0.1},
        "model.layers": {"int": [1, 4]},
        "model.ffn_dim": {"log_int": [64, 512]},
        "train.optimizer": {"choice": ["sgd", "adamw"]},
        "retrieval.top_k": {"choice": [0, 3]},
    })
    assert [p.key for p in params] == ["train.lr", "model.dropout", "model.layers", "model.ffn_dim", "train.optimizer",
                                       "retrieval.top_k"]
    assert params[2] == Param("model.layers", "int", low=1, high=4)
    assert params[1].step == 0.1 and params[4].choices == ("sgd", "adamw")


def test_all_errors_reported_at_once():
    space = {
        "train.lrr": {"log_uniform": [1e-5, 1e-2]},           # unknown key
        "model.layers": {"int": [12, 2]},                     # low > high
        "train.optimizer": {"choice": []},                    # empty choice
        "model.heads": {"choice": [2, 0]},                    # 0 is rejected by the config
        "train.momentum": {"uniform": [0.5, 1.5]},            # 1.5 is rejected (momentum < 1)
        "train.weight_decay": {"log_uniform": [0.0, 0.1]},    # log range from 0
        "model.dropout": {"normal": [0, 1]},                  # unknown form
        "tune.trials": {"int": [1, 3]},                       # the study's own settings stay fixed
        "train.epochs": {"int": [1.5, 3]},                    # int bounds not whole
    }
    with pytest.raises(RagtuneError) as err:
        parse_space(CFG, space)
    msg = str(err.value)
    assert "9 errors" in msg
    for expected in ("tune.space.train.lrr: not a config key (did you mean 'train.lr'?)",
                     "tune.space.model.layers: low 12 is above high 2",
                     "tune.space.train.optimizer: choice needs a non-empty list",
                     "tune.space.model.heads: the value 0 is rejected by the config",
                     "tune.space.train.momentum: the value 1.5 is rejected by the config",
                     "a log range needs low > 0",
                     "give exactly one of ['log_uniform', 'uniform', 'int', 'log_int', 'choice']",
                     "tune.space.tune.trials: cannot be searched",
                     "int bounds must be whole numbers"):
        assert expected in msg, expected


def test_empty_space_and_grid_rules():
    with pytest.raises(RagtuneError, match="tune.space is empty"):
        parse_space(CFG, {})
    with pytest.raises(RagtuneError, match="grid walks only choice and int"):
        parse_space(CFG, {"train.lr": {"uniform": [0.001, 0.01]}}, sampler="grid")
    params = parse_space(CFG, {"model.layers": {"int": [1, 5], "step": 2}, "train.optimizer": {"choice": ["sgd", "adamw"]}},
                         sampler="grid")
    assert params[0].grid_values() == [1, 3, 5]
    assert params[1].grid_values() == ["sgd", "adamw"]


def test_contains_and_trial_tree():
    p = Param("model.layers", "int", low=2, high=8, step=2)
    assert p.contains(4) and not p.contains(5) and not p.contains(10) and not p.contains(True)
    c = Param("train.optimizer", "choice", choices=("sgd", "adamw"))
    assert c.contains("sgd") and not c.contains("adam")
    base = CFG.model_dump(mode="json")
    tree = trial_tree(base, {"train.lr": 0.5, "model.layers": 3})
    assert tree["train"]["lr"] == 0.5 and tree["model"]["layers"] == 3
    assert base["train"]["lr"] != 0.5  # the base tree is not touched


def test_suggest_draws_inside_the_space():
    params = parse_space(CFG, {"train.lr": {"log_uniform": [1e-4, 1e-2]}, "model.layers": {"int": [1, 3]},
                                "train.optimizer": {"choice": ["sgd", "adamw"]}})
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = []
    for _ in range(8):
        trial = study.ask()
        values = suggest(trial, params)
        assert all(p.contains(values[p.key]) for p in params)
        seen.append(values)
        study.tell(trial, 0.0)
    assert len({v["train.optimizer"] for v in seen}) == 2
    assert isinstance(seen[0]["model.layers"], int)


def test_a_value_needing_other_settings_is_rejected_with_the_configs_reason():
    base = config_from_dict({"data": {"demo": True}})  # no index, no source: train
    with pytest.raises(RagtuneError, match=r"tune.space.retrieval.top_k: the value 3 is rejected by the config: "
                                           r"retrieval.top_k: 3 needs an index"):
        parse_space(base, {"retrieval.top_k": {"choice": [0, 3]}})
