"""The promotion decision: a pure function of champion, challenger, references and a policy.

``decide`` never touches MLflow, files or clocks; the same inputs give the same decision (the
bootstrap is seeded by the policy). It fails closed: anything missing, NaN, unpaired or failed
gives ``promote=False`` with the reason.

The class-wise realism gap is compared with a paired bootstrap over frames: each resample draws
source frames (the generated frames of every candidate come from the same source frames, so they
are resampled together) and real adverse frames, sums their per-frame confusion counts and
recomputes per-class IoUs, then the gap. The challenger must beat the other candidate with the
upper end of the CI of ``gap(challenger) - gap(other)`` below ``-margin``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from argus_tasks.models.metrics import classwise_gap_from_iou, iou_from_confusion

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


@dataclass(frozen=True)
class Policy:
    margin: float = 0.0  # the CI upper bound of the gap difference must lie below -margin
    kid_tolerance: float = 0.10  # relative: KID may exceed the champion's by this fraction
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


def paired_gap_difference(a: Candidate, b: Candidate, policy: Policy) -> dict:
    """Bootstrap CI of classwise_gap(a) - classwise_gap(b), resampling frames jointly."""
    ga, gb = np.asarray(a.gen_conf, np.float64), np.asarray(b.gen_conf, np.float64)
    ra, rb = np.asarray(a.real_conf, np.float64), np.asarray(b.real_conf, np.float64)
    if ga.shape != gb.shape or ra.shape != rb.shape:
        raise ValueError(f"records of {a.name} {ga.shape}/{ra.shape} and {b.name} {gb.shape}/{rb.shape} "
                         "are not paired (different evaluation frames)")
    n, m, c = ga.shape[0], ra.shape[0], ga.shape[1]
    rng = np.random.default_rng(policy.seed)
    # multiplicity of each frame in each resample: (B, N) and (B, M)
    wg = np.stack([np.bincount(rng.integers(0, n, n), minlength=n) for _ in range(policy.n_boot)]).astype(np.float64)
    wr = np.stack([np.bincount(rng.integers(0, m, m), minlength=m) for _ in range(policy.n_boot)]).astype(np.float64)

    def gaps(gen, real):
        iou_g = iou_from_confusion((wg @ gen.reshape(n, c * c)).reshape(-1, c, c))
        iou_r = iou_from_confusion((wr @ real.reshape(m, c * c)).reshape(-1, c, c))
        return classwise_gap_from_iou(iou_g, iou_r)

    diff = gaps(ga, ra) - gaps(gb, rb)
    diff = diff[np.isfinite(diff)]
    point = float(classwise_gap_from_iou(iou_from_confusion(ga.sum(0)), iou_from_confusion(ra.sum(0)))
                  - classwise_gap_from_iou(iou_from_confusion(gb.sum(0)), iou_from_confusion(rb.sum(0))))
    if diff.size == 0:
        return {"point": point, "lo": float("nan"), "hi": float("nan"), "n_boot": 0}
    alpha = (1.0 - policy.confidence) / 2.0
    lo, hi = np.quantile(diff, [alpha, 1.0 - alpha])
    return {"point": point, "lo": float(lo), "hi": float(hi), "n_boot": int(diff.size)}


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
                       f"{policy.confidence:.0%} CI {ci} < -{policy.margin:g}")
        return True
    reasons.append(f"class-wise gap does not beat {who}: diff {d['point']:+.4f}, "
                   f"{policy.confidence:.0%} CI {ci} not below -{policy.margin:g}")
    return False


def decide(champion: Candidate | None, challenger: Candidate | None,
           references: Sequence[Candidate], policy: Policy, validation: Mapping | None = None) -> Decision:
    """Promote ``challenger`` over ``champion`` or not, with the reasons.

    ``validation`` is the data gate's outcome for the run (``{"passed": bool,
    "quarantine_exceeded": bool}``); None counts as missing and blocks promotion.
    """
    reasons: list[str] = []
    comparisons: dict = {}
    # --- fail closed on the inputs
    if validation is None:
        reasons.append("data validation outcome missing")
    else:
        if not validation.get("passed", False):
            reasons.append("data validation did not pass")
        if validation.get("quarantine_exceeded", False):
            reasons.append("quarantined fraction exceeded the validation threshold")
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
        kid_c, kid_ch = float(challenger.metrics["kid"]), float(champion.metrics["kid"])
        allowed = kid_ch + policy.kid_tolerance * max(abs(kid_ch), policy.kid_abs_floor)
        comparisons["kid_vs_champion"] = {"challenger": kid_c, "champion": kid_ch, "allowed": allowed}
        if kid_c > allowed:
            ok = False
            reasons.append(f"KID regresses: {kid_c:.5f} > champion {kid_ch:.5f} + tolerance "
                           f"{policy.kid_tolerance:g} (allowed {allowed:.5f})")
        else:
            reasons.append(f"KID {kid_c:.5f} within tolerance of champion {kid_ch:.5f} (allowed {allowed:.5f})")
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
