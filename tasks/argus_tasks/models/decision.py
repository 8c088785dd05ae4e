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

**Label fidelity is a gate** (:mod:`argus_tasks.models.fidelity`): the judge's mIoU on the generated
frames against the source labels. A challenger is promoted only when every gate holds:

* realism: it beats the champion on the class-wise gap and keeps KID within tolerance (above);
* fidelity vs champion: the lower end of the CI of its fidelity minus the champion's (capped at the
  judge's mIoU on the real frames) is at least ``-fidelity_margin``;
* fidelity floor: its fidelity is at least ``min_fidelity``;
* a first champion (no champion yet) must, instead of the champion comparisons, beat identity and
  the best non-learned reference on the class-wise gap, keep KID within tolerance of the best
  reference's, and keep the physics renderer's fidelity (same rule as against a champion).

Every candidate of a decision must have been scored by one judge (``Candidate.judge``): scores of
two judges are never compared, and the decision names the judge. The last reason says which gates
decided; ``comparisons["gates"]`` has each gate's outcome.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from argus_tasks.models.bootstrap import paired_gap_difference, paired_kid_difference
from argus_tasks.models.fidelity import PHYSICS_RENDERERS, fidelity_floor, fidelity_kept

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
    judge: str | None = None  # the judge (segmenter) version that scored this candidate


@dataclass(frozen=True)
class Policy:
    margin: float = 0.0  # the CI upper bound of the gap difference must lie below -margin
    kid_tolerance: float = 0.10  # relative: KID may exceed the champion's by this fraction (CI upper end)
    kid_abs_floor: float = 1e-4  # ... of max(champion KID, this floor)
    require_beat_reference: bool = False
    fidelity_margin: float = 0.03  # label fidelity may drop at most this much (CI lower end) vs the target
    min_fidelity: float = 0.5  # absolute floor on the challenger's label fidelity
    fidelity_cap_at_real: bool = True  # the target is capped at the judge's mIoU on real frames (models/fidelity.py)
    class_names: tuple[str, ...] = ()  # names of the class ids, for the per-class fidelity report
    n_boot: int = 1000
    confidence: float = 0.95
    seed: int = 0


@dataclass(frozen=True)
class Decision:
    promote: bool
    reasons: list[str] = field(default_factory=list)
    comparisons: dict = field(default_factory=dict)
    judge: str | None = None  # the judge version every compared score came from

    def to_dict(self) -> dict:
        return {"promote": self.promote, "reasons": list(self.reasons), "comparisons": self.comparisons,
                "judge": self.judge}


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
                          comparisons: dict, label: str = "champion") -> bool:
    """Non-inferiority on KID: the CI upper end of KID(challenger) - KID(other) within the tolerance."""
    who = _role_and_name(label, champion)
    try:
        d = paired_kid_difference(chal, champion, policy)
    except ValueError as exc:
        reasons.append(f"cannot compare KID with {who}: {exc}")
        return False
    allowed = policy.kid_tolerance * max(abs(d["kid_b"]), policy.kid_abs_floor)
    comparisons[f"kid_vs_{label}"] = {"other": champion.name, "challenger": d["kid_a"], "champion": d["kid_b"],
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
                       f"{policy.kid_tolerance:g} x {label} KID){_note(d)}")
        return True
    reasons.append(f"{head}: KID may regress beyond tolerance (upper end above +{allowed:.5f}, "
                   f"{policy.kid_tolerance:g} x {label} KID){_note(d)}")
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
    # --- A/A: the same model is never promoted over itself
    if champion is not None and (
            (champion.content_hash and champion.content_hash == challenger.content_hash)
            or (champion.version is not None and champion.version == challenger.version)):
        return Decision(False, [f"challenger {challenger.name} is identical to champion {champion.name}"],
                        comparisons, challenger.judge)
    judge_problem = _one_judge(challenger, champion, references)
    if judge_problem:
        return Decision(False, [judge_problem], comparisons, challenger.judge)
    gates: dict[str, bool] = {}
    if champion is not None:
        problems = _problems(champion, "champion")
        if problems:
            return Decision(False, problems + ["cannot compare with the champion: not promoting"], comparisons,
                            challenger.judge)
        gates["realism: class-wise gap vs champion"] = _beats(challenger, champion, policy, "champion", reasons,
                                                              comparisons)
        gates["realism: KID vs champion"] = _kid_within_tolerance(challenger, champion, policy, reasons, comparisons)
        gates["fidelity vs champion"] = fidelity_kept(challenger, champion, _role_and_name("champion", champion),
                                                      "fidelity_vs_champion", policy, reasons, comparisons)
    else:
        identity = next((r for r in references if r.name == IDENTITY), None)
        if identity is None or _problems(identity, "reference"):
            return Decision(False, ["no champion yet and the identity reference is missing or incomplete: "
                                    "cannot check the floors"], comparisons, challenger.judge)
        reasons.append("no champion yet: checking the floors (sanity gates passed, must beat identity, the best "
                       "non-learned reference and keep the physics renderer's label fidelity)")
        gates["realism: class-wise gap vs identity"] = _beats(challenger, identity, policy, "identity", reasons,
                                                              comparisons)
        gates.update(_first_champion_gates(challenger, references, policy, reasons, comparisons))
    gates["fidelity floor"] = fidelity_floor(challenger, policy, reasons, comparisons)
    if policy.require_beat_reference and champion is not None:
        best = _best_reference(references, "classwise_gap")
        if best is None:
            gates["realism: class-wise gap vs best reference"] = False
            reasons.append("policy requires beating the best non-learned reference, but none was evaluated")
        else:
            gates["realism: class-wise gap vs best reference"] = _beats(challenger, best, policy, "best reference",
                                                                        reasons, comparisons)
    comparisons["gates"] = gates
    failed = [g for g, passed in gates.items() if not passed]
    promote = not failed
    reasons.append(f"decided by: every gate passed ({', '.join(gates)})" if promote
                   else f"decided by: {', '.join(failed)} (failed)")
    return Decision(promote, reasons, comparisons, challenger.judge)


def _best_reference(references: Sequence[Candidate], metric: str) -> Candidate | None:
    usable = [r for r in references if not r.learned and r.name != IDENTITY and not _problems(r, "reference")]
    return min(usable, key=lambda r: float(r.metrics[metric])) if usable else None


def _first_champion_gates(chal: Candidate, references: Sequence[Candidate], policy: Policy, reasons: list[str],
                          comparisons: dict) -> dict[str, bool]:
    """A condition's first champion: better realism than the best non-learned reference, the physics renderer's fidelity."""
    gates = {}
    by_gap, by_kid = _best_reference(references, "classwise_gap"), _best_reference(references, "kid")
    if by_gap is None:
        reasons.append("no non-learned reference (other than identity) was evaluated: a first champion cannot be "
                       "shown to beat them (fails closed)")
        return {"realism vs best reference": False}
    gates["realism: class-wise gap vs best reference"] = _beats(chal, by_gap, policy, "best reference", reasons,
                                                                comparisons)
    gates["realism: KID vs best reference"] = _kid_within_tolerance(chal, by_kid, policy, reasons, comparisons,
                                                                    label="best reference")
    physics = [r for r in references if r.name in PHYSICS_RENDERERS and not _problems(r, "reference")]
    if not physics:
        reasons.append(f"[fidelity vs physics renderer] none of {sorted(PHYSICS_RENDERERS)} was evaluated: "
                       "a first champion's label fidelity has no baseline (fails closed)")
        gates["fidelity vs physics renderer"] = False
        return gates
    gates["fidelity vs physics renderer"] = all(
        [fidelity_kept(chal, r, f"physics renderer {r.name}", f"fidelity_vs_{r.name}", policy, reasons, comparisons)
         for r in physics])
    return gates


def _one_judge(challenger: Candidate, champion: Candidate | None, references: Sequence[Candidate]) -> str | None:
    """Why the scores cannot be compared (two judges, or a missing judge next to a named one); None when they can."""
    scored = [c for c in (challenger, champion, *references) if c is not None]
    judges = {c.judge for c in scored}
    if len(judges) <= 1:
        return None
    by = ", ".join(f"{c.name}: {c.judge or 'unknown'}" for c in scored)
    return (f"the candidates were scored by different judges ({by}): scores of two judges are never compared; "
            "rerun evaluate so that every candidate, the champion included, is scored by this run's judge")
