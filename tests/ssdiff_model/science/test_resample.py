"""Sensors, MTF filters, interp23tap and Wald's degradation, checked against the MATLAB toolbox's own outputs."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import channel_first, toolbox_scenes
from scipy import ndimage

from ssdiff_model.science.imresize import imresize
from ssdiff_model.science.resample import (
    check_ratio,
    decimate,
    filter_replicate,
    interp23tap,
    mtf_filter,
    mtf_kernel,
    pan_mtf_filter,
    upsample_ms,
    wald_degrade,
)
from ssdiff_model.science.sensors import SENSORS, get_sensor


def float32_tolerance(reference: np.ndarray, ulps: int = 4) -> float:
    """A few float32 steps at the image's peak: the stored toolbox arrays (and the inputs we recompute from) are
    float32 roundings of MATLAB doubles, so an exact reproduction differs from them by about one such step."""
    return ulps * float(np.spacing(np.float32(np.abs(reference).max())))


def high_frequency_energy(image: np.ndarray) -> float:
    """Energy of the Laplacian relative to the image's variance: a scale-free measure of fine detail."""
    laplacian = ndimage.laplace(image, mode="nearest")
    return float(np.mean(laplacian**2) / np.var(image))


# ---------------------------------------------------------------------------------------------------- sensors

@pytest.mark.parametrize("name, canonical", [("QB", "QB"), ("qb", "QB"), ("QuickBird", "QB"), ("ikonos", "IKONOS"),
                                             ("GEOEYE1", "GeoEye1"), ("geoeye-1", "GeoEye1"), ("wv2", "WV2"),
                                             ("WorldView-3", "WV3"), ("Wv4", "WV4"), ("NONE", "none"),
                                             ("pleiades", "Pleiades"), ("landsat8", "Landsat8")])
def test_sensor_names_and_aliases_in_any_case(name, canonical):
    assert get_sensor(name).name == canonical


def test_sensor_gains_are_the_toolbox_tables():
    # genMTF.m / MTF_PAN.m: note WV2's PAN gain 0.11 and its NIR2 band 0.27.
    assert get_sensor("WV2").band_gains(8) == (0.35,) * 7 + (0.27,)
    assert get_sensor("WV2").pan_gain == 0.11
    assert get_sensor("QB").band_gains(4) == (0.34, 0.32, 0.30, 0.22)
    assert get_sensor("WV4").band_gains(4) == get_sensor("GeoEye1").band_gains(4)
    assert get_sensor("none").band_gains(6) == (0.3,) * 6 and get_sensor("none").pan_gain == 0.15


def test_band_count_rule():
    # Fewer bands than the table: the first gains, as MTF.m indexes genMTF's filters; more: a clear error.
    assert get_sensor("WV3").band_gains(4) == (0.325, 0.355, 0.360, 0.350)
    with pytest.raises(ValueError, match="gains for 4 bands but the image has 8"):
        get_sensor("QB").band_gains(8)


def test_unknown_sensor_lists_the_known_ones():
    with pytest.raises(ValueError, match="unknown sensor 'SPOT9'.*QB.*WV3.*none"):
        get_sensor("SPOT9")
    assert all(get_sensor(s.name) is s for s in SENSORS)


# ---------------------------------------------------------------------------------------------------- MTF kernel

@pytest.mark.parametrize("gnyq", [0.11, 0.23, 0.3, 0.365])
@pytest.mark.parametrize("ratio", [2, 4])
def test_mtf_kernel_properties(gnyq, ratio):
    kernel = mtf_kernel(gnyq, ratio)
    assert kernel.shape == (41, 41)
    assert abs(kernel.sum() - 1) < 3e-3  # unit DC gain up to the Kaiser windowing, which the toolbox keeps
    np.testing.assert_allclose(kernel, kernel.T, atol=1e-15)
    np.testing.assert_allclose(kernel, kernel[::-1, ::-1], atol=1e-15)
    assert np.unravel_index(kernel.argmax(), kernel.shape) == (20, 20)
    # Horizontal frequency response at the MS Nyquist frequency, 1/(2 ratio) cycles per pixel: about GNyq
    # (genMTF places GNyq at (N-1)/N of that frequency and the window trims it, hence a few percent below).
    offsets = np.arange(41) - 20
    response = np.sum(kernel.sum(axis=0) * np.cos(np.pi * offsets / ratio))
    assert 0.85 * gnyq < response < gnyq


def test_filter_replicate_is_imfilter_replicate():
    image = np.random.default_rng(0).normal(size=(70, 90))
    kernel = mtf_kernel(0.3, 4)
    np.testing.assert_allclose(filter_replicate(image, kernel), ndimage.correlate(image, kernel, mode="nearest"),
                               atol=1e-12)


def test_mtf_filter_uses_each_bands_gain(toolbox_reference):
    # QuickBird's blue band (GNyq 0.34) keeps more detail than its NIR band (0.22) when both see the same image.
    pan = np.load(toolbox_reference / "QB_abf_train.npz")["pan"].astype(np.float64)
    filtered = mtf_filter(np.stack([pan] * 4), "QB", 4)
    energies = [high_frequency_energy(band) for band in filtered]
    assert energies[0] > energies[1] > energies[2] > energies[3]
    # The PAN filter of WorldView-2 (0.11) is stronger than IKONOS's (0.17).
    wv2, ikonos = pan_mtf_filter(pan, "WV2", 4), pan_mtf_filter(pan, "IKONOS", 4)
    assert high_frequency_energy(wv2) < high_frequency_energy(ikonos)


# ---------------------------------------------------------------------------------------------------- interp23tap

def test_interp23tap_matches_the_toolbox_on_every_scene(toolbox_reference):
    for scene, data in toolbox_scenes(toolbox_reference):
        expected = channel_first(data["ms_up_interp23tap"])
        upsampled = interp23tap(channel_first(data["ms_lr"]), int(data["ratio"]))
        assert upsampled.shape == expected.shape, scene
        difference = np.abs(upsampled - expected).max()
        assert difference <= float32_tolerance(expected), f"{scene}: max |difference| {difference} DN"


def test_interp23tap_keeps_the_samples_and_reproduces_a_linear_ramp():
    ramp = np.add.outer(np.arange(32.0), np.arange(32.0))[None]
    up = interp23tap(ramp, 2)
    assert up.shape == (1, 64, 64)
    # The first doubling puts the samples at odd positions, and the kernel's only even tap is the centre (1).
    np.testing.assert_array_equal(up[:, 1::2, 1::2], ramp)
    # Its odd taps sum to 1/2 on each side: linear signals are interpolated exactly, half-way between samples
    # (away from the 11 pixels that the circular boundary wraps around).
    np.testing.assert_allclose(up[0, 12:-12:2, 12:-12:2], ramp[0, 6:-6, 6:-6] - 1, atol=1e-9)


def test_upsample_ms_methods_and_errors():
    ms = np.random.default_rng(1).uniform(100, 900, size=(3, 16, 16))
    assert upsample_ms(ms, 4).shape == (3, 64, 64)
    bicubic = upsample_ms(ms, 3, method="bicubic")
    assert bicubic.shape == (3, 48, 48)
    assert np.allclose(upsample_ms(np.full((2, 8, 8), 7.0), 3, method="bicubic"), 7.0)
    with pytest.raises(ValueError, match="power of 2"):
        upsample_ms(ms, 3)
    with pytest.raises(ValueError, match="method"):
        upsample_ms(ms, 4, method="lanczos")
    with pytest.raises(ValueError, match="ratio must be an integer"):
        upsample_ms(ms, 2.5)


# ---------------------------------------------------------------------------------------------------- Wald

@pytest.mark.parametrize("ratio", [2, 3, 4])
def test_decimate_picks_the_pixels_of_matlab_nearest_imresize(ratio):
    image = np.random.default_rng(2).normal(size=(2, 12 * ratio, 8 * ratio))
    np.testing.assert_array_equal(decimate(image, ratio), imresize(image, 1 / ratio, method="nearest"))


@pytest.mark.parametrize("bad", [2.5, 1, 0, -4, "4", None, True, float("nan")])
def test_check_ratio_rejects_non_integer_ratios(bad):
    with pytest.raises(ValueError, match="ratio must be an integer >= 2"):
        check_ratio(bad)
    assert check_ratio(4.0) == 4 and check_ratio(np.int64(2)) == 2


@pytest.mark.parametrize("scene, rounding", [("Pleiades", 0.0), ("GE_Lond_Urb", 0.5)])
def test_wald_degrade_reproduces_the_toolbox_ms(toolbox_reference, scene, rounding):
    # These scenes' ms_lr are the toolbox's resize_images.m of gt (PAirMax stores them rounded to integers).
    data = np.load(toolbox_reference / f"{scene}.npz")
    ratio, gt = int(data["ratio"]), channel_first(data["gt"])
    full_res_pan = np.kron(data["pan"], np.ones((ratio, ratio)))  # any PAN of the right size; only the MS is checked
    pan_lr, ms_lr = wald_degrade(full_res_pan, gt, ratio, str(data["sensor"]))
    expected = channel_first(data["ms_lr"])
    assert pan_lr.shape == data["pan"].shape and ms_lr.shape == expected.shape
    assert np.abs(ms_lr - expected).max() <= rounding + float32_tolerance(expected)


def test_wald_degrade_is_a_low_pass(toolbox_reference):
    data = np.load(toolbox_reference / "QB_abf_train.npz")
    pan, ms = data["pan"].astype(np.float64), channel_first(data["ms_lr"])
    pan_lr, ms_lr = wald_degrade(pan, ms, 4, "QB")
    assert pan_lr.shape == (64, 64) and ms_lr.shape == (4, 16, 16)
    # Less fine detail than plain decimation of the same image (which aliases the high frequencies in).
    assert high_frequency_energy(pan_lr) < 0.5 * high_frequency_energy(pan[2::4, 2::4])
    for band, decimated in zip(ms_lr, ms[:, 2::4, 2::4]):
        assert high_frequency_energy(band) < 0.5 * high_frequency_energy(decimated)
    # The bicubic PAN of the DLPan-Toolbox's resize_images.m is also a low-pass of the same size.
    pan_bicubic, _ = wald_degrade(pan, ms, 4, "QB", pan_method="bicubic")
    assert pan_bicubic.shape == (64, 64)
    assert high_frequency_energy(pan_bicubic) < high_frequency_energy(pan[2::4, 2::4])


def test_wald_degrade_errors():
    pan, ms = np.zeros((64, 64)), np.zeros((4, 16, 16))
    with pytest.raises(ValueError, match="ratio must be an integer"):
        wald_degrade(pan, ms, 4.5, "QB")
    with pytest.raises(ValueError, match="pan of shape \\(64, 64\\) is not 2 times"):
        wald_degrade(pan, ms, 2, "QB")
    with pytest.raises(ValueError, match="unknown sensor"):
        wald_degrade(pan, ms, 4, "SPOT9")
    with pytest.raises(ValueError, match="ms must be \\(B, H, W\\)"):
        wald_degrade(pan, ms[0], 4, "QB")
