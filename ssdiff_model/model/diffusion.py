"""Gaussian diffusion in residual space with a cosine schedule and a DDIM sampler (SSDiff, Algorithm 1).

Everything here works on tensors already divided by the sensor's full scale, so images lie in [0, 1].
The diffused quantity is the residual ``x0 = hrms - lms``; the network predicts ``x0`` directly
(x0-parameterisation), and the sampler stays in residual space from the first step to the last.

The default sampler ("consistent") feeds the network the TRUE diffusion timesteps in [0, T), the ones it
was trained on: 900, 800, ..., 0 for 10 steps. The authors' release does two things differently, and
``sampler="release"`` copies both so that its samples can be reproduced: it feeds the step index
9, 8, ..., 0 (timesteps the network saw only at the very end of the diffusion during training), and its
DDIM update takes the clipped *image* x0_hat + lms as the prediction, so from the second step on the
chain runs in image space although it started from residual-space noise. We do not make that the
default: the network is asked about noise levels it was not trained on.
"""
from __future__ import annotations

import math
from typing import Literal, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

from ssdiff_model.errors import BadInput

__all__ = ["GaussianDiffusion", "ResidualDenoiser", "SAMPLERS", "cosine_alphas_cumprod", "random_normal"]


class ResidualDenoiser(Protocol):
    """What the diffusion needs from a network: SSDiffNet.forward."""

    def __call__(self, x_t: Tensor, t: Tensor, pan: Tensor, lms: Tensor, ms: Tensor) -> Tensor: ...


def cosine_alphas_cumprod(num_timesteps: int, s: float = 0.008, max_beta: float = 0.999) -> Tensor:
    """abar_t of Nichol & Dhariwal (2021): betas from the cosine curve, clipped at max_beta, in float64."""
    def curve(step: float) -> float:
        return math.cos((step / num_timesteps + s) / (1 + s) * math.pi / 2) ** 2

    betas = torch.tensor([min(1 - curve(i + 1) / curve(i), max_beta) for i in range(num_timesteps)],
                         dtype=torch.float64)
    return torch.cumprod(1 - betas, dim=0)


def random_normal(shape: tuple[int, ...], like: Tensor, generator: torch.Generator | None) -> Tensor:
    """N(0, I) drawn on the generator's device (so a CPU generator reproduces on any device), moved to `like`."""
    device = generator.device if generator is not None else like.device
    return torch.randn(shape, generator=generator, device=device, dtype=like.dtype).to(like.device)


Sampler = Literal["consistent", "release"]
SAMPLERS: tuple[str, ...] = ("consistent", "release")


class GaussianDiffusion:
    def __init__(self, num_timesteps: int = 1000):
        if num_timesteps < 1:
            raise BadInput(f"num_timesteps must be >= 1, got {num_timesteps}")
        self.num_timesteps = num_timesteps
        self.alphas_cumprod = cosine_alphas_cumprod(num_timesteps)  # float64, indexed by true timestep

    # ---- forward process and loss -------------------------------------------------------------------

    def _abar(self, t: Tensor, like: Tensor) -> Tensor:
        """abar_t for a batch of timesteps, shaped to broadcast against `like` (N, B, H, W)."""
        abar = self.alphas_cumprod.to(t.device)[t].to(like.dtype)
        return abar.view(-1, *([1] * (like.ndim - 1)))

    def q_sample(self, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps, for t (N,) int64."""
        abar = self._abar(t, x0)
        return abar.sqrt() * x0 + (1 - abar).sqrt() * noise

    def training_loss(self, model: ResidualDenoiser, hrms: Tensor, pan: Tensor, lms: Tensor, ms: Tensor,
                      generator: torch.Generator | None = None) -> Tensor:
        """L1 between the predicted and the true residual, t uniform in [0, T) ("L_simple" on x0)."""
        x0 = hrms - lms
        n = x0.shape[0]
        device = generator.device if generator is not None else x0.device
        t = torch.randint(0, self.num_timesteps, (n,), generator=generator, device=device).to(x0.device)
        noise = random_normal(tuple(x0.shape), x0, generator)
        x0_hat = model(self.q_sample(x0, t, noise), t, pan, lms, ms)
        return F.l1_loss(x0_hat, x0)

    # ---- DDIM sampling ------------------------------------------------------------------------------

    def ddim_timesteps(self, steps: int) -> list[int]:
        """The true timesteps visited by a `steps`-step DDIM chain, in sampling (descending) order.

        Spacing is "leading" and even: t_i = floor(i * T / steps) for i = 0..steps-1, so 10 steps give
        900, 800, ..., 0 and 1 step gives [0]. The last step always lands on t = 0.
        """
        if not 1 <= steps <= self.num_timesteps:
            raise BadInput(f"steps must be in [1, {self.num_timesteps}], got {steps}")
        return [i * self.num_timesteps // steps for i in range(steps)][::-1]

    def ddim_step(self, x_t: Tensor, x0_hat: Tensor, t: int, t_prev: int) -> Tensor:
        """One deterministic (eta = 0) DDIM update from t to t_prev (t_prev < 0 means the chain's end)."""
        if t_prev < 0:
            return x0_hat  # abar = 1 at the end of the chain: the update is exactly the prediction
        abar_t = float(self.alphas_cumprod[t])
        abar_prev = float(self.alphas_cumprod[t_prev])
        eps = (x_t - math.sqrt(abar_t) * x0_hat) / math.sqrt(1 - abar_t)
        return math.sqrt(abar_prev) * x0_hat + math.sqrt(1 - abar_prev) * eps

    @torch.no_grad()
    def ddim_sample(self, model: ResidualDenoiser, pan: Tensor, lms: Tensor, ms: Tensor, steps: int = 10,
                    noise: Tensor | None = None, generator: torch.Generator | None = None,
                    bounds: tuple[Tensor | float, Tensor | float] = (0.0, 1.0),
                    sampler: Sampler = "consistent") -> Tensor:
        """Sample HRMS in [0, 1] from x_T = noise (or N(0, I) drawn from `generator`).

        At each step the prediction is made consistent with a valid image, clip(x0_hat + lms, 0, 1) - lms,
        and the DDIM update re-derives eps from that clipped residual. Deterministic given the noise.

        Args:
            model: the denoiser (x_t, t, pan, lms, ms) -> x0_hat.
            pan, lms, ms: (N, 1, H, W), (N, B, H, W), (N, B, H/r, W/r) in [0, 1].
            steps: DDIM steps.
            noise, generator: the starting noise, or the generator to draw it from.
            bounds: where a valid image lies when the bands are fed equalized ((1, B, 1, 1) tensors, the images
                of 0 and full scale; see ``ssdiff_model.science.equalization``).
            sampler: "consistent" (true timesteps, residual space throughout) or "release" (the authors'
                release: step indices fed as timesteps, image space after the first step; see the module doc).

        Returns:
            (N, B, H, W) images in [0, 1] (within `bounds`).
        """
        if sampler not in SAMPLERS:
            raise BadInput(f"unknown sampler {sampler!r}; expected one of {SAMPLERS}")
        if noise is None:
            noise = random_normal(tuple(lms.shape), lms, generator)
        elif noise.shape != lms.shape:
            raise BadInput(f"noise has shape {tuple(noise.shape)}, expected lms's shape {tuple(lms.shape)}")
        x_t = noise.to(device=lms.device, dtype=lms.dtype)
        timesteps = self.ddim_timesteps(steps)
        release = sampler == "release"
        for index, (t, t_prev) in enumerate(zip(timesteps, timesteps[1:] + [-1])):
            fed = steps - 1 - index if release else t
            t_batch = torch.full((x_t.shape[0],), fed, dtype=torch.int64, device=x_t.device)
            image = (model(x_t, t_batch, pan, lms, ms) + lms).clamp(*bounds)
            # The release takes the image itself as DDIM's x0; the consistent sampler its residual.
            x_t = self.ddim_step(x_t, image if release else image - lms, t, t_prev)
        # The last step ends at t = 0 where DDIM returns its prediction: return that image itself rather
        # than (image - lms) + lms, which could differ in the last bit.
        return image
