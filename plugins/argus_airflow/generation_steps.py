"""The heavy steps of ``argus_weather_generation``, each declared once (``pull``/``validate``/``segmenter``
are the training DAG's own: the same source data contract and the same pinned judge)."""

from __future__ import annotations

from datetime import timedelta

from argus_airflow.step_spec import StepSpec

CONDITIONS_ARG = "{{ ti.xcom_pull(task_ids='select_conditions') | join(',') }}"

PULL_SOURCE = StepSpec(
    name="pull",
    kind="data",
    cpu="2",
    memory="4Gi",
    arguments=("--dataset-rev", "{{ params.dataset_rev }}", "--interval-start", "", "--interval-end", "",
               "--window", "all"),
    doc="Pull the source revision's frames from the DVC dataset registry; verify their hashes.",
)

RESOLVE = StepSpec(
    name="resolve",
    kind="data",
    memory="1Gi",
    timeout=timedelta(minutes=15),
    arguments=("--conditions", CONDITIONS_ARG, "--model-version", "{{ params.model_version }}"),
    doc="Pin the model version of each condition for the whole run (a promotion meanwhile mixes nothing).",
)

EXPORT = StepSpec(
    name="export",
    kind="evaluation",
    cpu="4",
    memory="8Gi",
    arguments=("--condition", "{{ task.condition }}", "--seed", "{{ params.seed }}"),
    doc="Export the pinned generator once per version (ONNX) and check parity with the eager model.",
)

PLAN = StepSpec(
    name="plan-shards",
    kind="data",
    memory="2Gi",
    timeout=timedelta(minutes=15),
    arguments=("--conditions", CONDITIONS_ARG, "--splits", "{{ params.splits | join(',') }}",
               "--shard-size", "{{ params.shard_size }}"),
    doc="Split the clear source frames into deterministic shards per condition (at most 1,000).",
)

GENERATE = StepSpec(
    # the exported ONNX artifact runs on onnxruntime's CPU provider (the pinned wheel has no CUDA one):
    # no GPU is requested for a step that would not use it; onnxruntime-gpu in the task image would change that
    name="generate",
    kind="evaluation",
    cpu="4",
    memory="8Gi",
    timeout=timedelta(hours=2),
    arguments=("--shard-id", "{{ task.item }}", "--seed", "{{ params.seed }}", "--strength", "{{ params.strength }}"),
    doc="Translate one shard's frames with the exported champion; idempotent per frame, atomic writes.",
)

CHECK = StepSpec(
    name="check-outputs",
    kind="evaluation",
    gpus=1,
    cpu="4",
    memory="8Gi",
    arguments=("--conditions", CONDITIONS_ARG, "--max-bad-fraction", "{{ params.max_bad_fraction }}",
               "--min-fidelity", "{{ params.min_fidelity }}"),
    doc="Great Expectations suite of the outputs: decodes, sizes, not blank, plausible change, labels "
        "identical, label fidelity; bad frames are excluded, too many fail the run.",
)

PUBLISH = StepSpec(
    name="publish",
    kind="data",
    cpu="2",
    memory="4Gi",
    arguments=("--output-dataset", "{{ params.output_dataset }}"),
    doc="Publish the accepted frames as a new revision of the output dataset in the DVC registry, atomically.",
)

GENERATION_REPORT = StepSpec(
    name="generation-report",
    kind="report",
    memory="2Gi",
    timeout=timedelta(minutes=15),
    arguments=("--conditions", CONDITIONS_ARG, "--output-dataset", "{{ params.output_dataset }}"),
    doc="Counts, throughput, QA, sample grid and lowest-fidelity contact sheet; runs whatever happened upstream.",
)

GENERATION_STEPS = (PULL_SOURCE, RESOLVE, EXPORT, PLAN, GENERATE, CHECK, PUBLISH, GENERATION_REPORT)
