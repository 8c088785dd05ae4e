# The task image: everything a heavy step needs (CUDA, torch, the argus_tasks package, the Great
# Expectations context) and nothing of Airflow. Its entrypoint is the task CLI, so a pod runs
# `argus-task <step> [args]`, the same command line as the local runtime.
#
# Build from the repository root, with the commit (recorded as the image's revision label and as
# ARGUS_GIT_COMMIT, the lineage of every model the image trains):
#   docker build -f docker/task.Dockerfile --build-arg ARGUS_GIT_COMMIT=$(git rev-parse HEAD) \
#     -t registry.example.com/argus/task:$(git rev-parse --short HEAD) .
#
# torch 2.13.0 is built against CUDA 13.0 (cu130); the base image brings the CUDA 13.0 user-space
# runtime and the torch wheel brings its own cuDNN/cuBLAS/NCCL. The node needs an NVIDIA driver
# that supports CUDA 13.0 (R580 or newer).

FROM nvidia/cuda:13.0.2-runtime-ubuntu24.04 AS builder

ENV DEBIAN_FRONTEND=noninteractive \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Ubuntu's own Python 3.12. Distribution packages are not version-pinned (DL3008): the archive
# drops superseded versions, so a pin would break the build; pin the base image digest instead.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
    && rm -rf /var/lib/apt/lists/*

RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

# 1) the pinned run-time dependencies (versions of the repository's requirements.txt)
COPY docker/requirements-task.txt /tmp/requirements-task.txt
RUN pip install --no-cache-dir -r /tmp/requirements-task.txt

# 2) torch from the PyTorch CUDA index; its CUDA wheels are pinned exactly by torch itself
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu130
RUN pip install --no-cache-dir --index-url "${TORCH_INDEX_URL}" --extra-index-url https://pypi.org/simple \
        "torch==${TORCH_VERSION}" \
    && pip check

# 3) the task package itself (not editable: the image is immutable)
COPY tasks/ /tmp/src/tasks/
RUN pip install --no-cache-dir --no-deps /tmp/src/tasks \
    && argus-task --help > /dev/null


FROM nvidia/cuda:13.0.2-runtime-ubuntu24.04

ARG ARGUS_UID=10001
ARG ARGUS_GID=10001
LABEL org.opencontainers.image.title="argus-task" \
      org.opencontainers.image.description="Argus Pipelines heavy steps: argus-task <step> (CUDA 13.0, torch 2.13.0)" \
      org.opencontainers.image.source="https://github.com/argus-pipelines/argus" \
      io.argus.uid="10001"

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PATH=/opt/venv/bin:$PATH \
    HOME=/home/argus \
    ARGUS_GX_ROOT=/opt/argus/great_expectations \
    ARGUS_SCRATCH=/tmp/argus-scratch \
    ARGUS_XCOM_RETURN=/airflow/xcom/return.json \
    MPLCONFIGDIR=/tmp/matplotlib

# python3: the interpreter of the venv; git: DVC clones the dataset registry;
# tini: reaps the git/DVC child processes and forwards SIGTERM to argus-task.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 git ca-certificates tini \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid "${ARGUS_GID}" argus \
    && useradd --uid "${ARGUS_UID}" --gid "${ARGUS_GID}" --create-home --home-dir /home/argus \
        --shell /usr/sbin/nologin argus \
    && mkdir -p /airflow/xcom /tmp/argus-scratch \
    && chown "${ARGUS_UID}:${ARGUS_GID}" /airflow/xcom /tmp/argus-scratch

COPY --from=builder /opt/venv /opt/venv
# The GX file context, read-only: the validate step works in a private copy inside the run.
COPY great_expectations/ /opt/argus/great_expectations/

WORKDIR /home/argus
# Numeric user, so that Kubernetes can check runAsNonRoot without a runAsUser in the pod.
USER 10001:10001

# Last, so that a new commit rebuilds only these metadata layers: the code's commit, for lineage.
ARG ARGUS_GIT_COMMIT=""
LABEL org.opencontainers.image.revision="${ARGUS_GIT_COMMIT}"
ENV ARGUS_GIT_COMMIT="${ARGUS_GIT_COMMIT}"

ENTRYPOINT ["/usr/bin/tini", "--", "argus-task"]
CMD ["--help"]
