"""What runs on every Ray Train worker: the loop, its phased DDP module and its step.

Worker `r` of `w` reads examples r::w of the store's train split (`TrainingStore.load`) and draws batch k from
(seed, rank, k) alone (`ssdiff_model.training.loop.patch_batches`), so a resumed run sees exactly the batches the
interrupted one would have seen. The single-process pieces of `ssdiff_model.training.loop` do the work: `Trainer`
holds the network, AdamW, EMA, the L-BAF schedule and builds the one-file checkpoint; `train_step` runs one step on
the DDP module; `apply_lbaf_phase` freezes a branch. When the phase changes the DDP wrapper is rebuilt, so DDP only
ever synchronises the parameters that train (a frozen branch gets no gradient and no AdamW update).

Every step reports the (all-reduced) loss; every `validate_every` steps rank 0 samples validation examples with DDIM
(EMA weights, fixed noise) and reports SAM, ERGAS, Q2n and the validation loss (`ssdiff_model.training.validation`).
Rank 0 writes our one-file checkpoint as `model.pt` in the directory it hands to `ray.train.report`; a job started
again with the same storage path and name finds it through `ray.train.get_checkpoint()` and continues from its step.
"""
from __future__ import annotations

import copy
import json
import logging
import platform
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

from infra.training import CHECKPOINT_FILE
from infra.training.config import TrainJobConfig
from ssdiff_model.errors import BadInput
from ssdiff_model.training.config import TrainConfig
from ssdiff_model.training.loop import apply_lbaf_phase, train_step
from ssdiff_model.training.validation import validate
from tiling import objstore

__all__ = ["PhasedModel", "run_step", "train_loop_per_worker"]

log = logging.getLogger(__name__)


class PhasedModel:
    """The module `train_step` runs: `wrap(trainer.net)` (DDP), rebuilt whenever the L-BAF phase changes, because
    DDP synchronises the parameters that require grad when it is built. So a frozen branch gets no gradient at all
    (grad None: AdamW skips it, its momentum cannot move it) and DDP never waits for a gradient that will not come."""

    def __init__(self, trainer, wrap: Callable[[Any], Any]):
        self.trainer, self.wrap = trainer, wrap
        self.module, self.phase = None, "unset"

    def for_step(self):
        """(module, phase) for the trainer's next iteration: L-BAF phase applied, learning rate set."""
        trainer = self.trainer
        phase = trainer.phase()
        if trainer.lbaf:
            apply_lbaf_phase(trainer.net, phase)
            for group in trainer.optimizer.param_groups:
                group["lr"] = trainer.config.lbaf_lr if phase else trainer.config.lr
        if self.module is None or phase != self.phase:
            self.module = None  # drop the old wrapper (and its gradient hooks) before building the next
            self.module, self.phase = self.wrap(trainer.net), phase
        return self.module, phase


def run_step(trainer, phased: PhasedModel, batch, generator, grad_clip: float | None) -> tuple[float, str | None]:
    """One iteration of the job: phase, optimiser step on the (DDP) module, EMA update.

    Args:
        trainer: the ``Trainer`` (its step is counted here).
        phased: the module wrapper of the trainer's network.
        batch: the batch, on the trainer's device.
        generator: the step's timesteps and noise (``_step_generator``).
        grad_clip: gradient norm clip (None: none).

    Returns:
        (loss, L-BAF phase or None).
    """
    module, phase = phased.for_step()
    loss = train_step(module, trainer.diffusion, trainer.optimizer, batch, generator, grad_clip)
    trainer.update_ema()
    trainer.step += 1
    return loss, phase


def _step_generator(seed: int, rank: int, step: int):
    """Timesteps and noise of step `step` on worker `rank`: a function of (seed, rank, step) only, so a resumed run
    draws what the interrupted one would have drawn."""
    import torch

    return torch.Generator().manual_seed((seed * 1_000_003 + rank) * 1_000_033 + step)


def _with_store_facts(settings: TrainConfig, store_attrs: dict[str, Any]) -> TrainConfig:
    """The run's settings with what its store says: full scale and sensor (unless given), bands, sources."""
    return replace(settings, full_scale=float(settings.full_scale or store_attrs["full_scale"]),
                   sensor=settings.sensor or "+".join(store_attrs["sensors"]),
                   band_names=list(store_attrs["band_names"]),
                   data_sources=[f"{s['id']} ({s['split']}, {s['patches']} patches)" for s in store_attrs["sources"]])


def _build_trainer(cfg: TrainJobConfig, store, device):
    """A fresh Trainer, or one fine-tuning a checkpoint, or the one of the run's latest Ray checkpoint."""
    import ray.train

    from ssdiff_model.inference.pansharpener import network_from_checkpoint
    from ssdiff_model.model.checkpoint import load_checkpoint
    from ssdiff_model.model.network import build_network
    from ssdiff_model.training.loop import Trainer

    settings = cfg.training
    resumed = ray.train.get_checkpoint()
    if resumed is not None:
        with resumed.as_directory() as folder:
            overrides: dict[str, Any] = {"iterations": settings.iterations}
            if settings.lbaf_start is not None:  # L-BAF may be switched on (or re-timed) when resuming
                overrides.update(lbaf_start=settings.lbaf_start, lbaf_every=settings.lbaf_every,
                                 lbaf_lr=settings.lbaf_lr, lbaf_first=settings.lbaf_first)
            trainer = Trainer.resume(Path(folder) / CHECKPOINT_FILE, device, **overrides)
            job = load_checkpoint(Path(folder) / CHECKPOINT_FILE).training.get("job", {})
        return trainer, {"resumed_from_step": trainer.step, "finetuned_from": job.get("finetuned_from"),
                         "wall_time_before_s": float(job.get("wall_time_s") or 0.0)}
    train_config = _with_store_facts(settings, store.attrs)
    if settings.finetune_from:
        with objstore.fetched(settings.finetune_from) as local:   # an s3:// base: a temporary copy
            base = load_checkpoint(local)
        # a base fed equalized PANs must go on being fed them; one fed raw PANs may learn equalized ones
        train_config.pan_equalization |= bool(base.training.get("pan_equalization"))
        train_config.band_equalization |= bool(base.training.get("band_equalization"))
        if (int(base.config["bands"]), int(base.ratio)) != (store.bands, store.ratio):
            raise BadInput(f"{settings.finetune_from}: checkpoint is for {base.config['bands']} bands at ratio "
                             f"{base.ratio}, the store {store.path} holds {store.bands} bands at ratio {store.ratio}")
        net = network_from_checkpoint(base, ema=True)
        # its EMA weights average the base's iterations: go on averaging at the decay the base had reached
        train_config.ema_warmup_from = int(base.training.get("ema_iterations") or base.training.get("iterations") or 0)
        finetuned = {"path": str(settings.finetune_from), "hash": base.content_hash,
                     "iterations": base.training.get("iterations")}
        return Trainer(net, train_config, device), {"resumed_from_step": None, "finetuned_from": finetuned,
                                                    "wall_time_before_s": 0.0}
    import torch

    torch.manual_seed(settings.seed)  # every rank builds the same initial network (DDP broadcasts rank 0's anyway)
    net = build_network(dict(bands=store.bands, ratio=store.ratio, width=settings.width, head_dim=settings.head_dim,
                             architecture=settings.architecture))
    return Trainer(net, train_config, device), {"resumed_from_step": None, "finetuned_from": None,
                                                "wall_time_before_s": 0.0}


def _hardware(device) -> str:
    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def train_loop_per_worker(config: dict[str, Any]) -> dict[str, Any]:
    """Runs on every Ray Train worker: builds (or resumes) the trainer, trains up to the run's iterations, reports
    every step's loss and, on rank 0, validation indexes and the checkpoints.

    Args:
        config: ``TrainJobConfig.to_dict()`` (Ray's ``train_loop_config``).

    Returns:
        The segment's steps, history, last validation, hardware, last L-BAF phase and the run's wall time.
    """
    import ray.train
    import torch
    import torch.distributed as dist
    from ray.train import Checkpoint as RayCheckpoint
    from ray.train.torch import get_device, prepare_model

    from ssdiff_model.model.checkpoint import save_checkpoint
    from ssdiff_model.training.loop import patch_batches
    from tiling.stores.training import TrainingStore

    cfg = TrainJobConfig(**config)
    settings = cfg.training
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    device = get_device()
    if device.type == "cpu":
        torch.set_num_threads(max(1, int(cfg.cpus_per_worker)))
    store = TrainingStore(cfg.store)
    trainer, origin = _build_trainer(cfg, store, device)
    start_step = trainer.step
    equalize = dict(equalize_pan=trainer.config.pan_equalization,   # the run's own settings, kept when it resumes
                    equalize_bands=trainer.config.band_equalization)
    shard = store.load("train", rank, world, **equalize)
    if len(shard["pan"]) == 0:
        raise BadInput(f"{cfg.store}: worker {rank} of {world} got no training examples "
                         f"({store.count('train')} in the store): use fewer workers")
    data = {k: torch.from_numpy(shard[k]) for k in ("pan", "ms", "lms", "hrms")}
    batches = patch_batches(data, settings.batch_size, seed=settings.seed * 7919 + rank, start_step=start_step,
                            augmentation=trainer.config.augmentation,   # the run's own, kept when it resumes
                            band_gains=trainer.config.band_gains,
                            pan_equalization=equalize["equalize_pan"])
    validation = None
    if rank == 0 and store.count("validation"):
        validation = store.load_spread("validation", settings.val_examples, **equalize)
    hardware = f"{world} x {_hardware(device)}"
    started = time.time()

    phased = PhasedModel(trainer, lambda net: prepare_model(net, move_to_device=False))
    phase = None
    history: list[dict[str, Any]] = []
    last_validation: dict[str, float] = {}

    def checkpoint_facts() -> dict[str, Any]:
        return {"world_size": world, "hardware": hardware, "store": cfg.store, "run_name": cfg.name,
                "finetuned_from": origin["finetuned_from"], "validation": dict(last_validation),
                "batch_size_per_worker": settings.batch_size, "wall_time_s": wall_time()}

    def wall_time() -> float:   # over every resumed segment of the run: what the checkpoint cost
        return round(origin["wall_time_before_s"] + time.time() - started, 1)

    while trainer.step < settings.iterations:
        batch = {k: v.to(device) for k, v in next(batches).items()}
        loss, phase = run_step(trainer, phased, batch, _step_generator(settings.seed, rank, trainer.step),
                               settings.grad_clip)
        if world > 1 and dist.is_initialized():
            total = torch.tensor([loss], dtype=torch.float64, device=device)  # NCCL reduces CUDA tensors only
            dist.all_reduce(total)
            loss = float(total.item()) / world
        metrics: dict[str, Any] = {"step": trainer.step, "loss": loss, "lbaf_phase": phase or "all",
                                   "lr": trainer.optimizer.param_groups[0]["lr"]}
        done = trainer.step == settings.iterations
        every = settings.validate_every
        if validation is not None and (done or (every and trainer.step % every == 0)):
            ema_net = copy.deepcopy(trainer.net)
            ema_net.load_state_dict(trainer.ema.weights(trainer.net))
            last_validation = validate(ema_net, trainer.diffusion, validation, store.sources, store.ratio,
                                       settings.val_steps, seed=settings.seed,
                                       band_equalization=equalize["equalize_bands"])
            metrics.update(last_validation)
            log.info("step %d validation %s", trainer.step, json.dumps(last_validation))
        if rank == 0 and (trainer.step % max(1, settings.log_every) == 0 or done or trainer.step == start_step + 1):
            log.info("step %d loss %.5f phase %s", trainer.step, loss, phase or "all")
            history.append({k: v for k, v in metrics.items()})
        save = done or (settings.checkpoint_every and trainer.step % settings.checkpoint_every == 0)
        if not (save or trainer.step % max(1, settings.report_every) == 0):
            continue
        if save and rank == 0:
            with tempfile.TemporaryDirectory() as folder:
                ckpt = trainer.checkpoint(resumable=True)
                ckpt.training["job"] = checkpoint_facts()
                save_checkpoint(ckpt, Path(folder) / CHECKPOINT_FILE)
                ray.train.report(metrics, checkpoint=RayCheckpoint.from_directory(folder))
        else:
            ray.train.report(metrics)
    return {"start_step": start_step, "end_step": trainer.step, "resumed_from_step": origin["resumed_from_step"],
            "history": history, "validation": last_validation, "hardware": hardware,
            "lbaf_phase": phase, "wall_time_s": wall_time()}
