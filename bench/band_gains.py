"""Do a scene's own band gains predict how much PAN detail each of its bands takes? The measurement behind band
equalization (`ssdiff_model.science.equalization`, `train --equalize-bands`).

On each scene's reduced-resolution pair (a shipped one, or Wald's protocol on a full-resolution pair) the true gain
of band k is the slope of its reference detail (reference - interp23tap MS) on the equalized PAN's detail (the PAN
less its MTF-GLP low-pass for that band), and the band gain the one `pan_equalization` takes from the pair itself
(the band's detail on the equalized PAN's detail at the MS scale). Their ratio is what a band-equalized network has
to supply: one number per scene if the band gains were perfect. Per scene it prints the ratio per band and its
coefficient of variation over the bands, beside the true gains' own spread over the family's scenes.

    python bench/band_gains.py [--family 4band-r4] [--data ../shared/data]

Prints a table and one JSON line; exits 2 when ../shared/data is absent.
"""
from __future__ import annotations

import json
import sys

import numpy as np
from family_scenes import family_arguments, family_pairs

from ssdiff_model.science.equalization import pan_equalization
from ssdiff_model.science.resample import decimate, filter_replicate, interp23tap, mtf_kernel
from ssdiff_model.science.sensors import get_sensor
from ssdiff_model.science.wald import reduced_resolution_pair


def true_gains(pan: np.ndarray, ms_lr: np.ndarray, reference: np.ndarray, ratio: int, sensor: str,
               equalization) -> np.ndarray:
    """Per band: the slope of the reference's detail over the upsampled MS on the equalized PAN's MTF-GLP detail."""
    pan = equalization.apply(pan.astype(np.float64))
    lms = interp23tap(ms_lr.astype(np.float64), ratio)
    mtf = get_sensor(sensor).band_gains(ms_lr.shape[0])
    gains = []
    for band in range(ms_lr.shape[0]):
        low = interp23tap(decimate(filter_replicate(pan, mtf_kernel(mtf[band], ratio)), ratio)[None], ratio)[0]
        detail = (pan - low).ravel()
        gains.append(float((reference[band] - lms[band]).ravel() @ detail / (detail @ detail)))
    return np.array(gains)


def main(argv=None) -> int:
    args = family_arguments(__doc__, argv)
    rows = []
    for source, pair in family_pairs(args.family, args.data):
        rr = pair if pair.gt is not None else reduced_resolution_pair(pair)
        if min(rr.ms_lr.shape[1:]) < 8:
            continue
        equalization = pan_equalization(rr.pan, rr.ms_lr, rr.ratio)
        truth = true_gains(rr.pan, rr.ms_lr, rr.gt, rr.ratio, rr.sensor or "none", equalization)
        ratio = truth / np.array(equalization.band_gains)
        rows.append({"scene": source.id, "true_gains": truth.round(3).tolist(),
                     "band_gains": np.round(equalization.band_gains, 3).tolist(), "ratio": ratio.round(3).tolist(),
                     "ratio_cv_over_bands": round(float(ratio.std() / ratio.mean()), 3)})
    print("| scene | true gains | band gains | true / band | CV over bands |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['scene']} | {r['true_gains']} | {r['band_gains']} | {r['ratio']} | {r['ratio_cv_over_bands']} |")
    truths = np.array([r["true_gains"] for r in rows])
    summary = {"family": args.family, "scenes": len(rows),
               "ratio_cv_over_bands_median": float(np.median([r["ratio_cv_over_bands"] for r in rows])),
               "ratio_cv_over_bands_max": float(max(r["ratio_cv_over_bands"] for r in rows)),
               "true_gain_range_per_band": [[float(lo), float(hi)] for lo, hi in zip(truths.min(0), truths.max(0))],
               "rows": rows}
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
