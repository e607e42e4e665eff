"""The residual-space diffusion: cosine schedule, q_sample, DDIM steps and the sampler, with the real network."""
import math

import pytest
import torch
from torch import nn

from ssdiff_model.model.diffusion import GaussianDiffusion
from ssdiff_model.model.network import SSDiffNet

BANDS, RATIO, SIZE = 4, 4, 16


@pytest.fixture(scope="module")
def diffusion():
    return GaussianDiffusion(1000)


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    net = SSDiffNet(bands=BANDS, ratio=RATIO, width=16, time_embed_dim=32, time_hidden_dim=64).eval()
    with torch.no_grad():  # move the zero-initialised convs, or the output ignores x_t
        for p in net.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return net


@pytest.fixture(scope="module")
def conditioning():
    g = torch.Generator().manual_seed(1)
    ms = torch.rand(2, BANDS, SIZE // RATIO, SIZE // RATIO, generator=g)
    lms = torch.nn.functional.interpolate(ms, scale_factor=RATIO, mode="bicubic").clamp(0, 1)
    pan = torch.rand(2, 1, SIZE, SIZE, generator=g)
    return pan, lms, ms


class TimestepRecorder(nn.Module):
    """Passes through to the real network and records the timesteps it was given."""

    def __init__(self, net):
        super().__init__()
        self.net, self.seen = net, []

    def forward(self, x_t, t, pan, lms, ms):
        self.seen.append(t.clone())
        return self.net(x_t, t, pan, lms, ms)


def test_cosine_schedule_matches_closed_form(diffusion):
    # Without clipping the product of (1 - beta) telescopes to f(t+1) / f(0).
    def f(t):
        return math.cos((t / 1000 + 0.008) / 1.008 * math.pi / 2) ** 2
    abar = diffusion.alphas_cumprod
    for t in (0, 1, 250, 500, 900, 990):
        assert abar[t].item() == pytest.approx(f(t + 1) / f(0), rel=1e-9)
    assert torch.all(abar[1:] < abar[:-1])
    betas = 1 - abar[1:] / abar[:-1]
    assert betas.max().item() == pytest.approx(0.999)  # the final betas are clipped


def test_ddim_timesteps_are_true_timesteps(diffusion):
    assert diffusion.ddim_timesteps(10) == [900, 800, 700, 600, 500, 400, 300, 200, 100, 0]
    assert diffusion.ddim_timesteps(1) == [0]
    assert diffusion.ddim_timesteps(3) == [666, 333, 0]
    assert diffusion.ddim_timesteps(1000) == list(range(999, -1, -1))
    for bad in (0, 1001):
        with pytest.raises(ValueError, match="steps"):
            diffusion.ddim_timesteps(bad)


def test_ddim_step_with_exact_x0_follows_the_forward_process(diffusion):
    # eta = 0 DDIM keeps the implied eps: from q_sample(x0, t, eps) with the true x0 it lands on q_sample(x0, t', eps).
    g = torch.Generator().manual_seed(3)
    x0, eps = torch.rand(2, 3, 8, 8, generator=g) - 0.5, torch.randn(2, 3, 8, 8, generator=g)
    t, t_prev = 700, 300
    x_t = diffusion.q_sample(x0, torch.tensor([t, t]), eps)
    expected = diffusion.q_sample(x0, torch.tensor([t_prev, t_prev]), eps)
    torch.testing.assert_close(diffusion.ddim_step(x_t, x0, t, t_prev), expected, rtol=1e-5, atol=1e-5)
    assert torch.equal(diffusion.ddim_step(x_t, x0, 0, -1), x0)  # the chain's end returns the prediction


def test_ddim_sample_is_deterministic_given_the_noise(diffusion, net, conditioning):
    pan, lms, ms = conditioning
    noise = torch.randn(lms.shape, generator=torch.Generator().manual_seed(7))
    first = diffusion.ddim_sample(net, pan, lms, ms, steps=4, noise=noise)
    second = diffusion.ddim_sample(net, pan, lms, ms, steps=4, noise=noise.clone())
    assert torch.equal(first, second)
    assert first.min() >= 0 and first.max() <= 1
    from_generator = diffusion.ddim_sample(net, pan, lms, ms, steps=4, generator=torch.Generator().manual_seed(7))
    assert torch.equal(first, from_generator)
    other = diffusion.ddim_sample(net, pan, lms, ms, steps=4, noise=torch.randn_like(noise))
    assert not torch.equal(first, other)


def test_one_step_returns_the_clipped_x0_prediction(diffusion, net, conditioning):
    pan, lms, ms = conditioning
    noise = torch.randn(lms.shape, generator=torch.Generator().manual_seed(11))
    with torch.no_grad():
        prediction = net(noise, torch.zeros(2, dtype=torch.int64), pan, lms, ms)
    expected = (prediction + lms).clamp(0, 1)
    assert torch.equal(diffusion.ddim_sample(net, pan, lms, ms, steps=1, noise=noise), expected)


def test_network_receives_true_timesteps(diffusion, net, conditioning):
    pan, lms, ms = conditioning
    recorder = TimestepRecorder(net)
    diffusion.ddim_sample(recorder, pan, lms, ms, steps=10, generator=torch.Generator().manual_seed(0))
    assert [t.tolist() for t in recorder.seen] == [[s, s] for s in range(900, -1, -100)]
    assert all(t.dtype == torch.int64 for t in recorder.seen)


def test_training_loss_is_l1_of_the_residual_and_trains_the_net(diffusion, conditioning):
    pan, lms, ms = conditioning
    hrms = (lms + 0.05 * torch.randn(lms.shape, generator=torch.Generator().manual_seed(5))).clamp(0, 1)
    recorder = TimestepRecorder(SSDiffNet(bands=BANDS, ratio=RATIO, width=16, time_embed_dim=32, time_hidden_dim=64))
    loss = diffusion.training_loss(recorder, hrms, pan, lms, ms, generator=torch.Generator().manual_seed(0))
    (t,) = recorder.seen
    assert t.shape == (2,) and t.dtype == torch.int64 and 0 <= t.min() and t.max() < 1000
    loss.backward()
    assert loss.item() > 0 and all(p.grad is not None for p in recorder.net.parameters() if p.requires_grad)
    # Same generator seed -> the same timesteps and noise -> the same loss.
    again = diffusion.training_loss(recorder, hrms, pan, lms, ms, generator=torch.Generator().manual_seed(0))
    assert again.item() == loss.item()
