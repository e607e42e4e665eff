"""Wald's protocol: reduced-resolution examples of every shared set and aligned training patches."""
from __future__ import annotations

import numpy as np
import pytest

from ssdiff_model.data.catalogue import SHARED_SETS
from ssdiff_model.data.geotiff import read_geotiff_pair
from ssdiff_model.science.resample import upsample_ms
from ssdiff_model.science.wald import cut_patches, reduced_resolution_example, reduced_resolution_pair

SCENES = [s for s in SHARED_SETS if s.dataset != "landsat7_fusebox" or s.scene in {"1", "39"}]


@pytest.fixture(scope="module")
def landsat8_pair(landsat_scene):
    return read_geotiff_pair(landsat_scene["B8"], [landsat_scene[f"B{b}"] for b in (2, 3, 4, 5)], sensor="Landsat8")


def assert_levels_kept(degraded: np.ndarray, original: np.ndarray) -> None:
    """A low-pass and decimation keep every band's mean: a swapped or shifted band order would not."""
    np.testing.assert_allclose(degraded.mean(axis=(-2, -1)), original.mean(axis=(-2, -1)), rtol=0.03)


@pytest.mark.parametrize("scene", SCENES, ids=lambda s: s.id)
def test_reduced_resolution_example_of_every_shared_set(scene, shared_data):
    pair = next(scene.pairs(shared_data))
    r, bands = pair.ratio, pair.n_bands
    pan_lr, ms_lr_lr, reference = reduced_resolution_example(pair)
    h, w = (n // r * r for n in pair.ms_lr.shape[1:])  # MS sizes not divisible by r lose their last rows/columns
    assert pan_lr.shape == (h, w) and ms_lr_lr.shape == (bands, h // r, w // r) and reference.shape == (bands, h, w)
    assert pan_lr.dtype == ms_lr_lr.dtype == reference.dtype == np.float32
    np.testing.assert_array_equal(reference, pair.ms_lr[:, :h, :w])
    assert_levels_kept(ms_lr_lr, reference)
    assert_levels_kept(pan_lr, pair.pan[: h * r, : w * r])


def test_reduced_resolution_of_landsat8_with_its_odd_size(landsat8_pair):
    # 1206 x 1254 PAN, 603 x 627 MS at ratio 2: the MS is cut to 602 x 626 before degrading.
    rr = reduced_resolution_pair(landsat8_pair)
    assert rr.pan.shape == (602, 626) and rr.ms_lr.shape == (4, 301, 313) and rr.gt.shape == (4, 602, 626)
    np.testing.assert_array_equal(rr.gt, landsat8_pair.ms_lr[:, :602, :626])
    # One scale coarser: PAN pixels of 30 m, MS pixels of 60 m, centred on the kept pixels, CRS unchanged.
    assert (rr.pan_transform.a, rr.ms_transform.a) == (30.0, 60.0) and rr.crs == landsat8_pair.crs
    assert rr.pan_transform.c == landsat8_pair.pan_transform.c + 0.5 * 15


def test_patches_of_a_ratio_4_example_are_aligned(shared_data):
    scene = next(s for s in SHARED_SETS if s.id == "pairmax:W3_Muni_Mix")
    pan_lr, ms_lr_lr, reference = reduced_resolution_example(scene.load(shared_data))  # PAN 128 x 128, 8 bands
    patches = cut_patches(pan_lr, ms_lr_lr, reference, size=64, stride=32, lms_method="interp23tap")
    assert len(patches) == 9 and patches.origins.tolist()[:3] == [[0, 0], [0, 32], [0, 64]]
    assert patches.pan.shape == (9, 64, 64) and patches.ms_lr.shape == (9, 8, 16, 16)
    assert patches.reference.shape == patches.lms.shape == (9, 8, 64, 64)
    lms = upsample_ms(ms_lr_lr, 4)  # computed once on the whole image, then cut
    for k, (row, col) in enumerate(patches.origins):
        assert row % 4 == 0 and col % 4 == 0
        np.testing.assert_array_equal(patches.pan[k], pan_lr[row:row + 64, col:col + 64])
        np.testing.assert_array_equal(patches.ms_lr[k], ms_lr_lr[:, row // 4:row // 4 + 16, col // 4:col // 4 + 16])
        np.testing.assert_array_equal(patches.reference[k], reference[:, row:row + 64, col:col + 64])
        np.testing.assert_allclose(patches.lms[k], lms[:, row:row + 64, col:col + 64], rtol=1e-6)


def test_patches_of_a_ratio_2_example_cover_the_image(landsat8_pair):
    pan_lr, ms_lr_lr, reference = reduced_resolution_example(landsat8_pair)  # PAN 602 x 626
    patches = cut_patches(pan_lr, ms_lr_lr, reference)
    assert patches.pan.shape[1:] == (64, 64) and patches.ms_lr.shape[1:] == (4, 32, 32)
    # Stride 64 plus one patch flush with the far edge: 10 rows x 10 columns of patches, all on even pixels.
    assert len(patches) == 100 and patches.origins.max(axis=0).tolist() == [602 - 64, 626 - 64]
    assert (patches.origins % 2 == 0).all()
    row, col = patches.origins[-1]
    np.testing.assert_array_equal(patches.ms_lr[-1], ms_lr_lr[:, row // 2:, col // 2:])
    assert patches.lms is None


def test_patches_refuse_sizes_that_split_ms_pixels(landsat8_pair):
    pan_lr, ms_lr_lr, reference = reduced_resolution_example(landsat8_pair)
    with pytest.raises(ValueError, match="multiples of the ratio 2"):
        cut_patches(pan_lr, ms_lr_lr, reference, size=64, stride=33)
    with pytest.raises(ValueError, match="smaller than the patch size 1024"):
        cut_patches(pan_lr, ms_lr_lr, reference, size=1024)
    with pytest.raises(ValueError, match="reference has shape"):
        cut_patches(pan_lr, ms_lr_lr, reference[:, :100])
