#!/usr/bin/env bash
# Create (or resize) the Airflow pools of an Argus install: one slot per GPU. A pool per team with a quota
# (ARGUS_TEAM_GPU_QUOTAS="vision=2,lidar=1"), the shared pool argus_gpu with the rest of the
# ARGUS_GPU_POOL_SLOTS GPUs (plugins/argus_airflow/teams.py), and the 1-slot argus_promotion pool.
# Needs `airflow` and the plugins on PYTHONPATH (scripts/env.sh); idempotent.
set -euo pipefail
export ARGUS_GPU_POOL_SLOTS="${ARGUS_GPU_POOL_SLOTS:-1}"
pools="$(python -m argus_airflow.teams pools)"
while IFS=$'\t' read -r pool slots description; do
  airflow pools set "$pool" "$slots" "$description" >/dev/null
done <<<"$pools"
airflow pools set "${ARGUS_PROMOTION_POOL:-argus_promotion}" 1 "Serialises champion promotions" >/dev/null
