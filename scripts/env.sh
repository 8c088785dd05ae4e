# Environment of a local Argus install: source it (`. scripts/env.sh`). Every value can be
# overridden from the caller's environment. Holds no secret: generated secrets live in
# $ARGUS_HOME/secrets.env (git-ignored, mode 600) and are sourced from there.
ARGUS_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]:-$0}")/.." && pwd)"
export ARGUS_ROOT
export ARGUS_HOME="${ARGUS_HOME:-$ARGUS_ROOT/.argus}"
export ARGUS_RUNTIME="${ARGUS_RUNTIME:-local}"
export ARGUS_STORE="${ARGUS_STORE:-$ARGUS_HOME/store}"
export ARGUS_DATASET_REGISTRY="${ARGUS_DATASET_REGISTRY:-$ARGUS_HOME/registry}"
export ARGUS_DVC_REMOTE_DIR="${ARGUS_DVC_REMOTE_DIR:-$ARGUS_HOME/dvc-remote}"
export MLFLOW_TRACKING_URI="${MLFLOW_TRACKING_URI:-sqlite:///$ARGUS_HOME/mlflow/mlflow.db}"
export ARGUS_MLFLOW_ARTIFACTS="${ARGUS_MLFLOW_ARTIFACTS:-$ARGUS_HOME/mlflow/artifacts}"
export ARGUS_MLFLOW_PORT="${ARGUS_MLFLOW_PORT:-5000}"
export ARGUS_MLFLOW_UI="${ARGUS_MLFLOW_UI:-http://localhost:$ARGUS_MLFLOW_PORT}"
export ARGUS_AIRFLOW_PORT="${ARGUS_AIRFLOW_PORT:-8080}"

export AIRFLOW_HOME="$ARGUS_HOME/airflow"
export AIRFLOW__CORE__DAGS_FOLDER="$ARGUS_ROOT/dags"
export AIRFLOW__CORE__PLUGINS_FOLDER="$ARGUS_ROOT/plugins"
export AIRFLOW__CORE__LOAD_EXAMPLES="False"
export AIRFLOW__CORE__EXECUTOR="${AIRFLOW__CORE__EXECUTOR:-LocalExecutor}"
export AIRFLOW__CORE__PARALLELISM="${AIRFLOW__CORE__PARALLELISM:-4}"
export AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS="${AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS:-admin:admin}"
export AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE="${AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE:-$AIRFLOW_HOME/passwords.json}"
export AIRFLOW__CORE__EXECUTION_API_SERVER_URL="${AIRFLOW__CORE__EXECUTION_API_SERVER_URL:-http://localhost:$ARGUS_AIRFLOW_PORT/execution/}"
export AIRFLOW__API__PORT="$ARGUS_AIRFLOW_PORT"
export AIRFLOW__API__BASE_URL="${AIRFLOW__API__BASE_URL:-http://localhost:$ARGUS_AIRFLOW_PORT}"
export AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK="False"
export AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL="${AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL:-10}"
export AIRFLOW__LOGGING__LOGGING_LEVEL="${AIRFLOW__LOGGING__LOGGING_LEVEL:-INFO}"
export PATH="$ARGUS_ROOT/.venv/bin:$PATH"
export PYTHONPATH="$ARGUS_ROOT/plugins${PYTHONPATH:+:$PYTHONPATH}"
export GIT_PYTHON_REFRESH=quiet

if [ -f "$ARGUS_HOME/secrets.env" ]; then
  set -a
  # shellcheck disable=SC1091
  . "$ARGUS_HOME/secrets.env"
  set +a
fi
