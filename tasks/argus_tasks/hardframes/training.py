"""What ``train`` does with a hard set: find it, weight the source frames, record which one it used.

``--hard-frame-weight 0`` (the default) reads nothing and changes nothing: the reuse key, the
sampler and the MLflow run are those of a run without this feature, except the param
``hard_set=none``. Above 0 the set ``--hard-set`` (``latest``, the default, or a version) is read
from ``<store>/hardsets/<condition>/``; when there is none yet, training logs so and samples
uniformly (the first runs of a condition have no history). The version used enters the reuse key
(another set: another model), the MLflow params and tags, the registered version's lineage tags
(``argus.hard_set``, ``argus.hard_frame_weight``) and the run's dataset inputs (context ``hard-set``).
"""

from __future__ import annotations

import logging

from argus_tasks.hardframes import sampling, versioning
from argus_tasks.hardframes.storage import StoreFiles

log = logging.getLogger(__name__)
NONE = "none"


def resolve(ctx, condition: str, weight: float, ref: str) -> dict | None:
    """``{"sha", "content", "weight"}`` of the hard set to oversample, or None (uniform sampling)."""
    if weight < 0:
        from argus_tasks.contract import PermanentStepError

        raise PermanentStepError(f"--hard-frame-weight must be >= 0, got {weight}")
    if weight == 0 or ref == NONE:
        return None
    files = StoreFiles(ctx.store_root)
    found = versioning.read(files, condition, ref or "latest")
    if found is None:
        log.warning("train %s: hard_frame_weight %g, but no hard set of %s exists yet (the hard-frames step writes "
                    "one after an evaluation): sampling uniformly", condition, weight, condition)
        return None
    sha, content = found
    if not content.get("frames"):
        log.warning("train %s: hard set %s is empty: sampling uniformly", condition, sha[:12])
        return None
    log.info("train %s: oversampling hard set %s (%d frames, groups %s) with weight %g", condition, sha[:12],
             len(content["frames"]), ", ".join(content["oversample"]["keys"]) or "none", weight)
    return {"sha": sha, "content": content, "weight": float(weight),
            "url": files.url(versioning.set_relpath(condition, sha))}


def weights(hard: dict | None, rows, labels):
    """``(torch weights or None, summary)`` for the clear training ``rows``."""
    if hard is None:
        return None, {}
    import torch

    w, summary = sampling.train_weights(hard["content"], rows, labels, hard["weight"])
    log.info("hard-like training frames: %d of %d, drawn %.1f%% of the time (uniform: %.1f%%)",
             summary["n_hard_like"], summary["n_train_frames"], 100 * summary["hard_like_share_weighted"],
             100 * summary["hard_like_share_uniform"])
    return torch.as_tensor(w, dtype=torch.float64), summary


def config_entry(hard: dict | None) -> dict:
    """What enters the reuse key: nothing without a set (keys of runs before this feature stay valid)."""
    return {} if hard is None else {"hard_frame_weight": hard["weight"], "hard_set": hard["sha"]}


def tags(hard: dict | None, weight: float) -> dict[str, str]:
    return {"argus.hard_set": hard["sha"] if hard else NONE, "argus.hard_frame_weight": f"{weight:g}"}


def log_input(hard: dict | None, condition: str) -> None:
    """The hard set as a dataset input of the training run (call inside it)."""
    if hard is None:
        return
    import pandas as pd

    from argus_tasks.steps.hard_frames import hard_set_dataset, log_dataset

    log_dataset(hard_set_dataset(pd.DataFrame(hard["content"]["frames"]), condition, hard["sha"], hard["url"]))
