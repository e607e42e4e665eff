"""The local tile runner: read tiles from the scene store, sample them in batches, write their cores in place.

This is what one worker (a Ray actor later, a thread or a plain loop here) does with its share of the tiles. It
holds one batch of tiles at a time, so memory does not grow with the scene. The sampling itself (windows, nodata,
noise, batches) is ``ssdiff_model.tiled.sample_tiles``, which ``Pansharpener.sharpen`` runs on arrays in memory:
one implementation, so the two give equal pixels.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import zarr

from ssdiff_model.tiled import sample_tiles
from tiling.grid import Tile, TileGrid, read_window
from tiling.stores import (
    DONE, HRMS, MS, PAN, SCENE_LAYOUT, TILE_NODATA, TILE_SHARPENED, StorePath, check_run_settings,
    mosaic_equalization, store_attrs, writing,
)


def _write_core(mosaic_store: StorePath, hrms, done, tile: Tile, values, state: int) -> None:
    """Store a tile's core, then mark it in the manifest: only after the core is stored, so the manifest never
    lies. A write the system refuses (a full disk, a lost mount) is an OSError naming the store; the tile stays
    missing, and a rerun redoes it."""
    with writing(mosaic_store, f"writing tile {tile.row}, {tile.col}; the finished tiles are kept, rerun to resume"):
        hrms[(slice(None), *tile.core)] = values
        done[tile.row, tile.col] = state


def _read_tile(scene_store: StorePath, pan_store, ms_store, tile: Tile) -> tuple[np.ndarray, np.ndarray]:
    """The tile's PAN and MS windows; a scene chunk that fails its checksum (or does not decode) is an error
    naming the store and the tile, not the codec's bare message."""
    try:
        return read_window(pan_store, tile.window), read_window(ms_store, tile.ms_window)
    except ValueError as err:
        if "outside an array" in str(err):
            raise
        raise ValueError(f"{scene_store}: the scene under tile ({tile.row}, {tile.col}) is damaged ({err}): ingest "
                         f"the files again into a new scene store") from err


def run_tiles(scene_store: StorePath, mosaic_store: StorePath, pansharpener, tiles: Sequence[Tile],
              batch_size: int, seed: int, steps: int, sampler: str = "consistent") -> dict[str, int]:
    """Sharpen ``tiles`` of the scene into the mosaic store (created by ``create_mosaic_store`` with the same
    seed, steps and checkpoint), ``batch_size`` tiles per network call, and mark each in the manifest once its
    core is written. Returns how many tiles were sharpened and how many were skipped as all-nodata."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    scene_attrs = store_attrs(scene_store, SCENE_LAYOUT)
    attrs = check_run_settings(mosaic_store, seed=seed, steps=steps, sampler=sampler,
                               checkpoint_hash=pansharpener.checkpoint_hash, scene_sources=scene_attrs["sources"],
                               batch_size=batch_size)
    scene = zarr.open_group(scene_store, mode="r")
    pan_store, ms_store = scene[PAN], scene[MS]
    mosaic = zarr.open_group(mosaic_store, mode="r+")
    hrms, done = mosaic[HRMS], mosaic[DONE]
    if hrms.shape[1:] != pan_store.shape:
        raise ValueError(f"{mosaic_store}: mosaic is {hrms.shape[1:]} pixels, scene {scene_store} is "
                         f"{pan_store.shape}: it was created for another scene")
    grid = TileGrid(height=hrms.shape[1], width=hrms.shape[2], ratio=attrs["ratio"], tile_size=attrs["tile_size"],
                    halo=attrs["halo"])
    tiles = list(tiles)
    for tile in tiles:   # a tile of another grid would write across chunks that other writers own
        if tile != grid.tile(tile.row, tile.col):
            raise ValueError(f"{mosaic_store}: tile ({tile.row}, {tile.col}) is not a tile of this mosaic's {grid}")
    counts = {"sharpened": 0, "nodata": 0}
    for tile, core in sample_tiles(pansharpener, pan_store, ms_store, tiles, batch_size=batch_size, seed=seed,
                                   steps=steps, full_scale=scene_attrs["full_scale"],
                                   equalization=mosaic_equalization(attrs), sampler=sampler,
                                   read=lambda tile: _read_tile(scene_store, pan_store, ms_store, tile)):
        if core is None:
            _write_core(mosaic_store, hrms, done, tile, np.nan, TILE_NODATA)
            counts["nodata"] += 1
        else:
            _write_core(mosaic_store, hrms, done, tile, core, TILE_SHARPENED)
            counts["sharpened"] += 1
    return counts
