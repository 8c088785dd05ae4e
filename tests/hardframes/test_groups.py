"""Grouping hard frames by metadata: dominant classes, buckets, group summaries, oversampled groups."""

from __future__ import annotations

import numpy as np
import pandas as pd

from argus_tasks.data.schema import CLASSES, IGNORE_ID
from argus_tasks.hardframes import groups as G


def label(shares: dict[str, int], size: int = 100) -> np.ndarray:
    """A 1 x size label with the given pixel counts per class (rest ignore)."""
    ids = []
    for name, n in shares.items():
        ids += [CLASSES.index(name)] * n
    return np.array(ids + [IGNORE_ID] * (size - len(ids)), np.uint8).reshape(1, size)


def test_dominant_classes_skip_road_and_ignore_and_do_not_depend_on_order():
    assert G.dominant_classes(label({"road": 50, "building": 30, "sky": 15, "pole": 5})) == "building+sky"
    assert G.dominant_classes(label({"road": 50, "sky": 30, "building": 15, "pole": 5})) == "building+sky"
    assert G.dominant_classes(label({"road": 40, "vehicle": 35, "vegetation": 20})) == "vegetation+vehicle"
    assert G.dominant_classes(label({"road": 60})) == "none"
    assert G.dominant_classes(label({})) == "none"
    shares = G.class_shares(label({"road": 50, "sky": 25}))
    assert shares[CLASSES.index("road")] == 50 / 75, "ignore pixels are left out of the shares"


def test_buckets_have_fixed_edges():
    assert [G.brightness_bucket(v) for v in (0.0, 0.2499, 0.25, 0.39, 0.4, 0.55, 0.99, float("nan"))] == [
        "dark", "dark", "dim", "dim", "medium", "bright", "bright", "unknown"]
    t = pd.Timestamp("2026-02-06 14:46:41", tz="UTC")
    assert G.time_bucket(t) == "2026-W06"
    assert G.time_bucket(pd.Timestamp("2026-01-01 03:00")) == "2026-W01", "a naive time is read as UTC"
    assert G.time_bucket(t, "day") == "2026-02-06" and G.time_bucket(t, "daypart") == "12-18h"
    assert G.time_bucket(pd.NaT) == "unknown"


def _scored() -> pd.DataFrame:
    rows = []
    for i in range(10):
        rows.append({"frame_id": f"f{i}", "sequence": f"d{i // 5}", "time_bucket": "2026-W06",
                     "dominant_classes": "building+sky" if i < 4 else "sky+vegetation",
                     "brightness_bucket": "dim" if i < 4 else "medium"})
    return pd.DataFrame(rows)


def test_summaries_count_hard_and_scored_frames_and_their_lift():
    hard = ["f0", "f1", "f2", "f7"]  # 4 of 10 hard overall (rate 0.4)
    summary = G.summarize(hard, _scored())
    dom = {g["value"]: g for g in summary["dominant_classes"]}
    assert dom["building+sky"] == {"value": "building+sky", "n_hard": 3, "n_scored": 4, "hard_rate": 0.75,
                                   "lift": 1.875, "frames": ["f0", "f1", "f2"]}
    assert (dom["sky+vegetation"]["n_hard"], dom["sky+vegetation"]["n_scored"]) == (1, 6)
    assert [g["value"] for g in summary["dominant_classes"]] == ["building+sky", "sky+vegetation"], "hardest first"
    assert {g["value"]: g["n_hard"] for g in summary["sequence"]} == {"d0": 3, "d1": 1}
    assert G.summarize([], _scored())["sequence"] == [], "groups without a hard frame are not listed"


def test_training_oversamples_only_groups_where_hard_frames_are_over_represented():
    scored = _scored()
    assert G.oversampled_groups(["f0", "f1", "f2", "f7"], scored) == ["building+sky | dim"]
    assert G.oversampled_groups(["f0", "f7"], scored, min_hard=2) == [], "one hard frame per group is not a pattern"
    assert G.oversampled_groups(["f0", "f7"], scored, min_hard=1) == [], "lift 1.25: not clearly over-represented"
    assert G.oversampled_groups(["f0", "f7"], scored, min_hard=1, min_lift=1.2) == ["building+sky | dim"]
    everything = [f"f{i}" for i in range(10)]
    assert G.oversampled_groups(everything, scored) == [], "all hard: no group stands out"
