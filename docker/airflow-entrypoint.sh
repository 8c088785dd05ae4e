#!/usr/bin/env bash
# Entry point of the Argus Airflow image: chooses where heavy steps run, then hands over to the
# official Airflow entrypoint (/entrypoint) with the same arguments.
#
#   ARGUS_RUNTIME set explicitly          -> kept as is
#   a kubeconfig at $KUBECONFIG           -> kubernetes, through that kubeconfig
#   running inside a Kubernetes pod       -> kubernetes, in-cluster service account
#   otherwise                             -> local (steps run as processes next to the worker)
#
# When the runtime is kubernetes and no connection `kubernetes_default` is configured, one is
# built (AIRFLOW_CONN_KUBERNETES_DEFAULT) from the kubeconfig or the in-cluster account.
set -euo pipefail

kubeconfig="${KUBECONFIG:-/opt/airflow/.kube/config}"
namespace="${ARGUS_K8S_NAMESPACE:-argus}"

if [[ -z "${ARGUS_RUNTIME:-}" ]]; then
    if [[ -f "${kubeconfig}" && -s "${kubeconfig}" ]]; then
        ARGUS_RUNTIME=kubernetes
        export KUBECONFIG="${kubeconfig}"
        : "${AIRFLOW_CONN_KUBERNETES_DEFAULT:=$(printf \
            '{"conn_type": "kubernetes", "extra": {"kube_config_path": "%s", "namespace": "%s", "in_cluster": false}}' \
            "${kubeconfig}" "${namespace}")}"
    elif [[ -n "${KUBERNETES_SERVICE_HOST:-}" ]]; then
        ARGUS_RUNTIME=kubernetes
        : "${AIRFLOW_CONN_KUBERNETES_DEFAULT:=$(printf \
            '{"conn_type": "kubernetes", "extra": {"in_cluster": true, "namespace": "%s"}}' \
            "${namespace}")}"
    else
        ARGUS_RUNTIME=local
    fi
fi

case "${ARGUS_RUNTIME}" in
    local|kubernetes) ;;
    *)
        echo "argus-entrypoint: ARGUS_RUNTIME=${ARGUS_RUNTIME} is not one of: local, kubernetes" >&2
        exit 64
        ;;
esac

export ARGUS_RUNTIME
if [[ -n "${AIRFLOW_CONN_KUBERNETES_DEFAULT:-}" ]]; then
    export AIRFLOW_CONN_KUBERNETES_DEFAULT
fi
echo "argus-entrypoint: heavy steps run with ARGUS_RUNTIME=${ARGUS_RUNTIME}" >&2

exec "${ARGUS_AIRFLOW_ENTRYPOINT:-/entrypoint}" "$@"
