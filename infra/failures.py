"""One classification of failures for every entry point: the ``ssdiff`` command line, the ``ray job submit``
entrypoints (``infra.reprocess``, ``infra.train_job``) and Prefect's retry condition, so they cannot drift apart.

Light on purpose: ``ssdiff --help`` imports it, so the tiling stack is imported only when an error is classified.
"""
from __future__ import annotations

import sys

from ssdiff_model.errors import BadInput

__all__ = ["BAD_INPUT", "EXIT_BAD_INPUT", "EXIT_BUSY", "EXIT_FAILED", "RunFailed", "error_line", "exit_status",
           "report", "worth_retrying"]

EXIT_FAILED = 1      # the system refused (disk full, permissions, a lost file system) or a run broke: rerun resumes
EXIT_BAD_INPUT = 2   # the input is wrong: the same command fails the same way until the input changes
EXIT_BUSY = 3        # another run holds the output store

# Bad input fails the same way every time; retrying it would only delay the clear error the user needs.


class RunFailed(RuntimeError):
    """A failure the project foresaw (no actor could be placed, a batch that kills every actor it meets): one line
    naming the problem and exit 1, and worth a rerun, which resumes."""


# A ValueError that is not BadInput is a bug (or a library's surprise): a failure, not bad input.
BAD_INPUT: tuple[type[BaseException], ...] = (BadInput, FileNotFoundError, FileExistsError)


def _store_busy() -> type[BaseException]:
    from tiling.lock import StoreBusyError

    return StoreBusyError


def exit_status(err: BaseException) -> int:
    if isinstance(err, _store_busy()):
        return EXIT_BUSY
    if isinstance(err, BAD_INPUT):
        return EXIT_BAD_INPUT
    return EXIT_FAILED


def worth_retrying(err: BaseException) -> bool:
    """Anything may be transient (a flaky file system, a lost Ray node) but bad input, and a store another run is
    filling: that stays busy for the run's length (hours), so a retry seconds later is refused too."""
    return exit_status(err) == EXIT_FAILED


def error_line(err: BaseException) -> str:
    """The error as one line naming the file and the problem (an OSError carries the file apart from its text)."""
    if isinstance(err, OSError) and err.filename and err.strerror:
        message = f"{err.filename}: {err.strerror}"
    else:
        message = str(err)
    return " ".join(message.split())


def report(program: str, err: BaseException) -> int:
    """Print ``<program>: error: <one line>`` on stderr (a traceback would only bury the message, which already
    names the file and the problem) and return the exit status for `err`."""
    print(f"{program}: error: {error_line(err)}", file=sys.stderr)
    return exit_status(err)
