"""When a failed task is worth retrying."""
from __future__ import annotations

from tiling.lock import StoreBusyError

# Bad input fails the same way every time; retrying it would only delay the clear error the user needs.
BAD_INPUT = (ValueError, FileNotFoundError)
# A store another run is filling stays busy for that run's length (hours): a retry seconds later is refused too.
NOT_RETRIED = (*BAD_INPUT, StoreBusyError)


def transient_failure(task, task_run, state) -> bool:
    """Prefect ``retry_condition_fn``: retry anything (a flaky file system, a lost Ray node) but bad input and a
    store in use by another run."""
    try:
        state.result()
    except NOT_RETRIED:
        return False
    except Exception:  # noqa: BLE001 - anything else may be transient
        return True
    return True
