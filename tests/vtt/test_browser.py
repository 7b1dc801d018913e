"""A real browser (Debian's chromium driven by Playwright): log in, rate part of the study, reload, finish.

Skipped only when no chromium binary is installed (`make browser` installs it; CI has it).
"""

from __future__ import annotations

import shutil
import sqlite3

import pytest

from synthmed.vtt.app import create_app
from synthmed.vtt.study import DB_FILE

from .conftest import STUDY_ITEMS, assert_blind_text, assert_clean_png, live_server

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary on PATH (install Debian's chromium: `make browser`)")
TEXT_TYPES = ("text/", "application/json", "application/javascript")
FIRST_PART = 3  # items rated before the reload


class Recorder:
    """Every response the page receives, with its body, for the blinding checks."""

    def __init__(self):
        self.responses = []  # (url, status, content type, body or None when the browser dropped it)

    def __call__(self, response):
        try:
            body = response.body()
        except Exception:  # e.g. an image request cut off by a reload: its body is gone
            body = None
        self.responses.append((response.url, response.status, response.headers.get("content-type", ""), body))

    def refetch_missing(self, context) -> None:
        """Fetch again, with the same cookies, what the browser dropped; every URL gets checked."""
        for i, (url, status, content_type, body) in enumerate(self.responses):
            if body is None:
                again = context.request.get(url)
                self.responses[i] = (url, again.status, again.headers.get("content-type", ""), again.body())


def _rate(page, position: int, score: int, comment: str) -> None:
    page.wait_for_selector(f"#progress-text:text-is('Case {position} of {STUDY_ITEMS}')")
    page.wait_for_function("() => [...document.querySelectorAll('#views img')].every(i => i.complete && i.naturalWidth > 0)")
    page.locator("#scale label").nth(score).click()
    if comment:
        page.fill("#comment", comment)
    with page.expect_response(lambda r: r.url.endswith("/api/ratings") and r.request.method == "POST") as saved:
        page.click("#submit")
    assert saved.value.status == 201  # saved before anything else happens (e.g. another browser loading)


def _login(page, url: str, token: str) -> None:
    page.goto(url)
    page.wait_for_selector("#login:not([hidden])")
    page.fill("#token", token)
    page.click("#login-form button[type=submit]")


def test_a_rater_logs_in_rates_reloads_and_finishes(study, tokens):
    from playwright.sync_api import sync_playwright

    given = {}  # position -> (score, comment)
    recorder = Recorder()
    sources = []
    with live_server(create_app(study)) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--headless=new"])
        try:
            page = browser.new_page()
            page.on("response", recorder)
            errors = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            _login(page, url, tokens["alice"])
            for position in range(1, FIRST_PART + 1):
                given[position] = (position + 5, f"note {position}" if position == 2 else "")
                _rate(page, position, *given[position])

            page.wait_for_selector(f"#progress-text:text-is('Case {FIRST_PART + 1} of {STUDY_ITEMS}')")
            assert page.is_visible("#views .stack:not(.mask-hidden) img.overlay")
            page.keyboard.press("m")  # the mask toggle
            assert page.locator("#views .stack.mask-hidden").count() == len(page.locator("#views .stack").all()) > 0
            sources.append(page.content())

            page.reload()
            given[FIRST_PART + 1] = (0, "")
            _rate(page, FIRST_PART + 1, 0, "")

            other = browser.new_context().new_page()  # a new browser profile: no cookies, log in again
            other.on("response", recorder)
            _login(other, url, tokens["alice"])
            for position in range(FIRST_PART + 2, STUDY_ITEMS + 1):
                given[position] = (10 if position % 2 else 1, "")
                _rate(other, position, *given[position])
            other.wait_for_selector("#done:not([hidden])")
            sources.append(other.content())
            page.reload()
            page.wait_for_selector("#done:not([hidden])")
            sources.append(page.content())
            assert errors == []
            recorder.refetch_missing(page.context)
        finally:
            browser.close()

    with sqlite3.connect(study / DB_FILE) as conn:
        stored = conn.execute(
            "SELECT ri.position, g.score, g.comment FROM ratings g JOIN raters r USING (rater_id) "
            "JOIN rater_items ri ON ri.rater_id = g.rater_id AND ri.item_id = g.item_id WHERE r.name = 'alice'").fetchall()
    assert {pos: (score, comment) for pos, score, comment in stored} == given and len(stored) == STUDY_ITEMS

    for i, source in enumerate(sources):
        assert_blind_text(source, study, f"page source {i}")
    kinds = set()
    for response_url, status, content_type, body in recorder.responses:
        assert_blind_text(response_url, study, "URL")
        if content_type.startswith("image/png"):
            assert_clean_png(body, response_url)
            kinds.add("png")
        elif content_type.startswith(TEXT_TYPES):
            assert_blind_text(body.decode("utf-8"), study, response_url)
            kinds.add(content_type.split(";")[0])
    assert {"png", "text/html", "application/json", "text/javascript"} <= kinds
