"""The authors' released SSDiff checkpoints: their parameter names mapped onto ``SSDiffNet``'s.

The release saves plain state dicts (its EMA files too), so ``torch.load(weights_only=True)`` reads them. About
126 k of their parameters are never used by the release's forward pass (``DEAD_PREFIXES``); they are dropped.
Written from the names and shapes of the release's state dict (``shared/reference/official_ssnet``), not from its
code.
"""
from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Mapping

import torch
from torch import Tensor

from ssdiff_model.errors import BadInput
from ssdiff_model.model.checkpoint import Checkpoint
from ssdiff_model.science.sensors import get_sensor

__all__ = ["DEAD_PREFIXES", "RULES", "ReleaseCheckpointError", "import_release_checkpoint", "network_from_release",
           "release_model_card", "release_name", "release_to_project"]

RELEASE_HEAD_DIM = 16  # dim_head: the head size is not visible in the weights' shapes

# Built by the release, never called by its forward pass.
DEAD_PREFIXES = ("raise_ms_dim.", "raise_pan_dim.", "conv_x_t.", "down0.maxpool_conv.", "down1.maxpool_conv.",
                 "up0.up0.", "up1.up0.")

# (release name, project name): {i} and {j} stand for a block or layer index, {p} for a parameter or buffer name.
# The release's two branches are "pan" (spatial) and "lms" (spectral); its APFM blocks are "fusformer"s.
RULES: tuple[tuple[str, str], ...] = (
    ("upsample.upsamle.0.weight", "ms_skip.0.weight"),
    ("to_hrms.{i}.{p}", "head.{i}.{p}"),
    ("time_embed.{i}.{p}", "time_mlp.{i}.{p}"),
    ("conv_pan2x_t.{p}", "spatial_stem.conv_in.{p}"),
    ("conv_lms2x_t.{p}", "spectral_stem.conv_in.{p}"),
    ("emb_layers_pan.1.{p}", "spatial_stem.time_proj.{p}"),
    ("emb_layers_lms.1.{p}", "spectral_stem.time_proj.{p}"),
    ("out_layers_pan.0.{p}", "spatial_stem.norm.{p}"),
    ("out_layers_lms.0.{p}", "spectral_stem.norm.{p}"),
    ("out_layers_pan.3.{p}", "spatial_stem.conv_zero.{p}"),
    ("out_layers_lms.3.{p}", "spectral_stem.conv_zero.{p}"),
    ("resblock{i}.conv{j}.{p}", "spatial_blocks.{i}.conv{j}.{p}"),
    ("resblock{i}.emb_layers.1.{p}", "spatial_blocks.{i}.time_proj.{p}"),
    ("resblock{i}.out_layers.0.{p}", "spatial_blocks.{i}.norm.{p}"),
    ("resblock{i}.out_layers.3.{p}", "spatial_blocks.{i}.conv_zero.{p}"),
    ("fusformer{i}.layers.0.0.fn.norm.{p}", "spectral_blocks.{i}.norm_x.{p}"),
    ("fusformer{i}.layers.0.0.fn.fn.sa1.{p}", "spectral_blocks.{i}.proj_a.{p}"),
    ("fusformer{i}.layers.0.0.fn.fn.sa2.{p}", "spectral_blocks.{i}.proj_b.{p}"),
    ("fusformer{i}.layers.0.0.fn.fn.se1.{p}", "spectral_blocks.{i}.proj_c.{p}"),
    ("fusformer{i}.layers.0.0.fn.fn.se2.{p}", "spectral_blocks.{i}.proj_d.{p}"),
    ("fusformer{i}.layers.0.0.fn.fn.to_out.0.{p}", "spectral_blocks.{i}.proj_out.{p}"),
    ("fusformer{i}.layers.0.1.fn.norm.{p}", "spectral_blocks.{i}.norm_ffn.{p}"),
    ("fusformer{i}.layers.0.1.fn.fn.net.0.{p}", "spectral_blocks.{i}.ffn.0.{p}"),
    ("fusformer{i}.layers.0.1.fn.fn.net.3.{p}", "spectral_blocks.{i}.ffn.2.{p}"),
    ("down{i}.conv.{j}.{p}", "down.{i}.{j}.{p}"),
    ("up{i}.up1.0.{p}", "up.{i}.up.{p}"),
    ("up{i}.conv.{p}", "up.{i}.conv.{p}"),
)
_FIELDS = {"i": r"(?P<i>\d+)", "j": r"(?P<j>\d+)", "p": r"(?P<p>[A-Za-z_]+)"}


def _pattern(template: str) -> re.Pattern:
    parts = re.split(r"\{(\w)\}", template)  # literal, field, literal, field, ...
    return re.compile("".join(_FIELDS[part] if k % 2 else re.escape(part) for k, part in enumerate(parts)))


_FORWARD = [(_pattern(release), project) for release, project in RULES]
_BACKWARD = [(_pattern(project), release) for release, project in RULES]


def _translate(name: str, table) -> str | None:
    for pattern, template in table:
        match = pattern.fullmatch(name)
        if match:
            return template.format(**match.groupdict())
    return None


def release_name(name: str) -> str:
    """The release's name of one of ``SSDiffNet``'s keys (for messages); the name itself if it has none."""
    return _translate(name, _BACKWARD) or name


class ReleaseCheckpointError(BadInput):
    """A file that is not a state dict of the released SSDiff network (the message names the first problem)."""


def release_to_project(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The release's state dict under ``SSDiffNet``'s names, its dead weights left out.

    Raises ReleaseCheckpointError at the first key the release does not have."""
    if not isinstance(state_dict, Mapping) or not state_dict:
        raise ReleaseCheckpointError(f"not a state dict (a non-empty mapping of names to tensors): got "
                                     f"{type(state_dict).__name__}")
    mapped: dict[str, Tensor] = {}
    for key, value in state_dict.items():
        if not isinstance(key, str) or not isinstance(value, Tensor):
            raise ReleaseCheckpointError(f"entry {key!r} is a {type(value).__name__}, not a named tensor")
        if key.startswith(DEAD_PREFIXES):
            continue
        name = _translate(key, _FORWARD)
        if name is None:
            raise ReleaseCheckpointError(f"unexpected key {key!r}: not a parameter of the released SSDiff network")
        mapped[name] = value
    return mapped


def network_from_release(state_dict: Mapping[str, Tensor], bands: int, ratio: int = 4):
    """``SSDiffNet`` at the release's width (read off the stem) with the release's weights.

    Raises ReleaseCheckpointError naming the first missing key or the first shape that does not fit."""
    from ssdiff_model.model.network import SSDiffNet

    if isinstance(state_dict, Mapping) and "state_dict" in state_dict and isinstance(state_dict["state_dict"],
                                                                                      Mapping):
        state_dict = state_dict["state_dict"]  # a wrapper dict such as the reference fixtures
    weights = release_to_project(state_dict)
    stem = weights.get("spatial_stem.conv_in.weight")
    if stem is None or stem.ndim != 4:
        raise ReleaseCheckpointError("missing key 'conv_pan2x_t.weight' (the spatial stem)")
    width = int(stem.shape[0])
    if stem.shape[1] != 1 + bands:
        raise ReleaseCheckpointError(f"'conv_pan2x_t.weight' has shape {tuple(stem.shape)}: its "
                                     f"{stem.shape[1]} input channels mean {stem.shape[1] - 1} bands, not {bands}")
    time = weights.get("time_mlp.0.weight")
    hidden, embed = (int(time.shape[0]), int(time.shape[1])) if time is not None else (512, 128)
    net = SSDiffNet(bands=bands, ratio=ratio, width=width, head_dim=RELEASE_HEAD_DIM,
                    time_embed_dim=embed, time_hidden_dim=hidden)
    expected = net.state_dict()
    for name, value in expected.items():
        if name not in weights:
            raise ReleaseCheckpointError(f"missing key {release_name(name)!r}")
        if tuple(weights[name].shape) != tuple(value.shape):
            raise ReleaseCheckpointError(f"key {release_name(name)!r} has shape {tuple(weights[name].shape)}, "
                                         f"expected {tuple(value.shape)} for {bands} bands at ratio {ratio}")
    net.load_state_dict({k: v.to(torch.float32) if v.is_floating_point() else v for k, v in weights.items()})
    return net


def import_release_checkpoint(path: str | Path, *, bands: int, sensor: str, full_scale: float | None = None,
                              ratio: int = 4) -> Checkpoint:
    """A project checkpoint holding the weights of a state dict saved by the authors' release.

    Args:
        path: the release's ``.pth`` file (a plain state dict, its EMA files included).
        bands: MS bands the network was trained on (8 for WorldView-3, 4 for QuickBird / GaoFen-2).
        sensor: the sensor of its training data (its band names and, by default, its bit depth).
        full_scale: DN that the release's data were divided by (default 2^bits - 1 of the sensor: 2047 for
            WorldView-3 and QuickBird, 1023 for GaoFen-2).
        ratio: PAN / MS ratio (the release's is 4).

    Returns:
        The checkpoint (not yet saved); its ``training`` records the source file and its sha256.

    Raises:
        ReleaseCheckpointError: naming the file and the first key or shape that does not fit.
    """
    path = Path(path)
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # unpickling errors come in many types; name the file whatever the cause
        raise ReleaseCheckpointError(f"{path}: not a readable state dict ({err})") from err
    try:
        net = network_from_release(raw, bands=bands, ratio=ratio)
        described = get_sensor(sensor)
    except ValueError as err:
        raise ReleaseCheckpointError(f"{path}: {err}") from err
    names = list(described.band_names) or [f"B{i + 1}" for i in range(bands)]
    if len(names) != bands:
        raise ReleaseCheckpointError(f"{path}: sensor {described.name} has {len(names)} bands "
                                     f"({', '.join(names)}), not {bands}")
    scale = float(full_scale) if full_scale is not None else float(2 ** described.bits - 1)
    if not scale > 0:
        raise ReleaseCheckpointError(f"{path}: full scale must be a positive number of DN, got {full_scale}")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return Checkpoint(config=net.config, weights=net.state_dict(), ema_weights=None, full_scale=scale,
                      sensor=described.name, band_names=names, ratio=ratio,
                      training={"imported_from": {"file": path.name, "sha256": digest,
                                                  "format": "SSDiff release state dict"},
                                "dropped_release_parameters": list(DEAD_PREFIXES)})


def release_model_card(ckpt: Checkpoint, filename: str) -> str:
    """The Markdown model card of an imported release checkpoint."""
    source = ckpt.training["imported_from"]
    from ssdiff_model.model.model_card import heading, sensor_line, use_section

    return "\n".join([
        *heading(filename, f"SSDiff checkpoint `{filename}` (sha256 of contents `{ckpt.content_hash}`), imported "
                           f"from the authors' released network: `{source['file']}` (sha256 `{source['sha256']}`)."),
        *use_section(f"{filename!r})",
                     "hrms = sharpener.sharpen(pan, ms_lr, steps=10, seed=0, sampler=\"release\")   # DN in, DN out"),
        "The release trained and sampled with its own sampler (`--sampler release`: step indices fed as "
        "timesteps); the consistent sampler feeds the true timesteps the network was trained on. Measure both on "
        "your scenes.", "",
        "## Data conventions", "",
        sensor_line(ckpt, len(ckpt.band_names)),
        f"- the network sees DN divided by {ckpt.full_scale:g} (the release's normalisation of its training data)",
        f"- network: release architecture, width {ckpt.config['width']}, head size {ckpt.config['head_dim']}; "
        f"the release's unused parameters ({', '.join(p.rstrip('.') for p in DEAD_PREFIXES)}) were dropped", "",
        "## Training", "",
        "- by the release's authors' code, on data this project has not seen; the weights keep their authors' terms",
        "",
    ])
