"""``argus-task generation-report``: what a generation run made, in Markdown and pictures (store + MLflow + log).

Runs whatever happened upstream (trigger rule ``all_done``) and succeeds whenever it could write the
report; it names every step that failed and the first cause. From the run folder alone:

* the steps and their outcome (every ``<step>/`` or ``<step>/<x>/`` folder holding ``result.json`` or
  ``failure.json``);
* counts and throughput from the shard markers (planned, finished, frames per condition, frames/s);
* the QA outcome of ``check-outputs`` (per condition: checked, flagged, accepted; example reasons);
* the published revision (or why nothing was published) and how to pull it;
* ``grid_<condition>.png``: source | generated for a few accepted frames of each condition;
* ``lowest_fidelity.png``: source | generated for the frames of lowest label fidelity, listed in the report.

Everything lands in ``generation-report/`` of the run folder (``report.md`` and the PNGs).
"""

from __future__ import annotations

import argparse
import logging
import math

from argus_tasks.contract import StepContext
from argus_tasks.run_outcome import StepOutcome, step_outcome

HELP = "write the generation run's report (Markdown, sample grids, lowest-fidelity contact sheet)"
log = logging.getLogger("argus.generation_report")
OUT = "generation-report"
ORDER = ("pull", "validate", "segmenter", "resolve", "export", "plan-shards", "generate", "check-outputs", "publish")
N_GRID, N_WORST = 6, 8


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--conditions", required=True, help="comma-separated conditions of this run")
    p.add_argument("--output-dataset", default="", help="the output dataset the run publishes to (for the report)")


def step_outcomes(run) -> dict[str, StepOutcome]:
    """Every step folder of the run (one level of sub-folders too: ``export/fog``), in pipeline order."""
    found = {}
    for name in run.list(""):
        if name == OUT or name.startswith("."):
            continue
        for where in (name, *(f"{name}/{sub}" for sub in run.list(name))):
            outcome = step_outcome(run, where)
            if outcome.status != "not run":
                found[where] = outcome
    rank = {s: i for i, s in enumerate(ORDER)}
    return dict(sorted(found.items(), key=lambda kv: (rank.get(kv[0].split("/")[0], len(ORDER)), kv[0])))


def _first_line(text: str) -> str:
    return (text or "see its log").strip().splitlines()[0][:300]


def _fmt(v, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def _sources(run) -> dict[str, str]:
    """source frame id -> frame path in the run's data folder (empty when the pull left nothing)."""
    import pandas as pd

    if not run.exists("data/manifest.parquet"):
        return {}
    m = pd.read_parquet(run.localize("data/manifest.parquet"))
    return dict(zip(m["frame_id"].astype(str), m["frame_path"].astype(str), strict=True))


def _pictures(run, conditions, table, scores) -> tuple[dict[str, str], list[dict]]:
    """Write the grids and the contact sheet; ({name: url}, lowest-fidelity rows shown)."""
    from argus_tasks.generation.report_images import pairs_image

    sources = _sources(run)
    data, base = run.cache / "data", run.cache
    if sources:
        run.localize("data")
    if len(table):
        run.localize("generate")
    images, worst = {}, []
    good = scores[~scores["flagged"]] if scores is not None else table
    for c in conditions:
        rows = good[good["condition"] == c]
        pairs = [(data / sources[s], base / o) for s, o in zip(rows["source_frame_id"], rows["output"], strict=True)
                 if s in sources]
        png, n = pairs_image(pairs, limit=N_GRID)
        if png is not None:
            images[f"grid_{c}"] = run.write_bytes(f"{OUT}/grid_{c}.png", png)
            log.info("sample grid of %s: %d frame(s), source | generated", c, n)
    if scores is not None:
        ranked = scores[scores["label_fidelity"].notna()].sort_values("label_fidelity", kind="stable")
        ranked = ranked[ranked["source_frame_id"].isin(list(sources))].head(N_WORST)
        png, n = pairs_image([(data / sources[s], base / o) for s, o in zip(ranked["source_frame_id"],
                                                                            ranked["output"], strict=True)],
                             limit=N_WORST)
        if png is not None:
            images["lowest_fidelity"] = run.write_bytes(f"{OUT}/lowest_fidelity.png", png)
            worst = ranked.head(n)[["frame_id", "condition", "label_fidelity", "reasons"]].to_dict("records")
    return images, worst


def render(ctx, conditions, outcomes, outputs, problems, throughput, worst, images, dataset) -> str:
    check, publish = outcomes.get("check-outputs"), outcomes.get("publish")
    failed = [w for w, o in outcomes.items() if o.status == "failed"]
    lines = [f"# argus_weather_generation report: `{ctx.run_id}`", "",
             f"- outcome: **{'failed' if failed else 'succeeded'}**"
             + (f"; failed: {', '.join(failed)}" if failed else ""),
             f"- conditions: {', '.join(conditions)}; output dataset: `{dataset or '-'}`"]
    pull = ctx.run.read_json("data/pull.json") if ctx.run.exists("data/pull.json") else {}
    lines.append(f"- source: revision `{pull.get('revision', '-')}` (commit `{str(pull.get('commit', '-'))[:12]}`)"
                 + (f", {pull['n_frames']} frames pulled" if "n_frames" in pull else ""))
    models = outputs.table.groupby("condition")["model_version"].unique().to_dict() if len(outputs.table) else {}
    lines.append("- models: " + (", ".join(f"{c} v{', v'.join(map(str, v))}" for c, v in sorted(models.items()))
                                 or "-"))
    lines.append(f"- code: `{ctx.git_commit}`, image `{ctx.image}`")
    lines += ["", "## Steps", "", "| step | outcome | detail |", "|---|---|---|"]
    for where, o in outcomes.items():
        detail = _first_line(o.error) if o.status == "failed" else ("reused" if o.result.get("reused") else "")
        lines.append(f"| {where} | {o.status} | {detail.replace('|', '/')} |")
    total = throughput["total"]
    lines += ["", "## Generation", "",
              f"- shards: {len(outputs.markers)} finished of {len(outputs.planned) or '?'} planned"
              + (f"; problems: {'; '.join(problems[:5])}" if problems else ""),
              f"- frames: {total['frames']} ({total['generated']} generated, {total['reused']} reused) in "
              f"{_fmt(total['seconds'], 1)} s of shard time: {_fmt(total['frames_per_second'], 2)} frames/s", "",
              "| condition | shards | frames | generated | reused | seconds | frames/s |", "|---|---|---|---|---|---|---|"]
    for c, d in sorted(throughput["per_condition"].items()):
        lines.append(f"| {c} | {d['shards']} | {d['frames']} | {d['generated']} | {d['reused']} | "
                     f"{_fmt(d['seconds'], 1)} | {_fmt(d['frames_per_second'], 2)} |")
    lines += ["", "## Quality checks (GX suite argus_output_gate)", ""]
    if check is None:
        lines.append("- check-outputs did not run")
    elif check.status == "failed":
        lines += ["- **failed**; nothing may be published:", "", "```", check.error.strip()[:4000], "```"]
    else:
        r = check.result
        lines += [f"- outcome: **{r.get('outcome')}**: {r.get('accepted')} accepted, {r.get('flagged')} flagged of "
                  f"{r.get('n_outputs')} (judge {r.get('judge', {}).get('model_name', '-')} "
                  f"v{r.get('judge', {}).get('version', '-')}); Data Docs: {r.get('data_docs', '-')}", "",
                  "| condition | checked | flagged | accepted | bad fraction |", "|---|---|---|---|---|"]
        for c, d in r.get("per_condition", {}).items():
            lines.append(f"| {c} | {d['outputs']} | {d['flagged']} | {d['accepted']} | {d['bad_fraction']:.2%} |")
        if r.get("flagged_examples"):
            lines += ["", "Flagged frames (left out of the published dataset):", ""]
            lines += [f"- {e}" for e in r["flagged_examples"]]
    lines += ["", "## Published", ""]
    if publish is None:
        lines.append("- nothing published: publish did not run")
    elif publish.status == "failed":
        lines.append(f"- nothing published: {_first_line(publish.error)}")
    else:
        r = publish.result
        lines += [f"- `{r['output_dataset']}` **{r['revision']}** (commit `{str(r['commit'])[:12]}`), "
                  f"{r['n_frames']} frames" + (" (already published: nothing changed)" if r.get("already_published")
                                              else ""), f"- get it: `{r['how_to_pull']}`"]
    lines += ["", "## Samples (source | generated)", ""]
    lines += [f"- {c}: ![{c}]({name}.png)" for c in conditions if (name := f"grid_{c}") in images] or ["- none"]
    lines += ["", "## Lowest label fidelity", ""]
    if worst:
        lines += ["![lowest fidelity](lowest_fidelity.png)", "", "| frame | condition | label fidelity | flagged for |",
                  "|---|---|---|---|"]
        lines += [f"| {w['frame_id']} | {w['condition']} | {_fmt(w['label_fidelity'])} | {w['reasons'] or '-'} |"
                  for w in worst]
    else:
        lines.append("- no frame was scored")
    lines += ["", f"Run folder: `{ctx.run.url()}`"]
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace, ctx: StepContext) -> dict:
    from argus_tasks.generation.shard_reader import read_present, shard_throughput

    conditions = [c.strip() for c in args.conditions.split(",") if c.strip()]
    outcomes = step_outcomes(ctx.run)
    outputs, problems = read_present(ctx.run)
    throughput = shard_throughput(outputs.markers)
    scores_file = "check-outputs/scores.parquet"
    scores = ctx.run.read_dataframe(scores_file) if ctx.run.exists(scores_file) else None
    try:
        images, worst = _pictures(ctx.run, conditions, outputs.table, scores)
    except Exception as exc:  # noqa: BLE001 - the report must not be lost for a picture
        log.warning("could not draw the report's pictures (%s: %s)", type(exc).__name__, exc)
        images, worst = {}, []
    markdown = render(ctx, conditions, outcomes, outputs, problems, throughput, worst, images, args.output_dataset)
    url = ctx.run.write_text(f"{OUT}/report.md", markdown)
    log.info("generation report (%s):\n%s", url, markdown)
    from argus_tasks.run_report_html import markdown_page

    pngs = {f"{name}.png": ctx.run.read_bytes(f"{OUT}/{name}.png") for name in images
            if ctx.run.exists(f"{OUT}/{name}.png")}
    page = markdown_page(f"argus_weather_generation {ctx.run_id}", markdown, pngs)
    html_url = ctx.run.write_text(f"{OUT}/index.html", page)
    log.info("HTML generation report: %s", html_url)
    failed = [w for w, o in outcomes.items() if o.status == "failed"]
    try:
        import mlflow

        from argus_tasks.tracking import step_run

        with step_run(ctx, "generation-report"):
            mlflow.log_text(markdown, "generation_report/report.md")
            mlflow.log_text(page, "generation_report/report.html")
            for name in images:
                mlflow.log_artifact(str(ctx.run.localize(f"{OUT}/{name}.png")), artifact_path="generation_report")
            mlflow.log_metrics({"frames": throughput["total"]["frames"], "failed_steps": len(failed),
                                **({"frames_per_second": throughput["total"]["frames_per_second"]}
                                   if throughput["total"]["frames_per_second"] else {})})
    except Exception as exc:  # noqa: BLE001 - the report must not be lost because MLflow is down
        log.warning("could not log the generation report to MLflow (%s); it is in %s", exc, url)
    if failed:
        first = outcomes[failed[0]]
        log.warning("steps that failed in this run: %s. First cause: %s failed: %s", ", ".join(failed), failed[0],
                    _first_line(first.error))
    check, publish = outcomes.get("check-outputs"), outcomes.get("publish")
    qa = check.result.get("outcome") if check and check.status == "succeeded" else (check.status if check else "not run")
    return {"report": url, "html_report": html_url, "images": images, "failed_steps": failed,
            "first_failure": f"{failed[0]} failed: {_first_line(outcomes[failed[0]].error)}" if failed else "",
            "throughput": throughput, "qa_outcome": qa,
            "published": publish.result if publish and publish.status == "succeeded" else None,
            "lowest_fidelity": worst}
