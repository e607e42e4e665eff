"""The one wrapper every entry point runs its work in: the ``ssdiff`` command line, the ``ray job submit``
entrypoints (``python -m infra.reprocess``, ``python -m infra.train_job``) and the benches that take user files.

It gives them the same behaviour, so they cannot drift apart:
- bad input (``BadInput``, a missing or existing file) is one line ``<program>: error: ...`` and exit 2; a store in
  use by another run exit 3; a refusal of the system (``OSError``) or of the object store exit 1;
- Ctrl-C and SIGTERM (a scheduler's or `kill`'s polite stop) end the work as an exception, so locks are released
  and finished tiles kept, and print ``<program>: interrupted; rerun ...`` with exit 1;
- anything else is a bug or a failure the project did not foresee: its traceback is printed (exit 1);
- the work's warnings go to stderr, its summary to stdout as JSON.
"""
from __future__ import annotations

import json
import signal
import sys
import threading
from typing import Any, Callable

from infra.failures import EXIT_FAILED, RunFailed, report

__all__ = ["interrupt_on_sigterm", "run_entry"]


def _interrupted(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def interrupt_on_sigterm() -> None:
    """Handle SIGTERM as Ctrl-C. Only the main thread may set a handler; elsewhere (a Prefect worker thread) the
    process's handler stays. Call it again after ``ray.init``, which installs a SIGTERM handler of its own."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupted)


def run_entry(program: str, work: Callable[[], Any], *, where: str | None = None,
              rerun_hint: str = "rerun the same command to resume", status: Callable[[Any], int] | None = None,
              print_summary: bool = True) -> int:
    """Run ``work()`` and turn its outcome into output and an exit status.

    Args:
        program: the name the lines start with, e.g. ``"ssdiff sharpen"``.
        work: the command's work; returns its summary (a dict, JSON-encodable with ``str`` for the rest).
        where: the store or file an object store's own error is about (its messages name none).
        rerun_hint: what the interrupted line tells the user to do.
        status: the exit status of a summary (default 0), e.g. 1 when some scenes failed.
        print_summary: print the summary as JSON on stdout.

    Returns:
        The exit status: 0 done, 1 failed or interrupted, 2 bad input, 3 output store busy.
    """
    from infra.failures import BAD_INPUT
    from tiling.lock import StoreBusyError  # here, not at import: `ssdiff --help` need not load the tiling stack

    interrupt_on_sigterm()
    try:
        result = work()
    except (StoreBusyError, *BAD_INPUT, OSError, RunFailed) as err:
        return report(program, err)
    except KeyboardInterrupt:
        print(f"{program}: interrupted; {rerun_hint}", file=sys.stderr)
        return EXIT_FAILED
    except Exception as err:   # an object store's own errors (botocore, aiohttp), classified like the rest
        from tiling.objstore import storage_error

        problem = storage_error(err, where or "object store")
        if problem is None:
            raise
        return report(program, problem)
    warnings = result.get("warnings", []) if isinstance(result, dict) else []
    for warning in warnings:
        print(f"{program}: warning: {warning}", file=sys.stderr)
    if print_summary:
        print(json.dumps(result, indent=2, default=str))
    return status(result) if status else 0
