"""The paper's benchmark protocol (bench/pancollection_table.py) and its recipe (`make reproduce-paper`), on tiny
PanCollection-format files made here from real WorldView-3 scenes of ../shared/data (PAirMax Munich), Wald-degraded
with the project's own functions: the bench's indexes are `ssdiff_model.science.metrics` of the images it sharpened, the
release's patch merge covers every pixel, and the recipe trains through Ray Train and ends with the table."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import PROJECT_ROOT

sys.path.insert(0, str(PROJECT_ROOT / "bench"))
import pancollection_table as bench  # noqa: E402

WV3_BANDS = 8
TEST_SIZE = 120   # not on the release's stride-16 grid (64 + 3 x 16 = 112): its last patch sits flush with the edge


def write_pancollection(path: Path, pan: np.ndarray, ms: np.ndarray, gt: np.ndarray) -> Path:
    """A PanCollection-layout .h5: gt, lms, ms, pan as N x C x H x W uint16 DN (lms: the MS upsampled by interp23tap,
    as the community's files are made)."""
    from ssdiff_model.science.resample import upsample_ms

    lms = np.stack([upsample_ms(m.astype(np.float64), 4) for m in ms])

    def dn(images):
        return np.clip(np.round(images), 0, 65535).astype(np.uint16)

    with h5py.File(path, "w") as f:
        for name, images in (("gt", gt), ("lms", lms), ("ms", ms), ("pan", pan[:, None])):
            f.create_dataset(name, data=dn(images))
    return path


def reduced_scene(shared_data: Path, scene: str, sensor: str = "WV3"):
    """A PAirMax 8-band scene (512 x 512 PAN, no reference) one scale down by Wald's protocol: PAN 128 x 128,
    MS 32 x 32, and the original MS as the reference."""
    from ssdiff_model.data.dispatch import read_pair
    from ssdiff_model.science.wald import reduced_resolution_pair

    folder = shared_data / "pairmax" / scene / "RR"
    return reduced_resolution_pair(read_pair(folder / "PAN.tif", folder / "MS_LR.tif", sensor=sensor))


@pytest.fixture(scope="module")
def pancollection(shared_data, tmp_path_factory) -> Path:
    """A tiny PanCollection folder: train_wv3.h5 (nine 64 x 64 patches of Munich "Mix"), valid_wv3.h5 (two of
    Miami, a WorldView-2 scene with the same eight bands) and test_wv3_multiExm1.h5 (two 120 x 120 images of Munich
    "Nat", another scene)."""
    from ssdiff_model.science.wald import cut_patches

    folder = tmp_path_factory.mktemp("pancollection")
    train = reduced_scene(shared_data, "W3_Muni_Mix")
    patches = cut_patches(train.pan, train.ms_lr, train.gt, size=64, stride=32)
    write_pancollection(folder / "train_wv3.h5", patches.pan, patches.ms_lr, patches.reference)
    valid = reduced_scene(shared_data, "W2_Miam_Mix", sensor="WV2")
    patches = cut_patches(valid.pan[:64], valid.ms_lr[:, :16], valid.gt[:, :64], size=64, stride=64)
    write_pancollection(folder / "valid_wv3.h5", patches.pan, patches.ms_lr, patches.reference)
    test = reduced_scene(shared_data, "W3_Muni_Nat")
    n, small = TEST_SIZE, TEST_SIZE // 4
    corners = [(0, 0), (8, 8)]   # PAN offsets, multiples of the ratio
    write_pancollection(folder / "test_wv3_multiExm1.h5",
                        np.stack([test.pan[r:r + n, c:c + n] for r, c in corners]),
                        np.stack([test.ms_lr[:, r // 4:r // 4 + small, c // 4:c // 4 + small] for r, c in corners]),
                        np.stack([test.gt[:, r:r + n, c:c + n] for r, c in corners]))
    return folder


@pytest.fixture(scope="module")
def wv3_checkpoint(tmp_path_factory) -> Path:
    from ssdiff_model.model.checkpoint import save_untrained
    from ssdiff_model.science.sensors import get_sensor

    return save_untrained(tmp_path_factory.mktemp("ckpt") / "tiny-wv3.pt", bands=WV3_BANDS, ratio=4,
                          full_scale=2047.0, sensor="WV3", band_names=list(get_sensor("WV3").band_names), width=8,
                          head_dim=8, time_embed_dim=16, time_hidden_dim=32)


def run_bench(args: list[str], capsys) -> tuple[int, dict | None, str]:
    code = bench.main(args)
    captured = capsys.readouterr()
    return code, (json.loads(captured.out) if code == 0 else None), captured.err


# ---- the release's patch merge ---------------------------------------------------------------------------------

@pytest.mark.parametrize("length, expected", [(64, [0]), (112, [0, 16, 32, 48]), (120, [0, 16, 32, 48, 56]),
                                              (256, list(range(0, 193, 16)))])
def test_release_patch_origins_reach_the_far_edge(length, expected):
    assert bench.patch_origins(length) == expected


def test_release_merge_covers_every_pixel_and_averages_the_overlaps():
    height, width = 120, 88   # neither on the stride grid
    origins = [(r, c) for r in bench.patch_origins(height) for c in bench.patch_origins(width)]
    image = np.random.default_rng(0).random((3, height, width)).astype(np.float32)
    patches = np.stack([image[:, r:r + 64, c:c + 64] for r, c in origins])
    # patches cut from one image merge back into it exactly: every pixel is covered and averaged with equal weights
    np.testing.assert_allclose(bench.merge_patches(patches, origins, height, width), image, rtol=1e-6)
    # each patch a constant: the merge is, per pixel, the mean over the patches that cover it
    constants = np.arange(len(origins), dtype=np.float32)
    merged = bench.merge_patches(np.broadcast_to(constants[:, None, None, None], (len(origins), 3, 64, 64)),
                                 origins, height, width)
    covering = [[k for k, (r, c) in enumerate(origins) if r <= y < r + 64 and c <= x < c + 64]
                for y, x in ((0, 0), (119, 87), (60, 40), (119, 0))]
    assert all(cover for cover in covering)
    for (y, x), cover in zip(((0, 0), (119, 87), (60, 40), (119, 0)), covering):
        assert merged[0, y, x] == pytest.approx(np.mean(cover))
    with pytest.raises(ValueError, match="uncovered"):
        bench.merge_patches(patches[:1], origins[:1], height, width)


# ---- the table -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("protocol", ["release", "tiled"])
def test_table_indexes_are_the_metrics_of_the_sharpened_images(protocol, pancollection, wv3_checkpoint, tmp_path,
                                                                capsys):
    from ssdiff_model.data.matfiles import read_pancollection
    from ssdiff_model.inference.pansharpener import Pansharpener
    from ssdiff_model.science.metrics import reduced_resolution
    from tiling import sharpen_array

    test_file = pancollection / "test_wv3_multiExm1.h5"
    fused_file = tmp_path / "sr.h5"
    code, table, err = run_bench(["--test", str(test_file), "--checkpoint", str(wv3_checkpoint), "--steps", "2",
                                  "--protocol", protocol, "--save-fused", str(fused_file), "--device", "cpu",
                                  "--out", str(tmp_path / "table.json")], capsys)
    assert code == 0, err
    assert json.loads((tmp_path / "table.json").read_text()) == table
    batch = read_pancollection(test_file)
    with h5py.File(fused_file, "r") as f:
        fused = f["sr"][()]
    assert fused.shape == batch.gt.shape == (2, WV3_BANDS, TEST_SIZE, TEST_SIZE)
    # the bench's per-image indexes are ssdiff_model.science.metrics on the same images, with the settings it reports
    settings = table["index_settings"]
    assert settings == {"cut_bounds": 0, "dim_cut": None, "block": 32, "bits": 11, "ratio": 4, "thvalues": 0}
    assert len(table["per_image"]) == table["images"] == 2
    for row, image, gt in zip(table["per_image"], fused, batch.gt):
        direct = reduced_resolution(image, gt, 4, 11, cut_bounds=0, block=32)
        assert {k: row[k] for k in bench.INDEXES} == {k: direct[k] for k in bench.INDEXES}
    for k in bench.INDEXES:
        assert table["mean"][k] == pytest.approx(np.mean([row[k] for row in table["per_image"]]), rel=1e-12)
        assert table["std"][k] == pytest.approx(np.std([row[k] for row in table["per_image"]], ddof=1), rel=1e-12)
    # beside the paper's own WorldView-3 figures
    assert table["sensor"] == "WV3" and table["paper"]["SAM"] == 2.843 and table["paper"]["Q2n"] == 0.916
    assert table["ours_minus_paper"]["ERGAS"] == pytest.approx(table["mean"]["ERGAS"] - 2.106)
    assert (table["full_scale"], table["steps"], table["sampler"], table["seed"]) == (2047.0, 2, "consistent", 0)
    assert table["protocol"]["name"] == protocol and not table["warnings"]

    # and the sharpened images are what the model gives for that protocol
    model = Pansharpener.from_checkpoint(wv3_checkpoint, device="cpu")
    pan, ms_lr = batch.pan[1], batch.ms_lr[1]
    if protocol == "release":
        # every patch fed the file's lms cut to it, as the release does
        assert table["protocol"]["patches_per_image"] == 25 and table["protocol"]["lms"] == "the file's"
        expected, count = bench.sharpen_release(model, pan, ms_lr, batch.lms[1], steps=2, seed=0, full_scale=2047.0,
                                                batch_size=32)
        assert count == 25
    else:
        expected = sharpen_array(model, pan, ms_lr, steps=2, seed=0, full_scale=2047.0)
    np.testing.assert_allclose(fused[1], expected, rtol=1e-6, atol=1e-3)
    assert np.isfinite(fused).all() and 0 <= fused.min() and fused.max() <= 2047


def test_table_rejects_bad_input_naming_the_file(pancollection, wv3_checkpoint, tmp_path, capsys):
    missing = tmp_path / "test_wv3_multiExm1.h5"
    code, _, err = run_bench(["--test", str(missing), "--checkpoint", str(wv3_checkpoint)], capsys)
    assert code == 2 and str(missing) in err and "no such test file" in err

    # an OrigScale-style file: no reference to score against
    no_gt = tmp_path / "test_wv3_OrigScale_multiExm1.h5"
    with h5py.File(pancollection / "test_wv3_multiExm1.h5", "r") as src, h5py.File(no_gt, "w") as dst:
        for key in ("lms", "ms", "pan"):
            dst.create_dataset(key, data=src[key][()])
    code, _, err = run_bench(["--test", str(no_gt), "--checkpoint", str(wv3_checkpoint)], capsys)
    assert code == 2 and str(no_gt) in err and "no 'gt'" in err

    # a 4-band checkpoint for an 8-band file
    from ssdiff_model.model.checkpoint import save_untrained

    four = save_untrained(tmp_path / "four.pt", bands=4, ratio=4, full_scale=2047.0, sensor="QB",
                          band_names=["blue", "green", "red", "nir"], width=16, head_dim=8, time_embed_dim=32,
                          time_hidden_dim=64)
    test_file = pancollection / "test_wv3_multiExm1.h5"
    code, _, err = run_bench(["--test", str(test_file), "--checkpoint", str(four)], capsys)
    assert code == 2 and str(test_file) in err and "8 MS bands" in err and "expects 4 bands" in err


def test_release_sampler_reaches_the_model(pancollection, wv3_checkpoint, tmp_path, capsys):
    """--sampler release: the table records it and its images are the release sampler's, not the default's."""
    from ssdiff_model.data.matfiles import read_pancollection
    from ssdiff_model.inference.pansharpener import Pansharpener

    test_file = pancollection / "test_wv3_multiExm1.h5"
    fused_file = tmp_path / "sr.h5"
    code, table, err = run_bench(["--test", str(test_file), "--checkpoint", str(wv3_checkpoint), "--steps", "2",
                                  "--protocol", "release", "--sampler", "release", "--limit", "1",
                                  "--save-fused", str(fused_file), "--device", "cpu"], capsys)
    assert code == 0, err
    assert table["sampler"] == "release" and table["images"] == 1 and table["images_in_file"] == 2
    with h5py.File(fused_file, "r") as f:
        fused = f["sr"][0]
    batch = read_pancollection(test_file)
    model = Pansharpener.from_checkpoint(wv3_checkpoint, device="cpu")
    options = dict(steps=2, seed=0, full_scale=2047.0, batch_size=32)
    release, _ = bench.sharpen_release(model, batch.pan[0], batch.ms_lr[0], batch.lms[0], sampler="release", **options)
    consistent, _ = bench.sharpen_release(model, batch.pan[0], batch.ms_lr[0], batch.lms[0], **options)
    np.testing.assert_allclose(fused, release, rtol=1e-5, atol=1e-2)
    assert np.abs(release - consistent).max() > 1


# ---- the recipe, end to end ------------------------------------------------------------------------------------

@pytest.mark.slow
def test_make_reproduce_paper_trains_and_ends_with_the_table(pancollection, tmp_path):
    """`make reproduce-paper` for real, a few iterations: the store from train_wv3.h5 (its patches as they are), the
    Ray Train run and its L-BAF fine-tune, and the table on test_wv3_multiExm1.h5."""
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    venv = Path(sys.prefix)
    runs = tmp_path / "runs"
    command = [
        "make", "-C", str(PROJECT_ROOT), "--no-print-directory",
        # this interpreter's environment is the venv; never reinstall it from here
        f"VENV={venv}", "-o", str(venv / ".installed"),
        "reproduce-paper", f"DATA={pancollection}", "SENSOR=wv3", f"RUNS={runs}", "ITERS=2", "LBAF_ITERS=2",
        "LBAF_EVERY=1", "WIDTH=16", "BATCH=2", "STEPS=2", "GPUS=0", "CPUS_PER_WORKER=1", "CHECKPOINT_EVERY=2",
        "VALIDATE_EVERY=0", "PROTOCOL=release", "SAMPLER=release",
    ]
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]

    table = json.loads((runs / "paper-wv3.json").read_text())
    assert table["test_file"] == str(pancollection / "test_wv3_multiExm1.h5")
    assert table["images"] == 2 and table["protocol"]["name"] == "release" and table["steps"] == 2
    assert table["sampler"] == "release" and table["protocol"]["lms"] == "the file's"
    assert set(table["mean"]) >= {"SAM", "ERGAS", "Q2n", "SCC"} and all(np.isfinite(list(table["mean"].values())))
    assert table["paper"]["SAM"] == 2.843 and table["full_scale"] == 2047.0

    from ssdiff_model.model.checkpoint import load_checkpoint
    from tiling.stores.training import TrainingStore

    store = TrainingStore(runs / "paper-wv3.zarr")
    # the nine PanCollection patches are the training examples, as they are; valid_wv3.h5 is the validation split
    assert (store.count("train"), store.count("validation"), store.bands) == (9, 2, WV3_BANDS)
    assert [(s["paths"], s["split"]) for s in store.sources] == [
        ([str(pancollection / "train_wv3.h5")], "train"), ([str(pancollection / "valid_wv3.h5")], "validation")]
    assert store.sources[0]["protocol"] == "PanCollection reduced-resolution patches, used as they are"
    ckpt = load_checkpoint(runs / "export" / "ssdiff-paper-wv3.pt")
    assert ckpt.config["width"] == 16 and ckpt.full_scale == 2047.0 and ckpt.config["bands"] == WV3_BANDS
    assert ckpt.training["lbaf"] and ckpt.training["iterations"] == 2
    assert {"val_SAM", "val_ERGAS", "val_Q2n"} <= set(ckpt.training["job"]["validation"])
    assert ckpt.training["job"]["finetuned_from"]["iterations"] == 2
    assert table["checkpoint"] == str(runs / "export" / "ssdiff-paper-wv3.pt")


@pytest.mark.parametrize("sensor, iterations, full_scale", [("wv3", 150000, 2047), ("gf2", 100000, 1023),
                                                            ("qb", 200000, 2047)])
def test_reproduce_paper_recipe_has_the_papers_settings(sensor, iterations, full_scale, tmp_path):
    """What `make reproduce-paper` runs (make -n prints it): the paper's settings per sensor, one worker per GPU."""
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    venv = Path(sys.prefix)
    done = subprocess.run(["make", "-n", "-C", str(PROJECT_ROOT), "--no-print-directory", f"VENV={venv}", "-o",
                           str(venv / ".installed"), "reproduce-paper", f"DATA={tmp_path}", f"SENSOR={sensor}",
                           "GPUS=4", "RUNS=runs"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.replace("\\\n", " ").split("\n")
    prepare = next(line for line in lines if "prepare-training" in line)
    train = " ".join(next(line for line in lines if " train --store" in line).split())
    finetune = " ".join(next(line for line in lines if " finetune --lbaf" in line).split())
    table = " ".join(next(line for line in lines if "pancollection_table.py" in line).split())
    assert f"--source {tmp_path}/train_{sensor}.h5" in prepare and "--validation 0" in prepare
    for stage in (train, finetune):
        assert "--batch-size 20 --workers 4" in stage and f"--full-scale {full_scale}" in stage
    assert f"--steps {iterations} --width 32 --lr 1e-3" in train
    assert f"--finetune-from runs/ray/paper-{sensor}" in finetune
    assert "--steps 30000" in finetune and "--lbaf-lr 1e-4" in finetune
    assert f"--test {tmp_path}/test_{sensor}_multiExm1.h5" in table and f"--full-scale {full_scale}" in table
    assert "--steps 10" in table and f"--out runs/paper-{sensor}.json" in table
