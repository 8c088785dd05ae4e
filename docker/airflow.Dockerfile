# The Airflow image: the official Airflow 3.3.2 image plus our providers, DAGs and plugins.
# It holds no torch, mlflow, dvc or great_expectations: heavy steps run in the task image
# (docker/task.Dockerfile), launched as pods by the KubernetesPodOperator.
#
# Two targets:
#   airflow        production (ARGUS_RUNTIME=kubernetes). Build:
#                    docker build -f docker/airflow.Dockerfile --target airflow \
#                      --build-arg ARGUS_GIT_COMMIT=$(git rev-parse HEAD) -t .../argus/airflow:TAG .
#   airflow-local  the same plus a separate virtualenv with the task package and CPU torch, for a
#                  single host without a cluster (docker-compose, ARGUS_RUNTIME=local). Airflow's
#                  own environment stays torch-free; the local runtime runs the executable
#                  named by ARGUS_LOCAL_ENTRYPOINT (plugins/argus_airflow/local_runtime.py).
#
# Python 3.11: the interpreter the repository's requirements.txt was resolved with.

FROM apache/airflow:3.3.2-python3.11 AS airflow

LABEL org.opencontainers.image.title="argus-airflow" \
      org.opencontainers.image.description="Argus Pipelines: Airflow 3.3.2 with providers, DAGs and plugins (no torch)" \
      org.opencontainers.image.source="https://github.com/argus-pipelines/argus"

# The official image installs as the `airflow` user (UID 50000); keep Airflow itself pinned in the
# same pip call so that no provider can move it.
COPY docker/requirements-airflow.txt /tmp/requirements-airflow.txt
RUN pip install --no-cache-dir "apache-airflow==${AIRFLOW_VERSION}" -r /tmp/requirements-airflow.txt \
    && pip check

COPY --chown=airflow:0 dags/ /opt/airflow/dags/
COPY --chown=airflow:0 plugins/ /opt/airflow/plugins/
COPY --chown=airflow:0 --chmod=0755 docker/airflow-entrypoint.sh /opt/airflow/argus-entrypoint.sh
# Mount points owned by the airflow user, so that named volumes mounted there inherit it:
# auth/ (simple auth manager passwords), argus/ (dataset registry, scratch), .kube/ (kubeconfig).
RUN mkdir -p /opt/airflow/auth /opt/airflow/argus /opt/airflow/.kube

ENV AIRFLOW__CORE__LOAD_EXAMPLES=False \
    AIRFLOW__CORE__DAGS_FOLDER=/opt/airflow/dags \
    AIRFLOW__CORE__PLUGINS_FOLDER=/opt/airflow/plugins \
    ARGUS_K8S_NAMESPACE=argus

# The commit of the DAGs and plugins (and of the task package of airflow-local): lineage. Steps get it
# as ARGUS_DAG_GIT_COMMIT (pods) or ARGUS_GIT_COMMIT (local runtime, same code).
ARG ARGUS_GIT_COMMIT=""
LABEL org.opencontainers.image.revision="${ARGUS_GIT_COMMIT}"
ENV ARGUS_GIT_COMMIT="${ARGUS_GIT_COMMIT}"

# Chooses the runtime (kubernetes when a kubeconfig or an in-cluster service account is present,
# local otherwise) and then hands over to the official entrypoint.
ENTRYPOINT ["/usr/bin/dumb-init", "--", "/opt/airflow/argus-entrypoint.sh"]
CMD []


FROM airflow AS airflow-local

ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV ARGUS_TASK_VENV=/home/airflow/argus-task-venv
ENV ARGUS_LOCAL_ENTRYPOINT=${ARGUS_TASK_VENV}/bin/argus-task \
    ARGUS_GX_ROOT=/opt/airflow/great_expectations

COPY docker/requirements-task.txt /tmp/requirements-task.txt
COPY --chown=airflow:0 tasks/ /tmp/src/tasks/
# The official image sets PIP_USER=true; a virtualenv install must not be a --user install.
RUN python -m venv "${ARGUS_TASK_VENV}" \
    && PIP_USER=false "${ARGUS_TASK_VENV}/bin/pip" install --no-cache-dir -r /tmp/requirements-task.txt \
    && PIP_USER=false "${ARGUS_TASK_VENV}/bin/pip" install --no-cache-dir \
        --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}" \
    && PIP_USER=false "${ARGUS_TASK_VENV}/bin/pip" install --no-cache-dir --no-deps /tmp/src/tasks \
    && PIP_USER=false "${ARGUS_TASK_VENV}/bin/pip" check \
    && mkdir -p /home/airflow/.local/bin \
    && ln -s "${ARGUS_LOCAL_ENTRYPOINT}" /home/airflow/.local/bin/argus-task \
    && "${ARGUS_LOCAL_ENTRYPOINT}" --help > /dev/null

COPY --chown=airflow:0 great_expectations/ /opt/airflow/great_expectations/
