"""Running the GX checkpoint of the validation gate and reading its result.

GX reports; it does not decide. :func:`run_gate` writes the four tables of a run, runs the
checkpoint ``argus_data_gate`` in a private copy of the committed project (Data Docs included) and
sorts every failed expectation by its ``meta.level``: ``frame`` failures become reasons attached to
manifest rows (candidates for quarantine), ``dataset`` failures (and any expectation that could
not even be evaluated) condemn the dataset. The caller (the validate step) takes the decision.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from argus_tasks.data import gx_project as gp
from argus_tasks.data.schema import CONDITIONS_ALL, SPLITS

log = logging.getLogger(__name__)
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")


@dataclass
class Failure:
    suite: str
    expectation: str
    column: str
    level: str
    reason: str
    unexpected_count: int | None = None
    examples: list = field(default_factory=list)
    observed: str = ""

    def describe(self) -> str:
        where = f"({self.column})" if self.column else ""
        detail = self.reason
        if self.unexpected_count:
            detail += f": {self.unexpected_count} unexpected value(s)"
            if self.examples:
                detail += f", e.g. {self.examples[:3]}"
        elif self.observed:
            detail += f": {self.observed[:200]}"
        return f"{self.expectation}{where} [{self.suite}]: {detail}"


@dataclass
class GateResult:
    result_id: str
    success: bool
    dataset_failures: list[Failure]
    frame_failures: list[Failure]
    bad_rows: dict[int, list[str]]
    data_docs: Path
    statistics: dict
    seconds: float


def group_table(manifest):
    """Frames per condition and split, with a row (maybe 0) for every pair of the schema."""
    import pandas as pd

    counts = {}
    if {"condition", "split"} <= set(manifest.columns):
        counts = manifest.groupby(["condition", "split"], dropna=True).size().to_dict()
    rows = [(c, s, int(counts.get((c, s), 0))) for c in CONDITIONS_ALL for s in SPLITS]
    df = pd.DataFrame(rows, columns=["condition", "split", "n_frames"])
    return df.astype({"condition": "string", "split": "string", "n_frames": "int64"})


def condition_table(manifest):
    """One row: the average ``brightness_mean`` of each condition (NaN where there are no frames)."""
    import pandas as pd

    means = {}
    if {"condition", "brightness_mean"} <= set(manifest.columns):
        values = pd.to_numeric(manifest["brightness_mean"], errors="coerce")
        means = values.groupby(manifest["condition"]).mean().to_dict()
    return pd.DataFrame([{f"{c}_mean_brightness": float(means.get(c, float("nan"))) for c in CONDITIONS_ALL}])


def _exception_message(r) -> str:
    """The error of an expectation that could not be evaluated ('' when it was evaluated)."""
    info = r.exception_info or {}
    candidates = [info, *(v for v in info.values() if isinstance(v, dict))]
    for c in candidates:
        if c.get("raised_exception"):
            return str(c.get("exception_message") or "evaluation failed")
    return ""


def _failure(suite: str, r, table) -> Failure:
    cfg = r.expectation_config
    meta = cfg.meta or {}
    level = meta.get("level", "dataset")
    res = r.result or {}
    column = str(cfg.kwargs.get("column", "") or "")
    error = _exception_message(r)
    if column and column not in table.columns:
        level, observed = "dataset", f"column {column!r} is missing"
    elif error:
        level, observed = "dataset", error  # could not be evaluated: nothing to attribute to frames
    elif cfg.type == "expect_table_columns_to_match_set":
        expected = list(cfg.kwargs.get("column_set") or [])
        missing = [c for c in expected if c not in table.columns]
        extra = [c for c in table.columns if c not in expected]
        observed = "; ".join(x for x in (f"missing {missing}" if missing else "",
                                         f"unexpected {extra}" if extra else "") if x)
    else:
        observed = str(res.get("observed_value", "")) if res.get("observed_value") is not None else ""
    return Failure(
        suite=suite, expectation=cfg.type, column=column, level=level,
        reason=meta.get("reason", cfg.type), unexpected_count=None if observed else res.get("unexpected_count"),
        examples=[str(x) for x in (res.get("partial_unexpected_list") or [])[:5]], observed=observed)


def run_checkpoint(tables: dict, names, workdir: Path, checkpoint: str, params: dict, run_name: str):
    """Write ``tables[names]`` as Parquet under ``workdir``, run ``checkpoint`` of a run copy of the GX
    project over them; (GX's checkpoint result, the run copy's folder). Shared by the input and output gates."""
    logging.getLogger("great_expectations").setLevel(logging.WARNING)  # before the import: it logs while loading
    from great_expectations.core.run_identifier import RunIdentifier

    import great_expectations as gx

    workdir = Path(workdir)
    table_dir = workdir / "tables"
    shutil.rmtree(table_dir, ignore_errors=True)
    table_dir.mkdir(parents=True)
    for name in names:
        tables[name].to_parquet(table_dir / f"{name}.parquet", index=False)
    root = gp.gx_root()
    project = gp.run_copy(root, workdir / "gx", table_dir)
    log.info("running GX checkpoint %s of %s (run copy %s)", checkpoint, root, project)
    context = gx.get_context(mode="file", context_root_dir=str(project))
    result = context.checkpoints.get(checkpoint).run(expectation_parameters=params,
                                                     run_id=RunIdentifier(run_name=run_name))
    return result, project


def run_gate(tables: dict, workdir: Path, *, min_frames: int, run_name: str) -> GateResult:
    """Validate ``tables`` (name -> DataFrame, the four of :data:`gx_project.TABLES`) under ``workdir``."""
    started = time.time()
    workdir = Path(workdir)
    result, project = run_checkpoint(tables, gp.TABLES, workdir, gp.CHECKPOINT, {gp.MIN_FRAMES_PARAM: int(min_frames)},
                            run_name)
    dataset_failures, frame_failures, bad_rows = [], [], {}
    frame_checks = tables["frame_checks"]
    stats = {}
    for vr in result.run_results.values():
        suite = vr.suite_name
        table = suite.removeprefix("argus_")
        stats[table] = {k: vr.statistics.get(k) for k in ("evaluated_expectations", "successful_expectations",
                                                          "unsuccessful_expectations")}
        for r in vr.results:
            if r.success:
                continue
            failure = _failure(suite, r, tables[table])
            rows = (r.result or {}).get("unexpected_index_list") or []
            if failure.level == "frame" and table in ("manifest", "frame_checks") and rows:
                frame_failures.append(failure)
                for idx in rows:
                    row = int(idx if table == "manifest" else frame_checks["row"].iloc[int(idx)])
                    reason = failure.reason
                    if table == "frame_checks":
                        detail = str(frame_checks["reason"].iloc[int(idx)] or "")
                        reason = detail or reason
                    if failure.column and table == "manifest":
                        reason = f"{reason} ({failure.column})"
                    bad_rows.setdefault(row, [])
                    if reason not in bad_rows[row]:
                        bad_rows[row].append(reason)
            else:
                failure.level = "dataset"
                dataset_failures.append(failure)
    site = project / "uncommitted" / "data_docs" / gp.DOCS_SITE
    docs = workdir / "data_docs"
    shutil.rmtree(docs, ignore_errors=True)
    if site.is_dir():
        shutil.copytree(site, docs)
    result_id = f"{gp.CHECKPOINT}/{result.run_id.run_name}/{result.run_id.run_time:%Y%m%dT%H%M%S.%fZ}"
    return GateResult(result_id=result_id, success=bool(result.success), dataset_failures=dataset_failures,
                      frame_failures=frame_failures, bad_rows=bad_rows, data_docs=docs / "index.html",
                      statistics=stats, seconds=time.time() - started)
