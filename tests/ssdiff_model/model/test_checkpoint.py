"""One-file checkpoints: bit-exact round trip, fp16 storage, content hash verification, name resolution."""
import subprocess
import sys

import pytest
import torch

from ssdiff_model.model import checkpoint as ckpt_module
from ssdiff_model.model import sampling as sampling_module
from ssdiff_model.model.checkpoint import Checkpoint, load_checkpoint, resolve_checkpoint, save_checkpoint
from ssdiff_model.model.network import SSDiffNet


def make_checkpoint() -> Checkpoint:
    torch.manual_seed(0)
    net = SSDiffNet(bands=4, ratio=4, width=16, time_embed_dim=32, time_hidden_dim=64)
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=0)
    net(torch.rand(1, 4, 16, 16), torch.tensor([3]), torch.rand(1, 1, 16, 16), torch.rand(1, 4, 16, 16),
        torch.rand(1, 4, 4, 4)).abs().mean().backward()
    optimizer.step()
    weights = {k: v.detach().clone() for k, v in net.state_dict().items()}
    return Checkpoint(
        config=net.config, weights=weights,
        ema_weights={k: v + 1e-3 for k, v in weights.items()},
        full_scale=2047.0, sensor="WV3", band_names=["coastal", "blue", "green", "yellow"], ratio=4,
        training={"data_sources": ["train_wv3_100.mat"], "iterations": 1, "lbaf_phase": None, "lora": None},
        train_state={"step": 1, "optimizer": optimizer.state_dict(),
                     "rng_state": torch.Generator().manual_seed(5).get_state()},
    )


def assert_same_tree(a, b):
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            assert_same_tree(a[key], b[key])
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b)
        for x, y in zip(a, b):
            assert_same_tree(x, y)
    else:
        assert a == b and type(a) is type(b)


def test_round_trip_is_bit_exact(tmp_path):
    original = make_checkpoint()
    digest = save_checkpoint(original, tmp_path / "model.pt")
    loaded = load_checkpoint(tmp_path / "model.pt")
    assert loaded.content_hash == digest and len(digest) == 64
    for name in ("config", "weights", "ema_weights", "full_scale", "sensor", "band_names", "ratio", "training",
                 "train_state"):
        assert_same_tree(getattr(original, name), getattr(loaded, name))
    SSDiffNet(**loaded.config).load_state_dict(loaded.ema_weights)  # the config rebuilds the network
    # Saving the loaded checkpoint again gives the same hash: the serialisation is canonical.
    assert save_checkpoint(loaded, tmp_path / "again.pt") == digest


def test_half_precision_storage_is_smaller_and_close(tmp_path):
    original = make_checkpoint()
    original.train_state = None  # a shipped checkpoint: weights only
    save_checkpoint(original, tmp_path / "full.pt")
    save_checkpoint(original, tmp_path / "half.pt", half=True)
    assert (tmp_path / "half.pt").stat().st_size < 0.6 * (tmp_path / "full.pt").stat().st_size
    half = load_checkpoint(tmp_path / "half.pt")
    for key, value in original.weights.items():
        if not value.is_floating_point():  # BatchNorm's batch counter stays an integer
            assert torch.equal(half.weights[key], value)
            continue
        assert half.weights[key].dtype == torch.float16
        torch.testing.assert_close(half.weights[key].float(), value, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("tamper", ["weight", "metadata"])
def test_tampered_content_fails_the_hash(tmp_path, tamper):
    path = tmp_path / "model.pt"
    save_checkpoint(make_checkpoint(), path)
    raw = torch.load(path, weights_only=True)
    if tamper == "weight":
        first = next(iter(raw["ema_weights"]))
        raw["ema_weights"][first].view(-1)[0] += 0.5
    else:
        raw["full_scale"] = 1023.0
    torch.save(raw, path)
    with pytest.raises(ValueError, match=r"model\.pt.*content hash mismatch"):
        load_checkpoint(path)


def test_unreadable_file_is_named(tmp_path):
    path = tmp_path / "garbage.pt"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="garbage.pt"):
        load_checkpoint(path)


def test_bare_names_resolve_to_shipped_checkpoints(tmp_path, monkeypatch):
    monkeypatch.setattr(ckpt_module, "SHIPPED_DIR", tmp_path)  # stand-in for ssdiff_model/model/checkpoints
    save_checkpoint(make_checkpoint(), tmp_path / "ssdiff-4band-r4.pt")
    assert resolve_checkpoint("ssdiff-4band-r4") == tmp_path / "ssdiff-4band-r4.pt"
    assert load_checkpoint("ssdiff-4band-r4").sensor == "WV3"
    with pytest.raises(FileNotFoundError, match="ssdiff-9band.*ssdiff-4band-r4"):
        resolve_checkpoint("ssdiff-9band")
    monkeypatch.setattr(ckpt_module, "SHIPPED_DIR", tmp_path / "absent")
    with pytest.raises(FileNotFoundError, match="none shipped"):
        resolve_checkpoint("ssdiff-4band-r4")


# ---- sampling defaults: the user's value, else the resumed mosaic's, else the checkpoint's, else the project's ----

def with_defaults(recommended) -> Checkpoint:
    ckpt = make_checkpoint()
    ckpt.training["sampling_defaults"] = recommended
    return ckpt


def test_a_checkpoint_without_recommendation_gets_the_project_defaults():
    values, sources = sampling_module.resolve_sampling(make_checkpoint())
    assert values == sampling_module.PROJECT_SAMPLING_DEFAULTS == {"steps": 10, "halo": 16, "sampler": "consistent",
                                                               "back_projection": 0, "ensemble": 1}
    assert set(sources.values()) == {"project"}
    assert sampling_module.resolve_sampling(None)[0] == values   # a network built in memory has no checkpoint


def test_the_checkpoints_recommendation_fills_what_the_user_left_out():
    ckpt = with_defaults({"steps": 2, "halo": 8, "back_projection": 3, "ensemble": 4})
    values, sources = sampling_module.resolve_sampling(ckpt)
    assert values == {"steps": 2, "halo": 8, "sampler": "consistent", "back_projection": 3, "ensemble": 4}
    assert sources == {"steps": "checkpoint", "halo": "checkpoint", "sampler": "project",
                       "back_projection": "checkpoint", "ensemble": "checkpoint"}


def test_the_users_value_wins_over_everything():
    ckpt = with_defaults({"steps": 2, "halo": 8, "sampler": "release", "back_projection": 3, "ensemble": 8})
    values, sources = sampling_module.resolve_sampling(ckpt, steps=10, halo=16, sampler="consistent", back_projection=0,
                                                   ensemble=2, recorded={"steps": 4, "halo": 12, "sampler": "release",
                                                                         "back_projection": 5, "ensemble": 4})
    assert values == {"steps": 10, "halo": 16, "sampler": "consistent", "back_projection": 0, "ensemble": 2}
    assert set(sources.values()) == {"user"}


def test_a_resumed_mosaic_keeps_its_own_settings_over_the_checkpoints_recommendation():
    # a store made before the checkpoint recommended 2 steps must finish with the 10 it started with
    ckpt = with_defaults({"steps": 2, "halo": 8, "back_projection": 3, "ensemble": 4})
    recorded = {"steps": 10, "halo": 16, "sampler": "ddim", "seed": 0, "tile_size": 64}
    values, sources = sampling_module.resolve_sampling(ckpt, halo=8, recorded=recorded)
    # "ddim": old stores' consistent sampler; a store that records no back-projection (no ensemble) was made before
    # it existed, so without it
    assert values == {"steps": 10, "halo": 8, "sampler": "consistent", "back_projection": 0, "ensemble": 1}
    assert sources == {"steps": "mosaic store", "halo": "user", "sampler": "mosaic store",
                       "back_projection": "mosaic store", "ensemble": "mosaic store"}


def test_recommendation_survives_the_file_and_its_hash(tmp_path):
    path = tmp_path / "c.pt"
    digest = save_checkpoint(with_defaults({"steps": 2, "halo": 8}), path)
    loaded = load_checkpoint(path)
    assert loaded.content_hash == digest and sampling_module.sampling_defaults(loaded) == {"steps": 2, "halo": 8}


@pytest.mark.parametrize("recommended", [{"steps": 0}, {"halo": -1}, {"steps": 2.5}, {"sampler": "ddpm"},
                                         {"back_projection": -1}, {"back_projection": True}, {"ensemble": 3},
                                         {"ensemble": 0}, {"ensemble": True},
                                         {"stpes": 2}, [2, 8]])
def test_a_malformed_recommendation_is_refused_not_ignored(recommended):
    with pytest.raises(ValueError, match="sampling_defaults"):
        sampling_module.resolve_sampling(with_defaults(recommended))


def test_a_bad_user_value_is_refused():
    with pytest.raises(ValueError, match="steps"):
        sampling_module.resolve_sampling(make_checkpoint(), steps=0)


def test_the_sampling_rule_loads_no_torch():
    # ingest, the command line's checks and the stores' attributes read sampling settings without the model
    code = ("import sys, ssdiff_model.model.sampling, tiling.stores.attrs, infra.preflight, flows.ingest; "
            "print('torch' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "False\n"
