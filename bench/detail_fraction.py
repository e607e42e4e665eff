"""How much fine detail each scene's MS holds next to its PAN at the same scale: a check that a Wald reference is
as sharp as a sensor's own MS (and not, say, an MS a provider resampled and we decimated back).

For an image X at the native MS scale, the detail fraction is std(X - interp23tap(decimate(MTF(X)))) / std(X): the
share of X that one more step of Wald's protocol takes away, which is what pansharpening must put back. It is taken
per MS band and for the PAN brought to the MS scale the same way (the sensor's PAN MTF, decimation), 8 pixels of
border left out; the ratio MS / PAN is about 1 for a sensor's own MS and lower for a blurred one.

    python bench/detail_fraction.py [--family 4band-r4] [--data ../shared/data]

Prints a table and one JSON line; exits 2 when ../shared/data is absent.
"""
from __future__ import annotations

import json
import sys

import numpy as np
from family_scenes import family_arguments, family_pairs

from ssdiff_model.science.resample import decimate, interp23tap, mtf_filter
from ssdiff_model.science.wald import reduced_resolution_example

BORDER = 8


def detail_fraction(image: np.ndarray, sensor: str, ratio: int) -> np.ndarray:
    """Per band of `image` (B, H, W): std of what a further Wald step removes, over the band's std."""
    step = ratio * ratio
    image = image[:, : image.shape[1] // step * step, : image.shape[2] // step * step].astype(np.float64)
    detail = image - interp23tap(decimate(mtf_filter(image, sensor, ratio), ratio), ratio)
    core = (slice(None), slice(BORDER, -BORDER), slice(BORDER, -BORDER))
    return detail[core].std(axis=(1, 2)) / image[core].std(axis=(1, 2))


def scene_fractions(pair, sensor: str) -> tuple[np.ndarray, float]:
    """(MS band fractions, PAN fraction) at the native MS scale. A shipped reduced-resolution pair's reference is
    its native MS and its PAN is already at that scale; a full-resolution pair's PAN is brought there by Wald's
    protocol."""
    if pair.gt is not None:
        ms, pan = pair.gt, pair.pan
    else:
        pan, _, ms = reduced_resolution_example(pair)
    return detail_fraction(ms, sensor, pair.ratio), float(detail_fraction(pan[None], sensor, pair.ratio)[0])


def main(argv=None) -> int:
    args = family_arguments(__doc__, argv)
    rows = []
    for source, pair in family_pairs(args.family, args.data):
        ms, pan = scene_fractions(pair, source.sensor or "none")
        rows.append({"scene": source.id, "sensor": source.sensor, "ms": [round(float(v), 3) for v in ms],
                     "pan": round(pan, 3), "ms_over_pan": [round(float(v) / pan, 2) for v in ms]})
        print(f"{source.id:40s} MS {rows[-1]['ms']}  PAN {pan:.3f}  MS/PAN {rows[-1]['ms_over_pan']}",
              file=sys.stderr, flush=True)
    print(json.dumps({"family": args.family, "scenes": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
