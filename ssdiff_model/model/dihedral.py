"""The dihedral group of a square (quarter turns and mirrors) acting on images, and the self-ensemble built on it.

Pansharpening has these symmetries: a scene seen rotated or mirrored is still a scene, and a network trained with
dihedral augmentation learns to treat all eight views alike. Training uses one random element per example
(``ssdiff_model.training.loop``); sampling can average the network's answers over several views, each turned back
(the "self-ensemble" of super-resolution, Lim et al. 2017), which removes the part of each answer that is not
equivariant. A network trained without the augmentation has no reason to be equivariant: averaging its views
mixes in answers to images it never saw oriented so (the model cards measure both).
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import Tensor

from ssdiff_model.model.sampling import ENSEMBLE_SIZES, require_ensemble

__all__ = ["ENSEMBLE_SIZES", "dihedral", "ensemble_elements", "self_ensemble", "undo_dihedral"]

# The first 1, 2, 4 or 8 elements are a subgroup each (ENSEMBLE_SIZES): the average is symmetric under its views.
_ORDER = (0, 2, 1, 3, 4, 6, 5, 7)   # identity, half turn, quarter turns, then the mirrored four


def dihedral(image: Tensor, k: int) -> Tensor:
    """Element k (0..7) of the dihedral group on the last two axes: k % 4 quarter turns, then a left-right flip
    when k >= 4."""
    image = torch.rot90(image, k % 4, dims=(-2, -1))
    return image.flip(-1) if k >= 4 else image


def undo_dihedral(image: Tensor, k: int) -> Tensor:
    """The inverse of ``dihedral(·, k)``: ``undo_dihedral(dihedral(x, k), k) == x``."""
    image = image.flip(-1) if k >= 4 else image
    return torch.rot90(image, -(k % 4), dims=(-2, -1))


def ensemble_elements(size: int) -> tuple[int, ...]:
    """The group elements a self-ensemble of ``size`` views averages (``ENSEMBLE_SIZES``)."""
    return _ORDER[:require_ensemble(size, "self-ensemble size")]


def self_ensemble(sample: Callable[..., Tensor], inputs: Sequence[Tensor], size: int) -> Tensor:
    """The mean over ``size`` dihedral views of ``sample(*inputs)``, each view's answer turned back.

    Args:
        sample: maps image tensors (spatial axes last) to an image tensor on the same grid.
        inputs: its image arguments (spatial axes last), each turned alike.
        size: views to average (``ENSEMBLE_SIZES``; 1 calls ``sample`` once, on the inputs as given).

    Returns:
        The averaged answer.
    """
    total = None
    for k in ensemble_elements(size):
        answer = undo_dihedral(sample(*(dihedral(x, k) for x in inputs)), k)
        total = answer if total is None else total + answer
    return total if size == 1 else total / size
