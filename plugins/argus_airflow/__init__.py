"""How Argus launches its heavy steps from Airflow.

A heavy step is declared once as a :class:`~argus_airflow.step_spec.StepSpec` (image command,
arguments, env, resources, pool, priority). :func:`~argus_airflow.factory.heavy_step` turns it into

* a ``KubernetesPodOperator`` subclass when ``ARGUS_RUNTIME=kubernetes`` (production), or
* a local-process operator running the very same command line when ``ARGUS_RUNTIME=local``.

Nothing here imports torch, mlflow, great_expectations or dvc: this package is loaded when the
DAG is parsed.
"""
