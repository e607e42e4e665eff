"""Where a path points: local disk or an object store. The one place that turns a path or URL into what each
library needs (a Zarr store, an fsspec file system, a GDAL path with its configuration), so no other module
parses URLs or reads the AWS_* variables.

Any argument naming a file or a store may be a local path or a URL that fsspec knows (``s3://bucket/key``,
``gs://``, ``az://``, ``https://`` for reading). Configuration comes from the standard environment only:

    AWS_ENDPOINT_URL       an S3-compatible endpoint (MinIO, Ceph, moto: ``http://127.0.0.1:9000``); unset = AWS
    AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN)
    AWS_REGION             (or AWS_DEFAULT_REGION)
    AWS_MAX_ATTEMPTS       attempts per request before a run gives up (default 4), with exponential backoff

Why these libraries: Zarr stores go through zarr's own ``FsspecStore`` over s3fs (zarr's reference backend for
object storage, and what ``xr.open_zarr("s3://...")`` uses, so what we write is what users open); GeoTIFFs are
read by GDAL's ``/vsis3/`` through rasterio, which fetches only the byte ranges a read needs (HTTP range requests,
no local copy), with the AWS_* variables mapped here onto rasterio's AWSSession and GDAL's options (GDAL does not
read AWS_ENDPOINT_URL itself, and needs AWS_HTTPS=NO for a plain-http endpoint).

An object-store Zarr store is *committed* when its root ``zarr.json`` exists: ``staged_store`` writes every
other object first and that one last, so readers see a complete store or none (see
``tiling.stores.atomic.built_beside``).
"""
from __future__ import annotations

import errno
import os
from contextlib import contextmanager
from typing import Any, Iterator

from ssdiff_model.data.paths import as_path, is_url
from ssdiff_model.errors import BadInput

__all__ = ["DEFAULT_MAX_ATTEMPTS", "ROOT_METADATA", "arrow_filesystem", "as_path", "commit_staged", "exists", "fetched",
           "filesystem", "forwarded_environment", "gdal_env", "is_file", "is_url", "join", "listing", "location",
           "max_attempts", "name", "open_input", "put_file", "remove_file", "remove_prefix", "require_reachable",
           "sibling", "staged_store", "storage_error", "storage_options", "zarr_store"]

ROOT_METADATA = "zarr.json"   # a Zarr v3 store's root metadata: its commit marker on object storage
DEFAULT_MAX_ATTEMPTS = 4


def location(path: Any) -> str:
    """The path as text: a URL unchanged (``Path`` would fold its ``//``), a local path as given."""
    return path if isinstance(path, str) else os.fspath(path)


def name(path: Any) -> str:
    return location(path).rstrip("/").rsplit("/", 1)[-1]


def sibling(path: Any, new_name: str) -> str:
    """``new_name`` in the same folder (local) or under the same prefix (URL) as ``path``."""
    text = location(path).rstrip("/")
    head = text.rsplit("/", 1)[0] if "/" in text else ""
    return f"{head}/{new_name}" if head else new_name


def join(path: Any, *parts: str) -> str:
    return "/".join([location(path).rstrip("/"), *parts])


def _scheme(url: str) -> str:
    return url.split("://", 1)[0].lower()


def _env(*names: str) -> str | None:
    for variable in names:
        if os.environ.get(variable):
            return os.environ[variable]
    return None


def max_attempts() -> int:
    try:
        return max(1, int(os.environ.get("AWS_MAX_ATTEMPTS", DEFAULT_MAX_ATTEMPTS)))
    except ValueError:
        return DEFAULT_MAX_ATTEMPTS


def storage_options(url: str) -> dict[str, Any]:
    """fsspec options for ``url`` from the standard environment. For s3: the endpoint, credentials and region,
    and bounded retries: botocore's "standard" mode retries a refused connection or a 5xx with exponential
    backoff, AWS_MAX_ATTEMPTS times; short connect timeouts so a dead endpoint is noticed in seconds."""
    if _scheme(url) not in ("s3", "s3a"):
        return {}   # gs://, az://, https://: their libraries read their own standard variables
    options: dict[str, Any] = {
        "config_kwargs": {"retries": {"max_attempts": max_attempts(), "mode": "standard"},
                          "connect_timeout": 5, "read_timeout": 60},
    }
    endpoint = _env("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
    if endpoint:
        options["endpoint_url"] = endpoint
    key, secret = _env("AWS_ACCESS_KEY_ID"), _env("AWS_SECRET_ACCESS_KEY")
    if key and secret:
        options.update(key=key, secret=secret, token=_env("AWS_SESSION_TOKEN"))
    region = _env("AWS_REGION", "AWS_DEFAULT_REGION")
    if region:
        options["client_kwargs"] = {"region_name": region}
    return options


def filesystem(url: str):
    """(fsspec file system, path inside it) for a URL."""
    import fsspec

    return fsspec.core.url_to_fs(url, **storage_options(url))


def zarr_store(path: Any, read_only: bool = False):
    """What zarr and xarray open: a local path as it is (zarr's LocalStore, as before), a URL as zarr's
    FsspecStore; a zarr Store object (a staged store being built) unchanged."""
    if not isinstance(path, (str, os.PathLike)):
        return path
    if not is_url(path):
        return location(path)
    from zarr.storage import FsspecStore

    url = location(path).rstrip("/")
    return FsspecStore.from_url(url, storage_options=storage_options(url), read_only=read_only)


def exists(path: Any) -> bool:
    """Whether something is at ``path``: a local file or folder; on an object store a committed Zarr store (its
    root metadata; objects under a prefix without it are the leftovers of a killed writer, not a store) or a
    plain object."""
    if not isinstance(path, (str, os.PathLike)):
        from zarr.core.sync import sync

        return sync(path.exists(ROOT_METADATA))
    if not is_url(path):
        return os.path.exists(path)
    fs, inner = filesystem(location(path).rstrip("/"))
    return fs.isfile(f"{inner}/{ROOT_METADATA}") or fs.isfile(inner)


def remove_prefix(path: Any) -> None:
    """Delete everything under an object-store prefix, its root metadata FIRST: if this is interrupted, what
    remains is uncommitted (invisible to readers, cleared by the next writer), never a store missing chunks."""
    fs, inner = filesystem(location(path).rstrip("/"))
    root = f"{inner}/{ROOT_METADATA}"
    if fs.isfile(root):
        fs.rm_file(root)
    fs.invalidate_cache(inner)
    if fs.exists(inner):
        fs.rm(inner, recursive=True)


def open_input(path: Any, mode: str = "rb"):
    """A file object for an input file, local or URL (used to hash sources as a stream)."""
    if not is_url(path):
        return open(path, mode)
    import fsspec

    url = location(path)
    return fsspec.open(url, mode, **storage_options(url)).open()


@contextmanager
def fetched(path: Any) -> Iterator[str]:
    """A local file holding the bytes of ``path`` while the context lasts: the path itself when local (or a bare
    name), else a download to a temporary file that is removed on exit (for what needs a real file, e.g. a
    checkpoint ``torch.load`` reads).

    Args:
        path: a local path, a name, or a URL.

    Yields:
        The local path.
    """
    if not is_url(path):
        yield str(path)
        return
    import shutil
    import tempfile

    handle, local = tempfile.mkstemp(prefix="ssdiff-", suffix="-" + name(path))
    try:
        with os.fdopen(handle, "wb") as out, open_input(path) as source:
            shutil.copyfileobj(source, out)
        yield local
    finally:
        os.unlink(local)


def put_file(local: Any, path: Any) -> None:
    """Copy the local file ``local`` to ``path`` (a local path or a URL). On object storage one PUT: the object
    appears whole or not at all."""
    import shutil

    if not is_url(path):
        shutil.copyfile(local, path)
        return
    fs, inner = filesystem(location(path))
    fs.put_file(str(local), inner)


def remove_file(path: Any) -> None:
    """Delete the file or object at ``path`` (nothing when absent)."""
    if not is_url(path):
        if os.path.exists(path):
            os.unlink(path)
    elif exists(path):
        fs, inner = filesystem(location(path))
        fs.rm_file(inner)


def listing(folder: Any) -> list[tuple[str, bool]]:
    """What a folder (local) or a prefix (URL) holds, one level deep.

    Args:
        folder: a local folder or a URL such as ``s3://bucket/inbox``.

    Returns:
        Sorted ``(name, is_folder)`` pairs; on an object store a "folder" is a common prefix of keys.

    Raises:
        FileNotFoundError: nothing is there (a local path that is no folder, an empty or missing prefix).
    """
    if not is_url(folder):
        if not os.path.isdir(folder):
            raise FileNotFoundError(f"{folder}: folder does not exist")
        with os.scandir(folder) as entries:
            return sorted((entry.name, entry.is_dir()) for entry in entries)
    url = location(folder).rstrip("/")
    fs, inner = filesystem(url)
    # refresh: s3fs caches listings per file system, and a watch lists the same prefix again and again
    try:
        entries = fs.ls(inner, detail=True, refresh=True)
    except FileNotFoundError:
        entries = []
    found = sorted((entry["name"].rstrip("/").rsplit("/", 1)[-1], entry["type"] == "directory")
                   for entry in entries if entry["name"].rstrip("/") != inner)
    if not found:
        raise FileNotFoundError(f"{url}: nothing under this prefix")
    return found


def is_file(path: Any) -> bool:
    if not is_url(path):
        return os.path.isfile(path)
    fs, inner = filesystem(location(path))
    return fs.isfile(inner)


def _gdal_endpoint() -> tuple[str | None, bool]:
    """AWS_ENDPOINT_URL as GDAL wants it: host[:port] apart from whether it is https."""
    endpoint = _env("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
    if not endpoint:
        return None, True
    https = not endpoint.lower().startswith("http://")
    return endpoint.split("://", 1)[-1].rstrip("/"), https


@contextmanager
def gdal_env() -> Iterator[None]:
    """GDAL configured for object-store inputs from the standard environment (rasterio reads ``s3://`` paths
    through ``/vsis3/``). Path-style addressing with a custom endpoint (MinIO and most S3-compatible servers do
    not serve bucket subdomains), no directory listing on open (a bucket may hold millions of objects), and
    bounded retries with backoff like the Zarr side."""
    import rasterio
    from rasterio.session import AWSSession

    endpoint, https = _gdal_endpoint()
    options: dict[str, Any] = {"GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR", "GDAL_HTTP_MAX_RETRY": max_attempts() - 1,
                               "GDAL_HTTP_RETRY_DELAY": 1, "GDAL_HTTP_CONNECTTIMEOUT": 5}
    session_args: dict[str, Any] = {}
    if endpoint:
        options.update(AWS_VIRTUAL_HOSTING="FALSE", AWS_HTTPS="YES" if https else "NO")
        session_args["endpoint_url"] = endpoint
    key, secret = _env("AWS_ACCESS_KEY_ID"), _env("AWS_SECRET_ACCESS_KEY")
    if key and secret:
        session_args.update(aws_access_key_id=key, aws_secret_access_key=secret,
                            aws_session_token=_env("AWS_SESSION_TOKEN"))
    region = _env("AWS_REGION", "AWS_DEFAULT_REGION")
    if region:
        session_args["region_name"] = region
    session = AWSSession(**session_args) if session_args else None
    with rasterio.Env(session=session, **options):
        yield


def require_reachable(url: str, *, writable: bool, what: str) -> None:
    """Refuse at once, as bad input (ValueError, exit status 2) with one line, an object-store URL whose bucket
    does not exist or whose credentials are refused; an endpoint that does not answer is system trouble (OSError,
    exit status 1: rerun when it is back). Checked before any store is created or any pixel read."""
    if not is_url(url):
        return
    url = location(url)
    try:
        fs, inner = filesystem(url)
    except ImportError as err:
        raise BadInput(f"{url}: no file system for {_scheme(url)}:// is installed ({err})") from err
    if _scheme(url) not in ("s3", "s3a"):
        return
    bucket = inner.split("/", 1)[0]
    try:
        fs.call_s3("head_bucket", Bucket=bucket)
    except Exception as err:  # noqa: BLE001 - classified below; anything else is passed on unchanged
        problem = storage_error(err, url)
        if problem is not None:
            raise problem from err
        raise


# Error codes of S3 that mean the request was refused for who we are, or where we point: the same every time.
_BAD_INPUT_CODES = {
    "NoSuchBucket": "the bucket does not exist",
    "404": "the bucket does not exist",
    "InvalidAccessKeyId": "the access key is not known to the endpoint (AWS_ACCESS_KEY_ID)",
    "SignatureDoesNotMatch": "the secret key is wrong (AWS_SECRET_ACCESS_KEY)",
    "AccessDenied": "access denied with these credentials",
    "403": "access denied with these credentials (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY)",
    "InvalidBucketName": "not a valid bucket name",
}


def storage_error(err: BaseException, where: str) -> Exception | None:
    """An object-store failure as the project's classes: ValueError (bad input: no bucket, wrong credentials,
    exit 2) or OSError (the endpoint unreachable after its retries, exit 1, resumable), with one line naming
    ``where``; None if ``err`` is no object-store failure."""
    code = _client_error_code(err)
    if code in _BAD_INPUT_CODES:
        return BadInput(f"{where}: {_BAD_INPUT_CODES[code]} ({code})")
    if _unreachable(err):
        return OSError(errno.EHOSTUNREACH, f"the object store does not answer after {max_attempts()} attempts "
                       f"({_endpoint_text()}: {' '.join(str(err).split())[:160]}); rerun when it is back, the "
                       f"run resumes", where)
    return None


def _client_error_code(err: BaseException) -> str | None:
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        response = getattr(err, "response", None)
        if isinstance(response, dict) and "Error" in response:
            return str(response["Error"].get("Code"))
        err = err.__cause__ or err.__context__
    return None


def _unreachable(err: BaseException) -> bool:
    try:
        from botocore.exceptions import ConnectionError as BotoConnectionError
        from botocore.exceptions import HTTPClientError
    except ImportError:   # no s3 support installed: nothing of ours to classify
        return False
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, (BotoConnectionError, HTTPClientError)):
            return True
        err = err.__cause__ or err.__context__
    return False


def _endpoint_text() -> str:
    return _env("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL") or "AWS S3"


def arrow_filesystem(url: str):
    """(pyarrow file system, path inside it) for an ``s3://`` URL, configured from the standard environment like
    the fsspec side: Ray Train stores its checkpoints through pyarrow, whose own lookup misses a plain-http
    endpoint's scheme and our bounded retries. None for any other location (Ray Train resolves those itself).

    Args:
        url: where Ray Train keeps its runs (``--storage-path``).

    Returns:
        ``(pyarrow.fs.S3FileSystem, "bucket/key")`` or None.
    """
    if not is_url(url) or _scheme(url) not in ("s3", "s3a"):
        return None
    from pyarrow import fs as pafs

    options: dict[str, Any] = {"retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=max_attempts()),
                               "connect_timeout": 5, "request_timeout": 60}
    endpoint, https = _gdal_endpoint()
    if endpoint:
        options.update(endpoint_override=endpoint, scheme="https" if https else "http")
    key, secret = _env("AWS_ACCESS_KEY_ID"), _env("AWS_SECRET_ACCESS_KEY")
    if key and secret:
        options.update(access_key=key, secret_key=secret, session_token=_env("AWS_SESSION_TOKEN"))
    region = _env("AWS_REGION", "AWS_DEFAULT_REGION")
    if region:
        options["region"] = region
    return pafs.S3FileSystem(**options), location(url).split("://", 1)[1].rstrip("/")


def forwarded_environment() -> dict[str, str]:
    """The object-store variables of this process, for Ray workers (a runtime_env): actors on another node, or
    started by a cluster before the driver set them, would not see the driver's endpoint and credentials."""
    names = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
             "AWS_SESSION_TOKEN", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_MAX_ATTEMPTS")
    return {variable: os.environ[variable] for variable in names if os.environ.get(variable)}


def staged_store(path: Any):
    """A Zarr store at the URL ``path`` that holds its root metadata back until ``commit_staged``: every array,
    chunk and attribute goes to its final object as it is written, the root ``zarr.json`` (which readers and
    ``exists`` look for) only once the whole store is there. Object stores have no rename; this is how a store
    becomes visible in one step there."""
    from zarr.storage import WrapperStore

    class _HeldRoot(WrapperStore):
        def __init__(self, store, held: dict | None = None):
            super().__init__(store)
            self.held = {} if held is None else held

        def _with_store(self, store):
            return type(self)(store, self.held)   # with_read_only copies share what is held

        async def get(self, key, prototype, byte_range=None):
            if key == ROOT_METADATA and key in self.held:
                value = self.held[key]
                return value if byte_range is None else await super().get(key, prototype, byte_range)
            return await super().get(key, prototype, byte_range)

        async def exists(self, key):
            return key in self.held if key == ROOT_METADATA else await super().exists(key)

        async def set(self, key, value):
            if key == ROOT_METADATA:
                self.held[key] = value
            else:
                await super().set(key, value)

        async def set_if_not_exists(self, key, value):
            if key == ROOT_METADATA:
                self.held.setdefault(key, value)
            else:
                await super().set_if_not_exists(key, value)

        async def _set_many(self, values):
            for key, value in values:
                await self.set(key, value)

        async def delete(self, key):
            if key == ROOT_METADATA:
                self.held.pop(key, None)
            else:
                await super().delete(key)

        def __str__(self) -> str:
            return str(self._store)

    return _HeldRoot(zarr_store(path))


def commit_staged(store) -> None:
    """Write the held root metadata: the staged store becomes a store, all at once."""
    from zarr.core.sync import sync

    if ROOT_METADATA not in store.held:
        raise RuntimeError(f"{store}: nothing was written to commit")
    sync(store._store.set(ROOT_METADATA, store.held[ROOT_METADATA]))
