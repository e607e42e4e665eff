"""The tile grid: how a scene at PAN resolution is cut into model-sized tiles.

Pure numpy, so that ``Pansharpener.sharpen`` and the pipeline (``tiling``, which re-exports these names) cut an
image the same way from one implementation.

Every tile is a square window of ``tile_size`` PAN pixels (what the network sees) whose centre part, the *core*
(``tile_size - 2 * halo`` pixels a side), is what the tile writes. Cores start at multiples of the core size, so
they are disjoint, cover the scene exactly (the last row/column of cores is cut at the scene edge) and coincide
with the chunks of the mosaic store: one core, one chunk, one writer.

Windows start at multiples of the grid's alignment, ``lcm(r, NETWORK_SIZE_MULTIPLE)``, and ``tile_size`` and
``halo`` are multiples of it too. Multiples of the ratio ``r`` give every PAN window ``[y, y + tile_size)`` the
exact MS window ``[y / r, (y + tile_size) / r)``; multiples of the network's total stride (4) give every tile the
same phase on the network's down-sampling grid, without which an r = 2 scene shows a 4-pixel pattern that jumps
at core boundaries. At the scene edges the
window is shifted inwards (it keeps a full halo of real pixels on the inner side instead of reflected ones);
whatever still falls outside the scene (scenes smaller than a tile, or PAN sizes that are not a multiple of ``r``)
is filled by symmetric padding when the window is read (see :func:`read_window`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from ssdiff_model.errors import BadInput

__all__ = ["NETWORK_SIZE_MULTIPLE", "Tile", "TileGrid", "read_window"]

# The network's U-shape has three scales, so its PAN-size input must halve twice.
NETWORK_SIZE_MULTIPLE = 4


@dataclass(frozen=True, slots=True)   # slots: a 40k x 40k scene lists ~700k tiles
class Tile:
    """One tile: its index in the grid, its core (written) and its window (read), in global PAN pixels."""

    row: int
    col: int
    core_y0: int
    core_y1: int
    core_x0: int
    core_x1: int
    window_y0: int   # multiple of the grid's alignment (so of the ratio)
    window_x0: int
    size: int        # window side in PAN pixels
    ratio: int

    @property
    def core(self) -> tuple[slice, slice]:
        """The core in global PAN pixels (the region of the mosaic this tile writes)."""
        return slice(self.core_y0, self.core_y1), slice(self.core_x0, self.core_x1)

    @property
    def core_in_window(self) -> tuple[slice, slice]:
        """The core relative to the window (to cut it out of the sampled tile)."""
        dy, dx = self.core_y0 - self.window_y0, self.core_x0 - self.window_x0
        return (slice(dy, dy + self.core_y1 - self.core_y0), slice(dx, dx + self.core_x1 - self.core_x0))

    @property
    def window(self) -> tuple[slice, slice]:
        """The window in global PAN pixels; it may reach past the scene's bottom/right edge (padded on read)."""
        return slice(self.window_y0, self.window_y0 + self.size), slice(self.window_x0, self.window_x0 + self.size)

    @property
    def ms_window(self) -> tuple[slice, slice]:
        """The window in global MS pixels: exactly the PAN window divided by the ratio."""
        y0, x0, n = self.window_y0 // self.ratio, self.window_x0 // self.ratio, self.size // self.ratio
        return slice(y0, y0 + n), slice(x0, x0 + n)


@dataclass(frozen=True)
class TileGrid:
    """Tiles of ``tile_size`` PAN pixels with a ``halo`` over a ``height`` x ``width`` PAN scene at ratio ``ratio``."""

    height: int
    width: int
    ratio: int
    tile_size: int
    halo: int

    def __post_init__(self) -> None:
        if self.height < 1 or self.width < 1:
            raise BadInput(f"tile grid: scene size must be positive, got {self.height}x{self.width}")
        if self.ratio < 1:
            raise BadInput(f"tile grid: ratio must be a positive integer, got {self.ratio}")
        if self.tile_size % self.align or self.halo % self.align:
            raise BadInput(f"tile grid: tile_size ({self.tile_size}) and halo ({self.halo}) must be multiples of "
                             f"{self.align} (the ratio {self.ratio} and the network's stride "
                             f"{NETWORK_SIZE_MULTIPLE}), so that every PAN tile has an exact MS tile")
        if self.halo < 0 or self.core < 1:
            raise BadInput(f"tile grid: halo {self.halo} leaves no core in a tile of {self.tile_size}")

    @property
    def align(self) -> int:
        """Window origins, tile size and halo are multiples of this."""
        return math.lcm(self.ratio, NETWORK_SIZE_MULTIPLE)

    @property
    def core(self) -> int:
        return self.tile_size - 2 * self.halo

    @property
    def shape(self) -> tuple[int, int]:
        """Number of tile rows and tile columns."""
        return -(-self.height // self.core), -(-self.width // self.core)

    def __len__(self) -> int:
        rows, cols = self.shape
        return rows * cols

    def _window_start(self, core_start: int, extent: int) -> int:
        # Shift the window inwards at the edges; the last allowed start is the first aligned one from which the
        # window reaches the scene's end, so the core always lies inside the window.
        last = max(0, -(-(extent - self.tile_size) // self.align) * self.align)
        return min(max(core_start - self.halo, 0), last)

    def tile(self, row: int, col: int) -> Tile:
        """The tile at grid position (``row``, ``col``).

        Args:
            row: tile row, ``0 <= row < shape[0]``.
            col: tile column, ``0 <= col < shape[1]``.

        Returns:
            The tile, its core cut at the scene's edge and its window shifted inwards there.
        """
        rows, cols = self.shape
        if not (0 <= row < rows and 0 <= col < cols):
            raise BadInput(f"tile grid: tile ({row}, {col}) outside the {rows}x{cols} grid")
        y0, x0 = row * self.core, col * self.core
        return Tile(row=row, col=col,
                    core_y0=y0, core_y1=min(y0 + self.core, self.height),
                    core_x0=x0, core_x1=min(x0 + self.core, self.width),
                    window_y0=self._window_start(y0, self.height), window_x0=self._window_start(x0, self.width),
                    size=self.tile_size, ratio=self.ratio)

    def tiles(self) -> Iterator[Tile]:
        """All tiles, row by row."""
        rows, cols = self.shape
        for row in range(rows):
            for col in range(cols):
                yield self.tile(row, col)


def read_window(array, window: tuple[slice, ...]) -> np.ndarray:
    """Read a window of an array as float32, padding the part past the array's end symmetrically.

    Args:
        array: anything that slices like numpy (a numpy or Zarr array), ``(..., height, width)``.
        window: ``(rows, cols)`` slices in the array's pixels, starting at 0 or after (see ``TileGrid``).

    Returns:
        ``array[..., rows, cols]`` as float32, of the window's full size.
    """
    *lead, height, width = array.shape
    ys, xs = window
    inside = array[(..., slice(ys.start, min(ys.stop, height)), slice(xs.start, min(xs.stop, width)))]
    inside = np.asarray(inside, dtype=np.float32)
    pad_y, pad_x = ys.stop - ys.start - inside.shape[-2], xs.stop - xs.start - inside.shape[-1]
    if inside.shape[-2] == 0 or inside.shape[-1] == 0:
        raise BadInput(f"window {window} lies entirely outside an array of shape {array.shape}")
    if pad_y or pad_x:
        inside = np.pad(inside, [(0, 0)] * len(lead) + [(0, pad_y), (0, pad_x)], mode="symmetric")
    return inside
