"""The web page's chat mode for a generation run, in a real browser (the helpers of ``test_page.py``).

A generation run (the tiny Llama of ``tests/tiny_llm.py`` fine-tuned one epoch, ``model.backbone: hf``,
which streams token by token) is served; its predictor's ``stream`` is slowed down a little so that
the browser sees the reply grow piece by piece and a Stop click lands mid-reply.
"""

from __future__ import annotations

import contextlib
import json
import os
import time

import pytest
from serve.generation_runs import train_llama_run
from serve.live import live_server
from serve import test_page as page_tests  # skips this module where the browser is missing
from serve.test_page import _open

from ragtune.serve.app import create_app
from ragtune.serve.service import load_service

from playwright.sync_api import expect

DELAY_S = 0.05  # between streamed pieces


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    service = load_service(train_llama_run(tmp_path_factory.mktemp("page_chat")))
    real = service.predictor.stream

    def slow_stream(prompt, **overrides):
        for event in real(prompt, **overrides):
            time.sleep(DELAY_S)
            yield event

    service.predictor.stream = slow_stream
    return service


@pytest.fixture(scope="module")
def url(service):
    with live_server(create_app(service)) as base:
        yield base


browser = page_tests.browser  # one headless Chromium for the module (the fixture of test_page.py)


@contextlib.contextmanager
def opened(browser, base: str, check: bool = True, **context_args):
    """A page of ``base`` in a new browser context (``_open`` of test_page.py); with ``check``, no script
    errors or CSP violations may have happened by its end."""
    context, pg, problems = _open(browser, base, **context_args)
    try:
        yield pg
    finally:
        context.close()
    if check:
        assert not problems, problems


@pytest.fixture
def page(browser, url):
    with opened(browser, url) as pg:
        yield pg


def _reply(service, messages) -> str:
    return service.predictor.chat([messages])[0]["output"]  # the run's decode: settings, as the page sends none


def _send(page, text: str, expect_state: str = "done") -> None:
    page.fill("#chat-input", text)
    page.evaluate("document.body.dataset.state = 'test-sending'")
    page.press("#chat-input", "Enter")
    expect(page.locator("body")).to_have_attribute("data-state", expect_state)


def test_a_generation_run_gets_the_chat(page, service):
    assert page.get_attribute("body", "data-task") == "chat"
    assert page.is_visible("#chat") and not page.is_visible("#form")
    assert page.text_content("#error") == ""
    assert page.text_content("label[for=chat-input]") == "Message"
    assert page.text_content("#send") == "Send" and page.text_content("#clear") == "Clear"
    assert not page.is_visible("#stop")
    assert page.text_content("#subtitle") == "Chat with the model"
    assert page.text_content("#model-task") == "text generation"
    assert page.text_content("#model-name") == service.name
    assert page.is_visible("#system")


def test_a_message_gets_a_streamed_reply_and_the_conversation_goes_on(page, service, tmp_path):
    sent = []
    page.on("request", lambda r: sent.append(json.loads(r.post_data)) if r.url.endswith("/v1/chat/completions") else None)
    page.evaluate("""() => {  // every text the reply bubble showed
        window.__seen = [];
        new MutationObserver(() => {
            const last = document.querySelector('#messages li.assistant:last-child .content');
            if (last) window.__seen.push(last.textContent);
        }).observe(document.getElementById('messages'), {subtree: true, childList: true, characterData: true});
    }""")
    _send(page, "alpha beta")
    first = _reply(service, [{"role": "user", "content": "alpha beta"}])
    assert first, "the tiny run replies with nothing: the checks below would prove little"
    bubbles = page.locator("#messages > li")
    expect(bubbles).to_have_count(2)
    assert bubbles.nth(0).get_attribute("data-role") == "user"
    assert bubbles.nth(0).locator(".content").text_content() == "alpha beta"
    assert bubbles.nth(1).locator(".content").text_content() == first
    assert bubbles.nth(1).locator(".who").text_content() == "Assistant"
    seen = [s for s in dict.fromkeys(page.evaluate("window.__seen")) if s]
    assert len(seen) >= 2 and seen[-1] == first, seen  # it grew piece by piece
    assert sent[0]["stream"] is True and sent[0]["model"] == service.name
    assert sent[0]["messages"] == [{"role": "user", "content": "alpha beta"}]
    assert page.input_value("#chat-input") == ""

    page.fill("#system", "be brief")  # the next turn: system prompt first, then the whole conversation
    _send(page, "eta theta")
    history = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "alpha beta"},
               {"role": "assistant", "content": first}, {"role": "user", "content": "eta theta"}]
    assert sent[1]["messages"] == history
    expect(bubbles).to_have_count(4)
    assert bubbles.nth(3).locator(".content").text_content() == _reply(service, history)
    shot = os.environ.get("RAGTUNE_PAGE_SCREENSHOT")  # to look at it: RAGTUNE_PAGE_SCREENSHOT=/tmp/page.png
    page.screenshot(path=shot[:-4] + "-chat.png" if shot else str(tmp_path / "chat.png"), full_page=True)

    page.click("#clear")
    expect(bubbles).to_have_count(0)
    _send(page, "alpha beta")
    assert sent[-1]["messages"] == history[:2]  # cleared: a new conversation


def test_stop_keeps_the_reply_so_far(page, service):
    global DELAY_S
    DELAY_S, before = 0.4, DELAY_S
    try:
        page.fill("#chat-input", "alpha beta")
        page.press("#chat-input", "Enter")
        expect(page.locator("#stop")).to_be_visible()
        expect(page.locator("#messages li.assistant .content")).not_to_have_text("")
        page.click("#stop")
        expect(page.locator("body")).to_have_attribute("data-state", "done")
        li = page.locator("#messages li.assistant")
        assert li.get_attribute("data-finish") == "stopped"
        expect(li.locator(".note")).to_have_text("(stopped)")
        assert not page.is_visible("#stop") and page.is_enabled("#send")
    finally:
        DELAY_S = before
    _send(page, "eta theta")  # the server still answers
    expect(page.locator("#messages li.assistant")).to_have_count(2)


def test_chinese_labels(browser, url):
    with opened(browser, url, locale="zh-CN") as page:
        assert page.input_value("#lang") == "zh"
        assert page.text_content("#send") == "发送"
        assert page.text_content("#clear") == "清空"
        assert page.text_content("#stop") == "停止"
        assert page.text_content("label[for=chat-input]") == "消息"
        assert page.text_content("#subtitle") == "与模型对话"
        assert page.text_content("#model-task") == "文本生成"
        assert page.get_attribute("#chat-input", "placeholder") == "输入一条消息"
        _send(page, "你好 alpha")
        assert page.locator("#messages li.user .who").text_content() == "你"
        assert page.locator("#messages li.assistant .who").text_content() == "助手"
        page.select_option("#lang", "en")
        assert page.locator("#messages li.user .who").text_content() == "You"  # shown bubbles are translated
        _send(page, "  ", expect_state="error")
        expect(page.locator("#error")).to_have_text("Enter some text first.")


def test_narrow_screen_has_no_horizontal_scrolling(browser, url):
    with opened(browser, url, viewport={"width": 360, "height": 740}) as page:
        _send(page, "alpha beta " + "x" * 150)  # a long unbroken word must wrap
        assert page.evaluate("document.documentElement.scrollWidth <= document.documentElement.clientWidth")
        if os.environ.get("RAGTUNE_PAGE_SCREENSHOT"):
            page.screenshot(path=os.environ["RAGTUNE_PAGE_SCREENSHOT"][:-4] + "-chat-360.png", full_page=True)
        box = page.locator("#send").bounding_box()
        assert box["x"] >= 0 and box["x"] + box["width"] <= 360


def test_the_api_key_is_sent(browser, service):
    with live_server(create_app(service, api_key="s3cret")) as base:
        with opened(browser, base) as page:
            _send(page, "alpha beta", expect_state="error")
            expect(page.locator("[role=alert]")).to_contain_text("requires an API key")
            assert page.input_value("#chat-input") == "alpha beta"  # given back, nothing in the conversation
            expect(page.locator("#messages > li")).to_have_count(0)
            page.fill("#api-key", "s3cret")
            _send(page, "alpha beta")
            expect(page.locator("#messages li.assistant .content")).to_have_text(
                _reply(service, [{"role": "user", "content": "alpha beta"}]))
