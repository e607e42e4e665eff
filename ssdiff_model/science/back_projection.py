"""Iterative back-projection of a fused image onto its MS: Wald's consistency property, enforced.

A fused image degraded as the sensor degrades it (its MS MTF, then decimation by the ratio) should give back the
MS it was made from (Wald et al. 1997). A network's output does so only approximately. Back-projection (Irani and
Peleg 1991; the range-space step of DDNM-style diffusion restoration) adds the upsampled error, ``f + up(ms -
down(f))``, a few times: the fused image's low frequencies move to the MS's while the details the network added
from the PAN stay. The operators are the toolbox's (its MTF filters and its interpolator), so with the sensor's
own gains the result is consistent in the sense Wald's protocol scores.

The error is padded symmetrically before upsampling: the toolbox's interpolator wraps around at the borders, which
on a tile would carry one edge's error to the opposite one (the pipeline back-projects each tile, halo included,
and keeps its core; the halo absorbs what is left of the edges).
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ssdiff_model.errors import BadInput
from ssdiff_model.science.imresize import imresize
from ssdiff_model.science.resample import MTF_KERNEL_SIZE, mtf_kernel, upsample_ms, upsampling_method
from ssdiff_model.science.sensors import get_sensor, mtf_sensor

__all__ = ["DEGRADATIONS", "ERROR_PAD", "back_project"]

# How an MS can relate to the scene at the PAN's resolution: the sensor's MTF then decimation (a sensor's own MS, and
# Wald's protocol), or MATLAB's bicubic imresize (PanCollection's examples).
DEGRADATIONS = ("mtf", "bicubic")

ERROR_PAD = 8   # MS pixels of symmetric padding around the error before it is upsampled (the 23-tap reach)


def back_project(fused: np.ndarray, ms_lr: np.ndarray, ratio: int, sensor: str | None, iterations: int,
                 method: str | None = None, degradation: str = "mtf") -> np.ndarray:
    """``fused`` made consistent with ``ms_lr`` by ``iterations`` steps of ``f <- f + up(ms_lr - down(f))``.

    Args:
        fused: ``(B, H, W)`` fused image.
        ms_lr: ``(B, H / ratio, W / ratio)`` MS in the same units.
        ratio: PAN / MS resolution ratio.
        sensor: the sensor whose MS MTF degrades (``mtf_sensor``: the generic gains for one the toolbox does not
            know, or None).
        iterations: back-projection steps (0 returns ``fused`` unchanged).
        method: the upsampler (``upsample_ms``; None: "interp23tap" for a power of 2, else "bicubic").
        degradation: how the MS was made from the scene (``DEGRADATIONS``), which ``down`` is: the sensor's MTF and
            decimation, or MATLAB's bicubic imresize. Projecting with another degradation than the MS's own moves
            the image away from the scene (README, "Back-projection onto the MS").

    Returns:
        ``(B, H, W)`` float64.
    """
    fused, ms_lr = np.asarray(fused, dtype=np.float64), np.asarray(ms_lr, dtype=np.float64)
    if isinstance(iterations, bool) or not isinstance(iterations, (int, np.integer)) or iterations < 0:
        raise BadInput(f"back-projection iterations must be an integer >= 0, got {iterations!r}")
    if degradation not in DEGRADATIONS:
        raise BadInput(f"unknown MS degradation {degradation!r}; expected one of {DEGRADATIONS}")
    if fused.ndim != 3 or ms_lr.shape != (fused.shape[0], fused.shape[1] // ratio, fused.shape[2] // ratio) or (
            fused.shape[1] % ratio or fused.shape[2] % ratio):
        raise BadInput(f"back-projection needs fused (B, H, W) and MS (B, H/{ratio}, W/{ratio}); got {fused.shape} "
                       f"and {ms_lr.shape}")
    if not iterations:
        return fused
    method = method or upsampling_method(ratio)
    if degradation == "bicubic":
        def degrade(image):
            return imresize(image, 1 / ratio, method="bicubic")
    else:
        kernels = _mtf_kernels(mtf_sensor(sensor, fused.shape[0]), fused.shape[0], ratio)

        def degrade(image):
            return _degrade(image, kernels, ratio)
    pad = ((0, 0), (ERROR_PAD, ERROR_PAD), (ERROR_PAD, ERROR_PAD))
    edge = ERROR_PAD * ratio
    for _ in range(iterations):
        error = np.pad(ms_lr - degrade(fused), pad, mode="symmetric")
        fused = fused + upsample_ms(error, ratio, method)[:, edge:-edge, edge:-edge]
    return fused


@lru_cache(maxsize=32)
def _mtf_kernels(sensor: str, bands: int, ratio: int) -> np.ndarray:
    """The sensor's MTF filter of every band, built once per (sensor, bands, ratio): the pipeline back-projects every
    tile of a scene with the same ones (read-only, as the cache shares them)."""
    kernels = np.stack([mtf_kernel(gain, ratio) for gain in get_sensor(sensor).band_gains(bands)])
    kernels.flags.writeable = False
    return kernels


def _degrade(image: np.ndarray, kernels: np.ndarray, ratio: int) -> np.ndarray:
    """``decimate(mtf_filter(image))`` computed at the kept pixels only (a sixteenth of them at ratio 4): the
    MTF.m filters ('replicate' edges) evaluated where ``decimate`` samples."""
    half = MTF_KERNEL_SIZE // 2
    padded = np.pad(image, ((0, 0), (half, half), (half, half)), mode="edge")
    windows = sliding_window_view(padded, kernels.shape[1:], axis=(1, 2))[:, ratio // 2::ratio, ratio // 2::ratio]
    return np.einsum("bijkl,bkl->bij", windows, kernels)
