"""ragtune board through its HTTP API (FastAPI's TestClient): the list of runs and their states, a run's page and
its live events, compare, launching the demo from pasted YAML, stopping it (resumable) and resuming it to the
end, a config error answered inline with nothing launched, and the safety rules (API key, paths that leave the
folders)."""

from __future__ import annotations

import json
import signal
import time

import pytest
import yaml
from fastapi.testclient import TestClient

from ragtune.board.app import create_board
from ragtune.board import catalog
from ragtune.cli import main
from ragtune.errors import RagtuneError

TINY = {
    "task": "classification", "name": "tiny", "data": {"demo": True},
    "tokenizer": {"vocab_size": 300, "min_frequency": 1},
    "model": {"heads": 2, "head_dim": 16, "layers": 1, "d_model": 32, "ffn_dim": 64, "max_length": 32},
    "train": {"optimizer": "adamw", "lr": 0.003, "epochs": 2, "batch_size": 32, "steps_per_epoch": 4, "seed": 0,
              "log_every_steps": 1, "threads": 1},
}

# a good and a hopeless rate: the hopeless one is pruned after its first epoch
STUDY_TUNE = {"trials": 4, "sampler": "random", "seed": 1, "pruner_startup_trials": 1, "pruner_warmup_epochs": 0,
              "space": {"train.lr": {"choice": [0.003, 1.0e-9]}}}
STUDY = {**TINY, "name": "study", "train": {**TINY["train"], "epochs": 2, "steps_per_epoch": 3}, "tune": STUDY_TUNE}


def make_study(configs, out):
    """A finished four-trial study (one pruned at least) of the tiny demo in ``out``."""
    (configs / "study.yaml").write_text(yaml.safe_dump(STUDY), encoding="utf-8")
    assert main(["tune", str(configs / "study.yaml"), "--out", str(out), "--quiet"]) == 0


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("board")
    runs, configs = root / "runs", root / "configs"
    configs.mkdir()
    (configs / "tiny.yaml").write_text(yaml.safe_dump(TINY), encoding="utf-8")
    for name, seed in (("a", 0), ("b", 1)):
        assert main(["run", str(configs / "tiny.yaml"), f"train.seed={seed}", "--out", str(runs / name), "--quiet"]) == 0
    killed = runs / "killed"  # what a killed run leaves: its config, its step log and a checkpoint
    (killed / "checkpoints" / "last").mkdir(parents=True)
    (killed / "config.yaml").write_text(yaml.safe_dump(TINY), encoding="utf-8")
    (killed / "inputs.json").write_text("{}", encoding="utf-8")
    make_study(configs, runs / "study")
    failed = runs / "nested" / "failed"
    failed.mkdir(parents=True)
    (failed / "config.yaml").write_text(yaml.safe_dump(TINY), encoding="utf-8")
    (failed / "run.log").write_text("error: something\n", encoding="utf-8")
    return runs, configs


@pytest.fixture()
def client(folders):
    runs, configs = folders
    with TestClient(create_board(runs, configs)) as c:
        yield c


def test_the_list_shows_every_run_with_its_status_and_main_metric(client, folders):
    listed = {r["id"]: r for r in client.get("/api/runs").json()["runs"]}
    assert {"a", "b", "killed", "nested/failed", "study"} <= set(listed)
    assert listed["study"]["kind"] == "study" and listed["study"]["status"] == "finished"
    best = json.loads((folders[0] / "study" / "summary.json").read_text())["best"]["validation"]
    assert listed["study"]["task"] == "classification" and listed["study"]["metric"] == "accuracy"
    assert listed["study"]["value"] == best and listed["study"]["split"] == "validation"
    assert not any(i.startswith("study/") for i in listed)  # a study's trials are on its own page
    assert listed["a"]["status"] == "finished" and listed["a"]["task"] == "classification"
    metrics = json.loads((folders[0] / "a" / "metrics.json").read_text())
    assert listed["a"]["metric"] == "accuracy" and listed["a"]["value"] == metrics["test"]["accuracy"]
    assert listed["killed"]["status"] == "killed" and listed["nested/failed"]["status"] == "failed"
    assert listed["a"]["device"] == "cpu"
    saved = folders[0] / "a" / "config.yaml"
    original = saved.read_text(encoding="utf-8")
    saved.write_text(yaml.safe_dump({**TINY, "eval": {"metric": "macro_f1"}}), encoding="utf-8")
    try:  # the list shows the metric the run selects by
        line = next(r for r in client.get("/api/runs").json()["runs"] if r["id"] == "a")
        assert line["metric"] == "macro_f1" and line["value"] == metrics["test"]["macro_f1"]
    finally:
        saved.write_text(original, encoding="utf-8")


def test_a_run_page_holds_its_curves_report_pictures_and_config(client):
    d = client.get("/api/runs/a").json()
    assert len(d["steps"]) == 8 and [h["epoch"] for h in d["history"]] == [1, 2]
    assert "## " in d["report"] and "curves.png" in d["pictures"] and "task: classification" in d["config"]
    picture = client.get("/api/runs/a/files/curves.png")
    assert picture.status_code == 200 and picture.content[:4] == b"\x89PNG"
    with client.stream("GET", "/api/runs/a/events") as events:  # a finished run: one update, then the end
        text = "".join(events.iter_text())
    first = json.loads(text.split("data: ", 1)[1].split("\n", 1)[0])
    assert len(first["steps"]) == 8 and first["status"] == "finished" and "event: end" in text


def test_compare_highlights_the_config_differences(client):
    d = client.get("/api/compare", params=[("ids", "a"), ("ids", "b")]).json()
    assert d["differences"]["train.seed"] == [0, 1] and "model.d_model" not in d["differences"]
    assert len(d["history"]) == 2 and all("test" in m for m in d["metrics"])
    assert client.get("/api/compare", params=[("ids", "a")]).status_code == 422  # two or more


def test_paths_that_leave_the_folders_are_404(client):
    for path in ("/api/runs/..%2F..%2Fetc", "/api/runs/%2Fetc", "/api/runs/a/files/..%2Fconfig.yaml",
                 "/api/runs/a/files/config.yaml", "/api/configs/..%2F..%2Fetc%2Fpasswd", "/api/runs/nowhere"):
        assert client.get(path).status_code == 404, path
    assert catalog.inside(catalog.Path("/tmp"), "x") == catalog.Path("/tmp/x").resolve()
    for bad in ("../x", "/etc", "a/../../x", ""):
        with pytest.raises(catalog.OutsideError):
            catalog.inside(catalog.Path("/tmp/board-root"), bad)


def test_a_config_error_is_answered_inline_and_nothing_launches(client, folders):
    bad = yaml.safe_dump({**TINY, "train": {**TINY["train"], "lr": -1, "optimizr": "sgd"}})
    checked = client.post("/api/validate", json={"yaml": bad}).json()
    assert not checked["ok"] and any("train.lr" in e for e in checked["errors"])
    assert any("optimizr" in e for e in checked["errors"])  # every error at once
    launched = client.post("/api/jobs", json={"yaml": bad, "out": "never"})
    assert launched.status_code == 422 and launched.json()["detail"]["errors"]
    assert not (folders[0] / "never").exists() and client.get("/api/jobs").json()["jobs"] == []
    assert client.post("/api/validate", json={"yaml": "a: [unclosed"}).json()["errors"][0].startswith("YAML:")
    assert client.post("/api/jobs", json={"config": "tiny.yaml", "out": "../escape"}).status_code == 422
    assert client.post("/api/jobs", json={"config": "tiny.yaml", "out": "a"}).status_code == 409  # exists
    (folders[1] / "board-again.yaml").write_text("# an earlier launch's config\n", encoding="utf-8")
    bad_again = client.post("/api/jobs", json={"yaml": bad, "out": "again", "save_as": "board-again.yaml"})
    assert bad_again.status_code == 422  # errors first: nothing saved
    assert (folders[1] / "board-again.yaml").read_text(encoding="utf-8") == "# an earlier launch's config\n"


def _wait(client, job_id, states, timeout=300):
    deadline = time.time() + timeout
    while time.time() < deadline:
        job = next(j for j in client.get("/api/jobs").json()["jobs"] if j["id"] == job_id)
        if job["state"] in states:
            return job
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} still {job['state']}")


def test_launch_stop_resume_and_finish(folders):
    """Also with SIGINT ignored in the board's process (a board started in the background): Stop still stops."""
    runs, configs = folders
    slow = {**TINY, "name": "slow", "train": {**TINY["train"], "epochs": 40, "steps_per_epoch": 20}}
    ignored = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        _launch_stop_resume(runs, configs, slow)
    finally:
        signal.signal(signal.SIGINT, ignored)


def _launch_stop_resume(runs, configs, slow):
    with TestClient(create_board(runs, configs)) as client:
        job = client.post("/api/jobs", json={"yaml": yaml.safe_dump(slow), "out": "launched", "save_as": "slow.yaml"}).json()
        assert job["state"] == "running" and (configs / "slow.yaml").is_file()
        deadline = time.time() + 300
        while not (runs / "launched" / "history.json").exists() and time.time() < deadline:
            time.sleep(0.5)  # the first epoch's checkpoint is written
        assert client.get("/api/runs/launched").json()["status"] == "running"
        stopped = client.post(f"/api/jobs/{job['id']}/stop").json()
        assert stopped["id"] == job["id"]
        assert _wait(client, job["id"], ("stopped", "failed", "finished"))["state"] == "stopped"
        assert client.get("/api/runs/launched").json()["status"] == "killed"
        resumed = client.post("/api/runs/launched/resume")
        assert resumed.status_code == 200, resumed.text
        assert _wait(client, resumed.json()["id"], ("finished", "failed"), timeout=600)["state"] == "finished"
        d = client.get("/api/runs/launched").json()
        assert d["status"] == "finished" and len(d["history"]) == 40
        assert client.post("/api/runs/launched/resume").status_code == 409  # finished: nothing to resume
        log = client.get(f"/api/jobs/{resumed.json()['id']}/log").text
        assert "resum" in log.lower()


def test_keys_and_addresses(folders):
    runs, configs = folders
    with pytest.raises(RagtuneError, match="--api-key"):
        create_board(runs, configs, host="0.0.0.0")
    with TestClient(create_board(runs, configs, api_key="s3cret", host="0.0.0.0")) as client:
        assert client.get("/api/runs").status_code == 200  # reading needs no key
        assert client.post("/api/jobs", json={"config": "tiny.yaml", "out": "k"}).status_code == 401
        assert client.post("/api/runs/killed/resume", headers={"X-API-Key": "wrong"}).status_code == 401
        assert client.post("/api/jobs/nope/stop", headers={"Authorization": "Bearer s3cret"}).status_code == 404
        for tool in ("serve", "export", "explain"):  # each starts a process: the key too
            assert client.post(f"/api/runs/a/{tool}", json={"text": "x"}).status_code == 401, tool


def test_a_crashed_child_is_reported_and_the_board_goes_on(folders):
    runs, configs = folders
    slow = {**TINY, "name": "crash", "train": {**TINY["train"], "epochs": 40, "steps_per_epoch": 20}}
    with TestClient(create_board(runs, configs)) as client:
        job = client.post("/api/jobs", json={"yaml": yaml.safe_dump(slow), "out": "crashed", "save_as": "crash.yaml"}).json()
        process = client.app.state.jobs.get(job["id"]).process
        deadline = time.time() + 300
        while not (runs / "crashed" / "train_log.jsonl").exists() and time.time() < deadline:
            time.sleep(0.2)
        process.kill()  # what the out-of-memory killer does: no Ctrl-C, no clean exit
        ended = _job(client, job["id"])
        assert ended["state"] == "failed" and ended["returncode"] == -signal.SIGKILL
        listed = {r["id"]: r for r in client.get("/api/runs").json()["runs"]}
        assert listed["crashed"]["status"] in ("killed", "failed")  # its lock's process is gone
        again = client.post("/api/jobs", json={"config": "tiny.yaml", "out": "after-crash"}).json()
        assert _job(client, again["id"])["state"] == "finished"  # the board still launches


def test_folders_that_cannot_be_used_are_one_error(tmp_path):
    (tmp_path / "a_file").write_text("x", encoding="utf-8")
    with pytest.raises(RagtuneError, match="--runs .*a_file is a file, not a folder"):
        create_board(tmp_path / "a_file")
    with pytest.raises(RagtuneError, match="--configs .*a_file is a file, not a folder"):
        create_board(tmp_path / "runs", tmp_path / "a_file")


def test_the_page_has_english_and_chinese_labels(client):
    page = client.get("/").text
    assert "ragtune board" in page and "运行" in page and "继续训练" in page and 'data-i18n="runs"' in page


def test_a_study_page_lists_every_trial_with_the_best_and_the_pictures(client, folders):
    d = client.get("/api/runs/study").json()
    states = [t["state"] for t in d["trials"]]
    assert len(states) == 4 and "PRUNED" in states and "COMPLETE" in states  # pruned trials are listed too
    summary = json.loads((folders[0] / "study" / "summary.json").read_text())
    assert d["best_trial"] == summary["best"]["trial"] and d["direction"] == "maximize"
    best = next(t for t in d["trials"] if t["number"] == d["best_trial"])
    assert best["state"] == "COMPLETE" and "params_train.lr" in best
    assert client.get(f"/api/runs/{best['run_id']}").json()["kind"] == "run"  # a trial opens as a run
    assert "history.png" in d["pictures"] and "lr: 0.003" in d["best"]
    live, direction = catalog.trials(folders[0] / "study", "running")  # while it runs: read from study.db
    assert [t["number"] for t in live] == [t["number"] for t in d["trials"]] and direction == "maximize"
    assert [t["state"] for t in live] == states


def test_the_form_edits_a_mapping_that_validates_and_launches(client, folders):
    schema = client.get("/api/schema").json()
    assert {"ClassificationConfig", "TrainConfig"} <= set(schema["$defs"])  # what the page builds the form from
    tree = {**TINY, "train": {**TINY["train"], "lr": -1}}
    checked = client.post("/api/validate", json={"tree": tree}).json()
    assert checked["tree"] == tree and "lr: -1" in checked["yaml"]
    assert [e for e in checked["errors"] if e.startswith("train.lr:")]  # the form puts it under the field
    assert client.post("/api/validate", json={}).status_code == 422
    assert client.post("/api/jobs", json={"tree": tree, "out": "from-form"}).status_code == 422
    assert not (folders[0] / "from-form").exists()


def _job(client, job_id, done=lambda j: j["state"] not in ("queued", "running"), timeout=300):
    deadline = time.time() + timeout
    while time.time() < deadline:
        job = client.get(f"/api/jobs/{job_id}").json()
        if done(job) or job["state"] not in ("queued", "running"):
            return job
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} still {job['state']}")


def test_serve_a_finished_run_and_open_its_page(client):
    import urllib.request

    job = client.post("/api/runs/a/serve").json()
    assert client.post("/api/runs/a/serve").json()["id"] == job["id"]  # one server a run
    ready = _job(client, job["id"], lambda j: j["ready"], timeout=180)
    assert ready["ready"], client.get(f"/api/jobs/{job['id']}/log").text
    with urllib.request.urlopen(f"http://127.0.0.1:{job['port']}/healthz", timeout=10) as r:
        assert json.loads(r.read())["status"] == "ok"
    client.post(f"/api/jobs/{job['id']}/stop")
    assert _job(client, job["id"])["state"] in ("finished", "stopped")
    assert client.post("/api/runs/killed/serve").status_code == 409  # only a finished run
    assert "open a trial" in client.post("/api/runs/study/serve").json()["detail"]  # a study is not a run


def test_export_and_explain_a_finished_run(client, folders):
    job = client.post("/api/runs/a/export").json()  # no body: fp32
    assert _job(client, job["id"])["state"] == "finished", client.get(f"/api/jobs/{job['id']}/log").text
    assert (folders[0] / "exports" / "a" / "model.onnx").is_file()
    again = client.post("/api/runs/a/export", json={"quantize": None})
    assert again.status_code == 409 and "exported there already" in again.json()["detail"]
    assert client.post("/api/runs/a/export", json={"quantize": "int4"}).status_code == 422
    assert not [r for r in client.get("/api/runs").json()["runs"] if r["id"].startswith("exports")]  # not a run

    text = "-the minister <b>raised</b> taxes"  # a leading dash is the text, not an option; markup stays text
    job = client.post("/api/runs/a/explain", json={"text": text}).json()
    assert _job(client, job["id"])["state"] == "finished", client.get(f"/api/jobs/{job['id']}/log").text
    page = client.get(f"/api/jobs/{job['id']}/result")
    assert page.status_code == 200 and "sandbox" in page.headers["content-security-policy"]
    assert "Prediction:" in page.text and "&lt;" in page.text and "<b>" not in page.text  # tokens, escaped
    assert json.dumps(text) in client.get(f"/api/jobs/{job['id']}/log").text  # the whole text was explained
    assert client.get(f"/api/jobs/{job['id']}/result", params={"picture": True}).content[:4] == b"\x89PNG"
    assert client.post("/api/runs/a/explain", json={"text": "  "}).status_code == 422
    assert client.post("/api/runs/a/explain", json={"text": "a\x00b"}).status_code == 422
    wrong = client.post("/api/runs/a/explain", json={"text": "taxes", "target": "-weather"}).json()
    assert _job(client, wrong["id"])["state"] == "failed"  # a label that is no class: the job says which are
    assert "politics" in client.get(f"/api/jobs/{wrong['id']}/log").text
    assert client.get("/api/jobs/nope/result").status_code == 404


def test_tools_start_at_once_beside_the_queue_up_to_a_cap(tmp_path):
    from ragtune.board.jobs import MAX_TOOLS, Jobs

    sleeper = tmp_path / "sleeper"  # stands in for python: a process that runs until stopped
    sleeper.write_text("#!/bin/sh\nexec sleep 60\n", encoding="utf-8")
    sleeper.chmod(0o755)
    jobs = Jobs(tmp_path / "runs", max_parallel=1, python=str(sleeper))
    try:
        tools = [jobs.start_tool("serve", ["x"], tmp_path / f"r{i}") for i in range(MAX_TOOLS)]
        assert all(j.state == "running" for j in tools)
        with pytest.raises(RagtuneError, match="stop one"):
            jobs.start_tool("explain", ["x"], tmp_path / "r")
        run = jobs.submit("run", tmp_path / "c.yaml", tmp_path / "runs" / "r")
        assert run.state == "running"  # servers do not hold the one training slot
        assert jobs.submit("run", tmp_path / "c.yaml", tmp_path / "runs" / "s").state == "queued"
        jobs.stop(tools[0].id)
        deadline = time.time() + 10
        while jobs.get(tools[0].id).state == "running" and time.time() < deadline:
            time.sleep(0.1)
            jobs._reap()
        assert jobs.start_tool("explain", ["x"], tmp_path / "r").state == "running"
    finally:
        jobs.close(timeout=5)


def test_stop_and_resume_a_study(folders):
    runs, configs = folders
    study = {**TINY, "name": "long-study", "train": {**TINY["train"], "epochs": 2, "steps_per_epoch": 10},
             "tune": {**STUDY_TUNE, "trials": 6, "pruner_startup_trials": 6}}  # nothing pruned: six whole trials
    with TestClient(create_board(runs, configs)) as client:
        job = client.post("/api/jobs", json={"command": "tune", "yaml": yaml.safe_dump(study), "out": "long-study",
                                             "save_as": "long-study.yaml"}).json()
        folder, deadline = runs / "long-study", time.time() + 300
        while time.time() < deadline and not [t for t in catalog.trials(folder, "running")[0] if t["state"] == "COMPLETE"]:
            time.sleep(0.5)
        assert client.get("/api/runs/long-study").json()["status"] == "running"
        client.post(f"/api/jobs/{job['id']}/stop")
        assert _wait(client, job["id"], ("stopped", "failed", "finished"))["state"] == "stopped"
        d = client.get("/api/runs/long-study").json()
        assert d["kind"] == "study" and d["status"] == "killed"
        done = [t for t in d["trials"] if t["state"] == "COMPLETE"]
        assert 1 <= len(done) < 6
        resumed = client.post("/api/runs/long-study/resume")
        assert resumed.status_code == 200, resumed.text
        assert _wait(client, resumed.json()["id"], ("finished", "failed"), timeout=600)["state"] == "finished"
        d = client.get("/api/runs/long-study").json()
        assert d["status"] == "finished" and sum(t["state"] == "COMPLETE" for t in d["trials"]) == 6
        assert {t["number"] for t in done} <= {t["number"] for t in d["trials"] if t["state"] == "COMPLETE"}  # kept


def test_a_launch_never_overwrites_a_saved_config(client, folders):
    runs, configs = folders
    (configs / "board-again.yaml").write_text("# an earlier launch's config\n", encoding="utf-8")
    job = client.post("/api/jobs", json={"tree": TINY, "out": "again"}).json()
    assert _job(client, job["id"])["state"] == "finished"
    assert (configs / "board-again.yaml").read_text(encoding="utf-8") == "# an earlier launch's config\n"
    assert yaml.safe_load((configs / "board-again-2.yaml").read_text(encoding="utf-8")) == TINY
    taken = client.post("/api/jobs", json={"tree": TINY, "out": "again2", "save_as": "board-again.yaml"})
    assert taken.status_code == 409 and "choose another name" in taken.json()["detail"]


def test_a_checkouts_configs_folder_lists_each_packaged_config_once(tmp_path):
    from ragtune.api import packaged_configs

    shipped = next(iter(packaged_configs().values())).parent  # in a checkout, configs/ itself
    with TestClient(create_board(tmp_path / "runs", shipped)) as client:
        listed = client.get("/api/configs").json()
    assert listed["local"] == [] and len(listed["packaged"]) == len(packaged_configs())
