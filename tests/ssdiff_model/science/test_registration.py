"""PAN-MS co-registration: the MS offset measured on real pairs, and the whole-pixel crops that remove it."""
import numpy as np
import pytest

from ssdiff_model.data.catalogue import iter_shared_sets, landsat8_source, source_from_shared
from ssdiff_model.science.registration import MSOffset, coregister, coregistration_crop, ms_offset
from tiling.stores.training import TrainingStore, build_training_store


@pytest.fixture(scope="module")
def landsat_pair(landsat_scene):
    return landsat8_source(landsat_scene["B8"].parent).load()


def test_a_known_pan_shift_is_measured_to_a_fraction_of_a_pixel(landsat_pair):
    """Dropping PAN rows moves the MS's ground by as many PAN pixels; the measurement follows it."""
    pair = landsat_pair
    base = ms_offset(pair.pan, pair.ms_lr, pair.ratio)
    assert base.bounded and base.correlation > base.correlation_unmoved - 1e-9
    r = pair.ratio
    for rows, cols in ((3, 0), (0, 5), (4, 1)):
        pan = pair.pan[rows:rows + (pair.pan.shape[0] - 8) // r * r, cols:cols + (pair.pan.shape[1] - 8) // r * r]
        ms = pair.ms_lr[:, : pan.shape[0] // r, : pan.shape[1] // r]
        moved = ms_offset(pan, ms, r)
        assert moved.rows == pytest.approx(base.rows - rows, abs=0.25)
        assert moved.cols == pytest.approx(base.cols - cols, abs=0.25)


def test_coregister_crops_a_shifted_pair_back_within_half_a_pixel(landsat_pair):
    import dataclasses

    pair = landsat_pair
    r = pair.ratio
    shifted = dataclasses.replace(pair, pan=pair.pan[5:5 + 560 * r, : 600 * r], ms_lr=pair.ms_lr[:, :560, :600],
                                  pan_transform=None, ms_transform=None)
    fixed, measured = coregister(shifted)
    base = ms_offset(pair.pan, pair.ms_lr, r)
    assert fixed is not shifted and measured.rows == pytest.approx(base.rows - 5, abs=0.25)
    after = ms_offset(fixed.pan, fixed.ms_lr, r)
    assert abs(after.rows) <= 0.55 and abs(after.cols) <= 0.55
    assert after.correlation_unmoved > measured.correlation_unmoved + 0.1   # the blocks as cropped now match
    assert fixed.pan.shape == (fixed.ms_lr.shape[1] * r, fixed.ms_lr.shape[2] * r)
    assert "co-registered" in fixed.notes[-1]
    # a pair already in place is left as it is
    again, _ = coregister(fixed)
    assert again is fixed
    # and a misregistered copy sits where it was asked to
    for target in ((2, -1), (-1, 0)):
        copy, _ = coregister(shifted, target=target)
        moved = ms_offset(copy.pan, copy.ms_lr, r)
        assert moved.rows == pytest.approx(target[0], abs=0.55) and moved.cols == pytest.approx(target[1], abs=0.55)


def test_crops_never_start_before_the_image():
    def crop(rows, cols, ratio=4):
        return coregistration_crop(MSOffset(rows, cols, 0.9, 0.5, True), ratio)

    assert crop(-3.59, -3.29) == ((0, 1), (1, 1))     # the MS drops one pixel, the PAN follows within a pixel
    assert crop(1.38, -0.72) == ((1, 3), (0, 1))
    assert crop(0.2, -0.4) == ((0, 0), (0, 0))
    assert crop(-9.0, 0.0, ratio=4) == ((3, 0), (3, 0))


def test_the_vhr_pairs_are_off_by_about_one_ms_pixel_and_the_store_fixes_only_training(shared_data, tmp_path):
    """The MANIFEST's unknown-sensor VHR pairs: their MS is measured 3 to 5 PAN pixels off; a co-registered store
    crops its training scenes (their PAN detail then lines up with the reference) and only measures validation."""
    vhr, toulouse = (source_from_shared(s)
                     for s in iter_shared_sets(shared_data, ["vhr_4band_fr", "quickbird_toulouse"])
                     if s.id in ("vhr_4band_fr:2", "quickbird_toulouse:toulouse"))
    offset = ms_offset(vhr.load().pan, vhr.load().ms_lr, 4)
    assert offset.rows < -3 and offset.cols < -3 and offset.correlation > 0.9 > 0.6 > offset.correlation_unmoved

    def alignment(path):
        """Correlation of the high-passed PAN with the high-passed reference intensity over the training patches."""
        from scipy.ndimage import uniform_filter

        data = TrainingStore(path).load("train")
        pan, ref = data["pan"][:, 0], data["hrms"].mean(axis=1)
        hp = [a - uniform_filter(a, (1, 5, 5)) for a in (pan, ref)]
        return np.corrcoef(hp[0].ravel(), hp[1].ravel())[0, 1]

    stores = {}
    for fix in (False, True):
        stores[fix] = tmp_path / f"fix{fix}.zarr"
        attrs = build_training_store([vhr, toulouse], stores[fix], family="4band-r4", coregister=fix,
                                     validation=["quickbird_toulouse:toulouse"])
        records = {r["id"]: r for r in attrs["sources"]}
        assert records["vhr_4band_fr:2"]["ms_offset_pan_px"]["coregistered"] is fix
        assert records["quickbird_toulouse:toulouse"]["ms_offset_pan_px"]["coregistered"] is False
        assert records["quickbird_toulouse:toulouse"]["ms_offset_pan_px"]["rows"] > 1
        assert ("co-registered" in records["vhr_4band_fr:2"]["protocol"]) is fix
    assert alignment(stores[True]) > alignment(stores[False]) + 0.1
    np.testing.assert_array_equal(TrainingStore(stores[True]).load("validation")["pan"],
                                  TrainingStore(stores[False]).load("validation")["pan"])

    # misregistered copies: the same training scene twice more, its PAN detail a known amount off the reference
    attrs = build_training_store([vhr, toulouse], tmp_path / "copies.zarr", family="4band-r4", coregister=True,
                                 misregistered_copies=2, validation=["quickbird_toulouse:toulouse"])
    records = {r["id"]: r for r in attrs["sources"]}
    targets = records["vhr_4band_fr:2"]["ms_offset_pan_px"]["misregistered_copies"]
    assert len(targets) == 2 and [0, 0] not in targets and all(max(map(abs, t)) <= 2 for t in targets)
    assert records["quickbird_toulouse:toulouse"]["ms_offset_pan_px"]["misregistered_copies"] == []
    single = TrainingStore(stores[True]).count("train")
    assert attrs["counts"] == {"train": 3 * single, "validation": TrainingStore(stores[True]).count("validation")}
    assert alignment(tmp_path / "copies.zarr") < alignment(stores[True])
    assert attrs["misregistered_copies"] == {"count": 2, "reach_pan_px": 2}


def test_ingest_measures_the_ms_offset_and_warns_when_it_is_large(landsat_scene, tmp_path, capsys):
    """A PAN GeoTIFF whose pixels come from 4 rows further up than its georeferencing says: the scene store records
    the measured offset and ingest warns on stderr (and in its summary); the store is written as given. (The crop
    as it is already sits 2 to 3 PAN rows off: this Landsat-8 scene is cloudy, and its clouds move between the PAN
    and the MS exposures.)"""
    import json

    import rasterio

    from flows.cli import main
    from tests.conftest import ingest_args, landsat_crop, write_crop

    files = landsat_crop(landsat_scene, tmp_path / "given")
    assert main(ingest_args(files, tmp_path / "given.zarr")) == 0
    given = json.loads(capsys.readouterr().out)
    assert given["ms_offset_pan_px"]["bounded"] and 1.5 < given["ms_offset_pan_px"]["rows"] < 3.5

    moved = tmp_path / "moved"
    moved.mkdir()
    write_crop([landsat_scene["B8"]], moved / "pan.tif", 396, 400, 256)
    with rasterio.open(files["pan"]) as src, rasterio.open(moved / "pan.tif", "r+") as dst:
        dst.transform = src.transform   # placed where the given PAN is, showing ground 4 PAN pixels further down
    assert main(ingest_args({"pan": moved / "pan.tif", "ms": files["ms"]}, tmp_path / "moved.zarr")) == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert summary["ms_offset_pan_px"]["rows"] == pytest.approx(given["ms_offset_pan_px"]["rows"] + 4, abs=0.3)
    assert len(summary["warnings"]) == 1 and "co-register" in summary["warnings"][0]
    assert "ssdiff ingest: warning:" in captured.err and "moved.zarr" in captured.err


def test_wald_degradation_keeps_the_offset_in_ground_units(landsat_pair):
    """Offsets are relative to where Wald's protocol puts the MS, so the reduced-resolution pair of a scene is off
    by the same ground distance: the scene's offset divided by the ratio, in its coarser PAN pixels."""
    from ssdiff_model.science.wald import reduced_resolution_example

    pair = landsat_pair
    pan, ms_lr, _ = reduced_resolution_example(pair)
    full, reduced = ms_offset(pair.pan, pair.ms_lr, pair.ratio), ms_offset(pan, ms_lr, pair.ratio)
    assert reduced.rows == pytest.approx(full.rows / pair.ratio, abs=0.2)
    assert reduced.cols == pytest.approx(full.cols / pair.ratio, abs=0.2)
