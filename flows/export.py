"""Export: a finished mosaic store out as a Cloud Optimized GeoTIFF, the file GDAL, QGIS and tile servers open.

    ssdiff export mosaic.zarr --cog mosaic.tif [--overwrite] [--nodata V] [--blocksize 512] [--compress DEFLATE]

The COG has the mosaic's bands (descriptions = band names), CRS and transform, float32 DN, internal tiles,
overviews (averaged, nodata-aware) and compression; nodata is NaN, or ``--nodata V`` written in place of NaN and
declared. The mosaic's provenance goes into the file's GDAL metadata (``gdalinfo`` lists it): each mosaic
attribute as one tag, strings as they are and anything else as JSON.

GDAL's COG driver can only copy a whole dataset, it cannot be written block by block. So the mosaic is streamed,
one GeoTIFF block at a time, into a tiled GeoTIFF beside the output, which the COG driver then copies (it reads its
source by blocks and builds the overviews in a temporary file): memory stays bounded by a block and GDAL's block
cache (capped while exporting), not by the scene. Both files are hidden siblings of the output, renamed into place
only when complete, so a failure or a kill leaves no half-written COG, and an existing file is replaced only with
``overwrite``. The mosaic and the output may be object-store URLs: an s3:// COG is built in a local temporary
folder and uploaded in one PUT.
"""
from __future__ import annotations

import errno
import json
import os
import tempfile
import uuid
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import rasterio
import rasterio.shutil
import zarr
from rasterio.windows import Window

from ssdiff_model.errors import BadInput
from tiling import (
    HRMS,
    MOSAIC_LAYOUT,
    missing_tiles,
    mosaic_grid,
    objstore,
    open_mosaic,
    require_folder_for,
    store_attrs,
    writing,
)

__all__ = ["COG_BLOCKSIZE", "COMPRESSIONS", "export_cog"]

PathLike = str | os.PathLike
COG_BLOCKSIZE = 512          # GDAL's default internal tile of a COG; most tile servers read 256 or 512
COMPRESSIONS = ("DEFLATE", "ZSTD", "LZW", "NONE")   # DEFLATE is the one every GDAL (and so every QGIS) reads
# GDAL's block cache while exporting, in MB. Its default (5 % of the machine's memory) keeps every block the export
# touches, so the export's memory grew with the scene; blocks are written whole and in order (_stream_to_geotiff),
# so a cache of a few rows of 512-pixel blocks loses no speed.
GDAL_CACHE_MB = 64


def export_cog(mosaic_store: PathLike, out: PathLike, *, overwrite: bool = False, nodata: float | None = None,
               blocksize: int = COG_BLOCKSIZE, compress: str = "DEFLATE") -> dict[str, Any]:
    """Write the finished mosaic at ``mosaic_store`` as a COG at ``out``; returns a summary. Either may be an
    object-store URL: the COG is then built in a local temporary folder and uploaded in one PUT, so the object
    appears whole or not at all.

    Refused (ValueError / FileExistsError, nothing written): a path that is not a mosaic store, a mosaic with
    tiles still missing, an existing ``out`` unless ``overwrite``, a ``nodata`` value that is not finite or that a
    valid pixel of the mosaic holds (the pixel would read as nodata)."""
    mosaic_store, out = objstore.as_path(mosaic_store), objstore.as_path(out)
    attrs = store_attrs(mosaic_store, MOSAIC_LAYOUT)
    missing = missing_tiles(mosaic_store)
    if missing:
        raise BadInput(f"{mosaic_store}: not a finished mosaic ({len(missing)} of {len(mosaic_grid(mosaic_store))} "
                         f"tiles missing): rerun `ssdiff sharpen` on it to finish them, then export")
    compress = compress.upper()
    if compress not in COMPRESSIONS:
        raise BadInput(f"{out}: unknown compression {compress!r} (one of {', '.join(COMPRESSIONS)})")
    if blocksize < 16 or blocksize % 16:
        raise BadInput(f"{out}: a COG's block size must be a multiple of 16, got {blocksize}")
    if nodata is not None and not (np.isfinite(nodata) and np.float32(nodata) == nodata):
        raise BadInput(f"{out}: nodata {nodata!r} is not a finite float32 value (leave it out for NaN)")
    remote = objstore.is_url(out)
    if remote:
        objstore.require_reachable(out, writable=True, what="COG output")
    elif out.is_dir():
        raise BadInput(f"{out}: is a folder; give the path of the .tif to write")
    if objstore.exists(out) and not overwrite:
        raise FileExistsError(errno.EEXIST, "already exists; pass --overwrite to replace it", str(out))
    if not remote:
        require_folder_for(out)

    georeferenced = open_mosaic(mosaic_store, dask=False)[HRMS]
    hrms = zarr.open_group(objstore.zarr_store(mosaic_store, read_only=True), mode="r")[HRMS]
    bands, height, width = hrms.shape
    profile = {"count": bands, "height": height, "width": width, "dtype": "float32",
               "crs": georeferenced.rio.crs, "transform": georeferenced.rio.transform(),
               "nodata": np.nan if nodata is None else nodata}
    band_names = [str(b) for b in georeferenced["band"].values]
    with tempfile.TemporaryDirectory(prefix=".ssdiff-export-") if remote else nullcontext(None) as staging:
        local = Path(staging) / objstore.name(out) if remote else out
        partial = local.with_name(f".{local.name}.partial-{uuid.uuid4().hex[:8]}")
        source = partial.with_name(f"{partial.name}.src.tif")
        try:
            with writing(out, "writing the COG; nothing was kept"), rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB):
                _stream_to_geotiff(hrms, source, profile, band_names, _tags(attrs, mosaic_store), nodata,
                                   blocksize)
                options = {"BLOCKSIZE": blocksize, "COMPRESS": compress, "OVERVIEWS": "AUTO",
                           # averaging skips nodata, so an overview pixel at a swath edge is the mean of the valid ones
                           "OVERVIEW_RESAMPLING": "AVERAGE", "BIGTIFF": "IF_SAFER"}
                if compress != "NONE":
                    options["PREDICTOR"] = "YES"   # the floating-point predictor for float32: smaller files
                rasterio.shutil.copy(source, partial, driver="COG", **options)
                source.unlink()
                with rasterio.open(partial) as cog:
                    overviews = cog.overviews(1)
                    compression = cog.compression.value if cog.compression else "NONE"
                size = partial.stat().st_size
                if remote:
                    objstore.put_file(partial, out)   # one PUT: no reader ever sees part of the COG
                else:
                    _move_into_place(partial, out, overwrite)
        finally:
            for leftover in (source, partial):
                leftover.unlink(missing_ok=True)
    return {"cog": str(out), "mosaic_store": str(mosaic_store), "bands": band_names, "width": width,
            "height": height, "crs": str(profile["crs"]), "blocksize": blocksize, "overviews": overviews,
            "compress": compression, "nodata": "NaN" if nodata is None else nodata, "bytes": size}


def _stream_to_geotiff(hrms: zarr.Array, path: Path, profile: Mapping[str, Any], band_names: list[str],
                       tags: Mapping[str, str], nodata: float | None, blocksize: int) -> None:
    """The mosaic copied into a tiled GeoTIFF carrying its georeference, band names and tags: what the COG driver
    copies (metadata included). Written one whole GeoTIFF block at a time, row by row: a block is complete when
    GDAL's (capped) cache evicts it, so it is written once and never read back; written in the mosaic's chunk
    order instead, a small cache evicted half-written blocks and the export was about 5 times slower."""
    bands, height, width = hrms.shape
    # Fast compression: this file lives only until the COG is made, but it must not take a scene's raw size on disk.
    with rasterio.open(path, "w", driver="GTiff", tiled=True, blockxsize=blocksize, blockysize=blocksize,
                       compress="DEFLATE", zlevel=1, bigtiff="IF_SAFER", **profile) as dst:
        dst.update_tags(**tags)
        for band, name in enumerate(band_names, start=1):
            dst.set_band_description(band, name)
        for y0 in range(0, height, blocksize):
            for x0 in range(0, width, blocksize):
                block = hrms[:, y0:y0 + blocksize, x0:x0 + blocksize]
                if nodata is not None:
                    if (block == nodata).any():
                        raise BadInput(f"nodata value {nodata:g} is a valid value of the mosaic (at PAN pixel row "
                                         f">= {y0}, column >= {x0}): choose another --nodata, or leave it out "
                                         f"for NaN")
                    block = np.where(np.isnan(block), np.float32(nodata), block)
                dst.write(block, window=Window(x0, y0, block.shape[2], block.shape[1]))


def _tags(attrs: Mapping[str, Any], mosaic_store: Path | str) -> dict[str, str]:
    """GDAL metadata tags: every mosaic attribute, strings as they are, anything else (numbers, the model config,
    the sources and their checksums) as JSON, so a reader gets the values back with ``json.loads``."""
    tags = {str(key): value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
            for key, value in attrs.items()}
    tags["mosaic_store"] = str(mosaic_store)
    tags["TIFFTAG_SOFTWARE"] = f"ssdiff-pansharpening {attrs.get('code_version', '')}".strip()
    return tags


def _move_into_place(partial: Path, out: Path, overwrite: bool) -> None:
    """Rename the finished file to ``out``. Without ``overwrite`` a file that appeared there meanwhile is kept: a
    hard link fails where a rename would silently replace it."""
    if overwrite:
        os.replace(partial, out)
        return
    try:
        os.link(partial, out)
    except FileExistsError:
        raise FileExistsError(errno.EEXIST, "appeared while exporting; pass --overwrite to replace it",
                              str(out)) from None
    partial.unlink()

