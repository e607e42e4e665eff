"""Adapting the checkpoint to a scene once, in a Ray task, before the sharpening actors load it.

The adapted weights are a real checkpoint written beside the mosaic (``<mosaic>.adapted.pt``, atomically: a local
file renamed into place, an object written in one PUT beside an s3:// mosaic), and the actors load that file, so a
rerun reuses the very same weights and resumes bit for bit. The file records what it was adapted from (the base's
hash, the scene's source checksums, the settings); a rerun whose inputs differ is refused rather than mixing two
models in one mosaic.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

import ray

from infra.ray_env import remote_options
from infra.settings import SharpenSettings
from ssdiff_model.errors import BadInput
from tiling import SceneAttrs, objstore

__all__ = ["adapted_path", "ensure_adapted"]


def adapted_path(mosaic_store: str | os.PathLike) -> Path | str:
    """Where the adapted weights of a mosaic live: ``out/name.zarr`` -> ``out/name.adapted.pt`` (a URL beside an
    object-store mosaic)."""
    if objstore.is_url(mosaic_store):
        return objstore.sibling(mosaic_store, objstore.name(mosaic_store).removesuffix(".zarr") + ".adapted.pt")
    mosaic = Path(mosaic_store)
    return mosaic.with_name(mosaic.name.removesuffix(".zarr") + ".adapted.pt")


def _scene_record(scene_store: str | os.PathLike) -> dict[str, Any]:
    """What the adapted weights record of the scene they were adapted to."""
    attrs = SceneAttrs.read(scene_store)
    return {"sources": attrs.sources, "sensor": attrs.sensor, "full_scale": attrs.full_scale}


def _adapt_in_task(checkpoint: str, scene_store: str, out: str, iterations: int, seed: int) -> str:
    """Read the scene's central window, adapt, write the checkpoint atomically; returns its hash."""
    import numpy as np

    from ssdiff_model.inference.adaptation import MAX_WINDOW, AdaptationConfig, adapt_checkpoint
    from ssdiff_model.model.checkpoint import load_checkpoint, save_checkpoint
    from ssdiff_model.science.resample import central_window
    from tiling import MS, PAN, open_scene

    base = load_checkpoint(checkpoint)
    scene = open_scene(scene_store, dask=False)
    ratio = SceneAttrs.from_attrs(scene.attrs).ratio
    # Only the central window adaptation uses is read (the arrays are lazily indexed): a 40k x 40k scene costs what
    # a 1k one does.
    pan, ms = (np.asarray(window.values) for window in
               central_window(scene[PAN], scene[MS], ratio, MAX_WINDOW // ratio))
    record = _scene_record(scene_store)
    adapted = adapt_checkpoint(base, pan, ms, AdaptationConfig(iterations=iterations, seed=seed),
                               full_scale=record["full_scale"], sensor=record["sensor"], scene=record)
    if not objstore.is_url(out):
        return save_checkpoint(adapted, out)
    with tempfile.TemporaryDirectory() as folder:   # written whole locally, then one PUT
        digest = save_checkpoint(adapted, Path(folder) / objstore.name(out))
        objstore.put_file(Path(folder) / objstore.name(out), out)
    return digest


def _load(path: Path | str):
    """The adapted checkpoint at `path` (a local file, or an object read through a temporary copy)."""
    from ssdiff_model.model.checkpoint import load_checkpoint

    with objstore.fetched(path) as local:
        return load_checkpoint(local)


def _record(adapted, wanted: dict[str, Any]) -> dict[str, Any]:
    """What the adapted checkpoint was made from, under the keys of `wanted`."""
    record = adapted.training.get("adaptation") or {}
    return {key: record.get(key) for key in wanted}


def ensure_adapted(scene_store: str | os.PathLike, mosaic_store: str | os.PathLike,
                   settings: SharpenSettings) -> dict[str, Any]:
    """The adapted checkpoint of this mosaic: reused when it exists and fits, else made in a Ray task
    (``connect_ray`` first).

    Args:
        scene_store: the scene store adapted to.
        mosaic_store: the mosaic the weights are kept beside (``adapted_path``).
        settings: the run's: ``checkpoint`` (the base), ``adapt`` (iterations), ``seed``, ``overwrite``.

    Returns:
        Its provenance: base checkpoint and hash, adapted path and hash, settings, whether it was reused.

    Raises:
        ValueError: an adapted file exists beside the mosaic but was made from another checkpoint, scene or
            settings (remove it, or write the mosaic elsewhere; ``overwrite``, as the mosaic's, makes it anew).
    """
    from ssdiff_model.inference.adaptation import AdaptationConfig
    from ssdiff_model.model.checkpoint import load_checkpoint

    checkpoint, iterations, seed = settings.checkpoint, settings.adapt, settings.seed
    if iterations < 1:
        raise BadInput(f"--adapt needs at least 1 iteration, got {iterations}")
    base = load_checkpoint(checkpoint)
    path = adapted_path(mosaic_store)
    # every adaptation setting, not only N and the seed: weights made under other defaults are not this run's
    wanted = {"base_hash": base.content_hash, **asdict(AdaptationConfig(iterations=iterations, seed=seed)),
              "scene": _scene_record(scene_store)}
    adapted = _load(path) if objstore.exists(path) else None
    if adapted is not None and settings.overwrite and _record(adapted, wanted) != wanted:
        objstore.remove_file(path)
        adapted = None
    reused = adapted is not None
    if not reused:
        resources = ray.cluster_resources()
        gpus = 1 if resources.get("GPU", 0) >= 1 else 0
        cpus = 1 if gpus else max(1, int(resources.get("CPU", 1)))
        # the object-store variables go with the task, as with the sharpening actors (infra.pool)
        task = ray.remote(**remote_options({"num_cpus": cpus, "num_gpus": gpus, "max_retries": 2}))(_adapt_in_task)
        ray.get(task.remote(str(checkpoint), str(scene_store), str(path), iterations, seed))
        adapted = _load(path)
    record = adapted.training.get("adaptation") or {}
    found = _record(adapted, wanted)
    if found != wanted:
        differs = sorted(key for key in wanted if found[key] != wanted[key])
        raise BadInput(f"{path}: adapted weights beside the mosaic were made with other {', '.join(differs)} "
                         f"than this run's; remove the file (and the mosaic) or write the mosaic elsewhere")
    return {"base_checkpoint": str(checkpoint), "base_hash": base.content_hash, "adapted_checkpoint": str(path),
            "adapted_hash": adapted.content_hash, "iterations": iterations, "seed": seed, "reused": reused,
            "examples": record.get("examples"), "held_out_examples": record.get("held_out_examples"),
            # the check on the held-out part: the iteration whose weights were kept (0: the base's), or why the
            # scene was not adapted at all
            "kept_iteration": record.get("kept_iteration"), "declined": record.get("declined")}
