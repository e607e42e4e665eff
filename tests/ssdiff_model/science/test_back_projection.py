"""Back-projection onto the MS, on the toolbox's reference scenes (real PAN/MS/ground truth of four sensors)."""
from __future__ import annotations

import numpy as np
import pytest
from conftest import channel_first, toolbox_scenes

from ssdiff_model.science.back_projection import back_project
from ssdiff_model.science.resample import decimate, mtf_filter
from ssdiff_model.science.sensors import mtf_sensor


def consistency_error(fused: np.ndarray, ms_lr: np.ndarray, ratio: int, sensor: str) -> float:
    """Mean |MS - the fused image degraded by the sensor's MTF and decimated|: 0 for a consistent image."""
    return float(np.abs(ms_lr - decimate(mtf_filter(fused, sensor, ratio), ratio)).mean())


def test_an_image_consistent_with_its_ms_is_left_as_it_is(toolbox_reference):
    for scene, data in toolbox_scenes(toolbox_reference):
        truth, ratio, sensor = channel_first(data["gt"]), int(data["ratio"]), str(data["sensor"])
        ms_lr = decimate(mtf_filter(truth, sensor, ratio), ratio)   # exactly what the degradation gives
        np.testing.assert_allclose(back_project(truth, ms_lr, ratio, sensor, 3), truth, atol=1e-9, err_msg=scene)


def test_each_iteration_brings_a_fused_image_closer_to_its_ms(toolbox_reference):
    # BT-H fuses in intensity space, so its output is far from consistent with the MS it came from
    for scene, data in toolbox_scenes(toolbox_reference):
        fused, ms_lr = channel_first(data["fused_BTH"]), channel_first(data["ms_lr"])
        ratio, sensor = int(data["ratio"]), str(data["sensor"])
        errors = [consistency_error(back_project(fused, ms_lr, ratio, sensor, n), ms_lr, ratio, sensor)
                  for n in (0, 1, 2, 5)]
        assert all(later < earlier for earlier, later in zip(errors, errors[1:])), (scene, errors)
        assert errors[-1] < 0.5 * errors[0], (scene, errors)


def test_back_projection_keeps_the_details_it_did_not_get_from_the_ms(toolbox_reference):
    # it changes the low frequencies only: the high-pass of the PAN-injected details stays nearly untouched
    scene, data = toolbox_scenes(toolbox_reference)[0]
    fused, ms_lr = channel_first(data["fused_BTH"]), channel_first(data["ms_lr"])
    ratio, sensor = int(data["ratio"]), str(data["sensor"])
    projected = back_project(fused, ms_lr, ratio, sensor, 3)

    def high_pass(image):
        return image - mtf_filter(image, sensor, ratio)

    change = np.abs(high_pass(projected) - high_pass(fused)).mean()
    assert change < 0.2 * np.abs(high_pass(fused)).mean(), scene


def test_an_unknown_sensor_gets_the_toolboxs_generic_filters():
    assert mtf_sensor("GeoEye1+QB") == mtf_sensor(None) == "none"
    assert mtf_sensor("quickbird") == "QB"
    assert mtf_sensor("QB", bands=8) == "none"   # QuickBird's gains cover 4 bands


@pytest.mark.parametrize("iterations", [-1, 1.5, True])
def test_a_bad_number_of_iterations_is_refused(iterations):
    with pytest.raises(ValueError, match="iterations"):
        back_project(np.zeros((4, 16, 16)), np.zeros((4, 4, 4)), 4, "QB", iterations)


def test_mismatched_shapes_are_refused():
    with pytest.raises(ValueError, match="back-projection needs"):
        back_project(np.zeros((4, 16, 16)), np.zeros((4, 8, 8)), 4, "QB", 1)


def test_the_degradation_is_the_toolboxs_filter_then_decimation(toolbox_reference):
    from ssdiff_model.science.back_projection import _degrade
    from ssdiff_model.science.resample import mtf_kernel
    from ssdiff_model.science.sensors import get_sensor

    for scene, data in toolbox_scenes(toolbox_reference):
        image, ratio, sensor = channel_first(data["fused_BTH"]), int(data["ratio"]), str(data["sensor"])
        kernels = np.stack([mtf_kernel(g, ratio) for g in get_sensor(sensor).band_gains(image.shape[0])])
        np.testing.assert_allclose(_degrade(image, kernels, ratio),
                                   decimate(mtf_filter(image, sensor, ratio), ratio), rtol=0, atol=1e-9,
                                   err_msg=scene)


def test_an_ms_made_by_bicubic_resizing_is_projected_with_that_resizing(toolbox_reference):
    from ssdiff_model.science.imresize import imresize

    scene, data = toolbox_scenes(toolbox_reference)[0]
    truth, ratio = channel_first(data["gt"]), int(data["ratio"])
    ms_lr = imresize(truth, 1 / ratio, method="bicubic")
    np.testing.assert_allclose(back_project(truth, ms_lr, ratio, None, 2, degradation="bicubic"), truth, atol=1e-9)
    fused = channel_first(data["fused_BTH"])

    def misfit(image):
        return np.abs(imresize(image, 1 / ratio, method="bicubic") - ms_lr).mean()

    assert misfit(back_project(fused, ms_lr, ratio, None, 3, degradation="bicubic")) < 0.5 * misfit(fused), scene
    with pytest.raises(ValueError, match="unknown MS degradation"):
        back_project(fused, ms_lr, ratio, None, 1, degradation="gaussian")
