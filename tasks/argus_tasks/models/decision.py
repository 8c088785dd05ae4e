"""The promotion decision: a pure function of champion, challenger, references and a policy.

``decide`` never touches MLflow, files or clocks; the same inputs give the same decision (the
bootstrap is seeded by the policy). It fails closed: anything missing, NaN, unpaired or failed
gives ``promote=False`` with the reason.

**Uncertainty: a paired cluster bootstrap by sequence.** Consecutive frames of one drive are
strongly correlated, so resampling frames as if independent makes the interval too narrow. Each
resample draws whole sequences (drives) with replacement, separately on the source side (clear
frames; the generated frames of every candidate come from them) and on the real adverse side;
every frame of a drawn sequence comes along. The same draws serve both candidates of a
comparison (paired), and both metrics:

* the class-wise realism gap: per-frame confusion counts, summed per sequence once, weighted by
  the draw, give per-class IoUs and the gap; the challenger must beat the other candidate with
  the upper end of the CI of ``gap(challenger) - gap(other)`` below ``-margin``;
* KID (unbiased MMD^2 in the segmenter's feature space, on the whole sets): kernel values summed
  per pair of sequences once, weighted by the draw; against the champion, the upper end of the CI
  of ``KID(challenger) - KID(champion)`` must not exceed the tolerance
  ``kid_tolerance * max(|KID(champion)|, kid_abs_floor)`` (a non-inferiority test).

Without sequence ids a side falls back to resampling frames, and the comparison says so. The
resampling itself is :mod:`argus_tasks.models.bootstrap`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from argus_tasks.models.bootstrap import paired_gap_difference, paired_kid_difference

__all__ = ["Candidate", "Decision", "Policy", "decide", "paired_gap_difference", "paired_kid_difference"]

REQUIRED_METRICS = ("kid", "classwise_gap", "aggregate_gap", "label_preservation")
IDENTITY = "identity"


@dataclass(frozen=True)
class Candidate:
    """One evaluated model (or reference) on the frozen evaluation frames."""

    name: str
    version: str | None = None
    metrics: Mapping[str, float] | None = None
    sanity: Mapping[str, bool] | None = None  # gate -> passed
    gen_conf: np.ndarray | None = None  # (N, C, C) confusion of S on generated frames vs source labels
    real_conf: np.ndarray | None = None  # (M, C, C) confusion of S on real adverse frames
    content_hash: str | None = None  # of the weights: equal hashes are the same model
    learned: bool = True
    gen_seq: np.ndarray | None = None  # (N,) sequence id of each source frame (None: resample frames)
    real_seq: np.ndarray | None = None  # (M,) sequence id of each real adverse frame
    gen_features: np.ndarray | None = None  # (N, D) segmenter features of the generated frames (KID)
    real_features: np.ndarray | None = None  # (M, D) segmenter features of the real adverse frames


@dataclass(frozen=True)
class Policy:
    margin: float = 0.0  # the CI upper bound of the gap difference must lie below -margin
    kid_tolerance: float = 0.10  # relative: KID may exceed the champion's by this fraction (CI upper end)
    kid_abs_floor: float = 1e-4  # ... of max(champion KID, this floor)
    require_beat_reference: bool = False
    n_boot: int = 1000
    confidence: float = 0.95
    seed: int = 0


@dataclass(frozen=True)
class Decision:
    promote: bool
    reasons: list[str] = field(default_factory=list)
    comparisons: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"promote": self.promote, "reasons": list(self.reasons), "comparisons": self.comparisons}


def _bad_number(x) -> bool:
    try:
        return x is None or not math.isfinite(float(x))
    except (TypeError, ValueError):
        return True


def _problems(c: Candidate | None, role: str) -> list[str]:
    """Why ``c`` cannot take part in a comparison (empty when it can)."""
    if c is None:
        return [f"{role}: no evaluation record"]
    out = []
    if not c.metrics:
        out.append(f"{role} {c.name}: metrics missing")
    else:
        for key in REQUIRED_METRICS:
            if key not in c.metrics:
                out.append(f"{role} {c.name}: metric {key!r} missing")
            elif _bad_number(c.metrics[key]):
                out.append(f"{role} {c.name}: metric {key!r} is not a finite number ({c.metrics[key]!r})")
    for arr, what in ((c.gen_conf, "per-frame confusion of generated frames"),
                      (c.real_conf, "per-frame confusion of real frames")):
        if arr is None or np.asarray(arr).ndim != 3 or np.asarray(arr).shape[0] == 0:
            out.append(f"{role} {c.name}: {what} missing")
    return out


def _role_and_name(label: str, other: Candidate) -> str:
    """``champion argus-weather-fog v3``, ``best reference koschmieder_fog``; just ``identity`` for identity."""
    return label if not other.name or other.name == label else f"{label} {other.name}"


def _beats(chal: Candidate, other: Candidate, policy: Policy, label: str, reasons: list[str],
           comparisons: dict) -> bool:
    who = _role_and_name(label, other)
    try:
        d = paired_gap_difference(chal, other, policy)
    except ValueError as exc:
        reasons.append(f"cannot compare with {who}: {exc}")
        return False
    comparisons[f"gap_vs_{label}"] = {"other": other.name, **d}
    ci = f"[{d['lo']:.4f}, {d['hi']:.4f}]"
    if _bad_number(d["hi"]):
        reasons.append(f"class-wise gap vs {who}: bootstrap gave no finite CI")
        return False
    if d["hi"] < -policy.margin:
        reasons.append(f"class-wise gap beats {who}: diff {d['point']:+.4f}, "
                       f"{policy.confidence:.0%} CI {ci} < -{policy.margin:g}{_note(d)}")
        return True
    reasons.append(f"class-wise gap does not beat {who}: diff {d['point']:+.4f}, "
                   f"{policy.confidence:.0%} CI {ci} not below -{policy.margin:g}{_note(d)}")
    return False


def _note(d: dict) -> str:
    return f" ({d['note']})" if d.get("note") else ""


def _kid_within_tolerance(chal: Candidate, champion: Candidate, policy: Policy, reasons: list[str],
                          comparisons: dict) -> bool:
    """Non-inferiority on KID: the CI upper end of KID(challenger) - KID(champion) within the tolerance."""
    who = _role_and_name("champion", champion)
    try:
        d = paired_kid_difference(chal, champion, policy)
    except ValueError as exc:
        reasons.append(f"cannot compare KID with {who}: {exc}")
        return False
    allowed = policy.kid_tolerance * max(abs(d["kid_b"]), policy.kid_abs_floor)
    comparisons["kid_vs_champion"] = {"other": champion.name, "challenger": d["kid_a"], "champion": d["kid_b"],
                                      "allowed_increase": allowed, **{k: v for k, v in d.items()
                                                                      if k not in ("kid_a", "kid_b")}}
    ci = f"[{d['lo']:+.5f}, {d['hi']:+.5f}]"
    head = (f"KID {d['kid_a']:.5f} vs {who} {d['kid_b']:.5f}: diff {d['point']:+.5f}, "
            f"{policy.confidence:.0%} CI {ci}")
    if _bad_number(d["hi"]):
        reasons.append(f"{head}: bootstrap gave no finite CI")
        return False
    if d["hi"] <= allowed:
        reasons.append(f"{head} within tolerance (upper end <= +{allowed:.5f}, "
                       f"{policy.kid_tolerance:g} x champion KID){_note(d)}")
        return True
    reasons.append(f"{head}: KID may regress beyond tolerance (upper end above +{allowed:.5f}, "
                   f"{policy.kid_tolerance:g} x champion KID){_note(d)}")
    return False


def decide(champion: Candidate | None, challenger: Candidate | None,
           references: Sequence[Candidate], policy: Policy, validation: Mapping | None = None) -> Decision:
    """Promote ``challenger`` over ``champion`` or not, with the reasons.

    ``validation`` is the data gate's outcome for the run (``{"passed": bool, ...}``; a failed gate,
    more bad frames than the quarantine threshold included, never reaches promote: its step refuses
    such a record); None counts as missing and blocks promotion.
    """
    reasons: list[str] = []
    comparisons: dict = {}
    # --- fail closed on the inputs
    if validation is None:
        reasons.append("data validation outcome missing")
    else:
        if not validation.get("passed", False):
            reasons.append("data validation did not pass")
    reasons += _problems(challenger, "challenger")
    if challenger is not None and challenger.sanity is not None:
        failed = [g for g, ok in challenger.sanity.items() if not ok]
        if failed:
            reasons.append(f"challenger {challenger.name}: sanity gates failed: {', '.join(sorted(failed))}")
    elif challenger is not None:
        reasons.append(f"challenger {challenger.name}: sanity gates missing")
    if reasons:
        return Decision(False, reasons, comparisons)
    ok = True
    # --- A/A: the same model is never promoted over itself
    if champion is not None and (
            (champion.content_hash and champion.content_hash == challenger.content_hash)
            or (champion.version is not None and champion.version == challenger.version)):
        return Decision(False, [f"challenger {challenger.name} is identical to champion {champion.name}"],
                        comparisons)
    if champion is not None:
        problems = _problems(champion, "champion")
        if problems:
            return Decision(False, problems + ["cannot compare with the champion: not promoting"], comparisons)
        ok &= _beats(challenger, champion, policy, "champion", reasons, comparisons)
        ok &= _kid_within_tolerance(challenger, champion, policy, reasons, comparisons)
    else:
        identity = next((r for r in references if r.name == IDENTITY), None)
        if identity is None or _problems(identity, "reference"):
            return Decision(False, ["no champion yet and the identity reference is missing or incomplete: "
                                    "cannot check the floors"], comparisons)
        reasons.append("no champion yet: checking the floors (sanity gates passed, must beat identity)")
        ok &= _beats(challenger, identity, policy, "identity", reasons, comparisons)
    if policy.require_beat_reference:
        usable = [r for r in references if not r.learned and r.name != IDENTITY and not _problems(r, "reference")]
        if not usable:
            ok = False
            reasons.append("policy requires beating the best non-learned reference, but none was evaluated")
        else:
            best = min(usable, key=lambda r: float(r.metrics["classwise_gap"]))
            ok &= _beats(challenger, best, policy, "best reference", reasons, comparisons)
    return Decision(bool(ok), reasons, comparisons)
