#!/usr/bin/env bash
# scripts/dag_run.sh DAG_ID LOGICAL_DATE CONF LOG: one local DAG run (`airflow dags test`) with its whole
# Airflow log in LOG and its live progress on the terminal: a line per step as it starts and ends, training
# progress, the time left (argus_airflow.demo_progress). Exits with the DAG run's exit code.
set -uo pipefail
dag_id="$1" logical_date="$2" conf="$3" log="$4"
mkdir -p "$(dirname "$log")"
since="$(date +%s)"
airflow dags test "$dag_id" "$logical_date" -c "$conf" >"$log" 2>&1 &
pid=$!
python -m argus_airflow.demo_progress --dag-id "$dag_id" --log "$log" --pid "$pid" --since "$since" \
  || echo "argus: (the progress display stopped; the run goes on, see $log)"
wait "$pid"
