"""Parity with the authors' released SSDiff, proven on `shared/reference/official_ssnet` (its README says how the
fixtures were made): the network built from each fixture's state dict reproduces the release's forward output,
the release sampler mode reproduces its 10-step result, and `ssdiff import-release-checkpoint` round-trips a
fixture into a project checkpoint that the pipeline's Pansharpener samples exactly as the release does."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SHARED

from ssdiff_model.model.diffusion import GaussianDiffusion
from ssdiff_model.model.network import SSDiffNet
from ssdiff_model.model.release import DEAD_PREFIXES, ReleaseCheckpointError, release_to_project

TOLERANCE = 1e-4  # max abs, in [0, 1] units: what the issue asks; the measured figures are ~2e-6 and ~2e-5
FIXTURES = {8: "ssnet_8band.pt", 4: "ssnet_4band.pt"}


@pytest.fixture(scope="module", params=sorted(FIXTURES, reverse=True), ids=lambda b: f"{b}band")
def fixture(request) -> dict:
    path = SHARED / "reference" / "official_ssnet" / FIXTURES[request.param]
    if not path.exists():
        pytest.skip(f"release reference outputs not found at {path} (the team's ../shared folder is absent)")
    data = torch.load(path, weights_only=True)
    data["bands"], data["path"] = request.param, path
    return data


@pytest.fixture(scope="module")
def release_net(fixture) -> SSDiffNet:
    return SSDiffNet.from_release_state_dict(fixture["state_dict"], bands=fixture["bands"]).eval()


def test_forward_reproduces_the_release(fixture, release_net):
    f = fixture["forward"]
    with torch.no_grad():
        out = release_net(f["x_t"], f["timesteps"], f["pan"], f["lms"], f["ms"])
    assert (out - f["output"]).abs().max().item() <= TOLERANCE
    # and the fixture is discriminating: a different timestep moves the output far beyond the tolerance
    with torch.no_grad():
        moved = release_net(f["x_t"], f["timesteps"] + 500, f["pan"], f["lms"], f["ms"])
    assert (moved - f["output"]).abs().mean().item() > 100 * TOLERANCE


def test_parameters_are_the_releases_less_its_dead_ones(fixture, release_net):
    state = fixture["state_dict"]
    dead = sum(v.numel() for k, v in state.items() if k.startswith(DEAD_PREFIXES))
    ours = sum(p.numel() for p in release_net.parameters())
    assert ours + dead == fixture["parameters"]
    assert len(release_to_project(state)) == len(release_net.state_dict())


def test_release_sampler_reproduces_the_release(fixture, release_net):
    """The 10-step result to the tolerance, fed the step indices 9..0 as the release does (one run, recorded)."""
    seen = []

    def recording(x_t, t, *args):
        seen.append(t[0].item())
        return release_net(x_t, t, *args)

    f, rs = fixture["forward"], fixture["release_sampler"]
    image = GaussianDiffusion().ddim_sample(recording, f["pan"], f["lms"], f["ms"], steps=rs["steps"],
                                            noise=rs["noise"], sampler="release")
    assert (image - rs["final"]).abs().max().item() <= TOLERANCE
    assert seen == list(rs["timesteps_fed_to_network"])


def _ssdiff(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flows.cli", *args], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[3], timeout=300)


def test_imported_checkpoint_samples_as_the_release(fixture, tmp_path):
    """`ssdiff import-release-checkpoint` on the release's own file format (a plain state dict), then the
    pipeline's Pansharpener with the release sampler on the fixture's 64 x 64 patches, in DN."""
    from ssdiff_model.inference.pansharpener import Pansharpener

    source = tmp_path / "release.pth"
    torch.save(fixture["state_dict"], source)
    sensor, full_scale = ("WV3", 2047.0) if fixture["bands"] == 8 else ("QB", 2047.0)
    done = _ssdiff("import-release-checkpoint", str(source), "--bands", str(fixture["bands"]), "--sensor", sensor,
                   "--out", str(tmp_path / "imported.pt"))
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "imported.md").read_text().count("release") >= 2
    sharpener = Pansharpener.from_checkpoint(tmp_path / "imported.pt", device="cpu")
    assert sharpener.full_scale == full_scale and sharpener.config["architecture"] == "release"
    f, rs = fixture["forward"], fixture["release_sampler"]
    dn = {k: f[k].double().numpy() * full_scale for k in ("pan", "lms", "ms")}
    hrms = sharpener.sharpen_tiles(dn["pan"][:, 0], dn["ms"], rs["noise"].numpy(), steps=10, sampler="release",
                                   lms=dn["lms"])
    assert np.abs(hrms / full_scale - rs["final"].numpy()).max() <= TOLERANCE


def test_import_refuses_what_is_not_a_release_state_dict(fixture, tmp_path, capsys):
    from flows.cli import main

    state = dict(fixture["state_dict"])
    cases = {
        "not_a_dict.pth": ([1, 2, 3], "not a state dict"),
        "foreign.pth": ({**state, "encoder.weight": torch.zeros(3)}, "unexpected key 'encoder.weight'"),
        "missing.pth": ({k: v for k, v in state.items() if not k.startswith("resblock1.conv0")},
                        "missing key 'resblock1.conv0."),
        "shape.pth": ({**state, "to_hrms.2.weight": torch.zeros(3, 32, 3, 3)}, "key 'to_hrms.2.weight' has shape"),
    }
    for name, (content, message) in cases.items():
        torch.save(content, tmp_path / name)
        code = main(["import-release-checkpoint", str(tmp_path / name), "--bands", str(fixture["bands"]),
                     "--sensor", "WV3" if fixture["bands"] == 8 else "QB", "--out", str(tmp_path / "out.pt")])
        stderr = capsys.readouterr().err
        assert code == 2, (name, stderr)
        assert str(tmp_path / name) in stderr and message in stderr, (name, stderr)
        assert not (tmp_path / "out.pt").exists()
    with pytest.raises(ReleaseCheckpointError, match="mean 8 bands, not 4|mean 4 bands, not 8"):
        SSDiffNet.from_release_state_dict(state, bands=12 - fixture["bands"])
