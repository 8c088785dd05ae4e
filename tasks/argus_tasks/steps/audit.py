"""``argus-task audit --condition fog``: print the audit log of a champion alias (a table, or ``--json``).

    argus-task audit --condition fog            # argus-weather-fog@champion, oldest first
    argus-task audit --condition fog --json     # every field of every entry
    argus-task audit --model argus-downstream-segmenter   # the judge's champion

The log is read from the store (``<store>/audit/<model>/champion/``) and the MLflow registry (the
model's ``argus.audit.champion.*`` tags), merged by sequence number. When it finds an intent without
its final entry (a move under way, or one interrupted by a crash) or the alias somewhere no entry
puts it, it takes the model's registry lock and reconciles first (``--no-reconcile``: read only), so
what it prints ends at the real alias. See :mod:`argus_tasks.models.audit_trail`.
"""

from __future__ import annotations

import json

from argus_tasks.contract import CONDITIONS, PermanentStepError, StepContext

HELP = "print the audit log of a champion alias (who moved it, when, why, with the evidence)"


def add_arguments(parser) -> None:
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--condition", choices=CONDITIONS, help="the weather condition (model argus-weather-<c>)")
    which.add_argument("--model", help="a registered model name (e.g. argus-downstream-segmenter)")
    parser.add_argument("--json", action="store_true", help="print the entries as JSON")
    parser.add_argument("--no-reconcile", action="store_true",
                        help="only read: do not take the registry lock to complete an interrupted entry")
    parser.add_argument("--limit", type=int, default=0, help="only the last N entries (default: all)")


def load_log(ctx: StepContext, registry, model: str, reconcile: bool = True) -> dict:
    """``{"entries", "pending", "champion", "reconciled"}``, reconciled under the lock when needed."""
    from argus_tasks.models.audit_log import AuditLog, last_moved
    from argus_tasks.models.audit_trail import AuditTrail, who_of
    from argus_tasks.models.registry_adapter import CHAMPION
    from argus_tasks.models.registry_lock import holder_label

    audit = AuditLog(registry, ctx.store_root, model, CHAMPION)

    def read():
        snap = audit.snapshot()
        mv = registry.alias(model, CHAMPION)
        return audit.entries(snap), audit.pending(snap), (str(mv.version) if mv is not None else None)

    entries, pending, champion = read()
    last = last_moved(entries)
    drift = champion != (last["to"] if last else None)
    appended = []
    if reconcile and (pending or drift):
        trail = AuditTrail(ctx.store_root, "audit", who_of(ctx))
        with registry.exclusive(model, holder_label(f"{ctx.dag_id}/{ctx.run_id} audit {model}")):
            appended = trail.reconcile(registry, model, CHAMPION)
        entries, pending, champion = read()
    return {"model": model, "entries": entries, "pending": pending, "champion": champion, "reconciled": appended,
            "store": audit.files.url()}


def _cut(text, n: int) -> str:
    text = " ".join(str(text or "").split())
    return text if len(text) <= n else text[: n - 1] + "\u2026"


def _move(e: dict) -> str:
    return f"{'v' + e['from'] if e.get('from') else '-'} -> {'v' + e['to'] if e.get('to') else '-'}"


def _who(e: dict) -> str:
    from argus_tasks.models.audit_trail import describe_who

    return describe_who(e.get("who")) if e.get("state") != "observed" else "unknown (outside Argus)"


def _evidence(e: dict) -> str:
    ev = e.get("evidence") or {}
    for key in ("decision", "check", "run_folder", "model_uri"):
        if ev.get(key):
            return f"{key}: {ev[key]}"
    return "-"


def table(doc: dict) -> str:
    entries = doc["entries"]
    lines = [f"{doc['model']}@champion: now {'v' + doc['champion'] if doc['champion'] else 'none'}; "
             f"{len(entries)} entr{'y' if len(entries) == 1 else 'ies'} (store {doc['store']}, registry tags "
             "argus.audit.champion.*)"]
    if doc["reconciled"]:
        lines.append(f"reconciled first: {len(doc['reconciled'])} entr{'y' if len(doc['reconciled']) == 1 else 'ies'} "
                     "completed or added")
    header = f"{'seq':>4}  {'when':<20}  {'kind':<10}  {'state':<9}  {'move':<11}  {'who':<44}  reason"
    lines += ["", header, "-" * len(header)]
    for e in entries:
        flag = " (recovered)" if e.get("recovered") else ""
        lines.append(f"{e.get('seq', '?'):>4}  {str(e.get('when', '')):<20}  {str(e.get('kind', '')):<10}  "
                     f"{str(e.get('state', '')):<9}  {_move(e):<11}  {_cut(_who(e), 44):<44}  "
                     f"{_cut(e.get('reason') or e.get('note'), 70)}{flag}")
        lines.append(f"{'':>4}  {'':<20}  evidence {_cut(_evidence(e), 120)}")
    for p in doc["pending"]:
        lines.append(f"{p.get('seq', '?'):>4}  {str(p.get('when', '')):<20}  {str(p.get('kind', '')):<10}  "
                     f"{'PENDING':<9}  {_move(p):<11}  {_cut(_who(p), 44):<44}  a move under way, or interrupted: "
                     "the next audited operation completes it")
    if not entries and not doc["pending"]:
        lines.append("(no entry yet)")
    return "\n".join(lines)


def run(args, ctx: StepContext) -> dict:
    from argus_tasks.models.registry_adapter import Registry, weather_model_name

    model = weather_model_name(args.condition) if args.condition else args.model
    if not model:
        raise PermanentStepError("give --condition or --model")
    doc = load_log(ctx, Registry(), model, reconcile=not args.no_reconcile)
    if args.limit > 0:
        doc["entries"] = doc["entries"][-args.limit:]
    if args.json:
        print(json.dumps(doc, indent=2, sort_keys=True, default=str))
    else:
        print(table(doc))
    return {"model": model, "champion": doc["champion"], "n_entries": len(doc["entries"]),
            "n_pending": len(doc["pending"])}
