"""The training run's HTML report, as a person opens it: headless Chromium on the e2e run's report page.

The e2e run (tests/e2e/conftest.py) promotes fog and fails rain's training. The page must say both, show
fog's sample grid and champion history as images that load, link the hard-frame gallery and the Data Docs
to files that exist, and list every step's outcome. A screenshot goes to test-artifacts/e2e/run-report.png.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from system.browser import launch  # tests/ is on the path (rootdir of the e2e package)

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts" / "e2e"
pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture(scope="module")
def page(demo_run):
    from playwright.sync_api import sync_playwright

    home, _, _ = demo_run
    (report,) = (home / "store" / "runs" / "argus_weather_training").glob("*/report/index.html")
    with sync_playwright() as pw:
        browser = launch(pw)
        try:
            pg = browser.new_page(viewport={"width": 1280, "height": 900})
            pg.goto(report.as_uri())
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            pg.screenshot(path=str(ARTIFACTS / "run-report.png"), full_page=True)
            yield pg, report
        finally:
            browser.close()


def test_the_report_says_fog_was_promoted_and_rain_failed_with_its_cause(page):
    pg, _ = page
    assert pg.locator("h1 .badge").inner_text() == "failed"
    assert pg.locator("h2#fog .badge").inner_text() == "PROMOTED"
    assert pg.locator("h2#rain .badge").inner_text() == "no decision (not run)"
    assert "train/rain failed: too few frames to train rain: 4" in pg.locator("body").inner_text()


def test_every_step_has_its_outcome_per_condition(page):
    pg, _ = page
    rows = {r.locator("th").inner_text(): [c.inner_text() for c in r.locator("td").all()]
            for r in pg.locator("h2:has-text('Steps') + table tr").all()[1:]}
    assert rows["train"] == ["succeeded", "failed"] and rows["promote"] == ["succeeded", "not run"], rows
    assert rows["pull"] == rows["validate"] == rows["segmenter"] == ["succeeded"], rows


def test_the_sample_grid_and_the_champion_history_are_images_that_load(page):
    pg, _ = page
    widths = pg.eval_on_selector_all("img", "imgs => imgs.map(i => [i.alt, i.naturalWidth])")
    assert any(a == "sample grid" and w > 100 for a, w in widths), widths
    assert any(a == "champion history" and w > 300 for a, w in widths), widths


def test_the_gallery_and_data_docs_links_open_files_of_the_run(page):
    pg, report = page
    for name in ("hard-frame gallery", "Great Expectations Data Docs"):
        href = pg.get_by_role("link", name=name).first.get_attribute("href")
        target = (report.parent / href).resolve()
        assert target.is_file() and target.suffix == ".html", (name, href)
