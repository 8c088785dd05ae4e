"""Output datasets: each one a DVC registry of its own, revisions ``v1``, ``v2``... like the input registry.

Where they live: ``$ARGUS_OUTPUT_REGISTRY_ROOT/<name>`` (default ``$ARGUS_HOME/outputs/<name>``, so
``.argus/outputs/<name>`` locally), a git repository with the layout of
:mod:`argus_tasks.data.registry` (``dataset/`` tracked by DVC, ``dataset.dvc`` and
``argus-dataset.json`` in git). Its DVC remote is ``$ARGUS_OUTPUT_DVC_REMOTE/<name>`` (a folder or
``s3://...``; default ``$ARGUS_OUTPUT_REGISTRY_ROOT/.dvc-remote/<name>``). An output dataset is a
dataset like any other: ``argus-task pull`` reads it with ``ARGUS_DATASET_REGISTRY`` pointing at it,
and a perception team gets a revision with ``dvc get <registry> dataset --rev vN``.

What a revision holds: the manifest (``schema.OUTPUT_MANIFEST_COLUMNS``: the schema's columns plus
each frame's source frame, source revision and commit, model, version, seed, config hash and label
fidelity), ``frames/<condition>/<split>/<frame_id>.png`` and the source labels, byte for byte, at
``labels/<condition>/<split>/<frame_id>.png``. A generation run replaces the frames of the conditions
it generated and keeps the others of the previous revision (a standing dataset regenerated per
condition when its champion moves). ``argus-dataset.json`` records per revision its content hash,
the run, the models and the source.

Publishing is atomic for readers: a revision exists once its tag does, which is the last step
(frames are pushed to the DVC remote first, content-addressed). A publish that died half-way leaves
at most an uncommitted working tree, which the next one discards (or a commit without its tag,
which it tags). One publisher at a time per dataset (a file lock in the registry folder).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
from datetime import UTC, datetime
from pathlib import Path

from argus_tasks.contract import PermanentStepError
from argus_tasks.data.registry import META_FILE, Registry, remote_url
from argus_tasks.data.schema import OUTPUT_MANIFEST_COLUMNS

log = logging.getLogger(__name__)
ENV_ROOT, ENV_REMOTE = "ARGUS_OUTPUT_REGISTRY_ROOT", "ARGUS_OUTPUT_DVC_REMOTE"
NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
STAGING = ".argus-staging"
CONTENT_COLUMNS = ("frame_id", "condition", "frame_sha256", "label_sha256", "source_frame_id", "source_commit",
                   "model_name", "model_version", "seed", "config_hash")


def check_name(name: str) -> str:
    if not NAME.fullmatch(name or "") or ".." in name:
        raise PermanentStepError(f"output dataset name {name!r} is not valid: lower-case letters, digits, '.', '_' "
                                 "and '-', starting with a letter or digit, at most 63 characters")
    return name


def output_root() -> Path:
    root = os.environ.get(ENV_ROOT) or str(Path(os.environ.get("ARGUS_HOME", ".argus")) / "outputs")
    return Path(root).expanduser().resolve()


def registry_path(name: str) -> Path:
    return output_root() / check_name(name)


def remote_for(name: str) -> str:
    base = os.environ.get(ENV_REMOTE, "").rstrip("/")
    return f"{base}/{name}" if base else str(output_root() / ".dvc-remote" / name)


def content_sha256(manifest) -> str:
    """sha256 of a dataset's content: every frame's id, hashes and lineage, sorted by frame id."""
    h = hashlib.sha256(b"argus-output-content-v1\n")
    rows = manifest[list(CONTENT_COLUMNS)].astype(str).sort_values("frame_id", kind="stable")
    for rec in rows.itertuples(index=False, name=None):
        h.update(("\t".join(rec) + "\n").encode())
    return h.hexdigest()


def how_to_pull(path: Path, tag: str, name: str) -> str:
    return f"dvc get {path} dataset --rev {tag} -o {name}-{tag}"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def _place(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


class OutputRegistry(Registry):
    """The registry of one output dataset (see the module docstring)."""

    def __init__(self, name: str):
        super().__init__(registry_path(name))
        self.name = name

    def _recover(self) -> None:
        """Discard what a publish that died left uncommitted; tag a commit it made but did not tag."""
        if not self.git("rev-parse", "--verify", "--quiet", "HEAD", check=False):
            return  # nothing committed yet: nothing to go back to
        if self.git("status", "--porcelain"):
            log.warning("output dataset %s has uncommitted changes (an interrupted publish): discarding them",
                        self.path)
            self.git("reset", "-q", "--hard", "HEAD")
        pending = [t for t in self.meta().get("revisions", {}) if t not in self.tags()]
        if pending == [self.next_tag()]:
            log.warning("commit %s of %s was not tagged (an interrupted publish): tagging it %s", self.head()[:12],
                        self.path, pending[0])
            self.git("tag", "-a", pending[0], "-m", f"Output dataset {pending[0]} (completed)")

    def _current(self):
        """The manifest of the latest revision, with its files checked out in ``dataset/`` (empty at first)."""
        import pandas as pd

        from argus_tasks.data import manifest as mf

        if not self.version_tags():
            return pd.DataFrame({c: pd.Series(dtype=d) for c, (d, _) in OUTPUT_MANIFEST_COLUMNS.items()})
        repo = self.dvc()
        try:
            try:
                repo.checkout(targets=[str(self.dataset)], force=True)
            except Exception:  # noqa: BLE001 - not in the local cache: fetch from the remote
                repo.pull(targets=[str(self.dataset)], force=True)
        finally:
            repo.close()
        return mf.read_manifest(self.dataset)

    def publish(self, accepted, files: dict[str, Path], conditions: list[str], record: dict) -> dict:
        """Publish ``accepted`` (OUTPUT_MANIFEST_COLUMNS rows; ``files`` maps their frame/label paths to
        local files) as the next revision, replacing the frames of ``conditions``; or report the
        revision that already holds this content."""
        import pandas as pd

        from argus_tasks.data import manifest as mf

        run_content = content_sha256(accepted)
        with self.lock():
            if not self.is_git() or not (self.path / ".dvc").is_dir():
                self._ensure_project(remote_for(self.name))
                ignore = self.path / ".gitignore"
                if f"{STAGING}/" not in ignore.read_text().splitlines():
                    ignore.write_text(ignore.read_text() + f"{STAGING}/\n")
            self._recover()
            revisions = self.meta().get("revisions", {})
            tags = self.version_tags()
            for tag in tags:  # a retry of a publish that succeeded: report its revision, even under newer ones
                r = revisions.get(tag, {})
                if (r.get("dag_id"), r.get("run_id"), r.get("run_content_sha256")) == (
                        record["dag_id"], record["run_id"], run_content):
                    return self._already(tag, r, "this run published it")
            old = self._current()
            new = pd.concat([old[~old["condition"].isin(conditions)][list(OUTPUT_MANIFEST_COLUMNS)],
                             accepted[list(OUTPUT_MANIFEST_COLUMNS)]], ignore_index=True)
            new = new.sort_values("frame_id", kind="stable").reset_index(drop=True)
            content = content_sha256(new)
            if tags and revisions.get(tags[-1], {}).get("content_sha256") == content:
                return self._already(tags[-1], revisions[tags[-1]], "the latest revision holds this content")
            tag = self.next_tag()
            staging = self.path / STAGING
            shutil.rmtree(staging, ignore_errors=True)
            kept = new[~new["condition"].isin(conditions)]
            for rel in [*kept["frame_path"], *kept["label_path"]]:
                _place(self.dataset / rel, staging / rel)
            for rel, expected in [*zip(accepted["frame_path"], accepted["frame_sha256"], strict=True),
                                  *zip(accepted["label_path"], accepted["label_sha256"], strict=True)]:
                if _sha256(files[rel]) != expected:
                    raise PermanentStepError(f"{files[rel]} changed after check-outputs accepted it (sha256 differs "
                                             f"from {expected[:12]}); rerun check-outputs")
                _place(files[rel], staging / rel)
            mf.write_manifest(staging, mf_coerce_output(new))
            shutil.rmtree(self.dataset, ignore_errors=True)
            os.replace(staging, self.dataset)
            info = {**record, "content_sha256": content, "run_content_sha256": run_content, "frames": len(new),
                    "conditions_published": sorted(conditions),
                    "frames_per_condition": {str(c): int(n) for c, n in new.groupby("condition").size().items()},
                    "published_at": datetime.now(UTC).isoformat(timespec="seconds")}
            meta = {**self.meta(), "kind": "argus-output-dataset", "name": self.name}
            meta.setdefault("revisions", {})[tag] = info
            (self.path / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
            (self.path / "README.md").write_text(_readme(self.name))
            self._track_and_push()
            what = ", ".join(f"{c} {n}" for c, n in sorted(info["frames_per_condition"].items()))
            commit = self._commit_and_tag(f"Output dataset {tag}: {what} frames (run {record['run_id']})", tag)
            log.info("published %s %s (commit %s): %d frames", self.name, tag, commit[:12], len(new))
            return {"revision": tag, "commit": commit, "n_frames": len(new), "already_published": False,
                    "content_sha256": content, "remote": remote_url(remote_for(self.name))}

    def _already(self, tag: str, info: dict, why: str) -> dict:
        commit = self.git("rev-list", "-n", "1", tag)
        log.info("output dataset %s already holds this content as %s (commit %s): %s; nothing published",
                 self.name, tag, commit[:12], why)
        return {"revision": tag, "commit": commit, "n_frames": int(info.get("frames", 0)), "already_published": True,
                "content_sha256": info.get("content_sha256", ""), "why": why}


def mf_coerce_output(df):
    """``df`` with exactly OUTPUT_MANIFEST_COLUMNS, in order and in their dtypes."""
    import pandas as pd

    out = df[list(OUTPUT_MANIFEST_COLUMNS)].copy()
    for name, (dtype, _) in OUTPUT_MANIFEST_COLUMNS.items():
        out[name] = (pd.to_datetime(out[name], utc=True) if dtype.startswith("datetime64") else out[name]).astype(dtype)
    return out.reset_index(drop=True)


def _readme(name: str) -> str:
    return (f"# Argus output dataset `{name}`\n\nAdverse-weather frames generated by the Argus champions from clear "
            "source frames, with the source labels. Git + DVC: revisions are tags v1, v2, ...; get one with\n\n"
            "    dvc get <this repository> dataset --rev vN -o <folder>\n\nLayout and manifest columns: "
            "argus_tasks/data/schema.py (OUTPUT_MANIFEST_COLUMNS); per revision, argus-dataset.json records the run, "
            "the models, the source revision and the content hash.\n")

