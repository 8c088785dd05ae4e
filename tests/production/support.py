"""Helpers of the production-stack tests: Dockerfile and pin parsing, Compose interpolation,
dependency closures from installed metadata, free ports and HTTP waits."""

from __future__ import annotations

import importlib.metadata as md
import json
import re
import shlex
import socket
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = REPO / ".venv" / "bin"


# ---- pins -------------------------------------------------------------------------------------
def read_pins(path: Path) -> dict[str, str]:
    """``{canonical name: version}`` of a requirements file made of ``name==version`` lines."""
    pins: dict[str, str] = {}
    for lineno, raw in enumerate(Path(path).read_text().splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        m = re.fullmatch(r"([A-Za-z0-9_.\-]+)==([A-Za-z0-9_.+\-]+)", line)
        if not m:
            raise AssertionError(f"{path}:{lineno}: {raw!r} is not an exact `name==version` pin")
        pins[canonicalize_name(m.group(1))] = m.group(2)
    return pins


def marker_env(python_version: str) -> dict[str, str]:
    return {
        "python_version": python_version,
        "python_full_version": f"{python_version}.0",
        "sys_platform": "linux",
        "platform_system": "Linux",
        "platform_machine": "x86_64",
        "os_name": "posix",
        "implementation_name": "cpython",
        "platform_python_implementation": "CPython",
    }


def runtime_closure(roots: list[str], python_version: str) -> dict[str, set[str]]:
    """Distributions needed at run time by ``roots`` on Linux/CPython ``python_version``.

    Walks the Requires-Dist metadata of the installed distributions (the pinned venv), following
    extras, and returns ``{canonical name: {names of the dependents}}``. A dependency that is not
    installed here is reported with the dependent so that a test can name it.
    """
    env = marker_env(python_version)
    dependents: dict[str, set[str]] = {}
    expanded: dict[str, set[str]] = {}  # visited distributions -> extras already followed
    stack = [(Requirement(root), "<root>") for root in roots]
    while stack:
        req, parent = stack.pop()
        key = canonicalize_name(req.name)
        dependents.setdefault(key, set()).add(parent)
        if key in expanded and set(req.extras) <= expanded[key]:
            continue
        expanded.setdefault(key, set()).update(req.extras)
        try:
            dist = md.distribution(req.name)
        except md.PackageNotFoundError:
            continue
        extras = ["", *sorted(expanded[key])]
        for spec in dist.requires or []:
            dep = Requirement(spec)
            if dep.marker is None or any(dep.marker.evaluate({**env, "extra": e}) for e in extras):
                stack.append((dep, key))
    return dependents


# ---- Dockerfiles ------------------------------------------------------------------------------
@dataclass
class Instruction:
    keyword: str
    args: str
    lineno: int

    def exec_form(self) -> list[str] | None:
        text = self.args.strip()
        if text.startswith("["):
            return json.loads(text)
        return None


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def last(self, keyword: str) -> Instruction | None:
        found = self.all(keyword)
        return found[-1] if found else None

    def env(self) -> dict[str, str]:
        """ENV values of this stage (``KEY=value`` forms; later ones win; $VAR not expanded)."""
        out: dict[str, str] = {}
        for ins in self.all("ENV"):
            for token in shlex.split(ins.args):
                if "=" in token:
                    key, value = token.split("=", 1)
                    out[key] = value
        return out

    def text(self) -> str:
        return "\n".join(f"{i.keyword} {i.args}" for i in self.instructions)


def parse_dockerfile(path: Path) -> list[Stage]:
    """Stages of a Dockerfile with their instructions (continuations joined, comments dropped)."""
    stages: list[Stage] = []
    pending = ""
    start = 0
    for lineno, raw in enumerate(Path(path).read_text().splitlines(), 1):
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue
        if not pending:
            start = lineno
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        line = pending + stripped
        pending = ""
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            parts = args.split()
            name = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else None
            stages.append(Stage(base=parts[0], name=name))
        elif stages:
            stages[-1].instructions.append(Instruction(keyword, args.strip(), start))
    return stages


# ---- Compose interpolation ------------------------------------------------------------------------
_VAR = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])((?:[^{}]|\{[^{}]*\})*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)")


def read_env_file(path: Path) -> dict[str, str]:
    env: dict[str, str] = {}
    for raw in Path(path).read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise AssertionError(f"{path}: line {raw!r} is not KEY=value")
        env[key.strip()] = value.strip()
    return env


def interpolate(value, env: dict[str, str], missing: list[str]):
    """Compose-style ``${VAR}``, ``${VAR:-default}``, ``${VAR:?error}`` and ``$$`` substitution.

    Names of required variables (``:?``/``?``) that ``env`` lacks are appended to ``missing``.
    """
    if isinstance(value, dict):
        return {k: interpolate(v, env, missing) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env, missing) for v in value]
    if not isinstance(value, str):
        return value

    def sub(m: re.Match) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group(1) or m.group(4)
        op, arg = m.group(2), m.group(3) or ""
        current = env.get(name)
        unset_or_empty = current is None or (current == "" and op and op.startswith(":"))
        if op in (":-", "-"):
            return interpolate(arg, env, missing) if unset_or_empty else current
        if op in (":?", "?"):
            if unset_or_empty:
                missing.append(name)
                return ""
            return current
        return current or ""

    return _VAR.sub(sub, value)


def variables_used(value) -> set[str]:
    """Names of the variables a Compose document interpolates."""
    if isinstance(value, dict):
        return set().union(*(variables_used(v) for v in value.values())) if value else set()
    if isinstance(value, list):
        return set().union(*(variables_used(v) for v in value)) if value else set()
    if not isinstance(value, str):
        return set()
    names = set()
    for m in _VAR.finditer(value):
        if m.group(0) != "$$":
            names.add(m.group(1) or m.group(4))
            if m.group(3):
                names |= variables_used(m.group(3))
    return names


# ---- processes and network --------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_http(url: str, timeout_s: float, what: str, logs: Path | None = None, proc=None) -> None:
    """Poll ``url`` until it answers below HTTP 500; fail with the tail of ``logs`` otherwise."""
    deadline = time.time() + timeout_s
    last = ""
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            break
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                if resp.status < 500:
                    return
        except urllib.error.HTTPError as exc:
            if exc.code < 500:
                return
            last = f"HTTP {exc.code}"
        except OSError as exc:
            last = str(exc)
        time.sleep(0.5)
    tail = ""
    if logs is not None and logs.exists():
        tail = "\n".join(logs.read_text(errors="replace").splitlines()[-40:])
    state = f"exited with {proc.returncode}" if proc is not None and proc.poll() is not None else "still starting"
    raise AssertionError(f"{what} did not answer at {url} within {timeout_s:.0f}s ({state}; last: {last})\n{tail}")
