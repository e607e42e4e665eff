"""The paper's benchmark protocol: SSDiff on a PanCollection reduced-resolution test file, scored as the community does.

    python bench/pancollection_table.py --test test_wv3_multiExm1.h5 --checkpoint C [--steps 10] [--seed 0]
        [--protocol tiled|release] [--full-scale DN] [--sampler consistent|release] [--out table.json]
        [--save-fused sr.h5]

The test file holds `gt`, `lms`, `ms`, `pan` (N x C x H x W, digital numbers;
`ssdiff_model.data.matfiles.read_pancollection`
reads it). Every image is sharpened from its `pan` and `ms` by one of two protocols:

- `tiled`: as the pipeline does (`tiling.sharpen_array`: 64 x 64 tiles with a 16-pixel halo, only their cores kept,
  position-keyed noise);
- `release`: as the authors' release merges patches: every 64 x 64 patch at stride 16 (plus the patch flush with the
  far edge when the size is not on the stride grid, so every pixel is covered), each sampled whole with the file's
  `lms` cut to the patch, as the release feeds it, and the overlapping samples averaged. The starting noise is
  position-keyed here too, so overlapping patches start alike.

`--sampler release` samples as the release does (`GaussianDiffusion.ddim_sample(sampler="release")`); with an imported
release checkpoint (`ssdiff import-release-checkpoint`) and `--protocol release` this is the authors' own procedure.
The tiled protocol upsamples the MS itself (interp23tap), as the pipeline does; so does the release protocol for a
checkpoint that equalizes MS bands (it must see the bands it equalized). The network sees DN / full scale:
`--full-scale` (WV3 and QuickBird files are 11-bit, 2047; GaoFen-2 10-bit, 1023), else the checkpoint's. The indexes
are `ssdiff_model.science.metrics.reduced_resolution` of each sharpened image against its `gt`, with the settings of the
community's PanCollection analysis (indexes_evaluation with flag_cut_bounds 0, 32-pixel Q2n blocks, no thresholding);
`--cut-bounds` drops the toolbox's 21-pixel frame instead.

Prints one JSON object: per image and mean SAM, ERGAS, Q2n, SCC (and Q), the index settings (cut, block, bits), the
protocol and sampling settings, and the paper's own figures for the file's sensor beside ours. Bad input (a missing or
unreadable file, no `gt`, bands that do not fit the checkpoint) is one line on stderr naming the file, exit 2.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from ssdiff_model.errors import BadInput

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:   # run as a script from anywhere: the project's packages sit beside bench/
    sys.path.insert(0, str(ROOT))

PROGRAM = "pancollection_table"
INDEXES = ("SAM", "ERGAS", "Q2n", "SCC", "Q")
# SSDiff's reduced-resolution figures in the paper (NeurIPS 2024): 20 test images of 256 x 256 per sensor; Q2n is the
# paper's Q8 (WorldView-3) or Q4 (GaoFen-2, QuickBird).
PAPER = {
    "WV3": {"SAM": 2.843, "ERGAS": 2.106, "Q2n": 0.916, "SCC": 0.987},
    "GF2": {"SAM": 0.669, "ERGAS": 0.604, "Q2n": 0.984, "SCC": 0.992},
    "QB": {"SAM": 4.464, "ERGAS": 3.632, "Q2n": 0.935, "SCC": 0.983},
}
PAPER_SOURCE = "SSDiff (Zhong et al., NeurIPS 2024), reduced resolution, 20 test images of 256 x 256"
RELEASE_PATCH, RELEASE_STRIDE = 64, 16
DEFAULT_SAMPLER = "consistent"
Q_BLOCK = 32


# ---------------------------------------------------------------------------------------------------------------
# The release's patch merge
# ---------------------------------------------------------------------------------------------------------------

def patch_origins(length: int, size: int = RELEASE_PATCH, stride: int = RELEASE_STRIDE) -> list[int]:
    """Patch starts along one axis: every `stride`, plus one flush with the far edge when the length is not on the
    stride grid, so the last pixels are covered too."""
    if length < size:
        raise BadInput(f"an image of {length} pixels is smaller than the {size}-pixel patch")
    starts = list(range(0, length - size + 1, stride))
    if starts[-1] != length - size:
        starts.append(length - size)
    return starts


def merge_patches(patches: np.ndarray, origins: list[tuple[int, int]], height: int, width: int) -> np.ndarray:
    """Average of overlapping patches (N, B, s, s) placed at `origins` (row, col) on an (B, height, width) image."""
    bands, size = patches.shape[1], patches.shape[-1]
    total = np.zeros((bands, height, width), np.float64)
    count = np.zeros((height, width), np.float64)
    for patch, (row, col) in zip(patches, origins):
        total[:, row:row + size, col:col + size] += patch
        count[row:row + size, col:col + size] += 1
    if not count.all():
        raise BadInput(f"the patches leave {int((count == 0).sum())} of {height}x{width} pixels uncovered")
    return (total / count).astype(np.float32)


def sharpen_release(model, pan: np.ndarray, ms_lr: np.ndarray, lms: np.ndarray | None = None, *, steps: int,
                    seed: int, full_scale: float, batch_size: int, sampler: str = DEFAULT_SAMPLER
                    ) -> tuple[np.ndarray, int]:
    """One image by the release's protocol: (sharpened (B, H, W) float32 DN, number of patches sampled). `lms`:
    the upsampled MS (B, H, W) to cut each patch's from (None: the model upsamples each patch's MS)."""
    from ssdiff_model.science.equalization import pan_equalization
    from tiling import window_noise

    ratio, bands = model.ratio, ms_lr.shape[0]
    height, width = pan.shape
    origins = [(row, col) for row in patch_origins(height) for col in patch_origins(width)]
    # A checkpoint that equalizes takes the statistics of the whole image, as the pipeline takes the whole scene's.
    equalization = pan_equalization(pan, ms_lr, ratio) if model.equalizes else None
    small = RELEASE_PATCH // ratio
    outputs = []
    for start in range(0, len(origins), batch_size):
        batch = origins[start:start + batch_size]
        pans = np.stack([pan[r:r + RELEASE_PATCH, c:c + RELEASE_PATCH] for r, c in batch])
        mss = np.stack([ms_lr[:, r // ratio:r // ratio + small, c // ratio:c // ratio + small] for r, c in batch])
        noise = np.stack([window_noise(seed, bands, r, c, RELEASE_PATCH, RELEASE_PATCH) for r, c in batch])
        lmss = None if lms is None else np.stack([lms[:, r:r + RELEASE_PATCH, c:c + RELEASE_PATCH] for r, c in batch])
        outputs.append(model.sharpen_tiles(pans, mss, noise, steps=steps, full_scale=full_scale,
                                           equalization=equalization, sampler=sampler, lms=lmss))
    return merge_patches(np.concatenate(outputs), origins, height, width), len(origins)


# ---------------------------------------------------------------------------------------------------------------
# The table
# ---------------------------------------------------------------------------------------------------------------

def bits_for(full_scale: float, file_bits: int | None) -> int:
    """The radiometric resolution the indexes are told: the one whose top is the full scale (2047 -> 11), else the
    file's. (reduced_resolution only checks it: the community runs indexes_evaluation without thresholding.)"""
    bits = math.log2(float(full_scale) + 1)
    if bits.is_integer() and 1 <= bits <= 16:
        return int(bits)
    if file_bits:
        return int(file_bits)
    raise BadInput(f"full scale {full_scale:g} DN is not 2^bits - 1: pass --bits")


def load_test_file(path: Path, sensor: str | None):
    from ssdiff_model.data.matfiles import read_pancollection

    batch = read_pancollection(path, sensor=sensor)
    if batch.gt is None:
        raise BadInput(f"{path}: no 'gt' (reference) in this file: the reduced-resolution table needs one "
                         f"(a test_*_multiExm1.h5 file, not an OrigScale one)")
    return batch


def evaluate(args: argparse.Namespace) -> dict[str, Any]:
    from ssdiff_model.inference.pansharpener import Pansharpener
    from ssdiff_model.science.metrics import reduced_resolution
    from tiling import sharpen_array

    batch = load_test_file(args.test, args.sensor)
    model = Pansharpener.from_checkpoint(args.checkpoint, device=args.device)
    if batch.ms_lr.shape[1] != model.bands or batch.ratio != model.ratio:
        raise BadInput(f"{args.test}: {batch.ms_lr.shape[1]} MS bands at ratio {batch.ratio}, but checkpoint "
                         f"{args.checkpoint} expects {model.bands} bands at ratio {model.ratio}")
    if args.protocol == "release" and min(batch.pan.shape[1:]) < RELEASE_PATCH:
        raise BadInput(f"{args.test}: images of {batch.pan.shape[1]}x{batch.pan.shape[2]} pixels are smaller than "
                         f"the release's {RELEASE_PATCH}x{RELEASE_PATCH} patch: use --protocol tiled")
    full_scale = float(args.full_scale or model.full_scale)
    bits = args.bits or bits_for(full_scale, batch.bits)
    warnings = []
    if not args.full_scale and batch.full_scale != full_scale:
        warnings.append(f"{args.test}: the file's sensor ({batch.sensor}) means a full scale of {batch.full_scale:g} "
                        f"DN, but the checkpoint's {full_scale:g} is used: pass --full-scale to change it")
    count = len(batch) if args.limit is None else min(args.limit, len(batch))
    settings = {"cut_bounds": int(args.cut_bounds), "dim_cut": 21 if args.cut_bounds else None, "block": Q_BLOCK,
                "bits": bits, "ratio": batch.ratio, "thvalues": 0}
    # The release feeds each patch the file's lms; a checkpoint that equalizes bands upsamples the equalized MS itself.
    file_lms = args.protocol == "release" and batch.lms is not None and not model.equalizes_bands
    rows, fused_images = [], []
    started = time.perf_counter()
    for index in range(count):
        pan, ms_lr, gt = batch.pan[index], batch.ms_lr[index], batch.gt[index]
        image_start = time.perf_counter()
        if args.protocol == "release":
            fused, patches = sharpen_release(model, pan, ms_lr, batch.lms[index] if file_lms else None,
                                             steps=args.steps, seed=args.seed, full_scale=full_scale,
                                             batch_size=args.batch_size, sampler=args.sampler)
        else:
            fused = sharpen_array(model, pan, ms_lr, tile=args.tile, halo=args.halo, steps=args.steps,
                                  seed=args.seed, batch_size=args.batch_size, full_scale=full_scale,
                                  sampler=args.sampler)
        seconds = time.perf_counter() - image_start
        scores = reduced_resolution(fused, gt, batch.ratio, bits, cut_bounds=settings["cut_bounds"], block=Q_BLOCK)
        rows.append({"image": index, **{k: float(scores[k]) for k in INDEXES}, "seconds": round(seconds, 3)})
        fused_images.append(fused)
        print(f"image {index + 1}/{count}: " + " ".join(f"{k}={scores[k]:.4f}" for k in INDEXES), file=sys.stderr,
              flush=True)
    if args.save_fused:
        save_fused(args.save_fused, np.stack(fused_images), args)

    mean = {k: float(np.mean([r[k] for r in rows])) for k in INDEXES}
    paper = PAPER.get(str(batch.sensor))
    protocol = ({"name": "release", "patch": RELEASE_PATCH, "stride": RELEASE_STRIDE, "patches_per_image": patches,
                 "merge": "mean of the overlapping patches"} if args.protocol == "release" else
                {"name": "tiled", "tile": args.tile, "halo": args.halo})
    protocol["lms"] = "the file's" if file_lms else "the MS upsampled by the model (interp23tap)"
    return {
        "test_file": str(args.test), "sensor": batch.sensor, "images": count, "images_in_file": len(batch),
        "image_size": list(batch.pan.shape[1:]), "bands": int(batch.ms_lr.shape[1]),
        "checkpoint": str(args.checkpoint), "checkpoint_hash": model.checkpoint_hash,
        "protocol": protocol, "sampler": args.sampler, "steps": args.steps, "seed": args.seed,
        "full_scale": full_scale, "index_settings": settings,
        "per_image": rows, "mean": mean,
        # MATLAB's std (N - 1), as the community's analysis reports mean and std
        "std": {k: float(np.std([r[k] for r in rows], ddof=1 if count > 1 else 0)) for k in INDEXES},
        "paper": {**paper, "source": PAPER_SOURCE} if paper else None,
        "ours_minus_paper": {k: mean[k] - v for k, v in paper.items()} if paper else None,
        "seconds": round(time.perf_counter() - started, 2), "device": str(model.device),
        "saved_fused": str(args.save_fused) if args.save_fused else None, "warnings": warnings,
    }


def save_fused(path: Path, fused: np.ndarray, args: argparse.Namespace) -> None:
    """The sharpened images as `sr` (N x C x H x W, float32 DN), the layout of the test file, with the settings."""
    import h5py

    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        f.create_dataset("sr", data=fused)
        f.attrs.update({"test_file": str(args.test), "checkpoint": str(args.checkpoint), "protocol": args.protocol,
                        "steps": args.steps, "seed": args.seed, "sampler": args.sampler})


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROGRAM, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--test", type=Path, required=True, help="PanCollection test file (e.g. test_wv3_multiExm1.h5)")
    parser.add_argument("--checkpoint", required=True, help="checkpoint file, or the name of a shipped checkpoint")
    parser.add_argument("--steps", type=int, default=10, help="DDIM steps (default 10, the release's)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the position-keyed starting noise")
    parser.add_argument("--protocol", choices=("tiled", "release"), default="tiled",
                        help="tiled: the pipeline's tiles and halos; release: 64x64 patches at stride 16, averaged")
    parser.add_argument("--sampler", choices=("consistent", "release"), default=DEFAULT_SAMPLER,
                        help="DDIM variant: consistent (residual space, true timesteps) or release (the authors')")
    parser.add_argument("--full-scale", type=float,
                        help="DN the network sees as 1.0 (2047 for WV3/QB, 1023 for GF2; default: the checkpoint's)")
    parser.add_argument("--bits", type=int, help="radiometric resolution given to the indexes (default: from the "
                                                 "full scale)")
    parser.add_argument("--sensor", help="sensor of the file (default: from its name, e.g. test_wv3_... -> WV3)")
    parser.add_argument("--cut-bounds", action="store_true",
                        help="drop the toolbox's 21-pixel frame before scoring (the PanCollection analysis does not)")
    parser.add_argument("--tile", type=int, default=64, help="tile side of the tiled protocol (default 64)")
    parser.add_argument("--halo", type=int, default=16, help="halo of the tiled protocol (default 16)")
    parser.add_argument("--batch-size", type=int, default=32, help="tiles or patches per network call (default 32)")
    parser.add_argument("--limit", type=int, help="only the first N images (a quick look)")
    parser.add_argument("--device", help="torch device (default: cuda when there is one)")
    parser.add_argument("--out", type=Path, help="also write the JSON object to this file")
    parser.add_argument("--save-fused", type=Path, help="write the sharpened images (key 'sr') to this .h5 file")
    return parser


def main(argv=None) -> int:
    from infra.failures import BAD_INPUT, report

    args = build_parser().parse_args(argv)
    try:
        if not args.test.is_file():
            raise FileNotFoundError(f"{args.test}: no such test file")
        for name in ("steps", "batch_size", "tile", "limit"):
            if getattr(args, name) is not None and getattr(args, name) < 1:
                raise BadInput(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
        table = evaluate(args)
    except (*BAD_INPUT, OSError) as err:
        return report(PROGRAM, err)
    text = json.dumps(table, indent=2)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
