"""Target-adaptive L-BAF: fine-tune a checkpoint on the very scene it is about to sharpen, then sharpen with it.

The classical methods fit their injection gains to each scene; a network trained elsewhere brings the gains of its
training scenes. Adaptation gives it the scene's own: Wald's protocol on the scene (its PAN and MS degraded by the
ratio with the sensor's MTF, its own MS as the reference) yields training examples of exactly this ground, sensor
and radiometry, and a short L-BAF run (one branch trainable at a time, alternating) fits the network to them. It
sees nothing the user did not give it.

The scene is read on a bounded central window (``MAX_WINDOW`` PAN pixels a side), so adapting costs the same on a
40k x 40k scene as on a 1k one, and the examples are patches of the training size with their scene's
equalization, as the training store makes them (``ssdiff_model.training.examples``).
"""
from __future__ import annotations

import copy
from dataclasses import asdict, dataclass

import numpy as np
import torch
from scipy.ndimage import binary_dilation

from ssdiff_model.data.pair import PansharpeningPair
from ssdiff_model.errors import BadInput
from ssdiff_model.model.checkpoint import Checkpoint, content_hash
from ssdiff_model.science.resample import central_window
from ssdiff_model.science.wald import cut_patches, reduced_resolution_example
from ssdiff_model.training.config import TrainConfig
from ssdiff_model.training.examples import equalized, patch_examples
from ssdiff_model.training.loop import Trainer, patch_batches

__all__ = ["AdaptationConfig", "MAX_WINDOW", "adapt_checkpoint", "scene_examples"]

MAX_WINDOW = 1024      # PAN pixels a side read from the scene (its centre): adaptation's cost does not grow with it
PATCH = 64             # the training size
NETWORK_MULTIPLE = 4   # three scales
FILTER_MARGIN = 2      # MS pixels around nodata that Wald's MTF filters carry it to, in effect


@dataclass(frozen=True)
class AdaptationConfig:
    """How a checkpoint is adapted to a scene.

    Args:
        iterations: optimiser steps (0: no adaptation).
        lr: AdamW learning rate (the paper's L-BAF rate is 1e-4).
        every: iterations per branch phase of the alternation (spatial first).
        batch_size: examples per step.
        stride: PAN pixels between the reduced-resolution scene's patches.
        seed: timesteps, noise, batches and augmentation: the same seed gives the same weights.
    """
    iterations: int = 60
    lr: float = 1e-4
    every: int = 10
    batch_size: int = 8
    stride: int = 16
    seed: int = 0

    def __post_init__(self):
        if self.iterations < 0 or self.every < 1 or self.batch_size < 1 or self.stride < 1 or not self.lr > 0:
            raise BadInput(f"adaptation needs iterations >= 0, every, batch size and stride >= 1 and lr > 0; got "
                             f"{asdict(self)}")


def scene_examples(pan: np.ndarray, ms_lr: np.ndarray, *, ratio: int, full_scale: float, sensor: str | None,
                   stride: int = 16) -> dict[str, np.ndarray]:
    """The training examples of a scene at reduced resolution: its central ``MAX_WINDOW`` window through Wald's
    protocol, cut into patches (smaller than 64 when the reduced scene is), patches with nodata (NaN) dropped.

    Raises:
        ValueError: no patch without nodata, or a scene too small for Wald's protocol.
    """
    pan, ms_lr = np.asarray(pan, dtype=np.float32), np.asarray(ms_lr, dtype=np.float32)
    pan, ms_lr = central_window(pan, ms_lr, ratio, MAX_WINDOW // ratio)
    # Nodata would spread through the MTF filters of Wald's protocol: fill it with the band means to degrade, and
    # keep only the patches whose ground (and a margin of the filters' reach) was valid.
    valid = np.isfinite(pan) & np.isfinite(ms_lr).all(axis=0).repeat(ratio, axis=0).repeat(ratio, axis=1)
    if not valid.any():
        raise BadInput("no patch of the scene is free of nodata: nothing to adapt on")
    pan = np.where(np.isfinite(pan), pan, np.nanmean(pan))
    ms_lr = np.where(np.isfinite(ms_lr), ms_lr, np.nanmean(ms_lr, axis=(1, 2), keepdims=True))
    pair = PansharpeningPair(pan=pan, ms_lr=ms_lr, ratio=ratio, full_scale=full_scale, sensor=sensor,
                             band_names=tuple(f"B{i + 1}" for i in range(ms_lr.shape[0])))
    pan_lr, ms_lr_lr, reference = reduced_resolution_example(pair)
    multiple = int(np.lcm(NETWORK_MULTIPLE, ratio))
    size = min(PATCH, min(pan_lr.shape) // multiple * multiple)
    if size < multiple:
        raise BadInput(f"the scene's reduced-resolution PAN is {pan_lr.shape[0]}x{pan_lr.shape[1]}: too small to "
                         f"adapt on (it needs {multiple}x{multiple})")
    stride = max(ratio, min(stride, size) // ratio * ratio)
    examples = patch_examples(pan_lr, ms_lr_lr, reference, ratio, full_scale, size=size, stride=stride)
    # One reduced-resolution pixel is valid when its ratio x ratio block and the filters' margin were.
    margin = FILTER_MARGIN * ratio
    invalid = ~valid[: pan_lr.shape[0] * ratio, : pan_lr.shape[1] * ratio]
    invalid = binary_dilation(invalid, iterations=margin) if invalid.any() else invalid
    blocks = invalid.reshape(pan_lr.shape[0], ratio, pan_lr.shape[1], ratio).any(axis=(1, 3))
    placeholder = np.zeros((1, pan_lr.shape[0] // ratio, pan_lr.shape[1] // ratio), np.float32)
    dirty = cut_patches(blocks.astype(np.float32), placeholder, size=size, stride=stride).pan
    keep = dirty.reshape(len(dirty), -1).max(axis=1) == 0
    if not keep.any():
        raise BadInput("no patch of the scene is free of nodata: nothing to adapt on")
    return {name: array[keep] for name, array in examples.items()}


def adapt_checkpoint(base: Checkpoint, pan: np.ndarray, ms_lr: np.ndarray, config: AdaptationConfig, *,
                     full_scale: float | None = None, sensor: str | None = None,
                     device: torch.device | str = "cpu", scene: dict | None = None) -> Checkpoint:
    """``base`` fine-tuned with L-BAF on the scene (pan (H, W), ms_lr (B, H/r, W/r) in DN) at reduced resolution.

    Args:
        base: the checkpoint to adapt (its EMA weights, when it has them, are the starting point).
        pan, ms_lr: the scene, DN (NaN = nodata).
        config: iterations, learning rate, alternation, seed.
        full_scale: the scene's full scale in DN (default the checkpoint's).
        sensor: the scene's sensor, for Wald's MTF filters (default the checkpoint's).
        device: where to train.
        scene: what identifies the scene (its sources and checksums), recorded with the settings.

    Returns:
        A checkpoint with the adapted weights (no EMA: a short run's last weights are the adapted ones) whose
        ``training["adaptation"]`` records the base's hash, the settings and the number of examples.
    """
    from ssdiff_model.inference.pansharpener import network_from_checkpoint

    scale = float(full_scale or base.full_scale)
    flags = base.training
    examples = scene_examples(pan, ms_lr, ratio=base.ratio, full_scale=scale, sensor=sensor or base.sensor,
                              stride=config.stride)
    fed = equalized(examples, pan=bool(flags.get("pan_equalization")), bands=bool(flags.get("band_equalization")))
    data = {name: torch.from_numpy(np.ascontiguousarray(fed[name])) for name in ("pan", "ms", "lms", "hrms")}
    net = copy.deepcopy(network_from_checkpoint(base, ema=True))
    if config.iterations:
        torch.manual_seed(config.seed)
        trainer = Trainer(net, TrainConfig(iterations=config.iterations, lr=config.lr, lbaf_start=0,
                                           lbaf_every=config.every, lbaf_lr=config.lr, seed=config.seed,
                                           log_every=0, full_scale=scale), device)
        trainer.fit(patch_batches(data, config.batch_size, seed=config.seed, augmentation="dihedral"))
        net = trainer.net
    weights = {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}
    # sampling_defaults: the base's measured recommendation still holds for its fine-tuning on one scene.
    training = {k: v for k, v in flags.items() if k in ("pan_equalization", "band_equalization", "augmentation",
                                                         "data_sources", "iterations", "store", "sampling_defaults")}
    training["adaptation"] = {"base_hash": base.content_hash, **asdict(config), "examples": len(examples["pan"]),
                              "patch": int(examples["pan"].shape[-1]), "scene_full_scale": scale,
                              "scene_sensor": sensor or base.sensor, "scene": scene}
    adapted = Checkpoint(config=dict(base.config), weights=weights, ema_weights=None, full_scale=base.full_scale,
                         sensor=base.sensor, band_names=list(base.band_names), ratio=base.ratio, training=training)
    adapted.content_hash = content_hash(adapted)
    return adapted
