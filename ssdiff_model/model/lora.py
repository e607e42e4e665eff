"""Low-rank adapters on the APFM projections: the LoRA variant of L-BAF fine-tuning.

``add_lora`` gives proj_a, proj_b, proj_c, proj_d and proj_out of every APFM block a low-rank weight update
W + (alpha / rank) B A (B zero-initialised, so the net starts out unchanged) and freezes everything else;
``merge_lora`` folds B A into W, leaving plain nn.Linear layers, so fine-tuning adds no inference cost.

The update is a ``torch.nn.utils.parametrize`` parametrization of each layer's ``weight`` rather than a wrapper
module: APFM reads ``proj_a.weight`` directly (it fuses two projections into one matmul), and a
parametrized weight is seen by every such use, while the layer stays an nn.Linear.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from ssdiff_model.errors import BadInput
from ssdiff_model.model.fusion import APFM

__all__ = ["APFM_PROJECTIONS", "LowRankUpdate", "add_lora", "has_lora", "merge_lora"]

APFM_PROJECTIONS = ("proj_a", "proj_b", "proj_c", "proj_d", "proj_out")


class LowRankUpdate(nn.Module):
    """weight -> weight + (alpha / rank) * B @ A, with A (rank, in) and B (out, rank)."""

    def __init__(self, layer: nn.Linear, rank: int, alpha: float):
        super().__init__()
        if rank < 1:
            raise BadInput(f"LoRA rank must be >= 1, got {rank}")
        factory = dict(device=layer.weight.device, dtype=layer.weight.dtype)
        self.scale = alpha / rank
        self.lora_a = nn.Parameter(torch.empty(rank, layer.in_features, **factory))
        self.lora_b = nn.Parameter(torch.zeros(layer.out_features, rank, **factory))
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))  # as nn.Linear does; B = 0 keeps W unchanged

    def forward(self, weight: Tensor) -> Tensor:
        return weight + self.scale * (self.lora_b @ self.lora_a)


def _apfm_projections(net: nn.Module) -> list[nn.Linear]:
    layers = [getattr(block, name) for block in net.modules() if isinstance(block, APFM)
              for name in APFM_PROJECTIONS]
    if not layers:
        raise BadInput(f"{type(net).__name__} has no APFM block to put LoRA adapters on")
    return layers


def has_lora(net: nn.Module) -> bool:
    return any(isinstance(m, LowRankUpdate) for m in net.modules())


def add_lora(net: nn.Module, rank: int = 4, alpha: float = 4.0) -> list[nn.Parameter]:
    """Add adapters to every APFM projection and freeze all but the adapters; return the adapters."""
    if has_lora(net):
        raise BadInput(f"{type(net).__name__} already carries LoRA adapters")
    net.requires_grad_(False)
    adapters: list[nn.Parameter] = []
    for layer in _apfm_projections(net):
        update = LowRankUpdate(layer, rank, alpha)
        parametrize.register_parametrization(layer, "weight", update)
        adapters += [update.lora_a, update.lora_b]
    return adapters


def merge_lora(net: nn.Module) -> nn.Module:
    """Fold every adapter into its weight (in place): plain nn.Linear layers, every parameter trainable."""
    for layer in _apfm_projections(net):
        if parametrize.is_parametrized(layer, "weight"):
            parametrize.remove_parametrizations(layer, "weight", leave_parametrized=True)
    return net.requires_grad_(True)
