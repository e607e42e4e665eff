"""The scene store (layout in ``tiling.stores.layout``): written once by ingest, read by every tile."""
from __future__ import annotations

import warnings
from typing import Any, Mapping

import dask.array as da
import numpy as np
import rioxarray  # noqa: F401  (registers the .rio accessor)
import xarray as xr
from affine import Affine

from ssdiff_model.blocks import band_rows, chunk_rows, is_lazy, materialize
from ssdiff_model.errors import BadInput
from ssdiff_model.science.equalization import pan_equalization
from ssdiff_model.science.registration import measured_offset
from ssdiff_model.science.resample import central_window
from tiling import objstore
from tiling.integrity import CHECKSUMMED, content_sha256
from tiling.stores.atomic import sha256_file, write_dataset
from tiling.stores.attrs import SceneAttrs, open_store
from tiling.stores.layout import (
    MS,
    MS_GRID_MAPPING,
    OFFSET_WINDOW,
    PAN,
    PAN_GRID_MAPPING,
    SCENE_CHUNK,
    SCENE_LAYOUT,
    StorePath,
)

__all__ = ["georeference", "nodata_mask", "open_scene", "pixel_centres", "store_bands", "write_scene_store"]


def pixel_centres(transform: Affine, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """The y and x coordinates of the pixel centres of a ``height`` x ``width`` grid with that transform.

    Args:
        transform: the grid's affine transform (north up).
        height: rows.
        width: columns.

    Returns:
        (y, x): 1-D arrays of the rows' and the columns' centre coordinates.
    """
    return (transform.f + (np.arange(height) + 0.5) * transform.e,
            transform.c + (np.arange(width) + 0.5) * transform.a)


def georeference(array: xr.DataArray, crs, transform: Affine, grid_mapping: str) -> xr.DataArray:
    """``array`` with its CRS (when known) and transform written to the grid mapping variable ``grid_mapping``.

    Args:
        array: a DataArray whose spatial dims rioxarray knows.
        crs: the CRS, or None (pixel coordinates).
        transform: the affine transform.
        grid_mapping: the grid mapping's name (``PAN_GRID_MAPPING`` or ``MS_GRID_MAPPING``).

    Returns:
        The georeferenced DataArray.
    """
    if crs is not None:
        array = array.rio.write_crs(crs, grid_mapping_name=grid_mapping)
    array = array.rio.write_transform(transform, grid_mapping_name=grid_mapping)
    # Listing the grid mapping as a coordinate too makes a plain `xr.open_zarr` (decode_coords=True) attach it to
    # the variable, so `.rio.crs` and `.rio.transform()` work without decode_coords="all".
    array.encoding["coordinates"] = grid_mapping
    return array


def write_scene_store(store: StorePath, pair, *, sources: Mapping[str, StorePath] | None = None,
                      nodata: float | None = None, chunk: int = SCENE_CHUNK,
                      provenance: Mapping[str, Any] | None = None) -> None:
    """Write a ``PansharpeningPair`` (ssdiff_model.data.pair) to a new scene store. ``sources`` names the input
    files whose sha256 is recorded (default: the pair's ``source`` files); pixels equal to ``nodata`` (and
    non-finite ones) become NaN; ``provenance`` adds attributes (where the files came from: a STAC item). An
    existing store is never touched: ValueError.

    Args:
        store: the new scene store (a local path or an object-store URL).
        pair: the scene's PAN and MS in DN, their georeference, sensor, full scale and band names.
        sources: {name: path} of the input files to checksum (default: the pair's ``source`` files).
        nodata: the DN that marks nodata, or None.
        chunk: chunk side in PAN pixels.
        provenance: attributes added after the layout's (``SceneAttrs.extra``).
    """
    if objstore.exists(store):
        raise BadInput(f"{store}: scene store already exists; remove it or choose another path")
    # A streamed pair (a lazy GeoTIFF read) stays lazy; an in-memory one is walked the same way.
    streamed = is_lazy(pair.pan) or is_lazy(pair.ms_lr)
    pan, ms = (a if is_lazy(a) else np.asarray(a) for a in (pair.pan, pair.ms_lr))
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

    ms_chunk = max(1, chunk // ratio)
    # Bands of whole rows, each a whole number of store chunks tall: every statistic below and the write walk
    # them one at a time (ssdiff_model.blocks), so memory is bounded by a band, not by the scene.
    pan_rows, ms_rows = store_bands(pan.shape, ms.shape, ratio, chunk)
    pan_dn = _as_dn(pan, nodata, pan_rows, chunk)
    ms_dn = _as_dn(ms, nodata, ms_rows, ms_chunk)

    y, x = pixel_centres(pan_transform, *pan.shape)
    y_ms, x_ms = pixel_centres(ms_transform, *ms.shape[1:])
    bands = np.array(list(pair.band_names), dtype=object)
    pan_da = xr.DataArray(pan_dn, dims=("y", "x"), coords={"y": y, "x": x})
    ms_da = xr.DataArray(ms_dn, dims=("band", "y_ms", "x_ms"), coords={"band": bands, "y_ms": y_ms, "x_ms": x_ms})
    pan_da = georeference(pan_da, pair.crs, pan_transform, PAN_GRID_MAPPING)
    ms_da = georeference(ms_da.rio.set_spatial_dims(x_dim="x_ms", y_dim="y_ms"), pair.crs, ms_transform,
                          MS_GRID_MAPPING)
    ds = xr.Dataset({PAN: pan_da, MS: ms_da})
    # The store's chunks, whatever bands of rows are read: square PAN chunks, every MS band in one chunk.
    for name, chunks in ((PAN, (chunk, chunk)), (MS, (ms.shape[0], ms_chunk, ms_chunk))):
        ds[name].encoding.update(compressors=CHECKSUMMED, chunks=chunks)
    if sources is None:
        sources = {objstore.name(path): path for path in getattr(pair, "source", ())}
    # Only the central window the offset is measured on is read for it.
    offset_pan, offset_ms = central_window(pan_dn, ms_dn, ratio, OFFSET_WINDOW)
    attrs = SceneAttrs(
        sensor=pair.sensor or "unknown", ratio=ratio, full_scale=float(pair.full_scale),
        bits=getattr(pair, "bits", None), band_names=tuple(str(b) for b in pair.band_names),
        sources={name: {"path": str(path), "sha256": sha256_file(path)} for name, path in sources.items()},
        notes=tuple(getattr(pair, "notes", ())), pan_equalization=pan_equalization(pan_dn, ms_dn, ratio),
        ms_offset_pan_px=measured_offset(materialize(offset_pan), materialize(offset_ms), ratio,
                                         window=OFFSET_WINDOW),
        nodata=None if nodata is None else float(nodata),
        ms_degradation=getattr(pair, "ms_degradation", "mtf"),
        radiometry=pair.radiometry.as_attrs() if getattr(pair, "radiometry", None) is not None else None,
        content_sha256=content_sha256(pan_dn, ms_dn, float(pair.full_scale)),
        extra=dict(provenance or {}),
    )
    ds.attrs = attrs.as_attrs()
    # A streamed pair is read on this thread: GDAL's s3:// settings (objstore.gdal_env) are the caller's thread's.
    with warnings.catch_warnings():
        # rasterio's windowed reads still multiply affines with `*`, which affine 3 flags; not ours to fix.
        warnings.filterwarnings("ignore", "Use `@` matmul", PendingDeprecationWarning)
        write_dataset(ds, store, mode="w-", threads=not streamed)


def store_bands(pan_shape: tuple[int, int], ms_shape: tuple[int, int, int], ratio: int,
                chunk: int = SCENE_CHUNK) -> tuple[int, int]:
    """The rows of the bands ``write_scene_store`` cuts an in-memory PAN and MS into: lazy inputs chunked in these
    bands give the same statistics, to the last bit, as NumPy ones.

    Args:
        pan_shape: the PAN's (H, W).
        ms_shape: the MS's (B, H / ratio, W / ratio).
        ratio: PAN/MS scale ratio.
        chunk: the store's chunk side in PAN pixels.

    Returns:
        (PAN rows, MS rows) per band, each a whole number of store chunks.
    """
    ms_chunk = max(1, chunk // ratio)
    return (band_rows(pan_shape[1], multiple=chunk),
            band_rows(ms_shape[0] * ms_shape[2], multiple=ms_chunk))


def _as_dn(values, nodata: float | None, rows: int, multiple: int):
    """``values`` as the store holds them, lazily (dask, in bands of whole rows): float32, pixels equal to
    ``nodata`` and non-finite ones NaN. An in-memory array is cut in bands of ``rows``; a lazy one keeps bands
    of its own height, rounded up to a whole number (``multiple``) of store chunks, so that each band read from
    the files is computed once per walk."""
    if is_lazy(values):
        rows = -(-chunk_rows(values) // multiple) * multiple
    else:
        values = da.from_array(values, chunks=(rows, -1) if values.ndim == 2 else (-1, rows, -1))
    dn = da.where(nodata_mask(values, nodata), np.float32(np.nan), values.astype(np.float32))
    return dn.rechunk((rows, -1) if values.ndim == 2 else (-1, rows, -1))


def nodata_mask(values: np.ndarray, nodata: float | None = None) -> np.ndarray:
    """Where a scene store holds nodata (NaN): pixels equal to ``nodata``, and non-finite ones (lazily for a
    dask array)."""
    mask = ~np.isfinite(values)
    if nodata is not None:
        mask = mask | (values == nodata)
    return mask


def open_scene(store: StorePath, dask: bool = True) -> xr.Dataset:
    """The scene store as a lazy Dataset (``pan`` and ``ms``), its attributes as stored; see ``open_store``."""
    return open_store(store, SCENE_LAYOUT, dask=dask)
