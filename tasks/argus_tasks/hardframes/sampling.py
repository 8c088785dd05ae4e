"""How ``train`` oversamples the hard set: a weight per clear training frame.

The hard frames are evaluation frames (the frozen val+test set): training on them would leak the
evaluation set into the generator and make every later comparison on it meaningless. So the set
reaches training through its groups: a clear training frame is *hard-like* when it falls in one of
the set's oversampled groups (dominant classes and brightness bucket where hard frames are
over-represented, :func:`argus_tasks.hardframes.groups.oversampled_groups`), or is itself a frame of
the set (a generation run over training frames can make one). A hard-like frame is drawn
``1 + hard_frame_weight`` times as often as another; ``hard_frame_weight`` 0 is uniform sampling,
exactly as before (the trainer's sampler then takes its old code path).
"""

from __future__ import annotations

import logging

import numpy as np

from argus_tasks.contract import PermanentStepError
from argus_tasks.hardframes.groups import brightness_bucket, dominant_classes, transfer_key

log = logging.getLogger(__name__)


def train_weights(content: dict, rows, labels, weight: float) -> tuple[np.ndarray, dict]:
    """``(weights (N,), summary)`` for the training ``rows`` (manifest rows) with their ``labels``."""
    if weight < 0:
        raise PermanentStepError(f"hard_frame_weight must be >= 0, got {weight}")
    if len(labels) != len(rows):
        raise ValueError(f"{len(labels)} labels for {len(rows)} training rows")
    ids = {f["frame_id"] for f in content.get("frames", [])}
    keys = set((content.get("oversample") or {}).get("keys", []))
    row_keys = [transfer_key(dominant_classes(np.asarray(lab)), brightness_bucket(float(b)))
                for lab, b in zip(labels, rows["brightness_mean"], strict=True)]
    like = np.array([fid in ids or key in keys for fid, key in zip(rows["frame_id"].astype(str), row_keys,
                                                                     strict=True)], dtype=bool)
    weights = np.where(like, 1.0 + weight, 1.0)
    share = float(weights[like].sum() / weights.sum()) if len(weights) else 0.0
    summary = {"n_train_frames": int(len(rows)), "n_hard_like": int(like.sum()),
               "n_hard_in_train": int(sum(f in ids for f in rows["frame_id"].astype(str))),
               "hard_like_share_uniform": round(float(like.mean()) if len(like) else 0.0, 6),
               "hard_like_share_weighted": round(share, 6), "groups": sorted(keys)}
    if not like.any():
        log.warning("the hard set's groups match none of the %d training frames: sampling stays uniform", len(rows))
    return weights, summary
