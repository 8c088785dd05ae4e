"""``ARGUS_RUNTIME=kubernetes``: the parse-time face of a heavy step that runs as a pod.

At parse time this is a light operator holding the step's spec, rendered arguments and env. At
execute time it builds the real :class:`~argus_airflow.kubernetes_runtime.ArgusPodOperator`
(a ``KubernetesPodOperator``) with the rendered values and hands over to it: pod creation,
reattach on restart, live logs, the XCom sidecar and exit-code mapping are the provider's own.
Keeping the Kubernetes client out of the parse keeps the DAG as fast to parse as a plain one.
"""

from __future__ import annotations

from airflow.sdk import BaseOperator

from argus_airflow.settings import Settings
from argus_airflow.step_operator import STEP_TEMPLATE_FIELDS, StepOperatorMixin
from argus_airflow.step_spec import StepSpec


class PodStepOperator(StepOperatorMixin, BaseOperator):
    """Runs ``cmds + arguments`` in the task image as a Kubernetes pod (see module doc).

    ``cmds`` is the step's command (``StepSpec.command``), as in the local runtime: ``["argus-task"]`` is
    the image's entrypoint and leaves the container command unset; another command (``torchrun ...``)
    becomes the container command, behind tini.
    """

    template_fields = STEP_TEMPLATE_FIELDS
    ui_color = "#e6f0ff"

    def __init__(self, *, step_spec: StepSpec, settings: Settings, cmds: list[str], arguments: list[str],
                 env_vars: dict[str, str], condition: str | None = None, item: str | None = None, **kwargs):
        super().__init__(**kwargs)
        self.init_step(step_spec, cmds, arguments, env_vars, condition, item)
        self.settings = settings
        self._pod_operator = None

    def build_pod_operator(self):
        """The KubernetesPodOperator for the (rendered) arguments and env of this task."""
        from argus_airflow.kubernetes_runtime import ArgusPodOperator, container_command, pod_kwargs, team_labels

        kwargs = pod_kwargs(self.step_spec, self.settings)
        # the team is a run Param: known once the env is rendered
        kwargs["labels"].update(team_labels(self.step_spec, self.settings, str(self.env_vars.get("ARGUS_TEAM", ""))))
        return ArgusPodOperator(
            task_id=self.task_id,
            step_spec=self.step_spec,
            condition=self.condition,
            # ["argus-task"]: the image's own entrypoint (tini -- argus-task); any other command behind tini
            cmds=container_command(self.cmds),
            arguments=[str(a) for a in self.arguments],
            env_vars={k: str(v) for k, v in self.env_vars.items()},
            **kwargs,
        )

    def build_pod(self, context=None):
        """The pod this task would create, rendered without a cluster (used by the policy tests)."""
        return self.build_pod_operator().build_pod_request_obj(context, dry_run=True)

    def execute(self, context):
        self._pod_operator = self.build_pod_operator()
        return self.finish(context, self._pod_operator.execute(context))

    def on_kill(self) -> None:
        if self._pod_operator is not None:
            self._pod_operator.on_kill()
