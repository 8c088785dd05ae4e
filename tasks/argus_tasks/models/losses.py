"""Losses of the CUT-family translation model: LSGAN and PatchNCE (no cycle)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def lsgan_d_loss(d_real: torch.Tensor, d_fake: torch.Tensor) -> torch.Tensor:
    """Least-squares GAN discriminator loss: real -> 1, generated -> 0."""
    return 0.5 * (F.mse_loss(d_real, torch.ones_like(d_real)) + F.mse_loss(d_fake, torch.zeros_like(d_fake)))


def lsgan_g_loss(d_fake: torch.Tensor) -> torch.Tensor:
    """Least-squares GAN generator loss: make the discriminator say 1."""
    return F.mse_loss(d_fake, torch.ones_like(d_fake))


class PatchProjector(nn.Module):
    """Samples the same patch positions from two feature pyramids and projects them (2-layer MLP)."""

    def __init__(self, channels: list[int], dim: int = 64):
        super().__init__()
        self.mlps = nn.ModuleList(
            nn.Sequential(nn.Linear(c, dim), nn.ReLU(inplace=True), nn.Linear(dim, dim)) for c in channels)

    def forward(self, feats: list[torch.Tensor], n_patches: int, ids: list[torch.Tensor] | None = None):
        out, used = [], []
        for i, (f, mlp) in enumerate(zip(feats, self.mlps, strict=True)):
            b, c, h, w = f.shape
            flat = f.permute(0, 2, 3, 1).reshape(b, h * w, c)
            if ids is None:
                idx = torch.randperm(h * w, device=f.device)[: min(n_patches, h * w)]
            else:
                idx = ids[i]
            x = mlp(flat[:, idx, :].float())
            out.append(F.normalize(x, dim=-1))
            used.append(idx)
        return out, used


def patch_nce_loss(q: torch.Tensor, k: torch.Tensor, temperature: float) -> torch.Tensor:
    """InfoNCE between query patches ``q`` (output image) and key patches ``k`` (input image).

    ``q``, ``k``: (B, P, D), L2-normalised. For each patch of each image, the positive is the key
    at the same position; the negatives are the other patches of the same image.
    """
    b, p, _ = q.shape
    logits = torch.bmm(q, k.detach().transpose(1, 2)) / temperature  # (B, P, P)
    target = torch.arange(p, device=q.device).unsqueeze(0).expand(b, p)
    return F.cross_entropy(logits.reshape(b * p, p), target.reshape(b * p))
