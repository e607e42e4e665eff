"""The local tile runner: read tiles from the scene store, sample them in batches, write their cores in place.

This is what one worker (a Ray actor later, a thread or a plain loop here) does with its share of the tiles. It
holds one batch of tiles at a time, so memory does not grow with the scene. The sampling itself (windows, nodata,
noise, batches) is ``ssdiff_model.inference.tiled.sample_tiles``, which ``Pansharpener.sharpen`` runs on arrays in
memory:
one implementation, so the two give equal pixels.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import zarr

from ssdiff_model.errors import BadInput
from ssdiff_model.inference.tiled import sample_tiles
from tiling import objstore
from tiling.grid import Tile, TileGrid, read_window
from tiling.stores.atomic import writing
from tiling.stores.attrs import SceneAttrs
from tiling.stores.layout import DONE, HRMS, MS, PAN, TILE_NODATA, TILE_SHARPENED, StorePath
from tiling.stores.mosaic import check_run_settings, shard_of

__all__ = ["run_tiles"]


def _write_core(mosaic_store: StorePath, hrms, done, tile: Tile, values, state: int) -> None:
    """Store a tile's core, then mark it in the manifest: only after the core is stored, so the manifest never
    lies. A write the system refuses (a full disk, a lost mount) is an OSError naming the store; the tile stays
    missing, and a rerun redoes it."""
    with writing(mosaic_store, f"writing tile {tile.row}, {tile.col}; the finished tiles are kept, rerun to resume"):
        hrms[(slice(None), *tile.core)] = values
        done[tile.row, tile.col] = state


def _write_shard(mosaic_store: StorePath, hrms, done, grid: TileGrid, shard_tiles: int, entries) -> None:
    """Store the cores of ``entries`` (tile, values, state), all of one shard, then their manifest entries. When
    they are the whole shard: one PUT of the cores, one of the manifest entries. Otherwise (a resumed shard) tile
    by tile, each a read-modify-write of the shard object (this runner is the shard's only writer)."""
    row0, col0 = shard_of(entries[0][0], shard_tiles)
    rows = range(row0 * shard_tiles, min((row0 + 1) * shard_tiles, grid.shape[0]))
    cols = range(col0 * shard_tiles, min((col0 + 1) * shard_tiles, grid.shape[1]))
    if {(tile.row, tile.col) for tile, _, _ in entries} != {(r, c) for r in rows for c in cols}:
        for tile, values, state in entries:
            _write_core(mosaic_store, hrms, done, tile, values, state)
        return
    y0, x0 = rows.start * grid.core, cols.start * grid.core
    y1, x1 = min(rows.stop * grid.core, grid.height), min(cols.stop * grid.core, grid.width)
    cores = np.full((hrms.shape[0], y1 - y0, x1 - x0), np.nan, dtype=np.float32)
    states = np.zeros((len(rows), len(cols)), dtype=np.uint8)
    for tile, values, state in entries:
        (ys, xs) = tile.core
        cores[:, ys.start - y0:ys.stop - y0, xs.start - x0:xs.stop - x0] = values
        states[tile.row - rows.start, tile.col - cols.start] = state
    with writing(mosaic_store, f"writing the shard of tiles {rows.start}..{rows.stop - 1}, "
                               f"{cols.start}..{cols.stop - 1}; "
                               f"the finished tiles are kept, rerun to resume"):
        hrms[:, y0:y1, x0:x1] = cores
        done[rows.start:rows.stop, cols.start:cols.stop] = states


def _read_tile(scene_store: StorePath, pan_store, ms_store, tile: Tile) -> tuple[np.ndarray, np.ndarray]:
    """The tile's PAN and MS windows; a scene chunk that fails its checksum (or does not decode) is an error
    naming the store and the tile, not the codec's bare message."""
    try:
        return read_window(pan_store, tile.window), read_window(ms_store, tile.ms_window)
    except ValueError as err:
        if "outside an array" in str(err):
            raise
        raise BadInput(f"{scene_store}: the scene under tile ({tile.row}, {tile.col}) is damaged ({err}): ingest "
                         f"the files again into a new scene store") from err
    except Exception as err:
        problem = objstore.storage_error(err, str(scene_store)) if objstore.is_url(scene_store) else None
        if problem is None:
            raise
        raise problem from err


def run_tiles(scene_store: StorePath, mosaic_store: StorePath, pansharpener, tiles: Sequence[Tile],
              batch_size: int, seed: int, steps: int, sampler: str = "consistent",
              back_projection: int = 0, ensemble: int = 1) -> dict[str, int]:
    """Sharpen ``tiles`` of the scene into the mosaic store (created by ``create_mosaic_store`` with the same
    seed, steps and checkpoint), ``batch_size`` tiles per network call, and mark each in the manifest once its
    core is written.

    Args:
        scene_store: the scene store.
        mosaic_store: the mosaic store, created for this scene.
        pansharpener: a ``Pansharpener`` of the checkpoint the mosaic was created with.
        tiles: tiles of the mosaic's grid.
        batch_size: tiles per network call (as the mosaic records it, if it does).
        seed: seed of the position-keyed noise (as the mosaic records it).
        steps: sampling steps (as the mosaic records them).
        sampler: "consistent" or "release" (as the mosaic records it).
        back_projection: iterations of back-projection onto the MS, with the scene's own degradation (its sensor's
            MTF, or the bicubic resizing its store records) (as the mosaic records it).
        ensemble: dihedral views averaged per tile (as the mosaic records it).

    Returns:
        {"sharpened": tiles sharpened, "nodata": tiles skipped as all-nodata}.
    """
    if batch_size < 1:
        raise BadInput(f"batch_size must be at least 1, got {batch_size}")
    scene_attrs = SceneAttrs.read(scene_store)
    attrs = check_run_settings(mosaic_store, seed=seed, steps=steps, sampler=sampler, back_projection=back_projection,
                               ensemble=ensemble, checkpoint_hash=pansharpener.checkpoint_hash,
                               scene_sources=scene_attrs.sources, batch_size=batch_size)
    scene = zarr.open_group(objstore.zarr_store(scene_store, read_only=True), mode="r")
    pan_store, ms_store = scene[PAN], scene[MS]
    mosaic = zarr.open_group(objstore.zarr_store(mosaic_store), mode="r+")
    hrms, done = mosaic[HRMS], mosaic[DONE]
    if hrms.shape[1:] != pan_store.shape:
        raise BadInput(f"{mosaic_store}: mosaic is {hrms.shape[1:]} pixels, scene {scene_store} is "
                         f"{pan_store.shape}: it was created for another scene")
    grid = TileGrid(height=hrms.shape[1], width=hrms.shape[2], ratio=attrs.ratio, tile_size=attrs.tile_size,
                    halo=attrs.halo)
    tiles = list(tiles)
    for tile in tiles:   # a tile of another grid would write across chunks that other writers own
        if tile != grid.tile(tile.row, tile.col):
            raise BadInput(f"{mosaic_store}: tile ({tile.row}, {tile.col}) is not a tile of this mosaic's {grid}")
    counts = {"sharpened": 0, "nodata": 0}
    equalization = attrs.pan_equalization   # None: the model takes raw PANs
    shard_tiles = attrs.shard_tiles
    # A sharded mosaic (object storage) gets each shard's cores written at once, when its last tile given here is
    # done; one core per chunk (local disk) is written as soon as it is sharpened.
    expected = {}
    for tile in tiles:
        expected[shard_of(tile, shard_tiles)] = expected.get(shard_of(tile, shard_tiles), 0) + 1
    pending: dict[tuple[int, int], list] = {}

    def store(tile: Tile, values, state: int) -> None:
        if shard_tiles == 1:
            _write_core(mosaic_store, hrms, done, tile, values, state)
            return
        key = shard_of(tile, shard_tiles)
        pending.setdefault(key, []).append((tile, values, state))
        if len(pending[key]) == expected[key]:
            _write_shard(mosaic_store, hrms, done, grid, shard_tiles, pending.pop(key))

    for tile, core in sample_tiles(pansharpener, pan_store, ms_store, tiles, batch_size=batch_size, seed=seed,
                                   steps=steps, full_scale=scene_attrs.full_scale, equalization=equalization,
                                   sampler=sampler, back_projection=back_projection, sensor=scene_attrs.sensor,
                                   ms_degradation=scene_attrs.ms_degradation or "mtf", ensemble=ensemble,
                                   read=lambda tile: _read_tile(scene_store, pan_store, ms_store,
                                                                                 tile)):
        if core is None:
            store(tile, np.nan, TILE_NODATA)
            counts["nodata"] += 1
        else:
            store(tile, core, TILE_SHARPENED)
            counts["sharpened"] += 1
    return counts
