"""A tiny real Optuna study on the demo data: pruning, results, best.yaml reproduction, resume, workers."""

import csv
import json

import pytest
import yaml

import ragtune.tasks
from ragtune.cli import main
from ragtune.tasks import load_config
from ragtune.errors import RagtuneError
from ragtune.tuning import tune

TINY = {
    "task": "classification",
    "name": "tiny",
    "data": {"demo": True},
    "tokenizer": {"vocab_size": 300, "min_frequency": 1},
    "model": {"heads": 2, "head_dim": 16, "layers": 1, "d_model": 32, "ffn_dim": 64, "max_length": 32},
    "train": {"optimizer": "adamw", "lr": 0.003, "epochs": 3, "batch_size": 32, "steps_per_epoch": 5, "seed": 0},
    # a good and a hopeless learning rate: the hopeless one is pruned after its first epoch
    "tune": {"trials": 4, "sampler": "random", "seed": 1, "pruner_startup_trials": 1, "pruner_warmup_epochs": 0,
             "space": {"train.lr": {"choice": [0.003, 1.0e-9]}}},
}


@pytest.fixture
def tiny_tune(tmp_path):
    path = tmp_path / "tiny_tune.yaml"
    path.write_text(yaml.safe_dump(TINY), encoding="utf-8")
    return path


def _rows(out):
    with open(out / "trials.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_tiny_study_prunes_writes_results_and_best_yaml_reproduces(tiny_tune, tmp_path):
    out = tmp_path / "study"
    result = tune(load_config(tiny_tune), out, config_path=tiny_tune, progress=False)
    assert result.counts["complete"] + result.counts["pruned"] == 4
    assert result.counts["pruned"] >= 1 and result.counts["complete"] >= 1
    rows = _rows(out)
    assert len(rows) == 4
    assert rows[0]["user_attrs_start"]  # trial 0 ran the config's own values
    assert float(rows[0]["params_train.lr"]) == 0.003
    for row in rows:  # every hopeless trial was pruned, every good one completed
        assert row["state"] == ("COMPLETE" if float(row["params_train.lr"]) == 0.003 else "PRUNED")
    # the same values and seed give the same validation result, in the study and retrained from best.yaml
    completed = {float(r["value"]) for r in rows if r["state"] == "COMPLETE"}
    assert completed == {result.best_value}
    assert result.best_params == {"train.lr": 0.003}
    for name in ("best.yaml", "trials.csv", "history.png", "importance.png", "intermediate.png", "report.md",
                 "summary.json", "best_test.json", "study.db"):
        assert (out / name).exists(), name
    summary = json.loads((out / "summary.json").read_text())
    assert summary["best"]["test"]["accuracy"] == result.test_metrics["accuracy"]
    assert 0 <= result.test_metrics["accuracy"] <= 1 and result.test_metrics["n"] > 0
    report = (out / "report.md").read_text()
    assert "test (evaluated once, after selection)" in report and "pruned" in report
    # trials never looked at the test split
    for row in rows:
        metrics_file = tmp_path / "study" / "trials" / f"trial_{int(row['number']):04d}" / "metrics.json"
        assert "test" not in json.loads(metrics_file.read_text())
    best_cfg = load_config(out / "best.yaml")
    assert best_cfg.tokenizer.path == str((out / "tokenizer.json").resolve())  # one vocabulary for the whole study
    rerun = ragtune.tasks.run(best_cfg, tmp_path / "rerun", progress=False)
    assert rerun.metrics["validation"]["accuracy"] == pytest.approx(result.best_value, abs=1e-12)


def test_resume_after_interruption_keeps_finished_trials(tiny_tune, tmp_path, monkeypatch):
    out = tmp_path / "study"
    real_run = ragtune.tasks.run
    calls = []

    def interrupted(*args, **kwargs):
        calls.append(args[1])
        if len(calls) == 2:
            raise KeyboardInterrupt  # Ctrl-C in the middle of the second trial
        return real_run(*args, **kwargs)

    monkeypatch.setattr(ragtune.tasks, "run", interrupted)
    with pytest.raises(KeyboardInterrupt):
        tune(load_config(tiny_tune, ["tune.trials=3"]), out, config_path=tiny_tune, progress=False)
    first = out / "trials" / "trial_0000" / "metrics.json"
    stamp = first.stat().st_mtime_ns
    monkeypatch.setattr(ragtune.tasks, "run", real_run)
    result = tune(load_config(tiny_tune, ["tune.trials=3"]), out, config_path=tiny_tune, progress=False)
    assert result.counts["complete"] + result.counts["pruned"] == 3
    assert result.counts["failed"] == 1  # the interrupted trial
    assert first.stat().st_mtime_ns == stamp  # trial 0 was not run again
    assert [r["state"] for r in _rows(out)][:2] == ["COMPLETE", "FAIL"]
    # a finished study run again only rewrites its results (no new trial)
    again = tune(load_config(tiny_tune, ["tune.trials=3"]), out, config_path=tiny_tune, progress=False)
    assert again.counts == result.counts


def test_resume_with_another_config_is_refused(tiny_tune, tmp_path):
    out = tmp_path / "study"
    tune(load_config(tiny_tune, ["tune.trials=1"]), out, config_path=tiny_tune, progress=False)
    with pytest.raises(RagtuneError, match=r"(?s)started from another config.*model.layers: 1 in the study, 2 now"):
        tune(load_config(tiny_tune, ["tune.trials=2", "model.layers=2"]), out, config_path=tiny_tune, progress=False)


def test_cli_reports_space_errors_before_any_trial(tiny_tune, tmp_path, capsys):
    out = tmp_path / "study"
    code = main(["tune", str(tiny_tune), "--out", str(out), "tune.space={train.lr: {uniform: [1, 0]}, model.layerz: {int: [1, 2]}}"])
    assert code == 2
    err = capsys.readouterr().err
    assert "tune.space: 2 errors" in err and "low 1 is above high 0" in err and "did you mean 'model.layers'" in err
    assert not (out / "trials").exists()


def test_cli_two_workers_share_one_study(tiny_tune, tmp_path, capsys):
    out = tmp_path / "study"
    code = main(["tune", str(tiny_tune), "--out", str(out), "--workers", "2", "--trials", "3", "--quiet",
                 "tune.pruner=none", "train.epochs=1"])
    assert code == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    summary = json.loads(printed[: printed.index("best config:")])
    assert summary["trials"]["complete"] >= 3  # two workers may both start the last trial
    assert len(_rows(out)) == summary["trials"]["complete"] + summary["trials"]["failed"]
    assert (out / "best.yaml").exists()


def _start_postgres(folder):
    """A throwaway PostgreSQL server (Debian's binaries) listening on a Unix socket in ``folder``;
    returns ``(url, stop)``. Skips where PostgreSQL or its Python driver is missing, unless
    RAGTUNE_REQUIRE_POSTGRES=1 (then it fails)."""
    import glob
    import os
    import shutil
    import subprocess

    def unavailable(why):
        if os.environ.get("RAGTUNE_REQUIRE_POSTGRES") == "1":
            pytest.fail(why)
        pytest.skip(why)

    try:
        import psycopg  # noqa: F401  (SQLAlchemy 2.1 reads postgresql:// with psycopg 3)
    except ImportError:
        unavailable("psycopg is not installed (pip install 'psycopg[binary]')")
    bins = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
    if not bins:
        unavailable("PostgreSQL is not installed (apt-get install postgresql)")
    initdb, pg_ctl = f"{bins[-1]}/initdb", f"{bins[-1]}/pg_ctl"
    data = folder / "pgdata"
    as_user = []
    if os.geteuid() == 0:  # the server refuses to run as root: run it as the postgres user
        if shutil.which("runuser") is None:
            unavailable("running as root without runuser to start PostgreSQL as another user")
        as_user = ["runuser", "-u", "postgres", "--"]
        shutil.chown(folder, "postgres")
    subprocess.run([*as_user, initdb, "-D", str(data), "-U", "postgres", "--auth=trust"], check=True, capture_output=True)
    port = "54329"
    subprocess.run([*as_user, pg_ctl, "-D", str(data), "-w", "-l", str(folder / "pg.log"), "-o",
                    f"-k {folder} -p {port} -c listen_addresses=''", "start"], check=True, capture_output=True)
    subprocess.run([*as_user, f"{bins[-1]}/createdb", "-h", str(folder), "-p", port, "-U", "postgres", "ragtune"],
                   check=True, capture_output=True)

    def stop():
        subprocess.run([*as_user, pg_ctl, "-D", str(data), "-m", "immediate", "stop"], capture_output=True)

    return f"postgresql://postgres@/ragtune?host={folder}&port={port}", stop


def test_two_machines_share_one_postgresql_study(tiny_tune, tmp_path):
    """Two `ragtune tune` processes with their own --out folders (as on two machines) and one PostgreSQL
    study: every trial number runs exactly once, in one of them, and none is lost (left running or failed)."""
    import os
    import subprocess
    import sys
    import tempfile

    import optuna

    folder = tempfile.mkdtemp(prefix="ragtune-pg-")  # under /tmp: pytest's own folders are closed to other users
    os.chmod(folder, 0o755)
    from pathlib import Path

    url, stop = _start_postgres(Path(folder))
    try:
        cmd = [sys.executable, "-m", "ragtune", "tune", str(tiny_tune), "--storage", url, "--study-name", "shared",
               "--trials", "4", "--quiet", "tune.pruner=none", "train.epochs=1"]
        procs = [subprocess.Popen([*cmd, "--out", str(tmp_path / name)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True) for name in ("machine_a", "machine_b")]
        outs = [p.communicate(timeout=600) for p in procs]
        for p, (_, err) in zip(procs, outs):
            assert p.returncode == 0, err[-2000:]
        trials = optuna.load_study(study_name="shared", storage=url).get_trials(deepcopy=False)
        numbers = sorted(t.number for t in trials)
        assert numbers == list(range(len(trials))) and 4 <= len(trials) <= 5  # both may start the last one
        assert {t.state for t in trials} == {optuna.trial.TrialState.COMPLETE}  # none lost, running or failed
        ran = sorted(p.name for name in ("machine_a", "machine_b") for p in (tmp_path / name / "trials").glob("trial_*"))
        assert ran == [f"trial_{n:04d}" for n in numbers]  # each trial ran in exactly one process
        assert all(list((tmp_path / name / "trials").glob("trial_*")) for name in ("machine_a", "machine_b"))
    finally:
        stop()
        import shutil

        shutil.rmtree(folder, ignore_errors=True)


def test_workers_started_together_on_an_empty_database_all_open_it():
    """Four processes open one fresh PostgreSQL storage at once: Optuna's table creation races, and each
    loser retries instead of failing (without the retry, some of them fail with a duplicate-key error)."""
    import os
    import shutil
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    folder = tempfile.mkdtemp(prefix="ragtune-pg-")
    os.chmod(folder, 0o755)
    url, stop = _start_postgres(Path(folder))
    try:
        code = f"from ragtune.tuning.study import _storage; _storage({url!r})"
        procs = [subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True) for _ in range(4)]
        errors = [p.communicate(timeout=120)[1] for p in procs]
        assert [p.returncode for p in procs] == [0, 0, 0, 0], errors
    finally:
        stop()
        shutil.rmtree(folder, ignore_errors=True)


def test_best_yaml_reproduces_its_trial_when_the_space_changes_the_tokenizer(tmp_path):
    """Such a study shares no tokenizer; best.yaml names the best trial's own, so its re-run is exact."""
    cfg = {**TINY, "train": {**TINY["train"], "epochs": 1},
           "tune": {"trials": 2, "sampler": "random", "seed": 1, "space": {"tokenizer.vocab_size": {"choice": [200, 300]}}}}
    path = tmp_path / "tok_tune.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    out = tmp_path / "study"
    result = tune(load_config(path), out, config_path=path, progress=False)
    assert not (out / "tokenizer.json").exists()  # no shared tokenizer for this space
    best = yaml.safe_load((out / "best.yaml").read_text(encoding="utf-8"))
    trial_dir = json.loads((out / "summary.json").read_text())["best"]["run_dir"]
    assert best["tokenizer"]["path"] == str((tmp_path / "study" / "trials" / trial_dir.split("/")[-1] / "tokenizer.json").resolve())
    assert main(["run", str(out / "best.yaml"), "--out", str(tmp_path / "again"), "--quiet"]) == 0
    again = json.loads((tmp_path / "again" / "metrics.json").read_text())
    assert again["validation"]["accuracy"] == pytest.approx(result.best_value)
