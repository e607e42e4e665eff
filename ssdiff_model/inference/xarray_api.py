"""Sharpen georeferenced ``xarray.DataArray``s in a notebook, with no Zarr store in between.

    import rioxarray
    pan = rioxarray.open_rasterio("pan.tif", masked=True)           # (band=1, y, x)
    ms = rioxarray.open_rasterio("ms.tif", masked=True)             # (band, y, x)
    hrms = sharpen_dataarray(Pansharpener.from_checkpoint("ssdiff-landsat-r2"), pan, ms)
    hrms.rio.crs, hrms.rio.transform()                             # the PAN's

The inputs pass the checks ``ssdiff ingest`` makes of files (``ssdiff_model.data.geotiff``: one PAN band, the same
CRS, an integer ratio from the shapes or the pixel sizes, the same ground within one MS pixel, the MS aligned on
the PAN grid by cropping to whole MS pixels, never resampled), then ``Pansharpener.sharpen`` tiles them as the
pipeline does. Why here and not in ``tiling``: the readers that hold those checks already read GeoTIFFs through
rioxarray in this package, and the tiled sampling lives here too, so the entry needs nothing of ``tiling`` and
its Zarr layouts; xarray and rioxarray are imported by this module only, so the rest of the package loads
without them.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import rioxarray  # noqa: F401  (registers the .rio accessor)
import xarray as xr
from affine import Affine

# The reader's own grid checks, so that this entry refuses exactly what ingest refuses.
from ssdiff_model.data.geotiff import _align_grids, _Raster
from ssdiff_model.errors import BadInput
from ssdiff_model.model.sampling import resolve_sampling

__all__ = ["sharpen_dataarray"]


def _spatial(array: xr.DataArray, name: str) -> tuple[str, str]:
    """The (y, x) dimension names rioxarray finds (y/x, latitude/longitude), or a clear error."""
    try:
        return array.rio.y_dim, array.rio.x_dim
    except Exception as err:   # rioxarray's MissingSpatialDimensionError
        raise BadInput(f"{name}: no spatial dimensions found ({err}); name them y and x or call "
                         f".rio.set_spatial_dims()") from None


def _as_raster(array: xr.DataArray, name: str, nodata: float | None) -> tuple[_Raster, xr.DataArray]:
    """The reader's raster view of a DataArray (bands, rows, cols), with its nodata mask, and the array itself
    ordered (band, y, x)."""
    y_dim, x_dim = _spatial(array, name)
    others = [d for d in array.dims if d not in (y_dim, x_dim)]
    if len(others) > 1:
        raise BadInput(f"{name}: dims {array.dims}: expected (band, {y_dim}, {x_dim})")
    array = array.expand_dims("band") if not others else array.transpose(others[0], y_dim, x_dim)
    values = np.asarray(array.values)
    if values.dtype.kind not in "uif":
        raise BadInput(f"{name}: holds {values.dtype} values, not numbers")
    mask = np.isnan(values) if values.dtype.kind == "f" else np.zeros(values.shape, bool)
    for fill in (array.rio.nodata, nodata):   # the declared nodata (rioxarray's), and the caller's
        if fill is not None and not np.isnan(fill):
            mask |= values == fill
    if np.isinf(values).any():
        raise BadInput(f"{name}: contains {int(np.isinf(values).sum())} infinite values")
    transform = array.rio.transform()
    return _Raster((), values, array.rio.crs, transform, transform != Affine.identity(), mask), array


def _valid_values(raster: _Raster) -> np.ndarray:
    """Values in their own dtype with nodata as NaN (floats) or 0 (integers): a fill value such as 65535 must not
    pass for the data's peak when the full scale is inferred."""
    if raster.values.dtype.kind == "f":
        return np.where(raster.nodata, np.nan, raster.values).astype(raster.values.dtype)
    return np.where(raster.nodata, 0, raster.values).astype(raster.values.dtype)


def sharpen_dataarray(pansharpener, pan: xr.DataArray, ms_lr: xr.DataArray, *, steps: int | None = None,
                      seed: int = 0, tile: int = 64, halo: int | None = None, batch_size: int = 8,
                      full_scale: float | None = None, nodata: float | None = None,
                      back_projection: int | None = None, sensor: str | None = None,
                      ms_degradation: str = "mtf", ensemble: int | None = None) -> xr.DataArray:
    """Sharpen a georeferenced PAN and MS given as DataArrays; the result is on the PAN's grid.

    Args:
        pansharpener: a ``Pansharpener``.
        pan: PAN ``(y, x)`` or ``(band=1, y, x)`` in DN, as ``rioxarray.open_rasterio`` gives it.
        ms_lr: MS ``(band, y, x)`` in DN at the checkpoint's ratio.
        steps: DDIM steps (None: the checkpoint's recommendation, else the project's default, as the pipeline
            resolves them: ``ssdiff_model.model.sampling.resolve_sampling``).
        seed: seed of the position-keyed starting noise.
        tile: tile side in PAN pixels.
        halo: overlap on each side of a tile's core (None: as ``steps``).
        batch_size: tiles per network call.
        full_scale: the DN that means 1.0; None: inferred from the data (``Pansharpener.full_scale_of``).
        nodata: a DN that marks nodata in both arrays (besides NaN and each array's ``rio.nodata``), as
            ``ssdiff ingest --nodata``.
        back_projection: iterations of back-projection onto the MS (``Pansharpener.sharpen``; None: as ``steps``).
        sensor: the images' sensor, for the back-projection's MTF (None: the checkpoint's).
        ms_degradation: how the MS was made ("mtf": a sensor's MS; "bicubic"), the back-projection's degradation.
        ensemble: dihedral views averaged per tile (``Pansharpener.sharpen``; None: as ``steps``).

    Returns:
        ``hrms`` ``(band, y, x)`` float32 DN: the MS's band coordinate, the PAN's y/x coordinates (after the
        crop to whole MS pixels, if any), CRS and transform, NaN where an input is nodata (``rio.nodata`` NaN);
        attributes record the checkpoint, the settings, the full scale and why, and any crop.

    Raises:
        ValueError: mismatched grids (CRS, extent, non-integer ratio), a ratio or band count the checkpoint does
            not take, infinite values, or no valid pixel; ``RadiometryError`` when the full scale cannot be
            decided.
    """
    where = "pan, ms_lr"
    pan_raster, pan = _as_raster(pan, "pan", nodata)
    ms_raster, ms_lr = _as_raster(ms_lr, "ms_lr", nodata)
    if pan_raster.values.shape[0] != 1:
        raise BadInput(f"pan: a PAN must have one band, this one has {pan_raster.values.shape[0]}")
    if pan_raster.crs is not None and ms_raster.crs is not None and pan_raster.crs != ms_raster.crs:
        raise BadInput(f"{where}: mismatched grids: PAN CRS {pan_raster.crs} differs from MS CRS {ms_raster.crs}")
    if pan_raster.values.shape[1:] == ms_raster.values.shape[1:]:
        raise BadInput(f"{where}: the MS has the PAN's size {pan_raster.values.shape[1:]}: give the MS at its "
                         f"native resolution (ratio {pansharpener.ratio})")
    ratio, pan_window, ms_window, notes = _align_grids(pan_raster, ms_raster, where)
    if ratio != pansharpener.ratio:
        raise BadInput(f"{where}: the grids give ratio {ratio}, checkpoint {pansharpener.source} expects "
                         f"{pansharpener.ratio}")
    pan_values = _valid_values(pan_raster)[(0, *pan_window)]
    ms_values = _valid_values(ms_raster)[(slice(None), *ms_window)]
    # Pansharpener.sharpen's steps, split so that the full scale is decided from the arrays' own dtype (with
    # nodata left out) and the nodata of every kind is NaN in the float32 scene, as ingest stores it.
    pansharpener._check_image_shapes(pan_values, ms_values)
    decision = pansharpener.full_scale_of(pan_values, ms_values, full_scale)
    pan_scene, ms_scene = pansharpener._as_scene(
        np.where(pan_raster.nodata[(0, *pan_window)], np.nan, pan_values),
        np.where(ms_raster.nodata[(slice(None), *ms_window)], np.nan, ms_values))
    sampling, _ = resolve_sampling(pansharpener.checkpoint, steps=steps, halo=halo, back_projection=back_projection,
                                   ensemble=ensemble)
    steps, halo = sampling["steps"], sampling["halo"]
    hrms = pansharpener._sharpen_scene(pan_scene, ms_scene, decision.value, steps=steps, seed=seed, tile=tile,
                                       halo=halo, batch_size=batch_size, sampler=sampling["sampler"],
                                       back_projection=sampling["back_projection"], sensor=sensor,
                                       ms_degradation=ms_degradation, ensemble=sampling["ensemble"])

    y_dim, x_dim = _spatial(pan, "pan")
    pan_grid = pan.isel({y_dim: pan_window[0], x_dim: pan_window[1]})
    out = xr.DataArray(hrms, dims=("band", y_dim, x_dim), name="hrms", coords={
        "band": _band_labels(pansharpener, ms_lr), y_dim: pan_grid[y_dim].values, x_dim: pan_grid[x_dim].values})
    out.attrs = _provenance(pansharpener, steps=steps, seed=seed, tile=tile, halo=halo, batch_size=batch_size,
                            sampler=sampling["sampler"], back_projection=sampling["back_projection"],
                            ensemble=sampling["ensemble"],
                            decision=decision, notes=notes)
    if pan_raster.crs is not None:
        out = out.rio.write_crs(pan_raster.crs)
    window_origin = Affine.translation(pan_window[1].start or 0, pan_window[0].start or 0)
    return out.rio.write_transform(pan_raster.transform @ window_origin).rio.write_nodata(np.nan, encoded=False)


def _provenance(pansharpener, *, decision, notes, **settings) -> dict[str, Any]:
    """Attributes that say how the image was made (what ``ssdiff sharpen`` records in a mosaic, in brief)."""
    return {"model": "SSDiff", "checkpoint": str(pansharpener.source),
            "checkpoint_hash": pansharpener.checkpoint_hash, **settings,
            "full_scale": decision.value, "full_scale_reason": decision.reason, "notes": "; ".join(notes)}


def _band_labels(pansharpener, ms_lr: xr.DataArray) -> np.ndarray:
    """The MS's band coordinate, or the checkpoint's band names when the MS has none."""
    band_dim = ms_lr.dims[0]
    return ms_lr[band_dim].values if band_dim in ms_lr.coords else np.array(pansharpener.band_names, dtype=object)
