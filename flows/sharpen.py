"""Sharpen: a scene store in, a georeferenced mosaic store out, computed by Ray actors (infra.ray_sharpen)."""
from __future__ import annotations

from prefect import task
from prefect.runtime import flow_run

from flows.retry import transient_failure
from infra.ray_sharpen import connect_ray, sharpen_scene
from infra.settings import SharpenSettings

__all__ = ["sharpen_task"]


# A retry resumes: only the tiles the manifest does not record yet run again.
@task(name="sharpen", retries=2, retry_delay_seconds=10, retry_condition_fn=transient_failure)
def sharpen_task(scene_store: str, mosaic_store: str, settings: SharpenSettings) -> dict:
    """``sharpen_scene`` on the Ray cluster of ``settings.ray_address``; the mosaic records the flow run."""
    connect_ray(settings.ray_address)
    _interrupt_on_sigterm()
    if flow_run.id:
        settings = settings.replace(provenance={**settings.provenance, "prefect_flow_run": str(flow_run.id)})
    return sharpen_scene(scene_store, mosaic_store, settings)


def _interrupt_on_sigterm() -> None:
    # ray.init replaces the command line's SIGTERM handler (flows.cli) in the driver: put it back.
    from infra.entry import interrupt_on_sigterm

    interrupt_on_sigterm()
