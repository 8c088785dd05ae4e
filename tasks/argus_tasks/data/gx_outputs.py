"""The output gate's part of the GX project (see :mod:`argus_tasks.data.gx_project`), from ``schema.py``.

``check-outputs`` runs checkpoint ``argus_output_gate`` on two tables of generated frames:

* ``generated_manifest``: what ``publish`` would write (``schema.OUTPUT_MANIFEST_COLUMNS``: the
  manifest columns plus each frame's lineage) for every generated frame that decodes at its
  source's size: types, value sets, non-null lineage, unique ids, paths and (source, condition);
* ``generated_outputs``: one row per generated frame with the file checks of :data:`OUTPUT_CHECKS`,
  the luma contrast (blank frames), the change from the source (``$min_change``..``$max_change``)
  and the label fidelity (``>= $min_fidelity``), computed by :mod:`argus_tasks.generation.qa`.

The expectations are built here; :func:`argus_tasks.data.gx_project.build_project` writes them with
the input suites, so the committed project holds both gates.
"""

from __future__ import annotations

from argus_tasks.data.schema import (
    FRAME_SIZE_RANGE,
    GENERATED_BLANK_LUMA_STD,
    OUTPUT_CONDITIONS,
    OUTPUT_MANIFEST_COLUMNS,
    SPLITS,
)

OUTPUT_TABLES = ("generated_manifest", "generated_outputs")
OUTPUT_CHECKPOINT = "argus_output_gate"
MIN_FIDELITY_PARAM, MIN_CHANGE_PARAM, MAX_CHANGE_PARAM = "min_fidelity", "min_change", "max_change"
NUMERIC_CHECKS = ("luma_std", "mean_abs_change", "label_fidelity")

# generated-output check column -> what it means when it fails (the reason a frame is flagged)
OUTPUT_CHECKS: dict[str, str] = {
    "source_known": "source frame is not in the run's accepted manifest",
    "source_hash_matches": "the frame was made from another version of its source frame (source sha256 differs)",
    "output_exists": "generated frame file is missing",
    "output_hash_matches": "generated frame sha256 differs from its shard marker",
    "output_decodes": "generated frame PNG does not decode as 8-bit RGB",
    "output_size_matches": "generated frame size differs from its source frame",
    "label_exists": "label file next to the generated frame is missing",
    "label_hash_matches": "label sha256 differs from its shard marker",
    "label_identical": "label is not byte-identical to the source frame's label",
}



def generated_manifest_expectations() -> list:
    import great_expectations.expectations as gxe
    from argus_tasks.data.gx_project import _meta, column_expectations

    exps = column_expectations(OUTPUT_MANIFEST_COLUMNS,
                               "generated manifest columns differ from schema.OUTPUT_MANIFEST_COLUMNS")
    exps += [
        gxe.ExpectColumnValuesToBeInSet(column="condition", value_set=list(OUTPUT_CONDITIONS),
                                        meta=_meta("frame", "condition is not one a generator makes")),
        gxe.ExpectColumnValuesToBeInSet(column="split", value_set=list(SPLITS), meta=_meta("frame", "unknown split")),
        gxe.ExpectColumnValuesToBeUnique(column="frame_id", meta=_meta("frame", "duplicated frame_id")),
        gxe.ExpectColumnValuesToBeUnique(column="frame_path", meta=_meta("frame", "duplicated frame_path")),
        gxe.ExpectCompoundColumnsToBeUnique(
            column_list=["source_frame_id", "condition"],
            meta=_meta("frame", "one source frame generated twice for one condition")),
    ]
    for col in ("frame_sha256", "label_sha256", "source_frame_sha256"):
        exps.append(gxe.ExpectColumnValuesToMatchRegex(column=col, regex=r"^[0-9a-f]{64}$",
                                                       meta=_meta("frame", f"{col} is not a sha256 hex digest")))
    exps += [
        gxe.ExpectColumnValuesToMatchRegex(column="frame_path", regex=r"^frames/[^/]+/[^/]+/[^/]+\.png$",
                                           meta=_meta("frame", "frame_path is not frames/<condition>/<split>/<id>.png")),
        gxe.ExpectColumnValuesToMatchRegex(column="label_path", regex=r"^labels/[^/]+/[^/]+/[^/]+\.png$",
                                           meta=_meta("frame", "label_path is not labels/<condition>/<split>/<id>.png")),
        gxe.ExpectColumnValuesToBeBetween(column="label_fidelity", min_value=0.0, max_value=1.0,
                                          meta=_meta("frame", "label_fidelity outside [0, 1]")),
    ]
    lo, hi = FRAME_SIZE_RANGE
    for name in ("width", "height"):
        exps.append(gxe.ExpectColumnValuesToBeBetween(column=name, min_value=lo, max_value=hi,
                                                      meta=_meta("frame", f"{name} outside {lo}..{hi} px")))
    return exps


def generated_output_expectations() -> list:
    import great_expectations.expectations as gxe
    from argus_tasks.data.gx_project import _meta

    exps = [gxe.ExpectTableColumnsToMatchSet(column_set=["row", "frame_id", "condition", *OUTPUT_CHECKS,
                                                         *NUMERIC_CHECKS],
                                             exact_match=False,
                                             meta=_meta("dataset", "generated output check table is incomplete")),
            gxe.ExpectTableRowCountToBeBetween(min_value=1, meta=_meta("dataset", "no generated frames to check"))]
    for col, reason in OUTPUT_CHECKS.items():
        exps.append(gxe.ExpectColumnValuesToBeInSet(column=col, value_set=[True], meta=_meta("frame", reason)))
    exps += [
        gxe.ExpectColumnValuesToBeBetween(
            column="luma_std", min_value=GENERATED_BLANK_LUMA_STD,
            meta=_meta("frame", f"generated frame is blank (luma std below {GENERATED_BLANK_LUMA_STD})")),
        gxe.ExpectColumnValuesToBeBetween(
            column="mean_abs_change", min_value={"$PARAMETER": MIN_CHANGE_PARAM},
            max_value={"$PARAMETER": MAX_CHANGE_PARAM},
            meta=_meta("frame", "change from the source frame outside the plausible range (min_change..max_change)")),
        gxe.ExpectColumnValuesToBeBetween(
            column="label_fidelity", min_value={"$PARAMETER": MIN_FIDELITY_PARAM},
            meta=_meta("frame", "label fidelity below min_fidelity (the judge no longer finds the source labels)")),
    ]
    return exps
