"""Evaluate: quality indexes of a mosaic and a quicklook PNG.

- full resolution (always): D_lambda, D_s and HQNR of the mosaic against its own scene's PAN and MS;
- against a reference (``--reference GT``, a GeoTIFF of the MS bands on the PAN grid): SAM, ERGAS, SCC, Q, Q2n;
- reduced resolution (``--reduced``): Wald's protocol on the same scene: PAN and MS degraded by the ratio are
  sharpened with the mosaic's own checkpoint and settings, and scored against the original MS.
The indexes are returned and recorded in the mosaic's attributes (``quality``). Every image is read window by
window (ssdiff_model.science.windowed), the quicklook decimated: memory is bounded by a window, not the scene.
"""
from __future__ import annotations

import math
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from prefect import task

from flows.retry import transient_failure
from ssdiff_model.errors import BadInput
from ssdiff_model.science.metrics import index_scale
from ssdiff_model.science.sensors import mtf_sensor
from ssdiff_model.science.windowed import (
    WINDOW,
    Incomplete,
    Reader,
    full_resolution_windowed,
    reduced_resolution_windowed,
    spans,
    wald_degrade_blocks,
)
from tiling import (
    HRMS,
    MS,
    PAN,
    MosaicAttrs,
    SceneAttrs,
    missing_tiles,
    mosaic_grid,
    objstore,
    open_mosaic,
    open_scene,
    record_provenance,
    sharpen_to_stores,
)
from tiling.in_memory import blocks_to_zarr
from tiling.integrity import verify_mosaic

__all__ = ["default_quicklook_path", "evaluate_mosaic", "evaluate_task", "write_quicklook"]

PathLike = str | os.PathLike
METRIC_BLOCK = 32   # the toolbox's block size: full-resolution indexes need image sides that are multiples of it
# GDAL's block cache (MB) while reading the reference: its default, 5% of the machine's memory, kept every block
# of the reference read window by window, so the peak grew with the scene (bench/stage_memory.py).
GDAL_CACHE_MB = 64


def _index_runs(index: np.ndarray, span: int) -> list[tuple[int, int]]:
    """[start, stop) positions in sorted `index` of groups whose values lie within `span` of each other."""
    groups, start = [], 0
    for position in range(1, len(index) + 1):
        if position == len(index) or index[position] - index[start] >= span:
            groups.append((start, position))
            start = position
    return groups


def _reader(array, scale: float | None = None) -> Reader:
    """A reader (ssdiff_model.science.windowed) of a lazily indexed DataArray (Zarr store, or GeoTIFF opened by
    rioxarray): any sorted index set is read as bounding windows of at most WINDOW x WINDOW pixels, each a plain
    slice (one window read for GeoTIFFs; Zarr reads the chunks it touches), so a strided or wrapped read of the
    whole image never loads it whole. `scale`: multiply by it in float32, as the DN scaling always did."""
    y, x = array.dims[-2:]

    def read(rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        out = np.empty(array.shape[:-2] + (len(rows), len(cols)), dtype=np.float32)
        for r0, r1 in _index_runs(rows, WINDOW):
            for c0, c1 in _index_runs(cols, WINDOW):
                block = array.isel({y: slice(int(rows[r0]), int(rows[r1 - 1]) + 1),
                                    x: slice(int(cols[c0]), int(cols[c1 - 1]) + 1)}).values
                out[..., r0:r1, c0:c1] = block[..., rows[r0:r1] - rows[r0], :][..., cols[c0:c1] - cols[c0]]
        return out if scale is None else out * scale

    return read


def _full_resolution_indexes(fused, ms, pan, ratio: int, sensor: str, window: int) -> dict[str, Any]:
    """D_lambda, D_s, HQNR of the mosaic `fused` (B, H, W) against its scene's `ms` and `pan` (lazy DataArrays),
    window by window (ssdiff_model.science.windowed)."""
    # Crop to whole metric blocks (the toolbox's indexes need them), keeping the MS aligned with the PAN.
    step = math.lcm(METRIC_BLOCK, ratio)
    rows, cols = pan.shape[0] // step * step, pan.shape[1] // step * step
    if not rows or not cols:
        return {"skipped": f"scene {tuple(pan.shape)} smaller than one {step}-pixel block"}
    try:
        indexes = full_resolution_windowed(_reader(fused), _reader(ms), _reader(pan), (fused.shape[0], rows, cols),
                                           ratio, sensor, window)
    except Incomplete:
        return {"skipped": "the scene has nodata pixels; the full-resolution indexes need complete images"}
    return {**{k: float(v) for k, v in indexes.items()}, "pixels": [rows, cols]}


@contextmanager
def _open_reference(reference_path: PathLike, shape: tuple[int, ...]):
    """A reader of the reference GeoTIFF, read lazily (windows as the indexes need them)."""
    import rasterio
    import rioxarray

    path = objstore.as_path(reference_path)
    objstore.require_reachable(path, writable=False, what="reference")
    if not objstore.is_file(path):
        raise FileNotFoundError(f"{path}: no such reference file")

    def unreadable(err: Exception) -> BadInput:  # rasterio raises many types; name the file whatever the cause
        return BadInput(f"{path}: unreadable reference ({type(err).__name__}: {err})")

    with objstore.gdal_env(), rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB):
        try:
            data = rioxarray.open_rasterio(path, mask_and_scale=False)
        except Exception as err:
            raise unreadable(err) from err
        with data:
            if data.shape != tuple(shape):
                raise BadInput(f"{path}: reference has shape {data.shape}, the mosaic {tuple(shape)} "
                               f"(bands, rows, cols on the PAN grid)")
            read = _reader(data)

            def checked(rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
                try:
                    return read(rows, cols)
                except Exception as err:
                    raise unreadable(err) from err

            yield checked


def _nan_pixels(fused) -> int:
    """NaN values in the mosaic, counted window by window."""
    read, (height, width) = _reader(fused), fused.shape[1:]
    return sum(int(np.isnan(read(np.arange(r0, r1), np.arange(c0, c1))).sum())
               for r0, r1 in spans(height, WINDOW, 1) for c0, c1 in spans(width, WINDOW, 1))


def _wald_indexes(scene, mosaic_attrs: MosaicAttrs, checkpoint: PathLike | None, to_dn: float,
                  window: int) -> dict[str, Any]:
    """Wald's protocol on the scene: sharpen the degraded pair with the mosaic's checkpoint and settings (sampler
    included) and score it against the original MS.

    Memory is bounded by a window and a tile at every stage (issue #21): the scene is degraded window by window
    (ssdiff_model.science.windowed.wald_degrade_blocks) into temporary Zarr arrays, which go, a band of rows at a
    time, to a temporary scene store sharpened by the tiled runner into a temporary mosaic store
    (tiling.in_memory.sharpen_to_stores, as `sharpen_array` does); the mosaic is scored window by window. The
    figures are those of the pair held in memory and sharpened by `sharpen_array`.

    Args:
        scene: the mosaic's scene store (lazily indexed Dataset).
        mosaic_attrs: the mosaic's attributes (checkpoint, tile, halo, steps, seed, sampler).
        checkpoint: the checkpoint to sharpen with (None: the mosaic's); it must be the one the mosaic used.
        to_dn: factor from the stored values to the indexes' DN.
        window: window side in pixels.

    Returns:
        The indexes and the scored "pixels", or {"skipped": why}.
    """
    from ssdiff_model.inference.pansharpener import Pansharpener

    scene_attrs = SceneAttrs.from_attrs(scene.attrs)
    ratio = scene_attrs.ratio
    checkpoint = checkpoint or mosaic_attrs.checkpoint
    sharpener = Pansharpener.from_checkpoint(checkpoint)
    if sharpener.checkpoint_hash != mosaic_attrs.checkpoint_hash:
        raise BadInput(f"{checkpoint}: not the checkpoint the mosaic was made with (hash "
                         f"{sharpener.checkpoint_hash[:12]}..., the mosaic records "
                         f"{mosaic_attrs.checkpoint_hash[:12]}...)")
    # As wald.reduced_resolution_example: the MS cropped to a multiple of the ratio (the PAN with it).
    bands, rows, cols = scene[MS].shape
    rows, cols = rows // ratio * ratio, cols // ratio * ratio
    if not rows or not cols:
        return {"skipped": f"MS {tuple(scene[MS].shape[1:])} smaller than the ratio {ratio}"}
    with tempfile.TemporaryDirectory(prefix="ssdiff-wald-") as tmp:
        blocks = wald_degrade_blocks(_reader(scene[PAN]), _reader(scene[MS]), (bands, rows, cols), ratio,
                                     mtf_sensor(scene_attrs.sensor), window)
        try:
            pan_lr, ms_lr = blocks_to_zarr(blocks, tmp, (rows, cols), (bands, rows // ratio, cols // ratio), ratio)
        except Incomplete:
            return {"skipped": "the scene has nodata pixels; Wald's protocol needs complete images"}
        mosaic = sharpen_to_stores(sharpener, pan_lr, ms_lr, tmp, tile=mosaic_attrs.tile_size,
                                   halo=mosaic_attrs.halo, steps=mosaic_attrs.steps, seed=mosaic_attrs.seed,
                                   full_scale=scene_attrs.full_scale, sampler=mosaic_attrs.sampler,
                                   back_projection=mosaic_attrs.back_projection, ensemble=mosaic_attrs.ensemble,
                                   sensor=scene_attrs.sensor)
        fused = open_mosaic(mosaic, dask=False)[HRMS]   # lazily indexed: read a window at a time
        indexes = reduced_resolution_windowed(_reader(fused, to_dn), _reader(scene[MS], to_dn), (bands, rows, cols),
                                              ratio, window)
    return {**{k: float(v) for k, v in indexes.items()}, "pixels": [rows, cols]}


def _rgb_bands(band_names: Sequence[str]) -> list[int]:
    """Indices of red, green and blue when the band names say so; else the first three bands in reverse order
    (most sensors list blue, green, red first); a single band is shown as grey."""
    names = [str(n).lower() for n in band_names]
    if all(colour in names for colour in ("red", "green", "blue")):
        return [names.index("red"), names.index("green"), names.index("blue")]
    if len(names) >= 3:
        return [2, 1, 0]
    return [0, 0, 0]


def _stretch(image: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    scaled = (image - low[:, None, None]) / np.maximum(high - low, 1e-6)[:, None, None]
    return (np.nan_to_num(np.clip(scaled, 0, 1)) * 255).astype(np.uint8).transpose(1, 2, 0)


def write_quicklook(path: PathLike, read_ms: Reader, read_fused: Reader, shape: tuple[int, int, int], ratio: int,
                    band_names: Sequence[str], read_reference: Reader | None = None, max_side: int = 1024) -> Path:
    """A PNG of panels side by side: the input MS in true colour (nearest-upsampled to the PAN grid), the
    mosaic with the same stretch, and with a reference the absolute error averaged over bands (black = none).

    Every image is read decimated (every `step`-th PAN pixel, the MS pixel under it), window by window, so memory
    is the PNG's, whatever the scene; the stretch's percentiles come from the decimated MS it shows.

    Args:
        path: the PNG (local, or an object-store URL).
        read_ms, read_fused, read_reference: readers (ssdiff_model.science.windowed.Reader) of the MS, the mosaic
            and the reference (same units as the mosaic), or None for no error panel.
        shape: the mosaic's (B, H, W).
        ratio: PAN/MS scale ratio.
        band_names: the bands' names (to pick red, green, blue).
        max_side: the longest side of a panel in pixels.

    Returns:
        `path`.
    """
    from PIL import Image

    rgb = _rgb_bands(band_names)
    step = max(1, math.ceil(max(shape[1:]) / max_side))
    rows, cols = np.arange(0, shape[1], step), np.arange(0, shape[2], step)
    ms_up = read_ms(rows // ratio, cols // ratio)[rgb]
    fused = read_fused(rows, cols)
    low, high = np.nanpercentile(ms_up, 2, axis=(1, 2)), np.nanpercentile(ms_up, 98, axis=(1, 2))
    panels = [_stretch(ms_up, low, high), _stretch(fused[rgb], low, high)]
    if read_reference is not None:
        error = np.abs(fused - read_reference(rows, cols)).mean(axis=0)
        scale = max(float(np.nanpercentile(error, 99)), 1e-6)
        grey = (np.nan_to_num(np.clip(error / scale, 0, 1)) * 255).astype(np.uint8)
        panels.append(np.stack([grey, grey // 2, np.zeros_like(grey)], axis=-1))  # dark red to orange: more error
    gap = np.full((panels[0].shape[0], 4, 3), 255, dtype=np.uint8)
    strip = np.concatenate([p if i == 0 else np.concatenate([gap, p], axis=1) for i, p in enumerate(panels)], axis=1)
    if objstore.is_url(path):   # beside an object-store mosaic: one PUT of the encoded PNG
        import io

        encoded = io.BytesIO()
        Image.fromarray(strip).save(encoded, format="PNG")
        fs, inner = objstore.filesystem(objstore.location(path))
        fs.pipe_file(inner, encoded.getvalue())
        return path
    path = Path(path)
    Image.fromarray(strip).save(path)
    return path


def default_quicklook_path(mosaic_store: PathLike) -> Path | str:
    if objstore.is_url(mosaic_store):
        return objstore.sibling(mosaic_store, objstore.name(mosaic_store).removesuffix(".zarr") + ".quicklook.png")
    store = Path(mosaic_store)
    return store.with_name(f"{store.stem}.quicklook.png")


def evaluate_mosaic(mosaic_store: PathLike, *, reference: PathLike | None = None, reduced: bool = False,
                    quicklook: PathLike | None = None, checkpoint: PathLike | None = None,
                    window: int = WINDOW) -> dict[str, Any]:
    """Indexes of a finished mosaic (see the module docstring) and its quicklook PNG (default: beside the store,
    ``<name>.quicklook.png``). Records the indexes in the mosaic's attributes and returns them.

    The images are read window by window (`window` PAN pixels a side, ssdiff_model.science.windowed): memory is
    bounded by the window, and the figures are the whole-image ones.

    Every finished tile is verified first (tiling.integrity.verify_mosaic: chunk checksums, missing chunks, values
    outside [0, full scale]): a damaged mosaic is a ValueError naming its tiles, never scored."""
    # Lazily indexed arrays (no dask graph): every stage reads windows of them (bounded memory, README "evaluate").
    mosaic = open_mosaic(mosaic_store, dask=False)
    attrs = MosaicAttrs.from_attrs(mosaic.attrs)
    grid = mosaic_grid(mosaic_store)
    damaged = verify_mosaic(mosaic_store, grid, attrs.full_scale, attrs.manifest_codes)
    if damaged:
        shown = "; ".join(map(str, damaged[:4])) + (f"; and {len(damaged) - 4} more" if len(damaged) > 4 else "")
        raise BadInput(f"{mosaic_store}: {len(damaged)} damaged tile(s): {shown}; rerun `ssdiff sharpen` with the "
                         f"same arguments, it sharpens them again")
    missing = missing_tiles(mosaic_store)
    if missing:
        raise BadInput(f"{mosaic_store}: {len(missing)} tiles are not sharpened yet; rerun `ssdiff sharpen` "
                         f"to finish it before evaluating")
    scene = open_scene(attrs.scene_store, dask=False)
    scene_attrs = SceneAttrs.from_attrs(scene.attrs)
    ratio = attrs.ratio
    _, to_dn = index_scale(scene_attrs.bits, scene_attrs.full_scale)
    sensor = mtf_sensor(scene_attrs.sensor)
    fused, pan, ms = mosaic[HRMS], scene[PAN], scene[MS]
    results: dict[str, Any] = {"mosaic_store": str(mosaic_store), "metric_sensor": sensor,
                               "verified_tiles": len(grid),
                               "nan_pixels": _nan_pixels(fused),
                               "full_resolution": _full_resolution_indexes(fused, ms, pan, ratio, sensor, window)}
    if not quicklook:
        quicklook = default_quicklook_path(mosaic_store)
    elif not objstore.is_url(quicklook):
        quicklook = Path(quicklook)
    if reference is None:
        results["quicklook"] = str(write_quicklook(quicklook, _reader(ms), _reader(fused), fused.shape, ratio,
                                                   scene_attrs.band_names))
    else:
        with _open_reference(reference, fused.shape) as read_reference:
            try:
                indexes = reduced_resolution_windowed(_reader(fused, to_dn),
                                                      lambda rows, cols: read_reference(rows, cols) * to_dn,
                                                      fused.shape, ratio, window)
            except Incomplete as err:
                raise BadInput(f"{reference}: {err}") from err
            results["reference"] = {k: float(v) for k, v in indexes.items()}
            results["quicklook"] = str(write_quicklook(quicklook, _reader(ms), _reader(fused), fused.shape, ratio,
                                                       scene_attrs.band_names, read_reference))
    if reduced:
        results["reduced_resolution"] = _wald_indexes(scene, attrs, checkpoint, to_dn, window)
    record_provenance(mosaic_store, quality={k: v for k, v in results.items() if k != "mosaic_store"})
    return results


@task(name="evaluate", retries=1, retry_delay_seconds=5, retry_condition_fn=transient_failure)
def evaluate_task(mosaic_store: str, reference: str | None = None, reduced: bool = False,
                  quicklook: str | None = None, checkpoint: str | None = None) -> dict:
    return evaluate_mosaic(mosaic_store, reference=reference, reduced=reduced, quicklook=quicklook,
                           checkpoint=checkpoint)
