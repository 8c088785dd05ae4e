"""The judge on the demo data, and what the promotion gates make of the demo's generators under it.

1. Trains the judge as the ``segmenter`` step does (labelled train frames of every condition,
   condition-balanced, ``--judge-steps``) and prints its mIoU per condition on the held-out
   (val+test) real frames, with the floor ratio (adverse / clear).
2. Per condition: the non-learned references and a tiny generator trained for ``--gen-steps``
   (the demo's 150 by default), evaluated like ``evaluate`` (clear val+test sources, the condition's
   val+test as real frames): KID, class-wise gap, label fidelity (overall, lane/pole, per-frame
   quantiles, the share of frames under per-frame floors), the class-rank correlation; and the first
   champion decision of ``models/decision.py`` with the default policy.

Run niced: ``nice -n 10 .venv/bin/python benchmarks/bench_judge.py [--conditions fog,rain]``. Data and the
judge are cached under ``$ARGUS_BENCH_CACHE`` (default /tmp/argus-bench-judge).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

CACHE = Path(os.environ.get("ARGUS_BENCH_CACHE", "/tmp/argus-bench-judge"))
PER_FRAME_FLOORS = (0.2, 0.3, 0.4, 0.5)


def judge(root, manifest, steps: int, seed: int = 0):
    import torch

    from argus_tasks.models import judge as J
    from argus_tasks.models.segmenter import train_segmenter
    from argus_tasks.models.segmenter_registry import module_spec, rebuild

    path, spec = CACHE / f"judge-{steps}-{seed}.pt", CACHE / f"judge-{steps}-{seed}.json"
    if path.exists() and spec.exists():  # weights only: the cache never unpickles objects
        model = rebuild(json.loads(spec.read_text()))
        model.load_state_dict(torch.load(path, weights_only=True))
        return model.eval(), None
    x, y, w, counts = J.training_frames(manifest, root, 64)
    t0 = time.process_time()
    model = train_segmenter(x.float() / 255.0, y, steps=steps, seed=seed, frame_weights=w)
    torch.save(model.state_dict(), path)
    spec.write_text(json.dumps(module_spec(model)))
    return model.eval(), {"train_cpu_s": round(time.process_time() - t0, 1), "train_frames": counts}


def per_frame_fidelity(gen_conf):
    import numpy as np

    from argus_tasks.models.metrics import iou_from_confusion

    iou = iou_from_confusion(gen_conf)  # (N, C)
    with np.errstate(invalid="ignore"):
        return np.nanmean(np.where(np.isfinite(iou), iou, np.nan), axis=1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--judge-steps", type=int, default=400)
    ap.add_argument("--gen-steps", type=int, default=150)
    ap.add_argument("--conditions", default="fog,rain,snow,night")
    ap.add_argument("--out", default=str(CACHE / "judge.json"))
    args = ap.parse_args()

    import numpy as np
    import torch

    from argus_tasks.data.schema import CLASSES
    from argus_tasks.models import frames as F
    from argus_tasks.models import judge as J
    from argus_tasks.models.config import load_config
    from argus_tasks.models.decision import Candidate, Policy, decide
    from argus_tasks.models.evaluation import evaluate_candidate, real_side
    from argus_tasks.models.generator import WeatherTranslator, translate
    from argus_tasks.models.predictiveness import class_rank_correlation, format_figure
    from argus_tasks.models.references import calibrated_references
    from argus_tasks.models.trainer import train_translator

    torch.set_num_threads(1)
    CACHE.mkdir(parents=True, exist_ok=True)
    import pandas as pd

    from argus_tasks.data.generate import DEMO_COUNTS, generate_dataset
    root = CACHE / "data"
    if not (root / "manifest.parquet").exists():
        generate_dataset(root, size=64, counts=DEMO_COUNTS, seed=0)
    manifest = pd.read_parquet(root / "manifest.parquet")
    seg, trained = judge(root, manifest, args.judge_steps)
    quality = J.measure_conditions(seg, J.load_eval_sets(manifest, root, 64))
    clear = quality["clear"]["miou"]
    out = {"judge_steps": args.judge_steps, "trained": trained, "judge": quality, "conditions": {}}
    print(f"judge ({args.judge_steps} steps, condition-balanced): " + ", ".join(
        f"{c} {q['miou']:.3f}" + ("" if c == "clear" else f" ({q['miou'] / clear:.2f}x)") for c, q in quality.items()))

    src_rows = F.select(manifest, "clear", ("val", "test"))
    src_x, src_y = F.load_frames(root, src_rows)
    src_seq = F.sequences_of(src_rows)
    clear_train, _ = F.load_frames(root, F.select(manifest, "clear", ("train",)), labels=False)
    policy = Policy(class_names=CLASSES)
    for c in args.conditions.split(","):
        real_rows = F.select(manifest, c, ("val", "test"))
        real_x, real_y = F.load_frames(root, real_rows)
        real_seq = F.sequences_of(real_rows)
        adv_train, _ = F.load_frames(root, F.select(manifest, c, ("train",)), labels=False)
        real = real_side(seg, real_x, real_y)
        fns = {name: (lambda x, r=ref: r(x, torch.Generator().manual_seed(0)))
               for name, ref in calibrated_references(c, clear_train[:64].float() / 255, adv_train[:64].float() / 255,
                                                      seed=0).items()}
        torch.manual_seed(0)
        cfg = load_config("tiny", {"steps": args.gen_steps, "log_every_steps": 10**6})
        model = WeatherTranslator(cfg, c)
        t0 = time.process_time()
        train_translator(model, clear_train, adv_train, steps=cfg.steps, seed=0)
        fns["learned"] = lambda x, g=model.G: translate(g, x, seed=0)
        rows, cands = {}, {}
        for name, fn in fns.items():
            rec = evaluate_candidate(name, fn, seg, src_x, src_y, real, CLASSES)
            rank = class_rank_correlation(rec.gen_conf, real.conf, src_seq, real_seq, class_names=CLASSES)
            frame_fid = per_frame_fidelity(rec.gen_conf)
            m = rec.metrics
            rows[name] = {"kid": m["kid"], "classwise_gap": m["classwise_gap"], "fidelity": m["label_preservation"],
                          "lane_marking": rec.per_class["lane_marking"]["iou_generated"],
                          "pole": rec.per_class["pole"]["iou_generated"], "rank": rank["spearman"],
                          "rank_ci": [rank["lo"], rank["hi"]], "sanity": bool(all(rec.sanity.values())),
                          "frame_fidelity_p5": float(np.nanquantile(frame_fid, 0.05)),
                          "frames_below": {str(t): float(np.mean(frame_fid < t)) for t in PER_FRAME_FLOORS}}
            if name == "learned":
                rows[name]["train_cpu_s"] = round(time.process_time() - t0, 1)
            cands[name] = Candidate(name=name, version="1" if name == "learned" else None, metrics=m,
                                    sanity=rec.sanity, gen_conf=rec.gen_conf, real_conf=real.conf,
                                    learned=name == "learned", gen_seq=src_seq, real_seq=real_seq,
                                    gen_features=rec.features, real_features=real.features, judge="bench")
            r = rows[name]
            print(f"{c:6s} {name:16s} KID {r['kid']:.4f}  gap {r['classwise_gap']:.4f}  fidelity {r['fidelity']:.3f} "
                  f"(lane {r['lane_marking']:.2f}, pole {r['pole']:.2f}, per-frame p5 {r['frame_fidelity_p5']:.2f}, "
                  f"<0.3 {r['frames_below']['0.3']:.0%}, <0.5 {r['frames_below']['0.5']:.0%})  rank-rho "
                  f"{format_figure(rank)}  sanity {'ok' if r['sanity'] else 'FAIL'}", flush=True)
        d = decide(None, cands["learned"], [v for k, v in cands.items() if k != "learned"], policy, {"passed": True})
        out["conditions"][c] = {"real_miou": quality[c]["miou"], "candidates": rows,
                                "first_champion": {"promote": d.promote, "gates": d.comparisons.get("gates"),
                                                   "reasons": d.reasons}}
        print(f"{c:6s} first champion with the default policy: {'PROMOTED' if d.promote else 'refused'} — "
              f"{d.reasons[-1]}", flush=True)
        Path(args.out).write_text(json.dumps(out, indent=2, default=float))


if __name__ == "__main__":
    main()
