"""The windowed indexes give the whole-image figures: on the toolbox's scenes (so they agree with the MATLAB
toolbox as metrics.py does), with windows small enough that every filter halo crosses window and image borders."""
from __future__ import annotations

import numpy as np
import pytest

from ssdiff_model.science.metrics import full_resolution, reduced_resolution
from ssdiff_model.science.windowed import full_resolution_windowed, reduced_resolution_windowed, spans

SCENES = ("Pleiades", "QB_abf_train", "GE_Lond_Urb")


def _reader(image: np.ndarray):
    return lambda rows, cols: image[..., rows[:, None], cols]


def _scene(folder, name: str) -> dict[str, np.ndarray]:
    """Channel-first and contiguous, as images read from a store are (a transposed view sums in another order)."""
    with np.load(folder / f"{name}.npz") as data:
        return {k: np.array(data[k].transpose(2, 0, 1) if data[k].ndim == 3 else data[k], order="C")
                for k in data.files}


@pytest.mark.parametrize("name", SCENES)
@pytest.mark.parametrize("window", [64, 96])
def test_full_resolution_windows_give_the_whole_image_figures(toolbox_reference, name, window):
    scene = _scene(toolbox_reference, name)
    fused, ms, pan, ratio = scene["fused_MTFGLPFS"], scene["ms_lr"], scene["pan"], int(scene["ratio"])
    whole = full_resolution(fused, ms, pan, ratio, str(scene["sensor"]))
    windowed = full_resolution_windowed(_reader(fused), _reader(ms), _reader(pan), fused.shape, ratio,
                                        str(scene["sensor"]), window=window)
    assert windowed == pytest.approx(whole, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("name", SCENES)
@pytest.mark.parametrize("crop", [None, (250, 203)])   # whole, and sides that are not multiples of the block
def test_reduced_resolution_windows_give_the_whole_image_figures(toolbox_reference, name, crop):
    scene = _scene(toolbox_reference, name)
    fused, gt, ratio = scene["fused_BDSDPC"], scene["gt"], int(scene["ratio"])
    if crop:
        fused, gt = fused[:, :crop[0], :crop[1]], gt[:, :crop[0], :crop[1]]
    whole = reduced_resolution(fused, gt, ratio, int(scene["bits"]))
    windowed = reduced_resolution_windowed(_reader(fused), _reader(gt), fused.shape, ratio, window=64)
    assert windowed == pytest.approx(whole, rel=1e-9, abs=1e-12)


def test_one_window_is_the_whole_image_computation_exactly(toolbox_reference):
    scene = _scene(toolbox_reference, "Pleiades")
    fused, ratio, sensor = scene["fused_EXP"], int(scene["ratio"]), str(scene["sensor"])
    assert full_resolution_windowed(_reader(fused), _reader(scene["ms_lr"]), _reader(scene["pan"]), fused.shape,
                                    ratio, sensor) == full_resolution(fused, scene["ms_lr"], scene["pan"], ratio,
                                                                      sensor)
    assert reduced_resolution_windowed(_reader(fused), _reader(scene["gt"]), fused.shape, ratio) == \
        reduced_resolution(fused, scene["gt"], ratio, int(scene["bits"]))


def test_spans_cover_the_side_on_the_block_grid():
    assert spans(100, 64, 32) == [(0, 64), (64, 100)]
    assert spans(70, 32, 32) == [(0, 32), (32, 70)]          # a 6-row remainder joins the window before
    assert spans(64, 1000, 32) == [(0, 64)]
    for length in (1, 33, 257, 1000):
        covered = [i for a, b in spans(length, 96, 32) for i in range(a, b)]
        assert covered == list(range(length))


def test_nan_in_a_window_is_reported():
    from ssdiff_model.science.windowed import Incomplete

    image = np.full((2, 64, 64), 100.0)
    image[1, 40, 50] = np.nan
    with pytest.raises(Incomplete, match="fused"):
        reduced_resolution_windowed(_reader(image), _reader(np.full_like(image, 90.0)), image.shape, 2, window=32)


@pytest.mark.parametrize("window", [32, 64, 4096])
def test_wald_degradation_by_windows_is_the_whole_image_one(window):
    from ssdiff_model.science.resample import wald_degrade
    from ssdiff_model.science.windowed import wald_degrade_windowed

    rng = np.random.default_rng(1)
    ms = rng.uniform(200, 1800, (4, 72, 88))
    pan = np.kron(ms.mean(axis=0), np.ones((4, 4))) + rng.normal(0, 40, (288, 352))
    pan_lr, ms_lr = wald_degrade(pan, ms, 4, "WV3")
    ours_pan, ours_ms = wald_degrade_windowed(_reader(pan), _reader(ms), ms.shape, 4, "WV3", window=window)
    # FFT filtering on windows rounds differently from the whole image's: equal to ~1e-12, float32 bit for bit
    # nearly everywhere.
    np.testing.assert_allclose(ours_pan, pan_lr, rtol=1e-6)
    np.testing.assert_allclose(ours_ms, ms_lr, rtol=1e-6)
    assert np.mean(ours_ms == ms_lr.astype(np.float32)) > 0.99
