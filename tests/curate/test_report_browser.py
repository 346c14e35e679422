"""The curation report in a real browser (headless Chromium, as the serve page's test): a run over the planted
corpus with stand-in models, whose page shows the manifest's counts, one chart per measured score and every
contact sheet; the screenshot is the README's."""

from __future__ import annotations

import os
from pathlib import Path

from sapiens2.curate.config import ClusterConfig, CurateConfig, OutputConfig
from sapiens2.curate.engine import curate
from sapiens2.curate.sources import collect_items
from tests.curate.conftest import colour_detector, load_stand_in_clip, make_corpus, thumb_embedder
from tests.serve.test_browser import ARGS, CHROMIUM, _browser_or_skip

#: The README's picture; rewritten only when SAPIENS2_UPDATE_SCREENSHOT=1, so a test run leaves the tree clean.
SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "images" / "curate_report.png"


def test_the_report_page_shows_counts_charts_and_every_contact_sheet(tmp_path):
    sync_playwright = _browser_or_skip()
    corpus = make_corpus(tmp_path / "corpus", n_distinct=10, seed=3, clip_cases=True)
    config = CurateConfig(cluster=ClusterConfig(levels=(3,), target=6), output=OutputConfig(shard_size=8))
    result = curate(collect_items([str(corpus.root)]), tmp_path / "out", config, detector=colour_detector,
                    embedder=thumb_embedder, clip=load_stand_in_clip(), shards=False)
    dropped = result.table["reason"].value_counts().to_pylist()
    dropped = {d["values"]: d["counts"] for d in dropped if d["values"] is not None}
    # the planted cases reach the page: every kind of drop the corpus was built to cause
    assert {"decode", "too_small", "no_person", "not_photo", "text_overlay", "duplicate", "balance"} <= set(dropped)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            errors: list[str] = []
            page.on("requestfailed", lambda r: errors.append(f"request failed: {r.url}"))
            page.goto((tmp_path / "out" / "report" / "index.html").as_uri())
            cells = page.locator("table").first.locator("tr").all_inner_texts()[1:]
            shown = {c.split("\t")[0]: int(c.split("\t")[2]) for c in cells}
            assert {k: v for k, v in shown.items() if v and k != "kept"} == dropped
            assert page.locator(".charts svg").count() == 6  # size, person x2, CLIP x3 (no head stage here)
            sheets = page.locator("img")
            assert sheets.count() == len(dropped) + len([c for c, (_, a) in result.cluster_sizes.items() if a])
            for i in range(sheets.count()):
                page.wait_for_function("img => img.complete && img.naturalWidth > 0",
                                       arg=sheets.nth(i).element_handle())
            assert not errors, errors
            shot = SCREENSHOT if os.environ.get("SAPIENS2_UPDATE_SCREENSHOT") == "1" else tmp_path / "report.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
            if shot == SCREENSHOT:  # 256 colours: the page reads the same at a fraction of the size
                from PIL import Image

                with Image.open(shot) as im:
                    small = im.convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
                small.save(shot, optimize=True)
        finally:
            browser.close()
