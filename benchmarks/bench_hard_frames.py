"""Does oversampling the hard set (``hard_frame_weight``) make the next challenger better on it?

Protocol (one condition, fog by default; the 64 px demo dataset and the reference segmenter of
``bench_quality.py``, cached):

1. **History.** ``--history`` generators (seeds 100, 101, ...) are trained with weight 0 and judged
   like ``evaluate`` does, per frame (:mod:`argus_tasks.models.frame_scores`): label fidelity,
   realism ratio, gates. From these evaluations the hard set is selected exactly as the
   ``hard-frames`` step does (worst ``--fraction`` in at least ``--min-hits`` of them), grouped, and
   turned into training weights (:mod:`argus_tasks.hardframes.sampling`).
2. **Next challenger.** For each of ``--seeds`` seeds and each weight of ``--weights`` (0 is the
   control), a fresh generator is trained with the same budget (the same optimiser steps and batch
   size, the same seed, so the arms differ only by the sampler) and judged on the same frames.
3. **Figures**, per arm, mean ± sd over seeds: mean label fidelity and realism ratio on the hard
   frames and on the rest, KID and class-wise gap on the whole set; and the paired difference of each
   weight against weight 0 (same seed), mean ± sd.

Run it niced (about 12 training runs of ``--steps`` steps: ~10 min on an idle core at 160 steps)::

    nice -n 10 .venv/bin/python benchmarks/bench_hard_frames.py [--condition fog] [--seeds 3] [--weights 0,3]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_quality import CACHE, dataset, load, segmenter  # noqa: E402  (shared data and judge cache)

METRICS = ("hard_fidelity", "rest_fidelity", "hard_realism", "rest_realism", "kid", "classwise_gap")
DERIVED = {"fidelity_hard_minus_rest": ("hard_fidelity", "rest_fidelity"),
           "realism_hard_minus_rest": ("hard_realism", "rest_realism")}


def judge_frames(seg, model, src_x, src_y, real, real_ids):
    """Per-frame fidelity, realism ratio, flags (as ``evaluate``) and the set-level metrics of one generator."""
    import numpy as np

    from argus_tasks.data.schema import CLASSES
    from argus_tasks.models import frame_scores as FS
    from argus_tasks.models.evaluation import evaluate_candidate
    from argus_tasks.models.frame_stats import FrameRecorder
    from argus_tasks.models.generator import translate

    rec = FrameRecorder()
    cand = evaluate_candidate("learned", rec.wrap(lambda x: translate(model.G, x, seed=0)), seg, src_x, src_y, real,
                              CLASSES)
    fidelity = FS.fidelity_per_frame(cand.gen_conf)
    r = FS.realism(cand.features, real.features, real_ids)
    flags = FS.gate_flags(fidelity, r["ratio"], rec.finite, rec.mean_abs_change, r["threshold"])
    return {"fidelity": fidelity, "realism": np.asarray(r["ratio"]), "flagged": np.asarray(flags["flagged"]),
            "kid": cand.metrics["kid"], "classwise_gap": cand.metrics["classwise_gap"]}


def train(condition, seed, steps, clear_train, adv_train, weights=None):
    import torch

    from argus_tasks.models.config import load_config
    from argus_tasks.models.generator import WeatherTranslator
    from argus_tasks.models.trainer import train_translator

    cfg = load_config("tiny", {"steps": steps, "seed": seed, "log_every_steps": 10**6})
    torch.manual_seed(seed)
    model = WeatherTranslator(cfg, condition)
    w = None if weights is None else torch.as_tensor(weights, dtype=torch.float64)
    train_translator(model, clear_train, adv_train, steps=steps, seed=seed, clear_weights=w)
    model.G.eval()
    return model


def hard_set(condition, history, src_rows, src_y, args):
    """The hard set of the history, built by the same code as the ``hard-frames`` step."""
    import pandas as pd

    from argus_tasks.hardframes import hardset
    from argus_tasks.hardframes.groups import frame_groups
    from argus_tasks.hardframes.selection import Evaluation, hardness, select

    groups = frame_groups(src_rows, [y.numpy() for y in src_y])
    evaluations, tables = [], []
    for i, h in enumerate(history):
        key = f"bench/history{i}/evaluate"
        hard = hardness(h["fidelity"], h["realism"], h["flagged"])
        ids = src_rows["frame_id"].astype(str).tolist()
        evaluations.append(Evaluation(key, f"2026-01-{i + 1:02d}T00:00:00Z", dict(zip(ids, hard, strict=True))))
        tables.append(pd.DataFrame({"frame_id": ids, "split": src_rows["split"].astype(str).tolist(),
                                    "capture_time": src_rows["capture_time"].tolist(), **groups,
                                    "label_fidelity": h["fidelity"], "realism_ratio": h["realism"],
                                    "evaluation": key}))
    selection = select(evaluations, args.history, args.fraction, args.min_hits)
    entries = [{"dag_id": "bench", "run_id": f"history{i}", "source": "evaluate",
                "scored_at": e.scored_at} for i, e in enumerate(evaluations)]
    return hardset.build(condition, selection, pd.concat(tables, ignore_index=True), entries,
                         {**selection.settings, "score": "combined", "time_bucket": "week"})


def mean_sd(values) -> str:
    import numpy as np

    v = np.asarray(values, float)
    return f"{v.mean():.4f} ± {v.std(ddof=1) if len(v) > 1 else 0.0:.4f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--condition", default="fog")
    ap.add_argument("--steps", type=int, default=160, help="optimiser steps of every generator (the budget)")
    ap.add_argument("--history", type=int, default=3, help="weight-0 generators that make the history")
    ap.add_argument("--seeds", type=int, default=3, help="seeds of the next challenger, per weight")
    ap.add_argument("--weights", default="0,3", help="hard_frame_weight values; 0 is the control")
    ap.add_argument("--fraction", type=float, default=0.2)
    ap.add_argument("--min-hits", type=int, default=2)
    ap.add_argument("--out", default=str(CACHE / "hard_frames.json"))
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s")

    import numpy as np
    import torch

    from argus_tasks.data.manifest import read_manifest
    from argus_tasks.hardframes.sampling import train_weights
    from argus_tasks.models import frames as F
    from argus_tasks.models.evaluation import real_side

    torch.set_num_threads(1)
    CACHE.mkdir(parents=True, exist_ok=True)
    root = dataset(CACHE / "data")
    manifest = read_manifest(root)
    seg = segmenter(root, manifest)
    c = args.condition
    src_rows = F.select(manifest, "clear", ("val", "test"))
    src_x, src_y = load(root, manifest, "clear", ("val", "test"))
    real_rows = F.select(manifest, c, ("val", "test"))
    real_x, real_y = load(root, manifest, c, ("val", "test"))
    real = real_side(seg, real_x, real_y)
    real_ids = real_rows["frame_id"].astype(str).tolist()
    train_rows = F.select(manifest, "clear", ("train",))
    clear_train, train_labels = load(root, manifest, "clear", ("train",))
    adv_train, _ = load(root, manifest, c, ("train",), labels=False)
    started = time.time()

    history = []
    for i in range(args.history):
        history.append(judge_frames(seg, train(c, 100 + i, args.steps, clear_train, adv_train), src_x, src_y, real,
                                    real_ids))
        print(f"history {i}: median fidelity {np.median(history[-1]['fidelity']):.3f} ({time.time() - started:.0f}s)",
              flush=True)
    content = hard_set(c, history, src_rows, src_y, args)
    hard_ids = {f["frame_id"] for f in content["frames"]}
    is_hard = src_rows["frame_id"].astype(str).isin(hard_ids).to_numpy()
    print(f"hard set: {len(hard_ids)} of {len(src_rows)} frames; oversampled groups {content['oversample']['keys']}")
    if not is_hard.any() or is_hard.all():
        raise SystemExit("the hard set is empty or everything: nothing to compare")

    weights = [float(w) for w in args.weights.split(",")]
    results: dict = {"condition": c, "steps": args.steps, "history": args.history, "seeds": args.seeds,
                     "n_hard": int(is_hard.sum()), "n_rest": int((~is_hard).sum()),
                     "oversampled_groups": content["oversample"]["keys"],
                     "groups": content["groups"].get("group", []), "arms": {}}
    for w in weights:
        sample_w, summary = train_weights(content, train_rows, [y.numpy() for y in train_labels], w)
        arm = results["arms"].setdefault(f"{w:g}", {"sampling": summary, "runs": []})
        for s in range(args.seeds):
            scores = judge_frames(seg, train(c, s, args.steps, clear_train, adv_train, None if w == 0 else sample_w),
                                  src_x, src_y, real, real_ids)
            arm["runs"].append({
                "seed": s, "hard_fidelity": float(np.nanmean(scores["fidelity"][is_hard])),
                "rest_fidelity": float(np.nanmean(scores["fidelity"][~is_hard])),
                "hard_realism": float(np.nanmean(scores["realism"][is_hard])),
                "rest_realism": float(np.nanmean(scores["realism"][~is_hard])),
                "kid": float(scores["kid"]), "classwise_gap": float(scores["classwise_gap"])})
            print(f"weight {w:g} seed {s}: " + " ".join(f"{k} {arm['runs'][-1][k]:.4f}" for k in METRICS)
                  + f" ({time.time() - started:.0f}s)", flush=True)
            Path(args.out).write_text(json.dumps(results, indent=2))
    print_table(results)


def main_table(path: str) -> None:
    """``--table FILE``: print the table of an earlier run's JSON."""
    print_table(json.loads(Path(path).read_text()))


def print_table(results: dict) -> None:
    arms = results["arms"]
    for arm in arms.values():  # how far the hard frames trail the rest, per run (a generator that does little
        for r in arm["runs"]:  # keeps fidelity high everywhere; the gap is what oversampling should close)
            r.update({k: r[a] - r[b] for k, (a, b) in DERIVED.items()})
    metrics = (*METRICS, *DERIVED)
    print(f"\n{results['condition']}: {results['n_hard']} hard / {results['n_rest']} other frames, {results['steps']} "
          f"steps, {results['seeds']} seeds; mean ± sd over seeds (fidelity: higher is better; realism ratio, KID, "
          "gap: lower is better)")
    print(f"| weight | share of hard-like draws | {' | '.join(metrics)} |")
    print("|---|---:|" + "---:|" * len(metrics))
    for w, arm in arms.items():
        cells = [mean_sd([r[k] for r in arm["runs"]]) for k in metrics]
        print(f"| {w} | {arm['sampling']['hard_like_share_weighted']:.2f} | {' | '.join(cells)} |")
    control = arms.get("0")
    if control:
        print("\npaired difference against weight 0 (same seed), mean ± sd:")
        for w, arm in arms.items():
            if w == "0":
                continue
            diffs = {k: [a[k] - b[k] for a, b in zip(arm["runs"], control["runs"], strict=False)] for k in metrics}
            print(f"| {w} - 0 | " + " | ".join(f"{k} {mean_sd(v)}" for k, v in diffs.items()) + " |")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--table":
        main_table(sys.argv[2])
    else:
        main()
