"""Training examples as the network sees them: patches of a reduced-resolution pair in [0, 1], with the scene's
equalization, and that equalization applied.

One implementation for the training store (``tiling.stores.training`` writes these arrays) and for the adaptation
of a checkpoint to one scene (``ssdiff_model.inference.adaptation``), so that a scene is fed to a fine-tune exactly as
the
training store fed its base.

Arrays (n examples): ``pan`` (n, 1, s, s), ``ms`` (n, B, s/r, s/r), ``lms`` and ``hrms`` (n, B, s, s), all DN /
full scale clipped to [0, 1]; ``pan_gain``, ``pan_offset`` (n,) and ``band_gain``, ``band_mean`` (n, B): the
equalization (``ssdiff_model.science.equalization``) of the whole pair the patch comes from, in the same [0, 1] units.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ssdiff_model.science import equalization
from ssdiff_model.science.equalization import PanEqualization, pan_equalization
from ssdiff_model.science.wald import cut_patches

__all__ = ["equalization_arrays", "equalized", "lms_method", "normalised", "patch_examples"]


def lms_method(ratio: int) -> str:
    """The toolbox's 23-tap interpolator where it exists (powers of 2), bicubic otherwise."""
    return "interp23tap" if ratio & (ratio - 1) == 0 else "bicubic"


def normalised(image: np.ndarray, full_scale: float) -> np.ndarray:
    """DN / full scale as float32, clipped to [0, 1]."""
    return np.clip(np.asarray(image, dtype=np.float32) / np.float32(full_scale), 0.0, 1.0)


def equalization_arrays(equalizations: Sequence[PanEqualization], full_scale: float) -> dict[str, np.ndarray]:
    """One equalization per example as the four per-example arrays, in [0, 1] units."""
    return {"pan_gain": np.array([e.gain for e in equalizations], dtype=np.float32),
            "pan_offset": np.array([e.offset / full_scale for e in equalizations], dtype=np.float32),
            "band_gain": np.array([e.band_gains for e in equalizations], dtype=np.float32),
            "band_mean": np.array([e.band_means for e in equalizations], dtype=np.float32) / np.float32(full_scale)}


def patch_examples(pan: np.ndarray, ms_lr: np.ndarray, reference: np.ndarray, ratio: int, full_scale: float,
                   size: int = 64, stride: int | None = None) -> dict[str, np.ndarray]:
    """The examples of one reduced-resolution pair: pan (H, W), ms_lr (B, H/r, W/r) and its reference (B, H, W),
    in DN, cut into `size` patches every `stride` PAN pixels (``ssdiff_model.science.wald.cut_patches``).

    Raises:
        ValueError: the pair is smaller than one patch, or the sizes do not fit the ratio.
    """
    patches = cut_patches(pan, ms_lr, reference, size=size, stride=stride, lms_method=lms_method(ratio))
    return {"pan": normalised(patches.pan[:, None], full_scale), "ms": normalised(patches.ms_lr, full_scale),
            "lms": normalised(patches.lms, full_scale), "hrms": normalised(patches.reference, full_scale),
            **equalization_arrays([pan_equalization(pan, ms_lr, ratio)] * len(patches.pan), full_scale)}


def equalized(examples: dict[str, np.ndarray], pan: bool = False, bands: bool = False) -> dict[str, np.ndarray]:
    """The examples as a network trained with PAN (and band) equalization is fed them."""
    out = dict(examples)
    if pan:
        out["pan"] = out["pan"] * out["pan_gain"][:, None, None, None] + out["pan_offset"][:, None, None, None]
    if bands:
        gain, mean = out["band_gain"][:, :, None, None], out["band_mean"][:, :, None, None]
        for name in ("ms", "lms", "hrms"):
            out[name] = equalization.equalize_bands(out[name], gain, mean)
    return out
