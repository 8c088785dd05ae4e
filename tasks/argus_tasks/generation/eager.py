"""An eager PyTorch generator as a generation runner: uint8 (N,H,W,3) in, uint8 (N,H,W,3) out.

The same contract as the exported artifact's runner (:func:`argus_tasks.models.export.load_runner`),
so tests and benchmarks can drive ``generate``'s loop with a live module, and compare the exported
path against the eager one on the same frames.
"""

from __future__ import annotations

import numpy as np


def eager_runner(generator, seed: int = 0, batch_size: int = 64):
    """``generator`` (a WeatherGenerator on its device) wrapped as a uint8 NHWC -> uint8 NHWC callable."""
    import torch

    from argus_tasks.models.generator import translate
    from argus_tasks.models.images import to_uint8_hwc

    def run(frames: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float().div_(255.0)
        return to_uint8_hwc(translate(generator, x, seed=seed, batch_size=batch_size))

    return run


def untrained_generator(condition: str = "fog", config: str = "tiny", seed: int = 0, device: str = "cpu"):
    """A freshly initialised generator of a preset config (seeded): for tests and benchmarks, not for datasets."""
    import torch

    from argus_tasks.models.config import load_config
    from argus_tasks.models.generator import build_generator

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        generator = build_generator(load_config(config), condition)
    return generator.to(device).eval()
