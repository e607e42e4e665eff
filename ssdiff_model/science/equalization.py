"""PAN equalization: the PAN scaled to the MS intensity of its own scene before the network sees it.

How much PAN contrast a scene has next to its MS depends on the sensor, the processing and the land cover: over the
4-band training scenes the PAN's standard deviation is 1.0 to 2.5 times the MS intensity's. A network fed raw DN
learns one average injection gain and over- or under-injects on scenes away from it. The classical methods remove
this by equalizing the PAN to the MS (the toolbox's ``(P - mean(P_LP)) * std(I) / std(P_LP) + mean(I)``); a
checkpoint trained with ``pan_equalization`` does the same, with the statistics of the whole scene so every tile of
a mosaic gets the same transform (statistics per tile would show as seams).

The statistics are taken at the MS scale: ``P_LP`` is the PAN averaged over ratio x ratio blocks, ``I`` the band
mean of the MS. NaN (nodata) pixels are left out. A checkpoint records whether it equalizes; the store of a scene
records its equalization (``tiling.stores``), and training stores one per example (``tiling.stores.training``).

Band equalization goes one step further, for checkpoints trained with it. How much of the PAN's detail belongs in
each MS band (its injection gain) differs from scene to scene. The slope of each band's detail on the equalized
PAN's detail one scale down, at the MS scale (what a Gaussian high-pass leaves of the MS and of the PAN's block
means), follows the true gains band by band, where the slope of the whole signal, dominated by land cover, does
not (the figures, measured by ``bench/band_gains.py``, are in the README's "Training" section). So each band's
contrast is divided by its detail slope about the band's mean before the network sees it, and the network's output
is scaled back: the network learns how much detail a scene takes, the same for all its bands, where it otherwise
learns the training scenes' average per band and misses a scene whose bands relate to its PAN otherwise.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.ndimage import gaussian_filter

from ssdiff_model.blocks import band_rows, chunk_rows, is_lazy, materialize
from ssdiff_model.errors import BadInput

__all__ = ["DETAIL_SIGMA_MS_PX", "PanEqualization", "equalize_bands", "pan_equalization", "restore_bands"]


def equalize_bands(ms, gains, means):
    """Each band's contrast divided by its gain about its mean; `gains` and `means` broadcast against `ms` (one per
    band, or one per band of each example). NumPy arrays or torch tensors."""
    return means + (ms - means) / gains


def restore_bands(ms, gains, means):
    """The inverse of ``equalize_bands``: what a band-equalizing network makes, back in the scene's units."""
    return means + (ms - means) * gains


# Band gains regress detail on detail: what is left of the MS scale after a Gaussian low-pass of this width.
DETAIL_SIGMA_MS_PX = 1.0
# A band whose slope on the PAN is near zero (or negative) has no detail to learn from the PAN: its contrast is
# scaled by at most 1 / BAND_GAIN_MIN, and never shrunk by more than BAND_GAIN_MAX.
BAND_GAIN_MIN, BAND_GAIN_MAX = 0.2, 5.0


@dataclass(frozen=True)
class PanEqualization:
    """A scene's equalization, in DN: the PAN becomes ``gain * pan + offset``; and, for models trained with band
    equalization, MS band k becomes ``band_means[k] + (ms_k - band_means[k]) / band_gains[k]`` (None: not known,
    a scene store ingested before band equalization existed)."""
    gain: float
    offset: float
    band_gains: tuple[float, ...] | None = None
    band_means: tuple[float, ...] | None = None

    def apply(self, pan: np.ndarray) -> np.ndarray:
        return pan * np.float32(self.gain) + np.float32(self.offset)

    def _band_terms(self) -> tuple[np.ndarray, np.ndarray]:
        if self.band_gains is None or self.band_means is None:
            raise BadInput("this equalization has no band gains (computed before band equalization existed)")
        # (B, 1, 1): broadcasts over the bands of (..., B, H, W)
        return (np.asarray(self.band_gains, np.float32)[:, None, None],
                np.asarray(self.band_means, np.float32)[:, None, None])

    def apply_bands(self, ms: np.ndarray) -> np.ndarray:
        """MS (..., B, H, W) in DN -> each band's contrast divided by its gain about its mean."""
        return equalize_bands(ms, *self._band_terms())

    def invert_bands(self, ms: np.ndarray) -> np.ndarray:
        """The inverse of ``apply_bands``: what the network makes back into DN."""
        return restore_bands(ms, *self._band_terms())

    def as_attrs(self) -> dict[str, Any]:
        attrs: dict[str, Any] = {"gain": float(self.gain), "offset": float(self.offset)}
        if self.band_gains is not None:
            attrs.update(band_gains=[float(g) for g in self.band_gains], band_means=[float(m) for m in self.band_means])
        return attrs

    @classmethod
    def from_attrs(cls, attrs: dict[str, Any]) -> "PanEqualization":
        bands = {k: tuple(float(v) for v in attrs[k]) for k in ("band_gains", "band_means") if attrs.get(k)}
        return cls(gain=float(attrs["gain"]), offset=float(attrs["offset"]), **bands)


# Rows of the Gaussian's kernel either side of a pixel: scipy's radius for its default truncation (4 sigma).
_DETAIL_HALO = int(4.0 * DETAIL_SIGMA_MS_PX + 0.5)


def _detail(image: np.ndarray, valid: np.ndarray, fill: float) -> np.ndarray:
    """`image` (at the MS scale) less a Gaussian low-pass of it, nodata filled with `fill` (the valid mean)."""
    filled = np.where(valid, image, fill)
    return filled - gaussian_filter(filled, DETAIL_SIGMA_MS_PX, mode="reflect")


def _ms_scale_bands(pan, ms_lr, ratio: int, rows: int, cols: int, step: int):
    """(first row, PAN block means, MS intensity, MS bands) of each band of `step` MS-scale rows, float64; the PAN
    and the MS are read a band of rows at a time (`ssdiff_model.blocks`), so they may be lazy and larger than
    memory."""
    for y0 in range(0, rows, step):
        y1 = min(rows, y0 + step)
        pan_block = materialize(pan[y0 * ratio:y1 * ratio, :cols * ratio])
        pan_lp = pan_block.reshape(y1 - y0, ratio, cols, ratio).mean(axis=(1, 3), dtype=np.float64)
        bands = materialize(ms_lr[:, y0:y1, :cols]).astype(np.float64)
        yield y0, pan_lp, bands.mean(axis=0), bands


class _Moments:
    """Count, mean and sum of squared deviations of values seen a block at a time (Chan et al.'s pairwise
    update: no cancellation, whatever the DN level)."""

    def __init__(self):
        self.n, self.mean, self.m2 = 0, 0.0, 0.0

    def add(self, values: np.ndarray) -> None:
        if not values.size:
            return
        mean = float(values.mean())
        m2 = float(((values - mean) ** 2).sum())
        n = self.n + values.size
        delta = mean - self.mean
        self.mean += delta * values.size / n
        self.m2 += m2 + delta * delta * self.n * values.size / n
        self.n = n

    @property
    def std(self) -> float:
        return (self.m2 / self.n) ** 0.5 if self.n else 0.0


def pan_equalization(pan: np.ndarray, ms_lr: np.ndarray, ratio: int, rows_per_band: int | None = None
                     ) -> PanEqualization:
    """The equalization of a scene from its PAN (H, W) and MS (B, H/r, W/r) in DN: afterwards the PAN's ratio x
    ratio block means have the mean and standard deviation of the MS intensity, and each MS band's detail regressed
    on the detail of those equalized block means is its band gain (clipped to [BAND_GAIN_MIN, BAND_GAIN_MAX]). A flat
    or empty PAN (no contrast to scale) gets gain 1, only the offset, and band gains 1; NaN pixels are left out of
    every statistic.

    Streamed: two passes over bands of rows at the MS scale (moments, then the detail regression, whose Gaussian
    needs a few rows beyond each band: kept from the band before and taken from the band after), so the PAN and
    MS may be lazy arrays larger than memory (a streamed ingest). The result equals a whole-array computation to
    floating-point rounding (sums are taken in another order).

    Args:
        pan: the PAN (H, W), NumPy or lazy (dask).
        ms_lr: the MS (B, H/r, W/r), NumPy or lazy.
        ratio: the PAN / MS ratio.
        rows_per_band: MS-scale rows read at a time (default: a lazy PAN's chunks, else about
            ``ssdiff_model.blocks.BAND_BYTES`` of PAN).

    Returns:
        The scene's PanEqualization.
    """
    rows, cols = pan.shape[0] // ratio, pan.shape[1] // ratio
    bands = ms_lr.shape[0]
    # A lazy PAN is walked by its own chunks (each read once per pass), an in-memory one by bands of BAND_BYTES.
    default = chunk_rows(pan) if is_lazy(pan) else band_rows(pan.shape[1], multiple=ratio)
    step = max(_DETAIL_HALO, rows_per_band or default // ratio)
    pan_moments, intensity_moments = _Moments(), _Moments()
    band_sums = np.zeros(bands)
    for _, pan_lp, intensity, ms_bands in _ms_scale_bands(pan, ms_lr, ratio, rows, cols, step):
        valid = np.isfinite(pan_lp) & np.isfinite(intensity)
        pan_moments.add(pan_lp[valid])
        intensity_moments.add(intensity[valid])
        band_sums += ms_bands[:, valid].sum(axis=1)
    if not pan_moments.n:
        return PanEqualization(gain=1.0, offset=0.0, band_gains=(1.0,) * bands, band_means=(0.0,) * bands)
    spread = pan_moments.std
    gain = float(intensity_moments.std / spread) if spread > 0 else 1.0
    offset = float(intensity_moments.mean - gain * pan_moments.mean)
    means = band_sums / pan_moments.n
    # The fill of nodata before the Gaussian: the valid mean (of the equalized PAN: the intensity's mean).
    pan_fill = gain * pan_moments.mean + offset
    variance, covariances = _detail_products(pan, ms_lr, ratio, rows, cols, step, gain, offset, pan_fill, means)
    slopes = covariances / variance if variance > 0 else np.ones(bands)
    band_gains = np.clip(slopes, BAND_GAIN_MIN, BAND_GAIN_MAX)
    return PanEqualization(gain=gain, offset=offset, band_gains=tuple(float(g) for g in band_gains),
                           band_means=tuple(float(m) for m in means))


def _detail_products(pan, ms_lr, ratio, rows, cols, step, gain, offset, pan_fill, means
                     ) -> tuple[float, np.ndarray]:
    """(sum of the equalized PAN detail squared, each band's detail times it) over the valid pixels, a band of rows
    at a time. A band's Gaussian needs `_DETAIL_HALO` rows either side: the rows of the previous band are kept,
    and the last rows of each band wait for the next, so every row is read once and filtered exactly as in the
    whole image (the scene's own edges reflect, as scipy's mode="reflect" does on the whole)."""
    variance, covariances = 0.0, np.zeros(len(means))
    held_start, held = 0, None   # MS-scale rows kept from row held_start: (equalized PAN, bands, valid)
    done = 0                     # rows before this one are accounted for
    for y0, pan_lp, intensity, ms_bands in _ms_scale_bands(pan, ms_lr, ratio, rows, cols, step):
        new = (pan_lp * gain + offset, ms_bands, np.isfinite(pan_lp) & np.isfinite(intensity))
        held = new if held is None else tuple(np.concatenate((a, b), axis=-2) for a, b in zip(held, new))
        end = y0 + pan_lp.shape[0]
        limit = rows if end >= rows else end - _DETAIL_HALO   # rows whose kernel lies within what is held
        if limit <= done:
            continue
        first, last = max(0, done - _DETAIL_HALO), min(rows, limit + _DETAIL_HALO)   # rows to finish + halo
        equalized, ms_part, valid = (a[..., first - held_start:last - held_start, :] for a in held)
        core = (slice(done - first, limit - first), slice(None))
        keep = valid[core]
        pan_detail = _detail(equalized, valid, pan_fill)[core][keep]
        variance += float(pan_detail @ pan_detail)
        for k in range(len(means)):   # one band in float64 at a time
            covariances[k] += float(_detail(ms_part[k], valid, means[k])[core][keep] @ pan_detail)
        done = limit
        trim = max(0, done - _DETAIL_HALO) - held_start   # rows no later kernel reaches
        held, held_start = tuple(a[..., trim:, :] for a in held), held_start + trim
    return variance, covariances
