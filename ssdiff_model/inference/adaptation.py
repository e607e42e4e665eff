"""Target-adaptive L-BAF: fine-tune a checkpoint on the very scene it is about to sharpen, then sharpen with it.

The classical methods fit their injection gains to each scene; a network trained elsewhere brings the gains of its
training scenes. Adaptation gives it the scene's own: Wald's protocol on the scene (its PAN and MS degraded by the
ratio with the sensor's MTF, its own MS as the reference) yields training examples of exactly this ground, sensor
and radiometry, and a short L-BAF run (one branch trainable at a time, alternating) fits the network to them. It
sees nothing the user did not give it.

The scene is read on a bounded central window (``MAX_WINDOW`` PAN pixels a side), so adapting costs the same on a
40k x 40k scene as on a 1k one, and the examples are patches of the training size with their scene's
equalization, as the training store makes them (``ssdiff_model.training.examples``).

Fitting a few patches of one scene can also make the network worse on the rest of it (on scenes a checkpoint
trained on, an unchecked run cost a little of every index). So by default a part of the reduced-resolution scene
(the far end of its longer side, ``held_out`` of it) is kept out of training, the network is sampled on it before
training and after every branch phase (its samples back-projected as the scene's will be), and the weights kept are
those of the check that scores best there, if it beats the base by ``min_gain`` on SAM and on ERGAS and is no worse
on Q2n; otherwise the base's own. A scene too small to hold a part out
and still train on the rest is not adapted at all (its record says why): an unchecked fit of one patch is a gamble.

Batch norms (the release network's stems) keep the base's running statistics: updated on a few patches of one
scene, they become those patches' statistics in a few dozen steps, and the network measurably degrades on the
scene itself (README, "Adapting to the scene").
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
from ssdiff_model.model.sampling import resolve_sampling
from ssdiff_model.science.resample import central_window
from ssdiff_model.science.wald import cut_patches, reduced_resolution_example
from ssdiff_model.training.config import TrainConfig
from ssdiff_model.training.examples import equalized, patch_examples
from ssdiff_model.training.loop import Trainer, patch_batches
from ssdiff_model.training.validation import validate

__all__ = ["AdaptationConfig", "MAX_WINDOW", "TooSmallToCheck", "adapt_checkpoint", "scene_examples"]

MAX_WINDOW = 1024      # PAN pixels a side read from the scene (its centre): adaptation's cost does not grow with it
PATCH = 64             # the training size
NETWORK_MULTIPLE = 4   # three scales
FILTER_MARGIN = 2      # MS pixels around nodata that Wald's MTF filters carry it to, in effect
MIN_CHECKED_PATCH = 32  # reduced-resolution PAN pixels: the smallest patch a checked adaptation trains and checks on
INDEXES = ("SAM", "ERGAS", "Q2n")


class TooSmallToCheck(BadInput):
    """The scene's reduced-resolution pair cannot be split into a part to train on and a part to check on."""


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
        held_out: share of the reduced-resolution scene's longer side (its far end, at least one patch) kept out
            of training to check the adaptation on after every branch phase; 0 trains on all of it, unchecked.
        min_gain: the relative gain on SAM and on ERGAS (Q2n no worse) a check must show over the base for its
            weights to be kept. The best of a few checks on a few held-out patches looks better than it is: gains
            under 5 % did not carry over to the scene in our measurements (README, "Adapting to the scene").
    """
    # The defaults cost less than sharpening a 512 x 512 scene on 2 CPU cores (README, "Adapting to the scene").
    iterations: int = 12
    lr: float = 3e-4
    every: int = 4
    batch_size: int = 4
    stride: int = 16
    seed: int = 0
    held_out: float = 0.25
    min_gain: float = 0.05

    def __post_init__(self):
        if (self.iterations < 0 or self.every < 1 or self.batch_size < 1 or self.stride < 1 or not self.lr > 0
                or not 0 <= self.held_out < 1 or not 0 <= self.min_gain < 1):
            raise BadInput(f"adaptation needs iterations >= 0, every, batch size and stride >= 1, lr > 0, a "
                           f"held-out share and a minimum gain in [0, 1); got {asdict(self)}")


def scene_examples(pan: np.ndarray, ms_lr: np.ndarray, *, ratio: int, full_scale: float, sensor: str | None,
                   stride: int = 16, held_out: float = 0.0) -> dict[str, np.ndarray]:
    """The training examples of a scene at reduced resolution: its central ``MAX_WINDOW`` window through Wald's
    protocol, cut into patches (smaller than 64 when the reduced scene is), patches with nodata (NaN) dropped.

    With ``held_out`` > 0 the far end of the reduced scene's longer side (that share of it, at least one patch) is
    set apart: the patches inside it are marked in the boolean array ``"held_out"``, those reaching across its
    border are dropped, and patches are made small enough (down to ``MIN_CHECKED_PATCH``) for both parts to hold one.

    Raises:
        ValueError: no patch without nodata, or a scene too small for Wald's protocol.
        TooSmallToCheck: ``held_out`` > 0 and the reduced scene cannot be split so (a ValueError too).
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
    axis = int(np.argmax(pan_lr.shape))   # the longer side is the one split
    if held_out:
        size = min(size, pan_lr.shape[axis] // 2 // multiple * multiple)
        if size < max(multiple, MIN_CHECKED_PATCH):
            raise TooSmallToCheck(f"the scene's reduced-resolution PAN is {pan_lr.shape[0]}x{pan_lr.shape[1]}: too "
                                  f"small to hold a part out and check the adaptation on it (it needs "
                                  f"{2 * MIN_CHECKED_PATCH} pixels along one side and {MIN_CHECKED_PATCH} along the "
                                  f"other)")
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
    cut = cut_patches(blocks.astype(np.float32), placeholder, size=size, stride=stride)
    keep = cut.pan.reshape(len(cut), -1).max(axis=1) == 0
    if held_out:
        extent = pan_lr.shape[axis]
        boundary = extent - max(size, int(round(extent * held_out / multiple)) * multiple)
        start = cut.origins[:, axis]
        inside = start >= boundary
        keep &= inside | (start + size <= boundary)
        examples["held_out"] = inside
    if not keep.any():
        raise BadInput("no patch of the scene is free of nodata: nothing to adapt on")
    if held_out and not (examples["held_out"][keep].any() and not examples["held_out"][keep].all()):
        raise TooSmallToCheck("no patch free of nodata is left on one side of the held-out part: the adaptation "
                              "cannot be checked")
    return {name: array[keep] for name, array in examples.items()}


def adapt_checkpoint(base: Checkpoint, pan: np.ndarray, ms_lr: np.ndarray, config: AdaptationConfig, *,
                     full_scale: float | None = None, sensor: str | None = None,
                     device: torch.device | str = "cpu", scene: dict | None = None) -> Checkpoint:
    """``base`` fine-tuned with L-BAF on the scene (pan (H, W), ms_lr (B, H/r, W/r) in DN) at reduced resolution.

    Args:
        base: the checkpoint to adapt (its EMA weights, when it has them, are the starting point).
        pan, ms_lr: the scene, DN (NaN = nodata).
        config: iterations, learning rate, alternation, held-out share, seed.
        full_scale: the scene's full scale in DN (default the checkpoint's).
        sensor: the scene's sensor, for Wald's MTF filters (default the checkpoint's).
        device: where to train.
        scene: what identifies the scene (its sources and checksums), recorded with the settings.

    Returns:
        A checkpoint with the adapted weights (no EMA: a short run's weights are the adapted ones) whose
        ``training["adaptation"]`` records the base's hash, the settings, the number of examples and, when checked,
        every check's SAM / ERGAS / Q2n on the held-out part, the iteration whose weights were kept (0: the base's)
        and, when the scene could not be checked, why it was not adapted (``declined``).
    """
    from ssdiff_model.inference.pansharpener import network_from_checkpoint

    scale = float(full_scale or base.full_scale)
    flags = base.training
    net = copy.deepcopy(network_from_checkpoint(base, ema=True))
    record: dict = {"base_hash": base.content_hash, **asdict(config), "scene_full_scale": scale,
                    "scene_sensor": sensor or base.sensor, "scene": scene, "declined": None}
    try:
        examples = scene_examples(pan, ms_lr, ratio=base.ratio, full_scale=scale, sensor=sensor or base.sensor,
                                  stride=config.stride, held_out=config.held_out)
    except TooSmallToCheck as error:
        examples, record["declined"] = None, str(error)
    if examples is not None:
        fed = equalized(examples, pan=bool(flags.get("pan_equalization")), bands=bool(flags.get("band_equalization")))
        held = fed.pop("held_out", np.zeros(len(fed["pan"]), bool))
        record.update(examples=int((~held).sum()), held_out_examples=int(held.sum()),
                      patch=int(examples["pan"].shape[-1]))
    if examples is not None and config.iterations:
        train = {k: torch.from_numpy(np.ascontiguousarray(fed[k][~held])) for k in ("pan", "ms", "lms", "hrms")}
        torch.manual_seed(config.seed)
        trainer = Trainer(net, TrainConfig(iterations=config.iterations, lr=config.lr, lbaf_start=0,
                                           lbaf_every=config.every, lbaf_lr=config.lr, seed=config.seed,
                                           log_every=0, full_scale=scale, update_norm_statistics=False), device)
        check = (_Check(trainer, {k: v[held] for k, v in fed.items()}, base, scale, config, sensor or base.sensor)
                 if held.any() else None)
        trainer.fit(patch_batches(train, config.batch_size, seed=config.seed, augmentation="dihedral"),
                    on_step=check)
        net = check.kept(record) if check else trainer.net
    weights = {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}
    # sampling_defaults: the base's measured recommendation still holds for its fine-tuning on one scene.
    training = {k: v for k, v in flags.items() if k in ("pan_equalization", "band_equalization", "augmentation",
                                                         "data_sources", "iterations", "store", "sampling_defaults")}
    training["adaptation"] = record
    adapted = Checkpoint(config=dict(base.config), weights=weights, ema_weights=None, full_scale=base.full_scale,
                         sensor=base.sensor, band_names=list(base.band_names), ratio=base.ratio, training=training)
    adapted.content_hash = content_hash(adapted)
    return adapted


class _Check:
    """Samples the held-out examples before training and after every branch phase (``on_step`` of the trainer),
    back-projected as the scene will be (the base's recommendation, the scene's sensor), scoring them as a training
    run's validation does, and remembers the weights of the best check that beats the base by ``min_gain`` on SAM
    and ERGAS and is no worse on Q2n (the base's own otherwise)."""

    def __init__(self, trainer: Trainer, held: dict[str, np.ndarray], base: Checkpoint, scale: float,
                 config: AdaptationConfig, sensor: str | None):
        self.trainer, self.config = trainer, config
        self.held = {**held, "scene_index": np.zeros(len(held["pan"]), np.int64)}
        self.sources = [{"full_scale": scale, "bits": None}]
        self.bands = bool(base.training.get("band_equalization"))
        sampling = resolve_sampling(base)[0]   # as the scene will be sampled
        self.steps, self.back_projection, self.sensor = sampling["steps"], sampling["back_projection"], sensor
        self.ensemble = sampling["ensemble"]
        self.checks: list[dict] = []
        self.best: tuple[float, int, dict] | None = None
        self(0, None)

    def __call__(self, step: int, loss: float | None) -> None:
        if step % self.config.every and step != self.config.iterations:
            return
        net = self.trainer.net
        scores = validate(net, self.trainer.diffusion, self.held, self.sources, net.config["ratio"], self.steps,
                          seed=self.config.seed, batch_size=self.config.batch_size, band_equalization=self.bands,
                          loss=False, back_projection=self.back_projection, sensor=self.sensor,
                          ensemble=self.ensemble)
        row = {"iteration": step, **{k: round(scores[f"val_{k}"], 6) for k in INDEXES}}
        self.checks.append(row)
        first, keep = self.checks[0], 1 - self.config.min_gain
        if (step and (row["SAM"] > keep * first["SAM"] or row["ERGAS"] > keep * first["ERGAS"])
                or row["Q2n"] < first["Q2n"]):
            return
        # relative gains on the two distances, so neither index's units dominate
        merit = row["SAM"] / max(first["SAM"], 1e-12) + row["ERGAS"] / max(first["ERGAS"], 1e-12)
        if self.best is None or merit < self.best[0]:
            self.best = (merit, step, {k: v.detach().cpu().clone() for k, v in net.state_dict().items()})

    def kept(self, record: dict):
        """The network with the kept weights; `record` gets the checks and the kept iteration."""
        _, step, weights = self.best
        net = self.trainer.net
        net.load_state_dict(weights)
        record.update(checks=self.checks, kept_iteration=step)
        return net
