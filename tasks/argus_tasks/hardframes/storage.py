"""Files of the store that belong to no single run: ``<store>/<relpath>`` (hard sets, the score index).

The same backends as :class:`argus_tasks.store.RunStore` (a local folder or ``s3://...``) and the
same atomic writes: a local file is written to a temp file, fsynced and renamed; an S3 PUT is atomic.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from argus_tasks.store import atomic_write_bytes, is_remote, write_error


class StoreFiles:
    """``<root>/<relpath>`` of the store ``root`` (``ARGUS_STORE``)."""

    def __init__(self, root: str):
        self.root = str(root).rstrip("/")
        self.remote = is_remote(self.root)
        if self.remote:
            import fsspec

            self.fs, _ = fsspec.core.url_to_fs(self.root)
        else:
            self.fs = None

    def url(self, relpath: str) -> str:
        return f"{self.root}/{relpath}" if self.remote else str(Path(self.root).resolve() / relpath)

    def exists(self, relpath: str) -> bool:
        return self.fs.exists(self.url(relpath)) if self.remote else Path(self.url(relpath)).exists()

    def read_bytes(self, relpath: str) -> bytes:
        return self.fs.cat_file(self.url(relpath)) if self.remote else Path(self.url(relpath)).read_bytes()

    def read_json(self, relpath: str) -> Any:
        return json.loads(self.read_bytes(relpath))

    def list(self, relpath: str) -> list[str]:
        """Names directly under ``relpath`` (empty when it does not exist), sorted."""
        if self.remote:
            base = self.url(relpath).rstrip("/")
            if not self.fs.exists(base):
                return []
            return sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in self.fs.ls(base, detail=False))
        d = Path(self.url(relpath))
        return sorted(p.name for p in d.iterdir()) if d.is_dir() else []

    def write_bytes(self, relpath: str, data: bytes) -> str:
        try:
            if self.remote:
                with self.fs.open(self.url(relpath), "wb") as fh:
                    fh.write(data)
            else:
                atomic_write_bytes(Path(self.url(relpath)), data)
        except OSError as exc:
            err = write_error(self.url(relpath), len(data), exc)
            if err is exc:
                raise
            raise err from exc
        return self.url(relpath)

    def write_json(self, relpath: str, obj: Any) -> str:
        return self.write_bytes(relpath, canonical_json(obj))


def canonical_json(obj: Any) -> bytes:
    """Sorted keys, fixed separators, a final newline: the same object always gives the same bytes."""
    return (json.dumps(obj, indent=1, sort_keys=True, ensure_ascii=False, default=str) + "\n").encode()
