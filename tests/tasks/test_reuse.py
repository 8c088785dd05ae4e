"""The reuse key: data, config and code; what a rerun reuses, and why it recomputes."""

from __future__ import annotations

import logging

from argus_tasks import reuse
from argus_tasks.store import RunStore

CONFIG = {"condition": "fog", "model_config": {"steps": 12, "lr": 0.001, "nce_layers": (0, 1)}, "init_from": "scratch"}


def test_the_key_is_deterministic_and_each_part_changes_it():
    key = reuse.make_key("fp-1", CONFIG, "a" * 40)
    assert key.digest == reuse.make_key("fp-1", dict(CONFIG), "a" * 40).digest
    others = [reuse.make_key("fp-2", CONFIG, "a" * 40),
              reuse.make_key("fp-1", {**CONFIG, "init_from": "champion"}, "a" * 40),
              reuse.make_key("fp-1", CONFIG, "b" * 40)]
    assert len({key.digest, *(k.digest for k in others)}) == 4
    assert reuse.differences(key.to_dict(), key) == []
    assert [d.split(" ")[0] for d in (reuse.differences(key.to_dict(), k)[0] for k in others)] == [
        "data", "config", "code"]


def test_the_source_hash_follows_the_package_files_so_an_unknown_commit_still_changes(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "steps").mkdir(parents=True)
    (pkg / "steps" / "train.py").write_text("STEPS = 1\n")
    (pkg / "__pycache__").mkdir()
    (pkg / "__pycache__" / "x.pyc").write_bytes(b"compiled")
    before = reuse.source_sha256(str(pkg))
    (pkg / "__pycache__" / "x.pyc").write_bytes(b"recompiled")  # caches do not count
    reuse.source_sha256.cache_clear()
    assert reuse.source_sha256(str(pkg)) == before
    (pkg / "steps" / "train.py").write_text("STEPS = 2\n")
    reuse.source_sha256.cache_clear()
    assert reuse.source_sha256(str(pkg)) != before
    reuse.source_sha256.cache_clear()
    # the installed package is hashed for real: a key made with commit "unknown" carries it
    assert reuse.make_key("fp", {}, "unknown").code == {"git_commit": "unknown",
                                                        "source_sha256": reuse.source_sha256()}


def test_differences_name_what_changed():
    old = reuse.make_key("fp-1", CONFIG, "a" * 40)
    new = reuse.make_key("fp-2", {**CONFIG, "model_config": {**CONFIG["model_config"], "steps": 20}}, "b" * 40)
    diffs = reuse.differences(old.to_dict(), new)
    assert diffs[0] == "data changed (fingerprint fp-1 -> fp-2)"
    assert diffs[1] == "config changed (model_config.steps: 12 -> 20)"
    assert diffs[2] == f"code changed (git_commit {'a' * 12} -> {'b' * 12})"
    assert reuse.differences(None, new) == ["the earlier result carries no reuse key (written by older code)"]


def test_check_reuses_a_matching_result_and_withdraws_a_stale_one(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="argus_tasks.reuse")
    run = RunStore(str(tmp_path), "dag", "run")
    key = reuse.make_key("fp-1", CONFIG, "a" * 40)
    where = "train/fog/result.json"
    first = reuse.check(run, where, key, "train fog")
    assert (first.reuse, first.reason) == (False, "no earlier result in this run")
    run.write_json(where, reuse.stamp({"model_version": "3"}, key, try_number=2, reason=first.reason))

    again = reuse.check(run, where, key, "train fog")
    assert again.reuse and again.result["model_version"] == "3"
    assert again.result["reused"] == {"from_try": 2, "key": key.digest}
    assert "recomputed_because" not in again.result
    assert "REUSING the result of try 2" in caplog.text

    other = reuse.make_key("fp-2", CONFIG, "a" * 40)
    stale = reuse.check(run, where, other, "train fog")
    assert not stale.reuse and stale.reason == "data changed (fingerprint fp-1 -> fp-2)"
    assert not run.exists(where)  # withdrawn: a failing recompute cannot leave it looking valid
    assert "NOT reusing the earlier result (try 2" in caplog.text
