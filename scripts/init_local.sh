#!/usr/bin/env bash
# Initialise the embedded state in .argus/ (idempotent): secrets, Airflow metadata on SQLite,
# pools, the MLflow store folders and the DVC dataset registry with the generated demo dataset.
set -euo pipefail
. "$(dirname "$0")/env.sh"
mkdir -p "$ARGUS_HOME"/{airflow,mlflow/artifacts,store,logs}

if [ ! -f "$ARGUS_HOME/secrets.env" ]; then
  (umask 077 && python - >"$ARGUS_HOME/secrets.env" <<'PY'
import secrets
from cryptography.fernet import Fernet
print(f"AIRFLOW__API_AUTH__JWT_SECRET={secrets.token_urlsafe(32)}")
print(f"AIRFLOW__API__SECRET_KEY={secrets.token_urlsafe(32)}")
print(f"AIRFLOW__CORE__FERNET_KEY={Fernet.generate_key().decode()}")
PY
  )
  echo "argus: generated local secrets in $ARGUS_HOME/secrets.env"
  set -a; . "$ARGUS_HOME/secrets.env"; set +a
fi
if [ ! -f "$AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE" ]; then
  (umask 077 && python -c 'import json,secrets; print(json.dumps({"admin": secrets.token_urlsafe(9)}))' \
    >"$AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE")
fi

echo "argus: migrating the Airflow metadata database (SQLite in $AIRFLOW_HOME)"
airflow db migrate >"$ARGUS_HOME/logs/db-migrate.log" 2>&1 || { tail -n 40 "$ARGUS_HOME/logs/db-migrate.log"; exit 1; }
"$(dirname "$0")/init_pools.sh"  # GPU pools (shared + one per team quota) and argus_promotion

# ARGUS_DATASET_INIT_ARGS: extra options (size, counts...) of `argus-task dataset init`, used by the tests
# shellcheck disable=SC2086
argus-task dataset init --registry "$ARGUS_DATASET_REGISTRY" --remote "$ARGUS_DVC_REMOTE_DIR" ${ARGUS_DATASET_INIT_ARGS:-}
