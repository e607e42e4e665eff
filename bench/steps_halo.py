"""Quality against DDIM steps, halo and sampler on a checkpoint's held-out scenes, and why the chain collapses.

    python bench/steps_halo.py --checkpoint ssdiff-8band-r4 [--crop 256] [--max-scenes 2] [--steps 1 2 4 10]
                               [--halo 8 16] [--sampler consistent --sampler release] [--seed 0]

Scenes: the validation scenes of the checkpoint's training store (bench/quality_table.py's ``validation_scenes``:
never trained on, Wald's reduced-resolution protocol, same band selection as in training), each cut to its central
``--crop`` x ``--crop`` PAN pixels so that the whole grid fits a shared CPU. Every setting is sharpened through
``tiling.sharpen_array``, the pipeline's tiled path (64 px tiles), and scored with SAM, ERGAS and Q2n (no border cut);
``seconds`` is the wall time of that call. ``seed_spread`` repeats the cheapest setting with seed + 1: a difference
between settings smaller than it is noise, not quality.

The diagnosis runs the 10-step chain (``--diagnose-steps``) of each sampler on the central 2 x 2 tiles of 64 px of
the first scene, recording what the network is fed, and at every step it visits reports (all norms relative to the
norm of the TRUE residual x0 = reference - lms, in the network's own space):
    chain_x0_error       ||x0_hat - x0|| of the chain's own prediction
    move_x0              ||x0_hat_k - x0_hat_{k-1}||: how far this step's prediction moved from the previous one
    move_x_t             ||x_{t_prev} - x_t|| of the DDIM update
    to_final             ||x0_hat_k - x0_hat_final||
    zeros_change         ||f(0, t) - f(x_t, t)||: x_t replaced by zeros
    other_noise_change   ||f(n, t) - f(x_t, t)||: x_t replaced by fresh N(0, I) noise n
    oracle_x0_error      ||f(x_t*, t) - x0|| with x_t* = q_sample(x0, t_true, eps), the noisy TRUE residual the
                         network was trained to denoise: if the network read x_t, at small t (x_t* ~ x0) this error
                         would fall far below chain_x0_error; if it is the same, the network ignores x_t
Prints one JSON object.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))   # run as a script: its sibling bench modules

from quality_table import ROOT, validation_scenes  # noqa: E402

from ssdiff_model.data.pair import PansharpeningPair  # noqa: E402
from ssdiff_model.inference.pansharpener import Pansharpener  # noqa: E402
from ssdiff_model.model.checkpoint import load_checkpoint  # noqa: E402
from ssdiff_model.science.equalization import pan_equalization  # noqa: E402
from ssdiff_model.science.metrics import reduced_resolution  # noqa: E402
from ssdiff_model.science.resample import central_window  # noqa: E402
from tiling import sharpen_array  # noqa: E402

INDEXES = ("SAM", "ERGAS", "Q2n")
TILE = 64


def cropped(pair: PansharpeningPair, crop: int) -> PansharpeningPair:
    """The central crop x crop PAN pixels (whole MS pixels) of a reduced-resolution pair."""
    pan, ms_lr, gt = central_window(pair.pan, pair.ms_lr, pair.ratio, crop // pair.ratio, pair.gt)
    return dataclasses.replace(pair, pan=pan, ms_lr=ms_lr, gt=gt, lms=None)


def score(model: Pansharpener, pair: PansharpeningPair, bits: int, *, steps: int, halo: int, sampler: str,
          seed: int) -> dict[str, float]:
    start = time.perf_counter()
    # The chain alone: no back-projection and one view, whatever the checkpoint recommends (the model cards' tables
    # were measured so; both come after sampling and are measured by bench/quality_table.py).
    fused = sharpen_array(model, pair.pan, pair.ms_lr, tile=TILE, halo=halo, steps=steps, seed=seed,
                          full_scale=pair.full_scale, sampler=sampler, back_projection=0, ensemble=1)
    seconds = time.perf_counter() - start
    row = reduced_resolution(np.asarray(fused, np.float64), pair.gt, pair.ratio, bits, cut_bounds=0)
    return {**{k: round(float(row[k]), 4) for k in INDEXES}, "seconds": round(seconds, 2)}


class Recorder(torch.nn.Module):
    """Wraps the network and keeps every call's inputs and output, so the diagnosis sees exactly what the sampler
    feeds (equalization, scaling and all)."""

    def __init__(self, net):
        super().__init__()
        self.net, self.calls = net, []
        self.config = net.config   # what the Pansharpener reads off its network

    def forward(self, x_t, t, pan, lms, ms):
        out = self.net(x_t, t, pan, lms, ms)
        self.calls.append({k: v.detach().clone() for k, v in dict(x_t=x_t, t=t, pan=pan, lms=lms, ms=ms,
                                                                  out=out).items()})
        return out


def central_tiles(pair: PansharpeningPair, count: int = 2):
    """The central count x count tiles of 64 px: pan (N, 64, 64), ms (N, B, 64/r, 64/r), gt (N, B, 64, 64)."""
    r = pair.ratio
    h, w = pair.pan.shape
    top, left = (h - count * TILE) // 2 // r * r, (w - count * TILE) // 2 // r * r
    pans, mss, gts = [], [], []
    for i in range(count):
        for j in range(count):
            y, x = top + i * TILE, left + j * TILE
            pans.append(pair.pan[y:y + TILE, x:x + TILE])
            mss.append(pair.ms_lr[:, y // r:(y + TILE) // r, x // r:(x + TILE) // r])
            gts.append(pair.gt[:, y:y + TILE, x:x + TILE])
    return np.stack(pans), np.stack(mss), np.stack(gts)


def diagnose(model: Pansharpener, pair: PansharpeningPair, *, steps: int, sampler: str, seed: int) -> dict:
    pan, ms_lr, gt = central_tiles(pair)
    scale = float(pair.full_scale)
    # The scene's equalization, as the pipeline takes it at ingest (here the scene is the crop).
    equalization = pan_equalization(pair.pan, pair.ms_lr, pair.ratio) if model.equalizes else None
    noise = np.random.default_rng(seed).standard_normal((len(pan), model.bands, TILE, TILE)).astype(np.float32)
    recorder, net = Recorder(model.net), model.net
    model.net = recorder
    try:
        model.sharpen_tiles(pan, ms_lr, noise, steps=steps, full_scale=scale, equalization=equalization,
                            sampler=sampler)
    finally:
        model.net = net
    calls = recorder.calls
    lms = calls[0]["lms"]
    target = equalization.apply_bands(gt.astype(np.float32)) if model.equalizes_bands else gt.astype(np.float32)
    x0 = torch.from_numpy(np.ascontiguousarray(target / scale)).to(lms) - lms
    norm = float(x0.norm())
    diffusion = model.diffusion
    timesteps = diffusion.ddim_timesteps(steps)
    generator = torch.Generator().manual_seed(seed + 1)
    rows, previous = [], None
    final = calls[-1]["out"]
    with torch.inference_mode():
        for index, (call, t_true) in enumerate(zip(calls, timesteps)):
            x_t, t_fed, out = call["x_t"], call["t"], call["out"]
            inputs = (call["pan"], call["lms"], call["ms"])
            zeros = net(torch.zeros_like(x_t), t_fed, *inputs)
            other = net(torch.randn(x_t.shape, generator=generator).to(x_t), t_fed, *inputs)
            eps = torch.randn(x_t.shape, generator=generator).to(x_t)
            oracle_x_t = diffusion.q_sample(x0, torch.full((len(x0),), t_true, dtype=torch.int64), eps)
            oracle = net(oracle_x_t, t_fed, *inputs)
            next_x_t = calls[index + 1]["x_t"] if index + 1 < len(calls) else None
            abar = float(diffusion.alphas_cumprod[t_true])
            rows.append({
                "t": t_true, "t_fed": int(t_fed[0]), "noise_level": round(math.sqrt(1 - abar), 4),
                "chain_x0_error": round(float((out - x0).norm()) / norm, 4),
                "move_x0": None if previous is None else round(float((out - previous).norm()) / norm, 4),
                "move_x_t": None if next_x_t is None else round(float((next_x_t - x_t).norm()) / norm, 4),
                "to_final": round(float((out - final).norm()) / norm, 4),
                "zeros_change": round(float((zeros - out).norm()) / norm, 4),
                "other_noise_change": round(float((other - out).norm()) / norm, 4),
                "oracle_x0_error": round(float((oracle - x0).norm()) / norm, 4),
            })
            previous = out
    return {"sampler": sampler, "steps": steps, "tiles": len(pan), "true_residual_rms": round(
        norm / math.sqrt(x0.numel()), 5), "per_step": rows}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="shipped name or path")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--crop", type=int, default=256, help="central window of each scene, PAN pixels")
    parser.add_argument("--max-scenes", type=int, default=2, help="held-out scenes taken (in the store's order)")
    parser.add_argument("--steps", type=int, nargs="+", default=[1, 2, 4, 10])
    parser.add_argument("--halo", type=int, nargs="+", default=[8, 16])
    parser.add_argument("--sampler", action="append", choices=("consistent", "release"),
                        help="repeatable; default both")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--diagnose-steps", type=int, default=10, help="chain length of the diagnosis (0: none)")
    args = parser.parse_args(argv)
    if not args.data.is_dir():
        print(f"no shared data at {args.data}: nothing to measure", file=sys.stderr)
        return 2
    torch.manual_seed(0)
    samplers = args.sampler or ["consistent", "release"]
    model = Pansharpener.from_checkpoint(args.checkpoint, device="cpu")
    ckpt = load_checkpoint(args.checkpoint)
    scenes = []
    for label, pair, bits in validation_scenes(args.checkpoint, args.data, max_per_dataset=1):
        scenes.append((label, cropped(pair, args.crop), bits))
        if len(scenes) >= args.max_scenes:
            break

    settings = [(s, h, n) for s in samplers for h in args.halo for n in args.steps]
    rows = []
    for label, pair, bits in scenes:
        for sampler, halo, steps in settings:
            rows.append({"scene": label, "sampler": sampler, "halo": halo, "steps": steps,
                         **score(model, pair, bits, steps=steps, halo=halo, sampler=sampler, seed=args.seed)})
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    means = []
    for sampler, halo, steps in settings:
        mine = [r for r in rows if (r["sampler"], r["halo"], r["steps"]) == (sampler, halo, steps)]
        means.append({"sampler": sampler, "halo": halo, "steps": steps,
                      **{k: round(float(np.mean([r[k] for r in mine])), 4) for k in (*INDEXES, "seconds")}})
    # Seed-to-seed spread at the cheapest setting: the size of a difference that means nothing.
    spread = {}
    cheapest = (min(args.steps), min(args.halo))
    for sampler in samplers:
        deltas = []
        for label, pair, bits in scenes:
            other = score(model, pair, bits, steps=cheapest[0], halo=cheapest[1], sampler=sampler, seed=args.seed + 1)
            base = next(r for r in rows if (r["scene"], r["sampler"], r["steps"], r["halo"]) ==
                        (label, sampler, *cheapest))
            deltas.append({k: abs(other[k] - base[k]) for k in INDEXES})
        spread[sampler] = {k: round(max(d[k] for d in deltas), 4) for k in INDEXES}
    diagnosis = [diagnose(model, scenes[0][1], steps=args.diagnose_steps, sampler=s, seed=args.seed)
                 for s in samplers] if args.diagnose_steps and scenes else []
    print(json.dumps({
        "checkpoint": str(args.checkpoint), "content_hash": ckpt.content_hash,
        "architecture": ckpt.config.get("architecture", "legacy"), "crop": args.crop, "tile": TILE,
        "seed": args.seed, "scenes": [label for label, _, _ in scenes],
        "threads": torch.get_num_threads(), "means": means, "rows": rows,
        "seed_spread": {"setting": {"steps": cheapest[0], "halo": cheapest[1]}, "max_abs_delta": spread},
        "diagnosis": diagnosis}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
