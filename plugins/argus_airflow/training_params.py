"""The trigger form of ``argus_weather_training``: Params with a JSON schema.

Defaults suit the scheduled runs. The web UI renders a form from these schemas and refuses a
trigger (UI, REST API or CLI conf) whose values do not validate.
"""

from __future__ import annotations

from airflow.sdk import Param

from argus_airflow.teams import team_param

CONDITIONS = ["fog", "rain", "snow", "night"]
CONDITION_LABELS = {"fog": "Fog", "rain": "Rain", "snow": "Snow", "night": "Night"}


def training_params(default_model_config: str, defaults: dict | None = None) -> dict[str, Param]:
    """The Params; ``defaults`` (the deployment's ``ARGUS_PARAM_DEFAULTS``) replace their default values.

    A scheduled run has no conf, so these defaults are what it runs with; each is checked against
    its Param's schema here, at parse time, so a bad value shows up as an import error of the DAG.
    """
    params = _params(default_model_config)
    for key, value in (defaults or {}).items():
        if key not in params:
            raise ValueError(f"ARGUS_PARAM_DEFAULTS sets {key!r}, which is not a Param of this DAG; "
                             f"known Params: {', '.join(params)}")
        try:
            params[key].resolve(value)
        except Exception as exc:  # ParamValidationError, with the schema's reason
            raise ValueError(f"ARGUS_PARAM_DEFAULTS: {value!r} is not a valid default for {key!r}: "
                             f"{str(exc).splitlines()[0]}") from exc
    return params


def _params(default_model_config: str) -> dict[str, Param]:
    return {
        "team": team_param(),
        "conditions": Param(
            list(CONDITIONS),
            type="array",
            title="Weather conditions",
            description="Train, evaluate and promote one generator per selected condition.",
            items={"type": "string", "enum": CONDITIONS},
            examples=CONDITIONS,
            values_display=CONDITION_LABELS,
            minItems=1,
            uniqueItems=True,
        ),
        "dataset_rev": Param(
            "latest",
            type="string",
            title="Dataset revision",
            description="A tag (v1, v2…) or commit of the dataset registry, or 'latest' for its newest commit.",
            minLength=1,
            pattern=r"^[A-Za-z0-9._/-]+$",
        ),
        "data_window": Param(
            "cumulative",
            type="string",
            title="Frames to train on",
            description="Which training frames of the revision to use: every frame captured up to the end of this "
            "run's data interval (cumulative, the default of scheduled runs and backfills), only the frames "
            "captured in the interval (new frames only), or every frame of the revision. Whatever the choice, "
            "champion and challenger are judged on the revision's whole frozen val+test set.",
            enum=["cumulative", "interval", "all"],
            values_display={"cumulative": "Every frame up to the end of this run's interval",
                            "interval": "Only the frames of this run's interval",
                            "all": "Every frame of the revision"},
        ),
        "init_from": Param(
            "scratch",
            type="string",
            title="Initial generator weights",
            description="Train from a random initialisation, or warm-start from the current champion's weights "
            "(falls back to scratch when the condition has no champion yet). Recorded in the lineage.",
            enum=["scratch", "champion"],
            values_display={"scratch": "From scratch", "champion": "Warm-start from the champion"},
        ),
        "min_train_frames": Param(
            16,
            type="integer",
            title="Minimum training frames per condition",
            description="train fails for a condition with fewer accepted training frames of that condition; the "
            "other conditions go on.",
            minimum=1,
            maximum=1000000,
        ),
        "min_eval_frames": Param(
            16,
            type="integer",
            title="Minimum evaluation frames per condition",
            description="evaluate fails for a condition whose frozen evaluation set (val+test) has fewer clear or "
            "real frames of that condition than this: a promotion must not rest on a handful of frames.",
            minimum=1,
            maximum=1000000,
        ),
        "model_config": Param(
            default_model_config,
            type="string",
            title="Model config",
            description="'tiny' learns on CPU in minutes (the local runtime's default); 'full' is the GPU "
            "config (the Kubernetes runtime's default).",
            enum=["tiny", "full"],
            values_display={"tiny": "tiny: 64 px, CPU", "full": "full: 256 px ResNet generator, GPU"},
        ),
        "train_steps": Param(
            None,
            type=["null", "integer"],
            title="Training steps",
            description="Optimiser steps per condition. Leave empty for the model config's default.",
            minimum=10,
            maximum=200000,
        ),
        "max_gpu_hours": Param(
            None,
            type=["null", "number"],
            title="GPU-hour budget",
            description="Largest estimated GPU-hours of this run (GPU pool slots x duration of its GPU steps, "
            "estimated from past runs of the same steps in MLflow). Over it, the run stops before any step takes "
            "a GPU; with no history it runs and says so. Leave empty for no budget.",
            minimum=0,
        ),
        "hard_frame_weight": Param(
            0.0,
            type="number",
            title="Hard-frame oversampling weight",
            description="Training draws clear frames like the condition's hard set (its over-represented groups of "
            "dominant classes and brightness) 1 + this many times as often. 0 (the default): uniform sampling; the "
            "benchmark (benchmarks/RESULTS.md) found no gain from oversampling yet.",
            minimum=0,
            maximum=20,
        ),
        "require_approval": Param(
            False,
            type="boolean",
            title="Require human approval",
            description="Wait for a person to approve each promotion in the UI before the champion alias moves.",
        ),
        "quarantine_threshold": Param(
            0.02,
            type="number",
            title="Quarantine threshold",
            description="Largest fraction of bad frames that is quarantined (excluded) instead of failing the run.",
            minimum=0,
            maximum=0.5,
        ),
        "min_frames_per_group": Param(
            8,
            type="integer",
            title="Minimum frames per condition and split",
            description="Validation fails when a condition/split pair has fewer frames than this.",
            minimum=1,
            maximum=1000000,
        ),
        "promotion_margin": Param(
            0.0,
            type="number",
            title="Promotion margin (class-wise gap)",
            description="The challenger must beat the champion's class-wise realism gap by at least this much "
            "(upper end of the 95% bootstrap CI of the difference).",
            minimum=0,
            maximum=1,
        ),
        "kid_tolerance": Param(
            0.10,
            type="number",
            title="KID tolerance (relative)",
            description="How much worse than the champion's the challenger's KID may be and still be promoted, "
            "as a fraction of the champion's KID: the upper end of the 95% bootstrap CI (resampling drives) of "
            "the KID difference must stay below it; 0.10 allows up to 10% higher.",
            minimum=0,
            maximum=1,
        ),
        "require_beat_reference": Param(
            "auto",
            type="string",
            title="Must beat the non-learned reference",
            description="Whether the challenger must also beat the best heuristic weather effect (the floor a "
            "learned model must clear).",
            enum=["auto", "yes", "no"],
            values_display={"auto": "auto: only for the full config", "yes": "yes, always", "no": "no"},
        ),
        "retrain_segmenter": Param(
            False,
            type="boolean",
            title="Retrain the reference segmenter",
            description="Train a new downstream segmenter even though one is registered. Changes the judge: "
            "later comparisons use the new one.",
        ),
    }
