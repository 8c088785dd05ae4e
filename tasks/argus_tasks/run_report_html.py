"""The training run's HTML report: one self-contained page (images inlined) in the run folder and in MLflow.

What it shows: the outcome of every step of the DAG run, then per condition the decision with its reasons
and intervals, the metrics of the challenger, the champion and the references, the sample grid (clear |
generated | real), the champion history plot, and links to the hard-frame gallery, the Data Docs and the
MLflow runs. Links go to the MLflow UI when an MLflow server is configured; local paths appear only for a
local store. ``render`` is pure: it takes what ``gather`` read.
"""

from __future__ import annotations

import base64
import html
import os
import re
from dataclasses import dataclass, field

from argus_tasks.run_outcome import StepOutcome, step_outcome

STATUS_CLASS = {"succeeded": "ok", "failed": "bad", "not run": "skip"}
METRIC_ROWS = (("classwise_gap", "class-wise gap", "lower is better"), ("kid", "KID", "lower is better"),
               ("label_preservation", "label fidelity", "higher is better"))
COMPARISONS = {"gap_vs_champion": "class-wise gap, challenger − champion",
               "kid_vs_champion": "KID, challenger − champion",
               "gap_vs_identity": "class-wise gap, challenger − identity",
               "gap_vs_reference": "class-wise gap, challenger − best reference"}
CSS = """
body{font:14px/1.45 system-ui,sans-serif;margin:24px auto;max-width:1180px;color:#1d2330;padding:0 16px}
h1{font-size:22px;margin-bottom:4px}h2{margin-top:34px;border-bottom:2px solid #dde3ee;padding-bottom:4px}
table{border-collapse:collapse;margin:8px 0 14px}td,th{border:1px solid #d5dbe6;padding:4px 9px;text-align:left}
th{background:#f2f5fa}.num{text-align:right;font-variant-numeric:tabular-nums}
.badge{display:inline-block;border-radius:10px;padding:1px 10px;font-weight:600;font-size:13px}
.ok{background:#dff3e4;color:#17602d}.bad{background:#fbe2e2;color:#8b1b1b}.skip{background:#eceff4;color:#566}
.wait{background:#fff3d6;color:#7a5300}.meta{color:#566;margin:2px 0}.cols{display:flex;gap:22px;flex-wrap:wrap}
figure{margin:0}figcaption{color:#566;font-size:12px;max-width:520px}img{border:1px solid #d5dbe6}
.note{background:#f6f8fb;border-left:4px solid #9fb3d1;padding:6px 12px;margin:10px 0}
"""


@dataclass
class ConditionView:
    condition: str
    row: dict  # steps.report.condition_row
    decision: dict = field(default_factory=dict)  # promote's result
    metrics: dict = field(default_factory=dict)  # evaluate's metrics: {model: {classwise_gap, kid, ...}}
    grid_png: bytes | None = None
    history_png: bytes | None = None
    gallery: str | None = None  # a link
    mlflow: dict = field(default_factory=dict)  # step -> link of its MLflow run


@dataclass
class ReportView:
    run_id: str
    dag_id: str
    outcomes: dict[str, StepOutcome]
    conditions: list[ConditionView]
    facts: list[tuple[str, str]]  # (label, html-safe value)
    data_docs: str | None
    cost_lines: list[str]
    failed_steps: list[str]


def _e(value) -> str:
    return html.escape(str(value))


def _img(png: bytes | None, alt: str, width: int) -> str:
    if not png:
        return f"<p class='meta'>no {_e(alt)} in this run</p>"
    data = base64.b64encode(png).decode()
    return f"<img src='data:image/png;base64,{data}' alt='{_e(alt)}' width='{width}'>"


def _link(href: str | None, text: str) -> str:
    return f"<a href='{_e(href)}'>{_e(text)}</a>" if href else f"<span class='meta'>{_e(text)}: none</span>"


def _num(value, digits: int = 4) -> str:
    from argus_tasks.steps.report import _fmt  # the Markdown report's number format

    return _e(_fmt(value, digits))


def _status(status: str) -> str:
    return f"<span class='badge {STATUS_CLASS.get(status, 'skip')}'>{_e(status)}</span>"


def step_table(view: ReportView) -> str:
    names = [c.condition for c in view.conditions]
    shared = [w for w in view.outcomes if "/" not in w]
    per = sorted({w.split("/", 1)[0] for w in view.outcomes if "/" in w},
                 key=lambda s: ("train", "evaluate", "hard-frames", "promote").index(s)
                 if s in ("train", "evaluate", "hard-frames", "promote") else 9)
    rows = [f"<tr><th>{_e(w)}</th><td colspan='{len(names)}'>{_status(view.outcomes[w].status)}"
            f"{' ' + _e(view.outcomes[w].error.splitlines()[0]) if view.outcomes[w].error else ''}</td></tr>"
            for w in shared]
    for step in per:
        cells = "".join(f"<td>{_status(view.outcomes[f'{step}/{c}'].status)}</td>"
                        if f"{step}/{c}" in view.outcomes else "<td>-</td>" for c in names)
        rows.append(f"<tr><th>{_e(step)}</th>{cells}</tr>")
    head = "".join(f"<th>{_e(c)}</th>" for c in names)
    return f"<table><tr><th>step</th>{head}</tr>{''.join(rows)}</table>"


def decision_badge(row: dict) -> str:
    verdict = row["decision"]
    cls = "ok" if verdict == "PROMOTED" else "wait" if verdict == "not promoted" else "bad"
    return f"<span class='badge {cls}'>{_e(verdict)}</span>"


def comparisons_table(decision: dict) -> str:
    comps = decision.get("comparisons") or {}
    rows = []
    for key, c in comps.items():
        if not isinstance(c, dict) or "point" not in c:
            continue
        lo, hi = c.get("lo"), c.get("hi")
        rows.append(f"<tr><td>{_e(COMPARISONS.get(key, key))}</td><td class='num'>{_num(c.get('point'))}</td>"
                    f"<td class='num'>[{_num(lo)}, {_num(hi)}]</td><td>{_e(c.get('other', ''))}</td></tr>")
    if not rows:
        return ""
    return ("<table><tr><th>comparison</th><th>difference</th><th>95% interval</th><th>against</th></tr>"
            + "".join(rows) + "</table>")


def metrics_table(metrics: dict) -> str:
    if not metrics:
        return "<p class='meta'>no evaluation metrics (evaluate did not succeed)</p>"
    models = list(metrics)
    head = "".join(f"<th>{_e(m)}</th>" for m in models)
    body = "".join(f"<tr><td>{label} <span class='meta'>({hint})</span></td>"
                   + "".join(f"<td class='num'>{_num((metrics[m] or {}).get(key))}</td>" for m in models) + "</tr>"
                   for key, label, hint in METRIC_ROWS)
    return f"<table><tr><th>metric</th>{head}</tr>{body}</table>"


def condition_section(c: ConditionView) -> str:
    r = c.row
    reasons = "".join(f"<li>{_e(x)}</li>" for x in (c.decision.get("reasons") or [r["reasons"] or "-"]))
    links = " · ".join([_link(c.gallery, "hard-frame gallery")]
                       + [_link(url, f"MLflow: {step}") for step, url in c.mlflow.items()])
    return f"""
<h2 id='{_e(c.condition)}'>{_e(c.condition)} {decision_badge(r)}</h2>
<p class='meta'>challenger v{_e(r['challenger_version'] or '-')} · champion now v{_e(r['champion_version'] or '-')}
 · {links}</p>
<ul>{reasons}</ul>
{comparisons_table(c.decision)}
{metrics_table(c.metrics)}
<div class='cols'>
<figure><div class='meta' style='display:flex;width:300px;justify-content:space-around'><b>clear</b>
<b>generated</b><b>real</b></div>{_img(c.grid_png, 'sample grid', 300)}<figcaption>Each row: the clear source | the challenger's
{_e(c.condition)} version (it keeps the source's labels) | a real {_e(c.condition)} frame.</figcaption></figure>
<figure>{_img(c.history_png, 'champion history', 620)}<figcaption>Champion history: the key metrics of every
evaluated version with their intervals; promotions and rollbacks marked.</figcaption></figure>
</div>"""


def _inline(text: str) -> str:
    return re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", re.sub(r"`([^`]+)`", r"<code>\1</code>", _e(text)))


def _inline_images(text: str, images: dict[str, bytes]) -> str:
    def one(m):
        png = images.get(m[2])
        return _img(png, m[1], 760) if png else _e(m[0])
    return re.sub(r"!\[([^\]]*)\]\(([^)]+)\)", one, text)


def markdown_block(lines: list[str], images: dict[str, bytes] | None = None) -> str:
    """The Markdown the reports write (headings, bullets, tables, code blocks, images) as HTML; images by file
    name from ``images`` are inlined."""
    out, table, code = [], [], None
    for line in [*lines, ""]:
        if line.startswith("```"):
            if code is None:
                code = []
            else:
                out.append(f"<pre>{_e(chr(10).join(code))}</pre>")
                code = None
            continue
        if code is not None:
            code.append(line)
            continue
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if not all(set(c) <= set("-: ") for c in cells):
                table.append(cells)
            continue
        if table:
            head, *body = table
            out.append("<table><tr>" + "".join(f"<th>{_inline(c)}</th>" for c in head) + "</tr>" + "".join(
                "<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in row) + "</tr>" for row in body) + "</table>")
            table = []
        if line.startswith("- "):
            out.append(f"<p>{_inline_images(_inline(line[2:]), images or {})}</p>")
        elif line.startswith("#"):
            level = min(len(line) - len(line.lstrip("#")), 3)
            out.append(f"<h{level}>{_inline(line.lstrip('#').strip())}</h{level}>")
        elif line.startswith("!["):
            out.append(f"<p>{_inline_images(line, images or {})}</p>")
        elif line.strip():
            out.append(f"<p>{_inline(line)}</p>")
    return "".join(out)


def markdown_page(title: str, markdown: str, images: dict[str, bytes]) -> str:
    """A self-contained page of a Markdown report (the generation run's), its PNGs inlined."""
    return (f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{_e(title)}</title>"
            f"<style>{CSS}</style></head><body>{markdown_block(markdown.splitlines(), images)}</body></html>\n")


def render(view: ReportView) -> str:
    outcome = "failed" if view.failed_steps else "succeeded"
    facts = "".join(f"<p class='meta'><b>{_e(k)}</b>: {v}</p>" for k, v in view.facts)
    failed = (f"<div class='note'>Steps that failed: {_e(', '.join(view.failed_steps))}. Their logs are in Airflow; "
              f"their error is in the step's failure.json.</div>" if view.failed_steps else "")
    toc = " · ".join(f"<a href='#{_e(c.condition)}'>{_e(c.condition)}</a> {decision_badge(c.row)}"
                     for c in view.conditions)
    cost = markdown_block(view.cost_lines)
    return f"""<!doctype html><html lang='en'><head><meta charset='utf-8'>
<title>{_e(view.dag_id)} · {_e(view.run_id)}</title><style>{CSS}</style></head><body>
<h1>{_e(view.dag_id)} run report <span class='badge {'bad' if view.failed_steps else 'ok'}'>{outcome}</span></h1>
<p class='meta'>run <code>{_e(view.run_id)}</code></p>{facts}
<p>{toc}</p>{failed}
<h2>Steps</h2>{step_table(view)}
<p class='meta'>Data Docs of the validation: {_link(view.data_docs, 'Great Expectations Data Docs')}</p>
{''.join(condition_section(c) for c in view.conditions)}
<h2>GPU time and cost</h2>{cost}
</body></html>
"""


def artifact_link(run_store, relpath: str, report_dir: str = "report") -> str | None:
    """A link from the report page to a file of the run folder: relative for a local store, else its URL."""
    if not run_store.exists(relpath):
        return None
    url = run_store.url(relpath)
    if "://" in url and not url.startswith("file://"):
        return url
    depth = report_dir.count("/") + 1
    return "../" * depth + relpath


def mlflow_links(results: dict[str, dict]) -> dict[str, str]:
    """step -> its MLflow run page, for the steps whose result names an MLflow run."""
    ui = os.environ.get("ARGUS_MLFLOW_UI", "http://localhost:5000")
    out = {}
    try:
        import mlflow

        client = mlflow.MlflowClient()
        for step, result in results.items():
            run_id = (result or {}).get("mlflow_run_id")
            if run_id:
                exp = client.get_run(run_id).info.experiment_id
                out[step] = f"{ui}/#/experiments/{exp}/runs/{run_id}"
    except Exception:  # noqa: BLE001 - MLflow down: the report goes without the links
        pass
    return out


def _png(run_store, relpath: str) -> bytes | None:
    return run_store.read_bytes(relpath) if run_store.exists(relpath) else None


def gather(ctx, outcomes: dict[str, StepOutcome], rows: list[dict], cost_lines: list[str]) -> ReportView:
    """Read what the page shows from the run folder (and the MLflow run links); nothing is computed here."""
    run = ctx.run
    outcomes = dict(outcomes)
    for row in rows:  # the hard-frames step beside promote
        where = f"hard-frames/{row['condition']}"
        outcomes[where] = step_outcome(run, where)
    views = []
    for row in rows:
        c = row["condition"]
        results = {step: outcomes[f"{step}/{c}"].result for step in ("train", "evaluate", "hard-frames", "promote")
                   if outcomes[f"{step}/{c}"].status == "succeeded"}
        views.append(ConditionView(
            condition=c, row=row, decision=results.get("promote", {}),
            metrics=(results.get("evaluate", {}).get("metrics") or {}),
            grid_png=_png(run, f"evaluate/{c}/grids/challenger.png"),
            history_png=_png(run, f"promote/{c}/champion_history.png"),
            gallery=artifact_link(run, f"hard-frames/{c}/gallery/index.html"),
            mlflow=mlflow_links(results)))
    pull = outcomes["pull"].result if outcomes["pull"].status == "succeeded" else {}
    judge = outcomes["segmenter"].result if outcomes["segmenter"].status == "succeeded" else {}
    facts = [("dataset", f"revision <code>{_e(pull.get('revision', '-'))}</code>, {_e(pull.get('n_frames', '-'))} "
                         f"frames, fingerprint <code>{_e(str(pull.get('fingerprint', '-'))[:16])}</code>"),
             ("judge", f"{_e(judge.get('model_name', '-'))} v{_e(judge.get('version', '-'))}, clear mIoU "
                       f"{_num(judge.get('miou'), 3)}"),
             ("code", f"<code>{_e(ctx.git_commit)}</code>, image <code>{_e(ctx.image)}</code>"),
             ("run folder", f"<code>{_e(run.url())}</code>")]
    failed = [w for w, o in outcomes.items() if o.status == "failed"]
    return ReportView(run_id=ctx.run_id, dag_id=ctx.dag_id, outcomes=outcomes, conditions=views, facts=facts,
                      data_docs=artifact_link(run, "validate/data_docs/index.html"), cost_lines=cost_lines,
                      failed_steps=failed)
