"""The runtime_env that carries the object-store variables to every Ray process we start: the sharpening actors
(infra.pool), the adaptation task (infra.adapt) and the Ray Train workers (infra.training.driver).

Why: actors on another node, or started by a long-lived cluster before the driver set AWS_*, would otherwise read
``s3://`` stores from the wrong endpoint, or as nobody. Ray merges these ``env_vars`` with the job's own runtime_env.
"""
from __future__ import annotations

from typing import Any

from tiling import objstore

__all__ = ["forwarded_runtime_env", "remote_options"]


def forwarded_runtime_env() -> dict[str, Any] | None:
    """The runtime_env for a Ray actor, task or Ray Train worker group.

    Returns:
        ``{"env_vars": {...}}`` with this process's AWS_* variables, or None when none is set (nothing to add).
    """
    forwarded = objstore.forwarded_environment()
    return {"env_vars": forwarded} if forwarded else None


def remote_options(options: dict[str, Any] | None = None) -> dict[str, Any]:
    """``options`` for ``ray.remote(...)`` / ``.options(...)`` with the forwarded runtime_env added (if any).

    Args:
        options: the actor's or task's other options (not changed).

    Returns:
        A new dict of options.
    """
    env = forwarded_runtime_env()
    return {**(options or {}), **({"runtime_env": env} if env else {})}
