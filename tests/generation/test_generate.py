"""generate: outputs keyed by (model version, condition, frame id, config hash), a marker with their hashes,
reruns that redo only what is missing, kills that leave no partial output, and clear errors on bad input."""

from __future__ import annotations

import ctypes
import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from argus_tasks.contract import EXIT_PERMANENT
from argus_tasks.generation import writer as W
from argus_tasks.generation.eager import eager_runner, untrained_generator
from argus_tasks.steps import generate as generate_step

from .generate_support import CHILD, MODEL_VERSION, call, prepared_run, small_source, write_model_results

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    return small_source(tmp_path_factory.mktemp("generate-source"))


@pytest.fixture
def factory(monkeypatch):
    """The eager runner in place of load_runner; counts how often the model is loaded."""
    calls = []

    def make(path, device, seed):
        calls.append((path, device, seed))
        return eager_runner(untrained_generator("fog"), seed=seed)

    monkeypatch.setattr(generate_step, "default_runner_factory", make)
    return calls


@pytest.fixture
def env(monkeypatch, source, tmp_path):
    store, xcom = tmp_path / "store", tmp_path / "xcom" / "return.json"
    run_id, run, plan = prepared_run(monkeypatch, source, store, xcom)

    def gen(*args: str) -> tuple[int, dict]:
        return call(monkeypatch, store, run_id, ["generate", *args], xcom)

    return run_id, run, plan, gen


def _decode(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        im.load()
        return np.asarray(im)


def _shard_rows(run, shard_id: str) -> list[dict]:
    plan = run.read_json("plan/shards.json")
    shard = next(s for s in plan["shards"] if s["shard_id"] == shard_id)
    return run.read_dataframe(shard["frames_file"]).to_dict("records")


def _out_dir(seed=0, strength=1.0, condition="fog") -> str:
    return W.output_dir(condition, MODEL_VERSION, W.config_hash(W.generation_config(seed, strength)))


def test_a_shard_writes_the_generated_frames_the_labels_and_a_marker_of_their_hashes(env, factory, capsys):
    run_id, run, plan, gen = env
    rc, result = gen("--shard-id", "fog-0001", "--seed", "0", "--batch-size", "2", "--progress-every-s", "0")
    assert rc == 0, run.read_bytes("generate/fog-0001/failure.json")
    log = capsys.readouterr().err
    assert "generate fog-0001: 2/4 frames (50%; 0 kept from an earlier try)" in log and "frames/s, ETA" in log
    out = _out_dir()
    assert {k: result[k] for k in ("shard_id", "condition", "model_version", "n_frames", "n_written", "n_reused",
                                   "outputs", "reused")} == {
        "shard_id": "fog-0001", "condition": "fog", "model_version": MODEL_VERSION, "n_frames": 4, "n_written": 4,
        "n_reused": 0, "outputs": "generate/shards/fog-0001.json", "reused": False}
    assert result["frames_per_s"] > 0 and result["output_dir"] == out
    assert run.exists("generate/fog-0001/result.json") and len(factory) == 1
    assert factory[0][0].endswith("export/fog/generator.onnx")
    rows = _shard_rows(run, "fog-0001")
    sources = np.stack([_decode(run.read_bytes(f"data/{r['frame_path']}")) for r in rows])
    run_model = eager_runner(untrained_generator("fog"), seed=0)  # the same model, the same batches of 2
    expected = np.concatenate([run_model(sources[:2]), run_model(sources[2:])])
    marker = run.read_json(result["outputs"])
    assert marker["complete"] and marker["model_version"] == MODEL_VERSION and marker["n_frames"] == 4
    planned = next(s for s in run.read_json("plan/shards.json")["shards"] if s["shard_id"] == "fog-0001")
    assert marker["shard_sha256"] == planned["shard_sha256"] and plan["shards"][1]["shard_id"] == "fog-0001"
    for i, (row, entry) in enumerate(zip(rows, marker["frames"], strict=True)):
        fid = row["frame_id"]
        assert entry["output"] == f"{out}/{fid}.png" and entry["label"] == f"{out}/labels/{fid}.png"
        png, label = run.read_bytes(entry["output"]), run.read_bytes(entry["label"])
        assert hashlib.sha256(png).hexdigest() == entry["sha256"]
        assert label == run.read_bytes(f"data/{row['label_path']}")  # byte-identical
        assert entry["label_sha256"] == row["label_sha256"] and entry["source_sha256"] == row["frame_sha256"]
        frame = _decode(png)
        assert frame.shape == sources[i].shape == (64, 64, 3)
        assert np.array_equal(frame, expected[i])
        assert not np.array_equal(frame, sources[i])
    assert not run.exists(W.journal_relpath("fog-0001"))
    assert not [p for p in run.list(out) if p.startswith(".")], "probe or temp files were left"


def test_a_rerun_reuses_a_complete_shard_without_loading_the_model_and_a_retry_redoes_only_what_is_missing(
        env, factory):
    run_id, run, _, gen = env
    assert gen("--shard-id", "fog-0000")[0] == 0
    marker = run.read_json(W.marker_relpath("fog-0000"))
    rc, again = gen("--shard-id", "fog-0000")
    assert rc == 0 and again["reused"] and again["n_reused"] == 4 and again["n_written"] == 0
    assert len(factory) == 1, "the model was loaded for a complete shard"
    # one output deleted, one corrupted (as a broken disk would): only those two are generated again
    gone, bad = marker["frames"][1], marker["frames"][3]
    (run.cache / gone["output"]).unlink()
    run.write_bytes(bad["output"], b"not the recorded frame")
    rc, retry = gen("--shard-id", "fog-0000")
    assert rc == 0 and not retry["reused"] and (retry["n_written"], retry["n_reused"]) == (2, 2)
    assert len(factory) == 2
    after = run.read_json(W.marker_relpath("fog-0000"))
    for entry in after["frames"]:
        assert hashlib.sha256(run.read_bytes(entry["output"])).hexdigest() == entry["sha256"]
    assert after["frames"][0] == marker["frames"][0]


def test_strength_blends_source_and_generated_in_uint8_and_keys_its_own_outputs(env, factory):
    run_id, run, _, gen = env
    for strength in ("1.0", "0.0", "0.25"):
        assert gen("--shard-id", "rain-0000", "--strength", strength)[0] == 0
    dirs = {s: _out_dir(strength=s, condition="rain") for s in (1.0, 0.0, 0.25)}
    assert len(set(dirs.values())) == 3
    for row in _shard_rows(run, "rain-0000"):
        fid, src = row["frame_id"], _decode(run.read_bytes(f"data/{row['frame_path']}")).astype(np.float32)
        full, none, quarter = (_decode(run.read_bytes(f"{dirs[s]}/{fid}.png")) for s in (1.0, 0.0, 0.25))
        assert np.array_equal(none, src.astype(np.uint8))
        assert np.array_equal(quarter, np.clip(np.rint(0.75 * src + 0.25 * full), 0, 255).astype(np.uint8))
    rc, _ = gen("--shard-id", "rain-0000", "--strength", "1.5")
    assert rc == EXIT_PERMANENT and "outside [0, 1]" in run.read_json("generate/rain-0000/failure.json")["message"]


def _wait_for_journal(run, shard_id: str, n: int, proc, timeout: float = 90.0) -> None:
    rel, deadline = W.journal_relpath(shard_id), time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, f"the child ended early: {proc.communicate()[1][-2000:]}"
        if run.exists(rel) and len(run.read_json(rel)["frames"]) >= n:
            return
        time.sleep(0.05)
    raise AssertionError(f"no journal of {n} frames within {timeout}s")


def _child_env() -> dict:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "tasks"), os.environ.get("PYTHONPATH", "")])}


def test_a_shard_killed_mid_way_leaves_no_partial_output_and_the_rerun_completes_only_the_rest(
        monkeypatch, source, tmp_path, factory):
    store, xcom = tmp_path / "store", tmp_path / "xcom" / "return.json"
    run_id, run, _ = prepared_run(monkeypatch, source, store, xcom, shard_size=8)
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(store), run_id, "fog-0000", "0.4", "--batch-size", "1",
                             "--progress-every-s", "0"], env=_child_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        _wait_for_journal(run, "fog-0000", 2, proc)
    finally:
        proc.send_signal(signal.SIGKILL)
        _, child_log = proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert "generate fog-0000: 2/8 frames (25%" in child_log and "frames/s, ETA" in child_log
    out = _out_dir()
    journal = run.read_json(W.journal_relpath("fog-0000"))
    assert not run.exists(W.marker_relpath("fog-0000"))
    done = {e["frame_id"]: e for e in journal["frames"]}
    assert 2 <= len(done) < 8
    for folder in (out, f"{out}/labels"):
        for name in run.list(folder):
            path = run.cache / folder / name
            if name.startswith(".") or path.is_dir():
                assert name.endswith(".tmp") or path.is_dir(), name  # hidden temp files only
                continue
            assert _decode(path.read_bytes()).shape[:2] == (64, 64), f"partial output {path}"
    for entry in done.values():
        assert hashlib.sha256(run.read_bytes(entry["output"])).hexdigest() == entry["sha256"]
    rc, result = call(monkeypatch, store, run_id, ["generate", "--shard-id", "fog-0000"], xcom)
    assert rc == 0 and (result["n_reused"], result["n_written"]) == (len(done), 8 - len(done))
    marker = run.read_json(W.marker_relpath("fog-0000"))
    assert marker["complete"] and len(marker["frames"]) == 8
    assert all(marker["frames"][i] == done[e["frame_id"]] for i, e in enumerate(marker["frames"]) if e["frame_id"]
               in done)


def _drop_dac_override() -> None:
    """Root ignores permission bits through CAP_DAC_OVERRIDE: drop it from the child's exec'd program."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(24, 1, 0, 0, 0) != 0:  # PR_CAPBSET_DROP, CAP_DAC_OVERRIDE
        raise OSError(ctypes.get_errno(), "PR_CAPBSET_DROP")


def test_an_unwritable_output_folder_is_a_permanent_error_naming_it(monkeypatch, source, tmp_path):
    store, xcom = tmp_path / "store", tmp_path / "xcom" / "return.json"
    run_id, run, _ = prepared_run(monkeypatch, source, store, xcom)
    outputs = run.local_dir(W.OUTPUTS)
    outputs.chmod(0o555)
    try:
        try:
            proc = subprocess.run([sys.executable, "-c", CHILD, str(store), run_id, "fog-0000", "0"],
                                  env=_child_env(), capture_output=True, text=True, timeout=120,
                                  preexec_fn=_drop_dac_override if os.geteuid() == 0 else None)
        except subprocess.SubprocessError as exc:
            pytest.skip(f"running as root and cannot drop CAP_DAC_OVERRIDE here: {exc}")
    finally:
        outputs.chmod(0o755)
    assert proc.returncode == EXIT_PERMANENT, proc.stderr[-2000:]
    message = run.read_json("generate/fog-0000/failure.json")["message"]
    assert f"the output folder {run.url(_out_dir())} is not writable" in message
    assert "Permission denied" in message and "write access" in message
    assert not run.exists(W.marker_relpath("fog-0000"))


def test_a_source_frame_that_does_not_decode_fails_naming_the_frame_and_its_file(env, factory):
    run_id, run, _, gen = env
    bad = _shard_rows(run, "fog-0000")[2]
    path = run.cache / "data" / bad["frame_path"]
    good = path.read_bytes()
    path.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    rc, _ = gen("--shard-id", "fog-0000", "--batch-size", "1", "--progress-every-s", "3600")
    assert rc == EXIT_PERMANENT
    message = run.read_json("generate/fog-0000/failure.json")["message"]
    assert f"source frame {bad['frame_id']} ({run.url('data/' + bad['frame_path'])}) does not decode" in message
    assert not run.exists(W.marker_relpath("fog-0000"))
    # the two frames before it were finished and journaled on the way out: the retry keeps them
    assert len(run.read_json(W.journal_relpath("fog-0000"))["frames"]) == 2
    path.write_bytes(good)
    rc, result = gen("--shard-id", "fog-0000")
    assert rc == 0 and (result["n_reused"], result["n_written"]) == (2, 2)


def test_bad_inputs_fail_at_once_and_say_what_to_do(env, factory):
    run_id, run, _, gen = env

    def failure(shard: str) -> str:
        return run.read_json(f"generate/{shard}/failure.json")["message"]

    assert gen("--shard-id", "fog-0099")[0] == EXIT_PERMANENT
    assert "shard 'fog-0099' is not in this run's plan, which holds fog-0000 .. rain-0001" in failure("fog-0099")
    write_model_results(run, ("fog",), version="7", export_version="6")
    assert gen("--shard-id", "fog-0000")[0] == EXIT_PERMANENT
    assert "exported version 6 of argus-weather-fog, but this run pinned version 7" in failure("fog-0000")
    run.write_json("resolve/result.json", {"models": {"fog": json.loads('{"version": "7"}')}})
    assert gen("--shard-id", "rain-0000")[0] == EXIT_PERMANENT
    assert "no model version of rain pinned" in failure("rain-0000")
    write_model_results(run, ("fog",))
    run.write_bytes("export/fog/generator.onnx", b"tampered")
    assert gen("--shard-id", "fog-0000")[0] == EXIT_PERMANENT
    assert "not the exported" in failure("fog-0000") and not factory
