"""The settings of the Ray Train job: where it reads and writes, how many workers, and the training's own settings.

``TrainJobConfig`` holds the job-only settings and the run's ``ssdiff_model.training.config.TrainConfig`` as its
``training`` field; ``add_job_arguments`` builds the ``ssdiff train`` / ``ssdiff finetune`` / ``python -m
infra.train_job`` options from both dataclasses' fields. Light: no torch, no Ray.
"""
from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping

from ssdiff_model.errors import BadInput
from ssdiff_model.training.config import (
    TrainConfig,
    add_arguments,
    from_namespace,
    merge_settings,
    setting,
    settings_of,
)

__all__ = ["TrainJobConfig", "add_job_arguments"]


@dataclass
class TrainJobConfig:
    """A Ray Train job: `training` is what it trains and how; the other fields are where and with what."""
    store: str = setting(flag="--store", help="training store written by `ssdiff prepare-training`")
    storage_path: str = setting(flag="--storage-path", help="Ray Train storage (folder or URI) for checkpoints; "
                                                            "the same path and --name resume")
    name: str = setting(flag="--name", help="run name (rerun with the same name to resume)")
    workers: int = setting(1, flag="--workers", help="Ray Train workers (one GPU each when present)")
    training: TrainConfig = field(default_factory=TrainConfig)
    cpus_per_worker: float = setting(1.0, flag="--cpus-per-worker", after="val_steps")
    max_failures: int = setting(3, flag="--max-failures", help="worker failures retried from the last checkpoint")
    use_gpu: bool | None = None            # None: when the cluster has a GPU per worker
    export: str | None = setting(None, flag="--export", after="band_gains",
                                 help="write the final checkpoint here (and a model card beside it)")
    half: bool = setting(False, flag="--half", help="export float16 weights")
    ray_address: str | None = setting(None, flag="--ray-address",
                                      help="Ray cluster to join (default: RAY_ADDRESS, else a local Ray)")

    def __post_init__(self):
        if isinstance(self.training, Mapping):   # from JSON (a Prefect parameter, Ray's train_loop_config)
            self.training = TrainConfig(**self.training)
        if self.workers < 1:
            raise BadInput(f"workers must be >= 1, got {self.workers}")

    def to_dict(self) -> dict[str, Any]:
        """The JSON-able fields (``training`` as a dict); ``TrainJobConfig(**d)`` rebuilds it."""
        return dataclasses.asdict(self)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "TrainJobConfig":
        """The config of options parsed by a parser that ``add_job_arguments`` built.

        Args:
            args: the parsed options.

        Returns:
            The config; with ``--lora-rank`` the L-BAF start (``finetune``'s default 0) is dropped: LoRA instead.
        """
        training = from_namespace(TrainConfig, args)
        if training["lora_rank"] is not None:
            training["lbaf_start"] = None
        return cls(**from_namespace(cls, args), training=TrainConfig(**training))


def add_job_arguments(parser: argparse.ArgumentParser, finetune: bool = False) -> None:
    """Add the job's options (both dataclasses' flagged fields) to `parser`.

    Args:
        parser: the ``train`` or ``finetune`` subparser, or ``python -m infra.train_job``'s parser.
        finetune: ``ssdiff finetune``: L-BAF starts at iteration 0 by default and ``--finetune-from`` is required.
    """
    overrides = {"lbaf_start": {"default": 0, "help": "iteration at which L-BAF starts (default 0)"},
                 "finetune_from": {"required": True}} if finetune else {}
    add_arguments(parser, merge_settings(settings_of(TrainConfig), settings_of(TrainJobConfig)), overrides)
