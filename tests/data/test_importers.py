"""Importers: tiny ACDC and Cityscapes trees, converted to our layout, labels and manifest."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from argus_tasks.data import importers
from argus_tasks.data.manifest import read_manifest
from argus_tasks.data.schema import CLASSES, IGNORE_ID, MANIFEST_COLUMNS

# Cityscapes labelIds: road 7, sidewalk 8, building 11, pole 17, vegetation 21, sky 23, person 24, car 26
CS_STRIPES = [23, 11, 21, 17, 24, 8, 7, 26]
OURS = [CLASSES.index("sky"), CLASSES.index("building"), CLASSES.index("vegetation"), CLASSES.index("pole"),
        IGNORE_ID, CLASSES.index("sidewalk"), CLASSES.index("road"), CLASSES.index("vehicle")]


def write_pair(image_path, label_path, seed, size=(96, 64)):
    w, h = size
    rng = np.random.default_rng(seed)
    image_path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(30, 220, (h, w, 3), dtype=np.uint8)).save(image_path)
    if label_path is not None:
        label_path.parent.mkdir(parents=True, exist_ok=True)
        stripes = np.repeat(np.array(CS_STRIPES, np.uint8), h // len(CS_STRIPES))[:, None]
        Image.fromarray(np.broadcast_to(stripes, (h, w)).copy()).save(label_path)


@pytest.fixture
def acdc(tmp_path):
    src = tmp_path / "acdc"
    frames = [("fog", "train", "GOPR0475", "GOPR0475_frame_000041"),
              ("fog", "train_ref", "GOPR0475", "GOPR0475_frame_000041_ref"),
              ("night", "val", "GP010397", "GP010397_frame_000012"),
              ("snow", "train", "GP010122", "GP010122_frame_000100")]
    for i, (cond, split, seq, name) in enumerate(frames):
        write_pair(src / "rgb_anon" / cond / split / seq / f"{name}_rgb_anon.png",
                   src / "gt" / cond / split / seq / f"{name}_gt_labelIds.png", i)
    # a test frame without ground truth, as in the real ACDC test split
    write_pair(src / "rgb_anon" / "rain" / "test" / "GP020400" / "GP020400_frame_000001_rgb_anon.png", None, 9)
    return src


def test_acdc_is_converted_with_mapped_labels(acdc, tmp_path):
    out = tmp_path / "ours"
    summary = importers.import_acdc(acdc, out, captured_at=datetime(2024, 5, 1, tzinfo=UTC), workers=1)
    assert summary["frames"] == 4 and summary["skipped"] == 1
    manifest = read_manifest(out)
    assert list(manifest.columns) == list(MANIFEST_COLUMNS)
    by_id = manifest.set_index("frame_id")
    assert by_id.loc["acdc-fog-train-GOPR0475_frame_000041", "condition"] == "fog"
    ref = by_id.loc["acdc-clear-train-GOPR0475_frame_000041_ref"]
    assert ref["condition"] == "clear" and ref["split"] == "train"  # ACDC's reference frames are clear
    assert set(manifest["condition"]) == {"fog", "clear", "night", "snow"}
    assert (manifest["width"] == 96).all() and (manifest["height"] == 64).all()
    row = manifest.iloc[0]
    label = np.asarray(Image.open(out / row.label_path))
    assert label[::8, 0].tolist() == OURS
    assert hashlib.sha256((out / row.frame_path).read_bytes()).hexdigest() == row.frame_sha256
    assert manifest["capture_time"].min() == pd.Timestamp("2024-05-01T00:00:00Z")


def test_cityscapes_is_converted_cropped_and_resized(tmp_path):
    src = tmp_path / "cityscapes"
    for split, city, name in [("train", "aachen", "aachen_000000_000019"), ("train", "aachen", "aachen_000001_000019"),
                              ("val", "lindau", "lindau_000000_000019")]:
        write_pair(src / "leftImg8bit" / split / city / f"{name}_leftImg8bit.png",
                   src / "gtFine" / split / city / f"{name}_gtFine_labelIds.png", len(name), size=(128, 96))
    out = tmp_path / "ours"
    summary = importers.import_cityscapes(src, out, size=64, workers=1)
    assert summary["frames"] == 3 and summary["counts"] == {"clear/train": 2, "clear/val": 1}
    manifest = read_manifest(out)
    assert (manifest["width"] == 64).all() and (manifest["height"] == 64).all()
    assert manifest["sequence"].tolist() == ["cityscapes-aachen_000000", "cityscapes-aachen_000001",
                                             "cityscapes-lindau_000000"]
    label = np.asarray(Image.open(out / manifest.iloc[0].label_path))
    assert set(np.unique(label)) <= set(OURS)
    assert label[0, 0] == CLASSES.index("sky") and label[-1, 0] == CLASSES.index("vehicle")


def test_missing_tree_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="rgb_anon"):
        importers.import_acdc(tmp_path, tmp_path / "out")
    with pytest.raises(FileNotFoundError, match="leftImg8bit"):
        importers.import_cityscapes(tmp_path, tmp_path / "out")


def test_imported_frames_become_a_registry_revision(acdc, tmp_path):
    from argus_tasks.data.registry import Registry

    out = tmp_path / "ours"
    importers.import_acdc(acdc, out, workers=1)
    reg = Registry(tmp_path / "registry")
    reg.init(str(tmp_path / "remote"), size=64, seed=0, counts={"clear": {"train": 2}}, workers=1)
    rev = reg.add_revision(source=out, workers=1)
    assert rev["tag"] == "v2" and rev["added"] == 4 and rev["frames"] == 6
    manifest = read_manifest(reg.dataset)
    assert manifest["frame_id"].str.startswith("acdc-").sum() == 4
    assert all((reg.dataset / p).exists() for p in manifest["frame_path"])
    with pytest.raises(Exception, match="exist already"):
        reg.add_revision(source=out, workers=1)
