"""Which frames are repeatedly hard: a pure function of the last N evaluations.

One evaluation is the per-frame scores of one model on one frame list (an ``evaluate`` of a
challenger, or the QA of a generation run). Within it every frame gets a *hardness* in [0, 2]
(:func:`hardness`): by default the mean of its percentile rank by low label fidelity and by high
realism distance (far from every real frame of the condition), plus 1 when the frame failed a
per-frame gate (so every flagged frame is harder than every unflagged one, and flagged frames still
keep their order); a frame that could not be judged is hardest (2.0). Ranks, not raw values, so
evaluations by different judges or on different frame lists weigh the same.

The rule (:func:`select`):

* take the ``last_n`` newest evaluations (by ``scored_at``, then key, so the order is total);
* in each, the *worst fraction* is the ``ceil(fraction * n)`` hardest frames, **and every frame tied
  with the last of them** (a tie never depends on frame-id order);
* a frame is hard when it was in the worst fraction of at least ``min_hits`` of those evaluations;
  with fewer evaluations than ``min_hits`` the bar is the number there is (one evaluation: its worst
  fraction). With fewer than ``last_n`` evaluations the set says ``provisional``. No evaluation: an
  empty set.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np

SCORES = ("combined", "fidelity", "realism")


@dataclass(frozen=True)
class Evaluation:
    key: str  # "<dag_id>/<run_id>/<source>": unique per evaluation
    scored_at: str  # ISO 8601 UTC: orders the history
    hardness: dict[str, float]  # frame id -> hardness in [0, 2], higher is harder


@dataclass
class Selection:
    frames: list[dict]  # hard frames: frame_id, hits, seen, mean_hardness, last_hardness; hardest first
    evaluations: list[str]  # keys of the evaluations used, oldest first
    n_available: int  # evaluations there were before taking the last N
    required_hits: int
    provisional: bool
    settings: dict = field(default_factory=dict)

    @property
    def frame_ids(self) -> list[str]:
        return [f["frame_id"] for f in self.frames]


def _pct_rank(values: np.ndarray) -> np.ndarray:
    """Percentile rank in (0, 1] (ties share their average rank); NaN stays NaN."""
    import pandas as pd

    return pd.Series(values, dtype="float64").rank(method="average", pct=True).to_numpy()


def hardness(fidelity, realism, flagged=None, score: str = "combined") -> np.ndarray:
    """Hardness in [0, 2] of each frame of one evaluation (see the module docstring)."""
    if score not in SCORES:
        raise ValueError(f"score {score!r}: choose one of {', '.join(SCORES)}")
    fid = np.asarray(fidelity, dtype=np.float64)
    real = np.asarray(realism, dtype=np.float64)
    if fid.shape != real.shape:
        raise ValueError(f"{fid.shape[0]} fidelity scores but {real.shape[0]} realism scores")
    by_fid = _pct_rank(-fid)  # low fidelity -> high rank
    by_real = _pct_rank(real)  # far from the real frames -> high rank
    if score == "fidelity":
        h = by_fid
    elif score == "realism":
        h = by_real
    else:
        with warnings.catch_warnings():  # a frame with neither score: NaN, made hardest below
            warnings.simplefilter("ignore", RuntimeWarning)
            h = np.nanmean(np.vstack([by_fid, by_real]), axis=0) if len(fid) else by_fid
    if flagged is not None:
        h = h + np.asarray(flagged, dtype=bool)
    return np.where(np.isnan(fid) | np.isnan(h), 2.0, h)


def worst(hardness_by_frame: dict[str, float], fraction: float) -> set[str]:
    """The worst fraction of one evaluation: the ``ceil(fraction * n)`` hardest frames and their ties."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    if not hardness_by_frame:
        return set()
    values = sorted(hardness_by_frame.values(), reverse=True)
    k = max(1, math.ceil(fraction * len(values) - 1e-9))
    cutoff = values[k - 1]
    return {f for f, h in hardness_by_frame.items() if h >= cutoff}


def select(evaluations: list[Evaluation], last_n: int, fraction: float, min_hits: int) -> Selection:
    """The frames in the worst ``fraction`` of at least ``min_hits`` of the ``last_n`` newest evaluations."""
    if last_n < 1 or min_hits < 1:
        raise ValueError(f"last_n and min_hits must be >= 1, got {last_n} and {min_hits}")
    if len({e.key for e in evaluations}) != len(evaluations):
        raise ValueError("two evaluations share one key: each evaluation must be counted once")
    ordered = sorted(evaluations, key=lambda e: (e.scored_at, e.key))
    used = ordered[-last_n:]
    required = min(min_hits, len(used))
    stats: dict[str, dict] = {}
    for ev in used:
        bad = worst(ev.hardness, fraction)
        for fid, h in ev.hardness.items():
            s = stats.setdefault(fid, {"frame_id": fid, "hits": 0, "seen": 0, "sum": 0.0, "last_hardness": None})
            s["seen"] += 1
            s["sum"] += float(h)
            s["last_hardness"] = round(float(h), 6)
            s["hits"] += fid in bad
    frames = []
    for s in stats.values():
        if used and s["hits"] >= required:
            frames.append({"frame_id": s["frame_id"], "hits": s["hits"], "seen": s["seen"],
                           "mean_hardness": round(s["sum"] / s["seen"], 6), "last_hardness": s["last_hardness"]})
    frames.sort(key=lambda f: (-f["hits"], -f["mean_hardness"], f["frame_id"]))
    return Selection(frames=frames, evaluations=[e.key for e in used], n_available=len(evaluations),
                     required_hits=required, provisional=len(used) < last_n,
                     settings={"last_n": last_n, "fraction": fraction, "min_hits": min_hits})
