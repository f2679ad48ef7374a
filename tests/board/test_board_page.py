"""ragtune board's page in a real browser (Debian's Chromium driven by Playwright, the helpers of
tests/serve/test_page.py): launch a run from the form, watch its progress grow while it trains, stop it, resume
it, see it finish, open its report, compare it with another run; a config error shows at its field and launches
nothing; a study's trials; serve and explain a finished run; the Chinese labels; a 360 px screen."""

from __future__ import annotations

import re

import pytest
import yaml
from board.test_board import TINY
from board import test_board
from serve import test_page as page_tests  # skips this module where the browser is missing
from serve.live import live_server
from serve.test_page import _open

from ragtune.board.app import create_board
from ragtune.cli import main

from playwright.sync_api import expect

browser = page_tests.browser  # one headless Chromium for the module

SLOW = {**TINY, "name": "slow", "train": {**TINY["train"], "epochs": 150, "steps_per_epoch": 20}}


@pytest.fixture(scope="module")
def board(tmp_path_factory):
    root = tmp_path_factory.mktemp("board_page")
    runs, configs = root / "runs", root / "configs"
    configs.mkdir()
    (configs / "slow.yaml").write_text(yaml.safe_dump(SLOW), encoding="utf-8")
    (configs / "tiny.yaml").write_text(yaml.safe_dump(TINY), encoding="utf-8")
    assert main(["run", str(configs / "tiny.yaml"), "--out", str(runs / "other"), "--quiet"]) == 0
    test_board.make_study(configs, runs / "study")
    with live_server(create_board(runs, configs)) as base:
        yield base, runs


def test_launch_watch_stop_resume_finish_report_and_compare(browser, board):
    base, runs = board
    context, page, problems = _open(browser, base)
    page.on("dialog", lambda dialog: (problems.append(f"dialog: {dialog.message}"), dialog.dismiss()))
    page.goto(base + "/#launch")
    page.select_option("#config-pick", "slow.yaml")
    page.click("#load")  # the config into the form: each key in its section, with its description and default
    expect(page.locator('#form [data-path="train.epochs"] input')).to_have_value("150")
    expect(page.locator('#form [data-path="train.momentum"] input')).to_have_attribute("placeholder", "0.9")
    expect(page.locator('#form [data-path="train.schedule"]')).to_contain_text("Learning-rate schedule")
    page.fill('#form [data-path="name"] input', "slow-from-form")
    page.fill("#out", "from-page")
    page.click("#go")
    expect(page.locator("#launched")).to_contain_text("from-page")
    assert "name: slow-from-form" in (runs.parent / "configs" / "board-from-page.yaml").read_text(encoding="utf-8")
    page.goto(base + "/#run/from-page")
    expect(page.locator("#run-title")).to_have_text("slow-from-form", timeout=60_000)
    progress = page.locator("#progress")
    expect(progress).to_contain_text("epochs done", timeout=120_000)  # the curve has grown past an epoch
    first = progress.inner_text()
    expect(progress).not_to_have_text(first, timeout=60_000)  # and it keeps growing, pushed by the server
    page.goto(base + "/#runs")
    page.locator("[data-stop]").first.click()
    expect(page.locator("#runs tbody tr", has_text="from-page")).to_contain_text("killed", timeout=120_000)
    page.goto(base + "/#run/from-page")
    page.locator("#resume").click()
    page.wait_for_timeout(3000)
    assert not problems, problems
    expect(page.locator("#run-line")).to_contain_text("finished", timeout=300_000)
    expect(page.locator("#report h3").first).to_be_visible()  # report.md rendered
    expect(page.locator("#pictures img").first).to_be_visible()
    page.locator("#data-box summary").click()  # the data report, folded under the report
    expect(page.locator("#data-report table").first).to_be_visible()
    page.goto(base + "/#runs")
    for run_id in ("from-page", "other"):
        page.locator(f'#runs input[data-id="{run_id}"]').check()
    page.click('nav button[data-view="compare"]')
    expect(page.locator("#differences")).to_contain_text("train.epochs")
    expect(page.locator("#compare-metrics")).to_contain_text("accuracy")
    context.close()
    assert not problems, problems


def test_a_config_error_shows_at_its_field_and_launches_nothing(browser, board):
    base, runs = board
    context, page, problems = _open(browser, base)
    page.goto(base + "/#launch")
    page.select_option("#config-pick", "tiny.yaml")
    page.click("#load")
    page.fill('#form [data-path="train.lr"] input', "-1")  # checked as it is typed
    expect(page.locator('#form [data-path="train.lr"] .ferr')).to_contain_text("greater than 0")
    expect(page.locator('#form details[data-section="train"]')).to_have_attribute("open", "")
    page.fill('#form [data-path="train.report_to"] input', "tensorboard, mlfloww")  # a list, typed with commas
    expect(page.locator('#form [data-path="train.report_to"] .ferr')).to_contain_text("mlfloww")
    page.fill('#form [data-path="train.report_to"] input', "")
    expect(page.locator('#form [data-path="train.report_to"] .ferr')).to_have_text("")
    page.fill("#out", "bad-one")
    page.click("#go")
    expect(page.locator("#errors li").first).to_contain_text("train.lr")
    for task in ("qa", "translation", "generation", "classification"):  # each task's own sections
        page.select_option('#form [data-path="task"] select', task)
        expect(page.locator('#form details[data-section="train"]')).to_have_count(1)
        expect(page.locator('#form details[data-section="qa"]')).to_have_count(1 if task == "qa" else 0)
        expect(page.locator('#form details[data-section="decode"]')).to_have_count(0 if task == "classification" else 1)
    expect(page.locator('#form [data-path="train.lr"] .ferr')).to_contain_text("greater than 0")
    page.fill('#form [data-path="train.clip_grad_norm"] input', "null")  # a nullable key set to null
    page.click("#tab-yaml")  # the same tree as YAML; an error there shows in the list
    expect(page.locator("#yaml")).to_have_value(re.compile("lr: -1"))
    expect(page.locator("#yaml")).to_have_value(re.compile("clip_grad_norm: null"))
    page.fill("#yaml", yaml.safe_dump({**TINY, "train": {**TINY["train"], "optimizr": "sgd"}}))
    page.click("#check")
    expect(page.locator("#errors li").first).to_contain_text("optimizr")
    page.click("#go")
    expect(page.locator("#errors li").first).to_contain_text("optimizr")
    assert not (runs / "bad-one").exists()
    context.close()
    assert not [p for p in problems if "422" not in p], problems


def test_a_study_page_and_using_a_finished_run(browser, board):
    base, runs = board
    context, page, problems = _open(browser, base)
    page.goto(base + "/#run/study")
    expect(page.locator("#trials tr.best")).to_have_count(1)
    expect(page.locator("#trials .state-PRUNED").first).to_be_visible()  # pruned trials are listed
    expect(page.locator("#study-pictures img").first).to_be_visible()  # Optuna's pictures
    page.click("#launch-best")  # best.yaml in the form, ready to retrain
    expect(page.locator('#form [data-path="train.lr"] input')).to_have_value("0.003")
    expect(page.locator("#out")).to_have_value("study-best")
    expect(page.locator("#errors li")).to_have_count(0)  # best.yaml validates as it is
    page.goto(base + "/#run/study")
    page.locator("#trials tr.best a").click()  # the best trial opens as a run
    expect(page.locator("#run-line")).to_contain_text("finished")
    page.goto(base + "/#run/other")
    page.fill("#explain-text", "the minister raised taxes")
    page.click("#explain")
    expect(page.locator("iframe.explained")).to_be_visible(timeout=120_000)
    expect(page.frame_locator("iframe.explained").locator("h1")).to_contain_text("Prediction")
    with context.expect_page(timeout=180_000) as popup:
        page.click("#serve")  # starts `ragtune serve` on a free port and opens its page
    expect(page.locator("#served-link")).to_be_visible()
    served = popup.value
    served.wait_for_load_state()
    assert served.url == page.locator("#served-link").get_attribute("href")
    assert page.request.get(served.url + "healthz").json()["status"] == "ok"
    context.close()
    assert not problems, problems


def test_chinese_labels_and_a_narrow_screen(browser, board):
    base, _ = board
    context, page, problems = _open(browser, base, locale="zh-CN", viewport={"width": 360, "height": 740})
    expect(page.locator('nav button[data-view="runs"]')).to_have_text("运行")
    expect(page.locator("#runs tbody")).to_contain_text("已完成")
    assert page.evaluate("document.scrollingElement.scrollWidth") <= 360
    page.goto(base + "/#launch")  # the form, in Chinese, on a phone
    expect(page.locator("#tab-form")).to_have_text("表单")
    page.select_option("#config-pick", "tiny.yaml")
    page.click("#load")
    expect(page.locator('#form [data-path="train.lr"] input')).to_have_value("0.003")
    assert page.evaluate("document.scrollingElement.scrollWidth") <= 360
    context.close()
    assert not problems, problems


def test_a_new_user_launches_the_demo_from_the_page_and_watches_it_train(browser, tmp_path):
    """The issue's "done when": an empty folder, `ragtune board`, and nothing but clicks."""
    with live_server(create_board(tmp_path / "runs", tmp_path / "configs")) as base:
        context, page, problems = _open(browser, base)
        expect(page.locator("#no-runs")).to_contain_text("No runs or studies yet")
        page.click("#no-runs a")
        expect(page.locator('#form [data-path="data.demo"] select')).to_have_value("true")  # the demo, loaded
        expect(page.locator("#out")).to_have_value("demo")
        page.click("#go")
        page.click("#launched a")
        expect(page.locator("#progress")).to_contain_text("step", timeout=180_000)  # its curves, as it trains
        expect(page.locator("#run-line")).to_contain_text("finished", timeout=300_000)  # the demo takes seconds
        expect(page.locator("#report h3").first).to_be_visible()
        context.close()
        assert not problems, problems
