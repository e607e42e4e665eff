"""Peak memory of each pipeline stage as the scene grows: it should stay flat (issue #21). Prints one JSON object.

For each scene size a setup subprocess (not measured) writes synthetic but realistic inputs: a 4-band, ratio-4,
11-bit scene as GeoTIFFs (uint16 PAN and MS, tiled, as a provider ships them), a reference GeoTIFF of the true MS
on the PAN grid, and a small randomly initialised SSDiff checkpoint. Then each stage runs in its own fresh
subprocess, which reports its peak resident memory (``ru_maxrss``):

- ``ingest``: ``flows.ingest.ingest_scene`` of the GeoTIFFs into a scene store;
- ``sharpen``: the tiled pipeline in process (``create_mosaic_store``, the missing tiles listed, ``run_tiles``
  with 1 DDIM step), as bench/tiling_memory.py runs it (the Ray actors run the same ``run_tiles``), on
  ``--sharpen-tiles`` tiles spread over the scene: sharpening every tile of the large scene would take most of an
  hour on 2 CPU cores, and a tile's memory does not depend on how many came before (bench/tiling_memory.py
  sharpens whole scenes); a setup subprocess (not measured) then fills the other tiles' cores with the true MS,
  so the later stages read a finished mosaic;
- ``evaluate``: ``flows.evaluate.evaluate_mosaic`` with the reference and ``--reduced`` (Wald's protocol), so
  every index and the quicklook;
- ``export``: ``flows.export.export_cog``.

``ratio_large_vs_small`` is each stage's peak on the largest size over its peak on the smallest; flat is under
about 1.3 (each process carries a fixed interpreter, numpy, GDAL and torch footprint).

    .venv/bin/python bench/stage_memory.py [--sizes 1024 4096] [--stages ingest sharpen evaluate export]
                                           [--tile 64] [--halo 4] [--batch 16] [--sharpen-tiles 64]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from measured_process import peak_rss_mb, run_script

PROJECT_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_ROOT))

BANDS, RATIO, BITS, SEED = 4, 4, 11, 0
BAND_NAMES = ["blue", "green", "red", "nir"]
STAGES = ("ingest", "sharpen", "evaluate", "export")


def _write_tif(path: Path, data, transform) -> None:
    import rasterio

    with rasterio.open(path, "w", driver="GTiff", width=data.shape[2], height=data.shape[1], count=data.shape[0],
                       dtype=data.dtype.name, crs="EPSG:32616", transform=transform, tiled=True, blockxsize=256,
                       blockysize=256, compress="deflate") as dst:
        dst.write(data)


def make_inputs(size: int, workdir: Path) -> None:
    """GeoTIFFs of a synthetic scene: a smooth multi-band truth with texture, the MS its box average by RATIO
    plus sensor noise, the PAN the band mean plus its own noise; and the checkpoint."""
    import numpy as np
    from affine import Affine

    from ssdiff_model.model.checkpoint import save_untrained

    rng = np.random.default_rng(size)
    full = 2**BITS - 1
    y, x = np.meshgrid(np.linspace(0, 1, size, dtype=np.float32), np.linspace(0, 1, size, dtype=np.float32),
                       indexing="ij")
    truth = np.empty((BANDS, size, size), dtype=np.float32)
    for b in range(BANDS):
        truth[b] = (700 + 250 * np.sin(2 * np.pi * (5 + b) * x) * np.cos(2 * np.pi * (4 + b) * y)
                    + 120 * np.sin(2 * np.pi * 61 * x * y) + 30 * rng.standard_normal((size, size), dtype=np.float32))
    del x, y
    pan_transform = Affine(0.5, 0, 400000, 0, -0.5, 3400000)
    _write_tif(workdir / "reference.tif", np.clip(truth, 0, full), pan_transform)
    n = size // RATIO
    ms = truth.reshape(BANDS, n, RATIO, n, RATIO).mean(axis=(2, 4)) + 10 * rng.standard_normal((BANDS, n, n))
    _write_tif(workdir / "ms.tif", np.clip(np.round(ms), 0, full).astype(np.uint16),
               pan_transform * Affine.scale(RATIO))
    pan = truth.mean(axis=0) + 15 * rng.standard_normal((size, size), dtype=np.float32)
    _write_tif(workdir / "pan.tif", np.clip(np.round(pan), 0, full).astype(np.uint16)[None], pan_transform)
    save_untrained(workdir / "model.pt", bands=BANDS, ratio=RATIO, full_scale=float(full), sensor="synthetic",
                   band_names=BAND_NAMES, seed=SEED, width=8, head_dim=8)


def fill_mosaic(workdir: Path) -> None:
    """Write the true MS into the cores of the tiles still missing and mark them sharpened, as run_tiles does."""
    import rasterio
    import zarr
    from rasterio.windows import Window

    from tiling import missing_tiles
    from tiling.stores.layout import DONE, HRMS, TILE_SHARPENED

    mosaic = workdir / "hrms.zarr"
    group = zarr.open_group(mosaic, mode="r+")
    hrms, done = group[HRMS], group[DONE]
    with rasterio.open(workdir / "reference.tif") as reference:
        for tile in missing_tiles(mosaic):
            rows, cols = tile.core
            window = Window(cols.start, rows.start, cols.stop - cols.start, rows.stop - rows.start)
            hrms[(slice(None), rows, cols)] = reference.read(window=window)
            done[tile.row, tile.col] = TILE_SHARPENED


def run_stage(stage: str, workdir: Path, tile: int, halo: int, batch: int, sharpen_tiles: int) -> dict:
    """One stage on the workdir's files; returns its peak RSS and what it produced."""
    start = time.perf_counter()
    scene, mosaic = workdir / "scene.zarr", workdir / "hrms.zarr"
    if stage == "ingest":
        from flows.ingest import ingest_scene

        ingest_scene(workdir / "pan.tif", [workdir / "ms.tif"], scene, band_names=BAND_NAMES)
        detail = {}
    elif stage == "sharpen":
        from ssdiff_model.inference.pansharpener import Pansharpener
        from tiling import create_mosaic_store, missing_tiles, run_tiles

        sharpener = Pansharpener.from_checkpoint(workdir / "model.pt", device="cpu")
        create_mosaic_store(mosaic, scene, sharpener, tile_size=tile, halo=halo, seed=SEED, steps=1)
        tiles = missing_tiles(mosaic)
        sample = tiles[::max(1, len(tiles) // sharpen_tiles)][:sharpen_tiles]
        counts = run_tiles(scene, mosaic, sharpener, sample, batch_size=batch, seed=SEED, steps=1)
        detail = {"tiles": len(tiles), **counts}
    elif stage == "evaluate":
        from flows.evaluate import evaluate_mosaic

        result = evaluate_mosaic(mosaic, reference=workdir / "reference.tif", reduced=True,
                                 checkpoint=workdir / "model.pt")
        detail = {"HQNR": result["full_resolution"].get("HQNR"), "reference_Q2n": result["reference"]["Q2n"],
                  "reduced_Q2n": result["reduced_resolution"].get("Q2n")}
    elif stage == "export":
        from flows.export import export_cog

        summary = export_cog(mosaic, workdir / "hrms.tif", overwrite=True)
        detail = {"bytes": summary["bytes"]}
    else:
        raise SystemExit(f"unknown stage {stage!r} (one of {', '.join(STAGES)})")
    seconds = time.perf_counter() - start
    peak_mb = peak_rss_mb()
    return {"peak_rss_mb": round(peak_mb, 1), "seconds": round(seconds, 1), **detail}


def _subprocess(*args: str) -> str:
    return run_script(__file__, *args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 4096], help="PAN pixels a side")
    parser.add_argument("--stages", nargs="+", default=list(STAGES), choices=STAGES)
    parser.add_argument("--tile", type=int, default=64)
    parser.add_argument("--halo", type=int, default=4)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--sharpen-tiles", type=int, default=64, help="tiles the sharpen stage runs")
    parser.add_argument("--make", type=int, help=argparse.SUPPRESS)   # internal: subprocess roles
    parser.add_argument("--stage", help=argparse.SUPPRESS)
    parser.add_argument("--fill", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.make:
        make_inputs(args.make, args.workdir)
        return
    if args.fill:
        fill_mosaic(args.workdir)
        return
    if args.stage:
        print(json.dumps(run_stage(args.stage, args.workdir, args.tile, args.halo, args.batch, args.sharpen_tiles)))
        return

    # A stage needs the ones before it (evaluate and export need the mosaic): run them all up to the last asked.
    stages = list(STAGES[:max(STAGES.index(s) for s in args.stages) + 1])
    runs: dict[str, dict] = {stage: {} for stage in stages}
    with tempfile.TemporaryDirectory(prefix="stage-memory-") as tmp:
        for size in args.sizes:
            workdir = Path(tmp) / str(size)
            workdir.mkdir()
            _subprocess("--make", str(size), "--workdir", str(workdir))
            for stage in stages:
                out = _subprocess("--stage", stage, "--workdir", str(workdir), "--tile", str(args.tile), "--halo",
                                  str(args.halo), "--batch", str(args.batch), "--sharpen-tiles",
                                  str(args.sharpen_tiles))
                runs[stage][f"{size}x{size}"] = json.loads(out.strip().splitlines()[-1])
                if stage == "sharpen":
                    _subprocess("--fill", "--workdir", str(workdir))
    small, large = f"{min(args.sizes)}x{min(args.sizes)}", f"{max(args.sizes)}x{max(args.sizes)}"
    result = {"benchmark": "stage_memory", "bands": BANDS, "ratio": RATIO, "tile_size": args.tile,
              "halo": args.halo, "batch_size": args.batch, "steps": 1,
              "model": "SSDiffNet width 8, random weights", "stages": {}}
    for stage in args.stages:
        result["stages"][stage] = {**runs[stage], "ratio_large_vs_small": round(
            runs[stage][large]["peak_rss_mb"] / runs[stage][small]["peak_rss_mb"], 3)}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
