"""The judge's Params (budget, floors, resolution), shared by the training and the generation DAG.

Both DAGs run the same ``segmenter`` step (:data:`argus_airflow.training_steps.SEGMENTER`), whose
command line reads these Params.
"""

from __future__ import annotations

from airflow.sdk import Param


def judge_params() -> dict[str, Param]:
    return {
        "judge_steps": Param(
            400,
            type="integer",
            title="Judge training steps",
            description="Optimiser steps when the reference segmenter (the judge) is trained, on the labelled "
            "training frames of every condition, condition-balanced (400: ~0.89 clear and 0.74-0.81 adverse mIoU "
            "on the demo data).",
            minimum=10,
            maximum=200000,
        ),
        "judge_min_miou": Param(
            0.75,
            type="number",
            title="Judge floor on clear frames",
            description="The judge must reach this mIoU on the held-out clear frames of the run, or it judges nothing.",
            minimum=0,
            maximum=1,
        ),
        "judge_min_adverse_ratio": Param(
            0.8,
            type="number",
            title="Judge floor on adverse frames (x clear)",
            description="On the held-out real frames of each adverse condition the judge must reach this fraction "
            "of its clear mIoU (0.8: a judge that reads fog far worse than clear would blame generators for the fog).",
            minimum=0,
            maximum=1,
        ),
        "judge_image_size": Param(
            0,
            type="integer",
            title="Judge resolution (px)",
            description="Square resolution the judge trains, is floor-checked and judges at (KID features too). "
            "0: the frames' native width. Set it to the model config's image size (tiny 64, full 256).",
            minimum=0,
            maximum=4096,
        ),
    }
