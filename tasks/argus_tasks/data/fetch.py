"""Fetching files of one dataset revision from the registry, through a local content cache.

* :class:`RegistryClone` keeps a git clone of the registry (a path or a git URL) under the cache
  folder and resolves revisions (a tag, a commit, or ``latest``: the head of the default branch).
* :class:`ObjectCache` stores file contents by their DVC md5, so a file already fetched for any
  earlier run is never transferred again.
* :class:`RevisionFiles` lists the files of the revision's DVC-tracked ``dataset/`` folder and
  fetches the missing ones from the DVC remote (the registry's default remote, or an override),
  through DVC's own file system API, verifying each download against its md5.

Errors are step errors: a revision that does not exist is permanent, an unreachable registry or
DVC remote is transient (the message names it).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from argus_tasks.contract import ENV_SCRATCH, PermanentStepError, StepContext, TransientStepError
from argus_tasks.data.registry import DATASET_DIR, REMOTE_NAME, remote_config, remote_url, version_key
from argus_tasks.store import atomic_write_bytes, is_remote

log = logging.getLogger(__name__)
os.environ.setdefault("DVC_NO_ANALYTICS", "1")


def cache_root(ctx: StepContext) -> Path:
    """Where clones and fetched objects are kept between runs: ``$ARGUS_SCRATCH``, else ``<store>/cache``."""
    if os.environ.get(ENV_SCRATCH):
        return Path(os.environ[ENV_SCRATCH]) / "dataset-cache"
    if not is_remote(ctx.store_root):
        return Path(ctx.store_root).resolve() / "cache"
    return Path(tempfile.gettempdir()) / "argus-scratch" / "dataset-cache"


@contextlib.contextmanager
def file_lock(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def md5_file(path: Path) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            h.update(block)
    return h.hexdigest()


class RegistryClone:
    """A git clone of the dataset registry, refreshed on every :meth:`sync`."""

    def __init__(self, url: str, cache: Path):
        if not url:
            raise PermanentStepError("no dataset registry configured: set ARGUS_DATASET_REGISTRY to the registry's "
                                     "path or git URL (`argus-task dataset init` creates one)")
        local = "://" not in url and not url.startswith("git@")
        self.url = str(Path(url).expanduser().resolve()) if local else url
        self.local = local
        self.path = cache / "registry" / hashlib.sha1(self.url.encode()).hexdigest()[:16]

    def _git(self, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(["git", *args], cwd=cwd or self.path, capture_output=True, text=True,
                              env={**os.environ, "GIT_TERMINAL_PROMPT": "0"}, timeout=300)

    def sync(self) -> None:
        if self.local and not (Path(self.url) / ".git").exists():
            raise PermanentStepError(f"dataset registry {self.url} does not exist or is not a git repository; "
                                     "create it with `argus-task dataset init --registry PATH --remote URL` "
                                     "or point ARGUS_DATASET_REGISTRY at an existing one")
        with file_lock(self.path.with_suffix(".lock")):
            if not (self.path / ".git").exists():
                shutil.rmtree(self.path, ignore_errors=True)
                self.path.parent.mkdir(parents=True, exist_ok=True)
                proc = self._git("clone", "--quiet", "--no-checkout", self.url, str(self.path), cwd=self.path.parent)
            else:
                proc = self._git("fetch", "--quiet", "--force", "--prune", "--tags", "origin",
                                 "+refs/heads/*:refs/remotes/origin/*")
            if proc.returncode != 0:
                raise TransientStepError(f"dataset registry {self.url} is unreachable: {proc.stderr.strip()[:400]}")
            self._git("remote", "set-head", "origin", "--auto")

    def tags(self) -> list[str]:
        out = self._git("tag", "--list").stdout.split()
        return sorted(out, key=lambda t: (version_key(t), t))

    def resolve(self, rev: str) -> str:
        """The commit of ``rev`` (tag, commit, branch or ``latest``)."""
        rev = (rev or "latest").strip()
        candidates = ["refs/remotes/origin/HEAD"] if rev == "latest" else [rev, f"refs/remotes/origin/{rev}"]
        if not rev.startswith("-"):
            for cand in candidates:
                proc = self._git("rev-parse", "--verify", "--quiet", f"{cand}^{{commit}}")
                if proc.returncode == 0:
                    return proc.stdout.strip()
        tags = self.tags()
        raise PermanentStepError(
            f"dataset revision {rev!r} does not exist in registry {self.url}; available tags: "
            f"{', '.join(tags) if tags else '(none)'} (or a commit id, or 'latest')")


class ObjectCache:
    """File contents by DVC md5: ``objects/<md5[:2]>/<md5[2:]>``, written atomically, read-only."""

    def __init__(self, root: Path):
        self.root = root / "objects"

    def path(self, md5: str) -> Path:
        return self.root / md5[:2] / md5[2:]

    def has(self, md5: str) -> bool:
        return self.path(md5).exists()

    def adopt(self, tmp: Path, md5: str) -> None:
        """Move a downloaded file into the cache after checking its md5."""
        actual = md5_file(tmp)
        if actual != md5:
            tmp.unlink(missing_ok=True)
            raise TransientStepError(f"download corrupted: expected md5 {md5}, got {actual}; retrying may help")
        dst = self.path(md5)
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(tmp, 0o444)
        os.replace(tmp, dst)


class RevisionFiles:
    """The files of ``dataset/`` at one registry commit, fetched through the object cache."""

    def __init__(self, clone: RegistryClone, commit: str, cache: ObjectCache, remote_override: str = ""):
        self.clone, self.commit, self.cache = clone, commit, cache
        self.remote_override = remote_override
        self._repo = None
        self._listing: dict[str, str] | None = None
        self.transferred = 0

    # ---- remote ----------------------------------------------------------------------------------
    def _open(self):
        if self._repo is None:
            from dvc.repo import Repo

            config = None
            if self.remote_override:
                config = {"core": {"remote": REMOTE_NAME},
                          "remote": {REMOTE_NAME: remote_config(remote_url(self.remote_override))}}
            repo = Repo(str(self.clone.path), rev=self.commit, config=config)
            name = repo.config["core"].get("remote") or REMOTE_NAME
            conf = dict(repo.config["remote"].get(name, {}))
            if not config and conf.get("url", "").startswith("s3://"):
                # the endpoint of this environment wins over the one recorded at init time
                override = remote_config(conf["url"])
                if override.get("endpointurl"):
                    repo.close()
                    repo = Repo(str(self.clone.path), rev=self.commit,
                                config={"remote": {name: {**conf, **override}}})
            self._repo = repo
        return self._repo

    def remote(self) -> str:
        """The URL of the DVC remote this revision is read from."""
        if self.remote_override:
            return remote_url(self.remote_override)
        repo = self._open()
        name = repo.config["core"].get("remote") or REMOTE_NAME
        return repo.config["remote"].get(name, {}).get("url", "(no default remote)")

    def _probe(self) -> None:
        """Fail with a retryable error naming the remote when it cannot be reached."""
        url = self.remote()
        if "://" not in url:
            if not Path(url).is_dir():
                raise TransientStepError(f"DVC remote {url} is unreachable (no such folder); is the volume mounted? "
                                         "Set ARGUS_DVC_REMOTE to override the registry's remote.")
            return
        try:
            import fsspec

            conf = remote_config(url)
            opts = {}
            if url.startswith("s3://"):
                opts = {"client_kwargs": {"endpoint_url": conf["endpointurl"]} if conf.get("endpointurl") else {},
                        "config_kwargs": {"connect_timeout": 5, "read_timeout": 10, "retries": {"max_attempts": 2}}}
            fs, path = fsspec.core.url_to_fs(url, **opts)
            fs.ls(path.split("/", 1)[0])
        except Exception as exc:
            raise TransientStepError(f"DVC remote {url} is unreachable ({type(exc).__name__}: {str(exc)[:300]}); "
                                     "the step will be retried") from exc

    def _fs(self):
        from dvc.api import DVCFileSystem

        return DVCFileSystem(repo=self._open())

    def _remote_failure(self, exc: Exception) -> TransientStepError:
        return TransientStepError(f"could not fetch dataset files from DVC remote {self.remote()} "
                                  f"({type(exc).__name__}: {str(exc)[:300]}); the step will be retried")

    # ---- listing and fetching ----------------------------------------------------------------------
    def listing(self) -> dict[str, str]:
        """Relative path inside ``dataset/`` -> md5, for every file of the revision (cached per commit)."""
        if self._listing is not None:
            return self._listing
        cached = self.cache.root.parent / "listings" / f"{self.commit}.json"
        if cached.exists():
            self._listing = json.loads(cached.read_text())
            return self._listing
        self._probe()
        try:
            found = self._fs().find(DATASET_DIR, detail=True)
        except Exception as exc:
            raise self._remote_failure(exc) from exc
        prefix = DATASET_DIR + "/"
        listing = {k[len(prefix):]: v["md5"] for k, v in found.items()
                   if k.startswith(prefix) and v.get("type") == "file" and v.get("md5")}
        if not listing:
            raise PermanentStepError(f"registry commit {self.commit} tracks no files under {DATASET_DIR}/")
        atomic_write_bytes(cached, json.dumps(listing, sort_keys=True).encode())
        self._listing = listing
        return listing

    def fetch(self, relpaths: list[str]) -> dict[str, Path]:
        """Cache paths of ``relpaths`` (inside ``dataset/``), downloading only what the cache lacks."""
        listing = self.listing()
        unknown = [p for p in relpaths if p not in listing]
        if unknown:
            raise KeyError(f"not in the revision: {unknown[:5]}")
        missing = sorted({listing[p]: p for p in relpaths if not self.cache.has(listing[p])}.items())
        if missing:
            self._probe()
            staging = Path(tempfile.mkdtemp(prefix="fetch-", dir=self.cache.root.parent))
            try:
                rpaths = [f"{DATASET_DIR}/{p}" for _, p in missing]
                lpaths = [str(staging / md5) for md5, _ in missing]
                log.info("fetching %d file(s) from DVC remote %s", len(missing), self.remote())
                try:
                    self._fs().get(rpaths, lpaths)
                except Exception as exc:
                    raise self._remote_failure(exc) from exc
                for md5, _ in missing:
                    self.cache.adopt(staging / md5, md5)
                self.transferred += len(missing)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
        return {p: self.cache.path(listing[p]) for p in relpaths}

    def close(self) -> None:
        if self._repo is not None:
            self._repo.close()
            self._repo = None


def materialise(src: Path, dst: Path, md5: str) -> bool:
    """Copy cache object ``src`` (content ``md5``) to ``dst`` atomically.

    A copy, not a hard link: whatever happens to a run's files must never reach the shared cache.

    Returns False when ``dst`` holds that content already (a rerun transfers and copies nothing).
    """
    if dst.exists():
        if md5_file(dst) == md5:
            return False
        dst.unlink()
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)
    return True
