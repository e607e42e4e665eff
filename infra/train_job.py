"""The Ray Train job that trains or fine-tunes SSDiff (with L-BAF) on a training store.

Its command line:

    python -m infra.train_job --store train.zarr --storage-path /data/runs --name wv3-main \\
        [--workers N] [--steps N] [--lbaf-start K] [--finetune-from CKPT] [--ray-address ADDR] [--export model.pt]

(`ray job submit --working-dir . -- python -m infra.train_job ...` runs the same on a cluster.) The job itself lives
in ``infra.training``: its settings (``config``), the worker loop (``worker``), the driver (``driver``) and the
export with its model card (``export``).
"""
from __future__ import annotations

import argparse
import logging
import sys
from typing import Sequence

from infra.training.config import TrainJobConfig, add_job_arguments

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``python -m infra.train_job`` (the options of ``ssdiff train``).

    Returns:
        The parser.
    """
    parser = argparse.ArgumentParser(prog="python -m infra.train_job", description=__doc__.split("\n\n")[0])
    add_job_arguments(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run (or resume) the job of the command line on the Ray it names (or a local one).

    Args:
        argv: the arguments (default ``sys.argv[1:]``).

    Returns:
        The exit status (``infra.entry.run_entry``'s).
    """
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    from infra.entry import run_entry
    from infra.ray_sharpen import connect_ray
    from infra.training.driver import run_training

    def work():
        cfg = TrainJobConfig.from_args(args)
        connect_ray(cfg.ray_address, log_to_driver=True)
        return run_training(cfg)

    return run_entry("train_job", work, where=args.storage_path,
                     rerun_hint="rerun the same command: the run resumes from its last checkpoint")


if __name__ == "__main__":
    sys.exit(main())
