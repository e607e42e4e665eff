"""MATLAB-compatible `imresize` (bicubic or nearest, with MATLAB's antialiasing).

The pansharpening toolbox degrades images with MATLAB's `imresize` (for example the PAN in D_s.m), and its figures
depend on MATLAB's exact weights, which differ from scipy/PIL/OpenCV resampling. This module reproduces the algorithm
of MATLAB's imresize.m (its `contributions` function): for every output sample, the weights of the interpolation
kernel (stretched by 1/scale when antialiasing a reduction) at the input samples it covers, normalised to sum to one,
with out-of-range samples mirrored symmetrically (MATLAB's `aux = [1:in, in:-1:1]`). The resize is separable: rows
first, then columns (MATLAB's order when both dimensions share one scale).
"""
from __future__ import annotations

import math

import numpy as np
import scipy.sparse

from ssdiff_model.errors import BadInput

__all__ = ["imresize", "resize_matrix"]

_METHODS = ("bicubic", "nearest")


def _cubic(x: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution kernel with a = -0.5 (imresize.m's `cubic`)."""
    ax = np.abs(x)
    ax2, ax3 = ax**2, ax**3
    return (1.5 * ax3 - 2.5 * ax2 + 1) * (ax <= 1) + (-0.5 * ax3 + 2.5 * ax2 - 4 * ax + 2) * ((ax > 1) & (ax <= 2))


def _box(x: np.ndarray) -> np.ndarray:
    """imresize.m's `box`: half-open so that a sample half-way between two pixels takes exactly one of them."""
    return ((x >= -0.5) & (x < 0.5)).astype(np.float64)


_KERNELS = {"bicubic": (_cubic, 4.0), "nearest": (_box, 1.0)}


def resize_matrix(in_length: int, out_length: int, scale: float, method: str,
                  antialias: bool) -> scipy.sparse.csr_matrix:
    """The (out_length, in_length) matrix of imresize.m's `contributions` along one dimension."""
    kernel, kernel_width = _KERNELS[method]
    if scale < 1 and antialias:
        # A reduction with antialiasing stretches the kernel: it becomes a low-pass filter at the new Nyquist.
        def weight_of(x):
            return scale * kernel(scale * x)

        kernel_width = kernel_width / scale
    else:
        weight_of = kernel
    # Output sample u (1-based, as in MATLAB) sits at input coordinate x in the input's 1-based pixel grid.
    u = np.arange(1, out_length + 1, dtype=np.float64)
    x = u / scale + 0.5 * (1 - 1 / scale)
    left = np.floor(x - kernel_width / 2)
    taps = int(math.ceil(kernel_width)) + 2
    indices = left[:, None] + np.arange(taps)[None, :]
    weights = weight_of(x[:, None] - indices)
    weights = weights / weights.sum(axis=1, keepdims=True)
    # Symmetric mirroring of out-of-range samples: 1..n, n..1, repeated (imresize.m's `aux`).
    mirrored = np.concatenate([np.arange(in_length), np.arange(in_length)[::-1]])
    columns = mirrored[np.mod(indices.astype(np.int64) - 1, 2 * in_length)]
    rows = np.repeat(np.arange(out_length), taps)
    # Mirrored taps landing on one input sample add up (duplicates are summed by the sparse constructor).
    return scipy.sparse.csr_matrix((weights.ravel(), (rows, columns.ravel())), shape=(out_length, in_length))


def imresize(image: np.ndarray, scale: float, method: str = "bicubic", antialias: bool | None = None) -> np.ndarray:
    """Resize `image` (H, W) or (B, H, W) by `scale` exactly as MATLAB's `imresize(image, scale, method)`.

    The output has ceil(H * scale) x ceil(W * scale) pixels (MATLAB's rule). `antialias` left as None takes MATLAB's
    default for the method: on for "bicubic", off for "nearest" (so `imresize(x, 1/4, method="nearest")` decimates as
    the toolbox's resize_images.m does). Returns float64.
    """
    if method not in _METHODS:
        raise BadInput(f"method must be one of {_METHODS}, got {method!r}")
    if not (np.isscalar(scale) and np.isfinite(scale) and scale > 0):
        raise BadInput(f"scale must be a positive finite number, got {scale!r}")
    image = np.asarray(image, dtype=np.float64)
    if image.ndim not in (2, 3):
        raise BadInput(f"image must be (H, W) or (B, H, W), got shape {image.shape}")
    if antialias is None:
        antialias = method == "bicubic"
    scale = float(scale)
    height, width = image.shape[-2:]
    out_height, out_width = math.ceil(height * scale), math.ceil(width * scale)
    if min(height, width, out_height, out_width) < 1:
        raise BadInput(f"image of shape {image.shape} resized by {scale} would have an empty dimension")
    rows = resize_matrix(height, out_height, scale, method, antialias)
    columns = resize_matrix(width, out_width, scale, method, antialias)
    bands = image.reshape(-1, height, width)
    resized = np.stack([(columns @ (rows @ band).T).T for band in bands])
    return resized.reshape(image.shape[:-2] + (out_height, out_width))
