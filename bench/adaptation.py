"""Target-adaptive L-BAF: zero-shot against adapted SSDiff on the held-out scenes of a checkpoint, with the time
adaptation costs next to the time sharpening costs. Prints one JSON object.

    python bench/adaptation.py --checkpoint ssdiff-4band-r4 [--iterations 12] [--lr 3e-4] [--every 4] [--halo 8]
    python bench/adaptation.py --checkpoint ssdiff-4band-r4 --trained-on   # scenes the checkpoint trained on
    python bench/adaptation.py --checkpoint ssdiff-4band-r4 --full-resolution [--crop 512]

By default each scene is the reduced-resolution pair the quality table scores (Wald's protocol; its MS is the
reference); adaptation sees only that pair (and degrades it once more to train on), never the reference. Indexes:
SAM, ERGAS, Q2n with the toolbox's settings, no border cut, as bench/quality_table.py. There the adaptation's own
reference is the scene's MS after Wald's filters, a synthetic image, where a user's adaptation learns from the real
MS: --full-resolution scores the real scenes instead (their central --crop PAN pixels), as a user runs it, with the
toolbox's no-reference indexes D_lambda, D_s and HQNR.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np
from quality_table import CLASSICAL, COMPARED, ROOT, _crop_to_blocks, _in_digital_numbers

from ssdiff_model.inference.adaptation import AdaptationConfig
from ssdiff_model.science.metrics import full_resolution, reduced_resolution

INDEXES = {False: ("SAM", "ERGAS", "Q2n"), True: ("D_lambda", "D_s", "HQNR")}   # by full resolution or not
HIGHER_IS_BETTER = ("Q2n", "HQNR")


def scenes(checkpoint: str, data_root: Path, split: str, limit: int, full: bool, crop: int):
    """(label, pair, bits) of the first `limit` scenes of `split` ("train" or "validation") of `checkpoint`'s store,
    loaded as the store loaded them: Wald's reduced-resolution pair, or with `full` the scene itself, its central
    `crop` PAN pixels."""
    from ssdiff_model.data.catalogue import family_sources
    from ssdiff_model.data.pair import PansharpeningBatch
    from ssdiff_model.model.checkpoint import load_checkpoint
    from ssdiff_model.science.resample import central_window
    from ssdiff_model.science.wald import reduced_resolution_pair

    store = load_checkpoint(checkpoint).training.get("store") or {}
    wanted = [s["id"] for s in store.get("sources", [])
              if s["split"] == split and (split != "train" or s["patches"])]
    if not wanted:
        raise ValueError(f"{checkpoint}: records no {split} scenes of its training store")
    taken = 0
    for source in family_sources(store["family"], data_root):
        if source.id not in wanted or taken >= limit:
            continue
        data = source.load()
        pair = data.pair(0) if isinstance(data, PansharpeningBatch) else data   # a set's first pair
        label = source.id
        if full:   # the scene itself (a reduced-resolution set's inputs), without any reference
            pan, ms = central_window(pair.pan, pair.ms_lr, pair.ratio, crop // pair.ratio)
            pair = dataclasses.replace(pair, pan=pan, ms_lr=ms, gt=None, lms=None)
        elif pair.gt is None:
            pair, label = reduced_resolution_pair(pair), label + " (Wald)"
        taken += 1
        yield label, *_in_digital_numbers(_crop_to_blocks(pair))


def scores(fused, pair, bits, full: bool) -> dict[str, float]:
    fused = np.asarray(fused, dtype=np.float64)
    row = (full_resolution(fused, pair.ms_lr, pair.pan, pair.ratio, pair.sensor or "none") if full
           else reduced_resolution(fused, pair.gt, pair.ratio, bits, cut_bounds=0))
    return {k: round(float(row[k]), 4) for k in INDEXES[full]}


def beats(row: dict, method: str, full: bool) -> dict[str, bool]:
    """Does `method` beat every classical method, index by index."""
    return {k: all((row[method][k] > row[c][k]) if k in HIGHER_IS_BETTER else (row[method][k] < row[c][k])
                   for c in COMPARED) for k in INDEXES[full]}


def main(argv=None) -> int:
    defaults = AdaptationConfig()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--iterations", type=int, default=defaults.iterations)
    parser.add_argument("--lr", type=float, default=defaults.lr)
    parser.add_argument("--every", type=int, default=defaults.every)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--min-gain", type=float, default=defaults.min_gain,
                        help="relative SAM and ERGAS gain a check needs for its weights to be kept")
    parser.add_argument("--held-out", type=float, default=defaults.held_out,
                        help="share of the scene kept out of training to check the adaptation (0: unchecked)")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--tile", type=int, default=64)
    parser.add_argument("--halo", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--back-projection", type=int, default=None, metavar="N",
                        help="iterations of back-projection onto the MS (default: the checkpoint's recommendation)")
    parser.add_argument("--trained-on", action="store_true", help="score scenes the checkpoint trained on instead")
    parser.add_argument("--full-resolution", action="store_true",
                        help="the scenes themselves (no reference): D_lambda, D_s, HQNR")
    parser.add_argument("--crop", type=int, default=512, help="with --full-resolution: central PAN pixels")
    parser.add_argument("--max-scenes", type=int, default=8)
    parser.add_argument("--no-classical", action="store_true")
    args = parser.parse_args(argv)
    if not args.data.is_dir():
        print(f"no shared data at {args.data}: nothing to evaluate", file=sys.stderr)
        return 2

    from ssdiff_model.inference.pansharpener import Pansharpener
    from ssdiff_model.model.sampling import resolve_sampling
    from tiling import sharpen_array

    full = args.full_resolution
    base = Pansharpener.from_checkpoint(args.checkpoint, device="cpu")
    rows = []
    for label, pair, bits in scenes(args.checkpoint, args.data, "train" if args.trained_on else "validation",
                                    args.max_scenes, full, args.crop):
        row = {"scene": label, "pan_px": list(pair.pan.shape)}
        if not args.no_classical:
            for name in COMPARED:
                row[name] = scores(CLASSICAL[name](pair.pan, pair.ms_lr, pair.ratio, pair.sensor or "none"), pair,
                                   bits, full)
        start = time.perf_counter()
        sampling = dict(tile=args.tile, halo=args.halo, steps=args.steps, seed=args.seed, full_scale=pair.full_scale,
                        back_projection=args.back_projection, sensor=pair.sensor,
                        ms_degradation=pair.ms_degradation)
        zero = sharpen_array(base, pair.pan, pair.ms_lr, **sampling)
        row["sharpen_seconds"] = round(time.perf_counter() - start, 1)
        row["zero_shot"] = scores(zero, pair, bits, full)
        start = time.perf_counter()
        adapted = base.adapted(pair.pan, pair.ms_lr, iterations=args.iterations, seed=args.seed,
                               full_scale=pair.full_scale, sensor=pair.sensor, lr=args.lr, every=args.every,
                               batch_size=args.batch_size, held_out=args.held_out, min_gain=args.min_gain)
        row["adapt_seconds"] = round(time.perf_counter() - start, 1)
        record = adapted.checkpoint.training["adaptation"]
        row.update({f"adapt_{key}": record.get(key)
                    for key in ("examples", "held_out_examples", "kept_iteration", "declined", "checks")})
        row["adapted"] = scores(sharpen_array(adapted, pair.pan, pair.ms_lr, **sampling), pair, bits, full)
        if not args.no_classical:
            for method in ("zero_shot", "adapted"):
                row[f"{method}_beats_classical"] = beats(row, method, full)
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    means = {m: {k: round(float(np.mean([r[m][k] for r in rows])), 4) for k in INDEXES[full]}
             for m in ("zero_shot", "adapted", *(() if args.no_classical else COMPARED))}
    print(json.dumps({"checkpoint": args.checkpoint, "trained_on": args.trained_on, "full_resolution": full,
                      "settings": {k: getattr(args, k) for k in ("iterations", "lr", "every", "batch_size",
                                                                 "held_out", "min_gain", "steps", "tile", "halo",
                                                                 "seed", "crop")},
                      "back_projection": resolve_sampling(base.checkpoint,
                                                          back_projection=args.back_projection)[0]["back_projection"],
                      "scenes": rows, "means": means}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
