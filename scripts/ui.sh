#!/usr/bin/env bash
# make ui: Airflow (api-server, scheduler, dag-processor, triggerer) and an MLflow server on
# localhost over the same .argus/ state. Ctrl-C stops them all.
set -euo pipefail
. "$(dirname "$0")/env.sh"
[ -f "$AIRFLOW_HOME/airflow.db" ] || "$ARGUS_ROOT/scripts/init_local.sh"
logs="$ARGUS_HOME/logs"; mkdir -p "$logs"
pids=()
cleanup() { echo; echo "argus: stopping"; kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

for svc in api-server scheduler dag-processor triggerer; do
  airflow "$svc" >"$logs/$svc.log" 2>&1 &
  pids+=($!)
done
mlflow server --backend-store-uri "$MLFLOW_TRACKING_URI" --artifacts-destination "$ARGUS_MLFLOW_ARTIFACTS" \
  --host 127.0.0.1 --port "$ARGUS_MLFLOW_PORT" --workers 1 >"$logs/mlflow.log" 2>&1 &
pids+=($!)

echo "argus: waiting for the Airflow api-server..."
for _ in $(seq 1 120); do
  curl -fsS "http://localhost:$ARGUS_AIRFLOW_PORT/api/v2/monitor/health" >/dev/null 2>&1 && break
  sleep 1
done
password=$(python -c "import json,sys; print(json.load(open(sys.argv[1]))['admin'])" \
  "$AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE")
cat <<MSG

  Airflow : http://localhost:$ARGUS_AIRFLOW_PORT   (login: admin / $password)
            DAG: http://localhost:$ARGUS_AIRFLOW_PORT/dags/argus_weather_training
  MLflow  : $ARGUS_MLFLOW_UI
  Logs    : $logs/{api-server,scheduler,dag-processor,triggerer,mlflow}.log

  Trigger a run from the DAG page (Trigger button: a form of Params), or:
    . scripts/env.sh && airflow dags trigger argus_weather_training -c '{"conditions": ["fog"]}'
  Press Ctrl-C to stop.
MSG
wait -n "${pids[@]}"
echo "argus: a service stopped; see $logs"
