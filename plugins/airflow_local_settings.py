"""Airflow cluster policies of an Argus deployment (Airflow imports this module from the plugins folder).

``task_instance_mutation_hook`` puts every GPU task instance into its run's team pool (a team's GPU
quota), see :mod:`argus_airflow.teams`. A deployment with its own ``airflow_local_settings`` calls
``argus_airflow.teams.route_to_team_pool(task_instance, dag_run)`` from its hook instead.
"""

from __future__ import annotations


def task_instance_mutation_hook(task_instance, dag_run):  # no default: pluggy passes only arguments without one
    from argus_airflow.teams import route_to_team_pool

    route_to_team_pool(task_instance, dag_run)
