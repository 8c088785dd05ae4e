"""File-level checks of every frame of a manifest, in parallel: the ``frame_checks`` table of the gate.

For each row: the frame exists, decodes completely as 8-bit RGB, has the manifest's size and
sha256; the label exists, decodes as a single-channel image of the frame's size, has the
manifest's sha256 and holds only known class ids (``schema.CLASSES`` and the ignore id). Each file
is read once; hashing and decoding work on the same bytes.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np

from argus_tasks.data.gx_project import FRAME_CHECKS
from argus_tasks.data.parallel import parallel_map
from argus_tasks.data.schema import IGNORE_ID, NUM_CLASSES

_KNOWN = np.zeros(256, bool)
_KNOWN[:NUM_CLASSES] = True
_KNOWN[IGNORE_ID] = True
CHECK_COLUMNS = tuple(FRAME_CHECKS)


def _read(path: Path) -> bytes | None:
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None


def _decode(data: bytes, modes: tuple[str, ...]):
    """(PIL image loaded, None) or (None, why)."""
    from PIL import Image

    try:
        im = Image.open(io.BytesIO(data))
        im.load()
    except Exception as exc:  # truncated, not a PNG, corrupt chunk...
        return None, f"{type(exc).__name__}: {exc}"
    if im.mode not in modes:
        return None, f"mode {im.mode}, expected {'/'.join(modes)}"
    return im, None


def check_one(item: tuple) -> tuple:
    """Checks of one frame: ``(row, *booleans in CHECK_COLUMNS order, reason)``."""
    row, root, frame_path, label_path, width, height, frame_sha, label_sha = item
    ok = dict.fromkeys(CHECK_COLUMNS, False)
    why: list[str] = []
    frame_size = None
    data = _read(Path(root) / str(frame_path)) if isinstance(frame_path, str) else None
    if data is None:
        why.append(FRAME_CHECKS["frame_exists"])
    else:
        ok["frame_exists"] = True
        ok["frame_hash_matches"] = hashlib.sha256(data).hexdigest() == frame_sha
        im, err = _decode(data, ("RGB",))
        if im is None:
            why.append(f"{FRAME_CHECKS['frame_decodes']} ({err})")
        else:
            ok["frame_decodes"] = True
            frame_size = im.size
            ok["frame_size_matches"] = im.size == (width, height)
            if not ok["frame_size_matches"]:
                why.append(f"{FRAME_CHECKS['frame_size_matches']} ({im.size[0]}x{im.size[1]} vs {width}x{height})")
        if not ok["frame_hash_matches"]:
            why.append(FRAME_CHECKS["frame_hash_matches"])
    data = _read(Path(root) / str(label_path)) if isinstance(label_path, str) else None
    if data is None:
        why.append(FRAME_CHECKS["label_exists"])
    else:
        ok["label_exists"] = True
        ok["label_hash_matches"] = hashlib.sha256(data).hexdigest() == label_sha
        im, err = _decode(data, ("L", "P"))
        if im is None:
            why.append(f"{FRAME_CHECKS['label_decodes']} ({err})")
        else:
            ok["label_decodes"] = True
            expected = frame_size or (width, height)
            ok["label_size_matches"] = im.size == expected
            if not ok["label_size_matches"]:
                why.append(f"{FRAME_CHECKS['label_size_matches']} ({im.size[0]}x{im.size[1]} vs "
                           f"{expected[0]}x{expected[1]})")
            counts = np.asarray(im.histogram()[:256])  # L/P: one bin per value, computed in C
            unknown = np.flatnonzero((counts > 0) & ~_KNOWN)
            ok["label_ids_known"] = unknown.size == 0
            if unknown.size:
                why.append(f"{FRAME_CHECKS['label_ids_known']} ({unknown[:5].tolist()})")
        if not ok["label_hash_matches"]:
            why.append(FRAME_CHECKS["label_hash_matches"])
    return (row, *(ok[c] for c in CHECK_COLUMNS), "; ".join(why))


def _int(value) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return -1


def check_frames(root: Path, manifest, workers: int | None = None):
    """The ``frame_checks`` table of ``manifest`` (files under ``root``): one row per manifest row."""
    import pandas as pd

    def col(name):
        return manifest[name].tolist() if name in manifest.columns else [None] * len(manifest)

    items = [(i, str(root), fp, lp, _int(w), _int(h), fs, ls) for i, fp, lp, w, h, fs, ls in zip(
        range(len(manifest)), col("frame_path"), col("label_path"), col("width"), col("height"),
        col("frame_sha256"), col("label_sha256"), strict=True)]
    results = list(parallel_map(check_one, items, workers=workers, what="frame checks", log_every=5000))
    table = pd.DataFrame(results, columns=["row", *CHECK_COLUMNS, "reason"])
    table.insert(1, "frame_id", pd.array([str(x) for x in col("frame_id")], dtype="string"))
    table["row"] = table["row"].astype("int64")
    table["reason"] = table["reason"].astype("string")
    return table
