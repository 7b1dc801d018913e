"""The report in a real browser (Debian's chromium driven by Playwright, as tests/vtt does): it renders
from file:// with no request beyond the file itself, every image decodes, and the page is not blank.

Skipped only when no chromium binary is installed (`make browser` installs it)."""

from __future__ import annotations

import io
import shutil

import numpy as np
import pytest
from PIL import Image

from synthmed.report import write_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary on PATH (install Debian's chromium: `make browser`)")]
SECTIONS = ["verdicts", "data", "generators", "fidelity", "memorisation", "downstream"]


def test_the_report_renders_offline_in_chromium(report_study, tmp_path):
    from playwright.sync_api import sync_playwright

    out = write_report(report_study, tmp_path / "report.html")
    requests, errors = [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--headless=new"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900}, java_script_enabled=False)
            page.on("request", lambda r: requests.append(r.url))
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(out.as_uri(), wait_until="load")
            sections = page.locator("section").evaluate_all("s => s.map(e => e.id)")
            images = page.locator("img").evaluate_all("i => i.map(e => [e.complete, e.naturalWidth])")
            screenshot = page.screenshot(full_page=True)
        finally:
            browser.close()
    assert not errors and sections == SECTIONS
    assert len(images) >= 8 and all(done and width > 0 for done, width in images)  # every inline PNG decoded
    assert [u for u in requests if not u.startswith("data:")] == [out.as_uri()]  # nothing fetched but the file
    shot = np.asarray(Image.open(io.BytesIO(screenshot)).convert("L"), dtype=float)
    (tmp_path / "report.png").write_bytes(screenshot)
    assert shot.shape[1] == 1280 and shot.shape[0] > 4000  # every section laid out, one under the other
    assert shot.std() > 20 and len(np.unique(shot)) > 50  # text, tables and figures, not a blank page
