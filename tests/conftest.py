"""Test-wide isolation: every test session gets its own Argus home, never the user's .argus/.

Airflow reads its configuration when first imported, so the environment is set here, at import
time of the root conftest, before any test module imports Airflow.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
_SESSION_HOME = Path(tempfile.mkdtemp(prefix="argus-test-home-"))

os.environ["ARGUS_HOME"] = str(_SESSION_HOME)
os.environ["ARGUS_RUNTIME"] = "local"
os.environ["ARGUS_STORE"] = str(_SESSION_HOME / "store")
os.environ["ARGUS_DATASET_REGISTRY"] = str(_SESSION_HOME / "registry")
os.environ["ARGUS_DVC_REMOTE_DIR"] = str(_SESSION_HOME / "dvc-remote")
os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{_SESSION_HOME / 'mlflow' / 'mlflow.db'}"
os.environ["ARGUS_MLFLOW_ARTIFACTS"] = str(_SESSION_HOME / "mlflow" / "artifacts")
os.environ["AIRFLOW_HOME"] = str(_SESSION_HOME / "airflow")
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(REPO / "dags")
os.environ["AIRFLOW__CORE__PLUGINS_FOLDER"] = str(REPO / "plugins")
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"] = str(_SESSION_HOME / "airflow" / "passwords.json")
os.environ["ARGUS_RETRY_DELAY_S"] = "1"
os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
for sub in ("airflow", "mlflow/artifacts", "store"):
    (_SESSION_HOME / sub).mkdir(parents=True, exist_ok=True)
if str(REPO / "plugins") not in sys.path:
    sys.path.insert(0, str(REPO / "plugins"))


def pytest_report_header(config):
    return f"argus test home: {_SESSION_HOME}"
