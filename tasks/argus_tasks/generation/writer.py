"""Where generated frames go, how they are written, and how a rerun knows which it may keep.

Layout in the run store (one folder per output key but the frame id)::

    generate/outputs/<condition>/<model_version>/<config_hash>/<frame_id>.png         generated frame
    generate/outputs/<condition>/<model_version>/<config_hash>/labels/<frame_id>.png  source label, byte-identical
    generate/shards/<shard_id>.json           success marker: every output of the shard with its sha256
    generate/shards/<shard_id>.partial.json   journal of a shard under way (what is done so far)

``config_hash`` is the first 16 hex digits of the sha256 of the generation config (seed, strength,
format and this writer's version: :func:`generation_config`), so outputs are keyed by (model version,
condition, frame id, config hash) and two configs never share a file.

**Strength** blends source and generated frames in uint8 space: ``out = round((1 - s) * source + s *
generated)`` per pixel and channel, clipped to 0..255 (:func:`blend`). ``1.0`` (the default) is the
model's output as is, ``0.0`` the source frame; values in between weaken the weather linearly.

**Atomicity.** Every output is written to a temp file in its folder and renamed into place (an
object store: one PUT), so a process killed mid-write leaves at most a hidden ``.<name>.*.tmp`` file,
never a partial file under an output name. Frames are not fsynced one by one (two fsyncs per frame
cost more wall time than the model at 64 px); instead the shard's filesystem is flushed once
(``syncfs``) before the marker is written (fsynced, through :meth:`RunStore.write_bytes`), so a
marker never lists an output that a power loss could take back. A frame counts as done only once it is in the journal or the marker with
its hash, and a rerun keeps an output only when its file still hashes to what was recorded (and its
source frame is the recorded one): anything else is generated again. The marker is written last, so
its presence with ``complete: true`` means every output it lists was written.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import threading

import numpy as np

from argus_tasks.contract import PermanentStepError, StepError
from argus_tasks.store import write_error

log = logging.getLogger("argus.generate")
WRITER_VERSION = "argus-generate-v1"
FORMAT = "png"
PNG_COMPRESS_LEVEL = 1  # fast: lossless at any level, the level changes size and speed, not pixels
OUTPUTS = "generate/outputs"
SHARDS = "generate/shards"


def generation_config(seed: int, strength: float) -> dict:
    if not 0.0 <= float(strength) <= 1.0:
        raise PermanentStepError(f"--strength {strength} is outside [0, 1]: 1.0 is the generated frame, "
                                 "0.0 the source frame, values between blend the two")
    return {"seed": int(seed), "strength": round(float(strength), 6), "format": FORMAT, "writer": WRITER_VERSION}


def config_hash(config: dict) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]


def output_dir(condition: str, model_version: str, chash: str) -> str:
    return f"{OUTPUTS}/{condition}/{model_version}/{chash}"


def frame_relpath(out_dir: str, frame_id: str) -> str:
    return f"{out_dir}/{frame_id}.{FORMAT}"


def label_relpath(out_dir: str, frame_id: str) -> str:
    return f"{out_dir}/labels/{frame_id}.png"


def marker_relpath(shard_id: str) -> str:
    return f"{SHARDS}/{shard_id}.json"


def journal_relpath(shard_id: str) -> str:
    return f"{SHARDS}/{shard_id}.partial.json"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def blend(source: np.ndarray, generated: np.ndarray, strength: float) -> np.ndarray:
    """``round((1 - s) * source + s * generated)`` in uint8 (see the module docstring); s=1 returns ``generated``."""
    if strength >= 1.0:
        return generated
    if strength <= 0.0:
        return source
    mixed = source.astype(np.float32) * (1.0 - strength) + generated.astype(np.float32) * strength
    return np.clip(np.rint(mixed), 0, 255).astype(np.uint8)


def encode_png(frame: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(frame)).save(buf, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return buf.getvalue()


def write_output(run, relpath: str, data: bytes) -> None:
    """Atomic write of one output (temp + rename, no fsync: see :func:`make_durable`); errors as the store's."""
    if run.remote:
        run.write_bytes(relpath, data)
        return
    path = run.cache / relpath
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with open(tmp, "wb") as fh:
                fh.write(data)
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    except OSError as exc:
        err = write_error(run.url(relpath), len(data), exc)
        if err is exc:
            raise
        raise err from exc


def make_durable(run, out_dir: str) -> None:
    """Flush the filesystem holding ``out_dir`` to disk (one ``syncfs``; ``sync`` where there is none)."""
    if run.remote:
        return
    fd = os.open(run.cache / out_dir, os.O_RDONLY)
    try:
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            if libc.syncfs(fd) == 0:
                return
        except (OSError, AttributeError):
            pass
        os.sync()
    finally:
        os.close(fd)


def check_writable(run, out_dir: str) -> None:
    """Write and remove a probe file in ``out_dir``: an unwritable folder fails before any model runs."""
    probe = f"{out_dir}/.write-probe-{os.getpid()}"
    try:
        run.write_bytes(probe, b"")
    except StepError as exc:
        raise PermanentStepError(f"the output folder {run.url(out_dir)} is not writable: {exc}") from exc
    except OSError as exc:
        raise PermanentStepError(f"the output folder {run.url(out_dir)} is not writable: {exc.strerror or exc} "
                                 f"(errno {exc.errno}); fix the store's permissions (ARGUS_STORE) and clear the "
                                 "task") from exc
    _remove(run, probe)


def _remove(run, relpath: str) -> None:
    try:
        if run.remote:
            run.fs.rm(run.url(relpath))
        (run.cache / relpath).unlink(missing_ok=True)
    except (OSError, FileNotFoundError) as exc:  # harmless leftovers: never outputs
        log.debug("could not remove %s: %s", relpath, exc)


class ShardOutputs:
    """The outputs of one shard: which may be kept, the journal while it runs, the marker at the end."""

    def __init__(self, run, shard: dict, key: dict, out_dir: str):
        self.run, self.shard, self.key, self.out_dir = run, shard, key, out_dir
        self.marker, self.journal = marker_relpath(shard["shard_id"]), journal_relpath(shard["shard_id"])
        self.known: dict[str, dict] = {}  # frame id -> entry recorded by an earlier try (journal or marker)
        self.done: dict[str, dict] = {}  # frame id -> entry verified or written by this try
        self.marker_doc = self._read(self.marker)
        for doc in (self.marker_doc, self._read(self.journal)):
            if doc and all(doc.get(k) == v for k, v in key.items()):
                self.known.update({e["frame_id"]: e for e in doc.get("frames", [])})

    def _read(self, relpath: str) -> dict | None:
        if not self.run.exists(relpath):
            return None
        try:
            return self.run.read_json(relpath)
        except (ValueError, OSError) as exc:
            log.warning("ignoring unreadable %s: %s", self.run.url(relpath), exc)
            return None

    def marker_matches(self) -> bool:
        """A complete marker of this very shard (same frames) and key."""
        doc = self.marker_doc
        return bool(doc and doc.get("complete") and doc.get("shard_sha256") == self.shard["shard_sha256"]
                    and all(doc.get(k) == v for k, v in self.key.items()))

    def entry(self, frame_id: str, out_sha: str, label_sha: str, source_sha: str) -> dict:
        return {"frame_id": frame_id, "output": frame_relpath(self.out_dir, frame_id), "sha256": out_sha,
                "label": label_relpath(self.out_dir, frame_id), "label_sha256": label_sha, "source_sha256": source_sha}

    def keep(self, frame_id: str, source_sha: str) -> bool:
        """True when an earlier try wrote this frame from this source and its files still hash as recorded."""
        e = self.known.get(frame_id)
        if e is None or e.get("source_sha256") != source_sha:
            return False
        for rel, want in ((e["output"], e["sha256"]), (e["label"], e["label_sha256"])):
            try:
                if not self.run.exists(rel) or sha256(self.run.read_bytes(rel)) != want:
                    return False
            except OSError:
                return False
        self.done[frame_id] = e
        return True

    def write_frame(self, frame_id: str, frame: np.ndarray, label: bytes, source_sha: str) -> dict:
        png = encode_png(frame)
        write_output(self.run, label_relpath(self.out_dir, frame_id), label)
        write_output(self.run, frame_relpath(self.out_dir, frame_id), png)
        return self.entry(frame_id, sha256(png), sha256(label), source_sha)

    def _doc(self, frame_ids: list[str], complete: bool) -> dict:
        return {**self.key, "shard_id": self.shard["shard_id"], "condition": self.shard["condition"],
                "index": self.shard["index"], "shard_sha256": self.shard["shard_sha256"], "output_dir": self.out_dir,
                "complete": complete, "n_frames": len(frame_ids),
                "frames": [self.done[f] for f in frame_ids if f in self.done]}

    def save_journal(self, frame_ids: list[str]) -> None:
        self.run.write_json(self.journal, self._doc(frame_ids, complete=False))

    def save_marker(self, frame_ids: list[str], extra: dict) -> dict:
        missing = [f for f in frame_ids if f not in self.done]
        if missing:
            raise RuntimeError(f"marker of {self.shard['shard_id']} asked with {len(missing)} frames not done")
        doc = {**self._doc(frame_ids, complete=True), **extra}
        make_durable(self.run, self.out_dir)
        self.run.write_json(self.marker, doc)
        _remove(self.run, self.journal)
        return doc
