"""The store lock on object storage: a lease object written with conditional writes.

An object store has no flock and no rename, and nothing frees a lock when its holder dies. What S3 (and MinIO,
Ceph, moto) does offer are conditional writes: ``PutObject`` with ``If-None-Match: *`` succeeds only if the key
does not exist, with ``If-Match: <etag>`` only if the object is still the one we read. On those:

- Taking the lock creates ``.<store name>.lock`` beside the store with ``If-None-Match: *``; the record names the
  holder (pid, host, command, start) and an expiry ``LEASE_SECONDS`` ahead. A second run finds it there: if it has
  not expired, it is refused (StoreBusyError, exit 3) naming the holder.
- The holder renews the lease every third of its length (a background thread) with ``If-Match`` on the etag of
  its own last write, so it notices at once when it lost it.
- A run killed (SIGKILL, a lost node) stops renewing; once its lease has expired (or at once, when it ran on the
  same host and its process is gone) the next run takes it over, with
  ``If-Match`` on the etag of the expired record it read: of two runs taking over at once exactly one succeeds, the
  other is refused as busy. A killed run's lock therefore blocks the next run for at most ``LEASE_SECONDS``.
- Releasing deletes the record with ``If-Match`` on our etag: a lease someone else took over is never deleted.

Expiry compares the holder's clock with the taker's (UTC, NTP): a skew up to two thirds of ``LEASE_SECONDS`` is
harmless, as a renewal is never more than a third of it old. A holder paused longer than its lease (a frozen VM)
may write after another run took over; that is harmless here because every tile's bytes are a pure function of its
position, seed and checkpoint (the two write identical chunks) and the manifest marks a tile only after its core.
"""
from __future__ import annotations

import json
import os
import socket
import sys
import threading
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Iterator

from tiling import objstore
from tiling.clock import utc_now

__all__ = ["DEFAULT_LEASE_SECONDS", "LeaseBusy", "lease", "lease_seconds", "objstore_sync"]

# Long enough that a renewal (every third of it) survives a slow endpoint and its retries, short enough that a
# killed run's successor waits little. SSDIFF_LEASE_SECONDS overrides it (tests, very slow links).
DEFAULT_LEASE_SECONDS = 60.0


def lease_seconds() -> float:
    try:
        return max(1.0, float(os.environ.get("SSDIFF_LEASE_SECONDS", DEFAULT_LEASE_SECONDS)))
    except ValueError:
        return DEFAULT_LEASE_SECONDS


class LeaseBusy(Exception):
    """Another run holds an unexpired lease; ``holder`` is its record."""

    def __init__(self, holder: dict | None):
        super().__init__("busy")
        self.holder = holder


def _record(seconds: float, started: str) -> bytes:
    return json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": started,
                       "command": " ".join(sys.argv),
                       "expires": (utc_now() + timedelta(seconds=seconds)).isoformat(timespec="milliseconds")}).encode()


class _Lease:
    def __init__(self, url: str):
        self.url = url
        self.fs, inner = objstore.filesystem(url)
        self.bucket, self.key = inner.split("/", 1)
        self.seconds = lease_seconds()
        self.started = utc_now().isoformat(timespec="seconds")
        self.etag: str | None = None
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _put(self, **condition) -> str:
        response = self.fs.call_s3("put_object", Bucket=self.bucket, Key=self.key,
                                   Body=_record(self.seconds, self.started), ContentType="application/json",
                                   **condition)
        return response["ETag"]

    def _read(self) -> tuple[dict | None, str | None]:
        try:
            response = self.fs.call_s3("get_object", Bucket=self.bucket, Key=self.key)
        except FileNotFoundError:
            return None, None
        body = response["Body"]
        data = objstore_sync(self.fs, body.read())
        try:
            return json.loads(data), response["ETag"]
        except ValueError:
            return {}, response["ETag"]   # a record cut short: treated as expired below

    def acquire(self) -> None:
        try:
            self.etag = self._put(IfNoneMatch="*")
            return
        except Exception as err:  # noqa: BLE001 - only a failed precondition means "held"; the rest is re-raised
            if not _precondition_failed(err):
                raise
        holder, etag = self._read()
        if holder is None:   # released between our write and our read: try once more from the start
            return self.acquire()
        if not (_expired(holder) or _dead_here(holder)):
            raise LeaseBusy(holder)
        try:   # the holder is gone (it stopped renewing): take over that very record, or lose to whoever did
            self.etag = self._put(IfMatch=etag)
        except Exception as err:  # noqa: BLE001
            if _precondition_failed(err):
                raise LeaseBusy(self._read()[0]) from None
            raise

    def start_renewing(self) -> None:
        self._thread = threading.Thread(target=self._renew, name=f"lease {self.url}", daemon=True)
        self._thread.start()

    def _renew(self) -> None:
        while not self._stop.wait(self.seconds / 3):
            try:
                self.etag = self._put(IfMatch=self.etag)
            except Exception as err:  # noqa: BLE001 - a renewal failing on a flaky endpoint is retried next time
                if _precondition_failed(err):
                    self.lost.set()   # taken over: see the module docstring for why writing on is harmless
                    print(f"{self.url}: warning: the lease was taken over by another run", file=sys.stderr)
                    return

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self.etag is None or self.lost.is_set():
            return
        try:
            self.fs.call_s3("delete_object", Bucket=self.bucket, Key=self.key, IfMatch=self.etag)
        except Exception:  # noqa: BLE001 - not deleting only costs the next run one lease's wait, no safety
            pass


def objstore_sync(fs, coroutine):
    """Run a coroutine of the file system's aiobotocore objects (a body read) on its loop."""
    from fsspec.asyn import sync

    return sync(fs.loop, lambda: coroutine)


def _precondition_failed(err: BaseException) -> bool:
    code = objstore._client_error_code(err)
    return code in ("PreconditionFailed", "412", "ConditionalRequestConflict") or isinstance(err, FileExistsError)


def _dead_here(holder: dict) -> bool:
    """The holder ran on this host and its process is gone: no need to wait for its lease to expire (a run that
    exited without reaching the store to delete its lease, the endpoint being down, is rerun at once)."""
    if holder.get("host") != socket.gethostname() or not isinstance(holder.get("pid"), int):
        return False
    try:
        os.kill(holder["pid"], 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _expired(holder: dict) -> bool:
    try:
        return datetime.fromisoformat(holder["expires"]) <= utc_now()
    except (KeyError, TypeError, ValueError):
        return True


@contextmanager
def lease(url: str) -> Iterator[_Lease]:
    """Hold the lease at ``url`` for the block (LeaseBusy if another run holds it), renewing it meanwhile."""
    held = _Lease(url)
    held.acquire()
    held.start_renewing()
    try:
        yield held
    finally:
        held.release()
