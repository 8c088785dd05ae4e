"""Training checkpoints in the run-scoped store: atomic writes, latest-first resume.

A checkpoint is one ``torch.save`` file ``step-<step:08d>.pt`` holding the model and optimiser
state, the step, the config and the RNG states. It is serialised in memory and written with
``RunStore.write_bytes`` (temp file, fsync, rename; a single PUT on S3), so a kill during the
write leaves the previous checkpoint intact and never a torn file. Older checkpoints beyond
``keep`` are removed after a new one is safely written.

The state holds only tensors, plain containers, strings and numbers (RNG states as tensors), and is
read back with ``torch.load(weights_only=True)``: a checkpoint holding any other pickled object
(anyone who can write the bucket could plant one) is refused with a :class:`PermanentStepError`,
never unpickled. A corrupt or torn file is skipped in favour of an older one.
"""

from __future__ import annotations

import io
import logging
import pickle
import re
import shutil
import zipfile

import torch

from argus_tasks.contract import PermanentStepError

log = logging.getLogger(__name__)
_NAME = re.compile(r"^step-(\d{8})\.pt$")


def load_state(data: bytes, where: str) -> dict:
    """A checkpoint's state from ``data``, tensors and plain containers only (``weights_only=True``).

    Raises :class:`PermanentStepError` for a well-formed file that holds other objects, and lets the
    loader's own error through for a corrupt one.
    """
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if not zipfile.is_zipfile(io.BytesIO(data)):
            raise  # not a torch checkpoint at all (corrupt or foreign): the caller skips it
        raise PermanentStepError(
            f"refusing to load checkpoint {where}: it holds pickled objects other than tensors, plain "
            f"containers and numbers, so it was not written by this pipeline and was NOT unpickled "
            f"(torch.load weights_only=True: {str(exc).splitlines()[-1][:300]}). Anyone who can write the run "
            "store could have planted it: inspect and delete it (or the whole checkpoints folder), then clear "
            "the task.") from exc


class CheckpointStore:
    def __init__(self, run, folder: str, keep: int = 2):
        self.run = run
        self.folder = folder.rstrip("/")
        self.keep = keep

    def steps(self) -> list[int]:
        return sorted(int(m.group(1)) for name in self.run.list(self.folder) if (m := _NAME.match(name)))

    def path(self, step: int) -> str:
        return f"{self.folder}/step-{step:08d}.pt"

    def save(self, step: int, state: dict) -> str:
        buf = io.BytesIO()
        torch.save({**state, "step": int(step)}, buf)
        where = self.run.write_bytes(self.path(step), buf.getvalue())
        for old in self.steps()[:-self.keep]:
            self._remove(self.path(old))
        return where

    def _remove(self, relpath: str) -> None:
        try:
            if self.run.remote:
                self.run.fs.rm(self.run.url(relpath))
            (self.run.cache / relpath).unlink(missing_ok=True)
        except OSError as exc:  # an old checkpoint left behind costs only space
            log.warning("could not remove old checkpoint %s: %s", relpath, exc)

    def load_latest(self) -> dict | None:
        """The newest readable checkpoint, or None. A corrupt file is skipped with a warning; a file
        holding arbitrary pickled objects is refused (PermanentStepError, see :func:`load_state`)."""
        for step in reversed(self.steps()):
            try:
                data = self.run.read_bytes(self.path(step))
                return load_state(data, self.run.url(self.path(step)))
            except PermanentStepError:
                raise
            except Exception as exc:  # noqa: BLE001 - any unreadable file: fall back to an older one
                log.warning("checkpoint %s is unreadable (%s); trying an older one", self.path(step), exc)
        return None


def remove_stale(run, parent: str, keep: str) -> list[str]:
    """Delete every entry of ``parent`` but ``keep``: checkpoints made for another reuse key.

    Returns the names removed. A failure to delete costs only space and is logged.
    """
    removed = []
    for name in run.list(parent):
        if name == keep:
            continue
        rel = f"{parent.rstrip('/')}/{name}"
        try:
            if run.remote and run.fs.exists(run.url(rel)):
                run.fs.rm(run.url(rel), recursive=True)
            local = run.cache / rel
            if local.is_dir():
                shutil.rmtree(local)
            else:
                local.unlink(missing_ok=True)
            removed.append(name)
        except OSError as exc:
            log.warning("could not remove stale checkpoint entry %s: %s", rel, exc)
    return removed
