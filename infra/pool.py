"""The pool of sharpening actors: each holds one model and sharpens batches of tiles from the scene store into the
mosaic store; the pool hands out the work, retries what a dead actor held, and grows and shrinks with the cluster.

Why an actor pool driven from here rather than Ray Data: every unit of work is a handful of tile *indices* (a few
bytes), the actors read their windows straight from the scene store and write their cores straight into the
mosaic store, so there is no dataset to stream, and the driver never holds pixels. Driving the pool ourselves
gives the retry semantics the pipeline needs: when an actor dies (a node lost, an OOM kill, ``ray.kill``), the
batches it held go back to the queue and run on another actor. Retrying is safe because a tile's output is a pure
function of its position, the seed and the checkpoint (position-keyed noise), and the manifest marks a tile only
after its core is written.

Each actor holds one model: ``num_gpus=1`` when the cluster has GPUs (or nothing yet to run actors on), otherwise
an equal share of the CPUs, used as torch threads.
"""
from __future__ import annotations

import os
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import ray
from ray.exceptions import RayActorError, RayTaskError
from tqdm import tqdm

from infra.failures import RunFailed
from infra.ray_env import remote_options
from ssdiff_model.errors import BadInput
from tiling import MosaicAttrs, Tile, objstore, run_tiles
from tiling.stores.mosaic import shard_of

__all__ = ["ACTOR_WAIT_S", "CALLS_IN_FLIGHT_PER_ACTOR", "MAX_ATTEMPTS_PER_BATCH", "SharpenerPool", "TileSharpener"]

# Calls queued on one actor at a time: the next batch is already waiting when the current one finishes, so the
# actor never idles on a driver round trip; more would only lengthen what a dying actor takes down with it.
CALLS_IN_FLIGHT_PER_ACTOR = 2
# A batch that has killed this many actors is not tried again: something in it (its size, its data) is at fault.
MAX_ATTEMPTS_PER_BATCH = 3
# How long a run waits with work queued and no actor placed (an autoscaler adding a GPU node takes minutes);
# SSDIFF_ACTOR_WAIT_S overrides it.
ACTOR_WAIT_S = 900.0
# How often the driver looks at the pool (actors placed, work to hand out) while no result comes back.
POLL_S = 2.0


class TileSharpener:
    """A Ray actor holding one model: sharpens batches of tiles from the scene store into the mosaic store."""

    def __init__(self, checkpoint: str, cpu_threads: int | None):
        import torch

        from ssdiff_model.inference.pansharpener import Pansharpener

        if cpu_threads:
            torch.set_num_threads(cpu_threads)
        # a checkpoint beside an object-store mosaic (adapted weights) is read from a local copy
        with objstore.fetched(checkpoint) as local:
            self.pansharpener = Pansharpener.from_checkpoint(local)
        self.calls = 0

    def describe(self) -> dict[str, Any]:
        """Where this actor runs (also how the driver waits for the model to be loaded): the node's id and its
        address (IP and node manager port: two nodes of one machine share the IP), the process, the device."""
        import torch

        node = ray.get_runtime_context().get_node_id()
        address = next((f"{n['NodeManagerAddress']}:{n['NodeManagerPort']}" for n in ray.nodes()
                        if n["NodeID"] == node), None)
        return {"node": node, "node_address": address, "pid": os.getpid(), "device": str(self.pansharpener.device),
                "threads": torch.get_num_threads(), "calls": self.calls}

    def sharpen(self, scene_store: str, mosaic_store: str, tiles: Sequence[Tile], batch_size: int, seed: int,
                steps: int, sampler: str = "consistent", back_projection: int = 0, ensemble: int = 1) -> dict[str, int]:
        self.calls += 1
        return run_tiles(scene_store, mosaic_store, self.pansharpener, tiles, batch_size=batch_size, seed=seed,
                         steps=steps, sampler=sampler, back_projection=back_projection, ensemble=ensemble)


@dataclass(eq=False)
class _Actor:
    """One actor of the pool: its handle, where it runs once placed and loaded (None before), calls in flight."""
    handle: Any
    info: dict[str, Any] | None = None
    load: int = 0


class SharpenerPool:
    """TileSharpener actors over the connected Ray cluster, reusable across scenes (one model load per actor for a
    whole archive). Use as a context manager: the actors are killed on exit.

    Work goes only to actors that are placed and have loaded their model; an actor still waiting for resources
    holds none, so a run never waits on one. ``actors=N`` keeps N actors (a dead one is replaced). Without it the
    pool is elastic: it asks for more actors while queued work could use them (up to ``max_actors``; at most as
    many waiting as it has at work, so it grows by doubling), and a cluster autoscaler (KubeRay's) adds a node
    for each waiting actor; where nothing can place them they wait, harmless, and are let go when the queue is
    empty, with the idle actors beyond one, so that the autoscaler can remove their nodes. A cluster with neither
    a GPU nor a CPU for actors (GPU workers scaled to zero, a head with ``num-cpus: 0``) gets GPU actors asked for,
    and the first run waits up to ``wait_s`` for the autoscaler to place one.

    Every actor of a pool uses the same torch thread count (``cpu_threads``, fixed when the pool starts): the count
    changes the last bits of a network call, and a tile must come out the same whichever actor sharpens it.
    """

    def __init__(self, checkpoint: str | os.PathLike, actors: int | None = None, *, max_actors: int | None = None,
                 cpus_per_actor: int | None = None, max_attempts: int = MAX_ATTEMPTS_PER_BATCH,
                 wait_s: float | None = None):
        self.checkpoint = str(checkpoint)
        self.max_attempts = max_attempts
        self.wait_s = float(os.environ.get("SSDIFF_ACTOR_WAIT_S", ACTOR_WAIT_S)) if wait_s is None else wait_s
        for name, value in (("actors", actors), ("max_actors", max_actors)):
            if value is not None and value < 1:
                raise BadInput(f"{name} must be at least 1, got {value}")
        self.fixed = actors is not None
        self.max_actors = actors if self.fixed else max_actors
        resources = ray.cluster_resources()
        gpus, cpus = int(resources.get("GPU", 0)), int(resources.get("CPU", 0))
        if gpus or not cpus:
            self.options = {"num_gpus": 1, "num_cpus": 1}
            self.cpu_threads = None
            initial = actors or max(1, min(gpus, max_actors or gpus))
        else:
            initial = actors or 1
            if actors and actors * (cpus_per_actor or 1) > cpus:
                raise BadInput(f"{actors} actors of {cpus_per_actor or 1} CPU asked for, but the Ray cluster "
                               f"has {cpus} CPUs and no GPU")
            self.cpu_threads = cpus_per_actor or max(1, cpus // initial)
            self.options = {"num_cpus": self.cpu_threads}
        self.restarts = 0
        self._actors: list[_Actor] = []
        self._loading: dict[ray.ObjectRef, _Actor] = {}   # describe() call -> the actor it waits for
        for _ in range(initial):
            self._add()
        # Fail here, with the actor's own error, if the model cannot be loaded (bad checkpoint, missing file). A
        # fixed pool waits for all its actors (as many as the cluster has room for: checked above); an elastic one
        # for its first, and only where the cluster has resources now (else its first run waits for them).
        if self.fixed or gpus or cpus:
            self._wait_for_actors(len(self._actors) if self.fixed else 1)

    # ---- actors ------------------------------------------------------------------------------------------------

    def _add(self) -> _Actor:
        # max_restarts=0: a dead actor is replaced by the pool, which also re-queues the work it held. The
        # object-store variables go with the actor: a worker on another node, or one a long-lived cluster started
        # before the driver set them, would otherwise read s3:// stores from the wrong endpoint, or as nobody.
        options = remote_options(self.options)
        actor = _Actor(ray.remote(TileSharpener).options(max_restarts=0, **options).remote(
            self.checkpoint, self.cpu_threads))
        self._actors.append(actor)
        self._loading[actor.handle.describe.remote()] = actor
        return actor

    def _drop(self, actor: _Actor) -> None:
        if actor in self._actors:
            self._actors.remove(actor)
            for ref in [ref for ref, waiting in self._loading.items() if waiting is actor]:
                del self._loading[ref]
            ray.kill(actor.handle)

    def _loaded(self, ref: ray.ObjectRef) -> None:
        """A describe() call returned: the actor is placed and its model loaded, or it died trying."""
        actor = self._loading.pop(ref)
        try:
            actor.info = ray.get(ref)
        except RayActorError:   # lost before it was ready (its node went away): another takes its place
            self._drop(actor)
            if self.fixed:
                self._add()
        except RayTaskError as err:
            raise (err.cause if isinstance(err.cause, Exception) else err) from err

    def _wait_for_actors(self, count: int) -> None:
        deadline = time.monotonic() + self.wait_s
        while sum(a.info is not None for a in self._actors) < count:
            ready, _ = ray.wait(list(self._loading), num_returns=1,
                                timeout=max(0.0, deadline - time.monotonic()))
            if not ready:
                raise RunFailed(self._unplaced())
            self._loaded(ready[0])

    def _unplaced(self) -> str:
        resources = ray.cluster_resources()
        return (f"no sharpening actor could be placed in {self.wait_s:g} s: each asks for {self.options} and the "
                f"Ray cluster has {resources.get('CPU', 0):g} CPUs and {resources.get('GPU', 0):g} GPUs (an "
                f"autoscaler adds nodes for waiting actors; or give --actors, or another --ray-address); rerun to "
                f"resume")

    def _scale(self, queued: int) -> None:
        """Elastic pools: ask for actors while queued batches could use them; let idle ones go once none are."""
        if self.fixed:
            return
        working = [a for a in self._actors if a.info is not None]
        if queued:
            waiting = len(self._actors) - len(working)
            usable = len(working) + -(-queued // CALLS_IN_FLIGHT_PER_ACTOR)   # ceil: calls each actor can hold
            wanted = min(self.max_actors or usable, usable)
            while len(self._actors) < wanted and waiting < max(1, len(working)):
                self._add()
                waiting += 1
        else:
            for actor in [a for a in self._actors if a.info is None]:
                self._drop(actor)
            for actor in [a for a in working if a.load == 0][:max(0, len(working) - 1)]:
                self._drop(actor)

    @property
    def placement(self) -> list[dict[str, Any]]:
        """Where the pool's working actors run (``TileSharpener.describe``), in the order they were started."""
        return [actor.info for actor in self._actors if actor.info is not None]

    def __enter__(self) -> "SharpenerPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        for actor in list(self._actors):
            self._drop(actor)

    def kill_actor(self, slot: int = 0) -> None:
        """Kill one actor as a failure would (tests and chaos drills); the pool notices at its next result."""
        ray.kill(self._actors[slot].handle, no_restart=True)

    # ---- work --------------------------------------------------------------------------------------------------

    def sharpen(self, scene_store: str | os.PathLike, mosaic_store: str | os.PathLike, tiles: Sequence[Tile], *,
                seed: int, steps: int, sampler: str = "consistent", back_projection: int = 0, ensemble: int = 1,
                batch_size: int = 8, progress: bool | tqdm = True, on_batch_done=None) -> dict[str, Any]:
        """Sharpen ``tiles`` (normally ``missing_tiles(mosaic_store)``), ``batch_size`` tiles per actor call.

        Returns:
            Counts (tiles sharpened and all-nodata, actor calls made, batches retried after an actor died) and
            ``actors``: where each actor that sharpened a batch ran (node, node address, pid, device, threads) and
            how many batches it did.
        """
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
        in_flight: dict[ray.ObjectRef, tuple[_Actor, int]] = {}   # ref -> (actor, batch index)
        # batches done per actor; keyed by the actor itself (compared by identity): an id() could be reused by an
        # actor started after a dropped one was collected, and count its batches under the other's placement
        done_by: dict[_Actor, int] = {}
        totals: dict[str, Any] = {"sharpened": 0, "nodata": 0, "actor_calls": 0, "batches_retried": 0}
        bar = progress if isinstance(progress, tqdm) else tqdm(total=len(tiles), unit="tile", disable=not progress,
                                                               desc=Path(mosaic_store).name)

        def submit() -> None:
            for actor in self._actors:
                while queue and actor.info is not None and actor.load < CALLS_IN_FLIGHT_PER_ACTOR:
                    index = queue.popleft()
                    ref = actor.handle.sharpen.remote(scene_store, mosaic_store, batches[index], batch_size, seed,
                                                      steps, sampler, back_projection, ensemble)
                    in_flight[ref] = (actor, index)
                    actor.load += 1
                    totals["actor_calls"] += 1

        idle_since = time.monotonic()
        try:
            self._scale(len(queue))
            submit()
            while in_flight or queue:
                ready, _ = ray.wait([*in_flight, *self._loading], num_returns=1, timeout=POLL_S)
                for ref in ready:
                    if ref in self._loading:
                        self._loaded(ref)
                        continue
                    actor, index = in_flight.pop(ref)
                    actor.load -= 1
                    try:
                        counts = ray.get(ref)
                    except RayActorError as err:
                        attempts[index] += 1
                        if attempts[index] >= self.max_attempts:
                            raise RunFailed(f"{mosaic_store}: tiles {[(t.row, t.col) for t in batches[index]]} "
                                            f"lost {attempts[index]} actors in a row; giving up ({err})") from err
                        queue.appendleft(index)
                        totals["batches_retried"] += 1
                        if actor in self._actors:   # the first of its failed calls replaces the dead actor
                            self._drop(actor)
                            self.restarts += 1
                            if self.fixed:
                                self._add()
                    except RayTaskError as err:
                        # The work itself failed (bad data, a bug): retrying elsewhere would fail the same way. The
                        # original exception (a BadInput naming the store, say) is what the caller must see.
                        if isinstance(err.cause, Exception):
                            raise err.cause from err
                        raise
                    else:
                        totals["sharpened"] += counts["sharpened"]
                        totals["nodata"] += counts["nodata"]
                        done_by[actor] = done_by.get(actor, 0) + 1
                        bar.update(len(batches[index]))
                        if on_batch_done is not None:
                            on_batch_done(batches[index])
                if in_flight or not queue:
                    idle_since = time.monotonic()
                elif time.monotonic() - idle_since > self.wait_s:
                    raise RunFailed(self._unplaced())
                self._scale(len(queue))
                submit()
        finally:
            for ref in in_flight:  # after an error: do not leave queued calls behind on a shared pool
                try:
                    ray.cancel(ref)
                except Exception:  # noqa: BLE001 - best effort; an actor that already died has nothing to cancel
                    pass
            if bar is not progress:
                bar.close()
        self._scale(0)
        totals["actors"] = [{**actor.info, "batches": done} for actor, done in done_by.items()]
        return totals
