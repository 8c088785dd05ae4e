"""The pull's data windows and its frozen evaluation set.

Training frames follow ``--window`` (``cumulative``: everything captured before the interval end;
``interval``: only the interval; ``all``). Whatever the window, the pull also takes every val and
test frame of the revision, so a champion and a challenger of one revision are judged on the same
frames; ``eval_set_sha256`` names that frame list.
"""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta

import pandas as pd

from argus_tasks.contract import EXIT_OK
from argus_tasks.data.registry import Registry

from .conftest import PERIOD_END, PERIOD_START, TINY_COUNTS

N_TINY = sum(sum(v.values()) for v in TINY_COUNTS.values())
N_EVAL = sum(v["val"] + v["test"] for v in TINY_COUNTS.values())
MID = PERIOD_START + timedelta(days=14)
LATE = (MID, MID + timedelta(days=7))


def pull_args(window: str, start: str = "", end: str = "", rev: str = "v1") -> list[str]:
    return ["pull", "--dataset-rev", rev, "--interval-start", start, "--interval-end", end, "--window", window]


def expected_eval_sha(manifest: pd.DataFrame) -> str:
    """The frame-list hash as the docs define it, computed here independently."""
    ev = manifest[manifest["split"].isin(["val", "test"])]
    lines = sorted(f"{r.frame_id}\t{r.frame_sha256}\t{r.label_sha256}\n" for r in ev.itertuples())
    return hashlib.sha256(("argus-frame-list-v1\n" + "".join(lines)).encode()).hexdigest()


def _pulled(steps, run_id) -> tuple[pd.DataFrame, dict]:
    data = steps.run_store(run_id).cache / "data"
    return pd.read_parquet(data / "manifest.parquet"), json.loads((data / "pull.json").read_text())


def test_cumulative_takes_every_frame_before_the_interval_end_plus_the_whole_eval_set(steps, run_id, tiny_registry):
    registry_manifest = pd.read_parquet(tiny_registry.dataset / "manifest.parquet")
    times = pd.to_datetime(registry_manifest["capture_time"], utc=True)
    before_end = registry_manifest[times < pd.Timestamp(LATE[1])]
    in_interval = registry_manifest[(times >= pd.Timestamp(LATE[0])) & (times < pd.Timestamp(LATE[1]))]
    assert 0 < len(in_interval) < len(before_end) < N_TINY  # the fixture spreads frames over the month

    rc, result = steps(pull_args("cumulative", LATE[0].isoformat(), LATE[1].isoformat()), run_id)
    assert rc == EXIT_OK, steps.failure(run_id, "pull")
    manifest, pulled = _pulled(steps, run_id)
    train = manifest[manifest["split"] == "train"]
    # training frames: every train frame captured before the end, none after, whatever the start
    assert sorted(train["frame_id"]) == sorted(before_end[before_end["split"] == "train"]["frame_id"])
    # evaluation: every val/test frame of the revision, also those captured after the interval
    evaluation = manifest[manifest["split"].isin(["val", "test"])]
    assert len(evaluation) == N_EVAL and (pd.to_datetime(evaluation["capture_time"], utc=True) >= LATE[1]).any()
    assert pulled["window"] == result["window"] == "cumulative"
    assert pulled["n_window_frames"] == len(before_end)
    assert pulled["n_train_frames"] == result["n_train_frames"] == len(train)
    assert pulled["n_eval_frames"] == result["n_eval_frames"] == N_EVAL
    assert pulled["eval_set_sha256"] == result["eval_set_sha256"] == expected_eval_sha(registry_manifest)


def test_every_window_of_a_revision_has_the_same_eval_set_and_training_follows_the_window(steps, run_id):
    got = {}
    for window in ("interval", "cumulative", "all"):
        rc, result = steps(pull_args(window, LATE[0].isoformat(), LATE[1].isoformat()), f"{run_id}-{window}")
        assert rc == EXIT_OK, steps.failure(f"{run_id}-{window}", "pull")
        got[window] = (result, _pulled(steps, f"{run_id}-{window}")[0])
    assert len({r["eval_set_sha256"] for r, _ in got.values()}) == 1
    assert {r["n_eval_frames"] for r, _ in got.values()} == {N_EVAL}
    n_train = {w: r["n_train_frames"] for w, (r, _) in got.items()}
    assert 0 < n_train["interval"] < n_train["cumulative"] < n_train["all"] == sum(
        v["train"] for v in TINY_COUNTS.values())
    interval_train = got["interval"][1].query("split == 'train'")
    times = pd.to_datetime(interval_train["capture_time"], utc=True)
    assert ((times >= LATE[0]) & (times < LATE[1])).all()
    # different training data: different dataset fingerprints
    assert len({r["fingerprint"] for r, _ in got.values()}) == 3


def test_an_interval_pull_holds_the_same_eval_frames_as_a_full_pull(steps, run_id):
    """Only the manifests compared: a champion judged after an 'all' pull and a challenger after an
    'interval' pull of the same revision see the same val/test frames."""
    rc1, _ = steps(pull_args("interval", LATE[0].isoformat(), LATE[1].isoformat()), run_id)
    rc2, _ = steps(pull_args("all"), run_id + "-all")
    assert rc1 == rc2 == EXIT_OK

    def eval_ids(rid):
        m = _pulled(steps, rid)[0]
        return sorted(m[m["split"].isin(["val", "test"])]["frame_id"])

    assert len(eval_ids(run_id + "-all")) == N_EVAL
    assert eval_ids(run_id) == eval_ids(run_id + "-all")


def test_the_fingerprints_are_deterministic(steps, run_id):
    args = pull_args("cumulative", "", MID.isoformat())
    rc1, first = steps(args, run_id)
    rc2, again = steps(args, run_id)
    rc3, other = steps(args, run_id + "-b")
    assert rc1 == rc2 == rc3 == EXIT_OK
    assert first["fingerprint"] == again["fingerprint"] == other["fingerprint"]
    assert first["eval_set_sha256"] == again["eval_set_sha256"] == other["eval_set_sha256"]


def test_cumulative_is_the_default_window(steps, run_id):
    rc, result = steps(["pull", "--dataset-rev", "v1", "--interval-start", LATE[0].isoformat(),
                        "--interval-end", LATE[1].isoformat()], run_id)
    assert rc == EXIT_OK and result["window"] == "cumulative"


def test_a_new_revision_changes_the_eval_set_hash(tmp_path, monkeypatch):
    """On a private registry: v2 adds val/test frames, so its frozen evaluation set is another one."""
    from .conftest import Steps

    reg = Registry(tmp_path / "reg" / "registry")
    reg.init(str(tmp_path / "reg" / "remote"), size=64, seed=4,
             counts={"clear": {"train": 3, "val": 2}, "fog": {"train": 3, "test": 2}},
             start=PERIOD_START, end=PERIOD_END, workers=1)
    reg.add_revision(frames=10, workers=1, now=PERIOD_END + timedelta(days=3))
    monkeypatch.setenv("ARGUS_SCRATCH", str(tmp_path / "scratch"))
    steps = Steps(monkeypatch, tmp_path, reg.path)
    end = PERIOD_END.isoformat()
    rc1, v1 = steps(pull_args("cumulative", "", end, rev="v1"), "a")
    rc2, v2 = steps(pull_args("cumulative", "", end, rev="v2"), "b")
    assert rc1 == rc2 == EXIT_OK
    v2_manifest = pd.read_parquet(reg.dataset / "manifest.parquet")
    n_eval_v2 = int(v2_manifest["split"].isin(["val", "test"]).sum())
    assert v1["n_eval_frames"] == 4 < n_eval_v2 == v2["n_eval_frames"]
    v2_times = pd.to_datetime(v2_manifest["capture_time"], utc=True)
    assert v1["n_train_frames"] == 6
    assert v2["n_train_frames"] == int(((v2_manifest["split"] == "train") & (v2_times < PERIOD_END)).sum())
    assert v2["eval_set_sha256"] == expected_eval_sha(v2_manifest) != v1["eval_set_sha256"]


def test_a_cumulative_pull_validates_and_says_validate_reused_nothing(steps, run_id):
    from argus_tasks.data.access import load_accepted

    rc, pulled = steps(pull_args("cumulative", "", PERIOD_END.isoformat()), run_id)
    assert rc == EXIT_OK
    rc, validated = steps(["validate", "--quarantine-threshold", "0.05", "--min-frames-per-group", "1",
                           "--workers", "2"], run_id)
    assert rc == EXIT_OK, steps.failure(run_id, "validate")
    assert validated["reused"] is False and "anew" in validated["recomputed_because"]
    accepted, _ = load_accepted(steps.run_store(run_id))
    assert len(accepted) == pulled["n_frames"] and int(accepted["split"].isin(["val", "test"]).sum()) == N_EVAL
