"""The heavy steps of ``argus_weather_training``, each declared once."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

from argus_airflow.step_spec import StepSpec, quantity, torchrun_command

CONDITION = "{{ task.condition }}"
GROUP_ID = "per_condition"
"""The task group expanded over the conditions (its task ids are not prefixed: ``train``, ``evaluate``...)."""

PULL = StepSpec(
    name="pull",
    kind="data",
    cpu="2",
    memory="4Gi",
    arguments=(
        "--dataset-rev", "{{ params.dataset_rev }}",
        # a manual run without a logical date has no data interval (the names are undefined then)
        "--interval-start", "{{ data_interval_start.isoformat() if data_interval_start is defined and "
                            "data_interval_start else '' }}",
        "--interval-end", "{{ data_interval_end.isoformat() if data_interval_end is defined and "
                          "data_interval_end else '' }}",
        "--window", "{{ params.data_window }}",
    ),
    doc="Pull the frames of this run's data interval from the DVC dataset registry; verify their hashes.",
)

VALIDATE = StepSpec(
    name="validate",
    kind="data",
    cpu="2",
    memory="4Gi",
    arguments=(
        "--quarantine-threshold", "{{ params.quarantine_threshold }}",
        "--min-frames-per-group", "{{ params.min_frames_per_group }}",
    ),
    doc="Great Expectations gate: bad data never reaches training.",
)

BUDGET = StepSpec(
    name="budget",
    kind="data",
    memory="1Gi",
    timeout=timedelta(minutes=15),
    arguments=(
        "--conditions", "{{ params.conditions | join(',') }}",
        "--model-config", "{{ params.model_config }}",
        "--steps", "{{ params.train_steps or 0 }}",
        "--max-gpu-hours", "{{ '' if params.max_gpu_hours is none else params.max_gpu_hours }}",
        "--retrain-segmenter", "{{ 'true' if params.retrain_segmenter else 'false' }}",
    ),
    doc="GPU-hour budget gate (Param max_gpu_hours): estimates the run's GPU time from past runs in MLflow and "
        "stops the run, before any GPU is taken, when the estimate is over budget.",
)

SEGMENTER = StepSpec(
    name="segmenter",
    kind="evaluation",
    gpus=1,
    cpu="4",
    memory="8Gi",
    arguments=("{{ '--retrain' if params.retrain_segmenter else '--no-retrain' }}",),
    doc="Make sure the reference segmenter (the judge) is registered; train it only when missing.",
)

TRAIN = StepSpec(
    name="train",
    kind="training",
    gpus=1,
    cpu="8",
    memory="32Gi",
    timeout=timedelta(hours=12),
    arguments=(
        "--condition", CONDITION,
        "--model-config", "{{ params.model_config }}",
        "--steps", "{{ params.train_steps or 0 }}",
        "--min-train-frames", "{{ params.min_train_frames }}",
        "--init-from", "{{ params.init_from }}",
        "--hard-frame-weight", "{{ params.hard_frame_weight }}",
    ),
    doc="Train the clear-to-condition generator; resumes from its last checkpoint on retry.",
)

EVALUATE = StepSpec(
    name="evaluate",
    kind="evaluation",
    gpus=1,
    cpu="4",
    memory="16Gi",
    arguments=("--condition", CONDITION, "--min-eval-frames", "{{ params.min_eval_frames }}"),
    doc="KID, class-wise realism gap and label preservation against the champion and references, on the "
        "revision's frozen val+test frames; on the GPU when there is one.",
)

HARD_FRAMES = StepSpec(
    name="hard-frames",
    kind="report",
    cpu="1",
    memory="2Gi",
    timeout=timedelta(minutes=30),
    arguments=("--condition", CONDITION),
    doc="Keep the condition's repeatedly hard frames (worst fraction over the last N evaluations), grouped and "
        "versioned for the next training, with a gallery; promotion does not wait for it.",
)

PROMOTE = StepSpec(
    name="promote",
    kind="promotion",
    emits_champion_moved=True,
    memory="1Gi",
    timeout=timedelta(minutes=30),
    arguments=(
        "--condition", CONDITION,
        "--margin", "{{ params.promotion_margin }}",
        "--kid-tolerance", "{{ params.kid_tolerance }}",
        "--require-beat-reference", "{{ params.require_beat_reference }}",
        "--approval", "{{ ti.xcom_pull(task_ids='approve', map_indexes=ti.map_index) | tojson }}",
    ),
    doc="Decide champion vs challenger (paired bootstrap) and move the MLflow alias; serialised by a 1-slot pool.",
)

REPORT = StepSpec(
    name="report",
    kind="report",
    memory="1Gi",
    timeout=timedelta(minutes=15),
    arguments=("--conditions", "{{ params.conditions | join(',') }}"),
    doc="Summary table and links of the run, as a Markdown artifact; runs whatever happened upstream.",
)



def train_step(gpus: int) -> StepSpec:
    """The train step on ``gpus`` GPUs of one node (``ARGUS_TRAIN_GPUS``): :data:`TRAIN` for one; for more,
    one torchrun rank per GPU (DDP) with the CPUs, memory and ``/dev/shm`` of one GPU's step per GPU, and as
    many slots of the GPU pool."""
    if gpus < 1:
        raise ValueError(f"ARGUS_TRAIN_GPUS={gpus}: the train step needs at least one GPU")
    if gpus == 1:
        return TRAIN
    memory_gi = int(quantity(TRAIN.memory, "memory") // 2**30) * gpus
    return dataclasses.replace(
        TRAIN, gpus=gpus, cpu=str(int(quantity(TRAIN.cpu, "cpu")) * gpus), memory=f"{memory_gi}Gi",
        command=torchrun_command(gpus),
        doc=TRAIN.doc + f" Runs under torchrun: {gpus} ranks (DDP), one per GPU; a rank that dies restarts them "
                        "all from the last checkpoint.")


HEAVY_STEPS = (PULL, VALIDATE, BUDGET, SEGMENTER, TRAIN, EVALUATE, HARD_FRAMES, PROMOTE, REPORT)
