"""Sharpen a whole image held in memory, tile by tile, through the same stores and runner as the pipeline.

For benchmarks and notebooks on scenes that fit in memory: the arrays go to a temporary scene store, the tiles
are sampled by `run_tiles` exactly as a Ray actor would, and the mosaic is read back. One code path means the
quality table measures what the pipeline produces. ``Pansharpener.sharpen`` gives the same pixels without the
stores (it runs the same sampling loop on the arrays); this path stays as the pipeline's own reference.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from ssdiff_model.data.pair import PansharpeningPair
from ssdiff_model.model.checkpoint import resolve_sampling
from tiling.runner import run_tiles
from tiling.stores.layout import HRMS
from tiling.stores.mosaic import create_mosaic_store, open_mosaic
from tiling.stores.scene import write_scene_store

__all__ = ["sharpen_array"]


def sharpen_array(pansharpener, pan: np.ndarray, ms_lr: np.ndarray, *, tile: int = 64, halo: int | None = None,
                  steps: int | None = None, seed: int = 0, batch_size: int = 8, full_scale: float | None = None,
                  sampler: str | None = None) -> np.ndarray:
    """Sharpen an image held in memory through a temporary scene store, ``run_tiles`` and a mosaic store.

    Args:
        pansharpener: a ``Pansharpener``.
        pan: PAN ``(H, W)`` in DN, NaN = nodata.
        ms_lr: MS ``(B, H / r, W / r)`` in DN, NaN = nodata.
        tile: tile side in PAN pixels.
        halo: overlap on each side of a tile's core (None: as the pipeline resolves it).
        steps: DDIM steps (None: as the pipeline resolves them, ``ssdiff_model.model.checkpoint.resolve_sampling``:
            the checkpoint's recommendation, else the project's default).
        seed: seed of the position-keyed noise.
        batch_size: tiles per network call.
        full_scale: the images' full scale in DN; None: inferred from the arrays as ``Pansharpener.sharpen``
            infers it (``Pansharpener.full_scale_of``), never silently the checkpoint's.
        sampler: "consistent" or "release" (``GaussianDiffusion.ddim_sample``; None: as ``steps``).

    Returns:
        ``(B, H, W)`` float32 DN; NaN inputs stay NaN.
    """
    settings, _ = resolve_sampling(getattr(pansharpener, "checkpoint", None), steps=steps, halo=halo, sampler=sampler)
    steps, halo, sampler = settings["steps"], settings["halo"], settings["sampler"]
    scale = pansharpener.full_scale_of(pan, ms_lr, full_scale).value
    ms_lr = np.asarray(ms_lr, dtype=np.float32)
    pair = PansharpeningPair(pan=np.asarray(pan, dtype=np.float32), ms_lr=ms_lr, ratio=pansharpener.ratio,
                             full_scale=scale, sensor=pansharpener.sensor,
                             band_names=tuple(f"band{i + 1}" for i in range(ms_lr.shape[0])))
    with tempfile.TemporaryDirectory(prefix="ssdiff-") as tmp:
        scene, mosaic = Path(tmp) / "scene.zarr", Path(tmp) / "mosaic.zarr"
        write_scene_store(scene, pair, sources={})
        grid = create_mosaic_store(mosaic, scene, pansharpener, tile_size=tile, halo=halo, seed=seed, steps=steps,
                                   sampler=sampler)
        run_tiles(scene, mosaic, pansharpener, list(grid.tiles()), batch_size=batch_size, seed=seed, steps=steps,
                  sampler=sampler)
        return open_mosaic(mosaic, dask=False)[HRMS].values
