"""The weather translation model: clear -> condition, CUT family, physics-structured head.

:class:`WeatherTranslator` bundles one generator, a PatchGAN discriminator and the PatchNCE
projector with their optimisers, and performs one training step::

    D:  LSGAN(real condition frames -> 1, generated -> 0)
    G:  lambda_gan * LSGAN(generated -> 1)
        + lambda_nce * PatchNCE(encoder(G(x)) vs encoder(x))     (content is kept)
        + lambda_idt * PatchNCE(encoder(G(y)) vs encoder(y))     (identity: a real adverse frame keeps its
                                                                  content; ``identity_loss: l1`` uses L1(G(y), y))

There is no cycle and no second generator. ``build_generator`` gives the bare generator (what is
registered in MLflow and used by evaluate).
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

from argus_tasks.models.config import GeneratorConfig
from argus_tasks.models.losses import PatchProjector, lsgan_d_loss, lsgan_g_loss, patch_nce_loss
from argus_tasks.models.networks import PatchDiscriminator, WeatherGenerator, count_parameters


def build_generator(cfg: GeneratorConfig, condition: str) -> WeatherGenerator:
    return WeatherGenerator(ngf=cfg.ngf, n_blocks=cfg.n_blocks, n_down=cfg.n_down, head=cfg.head,
                            extras=cfg.extras_for(condition), airlight_grid=cfg.airlight_grid,
                            noise_channels=cfg.noise_channels, coord_channels=cfg.coord_channels,
                            latent_channels=cfg.latent_channels, strength_spread=cfg.strength_spread)


class WeatherTranslator:
    def __init__(self, cfg: GeneratorConfig, condition: str, device: torch.device | str = "cpu"):
        self.cfg = cfg
        self.condition = condition
        self.device = torch.device(device)
        self.G = build_generator(cfg, condition).to(self.device)
        self.D = PatchDiscriminator(cfg.ndf, cfg.d_layers, cfg.minibatch_std).to(self.device)
        self.P = PatchProjector(self.G.layer_channels(cfg.nce_layers), cfg.nce_dim).to(self.device)
        if cfg.channels_last:
            for m in (self.G, self.D):
                m.to(memory_format=torch.channels_last)
        betas = (cfg.beta1, cfg.beta2)
        self.opt_g = torch.optim.Adam(list(self.G.parameters()) + list(self.P.parameters()), lr=cfg.lr, betas=betas)
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=cfg.lr, betas=betas)
        # What the training loop wraps in DDP (it replaces these with wrapped modules).
        self.g_train, self.d_train = self.G, self.D

    @property
    def n_params(self) -> dict[str, int]:
        return {"generator": count_parameters(self.G), "discriminator": count_parameters(self.D),
                "projector": count_parameters(self.P)}

    def _autocast(self):
        if self.cfg.amp_bf16 and self.device.type == "cuda":
            return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _prep(self, x: torch.Tensor) -> torch.Tensor:
        """A batch on the model's device as floats in [0, 1]; uint8 batches are converted there."""
        if x.dtype == torch.uint8:
            if x.device.type == "cpu" and self.device.type == "cuda":
                x = x.pin_memory()
            x = x.to(self.device, non_blocking=True).float().div_(255.0)
        else:
            x = x.to(self.device, non_blocking=True)
        if self.cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def train_step(self, clear: torch.Tensor, adverse: torch.Tensor) -> dict[str, float]:
        """One D step and one G step on a batch of clear frames and a batch of real adverse frames.

        Each wrapped (DDP) module runs one forward per step; the NCE encoder passes and the
        G-step discriminator pass use the bare modules, so DDP sees a static graph.
        """
        cfg = self.cfg
        x, y = self._prep(clear), self._prep(adverse)
        n = x.shape[0]
        with self._autocast():
            # generated frames for both the D and the G update (CUT runs G once per step);
            # the real adverse frames go through G too, for the identity loss
            # (half of them suffice for a weak identity term, and save a quarter of the generator's work)
            y_idt = y[: max(1, y.shape[0] // 2)]
            both = self.g_train(torch.cat([x, y_idt], 0)) if cfg.lambda_idt > 0 else self.g_train(x)
            fake = both[:n]
            # --- discriminator: real adverse -> 1, generated -> 0 (one forward on both halves)
            self.opt_d.zero_grad(set_to_none=True)
            d_out = self.d_train(torch.cat([y, fake.detach()], 0))
            loss_d = lsgan_d_loss(d_out[: y.shape[0]], d_out[y.shape[0]:])
        loss_d.backward()
        self.opt_d.step()
        with self._autocast():
            # --- generator (+ projector)
            self.opt_g.zero_grad(set_to_none=True)
            for p in self.D.parameters():
                p.requires_grad_(False)
            loss_gan = lsgan_g_loss(self.D(fake))
            for p in self.D.parameters():
                p.requires_grad_(True)
            src_feats = self.G.encode(x, cfg.nce_layers)
            out_feats = self.G.encode(fake, cfg.nce_layers)
            k, ids = self.P(src_feats, cfg.nce_patches)
            q, _ = self.P(out_feats, cfg.nce_patches, ids)
            loss_nce = sum(patch_nce_loss(qi, ki, cfg.nce_temperature) for qi, ki in zip(q, k, strict=True)) / len(q)
            if cfg.lambda_idt > 0 and cfg.identity_loss == "nce":
                # CUT's identity term: G applied to a real adverse frame must keep that frame's content
                # (PatchNCE between y and G(y)); unlike L1(G(y), y) it does not pin G to the identity
                k_y, ids_y = self.P(self.G.encode(y_idt, cfg.nce_layers), cfg.nce_patches)
                q_y, _ = self.P(self.G.encode(both[n:], cfg.nce_layers), cfg.nce_patches, ids_y)
                loss_idt = sum(patch_nce_loss(qi, ki, cfg.nce_temperature)
                               for qi, ki in zip(q_y, k_y, strict=True)) / len(q_y)
            elif cfg.lambda_idt > 0:
                loss_idt = F.l1_loss(both[n:].float(), y_idt.float())
            else:
                loss_idt = torch.zeros((), device=self.device)
            loss_g = cfg.lambda_gan * loss_gan + cfg.lambda_nce * loss_nce + cfg.lambda_idt * loss_idt
        loss_g.backward()
        self._sync_projector_grads()
        self.opt_g.step()
        return {"loss_d": float(loss_d.detach()), "loss_g": float(loss_g.detach()),
                "loss_gan": float(loss_gan.detach()), "loss_nce": float(loss_nce.detach()),
                "loss_idt": float(loss_idt.detach())}

    def _sync_projector_grads(self) -> None:
        """The projector is not DDP-wrapped (two forwards per step): average its grads by hand."""
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return
        world = dist.get_world_size()
        for p in self.P.parameters():
            if p.grad is not None:
                dist.all_reduce(p.grad)
                p.grad.div_(world)

    def wrap_ddp(self, device_ids: list[int] | None = None) -> None:
        """Wrap G and D in DistributedDataParallel (torchrun); call after the process group is up."""
        from torch.nn.parallel import DistributedDataParallel as DDP

        self.g_train = DDP(self.G, device_ids=device_ids)
        self.d_train = DDP(self.D, device_ids=device_ids)

    # -- checkpoint state --------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"G": self.G.state_dict(), "D": self.D.state_dict(), "P": self.P.state_dict(),
                "opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.G.load_state_dict(state["G"])
        self.D.load_state_dict(state["D"])
        self.P.load_state_dict(state["P"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])


@torch.no_grad()
def translate(generator: torch.nn.Module, frames: torch.Tensor, seed: int = 0, batch_size: int = 64) -> torch.Tensor:
    """Apply ``generator`` to ``frames`` (N,3,H,W in [0,1]) with a fixed noise seed, in eval mode."""
    was_training = generator.training
    generator.eval()
    device = next(generator.parameters()).device
    devices = [device] if device.type == "cuda" else []
    outs = []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        for i in range(0, frames.shape[0], batch_size):
            outs.append(generator(frames[i:i + batch_size].to(device)).float().cpu())
    generator.train(was_training)
    return torch.cat(outs, 0) if outs else frames.new_zeros((0, *frames.shape[1:]))
