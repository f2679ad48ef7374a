"""Take the board's screenshots for the docs (``docs/images/board-*.png``)::

    python docs/screenshots.py            # needs the test extra (playwright) and Chromium (/usr/bin/chromium)

It trains two tiny demo runs and a four-trial study in a temporary folder, starts ``ragtune board`` on it, and
photographs the list, a run's page, the launch form (with an error at its field), compare and the study page
with Debian's Chromium driven by Playwright. The pictures are committed; run this again when the page changes.
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
OUT = HERE / "images"
TINY = {
    "task": "classification", "name": "demo-small", "data": {"demo": True},
    "tokenizer": {"vocab_size": 300, "min_frequency": 1},
    "model": {"heads": 2, "head_dim": 16, "layers": 1, "d_model": 32, "ffn_dim": 64, "max_length": 32},
    "train": {"optimizer": "adamw", "lr": 0.003, "epochs": 4, "batch_size": 32, "steps_per_epoch": 8, "seed": 0,
              "log_every_steps": 1, "threads": 1},
}
STUDY = {**TINY, "name": "lr-study", "train": {**TINY["train"], "epochs": 2, "steps_per_epoch": 4},
         "tune": {"trials": 8, "sampler": "random", "seed": 1, "pruner_startup_trials": 3, "pruner_warmup_epochs": 0,
                  "space": {"train.lr": {"log_uniform": [1.0e-5, 0.03]}, "model.layers": {"int": [1, 2]}}}}


def _chromium() -> str:
    for candidate in (os.environ.get("RAGTUNE_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium")):
        if candidate and Path(candidate).is_file():
            return candidate
    sys.exit("no Chromium: apt-get install chromium, or set RAGTUNE_CHROMIUM")


def _serve(app) -> tuple[str, object]:
    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    return f"http://127.0.0.1:{port}", server


def main() -> None:
    from playwright.sync_api import sync_playwright

    from ragtune.board.app import create_board
    from ragtune.cli import main as ragtune

    OUT.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        runs, configs = Path(tmp) / "runs", Path(tmp) / "configs"
        configs.mkdir()
        (configs / "demo-small.yaml").write_text(yaml.safe_dump(TINY, sort_keys=False), encoding="utf-8")
        (configs / "lr-study.yaml").write_text(yaml.safe_dump(STUDY, sort_keys=False), encoding="utf-8")
        for name, extra in (("demo-adamw", []), ("demo-sgd", ["train.optimizer=sgd", "train.lr=0.05"])):
            assert ragtune(["run", str(configs / "demo-small.yaml"), *extra, "--out", str(runs / name), "--quiet"]) == 0
        assert ragtune(["tune", str(configs / "lr-study.yaml"), "--out", str(runs / "lr-study"), "--quiet"]) == 0
        base, server = _serve(create_board(runs, configs))
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=_chromium(), args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1180, "height": 820}, locale="en-US")

            def shot(name: str) -> None:
                page.wait_for_timeout(600)
                page.screenshot(path=str(OUT / f"board-{name}.png"), full_page=False)
                print("wrote", OUT / f"board-{name}.png")

            page.goto(base + "/#runs")
            page.wait_for_selector("#runs tbody tr")
            shot("runs")
            page.goto(base + "/#run/demo-adamw")
            page.wait_for_selector("#charts canvas")
            shot("run")
            page.goto(base + "/#launch")
            page.select_option("#config-pick", "demo-small.yaml")
            page.click("#load")
            page.wait_for_selector('#form [data-path="train.lr"] input')
            page.fill('#form [data-path="train.lr"] input', "-0.1")
            page.wait_for_selector('#form [data-path="train.lr"].bad')
            page.evaluate("document.querySelectorAll('#form details').forEach(d => d.open = d.dataset.section === 'train')")
            page.evaluate("window.scrollTo(0, 0)")
            shot("launch")
            page.goto(base + "/#runs")
            page.wait_for_selector("#runs tbody tr")
            for run_id in ("demo-adamw", "demo-sgd"):
                page.locator(f'#runs input[data-id="{run_id}"]').check()
            page.click('nav button[data-view="compare"]')
            page.wait_for_selector("#differences tr.diff")
            shot("compare")
            page.goto(base + "/#run/lr-study")
            page.wait_for_selector("#trials tr.best")
            page.set_viewport_size({"width": 1180, "height": 1500})
            page.evaluate("document.getElementById('pictures').scrollIntoView()")
            page.evaluate("window.scrollTo(0, 0)")
            shot("study")
            browser.close()
        server.should_exit = True


if __name__ == "__main__":
    main()
