"""Arrays too large to hold whole, read a band of whole rows at a time.

Ingest streams a GeoTIFF scene (dask arrays from rioxarray, or a Zarr store's arrays): every statistic it takes
(the nodata checks, the radiometry's maximum and sample, the content hash, the equalization) walks the arrays by
``row_bands``, so its memory is bounded by one band of rows, never by the scene. NumPy arrays walk the same way,
so one code path serves the in-memory readers too.

A dask block is computed on the calling thread (``materialize``): the GeoTIFF reads then run inside the caller's
GDAL environment (``s3://`` credentials and endpoint are set per thread by rasterio), and only one block is in
memory at a time.
"""
from __future__ import annotations

import warnings
from typing import Any, Iterator

import numpy as np

__all__ = ["BAND_BYTES", "MIN_BAND_ROWS", "band_rows", "chunk_rows", "is_lazy", "materialize", "row_bands"]

# float32 bytes of one band of rows that streaming ingest reads at once: large enough that a GeoTIFF is read in few
# windows, small enough that the few copies a statistic makes of it stay far below a scene.
BAND_BYTES = 16 * 2**20
# Fewest rows a band holds, however wide the scene: one row of scene store chunks (tiling.stores.layout).
MIN_BAND_ROWS = 256


def band_rows(width: int, multiple: int = MIN_BAND_ROWS) -> int:
    """Rows of a band of ``width`` float32 pixels of about ``BAND_BYTES``, a multiple of ``multiple``.

    Args:
        width: pixels per row (times the bands read together).
        multiple: the band holds a multiple of this many rows (at least one).

    Returns:
        The rows per band.
    """
    return max(1, BAND_BYTES // (4 * max(1, width) * multiple)) * multiple


def is_lazy(array: Any) -> bool:
    """True for an array whose values are computed on demand (dask)."""
    return hasattr(array, "compute") and hasattr(array, "chunks") and not isinstance(array, np.ndarray)


def materialize(array: Any) -> np.ndarray:
    """The values of ``array`` (NumPy, dask or Zarr) as a NumPy array, a dask array computed on this thread."""
    if is_lazy(array):
        with warnings.catch_warnings():
            # rasterio's windowed reads still multiply affines with `*`, which affine 3 flags; not ours to fix.
            warnings.filterwarnings("ignore", "Use `@` matmul", PendingDeprecationWarning)
            return np.asarray(array.compute(scheduler="synchronous"))
    return np.asarray(array)


def chunk_rows(array: Any) -> int:
    """A lazy array's own band height (its first chunk along the rows), else MIN_BAND_ROWS: walking it by bands
    of this height computes each of its chunks once."""
    if is_lazy(array) and isinstance(array.chunks, tuple) and array.chunks and isinstance(array.chunks[0], tuple):
        return max(array.chunks[-2][0], 1)
    return MIN_BAND_ROWS


def row_bands(array: Any, rows: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """(flat C-order index of its first element, values) of each band of whole rows of a 2-D (y, x) array, or of a
    3-D (band, y, x) array band by band; concatenated, the blocks are exactly the C-order array. An in-memory
    array of other dimensions is one block.

    Args:
        array: a NumPy, dask or Zarr array of 2 or 3 dimensions.
        rows: rows per band; default the lazy array's own chunk height, else ``MIN_BAND_ROWS``.

    Returns:
        An iterator of (offset, block) pairs.
    """
    rows = rows or chunk_rows(array)
    if array.ndim == 3:
        bands, height, width = array.shape
        for band in range(bands):
            for y in range(0, height, rows):
                yield (band * height + y) * width, materialize(array[band, y:y + rows])
    elif array.ndim == 2:
        height, width = array.shape
        for y in range(0, height, rows):
            yield y * width, materialize(array[y:y + rows])
    elif not is_lazy(array):   # a batch of examples or a vector, already in memory: one block
        yield 0, np.asarray(array)
    else:
        raise ValueError(f"row_bands takes lazy arrays of 2 or 3 dimensions, not {array.ndim}")
