"""``argus-task champions``: the conditions that have a champion now, and its version (for people and scripts).

    argus-task champions                 # a table
    argus-task champions --format csv    # fog,night: what ``make demo`` generates with
"""

from __future__ import annotations

import json

from argus_tasks.contract import CONDITIONS, StepContext

HELP = "list the conditions that have a champion generator, with its version"


def add_arguments(parser) -> None:
    parser.add_argument("--format", choices=("table", "csv", "json"), default="table")


def current_champions(registry) -> dict[str, str]:
    """condition -> champion version, for the conditions that have one."""
    from argus_tasks.models.registry_adapter import CHAMPION, weather_model_name

    out = {}
    for condition in CONDITIONS:
        mv = registry.alias(weather_model_name(condition), CHAMPION)
        if mv is not None:
            out[condition] = str(mv.version)
    return out


def run(args, ctx: StepContext) -> dict:
    from argus_tasks.models.registry_adapter import Registry

    champions = current_champions(Registry())
    if args.format == "csv":
        print(",".join(champions))
    elif args.format == "json":
        print(json.dumps(champions))
    else:
        for condition in CONDITIONS:
            print(f"{condition:<6} {('v' + champions[condition]) if condition in champions else '-'}")
    return {"champions": champions}
