"""The catalogue: every set of shared/data/MANIFEST.md loads with the MANIFEST's facts and in its family's band
order, and the training families select their scenes."""


from __future__ import annotations

import re

import numpy as np
import pytest
import rasterio
import scipy.io
from affine import Affine

from ssdiff_model.data.catalogue import (
    FAMILIES,
    FUSEBOX_TO_VNIR,
    LANDSAT8_FGFGAN_BANDS,
    SHARED_SETS,
    VNIR4_BANDS,
    family_sources,
    iter_shared_sets,
)
from ssdiff_model.data.dispatch import select_bands

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


def test_families_select_the_shared_scenes(shared_data):
    eight = family_sources("8band-r4", shared_data)
    assert {s.dataset for s in eight} >= {"pancollection_wv3_patches", "pairmax", "pnn_fr", "wv2_rio"}
    assert all(s.sensor in ("WV2", "WV3") for s in eight)
    four = family_sources("4band-r4", shared_data)
    assert {s.sensor for s in four} >= {"GeoEye1", "WV4", "QB", "IKONOS", "Pleiades", "SPOT6", None}
    assert {"vhr_pairs_cpe:Urban", "vhr_pairs_cpe:Cropland", "zhengzhou_fr:zhengzhou"} <= {s.id for s in four}
    # vhr_pairs_dgif repeats vhr_4band_fr's files: taken once, so no scene can sit on both sides of the split
    assert sum(s.dataset == "vhr_4band_fr" for s in four) == 3 and not any(s.dataset == "vhr_pairs_dgif" for s in four)
    r2 = family_sources("r2", shared_data)
    assert sum(s.dataset == "landsat7_fusebox" for s in r2) == 39 and r2[-1].sensor == "Landsat8"
    # the FGF-GAN Landsat-8 pairs keep B2..B5 of their ten bands (stored red, green, blue, coastal, nir, ...)
    fgfgan = [s for s in r2 if s.dataset == "landsat8_fgfgan"]
    assert len(fgfgan) == 3
    raw = next(iter_shared_sets(shared_data, ["landsat8_fgfgan"])).load()
    pair = fgfgan[0].load()
    np.testing.assert_array_equal(pair.ms_lr, raw.ms_lr[[2, 1, 0, 4]])
    assert pair.band_names == ("blue", "green", "red", "nir") and (pair.ratio, pair.bits) == (2, 16)
    assert set(FAMILIES) == {"8band-r4", "4band-r4", "r2"}
    # fusebox bands R, G, B, NIR, SWIR1, SWIR2 -> blue, green, red, nir (Landsat-8 B2..B5 order)
    fusebox = r2[0]
    raw = next(iter_shared_sets(shared_data, ["landsat7_fusebox"])).load()
    pair = fusebox.load()
    np.testing.assert_array_equal(pair.ms_lr, raw.ms_lr[list(FUSEBOX_TO_VNIR)])
    assert pair.band_names == ("blue", "green", "red", "nir")
