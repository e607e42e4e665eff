"""The public API end to end on real Landsat-8 crops (PAN 15 m, MS bands 2-5 at 30 m, ratio 2): numpy arrays
(tiled, one-shot, tiles), the full scale, and georeferenced DataArrays."""
import dataclasses

import numpy as np
import pytest
import rasterio
import torch
from affine import Affine
from conftest import landsat_crop, moved_network, write_crop
from rasterio.windows import Window
from scipy.ndimage import gaussian_filter

from ssdiff_model.inference.pansharpener import Pansharpener
from ssdiff_model.inference.position_noise import window_noise
from ssdiff_model.inference.tile_grid import TileGrid
from ssdiff_model.inference.xarray_api import sharpen_dataarray
from ssdiff_model.model.checkpoint import Checkpoint, save_checkpoint
from ssdiff_model.model.dihedral import dihedral, undo_dihedral
from ssdiff_model.model.network import SSDiffNet
from ssdiff_model.science.equalization import BAND_GAIN_MAX, BAND_GAIN_MIN, PanEqualization, pan_equalization
from ssdiff_model.science.radiometry import RadiometryError
from ssdiff_model.science.resample import decimate, mtf_filter, upsample_ms
from tiling import sharpen_array

FULL_SCALE = 65535.0  # Landsat-8 Level-1 stores the 12-bit samples rescaled to 16 bits
BAND_NAMES = ["blue", "green", "red", "nir"]


@pytest.fixture(scope="module")
def checkpoint_path(tmp_path_factory):
    """A small untrained 4-band ratio-2 model; EMA weights deliberately differ from the raw ones."""
    torch.manual_seed(0)
    net = moved_network(SSDiffNet(bands=4, ratio=2, width=16, time_embed_dim=32, time_hidden_dim=64))
    weights = {k: v.detach().clone() for k, v in net.state_dict().items()}
    path = tmp_path_factory.mktemp("ckpt") / "landsat-small.pt"
    digest = save_checkpoint(Checkpoint(
        config=net.config, weights=weights, ema_weights={k: 0.9 * v for k, v in weights.items()},
        full_scale=FULL_SCALE, sensor="Landsat8", band_names=BAND_NAMES, ratio=2,
        training={"data_sources": [], "iterations": 0, "lbaf_phase": None, "lora": None}), path, half=True)
    return path, digest


@pytest.fixture(scope="module")
def sharpener(checkpoint_path):
    return Pansharpener.from_checkpoint(checkpoint_path[0], device="cpu")


def read_crop(scene, row: int, col: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """PAN (size, size) and MS bands 2-5 (4, size/2, size/2) over the same area, uint16 DN."""
    with rasterio.open(scene["B8"]) as src:
        pan = src.read(1, window=Window(2 * col, 2 * row, size, size))
    ms = []
    for band in ("B2", "B3", "B4", "B5"):
        with rasterio.open(scene[band]) as src:
            ms.append(src.read(1, window=Window(col, row, size // 2, size // 2)))
    return pan, np.stack(ms)


def test_sharpen_a_real_crop(sharpener, checkpoint_path, landsat_scene):
    pan, ms = read_crop(landsat_scene, row=250, col=300, size=64)
    assert pan.dtype == np.uint16 and pan.max() > 0
    hrms = sharpener.sharpen(pan, ms, steps=3, seed=0)
    assert hrms.shape == (4, 64, 64) and hrms.dtype == np.float32
    assert np.isfinite(hrms).all() and hrms.min() >= 0 and hrms.max() <= FULL_SCALE
    assert hrms.std() > 0
    assert np.array_equal(hrms, sharpener.sharpen(pan, ms, steps=3, seed=0))  # same seed, same image
    assert not np.array_equal(hrms, sharpener.sharpen(pan, ms, steps=3, seed=1))
    assert (sharpener.bands, sharpener.ratio, sharpener.full_scale) == (4, 2, FULL_SCALE)
    assert sharpener.sensor == "Landsat8" and sharpener.band_names == BAND_NAMES
    assert sharpener.checkpoint_hash == checkpoint_path[1] and sharpener.config["width"] == 16


def test_sizes_the_network_cannot_take_are_padded(sharpener, landsat_scene):
    pan, ms = read_crop(landsat_scene, row=100, col=100, size=66)  # 66 is not a multiple of 4
    for hrms in (sharpener.sharpen(pan, ms, steps=1, tile=32, halo=8), sharpener.sharpen_whole(pan, ms, steps=1)):
        assert hrms.shape == (4, 66, 66) and np.isfinite(hrms).all()


def holed(pan: np.ndarray, ms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """float32 copies with nodata (NaN): a PAN block that covers whole tiles, a PAN speck, an MS hole in one band."""
    pan, ms = pan.astype(np.float32), ms.astype(np.float32)
    pan[:40, :40] = np.nan      # holds the whole cores of four tiles of a 32/8 grid: they are skipped
    pan[70, 3:9] = np.nan
    ms[2, 30:34, 20:25] = np.nan
    return pan, ms


@pytest.mark.parametrize("equalizes", [False, True], ids=["plain", "band-equalizing"])
def test_sharpen_is_the_pipelines_mosaic_bit_for_bit(sharpener, landsat_scene, equalizes):
    """Pansharpener.sharpen and the pipeline's path through Zarr stores and run_tiles share the grid, the noise and
    the sampling loop: their pixels are equal, nodata included, whatever the image size against the grid."""
    model = sharpener if not equalizes else Pansharpener(
        sharpener.net, full_scale=FULL_SCALE, ratio=2, sensor="Landsat8", band_names=BAND_NAMES,
        equalizes_pan=True, equalizes_bands=True, device="cpu")
    pan, ms = holed(*read_crop(landsat_scene, row=220, col=180, size=100))
    pan, ms = pan[:, :84], ms[:, :, :42]   # 100 x 84: neither a multiple of the core (16) nor of the tile
    settings = dict(steps=2, seed=5, tile=32, halo=8, batch_size=3)
    hrms = model.sharpen(pan, ms, **settings)
    mosaic = sharpen_array(model, pan, ms, **settings)
    assert hrms.shape == (4, 100, 84) and hrms.dtype == np.float32
    np.testing.assert_array_equal(hrms, mosaic)   # NaN where NaN, every other pixel equal
    assert np.isnan(hrms[:, :40, :40]).all() and np.isnan(hrms[:, 70, 3:9]).all()
    assert np.isnan(hrms[2, 60:68, 40:50]).all() and np.isfinite(hrms[[0, 1, 3], 60:68, 40:50]).all()
    assert np.isfinite(hrms).sum() > 0.8 * hrms.size
    # what a tile writes is its window (shifted inwards at the edge) sampled alone from the noise at its global
    # position, cut to its core
    tile = TileGrid(height=100, width=84, ratio=2, tile_size=32, halo=8).tile(1, 4)   # at the edge, no nodata
    noise = window_noise(5, 4, tile.window_y0, tile.window_x0, 32, 32)
    window = model.sharpen_tiles(pan[None, tile.window[0], tile.window[1]], ms[None, :, tile.ms_window[0],
                                 tile.ms_window[1]], noise[None], steps=2, full_scale=FULL_SCALE,
                                 equalization=pan_equalization(pan, ms, 2) if equalizes else None)[0]
    np.testing.assert_allclose(hrms[(slice(None), *tile.core)], window[(slice(None), *tile.core_in_window)],
                               rtol=0, atol=0.5)   # DN: a batch of 3 changes the arithmetic's last bits only
    assert not np.array_equal(hrms, model.sharpen(pan, ms, **{**settings, "seed": 6}), equal_nan=True)


def test_16_bit_data_beyond_the_checkpoints_full_scale_are_not_clipped(sharpener, landsat_scene):
    """An 8-bit checkpoint (full scale 255, as ssdiff-landsat-r2) given uint16 Landsat-8 DN: the full scale is
    inferred from the data (16 bits) with a warning that names what to pass, never the checkpoint's 255."""
    eight_bit = Pansharpener(sharpener.net, full_scale=255.0, ratio=2, sensor="Landsat7", band_names=BAND_NAMES,
                             device="cpu")
    pan, ms = read_crop(landsat_scene, row=250, col=300, size=64)
    assert pan.dtype == np.uint16 and min(pan.max(), ms.max()) > 255
    settings = dict(steps=2, tile=32, halo=8)
    with pytest.warns(UserWarning, match=r"full scale 255\): uint16 DN .* 16-bit DN, full scale 65535.*full_scale="):
        hrms = eight_bit.sharpen(pan, ms, **settings)
    assert hrms.max() > 255
    np.testing.assert_array_equal(hrms, sharpener.sharpen(pan, ms, **settings, full_scale=65535))
    with pytest.warns(UserWarning, match="full scale 65535"):
        assert eight_bit.sharpen_whole(pan, ms, steps=1).max() > 255
    # a full scale the caller declares wins; pixels above it saturate, and the warning counts them
    with pytest.warns(UserWarning, match="exceed the full scale 255 .* saturate"):
        assert eight_bit.sharpen(pan, ms, **settings, full_scale=255).max() <= 255
    # what cannot be decided is refused, naming what to pass
    with pytest.raises(RadiometryError, match=r"beyond 16-bit DN.*full_scale="):
        eight_bit.sharpen(pan * 100.0, ms * 100.0, **settings)
    with pytest.raises(RadiometryError, match="int32 data hold negative values"):
        eight_bit.sharpen(pan.astype(np.int32) - 9000, ms.astype(np.int32) - 9000, **settings)


def test_tiles_are_sharpened_independently(sharpener, landsat_scene):
    crops = [read_crop(landsat_scene, row=r, col=c, size=32) for r, c in ((50, 60), (400, 200))]
    pan, ms = np.stack([p for p, _ in crops]), np.stack([m for _, m in crops])
    noise = torch.randn((2, 4, 32, 32), generator=torch.Generator().manual_seed(3)).numpy()
    together = sharpener.sharpen_tiles(pan, ms, noise, steps=2)
    assert together.shape == (2, 4, 32, 32) and together.dtype == np.float32
    alone = sharpener.sharpen_tiles(pan[1:], ms[1:], noise[1:], steps=2)
    # batching changes nothing real: float32 last bits, carried by the sampler (see test_tiling_mosaic)
    np.testing.assert_allclose(together[1:], alone, rtol=0, atol=1e-4 * FULL_SCALE)


def test_ema_weights_are_the_default(checkpoint_path, sharpener, landsat_scene):
    pan, ms = read_crop(landsat_scene, row=10, col=10, size=32)
    raw = Pansharpener.from_checkpoint(checkpoint_path[0], device="cpu", ema=False)
    assert not np.array_equal(raw.sharpen(pan, ms, steps=1), sharpener.sharpen(pan, ms, steps=1))


def test_bad_inputs_get_clear_errors(sharpener, landsat_scene):
    pan, ms = read_crop(landsat_scene, row=10, col=10, size=32)
    expects = r"MS has 3 bands but checkpoint .*landsat-small.pt expects 4 \(blue, green, red, nir\)"
    with pytest.raises(ValueError, match=expects):
        sharpener.sharpen(pan, ms[:3])
    with pytest.raises(ValueError, match="PAN is 32x32 and MS 8x8, but checkpoint .* expects ratio 2"):
        sharpener.sharpen(pan, ms[:, :8, :8])
    with pytest.raises(ValueError, match="pan contains NaN"):   # the one-shot call has no nodata handling
        sharpener.sharpen_whole(np.where(np.arange(32) == 5, np.nan, pan.astype(np.float64)), ms)
    with pytest.raises(ValueError, match="every pixel of MS band\\(s\\) red is nodata"):
        sharpener.sharpen(pan, np.where(np.arange(4)[:, None, None] == 2, np.nan, ms.astype(np.float32)))
    with pytest.raises(ValueError, match="tile_size \\(30\\) and halo \\(8\\) must be multiples of 4"):
        sharpener.sharpen(pan, ms, tile=30, halo=8)
    with pytest.raises(ValueError, match="noise has shape"):
        sharpener.sharpen_tiles(pan[None], ms[None], np.zeros((1, 4, 16, 16), np.float32))
    with pytest.raises(ValueError, match="pan \\(H, W\\)"):
        sharpener.sharpen(pan[None], ms)


def test_pan_equalization_matches_the_pan_to_the_ms_intensity(landsat_scene):
    pan, ms = read_crop(landsat_scene, row=200, col=150, size=128)
    equalization = pan_equalization(pan, ms, ratio=2)
    blocks = equalization.apply(pan.astype(np.float64)).reshape(64, 2, 64, 2).mean(axis=(1, 3))
    intensity = ms.astype(np.float64).mean(axis=0)
    assert blocks.mean() == pytest.approx(intensity.mean(), rel=1e-5)
    assert blocks.std() == pytest.approx(intensity.std(), rel=1e-5)
    # nodata (NaN) pixels are left out of the statistics
    holed = pan.astype(np.float64)
    holed[:, :64] = np.nan
    half, cropped = pan_equalization(holed, ms, ratio=2), pan_equalization(pan[:, 64:], ms[:, :, 32:], ratio=2)
    assert (half.gain, half.offset, half.band_means) == (cropped.gain, cropped.offset, cropped.band_means)
    assert half != equalization
    # the band gains' high-pass sees the hole's edge filled with the mean where the crop's reflects its edge
    assert half.band_gains == pytest.approx(cropped.band_gains, rel=0.2)
    # a PAN without contrast is only shifted; round trip through store attributes
    flat = pan_equalization(np.full_like(pan, 7), ms, ratio=2)
    assert flat.gain == 1 and flat.offset == pytest.approx(intensity.mean() - 7)
    assert PanEqualization.from_attrs(equalization.as_attrs()) == equalization


def test_band_equalization_gives_every_band_the_slope_of_the_equalized_pan(landsat_scene):
    pan, ms = read_crop(landsat_scene, row=200, col=150, size=128)
    equalization = pan_equalization(pan, ms, ratio=2)
    def detail(image):   # what a Gaussian high-pass of one MS pixel leaves
        return (image - gaussian_filter(image, 1.0, mode="reflect")).ravel()

    pan_detail = detail(equalization.apply(pan.astype(np.float64)).reshape(64, 2, 64, 2).mean(axis=(1, 3)))

    def slopes(image):
        return [float(detail(band.astype(np.float64)) @ pan_detail / (pan_detail @ pan_detail)) for band in image]

    raw, gains = np.array(slopes(ms)), np.array(equalization.band_gains)
    assert len(set(np.round(raw, 3))) == 4   # the bands relate to the PAN each in its own way
    assert gains == pytest.approx(np.clip(raw, BAND_GAIN_MIN, BAND_GAIN_MAX), rel=1e-6)
    equalized = equalization.apply_bands(ms.astype(np.float64))
    # slope 1 where the gain is the band's own; this cloudy crop's green and red hardly follow the PAN's detail
    assert slopes(equalized) == pytest.approx(raw / gains, rel=1e-5)
    assert np.isclose(raw / gains, 1).sum() == 2 and (gains == BAND_GAIN_MIN).sum() == 2
    assert equalized.mean(axis=(1, 2)) == pytest.approx(ms.mean(axis=(1, 2)), rel=1e-6)   # levels kept
    np.testing.assert_allclose(equalization.invert_bands(equalized), ms, rtol=1e-5)
    assert PanEqualization.from_attrs(equalization.as_attrs()) == equalization
    # an equalization recorded before band equalization existed has none to apply
    older = PanEqualization.from_attrs({"gain": equalization.gain, "offset": equalization.offset})
    assert older.band_gains is None
    with pytest.raises(ValueError, match="no band gains"):
        older.apply_bands(ms)
    # a band that does not follow the PAN at all is not blown up beyond 1 / BAND_GAIN_MIN
    flat_band = ms.astype(np.float64)
    flat_band[3] = 1000 + np.random.default_rng(0).normal(0, 1, flat_band[3].shape)
    assert pan_equalization(pan, flat_band, ratio=2).band_gains[3] == BAND_GAIN_MIN


def test_a_band_equalizing_model_takes_each_bands_gain_from_the_scene(sharpener, landsat_scene):
    """Stretch two bands' contrast about their means, and their band gains with them: a band-equalizing model sees
    the same inputs and returns the same image with those bands stretched alike; a plain model is thrown off."""
    equalizing = Pansharpener(sharpener.net, full_scale=FULL_SCALE, ratio=2, sensor="Landsat8",
                              band_names=BAND_NAMES, equalizes_pan=True, equalizes_bands=True, device="cpu")
    pan, ms = read_crop(landsat_scene, row=300, col=250, size=64)
    ms = ms.astype(np.float32)
    equalization = pan_equalization(pan, ms, ratio=2)
    stretch = np.array([1.0, 1.7, 1.0, 0.6], np.float32)
    mean = np.array(equalization.band_means, np.float32)[:, None, None]
    stretched = mean + (ms - mean) * stretch[:, None, None]
    stretched_equalization = dataclasses.replace(
        equalization, band_gains=tuple(float(g) for g in np.array(equalization.band_gains) * stretch))
    noise = np.random.default_rng(0).normal(size=(1, 4, 64, 64)).astype(np.float32)
    # One step: the untrained network's wild output is clipped to the DN range band by band, and with more steps a
    # clipped pixel of one band would feed back into every band.
    hrms = equalizing.sharpen_tiles(pan[None], ms[None], noise, steps=1, equalization=equalization)[0]
    again = equalizing.sharpen_tiles(pan[None], stretched[None], noise, steps=1, equalization=stretched_equalization)
    expected = mean + (hrms - mean) * stretch[:, None, None]
    inside = (expected > 0) & (expected < FULL_SCALE) & (hrms > 0) & (hrms < FULL_SCALE)
    assert inside.mean() > 0.9
    np.testing.assert_allclose(again[0][inside], expected[inside], rtol=0, atol=0.5)
    plain = sharpener.sharpen_tiles(pan[None], ms[None], noise, steps=2)[0]
    assert np.abs(sharpener.sharpen_tiles(pan[None], stretched[None], noise, steps=2)[0, 0] - plain[0]).max() > 1
    # sharpen_whole() takes the equalization from the arrays it is given
    np.testing.assert_array_equal(equalizing.sharpen_whole(pan, ms, steps=2, seed=3), equalizing.sharpen_tiles(
        pan[None], ms[None], torch.randn((1, 4, 64, 64), generator=torch.Generator().manual_seed(3)).numpy(),
        steps=2, equalization=equalization)[0])
    with pytest.raises(ValueError, match="trained on MS bands equalized to their scene"):
        equalizing.sharpen_tiles(pan[None], ms[None], noise)


def test_an_equalizing_model_sees_only_the_pattern_of_the_pan(sharpener, landsat_scene):
    """A checkpoint trained on equalized PANs gets the same PAN whatever its gain and offset: the equalization
    takes them out, as the classical methods' histogram matching does."""
    equalizing = Pansharpener(sharpener.net, full_scale=FULL_SCALE, ratio=2, sensor="Landsat8",
                              band_names=BAND_NAMES, equalizes_pan=True, device="cpu")
    pan, ms = read_crop(landsat_scene, row=300, col=250, size=64)
    brighter = pan.astype(np.float32) * 1.6 + 900
    hrms = equalizing.sharpen(pan, ms, steps=2)
    # float32 arithmetic of the equalization: a few hundredths of a DN on a 65535 scale
    np.testing.assert_allclose(equalizing.sharpen(brighter, ms, steps=2), hrms, rtol=0, atol=0.5)
    assert np.abs(sharpener.sharpen(brighter, ms, steps=2) - sharpener.sharpen(pan, ms, steps=2)).max() > 10
    noise = np.zeros((1, 4, 64, 64), np.float32)
    with pytest.raises(ValueError, match="trained on PANs equalized to their scene: pass the scene's equalization"):
        equalizing.sharpen_tiles(pan[None], ms[None], noise)
    given = equalizing.sharpen_tiles(pan[None], ms[None], noise, equalization=pan_equalization(pan, ms, 2))
    assert given.shape == (1, 4, 64, 64)


def test_unknown_checkpoint_name_lists_the_shipped_ones():
    with pytest.raises(FileNotFoundError, match="no-such-model.*shipped"):
        Pansharpener.from_checkpoint("no-such-model")


# ---- the DataArray entry ----------------------------------------------------------------------------------------

def test_back_projection_brings_the_output_to_its_ms_and_is_the_pipelines_too(sharpener, landsat_scene):
    pan, ms = holed(*read_crop(landsat_scene, row=220, col=180, size=96))
    settings = dict(steps=2, seed=5, tile=32, halo=8, batch_size=3)
    plain = sharpener.sharpen(pan, ms, **settings)
    projected = sharpener.sharpen(pan, ms, **settings, back_projection=3, sensor="Landsat8")
    np.testing.assert_array_equal(projected, sharpen_array(sharpener, pan, ms, **settings, back_projection=3,
                                                           sensor="Landsat8"))
    np.testing.assert_array_equal(np.isnan(projected), np.isnan(plain))   # nodata stays where it was

    def consistency_error(hrms):   # over the MS pixels below which nothing is nodata
        degraded = decimate(mtf_filter(np.nan_to_num(hrms), "Landsat8", 2), 2)
        valid = np.isfinite(hrms).reshape(4, 48, 2, 48, 2).all(axis=(2, 4)) & np.isfinite(ms)
        valid[:, :24, :24] = False   # next to the PAN hole its filled values reach the filter
        return np.abs(ms - degraded)[valid].mean()

    assert consistency_error(projected) < 0.5 * consistency_error(plain)
    # the scene's sensor gives the filters: QuickBird's MTF is not the generic one
    assert not np.array_equal(projected, sharpener.sharpen(pan, ms, **settings, back_projection=3, sensor="QB"),
                              equal_nan=True)
    # and the way its MS was made: resized bicubically (a PanCollection example) is projected so, through the
    # scene store too
    bicubic = sharpener.sharpen(pan, ms, **settings, back_projection=3, ms_degradation="bicubic")
    assert not np.array_equal(projected, bicubic, equal_nan=True)
    np.testing.assert_array_equal(bicubic, sharpen_array(sharpener, pan, ms, **settings, back_projection=3,
                                                         ms_degradation="bicubic"))
    with pytest.raises(ValueError, match="unknown MS degradation 'bicubc'"):   # even with nothing to project
        sharpener.sharpen(pan, ms, **settings, back_projection=0, ms_degradation="bicubc")


def test_self_ensemble_averages_turned_views_and_is_the_pipelines_too(sharpener, landsat_scene):
    pan, ms = read_crop(landsat_scene, row=220, col=180, size=96)
    pan, ms = pan.astype(np.float32), ms.astype(np.float32)
    settings = dict(steps=2, seed=5, tile=32, halo=8, batch_size=3)
    single = sharpener.sharpen(pan, ms, **settings)
    np.testing.assert_array_equal(sharpener.sharpen(pan, ms, **settings, ensemble=1), single)   # one view: as before
    averaged = sharpener.sharpen(pan, ms, **settings, ensemble=4)
    np.testing.assert_array_equal(averaged, sharpen_array(sharpener, pan, ms, **settings, ensemble=4))
    assert np.abs(averaged - single).mean() > 1   # an untrained network is far from equivariant
    with pytest.raises(ValueError, match="ensemble must be one of"):
        sharpener.sharpen(pan, ms, **settings, ensemble=3)

    # One tile, its noise and its upsampled MS turned with it (upsampling a turned MS would put its samples half a
    # pixel elsewhere): the whole group's average turns with the tile, a single view does not.
    tile_pan, tile_ms = pan[None, :48, :48], ms[None, :, :24, :24]
    noise = window_noise(5, 4, 0, 0, 48, 48)[None]
    lms = upsample_ms(tile_ms[0].astype(np.float64), 2, "interp23tap")[None]

    def sharpened(k, ensemble):
        def turn(a):
            return dihedral(torch.from_numpy(np.ascontiguousarray(a)), k).numpy()

        out = sharpener.sharpen_tiles(turn(tile_pan), turn(tile_ms), turn(noise), steps=2, ensemble=ensemble,
                                      lms=turn(lms))
        return undo_dihedral(torch.from_numpy(out), k).numpy()

    for k in (1, 6):
        np.testing.assert_allclose(sharpened(k, 8), sharpened(0, 8), rtol=0, atol=0.05)   # float32 sums, in DN
        assert np.abs(sharpened(k, 1) - sharpened(0, 1)).mean() > 1


@pytest.fixture(scope="module")
def landsat_arrays(landsat_scene, tmp_path_factory):
    """The real PAN and MS GeoTIFF crops ingest tests use (EPSG:32616), opened as rioxarray opens them."""
    import rioxarray

    files = landsat_crop(landsat_scene, tmp_path_factory.mktemp("xarray"), row=300, col=500, size=96)
    ms_file = write_crop([landsat_scene[b] for b in ("B2", "B3", "B4", "B5")], files["ms"].with_name("ms49.tif"),
                         149, 249, 49)   # one MS pixel more than the PAN covers, as providers' files often have
    return (rioxarray.open_rasterio(files["pan"]), rioxarray.open_rasterio(files["ms"]),
            rioxarray.open_rasterio(ms_file))


SMALL = dict(steps=1, tile=32, halo=8)


def test_dataarrays_keep_their_grid_crs_and_bands(sharpener, landsat_arrays):
    pan, ms, _ = landsat_arrays
    hrms = sharpen_dataarray(sharpener, pan, ms, **SMALL)
    assert hrms.dims == ("band", "y", "x") and hrms.shape == (4, 96, 96) and hrms.dtype == np.float32
    assert hrms.rio.crs == pan.rio.crs == "EPSG:32616"
    assert hrms.rio.transform() == pan.rio.transform()
    np.testing.assert_array_equal(hrms["band"], ms["band"])
    np.testing.assert_array_equal(hrms["y"], pan["y"])
    np.testing.assert_array_equal(hrms["x"], pan["x"])
    np.testing.assert_array_equal(hrms.values, sharpener.sharpen(pan.values[0], ms.values, **SMALL))
    assert hrms.attrs["checkpoint_hash"] == sharpener.checkpoint_hash and hrms.attrs["full_scale"] == FULL_SCALE
    assert (hrms.attrs["sampler"], hrms.attrs["back_projection"], hrms.attrs["ensemble"]) == (
        "consistent", 0, 1)   # the project's defaults
    assert np.isnan(hrms.rio.nodata)
    # a PAN given as (y, x), and band names instead of numbers, come through too
    named = ms.assign_coords(band=BAND_NAMES)
    again = sharpen_dataarray(sharpener, pan.squeeze("band", drop=True), named, **SMALL)
    assert list(again["band"].values) == BAND_NAMES and np.array_equal(again.values, hrms.values)


def test_dataarrays_are_aligned_and_masked_as_ingest_does(sharpener, landsat_arrays):
    pan, ms, ms49 = landsat_arrays
    cropped = sharpen_dataarray(sharpener, pan, ms49, **SMALL)   # the extra MS pixel is cropped, not resampled
    assert "cropped to whole MS pixels" in cropped.attrs["notes"]
    assert cropped.rio.transform() == pan.rio.transform() and cropped.shape == (4, 96, 96)
    np.testing.assert_array_equal(cropped.values, sharpen_dataarray(sharpener, pan, ms, **SMALL).values)
    # declared nodata (the array's rio.nodata) and the caller's nodata= become NaN in the output
    holes = pan.copy(data=pan.values.copy())
    holes.values[0, 10:14, 20:30] = 0
    hrms = sharpen_dataarray(sharpener, holes.rio.write_nodata(0), ms, **SMALL)
    assert np.isnan(hrms.values[:, 10:14, 20:30]).all() and np.isfinite(hrms.values[:, 14:, :]).all()
    np.testing.assert_array_equal(hrms, sharpen_dataarray(sharpener, holes, ms, nodata=0, **SMALL))


def test_mismatched_dataarrays_are_refused_as_ingest_refuses_them(sharpener, landsat_arrays):
    pan, ms, _ = landsat_arrays
    with pytest.raises(ValueError, match="mismatched grids: PAN CRS EPSG:32616 differs from MS CRS EPSG:32617"):
        sharpen_dataarray(sharpener, pan, ms.rio.write_crs("EPSG:32617"), **SMALL)
    shifted = ms.assign_coords(x=ms["x"] + 60).rio.write_transform(ms.rio.transform() @ Affine.translation(2, 0))
    with pytest.raises(ValueError, match="mismatched grids: PAN and MS extents differ by more than one MS pixel"):
        sharpen_dataarray(sharpener, pan, shifted, **SMALL)
    coarse = ms.isel(x=slice(0, 38), y=slice(0, 38)).rio.write_transform(ms.rio.transform() @ Affine.scale(1.25))
    with pytest.raises(ValueError, match="non-integer ratio"):
        sharpen_dataarray(sharpener, pan, coarse, **SMALL)
    four = ms.isel(x=slice(0, 24), y=slice(0, 24)).rio.write_transform(ms.rio.transform() @ Affine.scale(2))
    with pytest.raises(ValueError, match="the grids give ratio 4, checkpoint .* expects 2"):
        sharpen_dataarray(sharpener, pan, four, **SMALL)
    with pytest.raises(ValueError, match="MS has 3 bands but checkpoint"):
        sharpen_dataarray(sharpener, pan, ms.isel(band=slice(0, 3)), **SMALL)
    with pytest.raises(ValueError, match="a PAN must have one band"):
        sharpen_dataarray(sharpener, ms, ms, **SMALL)
    with pytest.raises(ValueError, match="every PAN pixel is nodata"):
        sharpen_dataarray(sharpener, pan.rio.write_nodata(0) * 0, ms, **SMALL)
