"""One resolution policy for the generator, the judge and the KID features (docs/resolution.md).

Frames are square-resized to a working resolution before any model sees them. The judge trains,
is floor-checked and judges at its own recorded resolution (``segmenter/result.json``
``image_size``); KID features are the judge's encoder features, so they are at that resolution too.
A generator trains and translates at its config's ``image_size``. When the two differ, evaluate
feeds the generator its own resolution and resizes its output to the judge's (and says so), so
the judge never sees frames at a resolution it was not measured at.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)


def judge_size(pinned: dict, fallback: int) -> int:
    """The judge's resolution from its pinned result; ``fallback`` (native width) for a judge that predates it."""
    return int(pinned.get("image_size") or fallback)


def _resize(x: torch.Tensor, size: int) -> torch.Tensor:
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True).clamp(0, 1)


def at_generator_size(fn: Callable[[torch.Tensor], torch.Tensor], generator_size: int | None,
                      ) -> Callable[[torch.Tensor], torch.Tensor]:
    """``fn`` run at ``generator_size`` on frames given (and returned) at the judge's resolution."""
    if not generator_size:
        return fn

    def wrapped(x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] == generator_size and x.shape[-2] == generator_size:
            return fn(x)
        out = fn(_resize(x, generator_size)).float()
        return _resize(out.to(x.device), x.shape[-1])

    return wrapped
