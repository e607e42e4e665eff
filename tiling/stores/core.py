"""The two Zarr layouts of the pipeline, written down here and nowhere else.

Scene store (written once by ingest, read by every tile):
    pan  (y, x)              float32 DN on the PAN grid, NaN = nodata, grid mapping ``spatial_ref``
    ms   (band, y_ms, x_ms)  float32 DN on the MS grid,  NaN = nodata, grid mapping ``spatial_ref_ms``
    coords  y, x, y_ms, x_ms (pixel centres from the transforms), band (band names)
    attrs   layout = SCENE_LAYOUT, sensor, ratio, full_scale, band_names,
            sources = {name: {path, sha256}} (checksums of the files the scene came from),
            pan_equalization = {gain, offset, band_gains, band_means} of the whole scene
            (ssdiff_model.science.equalization),
            ms_offset_pan_px = where the MS lies off its place on the PAN grid (ssdiff_model.science.registration), or
            None,
            nodata (the --nodata DN, or None), radiometry (how full_scale was decided: ssdiff_model.science.radiometry),
            content_sha256 = sha256 of the stored pixels and the full scale (tiling.integrity.content_sha256)

Mosaic store (pre-allocated by the sharpen flow, filled core by core):
    hrms (band, y, x)              float32 DN on the PAN grid, NaN = nodata or not yet written,
                                   chunks (bands, core, core) = the tile cores, grid mapping ``spatial_ref``
    done (tile_row, tile_col)      uint8 tile manifest, one chunk per tile so concurrent writers never share
                                   one: TILE_MISSING, TILE_SHARPENED or TILE_NODATA, set only AFTER the
                                   tile's core is in ``hrms``
    attrs   layout = MOSAIC_LAYOUT, grid (ratio, tile_size, halo, core), sampler ("consistent" or "release", see
            ssdiff_model.model.diffusion; "ddim" in stores written before the release mode existed), steps, seed, model
            (checkpoint hash, config, sensor), scene (store path, sources and checksums, scene_content = the
            scene's content_sha256), batch_size (absent in stores made by tests or older code), code version,
            created time, pan_equalization (the scene's, when the model equalizes its PAN or bands, else None),
            shard_tiles (1: one object per core; on object storage N: Zarr v3 shards of N x N cores in ``hrms`` and
            N x N entries in ``done``, each shard written by one writer), plus whatever the caller adds
            (cluster, flow run); CF Conventions, title, source, history; values that are not strings or numbers
            stored as JSON strings named by ``json_attributes`` (tiling.cf), so the store writes to netCDF as it
            is; ``store_attrs`` and ``open_mosaic`` decode them

Both open with ``xr.open_zarr(store, decode_coords="all")`` as lazy dask arrays with working ``.rio.crs`` and
``.rio.transform()``; for ``ms`` name its spatial dims first:
``ds.ms.rio.set_spatial_dims(x_dim="x_ms", y_dim="y_ms").rio.transform()``.
Zarr format 3 with consolidated metadata (opening needs one read). Every array's chunks pass zstd then a CRC-32C
(tiling.integrity.CHECKSUMMED): a damaged chunk fails to decode rather than decoding into wrong pixels.
"""
from __future__ import annotations

import errno
import hashlib
import importlib.metadata
import os
import shutil
import uuid
import warnings
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping

import dask.array as da
import numpy as np
import rioxarray  # noqa: F401  (registers the .rio accessor)
import xarray as xr
import zarr
from affine import Affine

from ssdiff_model.errors import BadInput
from ssdiff_model.science.equalization import PanEqualization, pan_equalization
from ssdiff_model.science.registration import measured_offset
from tiling import objstore
from tiling.cf import JSON_ATTRIBUTES, cf_global_attrs, cf_mosaic, decode_attrs, encode_attrs
from tiling.clock import utc_timestamp
from tiling.grid import Tile, TileGrid
from tiling.integrity import CHECKSUMMED, content_sha256, scene_content_sha256
from tiling.sources import open_bytes, remote_url

SCENE_LAYOUT = "ssdiff-scene/1"
MOSAIC_LAYOUT = "ssdiff-mosaic/1"
PAN, MS, HRMS, DONE = "pan", "ms", "hrms", "done"
PAN_GRID_MAPPING, MS_GRID_MAPPING = "spatial_ref", "spatial_ref_ms"
TILE_MISSING, TILE_SHARPENED, TILE_NODATA = 0, 1, 2
SCENE_CHUNK = 256  # PAN pixels a side; small enough that reading one tile window decompresses little
# PAN pixels a side of one shard object of a mosaic on object storage (Zarr v3 sharding): there, every object costs a
# request and a per-object price, and one object per 32-pixel tile core would make a large scene millions of tiny
# objects; 256 makes a shard of 64 cores (about 1 MB of 4 bands). Local stores keep one file per core.
# SSDIFF_SHARD_PIXELS overrides it when a store is created (the store records its own: ``shard_tiles``).
SHARD_PIXELS = 256
OFFSET_WINDOW = 256  # MS pixels a side of the central window the MS offset is measured on (about a second)
# Stores written before the release's sampler existed say "ddim": that is the consistent sampler.
LEGACY_SAMPLER_NAMES = {"ddim": "consistent"}

# Settings that must agree between a mosaic store and a run that writes into it (a resumed run included).
# scene_content: the scene's pixels, nodata and full scale (tiling.integrity.content_sha256); batch_size: tiles
# batched together go through one network call, whose arithmetic (and so the last bits of a tile) depends on it.
_RUN_SETTINGS = ("tile_size", "halo", "seed", "steps", "sampler", "checkpoint_hash", "scene_sources",
                 "scene_content", "batch_size")

StorePath = str | os.PathLike


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
        shutil.rmtree(partial, ignore_errors=True)   # nothing writes there now: see _write_dataset


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


def _pixel_centres(transform: Affine, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    return (transform.f + (np.arange(height) + 0.5) * transform.e,
            transform.c + (np.arange(width) + 0.5) * transform.a)


def _georeference(array: xr.DataArray, crs, transform: Affine, grid_mapping: str) -> xr.DataArray:
    if crs is not None:
        array = array.rio.write_crs(crs, grid_mapping_name=grid_mapping)
    array = array.rio.write_transform(transform, grid_mapping_name=grid_mapping)
    # Listing the grid mapping as a coordinate too makes a plain `xr.open_zarr` (decode_coords=True) attach it to
    # the variable, so `.rio.crs` and `.rio.transform()` work without decode_coords="all".
    array.encoding["coordinates"] = grid_mapping
    return array


def _write_dataset(ds: xr.Dataset, store: StorePath, compute: bool = True, **kwargs) -> None:
    """``ds.to_zarr`` with the layouts' settings. The data are written on a thread pool of this call's own that is
    drained before it returns or raises: when one chunk write fails dask raises at once, and writes still in
    flight must not go on creating files under a store the caller is about to remove."""
    with warnings.catch_warnings():
        # zarr warns that consolidated metadata is not (yet) in the v3 spec; xarray and zarr-python read it.
        warnings.filterwarnings("ignore", message="Consolidated metadata", category=UserWarning)
        delayed = ds.to_zarr(store, zarr_format=3, consolidated=True, compute=False, **kwargs)
    if compute:
        # passed per call, not through dask.config (global to the process: concurrent writes would share it)
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            delayed.compute(scheduler="threads", pool=pool)


def store_attrs(store: StorePath, layout: str) -> dict[str, Any]:
    """The store's attributes, after checking that it is a store of that layout (else ValueError)."""
    try:
        attrs = dict(zarr.open_group(objstore.zarr_store(store, read_only=True), mode="r").attrs)
    except (FileNotFoundError, zarr.errors.GroupNotFoundError) as err:
        problem = objstore.storage_error(err, str(store)) if objstore.is_url(store) else None
        raise problem or BadInput(f"{store}: no Zarr store there ({err})") from err
    except Exception as err:
        problem = objstore.storage_error(err, str(store)) if objstore.is_url(store) else None
        if problem is None:
            raise
        raise problem from err
    if attrs.get("layout") != layout:
        raise BadInput(f"{store}: not a {layout} store (layout attribute {attrs.get('layout')!r})")
    return decode_attrs(attrs)   # a mosaic keeps nested values as JSON strings (tiling.cf)


def write_scene_store(store: StorePath, pair, *, sources: Mapping[str, StorePath] | None = None,
                      nodata: float | None = None, chunk: int = SCENE_CHUNK,
                      provenance: Mapping[str, Any] | None = None) -> None:
    """Write a ``PansharpeningPair`` (ssdiff_model.data.readers) to a new scene store. ``sources`` names the input
    files whose sha256 is recorded (default: the pair's ``source`` files); pixels equal to ``nodata`` (and
    non-finite ones) become NaN; ``provenance`` adds attributes (where the files came from: a STAC item). An
    existing store is never touched: ValueError."""
    if objstore.exists(store):
        raise BadInput(f"{store}: scene store already exists; remove it or choose another path")
    pan, ms = np.asarray(pair.pan), np.asarray(pair.ms_lr)
    ratio = int(pair.ratio)
    if pan.ndim != 2 or ms.ndim != 3:
        raise BadInput(f"{store}: expected pan (y, x) and ms (band, y, x), got shapes {pan.shape} and {ms.shape}")
    if pan.shape != (ms.shape[1] * ratio, ms.shape[2] * ratio):
        raise BadInput(f"{store}: MS {ms.shape[1:]} does not match PAN {pan.shape} at ratio {ratio}")
    if len(pair.band_names) != ms.shape[0]:
        raise BadInput(f"{store}: {len(pair.band_names)} band names for {ms.shape[0]} MS bands")

    pan_transform, ms_transform = pair.pan_transform, pair.ms_transform
    if pan_transform is None and ms_transform is None:
        pan_transform = Affine.identity()   # no georeference: pixel coordinates
    pan_transform = pan_transform if pan_transform is not None else ms_transform @ Affine.scale(1 / ratio)
    ms_transform = ms_transform if ms_transform is not None else pan_transform @ Affine.scale(ratio)

    def as_dn(values: np.ndarray) -> np.ndarray:
        out = values.astype(np.float32)
        out[nodata_mask(values, nodata)] = np.nan
        return out

    y, x = _pixel_centres(pan_transform, *pan.shape)
    y_ms, x_ms = _pixel_centres(ms_transform, *ms.shape[1:])
    bands = np.array(list(pair.band_names), dtype=object)
    pan_dn, ms_dn = as_dn(pan), as_dn(ms)
    pan_da = xr.DataArray(da.from_array(pan_dn, chunks=chunk), dims=("y", "x"), coords={"y": y, "x": x})
    ms_chunk = max(1, chunk // ratio)
    ms_da = xr.DataArray(da.from_array(ms_dn, chunks=(ms.shape[0], ms_chunk, ms_chunk)),
                         dims=("band", "y_ms", "x_ms"), coords={"band": bands, "y_ms": y_ms, "x_ms": x_ms})
    pan_da = _georeference(pan_da, pair.crs, pan_transform, PAN_GRID_MAPPING)
    ms_da = _georeference(ms_da.rio.set_spatial_dims(x_dim="x_ms", y_dim="y_ms"), pair.crs, ms_transform,
                          MS_GRID_MAPPING)
    ds = xr.Dataset({PAN: pan_da, MS: ms_da})
    for name in (PAN, MS):
        ds[name].encoding["compressors"] = CHECKSUMMED
    if sources is None:
        sources = {objstore.name(path): path for path in getattr(pair, "source", ())}
    ds.attrs = {
        "layout": SCENE_LAYOUT, "sensor": pair.sensor or "unknown", "ratio": ratio,
        "full_scale": float(pair.full_scale), "bits": getattr(pair, "bits", None),
        "band_names": [str(b) for b in pair.band_names],
        "sources": {name: {"path": str(path), "sha256": sha256_file(path)} for name, path in sources.items()},
        "notes": list(getattr(pair, "notes", ())), "pan_equalization": pan_equalization(pan_dn, ms_dn, ratio).as_attrs(),
        "ms_offset_pan_px": _offset_attrs(measured_offset(pan_dn, ms_dn, ratio, window=OFFSET_WINDOW)),
        "nodata": None if nodata is None else float(nodata),
        "radiometry": pair.radiometry.as_attrs() if getattr(pair, "radiometry", None) is not None else None,
        "content_sha256": content_sha256(pan_dn, ms_dn, float(pair.full_scale)),
    }
    ds.attrs.update(provenance or {})
    _write_dataset(ds, store, mode="w-")


def _offset_attrs(offset):
    return None if offset is None else offset.as_attrs()


def nodata_mask(values: np.ndarray, nodata: float | None = None) -> np.ndarray:
    """Where a scene store holds nodata (NaN): pixels equal to ``nodata``, and non-finite ones."""
    mask = ~np.isfinite(values)
    if nodata is not None:
        mask |= values == nodata
    return mask


def open_scene(store: StorePath, dask: bool = True) -> xr.Dataset:
    """The scene store as a lazy, georeferenced Dataset (ValueError if the path is not a scene store): dask
    arrays, or with ``dask=False`` lazily indexed ones (no task graph, whose size grows with the scene)."""
    store_attrs(store, SCENE_LAYOUT)
    return xr.open_zarr(objstore.zarr_store(store, read_only=True), decode_coords="all", chunks={} if dask else None)


def _code_version() -> str:
    try:
        return importlib.metadata.version("ssdiff-pansharpening")
    except importlib.metadata.PackageNotFoundError:
        return "unknown (not installed)"


def create_mosaic_store(mosaic_store: StorePath, scene_store: StorePath, pansharpener, *, tile_size: int,
                        halo: int, seed: int, steps: int, sampler: str = "consistent", batch_size: int | None = None,
                        provenance: Mapping[str, Any] | None = None, overwrite: bool = False) -> TileGrid:
    """Pre-allocate the mosaic store for sharpening ``scene_store`` with ``pansharpener`` and return its grid.

    Nothing but metadata is written (unwritten chunks read as NaN, the manifest as TILE_MISSING). If the store
    exists with the same settings it is kept as it is, so a rerun resumes; with different settings it is a
    ValueError unless ``overwrite``: then a new store replaces it once complete. The scene's pixels are hashed
    (``scene_content``, one of the settings): a scene store edited since ingest is a ValueError."""
    scene = open_scene(scene_store, dask=False)
    attrs = scene.attrs
    scene_content = scene_content_sha256(scene_store)
    if attrs.get("content_sha256", scene_content) != scene_content:
        raise BadInput(f"{scene_store}: the scene's pixels changed since it was ingested (they no longer match "
                         f"the checksum ingest recorded): ingest the files again into a new scene store")
    bands, height, width = scene[MS].shape[0], *scene[PAN].shape
    if pansharpener.bands != bands or pansharpener.ratio != attrs["ratio"]:
        raise BadInput(f"{scene_store}: scene has {bands} bands at ratio {attrs['ratio']}, the checkpoint "
                         f"{pansharpener.source} expects {pansharpener.bands} bands at ratio {pansharpener.ratio}")
    grid = TileGrid(height=height, width=width, ratio=attrs["ratio"], tile_size=tile_size, halo=halo)
    settings = {"tile_size": tile_size, "halo": halo, "seed": seed, "steps": steps, "sampler": sampler,
                "checkpoint_hash": pansharpener.checkpoint_hash, "scene_sources": attrs["sources"],
                "scene_content": scene_content, **({"batch_size": batch_size} if batch_size is not None else {})}
    if objstore.exists(mosaic_store) and not overwrite:
        check_run_settings(mosaic_store, **settings)
        return grid

    equalization = None
    if pansharpener.equalizes:   # a store ingested before (band) equalization existed gets it computed here
        equalization = attrs.get("pan_equalization")
        if not equalization or (pansharpener.equalizes_bands and "band_gains" not in equalization):
            equalization = pan_equalization(scene[PAN].values, scene[MS].values, attrs["ratio"]).as_attrs()

    # Placeholders of ONE dask chunk each, never computed: a dask chunk per core would make a task graph (and
    # memory) growing with the scene. The Zarr chunks come from the encoding.
    hrms = xr.DataArray(da.full((bands, height, width), np.nan, dtype=np.float32, chunks=-1),
                        dims=("band", "y", "x"),
                        coords={"band": scene["band"].values.astype(object), "y": scene["y"].values,
                                "x": scene["x"].values})
    hrms = _georeference(hrms, scene[PAN].rio.crs, scene[PAN].rio.transform(), PAN_GRID_MAPPING)
    ds = xr.Dataset({HRMS: hrms})
    # The manifest is no spatial variable: added after the CRS so it gets no grid mapping.
    ds[DONE] = (("tile_row", "tile_col"), da.zeros(grid.shape, dtype=np.uint8, chunks=-1))
    manifest_codes = {"missing": TILE_MISSING, "sharpened": TILE_SHARPENED, "nodata": TILE_NODATA}
    ds = cf_mosaic(ds, HRMS, DONE, manifest_codes)
    ds[HRMS].encoding["chunks"] = (bands, grid.core, grid.core)
    # One chunk per tile: concurrent writers never share one. A plain 0 = TILE_MISSING, not a CF missing value.
    ds[DONE].encoding.update(chunks=(1, 1), _FillValue=None)
    # On object storage the chunks are grouped into shards of shard_tiles x shard_tiles cores (one object each, the
    # checksummed chunks inside): the actor pool gives each shard to one writer (infra.ray_sharpen) and the runner
    # writes a shard's cores in one PUT, then its manifest entries in another (tiling.runner).
    shard_tiles = mosaic_shard_tiles(mosaic_store, grid)
    if shard_tiles > 1:
        ds[HRMS].encoding["shards"] = (bands, grid.core * shard_tiles, grid.core * shard_tiles)
        ds[DONE].encoding["shards"] = (shard_tiles, shard_tiles)
    for name in (HRMS, DONE):
        ds[name].encoding["compressors"] = CHECKSUMMED
    created = utc_timestamp()
    # Encoded so that netCDF takes them (tiling.cf): `xr.open_zarr(mosaic).to_netcdf(...)` works as it is.
    ds.attrs = encode_attrs({
        **cf_global_attrs(created=created, code_version=_code_version(),
                          checkpoint_hash=pansharpener.checkpoint_hash, scene_store=str(scene_store)),
        "layout": MOSAIC_LAYOUT, "ratio": grid.ratio, "core": grid.core, "eta": 0.0,
        **settings,
        "model": "SSDiff", "model_config": dict(pansharpener.config), "model_sensor": str(pansharpener.sensor),
        # The network sees DN / the scene's full scale, as in training (every scene over its own full scale).
        "full_scale": float(attrs["full_scale"]), "model_full_scale": float(pansharpener.full_scale),
        "band_names": attrs["band_names"],
        "scene_store": str(scene_store), "scene_sensor": attrs["sensor"], "scene_full_scale": attrs["full_scale"],
        "pan_equalization": equalization,
        "code_version": _code_version(), "created": created,
        "manifest_codes": manifest_codes, "shard_tiles": shard_tiles,
        **dict(provenance or {}),
    })
    # compute=False writes metadata and coordinates only: the scene is never held in memory. An overwritten store
    # is swapped out only once its replacement is complete.
    with built_beside(mosaic_store, "creating the store", replace=overwrite) as partial:
        _write_dataset(ds, partial, mode="w-", compute=False)
    return grid


def mosaic_shard_tiles(mosaic_store: StorePath, grid: TileGrid) -> int:
    """Tiles a side of one shard object for a new mosaic: 1 (no sharding) on local disk, else SHARD_PIXELS worth of
    cores, no more than the grid holds."""
    if not objstore.is_url(mosaic_store):
        return 1
    try:
        pixels = int(os.environ.get("SSDIFF_SHARD_PIXELS", SHARD_PIXELS))
    except ValueError:
        pixels = SHARD_PIXELS
    return max(1, min(pixels // grid.core, max(grid.shape)))


def shard_of(tile: Tile, shard_tiles: int) -> tuple[int, int]:
    return tile.row // shard_tiles, tile.col // shard_tiles


def mosaic_equalization(attrs: Mapping[str, Any]) -> PanEqualization | None:
    """The PAN equalization a mosaic's tiles are sharpened with (None: the model takes raw PANs)."""
    recorded = attrs.get("pan_equalization")
    return PanEqualization.from_attrs(recorded) if recorded else None


def check_run_settings(mosaic_store: StorePath, **settings) -> dict[str, Any]:
    """The mosaic store's attributes, after checking that ``settings`` agree with those it was created with."""
    attrs = store_attrs(mosaic_store, MOSAIC_LAYOUT)
    for name, value in settings.items():
        if name not in _RUN_SETTINGS:
            raise TypeError(f"unknown run setting {name!r}")
        if name not in attrs:   # a store made before the setting was recorded: nothing to compare with
            continue
        recorded = attrs[name]
        if name == "sampler":
            recorded = LEGACY_SAMPLER_NAMES.get(recorded, recorded)
        if recorded != value:
            what = _SETTING_NAMES.get(name, name)
            raise BadInput(f"{mosaic_store}: mosaic was created with {what}={_shown(recorded)}, this run has "
                             f"{_shown(value)}; finish it with the same inputs and settings, or start again with "
                             f"--overwrite (or a new --out)")
    return attrs


_SETTING_NAMES = {"scene_content": "scene pixels (their nodata, full scale and values: the sha256 ingest recorded)",
                  "scene_sources": "scene files", "checkpoint_hash": "checkpoint", "tile_size": "tile",
                  "batch_size": "batch-size"}


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:77]}..."


def mosaic_grid(mosaic_store: StorePath) -> TileGrid:
    """The tile grid a mosaic store was created with."""
    attrs = store_attrs(mosaic_store, MOSAIC_LAYOUT)
    _, height, width = zarr.open_group(objstore.zarr_store(mosaic_store, read_only=True), mode="r")[HRMS].shape
    return TileGrid(height=height, width=width, ratio=attrs["ratio"], tile_size=attrs["tile_size"],
                    halo=attrs["halo"])


def missing_tiles(mosaic_store: StorePath) -> list[Tile]:
    """Tiles the manifest does not record as finished, row by row: what a resumed run still has to do."""
    grid = mosaic_grid(mosaic_store)
    done = zarr.open_group(objstore.zarr_store(mosaic_store, read_only=True), mode="r")[DONE][...]
    return [tile for tile in grid.tiles() if done[tile.row, tile.col] == TILE_MISSING]


def open_mosaic(mosaic_store: StorePath, dask: bool = True) -> xr.Dataset:
    """The mosaic store as a lazy, georeferenced Dataset (ValueError if the path is not a mosaic store): dask
    arrays chunked like the store, or with ``dask=False`` lazily indexed ones; its attributes decoded (tiling.cf)."""
    store_attrs(mosaic_store, MOSAIC_LAYOUT)
    ds = xr.open_zarr(objstore.zarr_store(mosaic_store, read_only=True), decode_coords="all",
                      chunks={} if dask else None)
    ds.attrs = decode_attrs(ds.attrs)
    return ds


def record_provenance(mosaic_store: StorePath, **attrs: Any) -> None:
    """Add attributes (finish time, cluster, ...) to a mosaic store, keeping its consolidated metadata current."""
    store_attrs(mosaic_store, MOSAIC_LAYOUT)
    with writing(mosaic_store, "recording its provenance; the tiles are kept"), warnings.catch_warnings():
        store = objstore.zarr_store(mosaic_store)
        group = zarr.open_group(store, mode="r+")
        group.attrs.update(encode_attrs(attrs, already=group.attrs.get(JSON_ATTRIBUTES, "")))
        warnings.filterwarnings("ignore", message="Consolidated metadata", category=UserWarning)
        zarr.consolidate_metadata(store)
