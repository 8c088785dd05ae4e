"""Headless Chromium (Debian's ``chromium`` package) driven by Playwright's Python package.

Playwright never downloads a browser here: it launches ``/usr/bin/chromium``. When the binary is
missing, ``scripts/ensure_chromium.sh`` installs it with apt-get; a test that still finds no browser
is skipped with the reason.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("ARGUS_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def ensure_chromium() -> str:
    """The Chromium binary, installed on demand; skips the calling test (loudly) when impossible."""
    if Path(CHROMIUM).exists() or shutil.which("chromium"):
        return CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium")
    proc = subprocess.run([str(REPO / "scripts" / "ensure_chromium.sh")], capture_output=True, text=True, timeout=900)
    if proc.returncode == 0 and Path(CHROMIUM).exists():
        return CHROMIUM
    pytest.skip(f"BROWSER TEST SKIPPED: Debian's chromium is not installed and scripts/ensure_chromium.sh could not "
                f"install it: {(proc.stderr or proc.stdout).strip()[-500:]}")


def launch(playwright):
    return playwright.chromium.launch(executable_path=ensure_chromium(), args=CHROMIUM_ARGS, headless=True)


def login(page, base_url: str, username: str, password: str, next_path: str = "/") -> None:
    """Sign in through the simple auth manager's login page, as a person does."""
    page.goto(base_url + next_path)
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(lambda url: "/auth/login" not in url, timeout=60_000)
