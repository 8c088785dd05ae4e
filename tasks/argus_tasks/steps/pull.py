"""``argus-task pull``: materialise the frames of a dataset revision and data window in the run.

Reads the registry named by ``ARGUS_DATASET_REGISTRY`` (a path or git URL; its DVC remote, or the
``ARGUS_DVC_REMOTE`` override) and selects two sets of manifest rows of the revision:

* the **window** (what training sees): ``--window cumulative`` (the default) every frame captured
  before ``interval-end``; ``interval`` the frames captured in ``[interval-start, interval-end)``;
  ``all`` every frame of the revision;
* the **frozen evaluation set**: every frame of split ``val`` and ``test`` of the revision, across all
  intervals, whatever the window, so champion and challenger are judged on the same frames for a
  given revision. Its frame list hash (``eval_set_sha256``, :func:`access.frame_list_sha256`)
  is recorded in ``pull.json`` and the result.

The union of both is written to ``<run>/data/``: the frames, labels and depth maps at their relative
paths, the filtered ``manifest.parquet`` and ``pull.json``. Files come through a local content
cache, so pulling the same revision and window again transfers nothing and yields the same fingerprint.

The manifest is passed on as the registry holds it (the validate step judges it); the pull only
needs the columns it selects and names files with.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import time
from datetime import UTC, datetime
from pathlib import Path

from argus_tasks.contract import PermanentStepError, StepContext
from argus_tasks.data.schema import MANIFEST_COLUMNS

HELP = "Pull the frames of a dataset revision and data interval from the DVC registry into the run."
log = logging.getLogger(__name__)

PULL_COLUMNS = ("frame_id", "capture_time", "frame_path", "label_path", "condition", "split")
WINDOWS = ("cumulative", "interval", "all")
TRAIN_SPLIT = "train"
EVAL_SPLITS = ("val", "test")
PULL_JSON = "data/pull.json"
MANIFEST = "data/manifest.parquet"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset-rev", default="latest",
                        help="tag (v1, v2...), commit, or 'latest' (head of the registry's default branch)")
    parser.add_argument("--interval-start", default="",
                        help="ISO-8601 start of the data interval (inclusive; used by --window interval); empty: unbounded")
    parser.add_argument("--interval-end", default="",
                        help="ISO-8601 end of the data interval (exclusive); empty: unbounded")
    parser.add_argument("--window", choices=WINDOWS, default="cumulative",
                        help="training frames: 'cumulative' (default) every frame captured before the interval end; "
                             "'interval' frames captured in the interval; 'all' every frame of the revision. The "
                             "evaluation set (all val and test frames of the revision) is pulled whatever the window")


def parse_time(value: str, what: str):
    """An ISO-8601 instant as a UTC pandas Timestamp (naive means UTC); None for an empty string."""
    import pandas as pd

    if value is None or not str(value).strip() or str(value).strip().lower() == "none":
        return None
    try:
        ts = pd.Timestamp(str(value).strip())
    except (ValueError, TypeError) as exc:
        raise PermanentStepError(f"--{what} {value!r} is not an ISO-8601 date-time: {exc}") from exc
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def describe_interval(start, end) -> str:
    return f"[{start.isoformat() if start is not None else '-inf'}, {end.isoformat() if end is not None else '+inf'})"


def in_window(manifest, start, end, window: str):
    """Boolean Series: the rows of ``manifest`` captured in ``window`` (see the module docstring)."""
    import pandas as pd

    if window not in WINDOWS:
        raise PermanentStepError(f"--window {window!r} is not one of {', '.join(WINDOWS)}")
    keep = pd.Series(True, index=manifest.index)
    if window == "all":
        return keep
    times = pd.to_datetime(manifest["capture_time"], utc=True)
    if start is not None and window == "interval":
        keep &= times >= start
    if end is not None:
        keep &= times < end
    return keep


def select(manifest, start, end, window: str):
    """``(rows, n_window)``: the window's rows plus the frozen evaluation set, sorted by frame id."""
    window_rows = in_window(manifest, start, end, window)
    evaluation = manifest["split"].astype(str).isin(EVAL_SPLITS)
    rows = manifest[window_rows | evaluation]
    return rows.sort_values("frame_id", kind="stable").reset_index(drop=True), int(window_rows.sum())


def fingerprint(rows, commit: str) -> str:
    """sha256 over the revision's commit and the selected rows' ids and content hashes."""
    h = hashlib.sha256(f"argus-dataset-v1\n{commit}\n".encode())
    cols = [c for c in ("frame_id", "frame_sha256", "label_sha256") if c in rows.columns]
    for rec in rows[cols].astype(str).itertuples(index=False):
        h.update(("\t".join(rec) + "\n").encode())
    return h.hexdigest()


def counts_by(rows) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for (cond, split), n in rows.groupby(["condition", "split"], dropna=False).size().items():
        out.setdefault(str(cond), {})[str(split)] = int(n)
    return out


def depth_path(frame_path: str) -> str:
    return "depth/" + frame_path.split("/", 1)[1] if frame_path.startswith("frames/") else ""


def _sha256(path: Path) -> str:
    from argus_tasks.data.manifest import sha256_file

    return sha256_file(path)


def _remove_stale(data_dir: Path, keep: set[str]) -> int:
    """Delete files of an earlier, different pull of this run that the selection does not hold."""
    removed = 0
    for sub in ("frames", "labels", "depth"):
        base = data_dir / sub
        if base.is_dir():
            for p in base.rglob("*"):
                if p.is_file() and p.relative_to(data_dir).as_posix() not in keep:
                    p.unlink()
                    removed += 1
    return removed


def run(args: argparse.Namespace, ctx: StepContext) -> dict:
    import pandas as pd

    from argus_tasks.data.access import frame_list_sha256
    from argus_tasks.data.fetch import ObjectCache, RegistryClone, RevisionFiles, cache_root, materialise

    started = time.time()
    start = parse_time(args.interval_start, "interval-start")
    end = parse_time(args.interval_end, "interval-end")
    if start is not None and end is not None and end <= start and args.window == "interval":
        raise PermanentStepError(f"data interval {describe_interval(start, end)} is empty (end is not after start)")
    # an earlier pull of this run is withdrawn first: a failing rerun must not leave it looking complete
    for rel in (PULL_JSON, MANIFEST):
        (ctx.run.cache / rel).unlink(missing_ok=True)
        if ctx.run.remote and ctx.run.fs.exists(ctx.run.url(rel)):
            ctx.run.fs.rm(ctx.run.url(rel))
    cache = cache_root(ctx)
    clone = RegistryClone(ctx.dataset_registry, cache)
    clone.sync()
    commit = clone.resolve(args.dataset_rev)
    files = RevisionFiles(clone, commit, ObjectCache(cache), ctx.dvc_remote)
    try:
        log.info("pulling dataset revision %s (commit %s) of %s", args.dataset_rev, commit[:12], clone.url)
        manifest_obj = files.fetch(["manifest.parquet"])["manifest.parquet"]
        manifest = pd.read_parquet(manifest_obj)
        missing_cols = [c for c in PULL_COLUMNS if c not in manifest.columns]
        if missing_cols:
            raise PermanentStepError(
                f"the manifest of dataset revision {args.dataset_rev} ({commit[:12]}) lacks column(s) "
                f"{', '.join(missing_cols)} needed to select frames; the schema (argus_tasks/data/schema.py) "
                f"requires {', '.join(MANIFEST_COLUMNS)}. Fix the registry and add a new revision.")
        rows, n_window = select(manifest, start, end, args.window)
        interval = {"start": start.isoformat() if start is not None else "",
                    "end": end.isoformat() if end is not None else "", "window": args.window}
        if n_window == 0:
            times = pd.to_datetime(manifest["capture_time"], utc=True)
            span = f"{times.min().isoformat()} .. {times.max().isoformat()}" if len(times) else "no frames at all"
            what = ("captured before " + (end.isoformat() if end is not None else "+inf")
                    if args.window == "cumulative" else f"captured in the interval {describe_interval(start, end)}")
            raise PermanentStepError(
                f"no frames of dataset revision {args.dataset_rev} ({commit[:12]}) were {what} "
                f"(window {args.window!r}, interval {describe_interval(start, end)}); the revision covers {span}. "
                "Choose another interval or revision, or run with data_window='cumulative' or 'all'.")
        listing = files.listing()
        wanted = [*rows["frame_path"].astype(str), *rows["label_path"].astype(str)]
        wanted += [d for d in map(depth_path, rows["frame_path"].astype(str)) if d in listing]
        present = [p for p in dict.fromkeys(wanted) if p in listing]
        absent = sorted(set(wanted) - set(present))
        if absent:
            log.warning("%d file(s) named by the manifest are not in the revision, e.g. %s", len(absent), absent[:3])
        objects = files.fetch(present)
        data_dir = ctx.run.local_dir("data")
        copied = sum(materialise(objects[p], data_dir / p, listing[p]) for p in present)
        removed = _remove_stale(data_dir, set(present))
        mismatches = []
        for col, hcol in (("frame_path", "frame_sha256"), ("label_path", "label_sha256")):
            if hcol not in rows.columns:
                continue
            for rel, expected in zip(rows[col].astype(str), rows[hcol].astype(str), strict=True):
                if rel in listing and _sha256(data_dir / rel) != expected:
                    mismatches.append(rel)
        if mismatches:
            log.warning("%d file(s) differ from their manifest hash (left for validate to quarantine), e.g. %s",
                        len(mismatches), mismatches[:3])
        manifest_url = ctx.run.write_dataframe(MANIFEST, rows)
        fp = fingerprint(rows, commit)
        evaluation = rows[rows["split"].astype(str).isin(EVAL_SPLITS)]
        n_train = int((rows["split"].astype(str) == TRAIN_SPLIT).sum())
        result = {
            "revision": args.dataset_rev, "commit": commit, "registry": clone.url, "remote": files.remote(),
            "manifest": manifest_url, "counts": counts_by(rows), "n_frames": int(len(rows)),
            "fingerprint": fp, "interval": interval, "window": args.window, "n_window_frames": n_window,
            "n_train_frames": n_train, "n_eval_frames": int(len(evaluation)),
            "eval_splits": list(EVAL_SPLITS), "eval_set_sha256": frame_list_sha256(evaluation),
            "transferred": files.transferred, "copied": copied,
            "removed_stale": removed, "missing_files": absent[:50], "n_missing_files": len(absent),
            "hash_mismatches": mismatches[:50], "n_hash_mismatches": len(mismatches),
            "pulled_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        ctx.run.write_json(PULL_JSON, result)
        if ctx.run.remote:
            ctx.run.publish("data")
        log.info("pulled %d frames (%s) of %s in %.1fs: %d file(s) transferred, %d copied, fingerprint %s",
                 len(rows), ", ".join(f"{c}={sum(v.values())}" for c, v in result["counts"].items()),
                 commit[:12], time.time() - started, files.transferred, copied, fp[:12])
        log.info("window %r %s: %d frame(s), %d of them training frames; frozen evaluation set: %d val/test "
                 "frame(s) of the whole revision, frame list sha256 %s", args.window, describe_interval(start, end),
                 n_window, n_train, len(evaluation), result["eval_set_sha256"][:12])
        return {k: result[k] for k in ("revision", "commit", "manifest", "counts", "n_frames", "fingerprint",
                                       "interval", "window", "n_window_frames", "n_train_frames", "n_eval_frames",
                                       "eval_set_sha256", "transferred", "copied", "n_missing_files",
                                       "n_hash_mismatches")}
    finally:
        files.close()

