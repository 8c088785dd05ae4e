"""The run report and the demo summary show label fidelity (overall, lane/pole) and the class-rank figure."""

from __future__ import annotations

from argus_tasks.run_outcome import StepOutcome
from argus_tasks.steps.report import condition_row, fmt_rank, fmt_thin


def _outcomes(promoted: bool):
    chal = {"kid": 0.0041, "classwise_gap": 0.0557, "label_preservation": 0.8123, "class_rank_spearman": 0.881,
            "class_rank_spearman_lo": 0.62, "class_rank_spearman_hi": 0.98,
            "fidelity_per_class": {"road": 0.97, "lane_marking": 0.71, "pole": 0.55}}
    champ = {**chal, "label_preservation": 0.7011}
    return {"train/fog": StepOutcome("train/fog", "succeeded", {"model_version": "3", "mlflow_run_id": "r"}),
            "evaluate/fog": StepOutcome("evaluate/fog", "succeeded", {"metrics": {"challenger": chal, "champion": champ}}),
            "promote/fog": StepOutcome("promote/fog", "succeeded", {"promoted": promoted, "reasons": ["x"],
                                                                    "champion_version": "3" if promoted else "2"})}


def test_the_row_has_fidelity_next_to_kid_and_gap():
    row = condition_row("fog", _outcomes(True))
    assert (row["kid"], row["classwise_gap"], row["label_preservation"]) == (0.0041, 0.0557, 0.8123)
    assert fmt_thin(row["fidelity_thin"]) == "0.71/0.55"
    assert fmt_rank(row["class_rank_spearman"], row["class_rank_ci"]) == "+0.88 [+0.62, +0.98]"
    assert row["champion_fidelity"] == 0.8123  # promoted: the challenger is the champion now
    assert condition_row("fog", _outcomes(False))["champion_fidelity"] == 0.7011  # the champion, re-scored
    assert fmt_rank(float("nan")) == "-" and fmt_thin({}) == "-"
