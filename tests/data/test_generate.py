"""Generated datasets follow the schema, are unpaired, and spread over the capture period."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from argus_tasks.data import generate as gen
from argus_tasks.data.manifest import read_manifest
from argus_tasks.data.schema import MANIFEST_COLUMNS

COUNTS = {"clear": {"train": 6, "val": 2}, "fog": {"train": 4}, "night": {"train": 4}}
START = datetime(2026, 1, 1, tzinfo=UTC)
END = START + timedelta(days=7)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("generated")
    manifest = gen.generate_dataset(root, size=64, counts=COUNTS, seed=1, start=START, end=END, workers=1)
    return root, manifest


def test_manifest_has_the_schema_columns_and_types(dataset):
    root, manifest = dataset
    on_disk = read_manifest(root)
    assert list(on_disk.columns) == list(MANIFEST_COLUMNS)
    for name, (dtype, _) in MANIFEST_COLUMNS.items():
        assert str(on_disk[name].dtype) == dtype or (dtype == "string" and isinstance(on_disk[name].dtype, pd.StringDtype))
    assert len(on_disk) == 16 and on_disk["frame_id"].is_unique


def test_files_match_their_hashes_sizes_and_stats(dataset):
    root, manifest = dataset
    for row in manifest.itertuples():
        frame = (root / row.frame_path).read_bytes()
        label = (root / row.label_path).read_bytes()
        assert hashlib.sha256(frame).hexdigest() == row.frame_sha256
        assert hashlib.sha256(label).hexdigest() == row.label_sha256
        rgb = np.asarray(Image.open(root / row.frame_path))
        assert rgb.shape == (row.height, row.width, 3) == (64, 64, 3)
        assert np.asarray(Image.open(root / row.label_path)).shape == (64, 64)
        depth = Image.open(root / row.frame_path.replace("frames/", "depth/", 1))
        assert depth.mode.startswith("I") and np.asarray(depth).max() > 0
        assert row.frame_path == f"frames/{row.condition}/{row.split}/{row.frame_id}.png"
        assert 0 < row.brightness_mean < 1 and 0 < row.brightness_std < 0.5
    by = manifest.groupby("condition")["brightness_mean"].mean()
    assert by["night"] < by["clear"] < by["fog"]


def test_dataset_is_unpaired_and_deterministic(dataset, tmp_path):
    _, manifest = dataset
    jobs = gen.plan_frames(size=64, counts=COUNTS, seed=1, start=START, end=END)
    seeds = {}
    for j in jobs:
        seeds.setdefault(j.condition, set()).add(j.scene_seed)
    assert not (seeds["clear"] & seeds["fog"]) and not (seeds["clear"] & seeds["night"])
    again = gen.generate_dataset(tmp_path, size=64, counts=COUNTS, seed=1, start=START, end=END, workers=1)
    assert again["frame_sha256"].tolist() == manifest["frame_sha256"].tolist()


def test_capture_times_spread_over_the_period_in_drives(dataset):
    _, manifest = dataset
    times = manifest["capture_time"]
    assert (times >= START).all() and (times < END).all()
    assert times.max() - times.min() > timedelta(days=1)
    for _, drive in manifest.groupby("sequence"):
        assert drive["capture_time"].max() - drive["capture_time"].min() < timedelta(minutes=1)


def test_split_counts_shares_out_the_total_like_the_demo():
    counts = gen.split_counts(None, 200)
    assert sum(sum(v.values()) for v in counts.values()) == 200
    assert counts["clear"]["train"] > counts["fog"]["train"] > 0
    with pytest.raises(ValueError):
        gen.plan_frames(size=64, counts={"hail": {"train": 1}}, seed=0, start=START, end=END)
