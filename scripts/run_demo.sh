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
if ! "$ARGUS_ROOT/scripts/dag_run.sh" argus_weather_training "$logical_date" "$conf" "$log"; then
  tail -n 60 "$log"; echo "argus: the DAG run failed; full log: $log"; exit 1
fi
t2=$(date +%s)
echo
argus-task summary --dag-id argus_weather_training --log "$log"
echo

# The product: one generation run of the champions over the demo's test split. The demo's judge reads snow
# poorly (issue 11), so up to 15% of a condition's frames may be excluded by the QA gate (default 2%).
champions="$(argus-task champions --format csv)"
t3=$(date +%s)
if [ -n "$champions" ]; then
  gen_conf="{\"conditions\": [\"${champions//,/\",\"}\"], \"splits\": [\"test\"], \"output_dataset\": \"argus-weather-demo\", \"max_bad_fraction\": 0.15}"
  echo "argus: generating labelled weather frames with the champions of $champions (conf $gen_conf)"
  gen_log="$ARGUS_HOME/logs/demo-generation-$(date -u +%Y%m%dT%H%M%S).log"
  if ! "$ARGUS_ROOT/scripts/dag_run.sh" argus_weather_generation "$(date -u +%Y-%m-%dT%H:%M:%S+00:00)" "$gen_conf" \
      "$gen_log"; then
    tail -n 60 "$gen_log"; echo "argus: the generation run failed; full log: $gen_log"; exit 1
  fi
  argus-task summary --dag-id argus_weather_generation --log "$gen_log"
else
  echo "argus: no condition has a champion yet: no dataset to generate (run make demo again)"
fi
t4=$(date +%s)
echo "timings: set-up ${ARGUS_INSTALL_S:-?}s install (make venv), $((t1 - t0))s init, $((t2 - t1))s training, $((t4 - t3))s generation"
echo "full Airflow log of this run: $log"
echo "open the UIs: make ui   (Airflow http://localhost:$ARGUS_AIRFLOW_PORT, MLflow $ARGUS_MLFLOW_UI)"
