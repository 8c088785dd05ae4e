"""`argus-task promote --condition C`: decide champion/challenger and apply it in the registry.

The decision is :func:`argus_tasks.models.decision.decide` (pure, paired bootstrap, fails
closed) on the records that evaluate wrote; the registry change is
:class:`argus_tasks.models.registry_adapter.Registry.apply_promotion`, under the model's lock in
the MLflow registry (shared by every deployment using it) and with a compare-and-set on the
champion that evaluate compared against.

"Not promoted" is a normal outcome (exit 0, ``promoted: false`` with the reasons). Missing
upstream outputs (validation, train, evaluate) are a PermanentStepError. A human rejection
(``--approval '{"required": true, "approved": false, ...}'``) promotes nothing and is recorded.

``promote/<c>/decision.json`` says what happened at the registry: ``registry_outcome`` is
``moved``, ``already_champion``, ``not_promoted`` (the decision's tags were written), ``stale``
(the champion is no longer the one evaluate compared with: nothing moved) or ``conflict`` (the
move did not stick: nothing of ours is left on the alias); ``applied_at_registry`` is true only
for the first three. A rerun returns the earlier result ("already applied") only when that
outcome was final for the same inputs (challenger version, champion compared with, evaluation
frame list, policy, approval); after ``stale`` or ``conflict`` it decides again, and a stale
comparison keeps being refused until evaluate is rerun.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import logging
import math

from argus_tasks.contract import CONDITIONS, PermanentStepError, StepContext

HELP = "promote the challenger to champion when the decision policy says so"
log = logging.getLogger("argus.promote")
# registry outcomes that are done for their inputs: a rerun returns them; stale and conflict decide again
FINAL_OUTCOMES = ("moved", "already_champion", "not_promoted")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--condition", required=True, choices=CONDITIONS)
    p.add_argument("--margin", type=float, default=0.0,
                   help="the CI upper bound of the class-wise gap difference must lie below -margin (default 0)")
    p.add_argument("--kid-tolerance", type=float, default=0.10,
                   help="allowed relative KID regression vs the champion (default 0.10 = 10%%)")
    p.add_argument("--require-beat-reference", choices=("auto", "yes", "no"), default="auto",
                   help="also require beating the best non-learned reference (auto: yes for the full config)")
    p.add_argument("--approval", default='{"required": false}',
                   help='human approval as JSON: {"required": bool, "approved": bool, "by": str, "comment": str}')
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")


def parse_approval(text: str) -> dict:
    try:
        approval = json.loads(text) if text else None
    except json.JSONDecodeError as exc:
        raise PermanentStepError(f"--approval is not valid JSON ({exc}): {text[:200]!r}") from exc
    if approval is None:  # no approval task output (approval off): nothing required
        return {"required": False}
    if not isinstance(approval, dict):
        raise PermanentStepError(f"--approval must be a JSON object, got {text[:200]!r}")
    return approval


def apply_approval(promote: bool, reasons: list[str], approval: dict) -> tuple[bool, list[str], str]:
    """Fold the human approval into the decision: (promote, reasons, approval state).

    Only a positive decision needs approval; ``approved`` must be literally true, anything else
    (false, missing) promotes nothing and says why.
    """
    reasons = list(reasons)
    if not approval.get("required"):
        return promote, reasons, "not_required"
    if not promote:
        return False, reasons, "not_asked"
    who, comment = approval.get("by", "?"), approval.get("comment", "")
    if approval.get("approved") is True:
        return True, reasons + [f"approved by {who}: {comment}".rstrip(": ")], "approved"
    if approval.get("timed_out"):
        return False, reasons + [f"human approval timed out: {who} answered, so the approval rejects (fails "
                                 "closed); nothing moves"], "timed_out"
    state = "rejected" if approval.get("approved") is False else "missing"
    return False, reasons + [f"human approval {state} (by {who}: {comment}); nothing moves"], state


def _candidate(doc: dict, key: str, records: dict, real_conf):
    """The decision's Candidate for ``key`` from :func:`_load_evaluation`'s ``records`` and real record.

    ``real_conf`` is the real-frame record (``{"conf", "features", "sequence"}``, or None), shared by
    every candidate: that is what pairs them. Sequences and features travel along, so the decision
    resamples whole drives and bounds the KID difference.
    """
    from argus_tasks.models.decision import Candidate

    entry = doc["candidates"].get(key)
    if entry is None:
        return None
    own, real = records.get(key) or {}, real_conf or {}
    return Candidate(name=entry.get("name", key), version=entry.get("version"), metrics=entry.get("metrics"),
                     sanity=entry.get("sanity"), gen_conf=own.get("conf"), real_conf=real.get("conf"),
                     content_hash=entry.get("content_hash"), learned=bool(entry.get("learned", True)),
                     gen_seq=own.get("sequence"), real_seq=real.get("sequence"),
                     gen_features=own.get("features"), real_features=real.get("features"))


def _load_evaluation(ctx, condition):
    """``(doc, records, real)`` of evaluate/<condition>.

    ``doc`` is metrics.json, with ``doc["eval_frames_sha256"]`` the hash of the frozen evaluation
    frame list (None for an evaluation that predates it); ``records`` maps a candidate key to its
    per-frame arrays ``{"conf", "features", "frame_id", "sequence"}`` (``sequence`` absent when
    evaluate had no sequence ids); ``real`` is the same for the real frames, or None. A missing
    record file leaves that candidate incomplete (the decision fails closed on it).
    """
    import zipfile

    import numpy as np

    out = f"evaluate/{condition}"
    if not ctx.run.exists(f"{out}/metrics.json"):
        raise PermanentStepError(f"{ctx.run.url(out + '/metrics.json')} is missing: evaluate has not completed for "
                                 f"{condition} in this run; nothing to decide on")
    doc = ctx.run.read_json(f"{out}/metrics.json")
    doc.setdefault("eval_frames_sha256", (doc.get("frames") or {}).get("eval_frames_sha256"))

    def load(rel):
        if not ctx.run.exists(rel):
            return None
        try:  # arrays only: a record never unpickles anything
            with np.load(io.BytesIO(ctx.run.read_bytes(rel)), allow_pickle=False) as npz:
                return {name: npz[name] for name in npz.files}
        except (ValueError, OSError, EOFError, zipfile.BadZipFile, KeyError) as exc:
            raise PermanentStepError(f"{ctx.run.url(rel)} is not a readable record ({exc}): rerun evaluate for "
                                     f"{condition}") from exc

    records = {}
    for key, entry in doc.get("candidates", {}).items():
        rec = load(f"{out}/{entry.get('records', f'records/{key}.npz')}")
        if rec is not None:
            records[key] = rec
    return doc, records, load(f"{out}/records/real.npz")


def _validation(ctx) -> dict:
    from argus_tasks.data.access import RESULT, load_accepted

    load_accepted(ctx.run)  # raises PermanentStepError when validation output is missing or stale
    result = ctx.run.read_json(RESULT)
    outcome = result.get("outcome")
    # validate writes its result only when the data passed (a few bad frames quarantined at most):
    # a failed validation never gets here, so there is no "quarantine exceeded" case to decide on.
    if outcome not in ("passed", "quarantined"):
        raise PermanentStepError(f"{ctx.run.url(RESULT)} says outcome {outcome!r}, not passed or quarantined: "
                                 "promote runs only on validated data; rerun validate")
    return {"passed": True, "outcome": outcome, "result_id": result.get("result_id", "")}


def _earlier_result(ctx, out: str, inputs: dict) -> dict | None:
    """The result of an earlier try when it is final for these ``inputs``; None (and why) otherwise."""
    if not ctx.run.exists(f"{out}/decision.json"):
        return None
    previous = ctx.run.read_json(f"{out}/decision.json")
    outcome, before = previous.get("registry_outcome"), previous.get("inputs") or {}
    if before != inputs:
        changed = sorted(k for k in inputs if before.get(k) != inputs[k])
        log.info("an earlier decision (%s) was made on other inputs (%s changed): deciding again",
                 outcome or "outcome not recorded", ", ".join(changed) or "their set")
        return None
    if not (previous.get("applied_at_registry") is True and outcome in FINAL_OUTCOMES):
        log.info("the earlier decision on these inputs ended %r at the registry, which is not final: deciding again",
                 outcome)
        return None
    result = previous["result"]
    log.info("promote already applied for v%s (%s, promoted=%s): nothing changes", inputs["challenger_version"],
             outcome, result.get("promoted"))
    return {**result, "already_applied": True, "note": f"already applied: {result.get('note', '')}"}


def _finite(x):
    try:
        return float(x) if math.isfinite(float(x)) else None
    except (TypeError, ValueError):
        return None


def run(args: argparse.Namespace, ctx: StepContext) -> dict:
    import mlflow

    from argus_tasks.models.decision import Policy, decide
    from argus_tasks.models.promotion_audit import log_history, promotion_trail, record_history
    from argus_tasks.models.registry_adapter import Registry, promotion_lock, weather_model_name
    from argus_tasks.models.registry_lock import holder_label
    from argus_tasks.models.runtime import cpu_threads, limit_blas_threads
    from argus_tasks.tracking import step_run

    limit_blas_threads(cpu_threads(None))  # the bootstrap's small matrix products: threads only wait
    c, out = args.condition, f"promote/{args.condition}"
    approval = parse_approval(args.approval)
    validation = _validation(ctx)
    if not ctx.run.exists(f"train/{c}/result.json"):
        raise PermanentStepError(f"{ctx.run.url(f'train/{c}/result.json')} is missing: train did not complete for {c}")
    trained = ctx.run.read_json(f"train/{c}/result.json")
    doc, records, real_conf = _load_evaluation(ctx, c)
    name = weather_model_name(c)
    chal_v = str(trained["model_version"])
    if str(doc.get("challenger_version")) != chal_v:
        raise PermanentStepError(f"evaluate/{c} judged v{doc.get('challenger_version')} but train/{c} registered "
                                 f"v{chal_v}: rerun evaluate for {c}")

    config_name = trained.get("model_config", "tiny")
    require_ref = {"yes": True, "no": False}.get(args.require_beat_reference, config_name == "full")
    policy = Policy(margin=args.margin, kid_tolerance=args.kid_tolerance, require_beat_reference=require_ref,
                    n_boot=args.n_boot, seed=args.seed)
    expected_champion = doc.get("champion_version")
    eval_frames = doc.get("eval_frames_sha256")
    inputs = {"challenger_version": chal_v, "compared_with_champion": expected_champion,
              "eval_frames_sha256": eval_frames, "policy": dataclasses.asdict(policy), "approval": approval}
    earlier = _earlier_result(ctx, out, inputs)
    if earlier is not None:
        return earlier
    challenger = _candidate(doc, "challenger", records, real_conf)
    champion = _candidate(doc, "champion", records, real_conf)
    references = [cand for key in doc["candidates"] if key not in ("challenger", "champion")
                  if (cand := _candidate(doc, key, records, real_conf)) is not None]
    decision = decide(champion, challenger, references, policy, validation)
    promote, reasons = decision.promote, list(decision.reasons)
    champion_error = (doc["candidates"].get("champion") or {}).get("error")
    if champion_error:
        reasons.append(champion_error)
    promote, reasons, approval_state = apply_approval(promote, reasons, approval)
    registry = Registry()
    tags = {**ctx.lineage_tags(), "argus.decision_reasons": reasons, "argus.approval": approval_state,
            "argus.decided_by_run": f"{ctx.dag_id}/{ctx.run_id}",
            **({"argus.eval_frames_sha256": eval_frames} if eval_frames else {})}
    # the flock is only a fast path between runs of one store; the registry lock is what excludes
    with promotion_lock(ctx.store_root, name):
        applied = registry.apply_promotion(name, chal_v, expected_champion, promote, tags,
                                           holder=holder_label(f"{ctx.dag_id}/{ctx.run_id} promote {c}"),
                                           audit=promotion_trail(ctx, c, approval, reasons))
    if promote and not (applied["applied"] or applied["already_applied"]):
        promote = False
        reasons.append(applied["note"])
    log.info("promote %s v%s: %s. %s", name, chal_v, "PROMOTED" if promote else "not promoted", applied["note"])
    for r in reasons:
        log.info("  - %s", r)

    chal_m = (doc["candidates"].get("challenger") or {}).get("metrics", {})
    champ_m = (doc["candidates"].get("champion") or {}).get("metrics", {})
    result = {
        "condition": c, "model_name": name, "promoted": bool(promote), "reasons": reasons,
        "challenger_version": chal_v, "previous_champion": applied["previous_champion"],
        "champion_version": applied["champion_version"], "approval": approval_state,
        "policy": {"margin": policy.margin, "kid_tolerance": policy.kid_tolerance,
                   "require_beat_reference": policy.require_beat_reference, "n_boot": policy.n_boot},
        "validation": validation, "note": applied["note"], "already_applied": applied["already_applied"],
        "registry_outcome": applied["outcome"], "compared_with_champion": expected_champion,
        "eval_frames_sha256": eval_frames,
        "metrics": {"challenger": {k: _finite(chal_m.get(k)) for k in ("kid", "classwise_gap", "label_preservation")},
                    "champion": {k: _finite(champ_m.get(k)) for k in ("kid", "classwise_gap", "label_preservation")}
                    if champ_m else None},
        "comparisons": decision.comparisons,
    }
    result.update(record_history(ctx, registry, c, doc, records, real_conf, result))  # audit log + history plot
    with step_run(ctx, "promote", c) as mrun:
        log_history(ctx, f"{out}/champion_history.png", f"promote_{c}")
        params = {"condition": c, "margin": policy.margin, "kid_tolerance": policy.kid_tolerance,
                  "require_beat_reference": policy.require_beat_reference}
        logged = mrun.data.params  # a rerun reopens the run: MLflow refuses to change a param, so changes are tags
        mlflow.log_params({k: v for k, v in params.items() if k not in logged})
        mlflow.set_tags({"argus.approval": approval_state, "argus.registry_outcome": applied["outcome"],
                         **{f"argus.rerun.{k}": str(v) for k, v in params.items() if k in logged and logged[k] != str(v)}})
        mlflow.log_metric("promoted", float(promote))
        mlflow.log_dict(result, f"promote_{c}/decision.json")
        result["mlflow_run_id"] = mrun.info.run_id
    ctx.run.write_json(f"{out}/decision.json", {
        "challenger_version": chal_v, "registry_outcome": applied["outcome"],
        "applied_at_registry": applied["outcome"] in FINAL_OUTCOMES, "inputs": inputs,
        "eval_frames_sha256": eval_frames, "result": result})
    return result
