"""Single-process SSDiff training: AdamW, EMA, gradient clipping, checkpoints, resume, L-BAF and LoRA.

The pieces are small and separate so a distributed job (Ray Train) can reuse them around its own model
wrapper and data loader: ``train_step`` (one optimiser step), ``EMA``, ``LBAFSchedule`` with
``apply_lbaf_phase``, ``evaluation_loss``. ``Trainer`` strings them together for one process; its settings are
``ssdiff_model.training.config.TrainConfig`` (imported here too).

Batches are dicts of tensors in [0, 1]: pan (N, 1, H, W), ms (N, B, H/r, W/r), lms and hrms (N, B, H, W).
"""
from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable, Iterable, Iterator

import torch
from torch import Tensor, nn

from ssdiff_model.errors import BadInput
from ssdiff_model.model.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from ssdiff_model.model.diffusion import GaussianDiffusion
from ssdiff_model.model.dihedral import dihedral
from ssdiff_model.model.lora import add_lora, has_lora
from ssdiff_model.training.config import NOMINAL_FULL_SCALE, Branch, TrainConfig

__all__ = ["AUGMENTATIONS", "BRANCHES", "EMA", "LBAFSchedule", "TrainConfig", "Trainer", "apply_lbaf_phase",
           "default_device", "dihedral", "evaluation_loss", "freeze_frozen_norms", "patch_batches", "train_step"]

log = logging.getLogger(__name__)

Batch = dict[str, Tensor]
BRANCHES = ("spatial", "spectral", "shared")


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


# ---- reusable pieces --------------------------------------------------------------------------------

def freeze_frozen_norms(model: nn.Module, every_norm: bool = False) -> None:
    """Batch norms whose parameters are all frozen (the other branch's stem during L-BAF, every one under LoRA)
    keep their running statistics: in train mode they would go on moving them, so a "frozen" branch would still
    change what it computes at inference. With `every_norm`, all of them do (and normalise with them)."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            params = list(module.parameters())
            if every_norm or (params and not any(p.requires_grad for p in params)):
                module.eval()


def train_step(model: nn.Module, diffusion: GaussianDiffusion, optimizer: torch.optim.Optimizer, batch: Batch,
               generator: torch.Generator | None = None, grad_clip: float | None = 1.0,
               update_norm_statistics: bool = True) -> float:
    """One optimiser step on the residual L1 loss; returns the loss. Frozen parameters get no gradient, and
    frozen batch norms (every one without `update_norm_statistics`) keep their statistics
    (``freeze_frozen_norms``)."""
    model.train()
    freeze_frozen_norms(model, every_norm=not update_norm_statistics)
    optimizer.zero_grad(set_to_none=True)  # None, not zero: AdamW then skips frozen parameters entirely
    loss = diffusion.training_loss(model, batch["hrms"], batch["pan"], batch["lms"], batch["ms"], generator)
    loss.backward()
    if grad_clip:
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.grad is not None], grad_clip)
    optimizer.step()
    return loss.item()


@torch.no_grad()
def evaluation_loss(model: nn.Module, diffusion: GaussianDiffusion, batches: Iterable[Batch],
                    seed: int = 0) -> float:
    """Mean residual L1 over `batches` with timesteps and noise drawn from a fixed seed (comparable runs)."""
    model.eval()
    generator = torch.Generator().manual_seed(seed)
    losses = [diffusion.training_loss(model, b["hrms"], b["pan"], b["lms"], b["ms"], generator).item()
              for b in batches]
    return sum(losses) / len(losses)


class EMA:
    """Exponential moving average of a network's floating-point weights (sampling uses these)."""

    def __init__(self, model: nn.Module, decay: float = 0.9999):
        if not 0.0 <= decay < 1.0:
            raise BadInput(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items() if v.is_floating_point()}

    def decay_at(self, step: int | None) -> float:
        """The decay used after iteration `step`: warmed up as (1 + step) / (10 + step) up to `decay` (as in
        diffusers), so a run of a few thousand steps averages its recent weights, not its random initial ones."""
        return self.decay if step is None else min(self.decay, (1.0 + step) / (10.0 + step))

    @torch.no_grad()
    def update(self, model: nn.Module, step: int | None = None) -> None:
        weight = 1.0 - self.decay_at(step)
        for name, value in model.state_dict().items():
            if name in self.shadow:
                # lerp leaves a weight that did not move (a frozen branch) exactly unchanged
                self.shadow[name].lerp_(value, weight)

    def weights(self, model: nn.Module) -> dict[str, Tensor]:
        """A full state dict for `model` with the averaged values (non-float buffers taken as they are)."""
        return {k: self.shadow[k].clone() if k in self.shadow else v.detach().clone()
                for k, v in model.state_dict().items()}

    def load(self, weights: dict[str, Tensor]) -> None:
        for name in self.shadow:
            self.shadow[name].copy_(weights[name])


@dataclass(frozen=True)
class LBAFSchedule:
    """Branch-wise alternative fine-tuning: from iteration `start` on, train one branch for `every`
    iterations while the other (and the shared layers) are frozen, then swap."""
    start: int
    every: int
    first: Branch = "spatial"

    def __post_init__(self):
        if self.start < 0 or self.every < 1:
            raise BadInput(f"L-BAF needs start >= 0 and every >= 1, got start={self.start}, every={self.every}")
        if self.first not in ("spatial", "spectral"):
            raise BadInput(f"L-BAF first branch must be 'spatial' or 'spectral', got {self.first!r}")

    def phase(self, step: int) -> Branch | None:
        """The branch trained at 0-based iteration `step`, or None before L-BAF starts (all train)."""
        if step < self.start:
            return None
        second: Branch = "spectral" if self.first == "spatial" else "spatial"
        return self.first if ((step - self.start) // self.every) % 2 == 0 else second


def apply_lbaf_phase(net: nn.Module, phase: Branch | None) -> None:
    """Make exactly the `phase` branch trainable (None: every parameter trainable)."""
    for name in BRANCHES:
        for p in net.branch_parameters(name):
            p.requires_grad_(phase is None or name == phase)


# ---- the single-process loop ------------------------------------------------------------------------

class Trainer:
    """AdamW + EMA + optional L-BAF or LoRA on one device, with checkpoints that resume bit-exactly."""

    def __init__(self, net: nn.Module, config: TrainConfig, device: torch.device | str | None = None):
        if config.full_scale is None or config.sensor is None:   # what the checkpoint declares without a store
            config = replace(config, full_scale=NOMINAL_FULL_SCALE if config.full_scale is None else config.full_scale,
                             sensor="unknown" if config.sensor is None else config.sensor)
        self.config = config
        self.device = torch.device(device) if device is not None else default_device()
        self.net = net.to(self.device)
        if config.lora_rank is not None and not has_lora(net):
            add_lora(net, config.lora_rank, config.lora_alpha)
        self.diffusion = GaussianDiffusion()
        self.optimizer = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        self.ema = EMA(net, config.ema_decay)
        self.lbaf = (LBAFSchedule(config.lbaf_start, config.lbaf_every, config.lbaf_first)
                     if config.lbaf_start is not None else None)
        self.generator = torch.Generator().manual_seed(config.seed)  # CPU: same draws on any device
        self.step = 0  # iterations done

    def phase(self) -> Branch | None:
        return self.lbaf.phase(self.step) if self.lbaf else None

    def update_ema(self) -> None:
        """After each optimiser step (before `step` counts it): fold the weights into the EMA."""
        self.ema.update(self.net, self.config.ema_warmup_from + self.step)

    def fit(self, batches: Iterable[Batch], on_step: Callable[[int, float], None] | None = None) -> "Trainer":
        """Train until `config.iterations`. After a resume, `batches` must continue where the interrupted
        run stopped (``patch_batches(..., start_step=trainer.step)`` does)."""
        batch_iter = iter(batches)
        while self.step < self.config.iterations:
            phase = self.phase()
            if self.lbaf:
                apply_lbaf_phase(self.net, phase)
                for group in self.optimizer.param_groups:
                    group["lr"] = self.config.lbaf_lr if phase else self.config.lr
            try:
                batch = next(batch_iter)
            except StopIteration:
                raise BadInput(f"the batch iterable ran out at iteration {self.step} of "
                                 f"{self.config.iterations}") from None
            batch = {k: v.to(self.device) for k, v in batch.items()}
            loss = train_step(self.net, self.diffusion, self.optimizer, batch, self.generator, self.config.grad_clip,
                              self.config.update_norm_statistics)
            self.update_ema()
            self.step += 1
            if on_step:
                on_step(self.step, loss)
            if self.config.log_every and self.step % self.config.log_every == 0:
                log.info("step %d loss %.5f phase %s", self.step, loss, phase or "all")
            every = self.config.checkpoint_every
            if self.config.checkpoint_path and every and self.step % every == 0:
                self.save(self.config.checkpoint_path)
        if self.config.checkpoint_path:
            self.save(self.config.checkpoint_path)
        return self

    # ---- checkpoints -------------------------------------------------------------------------------

    def checkpoint(self, resumable: bool = True) -> Checkpoint:
        cfg = self.config
        bands = self.net.config["bands"]
        return Checkpoint(
            config=dict(self.net.config),
            weights={k: v.detach().clone() for k, v in self.net.state_dict().items()},
            ema_weights=self.ema.weights(self.net),
            full_scale=float(cfg.full_scale), sensor=cfg.sensor,
            band_names=list(cfg.band_names) or [f"B{i + 1}" for i in range(bands)],
            ratio=int(self.net.config["ratio"]),
            training={
                "data_sources": list(cfg.data_sources), "iterations": self.step,
                "lbaf_phase": self.lbaf.phase(max(self.step - 1, 0)) if self.lbaf else None,
                "lbaf": ({"start": cfg.lbaf_start, "every": cfg.lbaf_every, "lr": cfg.lbaf_lr}
                         if self.lbaf else None),
                "lora": {"rank": cfg.lora_rank, "alpha": cfg.lora_alpha} if cfg.lora_rank else None,
                "ema_decay": cfg.ema_decay,
                "ema_iterations": cfg.ema_warmup_from + self.step,   # how many iterations the EMA weights average
                "pan_equalization": bool(cfg.pan_equalization),
                "band_equalization": bool(cfg.band_equalization),
                "augmentation": cfg.augmentation,
                "band_gains": cfg.band_gains,
            },
            train_state={"step": self.step, "optimizer": self.optimizer.state_dict(),
                         "rng_state": self.generator.get_state(), "config": asdict(cfg)} if resumable else None,
        )

    def save(self, path: str | Path, half: bool = False, resumable: bool = True) -> str:
        return save_checkpoint(self.checkpoint(resumable), path, half=half)

    @classmethod
    def resume(cls, path: str | Path, device: torch.device | str | None = None, **overrides) -> "Trainer":
        """Rebuild the trainer of a resumable checkpoint (overrides: TrainConfig fields, e.g. iterations)."""
        from ssdiff_model.model.network import build_network  # the heavy module only when needed

        ckpt = load_checkpoint(path)
        if ckpt.train_state is None:
            raise BadInput(f"{path}: checkpoint holds no training state (saved with resumable=False)")
        state = ckpt.train_state
        trainer = cls(build_network(ckpt.config), TrainConfig(**{**state["config"], **overrides}), device)
        trainer.net.load_state_dict(ckpt.weights)
        trainer.ema.load(ckpt.ema_weights)
        trainer.optimizer.load_state_dict(state["optimizer"])
        trainer.generator.set_state(state["rng_state"])
        trainer.step = state["step"]
        return trainer


AUGMENTATIONS = (None, "dihedral")


def patch_batches(data: Batch, batch_size: int, seed: int = 0, start_step: int = 0,
                  augmentation: str | None = None, band_gains: float | None = None,
                  pan_equalization: bool = False) -> Iterator[Batch]:
    """Endless random batches from stacked patches; batch k depends only on (seed, k), so a resumed run
    gets exactly the batches the interrupted one would have had. With ``augmentation="dihedral"`` every example
    is turned / mirrored by a random element of the dihedral group, the same one for all of its arrays.

    With ``band_gains=R`` every MS band of an example (its ms, lms and reference alike) is multiplied by its own
    gain, log-uniform in [1/R, R]: the same ground seen with another radiometry per band, whose true detail is
    scaled with it. A network that sees one calibration per training scene learns one injection gain per band and
    over- or under-injects on a scene whose bands relate to the PAN otherwise; this one has to read the gain from
    how each band varies with the PAN, as the classical methods' regressions do. With ``pan_equalization`` the
    PAN (scaled to the MS intensity) is rescaled with that intensity; a raw PAN is left as it is.

    Args:
        data: stacked examples, pan (N, 1, H, W), ms, lms, hrms.
        batch_size: examples per batch.
        seed: the batches' seed.
        start_step: index of the first batch (a resumed run's iteration).
        augmentation: None or ``"dihedral"``.
        band_gains: R >= 1, or None for no band gains.
        pan_equalization: the examples' PAN is equalized to its scene's MS intensity.

    Returns:
        An endless iterator of batches."""
    if augmentation not in AUGMENTATIONS:
        raise BadInput(f"unknown augmentation {augmentation!r}; expected one of {AUGMENTATIONS}")
    if band_gains is not None and band_gains < 1:
        raise BadInput(f"band gain spread must be >= 1, got {band_gains}")
    n = len(data["pan"])
    step = start_step
    while True:
        generator = torch.Generator().manual_seed(seed * 1_000_003 + step)
        index = torch.randperm(n, generator=generator)[:batch_size]
        batch = {k: v[index] for k, v in data.items()}
        if augmentation:
            ops = torch.randint(8, (len(index),), generator=generator).tolist()
            batch = {k: torch.stack([dihedral(x, op) for x, op in zip(v, ops)]) for k, v in batch.items()}
        if band_gains:
            batch = _with_band_gains(batch, band_gains, generator, pan_equalization)
        yield batch
        step += 1


def _with_band_gains(batch: Batch, spread: float, generator: torch.Generator, pan_equalization: bool) -> Batch:
    gains = torch.exp((2 * torch.rand(batch["lms"].shape[:2], generator=generator) - 1) * math.log(spread))
    out = dict(batch)
    for name in ("ms", "lms", "hrms"):
        out[name] = (batch[name] * gains[:, :, None, None]).clamp(0, 1)
    if pan_equalization:
        levels = batch["lms"].mean(dim=(2, 3))   # (N, B): each band's level, so the intensity's change is known
        change = (levels * gains).sum(1) / levels.sum(1).clamp_min(1e-6)
        out["pan"] = batch["pan"] * change[:, None, None, None]
    return out
