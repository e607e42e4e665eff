"""Peak memory of a tiled run as the scene grows: it should stay flat. Prints one JSON object.

For each scene size a first subprocess writes a synthetic 4-band, ratio-4, 11-bit scene store and a small
randomly initialised SSDiff checkpoint (not measured); a second, fresh subprocess pre-allocates the mosaic store,
lists the missing tiles and sharpens them all with 1 DDIM step, then reports its peak resident memory
(``ru_maxrss``). ``memory_ratio_4k_vs_1k`` (peak at 4096 / peak at 1024) must stay under 1.2.

    .venv/bin/python bench/tiling_memory.py [--sizes 1024 4096] [--tile 32] [--halo 4] [--batch 16]
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

BANDS, RATIO, FULL_SCALE, SEED = 4, 4, 2047.0, 0


def synthetic_pair(size: int):
    """Smooth multi-band ground truth plus PAN detail, in 11-bit DN: a stand-in for a real scene of any size."""
    import numpy as np
    from affine import Affine

    from ssdiff_model.data.pair import PansharpeningPair

    rng = np.random.default_rng(size)
    n = size // RATIO
    y, x = np.meshgrid(np.linspace(0, 1, n, dtype=np.float32), np.linspace(0, 1, n, dtype=np.float32),
                       indexing="ij")
    ms = np.stack([600 + 300 * np.sin(2 * np.pi * (3 + b) * x) * np.cos(2 * np.pi * (2 + b) * y)
                   + 50 * rng.standard_normal((n, n), dtype=np.float32) for b in range(BANDS)])
    pan = ms.mean(axis=0).repeat(RATIO, axis=0).repeat(RATIO, axis=1)
    pan += 80 * rng.standard_normal(pan.shape, dtype=np.float32)
    return PansharpeningPair(
        pan=np.clip(pan, 0, FULL_SCALE).astype(np.float32), ms_lr=np.clip(ms, 0, FULL_SCALE).astype(np.float32),
        ratio=RATIO, full_scale=FULL_SCALE, bits=11, sensor="synthetic", band_names=("B", "G", "R", "N"),
        crs="EPSG:32616", pan_transform=Affine(0.5, 0, 400000, 0, -0.5, 3400000), ms_transform=None)


def make_inputs(size: int, workdir: Path) -> None:
    from ssdiff_model.model.checkpoint import save_untrained
    from tiling import write_scene_store

    save_untrained(workdir / "model.pt", bands=BANDS, ratio=RATIO, full_scale=FULL_SCALE, sensor="synthetic",
                   band_names=["B", "G", "R", "N"], seed=SEED, width=8, head_dim=8)
    write_scene_store(workdir / "scene.zarr", synthetic_pair(size))


def run_scene(workdir: Path, tile: int, halo: int, batch: int) -> dict:
    import torch

    from ssdiff_model.inference.pansharpener import Pansharpener
    from tiling import create_mosaic_store, missing_tiles, open_mosaic, run_tiles

    sharpener = Pansharpener.from_checkpoint(workdir / "model.pt", device="cpu")
    scene, mosaic = workdir / "scene.zarr", workdir / "hrms.zarr"
    start = time.perf_counter()
    create_mosaic_store(mosaic, scene, sharpener, tile_size=tile, halo=halo, seed=SEED, steps=1)
    tiles = missing_tiles(mosaic)
    counts = run_tiles(scene, mosaic, sharpener, tiles, batch_size=batch, seed=SEED, steps=1)
    seconds = time.perf_counter() - start
    peak_mb = peak_rss_mb()
    # Checks after the measurement (dask reads the mosaic chunk by chunk).
    hrms = open_mosaic(mosaic)["hrms"]
    return {"tiles": len(tiles), **counts, "seconds": round(seconds, 1), "peak_rss_mb": round(peak_mb, 1),
            "missing_after": len(missing_tiles(mosaic)), "nan_pixels": int(hrms.isnull().sum().compute()),
            "mosaic_shape": list(hrms.shape), "torch_threads": torch.get_num_threads()}


def _subprocess(*args: str) -> str:
    return run_script(__file__, *args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 4096])
    parser.add_argument("--tile", type=int, default=32)
    parser.add_argument("--halo", type=int, default=4)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--make", type=int, help=argparse.SUPPRESS)   # internal: subprocess roles
    parser.add_argument("--run", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.make:
        make_inputs(args.make, args.workdir)
        return
    if args.run:
        print(json.dumps(run_scene(args.workdir, args.tile, args.halo, args.batch)))
        return

    runs = {}
    with tempfile.TemporaryDirectory(prefix="tiling-memory-") as tmp:
        for size in args.sizes:
            workdir = Path(tmp) / str(size)
            workdir.mkdir()
            _subprocess("--make", str(size), "--workdir", str(workdir))
            out = _subprocess("--run", "--workdir", str(workdir), "--tile", str(args.tile), "--halo",
                              str(args.halo), "--batch", str(args.batch))
            runs[f"{size}x{size}"] = json.loads(out.strip().splitlines()[-1])
    result = {"benchmark": "tiling_memory", "tile_size": args.tile, "halo": args.halo, "batch_size": args.batch,
              "steps": 1, "model": "SSDiffNet width 8, random weights", "runs": runs}
    if {1024, 4096} <= set(args.sizes):
        result["memory_ratio_4k_vs_1k"] = round(runs["4096x4096"]["peak_rss_mb"] / runs["1024x1024"]["peak_rss_mb"],
                                                3)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
