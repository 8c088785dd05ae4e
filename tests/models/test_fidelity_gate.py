"""Label fidelity as a promotion gate: the pure ``decide`` on synthetic records of a judge that reads weather.

The real adverse frames are read with per-class accuracy ``REAL_ACC`` (0.85, IoU ~0.74: a judge that
clears its adverse floor). A candidate's generated frames are read with a per-class accuracy: equal
to ``REAL_ACC`` is realistic; above it the frames barely show weather; below it the labels no longer
describe the frames (fidelity lost).
"""

from __future__ import annotations

import numpy as np
import pytest

from argus_tasks.models.decision import Candidate, Policy, decide
from argus_tasks.models.fidelity import paired_fidelity_difference
from argus_tasks.models.metrics import iou_from_confusion, realism_gaps

C = 4
CLASSES = ("road", "building", "vehicle", "pole")
N_GEN, N_REAL = 48, 40
GEN_SEQ = np.repeat([f"clear-d{i:02d}" for i in range(8)], 6)
REAL_SEQ = np.repeat([f"fog-d{i:02d}" for i in range(8)], 5)
FEAT_GEN = np.random.default_rng(7).normal(size=(N_GEN, 8))
FEAT_REAL = np.random.default_rng(8).normal(size=(N_REAL, 8))
REAL_ACC = 0.85
OK = {"finite_in_range": True, "differs_from_input": True, "no_collapse": True}
VALID = {"passed": True}
POLICY = Policy(n_boot=300, seed=3, fidelity_margin=0.03, min_fidelity=0.5, class_names=CLASSES)


def frames(n, acc, seed, pixels=300, noise=True):
    """(n, C, C) confusions; ``acc`` a number or one per class; ``noise=False``: every frame exactly alike."""
    accs = np.broadcast_to(np.asarray(acc, float), (C,))
    rng = np.random.default_rng(seed)
    out = np.zeros((n, C, C), dtype=np.int64)
    for i in range(n):
        for k in range(C):
            right = rng.binomial(pixels, accs[k]) if noise else int(round(pixels * accs[k]))
            wrong = pixels - right
            split = rng.multinomial(wrong, [1 / (C - 1)] * (C - 1)) if noise else np.full(C - 1, wrong // (C - 1))
            out[i, k, k] = right
            out[i, k, [j for j in range(C) if j != k]] = split
    return out


@pytest.fixture(scope="module")
def real():
    return frames(N_REAL, REAL_ACC, 1)


def cand(name, acc, real, seed, version=None, learned=True, judge="7", noise=True, kid=0.05):
    gen = frames(N_GEN, acc, seed, noise=noise)
    gaps = realism_gaps(gen, real)
    metrics = {"kid": kid, "classwise_gap": gaps["classwise_gap"], "aggregate_gap": gaps["aggregate_gap"],
               "label_preservation": float(np.nanmean(gaps["iou_generated"]))}
    return Candidate(name=name, version=version, metrics=metrics, sanity=OK, gen_conf=gen, real_conf=real,
                     content_hash=f"hash-{name}", learned=learned, gen_seq=GEN_SEQ, real_seq=REAL_SEQ,
                     gen_features=FEAT_GEN, real_features=FEAT_REAL, judge=judge)


@pytest.fixture(scope="module")
def refs(real):
    return [cand("identity", 0.995, real, 10, learned=False), cand("uniform_haze", 0.97, real, 11, learned=False),
            cand("koschmieder_fog", 0.95, real, 12, learned=False)]


def test_content_destroying_candidate_with_a_great_realism_gap_is_refused(real, refs):
    # the champion barely shows fog (too faithful: a poor realism gap); the challenger matches the real frames on
    # three classes and smears most poles away: a better class-wise gap, and labels that lie about the poles
    champion = cand("champ", 0.99, real, 20, version="1")
    destroyer = cand("smear", [REAL_ACC, REAL_ACC, REAL_ACC, 0.4], real, 21, version="2")
    assert destroyer.metrics["classwise_gap"] < champion.metrics["classwise_gap"]
    d = decide(champion, destroyer, refs, POLICY, VALID)
    assert not d.promote
    assert d.comparisons["gates"]["realism: class-wise gap vs champion"] is True  # realism alone would promote it
    assert d.comparisons["gates"]["fidelity vs champion"] is False
    assert d.reasons[-1].startswith("decided by: fidelity vs champion")
    fid = d.comparisons["fidelity_vs_champion"]
    assert fid["hi"] < -0.03 and fid["per_class"]["pole"]["challenger"] < 0.4 < fid["per_class"]["pole"]["real"], fid
    reason = next(r for r in d.reasons if r.startswith("[fidelity vs champion champ]"))
    assert "most lost: pole" in reason and "CI [" in reason


def test_a_judge_that_cannot_read_weather_is_backed_by_the_floor(refs):
    # a weak judge (real IoU ~0.12): smearing the scene until the judge fails "like real weather" matches the
    # real frames, and the capped target lets that through against the champion; the absolute floor does not
    weak_real = frames(N_REAL, 0.3, 2)
    champion = cand("champ", 0.9, weak_real, 22, version="1")
    smear = cand("smear", 0.3, weak_real, 23, version="2")
    weak_refs = [Candidate(**{**r.__dict__, "real_conf": weak_real}) for r in refs]
    d = decide(champion, smear, weak_refs, POLICY, VALID)
    assert not d.promote and d.comparisons["gates"]["fidelity floor"] is False, d.reasons
    assert d.comparisons["gates"]["realism: class-wise gap vs champion"] is True
    # without the cap, the loss against the champion refuses it too
    uncapped = decide(champion, smear, weak_refs, Policy(**{**POLICY.__dict__, "fidelity_cap_at_real": False}), VALID)
    assert uncapped.comparisons["gates"]["fidelity vs champion"] is False


def test_faithful_but_equally_realistic_is_preferred(real, refs):
    champion = cand("champ", 0.995, real, 24, version="1")  # barely any fog: poor realism
    faithful = cand("faithful", 0.90, real, 25, version="2")  # the judge reads it a little better than real fog
    lossy = cand("lossy", 0.80, real, 25, version="3")  # a little worse: about the same class-wise gap
    assert abs(faithful.metrics["classwise_gap"] - lossy.metrics["classwise_gap"]) < 0.02
    good, bad = decide(champion, faithful, refs, POLICY, VALID), decide(champion, lossy, refs, POLICY, VALID)
    assert good.promote, good.reasons
    assert not bad.promote and bad.reasons[-1] == "decided by: fidelity vs champion (failed)", bad.reasons
    # once the faithful one is champion, the lossy one does not replace it (no better realism, labels lost)
    after = decide(Candidate(**{**faithful.__dict__}), lossy, refs, POLICY, VALID)
    assert not after.promote and after.comparisons["gates"]["fidelity vs champion"] is False


def test_a_a_is_never_promoted(real, refs):
    champion = cand("champ", 0.88, real, 26, version="1")
    twin = Candidate(**{**champion.__dict__, "name": "chal", "version": "2", "content_hash": "other"})
    d = decide(champion, twin, refs, POLICY, VALID)
    fid = d.comparisons["fidelity_vs_champion"]
    assert not d.promote and fid["challenger"] == fid["other_fidelity"] and fid["point"] >= 0
    assert d.comparisons["gates"] == {"realism: class-wise gap vs champion": False, "realism: KID vs champion": True,
                                      "fidelity vs champion": True, "fidelity floor": True}
    same = Candidate(**{**twin.__dict__, "content_hash": champion.content_hash})
    assert not decide(champion, same, refs, POLICY, VALID).promote


def _exact_pair(real):
    """Two candidates whose every frame is alike: every bootstrap draw gives the same fidelity difference."""
    champion = cand("champ", 0.99, real, 27, version="1", noise=False)
    chal = cand("chal", 0.84, real, 28, version="2", noise=False)
    return champion, chal


def test_fidelity_margin_edge(real, refs):
    champion, chal = _exact_pair(real)
    base = Policy(**{**POLICY.__dict__, "fidelity_cap_at_real": False})
    d = paired_fidelity_difference(chal, champion, base)
    assert d["lo"] == d["point"] == d["hi"] < 0  # degenerate interval: the edge is exact
    at = decide(champion, chal, refs, Policy(**{**base.__dict__, "fidelity_margin": -d["point"]}), VALID)
    assert at.comparisons["gates"]["fidelity vs champion"] is True
    below = decide(champion, chal, refs, Policy(**{**base.__dict__, "fidelity_margin": -d["point"] - 1e-9}), VALID)
    assert below.comparisons["gates"]["fidelity vs champion"] is False


def test_fidelity_floor_edge(real, refs):
    champion, chal = _exact_pair(real)
    point = float(np.nanmean(iou_from_confusion(chal.gen_conf.sum(0))))
    at = decide(champion, chal, refs, Policy(**{**POLICY.__dict__, "min_fidelity": point}), VALID)
    assert at.comparisons["gates"]["fidelity floor"] is True
    assert at.comparisons["fidelity_floor"]["point"] == pytest.approx(point, abs=1e-12)
    above = decide(champion, chal, refs, Policy(**{**POLICY.__dict__, "min_fidelity": point + 1e-9}), VALID)
    assert not above.promote and above.comparisons["gates"]["fidelity floor"] is False
    assert any(r.startswith("[fidelity floor]") and "below the floor" in r for r in above.reasons)


def test_nan_or_missing_fidelity_fails_closed(real, refs):
    champion = cand("champ", 0.99, real, 29, version="1")
    chal = cand("chal", 0.86, real, 30, version="2")
    nan = Candidate(**{**chal.__dict__, "metrics": {**chal.metrics, "label_preservation": float("nan")}})
    d = decide(champion, nan, refs, POLICY, VALID)
    assert not d.promote and any("label_preservation" in r and "finite" in r for r in d.reasons)
    missing = Candidate(**{**chal.__dict__, "metrics": {k: v for k, v in chal.metrics.items()
                                                        if k != "label_preservation"}})
    assert not decide(champion, missing, refs, POLICY, VALID).promote
    # no labelled source pixel: fidelity cannot be measured, nothing is promoted
    blank = Candidate(**{**chal.__dict__, "gen_conf": np.zeros_like(chal.gen_conf)})
    d = decide(champion, blank, refs, POLICY, VALID)
    assert not d.promote and any(r.startswith("[fidelity floor]") and "fails closed" in r for r in d.reasons)


def test_scores_of_two_judges_are_never_compared(real, refs):
    champion = cand("champ", 0.99, real, 31, version="1", judge="6")  # scored by the judge of before
    chal = cand("chal", 0.86, real, 32, version="2", judge="7")
    d = decide(champion, chal, refs, POLICY, VALID)
    assert not d.promote and "different judges" in d.reasons[0] and "champ: 6" in d.reasons[0]
    rescored = Candidate(**{**champion.__dict__, "judge": "7"})
    ok = decide(rescored, chal, refs, POLICY, VALID)
    assert ok.promote and ok.judge == "7" and ok.to_dict()["judge"] == "7", ok.reasons


def test_first_champion_must_beat_the_best_reference_and_keep_the_physics_fidelity(real, refs):
    good = cand("chal", 0.86, real, 33, version="1")
    d = decide(None, good, refs, POLICY, VALID)
    assert d.promote, d.reasons
    assert set(d.comparisons["gates"]) == {
        "realism: class-wise gap vs identity", "realism: class-wise gap vs best reference",
        "realism: KID vs best reference", "fidelity vs physics renderer", "fidelity floor"}
    assert "fidelity_vs_koschmieder_fog" in d.comparisons and "fidelity_vs_uniform_haze" not in d.comparisons
    # realistic-looking references: the learned one must beat the best of them
    close = [*refs[:2], cand("koschmieder_fog", REAL_ACC, real, 34, learned=False)]
    d2 = decide(None, good, close, POLICY, VALID)
    assert not d2.promote and d2.comparisons["gates"]["realism: class-wise gap vs best reference"] is False
    # a first champion that loses the labels the physics renderer keeps
    lossy = cand("lossy", 0.74, real, 35, version="1")
    faithful_physics = [*refs[:2], cand("koschmieder_fog", 0.87, real, 36, learned=False)]
    d3 = decide(None, lossy, faithful_physics, POLICY, VALID)
    assert d3.comparisons["gates"]["fidelity vs physics renderer"] is False and not d3.promote
    # without a physics renderer there is no fidelity baseline: fails closed
    d4 = decide(None, good, refs[:2], POLICY, VALID)
    assert not d4.promote and d4.comparisons["gates"]["fidelity vs physics renderer"] is False
