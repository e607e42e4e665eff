"""Wald's protocol: training and test examples with a reference, made from full-resolution pairs.

A full-resolution pair (PAN at H x W, MS at H/r x W/r) has no reference for the sharpened MS. Degrading both by the
ratio with the sensor's MTF-matched filters (`resample.wald_degrade`) gives a pair one scale down whose reference is
the original MS: the network learns to go from (PAN/r, MS/r) to MS, and is assumed to transfer to the next scale.
`cut_patches` then cuts the aligned training patches (64 x 64 PAN, 64/r x 64/r MS) the model trains on.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from ssdiff_model.data.geotiff import decimated_transform
from ssdiff_model.data.pair import PansharpeningPair
from ssdiff_model.errors import BadInput
from ssdiff_model.science.resample import check_pair, check_ratio, upsample_ms, wald_degrade

__all__ = ["Patches", "cut_patches", "reduced_resolution_example", "reduced_resolution_pair"]


def _crop_to_multiple(pair: PansharpeningPair) -> tuple[np.ndarray, np.ndarray]:
    """PAN and MS cropped (bottom and right) so that the MS is a multiple of the ratio: the degraded MS then has
    whole pixels. Landsat-8's 603-row MS loses its last row; sizes already divisible are untouched."""
    r = pair.ratio
    rows, cols = (n // r * r for n in pair.ms_lr.shape[1:])
    if min(rows, cols) == 0:
        raise BadInput(f"{', '.join(map(str, pair.source))}: MS {pair.ms_lr.shape[1:]} is smaller than the ratio "
                         f"{r}: too small for Wald's protocol")
    return pair.pan[: rows * r, : cols * r], pair.ms_lr[:, :rows, :cols]


def reduced_resolution_example(pair: PansharpeningPair) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(pan_lr (H/r, W/r), ms_lr_lr (B, H/r^2, W/r^2), reference (B, H/r, W/r) = the original MS), float32 DN.

    The sensor's MTF filters come from `pair.sensor` (the toolbox's generic 'none' gains when it is None). When the
    MS is not a multiple of r, its last rows / columns (and the matching PAN) are dropped first."""
    pan, reference = _crop_to_multiple(pair)
    pan_lr, ms_lr_lr = wald_degrade(pan, reference, pair.ratio, pair.sensor or "none")
    return pan_lr.astype(np.float32), ms_lr_lr.astype(np.float32), np.array(reference, dtype=np.float32)


def reduced_resolution_pair(pair: PansharpeningPair) -> PansharpeningPair:
    """`reduced_resolution_example` as a pair whose `gt` is the reference, with transforms one scale coarser."""
    pan_lr, ms_lr_lr, reference = reduced_resolution_example(pair)
    r = pair.ratio

    def coarser(transform):
        return None if transform is None else decimated_transform(transform, r)

    return dataclasses.replace(
        pair, pan=pan_lr, ms_lr=ms_lr_lr, gt=reference, lms=None, pan_transform=coarser(pair.pan_transform),
        ms_transform=coarser(pair.ms_transform),
        notes=(*pair.notes, f"Wald's protocol: PAN and MS degraded by {r} with the {pair.sensor or 'none'} MTF"))


@dataclass
class Patches:
    """Aligned patches: `pan` (N, s, s), `ms_lr` (N, B, s/r, s/r), `reference` and `lms` (N, B, s, s) or None,
    `origins` (N, 2) the (row, col) of each patch's top-left PAN pixel (multiples of r)."""

    pan: np.ndarray
    ms_lr: np.ndarray
    reference: np.ndarray | None
    lms: np.ndarray | None
    origins: np.ndarray

    def __len__(self) -> int:
        return self.pan.shape[0]


def _starts(length: int, size: int, stride: int) -> list[int]:
    """Patch origins along one axis: every `stride`, plus one flush with the far edge so the whole axis is covered."""
    starts = list(range(0, length - size + 1, stride))
    if starts[-1] != length - size:
        starts.append(length - size)
    return starts


def cut_patches(pan: np.ndarray, ms_lr: np.ndarray, reference: np.ndarray | None = None, size: int = 64,
                stride: int | None = None, lms_method: str | None = None) -> Patches:
    """Cut a pair (pan (H, W), ms_lr (B, H/r, W/r), optional reference (B, H, W)) into aligned patches.

    `stride` defaults to `size` (no overlap); `size` and `stride` must be multiples of r so every patch starts on an
    MS pixel boundary and its MS patch is exact. With `lms_method` ("interp23tap" or "bicubic") the MS is upsampled
    once over the whole image (no patch-border effects) and cut with the PAN."""
    pan, ms_lr = np.asarray(pan), np.asarray(ms_lr)
    if pan.ndim != 2 or ms_lr.ndim != 3:
        raise BadInput(f"pan must be (H, W) and ms_lr (B, h, w), got {pan.shape} and {ms_lr.shape}")
    ratio = check_ratio(pan.shape[0] // ms_lr.shape[1]) if ms_lr.shape[1] else 0
    check_pair(pan, ms_lr, ratio, "ms_lr")
    stride = size if stride is None else stride
    if size % ratio or stride % ratio or size <= 0 or stride <= 0:
        raise BadInput(f"patch size {size} and stride {stride} must be positive multiples of the ratio {ratio}")
    if min(pan.shape) < size:
        raise BadInput(f"image {pan.shape} is smaller than the patch size {size}")
    full_res = (ms_lr.shape[0], *pan.shape)
    if reference is not None and reference.shape != full_res:
        raise BadInput(f"reference has shape {reference.shape}, expected {full_res}")
    lms = upsample_ms(ms_lr, ratio, lms_method).astype(np.float32) if lms_method else None
    origins = np.array([(row, col) for row in _starts(pan.shape[0], size, stride)
                        for col in _starts(pan.shape[1], size, stride)])
    small = size // ratio

    def stack(image, window, scale=1):
        if image is None:
            return None
        return np.stack([image[..., r // scale: r // scale + window, c // scale: c // scale + window]
                         for r, c in origins]).astype(np.float32)

    return Patches(pan=stack(pan, size), ms_lr=stack(ms_lr, small, ratio), reference=stack(reference, size),
                   lms=stack(lms, size), origins=origins)
