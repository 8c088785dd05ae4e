"""DAG parse time: our DAG files against Airflow's bundled example_kubernetes_executor.py.

Both are parsed in the same run the way Airflow 3's dag-processor does it: a parent with Airflow
imported forks a fresh child per file parse, so each parse pays for the modules its file imports
(``fork`` rows). A second measurement re-parses in one warm interpreter where those modules stay
cached (``warm`` rows), which isolates the cost of building the DAG object. Printed: median and
p90 per file, and the ratio ours / example (target <= 1.0), for both runtimes of our DAG.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

PROBE = r"""
import json, os, statistics, sys, time, importlib.util, logging
logging.disable(logging.CRITICAL)
sys.path.insert(0, os.environ["PLUGINS"])
from airflow.dag_processing.dagbag import DagBag
import airflow.example_dags, pathlib
example = str(pathlib.Path(airflow.example_dags.__file__).parent / "example_kubernetes_executor.py")
files = {"argus (dags/)": os.environ["DAGS"], "example_kubernetes_executor.py": example}
def parse_in_child(path):
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        t = time.perf_counter(); bag = DagBag(path); dt = time.perf_counter() - t
        os.write(w, json.dumps([dt, bool(bag.import_errors)]).encode()); os._exit(0)
    os.close(w); data = os.read(r, 1000); os.close(r); os.waitpid(pid, 0)
    dt, errors = json.loads(data)
    assert not errors, path
    return dt
out = {"fork": {}, "warm": {}}
repeat = int(os.environ.get("REPEAT", "15"))
for name, path in files.items():
    out["fork"][name] = [parse_in_child(path) for _ in range(repeat)]
DagBag(files["argus (dags/)"]); DagBag(example)          # now cache every import
for name, path in files.items():
    times = []
    for _ in range(repeat):
        t = time.perf_counter(); bag = DagBag(path); times.append(time.perf_counter() - t)
        assert not bag.import_errors, bag.import_errors
    out["warm"][name] = times
print(json.dumps(out))
"""


def measure(runtime: str, repeat: int) -> dict[str, dict[str, list[float]]]:
    env = {**os.environ, "ARGUS_RUNTIME": runtime, "PLUGINS": str(REPO / "plugins"), "DAGS": str(REPO / "dags"),
           "REPEAT": str(repeat), "AIRFLOW__CORE__LOAD_EXAMPLES": "False"}
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    repeat = int(os.environ.get("BENCH_REPEAT", "15"))
    print(f"DAG parse time, {repeat} parses per file and mode")
    print(f"{'runtime':<11} {'mode':<5} {'file':<32} {'median ms':>10} {'p90 ms':>8}")
    for runtime in ("local", "kubernetes"):
        by_mode = measure(runtime, repeat)
        for mode, times in by_mode.items():
            medians = {}
            for name, values in times.items():
                values = sorted(values)
                medians[name] = statistics.median(values)
                p90 = values[int(0.9 * (len(values) - 1))]
                print(f"{runtime:<11} {mode:<5} {name:<32} {medians[name] * 1000:>10.1f} {p90 * 1000:>8.1f}")
            ratio = medians["argus (dags/)"] / medians["example_kubernetes_executor.py"]
            verdict = "OK" if ratio <= 1.0 else "ABOVE TARGET"
            print(f"{runtime:<11} {mode:<5} ratio argus / example = {ratio:.2f}  (target <= 1.0: {verdict})")


if __name__ == "__main__":
    main()
