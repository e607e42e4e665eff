"""The classical baselines against the MATLAB toolbox's fused images and index values, scene by scene."""
from __future__ import annotations

import csv

import numpy as np
import pytest
from conftest import channel_first, toolbox_scenes

from ssdiff_model.science import baselines

# Toolbox file key (fused_<KEY> in the npz, `fused` column of toolbox_metrics.csv) -> our function.
METHODS = {"EXP": baselines.exp, "BTH": baselines.bt_h, "MTFGLPFS": baselines.mtf_glp_fs,
           "BDSDPC": baselines.bdsd_pc}


def fuse(method: str, data) -> np.ndarray:
    return METHODS[method](data["pan"], channel_first(data["ms_lr"]), int(data["ratio"]), str(data["sensor"]))


@pytest.mark.parametrize("method", METHODS)
def test_baseline_matches_the_toolbox_image(toolbox_reference, method):
    # The toolbox's fused images are stored as float32 and its inputs were float32-rounded: an exact
    # reproduction differs by about one float32 step at the image's peak (1.2e-4 DN at 2048). Four steps is
    # ~1e-7 of the dynamic range; any real departure from the .m (a boundary mode, a percentile definition, a
    # covariance normalisation, a constraint sign) moves pixels by tenths of a DN or more.
    for scene, data in toolbox_scenes(toolbox_reference):
        expected = channel_first(data[f"fused_{method}"])
        fused = fuse(method, data)
        assert fused.shape == expected.shape and fused.dtype == np.float64, scene
        tolerance = 4 * float(np.spacing(np.float32(np.abs(expected).max())))
        difference = np.abs(fused - expected)
        assert difference.max() <= tolerance, f"{scene}: max {difference.max():.3g} DN, mean {difference.mean():.3g}"


@pytest.mark.parametrize("method", METHODS)
def test_baseline_indexes_match_the_toolbox(toolbox_reference, method):
    metrics = pytest.importorskip("ssdiff_model.science.metrics")
    with open(toolbox_reference / "toolbox_metrics.csv", newline="") as handle:
        rows = {(row["scene"], row["fused"]): row for row in csv.DictReader(handle) if row["cut_bounds"] == "0"}
    for scene, data in toolbox_scenes(toolbox_reference):
        indexes = metrics.reduced_resolution(fuse(method, data), channel_first(data["gt"]), int(data["ratio"]),
                                             int(data["bits"]), cut_bounds=0)
        expected = rows[(scene, method)]
        for name in ("SAM", "ERGAS", "Q2n", "SCC"):
            assert indexes[name] == pytest.approx(float(expected[name]), rel=0.03), f"{scene} {method} {name}"


@pytest.mark.parametrize("method", METHODS)
def test_baseline_input_errors(method):
    pan, ms_lr = np.ones((64, 64)), np.ones((4, 16, 16))
    function = METHODS[method]
    with pytest.raises(ValueError, match="ratio must be an integer"):
        function(pan, ms_lr, 3.5, "QB")
    with pytest.raises(ValueError, match="pan of shape \\(64, 64\\) is not 2 times the size of ms_lr"):
        function(pan, ms_lr, 2, "QB")
    with pytest.raises(ValueError, match="ms_lr must be \\(B, h, w\\)"):
        function(pan, ms_lr[0], 4, "QB")


def test_bdsd_pc_respects_the_sign_constraints(toolbox_reference):
    # BDSD-PC injects g0 * PAN + sum_k g_k * MS_k with g0 >= 0 and g_k <= 0 (lsqlin's constraints in BDSD_PC.m).
    # With a PAN of zeros only the MS terms remain, so with non-negative DN the fused image can nowhere exceed the
    # upsampled MS. On this scene an unconstrained fit gives some g_k > 0 (up to +0.97), which would break this.
    data = np.load(toolbox_reference / "QB_abf_train.npz")
    ms_lr = channel_first(data["ms_lr"])
    expanded = baselines.exp(data["pan"], ms_lr, 4, "QB")
    fused = baselines.bdsd_pc(np.zeros_like(data["pan"], dtype=np.float64), ms_lr, 4, "QB")
    assert np.all(fused <= expanded + 1e-9)
