"""The checkpoints shipped in ssdiff_model/model/checkpoints: each resolves by its bare name, is what its model card
says,
and sharpens a scene it never trained on better than interpolation does. (How much better, against the classical
methods, is bench/quality_table.py's job.)"""
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import PROJECT_ROOT

from ssdiff_model.data.catalogue import family_sources
from ssdiff_model.inference.pansharpener import Pansharpener
from ssdiff_model.model.checkpoint import SHIPPED_DIR, load_checkpoint, shipped_names
from ssdiff_model.model.network import build_network
from ssdiff_model.model.sampling import sampling_defaults
from ssdiff_model.science.metrics import ergas, sam
from ssdiff_model.science.resample import central_window, upsample_ms
from ssdiff_model.science.wald import reduced_resolution_example

SHIPPED = shipped_names()


def test_checkpoints_are_shipped():
    assert "ssdiff-landsat-r2" in SHIPPED   # the demo's


@pytest.mark.parametrize("name", SHIPPED)
def test_a_shipped_checkpoint_is_what_its_model_card_says(name):
    ckpt = load_checkpoint(name)  # verifies the content hash
    card = (SHIPPED_DIR / f"{name}.md").read_text()
    assert ckpt.content_hash in card
    assert f"{len(ckpt.band_names)} bands ({', '.join(ckpt.band_names)}), ratio {ckpt.ratio}" in card
    assert f"iterations: {ckpt.training['iterations']} " in card
    assert ckpt.train_state is None, "a shipped checkpoint carries weights only"
    recommended = sampling_defaults(ckpt)
    assert set(recommended) == {"steps", "halo", "sampler", "back_projection", "ensemble"}, "it says how to sample it"
    assert (f"recommended sampling: {recommended['steps']} DDIM steps, halo {recommended['halo']}, "
            f"sampler {recommended['sampler']}, back-projection {recommended['back_projection']}, "
            f"self-ensemble {recommended['ensemble']} ") in card
    held_out = _held_out(ckpt)
    assert held_out, "a shipped checkpoint names the scenes it was validated on"
    for scene_id in held_out:
        assert f"| {scene_id} | validation |" in card


@pytest.mark.parametrize("name", SHIPPED)
def test_a_shipped_checkpoint_names_no_path_of_the_machine_that_made_it(name):
    ckpt = load_checkpoint(name)

    def strings(value):
        if isinstance(value, dict):
            for item in value.values():
                yield from strings(item)
        elif isinstance(value, (list, tuple)):
            for item in value:
                yield from strings(item)
        elif isinstance(value, str):
            yield value

    absolute = [s for s in strings({"training": ckpt.training, "config": ckpt.config}) if s.startswith(("/", "~"))]
    assert absolute == [], "paths relative to the project or run names, not this machine's"


def _held_out(ckpt) -> list[str]:
    return [s["id"] for s in ckpt.training["store"]["sources"] if s["split"] == "validation"]


@pytest.mark.parametrize("name", SHIPPED)
def test_a_shipped_checkpoint_beats_interpolation_on_a_scene_it_never_trained_on(name, shared_data):
    ckpt = load_checkpoint(name)
    scene_id = _held_out(ckpt)[0]
    # loaded as the training store loaded it (same reader, same band selection)
    pair = next(s for s in family_sources(ckpt.training["store"]["family"], shared_data) if s.id == scene_id).load()
    pan, ms_lr, reference = reduced_resolution_example(pair)
    pan, ms_lr, reference = central_window(pan, ms_lr, pair.ratio, 128 // pair.ratio, reference)

    fused = Pansharpener.from_checkpoint(name, device="cpu").sharpen(pan, ms_lr, steps=10, seed=0,
                                                                      full_scale=pair.full_scale)
    interpolated = upsample_ms(ms_lr, pair.ratio)
    print(f"{name} on {scene_id}: ERGAS {ergas(reference, fused, pair.ratio):.3f} (interpolated "
          f"{ergas(reference, interpolated, pair.ratio):.3f}), SAM {sam(reference, fused):.3f} "
          f"({sam(reference, interpolated):.3f})")
    assert fused.shape == reference.shape and np.isfinite(fused).all()
    assert ergas(reference, fused, pair.ratio) < 0.9 * ergas(reference, interpolated, pair.ratio)
    assert sam(reference, fused) < sam(reference, interpolated)



RECIPES = {"ssdiff-landsat-r2": "train-landsat-r2", "ssdiff-8band-r4": "train-8band-r4",
           "ssdiff-4band-r4": "train-4band-r4"}


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_a_shipped_checkpoints_recipe_builds_its_network(name, tmp_path):
    """`make train-...` is the recipe of the shipped checkpoint of that name: its first stage builds the network the
    checkpoint has (the later stages go on with the one they load). `ssdiff train` builds the release network by
    default, and the recipes once trained it while the shipped checkpoints are the legacy one."""
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    venv = Path(sys.prefix)
    done = subprocess.run(["make", "-n", "-C", str(PROJECT_ROOT), "--no-print-directory", f"VENV={venv}", "-o",
                           str(venv / ".installed"), RECIPES[name], f"RUNS={tmp_path}"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    stages = [" ".join(line.split()) for line in done.stdout.replace("\\\n", " ").split("\n")
              if " train --store" in line or " finetune " in line]
    assert "--finetune-from" not in stages[0] and all("--finetune-from" in stage for stage in stages[1:])
    built = stages[0].split("--architecture ", 1)[1].split()[0]
    # build_network's rule: a config without an architecture is the legacy network
    assert built == build_network(load_checkpoint(name).config).config["architecture"]
