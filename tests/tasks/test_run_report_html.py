"""The HTML run report of a run where nothing got far: the page is still written and says so."""

from __future__ import annotations

from types import SimpleNamespace

from argus_tasks import run_report_html
from argus_tasks.run_outcome import run_outcomes
from argus_tasks.steps.report import condition_row
from argus_tasks.store import RunStore


def test_a_run_whose_validation_failed_gets_a_page_naming_the_failure(tmp_path):
    run = RunStore(str(tmp_path), "argus_weather_training", "manual__1")
    run.write_text("pull/result.json", '{"revision": "v3", "n_frames": 12}')
    run.write_text("validate/failure.json", '{"message": "too many bad frames: 5 of 12"}')
    ctx = SimpleNamespace(run=run, run_id="manual__1", dag_id="argus_weather_training", git_commit="abc",
                          image="local")
    outcomes = run_outcomes(run, ["fog"])
    page = run_report_html.render(run_report_html.gather(ctx, outcomes, [condition_row("fog", outcomes)], []))
    assert "<span class='badge bad'>failed</span></h1>" in page
    assert "Steps that failed: validate." in page and "too many bad frames: 5 of 12" in page
    assert "no decision (not run)" in page and "no sample grid in this run" in page
    assert "revision <code>v3</code>, 12 frames" in page


def test_markdown_tables_bullets_and_images_become_html():
    page = run_report_html.markdown_page("t", "## QA\n\n- outcome: **passed**\n\n| a | b |\n|---|---|\n| 1 | 2 |\n"
                                              "\n![fog](grid_fog.png)\n", {"grid_fog.png": b"\x89PNG"})
    assert "<h2>QA</h2>" in page and "<p>outcome: <b>passed</b></p>" in page
    assert "<table><tr><th>a</th><th>b</th></tr><tr><td>1</td><td>2</td></tr></table>" in page
    assert "src='data:image/png;base64,iVBORw==' alt='fog'" in page
