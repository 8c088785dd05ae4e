"""Hard-set versions: content hash, write-once files, the latest pointer never moves back in history."""

from __future__ import annotations

from argus_tasks.hardframes import versioning
from argus_tasks.hardframes.storage import StoreFiles, canonical_json


def content(frames, until: str, **settings) -> dict:
    return {"format": versioning.FORMAT, "condition": "fog", "settings": {"last_n": 5, **settings},
            "history_until": until, "frames": [{"frame_id": f} for f in frames]}


def test_the_version_is_the_hash_of_the_content_whatever_the_key_order():
    a = content(["x", "y"], "2026-03-01T00:00:00Z")
    b = dict(reversed(list(a.items())))
    assert versioning.version_of(a) == versioning.version_of(b)
    assert canonical_json(a) == canonical_json(b)
    assert versioning.version_of(a) != versioning.version_of(content(["x"], "2026-03-01T00:00:00Z"))
    assert versioning.version_of(a) != versioning.version_of(content(["x", "y"], "2026-03-01T00:00:00Z", last_n=3))


def test_publish_is_idempotent_and_latest_never_goes_back_to_an_older_history(tmp_path):
    files = StoreFiles(str(tmp_path))
    new = versioning.publish(files, "fog", content(["x"], "2026-03-02T00:00:00Z"), by={"run_id": "b"})
    assert new["created"] and new["latest_moved"]
    pointer = (tmp_path / "hardsets" / "fog" / "latest.json").read_bytes()
    same = versioning.publish(files, "fog", content(["x"], "2026-03-02T00:00:00Z"), by={"run_id": "c"})
    assert (same["sha"], same["created"], same["latest_moved"]) == (new["sha"], False, False)
    assert (tmp_path / "hardsets" / "fog" / "latest.json").read_bytes() == pointer, "the pointer was rewritten"
    # a run that finished late, with an older history: its set is stored, latest stays
    old = versioning.publish(files, "fog", content(["y"], "2026-03-01T00:00:00Z"), by={"run_id": "a"})
    assert old["created"] and not old["latest_moved"] and "newer history" in old["latest"]
    assert versioning.read(files, "fog")[0] == new["sha"]
    assert versioning.read(files, "fog", old["sha"])[1]["frames"] == [{"frame_id": "y"}]
    assert versioning.read(files, "rain") is None
