"""The metadata a hard frame is read by, and the groups a hard set is summarised in.

Users read groups, not single frames. Every scored frame carries four group columns:

* ``sequence``: the drive (from the manifest);
* ``dominant_classes``: the two classes with the largest pixel share of the frame's label, leaving out
  :data:`BACKGROUND_CLASSES` (road covers ~40 % of every street frame and says nothing), sorted by name
  and joined by ``+`` (``building+sky``); ``none`` for a label with no other class;
* ``time_bucket``: the capture time's ISO week (``2026-W06``, UTC) by default, or its day or part of day;
* ``brightness_bucket``: the source frame's mean luma in fixed bins (:data:`BRIGHTNESS_BUCKETS`).

The bins are fixed, not quantiles of one evaluation, so a frame has the same groups in every run and
groups of different runs can be compared. Sequences are split-specific (a drive is either train or
val/test), so the groups through which ``train`` oversamples (:data:`TRANSFER_DIMENSIONS`) leave the
sequence and the capture week out.
"""

from __future__ import annotations

import math

import numpy as np

from argus_tasks.data.schema import CLASSES, IGNORE_ID

BACKGROUND_CLASSES = ("road",)
BRIGHTNESS_BUCKETS = ((0.25, "dark"), (0.40, "dim"), (0.55, "medium"), (math.inf, "bright"))
TIME_BUCKETS = ("week", "day", "daypart")
GROUP_DIMENSIONS = ("sequence", "dominant_classes", "time_bucket", "brightness_bucket")
TRANSFER_DIMENSIONS = ("dominant_classes", "brightness_bucket")
DAYPARTS = ((6, "00-06h"), (12, "06-12h"), (18, "12-18h"), (24, "18-24h"))


def class_shares(label: np.ndarray) -> np.ndarray:
    """Pixel share of each class of ``CLASSES`` in ``label`` (ignore pixels left out); zeros for an empty label."""
    ids = np.asarray(label).ravel()
    ids = ids[ids != IGNORE_ID]
    counts = np.bincount(ids[ids < len(CLASSES)], minlength=len(CLASSES))[: len(CLASSES)].astype(np.float64)
    total = counts.sum()
    return counts / total if total else counts


def dominant_classes(label: np.ndarray, k: int = 2, background: tuple[str, ...] = BACKGROUND_CLASSES) -> str:
    """The ``k`` largest non-background classes of ``label`` by pixel share, sorted by name, ``+``-joined."""
    shares = class_shares(label)
    order = [i for i in np.argsort(-shares, kind="stable") if shares[i] > 0 and CLASSES[i] not in background]
    picked = sorted(CLASSES[i] for i in order[:k])
    return "+".join(picked) if picked else "none"


def brightness_bucket(value: float) -> str:
    """The fixed brightness bin of a mean luma in [0, 1]; ``unknown`` for NaN."""
    if value is None or not np.isfinite(value):
        return "unknown"
    for upper, name in BRIGHTNESS_BUCKETS:
        if value < upper:
            return name
    return BRIGHTNESS_BUCKETS[-1][1]


def time_bucket(ts, granularity: str = "week") -> str:
    """``2026-W06`` (ISO week), ``2026-02-06`` (day) or ``12-18h`` (part of day), all in UTC."""
    import pandas as pd

    if granularity not in TIME_BUCKETS:
        raise ValueError(f"time bucket {granularity!r}: choose one of {', '.join(TIME_BUCKETS)}")
    if ts is None or pd.isna(ts):
        return "unknown"
    t = pd.Timestamp(ts)
    t = t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")
    if granularity == "week":
        year, week, _ = t.isocalendar()
        return f"{year}-W{week:02d}"
    if granularity == "day":
        return t.strftime("%Y-%m-%d")
    return next(name for upper, name in DAYPARTS if t.hour < upper)


def frame_groups(rows, labels, granularity: str = "week") -> dict[str, list[str]]:
    """The group columns of manifest ``rows`` (sequence, capture_time, brightness_mean) with their ``labels``."""
    if len(labels) != len(rows):
        raise ValueError(f"{len(labels)} labels for {len(rows)} rows")
    return {
        "sequence": [str(s) for s in rows["sequence"].fillna("unknown")],
        "dominant_classes": [dominant_classes(np.asarray(lab)) for lab in labels],
        "time_bucket": [time_bucket(t, granularity) for t in rows["capture_time"]],
        "brightness_bucket": [brightness_bucket(float(b)) for b in rows["brightness_mean"]],
    }


def transfer_key(dominant: str, brightness: str) -> str:
    """The group through which ``train`` oversamples: dominant classes and brightness bucket."""
    return f"{dominant} | {brightness}"


def summarize(hard_ids, scored, dimensions=GROUP_DIMENSIONS) -> dict[str, list[dict]]:
    """Per dimension, the groups of the hard frames: hard and scored counts, hard rate and lift.

    ``scored`` is one row per frame (``frame_id`` and the group columns) of the evaluations the set was
    selected from; ``lift`` is the group's hard rate over the overall one (above 1: over-represented).
    Groups are sorted by hard count, then lift, then name; only groups with a hard frame are listed.
    """
    hard = set(hard_ids)
    frames = scored.drop_duplicates("frame_id")
    is_hard = frames["frame_id"].isin(hard)
    overall = float(is_hard.mean()) if len(frames) else 0.0
    out: dict[str, list[dict]] = {}
    for dim in dimensions:
        groups = []
        for value, part in frames.groupby(dim, sort=True):
            n_hard = int(part["frame_id"].isin(hard).sum())
            if not n_hard:
                continue
            rate = n_hard / len(part)
            groups.append({"value": str(value), "n_hard": n_hard, "n_scored": int(len(part)),
                           "hard_rate": round(rate, 6), "lift": round(rate / overall, 6) if overall else None,
                           "frames": sorted(part.loc[part["frame_id"].isin(hard), "frame_id"].astype(str))})
        groups.sort(key=lambda g: (-g["n_hard"], -(g["lift"] or 0), g["value"]))
        out[dim] = groups
    return out


MIN_LIFT = 1.5


def oversampled_groups(hard_ids, scored, min_hard: int = 2, min_lift: float = MIN_LIFT) -> list[str]:
    """The transfer keys (:func:`transfer_key`) where hard frames are clearly over-represented (hard rate at
    least ``min_lift`` times the overall one) and at least ``min_hard`` of them fall: what ``train``
    oversamples. (A lift just above 1 would pick the commonest group and oversample most of the data.)"""
    frames = scored.drop_duplicates("frame_id").copy()
    if frames.empty:
        return []
    frames["_key"] = [transfer_key(d, b) for d, b in zip(frames["dominant_classes"], frames["brightness_bucket"],
                                                          strict=True)]
    hard = frames["frame_id"].isin(set(hard_ids))
    overall = float(hard.mean())
    keys = []
    for key, part in frames.groupby("_key", sort=True):
        n_hard = int(part["frame_id"].isin(set(hard_ids)).sum())
        if n_hard >= min_hard and overall and n_hard / len(part) >= min_lift * overall:
            keys.append(str(key))
    return keys
