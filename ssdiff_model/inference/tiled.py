"""Sampling a scene tile by tile: the loop that the pipeline's workers and ``Pansharpener.sharpen`` share.

The source arrays are anything that slices like numpy (Zarr arrays in the pipeline, numpy arrays in memory), so
both read the same windows, fill nodata the same way, draw the same position-keyed noise and call the network on
the same batches: their outputs are equal bit for bit. Nodata never reaches the network: NaN pixels are filled
with the mean of the valid ones of the same band of the window (a neutral value that depends on the window alone,
so a far-away nodata pixel changes nothing here) and masked back to NaN after sampling. A pixel of the output is
nodata in band b when its PAN pixel or the MS pixel of band b above it is nodata.
"""
from __future__ import annotations

from typing import Callable, Iterator, Sequence

import numpy as np

from ssdiff_model.errors import BadInput
from ssdiff_model.inference.position_noise import window_noise
from ssdiff_model.inference.tile_grid import Tile, read_window
from ssdiff_model.science.equalization import PanEqualization

__all__ = ["fill_nodata", "sample_tiles"]


def fill_nodata(window: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """NaN pixels replaced by the mean of the valid pixels of the same band of the window.

    Args:
        window: ``(..., height, width)`` values.
        valid: boolean mask of the valid pixels, shaped like ``window``.

    Returns:
        float32 array like ``window``; a band without a valid pixel is filled with 0.
    """
    axes = (-2, -1)
    count = valid.sum(axis=axes, keepdims=True)
    mean = np.where(valid, window, 0).sum(axis=axes, keepdims=True) / np.maximum(count, 1)
    return np.where(valid, window, mean).astype(np.float32)


def _batches(tiles: Sequence[Tile], size: int) -> Iterator[Sequence[Tile]]:
    for start in range(0, len(tiles), size):
        yield tiles[start:start + size]


def sample_tiles(pansharpener, pan, ms, tiles: Sequence[Tile], *, batch_size: int, seed: int, steps: int,
                 full_scale: float, equalization: PanEqualization | None = None, sampler: str = "consistent",
                 back_projection: int = 0, sensor: str | None = None, ms_degradation: str = "mtf",
                 ensemble: int = 1, read: Callable[[Tile], tuple[np.ndarray, np.ndarray]] | None = None
                 ) -> Iterator[tuple[Tile, np.ndarray | None]]:
    """Sharpen tiles of a scene, ``batch_size`` tiles per network call, yielding each tile's core.

    Tiles without a valid pixel in their core are yielded at once (core None), before their batch is sampled, so
    a caller that records progress records them even if sampling then fails.

    Args:
        pansharpener: a ``Pansharpener``.
        pan: the scene's PAN ``(H, W)`` in DN, NaN = nodata.
        ms: the scene's MS ``(B, H / r, W / r)`` in DN, NaN = nodata.
        tiles: tiles of one ``TileGrid`` over the scene, in the order to sample them.
        batch_size: tiles per network call.
        seed: the run's seed (the noise is keyed to it and to global pixel positions).
        steps: DDIM steps.
        full_scale: the scene's full scale in DN.
        equalization: the whole scene's equalization, for a checkpoint that equalizes its inputs.
        sampler: "consistent" or "release" (``GaussianDiffusion.ddim_sample``).
        back_projection: iterations of back-projection onto each tile's MS (``Pansharpener.sharpen_tiles``).
        sensor: the scene's sensor, for the back-projection's MTF (None: the checkpoint's).
        ms_degradation: how the scene's MS was made ("mtf" or "bicubic"), the back-projection's degradation.
        ensemble: dihedral views averaged per tile (``Pansharpener.sharpen_tiles``).
        read: reads a tile's (PAN, MS) windows (default: ``read_window`` on ``pan`` and ``ms``); the pipeline's
            reader names a damaged store.

    Returns:
        An iterator of ``(tile, core)``: ``core`` is ``(B, core height, core width)`` float32 DN with NaN where
        the output is nodata, or None for a tile that is nodata throughout.
    """
    if batch_size < 1:
        raise BadInput(f"batch_size must be at least 1, got {batch_size}")
    bands = ms.shape[0]
    for batch in _batches(list(tiles), batch_size):
        inputs, work = [], []
        for tile in batch:
            pan_window, ms_window = (read(tile) if read is not None else
                                     (read_window(pan, tile.window), read_window(ms, tile.ms_window)))
            pan_valid, ms_valid = np.isfinite(pan_window), np.isfinite(ms_window)
            valid = pan_valid[None] & ms_valid.repeat(tile.ratio, axis=1).repeat(tile.ratio, axis=2)
            core_valid = valid[(slice(None), *tile.core_in_window)]
            if not core_valid.any():
                yield tile, None
                continue
            noise = window_noise(seed, bands, tile.window_y0, tile.window_x0, tile.size, tile.size)
            inputs.append((fill_nodata(pan_window, pan_valid), fill_nodata(ms_window, ms_valid), noise))
            work.append((tile, core_valid))
        if not work:
            continue
        # Every network call gets exactly batch_size tiles (a short batch padded with copies of its last tile, their
        # outputs dropped): a tile's last bits depend on the size of the call it is in, not on its neighbours, so a
        # tile comes out the same whichever tiles it is batched with, however the tiles are grouped (a resumed run,
        # a sharded mosaic) and wherever nodata tiles dropped out of a batch.
        inputs += [inputs[-1]] * (batch_size - len(inputs))
        pan_batch, ms_batch, noise_batch = (np.stack(parts) for parts in zip(*inputs))
        sharpened = pansharpener.sharpen_tiles(pan_batch, ms_batch, noise_batch, steps=steps, full_scale=full_scale,
                                               equalization=equalization, sampler=sampler,
                                               back_projection=back_projection, sensor=sensor,
                                               ms_degradation=ms_degradation, ensemble=ensemble)
        for (tile, core_valid), out in zip(work, sharpened):
            yield tile, np.where(core_valid, out[(slice(None), *tile.core_in_window)], np.nan)
