"""evaluate on the frozen evaluation set: every val+test frame, its hash, sequences, the judge's lineage.

The step tests run the real CLI on the small validated run of the conftest (clear and fog: 48
val+test frames each, in drives of 8) against the session's local MLflow (sqlite).
"""

from __future__ import annotations

import hashlib
import io

import numpy as np
import pandas as pd
import pytest

from argus_tasks.contract import EXIT_PERMANENT, PermanentStepError

TRAIN = ["train", "--condition", "fog", "--steps", "2"]


def _manifest(run) -> pd.DataFrame:
    return pd.read_parquet(io.BytesIO(run.read_bytes("validate/accepted_manifest.parquet")))


def _eval_rows(manifest, condition):
    rows = manifest[(manifest["condition"] == condition) & manifest["split"].isin(["val", "test"])]
    return rows.sort_values("frame_id").reset_index(drop=True)


def _expected_sha(source, real) -> str:
    """The documented hash, computed here from the manifest: per side (by name), sorted frame lines."""
    h = hashlib.sha256()
    for side, rows in (("real", real), ("source", source)):
        for fid, fsha, lsha in sorted(zip(rows["frame_id"], rows["frame_sha256"], rows["label_sha256"], strict=True)):
            h.update(f"{side}\t{fid}\t{fsha}\t{lsha}\n".encode())
    return h.hexdigest()


def test_evaluate_judges_every_eval_frame_records_drives_and_tags_the_judge(session_segmenter, steps, validated_run):
    from argus_tasks.models.registry_adapter import Registry

    run_id, run = validated_run
    assert steps(["segmenter"], run_id)[0] == 0
    rc, trained = steps(TRAIN, run_id)
    assert rc == 0, run.read_json("train/fog/failure.json")
    rc, ev = steps(["evaluate", "--condition", "fog"], run_id)
    assert rc == 0, run.read_json("evaluate/fog/failure.json")

    manifest = _manifest(run)
    source, real = _eval_rows(manifest, "clear"), _eval_rows(manifest, "fog")
    assert (len(source), len(real)) == (48, 48)
    sha = _expected_sha(source, real)
    frames = run.read_json("evaluate/fog/eval_frames.json")
    assert frames["source"] == source["frame_id"].tolist() and frames["real"] == real["frame_id"].tolist()
    assert frames["eval_frames_sha256"] == sha and frames["dataset_revision"] == "test-rev"
    assert (frames["n_source_sequences"], frames["n_real_sequences"]) == (6, 6)
    doc = run.read_json("evaluate/fog/metrics.json")
    assert doc["eval_frames_sha256"] == sha and doc["frames"]["n_source"] == 48 and doc["frames"]["n_real"] == 48
    assert ev["eval_frames_sha256"] == sha and (ev["n_source"], ev["n_real"]) == (48, 48)
    assert ev["device"] == "cpu" and ev["judge"]["version"] == session_segmenter["version"]

    # per-frame records carry the drive of every frame, in the frame order of the list
    for key in ("challenger", "identity", "real"):
        with np.load(io.BytesIO(run.read_bytes(f"evaluate/fog/records/{key}.npz")), allow_pickle=False) as npz:
            side = real if key == "real" else source
            assert npz["sequence"].tolist() == side["sequence"].tolist(), key
            assert npz["frame_id"].tolist() == side["frame_id"].tolist(), key
            assert npz["conf"].shape[0] == 48 and npz["features"].shape[0] == 48

    # the judge and the frame list on the registered challenger version
    tags = Registry().version(trained["model_name"], trained["model_version"]).tags
    assert tags["argus.judge_model"] == "argus-downstream-segmenter"
    assert tags["argus.judge_version"] == session_segmenter["version"]
    assert tags["argus.eval_frames_sha256"] == sha
    assert (tags["argus.eval_n_source"], tags["argus.eval_n_real"]) == ("48", "48")

    # promote reads the drives back: the decision resamples sequences, and sees the hash
    from argus_tasks.contract import StepContext
    from argus_tasks.steps.promote import _candidate, _load_evaluation

    ctx = StepContext(store_root=str(steps.store), dag_id=run.dag_id, run_id=run_id)
    doc2, records, real_rec = _load_evaluation(ctx, "fog")
    assert doc2["eval_frames_sha256"] == sha
    chal = _candidate(doc2, "challenger", records, real_rec)
    assert chal.gen_seq.tolist() == source["sequence"].tolist() and chal.real_seq.tolist() == real["sequence"].tolist()
    assert chal.gen_features.shape == (48, chal.real_features.shape[1])
    rc, decision = steps(["promote", "--condition", "fog", "--n-boot", "200"], run_id)
    assert rc == 0, run.read_json("promote/fog/failure.json")
    cmp = decision["comparisons"]["gap_vs_identity"]
    assert cmp["resampled"] == {"source": "sequences", "real": "sequences"}
    assert cmp["n_clusters"] == {"source": 6, "real": 6} and "note" not in cmp


def test_too_few_eval_frames_is_a_permanent_error_that_says_what_to_do(session_segmenter, steps, validated_run):
    run_id, run = validated_run
    assert steps(["segmenter"], run_id)[0] == 0
    assert steps(TRAIN, run_id)[0] == 0
    rc, _ = steps(["evaluate", "--condition", "fog", "--min-eval-frames", "49"], run_id)
    msg = run.read_json("evaluate/fog/failure.json")["message"]
    assert rc == EXIT_PERMANENT
    assert "only 48 clear val+test frames (source) to evaluate fog on in dataset revision 'test-rev'" in msg, msg
    assert "fewer than min_eval_frames=49" in msg and "add clear val/test frames" in msg
    assert "lower the Param min_eval_frames" in msg
    # a cap below the minimum says that the cap cut the selection
    rc, _ = steps(["evaluate", "--condition", "fog", "--max-frames", "12"], run_id)
    msg = run.read_json("evaluate/fog/failure.json")["message"]
    assert rc == EXIT_PERMANENT and "only 8 clear" in msg and "--max-frames 12 kept 8 of its 48" in msg, msg


def test_max_frames_keeps_whole_sequences_seeded():
    from argus_tasks.models.frames import select_sequences

    rows = [{"frame_id": f"f{s}-{i}", "sequence": f"s{s}", "condition": "clear", "split": "val"}
            for s in range(10) for i in range(5 + s % 3)]
    manifest = pd.DataFrame(rows + [{"frame_id": "t0", "sequence": "s0", "condition": "clear", "split": "train"}])
    got = select_sequences(manifest, "clear", ("val", "test"), max_frames=20, seed=3)
    sizes = manifest[manifest["split"] == "val"].groupby("sequence").size()
    assert 14 <= len(got) <= 20 and got["frame_id"].tolist() == sorted(got["frame_id"])
    for seq, n in got.groupby("sequence").size().items():
        assert n == sizes[seq], seq  # no drive cut in half
    again = select_sequences(manifest, "clear", ("val", "test"), max_frames=20, seed=3)
    other = select_sequences(manifest, "clear", ("val", "test"), max_frames=20, seed=4)
    assert got.equals(again) and set(other["sequence"]) != set(got["sequence"])
    assert len(select_sequences(manifest, "clear", ("val", "test"))) == int(sizes.sum())  # no cap: every frame


def test_asking_for_cuda_without_one_is_a_permanent_error():
    import torch

    from argus_tasks.steps.evaluate import resolve_device

    if torch.cuda.is_available():
        assert resolve_device("auto").type == "cuda"
        pytest.skip("this machine has a GPU")
    assert resolve_device("auto").type == "cpu"
    with pytest.raises(PermanentStepError, match="--device cuda was asked for"):
        resolve_device("cuda")


def test_batched_evaluation_matches_one_batch():
    """Frames go through translation and the segmenter in batches: the batch size changes nothing."""
    import torch

    from argus_tasks.data.schema import CLASSES
    from argus_tasks.models.evaluation import evaluate_candidate, real_side
    from argus_tasks.models.segmenter import UNetSegmenter

    torch.manual_seed(0)
    seg = UNetSegmenter(width=4).eval()
    g = torch.Generator().manual_seed(1)
    src = (torch.rand(11, 3, 16, 16, generator=g) * 255).to(torch.uint8)
    real_x = (torch.rand(9, 3, 16, 16, generator=g) * 255).to(torch.uint8)
    labels = torch.randint(0, len(CLASSES), (11, 16, 16), generator=g, dtype=torch.uint8)
    real_y = torch.randint(0, len(CLASSES), (9, 16, 16), generator=g, dtype=torch.uint8)
    out = {}
    for bs in (4, 64):
        real = real_side(seg, real_x, real_y, batch_size=bs)
        out[bs] = (real, evaluate_candidate("dim", lambda x: x * 0.7, seg, src, labels, real, CLASSES, batch_size=bs,
                                            n_samples=5))
    (r4, c4), (r64, c64) = out[4], out[64]
    np.testing.assert_array_equal(r4.conf, r64.conf)
    np.testing.assert_array_equal(c4.gen_conf, c64.gen_conf)
    np.testing.assert_allclose(c4.features, c64.features, rtol=1e-5, atol=1e-6)
    assert c4.sanity == c64.sanity and c4.samples.shape == (5, 3, 16, 16)
    assert c4.metrics["mean_abs_change"] == pytest.approx(float((src.float() / 255 * 0.3).mean()), rel=1e-5)
