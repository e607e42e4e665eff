"""The Ray Train job that trains or fine-tunes SSDiff (with L-BAF) on a training store.

- ``config``: ``TrainJobConfig``, the job's settings (store, storage path, run name, workers, ...) around the
  training's own ``ssdiff_model.training.config.TrainConfig``, and the command-line options built from both.
- ``worker``: what runs on every Ray Train worker (``train_loop_per_worker``, ``PhasedModel``, ``run_step``).
- ``driver``: ``run_training``, the ``TorchTrainer`` setup and the run's summary.
- ``export``: the checkpoint users load, with its model card (``export_checkpoint``, ``export_latest``), and the
  lookup of a run's furthest checkpoint (``latest_checkpoint``, ``finetune_source``).

``python -m infra.train_job`` is the command line (``ray job submit -- python -m infra.train_job ...``).
"""

__all__ = ["CHECKPOINT_FILE"]

CHECKPOINT_FILE = "model.pt"  # our one-file checkpoint inside each Ray Train checkpoint directory
