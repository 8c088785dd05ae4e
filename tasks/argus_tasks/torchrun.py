"""``argus-task torchrun <torchrun options> -m argus_tasks <step> ...``: torchrun, keeping the step's exit codes.

This is PyTorch's own launcher (``torch.distributed.run``, what the ``torchrun`` script runs) with the
same options, run in this process: it starts ``--nproc-per-node`` ranks of ``python -m argus_tasks
<step> ...`` (one per GPU), sets their rendezvous env, and restarts all of them from the last checkpoint
when one dies (``--max-restarts``). Kubeflow Trainer's ``PET_*`` variables (nodes, node rank, master
address) reach it as torchrun's own defaults.

torchrun itself exits 1 whatever its ranks exited with, which would turn a permanent failure (bad data,
exit 10) into a retried crash. Here the launcher's exit code is the ranks' (:func:`exit_code`): 10 when a
rank failed permanently, 75 when one failed transiently or the launcher was stopped by SIGTERM (the ranks
got it too, saved a checkpoint and exited 75), 1 for any other crash. A permanent failure is still
restarted ``--max-restarts`` times inside torchrun (it fails again within seconds, before training).
"""

from __future__ import annotations

import argparse
import logging

from argus_tasks.contract import EXIT_PERMANENT, EXIT_TRANSIENT, StepContext, StepError, TransientStepError

HELP = "run a step under torchrun (one rank per GPU, restarts from the last checkpoint); same options as torchrun"
RAW_ARGUMENTS = True  # everything after `argus-task torchrun` is torchrun's
log = logging.getLogger("argus.torchrun")


class RankFailure(StepError):
    """A rank failed: the launcher exits with the step exit code the ranks' codes stand for."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


def add_arguments(p: argparse.ArgumentParser) -> None:  # pragma: no cover - RAW_ARGUMENTS: never called
    p.add_argument("argv", nargs=argparse.REMAINDER)


def exit_code(rank_codes: dict[int, int]) -> int:
    """The launcher's exit code for the exit codes of its failed ranks: permanent wins, then transient, else 1."""
    codes = set(rank_codes.values())
    if EXIT_PERMANENT in codes:
        return EXIT_PERMANENT
    if EXIT_TRANSIENT in codes:
        return EXIT_TRANSIENT
    return 1


def run(args: argparse.Namespace, ctx: StepContext) -> dict:  # noqa: ARG001 - the step module signature
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import main as torchrun_main

    if not args.argv or args.argv[0] in {"-h", "--help"}:
        torchrun_main(["--help"])
        return {}
    log.info("torchrun %s", " ".join(args.argv))
    try:
        torchrun_main(args.argv)
    except ChildFailedError as exc:
        codes = {rank: failure.exitcode for rank, failure in exc.failures.items()}
        code = exit_code(codes)
        raise RankFailure(f"{exc.name}: ranks {sorted(codes)} failed with exit codes {codes} after torchrun's "
                          f"restarts; the step exits {code}", code) from exc
    except SignalException as exc:
        raise TransientStepError(f"torchrun was stopped by signal {exc.sigval} (eviction, drain or a kill); the "
                                 "ranks were signalled too and saved a checkpoint: the retry resumes from it") from exc
    return {}
