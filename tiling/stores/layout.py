"""The two Zarr layouts of the pipeline, written down here and nowhere else: the constants below name their
arrays, attributes and manifest codes, and every other module uses these names.

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
            ssdiff_model.model.diffusion; "ddim" in stores written before the release mode existed), steps,
            back_projection (iterations onto the MS after sampling), ensemble (dihedral views averaged per tile;
            either absent in stores made before it: none, one), seed, model
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

The attributes are read and written through typed objects (``tiling.stores.attrs``: ``SceneAttrs``,
``MosaicAttrs``); the stores are written atomically (``tiling.stores.atomic``), the scene by ``tiling.stores.scene``
and the mosaic by ``tiling.stores.mosaic``.
"""
from __future__ import annotations

import os

__all__ = [
    "DONE", "HRMS", "LEGACY_SAMPLER_NAMES", "MOSAIC_LAYOUT", "MS", "MS_GRID_MAPPING", "OFFSET_WINDOW", "PAN",
    "PAN_GRID_MAPPING", "SCENE_CHUNK", "SCENE_LAYOUT", "SHARD_PIXELS", "StorePath", "TILE_MISSING", "TILE_NODATA",
    "TILE_SHARPENED", "MANIFEST_CODES",
]

SCENE_LAYOUT = "ssdiff-scene/1"
MOSAIC_LAYOUT = "ssdiff-mosaic/1"
PAN, MS, HRMS, DONE = "pan", "ms", "hrms", "done"
PAN_GRID_MAPPING, MS_GRID_MAPPING = "spatial_ref", "spatial_ref_ms"
TILE_MISSING, TILE_SHARPENED, TILE_NODATA = 0, 1, 2
# The manifest's codes by name, as a mosaic records them (``manifest_codes``) and its CF flag meanings list them.
MANIFEST_CODES = {"missing": TILE_MISSING, "sharpened": TILE_SHARPENED, "nodata": TILE_NODATA}
SCENE_CHUNK = 256  # PAN pixels a side; small enough that reading one tile window decompresses little
# PAN pixels a side of one shard object of a mosaic on object storage (Zarr v3 sharding): there, every object costs a
# request and a per-object price, and one object per 32-pixel tile core would make a large scene millions of tiny
# objects; 256 makes a shard of 64 cores (about 1 MB of 4 bands). Local stores keep one file per core.
# SSDIFF_SHARD_PIXELS overrides it when a store is created (the store records its own: ``shard_tiles``).
SHARD_PIXELS = 256
OFFSET_WINDOW = 256  # MS pixels a side of the central window the MS offset is measured on
# Stores written before the release's sampler existed say "ddim": that is the consistent sampler.
LEGACY_SAMPLER_NAMES = {"ddim": "consistent"}

StorePath = str | os.PathLike
