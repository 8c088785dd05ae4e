"""A registered generator as a deployable artifact: ONNX, uint8 frames in, uint8 frames out.

:class:`SeededGenerator` wraps a :class:`~argus_tasks.models.networks.WeatherGenerator` into the
graph that is exported: ``frames`` uint8 (N, H, W, 3) -> ``/255`` -> NCHW -> G -> clamp ->
``*255``, round -> uint8 (N, H, W, 3). Batch, height and width are dynamic (H and W multiples of
``2**n_down``, at least twice that; :func:`frame_inputs` pads other sizes and the runners crop back).

**Noise.** The generator draws a per-pixel noise plane and a per-frame latent (the weather's
strength) from torch's global RNG inside ``forward``. A random op inside an ONNX graph is neither
reproducible nor seedable per frame, and noise baked in as a constant would fix one frame size,
so the noise is a graph **input**: ``noise`` (N, C, H, W) and ``latent`` (N, L, 1, 1), float32.
:func:`frame_inputs` draws them with numpy's PCG64 seeded by each frame's seed (protocol
``argus-noise-v1``): the same frame and seed give the same output whatever batch it runs in, on
any machine, with or without torch. :func:`frame_seed` derives a frame's seed from the run seed and
its frame id. The eager reference (:class:`EagerRunner`) takes exactly the same inputs, so parity
compares like with like.

``exportable=False`` runs the generator's own operations (``torch.linspace``,
``adaptive_avg_pool2d``): bit-identical to ``translate(generator, x, seed)`` given torch's noise.
``exportable=True`` (what is exported) replaces those two with equivalent ops whose sizes stay
symbolic (the exporter specialises both to the example's size otherwise: other heights then fail
or silently pool with the wrong window); they agree with the originals within float rounding.

:func:`load_runner` is what the generate step calls: an onnxruntime session (CUDA execution
provider when there is one, else CPU, threads bounded by :func:`~argus_tasks.models.runtime.cpu_threads`).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)
NOISE_PROTOCOL = "argus-noise-v1"
INPUTS = ("frames", "noise", "latent")
OUTPUT = "generated"
OPSET = 18
META = "argus."


def frame_seed(seed: int, key) -> int:
    """A 63-bit seed for one frame from the run's seed and the frame's id (or index)."""
    digest = hashlib.sha256(f"{NOISE_PROTOCOL}\0{int(seed)}\0{key}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2 ** 63 - 1)


def _seeds(seed, n: int) -> list[int]:
    if isinstance(seed, (int, np.integer)):
        return [frame_seed(int(seed), i) for i in range(n)]
    seeds = [int(s) for s in seed]
    if len(seeds) != n:
        raise ValueError(f"{len(seeds)} seeds for {n} frames: give one seed per frame, or one int")
    return seeds


def layout(generator) -> dict:
    """What the noise inputs and frame sizes of ``generator``'s graph are."""
    multiple = 2 ** len(generator.decoder)
    return {"multiple": multiple, "min_size": 2 * multiple, "noise_channels": max(int(generator.noise_channels), 1),
            "latent_channels": max(int(generator.latent_channels), 1)}


def frame_inputs(frames: np.ndarray, seeds: Sequence[int], spec: dict) -> dict[str, np.ndarray]:
    """Graph inputs for uint8 ``frames`` (N, H, W, 3): frames padded (reflect) to the size multiple, and noise."""
    n, h, w = frames.shape[:3]
    m = int(spec["multiple"])
    hp, wp = max(-(-h // m) * m, int(spec["min_size"])), max(-(-w // m) * m, int(spec["min_size"]))
    if (hp, wp) != (h, w):
        mode = "reflect" if hp - h < h and wp - w < w else "edge"
        frames = np.pad(frames, ((0, 0), (0, hp - h), (0, wp - w), (0, 0)), mode=mode)
    noise = np.empty((n, int(spec["noise_channels"]), hp, wp), np.float32)
    latent = np.empty((n, int(spec["latent_channels"]), 1, 1), np.float32)
    for i, s in enumerate(seeds):
        rng = np.random.Generator(np.random.PCG64(int(s)))
        latent[i] = rng.standard_normal(latent.shape[1:], dtype=np.float32)
        noise[i] = rng.standard_normal(noise.shape[1:], dtype=np.float32)
    return {"frames": np.ascontiguousarray(frames), "noise": noise, "latent": latent}


def _check_frames(frames) -> tuple[np.ndarray, bool]:
    frames = np.asarray(frames)
    single = frames.ndim == 3
    if single:
        frames = frames[None]
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 (N, H, W, 3) RGB, got {frames.dtype} {frames.shape}")
    return frames, single


class SeededGenerator(nn.Module):
    """uint8 NHWC frames + the generator's noise and latent -> uint8 NHWC frames (see the module docstring)."""

    def __init__(self, generator: nn.Module, exportable: bool = True):
        super().__init__()
        self.g = generator
        self.exportable = exportable

    def _rows(self, h, x: torch.Tensor) -> torch.Tensor:
        if not self.exportable:
            return torch.linspace(-1.0, 1.0, h, device=x.device, dtype=x.dtype)
        # torch.linspace's formula (from both ends to the middle; equal to it within float rounding), symbolic length
        idx = torch.arange(h, device=x.device, dtype=x.dtype)
        step = 2.0 / torch.clamp(torch.full((), h - 1, device=x.device, dtype=x.dtype), min=1.0)
        return torch.where(idx < h // 2, -1.0 + step * idx, 1.0 - step * (h - 1 - idx))

    def _pool(self, x: torch.Tensor, bins: int) -> torch.Tensor:
        if not self.exportable:
            return F.adaptive_avg_pool2d(x, bins)
        # adaptive average pooling as two averaging matrices: bin i covers [floor(i*S/G), ceil((i+1)*S/G))
        def matrix(size):
            i = torch.arange(bins, device=x.device).unsqueeze(1)
            s = torch.arange(size, device=x.device).unsqueeze(0)
            start = torch.div(i * size, bins, rounding_mode="floor")
            end = torch.div((i + 1) * size + bins - 1, bins, rounding_mode="floor")
            inside = ((s >= start) & (s < end)).to(x.dtype)
            return inside / (end - start).to(x.dtype)

        return matrix(x.shape[2]) @ x @ matrix(x.shape[3]).transpose(0, 1)

    def forward(self, frames: torch.Tensor, noise: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
        g = self.g
        x = frames.permute(0, 3, 1, 2).float() / 255.0
        n, _, h, w = x.shape
        z = latent[:, : g.latent_channels] if g.latent_channels else None
        hid = x * 2.0 - 1.0
        if g.noise_channels:
            hid = torch.cat([hid, noise[:, : g.noise_channels]], dim=1)
        if z is not None:
            hid = torch.cat([hid, z.expand(-1, -1, h, w)], dim=1)
        if g.coord_channels:
            hid = torch.cat([hid, self._rows(h, x).view(1, 1, -1, 1).expand(n, 1, h, w)], dim=1)
        for layer in g.encoder:
            hid = layer(hid)
        dec = g.decoder(hid)
        if g.head_kind == "free":
            img = (torch.tanh(g.out(dec)) + 1.0) / 2.0
        else:
            pix = g.pixel_head(dec)
            strength = torch.ones_like(pix[:, :1, :1, :1])
            if z is not None and g.strength_spread:
                strength = torch.exp(g.strength_spread * z[:, :1])
            t = torch.exp(-F.softplus(pix[:, :1]) * strength)
            low = g.lowfreq_head(self._pool(hid, g.airlight_grid))
            low = F.interpolate(low, size=(h, w), mode="bilinear", align_corners=False)
            scene, k = x, 3
            if "gain" in g.extras:
                scene = x * torch.exp(low[:, k:k + 3].clamp(-5.0, 1.0) * strength)
                k += 3
            img = scene * t + torch.sigmoid(low[:, :3]) * (1.0 - t)
            if "particles" in g.extras:
                p = torch.sigmoid(pix[:, 1:2])
                img = img * (1.0 - p) + torch.sigmoid(low[:, k:k + 3]) * p
        out = (img.clamp(0.0, 1.0) * 255.0).round().to(torch.uint8)
        return out.permute(0, 2, 3, 1)


def export_onnx(generator: nn.Module, path: str | Path, metadata: dict | None = None, example_size: int = 64) -> dict:
    """Export ``generator`` (CPU, eval) to the ONNX file ``path`` with dynamic N, H, W; returns figures."""
    import onnx

    generator = generator.float().cpu().eval()
    spec = layout(generator)
    m = spec["multiple"]
    size = max(-(-example_size // m) * m, spec["min_size"])
    batch, height, width = torch.export.Dim("batch", min=1), torch.export.Dim("h", min=2), torch.export.Dim("w", min=2)
    dyn_h, dyn_w = m * height, m * width
    example = frame_inputs(np.zeros((2, size, size + m, 3), np.uint8), [0, 1], spec)
    args = tuple(torch.from_numpy(example[k]) for k in INPUTS)
    shapes = {"frames": {0: batch, 1: dyn_h, 2: dyn_w}, "noise": {0: batch, 2: dyn_h, 3: dyn_w}, "latent": {0: batch}}
    started = time.perf_counter()
    with torch.no_grad(), _quiet() as printed:
        program = torch.onnx.export(SeededGenerator(generator, exportable=True).eval(), args, dynamo=True,
                                    dynamic_shapes=shapes, input_names=list(INPUTS), output_names=[OUTPUT],
                                    opset_version=OPSET, verbose=False)
    log.debug("torch.onnx.export said:\n%s", printed.getvalue())
    model = program.model_proto
    meta = {"noise_protocol": NOISE_PROTOCOL, "torch": torch.__version__, **{k: str(v) for k, v in spec.items()},
            **{k: str(v) for k, v in (metadata or {}).items()}}
    for key, value in sorted(meta.items()):
        model.metadata_props.add(key=META + key, value=value)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(model, str(path))
    export_s = time.perf_counter() - started
    return {"export_s": round(export_s, 2), "size_bytes": path.stat().st_size, "opset": OPSET,
            "sha256": sha256_file(path)}


@contextlib.contextmanager
def _quiet():
    """The exporter's progress prints, INFO logs of its graph passes and shape warnings, kept out of the step log."""
    loggers = [logging.getLogger(n) for n in ("onnx_ir", "onnxscript", "torch.onnx", "torch.export")]
    levels = [lg.level for lg in loggers]
    buf = io.StringIO()
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR if lg.name == "torch.onnx" else logging.WARNING)
        with warnings.catch_warnings(), contextlib.redirect_stdout(buf):
            warnings.simplefilter("ignore", UserWarning)
            warnings.simplefilter("ignore", FutureWarning)
            yield buf
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_metadata(path: str | Path) -> dict[str, str]:
    """The ``argus.*`` metadata of an exported file (without the prefix)."""
    import onnx

    model = onnx.load_model(str(path), load_external_data=False)
    return {p.key[len(META):]: p.value for p in model.metadata_props if p.key.startswith(META)}


class _Runner:
    """Common call protocol: uint8 (N, H, W, 3) or (H, W, 3) frames and per-frame seeds -> uint8 frames."""

    spec: dict
    batch_size: int = 16

    def __call__(self, frames, seed: int | Sequence[int] = 0) -> np.ndarray:
        frames, single = _check_frames(frames)
        n, h, w = frames.shape[:3]
        seeds = _seeds(seed, n)
        outs = []
        for i in range(0, n, self.batch_size):
            inputs = frame_inputs(frames[i:i + self.batch_size], seeds[i:i + self.batch_size], self.spec)
            outs.append(self._run(inputs)[:, :h, :w])
        out = np.concatenate(outs) if outs else np.zeros_like(frames)
        return out[0] if single else out


class OnnxRunner(_Runner):
    def __init__(self, path: str | Path, device: str = "auto", threads: int | None = None, batch_size: int = 16):
        import onnxruntime as ort

        from argus_tasks.models.runtime import cpu_threads

        self.path = str(path)
        self.metadata = read_metadata(path)
        if self.metadata.get("noise_protocol") != NOISE_PROTOCOL:
            raise ValueError(f"{path} is not an Argus generator export ({NOISE_PROTOCOL} metadata missing)")
        self.spec = {k: int(self.metadata[k]) for k in ("multiple", "min_size", "noise_channels", "latent_channels")}
        available = ort.get_available_providers()
        if device == "cuda" and "CUDAExecutionProvider" not in available:
            from argus_tasks.contract import PermanentStepError

            raise PermanentStepError(f"device cuda was asked for, but onnxruntime {ort.__version__} offers only "
                                     f"{available} (the CUDA execution provider needs the onnxruntime-gpu build); "
                                     "use device auto")
        if device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device must be auto, cpu or cuda, got {device!r}")
        use_cuda = device in ("cuda", "auto") and "CUDAExecutionProvider" in available
        providers = (["CUDAExecutionProvider"] if use_cuda else []) + ["CPUExecutionProvider"]
        options = ort.SessionOptions()
        options.intra_op_num_threads = cpu_threads(threads)
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self.session = ort.InferenceSession(self.path, sess_options=options, providers=providers)
        self.providers = self.session.get_providers()
        self.device = "cuda" if "CUDAExecutionProvider" in self.providers else "cpu"
        self.inputs = {i.name for i in self.session.get_inputs()}
        self.batch_size = batch_size

    def _run(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        return self.session.run([OUTPUT], {k: v for k, v in inputs.items() if k in self.inputs})[0]


class EagerRunner(_Runner):
    """The same protocol on the eager PyTorch generator (the parity reference and the benchmark's baseline)."""

    def __init__(self, generator: nn.Module, device: str = "auto", batch_size: int = 16, exportable: bool = False):
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        self.module = SeededGenerator(generator.float().eval(), exportable=exportable).to(self.device).eval()
        self.spec = layout(generator)
        self.batch_size = batch_size

    def _run(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        with torch.inference_mode():
            args = [torch.from_numpy(inputs[k]).to(self.device) for k in INPUTS]
            return self.module(*args).cpu().numpy()


def load_runner(path: str, device: str = "auto", threads: int | None = None, batch_size: int = 16) -> OnnxRunner:
    """A callable running the exported generator ``path``: uint8 NHWC numpy in, uint8 NHWC numpy out.

    ``runner(frames, seed)``: ``seed`` is one int (frame i then gets ``frame_seed(seed, i)``) or one
    seed per frame (pass ``frame_seed(run_seed, frame_id)`` for outputs that do not depend on how
    frames are batched). ``device``: ``auto`` (CUDA execution provider when onnxruntime has one),
    ``cpu`` or ``cuda``. ``runner.providers`` names what runs it.
    """
    return OnnxRunner(path, device=device, threads=threads, batch_size=batch_size)
