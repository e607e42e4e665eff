"""SSDiffNet, APFM and FMIM: shapes, parameter budget and use, branch split, and the maths of both fusion blocks."""
from __future__ import annotations

import json
import math

import pytest
import torch

from ssdiff_model.model.fusion import APFM, fmim_lowpass_scale, spatial_projection, spectral_projection
from ssdiff_model.model.network import SSDiffNet, build_network


def make_inputs(n: int, bands: int, h: int, w: int, ratio: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x_t = torch.randn(n, bands, h, w, generator=g)
    t = torch.randint(0, 1000, (n,), generator=g)
    pan = torch.rand(n, 1, h, w, generator=g)
    ms = torch.rand(n, bands, h // ratio, w // ratio, generator=g)
    lms = torch.nn.functional.interpolate(ms, scale_factor=ratio, mode="bicubic")
    return x_t, t, pan, lms, ms


def moved(net: SSDiffNet, seed: int = 0) -> SSDiffNet:
    """Every parameter moved by N(0, 0.02), as after some training: a fresh network's zero-initialised convs
    hide whatever sits behind them."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.02 * torch.randn(p.shape, generator=g))
    return net


@pytest.fixture(scope="module")
def net() -> SSDiffNet:
    torch.manual_seed(0)
    return moved(SSDiffNet()).eval()


@pytest.mark.parametrize("bands, ratio, h, w", [(8, 4, 32, 32), (8, 4, 16, 48), (4, 2, 24, 40), (4, 4, 20, 12)])
def test_output_shape(bands, ratio, h, w):
    torch.manual_seed(0)
    model = SSDiffNet(bands=bands, ratio=ratio)
    out = model(*make_inputs(2, bands, h, w, ratio))
    assert out.shape == (2, bands, h, w)
    assert out.is_contiguous()  # plain NCHW for callers, whatever the internal memory format
    assert torch.isfinite(out).all()


def test_rejects_tile_not_multiple_of_4(net):
    with pytest.raises(ValueError, match="multiple of 4"):
        net(*make_inputs(1, 8, 30, 32, 2))


@pytest.mark.parametrize("bands, expected", [(8, 1_300_024), (4, 1_288_500)])
def test_parameter_count_is_the_releases_live_parameters(bands, expected):
    """The release builds 1,426,616 parameters for 8 bands (1,413,940 for 4), of which 126,592 are never used by its
    forward pass; we build exactly the ones it uses."""
    count = sum(p.numel() for p in SSDiffNet(bands=bands).parameters())
    assert count == expected


def test_config_round_trip(net):
    config = json.loads(json.dumps(net.config))
    rebuilt = build_network(config)
    assert config["architecture"] == "release" and isinstance(rebuilt, SSDiffNet)
    assert [(n, p.shape) for n, p in rebuilt.named_parameters()] == [(n, p.shape) for n, p in net.named_parameters()]
    assert SSDiffNet(**{**config, "bands": 4}).config["bands"] == 4


def test_configs_without_architecture_are_the_legacy_network():
    """Checkpoints written before the release layout existed carry no architecture: they load as they were."""
    legacy = build_network(dict(bands=4, ratio=2, width=16))
    assert type(legacy).__name__ == "LegacySSDiffNet" and legacy.config["architecture"] == "legacy"
    with pytest.raises(ValueError, match="unknown network architecture"):
        build_network(dict(bands=4, ratio=2, architecture="unet"))


def test_fresh_stems_output_zero():
    """As in the release: no identity path, so a fresh network's output is independent of x_t and the PAN."""
    torch.manual_seed(0)
    net = SSDiffNet().eval()
    x_t, t, pan, lms, ms = make_inputs(2, 8, 32, 32, 4)
    with torch.no_grad():
        assert torch.equal(net.spatial_stem(torch.cat([pan, x_t], 1), torch.zeros(2, 512)),
                           torch.zeros(2, 32, 32, 32))
        torch.testing.assert_close(net(x_t, t, pan, lms, ms), net(torch.zeros_like(x_t), t, pan * 0, lms, ms))


def test_every_parameter_gets_a_gradient():
    """At the release's initialisation everything behind a zero-initialised conv gets a zero gradient; once those
    convs have moved (as after the first steps), every parameter gets one."""
    torch.manual_seed(0)
    net = SSDiffNet(bands=8)
    net(*make_inputs(2, 8, 32, 32, 4)).abs().mean().backward()
    assert not [name for name, p in net.named_parameters() if p.grad is None]
    zero = {name for name, p in net.named_parameters() if not p.grad.abs().sum() > 0}
    assert any(name.startswith("spatial_stem.conv_in") for name in zero)  # behind the zero conv
    assert not any("conv_zero" in name for name in zero)
    moved(net).zero_grad(set_to_none=True)
    net.train()(*make_inputs(2, 8, 32, 32, 4)).abs().mean().backward()
    assert not [name for name, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]


@pytest.mark.parametrize("width, groups", [(32, (32, 32, 32)), (16, (16, 32, 32)), (24, (8, 16, 32))])
def test_norm_groups_follow_the_width(width, groups):
    net = SSDiffNet(bands=4, width=width, head_dim=8)
    assert tuple(block.norm.num_groups for block in net.spatial_blocks[:3]) == groups


def test_gradients_reach_both_branches(net):
    net.zero_grad(set_to_none=True)
    net(*make_inputs(1, 8, 16, 16, 4)).square().mean().backward()
    for branch in ("spatial", "spectral", "shared"):
        assert sum(p.grad.abs().sum() for p in net.branch_parameters(branch)) > 0, branch


def test_branch_parameters_are_disjoint_and_complete(net):
    groups = {name: {id(p) for p in net.branch_parameters(name)} for name in ("spatial", "spectral", "shared")}
    assert all(groups.values())
    assert not groups["spatial"] & groups["spectral"]
    assert not (groups["spatial"] | groups["spectral"]) & groups["shared"]
    assert set.union(*groups.values()) == {id(p) for p in net.parameters()}
    assert {id(p) for p in net.spectral_blocks[0].proj_a.parameters()} <= groups["spectral"]
    assert {id(p) for p in net.spatial_blocks[0].parameters()} <= groups["spatial"]
    with pytest.raises(ValueError):
        net.branch_parameters("pan")


def test_output_depends_on_timestep(net):
    x_t, t, pan, lms, ms = make_inputs(1, 8, 16, 16, 4)
    with torch.no_grad():
        early = net(x_t, torch.tensor([10]), pan, lms, ms)
        late = net(x_t, torch.tensor([900]), pan, lms, ms)
    assert (early - late).abs().mean() > 1e-3 * early.abs().mean()


def test_batch_items_are_independent(net):
    """Token reshapes and head splits must never mix pixels of different tiles."""
    inputs = make_inputs(3, 8, 16, 24, 4)
    with torch.no_grad():
        batched = net(*inputs)
        single = net(*(a[1:2] for a in inputs))
    torch.testing.assert_close(batched[1:2], single, atol=1e-5, rtol=1e-4)


# ---------------------------------------------------------------------------------------------------------------
# APFM against explicit float64 softmax matrices
# ---------------------------------------------------------------------------------------------------------------
def _heads(n=2, heads=3, tokens=20, d_h=16, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, heads, tokens, d_h, generator=g) for _ in range(3)]


def test_spatial_projection_matches_explicit_softmax():
    ya, yb, xc = _heads()
    d_h = ya.shape[-1]
    a, b, c = (v.double() for v in (ya, yb, xc))
    expected = torch.softmax(a @ b.transpose(-2, -1) / math.sqrt(d_h), dim=-1) @ c  # (N x N) per head
    torch.testing.assert_close(spatial_projection(ya, yb, xc).double(), expected, atol=1e-5, rtol=1e-5)


def test_spectral_projection_matches_explicit_softmax():
    ya, xc, xd = _heads(seed=2)
    tokens, d_h = xc.shape[-2:]
    a, c, d = (v.double() for v in (ya, xc, xd))
    expected = a @ torch.softmax(c.transpose(-2, -1) @ d / (math.sqrt(d_h) * tokens / d_h), dim=-1)
    torch.testing.assert_close(spectral_projection(ya, xc, xd).double(), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("legacy", [False, True])
def test_apfm_forward_matches_reference(legacy):
    """The whole block, head by head in float64, from the module's own weights (the release's layout: one norm for
    both inputs, unbiased projections; the legacy layout: a norm per input, biased projections)."""
    torch.manual_seed(3)
    dim, d_h, h, w = 32, 16, 4, 5
    block = APFM(dim, d_h, legacy=legacy).double()
    assert (block.proj_a.bias is None) is not legacy and (block.norm_y is None) is not legacy
    for p in block.parameters():  # non-trivial LayerNorm affine too
        torch.nn.init.normal_(p, std=0.3)
    x, y = torch.randn(2, dim, h, w, dtype=torch.float64), torch.randn(2, dim, h, w, dtype=torch.float64)

    def lin(layer, v):
        return v @ layer.weight.T + (0 if layer.bias is None else layer.bias)

    out = torch.empty_like(x)
    for i in range(2):
        xt, yt = x[i].reshape(dim, -1).T, y[i].reshape(dim, -1).T  # (L, C)
        xn, yn = block.norm_x(xt), (block.norm_y if legacy else block.norm_x)(yt)
        ya, yb, xc, xd = lin(block.proj_a, yn), lin(block.proj_b, yn), lin(block.proj_c, xn), lin(block.proj_d, xn)
        fused = []
        for k in range(dim // d_h):
            s = slice(k * d_h, (k + 1) * d_h)
            t_spa = torch.softmax(ya[:, s] @ yb[:, s].T / math.sqrt(d_h), -1) @ xc[:, s]
            t_spe = ya[:, s] @ torch.softmax(xc[:, s].T @ xd[:, s] / (math.sqrt(d_h) * h * w / d_h), -1)
            fused.append(t_spa * t_spe)
        xt = xt + lin(block.proj_out, torch.cat(fused, dim=1))
        xt = xt + block.ffn(block.norm_ffn(xt))
        out[i] = xt.T.reshape(dim, h, w)
    torch.testing.assert_close(block(x, y), out, atol=1e-10, rtol=1e-10)


# ---------------------------------------------------------------------------------------------------------------
# FMIM in the Fourier domain
# ---------------------------------------------------------------------------------------------------------------
def _window_weight(h: int, w: int, s: float) -> torch.Tensor:
    """Per-frequency gain of "scale the centred 2x2 block of the shifted spectrum by s, take the real part".

    The block holds frequencies {-1, 0} on each axis. It is not conjugate-symmetric, so the real part averages each
    coefficient with its mirror: DC is scaled by exactly s, the three other block frequencies and their three
    mirrors by (1 + s) / 2, all the rest by 1.
    """
    mask = torch.zeros(h, w, dtype=torch.float64)
    for fy in (0, -1):
        for fx in (0, -1):
            mask[fy % h, fx % w] = 1
    mirror = torch.roll(torch.flip(mask, (0, 1)), shifts=(1, 1), dims=(0, 1))  # mask at (-fy, -fx)
    return 1 + (s - 1) * (mask + mirror) / 2


@pytest.mark.parametrize("h, w", [(8, 12), (16, 16), (5, 7), (2, 6)])
@pytest.mark.parametrize("s", [0.9, 0.3])
def test_fmim_scales_the_centred_low_frequency_window(h, w, s):
    feat = torch.randn(2, 3, h, w, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    out = fmim_lowpass_scale(feat, s)
    spec_in, spec_out = torch.fft.fft2(feat), torch.fft.fft2(out)
    torch.testing.assert_close(spec_out, spec_in * _window_weight(h, w, s), atol=1e-9, rtol=1e-9)
    torch.testing.assert_close(spec_out[..., 0, 0], s * spec_in[..., 0, 0])  # DC: exactly s
    # ... and it is literally the release's recipe: fftshift, scale the centred 2x2 block, inverse, real part.
    shifted = torch.fft.fftshift(torch.fft.fft2(feat), dim=(-2, -1))
    cy, cx = h // 2, w // 2
    shifted[..., cy - 1:cy + 1, cx - 1:cx + 1] *= s
    literal = torch.fft.ifft2(torch.fft.ifftshift(shifted, dim=(-2, -1))).real
    torch.testing.assert_close(out, literal, atol=1e-10, rtol=1e-10)


def test_fmim_float32_and_identity_at_s_1():
    feat = torch.randn(2, 32, 64, 64)
    assert torch.equal(fmim_lowpass_scale(feat, 1.0), feat)
    out = fmim_lowpass_scale(feat, 0.6)
    expected = fmim_lowpass_scale(feat.double(), 0.6)
    torch.testing.assert_close(out.double(), expected, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(out, feat)
