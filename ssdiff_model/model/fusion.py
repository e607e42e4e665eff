"""How SSDiff's two branches talk to each other: APFM (alternating projection fusion) and FMIM (frequency modulation).

Feature maps are (N, C, H, W). The network keeps them in channels_last memory, so the token view (N, H*W, C)
that APFM works on is a free reshape, not a copy.
"""
from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import nn

from ssdiff_model.errors import BadInput

__all__ = ["APFM", "boost_first_half", "fmim_lowpass_scale", "from_tokens", "spatial_projection",
           "spectral_projection", "to_tokens"]


def to_tokens(feat: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> (N, H*W, C); a view when `feat` is channels_last."""
    n, c, h, w = feat.shape
    return feat.permute(0, 2, 3, 1).reshape(n, h * w, c)


def from_tokens(tokens: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """(N, H*W, C) -> (N, C, H, W) in channels_last memory (a view of contiguous tokens)."""
    n, _, c = tokens.shape
    return tokens.reshape(n, h, w, c).permute(0, 3, 1, 2)


# ----------------------------------------------------------------------------------------------------------------
# APFM
# ----------------------------------------------------------------------------------------------------------------
def spatial_projection(ya: torch.Tensor, yb: torch.Tensor, xc: torch.Tensor) -> torch.Tensor:
    """T_spa = softmax(Ya Yb^T / sqrt(d_h)) Xc over the N pixels; inputs (..., N, d_h).

    A fused attention kernel: the N x N matrix (4096^2 per head at 64x64) is never materialised.
    """
    return F.scaled_dot_product_attention(ya, yb, xc)


def spectral_projection(ya: torch.Tensor, xc: torch.Tensor, xd: torch.Tensor) -> torch.Tensor:
    """T_spe = Ya softmax(Xc^T Xd / (sqrt(d_h) * N / d_h)) over the d_h channels of a head; inputs (..., N, d_h)."""
    n, d_h = xc.shape[-2:]
    scale = math.sqrt(d_h) / n  # 1 / (sqrt(d_h) * N / d_h): the paper's sqrt(S'^3)/HW temperature
    channel_attn = (xc.transpose(-2, -1) @ xd).mul_(scale).softmax(dim=-1)  # (..., d_h, d_h)
    return ya @ channel_attn


class APFM(nn.Module):
    """Alternating projection fusion: spatial (PAN-branch) subspace and spectral (MS-branch) subspace project each
    other's features; the product of both projections is added to the spectral features X.

    forward(x_spectral, y_spatial) -> updated spectral features, all (N, C, H, W).

    The release's layout (the default) normalises both inputs with one LayerNorm, has no bias on the four
    projections and a LeakyReLU of slope 0.01 in its feed-forward. ``legacy=True`` builds this project's first
    layout (a LayerNorm per input, biased projections, slope 0.2), which only its early checkpoints need.

    Args:
        dim: channels C (a multiple of ``head_dim``).
        head_dim: channels per head d_h.
        legacy: the project's first layout instead of the release's.
    """

    def __init__(self, dim: int, head_dim: int = 16, legacy: bool = False):
        super().__init__()
        if dim % head_dim:
            raise BadInput(f"dim {dim} is not a multiple of head_dim {head_dim}")
        self.dim, self.head_dim, self.heads, self.legacy = dim, head_dim, dim // head_dim, legacy
        self.norm_x = nn.LayerNorm(dim)
        # The release passes the spatial features through the same norm as the spectral ones.
        self.norm_y = nn.LayerNorm(dim) if legacy else None
        self.proj_a = nn.Linear(dim, dim, bias=legacy)  # on spatial features Y
        self.proj_b = nn.Linear(dim, dim, bias=legacy)  # on spatial features Y
        self.proj_c = nn.Linear(dim, dim, bias=legacy)  # on spectral features X
        self.proj_d = nn.Linear(dim, dim, bias=legacy)  # on spectral features X
        self.proj_out = nn.Linear(dim, dim)
        self.norm_ffn = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, dim // 2), nn.LeakyReLU(0.2 if legacy else 0.01),
                                 nn.Linear(dim // 2, dim))

    # The benchmark swaps this for an explicit N x N version to measure what the fused kernel saves.
    spatial_projection = staticmethod(spatial_projection)

    def _split_heads(self, tokens: torch.Tensor) -> torch.Tensor:
        n, length, _ = tokens.shape  # (N, L, C) -> (N, heads, L, d_h): a strided view, no copy
        return tokens.view(n, length, self.heads, self.head_dim).transpose(1, 2)

    @staticmethod
    def _pair(first: nn.Linear, second: nn.Linear, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # One matmul for two projections of the same tokens (fewer, larger GEMMs than two Linear calls).
        bias = None if first.bias is None else torch.cat([first.bias, second.bias])
        return F.linear(tokens, torch.cat([first.weight, second.weight]), bias).chunk(2, dim=-1)

    def forward(self, x_spectral: torch.Tensor, y_spatial: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x_spectral.shape
        x = to_tokens(x_spectral)
        y = to_tokens(y_spatial)
        x_norm = self.norm_x(x)
        y_norm = (self.norm_y if self.norm_y is not None else self.norm_x)(y)
        ya, yb = self._pair(self.proj_a, self.proj_b, y_norm)
        xc, xd = self._pair(self.proj_c, self.proj_d, x_norm)
        ya, yb, xc, xd = map(self._split_heads, (ya, yb, xc, xd))
        fused = self.spatial_projection(ya, yb, xc) * spectral_projection(ya, xc, xd)  # (N, heads, L, d_h)
        fused = fused.transpose(1, 2).reshape(n, h * w, c)  # merge heads
        x = x + self.proj_out(fused)
        x = x + self.ffn(self.norm_ffn(x))
        return from_tokens(x, h, w)


# ----------------------------------------------------------------------------------------------------------------
# FMIM
# ----------------------------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=64)
def _lowfreq_basis(h: int, w: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Real basis U (H*W, k) with U U^T = Re(P), P the 2-D DFT projector onto the FMIM window.

    The window is the centred 2x2 block of the fftshift-ed spectrum: frequencies {-1, 0} on each axis. Taking the
    real part after the inverse FFT averages each coefficient with its conjugate mirror, so a frequency f gets weight
    (1[f in window] + 1[-f in window]) / 2: DC gets 1, the other window frequencies and their mirrors 1/2.
    """
    window = {(fy, fx) for fy in {0, (-1) % h} for fx in {0, (-1) % w}}
    m = torch.arange(h, dtype=torch.float64).view(h, 1)
    n = torch.arange(w, dtype=torch.float64).view(1, w)
    columns, seen = [], set()
    for f in sorted(window | {((-fy) % h, (-fx) % w) for fy, fx in window}):
        mirror = ((-f[0]) % h, (-f[1]) % w)
        if f in seen:
            continue
        seen |= {f, mirror}
        weight = ((f in window) + (mirror in window)) / 2
        phase = 2 * math.pi * (f[0] * m / h + f[1] * n / w)
        if f == mirror:  # self-conjugate (DC, Nyquist): a real cosine
            columns.append(math.sqrt(weight) * torch.cos(phase))
        else:  # e_f e_f^H + e_-f e_-f^H = 2 (cos cos^T + sin sin^T)
            columns += [math.sqrt(2 * weight) * torch.cos(phase), math.sqrt(2 * weight) * torch.sin(phase)]
    basis = torch.stack([col.reshape(-1) for col in columns], dim=1) / math.sqrt(h * w)
    return basis.to(device=device, dtype=dtype)


def _cached_lowfreq_basis(h: int, w: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    # Built outside inference mode so one cached tensor serves both inference and training.
    with torch.inference_mode(False):
        return _lowfreq_basis(h, w, device, dtype)


def fmim_lowpass_scale(feat: torch.Tensor, s: float) -> torch.Tensor:
    """FMIM filter: FFT over (H, W), fftshift, scale the centred 2x2 low-frequency block by s, inverse FFT, real part.

    Only 4 coefficients change, so instead of two full FFTs this applies the exactly equivalent rank <= 7 real
    operator: feat + (s - 1) U U^T feat (see `_lowfreq_basis`); it costs about one 1x1 convolution. Returns
    channels_last memory.
    """
    if s == 1:
        return feat
    n, c, h, w = feat.shape
    tokens = to_tokens(feat)  # (N, L, C)
    basis = _cached_lowfreq_basis(h, w, feat.device, feat.dtype)  # (L, k)
    coeffs = basis.T @ tokens  # (N, k, C)
    return from_tokens(torch.baddbmm(tokens, basis.expand(n, -1, -1), coeffs, alpha=s - 1), h, w)


def boost_first_half(feat: torch.Tensor, b: float) -> torch.Tensor:
    """FMIM's spectral boost: the first half of the channels times b."""
    c = feat.shape[1]
    gain = feat.new_ones(c)
    gain[: c // 2] = b
    return feat * gain.view(1, c, 1, 1)
