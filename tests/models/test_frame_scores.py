"""Per-frame scores from data: the judge's fidelity and realism per frame, the file evaluate writes, the flywheel.

The unit test judges the same source frames twice, unchanged and destroyed, with the session's
reference segmenter; the step test runs train -> evaluate -> hard-frames -> train (oversampling) on
the small validated run of the conftest, through the real CLI.
"""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
import torch

from argus_tasks.data.manifest import read_manifest
from argus_tasks.data.schema import CLASSES
from argus_tasks.hardframes import record
from argus_tasks.hardframes.groups import frame_groups
from argus_tasks.models import frame_scores as FS
from argus_tasks.models import frames as F
from argus_tasks.models.evaluation import evaluate_candidate, real_side
from argus_tasks.models.frame_stats import FrameRecorder

TRAIN = ["train", "--condition", "fog", "--steps", "2"]


@pytest.fixture(scope="module")
def judge(session_segmenter):
    from argus_tasks.models.registry_adapter import SEGMENTER_MODEL, Registry
    from argus_tasks.models.segmenter_registry import load_version

    return load_version(Registry(), SEGMENTER_MODEL, session_segmenter["version"]).eval()


def destroy(x: torch.Tensor) -> torch.Tensor:
    """Scene gone: seeded uniform noise (a generator that replaced the frame)."""
    return torch.rand(x.shape, generator=torch.Generator().manual_seed(1)).to(x.device)


def test_an_unchanged_frame_scores_higher_fidelity_than_the_same_frame_destroyed(judge, dataset_template):
    manifest = read_manifest(dataset_template)
    rows = F.select(manifest, "clear", ("val",))
    real_rows = F.select(manifest, "fog", ("val", "test"))
    x, y = F.load_frames(dataset_template, rows, workers=1)
    rx, ry = F.load_frames(dataset_template, real_rows, workers=1)
    real = real_side(judge, rx, ry)
    groups = frame_groups(rows, [lab.numpy() for lab in y])
    base = {"dag_id": "d", "run_id": "r", "condition": "fog", "source": "evaluate", "judge_model": "j",
            "judge_version": "1", "eval_frames_sha256": "x", "scored_at": "2026-03-01T00:00:00Z"}
    parts, recs = [], {}
    for key, fn in (("identity", lambda t: t), ("destroyed", destroy)):
        rec = FrameRecorder(thumbnails=True)
        cand = evaluate_candidate(key, rec.wrap(fn), judge, x, y, real, CLASSES)
        recs[key] = rec
        parts.append(record.candidate_columns(base, key, {"name": key, "version": None}, rows, groups,
                                              FS.fidelity_per_frame(cand.gen_conf), cand.features, real.features,
                                              real_rows["frame_id"], rec.finite, rec.mean_abs_change,
                                              all(cand.sanity.values())))
    table = FS.finish(record.concat(parts))
    assert list(table.columns) == list(FS.SCHEMA)
    assert {c: str(t) for c, t in table.dtypes.items()} == FS.SCHEMA
    ident = table[table["candidate"] == "identity"].set_index("frame_id")
    gone = table[table["candidate"] == "destroyed"].set_index("frame_id")
    n = len(rows)
    assert len(ident) == len(gone) == n == 24
    # fidelity per frame: the judge on the unchanged frame beats the judge on noise, frame by frame
    assert (ident["label_fidelity"] > gone["label_fidelity"] + 0.2).all(), (ident["label_fidelity"],
                                                                             gone["label_fidelity"])
    assert ident["label_fidelity"].min() > 0.5 and gone["label_fidelity"].max() < FS.FIDELITY_FLOOR
    # ... and it is the mIoU of the frame's own confusion counts
    conf = evaluate_candidate("identity", lambda t: t, judge, x[:1], y[:1], real, CLASSES).gen_conf[0]
    tp, gt, pr = np.diag(conf), conf.sum(1), conf.sum(0)
    present = gt > 0
    assert ident["label_fidelity"].iloc[0] == pytest.approx((tp[present] / (gt + pr - tp)[present]).mean())
    # realism: noise is much farther from the real fog frames than a clear frame is
    assert gone["realism_ratio"].median() > 1.5 * ident["realism_ratio"].median()
    assert all(len(v.split(";")) == 3 and v.startswith("fog-") for v in ident["nn_real_ids"])
    # gates: noise fails fidelity; an unchanged frame fails the plausible-change gate; both are flagged
    assert gone["flagged"].all() and not gone["fidelity_ok"].any()
    assert gone["reasons"].str.contains("label fidelity").all()
    assert not ident["change_ok"].any() and (recs["identity"].mean_abs_change == 0).all()
    assert ident["fidelity_ok"].all() and ident["finite"].all()
    # hardness within a candidate, frame keys and metadata for grouping
    assert ident["hardness"].between(0, 2).all()
    assert (ident["model_key"] == "identity@d/r").all() and (ident["sequence"] == rows["sequence"].values).all()
    assert set(ident["brightness_bucket"]) <= {"dark", "dim", "medium", "bright"}
    assert recs["destroyed"].thumbs.shape == (n, 64, 64, 3)


def _scores(run, where: str) -> pd.DataFrame:
    return pd.read_parquet(io.BytesIO(run.read_bytes(where)))


def test_evaluate_writes_scores_and_the_next_training_oversamples_the_hard_set(session_segmenter, steps,
                                                                                validated_run, model_store):
    import mlflow

    from argus_tasks.models.registry_adapter import Registry

    run_id, run = validated_run
    assert steps(["segmenter"], run_id)[0] == 0
    assert steps(TRAIN, run_id)[0] == 0, run.read_json("train/fog/failure.json")
    rc, ev = steps(["evaluate", "--condition", "fog"], run_id)
    assert rc == 0, run.read_json("evaluate/fog/failure.json")

    table = _scores(run, "evaluate/fog/frame_scores.parquet")
    assert list(table.columns) == list(FS.SCHEMA)
    assert set(table["candidate"]) >= {"challenger", "identity"}
    chal = table[table["candidate"] == "challenger"].reset_index(drop=True)
    assert len(chal) == 48 and chal["frame_id"].is_unique
    assert (chal["model_key"] == f"argus-weather-fog/{ev['challenger_version']}").all()
    assert (chal["judge_version"] == session_segmenter["version"]).all()
    assert (chal["run_id"] == run_id).all() and (chal["dag_id"] == "model_tests").all()
    # the scores are those of the per-frame records evaluate keeps for promote
    with np.load(io.BytesIO(run.read_bytes("evaluate/fog/records/challenger.npz"))) as npz:
        assert npz["frame_id"].tolist() == chal["frame_id"].tolist()
        np.testing.assert_allclose(chal["label_fidelity"], FS.fidelity_per_frame(npz["conf"]))
        gen = npz["features"]
    with np.load(io.BytesIO(run.read_bytes("evaluate/fog/records/real.npz"))) as npz:
        real = npz["features"].astype(np.float64)
    d = np.sqrt(((gen[:, None, :].astype(np.float64) - real[None]) ** 2).sum(-1))
    np.testing.assert_allclose(chal["realism_distance"], np.sort(d, 1)[:, :5].mean(1), rtol=1e-6)
    # the MLflow table holds the same rows
    mrun = mlflow.MlflowClient().get_run(ev["mlflow_run_id"])
    logged = mlflow.MlflowClient().load_table(mrun.info.experiment_id, "evaluate_fog/frame_scores.json",
                                              run_ids=[mrun.info.run_id])
    assert len(logged) == len(table)

    rc, hard = steps(["hard-frames", "--condition", "fog"], run_id)
    assert rc == 0, run.read_json("hard-frames/fog/failure.json")
    assert hard["n_evaluations"] >= 1 and hard["n_frames"] >= 1
    page = run.read_bytes("hard-frames/fog/gallery/index.html").decode()
    assert page.count("data:image/png;base64,") >= 3 * min(hard["n_frames"], 48), "source, generated, neighbours"

    rc, trained = steps([*TRAIN, "--hard-frame-weight", "3"], run_id)
    assert rc == 0, run.read_json("train/fog/failure.json")
    assert trained["hard_set"] == hard["hard_set"] and trained["hard_frame_weight"] == 3.0
    assert "hard" in trained["recomputed_because"], "another hard set is another training: the reuse key changed"
    tags = Registry().version(trained["model_name"], trained["model_version"]).tags
    assert tags["argus.hard_set"] == hard["hard_set"] and tags["argus.hard_frame_weight"] == "3"
    params = mlflow.MlflowClient().get_run(trained["mlflow_run_id"]).data.params
    assert params["hard_set"] == hard["hard_set"] and params["hard_frame_weight"] == "3.0"
