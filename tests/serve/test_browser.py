"""The web page in a real browser: headless Chromium (Debian's package) driven by Playwright uploads the bundled
photo, runs pose and seg on tiny networks, and sees both result pictures; the screenshot is the README's."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sapiens2.runner.cli import demo_photo
from sapiens2.serve.models import Served
from tests.serve.conftest import serve, tiny_predictor

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run"]
#: The README's picture; rewritten only when SAPIENS2_UPDATE_SCREENSHOT=1, so a test run leaves the tree clean.
SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "images" / "serve.png"


def _browser_or_skip():
    """Playwright's sync API, or a skip naming what is missing (in CI a missing browser is a failure)."""
    in_ci = bool(os.environ.get("CI"))
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        if in_ci:
            pytest.fail("playwright is not installed in CI (pip install -e '.[test]')")
        pytest.skip("playwright is not installed (pip install -e '.[test]')")
    if not CHROMIUM.exists():
        if in_ci:
            pytest.fail(f"{CHROMIUM} is missing in CI: .ci/run installs Debian's chromium first")
        pytest.skip(f"no browser: {CHROMIUM} is missing (apt-get install -y chromium)")
    return sync_playwright


def test_page_uploads_a_photo_and_shows_pose_and_seg(tmp_path):
    sync_playwright = _browser_or_skip()
    served = [Served("pose", "tiny random-weight pose", tiny_predictor("pose")),
              Served("seg", "tiny random-weight seg", tiny_predictor("seg")),
              Served("normal", "sapiens2-normal-0.4b",
                     missing="the normal task needs weights that are not on this machine: sapiens2-normal-0.4b")]
    with serve(served) as server, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 820})
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("requestfailed", lambda r: errors.append(f"request failed: {r.url}"))
            page.goto(server.url + "/")
            page.wait_for_selector("#task-pose")
            assert page.is_checked("#task-pose") and page.is_checked("#task-seg")
            assert page.is_disabled("#task-normal")
            assert "sapiens2-normal-0.4b" in page.inner_text("#missing-normal")
            page.set_input_files("#file", str(demo_photo()))
            page.wait_for_selector("#photo:not([hidden])")
            page.click("#run")
            for task in ("pose", "seg"):
                img = page.wait_for_selector(f"#result-{task} img.vis", timeout=60_000)
                page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=img)
                links = page.locator(f"#result-{task} .files a")
                assert links.count() >= 2
            assert page.inner_text("#status") == "done"
            names = page.locator("#result-seg .files a").all_inner_texts()
            assert {"astronaut_seg.npy", "astronaut_seg.png", "astronaut_seg.jpg"} <= set(names)
            assert "1 person" in page.inner_text("#result-pose .meta")
            with page.expect_download() as download:
                page.click("#result-seg .files a >> text=astronaut_seg.png")
            saved = tmp_path / "seg.png"
            download.value.save_as(saved)
            assert saved.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
            assert not errors, errors
            shot = SCREENSHOT if os.environ.get("SAPIENS2_UPDATE_SCREENSHOT") == "1" else tmp_path / "serve.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
            if shot == SCREENSHOT:  # 256 colours: a third of the size, and the page reads the same
                from PIL import Image

                with Image.open(shot) as im:
                    small = im.convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
                small.save(shot, optimize=True)
        finally:
            browser.close()
