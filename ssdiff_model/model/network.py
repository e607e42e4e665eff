"""SSDiff's denoiser f_theta, layer by layer as the authors released it (the paper's configuration by default).

    x0_hat = f_theta(x_t, t, pan, lms, ms)      (x0 = HRMS - lms, the residual being diffused)

Two branches run side by side on a 3-scale U (64 -> 32 -> 16 -> 32 -> 64 at training size, widths d, 2d, 4d, 2d,
d). The spatial branch (PAN + x_t) runs residual blocks; the spectral branch (lms + x_t) runs an APFM at every
stage, fed with the spatial features of that stage *before* its residual block, FMIM-filtered. The down- and
up-samplers are one set of modules that both branches call. The head reads the spectral branch only: spatial
detail reaches the output through the APFMs alone, which is the paper's premise. Parity with the release is
tested against ``shared/reference/official_ssnet`` (``ssdiff_model.model.release`` maps its parameter names).

Features stay in channels_last memory throughout so APFM's tokens are free views.
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from ssdiff_model.errors import BadInput
from ssdiff_model.model.fusion import APFM, boost_first_half, fmim_lowpass_scale

__all__ = ["ARCHITECTURES", "BRANCH_MODULES", "SSDiffNet", "TwoBranchNet", "build_network", "norm_groups",
           "timestep_embedding"]

ARCHITECTURES = ("release", "legacy")

# Which submodules belong to which branch (L-BAF freezes one branch while the other trains). The samplers and the
# head are called by both branches, or read what both made, so they belong to neither.
BRANCH_MODULES = {
    "spatial": ("spatial_stem", "spatial_blocks"),
    "spectral": ("spectral_stem", "spectral_blocks"),
    "shared": ("time_mlp", "down", "up", "head", "ms_skip"),
}

RELEASE_GROUPS = 32  # GroupNorm(32, C) in the release's residual blocks


def norm_groups(channels: int) -> int:
    """GroupNorm groups for `channels`: gcd(32, channels).

    At the release's width (32, 64, 128 channels) this is its GroupNorm(32). Narrower networks (width 16 for CPU
    training: 16, 32, 64 channels) get 16, 32, 32 groups: the largest count that divides the channels and never more
    than the release's 32, so no group is ever emptier than one channel.
    """
    return math.gcd(RELEASE_GROUPS, channels)


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of timesteps (N,) -> (N, dim): cosines first, then sines, as the release has it."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    angles = t.float()[:, None] * freqs[None]
    return torch.cat([angles.cos(), angles.sin()], dim=1)


def _zero_conv(channels: int) -> nn.Conv2d:
    conv = nn.Conv2d(channels, channels, 3, padding=1)
    nn.init.zeros_(conv.weight)
    nn.init.zeros_(conv.bias)
    return conv


class Stem(nn.Module):
    """conv3x3 of the branch's inputs, + time embedding, BatchNorm, SiLU, zero-initialised conv3x3.

    No identity path: a fresh stem outputs exactly zero, so at initialisation the network is its MS skip.
    """

    def __init__(self, in_channels: int, dim: int, time_dim: int):
        super().__init__()
        self.conv_in = nn.Conv2d(in_channels, dim, 3, padding=1)
        self.time_proj = nn.Linear(time_dim, dim)
        self.norm = nn.BatchNorm2d(dim)
        self.conv_zero = _zero_conv(dim)

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x) + self.time_proj(temb)[:, :, None, None]
        return self.conv_zero(F.silu(self.norm(h)))


class ResBlock(nn.Module):
    """conv3x3 C -> C/2, LeakyReLU, conv3x3 C/2 -> C, + time embedding, GroupNorm, SiLU, zero conv3x3, residual."""

    def __init__(self, dim: int, time_dim: int):
        super().__init__()
        self.conv0 = nn.Conv2d(dim, dim // 2, 3, padding=1)
        self.conv1 = nn.Conv2d(dim // 2, dim, 3, padding=1)
        self.time_proj = nn.Linear(time_dim, dim)
        self.norm = nn.GroupNorm(norm_groups(dim), dim)
        self.conv_zero = _zero_conv(dim)

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.leaky_relu(self.conv0(x))) + self.time_proj(temb)[:, :, None, None]
        return x + self.conv_zero(F.silu(self.norm(h)))


def _down(dim: int) -> nn.Sequential:
    """C -> 2C at half the size: conv 2x2 stride 2, LeakyReLU, conv1x1, depthwise conv3x3, LeakyReLU."""
    return nn.Sequential(nn.Conv2d(dim, dim, 2, stride=2), nn.LeakyReLU(), nn.Conv2d(dim, 2 * dim, 1),
                         nn.Conv2d(2 * dim, 2 * dim, 3, padding=1, groups=2 * dim), nn.LeakyReLU())


class Up(nn.Module):
    """C -> C/2 at twice the size: transposed conv 2x2 stride 2, LeakyReLU, + the skip, conv3x3, LeakyReLU."""

    def __init__(self, dim: int):
        super().__init__()
        self.up = nn.ConvTranspose2d(dim, dim // 2, 2, stride=2)
        self.conv = nn.Conv2d(dim // 2, dim // 2, 3, padding=1)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(self.conv(F.leaky_relu(self.up(x)) + skip))


class TwoBranchNet(nn.Module):
    """What both layouts share: the input checks, the time embedding and stems, and the L-BAF branch split.

    Subclasses set ``branch_modules`` (branch -> attribute names), ``ratio``, ``time_embed_dim``, ``time_mlp``,
    ``spatial_stem``, ``spectral_stem`` and ``embed`` (the sinusoidal embedding they were trained with)."""

    branch_modules: dict[str, tuple[str, ...]] = BRANCH_MODULES
    embed = staticmethod(timestep_embedding)

    def branch_parameters(self, name: str) -> list[nn.Parameter]:
        """Parameters of one branch ("spatial", "spectral") or of the parts both use ("shared"), for L-BAF."""
        if name not in self.branch_modules:
            raise BadInput(f"unknown branch {name!r}; expected one of {tuple(self.branch_modules)}")
        return [p for attr in self.branch_modules[name] for p in getattr(self, attr).parameters()]

    def stems(self, x_t: torch.Tensor, t: torch.Tensor, pan: torch.Tensor, lms: torch.Tensor,
              ms: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Check the tile, then (time embedding, spatial stem features, spectral stem features), channels_last."""
        height, width = x_t.shape[-2:]
        if height % 4 or width % 4:
            raise BadInput(f"tile size {height}x{width} must be a multiple of 4 (three scales)")
        if ms.shape[-2:] != (height // self.ratio, width // self.ratio):
            raise BadInput(f"ms is {tuple(ms.shape[-2:])}, expected the tile size / ratio {self.ratio}")
        as_cl = dict(memory_format=torch.channels_last)
        temb = F.silu(self.time_mlp(self.embed(t, self.time_embed_dim)))
        spa = self.spatial_stem(torch.cat([pan, x_t], dim=1).contiguous(**as_cl), temb)
        spe = self.spectral_stem(torch.cat([lms, x_t], dim=1).contiguous(**as_cl), temb)
        return temb, spa, spe


class SSDiffNet(TwoBranchNet):
    """The released SSDiff network (1,300,024 parameters at width 32, 8 bands: the release's 1,426,616 less the
    126,592 its forward pass never uses).

    Args:
        bands: MS bands B.
        ratio: PAN / MS resolution ratio r (any integer: the MS skip is conv3x3 to B r^2 channels, pixel shuffle).
        width: channels d at full size (2d and 4d below); the paper's 32. Narrower widths keep the architecture;
            the GroupNorm groups follow ``norm_groups``.
        head_dim: channels per APFM head (d / head_dim heads at full size).
        fmim_scales: FMIM's low-frequency factor s at scales 0 (full size), 1, 2 (bottom).
        fmim_boosts: the matching boost b of the first half of the spectral channels.
        time_embed_dim, time_hidden_dim: sinusoidal embedding width and the time MLP's width.
        architecture: "release"; "legacy" is built by ``build_network`` for the project's first checkpoints.
    """

    def __init__(self, bands: int = 8, ratio: int = 4, width: int = 32, head_dim: int = 16,
                 fmim_scales: tuple[float, ...] = (0.9, 0.6, 0.3), fmim_boosts: tuple[float, ...] = (1.2, 1.4, 1.6),
                 time_embed_dim: int = 128, time_hidden_dim: int = 512, architecture: str = "release"):
        super().__init__()
        if architecture != "release":
            raise BadInput(f"SSDiffNet builds the 'release' architecture, not {architecture!r}: use "
                             f"ssdiff_model.model.network.build_network(config)")
        if width % head_dim or width % 2:
            raise BadInput(f"width {width} must be even and a multiple of head_dim {head_dim}")
        if len(fmim_scales) != 3 or len(fmim_boosts) != 3:
            raise BadInput("fmim_scales and fmim_boosts need one factor per scale (3)")
        if ratio < 1:
            raise BadInput(f"ratio must be a positive integer, got {ratio}")
        self.config = dict(bands=bands, ratio=ratio, width=width, head_dim=head_dim, fmim_scales=list(fmim_scales),
                           fmim_boosts=list(fmim_boosts), time_embed_dim=time_embed_dim,
                           time_hidden_dim=time_hidden_dim, architecture="release")
        self.bands, self.ratio, self.time_embed_dim = bands, ratio, time_embed_dim
        self.fmim_scales, self.fmim_boosts = tuple(fmim_scales), tuple(fmim_boosts)
        t_dim = time_hidden_dim
        # Scale level of each stage: 0, 1, 2 (bottom), 1, 0.
        self.stage_levels = (0, 1, 2, 1, 0)

        self.time_mlp = nn.Sequential(nn.Linear(time_embed_dim, t_dim), nn.SiLU(), nn.Linear(t_dim, t_dim))
        self.spatial_stem = Stem(1 + bands, width, t_dim)
        self.spectral_stem = Stem(2 * bands, width, t_dim)
        # Residual blocks at levels 0, 1, 2, 1 (none at the last stage: the spatial branch ends with its APFM).
        self.spatial_blocks = nn.ModuleList(ResBlock(width * 2**level, t_dim) for level in self.stage_levels[:4])
        self.spectral_blocks = nn.ModuleList(APFM(width * 2**level, head_dim) for level in self.stage_levels)
        self.down = nn.ModuleList([_down(width), _down(2 * width)])
        self.up = nn.ModuleList([Up(4 * width), Up(2 * width)])
        self.head = nn.Sequential(nn.Conv2d(width, width, 3, padding=1), nn.LeakyReLU(),
                                  nn.Conv2d(width, bands, 3, padding=1))
        self.ms_skip = nn.Sequential(nn.Conv2d(bands, bands * ratio**2, 3, padding=1, bias=False),
                                     nn.PixelShuffle(ratio))
        self.to(memory_format=torch.channels_last)

    @classmethod
    def from_release_state_dict(cls, state_dict: Mapping[str, torch.Tensor], bands: int,
                                ratio: int = 4) -> "SSDiffNet":
        """The network with the weights of a state dict saved by the authors' release (``ssdiff_model.model.release``
        maps the names; the width and head size are read off the shapes). Raises ValueError naming the first key or
        shape that does not fit."""
        from ssdiff_model.model.release import network_from_release  # the name table only when it is used

        return network_from_release(state_dict, bands=bands, ratio=ratio)

    def _fuse(self, stage: int, spe: torch.Tensor, spa: torch.Tensor) -> torch.Tensor:
        """FMIM then APFM: boost the spectral features, filter the spatial ones, fuse into the spectral branch."""
        level = self.stage_levels[stage]
        return self.spectral_blocks[stage](boost_first_half(spe, self.fmim_boosts[level]),
                                           fmim_lowpass_scale(spa, self.fmim_scales[level]))

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, pan: torch.Tensor, lms: torch.Tensor,
                ms: torch.Tensor) -> torch.Tensor:
        temb, spa, spe = self.stems(x_t, t, pan, lms, ms)
        skips: list[tuple[torch.Tensor, torch.Tensor]] = []
        for stage in range(2):  # down: fuse, keep the skips, halve (both branches through one sampler)
            spe = self._fuse(stage, spe, spa)
            spa = self.spatial_blocks[stage](spa, temb)
            skips.append((spe, spa))
            spe, spa = self.down[stage](spe), self.down[stage](spa)
        for stage in (2, 3):  # bottom, then level 1 on the way up
            spe = self._fuse(stage, spe, spa)
            spa = self.spatial_blocks[stage](spa, temb)
            skip_spe, skip_spa = skips.pop()
            up = self.up[stage - 2]
            spe, spa = up(spe, skip_spe), up(spa, skip_spa)
        spe = self._fuse(4, spe, spa)
        x0_hat = self.head(spe) + self.ms_skip(ms.contiguous(memory_format=torch.channels_last))
        return x0_hat.contiguous()  # callers get plain NCHW (`.view` works); it is B channels, so cheap


def build_network(config: Mapping[str, Any]) -> nn.Module:
    """The network a checkpoint's config describes. A config without ``architecture`` was written before the
    release layout existed: it is the legacy network."""
    config = dict(config)
    architecture = config.setdefault("architecture", "legacy")
    if architecture == "release":
        return SSDiffNet(**config)
    if architecture == "legacy":
        from ssdiff_model.model.network_legacy import LegacySSDiffNet

        return LegacySSDiffNet(**config)
    raise BadInput(f"unknown network architecture {architecture!r}; expected one of {ARCHITECTURES}")
