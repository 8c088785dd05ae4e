"""Generator and discriminator networks of the weather translation model (CUT family).

* :class:`WeatherGenerator`: a ResNet generator (stem, ``n_down`` stride-2 convs, ``n_blocks``
  residual blocks, ``n_down`` upsampling convs) with a selectable output head:

  - ``physics``: the net predicts a per-pixel transmittance ``t`` and a low-frequency airlight /
    illumination layer ``A`` (predicted on a coarse grid and upsampled), and composes
    ``I = g * J * t + A * (1 - t)`` then ``I = I * (1 - p) + c * p``, where the optional gain ``g``
    (low frequency, exposure and colour cast) and particle layer ``p`` with colour ``c`` (streaks,
    flakes) depend on the condition. The scene ``J`` is only attenuated and veiled, never redrawn,
    so its content (and labels) survive. At initialisation ``t ~ 1``, ``g = 1``, ``p ~ 0``: identity.
  - ``free``: a plain convolutional RGB output (what a CycleGAN/CUT generator does).

  ``encode`` exposes the encoder activations that the PatchNCE loss compares.
* :class:`PatchDiscriminator`: a PatchGAN (LSGAN outputs, no sigmoid).

Images are float tensors in [0, 1], NCHW.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _norm(ch: int) -> nn.Module:
    return nn.InstanceNorm2d(ch, affine=True)


class ResBlock(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(ch, ch, 3), _norm(ch), nn.ReLU(inplace=True),
            nn.ReflectionPad2d(1), nn.Conv2d(ch, ch, 3), _norm(ch),
        )

    def forward(self, x):
        return x + self.body(x)


class WeatherGenerator(nn.Module):
    def __init__(self, ngf: int = 16, n_blocks: int = 4, n_down: int = 2, head: str = "physics",
                 extras: tuple[str, ...] = (), airlight_grid: int = 4, noise_channels: int = 1,
                 coord_channels: int = 1, latent_channels: int = 0, strength_spread: float = 0.0):
        super().__init__()
        if head not in ("physics", "free"):
            raise ValueError(f"unknown head {head!r}")
        self.head_kind = head
        self.extras = tuple(extras)
        self.noise_channels = int(noise_channels)
        self.coord_channels = int(coord_channels)
        self.latent_channels = int(latent_channels)
        self.strength_spread = float(strength_spread)
        self.airlight_grid = int(airlight_grid)
        layers: list[nn.Module] = [nn.Sequential(
            nn.ReflectionPad2d(3), nn.Conv2d(3 + self.noise_channels + self.coord_channels + self.latent_channels, ngf, 7), _norm(ngf), nn.ReLU(inplace=True))]
        ch = ngf
        for _ in range(n_down):
            layers.append(nn.Sequential(nn.Conv2d(ch, ch * 2, 3, stride=2, padding=1), _norm(ch * 2),
                                        nn.ReLU(inplace=True)))
            ch *= 2
        layers += [ResBlock(ch) for _ in range(n_blocks)]
        self.encoder = nn.ModuleList(layers)
        self.bottleneck_ch = ch
        ups: list[nn.Module] = []
        for _ in range(n_down):
            ups.append(nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"),
                                     nn.Conv2d(ch, ch // 2, 3, padding=1), _norm(ch // 2), nn.ReLU(inplace=True)))
            ch //= 2
        self.decoder = nn.Sequential(*ups)
        if head == "free":
            self.out = nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(ch, 3, 7))
        else:
            n_pix = 1 + (1 if "particles" in self.extras else 0)  # t logit, particle alpha logit
            self.pixel_head = nn.Conv2d(ch, n_pix, 3, padding=1)
            n_low = 3 + (3 if "gain" in self.extras else 0) + (3 if "particles" in self.extras else 0)
            self.lowfreq_head = nn.Conv2d(self.bottleneck_ch, n_low, 1)
            with torch.no_grad():  # start close to the identity: t ~ 0.8, gain = 1, no particles
                self.pixel_head.weight.mul_(0.1)
                self.pixel_head.bias.zero_()
                self.pixel_head.bias[0] = -1.5  # optical depth softplus(-1.5) ~ 0.2: a light veil to start from
                if "particles" in self.extras:
                    self.pixel_head.bias[1] = -5.0
                self.lowfreq_head.weight.mul_(0.1)
                self.lowfreq_head.bias.zero_()

    def __setstate__(self, state):
        # a generator pickled by an older version of this class (a registered champion) lacks the
        # attributes added since; their defaults reproduce the old behaviour
        super().__setstate__(state)
        for name, default in (("coord_channels", 0), ("latent_channels", 0), ("strength_spread", 0.0),
                              ("noise_channels", 0), ("extras", ())):
            if not hasattr(self, name):
                setattr(self, name, default)

    # -- parts ------------------------------------------------------------------------------
    def _input(self, x: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        h = x * 2.0 - 1.0
        if self.noise_channels:
            noise = torch.randn(x.shape[0], self.noise_channels, x.shape[2], x.shape[3],
                                device=x.device, dtype=x.dtype)
            h = torch.cat([h, noise], dim=1)
        if self.latent_channels:
            # one random value per image and plane: lets the net vary the weather's strength from frame to
            # frame (fog density, rain amount), as real frames do
            if z is None:
                z = self.sample_latent(x)
            h = torch.cat([h, z.expand(-1, -1, x.shape[2], x.shape[3])], dim=1)
        if self.coord_channels:
            # the row coordinate: on a road camera the row is the strongest depth cue (flat world)
            rows = torch.linspace(-1.0, 1.0, x.shape[2], device=x.device, dtype=x.dtype)
            h = torch.cat([h, rows.view(1, 1, -1, 1).expand(x.shape[0], 1, x.shape[2], x.shape[3])], dim=1)
        return h

    def sample_latent(self, x: torch.Tensor) -> torch.Tensor:
        return torch.randn(x.shape[0], max(self.latent_channels, 1), 1, 1, device=x.device, dtype=x.dtype)

    def encode(self, x: torch.Tensor, layers: tuple[int, ...]) -> list[torch.Tensor]:
        """Encoder activations at the given layer indices (for PatchNCE)."""
        feats, h = [], self._input(x)
        last = max(layers)
        for i, layer in enumerate(self.encoder):
            h = layer(h)
            if i in layers:
                feats.append(h)
            if i == last:
                break
        return feats

    def components(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The physical layers (t, A, gain, particles) for a batch; physics head only.

        The optical depth ``-ln t`` (and the log gain) of each frame is scaled by
        ``s = exp(strength_spread * z)`` with the frame's latent ``z``: the weather's strength
        varies from frame to frame by construction (real fog ranges from haze to a wall). A GAN
        judging one frame at a time has no reason to keep that variety (it would collapse to the
        typical density), so it is part of the image formation instead.
        """
        z = self.sample_latent(x) if self.latent_channels else None
        h = self._input(x, z)
        for layer in self.encoder:
            h = layer(h)
        bott = h
        dec = self.decoder(h)
        if self.head_kind == "free":
            return {"free": dec}
        size = x.shape[-2:]
        pix = self.pixel_head(dec)
        strength = torch.ones_like(pix[:, :1, :1, :1])
        if z is not None and self.strength_spread:
            strength = torch.exp(self.strength_spread * z[:, :1])
        t = torch.exp(-F.softplus(pix[:, :1]) * strength)
        low = self.lowfreq_head(F.adaptive_avg_pool2d(bott, self.airlight_grid))
        low = F.interpolate(low, size=size, mode="bilinear", align_corners=False)
        out = {"t": t, "A": torch.sigmoid(low[:, :3])}
        k = 3
        if "gain" in self.extras:
            out["gain"] = torch.exp(low[:, k:k + 3].clamp(-5.0, 1.0) * strength)
            k += 3
        if "particles" in self.extras:
            out["p"] = torch.sigmoid(pix[:, 1:2])
            out["c"] = torch.sigmoid(low[:, k:k + 3])
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = self.components(x)
        if self.head_kind == "free":
            return (torch.tanh(self.out(parts["free"])) + 1.0) / 2.0
        scene = x * parts["gain"] if "gain" in parts else x
        img = scene * parts["t"] + parts["A"] * (1.0 - parts["t"])
        if "p" in parts:
            img = img * (1.0 - parts["p"]) + parts["c"] * parts["p"]
        return img.clamp(0.0, 1.0)

    def layer_channels(self, layers: tuple[int, ...]) -> list[int]:
        with torch.no_grad():
            dummy = torch.zeros(1, 3, 4 * 2 ** 4, 4 * 2 ** 4, device=next(self.parameters()).device)
            return [f.shape[1] for f in self.encode(dummy, layers)]


class MinibatchStd(nn.Module):
    """Appends the feature spread across small groups of images as one channel (ProGAN).

    A PatchGAN judges one patch of one image at a time, so it cannot see that every generated
    frame has the same fog density; this channel lets it, which pushes the generator to use its
    latent and keep the frame-to-frame variety of the real condition. Groups are consecutive
    images, so a batch laid out as [real | generated] never mixes the two.
    """

    def __init__(self, group: int = 4):
        super().__init__()
        self.group = group

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        g = self.group if n % self.group == 0 else (n if n > 1 else 1)
        if g < 2:
            return torch.cat([x, torch.zeros(n, 1, h, w, device=x.device, dtype=x.dtype)], 1)
        y = x.view(g, n // g, c, h, w).float()
        std = (y.var(0, unbiased=False) + 1e-8).sqrt().mean((1, 2, 3))  # (n // g,)
        std = std.to(x.dtype).view(1, n // g, 1, 1, 1).expand(g, -1, 1, h, w).reshape(n, 1, h, w)
        return torch.cat([x, std], 1)


class PatchDiscriminator(nn.Module):
    """PatchGAN: each output cell judges one receptive-field patch as real or generated."""

    def __init__(self, ndf: int = 16, n_layers: int = 3, minibatch_std: bool = True):
        super().__init__()
        seq: list[nn.Module] = [nn.Conv2d(3, ndf, 4, stride=2, padding=1), nn.LeakyReLU(0.2, inplace=True)]
        ch = ndf
        for i in range(1, n_layers):
            nxt = ndf * min(2 ** i, 8)
            seq += [nn.Conv2d(ch, nxt, 4, stride=2, padding=1), _norm(nxt), nn.LeakyReLU(0.2, inplace=True)]
            ch = nxt
        nxt = ndf * min(2 ** n_layers, 8)
        if minibatch_std:
            seq.append(MinibatchStd())
        seq += [nn.Conv2d(ch + (1 if minibatch_std else 0), nxt, 4, stride=1, padding=1), _norm(nxt),
                nn.LeakyReLU(0.2, inplace=True),
                nn.Conv2d(nxt, 1, 4, stride=1, padding=1)]
        self.net = nn.Sequential(*seq)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x * 2.0 - 1.0)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
