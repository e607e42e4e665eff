"""The project's own error for bad input.

``BadInput`` is what every check of a user's files, arguments, checkpoints and stores raises: the same input fails
the same way every time, so entry points exit 2 and Prefect does not retry it. Any other exception, a
``ValueError`` from a bug or a library included, is a failure (exit 1, retried where retries apply). It is a
``ValueError`` so that callers catching ``ValueError`` keep working.
"""
from __future__ import annotations

__all__ = ["BadInput"]


class BadInput(ValueError):
    """Input that cannot be used as given; the message names the file (or argument) and the problem."""
