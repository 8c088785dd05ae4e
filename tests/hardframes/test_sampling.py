"""Oversampling the hard set: the weighted sampler draws hard-like frames 1 + w times as often."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from argus_tasks.data.schema import CLASSES
from argus_tasks.hardframes.sampling import train_weights
from argus_tasks.models.trainer import BatchSampler


def frames(n: int) -> torch.Tensor:
    """Frame i is filled with the value i, so a drawn batch says which frames it holds."""
    return torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 3, 8, 8).contiguous()


def drawn(sampler: BatchSampler, batches: int) -> np.ndarray:
    return np.concatenate([sampler()[:, 0, 0, 0].numpy() for _ in range(batches)]).astype(int)


def test_weighted_sampler_oversamples_the_weighted_frames():
    n, hard, w = 40, [3, 7, 11, 19], 4.0
    weights = torch.ones(n, dtype=torch.float64)
    weights[hard] = 1.0 + w
    s = BatchSampler(frames(n), 16, 8, torch.Generator().manual_seed(0), weights=weights)
    ids = drawn(s, 500)  # 8000 draws
    share = np.isin(ids, hard).mean()
    expected = len(hard) * (1 + w) / (n - len(hard) + len(hard) * (1 + w))  # 20/56 = 0.357
    uniform = len(hard) / n  # 0.1
    assert abs(share - expected) < 0.03, (share, expected)
    assert share > 3 * uniform
    per_frame = np.bincount(ids, minlength=n)
    ratio = per_frame[hard].mean() / np.delete(per_frame, hard).mean()
    assert 4.0 < ratio < 6.0, ratio  # 1 + w = 5


def test_without_weights_the_sampler_draws_exactly_as_before():
    """Weight 0 must not change training: the same generator gives the same frames as torch.randint did."""
    n, batch = 40, 16
    s = BatchSampler(frames(n), batch, 8, torch.Generator().manual_seed(3))
    ref = torch.Generator().manual_seed(3)
    for _ in range(5):
        idx = torch.randint(0, n, (batch,), generator=ref)
        torch.rand(batch, generator=ref)  # the flip draw of the same call
        assert drawn(s, 1).tolist() == idx.tolist()


def test_bad_weights_are_refused():
    import pytest

    for bad in (torch.ones(3), torch.zeros(40), torch.full((40,), float("nan")), -torch.ones(40)):
        with pytest.raises(ValueError, match="weights"):
            BatchSampler(frames(40), 4, 8, torch.Generator(), weights=bad)


def test_train_weights_match_hard_groups_and_hard_frames_not_the_rest():
    road, sky, building, veg = (CLASSES.index(c) for c in ("road", "sky", "building", "vegetation"))

    def lab(a, b):
        return np.array([[road] * 50 + [a] * 30 + [b] * 20], np.uint8)

    rows = pd.DataFrame({"frame_id": ["t0", "t1", "t2", "v9"], "brightness_mean": [0.3, 0.3, 0.5, 0.5]})
    labels = [lab(building, sky), lab(sky, veg), lab(building, sky), lab(sky, veg)]
    content = {"frames": [{"frame_id": "v9"}], "oversample": {"keys": ["building+sky | dim"]}}
    w, summary = train_weights(content, rows, labels, 3.0)
    # t0: building+sky | dim (a hard group); t2: same classes but medium brightness; v9: a frame of the set
    assert w.tolist() == [4.0, 1.0, 1.0, 4.0]
    assert summary["n_hard_like"] == 2 and summary["n_hard_in_train"] == 1
    assert summary["hard_like_share_weighted"] == 0.8
    assert train_weights(content, rows, labels, 0.0)[0].tolist() == [1.0] * 4
