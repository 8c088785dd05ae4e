"""Per-frame scores of a generation run's QA (``check-outputs``), per condition.

Label fidelity and the judge features of every generated frame come from the QA's own judge pass
(:func:`argus_tasks.generation.qa.label_fidelity` with ``with_features``). The real side is the run's
accepted frames of the condition (every split; a seeded subset of at most ``MAX_REAL`` frames), judged
here at the generated frames' judge size. ``flagged``/``reasons`` are the QA gate's verdict (the frames
it excluded); the other flags are the per-frame gates of :mod:`argus_tasks.models.frame_scores` with
the run's thresholds.
"""

from __future__ import annotations

import logging

import numpy as np

from argus_tasks.data.schema import SPLITS
from argus_tasks.hardframes import history
from argus_tasks.hardframes.groups import frame_groups
from argus_tasks.hardframes.record import base_keys, candidate_columns, concat, store_relpath
from argus_tasks.hardframes.storage import StoreFiles
from argus_tasks.models import frame_scores as FS

log = logging.getLogger(__name__)
OUT = "check-outputs"
MAX_REAL = 512


def _real_features(judge, data_root, rows, size: tuple[int, int], device, batch_size: int) -> np.ndarray:
    import torch
    from PIL import Image

    from argus_tasks.data.access import read_frame

    feats = []
    for s in range(0, len(rows), batch_size):
        batch = [np.asarray(Image.fromarray(read_frame(data_root, r)).resize(size[::-1], Image.BILINEAR))
                 for r in rows.iloc[s:s + batch_size].to_dict("records")]
        x = torch.from_numpy(np.stack(batch)).permute(0, 3, 1, 2).float().div(255.0).to(device)
        with torch.inference_mode():
            feats.append(judge.forward_with_features(x)[1].float().cpu().numpy())
    return np.concatenate(feats) if feats else np.zeros((0, judge.feature_dim), np.float32)


def score_generation(ctx, *, outputs, checks, bad_rows: dict, features: np.ndarray, judge, judge_info: dict,
                     manifest, data_root, device, batch_size: int, min_fidelity: float,
                     change_range: tuple[float, float]) -> dict:
    """Write ``check-outputs/frame_scores.parquet`` and one index entry per condition; return a summary."""
    from argus_tasks.data.access import read_label
    from argus_tasks.generation.qa import _judge_size, judgeable
    from argus_tasks.models import frames as F

    files = StoreFiles(ctx.store_root)
    sources = manifest.drop_duplicates("frame_id").set_index("frame_id", drop=False)
    ok = judgeable(checks)
    parts, per = [], {}
    for c in sorted(set(outputs["condition"].astype(str))):
        idx = np.flatnonzero((outputs["condition"] == c).to_numpy())
        out_rows = outputs.iloc[idx]
        known = out_rows["source_frame_id"].isin(sources.index).to_numpy()
        idx, out_rows = idx[known], out_rows[known]
        src = sources.loc[out_rows["source_frame_id"].tolist()].reset_index(drop=True)
        labels = [read_label(data_root, r) for r in src.to_dict("records")]
        judged = idx[ok[idx]]
        size = (_judge_size(int(checks.at[judged[0], "height"]), int(checks.at[judged[0], "width"]))
                if len(judged) else (64, 64))
        real_rows = F.select(manifest, c, SPLITS, MAX_REAL, seed=0)
        real = _real_features(judge, data_root, real_rows, size, device, batch_size)
        feats = np.nan_to_num(features[idx], nan=0.0)
        model = {"name": f"{out_rows['model_name'].iloc[0]} v{out_rows['model_version'].iloc[0]}",
                 "model_name": str(out_rows["model_name"].iloc[0]), "version": str(out_rows["model_version"].iloc[0])}
        base = base_keys(ctx, c, "generation-qa", judge_info, "", files)
        cols = candidate_columns(base, "generated", model, src, frame_groups(src, labels),
                                 checks["label_fidelity"].to_numpy()[idx], feats, real,
                                 real_rows["frame_id"].astype(str), ok[idx],
                                 checks["mean_abs_change"].to_numpy()[idx], None, min_fidelity,
                                 output_ids=out_rows["frame_id"].astype(str), change_range=change_range)
        cols["flagged"] = [int(i) in bad_rows for i in idx]
        cols["reasons"] = ["; ".join(bad_rows.get(int(i), [])) for i in idx]
        parts.append(cols)
        per[c] = {"rows": int(len(idx)), "real_frames": int(len(real_rows)), "base": base}
    table = FS.finish(concat(parts))
    url = ctx.run.write_dataframe(f"{OUT}/{FS.SCORES_FILE}", table)
    for c, info in per.items():
        rows = table[table["condition"] == c]
        base = info["base"]
        history.register(files, {**{k: base[k] for k in ("condition", "dag_id", "run_id", "source", "scored_at",
                                                         "judge_model", "judge_version")},
                                 "eval_frames_sha256": "", "scores": store_relpath(ctx, f"{OUT}/{FS.SCORES_FILE}"),
                                 "candidate": "generated", "n_frames": int(len(rows)),
                                 "model_key": str(rows["model_key"].iloc[0]) if len(rows) else ""})
    log.info("per-frame scores of the generated frames: %d rows (%s) -> %s", len(table),
             ", ".join(f"{c}: {d['rows']} vs {d['real_frames']} real" for c, d in per.items()), url)
    return {"frame_scores": url, "rows": int(len(table)), "table": table}
