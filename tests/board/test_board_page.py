"""ragtune board's page in a real browser (Debian's Chromium driven by Playwright, the helpers of
tests/serve/test_page.py): launch a run from the page, watch its progress grow while it trains, stop it, resume
it, see it finish, open its report, compare it with another run; a config error shows inline and launches
nothing; the Chinese labels; a 360 px screen."""

from __future__ import annotations

import re

import pytest
import yaml
from board.test_board import TINY
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
    with live_server(create_board(runs, configs)) as base:
        yield base, runs


def test_launch_watch_stop_resume_finish_report_and_compare(browser, board):
    base, runs = board
    context, page, problems = _open(browser, base)
    page.on("dialog", lambda dialog: (problems.append(f"dialog: {dialog.message}"), dialog.dismiss()))
    page.goto(base + "/#launch")
    page.select_option("#config-pick", "slow.yaml")
    page.click("#load")
    expect(page.locator("#yaml")).to_have_value(re.compile("name: slow"))
    page.fill("#out", "from-page")
    page.click("#go")
    expect(page.locator("#launched")).to_contain_text("from-page")
    page.goto(base + "/#run/from-page")
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
    page.goto(base + "/#runs")
    for run_id in ("from-page", "other"):
        page.locator(f'#runs input[data-id="{run_id}"]').check()
    page.click('nav button[data-view="compare"]')
    expect(page.locator("#differences")).to_contain_text("train.epochs")
    expect(page.locator("#compare-metrics")).to_contain_text("accuracy")
    context.close()
    assert not problems, problems


def test_a_config_error_shows_inline_and_launches_nothing(browser, board):
    base, runs = board
    context, page, problems = _open(browser, base)
    page.goto(base + "/#launch")
    page.fill("#yaml", yaml.safe_dump({**TINY, "train": {**TINY["train"], "lr": -1}}))
    page.click("#check")
    expect(page.locator("#errors li").first).to_contain_text("train.lr")
    page.fill("#out", "bad-one")
    page.click("#go")
    expect(page.locator("#errors li").first).to_contain_text("train.lr")
    assert not (runs / "bad-one").exists()
    context.close()
    assert not [p for p in problems if "422" not in p], problems


def test_chinese_labels_and_a_narrow_screen(browser, board):
    base, _ = board
    context, page, problems = _open(browser, base, locale="zh-CN", viewport={"width": 360, "height": 740})
    expect(page.locator('nav button[data-view="runs"]')).to_have_text("运行")
    expect(page.locator("#runs tbody")).to_contain_text("已完成")
    assert page.evaluate("document.scrollingElement.scrollWidth") <= 360
    context.close()
    assert not problems, problems
