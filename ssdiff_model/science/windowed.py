"""The quality indexes of metrics.py computed window by window, so memory is bounded by the window, not the scene.

Each index is a sum over pixels or blocks divided by a count, so windows add their sums and the figure is the
whole-image one up to the order of the additions:

- SAM: angles of the valid pixels; ERGAS: per-band squared errors and reference sums;
- SCC: sums of products of Sobel magnitudes, each window read with a 1-pixel frame (zeros beyond the image's
  inner part, as SCC.m's imfilter pads);
- Q: the UIQI of every 32x32 sliding window, a window of positions read with 31 more rows and columns;
- Q2n, D_lambda, D_s: values of distinct 32x32 blocks; windows lie on the block grid;
- the filters the full-resolution indexes apply (MTF filter, bicubic reduction, interp23tap) read a halo around
  each window, filled as the whole-image filter extends its image (replicated edges, mirrored edges, wrapped
  around), so a window's filtered pixels are the whole image's.

One difference: Q centres each window's sums on the window's own rounded mean (metrics.q_map's offset) instead of
the image's; it changes only rounding (well under 1e-9 relative).

Images are read through readers: ``read(rows, cols)`` takes two int64 index arrays (sorted, unique) and returns
``(B, len(rows), len(cols))`` (or ``(len(rows), len(cols))`` for PAN) in digital numbers. This module reads no
files itself (flows.evaluate gives it Zarr and GeoTIFF readers).
"""
from __future__ import annotations

import math
from typing import Callable, Iterator

import numpy as np

from ssdiff_model.errors import BadInput
from ssdiff_model.science.imresize import imresize
from ssdiff_model.science.metrics import block_uqi, q2n_blocks, q_map, sam_angles, sobel_magnitude
from ssdiff_model.science.resample import (
    MTF_KERNEL_SIZE,
    check_ratio,
    decimate,
    interp23tap,
    mtf_filter,
    pan_mtf_filter,
)

__all__ = ["BLOCK", "LOW_RES_HALO", "WINDOW", "Incomplete", "Reader", "full_resolution_windowed",
           "reduced_resolution_windowed", "spans", "wald_degrade_blocks", "wald_degrade_windowed"]

Reader = Callable[[np.ndarray, np.ndarray], np.ndarray]

WINDOW = 512        # window side in PAN pixels (rounded down to the block grid): a few tens of MB per window
BLOCK = 32          # the toolbox's block (Q2n, D_s) and sliding-window (Q) size
Q_WINDOW = 32       # Q.m always slides 32x32 windows
# Halo in MS pixels around a full-resolution window: interp23tap's 23-tap kernel applied log2(ratio) times
# reaches under 9 MS pixels, MATLAB's bicubic reduction 2 more; the MTF filter's 20 PAN pixels fit in it too.
LOW_RES_HALO = 16


class Incomplete(BadInput):
    """A window holds NaN or infinite values: the indexes need complete images."""


def spans(length: int, window: int, align: int) -> list[tuple[int, int]]:
    """[start, stop) spans covering 0..length, starts on multiples of `align`, at most `window` (rounded down to
    `align`, at least `align`) long; a last span shorter than `align` joins the one before, so that an image side
    padded to whole blocks pads a window that holds the side's last block."""
    size = max(align, window // align * align)
    starts = list(range(0, length, size))
    bounds = [(s, min(s + size, length)) for s in starts]
    if len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] < align:
        bounds[-2:] = [(bounds[-2][0], length)]
    return bounds


def _extended(start: int, stop: int, halo: int, length: int, mode: str) -> np.ndarray:
    """Indices of [start - halo, stop + halo) in the image's extension along one axis: 'edge' (replicate),
    'symmetric' (mirror, edge pixel repeated) or 'wrap' (circular)."""
    index = np.arange(start - halo, stop + halo)
    if mode == "edge":
        return np.clip(index, 0, length - 1)
    if mode == "wrap":
        return np.mod(index, length)
    period = np.mod(index, 2 * length)
    return np.where(period < length, period, 2 * length - 1 - period)


def _read(reader: Reader, rows: np.ndarray, cols: np.ndarray, what: str) -> np.ndarray:
    """reader() on the sorted unique indices, spread back to `rows`, `cols` (repeats and wrap-arounds), float64."""
    unique_rows, row_of = np.unique(rows, return_inverse=True)
    unique_cols, col_of = np.unique(cols, return_inverse=True)
    data = np.asarray(reader(unique_rows, unique_cols), dtype=np.float64)
    # C order: numpy's fancy indexing may return other strides, and sums run in memory order (the whole-image
    # figures come from C-ordered arrays).
    data = np.ascontiguousarray(data[..., row_of, :][..., col_of])
    if not np.isfinite(data).all():
        raise Incomplete(f"{what} has NaN or infinite values (rows {rows.min()}-{rows.max()}, columns "
                         f"{cols.min()}-{cols.max()})")
    return data


def _runs(index: np.ndarray) -> list[tuple[int, int, int]]:
    """(position in `index`, first value, length) of each run of consecutive values."""
    breaks = np.flatnonzero(np.diff(index) != 1) + 1
    edges = np.concatenate([[0], breaks, [len(index)]])
    return [(int(a), int(index[a]), int(b - a)) for a, b in zip(edges[:-1], edges[1:])]


def _pan_reduced(read_pan: Reader, low_rows: np.ndarray, low_cols: np.ndarray, shape: tuple[int, int],
                 ratio: int) -> np.ndarray:
    """imresize(pan, 1/ratio) (D_s's PAN at MS scale) at the MS pixels `low_rows` x `low_cols`: each run of
    consecutive pixels is reduced from a PAN window with a mirrored halo, as imresize mirrors the whole image."""
    halo = 4   # MS pixels: the antialiased bicubic kernel spans 2 MS pixels either side
    out = np.empty((len(low_rows), len(low_cols)))
    for row_at, row0, row_n in _runs(low_rows):
        rows = _extended(row0 * ratio, (row0 + row_n) * ratio, halo * ratio, shape[0], "symmetric")
        for col_at, col0, col_n in _runs(low_cols):
            cols = _extended(col0 * ratio, (col0 + col_n) * ratio, halo * ratio, shape[1], "symmetric")
            reduced = imresize(_read(read_pan, rows, cols, "pan"), 1 / ratio)
            out[row_at:row_at + row_n, col_at:col_at + col_n] = reduced[halo:-halo, halo:-halo]
    return out


def full_resolution_windowed(read_fused: Reader, read_ms: Reader, read_pan: Reader, shape: tuple[int, int, int],
                             ratio: int, sensor, window: int = WINDOW) -> dict[str, float]:
    """metrics.full_resolution (D_lambda, D_s, HQNR) of an image read window by window.

    Args:
        read_fused: reader of the fused image (B, H, W) on the PAN grid.
        read_ms: reader of the MS (B, H / ratio, W / ratio).
        read_pan: reader of the PAN (H, W).
        shape: (B, H, W); H and W multiples of 32 and of `ratio` (as metrics.full_resolution needs).
        ratio: PAN/MS scale ratio (a power of 2: interp23tap).
        sensor: the sensor whose MTF filters the fused image.
        window: window side in PAN pixels.

    Returns:
        {"D_lambda", "D_s", "HQNR"}, the whole-image figures. Raises Incomplete on NaN.
    """
    ratio = check_ratio(ratio)
    bands, height, width = shape
    step = math.lcm(BLOCK, ratio)
    if height % step or width % step:
        raise BadInput(f"image of {height}x{width} pixels: full-resolution windows need multiples of {step}")
    halo_low = max(LOW_RES_HALO, math.ceil(MTF_KERNEL_SIZE / 2 / ratio))
    halo = halo_low * ratio
    low_shape = (height // ratio, width // ratio)
    q2n_sum, q2n_count = 0.0, 0
    uqi_high, uqi_low, uqi_count = np.zeros(bands), np.zeros(bands), 0
    for r0, r1 in spans(height, window, step):
        for c0, c1 in spans(width, window, step):
            inner = (slice(None), slice(halo, halo + r1 - r0), slice(halo, halo + c1 - c0))
            # The fused image low-passed with the MTF (replicated edges, as filter_replicate).
            fused = _read(read_fused, _extended(r0, r1, halo, height, "edge"), _extended(c0, c1, halo, width, "edge"),
                          "fused")
            fused_low = mtf_filter(fused, sensor, ratio)[inner]
            fused = fused[inner]
            # The MS and the PAN's MS-scale version expanded by interp23tap (circular, as interp23tap wraps).
            low_rows = _extended(r0 // ratio, r1 // ratio, halo_low, low_shape[0], "wrap")
            low_cols = _extended(c0 // ratio, c1 // ratio, halo_low, low_shape[1], "wrap")
            ms_expanded = interp23tap(_read(read_ms, low_rows, low_cols, "ms"), ratio)[inner]
            pan_low = interp23tap(_pan_reduced(read_pan, low_rows, low_cols, (height, width), ratio)[None],
                                  ratio)[inner]
            pan = _read(read_pan, np.arange(r0, r1), np.arange(c0, c1), "pan")[None]
            with np.errstate(invalid="ignore", divide="ignore"):
                blocks = q2n_blocks(ms_expanded, fused_low, BLOCK)
            q2n_sum, q2n_count = q2n_sum + float(blocks.sum()), q2n_count + blocks.size
            high, low = block_uqi(fused, pan, BLOCK), block_uqi(ms_expanded, pan_low, BLOCK)
            uqi_high, uqi_low, uqi_count = uqi_high + high.sum(axis=1), uqi_low + low.sum(axis=1), \
                uqi_count + high.shape[1]
    d_lambda = 1 - q2n_sum / q2n_count
    d_s = float(np.abs(uqi_high / uqi_count - uqi_low / uqi_count).mean())
    return {"D_lambda": d_lambda, "D_s": d_s, "HQNR": (1 - d_lambda) * (1 - d_s)}


def reduced_resolution_windowed(read_fused: Reader, read_reference: Reader, shape: tuple[int, int, int],
                                ratio: int, window: int = WINDOW) -> dict[str, float]:
    """metrics.reduced_resolution (SAM, ERGAS, SCC, Q, Q2n; no border cut) of two images read window by window.

    Args:
        read_fused: reader of the fused image (B, H, W).
        read_reference: reader of the reference (B, H, W).
        shape: (B, H, W).
        ratio: PAN/MS scale ratio (ERGAS).
        window: window side in pixels.

    Returns:
        {"SAM", "ERGAS", "SCC", "Q", "Q2n"}, the whole-image figures (Q to rounding). Raises Incomplete on NaN.
    """
    ratio = check_ratio(ratio)
    bands, height, width = shape
    if min(height, width) < Q_WINDOW:
        raise BadInput(f"images of {(height, width)} pixels are smaller than the {Q_WINDOW}x{Q_WINDOW} Q window")
    angles, valid = 0.0, 0
    squared_error, reference_sum = np.zeros(bands), np.zeros(bands)
    edges = np.zeros(3)            # sums of fused*reference, fused^2, reference^2 Sobel magnitudes
    q_sum, q_count = np.zeros(bands), 0
    q2n_sum, q2n_count = 0.0, 0

    def both(rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return _read(read_fused, rows, cols, "fused"), _read(read_reference, rows, cols, "reference")

    for r0, r1 in spans(height, window, BLOCK):
        for c0, c1 in spans(width, window, BLOCK):
            fused, reference = both(np.arange(r0, r1), np.arange(c0, c1))
            window_angles = sam_angles(reference, fused)
            angles, valid = angles + float(window_angles.sum()), valid + window_angles.size
            squared_error += ((reference - fused) ** 2).sum(axis=(1, 2))
            reference_sum += reference.sum(axis=(1, 2))
            with np.errstate(invalid="ignore", divide="ignore"):
                blocks = q2n_blocks(reference, fused, BLOCK)
            q2n_sum, q2n_count = q2n_sum + float(blocks.sum()), q2n_count + blocks.size
            edges += _edge_sums(both, r0, r1, c0, c1, height, width)
            # Q: the sliding windows whose top-left corner lies in this window.
            q_rows, q_cols = min(r1, height - Q_WINDOW + 1), min(c1, width - Q_WINDOW + 1)
            if q_rows > r0 and q_cols > c0:
                fused_q, reference_q = both(np.arange(r0, q_rows + Q_WINDOW - 1), np.arange(c0, q_cols + Q_WINDOW - 1))
                quality = q_map(reference_q, fused_q, Q_WINDOW)
                q_sum, q_count = q_sum + quality.sum(axis=(1, 2)), q_count + quality[0].size
    pixels = height * width
    mse, reference_mean = squared_error / pixels, reference_sum / pixels
    return {
        "SAM": float(np.degrees(angles / valid)) if valid else float("nan"),
        "ERGAS": float(100 / ratio * np.sqrt((mse / reference_mean**2).mean())),
        "SCC": float(edges[0] / np.sqrt(edges[1]) / np.sqrt(edges[2])),
        "Q": float((q_sum / q_count).mean()),
        "Q2n": q2n_sum / q2n_count,
    }


def _edge_sums(both, r0: int, r1: int, c0: int, c1: int, height: int, width: int) -> np.ndarray:
    """SCC's three sums over the edge pixels of window [r0, r1) x [c0, c1): the image without its 1-pixel frame,
    Sobel-filtered with zeros beyond that inner part (metrics.sobel_magnitude)."""
    rows = np.arange(max(r0, 1) - 1, min(r1, height - 1) + 1)    # the window's inner pixels and a frame
    cols = np.arange(max(c0, 1) - 1, min(c1, width - 1) + 1)
    if len(rows) < 3 or len(cols) < 3:
        return np.zeros(3)
    fused, reference = both(rows, cols)
    # Frame pixels outside the inner part (the image's own frame) count as zeros, as imfilter pads there.
    for image in (fused, reference):
        if rows[0] == 0:
            image[:, 0] = 0
        if rows[-1] == height - 1:
            image[:, -1] = 0
        if cols[0] == 0:
            image[:, :, 0] = 0
        if cols[-1] == width - 1:
            image[:, :, -1] = 0
    edge_fused = sobel_magnitude(fused)[:, 1:-1, 1:-1]
    edge_reference = sobel_magnitude(reference)[:, 1:-1, 1:-1]
    return np.array([(edge_fused * edge_reference).sum(), (edge_fused**2).sum(), (edge_reference**2).sum()])


def wald_degrade_windowed(read_pan: Reader, read_ms: Reader, ms_shape: tuple[int, int, int], ratio: int, sensor,
                          window: int = WINDOW) -> tuple[np.ndarray, np.ndarray]:
    """resample.wald_degrade (pan_method "mtf") of a pair read window by window: (pan_lr, ms_lr) float32.

    The blocks of `wald_degrade_blocks`, assembled in memory; see it for the arguments.

    Returns:
        (pan_lr (h, w), ms_lr (B, h / ratio, w / ratio)). Raises Incomplete on NaN.
    """
    bands, height, width = ms_shape
    ratio = check_ratio(ratio)
    out = {"pan": np.empty((height, width), dtype=np.float32),
           "ms": np.empty((bands, height // ratio, width // ratio), dtype=np.float32)}
    for name, index, block in wald_degrade_blocks(read_pan, read_ms, ms_shape, ratio, sensor, window):
        out[name][index] = block
    return out["pan"], out["ms"]


def wald_degrade_blocks(read_pan: Reader, read_ms: Reader, ms_shape: tuple[int, int, int], ratio: int, sensor,
                        window: int = WINDOW) -> Iterator[tuple[str, tuple[slice, ...], np.ndarray]]:
    """resample.wald_degrade (pan_method "mtf") of a pair read window by window, one degraded block at a time, so
    that a caller can write the reduced pair out without ever holding it whole.

    Each MS window (and the PAN above it) is read with a halo of the MTF filter's radius, replicated at the image
    border as filter_replicate does, filtered and decimated. The filters run by FFT on the window instead of the
    whole image: the values agree to rounding (about 1e-12 relative), nearly always bit for bit once in float32.

    Args:
        read_pan: reader of the PAN (H, W).
        read_ms: reader of the MS (B, H / ratio, W / ratio).
        ms_shape: the MS (B, h, w) to degrade, h and w multiples of `ratio` (wald.reduced_resolution_example crops
            the MS so; the PAN used is its first h * ratio rows and w * ratio columns).
        ratio: PAN/MS scale ratio.
        sensor: the sensor whose MTFs filter the pair.
        window: window side in PAN pixels.

    Returns:
        An iterator of (name, index, block): "pan" blocks of pan_lr (h, w) and "ms" blocks of ms_lr
        (B, h / ratio, w / ratio), float32, `index` the slices they fill; together they tile both arrays once.
        Raises Incomplete on NaN.
    """
    ratio = check_ratio(ratio)
    _, height, width = ms_shape
    if height % ratio or width % ratio:
        raise BadInput(f"ms size {(height, width)} must be divisible by ratio {ratio}")
    halo = MTF_KERNEL_SIZE // 2
    for r0, r1 in spans(height, max(ratio, window // ratio), ratio):
        for c0, c1 in spans(width, max(ratio, window // ratio), ratio):
            ms = _read(read_ms, _extended(r0, r1, halo, height, "edge"), _extended(c0, c1, halo, width, "edge"), "ms")
            filtered = mtf_filter(ms, sensor, ratio)[:, halo:halo + r1 - r0, halo:halo + c1 - c0]
            yield ("ms", (slice(None), slice(r0 // ratio, r1 // ratio), slice(c0 // ratio, c1 // ratio)),
                   decimate(filtered, ratio).astype(np.float32, copy=False))
            for k in range(ratio):   # the PAN under the window, a band of MS rows at a time: ratio^2 more pixels
                p0, p1 = r0 * ratio + k * (r1 - r0), r0 * ratio + (k + 1) * (r1 - r0)
                pan = _read(read_pan, _extended(p0, p1, halo, height * ratio, "edge"),
                            _extended(c0 * ratio, c1 * ratio, halo, width * ratio, "edge"), "pan")
                filtered = pan_mtf_filter(pan, sensor, ratio)[halo:halo + p1 - p0, halo:halo + (c1 - c0) * ratio]
                yield ("pan", (slice(p0 // ratio, p1 // ratio), slice(c0, c1)),
                       decimate(filtered, ratio).astype(np.float32, copy=False))
