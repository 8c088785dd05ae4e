"""The trigger form of ``argus_champion_rollback``: which condition, back to which version, and why."""

from __future__ import annotations

from airflow.sdk import Param

from argus_airflow.training_params import CONDITION_LABELS, CONDITIONS


def rollback_params() -> dict[str, Param]:
    """``condition`` and ``reason`` have no default: a rollback is always asked for explicitly."""
    return {
        "condition": Param(
            type="string", title="Weather condition", enum=CONDITIONS, values_display=CONDITION_LABELS,
            description="The condition whose champion (argus-weather-<condition>@champion) is rolled back."),
        "target": Param(
            "previous", type="string", title="Version to restore", pattern=r"^(previous|[0-9]+)$",
            description="'previous': the champion before the current one, from the audit log (asking again walks "
                        "further back), or a version number (rolling forward again to a version rolled away from "
                        "is a version number too)."),
        "reason": Param(
            type="string", title="Reason", minLength=1, maxLength=1000, pattern=r"\S",
            description="Why the champion is rolled back. Required; recorded in the audit log with who and when."),
        "require_approval": Param(
            True, type="boolean", title="Require confirmation",
            description="After the checks pass, wait for a person to confirm the move in the UI (no answer within "
                        "the window rejects)."),
        "force": Param(
            False, type="boolean", title="Allow a version that was never champion",
            description="Off: the target must have been champion before. The other checks (complete files, "
                        "lineage, sanity gates under the current judge) apply either way."),
        "eval_frames": Param(
            64, type="integer", minimum=2, maximum=10000, title="Frames of the quick re-evaluation",
            description="Clear and real frames per side (whole drives, from the revision's val+test split) on which "
                        "the target must pass the sanity gates under the current judge. The no-collapse gate (feature "
                        "variance) is unreliable on a handful of frames: keep a few dozen."),
        "dataset_rev": Param(
            "latest", type="string", title="Dataset revision of the re-evaluation", minLength=1,
            pattern=r"^[A-Za-z0-9._/-]+$", description="A tag (v1, v2…) or commit of the dataset registry, or 'latest'."),
        # the source-data gate, as in the other DAGs
        "quarantine_threshold": Param(0.02, type="number", minimum=0, maximum=0.5, title="Quarantine threshold",
                                      description="Largest fraction of bad frames quarantined instead of failing."),
        "min_frames_per_group": Param(1, type="integer", minimum=1, title="Minimum frames per condition and split",
                                      description="Validation fails when a condition/split pair has fewer frames."),
    }
