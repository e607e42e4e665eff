"""The Prefect flows: one scene end to end (``ssdiff run``), and the scheduled watch of an inbox folder.

Thin flows: each step is a task (ingest, sharpen, evaluate) with its own retries; Prefect records the flow's
parameters, and the flow publishes its results as an artifact and returns them. Defaults are local (Prefect's
ephemeral API, a local Ray, local folders); PREFECT_API_URL, ``ray_address`` and store URLs point elsewhere.
"""
from __future__ import annotations

import json
from pathlib import Path, PurePosixPath
from typing import Any

from prefect import flow
from prefect.artifacts import create_markdown_artifact

from flows.evaluate import evaluate_task
from flows.ingest import ingest_task
from flows.sharpen import sharpen_task
from infra.preflight import require_apart, require_sharpen_settings, require_store_path
from infra.ray_sharpen import is_finished
from infra.settings import SharpenSettings
from ssdiff_model.errors import BadInput
from ssdiff_model.science.sensors import get_sensor
from tiling import objstore

__all__ = ["default_scene_store", "find_new_scenes", "pansharpen_scene", "process_inbox"]

SCENE_MANIFEST = "scene.json"   # an inbox folder holding this file is one scene (see find_new_scenes)
SINGLE_FILE_SCENES = (".mat", ".h5", ".hdf5")


@flow(name="ssdiff-run")
def pansharpen_scene(pan: str, mosaic_store: str, checkpoint: str, ms: list[str] | None = None,
                     scene_store: str | None = None, sensor: str | None = None, band_names: list[str] | None = None,
                     nodata: float | None = None, example: int | None = None, full_scale: float | None = None,
                     overwrite: bool = False, steps: int | None = None, seed: int = 0, sampler: str | None = None,
                     tile_size: int = 64, halo: int | None = None, batch_size: int = 8, actors: int | None = None,
                     max_actors: int | None = None, ray_address: str | None = None, reference: str | None = None,
                     reduced: bool = False,
                     quicklook: str | None = None, progress: bool = True, adapt: int = 0,
                     back_projection: int | None = None, ensemble: int | None = None) -> dict[str, Any]:
    """Ingest the scene files, sharpen them into ``mosaic_store`` and evaluate the mosaic. Rerunning resumes:
    an identical scene store is reused and only missing tiles are sharpened.

    The sharpen settings are flat parameters (a deployment's parameters are data); they become one
    ``SharpenSettings`` here, the one place this flow converts them.

    Returns:
        {"ingest", "sharpen", "evaluate": each step's summary, "warnings": the steps' warnings}.
    """
    scene_store = scene_store or str(default_scene_store(mosaic_store))
    settings = SharpenSettings(checkpoint=checkpoint, steps=steps, seed=seed, sampler=sampler, adapt=adapt,
                               back_projection=back_projection, ensemble=ensemble,
                               tile_size=tile_size, halo=halo, batch_size=batch_size, actors=actors,
                               max_actors=max_actors, ray_address=ray_address, progress=progress,
                               overwrite=overwrite)
    # Every argument is checked before the first store is created, the scene's included.
    require_sharpen_settings(settings)
    require_store_path(mosaic_store)
    require_apart(scene_store, mosaic_store)
    scene = ingest_task(pan, list(ms or []), scene_store, sensor=sensor, band_names=band_names, nodata=nodata,
                        example=example, full_scale=full_scale)
    sharpened = sharpen_task(scene["scene_store"], mosaic_store, settings)
    quality = evaluate_task(mosaic_store, reference=reference, reduced=reduced, quicklook=quicklook,
                            checkpoint=checkpoint)
    results = {"ingest": scene, "sharpen": sharpened, "evaluate": quality,
               "warnings": [*scene.get("warnings", []), *sharpened.get("warnings", [])]}
    create_markdown_artifact(f"```json\n{json.dumps(results, indent=2, default=str)}\n```",
                             key="ssdiff-run", description=f"pansharpening of {pan} into {mosaic_store}")
    return results


def default_scene_store(mosaic_store: str | Path) -> Path:
    """``out/name.zarr`` -> ``out/name.scene.zarr``: the scene store beside its mosaic (same bucket and prefix
    for an object-store mosaic)."""
    if objstore.is_url(mosaic_store):
        return objstore.sibling(mosaic_store, objstore.name(mosaic_store).removesuffix(".zarr") + ".scene.zarr")
    store = Path(mosaic_store)
    return store.with_name(f"{store.stem}.scene.zarr")


def find_new_scenes(inbox: str | Path, outbox: str | Path) -> list[dict[str, Any]]:
    """Scenes in ``inbox`` without a finished mosaic in ``outbox/mosaics``, by name.

    A scene is either one ``.mat`` / ``.h5`` file, or a folder holding ``scene.json`` (written last by whoever
    drops the scene, so a half-copied folder is not picked up), e.g.
    ``{"pan": "pan.tif", "ms": ["ms.tif"], "sensor": "WV3", "band_names": [...], "nodata": 0}``
    with paths relative to the folder, which must stay inside it (no absolute paths, no ``..``). Folder names
    and every value read are data: the scene's name only names its stores (``outbox/mosaics/<name>.zarr``), and
    nothing is evaluated or handed to a shell. An invalid scene.json is a ValueError naming it.

    Args:
        inbox: a local folder or an object-store prefix (``s3://bucket/inbox``: its common prefixes are the
            scene folders).
        outbox: a local folder or an object-store prefix; the stores go under ``mosaics/`` and ``scenes/``.

    Returns:
        One dict per new scene: name, pan, ms (and what scene.json adds), mosaic_store, scene_store, the paths
        local or URLs like ``inbox`` and ``outbox``.
    """
    try:
        entries = objstore.listing(inbox)
    except FileNotFoundError as err:
        raise FileNotFoundError(f"{inbox}: inbox folder does not exist") from err
    scenes = []
    for name, is_folder in entries:
        entry = _inbox_path(inbox, name)
        if not is_folder and Path(name).suffix.lower() in SINGLE_FILE_SCENES:
            scene = {"name": Path(name).stem, "pan": entry, "ms": []}
        elif is_folder and objstore.is_file(_inbox_path(entry, SCENE_MANIFEST)):
            scene = _described_scene(entry)
        else:
            continue
        mosaic = _inbox_path(outbox, "mosaics", f"{scene['name']}.zarr")
        if not is_finished(mosaic):
            scenes.append({**scene, "mosaic_store": mosaic,
                           "scene_store": _inbox_path(outbox, "scenes", f"{scene['name']}.zarr")})
    return scenes


def _inbox_path(folder: str | Path, *parts: str) -> str:
    """``folder/part/...`` as text: joined with ``/`` under a URL (``Path`` would fold its ``//``), as a
    ``Path`` locally (the form the local flow has always recorded)."""
    if objstore.is_url(folder):
        return objstore.join(folder, *parts)
    return str(Path(folder, *parts))


def _described_scene(folder: str) -> dict[str, Any]:
    """The scene a folder's scene.json describes, its file paths inside the folder (see find_new_scenes)."""
    manifest = _inbox_path(folder, SCENE_MANIFEST)
    try:
        with objstore.open_input(manifest, "rb") as source:
            described = json.loads(source.read())
        ms = described.get("ms", [])
        scene = {"name": objstore.name(folder), "pan": _inside(folder, described["pan"]),
                 "ms": [_inside(folder, p) for p in ([ms] if isinstance(ms, str) else ms)],
                 **{k: described[k] for k in ("sensor", "band_names", "nodata", "example") if k in described}}
        if "sensor" in scene:
            get_sensor(scene["sensor"])   # looked up in the sensor table: an unknown name is an error
    except (ValueError, KeyError, TypeError) as err:
        problem = f"no {err} given" if isinstance(err, KeyError) else str(err)
        raise BadInput(f"{manifest}: not a valid scene description ({problem})") from err
    return scene


def _inside(folder: str, relative: str) -> str:
    # PurePosixPath for both: a scene.json's paths use '/', and on object storage a key is no local path either.
    # A TypeError for anything but a string: caught as an invalid description.
    path = PurePosixPath(relative)
    if path.is_absolute() or ".." in path.parts or "://" in relative:
        raise BadInput(f"file {relative!r} is outside the scene folder: give paths relative to it, without '..'")
    return _inbox_path(folder, *path.parts)


@flow(name="ssdiff-watch-inbox")
def process_inbox(inbox: str, outbox: str, checkpoint: str, steps: int | None = None, seed: int = 0,
                  tile_size: int = 64, halo: int | None = None, batch_size: int = 8, actors: int | None = None,
                  max_actors: int | None = None, ray_address: str | None = None,
                  adapt: int = 0) -> list[dict[str, Any]]:
    """Ingest, sharpen and evaluate every scene of ``inbox`` not yet finished in ``outbox`` (the scheduled
    deployment of infra/deploy/prefect.yaml runs this on a cron schedule). One failing scene does not stop the
    others.

    Args:
        inbox: a local folder or an object-store prefix (``s3://bucket/inbox``) of scenes (see find_new_scenes).
        outbox: a local folder or an object-store prefix; ``scenes/<name>.zarr`` and ``mosaics/<name>.zarr`` go
            under it.
        checkpoint, steps, ...: the sharpen settings of every scene (as ``pansharpen_scene``'s).

    Returns:
        One ``{"scene", "state", "mosaic_store", "message"}`` per scene it ran.
    """
    objstore.require_reachable(inbox, writable=False, what="inbox")
    objstore.require_reachable(outbox, writable=True, what="outbox")
    if not objstore.is_url(outbox):   # an object store has no folders to make: a key's prefix is its folder
        for folder in ("scenes", "mosaics"):
            (Path(outbox) / folder).mkdir(parents=True, exist_ok=True)
    results = []
    for scene in find_new_scenes(inbox, outbox):
        name = scene.pop("name")
        state = pansharpen_scene(**scene, checkpoint=checkpoint, steps=steps, seed=seed, tile_size=tile_size,
                                 halo=halo, batch_size=batch_size, actors=actors, max_actors=max_actors,
                                 ray_address=ray_address,
                                 progress=False, adapt=adapt, return_state=True)
        results.append({"scene": name, "state": state.type.value,
                        "mosaic_store": scene["mosaic_store"], "message": state.message})
    failed = [r["scene"] for r in results if r["state"] != "COMPLETED"]
    if failed:
        raise RuntimeError(f"{inbox}: scenes {failed} failed (the others finished): {results}")
    return results
