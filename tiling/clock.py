"""UTC time as the stores record it: one spelling for every timestamp in provenance, locks, leases and model cards."""
from __future__ import annotations

from datetime import datetime, timezone

__all__ = ["utc_now", "utc_timestamp"]


def utc_now() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(timezone.utc)


def utc_timestamp(timespec: str = "seconds") -> str:
    """The current UTC time in ISO 8601 (``2026-12-05T18:48:30+00:00``), as ``datetime.isoformat`` writes it."""
    return utc_now().isoformat(timespec=timespec)
