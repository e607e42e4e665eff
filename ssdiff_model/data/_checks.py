"""Internal helpers the readers share: file paths and URLs, shape and value checks, the sensor, band names and
radiometry of what was read. Not part of the public API."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ssdiff_model.blocks import is_lazy, row_bands
from ssdiff_model.data.paths import as_path
from ssdiff_model.errors import BadInput
from ssdiff_model.science.radiometry import FullScale, RadiometryError, infer_full_scale
from ssdiff_model.science.sensors import get_sensor

__all__ = ["PathLike", "as_float32", "count_lazily", "decide_radiometry", "describe", "require_file", "shape_ratio",
           "unreadable"]

PathLike = str | Path


def shape_ratio(where: str, pan_hw: Sequence[int], ms_hw: Sequence[int]) -> int:
    """The integer ratio PAN/MS read off the shapes, or a clear error."""
    ratios = (pan_hw[0] / ms_hw[0], pan_hw[1] / ms_hw[1])
    if ratios[0] != ratios[1] or not ratios[0].is_integer() or ratios[0] < 1:
        raise BadInput(f"{where}: mismatched sizes: PAN {pan_hw[0]}x{pan_hw[1]} vs MS {ms_hw[0]}x{ms_hw[1]} gives a "
                         f"non-integer or unequal ratio ({ratios[0]:.3f} x {ratios[1]:.3f})")
    return int(ratios[0])


def _sensor(name: str | None):
    """The `sensors.Sensor` for a name; None when no name is given or the name is unknown to `sensors.py`."""
    if name is None:
        return None
    try:
        return get_sensor(name)
    except ValueError:
        return None


def describe(sensor_name: str | None, band_names, n_bands: int) -> tuple[str | None, tuple[str, ...]]:
    """Canonical sensor name (the toolbox's) and band names: given ones, else the sensor's, else B1..Bn."""
    sensor = _sensor(sensor_name)
    canonical = sensor.name if sensor is not None else sensor_name
    if band_names:
        return canonical, tuple(band_names)
    return canonical, sensor.band_names if sensor is not None and len(sensor.band_names) == n_bands else ()


def decide_radiometry(where: str, images: Sequence[np.ndarray], sensor_name: str | None, bits: int | None = None,
               full_scale: float | None = None, dtype=None) -> tuple[int | None, float, FullScale]:
    """(bits, full_scale, the decision) of raw arrays (or float copies with NaN nodata, ``dtype`` then naming the
    files' type), by precedence: caller or file metadata (`L`), then ``radiometry.infer_full_scale`` with the
    sensor's bit depth as its default. A RadiometryError (a ValueError) names ``where``."""
    if full_scale is None and bits is not None:
        full_scale = float(2 ** int(bits) - 1)
    sensor = _sensor(sensor_name)
    dtype = np.result_type(*images) if dtype is None else dtype
    try:
        decided = infer_full_scale(images[0], images[1], dtype=dtype, declared=full_scale,
                                   sensor_default=float(2**sensor.bits - 1) if sensor is not None else None)
    except RadiometryError as err:
        raise RadiometryError(f"{where}: {err}") from None
    return (int(bits) if bits is not None else decided.bits), decided.value, decided


def as_float32(where: str, name: str, image, nodata=None):
    """float32 DN; pixels flagged in the boolean ``nodata`` become NaN, any other non-finite value is an error.

    A lazy (dask) image stays lazy: the check reads it once, a band of rows at a time (``count_lazily``).

    Args:
        where: the file or pair named in errors.
        name: the image's name in errors ("PAN", "MS").
        image: the image, NumPy or dask.
        nodata: booleans flagging the pixels that hold no data, or None.

    Returns:
        The float32 image, NumPy or dask as given.
    """
    lazy = is_lazy(image)
    image = image if lazy else np.asarray(image)
    if image.dtype.kind not in "uif":
        raise BadInput(f"{where}: {name} holds {image.dtype} values, not numbers")
    values = image.astype(np.float32)
    bad = ~np.isfinite(values) if nodata is None else ~np.isfinite(values) & ~nodata
    count = count_lazily(bad) if lazy else int(bad.sum())
    if count:
        raise BadInput(f"{where}: {name} contains {count} NaN or infinite values")
    if nodata is None:
        return values
    if lazy:
        return np.where(nodata, np.float32(np.nan), values)   # dask's where, through NumPy's dispatch
    values[nodata] = np.nan
    return values


def count_lazily(flags) -> int:
    """How many of the lazy booleans ``flags`` are True, a band of rows at a time."""
    return sum(int(np.count_nonzero(block)) for _, block in row_bands(flags))


def unreadable(path: Path, err: Exception) -> BadInput:
    """The error for a file its library could not read, with the library's reason."""
    # rasterio's "Read failed. See previous exception for details." keeps GDAL's reason (a truncated strip, say)
    # in its cause: show that one.
    reason = err.__cause__ if err.__cause__ is not None else err
    return BadInput(f"{path}: unreadable or corrupt file ({type(reason).__name__}: {reason})")


def require_file(path: PathLike) -> Path | str:
    """`as_path(path)`, or FileNotFoundError for a local file that is not there."""
    path = as_path(path)
    if isinstance(path, str) or str(path).startswith("/vsi"):
        return path   # an object or a GDAL virtual file: the reader's own error says whether it is there
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    return path
