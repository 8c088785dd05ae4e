"""Typed generator configs (``tiny`` and ``full``) and their overrides.

A config is a frozen dataclass. :func:`load_config` starts from a named preset and applies
overrides (from the CLI or a JSON document); an unknown key is rejected with an error that lists
the known ones, so a typo never trains silently with a default.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

HEADS = ("physics", "free")
# Which optional physics terms each condition gets when ``extras`` is "auto":
# gain = low-frequency multiplicative illumination (exposure, colour cast),
# particles = additive particle layer composited over the scene (streaks, flakes).
AUTO_EXTRAS = {
    "fog": (),
    "rain": ("gain", "particles"),
    "snow": ("gain", "particles"),
    "night": ("gain",),
}


class ConfigError(ValueError):
    """A config name, key or value that is not allowed."""


@dataclass(frozen=True)
class GeneratorConfig:
    name: str = "tiny"
    # data
    image_size: int = 64  # training size: frames are resized to it, or randomly cropped when random_crop
    random_crop: bool = False
    batch_size: int = 8
    # generator
    ngf: int = 16
    n_blocks: int = 4
    n_down: int = 2
    head: str = "physics"  # physics | free
    extras: str = "auto"  # auto | none | gain | particles | gain+particles
    airlight_grid: int = 4  # A is predicted on an airlight_grid x airlight_grid grid (low frequency)
    noise_channels: int = 1  # noise planes fed to the generator (particles, sensor noise)
    coord_channels: int = 1  # a row-coordinate plane (the flat-world depth cue); 0 to disable
    latent_channels: int = 2  # per-image random planes: frame-to-frame variety of the weather
    strength_spread: float = 0.35  # std of the per-frame log strength (optical depth, log gain); physics head
    # discriminator
    ndf: int = 16
    d_layers: int = 3
    minibatch_std: bool = False  # ProGAN minibatch-stddev channel in D (made D too strong on the tiny config)
    # losses
    lambda_gan: float = 1.0
    lambda_nce: float = 1.0
    lambda_idt: float = 0.1
    identity_loss: str = "l1"  # l1: |G(y) - y| (weak: 0.1); nce: CUT's content identity (slower start on tiny)
    nce_layers: tuple[int, ...] = (0, 1, 2, 3)
    nce_patches: int = 64
    nce_temperature: float = 0.07
    nce_dim: int = 64
    # optimisation
    steps: int = 160  # ~40-50 s on one idle core: the demo trains four conditions in a few minutes
    lr: float = 1e-3
    beta1: float = 0.5
    beta2: float = 0.999
    # runtime
    threads: int = 1  # 1: the DAG trains conditions side by side on few cores (see models/runtime.py)
    amp_bf16: bool = False  # bf16 autocast (GPU only)
    channels_last: bool = False
    checkpoint_every_steps: int = 100
    checkpoint_every_s: float = 60.0
    log_every_steps: int = 25
    sample_every_steps: int = 0  # also log a sample grid every N steps (checked at log steps); 0: only at the end
    seed: int = 0

    def __post_init__(self):
        if self.head not in HEADS:
            raise ConfigError(f"head must be one of {HEADS}, got {self.head!r}")
        if self.identity_loss not in ("nce", "l1"):
            raise ConfigError(f"identity_loss must be nce or l1, got {self.identity_loss!r}")
        valid_extras = {"auto", "none", "gain", "particles", "gain+particles"}
        if self.extras not in valid_extras:
            raise ConfigError(f"extras must be one of {sorted(valid_extras)}, got {self.extras!r}")
        for key in ("image_size", "batch_size", "ngf", "ndf", "steps", "nce_patches", "nce_dim"):
            if getattr(self, key) <= 0:
                raise ConfigError(f"{key} must be positive, got {getattr(self, key)!r}")
        if self.image_size % (2 ** self.n_down):
            raise ConfigError(f"image_size {self.image_size} must be divisible by 2**n_down={2 ** self.n_down}")

    def extras_for(self, condition: str) -> tuple[str, ...]:
        if self.head == "free" or self.extras == "none":
            return ()
        if self.extras == "auto":
            return AUTO_EXTRAS.get(condition, ())
        return tuple(self.extras.split("+"))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


PRESETS: dict[str, GeneratorConfig] = {
    # 64 px, ~0.35 M generator parameters, learns visibly on 2 CPU cores in 1-4 minutes.
    "tiny": GeneratorConfig(),
    # GPU config: 256 px crops, ResNet-9-block generator with ngf 64 (the CycleGAN/CUT generator).
    "full": GeneratorConfig(
        name="full", image_size=256, random_crop=True, batch_size=16, ngf=64, n_blocks=9, n_down=2, ndf=64, d_layers=3,
        nce_patches=256, nce_dim=256, steps=20000, threads=8, amp_bf16=True, channels_last=True,
        checkpoint_every_steps=1000, checkpoint_every_s=600.0, log_every_steps=100, airlight_grid=8, lr=2e-4,
    ),
}

_FIELDS = {f.name: f for f in dataclasses.fields(GeneratorConfig)}


def _coerce(key: str, value):
    """Coerce a (possibly string) override to the field's type; ConfigError when impossible."""
    ftype = _FIELDS[key].type
    try:
        if ftype in ("bool", bool):
            if isinstance(value, str):
                low = value.strip().lower()
                if low not in {"1", "0", "true", "false", "yes", "no"}:
                    raise ValueError(value)
                return low in {"1", "true", "yes"}
            return bool(value)
        if ftype in ("int", int):
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(value)
        if ftype in ("float", float):
            return float(value)
        if str(ftype).startswith("tuple"):
            if isinstance(value, str):
                value = [v for v in value.replace(" ", "").split(",") if v]
            return tuple(int(v) for v in value)
        return str(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"config key {key!r}: cannot use {value!r} as {ftype}") from exc


def load_config(name: str, overrides: dict | None = None) -> GeneratorConfig:
    """The preset ``name`` with ``overrides`` applied; unknown names or keys raise ConfigError."""
    if name not in PRESETS:
        raise ConfigError(f"unknown model config {name!r}; choose one of {sorted(PRESETS)}")
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    unknown = sorted(set(overrides) - set(_FIELDS))
    if unknown:
        raise ConfigError(
            f"unknown config key(s) {unknown} for model config {name!r}; known keys: {sorted(_FIELDS)}"
        )
    coerced = {k: _coerce(k, v) for k, v in overrides.items()}
    return dataclasses.replace(PRESETS[name], **coerced)


def config_from_dict(data: dict) -> GeneratorConfig:
    """Rebuild a config saved with :meth:`GeneratorConfig.to_dict` (checkpoints, registry)."""
    data = dict(data)
    name = data.pop("name", "tiny")
    return load_config(name if name in PRESETS else "tiny", {**data, "name": name})


def parse_overrides(items: list[str] | None) -> dict:
    """``["lr=1e-3", "ngf=32"]`` -> dict; a malformed item raises ConfigError."""
    out = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"config override {item!r} must look like key=value")
        key, value = item.split("=", 1)
        out[key.strip()] = value.strip()
    return out


__all__ = ["GeneratorConfig", "ConfigError", "PRESETS", "HEADS", "load_config", "config_from_dict",
           "parse_overrides"]
