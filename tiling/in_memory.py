"""Sharpen a whole image held in memory, tile by tile, through the same stores and runner as the pipeline.

For benchmarks and notebooks on scenes that fit in memory: the arrays go to a temporary scene store, the tiles
are sampled by `run_tiles` exactly as a Ray actor would, and the mosaic is read back. One code path means the
quality table measures what the pipeline produces. ``Pansharpener.sharpen`` gives the same pixels without the
stores (it runs the same sampling loop on the arrays); this path stays as the pipeline's own reference.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Iterable

import numpy as np

from ssdiff_model.blocks import is_lazy
from ssdiff_model.data.pair import PansharpeningPair
from ssdiff_model.model.sampling import resolve_sampling
from tiling.runner import run_tiles
from tiling.stores.layout import HRMS, SCENE_CHUNK
from tiling.stores.mosaic import create_mosaic_store, open_mosaic
from tiling.stores.scene import store_bands, write_scene_store

__all__ = ["blocks_to_zarr", "sharpen_array", "sharpen_to_stores"]


def sharpen_array(pansharpener, pan: np.ndarray, ms_lr: np.ndarray, *, tile: int = 64, halo: int | None = None,
                  steps: int | None = None, seed: int = 0, batch_size: int = 8, full_scale: float | None = None,
                  sampler: str | None = None, back_projection: int | None = None,
                  sensor: str | None = None, ms_degradation: str = "mtf", ensemble: int | None = None) -> np.ndarray:
    """Sharpen an image held in memory through a temporary scene store, ``run_tiles`` and a mosaic store.

    Args:
        pansharpener: a ``Pansharpener``.
        pan: PAN ``(H, W)`` in DN, NaN = nodata.
        ms_lr: MS ``(B, H / r, W / r)`` in DN, NaN = nodata.
        tile, halo, steps, seed, batch_size, full_scale, sampler, back_projection, sensor, ms_degradation,
            ensemble: as ``sharpen_to_stores``.

    Returns:
        ``(B, H, W)`` float32 DN; NaN inputs stay NaN.
    """
    with tempfile.TemporaryDirectory(prefix="ssdiff-") as tmp:
        mosaic = sharpen_to_stores(pansharpener, pan, ms_lr, tmp, tile=tile, halo=halo, steps=steps, seed=seed,
                                   batch_size=batch_size, full_scale=full_scale, sampler=sampler,
                                   back_projection=back_projection, sensor=sensor, ms_degradation=ms_degradation,
                                   ensemble=ensemble)
        return open_mosaic(mosaic, dask=False)[HRMS].values


def sharpen_to_stores(pansharpener, pan, ms_lr, folder: str | Path, *, tile: int = 64, halo: int | None = None,
                      steps: int | None = None, seed: int = 0, batch_size: int = 8, full_scale: float | None = None,
                      sampler: str | None = None, back_projection: int | None = None,
                      sensor: str | None = None, ms_degradation: str = "mtf", ensemble: int | None = None) -> Path:
    """Sharpen a pair into a scene store and a mosaic store in ``folder`` (``scene.zarr``, ``mosaic.zarr``).

    NumPy inputs are held whole; dask inputs (e.g. over temporary Zarr arrays) are read a band of rows at a time
    by every step (radiometry, the scene store's statistics and write), so memory stays bounded by a band and a
    tile. Either gives the same stores when the dask arrays are chunked in the bands ``write_scene_store`` cuts
    NumPy arrays into (``tiling.stores.scene.store_bands``).

    Args:
        pansharpener: a ``Pansharpener``.
        pan: PAN ``(H, W)`` in DN, NaN = nodata.
        ms_lr: MS ``(B, H / r, W / r)`` in DN, NaN = nodata.
        folder: an existing local folder without those stores.
        tile: tile side in PAN pixels.
        halo: overlap on each side of a tile's core (None: as the pipeline resolves it).
        steps: DDIM steps (None: as the pipeline resolves them, ``ssdiff_model.model.sampling.resolve_sampling``:
            the checkpoint's recommendation, else the project's default).
        seed: seed of the position-keyed noise.
        batch_size: tiles per network call.
        full_scale: the images' full scale in DN; None: inferred from the arrays as ``Pansharpener.sharpen``
            infers it (``Pansharpener.full_scale_of``), never silently the checkpoint's.
        sampler: "consistent" or "release" (``GaussianDiffusion.ddim_sample``; None: as ``steps``).
        back_projection: iterations of back-projection onto the MS (``Pansharpener.sharpen_tiles``; None: as
            ``steps``).
        sensor: the pair's sensor, recorded in the scene store (its MTF is the back-projection's; None: the
            checkpoint's).
        ms_degradation: how the MS was made ("mtf" or "bicubic"), recorded in the scene store.
        ensemble: dihedral views averaged per tile (``Pansharpener.sharpen_tiles``; None: as ``steps``).

    Returns:
        The mosaic store's path; its ``HRMS`` is ``(B, H, W)`` float32 DN, NaN where the inputs were.
    """
    settings, _ = resolve_sampling(getattr(pansharpener, "checkpoint", None), steps=steps, halo=halo, sampler=sampler,
                                   back_projection=back_projection, ensemble=ensemble)
    steps, halo, sampler = settings["steps"], settings["halo"], settings["sampler"]
    back_projection, ensemble = settings["back_projection"], settings["ensemble"]
    scale = pansharpener.full_scale_of(pan, ms_lr, full_scale).value
    pan, ms_lr = (a.astype(np.float32) if is_lazy(a) else np.asarray(a, dtype=np.float32) for a in (pan, ms_lr))
    pair = PansharpeningPair(pan=pan, ms_lr=ms_lr, ratio=pansharpener.ratio, full_scale=scale,
                             sensor=sensor or pansharpener.sensor, ms_degradation=ms_degradation,
                             band_names=tuple(f"band{i + 1}" for i in range(ms_lr.shape[0])))
    scene, mosaic = Path(folder) / "scene.zarr", Path(folder) / "mosaic.zarr"
    write_scene_store(scene, pair, sources={})
    grid = create_mosaic_store(mosaic, scene, pansharpener, tile_size=tile, halo=halo, seed=seed, steps=steps,
                               sampler=sampler, back_projection=back_projection, ensemble=ensemble)
    run_tiles(scene, mosaic, pansharpener, list(grid.tiles()), batch_size=batch_size, seed=seed, steps=steps,
              sampler=sampler, back_projection=back_projection, ensemble=ensemble)
    return mosaic


def blocks_to_zarr(blocks: Iterable[tuple[str, tuple[slice, ...], np.ndarray]], folder: str | Path,
                   pan_shape: tuple[int, int], ms_shape: tuple[int, int, int], ratio: int):
    """Write a pair that arrives block by block (``ssdiff_model.science.windowed.wald_degrade_blocks``) to plain
    Zarr arrays in ``folder`` (``pan.zarr``, ``ms.zarr``), never holding it whole, and return it lazily.

    The dask arrays are chunked in the bands of rows ``write_scene_store`` cuts NumPy arrays into, so that
    ``sharpen_to_stores`` writes the same scene store (statistics, equalization, hash) as from NumPy.

    Args:
        blocks: (name, index, block) with name "pan" or "ms", ``index`` the slices the float32 block fills.
        folder: an existing local folder.
        pan_shape: the PAN's (H, W).
        ms_shape: the MS's (B, H / ratio, W / ratio).
        ratio: PAN/MS scale ratio.

    Returns:
        (pan, ms) dask arrays over the Zarr arrays.
    """
    import dask.array as da
    import zarr

    # Small square storage chunks: a block written across a chunk rewrites little of it.
    arrays = {"pan": zarr.create_array(Path(folder) / "pan.zarr", shape=pan_shape, chunks=(SCENE_CHUNK,) * 2,
                                       dtype=np.float32, fill_value=np.nan),
              "ms": zarr.create_array(Path(folder) / "ms.zarr", shape=ms_shape,
                                      chunks=(ms_shape[0], SCENE_CHUNK, SCENE_CHUNK), dtype=np.float32,
                                      fill_value=np.nan)}
    for name, index, block in blocks:
        arrays[name][index] = block
    pan_rows, ms_rows = store_bands(pan_shape, ms_shape, ratio)   # as write_scene_store cuts NumPy arrays
    return (da.from_zarr(arrays["pan"], chunks=(pan_rows, -1)),
            da.from_zarr(arrays["ms"], chunks=(-1, ms_rows, -1)))
