"""The trigger form of ``argus_weather_generation``: what to translate, with which model, into which dataset."""

from __future__ import annotations

from airflow.sdk import Param

from argus_airflow.teams import team_param
from argus_airflow.training_params import CONDITION_LABELS, CONDITIONS

SPLITS = ["train", "val", "test"]


def generation_params() -> dict[str, Param]:
    """Defaults suit a run started by a champion change: the standing dataset, the test split, the champion."""
    return {
        "team": team_param(),
        "conditions": Param(
            list(CONDITIONS), type="array", title="Weather conditions",
            description="Conditions to generate. A run started by a champion change generates only the "
                        "conditions whose champion moved.",
            items={"type": "string", "enum": CONDITIONS}, examples=CONDITIONS, values_display=CONDITION_LABELS,
            minItems=1, uniqueItems=True),
        "dataset_rev": Param(
            "latest", type="string", title="Source dataset revision", minLength=1, pattern=r"^[A-Za-z0-9._/-]+$",
            description="A tag (v1, v2…) or commit of the dataset registry, or 'latest'."),
        "splits": Param(
            ["test"], type="array", title="Source splits", items={"type": "string", "enum": SPLITS},
            minItems=1, uniqueItems=True, description="Which clear frames of the revision to translate."),
        "model_version": Param(
            "champion", type="string", title="Model version", pattern=r"^(champion|[0-9]+)$",
            description="'champion' (resolved once, at the start of the run) or a version number (one condition)."),
        "seed": Param(0, type="integer", minimum=0, title="Generation seed"),
        "strength": Param(1.0, type="number", minimum=0, maximum=1, title="Strength",
                          description="Blend of generated over source frame: 1 is the generator's output."),
        "shard_size": Param(256, type="integer", minimum=1, maximum=100000, title="Frames per shard"),
        "output_dataset": Param(
            "argus-weather", type="string", title="Output dataset", pattern=r"^[a-z0-9][a-z0-9._-]*$",
            description="The DVC dataset the run publishes a new revision of."),
        "max_bad_fraction": Param(0.02, type="number", minimum=0, maximum=0.5, title="Largest excluded fraction",
                                  description="More generated frames failing the QA suite than this fails the run."),
        # the judge reads weather frames poorly (trained on clear frames: issue 11): the demo champions keep
        # 0.35-0.6 mean fidelity, so a higher per-frame floor would refuse most good frames with it
        "min_fidelity": Param(0.2, type="number", minimum=0, maximum=1, title="Minimum label fidelity per frame",
                              description="Frames whose judge mIoU against the source labels is below this are "
                                          "excluded (a frame that changed the scene)."),
        # the source-data gate and the judge, as in the training DAG
        "quarantine_threshold": Param(0.02, type="number", minimum=0, maximum=0.5, title="Quarantine threshold"),
        "min_frames_per_group": Param(1, type="integer", minimum=1, title="Minimum frames per condition and split"),
        "retrain_segmenter": Param(False, type="boolean", title="Retrain the reference segmenter"),
    }
