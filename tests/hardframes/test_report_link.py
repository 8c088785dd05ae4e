"""The training report links each condition's gallery and names a failed hard-frames step."""

from __future__ import annotations

from argus_tasks.contract import StepContext
from argus_tasks.steps import report


def test_the_report_links_the_gallery_and_says_when_hard_frames_failed(tmp_path):
    ctx = StepContext.from_env({"ARGUS_STORE": str(tmp_path), "ARGUS_DAG_ID": "argus_weather_training",
                                "ARGUS_RUN_ID": "r1"})
    gallery = ctx.run.url("hard-frames/fog/gallery/index.html")
    ctx.run.write_json("hard-frames/fog/result.json", {
        "hard_set": "ab" * 32, "n_frames": 7, "n_evaluations": 3, "provisional": False, "gallery": gallery,
        "top_groups": [{"value": "building+sky | dim", "n_hard": 4, "n_scored": 12}]})
    ctx.run.write_json("hard-frames/rain/failure.json", {"message": "the store is read-only\nmore"})
    outcomes = report.run_outcomes(ctx.run, ["fog", "rain", "snow"])
    rows = [report.condition_row(c, outcomes) for c in ("fog", "rain", "snow")]
    md = report.render_markdown(ctx, outcomes, rows)
    assert "## Hard frames" in md
    assert (f"- **fog**: hard set `abababababab`: 7 frame(s) from 3 evaluation(s); top groups: building+sky | dim "
            f"(4 of 12); gallery: [{gallery}]({gallery})") in md
    assert "- **rain**: hard-frames failed: the store is read-only" in md
    assert "- **snow**: not run" in md
