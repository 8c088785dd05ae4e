"""Teams and their GPU quotas: which Airflow pool a GPU task of a run draws from.

A run's ``team`` is a Param (default: the deployment's ``ARGUS_TEAM``). The GPUs of the shared pool
(``ARGUS_GPU_POOL_SLOTS``, K) are split into Airflow pools, because a task instance draws from one
pool only: a team listed in ``ARGUS_TEAM_GPU_QUOTAS`` ("vision=2,lidar=1") gets its own pool
``<shared pool>_<team>`` with its quota as slots; the shared pool ``argus_gpu`` keeps the GPUs that no
team reserved, for every other team. The slots of all GPU pools add up to K, so the cluster-wide cap
holds by construction, and no team runs more GPU steps at once than its quota. The cluster policy in
``plugins/airflow_local_settings.py`` (:func:`route_to_team_pool`) moves a GPU task instance to its
run's team pool when the scheduler creates or clears it (see docs/deploying.md, "Teams and GPU quotas").

Everything here reads the environment only: it runs at DAG parse time and inside the scheduler.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from dataclasses import dataclass, field

# A DNS label of at most 32 characters: the team is a Kubernetes label value, part of a Kueue queue
# name (<team>-gpu), an MLflow tag and part of an Airflow pool name.
TEAM_PATTERN = r"^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$"
_TEAM = re.compile(TEAM_PATTERN)
DEFAULT_TEAM = "default"
DEFAULT_GPU_SLOTS = 1  # as scripts/init_local.sh creates the shared pool on a laptop
log = logging.getLogger(__name__)


def check_team(team: str, what: str) -> str:
    """``team`` when it is a valid team name; a clear error naming ``what`` otherwise."""
    if not isinstance(team, str) or not _TEAM.fullmatch(team):
        raise ValueError(f"{what}: {team!r} is not a team name; use 1-32 lowercase letters, digits and '-', "
                         "starting and ending with a letter or digit (e.g. 'vision', 'lidar-3d')")
    return team


def parse_quotas(raw: str, what: str = "ARGUS_TEAM_GPU_QUOTAS") -> dict[str, int]:
    """``"vision=2,lidar=1"`` as ``{"vision": 2, "lidar": 1}``; a clear error for anything else."""
    quotas: dict[str, int] = {}
    for part in (p.strip() for p in (raw or "").split(",")):
        if not part:
            continue
        team, sep, slots = part.partition("=")
        team = team.strip()
        check_team(team, f"{what} team {team!r}")
        if not sep or not slots.strip().isdigit() or int(slots) < 1:
            raise ValueError(f"{what}: {part!r} must be <team>=<GPUs> with a whole number of GPUs >= 1, "
                             "e.g. 'vision=2,lidar=1'")
        if team in quotas:
            raise ValueError(f"{what}: team {team!r} is listed twice")
        quotas[team] = int(slots)
    return quotas


@dataclass(frozen=True)
class TeamPlan:
    """The deployment's teams: default team, GPU quotas and the pools that hold them."""

    shared_pool: str = "argus_gpu"
    gpu_slots: int = DEFAULT_GPU_SLOTS
    quotas: dict[str, int] = field(default_factory=dict)
    default_team: str = DEFAULT_TEAM

    def __post_init__(self):
        check_team(self.default_team, "ARGUS_TEAM")
        if self.gpu_slots < 0:
            raise ValueError(f"ARGUS_GPU_POOL_SLOTS={self.gpu_slots} must be >= 0")
        reserved = sum(self.quotas.values())
        if reserved > self.gpu_slots:
            raise ValueError(
                f"ARGUS_TEAM_GPU_QUOTAS reserves {reserved} GPUs ({self.describe_quotas()}) but the shared pool has "
                f"ARGUS_GPU_POOL_SLOTS={self.gpu_slots}: the quotas must add up to at most the GPUs there are")
        if not self.admits(self.default_team):
            raise ValueError(
                f"ARGUS_TEAM={self.default_team!r} has no quota in ARGUS_TEAM_GPU_QUOTAS and the quotas reserve all "
                f"{self.gpu_slots} GPUs: its runs could never get one. Give it a quota or leave GPUs unreserved")

    @property
    def shared_slots(self) -> int:
        """The GPUs no team reserved: the slots of the shared pool."""
        return self.gpu_slots - sum(self.quotas.values())

    def pool_for(self, team: str) -> str:
        """The pool a GPU task of ``team`` draws from."""
        return self.team_pool(team) if team in self.quotas else self.shared_pool

    def team_pool(self, team: str) -> str:
        return f"{self.shared_pool}_{team}"

    def gpu_pools(self) -> set[str]:
        return {self.shared_pool, *(self.team_pool(t) for t in self.quotas)}

    def admits(self, team: str) -> bool:
        """Whether a GPU task of ``team`` can ever run: it has a quota, or GPUs are left unreserved."""
        return team in self.quotas or self.shared_slots > 0

    def allowed_teams(self) -> list[str] | None:
        """The teams a run may name, when the quotas reserve every GPU (None: any valid name)."""
        return None if self.shared_slots > 0 else sorted(self.quotas)

    def describe_quotas(self) -> str:
        return ", ".join(f"{t}={n}" for t, n in self.quotas.items()) or "none"

    def pools(self) -> list[tuple[str, int, str]]:
        """(name, slots, description) of every GPU pool, shared pool first, as init scripts create them."""
        rows = [(self.shared_pool, self.shared_slots,
                 f"Shared GPU pool: the {self.shared_slots} of {self.gpu_slots} GPUs no team reserved")]
        rows += [(self.team_pool(t), n, f"GPU quota of team {t}: {n} of {self.gpu_slots} GPUs")
                 for t, n in self.quotas.items()]
        return rows


def load_plan(environ=None) -> TeamPlan:
    """The plan of ``ARGUS_TEAM``, ``ARGUS_TEAM_GPU_QUOTAS``, ``ARGUS_GPU_POOL_SLOTS`` and ``ARGUS_GPU_POOL``."""
    env = os.environ if environ is None else environ
    raw_slots = (env.get("ARGUS_GPU_POOL_SLOTS") or str(DEFAULT_GPU_SLOTS)).strip()
    if not raw_slots.isdigit():
        raise ValueError(f"ARGUS_GPU_POOL_SLOTS={raw_slots!r} must be a whole number of GPUs (slots of the "
                         "shared GPU pool)")
    return TeamPlan(shared_pool=env.get("ARGUS_GPU_POOL") or "argus_gpu", gpu_slots=int(raw_slots),
                    quotas=parse_quotas(env.get("ARGUS_TEAM_GPU_QUOTAS", "")),
                    default_team=(env.get("ARGUS_TEAM") or DEFAULT_TEAM).strip())


def team_param(plan: TeamPlan | None = None):
    """The ``team`` Param of the Argus DAGs: the deployment's default team, a validated name."""
    from airflow.sdk import Param

    plan = plan or load_plan()
    allowed = plan.allowed_teams()
    quota_note = f" GPU quotas: {plan.describe_quotas()}; other teams share the {plan.shared_slots} unreserved " \
                 f"GPU(s)." if plan.quotas else ""
    extra = {"enum": allowed} if allowed else {}
    return Param(plan.default_team, type="string", title="Team", pattern=TEAM_PATTERN, **extra,
                 description="The team this run is for: its GPU steps draw from the team's GPU quota (an Airflow "
                             "pool), its MLflow runs and model versions are tagged argus.team, its pods labelled "
                             f"argus.io/team.{quota_note}")


def run_team(dag_run, task, plan: TeamPlan) -> str | None:
    """The team of a run: its conf's ``team``, else the DAG's Param default, else the deployment's; None when
    the value is not a valid team name (the run's trigger would have been refused for a DAG with the Param)."""
    conf = getattr(dag_run, "conf", None) or {}
    team = conf.get("team") if isinstance(conf, dict) else None
    if team is None:
        params = getattr(getattr(task, "dag", None), "params", None)
        try:
            team = params["team"] if params is not None and "team" in params else None
        except Exception:  # noqa: BLE001 - an unreadable Param falls back to the deployment default
            team = None
    team = plan.default_team if team is None else team
    return team if isinstance(team, str) and _TEAM.fullmatch(team) else None


def route_to_team_pool(task_instance, dag_run=None, plan: TeamPlan | None = None) -> None:
    """Cluster policy (``task_instance_mutation_hook``): a GPU task instance draws from its run's team pool.

    Only task instances of a GPU pool (the shared pool or a team pool) move. Runs in the scheduler inside a
    transaction: no database access here, and it never raises (a broken setting leaves the pool as it is).
    """
    if dag_run is None:  # a task instance not yet bound to its run: routed when it is
        return
    try:
        plan = plan or load_plan()
        if task_instance.pool not in plan.gpu_pools() and not str(task_instance.pool).startswith(
                f"{plan.shared_pool}_"):
            return
        team = run_team(dag_run, getattr(task_instance, "task", None), plan)
        if team is None:
            log.warning("argus: run %s names no valid team: %s stays in pool %s", getattr(dag_run, "run_id", "?"),
                        task_instance.task_id, plan.shared_pool)
            team = ""
        task_instance.pool = plan.pool_for(team)
    except Exception as exc:  # noqa: BLE001 - a policy must never take the scheduler down
        log.error("argus: team routing of %s failed, pool left as %s: %s", getattr(task_instance, "task_id", "?"),
                  getattr(task_instance, "pool", "?"), exc)


def main(argv: list[str]) -> int:
    """``python -m argus_airflow.teams pools``: one ``name<TAB>slots<TAB>description`` line per GPU pool."""
    if argv[:1] != ["pools"]:
        print("usage: python -m argus_airflow.teams pools", file=sys.stderr)
        return 2
    try:
        plan = load_plan()
    except ValueError as exc:
        print(f"argus: {exc}", file=sys.stderr)
        return 1
    for name, slots, description in plan.pools():
        print(f"{name}\t{slots}\t{description}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
