"""Data-parallel training under torchrun: the process group, what the ranks agree on, and the end.

``argus-task torchrun ... -m argus_tasks train ...`` (:mod:`argus_tasks.torchrun`) starts one process per
GPU with torchrun's env (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``, ``MASTER_ADDR``,
``MASTER_PORT``, ``TORCHELASTIC_RESTART_COUNT``). Every rank trains (DDP averages the gradients); rank 0
alone logs to MLflow, writes checkpoints and registers the model. What every rank must agree on, lest
one of them wait forever in a collective the others never join, goes through :func:`agree_max`: the stop
request (SIGTERM) and the time budget, whose clocks differ per process.

Nothing here is used when ``WORLD_SIZE`` is 1 (a plain ``argus-task train``): each helper is then the
identity.
"""

from __future__ import annotations

import logging
import os

import torch

log = logging.getLogger(__name__)
ENV_FAULT = "ARGUS_FAULT_EXIT_AT"  # "<rank>:<step>": that rank os._exit()s after that step, on the first attempt only
FAULT_EXIT_CODE = 3


def _dist():
    import torch.distributed as dist

    return dist if dist.is_available() and dist.is_initialized() else None


def setup() -> tuple[int, int, torch.device]:
    """(rank, world size, device) of this process; joins torchrun's process group when WORLD_SIZE > 1.

    The backend is NCCL on CUDA and gloo on the CPU; each rank takes the GPU of its LOCAL_RANK.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    cuda = torch.cuda.is_available()
    if world <= 1:
        return 0, 1, torch.device("cuda" if cuda else "cpu")
    import torch.distributed as dist

    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device("cuda", local) if cuda else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo", **_attempt_store())
    log.info("rank %d of %d (local rank %d, backend %s, restart %s) on %s", dist.get_rank(), world, local,
             dist.get_backend(), os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"), device)
    return dist.get_rank(), world, device


def _attempt_store() -> dict:
    """``init_process_group`` arguments with a store of this restart's own (torchrun's agent store, under a
    prefix per attempt); none (``env://``) outside torchrun.

    torchrun keeps one store across restarts, and the keys the ranks published in an earlier attempt stay
    in it: a rank of the restart that reads a peer's address before the peer has published its new one
    connects to the dead process of the earlier attempt ("Gloo connectFullMesh failed ... Connection
    refused", seen here with a slow rank). A prefix per attempt gives each restart fresh keys.
    """
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        return {}
    from datetime import timedelta

    import torch.distributed as dist

    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    client = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), is_master=False,
                           timeout=timedelta(minutes=10))
    return {"store": dist.PrefixStore(f"argus/attempt-{attempt}", client), "rank": int(os.environ["RANK"]),
            "world_size": int(os.environ["WORLD_SIZE"])}


def world_size() -> int:
    dist = _dist()
    return dist.get_world_size() if dist else 1


def local_world_size() -> int:
    """Ranks on this machine (they share its CPUs)."""
    return max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))


def shard(frames: torch.Tensor, rank: int, world: int) -> torch.Tensor:
    """This rank's share of ``frames`` (every ``world``-th frame from ``rank``), so the ranks sample
    disjoint frames; all of them when there are fewer frames than ranks."""
    if world <= 1 or frames.shape[0] < world:
        return frames
    return frames[rank::world]


def agree_max(values: list[float], device: torch.device) -> list[float]:
    """The element-wise maximum of ``values`` over all ranks (``values`` itself without a process group)."""
    dist = _dist()
    if dist is None or dist.get_world_size() == 1:
        return [float(v) for v in values]
    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return [float(v) for v in t.tolist()]


def same_everywhere(value: int, device: torch.device) -> bool:
    """Whether every rank holds the same integer ``value`` (True without a process group)."""
    hi = agree_max([value], device)[0]
    lo = -agree_max([-value], device)[0]
    return hi == lo == value


def gather(obj) -> list:
    """``obj`` of every rank, in rank order (``[obj]`` without a process group)."""
    dist = _dist()
    if dist is None:
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def from_rank_zero(obj):
    """Rank 0's ``obj`` on every rank."""
    dist = _dist()
    if dist is None:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def teardown() -> None:
    """Wait for every rank, then leave the process group (a rank that exits early would make the others'
    last collective fail)."""
    dist = _dist()
    if dist is None:
        return
    dist.barrier()
    dist.destroy_process_group()


def fault_hook(step: int, rank: int) -> None:
    """Fault injection for the tests: ``ARGUS_FAULT_EXIT_AT=<rank>:<step>`` makes that rank die (``os._exit``,
    no clean-up) once it has finished that step, on torchrun's first attempt only, so the restart
    (``--max-restarts``) must resume from the last checkpoint."""
    spec = os.environ.get(ENV_FAULT, "")
    if not spec or os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") != "0":
        return
    want_rank, _, want_step = spec.partition(":")
    if int(want_rank) == rank and int(want_step) == step:
        log.error("fault injection (%s=%s): rank %d exits at step %d", ENV_FAULT, spec, rank, step)
        logging.shutdown()
        os._exit(FAULT_EXIT_CODE)
