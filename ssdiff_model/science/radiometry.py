"""Radiometry: which value of an image means 1.0 to the model (its *full scale*), decided from the image itself.

The network was trained on every scene divided by its own full scale (2047 for 11-bit DN, 255 for 8-bit, 1.0 for
reflectance), so a wrong full scale does not fail: it sharpens a picture many times too dark or too bright, and the
output is scaled back by the same wrong number. This module decides it, says why, and refuses what it cannot
decide safely:

- Declared (``declared=``, the command line's ``--full-scale``): taken as given; it only has to be a positive
  number, and a warning says how many pixels lie above it (they saturate).
- uint8 storage: 255.
- Other integers: bit depth. The sensor's (``sensor_default``) when the data stay within it, allowing the small
  overshoot of resampled products; otherwise the smallest usual depth (10, 11, 12, 14, 16 bits) holding the
  data's maximum. An integer DN cannot exceed its bit depth, so the maximum is the right statistic here.
- Signed integers holding negative values are refused: a DN is a count and cannot be negative, so the data carry
  an offset, a fill value or a sign the model cannot know about (declare the fill as nodata, or remove the offset).
- Floats: reflectance or DN-like is decided by a high percentile (``ROBUST_PERCENTILE``), not by the maximum, so
  a cloud or a specular roof above 1.0 does not turn reflectance into "11-bit DN". Reflectance gets 1.0 (pixels
  above saturate, and are counted in a warning); DN-like floats are treated as integers are. Either way the
  result is marked ``assumed``: the caller should tell the user, and how to override it.
- Negative floats: a little below zero is what atmospheric correction leaves over dark water and shadows, and is
  tolerated with a warning (the output is clipped at 0); more than that is refused like negative integers.

Pure numpy: no knowledge of where the arrays come from (files, Zarr) or who calls; the arrays are walked a band of
rows at a time (``ssdiff_model.blocks``), so a lazily read scene is never held whole.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from ssdiff_model.blocks import is_lazy, row_bands
from ssdiff_model.errors import BadInput

# High percentile that decides a float image's kind: high enough that a bright scene (snow, desert) counts, low
# enough that the brightest one pixel in a thousand (clouds, specular roofs, hot pixels) does not.
ROBUST_PERCENTILE = 99.9
# A float image whose robust high value stays below this is reflectance in [0, 1] with some overshoot; above it
# the values are DN (or percent) and the bit-depth rules apply. Reflectance rarely exceeds 1.2 even on clouds.
REFLECTANCE_LIMIT = 1.5
# Overshoot of the sensor's bit depth still taken as that depth: resampled and reduced-resolution products
# overshoot their nominal range a little (PAirMax GE_Lond_Urb reaches 2114 in 11 bits).
SENSOR_SLACK = 1.25
# Bit depths tried, smallest first, when the sensor's does not hold the data.
CANDIDATE_BITS = (10, 11, 12, 14, 16)
# Float negatives tolerated (and clipped to 0 by the model): a fraction of the pixels and a depth below zero.
NEGATIVE_FRACTION = 0.01
NEGATIVE_DEPTH = 0.05
# Values looked at to compute percentiles: a strided sample beyond this many keeps large scenes cheap.
SAMPLE_SIZE = 4_000_000

OVERRIDE = "give the full scale explicitly (full_scale=, or --full-scale on the command line)"


class RadiometryError(BadInput):
    """The images' radiometry cannot be decided safely (negative DN, values beyond 16 bits, no valid pixel)."""


@dataclass(frozen=True)
class FullScale:
    """The value that means 1.0 for a pair of images, and why.

    ``value``: the full scale, in the images' units. ``bits``: the bit depth it stands for (None for reflectance,
    a declared value that is not 2**b - 1, or floats). ``kind``: "declared", "uint8", "bit depth", "reflectance"
    or "float DN". ``assumed``: True when the value is a guess from the data (floats, integers of an unknown
    sensor, integers beyond the sensor's depth) that the user should be told about. ``reason``: one sentence
    saying what was decided from what, ending with how to override it when ``assumed``. ``warnings``: what the
    user should know whatever the decision (pixels that will saturate, negatives clipped)."""

    value: float
    reason: str
    bits: int | None = None
    kind: str = "declared"
    assumed: bool = False
    warnings: tuple[str, ...] = field(default=())

    def as_attrs(self) -> dict[str, Any]:
        """JSON-ready record (for a store's attributes, a summary)."""
        return {"value": self.value, "bits": self.bits, "kind": self.kind, "assumed": self.assumed,
                "reason": self.reason, "warnings": list(self.warnings)}


def bits_of(value: float) -> int | None:
    """The bit depth b with value == 2**b - 1, else None."""
    bits = math.log2(value + 1)
    return int(bits) if bits.is_integer() else None


def _size(image) -> int:
    return int(np.prod(image.shape))


def _valid_and_peak(images: Sequence[np.ndarray]) -> tuple[np.ndarray, float]:
    """(the finite values of all images, flattened: a strided sample beyond SAMPLE_SIZE values; the true maximum
    over every valid value, never sampled: one bright pixel decides a bit depth; NaN when there is none).

    One walk a band of rows at a time (``ssdiff_model.blocks``): the images may be lazy (a streamed scene), and
    the sample is exactly every ``stride``-th value of each image's C-order flattening, as a whole-array walk
    gives."""
    parts, peaks = [], []
    total = sum(_size(image) for image in images)
    stride = max(1, total // SAMPLE_SIZE)
    for image in images:
        if not _size(image):
            continue
        for offset, block in row_bands(image):
            flat = block.reshape(-1)[(-offset) % stride::stride]
            parts.append(flat[np.isfinite(flat)] if flat.dtype.kind == "f" else flat)
            if block.size and (block.dtype.kind != "f" or np.isfinite(block).any()):
                peaks.append(float(np.nanmax(block)))
    return (np.concatenate(parts) if parts else np.empty(0)), (max(peaks) if peaks else math.nan)


def _saturating(values: np.ndarray, full_scale: float) -> str | None:
    above = int(np.count_nonzero(values > full_scale))
    if not above:
        return None
    return (f"{above} of {values.size} sampled values ({100 * above / values.size:.3g} %) exceed the full scale "
            f"{full_scale:g} (maximum {float(values.max()):g}) and saturate at it in the output")


def _integer_scale(peak: float, sensor_default: float | None, what: str) -> tuple[float, int | None, bool, str]:
    """(value, bits, assumed, reason) for DN whose maximum is ``peak``."""
    if sensor_default is not None and peak <= SENSOR_SLACK * sensor_default:
        return (float(sensor_default), bits_of(sensor_default), False,
                f"{what} with maximum {peak:g}: the sensor's full scale {sensor_default:g}")
    for bits in CANDIDATE_BITS:
        if peak <= 2**bits - 1:
            beyond = (f", beyond the sensor's {sensor_default:g}" if sensor_default is not None else
                      ", sensor unknown")
            return (float(2**bits - 1), bits, True,
                    f"{what} with maximum {peak:g}{beyond}: taken as {bits}-bit DN, full scale {2**bits - 1}")
    raise RadiometryError(f"{what} reach {peak:g}, beyond 16-bit DN: cannot tell what the full scale is; "
                          f"{OVERRIDE}")


def infer_full_scale(pan: np.ndarray, ms: np.ndarray, *, dtype: Any, sensor_default: float | None = None,
                     declared: float | None = None) -> FullScale:
    """The full scale of a PAN and its MS, stored as ``dtype`` (the files' data type: the arrays themselves may be
    float32 copies with NaN for nodata; nodata must be NaN or left out, never a fill value that would pass for
    data). ``sensor_default``: the full scale of the sensor's nominal bit depth (2047.0 for an 11-bit sensor),
    None when unknown. ``declared``: a full scale the user gave, which wins. See the module docstring for the
    rules; RadiometryError (a ValueError) when no safe decision exists."""
    dtype = np.dtype(dtype)
    if dtype.kind not in "uif":
        raise RadiometryError(f"images of type {dtype} hold no numbers")
    images = [pan if is_lazy(pan) else np.asarray(pan), ms if is_lazy(ms) else np.asarray(ms)]
    values, peak = _valid_and_peak(images)
    if values.size == 0:
        raise RadiometryError("no valid pixel (every value is NaN or nodata): nothing to take a full scale from")

    if declared is not None:
        declared = float(declared)
        if not math.isfinite(declared) or declared <= 0:
            raise RadiometryError(f"the declared full scale must be a positive number, got {declared:g}")
        warning = _saturating(values, declared)
        return FullScale(declared, f"declared full scale {declared:g}", bits=bits_of(declared), kind="declared",
                         warnings=(warning,) if warning else ())

    low = float(values.min())
    if dtype.kind == "u" and dtype.itemsize == 1:
        return FullScale(255.0, "uint8 data: 8-bit DN, full scale 255", bits=8, kind="uint8")

    if dtype.kind in "ui":
        if low < 0:
            negative = int(np.count_nonzero(values < 0))
            raise RadiometryError(
                f"{dtype} data hold negative values ({negative} of {values.size} sampled pixels, down to "
                f"{low:g}): a DN cannot be negative, so these carry an offset or a fill value; declare the fill "
                f"value as nodata (--nodata), or remove the offset so that 0 means no signal")
        value, bits, assumed, reason = _integer_scale(peak, sensor_default, f"{dtype} DN")
        warning = _saturating(values, value)
        return FullScale(value, reason + (f"; {OVERRIDE}" if assumed else ""), bits=bits, kind="bit depth",
                         assumed=assumed, warnings=(warning,) if warning else ())

    # Floats: the kind comes from a robust high value, never from the one brightest pixel.
    high = float(np.percentile(values, ROBUST_PERCENTILE))
    peak = float(values.max())
    if high <= 0:
        raise RadiometryError(f"{dtype} data whose {ROBUST_PERCENTILE:g}th percentile is {high:g} (not above 0): "
                              f"no positive signal to take a full scale from; {OVERRIDE}")
    if high <= REFLECTANCE_LIMIT:
        value, bits, kind = 1.0, None, "reflectance"
        reason = (f"{dtype} data whose {ROBUST_PERCENTILE:g}th percentile is {high:.4g} (maximum {peak:.4g}): "
                  f"taken as reflectance, full scale 1.0")
    else:
        value, bits, _, reason = _integer_scale(peak, sensor_default, f"{dtype} data")
        reason = (f"{reason} ({ROBUST_PERCENTILE:g}th percentile {high:.4g}, above the {REFLECTANCE_LIMIT:g} of "
                  f"reflectance)")
        kind = "float DN"
    warnings = [w for w in (_saturating(values, value),) if w]
    if low < 0:
        negative = int(np.count_nonzero(values < 0))
        if negative > NEGATIVE_FRACTION * values.size or low < -NEGATIVE_DEPTH * value:
            raise RadiometryError(
                f"{dtype} data hold negative values ({negative} of {values.size} sampled pixels, down to {low:.4g}, "
                f"full scale {value:g}): more than the slight undershoot of atmospheric correction; remove the "
                f"offset so that 0 means no signal, or declare the fill value as nodata (--nodata)")
        warnings.append(f"{negative} of {values.size} sampled values are slightly negative (down to {low:.4g}): "
                        f"the output is clipped at 0")
    return FullScale(value, f"{reason}; {OVERRIDE}", bits=bits, kind=kind, assumed=True, warnings=tuple(warnings))


__all__ = ["FullScale", "RadiometryError", "infer_full_scale", "bits_of", "ROBUST_PERCENTILE", "REFLECTANCE_LIMIT"]
