"""Ray: the cluster connection, the sharpening pool and runs, scene adaptation, archive reprocessing, the training
job, the runtime_env that carries AWS_* to Ray workers (``ray_env``), and the one entry-point wrapper every command
runs in (``entry``). ``deploy/`` holds the cluster and deployment files."""

__all__ = ["adapt", "entry", "failures", "pool", "preflight", "ray_env", "ray_sharpen", "reprocess", "settings",
           "train_job", "training"]
