"""The driver of the Ray Train job: ``run_training`` sets up the ``TorchTrainer`` (one worker per GPU, or CPU
workers), runs or resumes the run, and summarises what came out.

Checkpoints go through Ray Train: `FailureConfig(max_failures)` retries inside one job from the last checkpoint,
and a job started again with the same storage path and name continues from its latest one.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from infra.ray_env import forwarded_runtime_env
from infra.training import CHECKPOINT_FILE
from infra.training.config import TrainJobConfig
from infra.training.export import export_checkpoint, finetune_source
from infra.training.worker import train_loop_per_worker
from ssdiff_model.errors import BadInput
from tiling import objstore

__all__ = ["run_training"]


def _use_gpu(cfg: TrainJobConfig) -> bool:
    import ray

    if cfg.use_gpu is not None:
        return cfg.use_gpu
    return ray.cluster_resources().get("GPU", 0.0) >= cfg.workers


def run_training(cfg: TrainJobConfig) -> dict[str, Any]:
    """Run (or resume) the job on the Ray this process is connected to, and export its checkpoint when
    ``cfg.export`` says where.

    Args:
        cfg: the job (its store and finetune source are resolved to absolute paths in place).

    Returns:
        A JSON-able summary: run, paths, steps, final metrics, validation, history, hardware, wall time, and the
        export's ``{"path", "hash", "model_card", "bytes"}`` under ``"export"``.
    """
    import ray
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from tiling.stores.training import TrainingStore

    store = TrainingStore(cfg.store)  # fail here, with the path, rather than in every worker
    if store.count("train") < cfg.workers:
        raise BadInput(f"{cfg.store}: {store.count('train')} training examples for {cfg.workers} workers")
    settings = cfg.training
    if settings.finetune_from and not objstore.is_url(settings.finetune_from):
        settings.finetune_from = str(finetune_source(settings.finetune_from).resolve())
    cfg.store = objstore.location(cfg.store) if objstore.is_url(cfg.store) else str(Path(cfg.store).resolve())
    storage = (objstore.location(cfg.storage_path).rstrip("/") if objstore.is_url(cfg.storage_path)
               else str(Path(cfg.storage_path).resolve()))
    # An s3:// storage path goes to Ray Train as a pyarrow file system built from AWS_*, as every other store
    # reads them: pyarrow's own lookup would not reach a plain-http endpoint (MinIO, moto) or retry like ours.
    arrow = objstore.arrow_filesystem(storage)
    storage_args = {"storage_path": arrow[1], "storage_filesystem": arrow[0]} if arrow else {"storage_path": storage}
    use_gpu = _use_gpu(cfg)
    resources = {"CPU": cfg.cpus_per_worker, **({"GPU": 1} if use_gpu else {})}
    trainer = TorchTrainer(
        train_loop_per_worker, train_loop_config=cfg.to_dict(),
        scaling_config=ScalingConfig(num_workers=cfg.workers, use_gpu=use_gpu, resources_per_worker=resources),
        run_config=RunConfig(name=cfg.name, **storage_args, worker_runtime_env=forwarded_runtime_env(),
                             checkpoint_config=CheckpointConfig(num_to_keep=max(1, settings.keep_checkpoints)),
                             failure_config=FailureConfig(max_failures=cfg.max_failures)))
    started = time.time()
    result = trainer.fit()
    wall = time.time() - started
    if result.error is not None:
        raise RuntimeError(f"training run {cfg.name} at {storage} failed: {result.error}") from result.error
    if result.checkpoint is None:
        raise RuntimeError(f"training run {cfg.name} at {storage} reported no checkpoint")
    checkpoint_path = _where(storage, result.checkpoint.path, CHECKPOINT_FILE)
    info = result.return_value or {}
    summary = {
        "run": cfg.name, "storage_path": storage, "run_path": _where(storage, result.path),
        "checkpoint": checkpoint_path,
        "workers": cfg.workers, "use_gpu": use_gpu, "steps": settings.iterations, "start_step": info.get("start_step"),
        "end_step": info.get("end_step"), "resumed_from_step": info.get("resumed_from_step"),
        "final_metrics": {k: v for k, v in (result.metrics or {}).items() if not isinstance(v, dict)},
        "validation": info.get("validation", {}), "history": info.get("history", []),
        "hardware": info.get("hardware"), "lbaf_phase": info.get("lbaf_phase"),
        # the training's wall time over every resumed segment, and this call's (Ray start included)
        "wall_time_s": info.get("wall_time_s", round(wall, 1)), "this_run_s": round(wall, 1),
        "cluster": {k: v for k, v in ray.cluster_resources().items() if k in ("CPU", "GPU")},
    }
    if cfg.export:
        # as_directory: the checkpoint itself on local storage, a download from object storage
        with result.checkpoint.as_directory() as folder:
            summary["export"] = export_checkpoint(Path(folder) / CHECKPOINT_FILE, cfg.export, half=cfg.half,
                                                  store=store, facts={"wall_time_s": summary["wall_time_s"],
                                                                      "run": cfg.name, "run_path": result.path})
    return summary


def _where(storage: str, path: str, *parts: str) -> str:
    """A path Ray Train reports as text users can open: on object storage its pyarrow path ("bucket/key") with
    the storage path's scheme back in front."""
    if objstore.is_url(storage) and not objstore.is_url(path):
        path = f"{storage.split('://', 1)[0]}://{path.lstrip('/')}"
    return objstore.join(path, *parts) if parts else path
