"""The project's first SSDiff denoiser layout, kept so that checkpoints trained on it still load.

It is not the authors' released network (``ssdiff_model.model.network.SSDiffNet`` is): full-width residual blocks
without
a norm, one block per stage, stems with an identity path, a stride-2 conv and a bare transposed conv per branch, and
a head that reads both branches. Checkpoints record ``architecture: "legacy"`` (or, written before the release
layout existed, no architecture at all); ``ssdiff_model.model.network.build_network`` picks the class.

    x0_hat = f_theta(x_t, t, pan, lms, ms)      (x0 = HRMS - lms, the residual being diffused)

Both branches run 64 -> 32 -> 16 -> 32 -> 64 (training size) with widths d, 2d, 4d, 2d, d. At each of the five stages
the spatial branch runs a residual block and the spectral branch an APFM block fed with that stage's spatial
features (after FMIM filtering). Features stay in channels_last memory throughout so APFM's tokens are free views.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ssdiff_model.errors import BadInput
from ssdiff_model.model.fusion import APFM, boost_first_half, fmim_lowpass_scale
from ssdiff_model.model.network import TwoBranchNet

__all__ = ["BRANCH_MODULES", "BranchStem", "LegacySSDiffNet", "ResBlock", "timestep_embedding"]

# Which submodules belong to which branch (L-BAF freezes one branch while the other trains).
BRANCH_MODULES = {
    "spatial": ("spatial_stem", "spatial_blocks", "spatial_down", "spatial_up"),
    "spectral": ("spectral_stem", "spectral_blocks", "spectral_down", "spectral_up"),
    "shared": ("time_mlp", "head", "ms_skip"),
}


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of integer timesteps (N,) -> (N, dim), as in DDPM/transformers."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    angles = t.float()[:, None] * freqs[None]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


class ResBlock(nn.Module):
    """conv3x3, + time embedding, LeakyReLU, conv3x3, residual.

    The time embedding is added after the first conv (DDPM style) so it passes through the non-linearity.
    """

    def __init__(self, dim: int, time_dim: int):
        super().__init__()
        self.conv1 = nn.Conv2d(dim, dim, 3, padding=1)
        self.time_proj = nn.Linear(time_dim, dim)
        self.conv2 = nn.Conv2d(dim, dim, 3, padding=1)

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(x) + self.time_proj(temb)[:, :, None, None]
        return x + self.conv2(F.leaky_relu(h, 0.2))


class BranchStem(nn.Module):
    """Branch input: conv3x3 of the concatenated inputs, + time embedding, then norm, SiLU and a zero-initialised
    conv added residually (so at initialisation the stem is just the input conv plus the time bias)."""

    def __init__(self, in_channels: int, dim: int, time_dim: int):
        super().__init__()
        self.conv_in = nn.Conv2d(in_channels, dim, 3, padding=1)
        self.time_proj = nn.Linear(time_dim, dim)
        self.norm = nn.GroupNorm(math.gcd(8, dim), dim)
        self.conv_zero = nn.Conv2d(dim, dim, 3, padding=1)
        nn.init.zeros_(self.conv_zero.weight)
        nn.init.zeros_(self.conv_zero.bias)

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x) + self.time_proj(temb)[:, :, None, None]
        return h + self.conv_zero(F.silu(self.norm(h)))


def _down(dim: int) -> nn.Conv2d:
    return nn.Conv2d(dim, 2 * dim, 3, stride=2, padding=1)


def _up(dim: int) -> nn.ConvTranspose2d:
    return nn.ConvTranspose2d(dim, dim // 2, 2, stride=2)


class LegacySSDiffNet(TwoBranchNet):
    branch_modules = BRANCH_MODULES
    embed = staticmethod(timestep_embedding)  # sines first, as this layout was trained

    def __init__(self, bands: int = 8, ratio: int = 4, width: int = 32, head_dim: int = 16,
                 fmim_scales: tuple[float, ...] = (0.9, 0.6, 0.3), fmim_boosts: tuple[float, ...] = (1.2, 1.4, 1.6),
                 time_embed_dim: int = 128, time_hidden_dim: int = 512, architecture: str = "legacy"):
        super().__init__()
        if architecture != "legacy":
            raise BadInput(f"LegacySSDiffNet builds the 'legacy' architecture, not {architecture!r}")
        if width % head_dim:
            raise BadInput(f"width {width} must be a multiple of head_dim {head_dim}")
        if len(fmim_scales) != 3 or len(fmim_boosts) != 3:
            raise BadInput("fmim_scales and fmim_boosts need one factor per scale (3)")
        self.config = dict(bands=bands, ratio=ratio, width=width, head_dim=head_dim, fmim_scales=list(fmim_scales),
                           fmim_boosts=list(fmim_boosts), time_embed_dim=time_embed_dim,
                           time_hidden_dim=time_hidden_dim, architecture="legacy")
        self.bands, self.ratio, self.time_embed_dim = bands, ratio, time_embed_dim
        # Stage k of the U runs at scale level k: 0, 1, 2 (bottom), 1, 0.
        self.stage_levels = (0, 1, 2, 1, 0)
        self.fmim_scales, self.fmim_boosts = tuple(fmim_scales), tuple(fmim_boosts)
        widths = [width * 2**level for level in self.stage_levels]
        t_dim = time_hidden_dim

        # shared
        self.time_mlp = nn.Sequential(nn.Linear(time_embed_dim, t_dim), nn.SiLU(), nn.Linear(t_dim, t_dim))
        self.head = nn.Sequential(nn.Conv2d(2 * width, width, 3, padding=1), nn.LeakyReLU(0.2),
                                  nn.Conv2d(width, bands, 3, padding=1))
        self.ms_skip = nn.Sequential(nn.Conv2d(bands, bands * ratio**2, 3, padding=1), nn.PixelShuffle(ratio))
        # spatial branch (PAN side)
        self.spatial_stem = BranchStem(1 + bands, width, t_dim)
        self.spatial_blocks = nn.ModuleList(ResBlock(c, t_dim) for c in widths)
        self.spatial_down = nn.ModuleList([_down(width), _down(2 * width)])
        self.spatial_up = nn.ModuleList([_up(4 * width), _up(2 * width)])
        # spectral branch (LMS side)
        self.spectral_stem = BranchStem(2 * bands, width, t_dim)
        self.spectral_blocks = nn.ModuleList(APFM(c, head_dim, legacy=True) for c in widths)
        self.spectral_down = nn.ModuleList([_down(width), _down(2 * width)])
        self.spectral_up = nn.ModuleList([_up(4 * width), _up(2 * width)])

        self.to(memory_format=torch.channels_last)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, pan: torch.Tensor, lms: torch.Tensor,
                ms: torch.Tensor) -> torch.Tensor:
        as_cl = dict(memory_format=torch.channels_last)
        temb, spa, spe = self.stems(x_t, t, pan, lms, ms)
        skips: list[tuple[torch.Tensor, torch.Tensor]] = []
        for stage, level in enumerate(self.stage_levels):
            if stage > 2:  # decoder: up-sample and add the encoder's features of the same scale
                skip_spa, skip_spe = skips.pop()
                spa = self.spatial_up[stage - 3](spa) + skip_spa
                spe = self.spectral_up[stage - 3](spe) + skip_spe
            spa = self.spatial_blocks[stage](spa, temb)
            spe = self.spectral_blocks[stage](boost_first_half(spe, self.fmim_boosts[level]),
                                              fmim_lowpass_scale(spa, self.fmim_scales[level]))
            if stage < 2:
                skips.append((spa, spe))
                spa = self.spatial_down[stage](spa)
                spe = self.spectral_down[stage](spe)

        x0_hat = self.head(torch.cat([spa, spe], dim=1)) + self.ms_skip(ms.contiguous(**as_cl))
        return x0_hat.contiguous()  # callers get plain NCHW (`.view` works); it is B channels, so cheap
