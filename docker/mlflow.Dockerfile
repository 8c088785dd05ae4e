# The MLflow tracking server of docker-compose: the pinned mlflow of requirements.txt with the
# Postgres driver (backend store) and boto3 (S3 artifacts). Configuration comes from the command
# line and the environment (docker-compose.yaml), never from the image.

FROM python:3.11-slim-bookworm

LABEL org.opencontainers.image.title="argus-mlflow" \
      org.opencontainers.image.description="MLflow 3.17.2 tracking server with Postgres and S3 support"

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

COPY docker/requirements-mlflow.txt /tmp/requirements-mlflow.txt
RUN pip install --no-cache-dir -r /tmp/requirements-mlflow.txt \
    && pip check \
    && groupadd --gid 10002 mlflow \
    && useradd --uid 10002 --gid 10002 --create-home --shell /usr/sbin/nologin mlflow

WORKDIR /home/mlflow
USER 10002:10002
EXPOSE 5000

# Last, so that a new commit rebuilds only these metadata layers.
ARG ARGUS_GIT_COMMIT=""
LABEL org.opencontainers.image.revision="${ARGUS_GIT_COMMIT}"
ENV ARGUS_GIT_COMMIT="${ARGUS_GIT_COMMIT}"

ENTRYPOINT ["mlflow"]
CMD ["server", "--host", "0.0.0.0", "--port", "5000"]
