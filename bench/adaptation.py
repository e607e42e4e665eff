"""Target-adaptive L-BAF: zero-shot against adapted SSDiff on the held-out scenes of a checkpoint, with the time
adaptation costs next to the time sharpening costs. Prints one JSON object.

    python bench/adaptation.py --checkpoint ssdiff-4band-r4 [--iterations 60] [--lr 1e-4] [--every 10] [--halo 8]
    python bench/adaptation.py --checkpoint ssdiff-4band-r4 --trained-on   # scenes the checkpoint trained on

Each scene is the reduced-resolution pair the quality table scores (Wald's protocol; its MS is the reference);
adaptation sees only that pair (and degrades it once more to train on), never the reference. Indexes: SAM, ERGAS,
Q2n with the toolbox's settings, no border cut, as bench/quality_table.py.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from quality_table import CLASSICAL, COMPARED, ROOT, _crop_to_blocks, _in_digital_numbers, validation_scenes

from ssdiff_model.inference.adaptation import AdaptationConfig
from ssdiff_model.science.metrics import reduced_resolution

INDEXES = ("SAM", "ERGAS", "Q2n")


def trained_scenes(checkpoint: str, data_root: Path, limit: int):
    """(label, pair, bits) of the first `limit` training scenes of `checkpoint`'s store."""
    from ssdiff_model.data.catalogue import family_sources
    from ssdiff_model.data.pair import PansharpeningBatch
    from ssdiff_model.model.checkpoint import load_checkpoint
    from ssdiff_model.science.wald import reduced_resolution_pair

    store = load_checkpoint(checkpoint).training.get("store") or {}
    trained = [s["id"] for s in store.get("sources", []) if s["split"] == "train" and s["patches"]]
    taken = 0
    for source in family_sources(store["family"], data_root):
        if source.id not in trained or taken >= limit:
            continue
        data = source.load()
        pair = data.pair(0) if isinstance(data, PansharpeningBatch) else data
        rr = pair if pair.gt is not None else reduced_resolution_pair(pair)
        taken += 1
        yield source.id, *_in_digital_numbers(_crop_to_blocks(rr))


def scores(fused, pair, bits) -> dict[str, float]:
    row = reduced_resolution(np.asarray(fused, dtype=np.float64), pair.gt, pair.ratio, bits, cut_bounds=0)
    return {k: round(float(row[k]), 4) for k in INDEXES}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--iterations", type=int, default=60)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--every", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--held-out", type=float, default=AdaptationConfig.held_out,
                        help="share of the scene kept out of training to check the adaptation (0: unchecked)")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--tile", type=int, default=64)
    parser.add_argument("--halo", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--trained-on", action="store_true", help="score scenes the checkpoint trained on instead")
    parser.add_argument("--max-scenes", type=int, default=3)
    parser.add_argument("--no-classical", action="store_true")
    args = parser.parse_args(argv)
    if not args.data.is_dir():
        print(f"no shared data at {args.data}: nothing to evaluate", file=sys.stderr)
        return 2

    from ssdiff_model.inference.pansharpener import Pansharpener
    from tiling import sharpen_array

    base = Pansharpener.from_checkpoint(args.checkpoint, device="cpu")
    scenes = (trained_scenes(args.checkpoint, args.data, args.max_scenes) if args.trained_on
              else validation_scenes(args.checkpoint, args.data, 1))
    rows = []
    for label, pair, bits in scenes:
        row = {"scene": label, "pan_px": list(pair.pan.shape)}
        if not args.no_classical:
            for name in COMPARED:
                row[name] = scores(CLASSICAL[name](pair.pan, pair.ms_lr, pair.ratio, pair.sensor or "none"), pair,
                                   bits)
        start = time.perf_counter()
        zero = sharpen_array(base, pair.pan, pair.ms_lr, tile=args.tile, halo=args.halo, steps=args.steps,
                             seed=args.seed, full_scale=pair.full_scale)
        row["sharpen_seconds"] = round(time.perf_counter() - start, 1)
        row["zero_shot"] = scores(zero, pair, bits)
        start = time.perf_counter()
        adapted = base.adapted(pair.pan, pair.ms_lr, iterations=args.iterations, seed=args.seed,
                               full_scale=pair.full_scale, sensor=pair.sensor, lr=args.lr, every=args.every,
                               batch_size=args.batch_size, held_out=args.held_out)
        row["adapt_seconds"] = round(time.perf_counter() - start, 1)
        record = adapted.checkpoint.training["adaptation"]
        row["adapt_examples"] = record.get("examples")
        row["adapt_held_out_examples"] = record.get("held_out_examples")
        row["adapt_kept_iteration"] = record.get("kept_iteration")
        row["adapt_declined"] = record.get("declined")
        row["adapt_checks"] = record.get("checks")
        row["adapted"] = scores(sharpen_array(adapted, pair.pan, pair.ms_lr, tile=args.tile, halo=args.halo,
                                              steps=args.steps, seed=args.seed, full_scale=pair.full_scale), pair,
                                bits)
        if not args.no_classical:
            for method in ("zero_shot", "adapted"):
                row[f"{method}_beats_classical"] = {
                    k: all((row[method][k] > row[c][k]) if k == "Q2n" else (row[method][k] < row[c][k])
                           for c in COMPARED) for k in INDEXES}
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    means = {m: {k: round(float(np.mean([r[m][k] for r in rows])), 4) for k in INDEXES}
             for m in ("zero_shot", "adapted", *(() if args.no_classical else COMPARED))}
    print(json.dumps({"checkpoint": args.checkpoint, "trained_on": args.trained_on,
                      "settings": {k: getattr(args, k) for k in ("iterations", "lr", "every", "batch_size",
                                                                 "held_out", "steps", "tile", "halo", "seed")},
                      "scenes": rows, "means": means}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
