"""Reading, writing and building manifests (one row per frame, columns of ``schema.MANIFEST_COLUMNS``)."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import numpy as np

from argus_tasks.data.schema import MANIFEST_COLUMNS
from argus_tasks.store import atomic_write_bytes

MANIFEST_FILE = "manifest.parquet"


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def brightness_stats(rgb: np.ndarray) -> tuple[float, float]:
    """Mean and std of the luma (Rec. 709 weights on display values) in [0, 1]."""
    luma = (rgb[..., 0] * 0.2126 + rgb[..., 1] * 0.7152 + rgb[..., 2] * 0.0722) / 255.0
    return float(luma.mean()), float(luma.std())


def write_file(path: Path, data: bytes) -> None:
    """Atomic (temp file + rename) but unsynced write, for bulk frame files that can be regenerated.

    Manifests and results use :func:`argus_tasks.store.atomic_write_bytes`, which also fsyncs.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def png_bytes(array: np.ndarray, compress_level: int = 3) -> bytes:
    """PNG encoding of a uint8 RGB / uint8 grey / uint16 grey array."""
    from PIL import Image

    img = Image.fromarray(np.ascontiguousarray(array))
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=compress_level)
    return buf.getvalue()


def coerce(df):
    """``df`` with exactly the schema's columns, in order, cast to the schema's dtypes.

    Raises ``KeyError`` naming the missing columns; extra columns are dropped.
    """
    missing = [c for c in MANIFEST_COLUMNS if c not in df.columns]
    if missing:
        raise KeyError(f"manifest is missing column(s): {', '.join(missing)}")
    out = df[list(MANIFEST_COLUMNS)].copy()
    for name, (dtype, _) in MANIFEST_COLUMNS.items():
        if dtype.startswith("datetime64"):
            import pandas as pd

            out[name] = pd.to_datetime(out[name], utc=True).astype(dtype)
        else:
            out[name] = out[name].astype(dtype)
    return out.reset_index(drop=True)


def to_parquet_bytes(df) -> bytes:
    buf = io.BytesIO()
    df.to_parquet(buf, index=False)
    return buf.getvalue()


def write_manifest(root: Path, df) -> Path:
    path = Path(root) / MANIFEST_FILE
    atomic_write_bytes(path, to_parquet_bytes(df))
    return path


def read_manifest(path: Path):
    """The manifest at ``path`` (a file, or a dataset root holding ``manifest.parquet``) as read."""
    import pandas as pd

    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST_FILE
    return pd.read_parquet(path)


def empty_manifest():
    import pandas as pd

    return coerce(pd.DataFrame({c: [] for c in MANIFEST_COLUMNS}))
