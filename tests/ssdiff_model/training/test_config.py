"""The training settings are written once: the ``ssdiff train`` / ``finetune`` options are generated from the
config dataclasses' fields, every option lands in a field, and the config itself holds the rules."""
import argparse
import dataclasses
import subprocess
import sys

import pytest

from flows.training import add_training_commands
from infra.training.config import TrainJobConfig
from ssdiff_model.errors import BadInput
from ssdiff_model.training.config import TrainConfig


def training_parser():
    parser = argparse.ArgumentParser()
    add_training_commands(parser.add_subparsers(dest="command", required=True), {})
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return parser, subparsers.choices


@pytest.mark.parametrize("command", ["train", "finetune"])
def test_every_option_of_the_train_commands_is_a_config_field(command):
    _, commands = training_parser()
    fields = {f.name for f in dataclasses.fields(TrainConfig)} | {f.name for f in dataclasses.fields(TrainJobConfig)}
    options = [a for a in commands[command]._actions if a.option_strings and a.dest not in ("help", "lbaf")]
    assert len(options) == 29
    assert {a.dest for a in options} <= fields
    assert {"--steps", "--equalize-pan", "--equalize-bands", "--augment", "--export", "--ray-address"} <= {
        a.option_strings[0] for a in options}
    # and every option's value reaches the config
    args = commands[command].parse_args(["--store", "s", "--storage-path", "r", "--name", "n", "--finetune-from",
                                         "c.pt", "--steps", "7", "--equalize-bands", "--augment", "--cpus-per-worker",
                                         "2", "--half"])
    cfg = TrainJobConfig.from_args(args)
    assert (cfg.store, cfg.storage_path, cfg.name, cfg.cpus_per_worker, cfg.half) == ("s", "r", "n", 2.0, True)
    assert cfg.training.iterations == 7 and cfg.training.finetune_from == "c.pt"
    assert cfg.training.band_equalization and cfg.training.pan_equalization   # --equalize-bands implies the PAN's
    assert cfg.training.augmentation == "dihedral"
    assert cfg.training.lbaf_start == (0 if command == "finetune" else None)
    for action in options:
        if action.dest in {f.name for f in dataclasses.fields(TrainConfig)}:
            assert getattr(cfg.training, action.dest) == getattr(args, action.dest)
        else:
            assert getattr(cfg, action.dest) == getattr(args, action.dest)


def test_lora_replaces_the_finetune_default_lbaf_start():
    _, commands = training_parser()
    args = commands["finetune"].parse_args(["--store", "s", "--storage-path", "r", "--name", "n", "--finetune-from",
                                            "c.pt", "--lora-rank", "4"])
    assert TrainJobConfig.from_args(args).training.lbaf_start is None


def test_the_config_rejects_band_equalization_without_pan_equalization():
    with pytest.raises(BadInput, match="band equalization is relative to the equalized PAN"):
        TrainConfig(band_equalization=True)
    with pytest.raises(BadInput, match="band equalization is relative to the equalized PAN"):
        TrainJobConfig(store="s", storage_path="r", name="n", training={"band_equalization": True})
    assert TrainConfig(pan_equalization=True, band_equalization=True).band_equalization


def test_a_job_config_goes_through_a_dict_and_back():
    cfg = TrainJobConfig(store="s", storage_path="r", name="n", training=TrainConfig(iterations=3, lbaf_start=1))
    assert TrainJobConfig(**cfg.to_dict()) == cfg


def test_building_the_training_commands_loads_no_heavy_module():
    code = ("import sys, argparse; from flows.training import add_training_commands; "
            "add_training_commands(argparse.ArgumentParser().add_subparsers(), {}); "
            "print([m for m in ('prefect', 'torch', 'ray', 'xarray', 'zarr') if m in sys.modules])")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "[]\n"


def test_a_width_the_network_cannot_split_into_heads_is_refused_before_any_worker_starts(tmp_path):
    with pytest.raises(BadInput, match="--width 8: must be even and a multiple of the attention head size 16"):
        TrainConfig(width=8)
    assert TrainConfig(width=8, head_dim=8).width == 8
    # from the command line: exit 2 and one line, before a store is opened or Ray is started
    run = subprocess.run([sys.executable, "-m", "flows.cli", "train", "--store", str(tmp_path / "none.zarr"),
                          "--storage-path", str(tmp_path / "runs"), "--name", "n", "--width", "8"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 2, run.stderr
    assert "--width 8: must be even" in run.stderr and "Traceback" not in run.stderr
    assert not (tmp_path / "runs").exists()
