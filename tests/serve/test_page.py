"""The web page at ``/`` in a real browser: Debian's headless Chromium driven by Playwright for Python.

The page (``ragtune/serve/static/index.html``) is served by the real app under uvicorn on a loopback
port; a tiny classification run is trained once for the module, and a BM25 index folder is built from
a few text files. Playwright's own browser download is not used: the module launches the system
Chromium (``/usr/bin/chromium``, or ``RAGTUNE_CHROMIUM``) and skips when it or the ``playwright``
package is missing (CI: ``apt-get install chromium fonts-noto-cjk``; ``.ci/run`` sets
``RAGTUNE_REQUIRE_BROWSER=1`` so that there a missing browser fails instead of skipping).
"""

from __future__ import annotations

import json
import os
import shutil

import pytest
import yaml
from serve.live import live_server

from ragtune.cli import main as cli_main
from ragtune.serve.app import create_app
from ragtune.serve.service import load_service

try:
    from playwright.sync_api import expect, sync_playwright
except ImportError:  # pragma: no cover - depends on the environment
    pytest.skip("the playwright package is not installed (pip install playwright)", allow_module_level=True)


def _chromium() -> str | None:
    for candidate in (os.environ.get("RAGTUNE_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium")):
        if candidate and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


CHROMIUM = _chromium()
if CHROMIUM is None and os.environ.get("RAGTUNE_REQUIRE_BROWSER"):  # CI: a missing browser is a failure
    raise RuntimeError("RAGTUNE_REQUIRE_BROWSER is set but no Chromium was found (apt-get install chromium)")
if CHROMIUM is None:
    pytest.skip("no Chromium binary at /usr/bin/chromium (apt-get install chromium) or $RAGTUNE_CHROMIUM",
                allow_module_level=True)

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TIMEOUT_MS = 20_000
XSS = '<script>window.__pwned=1</script><img src="x" onerror="window.__pwned=2">'


# -------------------------------------------------------------------------------------------------
# fixtures: one run, one index, one browser for the module
# -------------------------------------------------------------------------------------------------




@pytest.fixture(scope="module")
def url(service):
    with live_server(create_app(service)) as base:
        yield base


@pytest.fixture(scope="module")
def index_url(tmp_path_factory):
    """A BM25 index of six small text files (one of them holds markup that must not run), served."""
    root = tmp_path_factory.mktemp("page_index")
    corpus = root / "corpus"
    corpus.mkdir()
    docs = {
        "paris": "Paris is the capital of France.",
        "tea": "绿茶是一种未发酵的茶。Green tea is not fermented.",
        "rivers": "The Nile is the longest river in Africa.",
        "volcano": "Volcanoes erupt lava and ash.",
        "markup": f"Markup sample {XSS} end of sample.",
        "moon": "The Moon orbits the Earth.",
    }
    for name, text in docs.items():
        (corpus / f"{name}.txt").write_text(text, encoding="utf-8")
    out = root / "index"
    assert cli_main(["index", str(corpus), "--out", str(out), "--kind", "bm25", "--quiet"]) == 0
    with live_server(create_app(load_service(out))) as base:
        yield base


@pytest.fixture(scope="module")
def qa_run(tmp_path_factory):
    """A tiny task: qa run (a random tiny BERT reader, one epoch, BM25 over its own paragraphs)."""
    from qa_fixtures import make_people_squad, make_qa_bert, make_qa_tokenizer

    root = tmp_path_factory.mktemp("page_qa")
    make_qa_bert().save_pretrained(root / "reader")
    make_qa_tokenizer().save_pretrained(root / "reader")
    (root / "squad.json").write_text(json.dumps(make_people_squad()), encoding="utf-8")
    cfg = {"task": "qa", "data": {"train": "squad.json", "validation_fraction": 0.2, "test_fraction": 0.2},
           "model": {"backbone": "hf", "name_or_path": str(root / "reader"), "max_length": 48, "doc_stride": 8},
           "retrieval": {"corpus": ["squad.json"], "kind": "bm25", "top_k": 2, "chunk_tokens": 16, "chunk_overlap": 4},
           "train": {"optimizer": "adamw", "lr": 3e-3, "epochs": 1, "batch_size": 8, "seed": 0, "threads": 1}}
    (root / "qa.yaml").write_text(yaml.safe_dump(cfg), encoding="utf-8")
    assert cli_main(["run", str(root / "qa.yaml"), "--out", str(root / "run"), "--quiet"]) == 0
    return root / "run"


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


def _open(browser, base: str, locale: str = "en-US", **context_args):
    context = browser.new_context(locale=locale, **context_args)
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    # console errors but the browser's note on each 4xx answer (expected where a test provokes one)
    page.on("console", lambda msg: problems.append(f"console {msg.type}: {msg.text}")
            if msg.type == "error" and not msg.text.startswith("Failed to load resource") else None)
    page.goto(base + "/")
    expect(page.locator("body")).to_have_attribute("data-state", "ready")
    return context, page, problems


@pytest.fixture
def page(browser, url):
    context, pg, problems = _open(browser, url)
    yield pg
    context.close()
    assert not problems, problems  # no script errors, no CSP violations


def _submit(page, text: str, expect_state: str = "done") -> None:
    """Type ``text``, press the button, wait until the page shows the answer (or an error)."""
    page.fill("#text", text)
    page.evaluate("document.body.dataset.state = 'test-submitting'")  # never the state of an earlier request
    page.click("#submit")
    expect(page.locator("body")).to_have_attribute("data-state", expect_state)


def _bars(page) -> list[tuple[str, float, str]]:
    """(label, score, shown percentage) of every bar, top to bottom."""
    return page.eval_on_selector_all(
        "#bars li", "rows => rows.map(r => [r.dataset.label, Number(r.dataset.score), "
                    "r.querySelector('.bar-pct').textContent])")


def _check_prediction(page, service, text: str) -> None:
    expected = service.predictor.predict([text])[0]
    _submit(page, text)
    assert page.text_content("#label") == expected["label"]
    bars = _bars(page)
    assert [b[0] for b in bars] == sorted(expected["scores"], key=lambda k: -expected["scores"][k])
    assert len(bars) == len(service.labels)
    for label, score, shown in bars:
        assert score == pytest.approx(expected["scores"][label], abs=1e-6)
        assert shown == f"{score * 100:.1f}%"
    assert page.get_attribute("#bars li:first-child", "data-label") == expected["label"]
    assert page.text_content("#error") == ""


# -------------------------------------------------------------------------------------------------
# classification
# -------------------------------------------------------------------------------------------------
def test_english_text_gets_the_predictors_label_and_one_bar_per_class(page, service, tmp_path):
    assert page.get_attribute("html", "lang") == "en"
    assert page.text_content("label[for=text]") == "Text to classify"
    _check_prediction(page, service, "the parliament vote on the election")
    assert page.is_visible("#bars") and not page.is_visible("#passages")
    assert page.text_content("#model-name") == service.name
    assert page.text_content("#model-engine") == "torch"
    assert page.text_content("#model-task") == "classification"
    assert page.get_attribute("#model-task", "data-task") == "classification"
    from ragtune import __version__

    assert page.text_content("#model-version") == __version__
    # to look at it: RAGTUNE_PAGE_SCREENSHOT=/tmp/page.png pytest tests/serve/test_page.py
    page.screenshot(path=os.environ.get("RAGTUNE_PAGE_SCREENSHOT") or str(tmp_path / "page.png"), full_page=True)


def test_chinese_text(page, service):
    _check_prediction(page, service, "央行 银行 股市 今天 market")
    assert page.input_value("#text") == "央行 银行 股市 今天 market"  # UTF-8 round trip in the page


def test_language_switch_translates_the_ui_and_follows_the_browser(page, browser, url):
    _submit(page, "film actor award")
    page.select_option("#lang", "zh")
    assert page.get_attribute("html", "lang") == "zh-CN"
    assert page.text_content("#submit") == "分类"
    assert page.text_content("label[for=text]") == "要分类的文本"
    assert page.text_content("#result-heading") == "结果"  # a shown result is translated too
    page.select_option("#lang", "en")
    assert page.text_content("#submit") == "Classify"

    context, zh_page, problems = _open(browser, url, locale="zh-CN")  # default from navigator.language
    try:
        assert zh_page.input_value("#lang") == "zh"
        assert zh_page.get_attribute("html", "lang") == "zh-CN"
        assert zh_page.text_content("#submit") == "分类"
        _submit(zh_page, "  ", expect_state="error")  # nothing typed: a message in Chinese, no request
        expect(zh_page.locator("#error")).to_have_text("请先输入文本。")
    finally:
        context.close()
    assert not problems, problems


def test_narrow_screen_has_no_horizontal_scrolling(browser, url, service):
    context, page, problems = _open(browser, url, viewport={"width": 360, "height": 740})
    try:
        _check_prediction(page, service, "shares market bank inflation today")
        assert page.evaluate("document.documentElement.scrollWidth <= document.documentElement.clientWidth")
    finally:
        context.close()
    assert not problems, problems


def test_markup_in_the_text_does_not_run(page, service):
    _check_prediction(page, service, XSS)
    page.wait_for_load_state("networkidle")  # an <img onerror> inserted as HTML would have fired by now
    assert page.evaluate("typeof window.__pwned") == "undefined"


def test_api_key_prompt_and_retry(browser, service):
    with live_server(create_app(service, api_key="s3cret")) as base:
        context, page, _ = _open(browser, base)
        try:
            text = "minister election vote"
            _submit(page, text, expect_state="error")
            expect(page.locator("[role=alert]")).to_contain_text("requires an API key")
            assert "needs-key" in page.get_attribute("#api-key", "class")
            assert not page.is_visible("#result")

            page.fill("#api-key", "wrong")
            _submit(page, text, expect_state="error")
            expect(page.locator("#error")).to_contain_text("was not accepted")

            page.fill("#api-key", "s3cret")
            _submit(page, text)
            assert page.text_content("#label") == service.predictor.predict([text])[0]["label"]
            assert page.text_content("#error") == ""
            assert page.evaluate("sessionStorage.getItem('ragtune.apiKey')") == "s3cret"  # not localStorage
            assert page.evaluate("localStorage.getItem('ragtune.apiKey')") is None
        finally:
            context.close()


# -------------------------------------------------------------------------------------------------
# an index folder: search box and hits
# -------------------------------------------------------------------------------------------------
def test_index_search_shows_hits_and_server_errors(browser, index_url):
    context, page, problems = _open(browser, index_url)
    try:
        assert page.get_attribute("body", "data-task") == "index"
        assert page.text_content("label[for=text]") == "Search query"
        assert page.is_visible("#k")
        _submit(page, "capital of France the Earth")
        hits = page.locator("#passages > li")
        expect(hits).to_have_count(2)  # k=5, but BM25 returns only passages sharing a word with the query
        assert "Paris is the capital of France." in hits.first.text_content()
        assert "paris.txt" in hits.first.text_content()

        page.fill("#k", "1")
        _submit(page, "绿茶")
        expect(hits).to_have_count(1)
        assert "绿茶是一种未发酵的茶" in hits.first.text_content()

        _submit(page, "markup sample")  # the passage holds <script> and <img onerror>: shown as text
        assert XSS in hits.first.text_content()
        assert page.locator("#passages img, #passages script").count() == 0
        page.wait_for_load_state("networkidle")
        assert page.evaluate("typeof window.__pwned") == "undefined"

        page.fill("#k", "99")  # more than the index holds: the server's 422 detail, shown as an alert
        _submit(page, "lava", expect_state="error")
        expect(page.locator("[role=alert]")).to_contain_text("k: 99 is out of range")
    finally:
        context.close()
    assert not problems, problems


# -------------------------------------------------------------------------------------------------
# a QA run: the answer, highlighted in its passage, and the passages read
# -------------------------------------------------------------------------------------------------
def test_qa_page_shows_the_answer_in_its_passage(browser, qa_run):
    service = load_service(qa_run)
    question = "who lives in paris ?"
    expected = service.predictor.answer([question])[0]
    with live_server(create_app(service)) as base:
        context, page, problems = _open(browser, base)
        try:
            assert page.text_content("label[for=text]") == "Question"
            assert page.text_content("#submit") == "Answer"
            _submit(page, question)
            shown = page.text_content("#answer")
            assert shown == (expected["answer"] or "(no answer found)")
            passages = page.locator("#passages > li")
            ids = [p["id"] for p in expected["passages"]]
            if expected.get("passage") and expected["passage"]["id"] not in ids:
                ids.insert(0, expected["passage"]["id"])
            assert passages.evaluate_all("rows => rows.map(r => r.dataset.id)") == ids
            if expected["answer"] and expected["answer"] in (expected.get("passage") or {}).get("text", ""):
                mark = page.locator(f'#passages > li[data-id="{expected["passage"]["id"]}"] mark')
                expect(mark).to_have_text(expected["answer"])
        finally:
            context.close()
    assert not problems, problems


# -------------------------------------------------------------------------------------------------
# a translation run: the output of the run's decoding, and a decoding choice
# -------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def translation_run(tmp_path_factory):
    """A tiny task: translation run (word-for-word dictionary pairs; a one-layer model, a few seconds)."""
    from tasks.translation.test_recipe import make_pairs, tiny_config, write_files

    root = tmp_path_factory.mktemp("page_translation")
    train = write_files(root, "train", make_pairs(200, seed=0))
    config = tiny_config(root, train, epochs=4, train__steps_per_epoch=40, train__warmup_steps=2, train__lr=0.01,
                         train__threads=1, model__layers=1, model__d_model=32, model__heads=2, model__ffn_dim=64)
    assert cli_main(["run", config, "--out", str(root / "run"), "--quiet"]) == 0
    return root / "run"


def test_translation_page_shows_the_predictors_output(browser, translation_run, tmp_path):
    from ragtune.tasks.translation.predictor import Seq2SeqPredictor

    predictor = Seq2SeqPredictor.from_run_dir(translation_run)
    text = "big red dog sees small bird"
    expected = predictor.generate([text])[0]["output"]
    beam = predictor.generate([text], strategy="beam")[0]["output"]
    assert expected, "the tiny run translates to nothing: the check below would prove little"
    shot = os.environ.get("RAGTUNE_PAGE_SCREENSHOT")
    service = load_service(translation_run)
    with live_server(create_app(service)) as base:
        context, page, problems = _open(browser, base)
        try:
            assert page.get_attribute("body", "data-task") == "translation"
            assert page.text_content("label[for=text]") == "Text to translate"
            assert page.text_content("#submit") == "Translate"
            assert page.is_visible("#strategy") and not page.is_visible("#k")
            assert page.input_value("#strategy") == ""  # null: the run's decode: settings
            assert page.text_content("#model-task") == "translation"
            assert page.get_attribute("#model-task", "data-task") == "translation"
            assert page.text_content("#model-name") == service.name

            _submit(page, text)
            expect(page.get_by_role("status", name="Translation")).to_have_text(expected)
            assert page.text_content("#translation") == expected
            assert not page.is_visible("#bars") and not page.is_visible("#passages-block")
            assert page.text_content("#error") == ""
            page.screenshot(path=(shot[:-4] + "-translation.png") if shot else str(tmp_path / "translation.png"),
                            full_page=True)

            page.select_option("#strategy", "beam")
            _submit(page, text)
            assert page.text_content("#translation") == beam

            page.select_option("#lang", "zh")
            assert page.text_content("label[for=text]") == "要翻译的文本"
            assert page.text_content("#submit") == "翻译"
            assert page.text_content("label[for=strategy]") == "解码方式"
            assert page.text_content("#strategy option[value='']") == "训练时的默认设置"
            assert page.input_value("#strategy") == "beam"  # the choice survives the switch
            assert page.text_content("#translation-title") == "译文"
            assert page.text_content("#model-task") == "翻译"
            assert page.text_content("#translation") == beam  # server text is not translated
            assert page.text_content("#status").startswith("用时 ")  # "Done in … ms" too
            if shot:
                page.screenshot(path=shot[:-4] + "-translation-zh.png", full_page=True)
        finally:
            context.close()
    assert not problems, problems
