"""PAN equalization: the PAN scaled to the MS intensity of its own scene before the network sees it.

How much PAN contrast a scene has next to its MS depends on the sensor, the processing and the land cover: over the
4-band training scenes the PAN's standard deviation is 1.0 to 2.5 times the MS intensity's. A network fed raw DN
learns one average injection gain and over- or under-injects on scenes away from it. The classical methods remove
this by equalizing the PAN to the MS (the toolbox's ``(P - mean(P_LP)) * std(I) / std(P_LP) + mean(I)``); a
checkpoint trained with ``pan_equalization`` does the same, with the statistics of the whole scene so every tile of
a mosaic gets the same transform (statistics per tile would show as seams).

The statistics are taken at the MS scale: ``P_LP`` is the PAN averaged over ratio x ratio blocks, ``I`` the band
mean of the MS. NaN (nodata) pixels are left out. A checkpoint records whether it equalizes; the store of a scene
records its equalization (``tiling.stores``), and training stores one per example (``infra.training_store``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class PanEqualization:
    """``gain * pan + offset``, in DN."""
    gain: float
    offset: float

    def apply(self, pan: np.ndarray) -> np.ndarray:
        return pan * np.float32(self.gain) + np.float32(self.offset)

    def as_attrs(self) -> dict[str, float]:
        return {"gain": float(self.gain), "offset": float(self.offset)}

    @classmethod
    def from_attrs(cls, attrs: dict[str, Any]) -> "PanEqualization":
        return cls(gain=float(attrs["gain"]), offset=float(attrs["offset"]))


def pan_equalization(pan: np.ndarray, ms_lr: np.ndarray, ratio: int) -> PanEqualization:
    """The equalization of a scene from its PAN (H, W) and MS (B, H/r, W/r) in DN: afterwards the PAN's ratio x
    ratio block means have the mean and standard deviation of the MS intensity. A flat or empty PAN (no contrast
    to scale) gets gain 1 and only the offset; NaN pixels are left out of both statistics."""
    # float64 sums without a float64 copy of the scene: ingest already holds it in memory once or twice
    pan, ms_lr = np.asarray(pan), np.asarray(ms_lr)
    rows, cols = pan.shape[0] // ratio, pan.shape[1] // ratio
    pan_lp = pan[:rows * ratio, :cols * ratio].reshape(rows, ratio, cols, ratio).mean(axis=(1, 3), dtype=np.float64)
    intensity = ms_lr.mean(axis=0, dtype=np.float64)[:rows, :cols]
    valid = np.isfinite(pan_lp) & np.isfinite(intensity)
    if not valid.any():
        return PanEqualization(gain=1.0, offset=0.0)
    pan_lp, intensity = pan_lp[valid], intensity[valid]
    spread = pan_lp.std()
    gain = float(intensity.std() / spread) if spread > 0 else 1.0
    return PanEqualization(gain=gain, offset=float(intensity.mean() - gain * pan_lp.mean()))
