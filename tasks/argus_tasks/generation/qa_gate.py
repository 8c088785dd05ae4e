"""Running the GX output gate (checkpoint ``argus_output_gate``) on the two tables of generated frames.

As for the input gate (:mod:`argus_tasks.data.gate`), GX reports and the step decides: the tables are
written under ``workdir/tables``, the checkpoint runs in a private copy of the committed project
(``workdir/gx``, Data Docs copied to ``workdir/data_docs``) and every failed expectation is sorted by
its ``meta.level``: ``frame`` failures become reasons attached to rows of ``generated_outputs``
(frames to flag and exclude), ``dataset`` failures condemn the run's outputs as a whole.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import time
from pathlib import Path

from argus_tasks.data import gx_outputs as go
from argus_tasks.data import gx_project as gp
from argus_tasks.data.gate import GateResult, _failure, run_checkpoint

log = logging.getLogger(__name__)
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")


def _index(idx) -> int:
    """A row index of GX's ``unexpected_index_list`` (an int, or a dict naming it for multi-column checks)."""
    if isinstance(idx, dict):
        idx = idx.get("index", next(iter(idx.values())))
    return int(idx)


def _value(v) -> str:
    try:
        return f"{float(v):.4f}" if not isinstance(v, str) else v
    except (TypeError, ValueError):
        return str(v)


def run_output_gate(tables: dict, manifest_rows: list[int], workdir: Path, *, params: dict,
                    run_name: str) -> GateResult:
    """Validate ``tables`` (``generated_manifest`` and ``generated_outputs``) under ``workdir``.

    ``manifest_rows[i]`` is the ``generated_outputs`` row of row ``i`` of ``generated_manifest``;
    ``GateResult.bad_rows`` is keyed by ``generated_outputs`` rows.
    """
    started = time.time()
    workdir = Path(workdir)
    result, project = run_checkpoint(tables, go.OUTPUT_TABLES, workdir, go.OUTPUT_CHECKPOINT, params, run_name)
    checks = tables["generated_outputs"]
    dataset_failures, frame_failures, bad_rows, stats = [], [], {}, {}
    for vr in result.run_results.values():
        table = vr.suite_name.removeprefix("argus_")
        stats[table] = {k: vr.statistics.get(k) for k in ("evaluated_expectations", "successful_expectations",
                                                          "unsuccessful_expectations")}
        for r in vr.results:
            if r.success:
                continue
            failure = _failure(vr.suite_name, r, tables[table])
            indices = [_index(i) for i in ((r.result or {}).get("unexpected_index_list") or [])]
            if failure.level != "frame" or not indices:
                failure.level = "dataset"
                dataset_failures.append(failure)
                continue
            frame_failures.append(failure)
            column = failure.column
            for idx in indices:
                row = idx if table == "generated_outputs" else manifest_rows[idx]
                if column in go.OUTPUT_CHECKS:
                    reason = str(checks["reason"].iloc[row] or "") or failure.reason
                elif column in go.NUMERIC_CHECKS and column in checks.columns:
                    value = checks[column].iloc[row]
                    reason = f"{failure.reason} ({column} = {_value(value) if not _nan(value) else 'NaN'})"
                else:
                    reason = f"{failure.reason} ({column or ', '.join(r.expectation_config.kwargs.get('column_list', []))})"
                reasons = bad_rows.setdefault(row, [])
                if reason not in reasons:
                    reasons.append(reason)
    site = project / "uncommitted" / "data_docs" / gp.DOCS_SITE
    docs = workdir / "data_docs"
    shutil.rmtree(docs, ignore_errors=True)
    if site.is_dir():
        shutil.copytree(site, docs)
    result_id = f"{go.OUTPUT_CHECKPOINT}/{result.run_id.run_name}/{result.run_id.run_time:%Y%m%dT%H%M%S.%fZ}"
    return GateResult(result_id=result_id, success=bool(result.success), dataset_failures=dataset_failures,
                      frame_failures=frame_failures, bad_rows=bad_rows, data_docs=docs / "index.html",
                      statistics=stats, seconds=time.time() - started)


def _nan(value) -> bool:
    try:
        return math.isnan(float(value))
    except (TypeError, ValueError):
        return False
