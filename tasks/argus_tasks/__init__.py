"""Argus Pipelines task package: the code that runs inside the task image.

Every heavy step is a subcommand of the ``argus-task`` CLI (see ``argus_tasks.cli``) and honours
the step contract in ``argus_tasks.contract``.
"""

__version__ = "0.1.0"
