"""Exit codes of the step contract (mirrors ``argus_tasks.contract``; a test keeps them equal).

The Airflow image does not ship the task package, so the values are repeated here.
"""

EXIT_OK = 0
EXIT_PERMANENT = 10  # bad data, broken contract, failed gate: fail now, never retry
EXIT_TRANSIENT = 75  # dependency unavailable: retry with backoff


def describe(code: int) -> str:
    if code == EXIT_OK:
        return "success"
    if code == EXIT_PERMANENT:
        return "permanent failure (bad input, broken contract or failed gate): not retried"
    if code == EXIT_TRANSIENT:
        return "transient failure (a dependency was unavailable): retried with backoff"
    if code < 0:
        return f"killed by signal {-code}: retried"
    return f"unexpected exit code {code}: retried"
