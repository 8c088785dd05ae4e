"""``make bench``: run every ``benchmarks/bench_*.py`` and print a table of how each went.

Each benchmark prints its own figures and ratios. Select some with ``BENCH=name1,name2``
(e.g. ``BENCH=dag_parse make bench``); the long ones (quality, demo) say how long they take.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    wanted = {w.strip() for w in os.environ.get("BENCH", "").split(",") if w.strip()}
    scripts = sorted(p for p in HERE.glob("bench_*.py") if not wanted or p.stem.removeprefix("bench_") in wanted)
    if not scripts:
        print(f"no benchmark matches BENCH={os.environ.get('BENCH')}")
        return 1
    rows = []
    for script in scripts:
        print(f"\n===== {script.stem} =====", flush=True)
        start = time.time()
        code = subprocess.call([sys.executable, str(script)])
        rows.append((script.stem, code, time.time() - start))
    print("\n| benchmark | exit | wall s |\n|---|---|---|")
    for name, code, wall in rows:
        print(f"| {name} | {code} | {wall:.0f} |")
    return max(code for _, code, _ in rows)


if __name__ == "__main__":
    raise SystemExit(main())
