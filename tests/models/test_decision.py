"""The promotion decision: exhaustive cases of the pure ``decide`` function on synthetic records.

Records are per-frame confusion counts drawn so that a candidate's class-wise realism gap is
known: the real adverse frames have per-class accuracy ``REAL_ACC``; a candidate whose generated
frames have accuracy ``acc`` has a gap of about ``|acc - REAL_ACC|`` in IoU terms. Frames come in
sequences (drives) and carry segmenter features; unless a test says otherwise every candidate has
the same features (KID difference exactly zero).
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from argus_tasks.models import decision as D
from argus_tasks.models.decision import Candidate, Policy, decide, paired_gap_difference
from argus_tasks.models.metrics import kid, realism_gaps

C = 4
N_GEN, N_REAL = 60, 50
GEN_SEQ = np.repeat([f"clear-d{i:02d}" for i in range(10)], 6)  # 10 drives of 6 source frames
REAL_SEQ = np.repeat([f"fog-d{i:02d}" for i in range(10)], 5)  # 10 drives of 5 real frames
FEAT_GEN = np.random.default_rng(7).normal(size=(N_GEN, 8))
FEAT_REAL = np.random.default_rng(8).normal(size=(N_REAL, 8))
REAL_ACC = 0.55
OK_SANITY = {"finite_in_range": True, "differs_from_input": True, "no_collapse": True}
VALID = {"passed": True}


def _frames(n: int, acc: float, rng, pixels: int = 200) -> np.ndarray:
    """(n, C, C) confusion counts: each class's pixels are right with probability ``acc``."""
    out = np.zeros((n, C, C), dtype=np.int64)
    for i in range(n):
        for k in range(C):
            right = rng.binomial(pixels, acc)
            wrong = rng.multinomial(pixels - right, [1 / (C - 1)] * (C - 1))
            out[i, k, k] = right
            out[i, k, [j for j in range(C) if j != k]] = wrong
    return out


@pytest.fixture(scope="module")
def real_conf():
    return _frames(N_REAL, REAL_ACC, np.random.default_rng(1))


def cand(name, acc, real_conf, seed, kid=0.05, version=None, learned=True, content_hash=None, sanity=None,
         gen_conf=None, gen_features=None, **metric_overrides):
    gen = gen_conf if gen_conf is not None else _frames(N_GEN, acc, np.random.default_rng(seed))
    gaps = realism_gaps(gen, real_conf)
    metrics = {"kid": kid, "classwise_gap": gaps["classwise_gap"], "aggregate_gap": gaps["aggregate_gap"],
               "label_preservation": float(np.nanmean(gaps["iou_generated"]))}
    metrics.update(metric_overrides)
    return Candidate(name=name, version=version, metrics=metrics, sanity=OK_SANITY if sanity is None else sanity,
                     gen_conf=gen, real_conf=real_conf, content_hash=content_hash or f"hash-{name}", learned=learned,
                     gen_seq=GEN_SEQ[:len(gen)], real_seq=REAL_SEQ, real_features=FEAT_REAL,
                     gen_features=FEAT_GEN[:len(gen)] if gen_features is None else gen_features)


@pytest.fixture(scope="module")
def refs(real_conf):
    return [cand("identity", 0.95, real_conf, 10, kid=0.5, learned=False),
            cand("uniform_haze", 0.80, real_conf, 11, kid=0.2, learned=False),
            cand("koschmieder_fog", 0.70, real_conf, 12, kid=0.1, learned=False)]


POLICY = Policy(n_boot=400, seed=3)


def test_better_challenger_is_promoted(real_conf, refs):
    champion = cand("champ", 0.75, real_conf, 20, kid=0.08, version="1")
    challenger = cand("chal", 0.57, real_conf, 21, kid=0.05, version="2")
    d = decide(champion, challenger, refs, POLICY, VALID)
    assert d.promote, d.reasons
    cmp = d.comparisons["gap_vs_champion"]
    assert cmp["hi"] < 0 and cmp["lo"] <= cmp["point"] <= cmp["hi"]


def test_worse_challenger_is_not_promoted(real_conf, refs):
    champion = cand("champ", 0.57, real_conf, 22, kid=0.05, version="1")
    challenger = cand("chal", 0.75, real_conf, 23, kid=0.05, version="2")
    d = decide(champion, challenger, refs, POLICY, VALID)
    assert not d.promote
    assert any("does not beat champion" in r for r in d.reasons)
    assert d.comparisons["gap_vs_champion"]["lo"] > 0


def test_equal_within_noise_is_not_promoted(real_conf, refs):
    champion = cand("champ", 0.70, real_conf, 24, version="1")
    challenger = cand("chal", 0.70, real_conf, 25, version="2")  # same quality, other noise draw
    d = decide(champion, challenger, refs, POLICY, VALID)
    assert not d.promote
    cmp = d.comparisons["gap_vs_champion"]
    assert cmp["lo"] < 0 < cmp["hi"]


def test_a_a_identical_challenger_is_never_promoted(real_conf, refs):
    champion = cand("champ", 0.57, real_conf, 26, version="1", content_hash="same")
    twin = Candidate(**{**champion.__dict__, "name": "chal", "version": "2"})
    d = decide(champion, twin, refs, POLICY, VALID)
    assert not d.promote and any("identical" in r for r in d.reasons)
    # the same records under another hash: the bootstrap difference is exactly zero, not below it
    twin2 = Candidate(**{**champion.__dict__, "name": "chal", "version": "2", "content_hash": "other"})
    d2 = decide(champion, twin2, refs, POLICY, VALID)
    assert not d2.promote
    assert d2.comparisons["gap_vs_champion"]["hi"] == 0.0


@pytest.mark.parametrize("key", ["kid", "classwise_gap", "label_preservation", "aggregate_gap"])
def test_nan_metric_fails_closed(real_conf, refs, key):
    challenger = cand("chal", 0.57, real_conf, 27, version="2", **{key: float("nan")})
    d = decide(None, challenger, refs, POLICY, VALID)
    assert not d.promote and any(key in r and "finite" in r for r in d.reasons)


def test_missing_metric_fails_closed(real_conf, refs):
    good = cand("chal", 0.57, real_conf, 28, version="2")
    metrics = dict(good.metrics)
    del metrics["kid"]
    d = decide(None, Candidate(**{**good.__dict__, "metrics": metrics}), refs, POLICY, VALID)
    assert not d.promote and any("'kid' missing" in r for r in d.reasons)


def test_missing_records_fail_closed(real_conf, refs):
    good = cand("chal", 0.57, real_conf, 29, version="2")
    d = decide(None, Candidate(**{**good.__dict__, "gen_conf": None}), refs, POLICY, VALID)
    assert not d.promote and any("confusion" in r for r in d.reasons)


def test_missing_challenger_fails_closed(refs):
    d = decide(None, None, refs, POLICY, VALID)
    assert not d.promote and any("no evaluation record" in r for r in d.reasons)


@pytest.mark.parametrize("validation, words", [
    ({"passed": False}, "did not pass"),
    (None, "validation outcome missing"),
])
def test_failed_or_missing_validation_fails_closed(real_conf, refs, validation, words):
    challenger = cand("chal", 0.57, real_conf, 30, version="2")
    d = decide(None, challenger, refs, POLICY, validation)
    assert not d.promote and any(words in r for r in d.reasons)


def test_failed_sanity_gate_is_refused(real_conf, refs):
    challenger = cand("chal", 0.57, real_conf, 31, version="2", sanity={**OK_SANITY, "no_collapse": False})
    d = decide(None, challenger, refs, POLICY, VALID)
    assert not d.promote and any("no_collapse" in r for r in d.reasons)


def test_missing_champion_first_model_must_beat_identity(real_conf, refs):
    good = cand("chal", 0.57, real_conf, 32, version="1")
    d = decide(None, good, refs, POLICY, VALID)
    assert d.promote, d.reasons
    assert "gap_vs_identity" in d.comparisons
    # a first model no better than doing nothing does not become champion
    lazy = cand("lazy", 0.95, real_conf, 33, version="1")
    d2 = decide(None, lazy, refs, POLICY, VALID)
    assert not d2.promote and any("does not beat identity" in r for r in d2.reasons)


def test_missing_champion_without_identity_reference_fails_closed(real_conf, refs):
    good = cand("chal", 0.57, real_conf, 34, version="1")
    d = decide(None, good, [r for r in refs if r.name != "identity"], POLICY, VALID)
    assert not d.promote and any("identity reference is missing" in r for r in d.reasons)


def test_champion_with_nan_metrics_fails_closed(real_conf, refs):
    champion = cand("champ", 0.75, real_conf, 35, version="1", kid=float("nan"))
    challenger = cand("chal", 0.57, real_conf, 36, version="2")
    d = decide(champion, challenger, refs, POLICY, VALID)
    assert not d.promote and any("champion" in r and "kid" in r for r in d.reasons)


def _drive_features(rng, n_drives, per_drive, shift, drive_sd, d=8):
    """Features whose drives differ: a per-drive offset (sd ``drive_sd``) plus per-frame noise."""
    return shift + np.repeat(rng.normal(0, drive_sd, (n_drives, d)), per_drive, 0) + rng.normal(
        size=(n_drives * per_drive, d))


def _kid_pair(real_conf, champ_feat, chal_feat):
    champion = cand("champ", 0.75, real_conf, 37, version="1", gen_features=champ_feat,
                    kid=kid(champ_feat, FEAT_REAL)["kid"])
    challenger = cand("chal", 0.57, real_conf, 38, version="2", gen_features=chal_feat,
                      kid=kid(chal_feat, FEAT_REAL)["kid"])
    return champion, challenger


def test_kid_regression_beyond_tolerance_blocks(real_conf, refs):
    rng = np.random.default_rng(11)
    base = rng.normal(size=(N_GEN, 8))
    champion, worse = _kid_pair(real_conf, base + 0.3, base + 0.8)
    d = decide(champion, worse, refs, Policy(n_boot=300, kid_tolerance=0.1), VALID)
    cmp = d.comparisons["kid_vs_champion"]
    assert not d.promote and cmp["lo"] > cmp["allowed_increase"] > 0, cmp
    assert any("KID may regress beyond tolerance" in r for r in d.reasons), d.reasons
    # a clearly better KID (and a better gap) passes the gate
    _, better = _kid_pair(real_conf, base + 0.3, base + 0.05)
    d2 = decide(champion, better, refs, Policy(n_boot=300, kid_tolerance=0.1), VALID)
    assert d2.promote and d2.comparisons["kid_vs_champion"]["hi"] < 0, d2.reasons


def test_kid_gate_uses_the_bootstrap_ci_not_the_point_estimates(real_conf, refs):
    """Old gate: KID(challenger) <= KID(champion) * (1 + tolerance) on points, kid_std ignored.

    Here the challenger's drives scatter around the champion's: its point KID is even lower, but
    the drives disagree so much that a regression beyond the tolerance cannot be ruled out.
    """
    rng = np.random.default_rng(6)
    champ_feat = _drive_features(rng, 10, 6, 0.4, 0.5)
    chal_feat = champ_feat + np.repeat(rng.normal(0, 0.5, (10, 8)), 6, 0)
    champion, challenger = _kid_pair(real_conf, champ_feat, chal_feat)
    assert challenger.metrics["kid"] <= champion.metrics["kid"] * 1.1  # the old point gate would pass
    d = decide(champion, challenger, refs, Policy(n_boot=400, seed=3, kid_tolerance=0.1), VALID)
    cmp = d.comparisons["kid_vs_champion"]
    assert not d.promote, d.reasons
    assert cmp["lo"] < cmp["point"] < cmp["allowed_increase"] < cmp["hi"], cmp
    assert cmp["resampled"] == {"source": "sequences", "real": "sequences"} and cmp["n_boot"] == 400
    kid_reason = next(r for r in d.reasons if r.startswith("KID "))
    assert re.fullmatch(r"KID \d\.\d{5} vs champion champ \d\.\d{5}: diff [+-]\d\.\d{5}, 95% CI "
                        r"\[[+-]\d\.\d{5}, [+-]\d\.\d{5}\]: KID may regress beyond tolerance \(upper end above "
                        r"\+\d\.\d{5}, 0\.1 x champion KID\)", kid_reason), kid_reason


def test_kid_bootstrap_by_sequence_widens_on_correlated_drives():
    rng = np.random.default_rng(5)
    seq = np.repeat([f"d{i:02d}" for i in range(20)], 6)
    real_feat = _drive_features(rng, 20, 6, 0.0, 0.5)
    champ_feat = _drive_features(rng, 20, 6, 0.4, 0.5)
    chal_feat = champ_feat + np.repeat(rng.normal(0, 0.5, (20, 8)), 6, 0)
    conf = np.ones((120, C, C))

    def pair(gen_seq, real_seq):
        return [Candidate(n, gen_conf=conf, real_conf=conf, gen_seq=gen_seq, real_seq=real_seq,
                          gen_features=f, real_features=real_feat) for n, f in (("a", chal_feat), ("b", champ_feat))]

    by_seq = D.paired_kid_difference(*pair(seq, seq), Policy(n_boot=500, seed=1))
    by_frame = D.paired_kid_difference(*pair(None, None), Policy(n_boot=500, seed=1))
    ratio = (by_seq["hi"] - by_seq["lo"]) / (by_frame["hi"] - by_frame["lo"])
    assert ratio > 1.5, (ratio, by_seq, by_frame)
    assert by_seq["point"] == pytest.approx(by_frame["point"])  # same whole-set KID either way
    assert by_seq["kid_a"] == pytest.approx(kid(chal_feat, real_feat, n_subsets=50, subset_size=120)["kid"],
                                            rel=0.02)


def test_kid_comparison_without_features_fails_closed(real_conf, refs):
    champion = cand("champ", 0.75, real_conf, 39, version="1")
    challenger = Candidate(**{**cand("chal", 0.57, real_conf, 40, version="2").__dict__, "gen_features": None})
    d = decide(champion, challenger, refs, POLICY, VALID)
    assert not d.promote
    assert any(r.startswith("cannot compare KID with champion champ") and "features" in r for r in d.reasons)


def test_margin_is_applied(real_conf, refs):
    champion = cand("champ", 0.62, real_conf, 39, version="1")
    challenger = cand("chal", 0.57, real_conf, 40, version="2")
    d0 = decide(champion, challenger, refs, POLICY, VALID)
    d1 = decide(champion, challenger, refs, Policy(n_boot=400, seed=3, margin=0.5), VALID)
    assert d0.promote and not d1.promote


def test_require_beat_best_reference(real_conf, refs):
    champion = cand("champ", 0.90, real_conf, 41, version="1")
    middling = cand("chal", 0.72, real_conf, 42, version="2")  # beats champion, not koschmieder (0.70)
    assert decide(champion, middling, refs, POLICY, VALID).promote
    strict = Policy(n_boot=400, seed=3, require_beat_reference=True)
    d = decide(champion, middling, refs, strict, VALID)
    assert not d.promote and d.comparisons["gap_vs_best reference"]["other"] == "koschmieder_fog"
    strong = cand("chal", 0.56, real_conf, 43, version="3")
    assert decide(champion, strong, refs, strict, VALID).promote
    no_refs = [r for r in refs if r.name == "identity"]
    d2 = decide(champion, strong, no_refs, strict, VALID)
    assert not d2.promote and any("none was evaluated" in r for r in d2.reasons)


def test_unpaired_records_fail_closed(real_conf, refs):
    champion = cand("champ", 0.75, real_conf, 44, version="1")
    short = cand("chal", 0.57, real_conf, 45, version="2", gen_conf=_frames(N_GEN - 5, 0.57, np.random.default_rng(45)))
    d = decide(champion, short, refs, POLICY, VALID)
    assert not d.promote and any("not paired" in r for r in d.reasons)


def test_decision_is_pure_and_deterministic(real_conf, refs):
    champion = cand("champ", 0.70, real_conf, 46, version="1")
    challenger = cand("chal", 0.60, real_conf, 47, version="2")
    before = challenger.gen_conf.copy()
    a = decide(champion, challenger, refs, POLICY, VALID)
    b = decide(champion, challenger, refs, POLICY, VALID)
    assert a == b
    np.testing.assert_array_equal(before, challenger.gen_conf)


def test_bootstrap_ci_covers_the_point_estimate(real_conf):
    a = cand("a", 0.60, real_conf, 48)
    b = cand("b", 0.65, real_conf, 49)
    d = paired_gap_difference(a, b, POLICY)
    assert d["lo"] <= d["point"] <= d["hi"] and d["n_boot"] == POLICY.n_boot
    assert math.isclose(d["point"], a.metrics["classwise_gap"] - b.metrics["classwise_gap"], abs_tol=1e-9)


def test_reasons_name_each_comparison_once(real_conf, refs):
    ci = r"diff [+-]\d\.\d{4}, 95% CI \[-?\d\.\d{4}, -?\d\.\d{4}\]"
    first = decide(None, cand("chal", 0.57, real_conf, 50, version="1"), refs, POLICY, VALID)
    assert first.promote and first.reasons[0].startswith("no champion yet: checking the floors")
    assert re.fullmatch(rf"class-wise gap beats identity: {ci} < -0", first.reasons[1]), first.reasons
    lazy = decide(None, cand("lazy", 0.95, real_conf, 51, version="1"), refs, POLICY, VALID)
    assert re.fullmatch(rf"class-wise gap does not beat identity: {ci} not below -0", lazy.reasons[1]), lazy.reasons

    champion = cand("argus-weather-fog v1", 0.90, real_conf, 52, version="1")
    strict = Policy(n_boot=400, seed=3, require_beat_reference=True)
    d = decide(champion, cand("argus-weather-fog v2", 0.72, real_conf, 53, version="2"), refs, strict, VALID)
    assert re.fullmatch(rf"class-wise gap beats champion argus-weather-fog v1: {ci} < -0", d.reasons[0]), d.reasons
    assert re.fullmatch(r"KID -?\d\.\d{5} vs champion argus-weather-fog v1 -?\d\.\d{5}: diff \+0\.00000, 95% CI "
                        r"\[\+0\.00000, \+0\.00000\] within tolerance \(upper end <= \+\d\.\d{5}, 0\.1 x champion KID\)",
                        d.reasons[1]), d.reasons
    assert re.fullmatch(rf"class-wise gap does not beat best reference koschmieder_fog: {ci} not below -0",
                        d.reasons[2]), d.reasons
    for r in first.reasons + lazy.reasons + d.reasons:
        words = r.split()
        assert not any(a == b for a, b in zip(words, words[1:], strict=False)), r  # no "identity identity"


def _gap_pair(correlated: bool, seed: int, n_drives: int = 40, per_drive: int = 6):
    """Two candidates on the same source frames; per-frame accuracy shared within a drive when ``correlated``."""
    rng = np.random.default_rng(seed)
    n = n_drives * per_drive
    if correlated:
        acc_a = np.repeat(rng.uniform(0.45, 0.85, n_drives), per_drive)
        acc_b = np.repeat(rng.uniform(0.45, 0.85, n_drives), per_drive)
    else:
        acc_a, acc_b = rng.uniform(0.45, 0.85, n), rng.uniform(0.45, 0.85, n)

    def frames(accs):
        out = np.zeros((len(accs), C, C), dtype=np.int64)
        for i, acc in enumerate(accs):
            out[i] = _frames(1, acc, rng)[0]
        return out

    ga, gb, real = frames(acc_a), frames(acc_b), _frames(n, REAL_ACC, rng)
    seq = np.repeat([f"d{i:03d}" for i in range(n_drives)], per_drive)
    rseq = np.repeat([f"r{i:03d}" for i in range(n_drives)], per_drive)

    def pair(with_seq: bool):
        return [Candidate(name, gen_conf=g, real_conf=real, gen_seq=seq if with_seq else None,
                          real_seq=rseq if with_seq else None) for name, g in (("a", ga), ("b", gb))]

    return pair


def _width(d):
    return d["hi"] - d["lo"]


def test_gap_bootstrap_by_sequence_widens_on_correlated_frames():
    policy = Policy(n_boot=1000, seed=2)
    pair = _gap_pair(correlated=True, seed=4)
    by_seq, by_frame = paired_gap_difference(*pair(True), policy), paired_gap_difference(*pair(False), policy)
    assert by_seq["point"] == pytest.approx(by_frame["point"])
    assert _width(by_seq) / _width(by_frame) > 1.5, (by_seq, by_frame)
    assert by_seq["resampled"] == {"source": "sequences", "real": "sequences"}
    assert by_seq["n_clusters"] == {"source": 40, "real": 40} and "note" not in by_seq
    # the frame bootstrap says which side it resampled as frames, and why that is weak
    assert by_frame["resampled"] == {"source": "frames", "real": "frames"}
    assert "too narrow" in by_frame["note"]


def test_gap_bootstrap_by_sequence_matches_frames_on_independent_frames():
    policy = Policy(n_boot=1000, seed=2)
    pair = _gap_pair(correlated=False, seed=4)
    ratio = _width(paired_gap_difference(*pair(True), policy)) / _width(paired_gap_difference(*pair(False), policy))
    assert 0.8 < ratio < 1.25, ratio


def test_frame_fallback_is_named_in_the_reasons(real_conf, refs):
    flat = {"gen_seq": None, "real_seq": None}
    chal = Candidate(**{**cand("chal", 0.57, real_conf, 54, version="1").__dict__, **flat})
    identity = Candidate(**{**refs[0].__dict__, **flat})
    d = decide(None, chal, [identity], POLICY, VALID)
    assert d.promote and d.comparisons["gap_vs_identity"]["resampled"] == {"source": "frames", "real": "frames"}
    assert d.reasons[1].endswith("(no sequence ids on the source and real side: resampled frames as if "
                                 "independent, so the interval may be too narrow)"), d.reasons


def test_unpaired_or_single_sequences_fail_closed(real_conf, refs):
    champion = cand("champ", 0.75, real_conf, 55, version="1")
    good = cand("chal", 0.57, real_conf, 56, version="2")
    other_drives = Candidate(**{**good.__dict__, "gen_seq": np.roll(GEN_SEQ, 1)})
    d = decide(champion, other_drives, refs, POLICY, VALID)
    assert not d.promote and any("source sequence ids" in r and "not paired" in r for r in d.reasons), d.reasons
    half = Candidate(**{**good.__dict__, "gen_seq": None})
    assert any("missing while the other has them" in r for r in decide(champion, half, refs, POLICY, VALID).reasons)
    one_drive = np.full(N_GEN, "d0")
    lone = [Candidate(**{**c.__dict__, "gen_seq": one_drive}) for c in (champion, good)]
    d2 = decide(lone[0], lone[1], refs, POLICY, VALID)
    assert not d2.promote and any("the source side has only 1 sequence:" in r for r in d2.reasons), d2.reasons
