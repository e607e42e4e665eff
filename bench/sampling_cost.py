"""What sampling settings cost when a scene is sharpened: back-projection onto the MS, the self-ensemble. Prints one
JSON object.

    python bench/sampling_cost.py [--checkpoint ssdiff-8band-r4] [--setting back_projection=0 ...] [--crop 512]
                                  [--repeats 3]

The checkpoint's first held-out scene (bench/quality_table.py's ``validation_scenes``, Wald's protocol), its central
``--crop`` PAN pixels, is sharpened as the pipeline does (``tiling.sharpen_array``, the checkpoint's steps and halo)
with each ``--setting`` (``name=value,...`` of ``sharpen_array``'s ``back_projection`` and ``ensemble``; default:
back-projection 0, then 5), in turn, ``--repeats`` times: medians of the wall time and their ratios to the first
setting's, measured in one run on the same machine. Exits 2 when ../shared/data is absent.
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

KNOBS = ("back_projection", "ensemble")


def setting(text: str) -> dict[str, int]:
    """``"back_projection=5,ensemble=4"`` -> ``{"back_projection": 5, "ensemble": 4}``."""
    values = dict(part.split("=", 1) for part in text.split(",") if part)
    if not values or set(values) - set(KNOBS):
        raise argparse.ArgumentTypeError(f"{text!r}: expected name=value pairs of {KNOBS}")
    return {k: int(v) for k, v in values.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="ssdiff-8band-r4")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--setting", action="append", type=setting,
                        help="sampling settings to time, name=value,... (repeatable; the first is the baseline)")
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
    settings = args.setting or [{"back_projection": 0}, {"back_projection": 5}]
    names = [",".join(f"{k}={v}" for k, v in s.items()) for s in settings]
    seconds: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(args.repeats):
        for name, chosen in zip(names, settings):
            start = time.perf_counter()
            sharpen_array(model, pair.pan, pair.ms_lr, full_scale=pair.full_scale, sensor=pair.sensor,
                          ms_degradation=pair.ms_degradation, **chosen)
            seconds[name].append(time.perf_counter() - start)
    medians = {k: statistics.median(v) for k, v in seconds.items()}
    print(json.dumps({"checkpoint": args.checkpoint, "scene": label, "pan_px": list(pair.pan.shape),
                      "seconds": {k: [round(s, 2) for s in v] for k, v in seconds.items()},
                      "median_seconds": {k: round(v, 2) for k, v in medians.items()},
                      "ratio_to_first": {k: round(v / medians[names[0]], 3) for k, v in medians.items()}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
