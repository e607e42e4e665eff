"""Classical pansharpening baselines, reproducing the community's MATLAB toolbox (Vivone et al. 2020, DLPan-Toolbox).

Every method takes `pan` (H, W) and the original low-resolution `ms_lr` (B, h, w), H = h * ratio, in digital
numbers, upsamples the MS with interp23tap as the toolbox's demos do, and returns the fused image (B, H, W) float64.
"""
from __future__ import annotations

import numpy as np
from scipy.optimize import nnls

from ssdiff_model.errors import BadInput
from ssdiff_model.science.imresize import imresize
from ssdiff_model.science.resample import (
    MTF_KERNEL_SIZE,
    check_pair,
    check_ratio,
    decimate,
    filter_replicate,
    gaussian_fir,
    interp23tap,
    mtf_filter,
    mtf_kernel,
    pan_mtf_filter,
)
from ssdiff_model.science.sensors import Sensor, get_sensor

__all__ = ["METHODS", "bdsd_pc", "bt_h", "exp", "mtf_glp_fs"]

# BroveyRegHazeMin.m: haze of a 4-band (B, G, R, NIR) image = these fractions of each band's 1st percentile.
_HAZE_FRACTIONS_4BANDS = np.array([0.95, 0.45, 0.40, 0.05])
_HAZE_PERCENTILE = 1
# LPfilterGauss.m: the fixed Gaussian low-pass that BT-H uses on the PAN.
_LP_GAUSS_GNYQ = 0.3


def _prepare(pan, ms_lr, ratio) -> tuple[np.ndarray, np.ndarray, int]:
    ratio = check_ratio(ratio)
    pan = np.asarray(pan, dtype=np.float64)
    ms_lr = np.asarray(ms_lr, dtype=np.float64)
    if pan.ndim != 2:
        raise BadInput(f"pan must be (H, W), got shape {pan.shape}")
    if ms_lr.ndim != 3:
        raise BadInput(f"ms_lr must be (B, h, w), got shape {ms_lr.shape}")
    check_pair(pan, ms_lr, ratio, ms_name="ms_lr")
    return pan, ms_lr, ratio


def exp(pan, ms_lr, ratio: int, sensor: str | Sensor) -> np.ndarray:
    """EXP: the MS upsampled with interp23tap, no PAN detail (the toolbox's reference 'expanded' image)."""
    _, ms_lr, ratio = _prepare(pan, ms_lr, ratio)
    return interp23tap(ms_lr, ratio)


def bt_h(pan, ms_lr, ratio: int, sensor: str | Sensor) -> np.ndarray:
    """BT-H, Brovey with haze correction (BroveyRegHazeMin.m). The sensor is not used by the method."""
    pan, ms_lr, ratio = _prepare(pan, ms_lr, ratio)
    ms = interp23tap(ms_lr, ratio)
    bands = ms.shape[0]
    if bands == 4:
        first_percentiles = np.percentile(ms.reshape(4, -1), _HAZE_PERCENTILE, axis=1, method="hazen")  # = prctile
        haze = _HAZE_FRACTIONS_4BANDS * first_percentiles
    else:
        haze = ms.reshape(bands, -1).min(axis=1)
    haze = haze[:, None, None]
    # LPfilterGauss.m designs its Gaussian with N (not N-1 as genMTF.m does) in the width formula.
    sigma = np.sqrt((MTF_KERNEL_SIZE / ratio / 2) ** 2 / (-2 * np.log(_LP_GAUSS_GNYQ)))
    pan_lp = filter_replicate(pan, gaussian_fir(sigma))
    # Intensity: the hazy MS bands regressed on the low-passed PAN (estimation_alpha.m, global, no offset);
    # the regression uses the raw MS, the intensity the haze-free MS, as the .m does.
    weights = np.linalg.lstsq(ms.reshape(bands, -1).T, pan_lp.ravel(), rcond=None)[0]
    intensity = np.tensordot(weights, ms - haze, axes=1)
    # PAN equalised to the intensity's mean and spread, with the statistics of its low-passed version.
    pan_eq = (pan - pan_lp.mean()) * (intensity.std(ddof=1) / pan_lp.std(ddof=1)) + intensity.mean()
    dehazed = np.maximum(ms - haze, 0)
    return dehazed * (pan_eq / (intensity + np.finfo(float).eps)) + haze


def mtf_glp_fs(pan, ms_lr, ratio: int, sensor: str | Sensor) -> np.ndarray:
    """MTF-GLP-FS (MTF_GLP_FS.m): PAN details from the MTF-matched GLP, full-scale regression injection gains."""
    pan, ms_lr, ratio = _prepare(pan, ms_lr, ratio)
    ms = interp23tap(ms_lr, ratio)
    gains = get_sensor(sensor).band_gains(ms.shape[0])
    pan_centred = pan - pan.mean()
    fused = np.empty_like(ms)
    for band, (ms_band, gain) in enumerate(zip(ms, gains)):
        # Low-resolution PAN for this band: its MS MTF, decimation, back up with interp23tap.
        pan_lp = filter_replicate(pan, mtf_kernel(gain, ratio))
        pan_lp = interp23tap(decimate(pan_lp, ratio)[None], ratio)[0]
        # gFS = cov(MS_b, PAN) / cov(PAN_LP, PAN): the normalisations of the two covariances cancel.
        injection = np.sum((ms_band - ms_band.mean()) * pan_centred) / np.sum((pan_lp - pan_lp.mean()) * pan_centred)
        fused[band] = ms_band + injection * (pan - pan_lp)
    return fused


def bdsd_pc(pan, ms_lr, ratio: int, sensor: str | Sensor) -> np.ndarray:
    """BDSD-PC (BDSD_PC.m): band-dependent spatial detail with physical constraints.

    Per band b the fused image is MS_b + g0 * PAN + sum_k g_k * MS_k, with g fitted at reduced scale (the MS
    reduced by bicubic imresize is the target, the MTF-degraded versions the inputs) under g0 >= 0 and g_k <= 0,
    as lsqlin solves it. The sign flip D = diag(1, -1, ..., -1) turns that into non-negative least squares.
    """
    pan, ms_lr, ratio = _prepare(pan, ms_lr, ratio)
    ms = interp23tap(ms_lr, ratio)
    bands = ms.shape[0]
    ms_reduced = imresize(ms, 1 / ratio, method="bicubic")
    ms_reduced_lp = mtf_filter(ms_reduced, sensor, ratio)
    pan_reduced = decimate(pan_mtf_filter(pan, sensor, ratio), ratio)
    design = np.column_stack([pan_reduced.ravel(), ms_reduced_lp.reshape(bands, -1).T])
    signs = np.r_[1.0, -np.ones(bands)]
    # One QR for all bands: min ||design @ D x - y|| = min ||R x - Q^T y|| over x >= 0.
    q, r = np.linalg.qr(design * signs)
    full_inputs = np.concatenate([pan[None], ms]).reshape(bands + 1, -1)
    fused = np.empty_like(ms)
    for band in range(bands):
        target = (ms_reduced[band] - ms_reduced_lp[band]).ravel()
        coefficients = signs * nnls(r, q.T @ target)[0]
        fused[band] = ms[band] + (coefficients @ full_inputs).reshape(ms.shape[1:])
    return fused


METHODS = {"EXP": exp, "BT-H": bt_h, "MTF-GLP-FS": mtf_glp_fs, "BDSD-PC": bdsd_pc}
