"""Non-learned weather references: the floor a learned generator must clear.

* ``uniform_haze``: ``(1 - a) J + a A`` (one alpha, one RGB airlight for the whole frame);
* ``koschmieder_fog``: flat-world fog, ``t = exp(-beta d)`` with the depth of a flat road seen
  from a camera at a fixed height, ``d(y) ~ 1 / (y - y_horizon)``; above the horizon a far depth;
* ``rain_render``: wet darkening, a light veil and streaks (sparse seeds smeared along a line);
* ``snow_render``: whitening veil, lower contrast and flakes (small bright blobs);
* ``night_render``: exposure, gamma, colour shift and sensor noise.

Each has a few constants, calibrated on the training split by matching simple image statistics
(per-channel mean and spread, row profile of luminance, saturation, high-frequency energy,
luminance percentiles) of rendered clear frames to the condition's real frames, by a seeded
random search with shrinking ranges.

Frames are float tensors (N, 3, H, W) in [0, 1]; a reference is called as ``ref(frames, gen)``
with a ``torch.Generator`` for its random parts.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

LUMA = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)


def _luma(x: torch.Tensor) -> torch.Tensor:
    return (x * LUMA.to(x.device)).sum(1, keepdim=True)


def _box3(x: torch.Tensor) -> torch.Tensor:
    """3x3 mean of every pixel over its neighbours inside the frame: ``avg_pool2d(x, 3, 1, 1,
    count_include_pad=False)`` as two separable sums over a zero-padded copy (~6x faster on a CPU)."""
    h, w = x.shape[-2:]
    p = F.pad(x, (1, 1, 1, 1))
    rows = p[..., :, :-2] + p[..., :, 1:-1] + p[..., :, 2:]
    sums = rows[..., :-2, :] + rows[..., 1:-1, :] + rows[..., 2:, :]
    count_h = torch.full((h, 1), 3.0, dtype=x.dtype)
    count_w = torch.full((1, w), 3.0, dtype=x.dtype)
    for counts in (count_h.view(-1), count_w.view(-1)):  # the border rows/columns have one neighbour less
        counts[0] -= 1.0
        counts[-1] -= 1.0
    return sums / (count_h * count_w)


def image_stats(x: torch.Tensor) -> torch.Tensor:
    """A short statistics vector of a batch of frames (what calibration matches).

    Calibration evaluates it a few hundred times on 64 frames, so it avoids slow CPU kernels
    (``max(dim)`` with indices, Welford ``std``, ``avg_pool2d``) for equivalent fast ones.
    """
    y = _luma(x)
    rows = F.adaptive_avg_pool2d(y, (8, 1)).mean(0).flatten()
    mx, mn = x.amax(1), x.amin(1)
    sat = ((mx - mn) / (mx + 1e-3)).mean().view(1)
    hf = (x - _box3(x)).abs().mean().view(1) * 4.0
    flat = y.flatten()[:: max(1, y.numel() // 4096)].sort().values
    q = flat[[int(f * (flat.numel() - 1)) for f in (0.05, 0.5, 0.95)]]
    mean = x.mean((0, 2, 3))
    n = x.numel() // x.shape[1]
    # unbiased std per channel (as Tensor.std) from the first two moments; frames are in [0, 1]
    std = ((x * x).mean((0, 2, 3)) - mean * mean).clamp(min=0).mul(n / max(n - 1, 1)).sqrt()
    return torch.cat([mean, std, rows, sat, hf, q])


def _line_kernel(length: int, angle_deg: float) -> torch.Tensor:
    size = max(3, int(length) | 1)
    k = torch.zeros(size, size)
    c = size // 2
    a = math.radians(angle_deg)
    for s in np.linspace(-c, c, 4 * size):
        x, y = int(round(c + s * math.sin(a))), int(round(c + s * math.cos(a)))
        k[y, x] = 1.0
    return (k / k.sum()).view(1, 1, size, size)


class Reference:
    """A parametric render with a search space for its constants."""

    name = "reference"
    space: dict[str, tuple[float, float]] = {}

    def __init__(self, params: dict[str, float] | None = None):
        self.params = dict(params or {k: (lo + hi) / 2 for k, (lo, hi) in self.space.items()})

    def render(self, x: torch.Tensor, p: dict[str, float], gen: torch.Generator) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, x: torch.Tensor, gen: torch.Generator | None = None) -> torch.Tensor:
        gen = gen if gen is not None else torch.Generator().manual_seed(0)
        return self.render(x.float(), self.params, gen).clamp(0.0, 1.0)

    def to_dict(self) -> dict:
        return {"name": self.name, "params": {k: float(v) for k, v in self.params.items()}}

    @classmethod
    def calibrate(cls, clear: torch.Tensor, adverse: torch.Tensor, seed: int = 0, rounds: int = 3,
                  candidates: int = 40) -> Reference:
        """Random search with shrinking ranges minimising the statistics distance to ``adverse``."""
        target = image_stats(adverse.float())
        rng = np.random.default_rng(seed)
        ref = cls()

        def loss(p):
            out = ref.render(clear.float(), p, torch.Generator().manual_seed(seed)).clamp(0, 1)
            return float(((image_stats(out) - target) ** 2).sum())

        best = dict(ref.params)
        best_loss = loss(best)
        span = {k: hi - lo for k, (lo, hi) in cls.space.items()}
        for r in range(rounds):
            scale = 0.5 ** r
            for _ in range(candidates):
                cand = {}
                for k, (lo, hi) in cls.space.items():
                    if r == 0:
                        cand[k] = float(rng.uniform(lo, hi))
                    else:
                        cand[k] = float(np.clip(best[k] + rng.normal(0, 0.25 * scale * span[k]), lo, hi))
                cl = loss(cand)
                if cl < best_loss:
                    best, best_loss = cand, cl
        out = cls(best)
        out.calibration_loss = best_loss
        return out


class Identity(Reference):
    name = "identity"

    def render(self, x, p, gen):
        return x

    @classmethod
    def calibrate(cls, clear, adverse, seed=0, **_):
        return cls({})


class UniformHaze(Reference):
    name = "uniform_haze"
    space = {"alpha": (0.0, 0.95), "A_r": (0.0, 1.0), "A_g": (0.0, 1.0), "A_b": (0.0, 1.0)}

    def render(self, x, p, gen):
        a = p["alpha"]
        airlight = torch.tensor([p["A_r"], p["A_g"], p["A_b"]], dtype=x.dtype).view(1, 3, 1, 1)
        return (1 - a) * x + a * airlight


class KoschmiederFog(Reference):
    name = "koschmieder_fog"
    # beta_k = extinction x camera height x focal (folded), horizon as a fraction of the height,
    # far = the depth given to rows at or above the horizon (in the same folded units).
    space = {"beta_k": (0.0, 4.0), "horizon": (0.2, 0.6), "far": (1.0, 30.0), "A_gray": (0.3, 1.0),
             "A_tint": (-0.1, 0.1)}

    def transmittance(self, h: int, w: int, p: dict) -> torch.Tensor:
        rows = (torch.arange(h, dtype=torch.float32) + 0.5) / h
        below = rows - p["horizon"]
        depth = torch.where(below > 1.0 / h, 1.0 / below.clamp(min=1.0 / h) / h * 8.0,
                            torch.full_like(rows, p["far"]))
        depth = torch.minimum(depth, torch.full_like(depth, p["far"]))
        t = torch.exp(-p["beta_k"] * depth / 8.0)
        return t.view(1, 1, h, 1).expand(1, 1, h, w)

    def render(self, x, p, gen):
        t = self.transmittance(x.shape[2], x.shape[3], p).to(x.dtype)
        g, tint = p["A_gray"], p["A_tint"]
        airlight = torch.tensor([g - tint, g, g + tint], dtype=x.dtype).clamp(0, 1).view(1, 3, 1, 1)
        return x * t + airlight * (1 - t)


class RainRender(Reference):
    name = "rain_render"
    space = {"exposure": (0.4, 1.1), "veil": (0.0, 0.5), "veil_gray": (0.2, 0.9), "density": (0.0, 0.03),
             "length": (3.0, 11.0), "angle": (-25.0, 25.0), "streak": (0.0, 1.0), "blur": (0.0, 1.0)}

    def render(self, x, p, gen):
        n, _, h, w = x.shape
        img = x * p["exposure"]
        if p["blur"] > 0:
            img = (1 - p["blur"]) * img + p["blur"] * _box3(img)
        img = (1 - p["veil"]) * img + p["veil"] * p["veil_gray"]
        seeds = (torch.rand(n, 1, h, w, generator=gen) < p["density"]).to(x.dtype)
        k = _line_kernel(int(p["length"]), p["angle"]).to(x.dtype)
        streaks = F.conv2d(seeds, k, padding=k.shape[-1] // 2)[..., :h, :w]
        streaks = (streaks * k.shape[-1]).clamp(0, 1)
        return img * (1 - p["streak"] * streaks) + p["streak"] * streaks * 0.85


class SnowRender(Reference):
    name = "snow_render"
    space = {"veil": (0.0, 0.7), "veil_gray": (0.5, 1.0), "contrast": (0.5, 1.0), "density": (0.0, 0.06),
             "flake": (0.0, 1.0), "size": (0.0, 1.0)}

    def render(self, x, p, gen):
        n, _, h, w = x.shape
        mean = x.mean((2, 3), keepdim=True)
        img = mean + p["contrast"] * (x - mean)
        img = (1 - p["veil"]) * img + p["veil"] * p["veil_gray"]
        seeds = (torch.rand(n, 1, h, w, generator=gen) < p["density"]).to(x.dtype)
        if p["size"] > 0.5:
            seeds = F.max_pool2d(seeds, 3, 1, 1) * 0.6 + seeds * 0.4
        return img * (1 - p["flake"] * seeds) + p["flake"] * seeds


class NightRender(Reference):
    name = "night_render"
    space = {"exposure": (0.05, 0.8), "gamma": (0.8, 2.5), "r": (0.6, 1.4), "b": (0.6, 1.4),
             "noise": (0.0, 0.08), "floor": (0.0, 0.1)}

    def render(self, x, p, gen):
        colour = torch.tensor([p["r"], 1.0, p["b"]], dtype=x.dtype).view(1, 3, 1, 1)
        img = (x * p["exposure"]).clamp(0, 1) ** p["gamma"] * colour + p["floor"]
        noise = torch.randn(x.shape, generator=gen, dtype=x.dtype) * p["noise"]
        return img + noise


ALL = {cls.name: cls for cls in (Identity, UniformHaze, KoschmiederFog, RainRender, SnowRender, NightRender)}
# The non-learned references evaluated for each condition (identity is added everywhere).
BY_CONDITION = {
    "fog": ("uniform_haze", "koschmieder_fog"),
    "rain": ("uniform_haze", "rain_render"),
    "snow": ("uniform_haze", "snow_render"),
    "night": ("uniform_haze", "night_render"),
}


def calibrated_references(condition: str, clear: torch.Tensor, adverse: torch.Tensor,
                          seed: int = 0) -> dict[str, Reference]:
    """Identity plus the condition's references, calibrated on (clear, adverse) training frames."""
    if condition not in BY_CONDITION:
        raise ValueError(f"no references for condition {condition!r}; known: {sorted(BY_CONDITION)}")
    out: dict[str, Reference] = {"identity": Identity({})}
    for name in BY_CONDITION[condition]:
        out[name] = ALL[name].calibrate(clear, adverse, seed=seed)
    return out


def from_dict(data: dict) -> Reference:
    return ALL[data["name"]](data["params"])
