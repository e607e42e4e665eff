"""Quality indexes and MATLAB-compatible imresize.

The indexes are checked number for number against the community's MATLAB toolbox (`toolbox_metrics.csv`, computed by
the toolbox on the fused images stored beside it), then on properties every correct implementation has.
"""
from __future__ import annotations

import csv
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
from conftest import SHARED

from ssdiff_model.science import metrics
from ssdiff_model.science.imresize import imresize
from ssdiff_model.science.metrics import full_resolution, q2n, reduced_resolution
from ssdiff_model.science.resample import decimate

TOOLBOX_CSV = SHARED / "reference" / "toolbox" / "toolbox_metrics.csv"
REDUCED_COLUMNS = {"SAM": "SAM", "ERGAS": "ERGAS", "SCC": "SCC", "Q": "Q_avg", "Q2n": "Q2n"}
FULL_COLUMNS = ("D_lambda", "D_s", "HQNR")


def _toolbox_rows() -> list[dict[str, str]]:
    if not TOOLBOX_CSV.exists():
        return []
    with TOOLBOX_CSV.open() as handle:
        return list(csv.DictReader(handle))


ROWS = _toolbox_rows()
PAIRS = sorted({(row["scene"], row["fused"]) for row in ROWS})


@lru_cache(maxsize=2)
def _scene(folder: Path, name: str) -> dict[str, np.ndarray]:
    """A toolbox scene with its images turned channel-first (the npz files are channel-last, as MATLAB has them)."""
    with np.load(folder / f"{name}.npz") as data:
        scene = {key: data[key] for key in data.files}
    for key, value in scene.items():
        if value.ndim == 3:
            scene[key] = value.transpose(2, 0, 1)
    return scene


def _relative(ours: float, theirs: float) -> float:
    return abs(ours - theirs) / abs(theirs)


# ----------------------------------------------------------------------------------------------------------------
# Against the toolbox
# ----------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("row", ROWS or [None], ids=lambda r: r and f"{r['scene']}-{r['fused']}-cut{r['cut_bounds']}")
def test_reduced_resolution_matches_toolbox(toolbox_reference, row):
    scene = _scene(toolbox_reference, row["scene"])
    ours = reduced_resolution(scene[f"fused_{row['fused']}"], scene["gt"], int(scene["ratio"]), int(scene["bits"]),
                              cut_bounds=int(row["cut_bounds"]))
    deviations = {name: _relative(ours[name], float(row[column])) for name, column in REDUCED_COLUMNS.items()}
    assert max(deviations.values()) < 1e-3, (ours, deviations)


@pytest.mark.parametrize("pair", PAIRS or [None], ids=lambda p: p and "-".join(p))
def test_full_resolution_matches_toolbox(toolbox_reference, pair):
    scene_name, fused_name = pair
    scene = _scene(toolbox_reference, scene_name)
    ours = full_resolution(scene[f"fused_{fused_name}"], scene["ms_lr"], scene["pan"], int(scene["ratio"]),
                           str(scene["sensor"]))
    # The toolbox's full-resolution figures do not depend on cut_bounds: every row of the pair must agree.
    for row in (r for r in ROWS if (r["scene"], r["fused"]) == pair):
        deviations = {name: _relative(ours[name], float(row[name])) for name in FULL_COLUMNS}
        assert max(deviations.values()) < 1e-2, (ours, deviations)


# ----------------------------------------------------------------------------------------------------------------
# Properties
# ----------------------------------------------------------------------------------------------------------------

def _smooth_image(seed: int, bands: int = 4, size: int = 64) -> np.ndarray:
    """A textured positive image in 11-bit digital numbers: random noise smoothed, so blocks have structure."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    noise = gaussian_filter(rng.normal(size=(bands, size, size)), sigma=(0, 2, 2))
    return np.round(1000 + 300 * noise / noise.std() + 50 * np.arange(bands)[:, None, None])


def test_identical_images_score_perfectly():
    image = _smooth_image(0, bands=8)
    scores = reduced_resolution(image, image, ratio=4, bits=11)
    assert scores["SAM"] == pytest.approx(0, abs=1e-6)
    assert scores["ERGAS"] == 0
    assert scores["Q"] == pytest.approx(1, abs=1e-12)
    assert scores["Q2n"] == pytest.approx(1, abs=1e-12)
    assert scores["SCC"] == pytest.approx(1, abs=1e-12)


def test_sam_ignores_a_positive_gain_per_pixel():
    reference = _smooth_image(3)
    fused = reference + np.random.default_rng(4).normal(0, 30, reference.shape)
    gain = np.random.default_rng(5).uniform(0.2, 5.0, reference.shape[1:])
    plain = reduced_resolution(fused, reference, ratio=4, bits=11)["SAM"]
    scaled = reduced_resolution(fused * gain, reference, ratio=4, bits=11)["SAM"]
    assert plain > 0.1
    assert scaled == pytest.approx(plain, rel=1e-9)


def test_every_index_worsens_as_noise_grows():
    reference = _smooth_image(6)
    noise = np.random.default_rng(7).normal(size=reference.shape)
    weak, medium, strong = (reduced_resolution(reference + sigma * noise, reference, ratio=4, bits=11)
                            for sigma in (10, 40, 160))
    for name in ("SAM", "ERGAS"):
        assert 0 < weak[name] < medium[name] < strong[name], name
    for name in ("Q", "Q2n", "SCC"):
        assert 1 > weak[name] > medium[name] > strong[name], name


def test_q2n_sees_the_images_as_uint16_like_the_toolbox():
    reference = _smooth_image(8)
    # Below half a digital number the uint16 rounding hides the difference; Q (no cast) sees it.
    shifted = reference + np.random.default_rng(9).uniform(-0.45, 0.45, reference.shape)
    assert q2n(reference, shifted) == pytest.approx(1, abs=1e-12)
    assert reduced_resolution(shifted, reference, 4, 11)["Q"] < 1 - 1e-7
    # Negative values saturate to 0, exactly as if they were 0.
    with_negatives = reference.copy()
    with_negatives[0, :8, :8] = -500
    clipped = with_negatives.copy()
    clipped[0, :8, :8] = 0
    assert q2n(reference, with_negatives) == q2n(reference, clipped)


def test_q2n_pads_partial_blocks_and_band_counts():
    reference = _smooth_image(10, bands=3, size=70)  # 70 is no multiple of 32; 3 bands pad to 4
    fused = reference + np.random.default_rng(11).normal(0, 20, reference.shape)
    value = q2n(reference, fused)
    assert 0.5 < value < 1
    assert q2n(reference, reference) == pytest.approx(1, abs=1e-12)


@pytest.mark.parametrize("size", [1, 2, 4, 8])
def test_hypercomplex_product_keeps_norms(size):
    """Reals, complexes, quaternions and octonions are composition algebras: |p q| = |p| |q|."""
    rng = np.random.default_rng(size)
    p, q = rng.normal(size=(size, 50)), rng.normal(size=(size, 50))
    product = metrics._onion_mult(p, q)
    np.testing.assert_allclose(np.linalg.norm(product, axis=0),
                               np.linalg.norm(p, axis=0) * np.linalg.norm(q, axis=0), rtol=1e-12)
    if size == 2:
        np.testing.assert_allclose(product[0] + 1j * product[1], (p[0] + 1j * p[1]) * (q[0] + 1j * q[1]))


def test_full_resolution_of_a_consistent_pair_is_high():
    """A fused image whose bands are the PAN's details on the MS shows little distortion (and HQNR combines both)."""
    ms = _smooth_image(12, bands=4, size=64)
    pan_detail = _smooth_image(13, bands=1, size=64)[0] - 1000
    fused = ms + 0.2 * pan_detail
    pan = fused.mean(axis=0)
    scores = full_resolution(fused, decimate(ms, 4), pan, 4, "none")
    assert 0 <= scores["D_lambda"] < 0.3 and 0 <= scores["D_s"] < 0.3
    assert scores["HQNR"] == pytest.approx((1 - scores["D_lambda"]) * (1 - scores["D_s"]))


def test_bad_inputs_raise_clear_errors():
    image = _smooth_image(14)
    with pytest.raises(ValueError, match="shape"):
        reduced_resolution(image, image[:, :32], 4, 11)
    with pytest.raises(ValueError, match="ratio"):
        reduced_resolution(image, image, 4.5, 11)
    with pytest.raises(ValueError, match=r"\(B, H, W\)"):
        reduced_resolution(image[0], image[0], 4, 11)
    with pytest.raises(ValueError, match="bits"):
        reduced_resolution(image, image, 4, 0)
    ms_lr = image[:, ::4, ::4]
    with pytest.raises(ValueError, match="ratio"):
        full_resolution(image, ms_lr, image[0], 2.5, "QB")
    with pytest.raises(ValueError, match="ms_lr"):
        full_resolution(image, image[:, ::2, ::2], image[0], 4, "QB")
    with pytest.raises(ValueError, match="pan"):
        full_resolution(image, ms_lr, image[0, :32], 4, "QB")
    with pytest.raises(ValueError, match="multiples of 32"):
        full_resolution(image[:, :48, :48], image[:, :48:4, :48:4], image[0, :48, :48], 4, "QB")


# ----------------------------------------------------------------------------------------------------------------
# imresize (MATLAB's algorithm: contributions(), symmetric mirroring)
# ----------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("scale,method", [(0.25, "bicubic"), (0.5, "bicubic"), (3, "bicubic"), (0.25, "nearest")])
def test_imresize_keeps_a_constant_image_constant(scale, method):
    image = np.full((2, 13, 10), 7.25)
    resized = imresize(image, scale, method=method)
    assert resized.shape == (2, int(np.ceil(13 * scale)), int(np.ceil(10 * scale)))
    np.testing.assert_allclose(resized, 7.25, rtol=1e-13)


def test_imresize_bicubic_doubling_by_hand():
    """[0 1] doubled: samples at 0.75, 1.25, 1.75, 2.25 (1-based); e.g. 0.75 takes Keys' weights
    c(1.75) = -0.0234375 (mirrored onto pixel 2), c(0.75) = 0.2265625 (mirrored onto pixel 1), c(0.25) = 0.8671875
    and c(1.25) = -0.0703125, so it is 0 * 1.09375 + 1 * (-0.09375)."""
    resized = imresize(np.array([[0.0, 1.0]]), 2)
    np.testing.assert_allclose(resized, [[-0.09375, 0.203125, 0.796875, 1.09375]] * 2, atol=1e-15)


def test_imresize_antialiased_reduction_keeps_a_ramp_away_from_borders():
    """The stretched cubic kernel reproduces linear signals; output u (1-based) sits at 2u - 0.5 when halving."""
    ramp = np.tile(np.arange(16.0), (16, 1))
    resized = imresize(ramp, 0.5)
    u = np.arange(1, 9)
    np.testing.assert_allclose(resized[:, 2:6], np.broadcast_to(2 * u[2:6] - 0.5 - 1, (8, 4)), atol=1e-12)
    assert not np.allclose(resized[:, 0], 2 * 1 - 0.5 - 1)  # the mirrored border bends the ramp, as in MATLAB


def test_imresize_nearest_reduction_picks_the_toolbox_pixels():
    image = np.arange(64.0).reshape(1, 8, 8)
    np.testing.assert_array_equal(imresize(image, 0.25, method="nearest"), [[[18.0, 22.0], [50.0, 54.0]]])
    np.testing.assert_array_equal(imresize(image, 0.25, method="nearest"), decimate(image, 4))


def test_imresize_rejects_bad_arguments():
    with pytest.raises(ValueError, match="method"):
        imresize(np.ones((4, 4)), 0.5, method="bilinear")
    with pytest.raises(ValueError, match="scale"):
        imresize(np.ones((4, 4)), -1)
    with pytest.raises(ValueError, match="image"):
        imresize(np.ones(4), 0.5)


def test_index_scale_puts_float_data_on_an_11_bit_dn_scale():
    from ssdiff_model.science.metrics import index_scale

    assert index_scale(11, 2047.0) == (11, 1.0)              # integer DN with a bit depth: as they are
    assert index_scale(16, 65535.0) == (16, 1.0)
    assert index_scale(None, 1.0) == (11, 2047.0)            # data stored in [0, 1]
    assert index_scale(None, 100.0) == (11, 20.47)           # reflectance in percent (WV3 georef)
    rng = np.random.default_rng(0)
    reference = rng.uniform(3, 25, (4, 64, 64))              # percent reflectance, a dark scene
    fused = reference + rng.normal(0, 0.3, reference.shape)
    bits, factor = index_scale(None, 100.0)
    in_dn = reduced_resolution(fused * factor, reference * factor, 4, bits)
    as_stored = reduced_resolution(fused, reference, 4, 7)
    assert in_dn["SAM"] == pytest.approx(as_stored["SAM"], rel=1e-9)   # SAM and ERGAS ignore the scale...
    assert in_dn["ERGAS"] == pytest.approx(as_stored["ERGAS"], rel=1e-9)
    # ... Q2n does not: on whole percent its uint16 cast blurs a 0.3 % error; on the DN scale it hardly does
    exact = reduced_resolution(fused * 1000, reference * 1000, 4, 16)["Q2n"]
    assert abs(in_dn["Q2n"] - exact) < 0.1 * abs(as_stored["Q2n"] - exact)
