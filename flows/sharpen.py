"""Sharpen: a scene store in, a georeferenced mosaic store out, computed by Ray actors (infra.ray_sharpen)."""
from __future__ import annotations

from prefect import task
from prefect.runtime import flow_run

from flows.retry import transient_failure
from infra.ray_sharpen import connect_ray, sharpen_scene


# A retry resumes: only the tiles the manifest does not record yet run again.
@task(name="sharpen", retries=2, retry_delay_seconds=10, retry_condition_fn=transient_failure)
def sharpen_task(scene_store: str, mosaic_store: str, checkpoint: str, steps: int | None = None, seed: int = 0,
                 sampler: str | None = None, tile_size: int = 64, halo: int | None = None, batch_size: int = 8,
                 actors: int | None = None, ray_address: str | None = None, progress: bool = True,
                 overwrite: bool = False, adapt: int = 0) -> dict:
    connect_ray(ray_address)
    _interrupt_on_sigterm()
    provenance = {"prefect_flow_run": str(flow_run.id)} if flow_run.id else {}
    return sharpen_scene(scene_store, mosaic_store, checkpoint, steps=steps, seed=seed, sampler=sampler,
                         tile_size=tile_size, halo=halo, batch_size=batch_size, actors=actors, progress=progress,
                         provenance=provenance, overwrite=overwrite, adapt=adapt)


def _interrupt_on_sigterm() -> None:
    # ray.init replaces the command line's SIGTERM handler (flows.cli) in the driver: put it back.
    from infra.entry import interrupt_on_sigterm

    interrupt_on_sigterm()
