"""The run-scoped store: ``<store>/runs/<dag_id>/<run_id>/<relpath>``.

The store root is a local directory (the embedded default, ``.argus/store``) or an object-store
URL such as ``s3://bucket/prefix`` in production. Steps address files by a relative path inside
their run; this module hides which backend holds them.

Writes are atomic: a reader sees either the old file or the complete new one, never a partial
file. Locally that is temp file + fsync + rename; on S3 a single PUT is atomic already.

Steps that need real local files (PyTorch, PIL, GX) call :meth:`RunStore.localize` which returns
a local path: the file itself for a local store, or a cached download for a remote one.
"""

from __future__ import annotations

import errno
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from argus_tasks.contract import ENV_SCRATCH, PermanentStepError, TransientStepError

# Write errors that may clear up (space freed, quota raised): the step is retried. Access errors fail it.
_SPACE_ERRNOS = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT}
_ACCESS_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS}


def is_remote(url: str) -> bool:
    return "://" in url and not url.startswith("file://")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically: temp file in the same folder, fsync, rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    try:  # make the rename itself durable
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def write_error(where: str, size: int, exc: OSError) -> Exception:
    """A step error that says which file could not be written, why, and what to do."""
    kept = "nothing was half-written: the previous version of the file, if any, is intact"
    if exc.errno in _SPACE_ERRNOS:
        return TransientStepError(
            f"could not write {where} ({size / 1e6:.1f} MB): {exc.strerror or exc} (errno {exc.errno}); "
            f"{kept}. Free space on the store's volume or raise the file-size limit or quota; the step is "
            "retried and resumes from what was saved.")
    if exc.errno in _ACCESS_ERRNOS:
        return PermanentStepError(
            f"could not write {where}: {exc.strerror or exc} (errno {exc.errno}); {kept}. The step's user "
            f"(uid {os.getuid()}) needs write access to the store (ARGUS_STORE); fix the permissions and clear the task.")
    return exc


def safe_component(value: str) -> str:
    """A run id may hold ':' and '+'; only '/' would change the layout."""
    if not value or value in {".", ".."}:
        raise ValueError(f"invalid path component {value!r}")
    return value.replace("/", "_")


class RunStore:
    """Files of one Airflow run, addressed by paths relative to the run folder."""

    def __init__(self, root: str, dag_id: str, run_id: str):
        self.root = root.rstrip("/")
        self.dag_id = dag_id
        self.run_id = run_id
        self.prefix = f"{self.root}/runs/{safe_component(dag_id)}/{safe_component(run_id)}"
        self.remote = is_remote(self.root)
        if self.remote:
            import fsspec

            self.fs, _ = fsspec.core.url_to_fs(self.root)
            scratch = os.environ.get(ENV_SCRATCH) or os.path.join(tempfile.gettempdir(), "argus-scratch")
            self.cache = Path(scratch) / "runs" / safe_component(dag_id) / safe_component(run_id)
        else:
            self.fs = None
            self.cache = Path(self.prefix).resolve()

    # ---- addressing ----------------------------------------------------------------------
    def url(self, relpath: str = "") -> str:
        """The full location of ``relpath`` (a path or an s3:// URL), for logs and lineage."""
        if not relpath:
            return self.prefix if self.remote else str(self.cache)
        return f"{self.prefix}/{relpath}" if self.remote else str(self.cache / relpath)

    def local_dir(self, relpath: str = "") -> Path:
        """A local folder mirroring ``relpath`` (the folder itself for a local store)."""
        p = self.cache / relpath if relpath else self.cache
        p.mkdir(parents=True, exist_ok=True)
        return p

    # ---- reading ---------------------------------------------------------------------------
    def exists(self, relpath: str) -> bool:
        if self.remote:
            return self.fs.exists(self.url(relpath))
        return (self.cache / relpath).exists()

    def read_bytes(self, relpath: str) -> bytes:
        if self.remote:
            return self.fs.cat_file(self.url(relpath))
        return (self.cache / relpath).read_bytes()

    def read_json(self, relpath: str) -> Any:
        return json.loads(self.read_bytes(relpath))

    def localize(self, relpath: str) -> Path:
        """A local path holding ``relpath`` (a file or a folder), downloading it when remote."""
        local = self.cache / relpath
        if self.remote:
            src = self.url(relpath)
            if self.fs.isdir(src):
                local.mkdir(parents=True, exist_ok=True)
                self.fs.get(src.rstrip("/") + "/", str(local) + "/", recursive=True)
            elif not local.exists():
                local.parent.mkdir(parents=True, exist_ok=True)
                self.fs.get(src, str(local))
        return local

    def list(self, relpath: str) -> list[str]:
        """Names directly under ``relpath`` (empty when it does not exist)."""
        if self.remote:
            base = self.url(relpath).rstrip("/")
            if not self.fs.exists(base):
                return []
            return sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in self.fs.ls(base, detail=False))
        d = self.cache / relpath
        return sorted(p.name for p in d.iterdir()) if d.is_dir() else []

    # ---- writing ---------------------------------------------------------------------------
    def write_bytes(self, relpath: str, data: bytes) -> str:
        try:
            if self.remote:
                with self.fs.open(self.url(relpath), "wb") as fh:
                    fh.write(data)
            atomic_write_bytes(self.cache / relpath, data)
        except OSError as exc:
            err = write_error(self.url(relpath), len(data), exc)
            if err is exc:
                raise
            raise err from exc
        return self.url(relpath)

    def write_json(self, relpath: str, obj: Any) -> str:
        return self.write_bytes(relpath, json.dumps(obj, indent=2, sort_keys=True, default=str).encode())

    def write_text(self, relpath: str, text: str) -> str:
        return self.write_bytes(relpath, text.encode())

    def publish(self, relpath: str) -> str:
        """Upload a file or folder written under :meth:`local_dir` (no-op for a local store)."""
        if self.remote:
            local = self.cache / relpath
            if local.is_dir():
                self.fs.put(str(local) + "/", self.url(relpath).rstrip("/") + "/", recursive=True)
            else:
                self.fs.put_file(str(local), self.url(relpath))
        return self.url(relpath)

    def write_dataframe(self, relpath: str, df) -> str:
        buf = io.BytesIO()
        df.to_parquet(buf, index=False)
        return self.write_bytes(relpath, buf.getvalue())

    def read_dataframe(self, relpath: str):
        import pandas as pd

        return pd.read_parquet(io.BytesIO(self.read_bytes(relpath)))
