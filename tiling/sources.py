"""Where scene files come from: local paths, or URLs that GDAL reads through its /vsicurl/ virtual file system.

A URL becomes ``/vsicurl?url=<the URL, percent-encoded>``, GDAL's form of a /vsicurl/ path that keeps the URL
intact through ``pathlib`` (which would fold the ``//`` of ``/vsicurl/https://...``). The checksum a scene store
records of such a file is taken from the bytes as they stream over HTTP, never from a copy on disk.
"""
from __future__ import annotations

import os
import urllib.parse
import urllib.request
from typing import BinaryIO

__all__ = ["DOWNLOAD_TIMEOUT_S", "REMOTE_SCHEMES", "VSICURL", "is_remote", "open_bytes", "remote_url", "vsicurl_path"]

VSICURL = "/vsicurl?url="
REMOTE_SCHEMES = ("http://", "https://")
DOWNLOAD_TIMEOUT_S = 60   # per read of the stream, not for the whole file


def is_remote(href: str | os.PathLike) -> bool:
    return str(href).lower().startswith(REMOTE_SCHEMES)


def vsicurl_path(url: str) -> str:
    """The GDAL path that reads ``url`` with HTTP range requests."""
    return VSICURL + urllib.parse.quote(url, safe="")


def remote_url(path: str | os.PathLike) -> str | None:
    """The URL behind a ``vsicurl_path``, or None for a local path."""
    path = str(path)
    return urllib.parse.unquote(path[len(VSICURL):]) if path.startswith(VSICURL) else None


def open_bytes(path: str | os.PathLike) -> BinaryIO:
    """A local file, or the URL behind a /vsicurl path streamed over HTTP, opened for reading bytes."""
    url = remote_url(path)
    return urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) if url else open(path, "rb")
