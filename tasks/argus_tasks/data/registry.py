"""The dataset registry: a git repository plus a DVC remote holding the frames.

Layout of a registry (a plain git repo; the frames live in the DVC remote and the DVC cache)::

    .dvc/config          DVC project; default remote ``storage`` (a local folder or s3://)
    dataset.dvc          pointer to the DVC-tracked dataset folder (committed to git)
    dataset/             the dataset (schema.py layout), git-ignored, tracked by DVC
    argus-dataset.json   how the demo frames were generated (size, seed, counts), for add-revision

Every revision is a commit tagged ``v1``, ``v2``, ... Operations are idempotent and work offline:
git runs as a subprocess (with a fixed identity, never touching the user's git config) and DVC
through its Python API.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

log = logging.getLogger(__name__)

DATASET_DIR = "dataset"
REMOTE_NAME = "storage"
META_FILE = "argus-dataset.json"
TAG_PATTERN = re.compile(r"^v(\d+)$")
ENV_S3_ENDPOINT = ("ARGUS_DVC_S3_ENDPOINT", "AWS_ENDPOINT_URL")
GIT_IDENTITY = ("-c", "user.name=Argus dataset registry", "-c", "user.email=argus@localhost",
                "-c", "commit.gpgsign=false", "-c", "tag.gpgsign=false", "-c", "init.defaultBranch=main")

os.environ.setdefault("DVC_NO_ANALYTICS", "1")


class RegistryError(RuntimeError):
    """A registry operation failed; the message says which and why."""


def remote_url(remote: str) -> str:
    """``remote`` as DVC wants it: URLs as given, local folders as absolute paths."""
    if "://" in remote:
        return remote
    return str(Path(remote).expanduser().resolve())


def s3_endpoint() -> str:
    for name in ENV_S3_ENDPOINT:
        if os.environ.get(name):
            return os.environ[name]
    return ""


def remote_config(url: str) -> dict:
    """The DVC remote section for ``url`` (an S3 endpoint from the environment; never credentials)."""
    conf = {"url": url}
    if url.startswith("s3://") and s3_endpoint():
        conf["endpointurl"] = s3_endpoint()
    return conf


def version_key(tag: str) -> int:
    m = TAG_PATTERN.match(tag)
    return int(m.group(1)) if m else -1


class Registry:
    """A dataset registry on the local disk (the working tree the tool commands write to)."""

    def __init__(self, path: str | Path):
        self.path = Path(path).expanduser().resolve()
        self.dataset = self.path / DATASET_DIR

    # ---- git ---------------------------------------------------------------------------------------
    def git(self, *args: str, check: bool = True) -> str:
        proc = subprocess.run(["git", "-C", str(self.path), *GIT_IDENTITY, *args],
                              capture_output=True, text=True, env={**os.environ, "GIT_TERMINAL_PROMPT": "0"})
        if check and proc.returncode != 0:
            raise RegistryError(f"git {' '.join(args)} failed in {self.path}: {proc.stderr.strip()}")
        return proc.stdout.strip()

    def is_git(self) -> bool:
        return (self.path / ".git").exists()

    def tags(self) -> list[str]:
        if not self.is_git():
            return []
        names = [t for t in self.git("tag", "--list").splitlines() if t]
        return sorted(names, key=lambda t: (version_key(t), t))

    def version_tags(self) -> list[str]:
        return [t for t in self.tags() if TAG_PATTERN.match(t)]

    def head(self) -> str:
        return self.git("rev-parse", "HEAD")

    def is_initialised(self) -> bool:
        return self.is_git() and (self.path / ".dvc").is_dir() and "v1" in self.tags()

    @contextlib.contextmanager
    def lock(self):
        """One writer at a time (a second `add-revision` waits for the first)."""
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.path / ".argus-registry.lock", "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    # ---- DVC ---------------------------------------------------------------------------------------
    def dvc(self):
        from dvc.repo import Repo

        return Repo(str(self.path))

    def configured_remote(self) -> str:
        repo = self.dvc()
        try:
            return repo.config["remote"].get(REMOTE_NAME, {}).get("url", "")
        finally:
            repo.close()

    def meta(self) -> dict:
        p = self.path / META_FILE
        return json.loads(p.read_text()) if p.exists() else {}

    # ---- operations --------------------------------------------------------------------------------
    def _ensure_project(self, remote: str) -> None:
        from dvc.repo import Repo

        self.path.mkdir(parents=True, exist_ok=True)
        if not self.is_git():
            self.git("init", "-q")
            log.info("created git repository %s", self.path)
        if not (self.path / ".dvc").is_dir():
            Repo.init(str(self.path)).close()
            log.info("created DVC project in %s", self.path)
        url = remote_url(remote)
        if "://" not in url:
            Path(url).mkdir(parents=True, exist_ok=True)
        repo = self.dvc()
        try:
            with repo.config.edit() as conf:
                conf["core"]["remote"] = REMOTE_NAME
                conf["core"]["analytics"] = False
                conf["core"]["autostage"] = True
                conf["remote"][REMOTE_NAME] = remote_config(url)
        finally:
            repo.close()
        ignore = self.path / ".gitignore"
        lines = ignore.read_text().splitlines() if ignore.exists() else []
        if ".argus-registry.lock" not in lines:
            ignore.write_text("\n".join([*lines, ".argus-registry.lock"]) + "\n")

    def _track_and_push(self) -> None:
        """``dvc add dataset`` then ``dvc push`` to the default remote."""
        repo = self.dvc()
        try:
            repo.add(str(self.dataset))
            url = repo.config["remote"][REMOTE_NAME]["url"]
            try:
                pushed = repo.push(remote=REMOTE_NAME)
            except Exception as exc:
                raise RegistryError(f"dvc push to remote {REMOTE_NAME!r} ({url}) failed: {exc}") from exc
            log.info("pushed %s object(s) to DVC remote %s", pushed, url)
        finally:
            repo.close()

    def _commit_and_tag(self, message: str, tag: str) -> str:
        self.git("add", "-A", ".")
        if self.git("status", "--porcelain"):
            self.git("commit", "-q", "-m", message)
        self.git("tag", "-a", tag, "-m", message)
        return self.head()

    def init(self, remote: str, *, size: int, seed: int, counts: dict | None = None,
             start: datetime | None = None, end: datetime | None = None, workers: int | None = None) -> dict:
        """Create the registry with the demo dataset as ``v1``; does nothing when it exists already."""
        from argus_tasks.data.generate import DEMO_COUNTS, default_period, generate_dataset

        with self.lock():
            if self.is_initialised():
                configured = self.configured_remote()
                if configured and configured != remote_url(remote):
                    log.warning("registry %s uses DVC remote %s, not %s: left as it is",
                                self.path, configured, remote_url(remote))
                return {"created": False, "registry": str(self.path), "tags": self.tags(),
                        "remote": configured, "commit": self.head(),
                        "message": f"dataset registry {self.path} is already initialised "
                                   f"(tags: {', '.join(self.tags())}); nothing to do"}
            self._ensure_project(remote)
            if start is None or end is None:
                d_start, d_end = default_period()
                start, end = start or d_start, end or d_end
            counts = counts or DEMO_COUNTS
            manifest = generate_dataset(self.dataset, size=size, counts=counts, seed=seed,
                                        start=start, end=end, batch=0, workers=workers)
            meta = {"size": size, "seed": seed, "counts": counts, "generator": "argus_tasks.data.scenes",
                    "revisions": {"v1": {"batch": 0, "frames": len(manifest),
                                         "start": start.isoformat(), "end": end.isoformat()}}}
            (self.path / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
            (self.path / "README.md").write_text(
                "# Argus dataset registry\n\nGit + DVC. Revisions are tags v1, v2, ...; the frames are in "
                "the DVC remote (`dvc pull` to get them). Layout and manifest schema: "
                "argus_tasks/data/schema.py.\n")
            self._track_and_push()
            commit = self._commit_and_tag(f"Dataset v1: {len(manifest)} demo frames of {size} px", "v1")
            return {"created": True, "registry": str(self.path), "tags": self.tags(), "commit": commit,
                    "frames": len(manifest), "remote": remote_url(remote),
                    "message": f"created dataset registry {self.path} with v1 ({len(manifest)} frames)"}

    def _ensure_workspace(self) -> None:
        """The dataset folder of HEAD in the working tree (restored from the cache/remote if missing)."""
        if (self.dataset / "manifest.parquet").exists():
            return
        repo = self.dvc()
        try:
            repo.pull(targets=[str(self.dataset)], remote=REMOTE_NAME)
        finally:
            repo.close()

    def next_tag(self) -> str:
        versions = [version_key(t) for t in self.version_tags()]
        return f"v{max(versions, default=0) + 1}"

    def add_revision(self, *, frames: int = 200, source: Path | None = None,
                     now: datetime | None = None, workers: int | None = None) -> dict:
        """Add frames as a new commit + tag: generated ones (later capture times) or an imported dataset."""
        from argus_tasks.data import manifest as mf
        from argus_tasks.data.generate import generate_dataset, split_counts

        with self.lock():
            if not self.is_initialised():
                raise RegistryError(f"{self.path} is not an initialised dataset registry; "
                                    "run `argus-task dataset init --registry PATH --remote URL` first")
            if self.git("status", "--porcelain"):
                raise RegistryError(f"registry {self.path} has uncommitted changes; commit or discard them first")
            self._ensure_workspace()
            tag = self.next_tag()
            batch = version_key(tag) - 1
            old = mf.read_manifest(self.dataset)
            meta = self.meta()
            if source is not None:
                added = merge_dataset(Path(source), self.dataset)
                what = f"{added} imported frames from {source}"
                info = {"source": str(source), "frames": added}
            else:
                last = old["capture_time"].max().to_pydatetime()
                start = last + timedelta(seconds=1)
                end = max((now or datetime.now(UTC)).replace(microsecond=0), start + timedelta(hours=1))
                counts = split_counts(meta.get("counts"), frames)
                size = int(meta.get("size") or int(old["width"].mode().iloc[0]))
                generate_dataset(self.dataset, size=size, counts=counts, seed=int(meta.get("seed", 0)),
                                 start=start, end=end, batch=batch, workers=workers)
                added = sum(sum(v.values()) for v in counts.values())
                what = f"{added} new frames captured {start.isoformat()} .. {end.isoformat()}"
                info = {"batch": batch, "frames": added, "start": start.isoformat(), "end": end.isoformat()}
            meta.setdefault("revisions", {})[tag] = info
            (self.path / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
            self._track_and_push()
            commit = self._commit_and_tag(f"Dataset {tag}: {what}", tag)
            total = len(mf.read_manifest(self.dataset))
            return {"registry": str(self.path), "tag": tag, "commit": commit, "added": added, "frames": total,
                    "message": f"dataset {tag}: {what} ({total} frames in all)"}


def merge_dataset(source: Path, target: Path) -> int:
    """Copy the frames of dataset ``source`` into dataset ``target`` and merge the manifests."""
    import pandas as pd

    from argus_tasks.data import manifest as mf

    new = mf.coerce(mf.read_manifest(source))
    old = mf.coerce(mf.read_manifest(target))
    clash = set(new["frame_id"]) & set(old["frame_id"])
    if clash:
        raise RegistryError(f"{len(clash)} frame id(s) of {source} exist already in the registry, "
                            f"e.g. {sorted(clash)[:3]}; give the import another prefix")
    for rel in [*new["frame_path"], *new["label_path"]]:
        dst = target / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source / rel, dst)
    depth = source / "depth"
    if depth.is_dir():
        shutil.copytree(depth, target / "depth", dirs_exist_ok=True)
    merged = pd.concat([old, new], ignore_index=True).sort_values("frame_id", kind="stable")
    mf.write_manifest(target, merged.reset_index(drop=True))
    return len(new)
