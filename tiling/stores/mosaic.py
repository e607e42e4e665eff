"""The mosaic store (layout in ``tiling.stores.layout``): pre-allocated by the sharpen flow, filled core by core,
its manifest saying which tiles are done; and the settings every run writing into one must share."""
from __future__ import annotations

import importlib.metadata
import os
import warnings
from typing import Any, Mapping

import dask.array as da
import numpy as np
import xarray as xr
import zarr

from ssdiff_model.errors import BadInput
from ssdiff_model.science.equalization import pan_equalization
from tiling import objstore
from tiling.cf import JSON_ATTRIBUTES, cf_global_attrs, cf_mosaic, encode_attrs
from tiling.clock import utc_timestamp
from tiling.grid import Tile, TileGrid
from tiling.integrity import CHECKSUMMED, scene_content_sha256
from tiling.stores.atomic import built_beside, write_dataset, writing
from tiling.stores.attrs import MosaicAttrs, SceneAttrs, open_store, store_attrs
from tiling.stores.layout import (
    DONE,
    HRMS,
    MANIFEST_CODES,
    MOSAIC_LAYOUT,
    MS,
    PAN,
    PAN_GRID_MAPPING,
    SHARD_PIXELS,
    TILE_MISSING,
    StorePath,
)
from tiling.stores.scene import georeference, open_scene

__all__ = ["RUN_SETTINGS", "check_run_settings", "create_mosaic_store", "missing_tiles", "mosaic_grid",
           "mosaic_shard_tiles", "open_mosaic", "record_provenance", "shard_of"]

# Settings that must agree between a mosaic store and a run that writes into it (a resumed run included).
# scene_content: the scene's pixels, nodata and full scale (tiling.integrity.content_sha256); batch_size: tiles
# batched together go through one network call, whose arithmetic (and so the last bits of a tile) depends on it.
RUN_SETTINGS = ("tile_size", "halo", "seed", "steps", "sampler", "back_projection", "ensemble", "checkpoint_hash",
                "scene_sources", "scene_content", "batch_size")


def _code_version() -> str:
    try:
        return importlib.metadata.version("ssdiff-pansharpening")
    except importlib.metadata.PackageNotFoundError:
        return "unknown (not installed)"


def create_mosaic_store(mosaic_store: StorePath, scene_store: StorePath, pansharpener, *, tile_size: int,
                        halo: int, seed: int, steps: int, sampler: str = "consistent", back_projection: int = 0,
                        ensemble: int = 1, batch_size: int | None = None,
                        provenance: Mapping[str, Any] | None = None, overwrite: bool = False) -> TileGrid:
    """Pre-allocate the mosaic store for sharpening ``scene_store`` with ``pansharpener`` and return its grid.

    Nothing but metadata is written (unwritten chunks read as NaN, the manifest as TILE_MISSING). If the store
    exists with the same settings it is kept as it is, so a rerun resumes; with different settings it is a
    ValueError unless ``overwrite``: then a new store replaces it once complete. The scene's pixels are hashed
    (``scene_content``, one of the settings): a scene store edited since ingest is a ValueError.

    Args:
        mosaic_store: where the mosaic goes (a local path or an object-store URL).
        scene_store: the scene store it sharpens.
        pansharpener: the ``Pansharpener`` that will sharpen it (its bands, ratio, hash, config are recorded).
        tile_size: tile side in PAN pixels.
        halo: overlap in PAN pixels on each side of a tile's core.
        seed: seed of the position-keyed noise.
        steps: sampling steps.
        sampler: "consistent" or "release".
        back_projection: iterations of back-projection onto the MS after sampling.
        ensemble: dihedral views averaged per tile.
        batch_size: tiles per network call (None: not recorded, any agrees).
        provenance: attributes added after the layout's (``MosaicAttrs.extra`` or its provenance fields).
        overwrite: replace an existing store made with other settings.

    Returns:
        The mosaic's tile grid.
    """
    scene = open_scene(scene_store, dask=False)
    attrs = SceneAttrs.from_attrs(scene.attrs)
    scene_content = scene_content_sha256(scene_store)
    if attrs.content_sha256 is not None and attrs.content_sha256 != scene_content:
        raise BadInput(f"{scene_store}: the scene's pixels changed since it was ingested (they no longer match "
                         f"the checksum ingest recorded): ingest the files again into a new scene store")
    bands, height, width = scene[MS].shape[0], *scene[PAN].shape
    if pansharpener.bands != bands or pansharpener.ratio != attrs.ratio:
        raise BadInput(f"{scene_store}: scene has {bands} bands at ratio {attrs.ratio}, the checkpoint "
                         f"{pansharpener.source} expects {pansharpener.bands} bands at ratio {pansharpener.ratio}")
    grid = TileGrid(height=height, width=width, ratio=attrs.ratio, tile_size=tile_size, halo=halo)
    settings = {"tile_size": tile_size, "halo": halo, "seed": seed, "steps": steps, "sampler": sampler,
                "back_projection": back_projection, "ensemble": ensemble,
                "checkpoint_hash": pansharpener.checkpoint_hash, "scene_sources": attrs.sources,
                "scene_content": scene_content, **({"batch_size": batch_size} if batch_size is not None else {})}
    if objstore.exists(mosaic_store) and not overwrite:
        check_run_settings(mosaic_store, **settings)
        return grid

    equalization = None
    if pansharpener.equalizes:   # a store ingested before (band) equalization existed gets it computed here
        equalization = attrs.pan_equalization
        if equalization is None or (pansharpener.equalizes_bands and equalization.band_gains is None):
            equalization = pan_equalization(scene[PAN].values, scene[MS].values, attrs.ratio)

    # Placeholders of ONE dask chunk each, never computed: a dask chunk per core would make a task graph (and
    # memory) growing with the scene. The Zarr chunks come from the encoding.
    hrms = xr.DataArray(da.full((bands, height, width), np.nan, dtype=np.float32, chunks=-1),
                        dims=("band", "y", "x"),
                        coords={"band": scene["band"].values.astype(object), "y": scene["y"].values,
                                "x": scene["x"].values})
    hrms = georeference(hrms, scene[PAN].rio.crs, scene[PAN].rio.transform(), PAN_GRID_MAPPING)
    ds = xr.Dataset({HRMS: hrms})
    # The manifest is no spatial variable: added after the CRS so it gets no grid mapping.
    ds[DONE] = (("tile_row", "tile_col"), da.zeros(grid.shape, dtype=np.uint8, chunks=-1))
    ds = cf_mosaic(ds, HRMS, DONE, MANIFEST_CODES)
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
    created, code_version = utc_timestamp(), _code_version()
    cf = cf_global_attrs(created=created, code_version=code_version, checkpoint_hash=pansharpener.checkpoint_hash,
                         scene_store=str(scene_store))
    mosaic = MosaicAttrs(
        conventions=cf["Conventions"], title=cf["title"], source=cf["source"], history=cf["history"],
        ratio=grid.ratio, core=grid.core, eta=0.0, **settings,
        model="SSDiff", model_config=dict(pansharpener.config), model_sensor=str(pansharpener.sensor),
        # The network sees DN / the scene's full scale, as in training (every scene over its own full scale).
        full_scale=attrs.full_scale, model_full_scale=float(pansharpener.full_scale), band_names=attrs.band_names,
        scene_store=str(scene_store), scene_sensor=attrs.sensor, scene_full_scale=attrs.full_scale,
        pan_equalization=equalization, code_version=code_version, created=created,
        manifest_codes=dict(MANIFEST_CODES), shard_tiles=shard_tiles,
    )
    # Encoded so that netCDF takes them (tiling.cf): `xr.open_zarr(mosaic).to_netcdf(...)` works as it is.
    ds.attrs = encode_attrs({**mosaic.as_attrs(), **dict(provenance or {})})
    # compute=False writes metadata and coordinates only: the scene is never held in memory. An overwritten store
    # is swapped out only once its replacement is complete.
    with built_beside(mosaic_store, "creating the store", replace=overwrite) as partial:
        write_dataset(ds, partial, mode="w-", compute=False)
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
    """The (row, column) of the shard holding ``tile`` in a mosaic of ``shard_tiles`` x ``shard_tiles`` shards."""
    return tile.row // shard_tiles, tile.col // shard_tiles


def check_run_settings(mosaic_store: StorePath, **settings) -> MosaicAttrs:
    """Check that a run's settings agree with those the mosaic store was created with.

    Args:
        mosaic_store: the mosaic store.
        **settings: any of ``RUN_SETTINGS`` (else TypeError); a setting the store does not record (made before it
            was recorded) agrees with any value.

    Returns:
        The store's attributes.

    Raises:
        BadInput: a setting differs from the store's (named, with both values).
    """
    attrs = MosaicAttrs.read(mosaic_store)
    for name, value in settings.items():
        if name not in RUN_SETTINGS:
            raise TypeError(f"unknown run setting {name!r}")
        # the legacy sampler name reads as the sampler it names, a setting added later as its value before
        recorded = getattr(attrs, name)
        if recorded is None:   # a store made before the setting was recorded: nothing to compare with
            continue
        if recorded != value:
            what = _SETTING_NAMES.get(name, name)
            raise BadInput(f"{mosaic_store}: mosaic was created with {what}={_shown(recorded)}, this run has "
                             f"{_shown(value)}; finish it with the same inputs and settings, or start again with "
                             f"--overwrite (or a new --out)")
    return attrs


_SETTING_NAMES = {"scene_content": "scene pixels (their nodata, full scale and values: the sha256 ingest recorded)",
                  "scene_sources": "scene files", "checkpoint_hash": "checkpoint", "tile_size": "tile",
                  "batch_size": "batch-size", "back_projection": "back-projection"}


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:77]}..."


def mosaic_grid(mosaic_store: StorePath) -> TileGrid:
    """The tile grid a mosaic store was created with.

    Args:
        mosaic_store: the mosaic store.

    Returns:
        Its ``TileGrid`` (the mosaic's size, ratio, tile size and halo).
    """
    attrs = MosaicAttrs.read(mosaic_store)
    _, height, width = zarr.open_group(objstore.zarr_store(mosaic_store, read_only=True), mode="r")[HRMS].shape
    return TileGrid(height=height, width=width, ratio=attrs.ratio, tile_size=attrs.tile_size, halo=attrs.halo)


def missing_tiles(mosaic_store: StorePath) -> list[Tile]:
    """Tiles the manifest does not record as finished, row by row: what a resumed run still has to do.

    Args:
        mosaic_store: the mosaic store.

    Returns:
        The tiles marked ``TILE_MISSING``.
    """
    grid = mosaic_grid(mosaic_store)
    done = zarr.open_group(objstore.zarr_store(mosaic_store, read_only=True), mode="r")[DONE][...]
    return [tile for tile in grid.tiles() if done[tile.row, tile.col] == TILE_MISSING]


def open_mosaic(mosaic_store: StorePath, dask: bool = True) -> xr.Dataset:
    """The mosaic store as a lazy Dataset (``hrms`` and ``done``) with its attributes decoded; see ``open_store``."""
    return open_store(mosaic_store, MOSAIC_LAYOUT, dask=dask, decode=True)


def record_provenance(mosaic_store: StorePath, **attrs: Any) -> None:
    """Add attributes (finish time, cluster, ...) to a mosaic store, keeping its consolidated metadata current.

    Args:
        mosaic_store: the mosaic store.
        **attrs: the attributes (JSON values; encoded for netCDF as the layout's are, ``tiling.cf``).
    """
    store_attrs(mosaic_store, MOSAIC_LAYOUT)
    with writing(mosaic_store, "recording its provenance; the tiles are kept"), warnings.catch_warnings():
        store = objstore.zarr_store(mosaic_store)
        group = zarr.open_group(store, mode="r+")
        group.attrs.update(encode_attrs(attrs, already=group.attrs.get(JSON_ATTRIBUTES, "")))
        warnings.filterwarnings("ignore", message="Consolidated metadata", category=UserWarning)
        zarr.consolidate_metadata(store)
