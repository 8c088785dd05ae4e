#!/usr/bin/env bash
# make demo, after the install: initialise .argus/ and run argus_weather_training once through
# Airflow with the local runtime, then print what happened.
set -euo pipefail
. "$(dirname "$0")/env.sh"
first_run=1
[ -d "$ARGUS_DATASET_REGISTRY/.git" ] && first_run=0

t0=$(date +%s)
"$ARGUS_ROOT/scripts/init_local.sh"
if [ "$first_run" = 0 ]; then
  echo "argus: the registry exists: adding new frames as a new dataset revision, so this run sees changed data"
  argus-task dataset add-revision --registry "$ARGUS_DATASET_REGISTRY"
fi
t1=$(date +%s)

# All frames of the revision, and a training budget that fits the tiny config on 2 CPU cores.
default_conf='{"data_window": "all", "train_steps": 150}'
conf="${ARGUS_DEMO_CONF:-$default_conf}"
logical_date="$(date -u +%Y-%m-%dT%H:%M:%S+00:00)"
echo "argus: running argus_weather_training through Airflow (ARGUS_RUNTIME=$ARGUS_RUNTIME, conf $conf)"
log="$ARGUS_HOME/logs/demo-$(date -u +%Y%m%dT%H%M%S).log"
if ! airflow dags test argus_weather_training "$logical_date" -c "$conf" >"$log" 2>&1; then
  tail -n 60 "$log"; echo "argus: the DAG run failed; full log: $log"; exit 1
fi
t2=$(date +%s)
grep -E "Marking task as|state=|argus\.|step .* done" "$log" | tail -n 40 || true
echo
argus-task summary --dag-id argus_weather_training --log "$log"
echo
echo "timings: set-up ${ARGUS_INSTALL_S:-?}s install (make venv), $((t1 - t0))s init, $((t2 - t1))s pipeline"
echo "full Airflow log of this run: $log"
echo "open the UIs: make ui   (Airflow http://localhost:$ARGUS_AIRFLOW_PORT, MLflow $ARGUS_MLFLOW_UI)"
