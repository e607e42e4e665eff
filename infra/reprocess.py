"""Archive reprocessing, the entrypoint of ``ray job submit``: scene stores in, one mosaic store each.

    ray job submit --address http://HEAD:8265 --working-dir . -- \\
        python -m infra.reprocess --checkpoint ssdiff-8band-r4 --out-dir /archive/mosaics /archive/scenes

Scenes are scene stores (``ssdiff ingest`` output): given one by one, as folders holding ``*.zarr`` scene stores,
or listed one per line in ``--list FILE``. The job is resumable after any failure: a scene whose mosaic is
finished is skipped, a partial mosaic resumes with its missing tiles only, and one pool of actors (one model
each) serves every scene. A scene that fails is reported and the job goes on with the others; the exit status
is non-zero if any failed. One JSON line per scene on stdout, then a summary line.
"""
from __future__ import annotations

import argparse
import json
import sys
import traceback
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from infra.entry import run_entry
from infra.pool import SharpenerPool
from infra.ray_sharpen import connect_ray, is_finished, sharpen_scene
from infra.settings import SharpenSettings
from ssdiff_model.errors import BadInput
from tiling import SCENE_LAYOUT, check_run_settings, mosaic_grid, objstore
from tiling.integrity import verify_mosaic

__all__ = ["build_parser", "find_scene_stores", "main", "mosaic_path", "reprocess"]


def _is_scene_store(path: Path | str) -> bool:
    import zarr

    try:
        return zarr.open_group(objstore.zarr_store(path, read_only=True), mode="r").attrs.get("layout") == SCENE_LAYOUT
    except Exception:  # noqa: BLE001 - not a Zarr group at all
        return False


def find_scene_stores(inputs: Iterable[str | Path], listing: str | Path | None = None) -> list[Path]:
    """Scene stores named by ``inputs`` (stores, or folders of stores) and the lines of ``listing``, in order,
    without duplicates. A named path that is neither is an error (a typo must not pass as "nothing to do")."""
    paths = [objstore.as_path(p) for p in inputs]
    if listing is not None:
        with objstore.open_input(listing, "rt") as lines:   # a listing may itself be an object
            paths += [objstore.as_path(line.strip()) for line in lines.read().splitlines() if line.strip()]
    stores: list[Path | str] = []
    for path in paths:
        if objstore.is_url(path):
            objstore.require_reachable(path, writable=False, what="scene store")
        if _is_scene_store(path):
            found = [path]
        elif objstore.is_url(path) or path.is_dir():   # a folder or prefix of scene stores: those directly in it
            try:
                entries = objstore.listing(path)
            except FileNotFoundError:
                entries = []
            found = [store for store in (objstore.as_path(objstore.join(path, entry))
                                         for entry, is_folder in entries if is_folder) if _is_scene_store(store)]
            if not found and objstore.is_url(path):
                raise FileNotFoundError(f"{path}: neither a scene store nor a prefix holding scene stores")
        else:
            raise FileNotFoundError(f"{path}: neither a scene store nor a folder")
        stores += [p for p in found if p not in stores]
    return stores


def _finished_with(mosaic: Path, settings: Mapping[str, Any]) -> bool:
    """Finished with these settings and undamaged; a mosaic finished with others is not skipped silently:
    sharpening it again reports the mismatch as that scene's failure."""
    if not is_finished(mosaic):
        return False
    try:
        attrs = check_run_settings(mosaic, **settings)
    except ValueError:
        return False
    # A damaged tile is redone by sharpen_scene, which verifies the same way: the scene is not skipped.
    return not verify_mosaic(mosaic, mosaic_grid(mosaic), attrs.full_scale, attrs.manifest_codes)


def mosaic_path(scene_store: Path | str, out_dir: Path | str) -> Path | str:
    """``out_dir/<scene name>.zarr``. The name is the store's last path component, which holds no separator, so
    whatever the scene paths given (``..``, absolute, shell metacharacters) the mosaic stays inside ``out_dir``."""
    name = objstore.name(scene_store).removesuffix(".zarr").removesuffix(".scene")
    if objstore.is_url(out_dir):
        return objstore.join(out_dir, f"{name}.zarr")
    return Path(out_dir) / f"{name}.zarr"


def reprocess(scene_stores: Sequence[Path], out_dir: Path, settings: SharpenSettings) -> dict:
    """Sharpen each scene store into ``out_dir/<scene name>.zarr`` on one pool of actors, skipping the scenes
    whose mosaic is finished with these settings; one JSON line per scene on stdout, then the summary.

    Args:
        scene_stores: the scene stores (``find_scene_stores``).
        out_dir: the folder (or object-store prefix) of the mosaics.
        settings: the job's settings (the mosaics' provenance adds ``ray_job``).

    Returns:
        {"scenes", "finished", "skipped": counts, "failed": the failed scene stores, "ray_cluster"}.
    """
    if objstore.is_url(out_dir):
        objstore.require_reachable(out_dir, writable=True, what="--out-dir")   # no folders to make there
    else:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
    cluster = connect_ray(settings.ray_address)
    settings = settings.replace(provenance={**settings.provenance, "ray_job": "infra.reprocess"})
    # A setting left None agrees with any finished mosaic: sharpen_scene would resume it with its own
    # (ssdiff_model.model.sampling.resolve_sampling), so it is finished as far as this run is concerned.
    checked = {k: getattr(settings, k) for k in ("steps", "seed", "sampler", "back_projection", "ensemble", "tile_size",
                                                  "halo")
               if getattr(settings, k) is not None}
    todo = [s for s in scene_stores if not _finished_with(mosaic_path(s, out_dir), checked)]
    skipped = [str(s) for s in scene_stores if s not in todo]
    for store in skipped:
        print(json.dumps({"scene_store": store, "status": "skipped", "reason": "mosaic already finished"}),
              flush=True)
    finished, failed = [], []
    if todo:
        # Adapted scenes each get their own model, so their own pool (sharpen_scene starts it).
        shared = None if settings.adapt else SharpenerPool(settings.checkpoint, settings.actors,
                                                           max_actors=settings.max_actors)
        with shared or nullcontext() as pool:
            for scene_store in todo:
                try:
                    summary = sharpen_scene(scene_store, mosaic_path(scene_store, out_dir), settings, pool=pool)
                except Exception as err:  # noqa: BLE001 - report the scene and go on with the archive
                    failed.append(str(scene_store))
                    print(json.dumps({"scene_store": str(scene_store), "status": "failed",
                                      "error": f"{type(err).__name__}: {err}"}), flush=True)
                    traceback.print_exc(file=sys.stderr)
                else:
                    finished.append(str(scene_store))
                    print(json.dumps({"status": "finished", **summary}, default=str), flush=True)
    summary = {"scenes": len(scene_stores), "finished": len(finished), "skipped": len(skipped),
               "failed": failed, "ray_cluster": cluster}
    print(json.dumps({"summary": summary}, default=str), flush=True)
    return summary


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m infra.reprocess", description=__doc__.split("\n\n")[0])
    parser.add_argument("scenes", nargs="*", help="scene stores, or folders holding scene stores")
    parser.add_argument("--list", help="file with one scene store (or folder) per line")
    parser.add_argument("--out-dir", required=True, help="folder for the mosaic stores (<scene name>.zarr)")
    SharpenSettings.add_arguments(parser, without=("progress", "overwrite"), help={
        "adapt": "fine-tune the checkpoint on each scene for N L-BAF iterations first (infra.adapt)",
        "ray_address": "default: RAY_ADDRESS (set by `ray job submit`), else a local Ray"})
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def work():
        stores = find_scene_stores(args.scenes, args.list)
        if not stores:
            raise BadInput("no scene stores given (positional paths or --list)")
        # A job's log has no use for progress bars.
        settings = SharpenSettings.from_args(args, progress=False)
        return reprocess(stores, objstore.as_path(args.out_dir), settings)

    # reprocess prints a line per scene and the summary itself (a long job's log is read while it runs)
    return run_entry("infra.reprocess", work, where=args.out_dir, print_summary=False,
                     status=lambda summary: 1 if summary["failed"] else 0)


if __name__ == "__main__":
    sys.exit(main())
