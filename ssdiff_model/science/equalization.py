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


def _detail(image: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """The valid pixels of `image` (at the MS scale) less a Gaussian low-pass of it (nodata filled with the mean)."""
    filled = np.where(valid, image, image[valid].mean())
    return (filled - gaussian_filter(filled, DETAIL_SIGMA_MS_PX, mode="reflect"))[valid]


def pan_equalization(pan: np.ndarray, ms_lr: np.ndarray, ratio: int) -> PanEqualization:
    """The equalization of a scene from its PAN (H, W) and MS (B, H/r, W/r) in DN: afterwards the PAN's ratio x
    ratio block means have the mean and standard deviation of the MS intensity, and each MS band's detail regressed
    on the detail of those equalized block means is its band gain (clipped to [BAND_GAIN_MIN, BAND_GAIN_MAX]). A flat
    or empty PAN (no
    contrast to scale) gets gain 1, only the offset, and band gains 1; NaN pixels are left out of every statistic."""
    # float64 sums without a float64 copy of the scene: ingest already holds it in memory once or twice
    pan, ms_lr = np.asarray(pan), np.asarray(ms_lr)
    rows, cols = pan.shape[0] // ratio, pan.shape[1] // ratio
    pan_lp = pan[:rows * ratio, :cols * ratio].reshape(rows, ratio, cols, ratio).mean(axis=(1, 3), dtype=np.float64)
    intensity = ms_lr.mean(axis=0, dtype=np.float64)[:rows, :cols]
    valid = np.isfinite(pan_lp) & np.isfinite(intensity)
    bands = ms_lr.shape[0]
    if not valid.any():
        return PanEqualization(gain=1.0, offset=0.0, band_gains=(1.0,) * bands, band_means=(0.0,) * bands)
    spread = pan_lp[valid].std()
    gain = float(intensity[valid].std() / spread) if spread > 0 else 1.0
    offset = float(intensity[valid].mean() - gain * pan_lp[valid].mean())
    pan_detail = _detail(pan_lp * gain + offset, valid)
    variance = float(pan_detail @ pan_detail)
    means, slopes = np.empty(bands), np.ones(bands)
    for k in range(bands):   # one band in float64 at a time
        band = ms_lr[k, :rows, :cols].astype(np.float64)
        means[k] = band[valid].mean()
        if variance > 0:
            slopes[k] = _detail(band, valid) @ pan_detail / variance
    band_gains = np.clip(slopes, BAND_GAIN_MIN, BAND_GAIN_MAX)
    return PanEqualization(gain=gain, offset=offset, band_gains=tuple(float(g) for g in band_gains),
                           band_means=tuple(float(m) for m in means))
