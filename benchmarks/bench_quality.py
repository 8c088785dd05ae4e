"""Quality of the weather generators at fixed CPU budgets, against the references and identity.

For each condition (fog, rain, snow, night) and each budget (default 60, 120, 240 s) a fresh tiny
generator is trained for that budget, then evaluated exactly like the ``evaluate`` step does
(:func:`argus_tasks.models.evaluation.evaluate_candidate`, the reference segmenter's features
and predictions, clear val+test as sources, the condition's val+test as real frames). The
non-learned references (calibrated on the training split) and identity are evaluated once per
condition. Printed: KID, class-wise realism gap and label preservation per candidate, and
whether the learned generator beats every reference on KID and class-wise gap at the largest
budget (the target).

Budgets are CPU seconds of the training process (``time.process_time``) with one torch thread,
so the figures do not depend on what else shares the machine; on an idle 2-core machine a
budget of B CPU-seconds takes about B wall seconds. Run it niced::

    nice -n 10 .venv/bin/python benchmarks/bench_quality.py [--budgets 240] [--conditions fog,rain]

Data and the segmenter are cached under ``$ARGUS_BENCH_CACHE`` (default /tmp/argus-bench-quality).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path

CACHE = Path(os.environ.get("ARGUS_BENCH_CACHE", "/tmp/argus-bench-quality"))


def dataset(root: Path) -> Path:
    from argus_tasks.data.generate import DEMO_COUNTS, generate_dataset

    if not (root / "manifest.parquet").exists():
        generate_dataset(root, size=64, counts=DEMO_COUNTS, seed=0)
    return root


def load(root, manifest, condition, splits, labels=True, limit=None):
    from argus_tasks.models import frames as F

    return F.load_frames(root, F.select(manifest, condition, splits, limit), labels=labels)


def segmenter(root, manifest):
    import torch

    from argus_tasks.models.segmenter import train_segmenter
    from argus_tasks.models.segmenter_registry import module_spec, rebuild

    path, spec_path = CACHE / "segmenter-weights.pt", CACHE / "segmenter-module.json"
    if path.exists() and spec_path.exists():  # weights only: the cache never unpickles objects
        model = rebuild(json.loads(spec_path.read_text()))
        model.load_state_dict(torch.load(path, weights_only=True))
        return model.eval()
    x, y = load(root, manifest, "clear", ("train",))
    model = train_segmenter(x.float() / 255.0, y)
    torch.save(model.state_dict(), path)
    spec_path.write_text(json.dumps(module_spec(model)))
    return model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budgets", default="60,120,240")
    ap.add_argument("--conditions", default="fog,rain,snow,night")
    ap.add_argument("--clock", choices=("cpu", "wall"), default="cpu")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="tiny config overrides")
    ap.add_argument("--out", default=str(CACHE / "quality.json"))
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s")

    import torch

    from argus_tasks.data.manifest import read_manifest
    from argus_tasks.data.schema import CLASSES
    from argus_tasks.models.config import load_config, parse_overrides
    from argus_tasks.models.evaluation import evaluate_candidate, real_side
    from argus_tasks.models.generator import WeatherTranslator, translate
    from argus_tasks.models.references import calibrated_references
    from argus_tasks.models.trainer import train_translator

    torch.set_num_threads(1)
    CACHE.mkdir(parents=True, exist_ok=True)
    root = dataset(CACHE / "data")
    manifest = read_manifest(root)
    seg = segmenter(root, manifest)
    budgets = [float(b) for b in args.budgets.split(",")]
    clock = time.process_time if args.clock == "cpu" else time.time
    src_x, src_y = load(root, manifest, "clear", ("val", "test"))
    clear_train, _ = load(root, manifest, "clear", ("train",), labels=False)
    results: dict = {"budgets": budgets, "clock": args.clock, "conditions": {}}
    if Path(args.out).exists():
        results["conditions"] = json.loads(Path(args.out).read_text()).get("conditions", {})

    def record(rec, **extra):
        m = rec.metrics
        return {"kid": m["kid"], "classwise_gap": m["classwise_gap"], "label_preservation": m["label_preservation"],
                "sanity": bool(all(rec.sanity.values())), **extra}

    for c in args.conditions.split(","):
        real_x, real_y = load(root, manifest, c, ("val", "test"))
        adv_train, _ = load(root, manifest, c, ("train",), labels=False)
        real = real_side(seg, real_x, real_y)
        out = results["conditions"].setdefault(c, {})
        refs = calibrated_references(c, clear_train[:64].float() / 255, adv_train[:64].float() / 255, seed=0)
        for name, ref in refs.items():
            rec = evaluate_candidate(name, lambda x, r=ref: r(x, torch.Generator().manual_seed(0)), seg,
                                     src_x, src_y, real, CLASSES)
            out[name] = record(rec)
        for budget in budgets:
            torch.manual_seed(0)
            cfg = load_config("tiny", {"steps": 10**7, "log_every_steps": 10**6, **parse_overrides(args.overrides)})
            model = WeatherTranslator(cfg, c)
            t0 = time.time()
            outcome = train_translator(model, clear_train, adv_train, steps=cfg.steps, seed=0,
                                       max_seconds=budget, clock=clock)
            rec = evaluate_candidate("learned", lambda x, g=model.G: translate(g, x, seed=0), seg,
                                     src_x, src_y, real, CLASSES)
            out[f"learned@{budget:g}s"] = record(rec, steps=outcome.steps, wall_s=round(time.time() - t0, 1))
            Path(args.out).write_text(json.dumps(results, indent=2))
            print(f"{c:6s} learned@{budget:g}s steps {outcome.steps:5d}  KID {rec.metrics['kid']:.4f}  "
                  f"gap {rec.metrics['classwise_gap']:.4f}  label-pres {rec.metrics['label_preservation']:.3f}",
                  flush=True)
    print_table(results)


def print_table(results: dict) -> None:
    print(f"\n{'condition':9s} {'candidate':22s} {'steps':>6s} {'KID':>8s} {'cw-gap':>8s} {'label-pres':>10s} sanity")
    verdict = {}
    for c, rows in results["conditions"].items():
        for name, r in rows.items():
            print(f"{c:9s} {name:22s} {str(r.get('steps', '')):>6s} {r['kid']:8.4f} {r['classwise_gap']:8.4f} "
                  f"{r['label_preservation']:10.3f} {'ok' if r['sanity'] else 'FAIL'}")
        learned = [k for k in rows if k.startswith("learned@")]
        if not learned:
            continue
        top = max(learned, key=lambda k: float(k.split("@")[1].rstrip("s")))
        refs = [k for k in rows if not k.startswith("learned@")]
        verdict[c] = {
            "budget": top,
            "beats_all_on_kid": all(rows[top]["kid"] < rows[r]["kid"] for r in refs),
            "beats_all_on_gap": all(rows[top]["classwise_gap"] < rows[r]["classwise_gap"] for r in refs),
        }
    print("\ntarget (largest budget beats every reference and identity on KID and class-wise gap):")
    for c, v in verdict.items():
        print(f"  {c:6s} {v['budget']:14s} KID {'yes' if v['beats_all_on_kid'] else 'NO '}  "
              f"class-wise gap {'yes' if v['beats_all_on_gap'] else 'NO'}")


if __name__ == "__main__":
    main()
