"""``argus-task``: the one CLI of the task image, a subcommand per heavy step.

Each step module (``argus_tasks.steps.<name>``) defines::

    HELP = "one line"
    def add_arguments(parser: argparse.ArgumentParser) -> None: ...
    def run(args: argparse.Namespace, ctx: StepContext) -> dict: ...

This wrapper owns the step contract: logging set-up, the XCom return file, ``result.json`` /
``failure.json`` in the run-scoped store, and the exit codes of ``argus_tasks.contract``. Step
modules are imported only when their subcommand runs, so ``argus-task --help`` stays fast.

Tool subcommands (``dataset``, ``summary``) are for people and the Makefile, not for the DAG:
they get the same logging but no return file.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import signal
import sys
import time
import traceback
from pathlib import Path

from argus_tasks import cost
from argus_tasks.contract import EXIT_OK, StepContext, StepError
from argus_tasks.store import atomic_write_bytes
from argus_tasks.tracking import outage_error

# name -> (module, is a DAG step)
COMMANDS: dict[str, tuple[str, bool]] = {
    "pull": ("argus_tasks.steps.pull", True),
    "validate": ("argus_tasks.steps.validate", True),
    "budget": ("argus_tasks.steps.budget", True),
    "segmenter": ("argus_tasks.steps.segmenter", True),
    "train": ("argus_tasks.steps.train", True),
    "evaluate": ("argus_tasks.steps.evaluate", True),
    "hard-frames": ("argus_tasks.steps.hard_frames", True),
    "promote": ("argus_tasks.steps.promote", True),
    "report": ("argus_tasks.steps.report", True),
    "resolve": ("argus_tasks.steps.resolve", True),
    "export": ("argus_tasks.steps.export", True),
    "plan-shards": ("argus_tasks.steps.plan_shards", True),
    "generate": ("argus_tasks.steps.generate", True),
    "check-outputs": ("argus_tasks.steps.check_outputs", True),
    "publish": ("argus_tasks.steps.publish", True),
    "generation-report": ("argus_tasks.steps.generation_report", True),
    "rollback-check": ("argus_tasks.steps.rollback_check", True),
    "rollback": ("argus_tasks.steps.rollback", True),
    "dataset": ("argus_tasks.steps.dataset", False),
    "summary": ("argus_tasks.steps.summary", False),
    "champions": ("argus_tasks.steps.champions", False),
    "audit": ("argus_tasks.steps.audit", False),
    "torchrun": ("argus_tasks.torchrun", False),
}

log = logging.getLogger("argus")


def step_dir(step: str, args: argparse.Namespace) -> str:
    """``<step>``, ``<step>/<condition>`` or ``<step>/<shard_id>`` (mapped per shard) inside the run folder."""
    part = getattr(args, "condition", None) or getattr(args, "shard_id", None)
    return f"{step}/{part}" if part else step


def _setup_logging() -> None:
    logging.basicConfig(
        level=os.environ.get("ARGUS_LOG_LEVEL", "INFO"),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%Y-%m-%dT%H:%M:%S",
        force=True,
    )
    for noisy in ("urllib3", "botocore", "alembic", "git", "matplotlib", "PIL", "fsspec", "s3fs"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def write_return(path: str, result: dict) -> None:
    """Write the XCom return file when its folder exists (always in a pod and the local runtime)."""
    p = Path(path)
    if p.parent.is_dir():
        atomic_write_bytes(p, json.dumps(result, default=str).encode())
    else:
        log.info("no XCom folder %s: result printed only", p.parent)


def _record_failure(ctx: StepContext, where: str, exc: BaseException, code: int) -> None:
    try:
        ctx.run.write_json(
            f"{where}/failure.json",
            {
                "error": type(exc).__name__,
                "message": str(exc),
                "exit_code": code,
                "try_number": ctx.try_number,
                "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            },
        )
    except Exception as rec_exc:  # the store itself may be what failed
        log.warning("could not record the failure in the store: %s", rec_exc)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="argus-task", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, _) in COMMANDS.items():
        p = sub.add_parser(name, help=f"see `argus-task {name} --help`", add_help=False)
        p.set_defaults(_module=module)
    return parser


def _run_step(module, args, ctx: StepContext) -> dict:
    """``module.run``; MLflow going away mid-step becomes a retryable StepError, not a crash."""
    try:
        return module.run(args, ctx) or {}
    except StepError:
        raise
    except Exception as exc:
        outage = outage_error(exc)
        if outage is None:
            raise
        raise outage from exc


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in {"-h", "--help"} or argv[0] not in COMMANDS:
        build_parser().print_help()
        if argv and argv[0] not in {"-h", "--help"}:
            print(f"\nargus-task: unknown command {argv[0]!r}; choose one of {', '.join(COMMANDS)}",
                  file=sys.stderr)
            return 2
        return 0
    name, rest = argv[0], argv[1:]
    module_name, is_step = COMMANDS[name]
    module = importlib.import_module(module_name)
    if getattr(module, "RAW_ARGUMENTS", False):  # a launcher: its arguments belong to the program it starts
        args = argparse.Namespace(argv=rest)
    else:
        parser = argparse.ArgumentParser(prog=f"argus-task {name}", description=getattr(module, "HELP", None))
        module.add_arguments(parser)
        args = parser.parse_args(rest)
    _setup_logging()
    # SIGTERM (pod eviction, worker stop) ends the step at once; writes are atomic, so nothing
    # half-written is left behind, and a retry resumes from the last checkpoint.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    ctx = StepContext.from_env()
    where = step_dir(name, args)
    started = time.time()
    if is_step:
        log.info("step %s starting: dag=%s run=%s try=%s map_index=%s store=%s",
                 where, ctx.dag_id, ctx.run_id, ctx.try_number, ctx.map_index, ctx.run.url())
    try:
        result = _run_step(module, args, ctx)
    except StepError as exc:
        log.error("step %s failed (%s): %s", where, type(exc).__name__, exc)
        if is_step:
            _record_failure(ctx, where, exc, exc.exit_code)
            cost.record(ctx, where, name, getattr(args, "condition", None), started, "failed")
        return exc.exit_code
    except BaseException as exc:  # a crash, or SIGTERM (SystemExit 143): the GPU was held all the same
        if is_step:
            cost.record(ctx, where, name, getattr(args, "condition", None), started, "interrupted"
                        if isinstance(exc, (SystemExit, KeyboardInterrupt)) else "crashed")
        if not isinstance(exc, Exception):
            raise
        log.error("step %s crashed:\n%s", where, traceback.format_exc())
        if is_step:
            _record_failure(ctx, where, exc, 1)
        return 1
    if is_step and os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 answers for all ranks
        result.setdefault("step", where)
        result.update(cost.record(ctx, where, name, getattr(args, "condition", None), started, "succeeded"))
        result["duration_s"] = round(time.time() - started, 3)
        ctx.run.write_json(f"{where}/result.json", result)
        write_return(ctx.return_file, result)
        log.info("step %s done in %.1fs", where, result["duration_s"])
    return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
