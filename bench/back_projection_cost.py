"""What back-projection onto the MS adds to sharpening a scene. Prints one JSON object.

    python bench/back_projection_cost.py [--checkpoint ssdiff-8band-r4] [--iterations 5] [--crop 512] [--repeats 3]

The checkpoint's first held-out scene (bench/quality_table.py's ``validation_scenes``, Wald's protocol), its central
``--crop`` PAN pixels, is sharpened as the pipeline does (``tiling.sharpen_array``, the checkpoint's steps and halo)
without and with ``--iterations`` back-projections, alternately, ``--repeats`` times: medians of the wall time and
their ratio, measured in one run on the same machine. Exits 2 when ../shared/data is absent.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))   # run as a script: its sibling bench modules

from quality_table import ROOT, validation_scenes  # noqa: E402
from steps_halo import cropped  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="ssdiff-8band-r4")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--crop", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    if not args.data.is_dir():
        print(f"no shared data at {args.data}: nothing to measure", file=sys.stderr)
        return 2

    from ssdiff_model.inference.pansharpener import Pansharpener
    from tiling import sharpen_array

    model = Pansharpener.from_checkpoint(args.checkpoint, device="cpu")
    label, pair, _ = next(validation_scenes(args.checkpoint, args.data, 1))
    pair = cropped(pair, args.crop)
    seconds: dict[int, list[float]] = {0: [], args.iterations: []}
    for _ in range(args.repeats):
        for iterations in seconds:
            start = time.perf_counter()
            sharpen_array(model, pair.pan, pair.ms_lr, full_scale=pair.full_scale, back_projection=iterations,
                          sensor=pair.sensor, ms_degradation=pair.ms_degradation)
            seconds[iterations].append(time.perf_counter() - start)
    medians = {k: statistics.median(v) for k, v in seconds.items()}
    print(json.dumps({"checkpoint": args.checkpoint, "scene": label, "pan_px": list(pair.pan.shape),
                      "seconds": {str(k): [round(s, 2) for s in v] for k, v in seconds.items()},
                      "median_seconds": {str(k): round(v, 2) for k, v in medians.items()},
                      "ratio": round(medians[args.iterations] / medians[0], 3)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
