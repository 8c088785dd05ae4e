"""A fresh ``make demo`` on a clean clone: install time, pipeline time, orchestration overhead.

Clones the committed HEAD into a temporary folder, runs ``make demo`` there (new venv, new
``.argus/``), and prints:

* install seconds and pipeline seconds (targets: under 10 minutes in all, pipeline under 5);
* orchestration overhead = pipeline wall time / sum of the step processes' wall times
  (target <= 1.15 on the tiny config), read from the Airflow log of the run.

Set ``BENCH_DEMO_REUSE_VENV=1`` to symlink this checkout's ``.venv`` instead of installing
(measures the pipeline only). Takes 5-10 minutes.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="argus-bench-demo-") as tmp:
        clone = Path(tmp) / "argus"
        subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
        if os.environ.get("BENCH_DEMO_REUSE_VENV"):
            (clone / ".venv").symlink_to(REPO / ".venv")
            (REPO / ".venv" / ".installed").touch()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ARGUS_", "AIRFLOW", "MLFLOW_"))}
        start = time.time()
        out = subprocess.run(["make", "demo"], cwd=clone, env=env, capture_output=True, text=True)
        total = time.time() - start
        print(out.stdout[-4000:])
        if out.returncode != 0:
            print(out.stderr[-3000:])
            raise SystemExit(f"make demo failed with {out.returncode}")
        install = (clone / ".venv" / ".install_seconds").read_text().strip() \
            if not os.environ.get("BENCH_DEMO_REUSE_VENV") else "0 (reused)"
        timing = re.search(r"timings: .*?(\d+)s init, (\d+)s pipeline", out.stdout)
        init_s, pipeline_s = (int(timing.group(1)), int(timing.group(2))) if timing else (None, None)
        log = re.search(r"full Airflow log of this run: (\S+)", out.stdout)
        steps = []
        if log:
            text = Path(log.group(1)).read_text()
            steps = [float(x) for x in re.findall(r"step process exited with \S+ after ([\d.]+)s", text)]
        print(f"install: {install}s   init: {init_s}s   pipeline: {pipeline_s}s   make demo total: {total:.0f}s")
        print("targets: total < 600 s, pipeline < 300 s")
        if steps and pipeline_s:
            ratio = pipeline_s / sum(steps)
            print(f"orchestration overhead: pipeline {pipeline_s}s / sum of {len(steps)} step processes "
                  f"{sum(steps):.1f}s = {ratio:.3f} (target <= 1.15)")


if __name__ == "__main__":
    main()
