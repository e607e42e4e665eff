"""Sharpening a scene store into a mosaic store on a Ray cluster: connecting to it, and ``sharpen_scene`` (checks,
the store's lock and creation, resuming, damaged tiles, adaptation, provenance) around the actor pool of
``infra.pool``.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Sequence

import ray
from tqdm import tqdm

from infra.pool import SharpenerPool
from infra.preflight import require_apart, require_sharpen_settings, require_store_path, require_tiles_fit
from infra.settings import SharpenSettings
from tiling import (
    MOSAIC_LAYOUT,
    MosaicAttrs,
    Tile,
    create_mosaic_store,
    missing_tiles,
    mosaic_grid,
    objstore,
    open_scene,
    record_provenance,
    store_attrs,
    store_lock,
)
from tiling.clock import utc_timestamp
from tiling.integrity import forget_tiles, verify_mosaic


def connect_ray(address: str | None = None, log_to_driver: bool = False) -> dict[str, Any]:
    """Join the Ray cluster at ``address`` ("auto", "ray://host:10001", "host:6379"), or the one this process
    already uses, or the one a ``ray job submit`` names in RAY_ADDRESS; start a local one when there is none.
    Returns the cluster's resources (recorded in the mosaic's provenance).

    ``log_to_driver`` is off by default: the sharpening actors' own output (torch warnings, per-batch logs) would
    swamp the progress bar; the training job turns it on, its workers' log lines are its progress."""
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=log_to_driver)
    return cluster_resources()


def cluster_resources() -> dict[str, Any]:
    resources = ray.cluster_resources()
    return {"address": ray.get_runtime_context().gcs_address,
            "nodes": sum(1 for node in ray.nodes() if node.get("Alive")),
            "CPU": resources.get("CPU", 0.0), "GPU": resources.get("GPU", 0.0),
            "memory_gib": round(resources.get("memory", 0.0) / 2**30, 2)}


def sharpen_scene(scene_store: str | os.PathLike, mosaic_store: str | os.PathLike, settings: SharpenSettings,
                  *, pool: SharpenerPool | None = None) -> dict[str, Any]:
    """Sharpen a scene store into ``mosaic_store`` on the connected Ray cluster (``connect_ray`` first), creating
    the mosaic store or resuming it: only tiles missing from its manifest run.

    Every setting is checked before anything is created (infra.preflight). A resumed run first verifies every
    tile its manifest calls finished (tiling.integrity.verify_mosaic) and sharpens the damaged ones again, named
    in the summary's ``tiles_repaired`` and ``warnings``. ``settings.overwrite`` replaces a mosaic made with other
    settings.

    The run holds the store's lock (tiling.store_lock) from before it creates the store to after its last write:
    a second run on the same store is refused with StoreBusyError, and a killed run leaves no stale lock.

    With ``settings.adapt`` > 0 the checkpoint is first fine-tuned on the scene for that many L-BAF iterations
    (seeded with ``settings.seed``; ``infra.adapt``), once, in a Ray task; the weights are kept beside the mosaic
    and reused by reruns, and the actors (a pool of their own: ``pool`` holds another model) load them.

    ``steps``, ``halo``, ``sampler``, ``back_projection`` and ``ensemble`` left None are resolved by
    ``ssdiff_model.model.sampling.resolve_sampling`` (the mosaic's own when resuming, else the checkpoint's
    recommendation, else the project's default); the mosaic records the values used and, in
    ``sampling_settings_from``, where each came from.

    Args:
        scene_store: the scene store (``ssdiff ingest``).
        mosaic_store: the mosaic store to create or resume.
        settings: the run's settings (``ray_address`` is ``connect_ray``'s, not used here).
        pool: actors to run the tiles on (default: a pool of ``settings.actors`` of this run's own).

    Returns:
        A summary of the run: tiles done before and now, retries, repairs, timings, the settings resolved.
    """
    from ssdiff_model.inference.pansharpener import Pansharpener

    started, clock = utc_timestamp(), time.perf_counter()
    require_sharpen_settings(settings)
    require_store_path(mosaic_store)
    require_apart(scene_store, mosaic_store)
    # The driver loads the model on the CPU only to describe it in the store (bands, ratio, hash, config); loading
    # it first also refuses a bad checkpoint before anything is written.
    described = Pansharpener.from_checkpoint(settings.checkpoint, device="cpu")
    scene_shape = open_scene(scene_store, dask=False)["pan"].shape
    require_tiles_fit(tile_size=settings.tile_size, batch_size=settings.batch_size, bands=described.bands,
                      width=int(described.config.get("width", 32)), scene_height=scene_shape[0],
                      scene_width=scene_shape[1])
    cluster = cluster_resources()
    with store_lock(mosaic_store):
        # Resolved from the checkpoint the user named (an adapted one keeps its base's recommendation anyway).
        settings, settings_from = _resolve_sampling(described.checkpoint, mosaic_store, settings)
        require_sharpen_settings(settings)
        checkpoint = settings.checkpoint
        extra = {"checkpoint": str(checkpoint), "sampling_settings_from": settings_from}
        if settings.adapt:
            from infra.adapt import ensure_adapted

            adaptation = ensure_adapted(scene_store, mosaic_store, settings)
            checkpoint, pool = adaptation["adapted_checkpoint"], None
            with objstore.fetched(checkpoint) as local:
                described = Pansharpener.from_checkpoint(local, device="cpu")
            extra["adaptation"] = {k: v for k, v in adaptation.items() if k != "reused"}
        create_mosaic_store(mosaic_store, scene_store, described, tile_size=settings.tile_size, halo=settings.halo,
                            seed=settings.seed, steps=settings.steps, sampler=settings.sampler,
                            back_projection=settings.back_projection, ensemble=settings.ensemble,
                            batch_size=settings.batch_size, overwrite=settings.overwrite,
                            provenance={**extra, **dict(settings.provenance)})
        del described
        grid = mosaic_grid(mosaic_store)
        attrs = MosaicAttrs.read(mosaic_store)
        damaged = verify_mosaic(mosaic_store, grid, attrs.full_scale, attrs.manifest_codes)
        if damaged:   # redone from scratch below, like tiles never sharpened
            forget_tiles(mosaic_store, [(d.row, d.col) for d in damaged], attrs.missing_code)
        todo = missing_tiles(mosaic_store)
        counts = {"sharpened": 0, "nodata": 0, "actor_calls": 0, "batches_retried": 0, "actors": []}
        if todo:
            counts = _sharpen_missing(pool, checkpoint, settings, scene_store, mosaic_store, todo, len(grid))
        finished = utc_timestamp()
        summary = {"mosaic_store": str(mosaic_store), "scene_store": str(scene_store), "tiles_total": len(grid),
                   "tiles_already_done": len(grid) - len(todo), **counts,
                   "tiles_repaired": [[d.row, d.col] for d in damaged],
                   "warnings": [f"{mosaic_store}: {d}; sharpened again" for d in damaged],
                   "seconds": round(time.perf_counter() - clock, 3), "started": started, "finished": finished,
                   "ray_cluster": cluster, "steps": settings.steps, "halo": settings.halo,
                   "sampler": settings.sampler, "back_projection": settings.back_projection,
                   "ensemble": settings.ensemble,
                   "sampling_settings_from": settings_from,
                   **({"adaptation": adaptation} if settings.adapt else {})}
        if todo or attrs.finished is None:   # nothing to do: the attributes read above are still current
            # Provenance of the run that (last) wrote tiles, or finished them but could not record it (a full
            # disk); a rerun with nothing to do leaves the store untouched.
            record_provenance(mosaic_store, started=started, finished=finished, ray_cluster=cluster,
                              last_run={k: summary[k] for k in ("tiles_total", "tiles_already_done", "sharpened",
                                                                "nodata", "actor_calls", "batches_retried",
                                                                "seconds")},
                              ray_actors=summary["actors"])
    return summary


def _resolve_sampling(ckpt, mosaic_store, settings: SharpenSettings) -> tuple[SharpenSettings, dict[str, str]]:
    """The settings with steps, halo, sampler, back-projection and ensemble resolved, and where each came from; a mosaic
    being resumed lends its own."""
    from ssdiff_model.model.sampling import resolve_sampling

    # on an object store too: Path("s3://...").exists() is False, and an s3 mosaic would be resumed with the
    # checkpoint's recommendation of the day instead of its own settings (then refused if they differ)
    recorded = store_attrs(mosaic_store, MOSAIC_LAYOUT) if objstore.exists(mosaic_store) else None
    values, sources = resolve_sampling(ckpt, recorded=recorded, steps=settings.steps, halo=settings.halo,
                                       sampler=settings.sampler, back_projection=settings.back_projection,
                                       ensemble=settings.ensemble)
    return settings.replace(**values), sources


def _sharpen_missing(pool: SharpenerPool | None, checkpoint, settings: SharpenSettings, scene_store, mosaic_store,
                     todo: Sequence[Tile], total: int) -> dict[str, int]:
    """Run ``todo`` on ``pool``, or on a pool of ``checkpoint`` of its own that is closed (its actors killed)
    before returning."""
    own_pool = pool is None
    pool = pool or SharpenerPool(checkpoint, settings.actors, max_actors=settings.max_actors)
    try:
        with tqdm(total=total, initial=total - len(todo), unit="tile", disable=not settings.progress,
                  desc=Path(mosaic_store).name) as bar:
            return pool.sharpen(scene_store, mosaic_store, todo, seed=settings.seed, steps=settings.steps,
                                sampler=settings.sampler, back_projection=settings.back_projection,
                                ensemble=settings.ensemble, batch_size=settings.batch_size, progress=bar)
    finally:
        if own_pool:
            pool.close()


def is_finished(mosaic_store: str | os.PathLike) -> bool:
    """True when the mosaic store exists and its manifest records every tile."""
    return objstore.exists(mosaic_store) and not missing_tiles(mosaic_store)


__all__ = ["SharpenSettings", "cluster_resources", "connect_ray", "is_finished", "sharpen_scene"]
