"""Generate a demo dataset of procedural driving frames in the layout of ``schema.py``.

The dataset is unpaired like real fleet data: every frame shows its own street (scene seed), so
the fog frames show other streets than the clear frames. Frames come in short sequences (drives)
whose capture times are spread over ``[start, end)``; a pull by time interval therefore selects
whole drives of that period.

Frame ids are stable: ``<condition>-<split>-b<batch>-<index>``; ``batch`` distinguishes the frames
added by later dataset revisions (``add-revision``) from the first ones.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from argus_tasks.data import manifest as mf
from argus_tasks.data.parallel import parallel_map
from argus_tasks.data.schema import CONDITIONS_ALL, SPLITS

log = logging.getLogger(__name__)

# The demo dataset: ~600 clear frames and ~200 per adverse condition at 64 px.
DEMO_COUNTS: dict[str, dict[str, int]] = {
    "clear": {"train": 420, "val": 90, "test": 90},
    **{c: {"train": 120, "val": 40, "test": 40} for c in ("fog", "rain", "snow", "night")},
}
DEMO_SIZE = 64
DEMO_PERIOD = timedelta(weeks=8)
SEQUENCE_LENGTH = 8  # frames per drive
FRAME_INTERVAL_S = 2.0  # seconds between frames of a drive


@dataclass(frozen=True)
class FrameJob:
    frame_id: str
    condition: str
    split: str
    sequence: str
    capture_time: datetime
    scene_seed: int
    size: int


def scene_seed(seed: int, batch: int, condition: str, split: str, index: int) -> int:
    """A distinct street per frame: clear and adverse frames never share a scene."""
    c, s = CONDITIONS_ALL.index(condition), SPLITS.index(split)
    return (((int(seed) * 1000 + int(batch)) * 8 + c) * 4 + s) * 1_000_000 + int(index)


def default_period(now: datetime | None = None) -> tuple[datetime, datetime]:
    end = (now or datetime.now(UTC)).replace(microsecond=0)
    return end - DEMO_PERIOD, end


def plan_frames(*, size: int, counts: dict, seed: int, start: datetime, end: datetime,
                batch: int = 0) -> list[FrameJob]:
    """The frames to generate: ids, scene seeds and capture times (drives spread over [start, end))."""
    if end <= start:
        raise ValueError(f"capture period is empty: start {start} is not before end {end}")
    span = (end - start).total_seconds()
    jobs = []
    for condition, per_split in counts.items():
        if condition not in CONDITIONS_ALL:
            raise ValueError(f"unknown condition {condition!r}; choose from {CONDITIONS_ALL}")
        for split, n in per_split.items():
            if split not in SPLITS:
                raise ValueError(f"unknown split {split!r}; choose from {SPLITS}")
            rng = np.random.default_rng([seed, batch, CONDITIONS_ALL.index(condition), SPLITS.index(split), 5])
            n_seq = -(-int(n) // SEQUENCE_LENGTH)
            drive_len = SEQUENCE_LENGTH * FRAME_INTERVAL_S
            offsets = rng.uniform(0.0, max(span - drive_len, 0.0), n_seq)
            for i in range(int(n)):
                k = i // SEQUENCE_LENGTH
                t = start + timedelta(seconds=float(offsets[k]) + (i % SEQUENCE_LENGTH) * FRAME_INTERVAL_S)
                jobs.append(FrameJob(
                    frame_id=f"{condition}-{split}-b{batch:02d}-{i:05d}",
                    condition=condition, split=split,
                    sequence=f"{condition}-{split}-b{batch:02d}-d{k:04d}",
                    capture_time=min(t, end - timedelta(microseconds=1)),
                    scene_seed=scene_seed(seed, batch, condition, split, i), size=int(size),
                ))
    return jobs


def render_frame(job: FrameJob) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """RGB, label and depth (uint16 cm) of one planned frame."""
    from argus_tasks.data.scenes import apply_condition, render_scene

    scene = render_scene(job.scene_seed, job.size)
    rgb = apply_condition(scene, job.condition, np.random.default_rng([job.scene_seed, 77]))
    depth_cm = np.clip(np.round(scene.depth * 100.0), 0, 65535).astype(np.uint16)
    return rgb, scene.label, depth_cm


def relpaths(condition: str, split: str, frame_id: str) -> dict[str, str]:
    tail = f"{condition}/{split}/{frame_id}.png"
    return {"frame": f"frames/{tail}", "label": f"labels/{tail}", "depth": f"depth/{tail}"}


def _write_frame(args: tuple[str, FrameJob]) -> dict:
    root, job = args
    rgb, label, depth = render_frame(job)
    paths = relpaths(job.condition, job.split, job.frame_id)
    frame_png, label_png = mf.png_bytes(rgb), mf.png_bytes(label)
    for key, data in (("frame", frame_png), ("label", label_png), ("depth", mf.png_bytes(depth))):
        mf.write_file(Path(root) / paths[key], data)
    mean, std = mf.brightness_stats(rgb)
    return {
        "frame_id": job.frame_id, "split": job.split, "condition": job.condition, "sequence": job.sequence,
        "capture_time": job.capture_time, "width": int(rgb.shape[1]), "height": int(rgb.shape[0]),
        "frame_sha256": mf.sha256_bytes(frame_png), "label_sha256": mf.sha256_bytes(label_png),
        "frame_path": paths["frame"], "label_path": paths["label"],
        "brightness_mean": mean, "brightness_std": std,
    }


def write_frames(root: Path, jobs: list[FrameJob], workers: int | None = None) -> list[dict]:
    """Render and write ``jobs`` under ``root`` (in parallel); their manifest rows, in job order."""
    return list(parallel_map(_write_frame, [(str(root), j) for j in jobs], workers=workers,
                             what="generated frames", log_every=500))


def generate_dataset(root, *, size: int = DEMO_SIZE, counts: dict | None = None, seed: int = 0,
                     start: datetime | None = None, end: datetime | None = None, batch: int = 0,
                     workers: int | None = None):
    """Write a dataset (frames, labels, depth, ``manifest.parquet``) under ``root``; return the manifest.

    With ``batch > 0`` the new frames are added to an existing dataset at ``root`` and the
    manifest lists the old and the new frames (rows of a frame id that exists already are replaced).
    """
    import pandas as pd

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    if start is None or end is None:
        d_start, d_end = default_period()
        start, end = start or d_start, end or d_end
    jobs = plan_frames(size=size, counts=counts or DEMO_COUNTS, seed=seed, start=start, end=end, batch=batch)
    log.info("generating %d frames of %d px under %s", len(jobs), size, root)
    new = mf.coerce(pd.DataFrame(write_frames(root, jobs, workers)))
    manifest_path = root / mf.MANIFEST_FILE
    if manifest_path.exists():
        old = mf.coerce(mf.read_manifest(manifest_path))
        new = pd.concat([old[~old["frame_id"].isin(new["frame_id"])], new], ignore_index=True)
    new = new.sort_values("frame_id", kind="stable").reset_index(drop=True)
    mf.write_manifest(root, new)
    return new


def split_counts(base: dict | None, total: int) -> dict[str, dict[str, int]]:
    """``total`` frames shared out like ``base`` (condition -> split -> count), largest remainder first."""
    base = base or DEMO_COUNTS
    cells = [(c, s, n) for c, per in base.items() for s, n in per.items() if n > 0]
    weight = sum(n for *_, n in cells)
    if total < 1 or weight == 0:
        raise ValueError(f"cannot share {total} frames over {base}")
    exact = [total * n / weight for *_, n in cells]
    counts = [int(x) for x in exact]
    for i in sorted(range(len(cells)), key=lambda i: counts[i] - exact[i])[: total - sum(counts)]:
        counts[i] += 1
    out: dict[str, dict[str, int]] = {}
    for (c, s, _), n in zip(cells, counts, strict=True):
        if n:
            out.setdefault(c, {})[s] = n
    return out
