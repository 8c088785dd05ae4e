"""The judge's floors, training set and reuse rule (pure parts; the step is in test_steps.py)."""

from __future__ import annotations

import math
import types

import pandas as pd
import pytest
import torch

from argus_tasks.models import judge as J
from argus_tasks.steps.segmenter import _why_not_reuse


def q(miou, n=10):
    return {"miou": miou, "n_frames": n, "per_class_iou": {}}


def test_an_adverse_condition_below_its_share_of_clear_fails_and_says_which():
    floors = J.JudgeFloors(min_clear_miou=0.75, min_adverse_ratio=0.8)
    ok = {"clear": q(0.90), "fog": q(0.73), "snow": q(0.721)}  # 0.8 x 0.90 = 0.72
    assert J.floor_failures(ok, floors) == []
    bad = {**ok, "snow": q(0.719)}
    (why,) = J.floor_failures(bad, floors)
    assert why.startswith("snow mIoU 0.719 < floor 0.720 = 0.8 x clear 0.900")
    # the clear-only judge of before (real snow 0.13) is refused
    assert len(J.floor_failures({"clear": q(0.90), "snow": q(0.13), "rain": q(0.22)}, floors)) == 2
    assert J.floor_failures({"clear": q(0.74)}, floors)[0].startswith("clear mIoU 0.74 < floor 0.750")


def test_nan_or_missing_quality_fails_closed():
    floors = J.JudgeFloors()
    assert J.floor_failures({"fog": q(0.9)}, floors)  # no clear measurement
    assert J.floor_failures({"clear": q(float("nan"))}, floors)
    assert J.floor_failures({"clear": q(0.9), "night": q(float("nan"))}, floors)
    assert J.floors_table({"clear": q(0.9), "fog": q(0.8)}, floors) == {"clear": 0.75, "fog": 0.72}


def test_frames_without_a_labelled_pixel_are_not_the_judges():
    labels = torch.full((3, 4, 4), 255, dtype=torch.uint8)
    labels[1, 0, 0] = 2
    assert J.labelled(labels).tolist() == [False, True, False]


def test_training_set_takes_every_condition_balanced(dataset_template):
    manifest = pd.read_parquet(dataset_template / "manifest.parquet")
    x, y, w, counts = J.training_frames(manifest, dataset_template, 64)
    assert counts == {"clear": 160, "fog": 64, "night": 16} and len(x) == len(y) == len(w) == 240
    share = {c: float(w[sum(list(counts.values())[:i]):][:n].sum()) for i, (c, n) in enumerate(counts.items())}
    assert all(math.isclose(s, 1.0) for s in share.values())  # each condition draws the same share


@pytest.mark.parametrize(("tags", "why"), [
    ({}, "clear frames only"),
    ({"argus.judge_recipe": J.RECIPE, "argus.image_size": "256"}, "judges at 256 px, this run at 64 px"),
    ({"argus.judge_recipe": J.RECIPE, "argus.image_size": "64"}, None),
])
def test_an_outdated_judge_is_not_reused(tags, why):
    got = _why_not_reuse(types.SimpleNamespace(tags=tags), 64)
    assert (got is None) if why is None else (why in got)
