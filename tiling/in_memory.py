"""Sharpen a whole image held in memory, tile by tile, through the same stores and runner as the pipeline.

For benchmarks and notebooks on scenes that fit in memory: the arrays go to a temporary scene store, the tiles
are sampled by `run_tiles` exactly as a Ray actor would, and the mosaic is read back. One code path means the
quality table measures what the pipeline produces.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from ssdiff_model.checkpoint import resolve_sampling
from ssdiff_model.readers import PansharpeningPair
from tiling.runner import run_tiles
from tiling.stores import HRMS, create_mosaic_store, open_mosaic, write_scene_store


def sharpen_array(pansharpener, pan: np.ndarray, ms_lr: np.ndarray, *, tile: int = 64, halo: int | None = None,
                  steps: int | None = None, seed: int = 0, batch_size: int = 8, full_scale: float | None = None,
                  sampler: str | None = None) -> np.ndarray:
    """(B, H, W) float32 DN from `pan` (H, W) and `ms_lr` (B, H/r, W/r) in DN; NaN inputs stay NaN.
    `full_scale`: the images' full scale in DN (default: the checkpoint's); `sampler`: see
    ``GaussianDiffusion.ddim_sample``; `halo`, `steps`, `sampler` left None: as the pipeline resolves them
    (``ssdiff_model.checkpoint.resolve_sampling``: the checkpoint's recommendation, else the project's default)."""
    settings, _ = resolve_sampling(getattr(pansharpener, "checkpoint", None), steps=steps, halo=halo, sampler=sampler)
    steps, halo, sampler = settings["steps"], settings["halo"], settings["sampler"]
    ms_lr = np.asarray(ms_lr, dtype=np.float32)
    pair = PansharpeningPair(pan=np.asarray(pan, dtype=np.float32), ms_lr=ms_lr, ratio=pansharpener.ratio,
                             full_scale=full_scale or pansharpener.full_scale, sensor=pansharpener.sensor,
                             band_names=tuple(f"band{i + 1}" for i in range(ms_lr.shape[0])))
    with tempfile.TemporaryDirectory(prefix="ssdiff-") as tmp:
        scene, mosaic = Path(tmp) / "scene.zarr", Path(tmp) / "mosaic.zarr"
        write_scene_store(scene, pair, sources={})
        grid = create_mosaic_store(mosaic, scene, pansharpener, tile_size=tile, halo=halo, seed=seed, steps=steps,
                                    sampler=sampler)
        run_tiles(scene, mosaic, pansharpener, list(grid.tiles()), batch_size=batch_size, seed=seed, steps=steps,
                  sampler=sampler)
        return open_mosaic(mosaic, dask=False)[HRMS].values
