"""GeoTIFF pairs (`read_geotiff_pair`) through rioxarray, keeping the CRS and transforms exactly as the files give
them: the grids' alignment (`_align_grids`, shared with `ssdiff_model.inference.xarray_api`), an MS resampled onto
the PAN grid brought back to its native one, and the transform of a decimated image (`decimated_transform`).

Every reader returns channel-first float32 arrays in the file's DN (see `ssdiff_model.data.pair`).
"""
from __future__ import annotations

import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from affine import Affine

from ssdiff_model.blocks import band_rows, row_bands
from ssdiff_model.data._checks import (
    PathLike,
    as_float32,
    count_lazily,
    decide_radiometry,
    describe,
    require_file,
    unreadable,
)
from ssdiff_model.data.pair import PansharpeningPair
from ssdiff_model.data.paths import as_path
from ssdiff_model.errors import BadInput
from ssdiff_model.science.resample import decimate, mtf_filter

__all__ = ["STREAM_GDAL_CACHE", "decimated_transform", "read_geotiff_pair", "read_rows"]

# GDAL's block cache while a scene streams (its default is 5 % of the machine's memory, which a pass through a
# large file fills): windows are whole blocks tall (``read_rows``), so the cache never has to keep a block.
STREAM_GDAL_CACHE = 64 * 2**20


@dataclass
class _Raster:
    path: tuple[Path | str, ...]
    values: np.ndarray  # (bands, rows, cols), the file's dtype
    crs: Any
    transform: Any
    georeferenced: bool
    nodata: np.ndarray | None = None  # True where a pixel holds its file's declared nodata value (mask_nodata)


def _declared_nodata(values: np.ndarray, nodata: float | None) -> np.ndarray:
    if nodata is None:
        return np.zeros(values.shape, dtype=bool)
    return np.isnan(values) if np.isnan(nodata) else values == nodata


def _open_raster(paths: Sequence[Path], mask_nodata: bool = False, lazy: bool = False) -> _Raster:
    """One raster from one file, or single-band files stacked in the given order (Landsat-style band files).

    Pixels holding a file's declared nodata value are an error, or with ``mask_nodata`` flagged in ``nodata``.
    ``lazy``: the values are a dask array read by windows of whole rows (``ssdiff_model.blocks.band_rows``), each
    file read through once here, a band of rows at a time, so that a corrupt or truncated file is named now; the
    nodata flags are then lazy too, and set whenever a file declares a nodata value."""
    import rasterio.errors
    import rioxarray

    layers, grids, masks = [], [], []
    for path in paths:
        path = require_file(path)
        try:
            with warnings.catch_warnings():
                # Files without a geotransform (vhr_4band_fr, wv2_rio) are expected: their identity transform is kept.
                warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
                # rioxarray 0.19 still multiplies affines with `*`, which affine 3 flags; not ours to fix.
                warnings.filterwarnings("ignore", "Use `@` matmul", PendingDeprecationWarning)
                with rioxarray.open_rasterio(path, mask_and_scale=False) as data:
                    if lazy:   # windows of whole rows, all bands of a window read together
                        values = data.chunk({"band": -1, "y": read_rows(data), "x": -1}).data
                    else:
                        values = data.values
                    # rioxarray reports the CRS of ground control points as the raster's when the grid has none
                    # (quickbird_toulouse: GCPs of the whole original scene); the grid's own CRS stays None then.
                    from_gcps = "gcps" in data.coords["spatial_ref"].attrs if "spatial_ref" in data.coords else False
                    crs = None if from_gcps else data.rio.crs
                    grids.append((crs, data.rio.transform(recalc=False), data.rio.nodata))
            nodata = grids[-1][2]
            masked = _declared_nodata(values, nodata)
            # Streamed: every window read once now (a truncated strip fails here, naming its file), counting the
            # nodata pixels only where they are an error.
            held = count_lazily(masked) if lazy and not mask_nodata and nodata is not None else None
            if lazy and held is None:
                for _ in row_bands(values):
                    pass
        except Exception as err:  # rasterio / GDAL raise RasterioIOError, CPLE_* errors and more
            raise unreadable(path, err) from err
        if not mask_nodata and nodata is not None and not np.isnan(nodata):
            held = held if lazy else int(masked.sum())
            if held:
                raise BadInput(f"{path}: {held} pixels hold the nodata value {nodata}")
        layers.append(values)
        masks.append(masked)
    first = grids[0]
    for path, grid, layer in zip(paths[1:], grids[1:], layers[1:]):
        if grid[:2] != first[:2] or layer.shape[1:] != layers[0].shape[1:]:
            raise BadInput(f"{path}: its grid differs from {paths[0]}'s: cannot stack them as bands of one image")
    transform = first[1]
    if lazy:
        import dask.array as da

        values = layers[0] if len(layers) == 1 else da.concatenate(layers, axis=0)
        declared = any(grid[2] is not None for grid in grids)
        nodata = (masks[0] if len(masks) == 1 else da.concatenate(masks, axis=0)) if mask_nodata and declared \
            else None
    else:
        values = np.concatenate(layers, axis=0)
        nodata = np.concatenate(masks, axis=0) if mask_nodata and any(m.any() for m in masks) else None
    return _Raster(tuple(as_path(p) for p in paths), values, first[0], transform, transform != Affine.identity(),
                   nodata)


def read_rows(data) -> int:
    """Rows of the windows a lazy read takes of the raster ``data`` (a rioxarray DataArray or a rasterio dataset):
    about ``blocks.BAND_BYTES`` as float32, a whole number of the file's blocks tall, so that each block is
    decompressed once and GDAL's block cache (``STREAM_GDAL_CACHE``) needs to hold no more than one window.

    Args:
        data: the opened raster.

    Returns:
        The rows per window.
    """
    if hasattr(data, "block_shapes"):   # rasterio
        block, width, count = data.block_shapes[0][0], data.width, data.count
    else:
        block = data.encoding.get("preferred_chunks", {}).get("y", 1)
        width, count = data.sizes["x"], data.sizes["band"]
    return band_rows(width * count, multiple=max(1, int(block)))


def _align_grids(pan: _Raster, ms: _Raster, where: str) -> tuple[int, tuple[slice, slice], tuple[slice, slice], list]:
    """The ratio and the PAN / MS windows that make PAN exactly ratio x MS.

    Rule: shapes that are an exact integer multiple are taken as the data provider aligned them (transforms kept as
    given, even when PAirMax's put the MS origin 1.5 PAN pixels off), provided that files georeferenced with pixel
    sizes of their own cover the same ground within one MS pixel (a wrong transform is an error). Otherwise both files
    must be georeferenced with
    pixel sizes in an integer ratio; the MS origin is placed on the PAN grid (nearest PAN pixel, ties to the lower
    index; wv3_georef is off by exactly (1, 2) PAN pixels, Landsat-8 by half a PAN pixel) and both are cropped to the
    MS pixels whose r x r PAN block lies inside the PAN. The extents must agree within one MS pixel, else it is an
    error, never a silent resampling."""
    (_, H, W), (_, h, w) = pan.values.shape, ms.values.shape
    notes = []
    full = (slice(0, H), slice(0, W)), (slice(0, h), slice(0, w))
    distinct_pixels = pan.georeferenced and ms.georeferenced and (pan.transform.a, pan.transform.e) != (
        ms.transform.a, ms.transform.e)
    if H % h == 0 and W % w == 0 and H // h == W // w:
        ratio = H // h
        if distinct_pixels:
            pixel_ratio = ms.transform.a / pan.transform.a
            if not math.isclose(pixel_ratio, ratio, rel_tol=0.01):
                raise BadInput(f"{where}: mismatched grids: shapes give ratio {ratio} but pixel sizes "
                                 f"{pan.transform.a:g} and {ms.transform.a:g} give {pixel_ratio:.3f}")
            for axis in range(2):   # the shapes fit, but the files must also cover the same ground
                _require_same_extent(pan, ms, axis, where)
        elif pan.georeferenced and ms.georeferenced and ratio > 1:
            notes.append(f"PAN and MS carry the same pixel size ({pan.transform.a:g}): the MS transform is a copy of "
                         f"the PAN's; the ratio {ratio} comes from the shapes and the transforms are kept as given")
        return ratio, *full, notes
    if not distinct_pixels or pan.transform.b or pan.transform.d or ms.transform.b or ms.transform.d:
        raise BadInput(f"{where}: non-integer ratio: PAN {H}x{W} vs MS {h}x{w} ({H / h:.3f} x {W / w:.3f}) and no "
                         f"pair of north-up georeferenced grids to align them")
    pixel_ratios = (ms.transform.a / pan.transform.a, ms.transform.e / pan.transform.e)
    ratio = round(pixel_ratios[0])
    if ratio < 2 or any(not math.isclose(p, ratio, rel_tol=1e-3) for p in pixel_ratios):
        raise BadInput(f"{where}: non-integer ratio: pixel sizes {pan.transform.a:g} and {ms.transform.a:g} give "
                         f"{pixel_ratios[0]:.4f}")
    windows = []
    for axis, (n_pan, n_ms, pan_origin, ms_origin, pan_step) in enumerate((
            (H, h, pan.transform.f, ms.transform.f, pan.transform.e),
            (W, w, pan.transform.c, ms.transform.c, pan.transform.a))):
        _require_same_extent(pan, ms, axis, where)
        offset = (ms_origin - pan_origin) / pan_step  # MS origin in PAN pixels
        start = math.ceil(offset - 0.5 - 1e-6)  # nearest PAN pixel, ties to the lower index
        first = max(0, math.ceil(-start / ratio))
        last = min(n_ms, (n_pan - start) // ratio)
        windows.append((slice(start + ratio * first, start + ratio * last), slice(first, last)))
        if abs(offset - start) > 1e-3:
            notes.append(f"MS grid is {offset - start:+.2f} PAN pixels off the PAN grid along {'yx'[axis]}: kept, "
                         f"not resampled")
    (pan_rows, ms_rows), (pan_cols, ms_cols) = windows
    notes.append(f"cropped to whole MS pixels: PAN rows {pan_rows.start}:{pan_rows.stop} cols {pan_cols.start}:"
                 f"{pan_cols.stop} of {H}x{W}, MS rows {ms_rows.start}:{ms_rows.stop} cols {ms_cols.start}:"
                 f"{ms_cols.stop} of {h}x{w}")
    return ratio, (pan_rows, pan_cols), (ms_rows, ms_cols), notes


def _window(mask: np.ndarray | None, bands, window: tuple[slice, slice]) -> np.ndarray | None:
    return None if mask is None else mask[(bands, *window)]


def _axis_extent(raster: _Raster, axis: int) -> tuple[float, float, float]:
    """(first edge, last edge, pixel step) of a north-up raster along y (axis 0) or x (axis 1), in map units."""
    size = raster.values.shape[1 + axis]
    origin, step = (raster.transform.f, raster.transform.e) if axis == 0 else (raster.transform.c, raster.transform.a)
    return origin, origin + size * step, step


def _require_same_extent(pan: _Raster, ms: _Raster, axis: int, where: str) -> None:
    """PAN and MS must cover the same ground: their edges may differ by at most one MS pixel (a provider's
    half-pixel conventions), never more."""
    (pan_origin, pan_end, _), (ms_origin, ms_end, ms_step) = _axis_extent(pan, axis), _axis_extent(ms, axis)
    if max(abs(ms_origin - pan_origin), abs(ms_end - pan_end)) > abs(ms_step) * (1 + 1e-6):
        raise BadInput(f"{where}: mismatched grids: PAN and MS extents differ by more than one MS pixel along "
                         f"{'yx'[axis]} ({pan_origin:.3f}..{pan_end:.3f} vs {ms_origin:.3f}..{ms_end:.3f})")


def _decimate_ms_on_pan_grid(ms: _Raster, ratio: int, sensor_name: str | None):
    """MS that a provider already resampled onto the PAN grid, brought back to its native sampling: the sensor's
    MTF-matched low-pass, then every ratio-th pixel (the degradation of Wald's protocol). Returns the MS and its
    transform: pixels `ratio` times larger, whose centres are the kept pixels' centres."""
    values = decimate(mtf_filter(ms.values, sensor_name or "none", ratio), ratio)
    return values, decimated_transform(ms.transform, ratio) if ms.georeferenced else ms.transform


def decimated_transform(transform: Affine, ratio: int) -> Affine:
    """The transform of an image decimated by `resample.decimate`: pixels `ratio` times larger, centred on the
    centres of the kept pixels (0-based ratio//2, ratio//2 + ratio, ...).

    Args:
        transform: the affine transform of the image before decimation.
        ratio: the decimation factor.

    Returns:
        The affine transform of the decimated image.
    """
    shift = ratio // 2 + 0.5 - ratio / 2  # top-left corner of a kept pixel's new footprint, in old pixels
    return transform @ Affine.translation(shift, shift) @ Affine.scale(ratio)


def read_geotiff_pair(pan_path: PathLike, ms_path: PathLike | Sequence[PathLike], gt_path: PathLike | None = None,
                      sensor: str | None = None, *, ratio: int | None = None, bits: int | None = None,
                      full_scale: float | None = None, band_names: Sequence[str] = (),
                      mask_nodata: bool = False, lazy: bool = False) -> PansharpeningPair:
    """A PAN GeoTIFF and its MS GeoTIFF (or a list of single-band MS files, stacked in order), via rioxarray.

    The CRS (the PAN's; an MS CRS that differs is recorded in `notes`, a conflicting one is an error) and both
    transforms are kept exactly as the files carry them, wrong tags included. The ratio comes from the shapes when
    they are an exact multiple, else from the georeferencing (see `_align_grids`). An MS of the PAN's own size
    (quickbird_toulouse) needs `ratio=` its native ratio: it is then MTF-filtered and decimated back to it, recorded
    in `notes`. `bits` / `full_scale` override what the reader infers (see `_checks.decide_radiometry`).

    Pixels holding a file's declared nodata value are an error (a pair for training or scoring must be complete),
    or with `mask_nodata` NaN in the returned images (the nodata of a scene store; ingest reads scenes so).

    With `lazy` (ingest), the PAN and MS come back as dask arrays read by windows of whole rows: every check above
    is made from the headers and from passes over the files a band of rows at a time (readable, finite values,
    nodata, the radiometry's maximum and sample), so memory is bounded by a band, never by the scene. Compute
    them on the calling thread (``ssdiff_model.blocks.materialize``): GDAL's ``s3://`` settings are per thread.
    An MS resampled onto the PAN grid is still read whole (its MTF filter needs the whole image).

    Args:
        pan_path: the single-band PAN file (a local path or a URL GDAL reads).
        ms_path: the MS file, or its single-band files in band order.
        gt_path: an optional reference on the PAN grid (reduced-resolution pairs).
        sensor: the sensor's name (its MTF gains, bit depth and band names), None when unknown.
        ratio: the expected PAN / MS ratio; required when the MS is on the PAN grid.
        bits: the data's bit depth, overriding the inferred one.
        full_scale: the DN of full scale, overriding the inferred one.
        band_names: the MS band names, else the sensor's, else B1..Bn.
        mask_nodata: make declared nodata pixels NaN instead of refusing them.
        lazy: stream the PAN and MS (dask arrays) instead of reading them into memory.

    Returns:
        The pair, with its CRS, transforms, radiometry decision and notes.

    Raises:
        FileNotFoundError: a local file is missing.
        BadInput: unreadable files, mismatched sizes or grids, nodata pixels without `mask_nodata`.
    """
    ms_paths = [as_path(ms_path)] if isinstance(ms_path, (str, os.PathLike)) else [as_path(p) for p in ms_path]
    pan, ms = _open_raster([as_path(pan_path)], mask_nodata, lazy), _open_raster(ms_paths, mask_nodata, lazy)
    if lazy and pan.values.shape[1:] == ms.values.shape[1:]:
        ms = _open_raster(ms_paths, mask_nodata)   # to be MTF-filtered and decimated: read whole
    where = ", ".join(str(p) for p in (*pan.path, *ms.path))
    if pan.values.shape[0] != 1:
        raise BadInput(f"{pan_path}: a PAN must have one band, this file has {pan.values.shape[0]}")
    notes = []
    if pan.crs is not None and ms.crs is not None and pan.crs != ms.crs:
        raise BadInput(f"{where}: mismatched grids: PAN CRS {pan.crs} differs from MS CRS {ms.crs}")
    if (pan.crs is None) != (ms.crs is None):
        notes.append(f"PAN CRS {pan.crs}, MS CRS {ms.crs}: the pair keeps the PAN's, nothing is filled in")
    ms_values = ms.values
    if pan.values.shape[1:] == ms.values.shape[1:]:
        if not ratio or ratio < 2:
            raise BadInput(f"{where}: the MS has the PAN's size {pan.values.shape[1:]}: pass ratio= the native "
                             f"ratio to decimate it back, or give the low-resolution MS")
        if pan.values.shape[1] % ratio or pan.values.shape[2] % ratio:
            raise BadInput(f"{where}: mismatched sizes: {pan.values.shape[1:]} is not a multiple of ratio {ratio}")
        if ms.nodata is not None:   # the MTF filter would smear it over its whole footprint
            raise BadInput(f"{where}: the MS on the PAN grid holds nodata pixels: decimating it back to its "
                             f"native grid needs a complete image")
        ms_values, ms_transform = _decimate_ms_on_pan_grid(ms, ratio, sensor)
        notes.append(f"MS was on the PAN grid: MTF-filtered ({sensor or 'none'} gains) and decimated by {ratio}")
        pan_window, ms_window = (slice(None), slice(None)), (slice(None), slice(None))
        found_ratio = ratio
    else:
        found_ratio, pan_window, ms_window, grid_notes = _align_grids(pan, ms, where)
        notes += grid_notes
        if ratio is not None and ratio != found_ratio:
            raise BadInput(f"{where}: expected ratio {ratio}, the files give {found_ratio}")
        ms_transform = ms.transform @ Affine.translation(ms_window[1].start, ms_window[0].start)
    pan_transform = pan.transform @ Affine.translation(pan_window[1].start or 0, pan_window[0].start or 0)
    # A decimated MS is in memory even when reading lazily (see above): each image is checked as it is held.
    pan_image = as_float32(
        where, "PAN", pan.values[0][pan_window], _window(pan.nodata, 0, pan_window))
    ms_image = as_float32(
        where, "MS", ms_values[(slice(None), *ms_window)], _window(ms.nodata, slice(None), ms_window))
    gt = None
    if gt_path is not None:
        gt_raster = _open_raster([as_path(gt_path)])
        gt = as_float32(str(gt_path), "GT", gt_raster.values[(slice(None), *pan_window)])
    # The decision is taken on the pixels the pair keeps (nodata as NaN), in the files' own type.
    bits, full_scale, radiometry = decide_radiometry(where, [pan_image, ms_image], sensor, bits=bits,
                                               full_scale=full_scale,
                                               dtype=np.result_type(pan.values.dtype, ms.values.dtype))
    sensor, names = describe(sensor, band_names, ms_image.shape[0])
    return PansharpeningPair(
        pan=pan_image, ms_lr=ms_image, gt=gt, ratio=found_ratio, full_scale=full_scale, bits=bits, sensor=sensor,
        band_names=names, source=(*pan.path, *ms.path, *((as_path(gt_path),) if gt_path else ())), crs=pan.crs,
        pan_transform=pan_transform, ms_transform=ms_transform, notes=tuple(notes), radiometry=radiometry)
