"""The committed GX project is the one generated from schema.py, and is found explicitly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from argus_tasks.data import gx_project as gp
from argus_tasks.data.schema import MANIFEST_COLUMNS

REPO_GX = Path(__file__).resolve().parents[2] / "great_expectations"


def _content(path: Path) -> list:
    suite = json.loads(path.read_text())
    return [(e["type"], json.dumps(e["kwargs"], sort_keys=True), json.dumps(e["meta"], sort_keys=True))
            for e in suite["expectations"]]


def test_committed_suites_match_the_schema(tmp_path):
    generated = gp.build_project(tmp_path / "gx")
    for table in gp.TABLES:
        name = f"{gp.suite_name(table)}.json"
        assert _content(REPO_GX / "expectations" / name) == _content(generated / "expectations" / name), (
            f"great_expectations/expectations/{name} is stale: run `python -m argus_tasks.data.gx_project`")
    manifest = _content(REPO_GX / "expectations" / "argus_manifest.json")
    checked = {json.loads(kw)["column"] for t, kw, _ in manifest if t == "expect_column_values_to_be_of_type"}
    assert checked == set(MANIFEST_COLUMNS)
    checkpoint = json.loads((REPO_GX / "checkpoints" / f"{gp.CHECKPOINT}.json").read_text())
    assert [a["type"] for a in checkpoint["actions"]] == ["update_data_docs"]
    assert len(checkpoint["validation_definitions"]) == len(gp.TABLES)


def test_gx_root_is_found_explicitly(monkeypatch, tmp_path):
    monkeypatch.delenv(gp.ENV_GX_ROOT, raising=False)
    assert gp.gx_root() == REPO_GX.resolve()
    monkeypatch.setenv(gp.ENV_GX_ROOT, str(tmp_path))
    with pytest.raises(FileNotFoundError, match=gp.ENV_GX_ROOT):
        gp.gx_root()
    (tmp_path / "great_expectations.yml").write_text("config_version: 4\n")
    assert gp.gx_root() == tmp_path.resolve()


def test_run_copy_points_the_datasource_at_the_run_tables(tmp_path):
    copy = gp.run_copy(REPO_GX, tmp_path / "gx", tmp_path / "tables")
    from ruamel.yaml import YAML

    doc = YAML().load((copy / "great_expectations.yml").read_text())
    assert doc["fluent_datasources"][gp.DATASOURCE]["base_directory"] == str((tmp_path / "tables").resolve())
    assert "base_directory: tables" in (REPO_GX / "great_expectations.yml").read_text()
    assert not (copy / "uncommitted").exists()
