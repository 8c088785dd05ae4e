"""The Great Expectations (1.x) project of the validation gate, generated from ``schema.py``.

The project is a GX *file* context committed at ``<repo>/great_expectations/``: expectation
suites, validation definitions, and the checkpoint ``argus_data_gate`` that validates four tables
and builds Data Docs. The suites are generated from :mod:`argus_tasks.data.schema` by
:func:`build_project` (``python -m argus_tasks.data.gx_project [ROOT]``); a test checks that the
committed files match the schema.

Tables (parquet files the validate step writes for each run):

* ``manifest``      the pulled manifest as is: columns, types, value sets, ids, hashes, sizes,
                    per-condition brightness;
* ``frame_checks``  one row per frame with the outcome of each file check (decode, size, hash,
                    label) computed by :mod:`argus_tasks.data.frame_checks`;
* ``groups``        frames per condition and split (the minimum is the runtime parameter
                    ``min_frames_per_group``);
* ``conditions``    one row: mean brightness per condition (night darker than clear).

The output gate, checkpoint ``argus_output_gate``, validates the generated frames of a generation
run (tables ``generated_manifest`` and ``generated_outputs``; run by ``check-outputs``). Its
expectations are built from the same schema module, in :mod:`argus_tasks.data.gx_outputs`.

Each expectation carries ``meta.level``: ``frame`` when a failure points at individual frames
(they can be quarantined) or ``dataset`` when it condemns the dataset as a whole.

Where the project comes from (explicit, in this order): ``$ARGUS_GX_ROOT`` (the task image sets
``/opt/argus/great_expectations``, where it copies the folder); else the ``great_expectations``
folder at the root of the repository holding this package (a checkout, editable install); else a
``great_expectations`` folder beside the package that holds a ``great_expectations.yml`` (never the
GX library of the same name in site-packages). A run
validates in a private copy of it (``<run>/validate/gx/``) so that concurrent runs never share
result stores and a read-only image works; the copy's datasource points at the run's tables.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import tempfile
import uuid
from pathlib import Path

from argus_tasks.data.gx_outputs import (
    OUTPUT_CHECKPOINT,
    OUTPUT_TABLES,
    generated_manifest_expectations,
    generated_output_expectations,
)
from argus_tasks.data.schema import (
    BRIGHTNESS_RANGE,
    BRIGHTNESS_STD_RANGE,
    CONDITION_MEAN_BRIGHTNESS,
    CONDITIONS_ALL,
    FRAME_SIZE_RANGE,
    MANIFEST_COLUMNS,
    SPLITS,
)

ENV_GX_ROOT = "ARGUS_GX_ROOT"
DATASOURCE = "argus_run_tables"
TABLES = ("manifest", "frame_checks", "groups", "conditions")
CHECKPOINT = "argus_data_gate"
MIN_FRAMES_PARAM = "min_frames_per_group"
DOCS_SITE = "local_site"
CHECKPOINTS = {CHECKPOINT: TABLES, OUTPUT_CHECKPOINT: OUTPUT_TABLES}

# schema dtype -> the type name GX observes for a pandas column of that dtype
GX_TYPES = {"string": "str", "int64": "int64", "float64": "float64", "datetime64[ns, UTC]": "Timestamp"}

# frame check column -> what it means when it fails (the quarantine reason)
FRAME_CHECKS: dict[str, str] = {
    "frame_exists": "frame file is missing",
    "frame_decodes": "frame PNG does not decode",
    "frame_size_matches": "frame size differs from the manifest",
    "frame_hash_matches": "frame sha256 differs from the manifest",
    "label_exists": "label file is missing",
    "label_decodes": "label PNG does not decode or is not single-channel",
    "label_size_matches": "label size differs from the frame",
    "label_hash_matches": "label sha256 differs from the manifest",
    "label_ids_known": "label holds class ids outside schema.CLASSES",
}


def suite_name(table: str) -> str:
    return f"argus_{table}"


def _meta(level: str, reason: str) -> dict:
    return {"level": level, "reason": reason}



def column_expectations(columns: dict, mismatch: str) -> list:
    """Exactly ``columns`` (schema name -> (dtype, doc)), each of its dtype and never null."""
    import great_expectations.expectations as gxe

    exps = [gxe.ExpectTableColumnsToMatchSet(column_set=list(columns), exact_match=True,
                                             meta=_meta("dataset", mismatch))]
    for name, (dtype, _) in columns.items():
        exps.append(gxe.ExpectColumnValuesToBeOfType(
            column=name, type_=GX_TYPES[dtype], meta=_meta("dataset", f"column {name} is not of type {dtype}")))
    for name in columns:
        exps.append(gxe.ExpectColumnValuesToNotBeNull(column=name, meta=_meta("frame", f"{name} is null")))
    return exps

def manifest_expectations() -> list:
    import great_expectations.expectations as gxe

    exps = column_expectations(MANIFEST_COLUMNS, "manifest columns differ from schema.MANIFEST_COLUMNS")
    exps.insert(1, gxe.ExpectTableRowCountToBeBetween(min_value=1, meta=_meta("dataset", "manifest is empty")))
    exps += [
        gxe.ExpectColumnValuesToBeInSet(column="condition", value_set=list(CONDITIONS_ALL),
                                        meta=_meta("frame", "unknown condition")),
        gxe.ExpectColumnValuesToBeInSet(column="split", value_set=list(SPLITS), meta=_meta("frame", "unknown split")),
        gxe.ExpectColumnValuesToBeUnique(column="frame_id", meta=_meta("frame", "duplicated frame_id")),
        gxe.ExpectColumnValuesToBeUnique(column="frame_sha256", meta=_meta("frame", "duplicated frame (same sha256)")),
        gxe.ExpectColumnValuesToBeUnique(column="frame_path", meta=_meta("frame", "duplicated frame_path")),
        gxe.ExpectColumnValuesToMatchRegex(column="frame_sha256", regex=r"^[0-9a-f]{64}$",
                                           meta=_meta("frame", "frame_sha256 is not a sha256 hex digest")),
        gxe.ExpectColumnValuesToMatchRegex(column="label_sha256", regex=r"^[0-9a-f]{64}$",
                                           meta=_meta("frame", "label_sha256 is not a sha256 hex digest")),
        gxe.ExpectColumnValuesToMatchRegex(column="frame_path", regex=r"^frames/[^/]+/[^/]+/[^/]+\.png$",
                                           meta=_meta("frame", "frame_path is not frames/<condition>/<split>/<id>.png")),
        gxe.ExpectColumnValuesToMatchRegex(column="label_path", regex=r"^labels/[^/]+/[^/]+/[^/]+\.png$",
                                           meta=_meta("frame", "label_path is not labels/<condition>/<split>/<id>.png")),
    ]
    lo, hi = FRAME_SIZE_RANGE
    for name in ("width", "height"):
        exps.append(gxe.ExpectColumnValuesToBeBetween(column=name, min_value=lo, max_value=hi,
                                                      meta=_meta("frame", f"{name} outside {lo}..{hi} px")))
    exps.append(gxe.ExpectColumnValuesToBeBetween(
        column="brightness_std", min_value=BRIGHTNESS_STD_RANGE[0], max_value=BRIGHTNESS_STD_RANGE[1],
        meta=_meta("frame", f"brightness_std outside {BRIGHTNESS_STD_RANGE} (blank or broken frame)")))
    for cond, (lo, hi) in BRIGHTNESS_RANGE.items():
        exps.append(gxe.ExpectColumnValuesToBeBetween(
            column="brightness_mean", min_value=lo, max_value=hi, row_condition=f'condition=="{cond}"',
            condition_parser="pandas", meta=_meta("frame", f"brightness_mean implausible for {cond} ({lo}..{hi})")))
    return exps


def frame_check_expectations() -> list:
    import great_expectations.expectations as gxe

    exps = [gxe.ExpectTableColumnsToMatchSet(column_set=["row", "frame_id", *FRAME_CHECKS], exact_match=False,
                                             meta=_meta("dataset", "frame check table is incomplete"))]
    for col, reason in FRAME_CHECKS.items():
        exps.append(gxe.ExpectColumnValuesToBeInSet(column=col, value_set=[True], meta=_meta("frame", reason)))
    return exps


def group_expectations() -> list:
    import great_expectations.expectations as gxe

    return [
        gxe.ExpectTableRowCountToEqual(value=len(CONDITIONS_ALL) * len(SPLITS),
                                       meta=_meta("dataset", "group table must list every condition and split")),
        gxe.ExpectColumnValuesToBeBetween(
            column="n_frames", min_value={"$PARAMETER": MIN_FRAMES_PARAM},
            meta=_meta("dataset", "too few frames for a condition and split (min_frames_per_group)")),
    ]


def condition_expectations() -> list:
    import great_expectations.expectations as gxe

    exps = []
    for cond, (lo, hi) in CONDITION_MEAN_BRIGHTNESS.items():
        exps.append(gxe.ExpectColumnValuesToBeBetween(
            column=f"{cond}_mean_brightness", min_value=lo, max_value=hi,
            meta=_meta("dataset", f"average brightness of the {cond} frames outside {lo}..{hi}")))
    exps.append(gxe.ExpectColumnPairValuesAToBeGreaterThanB(
        column_A="clear_mean_brightness", column_B="night_mean_brightness", ignore_row_if="either_value_is_missing",
        meta=_meta("dataset", "night frames are not darker than clear frames on average")))
    return exps


EXPECTATIONS = {"manifest": manifest_expectations, "frame_checks": frame_check_expectations,
                "groups": group_expectations, "conditions": condition_expectations,
                "generated_manifest": generated_manifest_expectations,
                "generated_outputs": generated_output_expectations}


def _placeholder_tables(folder: Path) -> None:
    import pandas as pd

    folder.mkdir(parents=True, exist_ok=True)
    for table in (*TABLES, *OUTPUT_TABLES):
        pd.DataFrame({"placeholder": [0]}).to_parquet(folder / f"{table}.parquet")


def build_project(root: Path) -> Path:
    """(Re)generate the GX file context at ``root`` from the schema (suites, validation definitions, checkpoint)."""
    from great_expectations.data_context.types.base import ProgressBarsConfig

    import great_expectations as gx

    root = Path(root).resolve()
    for sub in ("expectations", "validation_definitions", "checkpoints", "uncommitted", "plugins"):
        shutil.rmtree(root / sub, ignore_errors=True)
    (root / "great_expectations.yml").unlink(missing_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        tables = Path(tmp) / "tables"
        _placeholder_tables(tables)
        context = gx.get_context(mode="file", context_root_dir=str(root))
        context.variables.progress_bars = ProgressBarsConfig(globally=False)
        context.variables.save()
        source = context.data_sources.add_pandas_filesystem(DATASOURCE, base_directory=tables)
        for checkpoint, checkpoint_tables in CHECKPOINTS.items():
            definitions = []
            for table in checkpoint_tables:
                asset = source.add_parquet_asset(table)
                batch = asset.add_batch_definition_path(f"{table}_file", path=f"{table}.parquet")
                suite = context.suites.add(gx.ExpectationSuite(
                    name=suite_name(table), expectations=EXPECTATIONS[table](),
                    meta={"generated_by": "argus_tasks.data.gx_project from argus_tasks.data.schema"}))
                definitions.append(context.validation_definitions.add(
                    gx.ValidationDefinition(name=f"argus_{table}_validation", data=batch, suite=suite)))
            context.checkpoints.add(gx.Checkpoint(
                name=checkpoint, validation_definitions=definitions,
                actions=[gx.checkpoint.UpdateDataDocsAction(name="update_data_docs", site_names=[DOCS_SITE])],
                result_format={"result_format": "COMPLETE"}))
    set_tables_dir(root / "great_expectations.yml", "tables")  # a placeholder: each run sets its own
    _edit_yml(root / "great_expectations.yml", lambda doc: doc.__setitem__("analytics_enabled", False))
    shutil.rmtree(root / "uncommitted", ignore_errors=True)
    _stable_ids(root)
    return root


_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _stable_ids(root: Path) -> None:
    """Replace GX's random ids by ids derived from their order of appearance, consistently across files,
    so regenerating an unchanged project leaves git with nothing to commit."""
    files = sorted(p for p in root.rglob("*") if p.is_file() and (p.suffix in (".json", ".yml") or p.name == ".ge_store_backend_id"))
    mapping: dict[str, str] = {}
    for p in files:
        for old in _UUID.findall(p.read_text()):
            mapping.setdefault(old, str(uuid.uuid5(uuid.NAMESPACE_URL, f"argus-gx/{len(mapping)}")))
    for p in files:
        text = p.read_text()
        new = _UUID.sub(lambda m: mapping[m.group(0)], text)
        if new != text:
            p.write_text(new)


def _edit_yml(yml: Path, change) -> None:
    """Apply ``change(doc)`` to a YAML file, keeping its comments."""
    from ruamel.yaml import YAML

    yaml = YAML()
    yaml.preserve_quotes = True
    yaml.width = 4096  # never fold long paths
    doc = yaml.load(yml.read_text())
    change(doc)
    with open(yml, "w") as fh:
        yaml.dump(doc, fh)


def set_tables_dir(yml: Path, tables: str) -> None:
    """Point the project's datasource at folder ``tables``."""
    _edit_yml(yml, lambda doc: doc["fluent_datasources"][DATASOURCE].__setitem__("base_directory", tables))


def gx_root() -> Path:
    """The committed GX project folder (see the module docstring for the order of the candidates)."""
    import argus_tasks

    env = os.environ.get(ENV_GX_ROOT, "").strip()
    pkg = Path(argus_tasks.__file__).resolve().parent
    candidates = [Path(env)] if env else [pkg.parent.parent / "great_expectations", pkg.parent / "great_expectations"]
    for cand in candidates:
        if (cand / "great_expectations.yml").is_file():
            return cand.resolve()
    where = f"{ENV_GX_ROOT}={env}" if env else " or ".join(str(c) for c in candidates)
    raise FileNotFoundError(f"no Great Expectations project (great_expectations.yml) at {where}; "
                            f"set {ENV_GX_ROOT} to the repository's great_expectations/ folder")


def run_copy(root: Path, workdir: Path, tables: Path) -> Path:
    """A private copy of project ``root`` at ``workdir`` whose datasource reads ``tables``."""
    shutil.rmtree(workdir, ignore_errors=True)
    shutil.copytree(root, workdir, ignore=shutil.ignore_patterns("uncommitted", "__pycache__", "*.pyc"))
    set_tables_dir(workdir / "great_expectations.yml", str(Path(tables).resolve()))
    return workdir


if __name__ == "__main__":  # python -m argus_tasks.data.gx_project [ROOT]
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[3] / "great_expectations"
    print(f"wrote the GX project at {build_project(target)}")
