"""When a failed task is worth retrying."""
from __future__ import annotations

# Bad input fails the same way every time; retrying it would only delay the clear error the user needs.
BAD_INPUT = (ValueError, FileNotFoundError)


def transient_failure(task, task_run, state) -> bool:
    """Prefect ``retry_condition_fn``: retry anything (a flaky file system, a lost Ray node) but bad input."""
    try:
        state.result()
    except BAD_INPUT:
        return False
    except Exception:  # noqa: BLE001 - anything else may be transient
        return True
    return True
