"""Local path or URL: the one rule, for the readers here and for ``tiling.objstore`` above them.

A URL (``s3://``, ``gs://``, ``https://`` ...) stays text: GDAL reads it through its virtual file systems (/vsis3/,
/vsicurl/) by byte range and fsspec opens it, while ``Path`` would corrupt it (it folds the ``//``). ``file://`` is
a local path.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

__all__ = ["as_path", "is_url"]


def is_url(path: Any) -> bool:
    """True for ``scheme://...`` (an object store, http); False for a local path, ``file://`` included."""
    text = os.fspath(path) if isinstance(path, os.PathLike) else path
    return isinstance(text, str) and "://" in text and not text.startswith("file://")


def as_path(path: str | os.PathLike) -> Path | str:
    """A local path as a ``Path``, a URL as its text: what a path argument becomes.

    Args:
        path: a local path or a URL.

    Returns:
        ``Path(path)``, or the URL unchanged.
    """
    return os.fspath(path) if is_url(path) else Path(path)
