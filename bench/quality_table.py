"""Quality of every method on every reduced-resolution scene of ../shared/data, as a Markdown table and a CSV.

Reduced-resolution scenes are the sets that ship a ground truth, plus (with --wald, the default) every
full-resolution pair degraded once more with Wald's protocol so its original MS becomes the reference. Each method
gets the reduced-resolution indexes against the reference (SAM, ERGAS, Q2n, SCC; no border cut) and the
full-resolution ones on its own input pair (D_lambda, D_s, HQNR), as the toolbox's tables do, and its seconds per scene.

    python bench/quality_table.py [--checkpoint NAME_OR_PATH] [--steps 10] [--out bench/results/quality]

With --checkpoint, SSDiff is added as a method (sampled tile by tile with the same tiling the pipeline uses).
Prints the Markdown table and one JSON line with the CSV's path; exits 2 when ../shared/data is absent.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import numpy as np

from ssdiff_model import baselines
from ssdiff_model.metrics import full_resolution, reduced_resolution
from ssdiff_model.readers import PansharpeningPair, iter_shared_sets
from ssdiff_model.wald import reduced_resolution_pair

ROOT = Path(__file__).resolve().parents[1]
CLASSICAL = {"EXP": baselines.exp, "BT-H": baselines.bt_h, "MTF-GLP-FS": baselines.mtf_glp_fs,
             "BDSD-PC": baselines.bdsd_pc}
COLUMNS = ["SAM", "ERGAS", "Q2n", "SCC", "D_lambda", "D_s", "HQNR", "seconds"]
# The toolbox's Q2n works on uint16 digital numbers: data stored scaled to [0, 1] is put on an 11-bit scale first.
UNIT_SCALE_BITS = 11
BLOCK = 32


def reduced_resolution_scenes(data_root: Path, wald: bool, max_per_dataset: int):
    """(scene id, pair with a reference `gt`, bits) for every reduced-resolution scene."""
    taken: dict[str, int] = {}
    for scene in iter_shared_sets(data_root):
        if taken.get(scene.dataset, 0) >= max_per_dataset or not (scene.has_gt or wald):
            continue
        taken[scene.dataset] = taken.get(scene.dataset, 0) + 1
        for index, pair in enumerate(scene.pairs(data_root)):
            if index >= max_per_dataset:
                break
            rr = pair if pair.gt is not None else reduced_resolution_pair(pair)
            label = scene.id if pair.gt is not None else f"{scene.id} (Wald)"
            if index:
                label += f" #{index}"
            yield label, *_in_digital_numbers(_crop_to_blocks(rr))


def _crop_to_blocks(pair: PansharpeningPair) -> PansharpeningPair:
    """Crop to whole 32-pixel blocks: the full-resolution indexes (D_s.m) refuse partial blocks."""
    h, w = (n - n % (BLOCK * pair.ratio) if n >= BLOCK * pair.ratio else n - n % BLOCK for n in pair.pan.shape)
    if (h, w) == pair.pan.shape:
        return pair
    r = pair.ratio
    return PansharpeningPair(pan=pair.pan[:h, :w], ms_lr=pair.ms_lr[:, : h // r, : w // r], gt=pair.gt[:, :h, :w],
                             ratio=r, full_scale=pair.full_scale, bits=pair.bits, sensor=pair.sensor,
                             band_names=pair.band_names, source=pair.source)


def _in_digital_numbers(pair: PansharpeningPair) -> tuple[PansharpeningPair, int]:
    if pair.full_scale > 1:
        return pair, int(pair.bits or np.ceil(np.log2(pair.full_scale + 1)))
    scale = 2.0 ** UNIT_SCALE_BITS - 1
    scaled = PansharpeningPair(pan=pair.pan * scale, ms_lr=pair.ms_lr * scale, gt=pair.gt * scale, ratio=pair.ratio,
                               full_scale=scale, bits=UNIT_SCALE_BITS, sensor=pair.sensor,
                               band_names=pair.band_names, source=pair.source)
    return scaled, UNIT_SCALE_BITS


def ssdiff_method(checkpoint: str, steps: int, tile: int, halo: int):
    from ssdiff_model.pansharpener import Pansharpener
    from tiling import sharpen_array

    model = Pansharpener.from_checkpoint(checkpoint)

    def run(pan, ms_lr, ratio, sensor):
        return sharpen_array(model, pan, ms_lr, tile=tile, halo=halo, steps=steps, seed=0)

    return run


def evaluate(method, pair: PansharpeningPair, bits: int) -> dict[str, float]:
    sensor = pair.sensor or "none"
    start = time.perf_counter()
    fused = np.asarray(method(pair.pan, pair.ms_lr, pair.ratio, sensor), dtype=np.float64)
    seconds = time.perf_counter() - start
    row = reduced_resolution(fused, pair.gt, pair.ratio, bits, cut_bounds=0)
    row.update(full_resolution(fused, pair.ms_lr, pair.pan, pair.ratio, sensor))
    row["seconds"] = seconds
    return row


def markdown(rows: list[dict]) -> str:
    head = "| scene | method | " + " | ".join(COLUMNS) + " |"
    rule = "|---|---|" + "---:|" * len(COLUMNS)
    body = ["| {scene} | {method} | ".format(**r) + " | ".join(f"{r[c]:.4f}" for c in COLUMNS) + " |" for r in rows]
    return "\n".join([head, rule, *body])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--checkpoint", help="add SSDiff with this checkpoint (shipped name or path)")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--tile", type=int, default=64)
    parser.add_argument("--halo", type=int, default=16)
    parser.add_argument("--no-wald", dest="wald", action="store_false",
                        help="only the sets that ship a ground truth")
    parser.add_argument("--max-per-dataset", type=int, default=3,
                        help="scenes (or examples of a PanCollection file) taken per dataset")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "quality")
    args = parser.parse_args(argv)
    if not args.data.is_dir():
        print(f"no shared data at {args.data}: nothing to evaluate", file=sys.stderr)
        return 2

    methods = dict(CLASSICAL)
    if args.checkpoint:
        methods["SSDiff"] = ssdiff_method(args.checkpoint, args.steps, args.tile, args.halo)
    rows = []
    for label, pair, bits in reduced_resolution_scenes(args.data, args.wald, args.max_per_dataset):
        for name, method in methods.items():
            rows.append({"scene": label, "method": name, **evaluate(method, pair, bits)})
            print(f"{label:45s} {name:11s} " + " ".join(f"{c}={rows[-1][c]:.4f}" for c in COLUMNS[:4]),
                  file=sys.stderr, flush=True)

    args.out.parent.mkdir(parents=True, exist_ok=True)
    csv_path = args.out.with_suffix(".csv")
    with csv_path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["scene", "method", *COLUMNS], extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    table = markdown(rows)
    args.out.with_suffix(".md").write_text(table + "\n")
    print(table)
    print(json.dumps({"csv": str(csv_path), "markdown": str(args.out.with_suffix(".md")), "rows": len(rows)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
