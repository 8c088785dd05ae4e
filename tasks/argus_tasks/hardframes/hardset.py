"""The content of a hard set, built from the selection and the scored rows it came from (pure).

Everything in it is determined by the history and the settings, so its hash (the version) is too.
"""

from __future__ import annotations

from argus_tasks.hardframes import groups as G
from argus_tasks.hardframes.selection import Selection
from argus_tasks.hardframes.versioning import FORMAT

FRAME_FIELDS = ("sequence", "split", "dominant_classes", "time_bucket", "brightness_bucket", "group")
SUMMARY_DIMENSIONS = ("group", *G.GROUP_DIMENSIONS)  # group: dominant classes | brightness (what training uses)


def latest_rows(scored, time_granularity: str = "week"):
    """One row per frame: its newest score (rows are in evaluation order), with the time bucket re-binned."""
    if scored.empty:
        return scored
    rows = scored.drop_duplicates("frame_id", keep="last").reset_index(drop=True).copy()
    if time_granularity != "week":
        rows["time_bucket"] = [G.time_bucket(t, time_granularity) for t in rows["capture_time"]]
    rows["group"] = [G.transfer_key(d, b) for d, b in zip(rows["dominant_classes"], rows["brightness_bucket"],
                                                          strict=True)]
    return rows


def _num(v):
    v = float(v)
    return round(v, 6) if v == v else None


def build(condition: str, selection: Selection, scored, entries: list[dict], settings: dict,
          min_group_hard: int = 2) -> dict:
    """The hard set of ``condition`` (see :mod:`argus_tasks.hardframes.versioning` for its identity)."""
    rows = latest_rows(scored, settings.get("time_bucket", "week"))
    meta = rows.set_index("frame_id") if not rows.empty else None
    frames = []
    for f in selection.frames:
        r = meta.loc[f["frame_id"]]
        frames.append({**f, **{k: str(r[k]) for k in FRAME_FIELDS},
                       "label_fidelity": _num(r["label_fidelity"]), "realism_ratio": _num(r["realism_ratio"]),
                       "last_evaluation": str(r["evaluation"])})
    ids = selection.frame_ids
    summary = G.summarize(ids, rows, SUMMARY_DIMENSIONS) if not rows.empty else {d: [] for d in SUMMARY_DIMENSIONS}
    keys = G.oversampled_groups(ids, rows, min_group_hard) if not rows.empty else []
    return {
        "format": FORMAT, "condition": condition, "settings": dict(settings),
        "evaluations": [{"key": f"{e['dag_id']}/{e['run_id']}/{e['source']}", "scored_at": e["scored_at"],
                         "model_key": e.get("model_key", ""), "judge_version": e.get("judge_version", ""),
                         "n_frames": e.get("n_frames")} for e in entries],
        "history_until": max((e["scored_at"] for e in entries), default=""),
        "n_available": selection.n_available, "required_hits": selection.required_hits,
        "provisional": selection.provisional, "n_frames_scored": int(len(rows)),
        "frames": frames, "groups": summary,
        "oversample": {"dimensions": list(G.TRANSFER_DIMENSIONS), "keys": keys, "min_group_hard": min_group_hard},
    }
