"""Evaluate: quality indexes of a mosaic and a quicklook PNG.

- full resolution (always): D_lambda, D_s and HQNR of the mosaic against its own scene's PAN and MS;
- against a reference (``--reference GT``, a GeoTIFF of the MS bands on the PAN grid): SAM, ERGAS, SCC, Q, Q2n;
- reduced resolution (``--reduced``): Wald's protocol on the same scene: PAN and MS degraded by the ratio are
  sharpened with the mosaic's own checkpoint and settings, and scored against the original MS.
The indexes are returned and recorded in the mosaic's attributes (``quality``).
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from prefect import task

from flows.retry import transient_failure
from ssdiff_model.data.pair import PansharpeningPair
from ssdiff_model.errors import BadInput
from ssdiff_model.science.metrics import full_resolution, index_scale, reduced_resolution
from ssdiff_model.science.sensors import get_sensor
from ssdiff_model.science.wald import reduced_resolution_pair
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
    sharpen_array,
)
from tiling.integrity import verify_mosaic

__all__ = ["default_quicklook_path", "evaluate_mosaic", "evaluate_task", "write_quicklook"]

PathLike = str | os.PathLike
METRIC_BLOCK = 32   # the toolbox's block size: full-resolution indexes need image sides that are multiples of it


def _metric_sensor(name: str | None) -> str:
    """The sensor whose MTF the indexes use; the toolbox's generic one ('none') for sensors it does not know."""
    try:
        return get_sensor(name or "none").name
    except ValueError:
        return "none"


def _full_resolution_indexes(fused: np.ndarray, ms: np.ndarray, pan: np.ndarray, ratio: int,
                             sensor: str) -> dict[str, Any]:
    # Crop to whole metric blocks (the toolbox's indexes need them), keeping the MS aligned with the PAN.
    step = math.lcm(METRIC_BLOCK, ratio)
    rows, cols = pan.shape[0] // step * step, pan.shape[1] // step * step
    if not rows or not cols:
        return {"skipped": f"scene {pan.shape} smaller than one {step}-pixel block"}
    fused, pan, ms = fused[:, :rows, :cols], pan[:rows, :cols], ms[:, :rows // ratio, :cols // ratio]
    if not (np.isfinite(fused).all() and np.isfinite(pan).all() and np.isfinite(ms).all()):
        return {"skipped": "the scene has nodata pixels; the full-resolution indexes need complete images"}
    indexes = full_resolution(fused, ms, pan, ratio, sensor)
    return {**{k: float(v) for k, v in indexes.items()}, "pixels": [rows, cols]}


def _read_reference(reference_path: PathLike, shape: tuple[int, ...]) -> np.ndarray:
    import rioxarray

    path = objstore.location(reference_path) if objstore.is_url(reference_path) else Path(reference_path)
    objstore.require_reachable(path, writable=False, what="reference")
    if not objstore.is_file(path):
        raise FileNotFoundError(f"{path}: no such reference file")
    try:
        with objstore.gdal_env(), rioxarray.open_rasterio(path, mask_and_scale=False) as data:
            reference = data.values.astype(np.float32)
    except Exception as err:  # rasterio raises many types; name the file whatever the cause
        raise BadInput(f"{path}: unreadable reference ({type(err).__name__}: {err})") from err
    if reference.shape != tuple(shape):
        raise BadInput(f"{path}: reference has shape {reference.shape}, the mosaic {tuple(shape)} "
                         f"(bands, rows, cols on the PAN grid)")
    return reference


def _wald_indexes(scene, mosaic_attrs: MosaicAttrs, checkpoint: PathLike | None, bits: int,
                  to_dn: float) -> dict[str, Any]:
    """Wald's protocol on the scene: sharpen the degraded pair with the mosaic's checkpoint and settings (in this
    process: the reduced scene is ratio^2 times smaller than the mosaic) and score it against the original MS."""
    from ssdiff_model.inference.pansharpener import Pansharpener

    pan, ms = scene[PAN].values, scene[MS].values
    if not (np.isfinite(pan).all() and np.isfinite(ms).all()):
        return {"skipped": "the scene has nodata pixels; Wald's protocol needs complete images"}
    scene_attrs = SceneAttrs.from_attrs(scene.attrs)
    ratio = scene_attrs.ratio
    checkpoint = checkpoint or mosaic_attrs.checkpoint
    sharpener = Pansharpener.from_checkpoint(checkpoint)
    if sharpener.checkpoint_hash != mosaic_attrs.checkpoint_hash:
        raise BadInput(f"{checkpoint}: not the checkpoint the mosaic was made with (hash "
                         f"{sharpener.checkpoint_hash[:12]}..., the mosaic records "
                         f"{mosaic_attrs.checkpoint_hash[:12]}...)")
    pair = PansharpeningPair(pan=pan, ms_lr=ms, ratio=ratio, full_scale=scene_attrs.full_scale,
                             bits=scene_attrs.bits, sensor=_metric_sensor(scene_attrs.sensor),
                             band_names=scene_attrs.band_names, crs=scene[PAN].rio.crs,
                             pan_transform=scene[PAN].rio.transform())
    reduced = reduced_resolution_pair(pair)
    fused = sharpen_array(sharpener, reduced.pan, reduced.ms_lr, tile=mosaic_attrs.tile_size,
                          halo=mosaic_attrs.halo, steps=mosaic_attrs.steps, seed=mosaic_attrs.seed,
                          full_scale=reduced.full_scale)
    indexes = reduced_resolution(fused * to_dn, reduced.gt * to_dn, ratio, bits)
    return {**{k: float(v) for k, v in indexes.items()}, "pixels": list(reduced.gt.shape[1:])}


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


def write_quicklook(path: PathLike, ms: np.ndarray, fused: np.ndarray, ratio: int, band_names: Sequence[str],
                    reference: np.ndarray | None = None, max_side: int = 1024) -> Path:
    """A PNG of panels side by side: the input MS in true colour (nearest-upsampled to the PAN grid), the
    mosaic with the same stretch, and with a reference the absolute error averaged over bands (black = none)."""
    from PIL import Image

    rgb = _rgb_bands(band_names)
    step = max(1, math.ceil(max(fused.shape[1:]) / max_side))
    ms_up = ms[rgb].repeat(ratio, axis=1).repeat(ratio, axis=2)[:, :fused.shape[1]:step, :fused.shape[2]:step]
    out = fused[rgb][:, ::step, ::step]
    low, high = np.nanpercentile(ms[rgb], 2, axis=(1, 2)), np.nanpercentile(ms[rgb], 98, axis=(1, 2))
    panels = [_stretch(ms_up, low, high), _stretch(out, low, high)]
    if reference is not None:
        error = np.abs(fused - reference).mean(axis=0)[::step, ::step]
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
                    quicklook: PathLike | None = None, checkpoint: PathLike | None = None) -> dict[str, Any]:
    """Indexes of a finished mosaic (see the module docstring) and its quicklook PNG (default: beside the store,
    ``<name>.quicklook.png``). Records the indexes in the mosaic's attributes and returns them.

    Every finished tile is verified first (tiling.integrity.verify_mosaic: chunk checksums, missing chunks, values
    outside [0, full scale]): a damaged mosaic is a ValueError naming its tiles, never scored."""
    mosaic = open_mosaic(mosaic_store)
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
    scene = open_scene(attrs.scene_store)
    scene_attrs = SceneAttrs.from_attrs(scene.attrs)
    ratio = attrs.ratio
    bits, to_dn = index_scale(scene_attrs.bits, scene_attrs.full_scale)
    sensor = _metric_sensor(scene_attrs.sensor)
    fused = mosaic[HRMS].values.astype(np.float32)
    pan, ms = scene[PAN].values, scene[MS].values
    results: dict[str, Any] = {"mosaic_store": str(mosaic_store), "metric_sensor": sensor,
                               "verified_tiles": len(grid),
                               "nan_pixels": int(np.isnan(fused).sum()),
                               "full_resolution": _full_resolution_indexes(fused, ms, pan, ratio, sensor)}
    reference_image = None
    if reference is not None:
        reference_image = _read_reference(reference, fused.shape)
        results["reference"] = {k: float(v) for k, v in reduced_resolution(fused * to_dn, reference_image * to_dn,
                                                                           ratio, bits).items()}
    if reduced:
        results["reduced_resolution"] = _wald_indexes(scene, attrs, checkpoint, bits, to_dn)
    if not quicklook:
        quicklook = default_quicklook_path(mosaic_store)
    elif not objstore.is_url(quicklook):
        quicklook = Path(quicklook)
    results["quicklook"] = str(write_quicklook(quicklook, ms, fused, ratio, scene_attrs.band_names,
                                               reference_image))
    record_provenance(mosaic_store, quality={k: v for k, v in results.items() if k != "mosaic_store"})
    return results


@task(name="evaluate", retries=1, retry_delay_seconds=5, retry_condition_fn=transient_failure)
def evaluate_task(mosaic_store: str, reference: str | None = None, reduced: bool = False,
                  quicklook: str | None = None, checkpoint: str | None = None) -> dict:
    return evaluate_mosaic(mosaic_store, reference=reference, reduced=reduced, quicklook=quicklook,
                           checkpoint=checkpoint)
