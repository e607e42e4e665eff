"""One writer per output store: the lock every run takes before it creates or fills a mosaic store.

Two runs filling the same mosaic would not corrupt its tiles (each core is its own chunk, written atomically), but
they would waste a cluster's time on the same tiles and race on the store's provenance. So a run
holds an exclusive ``flock`` on ``.<store name>.lock`` beside the store for its whole length, and a second run is
refused at once with a message naming the store and the holder. The kernel drops the lock when its holder dies,
SIGKILL included, so a killed run never leaves a stale lock behind.

``flock`` covers the processes of one host and, on Linux NFS clients (which emulate it with POSIX locks), the hosts
sharing an NFSv4 export; a file system without working locks (some FUSE mounts) gives no protection.

On object storage (an ``s3://`` store) there is no flock: the same lock is a lease object at the same place,
written with conditional writes and renewed while the run lives (tiling.lease); a killed run's lease expires.
"""
from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from ssdiff_model.errors import BadInput
from tiling import objstore
from tiling.clock import utc_timestamp
from tiling.stores.atomic import require_folder_for, writing
from tiling.stores.layout import StorePath

__all__ = ["StoreBusyError", "held_for", "lock_path", "store_lock"]


class StoreBusyError(RuntimeError):
    """Another run holds the store's lock."""


def lock_path(store: StorePath) -> Path | str:
    """Beside the store, not inside: the lock is taken before the store exists, and stays out of its files."""
    if objstore.is_url(store):
        return objstore.sibling(store, f".{objstore.name(store)}.lock")
    store = Path(store)
    return store.with_name(f".{store.name}.lock")


@contextmanager
def store_lock(store: StorePath) -> Iterator[None]:
    """Hold ``store``'s lock for the duration of the block; StoreBusyError if another run holds it.

    The lock file is removed on release. Removing it is safe because a run that has just locked a file checks
    that the file is still the one at the lock path (a run that opened it before the holder removed it would
    otherwise hold a lock on a file nobody else can see)."""
    if objstore.is_url(store):
        with _leased(objstore.location(store)):
            yield
        return
    store = Path(store)
    require_folder_for(store, create=True)
    path = lock_path(store)
    while True:
        handle = _open_lock_file(store, path)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip()
            handle.close()
            raise StoreBusyError(f"{store}: in use by another run ({_describe_holder(holder)}); wait for it to "
                                 f"finish or stop it, then rerun (a rerun resumes where it stopped)") from None
        if _same_file(handle, path):
            break
        handle.close()   # the holder removed that file while we opened it: lock the new one
    try:
        with writing(store, f"writing its lock file {path.name}"):
            _record_holder(handle)
        yield
    finally:
        path.unlink(missing_ok=True)   # while still locked: see the docstring
        handle.close()


def _open_lock_file(store: Path, path: Path):
    with writing(store, f"cannot create its lock file {path.name} beside it"):
        return open(path, "a+", encoding="utf-8")   # "a+": create if missing, never truncate the holder's record


def _record_holder(handle) -> None:
    """Who holds the lock, for the message of the runs it refuses."""
    handle.seek(0)
    handle.truncate()
    handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                             "started": utc_timestamp(),
                             "command": " ".join(sys.argv)}))
    handle.flush()


def _same_file(handle, path: Path) -> bool:
    try:
        return os.stat(path).st_ino == os.fstat(handle.fileno()).st_ino
    except FileNotFoundError:
        return False


def _describe_holder(record: str) -> str:
    try:
        holder = json.loads(record)
        return f"pid {holder['pid']} on {holder['host']}, started {holder['started']}: {holder['command']}"
    except (ValueError, KeyError, TypeError):
        return "holder unknown: its record is not written yet"


@contextmanager
def _leased(store: str) -> Iterator[None]:
    from tiling.lease import LeaseBusy, lease

    if not store.lower().startswith(("s3://", "s3a://")):
        # The lease needs S3's conditional writes; gs:// and az:// have their own (generation / etag preconditions)
        # that tiling.lease does not speak yet. Reading from them works; writing a store there would be unlocked.
        raise BadInput(f"{store}: output stores on {store.split('://', 1)[0]}:// cannot be locked yet; write to "
                         f"s3:// (AWS S3, MinIO, any S3-compatible store) or to local disk")
    require_folder_for(store)   # the bucket exists and takes our credentials, else one clear line (exit 2)
    try:
        with writing(store, "taking its lock"):
            context = lease(lock_path(store))
            held = context.__enter__()
    except LeaseBusy as busy:
        raise StoreBusyError(f"{store}: in use by another run ({_describe_holder(json.dumps(busy.holder))}); wait "
                             f"for it to finish or stop it, then rerun (a rerun resumes where it stopped; a killed "
                             f"run's lease expires {held_for()} after its last renewal)") from None
    try:
        yield
    finally:
        context.__exit__(None, None, None)
    del held


def held_for() -> str:
    from tiling.lease import lease_seconds

    return f"{lease_seconds():g} s"
