"""The validation gate: each bad input is quarantined or fails the run, and no later step reads it."""

from __future__ import annotations

import hashlib
import io
import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from argus_tasks.contract import EXIT_OK, EXIT_PERMANENT, PermanentStepError
from argus_tasks.data.access import lineage, load_accepted, read_frame, read_label

from .conftest import TINY_COUNTS

N_TINY = sum(sum(v.values()) for v in TINY_COUNTS.values())
PULL_ALL = ["pull", "--dataset-rev", "v1", "--window", "all"]


def validate_args(threshold=0.05, min_frames=2):
    return ["validate", "--quarantine-threshold", str(threshold), "--min-frames-per-group", str(min_frames),
            "--workers", "2"]


@pytest.fixture
def pulled(steps, run_id):
    rc, _ = steps(PULL_ALL, run_id)
    assert rc == EXIT_OK
    data = steps.run_store(run_id).cache / "data"
    return data, pd.read_parquet(data / "manifest.parquet")


def write_manifest(data, manifest):
    manifest.to_parquet(data / "manifest.parquet", index=False)


def replace_file(path, payload: bytes):
    path.unlink()  # never write through: the file may share storage with a cache
    path.write_bytes(payload)


def png(array) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def quarantined(steps, run_id) -> pd.DataFrame:
    return pd.read_parquet(steps.run_store(run_id).cache / "validate" / "quarantine.parquet")


def assert_excluded(steps, run_id, frame_id: str):
    accepted, _ = load_accepted(steps.run_store(run_id))
    assert frame_id not in set(accepted["frame_id"])
    return accepted


@pytest.fixture(scope="module")
def clean(tiny_registry, tmp_path_factory):
    """A pulled and validated clean run; tests that need one copy it (see :func:`copy_run`)."""
    from .conftest import Steps

    tmp = tmp_path_factory.mktemp("clean")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ARGUS_SCRATCH", str(tmp / "scratch"))
        steps = Steps(mp, tmp, tiny_registry.path)
        assert steps(PULL_ALL, "clean")[0] == EXIT_OK
        rc, result = steps(validate_args(), "clean")
        assert rc == EXIT_OK, steps.failure("clean", "validate")
        yield steps.run_store("clean"), result


def copy_run(clean, steps, run_id):
    """The clean validated run, copied to ``run_id`` of ``steps``' store."""
    import shutil

    shutil.copytree(clean[0].cache, steps.run_store(run_id).cache)
    return steps.run_store(run_id)


def test_clean_data_passes_and_later_steps_read_every_frame(clean):
    store, result = clean
    assert result["outcome"] == "passed" and result["accepted"] == N_TINY and result["quarantined"] == 0
    assert result["result_id"].startswith("argus_data_gate/")
    docs = store.cache / "validate" / "data_docs" / "index.html"
    assert docs.exists() and result["data_docs"] == str(docs)
    assert list((docs.parent / "validations").iterdir())
    accepted, root = load_accepted(store)
    assert len(accepted) == N_TINY
    row = accepted.iloc[0]
    assert read_frame(root, row).shape == (64, 64, 3) and read_label(root, row).shape == (64, 64)
    info = lineage(store)
    assert info["validation_result_id"] == result["result_id"] and len(info["dataset_fingerprint"]) == 64
    import mlflow

    run = mlflow.get_run(result["mlflow_run_id"])
    assert run.data.metrics["accepted"] == N_TINY and run.data.tags["argus.validation.outcome"] == "passed"
    assert any(a.path == "data_docs" for a in mlflow.MlflowClient().list_artifacts(run.info.run_id))


def test_manifest_missing_a_column_fails_naming_the_expectation(steps, run_id, pulled):
    data, manifest = pulled
    write_manifest(data, manifest.drop(columns=["brightness_std"]))
    rc, _ = steps(validate_args(), run_id)
    assert rc == EXIT_PERMANENT
    message = steps.failure(run_id, "validate")
    assert "expect_table_columns_to_match_set" in message and "brightness_std" in message
    assert "Data Docs: " in message and "data_docs/index.html" in message
    with pytest.raises(PermanentStepError, match="validation output missing"):
        load_accepted(steps.run_store(run_id))


def test_bad_frames_above_the_threshold_fail_with_examples(steps, run_id, pulled):
    data, manifest = pulled
    for row in manifest.iloc[:3].itertuples():
        replace_file(data / row.frame_path, (data / row.frame_path).read_bytes()[:100])
    rc, _ = steps(validate_args(threshold=0.05), run_id)  # 3/45 = 6.7% > 5%
    assert rc == EXIT_PERMANENT
    message = steps.failure(run_id, "validate")
    assert "above the quarantine threshold" in message
    assert all(fid in message for fid in manifest["frame_id"].iloc[:3])
    assert "expect_column_values_to_be_in_set(frame_decodes)" in message
    with pytest.raises(PermanentStepError, match="validation output missing"):
        load_accepted(steps.run_store(run_id))


# ---- frame-level faults: injected together into one run, validated once, judged one by one ----------

FAULTS = {}  # fault name -> frame_id it was injected into


@pytest.fixture(scope="module")
def faulty(tiny_registry, tmp_path_factory):
    """One pulled run with six different frame-level faults, validated with a 20% threshold."""
    from .conftest import Steps

    tmp = tmp_path_factory.mktemp("faulty")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ARGUS_SCRATCH", str(tmp / "scratch"))
        steps = Steps(mp, tmp, tiny_registry.path)
        assert steps(PULL_ALL, "faulty")[0] == EXIT_OK
        data = steps.run_store("faulty").cache / "data"
        manifest = pd.read_parquet(data / "manifest.parquet")
        # rows of different condition/split groups, so no group loses more than one frame
        picks = manifest.groupby(["condition", "split"]).head(1).index.tolist()
        rows = {name: manifest.loc[picks[i]] for i, name in enumerate(
            ["truncated_png", "label_wrong_size", "unknown_class_id", "unknown_condition", "duplicated_frame",
             "implausible_brightness"])}
        bad = rows["truncated_png"]
        replace_file(data / bad.frame_path, (data / bad.frame_path).read_bytes()[:200])
        replace_file(data / rows["label_wrong_size"].label_path, png(np.zeros((32, 48), np.uint8)))
        path = data / rows["unknown_class_id"].label_path
        label = np.asarray(Image.open(path)).copy()
        label[:4, :4] = 42
        replace_file(path, png(label))
        manifest.loc[rows["unknown_condition"].name, "condition"] = "sunny"
        night = manifest.index[(manifest["condition"] == "night") & ~manifest.index.isin(picks)][0]
        rows["implausible_brightness"] = manifest.loc[night]
        manifest.loc[night, "brightness_mean"] = 0.8  # a night frame brighter than noon
        manifest = pd.concat([manifest, manifest.loc[[rows["duplicated_frame"].name]]], ignore_index=True)
        write_manifest(data, manifest)
        FAULTS.update({name: row.frame_id for name, row in rows.items()})
        rc, result = steps(validate_args(threshold=0.2, min_frames=2), "faulty")
        assert rc == EXIT_OK, steps.failure("faulty", "validate")
        accepted, _ = load_accepted(steps.run_store("faulty"))
        yield {"result": result, "quarantine": quarantined(steps, "faulty"), "accepted": accepted}


def reasons_of(faulty, fault: str) -> str:
    q = faulty["quarantine"]
    hits = q[q["frame_id"] == FAULTS[fault]]
    assert len(hits), f"{fault} ({FAULTS[fault]}) was not quarantined"
    assert FAULTS[fault] not in set(faulty["accepted"]["frame_id"])  # no later step reads it
    return " | ".join(hits["reasons"])


def test_faulty_run_quarantines_exactly_the_bad_frames(faulty):
    assert faulty["result"]["outcome"] == "quarantined"
    assert set(faulty["quarantine"]["frame_id"]) == set(FAULTS.values())
    assert faulty["result"]["quarantined"] == 7  # the duplicate counts twice
    assert len(faulty["accepted"]) == N_TINY - 6


def test_truncated_png_is_quarantined_and_never_read(faulty):
    assert "frame PNG does not decode (OSError" in reasons_of(faulty, "truncated_png")


def test_label_of_the_wrong_size_is_quarantined(faulty):
    reasons = reasons_of(faulty, "label_wrong_size")
    assert "label size differs from the frame (48x32 vs 64x64)" in reasons and "label sha256" in reasons


def test_label_with_unknown_class_ids_is_quarantined(faulty):
    assert "class ids outside schema.CLASSES ([42])" in reasons_of(faulty, "unknown_class_id")


def test_unknown_condition_is_quarantined_naming_it(faulty):
    assert "unknown condition" in reasons_of(faulty, "unknown_condition")
    assert set(faulty["accepted"]["condition"]) <= {"clear", "fog", "rain", "snow", "night"}


def test_duplicated_frame_is_quarantined_in_every_copy(faulty):
    reasons = reasons_of(faulty, "duplicated_frame")
    assert "duplicated frame_id" in reasons and "duplicated frame (same sha256)" in reasons
    q = faulty["quarantine"]
    assert (q["frame_id"] == FAULTS["duplicated_frame"]).sum() == 2


def test_implausible_brightness_for_the_condition_is_quarantined(faulty):
    assert "implausible for night" in reasons_of(faulty, "implausible_brightness")


def test_too_few_frames_per_group_fails_naming_the_parameter(steps, run_id, pulled):
    rc, _ = steps(validate_args(min_frames=4), run_id)
    assert rc == EXIT_PERMANENT
    message = steps.failure(run_id, "validate")
    assert "too few frames for a condition and split" in message and "expect_column_values_to_be_between(n_frames)" in message


def test_quarantine_that_empties_a_group_fails(steps, run_id, pulled):
    data, manifest = pulled
    bad = manifest.iloc[0]
    replace_file(data / bad.frame_path, b"not a png")
    rc, _ = steps(validate_args(threshold=0.1, min_frames=3), run_id)
    assert rc == EXIT_PERMANENT
    assert f"{bad.condition}/{bad.split} has 2 frame(s)" in steps.failure(run_id, "validate")


def test_a_failing_rerun_withdraws_the_earlier_acceptance(steps, run_id, clean):
    store = copy_run(clean, steps, run_id)
    load_accepted(store)
    data = store.cache / "data"
    write_manifest(data, pd.read_parquet(data / "manifest.parquet").drop(columns=["width"]))
    assert steps(validate_args(), run_id)[0] == EXIT_PERMANENT
    with pytest.raises(PermanentStepError, match="validation output missing"):
        load_accepted(store)


def test_load_accepted_refuses_data_pulled_after_validation(steps, run_id, clean):
    store = copy_run(clean, steps, run_id)
    accepted = store.cache / "validate" / "accepted_manifest.parquet"
    result = json.loads((store.cache / "validate" / "result.json").read_text())
    assert result["accepted_manifest_sha256"] == hashlib.sha256(accepted.read_bytes()).hexdigest()
    rc, _ = steps(["pull", "--dataset-rev", "v1", "--window", "interval", "--interval-start",
                   "2026-02-10T00:00:00+00:00"], run_id)
    assert rc == EXIT_OK
    with pytest.raises(PermanentStepError, match="pull was rerun"):
        load_accepted(store)


def test_load_accepted_refuses_a_tampered_accepted_manifest(steps, run_id, clean):
    store = copy_run(clean, steps, run_id)
    accepted = store.cache / "validate" / "accepted_manifest.parquet"
    table = pd.read_parquet(accepted)
    replace_file(accepted, b"")
    table.iloc[:5].to_parquet(accepted, index=False)
    with pytest.raises(PermanentStepError, match="does not match the validate result"):
        load_accepted(store)


def test_validate_without_a_pull_fails_closed(steps, run_id):
    rc, _ = steps(validate_args(), run_id)
    assert rc == EXIT_PERMANENT and "pull output missing" in steps.failure(run_id, "validate")
