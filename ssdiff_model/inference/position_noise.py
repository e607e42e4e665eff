"""Position-keyed starting noise for the sampler.

The noise at global position (band, row, col) is a pure function of that position and the run's seed: a
counter-based generator (splitmix64's finaliser chained over seed, band, row and col, in numpy uint64) gives two
independent 53-bit uniforms per position, and Box-Muller turns them into one standard normal. Two overlapping
tiles therefore see identical noise where they overlap, and the mosaic depends neither on the order in which
tiles run nor on which worker runs them. A per-tile ``torch.Generator`` could not give that.
"""
from __future__ import annotations

import numpy as np

__all__ = ["position_noise", "window_noise"]

_MASK64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15   # splitmix64's increment: decorrelates the fields fed into the hash
_TWO_POW_MINUS_53 = 2.0 ** -53


def _mix(z: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: a bijection on uint64 with full avalanche (integer overflow wraps, as intended)."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def _as_u64(values) -> np.ndarray:
    # Negative positions wrap to distinct uint64 values (two's complement), so they hash fine too.
    return np.asarray(values, dtype=np.int64).astype(np.uint64)


def _uniform(key: np.ndarray) -> np.ndarray:
    """53-bit uniform in (0, 1]: never 0, so the logarithm in Box-Muller stays finite."""
    return ((key >> np.uint64(11)).astype(np.float64) + 1.0) * _TWO_POW_MINUS_53


def position_noise(seed: int, bands: int, rows, cols) -> np.ndarray:
    """Standard normal noise for global PAN positions, keyed by the seed alone.

    Args:
        seed: the run's seed.
        bands: number of bands; band indexes are ``0 .. bands - 1``.
        rows: 1-D integer sequence of global PAN rows.
        cols: 1-D integer sequence of global PAN columns.

    Returns:
        float32 array of shape ``(bands, len(rows), len(cols))``.
    """
    seed_key = _mix(np.asarray([(seed * _GOLDEN) & _MASK64], dtype=np.uint64))
    band = _as_u64(np.arange(bands))[:, None, None]
    row = _as_u64(rows)[None, :, None]
    col = _as_u64(cols)[None, None, :]
    key = _mix(seed_key ^ _mix(band + np.uint64(_GOLDEN)))
    key = _mix(key ^ _mix(row + np.uint64(2 * _GOLDEN & _MASK64)))
    key = _mix(key ^ _mix(col + np.uint64(3 * _GOLDEN & _MASK64)))
    # Two streams from one key: the second is the key hashed once more with its own offset.
    u1 = _uniform(key)
    u2 = _uniform(_mix(key + np.uint64(_GOLDEN)))
    normal = np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)
    return normal.astype(np.float32)


def window_noise(seed: int, bands: int, y0: int, x0: int, height: int, width: int) -> np.ndarray:
    """Noise for a window of PAN pixels.

    Args:
        seed: the run's seed.
        bands: number of bands.
        y0: global PAN row of the window's top.
        x0: global PAN column of the window's left.
        height: window height in PAN pixels.
        width: window width in PAN pixels.

    Returns:
        float32 array of shape ``(bands, height, width)``, equal to ``position_noise`` over the same positions.
    """
    return position_noise(seed, bands, np.arange(y0, y0 + height), np.arange(x0, x0 + width))
