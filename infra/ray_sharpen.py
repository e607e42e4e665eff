"""Sharpening a scene store into a mosaic store with a pool of Ray actors.

Why an actor pool driven from here rather than Ray Data: every unit of work is a handful of tile *indices* (a few
bytes), the actors read their windows straight from the scene store and write their cores straight into the
mosaic store, so there is no dataset to stream, and the driver never holds pixels. Driving the pool ourselves
gives the retry semantics the pipeline needs: when an actor dies (a node lost, an OOM kill, ``ray.kill``), the
batches it held go back to the queue and run on another actor, and a replacement actor is started in the dead
one's place. Retrying is safe because a tile's output is a pure function of its position, the seed and the
checkpoint (position-keyed noise), and the manifest marks a tile only after its core is written.

Each actor holds one model: ``num_gpus=1`` when the cluster has GPUs, otherwise an equal share of the CPUs, used
as torch threads.
"""
from __future__ import annotations

import os
import time
from collections import deque
from pathlib import Path
from typing import Any, Sequence

import ray
from ray.exceptions import RayActorError, RayTaskError
from tqdm import tqdm

from infra.preflight import require_apart, require_sharpen_settings, require_store_path, require_tiles_fit
from infra.settings import SharpenSettings
from ssdiff_model.errors import BadInput
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
    run_tiles,
    store_attrs,
    store_lock,
)
from tiling.clock import utc_timestamp
from tiling.integrity import forget_tiles, verify_mosaic
from tiling.stores.mosaic import shard_of

# Calls queued on one actor at a time: the next batch is already waiting when the current one finishes, so the
# actor never idles on a driver round trip; more would only lengthen what a dying actor takes down with it.
CALLS_IN_FLIGHT_PER_ACTOR = 2
# A batch that has killed this many actors is not tried again: something in it (its size, its data) is at fault.
MAX_ATTEMPTS_PER_BATCH = 3


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


class TileSharpener:
    """A Ray actor holding one model: sharpens batches of tiles from the scene store into the mosaic store."""

    def __init__(self, checkpoint: str, cpu_threads: int | None):
        import torch

        from ssdiff_model.inference.pansharpener import Pansharpener

        if cpu_threads:
            torch.set_num_threads(cpu_threads)
        self.pansharpener = Pansharpener.from_checkpoint(checkpoint)
        self.calls = 0

    def describe(self) -> dict[str, Any]:
        """Where this actor runs (also how the driver waits for the model to be loaded)."""
        import torch

        return {"node": ray.get_runtime_context().get_node_id(), "pid": os.getpid(),
                "device": str(self.pansharpener.device), "threads": torch.get_num_threads(), "calls": self.calls}

    def sharpen(self, scene_store: str, mosaic_store: str, tiles: Sequence[Tile], batch_size: int, seed: int,
                steps: int, sampler: str = "consistent") -> dict[str, int]:
        self.calls += 1
        return run_tiles(scene_store, mosaic_store, self.pansharpener, tiles, batch_size=batch_size, seed=seed,
                         steps=steps, sampler=sampler)


class SharpenerPool:
    """``actors`` TileSharpener actors over the connected Ray cluster; reusable across scenes (one model load per
    actor for a whole archive). Use as a context manager: the actors are killed on exit."""

    def __init__(self, checkpoint: str | os.PathLike, actors: int | None = None, *,
                 cpus_per_actor: int | None = None, max_attempts: int = MAX_ATTEMPTS_PER_BATCH):
        self.checkpoint = str(checkpoint)
        self.max_attempts = max_attempts
        resources = ray.cluster_resources()
        gpus, cpus = int(resources.get("GPU", 0)), int(resources.get("CPU", 0))
        if gpus:
            self.actors = actors or gpus
            self.options = {"num_gpus": 1, "num_cpus": 1}
            self.cpu_threads = None
        else:
            self.actors = actors or 1
            if self.actors * (cpus_per_actor or 1) > cpus:
                raise BadInput(f"{self.actors} actors of {cpus_per_actor or 1} CPU asked for, but the Ray cluster "
                                 f"has {cpus} CPUs and no GPU")
            self.cpu_threads = cpus_per_actor or max(1, cpus // self.actors)
            self.options = {"num_cpus": self.cpu_threads}
        if self.actors < 1:
            raise BadInput(f"actors must be at least 1, got {self.actors}")
        self.restarts = 0
        self._handles = [self._start() for _ in range(self.actors)]
        # Fail here, with the actor's own error, if the model cannot be loaded (bad checkpoint, missing file).
        self.placement = ray.get([handle.describe.remote() for handle in self._handles])

    def _start(self):
        # max_restarts=0: a dead actor is replaced by the pool, which also re-queues the work it held. The
        # object-store variables go with the actor: a worker on another node, or one a long-lived cluster started
        # before the driver set them, would otherwise read s3:// stores from the wrong endpoint, or as nobody.
        options = dict(self.options)
        forwarded = objstore.forwarded_environment()
        if forwarded:
            options["runtime_env"] = {"env_vars": forwarded}
        return ray.remote(TileSharpener).options(max_restarts=0, **options).remote(
            self.checkpoint, self.cpu_threads)

    def __enter__(self) -> "SharpenerPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        for handle in self._handles:
            ray.kill(handle)
        self._handles = []

    def kill_actor(self, slot: int = 0) -> None:
        """Kill one actor as a failure would (tests and chaos drills); the pool notices at its next result."""
        ray.kill(self._handles[slot], no_restart=True)

    def sharpen(self, scene_store: str | os.PathLike, mosaic_store: str | os.PathLike, tiles: Sequence[Tile], *,
                seed: int, steps: int, sampler: str = "consistent", batch_size: int = 8,
                progress: bool | tqdm = True, on_batch_done=None) -> dict[str, int]:
        """Sharpen ``tiles`` (normally ``missing_tiles(mosaic_store)``), ``batch_size`` tiles per actor call.
        Returns counts: tiles sharpened / all-nodata, actor calls made, batches retried after an actor died."""
        scene_store, mosaic_store = str(scene_store), str(mosaic_store)
        shard_tiles = MosaicAttrs.read(mosaic_store).shard_tiles
        if shard_tiles > 1:
            # A sharded mosaic (object storage): one call per shard, so a shard object has one writer at a time.
            groups: dict[tuple[int, int], list[Tile]] = {}
            for tile in tiles:
                groups.setdefault(shard_of(tile, shard_tiles), []).append(tile)
            batches = list(groups.values())
        else:
            batches = [list(tiles[i:i + batch_size]) for i in range(0, len(tiles), batch_size)]
        queue = deque(range(len(batches)))
        attempts = [0] * len(batches)
        in_flight: dict[ray.ObjectRef, tuple[int, Any, int]] = {}   # ref -> (slot, actor handle, batch index)
        load = [0] * len(self._handles)
        totals = {"sharpened": 0, "nodata": 0, "actor_calls": 0, "batches_retried": 0}
        bar = progress if isinstance(progress, tqdm) else tqdm(total=len(tiles), unit="tile", disable=not progress,
                                                               desc=Path(mosaic_store).name)

        def submit() -> None:
            for slot, handle in enumerate(self._handles):
                while queue and load[slot] < CALLS_IN_FLIGHT_PER_ACTOR:
                    index = queue.popleft()
                    ref = handle.sharpen.remote(scene_store, mosaic_store, batches[index], batch_size, seed, steps,
                                                 sampler)
                    in_flight[ref] = (slot, handle, index)
                    load[slot] += 1
                    totals["actor_calls"] += 1

        try:
            submit()
            while in_flight:
                (ref,), _ = ray.wait(list(in_flight), num_returns=1)
                slot, handle, index = in_flight.pop(ref)
                if self._handles[slot] is handle:
                    load[slot] -= 1
                try:
                    counts = ray.get(ref)
                except RayActorError as err:
                    attempts[index] += 1
                    if attempts[index] >= self.max_attempts:
                        raise RuntimeError(f"{mosaic_store}: tiles {[(t.row, t.col) for t in batches[index]]} "
                                           f"lost {attempts[index]} actors in a row; giving up ({err})") from err
                    queue.appendleft(index)
                    totals["batches_retried"] += 1
                    if self._handles[slot] is handle:  # the first of its failed calls replaces the dead actor
                        self._handles[slot] = self._start()
                        load[slot] = 0
                        self.restarts += 1
                except RayTaskError as err:
                    # The work itself failed (bad data, a bug): retrying elsewhere would fail the same way. The
                    # original exception (a ValueError naming the store, say) is what the caller must see.
                    if isinstance(err.cause, Exception):
                        raise err.cause from err
                    raise
                else:
                    totals["sharpened"] += counts["sharpened"]
                    totals["nodata"] += counts["nodata"]
                    bar.update(len(batches[index]))
                    if on_batch_done is not None:
                        on_batch_done(batches[index])
                submit()
        finally:
            for ref in in_flight:  # after an error: do not leave queued calls behind on a shared pool
                try:
                    ray.cancel(ref)
                except Exception:  # noqa: BLE001 - best effort; an actor that already died has nothing to cancel
                    pass
            if bar is not progress:
                bar.close()
        return totals


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

    ``steps``, ``halo`` and ``sampler`` left None are resolved by ``ssdiff_model.model.checkpoint.resolve_sampling``
    (the mosaic's own when resuming, else the checkpoint's recommendation, else the project's default); the mosaic
    records the values used and, in ``sampling_settings_from``, where each came from.

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
    if settings.adapt and objstore.is_url(mosaic_store):
        # The adapted weights live beside the mosaic as a local file the actors load; an object-store copy of them
        # is not written yet.
        raise BadInput(f"{mosaic_store}: --adapt keeps its weights beside the mosaic, which is not supported on "
                         f"object storage yet: sharpen without --adapt, or into a local --out")
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
            described = Pansharpener.from_checkpoint(checkpoint, device="cpu")
            extra["adaptation"] = {k: v for k, v in adaptation.items() if k != "reused"}
        create_mosaic_store(mosaic_store, scene_store, described, tile_size=settings.tile_size, halo=settings.halo,
                            seed=settings.seed, steps=settings.steps, sampler=settings.sampler,
                            batch_size=settings.batch_size, overwrite=settings.overwrite,
                            provenance={**extra, **dict(settings.provenance)})
        del described
        grid = mosaic_grid(mosaic_store)
        attrs = MosaicAttrs.read(mosaic_store)
        damaged = verify_mosaic(mosaic_store, grid, attrs.full_scale, attrs.manifest_codes)
        if damaged:   # redone from scratch below, like tiles never sharpened
            forget_tiles(mosaic_store, [(d.row, d.col) for d in damaged], attrs.missing_code)
        todo = missing_tiles(mosaic_store)
        counts = {"sharpened": 0, "nodata": 0, "actor_calls": 0, "batches_retried": 0}
        if todo:
            counts = _sharpen_missing(pool, checkpoint, settings, scene_store, mosaic_store, todo, len(grid))
        finished = utc_timestamp()
        summary = {"mosaic_store": str(mosaic_store), "scene_store": str(scene_store), "tiles_total": len(grid),
                   "tiles_already_done": len(grid) - len(todo), **counts,
                   "tiles_repaired": [[d.row, d.col] for d in damaged],
                   "warnings": [f"{mosaic_store}: {d}; sharpened again" for d in damaged],
                   "seconds": round(time.perf_counter() - clock, 3), "started": started, "finished": finished,
                   "ray_cluster": cluster, "steps": settings.steps, "halo": settings.halo,
                   "sampler": settings.sampler, "sampling_settings_from": settings_from,
                   **({"adaptation": adaptation} if settings.adapt else {})}
        if todo or MosaicAttrs.read(mosaic_store).finished is None:
            # Provenance of the run that (last) wrote tiles, or finished them but could not record it (a full
            # disk); a rerun with nothing to do leaves the store untouched.
            record_provenance(mosaic_store, started=started, finished=finished, ray_cluster=cluster,
                              last_run={k: summary[k] for k in ("tiles_total", "tiles_already_done", "sharpened",
                                                                "nodata", "actor_calls", "batches_retried",
                                                                "seconds")})
    return summary


def _resolve_sampling(ckpt, mosaic_store, settings: SharpenSettings) -> tuple[SharpenSettings, dict[str, str]]:
    """The settings with steps, halo and sampler resolved, and where each came from; a mosaic being resumed lends
    its own."""
    from ssdiff_model.model.checkpoint import resolve_sampling

    recorded = store_attrs(mosaic_store, MOSAIC_LAYOUT) if Path(mosaic_store).exists() else None
    values, sources = resolve_sampling(ckpt, recorded=recorded, steps=settings.steps, halo=settings.halo,
                                       sampler=settings.sampler)
    return settings.replace(steps=values["steps"], halo=values["halo"], sampler=values["sampler"]), sources


def _sharpen_missing(pool: SharpenerPool | None, checkpoint, settings: SharpenSettings, scene_store, mosaic_store,
                     todo: Sequence[Tile], total: int) -> dict[str, int]:
    """Run ``todo`` on ``pool``, or on a pool of ``checkpoint`` of its own that is closed (its actors killed)
    before returning."""
    own_pool = pool is None
    pool = pool or SharpenerPool(checkpoint, settings.actors)
    try:
        with tqdm(total=total, initial=total - len(todo), unit="tile", disable=not settings.progress,
                  desc=Path(mosaic_store).name) as bar:
            return pool.sharpen(scene_store, mosaic_store, todo, seed=settings.seed, steps=settings.steps,
                                sampler=settings.sampler, batch_size=settings.batch_size, progress=bar)
    finally:
        if own_pool:
            pool.close()


def is_finished(mosaic_store: str | os.PathLike) -> bool:
    """True when the mosaic store exists and its manifest records every tile."""
    return objstore.exists(mosaic_store) and not missing_tiles(mosaic_store)


__all__ = ["SharpenSettings", "SharpenerPool", "TileSharpener", "cluster_resources", "connect_ray", "is_finished",
           "sharpen_scene"]
