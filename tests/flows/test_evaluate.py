"""Evaluate reads the mosaic, the scene and the reference window by window: its figures are the whole-image
computation's (exactly with one window, to rounding with many), on a real Landsat-8 crop sharpened in process."""
from __future__ import annotations

import numpy as np
import pytest
import rasterio

from flows.evaluate import evaluate_mosaic
from ssdiff_model.inference.pansharpener import Pansharpener
from ssdiff_model.science.metrics import full_resolution, index_scale, reduced_resolution
from ssdiff_model.science.wald import reduced_resolution_pair
from tiling import (
    HRMS,
    MS,
    PAN,
    MosaicAttrs,
    SceneAttrs,
    create_mosaic_store,
    missing_tiles,
    open_mosaic,
    open_scene,
    run_tiles,
    sharpen_array,
)

SETTINGS = {"tile_size": 64, "halo": 8, "seed": 3, "steps": 2}   # one step: both samplers agree


def _mosaic(scene_store, checkpoint, folder, sampler: str):
    """A finished mosaic of the scene, sharpened in this process (the tiled runner, as a Ray actor runs it)."""
    sharpener = Pansharpener.from_checkpoint(checkpoint, device="cpu")
    mosaic = folder / f"mosaic-{sampler}.zarr"
    create_mosaic_store(mosaic, scene_store, sharpener, sampler=sampler, **SETTINGS)
    run_tiles(scene_store, mosaic, sharpener, missing_tiles(mosaic), batch_size=4, seed=SETTINGS["seed"],
              steps=SETTINGS["steps"], sampler=sampler)
    return mosaic


@pytest.fixture(scope="module")
def moved_checkpoint(checkpoint, tmp_path_factory):
    """The tiny checkpoint with its zero-initialised convs moved (conftest.moved_network): a fresh network ignores
    x_t, which would hide which sampler ran."""
    import dataclasses

    import torch

    from ssdiff_model.model.checkpoint import load_checkpoint, save_checkpoint

    ckpt = load_checkpoint(checkpoint)
    generator = torch.Generator().manual_seed(0)
    weights = {name: w + 0.02 * torch.randn(w.shape, generator=generator) if "conv_zero" in name else w
               for name, w in ckpt.weights.items()}
    path = tmp_path_factory.mktemp("moved") / "moved.pt"
    save_checkpoint(dataclasses.replace(ckpt, weights=weights, ema_weights=None), path)
    return path


@pytest.fixture(scope="module")
def mosaic(scene_store, moved_checkpoint, tmp_path_factory):
    return _mosaic(scene_store, moved_checkpoint, tmp_path_factory.mktemp("evaluate"), "release")


@pytest.fixture(scope="module")
def reference(scene_store, tmp_path_factory):
    """A reference on the PAN grid: the MS repeated 2 x 2 plus a ramp (its content matters little)."""
    scene = open_scene(scene_store)
    values = scene[MS].values.repeat(2, axis=1).repeat(2, axis=2) + np.linspace(0, 50, scene[PAN].shape[1])
    path = tmp_path_factory.mktemp("reference") / "reference.tif"
    with rasterio.open(path, "w", driver="GTiff", width=values.shape[2], height=values.shape[1], count=4,
                       dtype="float32", crs=scene[PAN].rio.crs, transform=scene[PAN].rio.transform()) as dst:
        dst.write(values.astype(np.float32))
    return path


def _whole_image(mosaic, reference) -> dict:
    """The indexes computed on whole arrays, as evaluate did before it read windows."""
    fused = open_mosaic(mosaic, dask=False)[HRMS].values.astype(np.float32)
    scene = open_scene(MosaicAttrs.from_attrs(open_mosaic(mosaic).attrs).scene_store, dask=False)
    attrs = SceneAttrs.from_attrs(scene.attrs)
    bits, to_dn = index_scale(attrs.bits, attrs.full_scale)
    with rasterio.open(reference) as src:
        gt = src.read().astype(np.float32)
    return {"full_resolution": full_resolution(fused, scene[MS].values, scene[PAN].values, 2, "Landsat8"),
            "reference": reduced_resolution(fused * to_dn, gt * to_dn, 2, bits)}


@pytest.mark.parametrize("window", [512, 64])
def test_windowed_evaluation_gives_the_whole_image_figures(mosaic, reference, tmp_path, window):
    from PIL import Image

    result = evaluate_mosaic(mosaic, reference=reference, quicklook=tmp_path / "look.png", window=window)
    whole = _whole_image(mosaic, reference)
    for part in ("full_resolution", "reference"):
        ours = {k: result[part][k] for k in whole[part]}
        if window >= 256:   # the crop is one window: the same computation
            assert ours == whole[part]
        else:
            assert ours == pytest.approx(whole[part], rel=1e-9)
    assert result["nan_pixels"] == 0
    assert Image.open(tmp_path / "look.png").size == (3 * 256 + 2 * 4, 256)


def test_quicklook_of_a_large_mosaic_is_decimated(mosaic, tmp_path):
    from PIL import Image

    from flows.evaluate import _reader, write_quicklook

    fused = open_mosaic(mosaic, dask=False)[HRMS]
    scene = open_scene(MosaicAttrs.from_attrs(open_mosaic(mosaic).attrs).scene_store, dask=False)
    png = write_quicklook(tmp_path / "small.png", _reader(scene[MS]), _reader(fused), fused.shape, 2,
                          ["blue", "green", "red", "nir"], max_side=100)
    panel = np.asarray(Image.open(png))[:, :86]
    assert panel.shape[:2] == (86, 86)              # every 3rd pixel of 256
    # The MS panel shows the MS pixel under every 3rd PAN pixel.
    ms = scene[MS].values[[2, 1, 0]][:, np.arange(0, 256, 3) // 2][:, :, np.arange(0, 256, 3) // 2]
    low, high = np.percentile(ms, 2, axis=(1, 2)), np.percentile(ms, 98, axis=(1, 2))
    expected = (np.clip((ms - low[:, None, None]) / (high - low)[:, None, None], 0, 1) * 255).astype(np.uint8)
    assert np.array_equal(panel, expected.transpose(1, 2, 0))


def test_wald_protocol_uses_the_mosaics_sampler(mosaic, scene_store, moved_checkpoint, tmp_path):
    """The reduced-resolution figures are those of the degraded pair sharpened with the mosaic's own settings,
    its sampler ("release" here) included: before, `_wald_indexes` always sampled with the default one."""
    result = evaluate_mosaic(mosaic, reduced=True, quicklook=tmp_path / "look.png", checkpoint=moved_checkpoint,
                             window=64)["reduced_resolution"]
    scene = open_scene(scene_store, dask=False)
    attrs = SceneAttrs.from_attrs(scene.attrs)
    from ssdiff_model.data.pair import PansharpeningPair

    reduced = reduced_resolution_pair(PansharpeningPair(
        pan=scene[PAN].values, ms_lr=scene[MS].values, ratio=2, full_scale=attrs.full_scale, bits=attrs.bits,
        sensor="Landsat8", band_names=attrs.band_names))
    sharpener = Pansharpener.from_checkpoint(moved_checkpoint, device="cpu")
    bits, to_dn = index_scale(attrs.bits, attrs.full_scale)

    def scored(sampler: str) -> dict:
        fused = sharpen_array(sharpener, reduced.pan, reduced.ms_lr, tile=64, halo=8, steps=SETTINGS["steps"], seed=3,
                              full_scale=reduced.full_scale, sampler=sampler)
        return reduced_resolution(fused * to_dn, reduced.gt * to_dn, 2, bits)

    release = scored("release")
    assert {k: result[k] for k in release} == pytest.approx(release, rel=1e-6)
    assert result["pixels"] == list(reduced.gt.shape[1:])
    assert scored("consistent")["Q2n"] != pytest.approx(release["Q2n"], rel=1e-6)


def _previous_wald(scene, attrs: MosaicAttrs, checkpoint, window: int) -> dict:
    """The reduced-resolution figures as `_wald_indexes` computed them before issue #21: the degraded pair and the
    fused image held in memory, sharpened by `sharpen_array`."""
    from flows.evaluate import _reader
    from ssdiff_model.science.sensors import mtf_sensor
    from ssdiff_model.science.windowed import reduced_resolution_windowed, wald_degrade_windowed

    scene_attrs = SceneAttrs.from_attrs(scene.attrs)
    _, to_dn = index_scale(scene_attrs.bits, scene_attrs.full_scale)
    bands, rows, cols = scene[MS].shape
    pan_lr, ms_lr = wald_degrade_windowed(_reader(scene[PAN]), _reader(scene[MS]), (bands, rows, cols), 2,
                                          mtf_sensor(scene_attrs.sensor), window)
    fused = sharpen_array(Pansharpener.from_checkpoint(checkpoint), pan_lr, ms_lr, tile=attrs.tile_size,
                          halo=attrs.halo, steps=attrs.steps, seed=attrs.seed, full_scale=scene_attrs.full_scale,
                          sampler=attrs.sampler)
    return reduced_resolution_windowed(lambda r, c: fused[:, r[:, None], c] * to_dn, _reader(scene[MS], to_dn),
                                       (bands, rows, cols), 2, window)


def test_wald_protocol_through_stores_gives_the_in_memory_figures(mosaic, scene_store, moved_checkpoint):
    """Issue #21: the degraded pair goes to temporary stores block by block; the figures are exactly those of the
    pair held in memory (the same float32 blocks, the same scene store statistics, the same tiles)."""
    from flows.evaluate import _wald_indexes

    scene = open_scene(scene_store, dask=False)
    attrs = MosaicAttrs.from_attrs(open_mosaic(mosaic).attrs)
    _, to_dn = index_scale(SceneAttrs.from_attrs(scene.attrs).bits, SceneAttrs.from_attrs(scene.attrs).full_scale)
    ours = _wald_indexes(scene, attrs, moved_checkpoint, to_dn, 64)
    previous = _previous_wald(scene, attrs, moved_checkpoint, 64)
    assert {k: ours[k] for k in previous} == previous
