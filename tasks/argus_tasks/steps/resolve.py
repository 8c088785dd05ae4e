"""`argus-task resolve --conditions fog,rain [--model-version champion|N]`: pin the model of each condition.

At the start of a generation run, each condition's model is resolved once to a concrete registered
version of ``argus-weather-<condition>``: its ``champion`` (the default) or an explicit version
number (only with one condition: version numbers belong to one registered model). The result,
``resolve/result.json`` in the run store, is what every later step of the run reads
(:func:`resolved_model`)::

    {"models": {"fog": {"model_name", "version", "content_hash", "source_uri", "requested", "run_id",
                        "resolved_at", "reused"}, ...},
     "conditions": [...], "requested": "champion" | "N", "reused": bool}

A rerun of resolve in the same run (a retry, a cleared task) returns the recorded resolution and
says so (``"reused": true`` and the log): a champion promoted while the run is under way never
mixes two models in one dataset. Asking the same run for another version of a condition it has
resolved is refused; a condition it has not resolved yet is resolved and added.

Refused (PermanentStepError, exit 10): an unknown condition, a model version that does not exist,
a condition with no champion, a version without the ``argus.content_hash`` tag that ``train``
registers (nothing would let later steps check that they load the weights that were resolved).
"""

from __future__ import annotations

import argparse
import logging
import time

from argus_tasks.contract import CONDITIONS, PermanentStepError, StepContext

HELP = "resolve each condition's model version (champion or an explicit version) once per run, and record it"
RESULT = "resolve/result.json"
CHAMPION_REQUEST = "champion"
log = logging.getLogger("argus.resolve")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--conditions", required=True,
                   help=f"comma-separated weather conditions to generate ({', '.join(CONDITIONS)})")
    p.add_argument("--model-version", default=CHAMPION_REQUEST,
                   help="'champion' (default: each condition's argus-weather-<c>@champion) or a version number "
                        "(only with a single condition)")


def parse_conditions(text: str) -> list[str]:
    conditions = list(dict.fromkeys(c.strip() for c in str(text).split(",") if c.strip()))
    unknown = [c for c in conditions if c not in CONDITIONS]
    if not conditions or unknown:
        raise PermanentStepError(f"--conditions {text!r}: {'unknown ' + ', '.join(unknown) if unknown else 'empty'}; "
                                 f"choose from {', '.join(CONDITIONS)}")
    return conditions


def parse_request(text: str, conditions: list[str]) -> str:
    value = str(text).strip().lower()
    if value == CHAMPION_REQUEST:
        return value
    if not value.isdigit() or int(value) < 1:
        raise PermanentStepError(f"--model-version {text!r} is neither 'champion' nor a version number (1, 2, ...)")
    if len(conditions) > 1:
        raise PermanentStepError(
            f"--model-version {value} names one version of one registered model, but {len(conditions)} conditions "
            f"were given ({', '.join(conditions)}): give a single condition, or use 'champion'")
    return str(int(value))


def _versions(registry, name: str) -> list[str]:
    found = registry._lookup(f"the search on {name}", registry.client.search_model_versions, f"name='{name}'")
    return sorted((str(v.version) for v in found or []), key=int)


def _resolve_one(registry, condition: str, request: str) -> dict:
    from argus_tasks.models.registry_adapter import CHAMPION, weather_model_name

    name = weather_model_name(condition)
    if request == CHAMPION_REQUEST:
        mv = registry.alias(name, CHAMPION)
        if mv is None:
            versions = _versions(registry, name)
            have = (f"it has version(s) {', '.join(versions)}, none promoted" if versions
                    else "no version is registered")
            raise PermanentStepError(
                f"{condition} has no champion: {name}@{CHAMPION} does not exist ({have}). Run "
                f"argus_weather_training for {condition} until a challenger is promoted, or generate from an explicit "
                f"version (model_version=N with this one condition).")
    else:
        mv = registry._lookup(f"the lookup of {name} v{request}", registry.client.get_model_version, name, request)
        if mv is None:
            versions = _versions(registry, name)
            champion = registry.alias(name, CHAMPION) if versions else None
            raise PermanentStepError(
                f"model version {request} of {name} does not exist (registered versions: "
                f"{', '.join(versions) or 'none'}"
                f"{f'; champion: v{champion.version}' if champion is not None else ''}); pick one of those, or 'champion'")
    tags = getattr(mv, "tags", None) or {}
    content_hash = tags.get("argus.content_hash", "")
    if not content_hash:
        raise PermanentStepError(
            f"{name} v{mv.version} has no argus.content_hash tag (it was not registered by the train step), so later "
            "steps could not check that they load the weights resolved here: register it again through train, "
            "or resolve another version")
    return {"model_name": name, "version": str(mv.version), "content_hash": content_hash,
            "source_uri": str(getattr(mv, "source", "") or ""), "run_id": str(getattr(mv, "run_id", "") or ""),
            "requested": request, "resolved_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def run(args: argparse.Namespace, ctx: StepContext) -> dict:
    conditions = parse_conditions(args.conditions)
    request = parse_request(args.model_version, conditions)
    recorded = ctx.run.read_json(RESULT).get("models", {}) if ctx.run.exists(RESULT) else {}
    for c in conditions:
        if c in recorded and recorded[c].get("requested") != request:
            raise PermanentStepError(
                f"this run resolved {c} as {recorded[c].get('requested')!r} -> {recorded[c]['model_name']} "
                f"v{recorded[c]['version']} already; it cannot switch to {request!r} (one run, one model per "
                "condition): start a new run for another version")
    models, registry = {}, None
    for c in conditions:
        if c in recorded:
            models[c] = {**recorded[c], "reused": True}
            log.info("%s: reusing this run's resolution %s v%s (resolved %s as %s); a champion moved since does "
                     "not change this run", c, recorded[c]["model_name"], recorded[c]["version"],
                     recorded[c].get("resolved_at", "?"), recorded[c].get("requested"))
            continue
        if registry is None:
            from argus_tasks.models.registry_adapter import Registry

            registry = Registry()
        models[c] = {**_resolve_one(registry, c, request), "reused": False}
        log.info("%s: resolved %s -> %s v%s (content hash %s)", c, request, models[c]["model_name"],
                 models[c]["version"], models[c]["content_hash"][:12])
    # conditions resolved by an earlier call of this run and not asked for now stay recorded
    kept = {c: v for c, v in recorded.items() if c not in models}
    return {"models": {**kept, **models}, "conditions": conditions, "requested": request,
            "reused": all(m["reused"] for m in models.values())}


def resolved_model(run, condition: str) -> dict:
    """The model this run resolved for ``condition`` (``resolve/result.json``), or a PermanentStepError."""
    if not run.exists(RESULT):
        raise PermanentStepError(f"{run.url(RESULT)} is missing: run `argus-task resolve --conditions {condition}` "
                                 "first, so the whole run uses one model version per condition")
    models = run.read_json(RESULT).get("models", {})
    if condition not in models:
        raise PermanentStepError(f"this run's resolve did not resolve {condition} (it resolved "
                                 f"{', '.join(sorted(models)) or 'nothing'}): rerun resolve with {condition} among "
                                 "--conditions")
    return models[condition]
