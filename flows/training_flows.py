"""Prefect flows for the model itself: build a training store, run the Ray Train job, record what came out.

The ``ssdiff prepare-training / train / finetune / export-checkpoint`` commands (flows/training.py) run them.
Prefect orchestrates and records; the pixels move in the builder (tiling.stores.training) and in the Ray Train
workers (infra.training).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact

from flows.retry import transient_failure
from ssdiff_model.errors import BadInput
from tiling import objstore

__all__ = ["build_store_task", "prepare_training_flow", "store_summary", "train_flow", "train_task"]

# ---------------------------------------------------------------------------------------------------------------
# Tasks and flows
# ---------------------------------------------------------------------------------------------------------------

@task(name="build-training-store", retries=1, retry_delay_seconds=5, retry_condition_fn=transient_failure)
def build_store_task(out: str, family: str | None = None, data_root: str | None = None,
                     sources: Sequence[Sequence[str]] = (), landsat8: str | None = None,
                     validation: float | list[str] | None = None, split_seed: int = 0, stride: int | None = None,
                     regions: int = 1, coregister: bool = False, misregistered_copies: int = 0,
                     overwrite: bool = False) -> dict[str, Any]:
    from ssdiff_model.data.catalogue import family_sources, source_from_files
    from tiling.stores.training import build_training_store

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
    """Run (or resume) the Ray Train job `job` (``TrainJobConfig`` fields, ``training`` a dict).

    Args:
        job: the job's fields.
        export: where to export the final checkpoint (None: no export).
        half: export float16 weights.
        ray_address: the Ray to join (None: RAY_ADDRESS, else a local Ray).

    Returns:
        ``run_training``'s summary.
    """
    # A retry resumes: same storage path and name, so the job continues from its latest checkpoint.
    from infra.ray_sharpen import connect_ray
    from infra.training.config import TrainJobConfig
    from infra.training.driver import run_training

    connect_ray(ray_address, log_to_driver=True)
    return run_training(TrainJobConfig(**{**job, "export": export, "half": half, "ray_address": ray_address}))


@flow(name="ssdiff-train")
def train_flow(store: str, storage_path: str, name: str, job: dict[str, Any] | None = None,
               export: str | None = None, half: bool = False, ray_address: str | None = None) -> dict[str, Any]:
    """Launch (or resume) the Ray Train job on `store` and record its result: checkpoint, validation indexes,
    hardware, wall time, and the exported checkpoint with its model card.

    Args:
        store: the training store.
        storage_path: the Ray Train storage (the same path and name resume).
        name: the run's name.
        job: further ``TrainJobConfig`` fields (workers, cpus_per_worker, ...), the training's settings as a dict
            under ``training`` (iterations, batch_size, lbaf_start, finetune_from, ...).
        export: where to export the final checkpoint (with its model card).
        half: export float16 weights.
        ray_address: the Ray to join.

    Returns:
        ``run_training``'s summary.
    """
    result = train_task({"store": store, "storage_path": storage_path, "name": name, **(job or {})}, export=export,
                        half=half, ray_address=ray_address)
    recorded = {k: v for k, v in result.items() if k != "history"}
    card = ""
    if result.get("export"):
        with objstore.open_input(result["export"]["model_card"], "rb") as source:   # a local file or an s3:// object
            card = source.read().decode()
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
