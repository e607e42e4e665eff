"""The Ray Train job that trains or fine-tunes SSDiff (with L-BAF) on a training store.

    python -m infra.train_job --store train.zarr --storage-path /data/runs --name wv3-main \\
        [--workers N] [--steps N] [--lbaf-start K] [--finetune-from CKPT] [--ray-address ADDR] [--export model.pt]

(`ray job submit --working-dir . -- python -m infra.train_job ...` runs the same on a cluster.)

Design:
- `TorchTrainer` with one worker per GPU (or CPU worker); the model is wrapped in DDP by
  `ray.train.torch.prepare_model`. Worker `r` of `w` reads examples r::w of the store's train split
  (`TrainingStore.load`), and draws batch k from (seed, rank, k) alone (`ssdiff_model.training.loop.patch_batches`),
  so a
  resumed run sees exactly the batches the interrupted one would have seen.
- The single-process pieces of `ssdiff_model.training.loop` do the work: `Trainer` holds the network, AdamW, EMA, the
  L-BAF schedule and builds the one-file checkpoint (`Trainer.checkpoint`, `Trainer.resume`); `train_step` runs one
  step on the DDP module; `apply_lbaf_phase` freezes a branch. When the phase changes the DDP wrapper is rebuilt, so
  DDP only ever synchronises the parameters that train (a frozen branch gets no gradient and no AdamW update).
- Checkpoints go through Ray Train: rank 0 writes our one-file checkpoint as `model.pt` in a directory handed to
  `ray.train.report(metrics, checkpoint=...)`; `Pansharpener.from_checkpoint(<dir>/model.pt)` loads it directly. A job
  started again with the same storage path and name finds its latest checkpoint through `ray.train.get_checkpoint()`
  and continues from its step (also after being killed); `FailureConfig(max_failures)` retries inside one job.
- Every step reports the (all-reduced) loss; every `validate_every` steps rank 0 samples validation examples with DDIM
  (EMA weights, fixed noise) and reports SAM, ERGAS, Q2n (`ssdiff_model.science.metrics.reduced_resolution`, per
  example in
  the scene's DN) and the validation loss.
- `export_checkpoint` writes the final checkpoint (optionally float16, without training state, LoRA merged) with the
  training facts, and a model card (markdown) beside it.
"""
from __future__ import annotations

import argparse
import copy
import json
import logging
import platform
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ssdiff_model.errors import BadInput
from ssdiff_model.training.loop import apply_lbaf_phase, train_step
from tiling.clock import utc_timestamp

log = logging.getLogger(__name__)

CHECKPOINT_FILE = "model.pt"  # our one-file checkpoint inside each Ray Train checkpoint directory


@dataclass
class TrainJobConfig:
    store: str
    storage_path: str
    name: str
    workers: int = 1
    steps: int = 1000                      # total iterations of this run (a resumed run continues up to it)
    batch_size: int = 16                   # per worker
    lr: float = 1e-3
    weight_decay: float = 0.0
    ema_decay: float = 0.9999
    grad_clip: float | None = 1.0
    seed: int = 0
    width: int = 32                        # network width d (fresh runs)
    head_dim: int = 16
    architecture: str = "release"          # the authors' released network; "legacy": the project's first layout
    lbaf_start: int | None = None          # iteration at which L-BAF starts (None: no L-BAF)
    lbaf_every: int = 1000
    lbaf_lr: float = 1e-4
    lbaf_first: str = "spatial"
    lora_rank: int | None = None           # LoRA adapters on the APFM projections instead of L-BAF
    lora_alpha: float = 4.0
    finetune_from: str | None = None       # start from this checkpoint's EMA weights
    checkpoint_every: int = 500
    keep_checkpoints: int = 3
    validate_every: int = 1000
    val_examples: int = 8
    val_steps: int = 4                     # DDIM steps for validation sampling
    report_every: int = 1
    log_every: int = 100
    use_gpu: bool | None = None            # None: when the cluster has a GPU per worker
    cpus_per_worker: float = 1.0
    max_failures: int = 0
    full_scale: float | None = None        # DN that maps to 1.0 for users; default: the store's dominant one
    pan_equalization: bool = False         # feed the PAN equalized to its scene (kept from a base that does)
    band_equalization: bool = False        # and the MS bands (implies pan_equalization; kept from a base that does)
    augmentation: str | None = None        # "dihedral": random turns and mirrors of the training examples
    band_gains: float | None = None        # R: every MS band of an example scaled by a gain in [1/R, R]
    sensor: str | None = None              # what the checkpoint says; default: from the store
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if self.steps < 1 or self.workers < 1 or self.batch_size < 1:
            raise BadInput(f"steps, workers and batch size must be >= 1, got {self.steps}, {self.workers}, "
                             f"{self.batch_size}")
        if self.lbaf_start is not None and self.lora_rank is not None:
            raise BadInput("choose L-BAF (--lbaf-start) or LoRA (--lora-rank), not both")


# ---------------------------------------------------------------------------------------------------------------
# Worker side
# ---------------------------------------------------------------------------------------------------------------

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
    """One iteration of the job: phase, optimiser step on the (DDP) module, EMA update; returns (loss, phase)."""
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


def _train_config(cfg: TrainJobConfig, store_attrs: dict[str, Any]):
    from ssdiff_model.training.loop import TrainConfig

    return TrainConfig(
        iterations=cfg.steps, lr=cfg.lr, weight_decay=cfg.weight_decay, ema_decay=cfg.ema_decay,
        grad_clip=cfg.grad_clip, seed=cfg.seed, log_every=cfg.log_every, lbaf_start=cfg.lbaf_start,
        lbaf_every=cfg.lbaf_every, lbaf_lr=cfg.lbaf_lr, lbaf_first=cfg.lbaf_first, lora_rank=cfg.lora_rank,
        lora_alpha=cfg.lora_alpha, pan_equalization=cfg.pan_equalization or cfg.band_equalization,
        band_equalization=cfg.band_equalization, augmentation=cfg.augmentation,
        band_gains=cfg.band_gains,
        full_scale=float(cfg.full_scale or store_attrs["full_scale"]),
        sensor=cfg.sensor or "+".join(store_attrs["sensors"]),
        band_names=list(store_attrs["band_names"]),
        data_sources=[f"{s['id']} ({s['split']}, {s['patches']} patches)" for s in store_attrs["sources"]])


def _build_trainer(cfg: TrainJobConfig, store, device):
    """A fresh Trainer, or one fine-tuning a checkpoint, or the one of the run's latest Ray checkpoint."""
    import ray.train

    from ssdiff_model.inference.pansharpener import network_from_checkpoint
    from ssdiff_model.model.checkpoint import load_checkpoint
    from ssdiff_model.model.network import build_network
    from ssdiff_model.training.loop import Trainer

    resumed = ray.train.get_checkpoint()
    if resumed is not None:
        with resumed.as_directory() as folder:
            overrides: dict[str, Any] = {"iterations": cfg.steps}
            if cfg.lbaf_start is not None:  # L-BAF may be switched on (or re-timed) when resuming
                overrides.update(lbaf_start=cfg.lbaf_start, lbaf_every=cfg.lbaf_every, lbaf_lr=cfg.lbaf_lr,
                                 lbaf_first=cfg.lbaf_first)
            trainer = Trainer.resume(Path(folder) / CHECKPOINT_FILE, device, **overrides)
            job = load_checkpoint(Path(folder) / CHECKPOINT_FILE).training.get("job", {})
        return trainer, {"resumed_from_step": trainer.step, "finetuned_from": job.get("finetuned_from"),
                         "wall_time_before_s": float(job.get("wall_time_s") or 0.0)}
    train_config = _train_config(cfg, store.attrs)
    if cfg.finetune_from:
        base = load_checkpoint(cfg.finetune_from)
        # a base fed equalized PANs must go on being fed them; one fed raw PANs may learn equalized ones
        train_config.pan_equalization |= bool(base.training.get("pan_equalization"))
        train_config.band_equalization |= bool(base.training.get("band_equalization"))
        if (int(base.config["bands"]), int(base.ratio)) != (store.bands, store.ratio):
            raise BadInput(f"{cfg.finetune_from}: checkpoint is for {base.config['bands']} bands at ratio "
                             f"{base.ratio}, the store {store.path} holds {store.bands} bands at ratio {store.ratio}")
        net = network_from_checkpoint(base, ema=True)
        # its EMA weights average the base's iterations: go on averaging at the decay the base had reached
        train_config.ema_warmup_from = int(base.training.get("ema_iterations") or base.training.get("iterations") or 0)
        finetuned = {"path": str(cfg.finetune_from), "hash": base.content_hash,
                     "iterations": base.training.get("iterations")}
        return Trainer(net, train_config, device), {"resumed_from_step": None, "finetuned_from": finetuned,
                                                    "wall_time_before_s": 0.0}
    import torch

    torch.manual_seed(cfg.seed)  # every rank builds the same initial network (DDP broadcasts rank 0's anyway)
    net = build_network(dict(bands=store.bands, ratio=store.ratio, width=cfg.width, head_dim=cfg.head_dim,
                             architecture=cfg.architecture))
    return Trainer(net, train_config, device), {"resumed_from_step": None, "finetuned_from": None,
                                                "wall_time_before_s": 0.0}


def validate(net, diffusion, data: dict[str, np.ndarray], sources: list[dict[str, Any]], ratio: int, steps: int,
             seed: int = 0, batch_size: int = 8, equalized_bands: bool = False) -> dict[str, float]:
    """Validation loss and mean SAM / ERGAS / Q2n (and SCC, Q) of DDIM samples of `net` on validation examples.
    With `equalized_bands` the examples come band-equalized (`TrainingStore.load(equalize_bands=True)`): the samples
    are clipped where the scene's valid images lie and scored back in the scene's units."""
    import torch

    from ssdiff_model.science.equalization import equalize_bands, restore_bands
    from ssdiff_model.science.metrics import index_scale, reduced_resolution
    from ssdiff_model.training.loop import evaluation_loss

    device = next(net.parameters()).device
    n = len(data["pan"])
    if n == 0:
        return {}
    tensors = {k: torch.from_numpy(data[k]).to(device) for k in ("pan", "ms", "lms", "hrms")}
    batches = [{k: v[i:i + batch_size] for k, v in tensors.items()} for i in range(0, n, batch_size)]
    out = {"val_loss": evaluation_loss(net, diffusion, batches, seed=seed)}
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(tuple(tensors["lms"].shape), generator=generator).to(device)
    bands = (data["band_gain"][:, :, None, None], data["band_mean"][:, :, None, None]) if equalized_bands else None
    fused = []
    with torch.no_grad():
        for i, batch in zip(range(0, n, batch_size), batches):
            bounds = (0.0, 1.0)
            if bands:
                part = [b[i:i + batch_size] for b in bands]
                bounds = tuple(torch.from_numpy(equalize_bands(np.float32(v), *part)).to(device) for v in (0, 1))
            fused.append(diffusion.ddim_sample(net, batch["pan"], batch["lms"], batch["ms"], steps=steps,
                                               noise=noise[i:i + batch_size], bounds=bounds).float().cpu().numpy())
    fused = np.concatenate(fused)
    reference = data["hrms"]
    if bands:
        fused, reference = restore_bands(fused, *bands), restore_bands(reference, *bands)
    scores: dict[str, list[float]] = {}
    for k in range(n):
        source = sources[int(data["scene_index"][k])]
        bits, to_dn = index_scale(source.get("bits"), float(source["full_scale"]))
        scale = float(source["full_scale"]) * to_dn   # the examples are DN / full scale
        indexes = reduced_resolution(fused[k] * scale, reference[k] * scale, ratio, bits)
        for name, value in indexes.items():
            scores.setdefault(name, []).append(float(value))
    out.update({f"val_{name}": float(np.nanmean(values)) for name, values in scores.items()})
    out["val_examples"] = n
    return out


def _hardware(device) -> str:
    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def train_loop_per_worker(config: dict[str, Any]) -> dict[str, Any]:
    """Runs on every Ray Train worker."""
    import ray.train
    import torch
    import torch.distributed as dist
    from ray.train import Checkpoint as RayCheckpoint
    from ray.train.torch import get_device, prepare_model

    from ssdiff_model.model.checkpoint import save_checkpoint
    from ssdiff_model.training.loop import patch_batches
    from tiling.stores.training import TrainingStore

    cfg = TrainJobConfig(**config)
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
    batches = patch_batches(data, cfg.batch_size, seed=cfg.seed * 7919 + rank, start_step=start_step,
                            augmentation=trainer.config.augmentation,   # the run's own, kept when it resumes
                            band_gains=trainer.config.band_gains, equalized_pan=equalize["equalize_pan"])
    validation = None
    if rank == 0 and store.count("validation"):
        validation = store.load_spread("validation", cfg.val_examples, **equalize)
    hardware = f"{world} x {_hardware(device)}"
    started = time.time()

    phased = PhasedModel(trainer, lambda net: prepare_model(net, move_to_device=False))
    phase = None
    history: list[dict[str, Any]] = []
    last_validation: dict[str, float] = {}

    def checkpoint_facts() -> dict[str, Any]:
        return {"world_size": world, "hardware": hardware, "store": cfg.store, "run_name": cfg.name,
                "finetuned_from": origin["finetuned_from"], "validation": dict(last_validation),
                "batch_size_per_worker": cfg.batch_size, "wall_time_s": wall_time()}

    def wall_time() -> float:   # over every resumed segment of the run: what the checkpoint cost
        return round(origin["wall_time_before_s"] + time.time() - started, 1)

    while trainer.step < cfg.steps:
        batch = {k: v.to(device) for k, v in next(batches).items()}
        loss, phase = run_step(trainer, phased, batch, _step_generator(cfg.seed, rank, trainer.step), cfg.grad_clip)
        if world > 1 and dist.is_initialized():
            total = torch.tensor([loss], dtype=torch.float64, device=device)  # NCCL reduces CUDA tensors only
            dist.all_reduce(total)
            loss = float(total.item()) / world
        metrics: dict[str, Any] = {"step": trainer.step, "loss": loss, "lbaf_phase": phase or "all",
                                   "lr": trainer.optimizer.param_groups[0]["lr"]}
        done = trainer.step == cfg.steps
        if validation is not None and (done or (cfg.validate_every and trainer.step % cfg.validate_every == 0)):
            ema_net = copy.deepcopy(trainer.net)
            ema_net.load_state_dict(trainer.ema.weights(trainer.net))
            last_validation = validate(ema_net, trainer.diffusion, validation, store.sources, store.ratio,
                                       cfg.val_steps, seed=cfg.seed, equalized_bands=equalize["equalize_bands"])
            metrics.update(last_validation)
            log.info("step %d validation %s", trainer.step, json.dumps(last_validation))
        if rank == 0 and (trainer.step % max(1, cfg.log_every) == 0 or done or trainer.step == start_step + 1):
            log.info("step %d loss %.5f phase %s", trainer.step, loss, phase or "all")
            history.append({k: v for k, v in metrics.items()})
        save = done or (cfg.checkpoint_every and trainer.step % cfg.checkpoint_every == 0)
        if not (save or trainer.step % max(1, cfg.report_every) == 0):
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


# ---------------------------------------------------------------------------------------------------------------
# Driver side
# ---------------------------------------------------------------------------------------------------------------

def _use_gpu(cfg: TrainJobConfig) -> bool:
    import ray

    if cfg.use_gpu is not None:
        return cfg.use_gpu
    return ray.cluster_resources().get("GPU", 0.0) >= cfg.workers


def run_training(cfg: TrainJobConfig, export: str | Path | None = None, half: bool = False) -> dict[str, Any]:
    """Run (or resume) the job on the Ray this process is connected to; return a JSON-able summary."""
    import ray
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from tiling.stores.training import TrainingStore

    store = TrainingStore(cfg.store)  # fail here, with the path, rather than in every worker
    if store.count("train") < cfg.workers:
        raise BadInput(f"{cfg.store}: {store.count('train')} training examples for {cfg.workers} workers")
    if cfg.finetune_from:
        cfg.finetune_from = str(finetune_source(cfg.finetune_from).resolve())
    cfg.store = str(Path(cfg.store).resolve()) if "://" not in cfg.store else cfg.store
    storage = str(Path(cfg.storage_path).resolve()) if "://" not in cfg.storage_path else cfg.storage_path
    use_gpu = _use_gpu(cfg)
    resources = {"CPU": cfg.cpus_per_worker, **({"GPU": 1} if use_gpu else {})}
    trainer = TorchTrainer(
        train_loop_per_worker, train_loop_config=asdict(cfg),
        scaling_config=ScalingConfig(num_workers=cfg.workers, use_gpu=use_gpu, resources_per_worker=resources),
        run_config=RunConfig(name=cfg.name, storage_path=storage,
                             checkpoint_config=CheckpointConfig(num_to_keep=max(1, cfg.keep_checkpoints)),
                             failure_config=FailureConfig(max_failures=cfg.max_failures)))
    started = time.time()
    result = trainer.fit()
    wall = time.time() - started
    if result.error is not None:
        raise RuntimeError(f"training run {cfg.name} at {storage} failed: {result.error}") from result.error
    if result.checkpoint is None:
        raise RuntimeError(f"training run {cfg.name} at {storage} reported no checkpoint")
    checkpoint_path = str(Path(result.checkpoint.path) / CHECKPOINT_FILE)
    info = result.return_value or {}
    summary = {
        "run": cfg.name, "storage_path": storage, "run_path": result.path, "checkpoint": checkpoint_path,
        "workers": cfg.workers, "use_gpu": use_gpu, "steps": cfg.steps, "start_step": info.get("start_step"),
        "end_step": info.get("end_step"), "resumed_from_step": info.get("resumed_from_step"),
        "final_metrics": {k: v for k, v in (result.metrics or {}).items() if not isinstance(v, dict)},
        "validation": info.get("validation", {}), "history": info.get("history", []),
        "hardware": info.get("hardware"), "lbaf_phase": info.get("lbaf_phase"),
        # the training's wall time over every resumed segment, and this call's (Ray start included)
        "wall_time_s": info.get("wall_time_s", round(wall, 1)), "this_run_s": round(wall, 1),
        "cluster": {k: v for k, v in ray.cluster_resources().items() if k in ("CPU", "GPU")},
    }
    if export:
        summary["export"] = export_checkpoint(checkpoint_path, export, half=half, store=store,
                                              facts={"wall_time_s": summary["wall_time_s"], "run": cfg.name,
                                                     "run_path": result.path})
    return summary


# ---------------------------------------------------------------------------------------------------------------
# Export and model card
# ---------------------------------------------------------------------------------------------------------------

def export_checkpoint(source: str | Path, out: str | Path, half: bool = False, store=None,
                      facts: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write the checkpoint users load: no training state, LoRA adapters merged, optionally float16 weights, the
    training facts (data sources, iterations, hardware, wall time, validation indexes, L-BAF phase) in `training`;
    and a model card `<out>.md` beside it. Returns {"path", "hash", "model_card"}."""
    from ssdiff_model.inference.pansharpener import network_from_checkpoint
    from ssdiff_model.model.checkpoint import load_checkpoint, save_checkpoint

    ckpt = load_checkpoint(source)
    training = dict(ckpt.training)
    if training.get("lora"):
        ema = network_from_checkpoint(ckpt, ema=True).state_dict()
        raw = network_from_checkpoint(ckpt, ema=False).state_dict()
        ckpt.weights, ckpt.ema_weights = raw, ema
        training["lora_merged"], training["lora"] = training["lora"], None
    job = dict(training.get("job", {}))
    job.update(facts or {})
    training["job"] = job
    if store is not None:
        training["store"] = {"path": store.path, "family": store.attrs.get("family"), "counts": store.attrs["counts"],
                             "patch_size": store.attrs["patch_size"], "stride": store.attrs["stride"],
                             "sources": [{k: s[k] for k in ("id", "split", "patches", "sensor", "protocol")}
                                         for s in store.sources]}
    training["exported"] = utc_timestamp()
    training["exported_half"] = bool(half)
    ckpt.training, ckpt.train_state = training, None
    out = Path(out)
    digest = save_checkpoint(ckpt, out, half=half)
    card = out.with_suffix(".md")
    card.write_text(model_card(ckpt, digest, out.name))
    return {"path": str(out), "hash": digest, "model_card": str(card), "bytes": out.stat().st_size}


def latest_checkpoint(storage_path: str | Path, name: str) -> Path:
    """The one-file checkpoint of the furthest step among a run's Ray Train checkpoints (for a run that was killed
    or stopped before its last step: export what it reached)."""
    from ssdiff_model.model.checkpoint import load_checkpoint

    found = sorted(Path(storage_path, name).glob(f"checkpoint_*/{CHECKPOINT_FILE}"))
    if not found:
        raise FileNotFoundError(f"{Path(storage_path, name)}: no Ray Train checkpoints of run {name!r} there")
    return max(found, key=lambda path: load_checkpoint(path).training.get("iterations") or 0)


def finetune_source(path_or_name: str | Path) -> Path:
    """The checkpoint file to fine-tune from: a file, a shipped name, or a run's folder (storage path / name), which
    means its furthest checkpoint, so a recipe needs no timestamped folder name."""
    from ssdiff_model.model.checkpoint import resolve_checkpoint

    run = Path(path_or_name)
    return latest_checkpoint(run.parent, run.name) if run.is_dir() else resolve_checkpoint(path_or_name)


def export_latest(storage_path: str | Path, name: str, out: str | Path, half: bool = False) -> dict[str, Any]:
    """Export the run's latest checkpoint with the facts of its training store (when the store is still there)."""
    from ssdiff_model.model.checkpoint import load_checkpoint
    from tiling.stores.training import TrainingStore

    source = latest_checkpoint(storage_path, name)
    store_path = load_checkpoint(source).training.get("job", {}).get("store")
    from tiling.objstore import exists

    store = TrainingStore(store_path) if store_path and exists(store_path) else None
    return {"checkpoint": str(source), **export_checkpoint(source, out, half=half, store=store)}


def _recommended_sampling(training: dict) -> list[str]:
    """The card's line for ``training["sampling_defaults"]`` (bench/steps_halo.py measures what to put there)."""
    recommended = training.get("sampling_defaults")
    if not recommended:
        return ["- recommended sampling: none recorded (the pipeline uses 10 DDIM steps, halo 16, sampler consistent)"]
    return [f"- recommended sampling: {recommended['steps']} DDIM steps, halo {recommended['halo']}, sampler "
            f"{recommended['sampler']} (`training['sampling_defaults']`: what the pipeline uses when the user gives "
            "none)"]


def model_card(ckpt, digest: str, filename: str) -> str:
    t = ckpt.training
    job = t.get("job", {})
    store = t.get("store", {})
    val = job.get("validation") or {}
    lines = [
        f"# {Path(filename).stem}", "",
        f"SSDiff pansharpening checkpoint `{filename}` (sha256 of contents `{digest}`).", "",
        "## Use", "",
        "```python", "from ssdiff_model.inference.pansharpener import Pansharpener",
        f"sharpener = Pansharpener.from_checkpoint({Path(filename).stem!r})   # once shipped; else the file's path",
        "hrms = sharpener.sharpen(pan, ms_lr, seed=0)   # DN in, DN out; steps: the recommendation below, else 10",
        "```", "",
        "## Data conventions", "",
        f"- sensor: {ckpt.sensor}; {ckpt.config['bands']} bands ({', '.join(ckpt.band_names)}), ratio {ckpt.ratio}",
        "- the network sees DN divided by the scene's own full scale, as in training (the pipeline takes it from the "
        "scene store; `sharpen` infers it from the arrays' dtype and values, or takes `full_scale=`); "
        f"{ckpt.full_scale:g} DN, the training store's dominant full scale, stands for the sensor's nominal one",
        "- PAN equalization: " + ("the PAN is fed scaled to its scene's MS intensity (`ssdiff_model.science.equalization`; "
                                  "the pipeline records each scene's in its stores)" if t.get("pan_equalization")
                                  else "none (raw PAN DN)"),
        "- band equalization: " + ("each MS band's contrast divided by its slope on the equalized PAN of its scene, "
                                   "and the output scaled back (`ssdiff_model.science.equalization`)"
                                   if t.get("band_equalization") else "none"),
        f"- augmentation: {t.get('augmentation') or 'none'}"
        + (f"; every MS band scaled by a random gain in [1/{t['band_gains']:g}, {t['band_gains']:g}]"
           if t.get("band_gains") else ""),
        f"- network: {ckpt.config.get('architecture', 'legacy')} architecture, width {ckpt.config['width']}, "
        f"head size {ckpt.config['head_dim']}; "
        f"weights stored as {'float16' if t.get('exported_half') else 'float32'}, EMA weights for sampling",
        *_recommended_sampling(t), "",
        "## Training", "",
        f"- iterations: {t.get('iterations')} (batch {job.get('batch_size_per_worker')} per worker x "
        f"{job.get('world_size')} workers), EMA decay {t.get('ema_decay')}"
        + (f" over {t['ema_iterations']} iterations (the base's too)"
           if t.get("ema_iterations", t.get("iterations")) != t.get("iterations") else ""),
        f"- L-BAF: {t.get('lbaf') or 'not used'}; phase at the last iteration: {t.get('lbaf_phase') or 'all'}",
        f"- LoRA: {t.get('lora_merged') or t.get('lora') or 'not used'}"
        f"{' (merged into the weights)' if t.get('lora_merged') else ''}",
        f"- fine-tuned from: {job.get('finetuned_from') or 'trained from scratch'}",
        f"- hardware: {job.get('hardware')}; wall time {job.get('wall_time_s')} s; run {job.get('run_name')}",
        f"- training store: {store.get('path')} (family {store.get('family')}, {store.get('counts')} patches of "
        f"{store.get('patch_size')} px, stride {store.get('stride')}; split by scene)", "",
        "## Validation (held-out scenes, reduced resolution, DDIM samples with the EMA weights)", "",
    ]
    if val:
        lines += ["| index | value |", "|---|---|"]
        lines += [f"| {k.removeprefix('val_')} | {v:.4f} |" for k, v in val.items() if isinstance(v, float)]
    else:
        lines.append("No validation split.")
    lines += ["", "## Data sources", "", "| scene | split | patches | sensor | protocol |", "|---|---|---|---|---|"]
    for s in store.get("sources", []):
        lines.append(f"| {s['id']} | {s['split']} | {s['patches']} | {s['sensor']} | {s['protocol']} |")
    if not store.get("sources"):
        lines += [f"| {s} | | | | |" for s in t.get("data_sources", [])]
    lines += ["", "Each source keeps its owner's terms (see the data's MANIFEST); check them before redistributing "
              "this checkpoint.", ""]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------------
# Command line (`ray job submit -- python -m infra.train_job ...`)
# ---------------------------------------------------------------------------------------------------------------

def add_job_arguments(parser: argparse.ArgumentParser, finetune: bool = False) -> None:
    parser.add_argument("--store", required=True, help="training store written by `ssdiff prepare-training`")
    parser.add_argument("--storage-path", required=True,
                        help="Ray Train storage (folder or URI) for checkpoints; the same path and --name resume")
    parser.add_argument("--name", required=True, help="run name (rerun with the same name to resume)")
    parser.add_argument("--workers", type=int, default=1, help="Ray Train workers (one GPU each when present)")
    parser.add_argument("--steps", type=int, default=1000, help="total iterations (default 1000)")
    parser.add_argument("--batch-size", type=int, default=16, help="examples per worker per step (default 16)")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--width", type=int, default=32, help="network width of a fresh model (default 32)")
    parser.add_argument("--architecture", choices=("release", "legacy"), default="release",
                        help="network of a fresh model: the authors' released SSDiff (default) or the project's "
                             "first layout (only to compare with checkpoints trained on it)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lbaf-start", type=int, default=0 if finetune else None,
                        help="iteration at which L-BAF starts" + (" (default 0)" if finetune else " (default: none)"))
    parser.add_argument("--lbaf-every", type=int, default=1000, help="iterations per L-BAF branch phase")
    parser.add_argument("--lbaf-lr", type=float, default=1e-4)
    parser.add_argument("--lora-rank", type=int, help="LoRA adapters on the APFM projections instead of L-BAF")
    parser.add_argument("--finetune-from", required=finetune,
                        help="checkpoint to start from: a file, a shipped name, or a run's folder (its furthest checkpoint)")
    parser.add_argument("--checkpoint-every", type=int, default=500)
    parser.add_argument("--validate-every", type=int, default=1000)
    parser.add_argument("--val-examples", type=int, default=8)
    parser.add_argument("--val-steps", type=int, default=4, help="DDIM steps of validation samples")
    parser.add_argument("--cpus-per-worker", type=float, default=1.0)
    parser.add_argument("--max-failures", type=int, default=3, help="worker failures retried from the last checkpoint")
    parser.add_argument("--full-scale", type=float, help="full scale the checkpoint declares (default: the store's)")
    parser.add_argument("--equalize-pan", action="store_true",
                        help="feed the PAN equalized to its scene's MS intensity (always on when the base does)")
    parser.add_argument("--equalize-bands", action="store_true",
                        help="also feed every MS band with its contrast divided by its slope on the equalized PAN of "
                             "its scene (implies --equalize-pan; always on when the base does)")
    parser.add_argument("--augment", action="store_true",
                        help="turn and mirror every training example at random (the 8 elements of the dihedral group)")
    parser.add_argument("--band-gains", type=float, metavar="R",
                        help="scale every MS band of a training example by its own random gain in [1/R, R] "
                             "(reference too), so the network reads each band's injection gain from the scene")
    parser.add_argument("--export", help="write the final checkpoint here (and a model card beside it)")
    parser.add_argument("--half", action="store_true", help="export float16 weights")
    parser.add_argument("--ray-address", help="Ray cluster to join (default: RAY_ADDRESS, else a local Ray)")


def config_from_args(args: argparse.Namespace) -> TrainJobConfig:
    lbaf_start = args.lbaf_start if args.lora_rank is None else None
    return TrainJobConfig(
        store=args.store, storage_path=args.storage_path, name=args.name, workers=args.workers, steps=args.steps,
        batch_size=args.batch_size, lr=args.lr, width=args.width, architecture=args.architecture, seed=args.seed, lbaf_start=lbaf_start,
        lbaf_every=args.lbaf_every, lbaf_lr=args.lbaf_lr, lora_rank=args.lora_rank,
        finetune_from=args.finetune_from, checkpoint_every=args.checkpoint_every,
        validate_every=args.validate_every, val_examples=args.val_examples, val_steps=args.val_steps,
        cpus_per_worker=args.cpus_per_worker, max_failures=args.max_failures, full_scale=args.full_scale,
        pan_equalization=args.equalize_pan or args.equalize_bands, band_equalization=args.equalize_bands,
        augmentation="dihedral" if args.augment else None,
        band_gains=args.band_gains)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.train_job", description=__doc__.split("\n\n")[0])
    add_job_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    from infra.entry import run_entry
    from infra.ray_sharpen import connect_ray

    def work():
        cfg = config_from_args(args)
        connect_ray(args.ray_address, log_to_driver=True)
        return run_training(cfg, export=args.export, half=args.half)

    return run_entry("train_job", work, where=args.storage_path,
                     rerun_hint="rerun the same command: the run resumes from its last checkpoint")


if __name__ == "__main__":
    sys.exit(main())
