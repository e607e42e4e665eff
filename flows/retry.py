"""When a failed Prefect task is worth retrying: the classification every entry point shares."""
from __future__ import annotations

from infra.failures import worth_retrying

__all__ = ["transient_failure"]


def transient_failure(task, task_run, state) -> bool:
    """Prefect ``retry_condition_fn``: retry anything but bad input and a store in use by another run."""
    try:
        state.result()
    except Exception as err:  # noqa: BLE001 - classified, not swallowed: Prefect re-raises it when not retried
        return worth_retrying(err)
    return True
