"""Metrics, configs and references: small, fast, behaviour that could break."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from argus_tasks.models import metrics as M
from argus_tasks.models.config import ConfigError, config_from_dict, load_config
from argus_tasks.models.generator import build_generator
from argus_tasks.models.networks import count_parameters
from argus_tasks.models.references import UniformHaze, calibrated_references


def test_kid_is_near_zero_for_one_distribution_and_grows_with_shift():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(300, 16)), rng.normal(size=(300, 16))
    same = M.kid(a, b, n_subsets=20, subset_size=100)["kid"]
    near = M.kid(a, b + 0.3, n_subsets=20, subset_size=100)["kid"]
    far = M.kid(a, b + 1.0, n_subsets=20, subset_size=100)["kid"]
    assert abs(same) < 0.02 < near < far


def test_kid_rejects_mismatched_features():
    with pytest.raises(ValueError, match="same d"):
        M.kid(np.zeros((5, 3)), np.zeros((5, 4)))


def test_confusion_iou_and_gaps():
    label = np.array([[[0, 0, 1, 255]]])
    pred = np.array([[[0, 1, 1, 0]]])
    conf = M.confusion_per_frame(pred, label, 3)
    assert conf.sum() == 3  # the ignore pixel is not counted
    iou = M.iou_from_confusion(conf.sum(0))
    assert iou[0] == pytest.approx(0.5) and iou[1] == pytest.approx(0.5) and np.isnan(iou[2])
    perfect = M.confusion_per_frame(label.clip(0, 2), label, 3)
    gaps = M.realism_gaps(conf, perfect)
    # class 2 is absent from the truth: it does not count in the class-wise gap
    assert gaps["classwise_gap"] == pytest.approx(0.5)


def test_sanity_gates_catch_identity_collapse_and_nan():
    rng = np.random.default_rng(0)
    src = rng.random((8, 3, 8, 8)).astype(np.float32)
    real_f = rng.normal(size=(8, 5))
    ok = M.sanity_gates(src * 0.5, src, rng.normal(size=(8, 5)), real_f)
    assert ok["passed"]
    assert not M.sanity_gates(src, src, rng.normal(size=(8, 5)), real_f)["gates"]["differs_from_input"]
    collapsed = M.sanity_gates(src * 0.5, src, np.zeros((8, 5)), real_f)
    assert not collapsed["gates"]["no_collapse"]
    bad = src.copy()
    bad[0, 0, 0, 0] = np.nan
    assert not M.sanity_gates(bad, src, rng.normal(size=(8, 5)), real_f)["gates"]["finite_in_range"]


def test_configs_are_typed_and_reject_unknown_keys():
    tiny = load_config("tiny", {"steps": "50", "head": "free", "lr": "1e-3", "channels_last": "false"})
    assert tiny.steps == 50 and tiny.head == "free" and tiny.lr == 1e-3 and tiny.channels_last is False
    with pytest.raises(ConfigError, match="unknown config key.*'stepz'"):
        load_config("tiny", {"stepz": 3})
    with pytest.raises(ConfigError, match="unknown model config 'huge'"):
        load_config("huge")
    with pytest.raises(ConfigError, match="head must be one of"):
        load_config("tiny", {"head": "magic"})
    with pytest.raises(ConfigError, match="cannot use"):
        load_config("tiny", {"batch_size": "eight"})
    assert config_from_dict(tiny.to_dict()) == tiny


def test_generator_sizes_and_identity_start():
    tiny = load_config("tiny")
    g = build_generator(tiny, "fog")
    assert 0.3e6 < count_parameters(g) < 0.4e6
    full = load_config("full")
    assert full.image_size >= 256 and full.n_blocks == 9 and full.ngf == 64 and full.amp_bf16 and full.channels_last
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        y = g.eval()(x)
    # the physics head starts near the identity (a light veil, t ~ 0.8): content is there from step 0
    assert y.shape == x.shape and (y - x).abs().mean() < 0.1
    assert np.corrcoef(y.flatten().numpy(), x.flatten().numpy())[0, 1] > 0.95
    rain = build_generator(tiny, "rain")
    parts = rain.components(x)
    assert {"t", "A", "gain", "p", "c"} <= set(parts)
    assert parts["A"].shape == (2, 3, 64, 64)


def test_uniform_haze_calibration_recovers_its_constants():
    rng = torch.Generator().manual_seed(0)
    clear = torch.rand(32, 3, 32, 32, generator=rng) * 0.8
    truth = UniformHaze({"alpha": 0.4, "A_r": 0.8, "A_g": 0.85, "A_b": 0.9})
    hazy = truth(clear)
    fitted = UniformHaze.calibrate(clear, hazy, seed=1)
    assert fitted.params["alpha"] == pytest.approx(0.4, abs=0.08)
    assert fitted.params["A_b"] == pytest.approx(0.9, abs=0.12)


@pytest.mark.parametrize("condition", ["fog", "rain", "snow", "night"])
def test_references_of_each_condition_render_in_range(condition):
    rng = torch.Generator().manual_seed(1)
    clear = torch.rand(8, 3, 32, 32, generator=rng)
    target = (clear * 0.4 + 0.1).clamp(0, 1)
    refs = calibrated_references(condition, clear, target, seed=0)
    assert "identity" in refs and len(refs) == 3
    for ref in refs.values():
        out = ref(clear, torch.Generator().manual_seed(0))
        assert out.shape == clear.shape and torch.isfinite(out).all() and out.min() >= 0 and out.max() <= 1


def _kid_by_definition(a, b, n_subsets, subset_size, seed):
    """Unbiased MMD^2 with the cubic kernel on each subset, computed from scratch (the reference)."""
    rng = np.random.default_rng(seed)
    m = min(subset_size, len(a), len(b))
    vals = []
    for _ in range(n_subsets):
        x, y = a[rng.choice(len(a), m, replace=False)], b[rng.choice(len(b), m, replace=False)]
        k = lambda p, q: (p @ q.T / a.shape[1] + 1.0) ** 3  # noqa: E731
        kxx, kyy = k(x, x), k(y, y)
        vals.append((kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1)) - 2 * k(x, y).mean())
    return float(np.mean(vals)), float(np.std(vals))


def test_kid_from_precomputed_kernels_matches_the_definition():
    rng = np.random.default_rng(4)
    a, b = rng.normal(size=(70, 12)), rng.normal(0.2, 1.0, size=(50, 12))
    expected = _kid_by_definition(a, b, n_subsets=15, subset_size=40, seed=9)
    got = M.kid(a, b, n_subsets=15, subset_size=40, seed=9)
    shared = M.kid(a, b, n_subsets=15, subset_size=40, seed=9, kernel_bb=M.poly_kernel(b, b))
    for out in (got, shared):
        assert out["kid"] == pytest.approx(expected[0], rel=1e-9) and out["kid_std"] == pytest.approx(expected[1], rel=1e-9)
    with pytest.raises(ValueError, match="kernel_bb"):
        M.kid(a, b, kernel_bb=np.zeros((3, 3)))


def test_confusion_per_frame_counts_each_frame_separately():
    rng = np.random.default_rng(5)
    label = rng.integers(0, 6, size=(7, 9, 11)).astype(np.uint8)
    label[label == 5] = 255  # ignored
    pred = rng.integers(0, 5, size=(7, 9, 11)).astype(np.uint8)
    conf = M.confusion_per_frame(pred, label, 5)
    assert conf.shape == (7, 5, 5)
    for i in range(7):
        for t in range(5):
            for p in range(5):
                assert conf[i, t, p] == np.sum((label[i] == t) & (pred[i] == p))
    assert M.confusion_per_frame(pred[:0], label[:0], 5).shape == (0, 5, 5)


def test_image_stats_fast_kernels_match_the_plain_ones():
    import torch.nn.functional as F

    from argus_tasks.models.references import _box3, image_stats

    x = torch.rand(6, 3, 17, 23, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(_box3(x), F.avg_pool2d(x, 3, 1, 1, count_include_pad=False))
    stats = image_stats(x)
    torch.testing.assert_close(stats[3:6], x.std((0, 2, 3)), rtol=1e-4, atol=1e-6)
    mx, mn = x.max(1).values, x.min(1).values
    torch.testing.assert_close(stats[14], ((mx - mn) / (mx + 1e-3)).mean())


def test_segmenter_one_pass_gives_logits_and_features():
    from argus_tasks.models.segmenter import UNetSegmenter, predict

    torch.manual_seed(0)
    seg = UNetSegmenter(width=4).eval()
    x = torch.rand(5, 3, 16, 16)
    with torch.no_grad():
        logits, feats = seg.forward_with_features(x)
        torch.testing.assert_close(logits, seg(x))
        torch.testing.assert_close(feats, seg.features(x))
    pred, f = predict(seg, x, batch_size=2)
    assert pred.shape == (5, 16, 16) and f.shape == (5, seg.feature_dim)
    np.testing.assert_allclose(f, feats.numpy(), rtol=1e-5, atol=1e-6)


def _mmd2_of_draw(x, y, ix, iy):
    """Unbiased MMD^2 of the multisets x[ix], y[iy] from scratch, leaving out pairs of copies of one frame."""
    k = lambda p, q: (p @ q.T / x.shape[1] + 1.0) ** 3  # noqa: E731

    def within(f, idx):
        kk = k(f[idx], f[idx])
        keep = idx[:, None] != idx[None, :]  # distinct underlying frames only
        return kk[keep].mean()

    return within(x, ix) + within(y, iy) - 2 * k(x[ix], y[iy]).mean()


def test_cluster_weighted_mmd2_matches_the_definition_on_a_resample_of_whole_sequences():
    rng = np.random.default_rng(6)
    x, y = rng.normal(size=(30, 5)), rng.normal(0.3, 1.0, size=(24, 5))
    seq_x = np.repeat([f"x{i}" for i in range(6)], 5)  # 6 drives of 5 frames
    seq_y = np.array([f"y{i % 4}" for i in range(24)])  # 4 drives, interleaved frames
    inv_x, sx = M.cluster_index(seq_x)
    inv_y, sy = M.cluster_index(seq_y)
    assert (sx, sy) == (6, 4) and inv_y[:5].tolist() == [0, 1, 2, 3, 0]
    side_x, side_y = M.ClusteredSide(x, inv_x, sx), M.ClusteredSide(y, inv_y, sy)
    cross = M.kernel_cluster_sums(x, inv_x, sx, y, inv_y, sy, chunk=7)  # chunked: same sums
    np.testing.assert_allclose(cross, M.cluster_sums(M.cluster_sums(M.poly_kernel(x, y), inv_x, sx).T, inv_y, sy).T)
    # all weights 1: the KID of the whole sets
    whole = M.weighted_mmd2(np.ones(sx), side_x, np.ones(sy), side_y, cross)[0]
    assert whole == pytest.approx(_mmd2_of_draw(x, y, np.arange(30), np.arange(24)), rel=1e-10)
    # one resample: drives drawn with replacement, every frame of a drawn drive comes along
    draw_x, draw_y = np.array([0, 0, 3, 5, 5, 5]), np.array([1, 2, 2, 3])
    wx, wy = np.bincount(draw_x, minlength=sx), np.bincount(draw_y, minlength=sy)
    ix = np.concatenate([np.flatnonzero(inv_x == s) for s in draw_x])
    iy = np.concatenate([np.flatnonzero(inv_y == s) for s in draw_y])
    got = M.weighted_mmd2(wx[None], side_x, wy[None], side_y, cross)[0]
    assert got == pytest.approx(_mmd2_of_draw(x, y, ix, iy), rel=1e-10)


def test_sanity_from_running_stats_matches_the_whole_array_gates():
    rng = np.random.default_rng(0)
    src = rng.random((8, 3, 8, 8)).astype(np.float32)
    real_f = rng.normal(size=(8, 5))
    for gen, feat in ((src * 0.5, rng.normal(size=(8, 5))), (src, rng.normal(size=(8, 5))),
                      (src * 0.5, np.zeros((8, 5))), (src * 2.0, rng.normal(size=(8, 5)))):
        whole = M.sanity_gates(gen, src, feat, real_f)
        stats = M.sanity_from_stats(True, float(gen.min()), float(gen.max()), float(np.abs(gen - src).mean()),
                                    feat, real_f)
        assert stats["gates"] == whole["gates"] and stats["mean_abs_change"] == pytest.approx(whole["mean_abs_change"])
