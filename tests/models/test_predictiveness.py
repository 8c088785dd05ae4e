"""Downstream predictiveness: the rank correlation of per-class IoU, generated vs real, with its interval."""

from __future__ import annotations

import numpy as np
import pytest

from argus_tasks.models.predictiveness import class_rank_correlation, format_figure, spearman

C = 6
NAMES = ("road", "sidewalk", "building", "vehicle", "lane_marking", "pole")


def frames(n, accs, seed, pixels=200):
    rng = np.random.default_rng(seed)
    out = np.zeros((n, C, C), dtype=np.int64)
    for i in range(n):
        for k in range(C):
            right = rng.binomial(pixels, accs[k])
            out[i, k, k] = right
            out[i, k, [j for j in range(C) if j != k]] = rng.multinomial(pixels - right, [1 / (C - 1)] * (C - 1))
    return out


REAL_ACCS = [0.95, 0.85, 0.75, 0.65, 0.5, 0.35]  # thin classes suffer most in real fog
SEQ_GEN, SEQ_REAL = np.repeat(np.arange(8), 5), np.repeat(np.arange(6), 5)


def test_spearman_matches_the_textbook_values_with_ties():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40])[0] == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1])[0] == pytest.approx(-1.0)
    # ties take their average rank: ranks [1, 2.5, 2.5, 4] vs [1, 2, 3, 4]
    assert spearman([1, 2, 2, 3], [1, 2, 3, 4])[0] == pytest.approx(0.9486832980505138)
    assert np.isnan(spearman([1, 1, 1], [1, 2, 3])[0])


def test_a_generator_hard_where_real_weather_is_hard_ranks_classes_alike():
    real = frames(30, REAL_ACCS, 1)
    alike = class_rank_correlation(frames(40, [a + 0.03 for a in REAL_ACCS], 2), real, SEQ_GEN, SEQ_REAL,
                                   class_names=NAMES, n_boot=300)
    assert alike["spearman"] == pytest.approx(1.0) and alike["lo"] > 0.7 and alike["hi"] == pytest.approx(1.0)
    assert alike["resampled"] == {"source": "sequences", "real": "sequences"} and alike["n_classes"] == C
    assert alike["classes"] == list(NAMES) and alike["iou_real"]["pole"] < alike["iou_real"]["road"]
    # a uniform veil that keeps thin classes and smears roads: the ranking is backwards
    backwards = class_rank_correlation(frames(40, REAL_ACCS[::-1], 3), real, SEQ_GEN, SEQ_REAL, n_boot=300)
    assert backwards["spearman"] == pytest.approx(-1.0) and backwards["hi"] < 0
    assert format_figure(alike).startswith("+1.00 [+")


def test_too_few_classes_or_no_records_give_no_figure():
    real = frames(10, REAL_ACCS, 4)
    gen = frames(10, REAL_ACCS, 5)
    gen[:, 2:, :] = 0  # only two classes labelled on the source side
    out = class_rank_correlation(gen, real, n_boot=50)
    assert np.isnan(out["spearman"]) and out["n_classes"] == 2 and "only 2 classes" in out["note"]
    assert format_figure(out) == "-"
    with pytest.raises(ValueError, match="do not match"):
        class_rank_correlation(gen[:, :3, :3], real)


def test_the_interval_is_by_sequence():
    real = frames(30, REAL_ACCS, 6)
    gen = frames(40, [0.9, 0.7, 0.8, 0.6, 0.55, 0.5], 7)
    by_seq = class_rank_correlation(gen, real, SEQ_GEN, SEQ_REAL, n_boot=200, seed=1)
    by_frame = class_rank_correlation(gen, real, n_boot=200, seed=1)
    assert by_seq["spearman"] == by_frame["spearman"] and by_frame["resampled"] == {"source": "frames", "real": "frames"}
    assert by_seq["lo"] <= by_seq["spearman"] <= by_seq["hi"] and by_seq["n_boot"] == 200
