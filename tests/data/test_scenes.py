"""Procedural scenes: deterministic, labelled, learnable at 64 px, with physically based weather."""

from __future__ import annotations

import numpy as np
import pytest

from argus_tasks.data import scenes as sc
from argus_tasks.data.schema import IGNORE_ID, NUM_CLASSES


def test_same_seed_same_scene_and_known_labels_only():
    a, b = sc.render_scene(11, 64), sc.render_scene(11, 64)
    assert np.array_equal(a.rgb, b.rgb) and np.array_equal(a.label, b.label) and np.array_equal(a.depth, b.depth)
    assert a.rgb.shape == (64, 64, 3) and a.rgb.dtype == np.uint8
    assert a.label.shape == (64, 64) and a.label.dtype == np.uint8
    assert a.depth.shape == (64, 64) and a.depth.dtype == np.float32
    ids = set(np.unique(a.label).tolist())
    assert ids <= set(range(NUM_CLASSES)) | {IGNORE_ID}
    assert not np.array_equal(a.rgb, sc.render_scene(12, 64).rgb)


def test_every_class_appears_and_depth_is_consistent():
    seen = set()
    for seed in range(12):
        s = sc.render_scene(seed, 64)
        seen |= set(np.unique(s.label).tolist())
        assert (s.depth > 0).all()
        assert np.allclose(s.depth[s.label == sc.SKY], sc.SKY_DEPTH)
        ground = s.label == sc.ROAD
        rows = np.nonzero(ground.any(axis=1))[0]
        # the road recedes: the lowest road row is nearer than the highest one
        assert s.depth[rows[-1]][ground[rows[-1]]].mean() < s.depth[rows[0]][ground[rows[0]]].mean()
    assert seen >= set(range(NUM_CLASSES))
    assert IGNORE_ID not in seen  # every pixel is explained


@pytest.mark.parametrize("size", [63, 513])
def test_sizes_outside_64_512_are_refused(size):
    with pytest.raises(ValueError, match="64..512"):
        sc.render_scene(0, size)


def test_layout_is_the_same_at_every_size():
    small = sc.render_scene(21, 64).label
    large = sc.render_scene(21, 256).label[2::4, 2::4]  # nearest pixel centres
    assert (small == large).mean() > 0.85


def _runs(mask: np.ndarray) -> list[int]:
    """Lengths of horizontal runs of True."""
    out = []
    for row in mask:
        padded = np.concatenate([[0], row.astype(int), [0]])
        d = np.diff(padded)
        out += (np.nonzero(d == -1)[0] - np.nonzero(d == 1)[0]).tolist()
    return out


def test_thin_classes_are_at_least_two_pixels_wide_at_64px():
    lane, pole = [], []
    for seed in range(10):
        s = sc.render_scene(seed, 64)
        lane += _runs(s.label == sc.LANE)
        pole += _runs(s.label == sc.POLE)
    assert lane and pole
    assert np.median(lane) >= 2 and np.median(pole) >= 2
    assert np.mean(np.array(pole) >= 2) > 0.9


def test_conditions_are_deterministic_given_the_rng_and_differ_from_clear():
    s = sc.render_scene(4, 64)
    assert np.array_equal(sc.apply_condition(s, "clear", np.random.default_rng(0)), s.rgb)
    for cond in ("fog", "rain", "snow", "night"):
        a = sc.apply_condition(s, cond, np.random.default_rng(1))
        b = sc.apply_condition(s, cond, np.random.default_rng(1))
        c = sc.apply_condition(s, cond, np.random.default_rng(2))
        assert a.shape == s.rgb.shape and a.dtype == np.uint8
        assert np.array_equal(a, b) and not np.array_equal(a, c)
        assert np.abs(a.astype(int) - s.rgb).mean() > 8, cond
    with pytest.raises(ValueError, match="unknown condition"):
        sc.apply_condition(s, "hail", np.random.default_rng(0))


def _luma(img):
    return (img.astype(float) @ [0.2126, 0.7152, 0.0722]) / 255


def test_fog_attenuates_with_depth_towards_an_airlight():
    s = sc.render_scene(8, 128)
    fog = sc.apply_condition(s, "fog", np.random.default_rng(3)).astype(float)
    change = np.abs(fog - s.rgb).mean(axis=-1)
    near = (s.depth < 8) & (s.label != sc.SKY)
    far = (s.depth > 40) & (s.label != sc.SKY)
    assert change[far].mean() > change[near].mean() + 10
    # far away the image converges to one bright colour: the airlight
    assert fog[far].std(axis=0).mean() < s.rgb[far].astype(float).std(axis=0).mean()
    assert _luma(fog)[far].mean() > 0.5


def test_fog_is_richer_than_a_homogeneous_koschmieder_model():
    """The best global (beta, A) fit of I = J t + A (1 - t) leaves a clear residual: patchy density,
    height profile, forward scatter and noise are not captured by a simple reference."""
    s = sc.render_scene(5, 64)
    fog = sc.apply_condition(s, "fog", np.random.default_rng(5)).astype(float) / 255
    clear = s.rgb.astype(float) / 255
    d = s.depth[..., None].astype(float)
    best = np.inf
    for beta in np.geomspace(0.003, 0.2, 40):
        t = np.exp(-beta * d)
        # least-squares airlight per channel for this beta
        w = (1 - t)
        a = ((fog - clear * t) * w).sum(axis=(0, 1)) / np.maximum((w * w).sum(axis=(0, 1)), 1e-9)
        best = min(best, np.sqrt(((clear * t + a * w - fog) ** 2).mean()))
    assert best > 0.02  # > 5/255 RMS left unexplained


def test_night_is_dark_with_bright_lights_and_rain_and_snow_change_the_look():
    s = sc.render_scene(2, 64)
    rng = np.random.default_rng(9)
    night = sc.apply_condition(s, "night", rng)
    assert _luma(night).mean() < _luma(s.rgb).mean() - 0.08
    lamps = s.emissive.sum(-1) > 1
    if lamps.any():
        assert _luma(night)[lamps].mean() > _luma(night).mean() + 0.2
    snow = sc.apply_condition(s, "snow", rng)
    assert _luma(snow).mean() > _luma(s.rgb).mean()  # whitening
    assert _luma(snow).std() < _luma(s.rgb).std() * 1.1  # lower contrast
    rain = sc.apply_condition(s, "rain", rng)
    road = s.label == sc.ROAD
    assert _luma(rain)[road].mean() < _luma(s.rgb)[road].mean() + 0.05  # wet, darker road
