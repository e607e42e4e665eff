"""The .mat and .h5 readers: toolbox, PNN and fusebox pairs keep their files' metadata, both PanCollection layouts
read back alike, MATLAB v7.3 reads like v5, and bad input fails with a clear error."""


from __future__ import annotations

import h5py
import numpy as np
import pytest
import scipy.io

from ssdiff_model.data.dispatch import read_pair
from ssdiff_model.data.matfiles import read_mat_pair
from ssdiff_model.data.pair import PansharpeningBatch


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


def test_pancollection_examples_say_their_ms_is_bicubic_resized(shared_data):
    """What back-projection needs to know: PanCollection's MS is MATLAB's bicubic imresize of its reference, not the
    sensor's MTF and decimation."""
    from ssdiff_model.science.imresize import imresize
    from ssdiff_model.science.resample import decimate, mtf_filter

    batch = read_pair(shared_data / "pancollection_wv3_patches" / "train_wv3_100.mat")
    pair = batch.pair(0)
    assert batch.ms_degradation == pair.ms_degradation == "bicubic"
    assert read_pair(shared_data / "pnn_fr" / "imgGE1.mat").ms_degradation == "mtf"   # a sensor's own MS

    def misfit(degraded):
        return np.abs(degraded - pair.ms_lr).mean() / pair.ms_lr.mean()

    assert misfit(imresize(pair.gt.astype(np.float64), 0.25, method="bicubic")) < 0.01
    assert misfit(decimate(mtf_filter(pair.gt, "WV3", 4), 4)) > 0.05


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
