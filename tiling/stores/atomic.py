"""Writing stores so that a reader never sees half of one, and write errors that name the store.

A new store is built beside its final place and appears there only once complete (``built_beside``); an OSError
raised while writing names the store and what was being done (``writing``); ``write_dataset`` writes a Dataset
with the layouts' settings (``tiling.stores.layout``) and leaves no write running behind it.
"""
from __future__ import annotations

import errno
import hashlib
import os
import shutil
import uuid
import warnings
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from tiling import objstore
from tiling.sources import open_bytes, remote_url
from tiling.stores.layout import StorePath

if TYPE_CHECKING:
    import xarray as xr

__all__ = ["built_beside", "require_folder_for", "sha256_file", "write_dataset", "writing"]


def sha256_file(path: StorePath) -> str:
    """The sha256 of a local file, or of the file at the URL of a /vsicurl path (tiling.sources)."""
    digest = hashlib.sha256()
    # A URL read through /vsicurl (a remote STAC asset) is streamed over HTTP, an object (s3://) through its store:
    # never stored locally.
    with (open_bytes(path) if remote_url(path) else objstore.open_input(path)) as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def built_beside(store: StorePath, what: str, replace: bool = False):
    """Build a new store and make it appear at ``store`` only once complete: locally in a hidden sibling renamed
    into place (``_renamed_into_place``), on an object store (no rename there) in place with its root metadata
    written last (``_committed_last``). The context yields what to write the store to."""
    if objstore.is_url(store):
        return _committed_last(store, what, replace)
    return _renamed_into_place(store, what, replace)


@contextmanager
def _committed_last(store: str, what: str, replace: bool = False):
    """Object storage: write the store's objects at their final keys and its root ``zarr.json`` last (the commit
    marker: readers, ``xr.open_zarr`` included, and ``objstore.exists`` see no store until it is there). Whatever
    is under the prefix without that marker is a killed writer's leftover and is cleared first, so a rerun never
    mixes old chunks into a new store. ``replace`` clears an existing store first too: on object storage the old
    store is gone while the new one is written (there is no atomic swap of a prefix), never mixed with it.
    A failure leaves an uncommitted prefix: invisible to readers, cleared by the next writer. The caller holds
    the store's lock (``tiling.lock``): two writers never clear and fill one prefix at once."""
    with writing(store, what):
        if not replace and objstore.exists(store):
            raise FileExistsError(errno.EEXIST, "a store appeared there meanwhile", store)
        objstore.remove_prefix(store)
        staged = objstore.staged_store(store)
        yield staged
        objstore.commit_staged(staged)


@contextmanager
def _renamed_into_place(store: StorePath, what: str, replace: bool = False) -> Iterator[Path]:
    """Build a new store in the hidden sibling this yields, renamed into place once the block succeeds: a failure
    or a kill leaves no half-made store that a rerun would trip over, only the sibling (removed when it can be).
    A sibling, not a system temp dir: the rename must stay on one file system to be atomic; it fails if the store
    appeared meanwhile, so nothing is ever clobbered, unless ``replace``: then an existing store is swapped out
    only once the new one is complete. A write the system refuses names ``store`` (see ``writing``)."""
    store = Path(store)
    partial = store.with_name(f".{store.name}.partial-{uuid.uuid4().hex[:8]}")
    try:
        with writing(store, what):
            yield partial
            if replace and store.exists():
                old = store.with_name(f".{store.name}.old-{uuid.uuid4().hex[:8]}")
                os.rename(store, old)
                os.rename(partial, store)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.rename(partial, store)
    finally:
        shutil.rmtree(partial, ignore_errors=True)   # nothing writes there now: see write_dataset


@contextmanager
def writing(store: StorePath, what: str) -> Iterator[None]:
    """Re-raise an OSError of the block (a full disk, a read-only or lost file system) naming ``store`` and
    ``what`` was being done: the system's own error names a temporary file, or (a full disk) no file at all.
    Errors about anything else pass unchanged: one raised by our own checks (no errno; an input file missing, say)
    or one naming another file (an input that cannot be read) already names what is wrong."""
    try:
        yield
    except Exception as err:
        if objstore.is_url(store):   # s3fs / botocore errors: no bucket, refused credentials, endpoint down
            problem = objstore.storage_error(err, f"{store}")
            if problem is not None:
                if isinstance(problem, OSError):
                    problem = OSError(problem.errno, f"{problem.strerror} ({what})", str(store))
                raise problem from err
            raise
        if not isinstance(err, OSError):
            raise
        store = Path(store)
        ours = (str(store), str(store.with_name(f".{store.name}")))
        if err.errno is None or (err.filename is not None and not str(err.filename).startswith(ours)):
            raise
        raise OSError(err.errno, f"{err.strerror or err} ({what})", str(store)) from err


def require_folder_for(store: StorePath, create: bool = False) -> None:
    """A new store at ``store`` needs a folder to go in: a file in the way, or (unless ``create``, which makes the
    missing folders) a folder that does not exist, is an error naming the store. On an object store there are no
    folders: its bucket must exist and accept the credentials (``objstore.require_reachable``)."""
    if objstore.is_url(store):
        objstore.require_reachable(objstore.location(store), writable=True, what="store")
        return
    store = Path(store)
    blocker = next((p for p in reversed(store.parents) if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise NotADirectoryError(errno.ENOTDIR, f"cannot create a store there: {blocker} is a file, not a folder",
                                 str(store))
    if create:
        store.parent.mkdir(parents=True, exist_ok=True)
    elif not store.parent.is_dir():
        raise FileNotFoundError(errno.ENOENT, f"its folder {store.parent} does not exist", str(store))


def write_dataset(ds: xr.Dataset, store: StorePath, compute: bool = True, threads: bool = True, **kwargs) -> None:
    """``ds.to_zarr`` with the layouts' settings. The data are written on a thread pool of this call's own that is
    drained before it returns or raises: when one chunk write fails dask raises at once, and writes still in
    flight must not go on creating files under a store the caller is about to remove. ``threads=False`` computes
    and writes one chunk at a time on the calling thread (data read lazily from GeoTIFFs: GDAL's settings for
    ``s3://`` inputs belong to the thread that set them, and one chunk at a time bounds the memory)."""
    with warnings.catch_warnings():
        # zarr warns that consolidated metadata is not (yet) in the v3 spec; xarray and zarr-python read it.
        warnings.filterwarnings("ignore", message="Consolidated metadata", category=UserWarning)
        delayed = ds.to_zarr(store, zarr_format=3, consolidated=True, compute=False, **kwargs)
    if compute and not threads:
        delayed.compute(scheduler="synchronous")
    elif compute:
        # passed per call, not through dask.config (global to the process: concurrent writes would share it)
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            delayed.compute(scheduler="threads", pool=pool)
