"""report.html in a real browser: Debian's Chromium, headless, with the network off.

It must load with nothing but the file (no request leaves it), log no console error, and show its
charts: the screenshot of each chart's box is checked for drawn pixels (and the summary's for
the succeeded colour), not just for an ``<img>`` tag.

Playwright drives the browser installed by the system (``executable_path``); it never downloads
one. Where Chromium or Playwright is missing the test skips, saying so (``.ci/run`` installs
Chromium best-effort, as it does LibreOffice).
"""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import pytest

from cpuu_fleet.inputs.mailboxes import load_mailboxes
from cpuu_fleet.report import states, write_report
from cpuu_fleet.report.figures import PROGRESS_KEY, SUMMARY_KEY
from cpuu_fleet.report.html import HTML_NAME
from tests.report.test_progress import mailbox_source

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 30_000

sync_api = pytest.importorskip(
    "playwright.sync_api", reason="Playwright for Python is not installed (pip install -e .[dev])"
)
Image = pytest.importorskip("PIL.Image", reason="Pillow is not installed (matplotlib brings it)")
pytestmark = [
    pytest.mark.slow,  # a browser start and a report: several seconds
    pytest.mark.skipif(
        not CHROMIUM.is_file() or shutil.which(str(CHROMIUM)) is None,
        reason="Debian's chromium is not installed (apt-get install chromium)",
    ),
]


def _inked(png: bytes) -> tuple[float, int]:
    """The share of pixels that are not (near) white, and how many are the succeeded colour."""
    image = Image.open(io.BytesIO(png)).convert("RGB")
    raw = image.tobytes()
    pixels = [tuple(raw[i : i + 3]) for i in range(0, len(raw), 3)]
    ink = sum(1 for r, g, b in pixels if min(r, g, b) < 235)
    colour = states.CHART_COLOURS["succeeded"].lstrip("#")
    target = tuple(int(colour[i : i + 2], 16) for i in (0, 2, 4))
    near = sum(1 for p in pixels if all(abs(a - b) <= 12 for a, b in zip(p, target, strict=True)))
    return ink / max(len(pixels), 1), near


def test_report_html_renders_offline_without_errors_and_its_charts_are_drawn(fleet, tmp_path):
    source = load_mailboxes(*mailbox_source(tmp_path))
    runs = [fleet.first_run, fleet.retry_run]
    result = write_report(fleet.journal, runs, tmp_path / "out", mailboxes=source)
    page_url = result.paths[HTML_NAME].resolve().as_uri()

    errors: list[str] = []
    requests: list[str] = []
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=FLAGS, timeout=TIMEOUT_MS
        )
        try:
            # Scripts stay enabled: a script that slipped into the page would be refused by its
            # Content-Security-Policy, and the refusal is a console error this test sees.
            context = browser.new_context(offline=True, viewport={"width": 1280, "height": 900})
            page = context.new_page()
            page.set_default_timeout(TIMEOUT_MS)
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.on("requestfailed", lambda r: errors.append(f"failed: {r.url}"))
            page.on("request", lambda r: requests.append(r.url))
            page.goto(page_url, wait_until="load")

            summary_text = page.inner_text(f"#table-{SUMMARY_KEY}")
            widths = page.eval_on_selector_all("img", "els => els.map(e => e.naturalWidth)")
            shots = {
                key: page.locator(f"#chart-{key}").screenshot()
                for key in (SUMMARY_KEY, PROGRESS_KEY)
            }
            whole = page.screenshot(full_page=True)
        finally:
            browser.close()

    assert errors == []
    assert [url for url in requests if not url.startswith(("file:", "data:"))] == []
    assert "Total" in summary_text and "wave1" in summary_text
    assert len(widths) == 2 and all(width > 0 for width in widths), widths  # both PNGs decoded
    for key, png in shots.items():
        share, _ = _inked(png)
        assert share > 0.05, f"the {key} chart's box is blank ({share:.1%} drawn)"
    assert _inked(shots[SUMMARY_KEY])[1] > 100, "no succeeded bar in the summary chart"
    assert Image.open(io.BytesIO(whole)).size[1] > 900  # the page is longer than one screen
