"""``argus-task dataset``: manage the dataset registry (a tool command for people and the Makefile).

    argus-task dataset init --registry PATH --remote URL [--size 64 --seed 0 --scale 1]
    argus-task dataset add-revision --registry PATH [--frames 200 | --from DIR]
    argus-task dataset import-acdc SRC --out DIR [--size N --captured-at ISO]
    argus-task dataset import-cityscapes SRC --out DIR [--condition clear --size N --captured-at ISO]
    argus-task dataset generate --out DIR [--size 64 --seed 0 --scale 1]
    argus-task dataset info --registry PATH

``--remote`` is a local folder (the default of a local install) or ``s3://bucket/prefix`` (dvc-s3;
the endpoint comes from ``ARGUS_DVC_S3_ENDPOINT`` or ``AWS_ENDPOINT_URL``, credentials from the
usual AWS environment, never from the registry). ``init`` does nothing on an existing registry.
"""

from __future__ import annotations

import argparse
import json
import logging
from datetime import datetime

from argus_tasks.contract import PermanentStepError, StepContext

HELP = "Dataset registry: init (demo dataset as v1), add-revision, importers for ACDC and Cityscapes."
log = logging.getLogger(__name__)


def _time(value: str) -> datetime:
    import pandas as pd

    ts = pd.Timestamp(value)
    return (ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")).to_pydatetime()


def _demo_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--size", type=int, default=64, help="frame size in pixels, 64..512 (default 64)")
    p.add_argument("--seed", type=int, default=0, help="seed of the procedural scenes (default 0)")
    p.add_argument("--scale", type=float, default=1.0,
                   help="multiply the demo frame counts (default 1: 600 clear, 200 per adverse condition)")
    p.add_argument("--start", type=_time, default=None, help="first capture time (default: 8 weeks ago)")
    p.add_argument("--end", type=_time, default=None, help="end of the capture period (default: now)")
    p.add_argument("--workers", type=int, default=None, help="processes (default: all CPUs)")
    p.add_argument("--counts", type=_counts, default=None, metavar="JSON",
                   help='frame counts of some (condition, split) cells after --scale, e.g. '
                        '\'{"rain": {"train": 4}}\' (a condition with few frames)')


def _counts(value: str) -> dict:
    from argus_tasks.data.schema import CONDITIONS_ALL, SPLITS

    try:
        counts = json.loads(value)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"--counts is not JSON ({exc}): {value!r}") from exc
    ok = isinstance(counts, dict) and all(
        c in CONDITIONS_ALL and isinstance(per, dict)
        and all(s in SPLITS and isinstance(n, int) and n >= 0 for s, n in per.items())
        for c, per in counts.items())
    if not ok:
        raise argparse.ArgumentTypeError(
            f"--counts must map conditions {list(CONDITIONS_ALL)} to splits {list(SPLITS)} to counts >= 0, "
            f"got {value!r}")
    return counts


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = sub.add_parser("init", help="create the registry (git + DVC) with the demo dataset as v1; idempotent")
    p.add_argument("--registry", required=True, help="folder of the registry's git repository")
    p.add_argument("--remote", required=True, help="DVC remote: a local folder or s3://bucket/prefix")
    _demo_options(p)

    p = sub.add_parser("add-revision", help="add frames as a new commit and tag (v2, v3, ...)")
    p.add_argument("--registry", required=True)
    p.add_argument("--frames", type=int, default=200, help="new procedural frames, captured after the last ones")
    p.add_argument("--from", dest="source", default=None,
                   help="add the frames of a dataset folder instead (e.g. the output of import-acdc)")
    p.add_argument("--workers", type=int, default=None)

    for name, what in (("import-acdc", "ACDC"), ("import-cityscapes", "Cityscapes")):
        p = sub.add_parser(name, help=f"convert a {what} folder into our layout and manifest")
        p.add_argument("src", help=f"root of the {what} tree")
        p.add_argument("--out", required=True, help="dataset folder to write")
        p.add_argument("--size", type=int, default=None, help="centre-crop to a square and resize to N px")
        p.add_argument("--captured-at", type=_time, default=None,
                       help="capture time of the first frame, +1 s per frame (default: the files' mtimes)")
        p.add_argument("--workers", type=int, default=None)
        if name == "import-cityscapes":
            p.add_argument("--condition", default="clear", help="condition of the frames (default clear)")

    p = sub.add_parser("generate", help="write a procedural dataset folder (no registry)")
    p.add_argument("--out", required=True)
    _demo_options(p)

    p = sub.add_parser("info", help="revisions of a registry and the frame counts of its head")
    p.add_argument("--registry", required=True)


def _scaled_counts(scale: float, overrides: dict | None = None) -> dict:
    """The demo counts times ``scale``, then the cells that ``overrides`` (``--counts``) names."""
    from argus_tasks.data.generate import DEMO_COUNTS

    if scale <= 0:
        raise PermanentStepError(f"--scale must be positive, got {scale}")
    counts = {c: {s: max(1, round(n * scale)) for s, n in per.items()} for c, per in DEMO_COUNTS.items()}
    for condition, per in (overrides or {}).items():
        counts.setdefault(condition, {}).update(per)
    return counts


def _check_size(size: int | None) -> None:
    from argus_tasks.data.scenes import MAX_SIZE, MIN_SIZE

    if size is not None and not MIN_SIZE <= size <= MAX_SIZE:
        raise PermanentStepError(f"--size must be within {MIN_SIZE}..{MAX_SIZE}, got {size}")


def run(args: argparse.Namespace, ctx: StepContext) -> dict:
    from argus_tasks.data.registry import Registry, RegistryError

    logging.getLogger("dvc").setLevel(logging.WARNING)
    try:
        if args.action == "init":
            _check_size(args.size)
            result = Registry(args.registry).init(args.remote, size=args.size, seed=args.seed,
                                                  counts=_scaled_counts(args.scale, args.counts), start=args.start,
                                                  end=args.end, workers=args.workers)
        elif args.action == "add-revision":
            result = Registry(args.registry).add_revision(frames=args.frames, source=args.source,
                                                          workers=args.workers)
        elif args.action == "import-acdc":
            from argus_tasks.data.importers import import_acdc

            result = import_acdc(args.src, args.out, size=args.size, captured_at=args.captured_at,
                                 workers=args.workers)
        elif args.action == "import-cityscapes":
            from argus_tasks.data.importers import import_cityscapes

            result = import_cityscapes(args.src, args.out, condition=args.condition, size=args.size,
                                       captured_at=args.captured_at, workers=args.workers)
        elif args.action == "generate":
            from argus_tasks.data.generate import generate_dataset

            _check_size(args.size)
            manifest = generate_dataset(args.out, size=args.size, counts=_scaled_counts(args.scale, args.counts),
                                        seed=args.seed, start=args.start, end=args.end, workers=args.workers)
            result = {"out": args.out, "frames": len(manifest),
                      "message": f"wrote {len(manifest)} frames of {args.size} px to {args.out}"}
        else:  # info
            result = _info(Registry(args.registry))
    except (RegistryError, FileNotFoundError, ValueError) as exc:
        raise PermanentStepError(f"dataset {args.action}: {exc}") from exc
    print(result.pop("message", ""))
    print(json.dumps(result, indent=2, default=str))
    return result


def _info(registry) -> dict:
    from argus_tasks.data import manifest as mf

    if not registry.is_initialised():
        raise PermanentStepError(f"{registry.path} is not an initialised dataset registry")
    out = {"registry": str(registry.path), "tags": registry.tags(), "head": registry.head(),
           "remote": registry.configured_remote(), "revisions": registry.meta().get("revisions", {})}
    if (registry.dataset / mf.MANIFEST_FILE).exists():
        m = mf.read_manifest(registry.dataset)
        out["frames"] = int(len(m))
        out["counts"] = {f"{c}/{s}": int(n) for (c, s), n in m.groupby(["condition", "split"]).size().items()}
    out["message"] = f"dataset registry {registry.path}: revisions {', '.join(out['tags'])}"
    return out
