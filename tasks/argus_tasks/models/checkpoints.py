"""Training checkpoints in the run-scoped store: atomic writes, latest-first resume.

A checkpoint is one ``torch.save`` file ``step-<step:08d>.pt`` holding the model and optimiser
state, the step, the config and the RNG states. It is serialised in memory and written with
``RunStore.write_bytes`` (temp file, fsync, rename; a single PUT on S3), so a kill during the
write leaves the previous checkpoint intact and never a torn file. Older checkpoints beyond
``keep`` are removed after a new one is safely written.
"""

from __future__ import annotations

import io
import logging
import re

import torch

log = logging.getLogger(__name__)
_NAME = re.compile(r"^step-(\d{8})\.pt$")


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
        """The newest readable checkpoint, or None. A corrupt file is skipped with a warning."""
        for step in reversed(self.steps()):
            try:
                data = self.run.read_bytes(self.path(step))
                return torch.load(io.BytesIO(data), map_location="cpu", weights_only=False)
            except Exception as exc:  # noqa: BLE001 - any unreadable file: fall back to an older one
                log.warning("checkpoint %s is unreadable (%s); trying an older one", self.path(step), exc)
        return None
