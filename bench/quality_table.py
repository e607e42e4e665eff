"""Quality of every method on every reduced-resolution scene of ../shared/data, as a Markdown table and a CSV.

Reduced-resolution scenes are the sets that ship a ground truth, plus (with --wald, the default) every
full-resolution pair degraded once more with Wald's protocol so its original MS becomes the reference. Each method
gets the reduced-resolution indexes against the reference (SAM, ERGAS, Q2n, SCC; no border cut) and the
full-resolution ones on its own input pair (D_lambda, D_s, HQNR), as the toolbox's tables do, and its seconds per scene.

    python bench/quality_table.py [--out bench/results/quality]
    python bench/quality_table.py --checkpoint ssdiff-landsat-r2 [--checkpoint OTHER ...] [--steps 10] [--seed 0]
                                  [--sampler consistent --sampler release] [--adapt N]
                                  [--back-projection 0 --back-projection 3]

With --checkpoint, SSDiff is added as a method (sampled tile by tile with the same tiling the pipeline uses), and
the scenes are the validation scenes of the checkpoint's training store (never trained on, taken with the same
band selection as in training), so the comparison with the classical methods is fair. Several checkpoints of one
family (a base model and its L-BAF fine-tuning) are compared on the same scenes. Then the table ends with the mean
of every index per method, and the JSON says whether SSDiff beats every classical method on SAM, ERGAS and Q2n.
Prints the Markdown table and one JSON line; exits 2 when ../shared/data is absent.
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import itertools
import json
import sys
import time
from pathlib import Path

import numpy as np

from ssdiff_model.data.catalogue import iter_shared_sets
from ssdiff_model.data.pair import PansharpeningPair
from ssdiff_model.science import baselines
from ssdiff_model.science.metrics import full_resolution, index_scale, reduced_resolution
from ssdiff_model.science.wald import reduced_resolution_pair

ROOT = Path(__file__).resolve().parents[1]
CLASSICAL = baselines.METHODS   # the toolbox's methods, by their toolbox names
# What SSDiff must beat, and in which direction each index is better.
COMPARED = ("BT-H", "MTF-GLP-FS", "BDSD-PC")
BETTER = {"SAM": "lower", "ERGAS": "lower", "Q2n": "higher"}
COLUMNS = ["SAM", "ERGAS", "Q2n", "SCC", "D_lambda", "D_s", "HQNR", "seconds"]
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


def validation_scenes(checkpoint: str, data_root: Path, max_per_dataset: int):
    """(scene id, reduced-resolution pair, bits) for the validation scenes recorded in `checkpoint`'s training facts,
    loaded as the training store loaded them (same sources, same band selection)."""
    from ssdiff_model.data.catalogue import family_sources
    from ssdiff_model.data.pair import PansharpeningBatch
    from ssdiff_model.model.checkpoint import load_checkpoint

    store = load_checkpoint(checkpoint).training.get("store") or {}
    held_out = [s["id"] for s in store.get("sources", []) if s["split"] == "validation"]
    if not held_out:
        raise ValueError(f"{checkpoint}: records no validation scenes of its training store")
    if any("#" in unit for unit in held_out):
        raise ValueError(f"{checkpoint}: its store split scenes into strips; the table needs whole held-out scenes")
    for source in family_sources(store["family"], data_root):
        if source.id not in held_out:
            continue
        data = source.load()
        pairs = [data.pair(i) for i in range(min(len(data), max_per_dataset))] if isinstance(
            data, PansharpeningBatch) else [data]
        for index, pair in enumerate(pairs):
            rr = pair if pair.gt is not None else reduced_resolution_pair(pair)
            label = source.id + ("" if pair.gt is not None else " (Wald)") + (f" #{index}" if index else "")
            yield label, *_in_digital_numbers(_crop_to_blocks(rr))


def _crop_to_blocks(pair: PansharpeningPair) -> PansharpeningPair:
    """Crop to whole 32-pixel blocks: the full-resolution indexes (D_s.m) refuse partial blocks."""
    h, w = (n - n % (BLOCK * pair.ratio) if n >= BLOCK * pair.ratio else n - n % BLOCK for n in pair.pan.shape)
    if (h, w) == pair.pan.shape:
        return pair
    r = pair.ratio
    gt = None if pair.gt is None else pair.gt[:, :h, :w]
    return dataclasses.replace(pair, pan=pair.pan[:h, :w], ms_lr=pair.ms_lr[:, : h // r, : w // r], gt=gt, lms=None)


def _in_digital_numbers(pair: PansharpeningPair) -> tuple[PansharpeningPair, int]:
    bits, to_dn = index_scale(pair.bits, pair.full_scale)
    if to_dn == 1.0:
        return pair, bits
    scaled = dataclasses.replace(pair, pan=pair.pan * to_dn, ms_lr=pair.ms_lr * to_dn, gt=pair.gt * to_dn, lms=None,
                                 full_scale=pair.full_scale * to_dn, bits=bits)
    return scaled, bits


def classical_method(fuse):
    def run(pair: PansharpeningPair):
        return fuse(pair.pan, pair.ms_lr, pair.ratio, pair.sensor or "none")

    return run


def ssdiff_method(checkpoint: str, steps: int, tile: int, halo: int, seed: int = 0, sampler: str = "consistent",
                  adapt: int = 0, back_projection: int | None = None, ensemble: int | None = None):
    """SSDiff as the pipeline runs it; with `adapt` > 0 first fine-tuned on each scene's own input pair
    (``Pansharpener.adapted``: Wald's protocol on the pair it is given, never its reference); back-projected onto
    the MS with the scene's sensor and averaged over ``ensemble`` dihedral views (None: as the checkpoint
    recommends)."""
    from ssdiff_model.inference.pansharpener import Pansharpener
    from tiling import sharpen_array

    model = Pansharpener.from_checkpoint(checkpoint)

    def run(pair: PansharpeningPair):
        scene_model = model.adapted(pair.pan, pair.ms_lr, iterations=adapt, seed=seed, full_scale=pair.full_scale,
                                    sensor=pair.sensor) if adapt else model
        # The network sees DN / the scene's own full scale, as in training.
        return sharpen_array(scene_model, pair.pan, pair.ms_lr, tile=tile, halo=halo, steps=steps, seed=seed,
                             full_scale=pair.full_scale, sampler=sampler, back_projection=back_projection,
                             sensor=pair.sensor, ms_degradation=pair.ms_degradation, ensemble=ensemble)

    return run


def method_means(rows: list[dict]) -> dict[str, dict[str, float]]:
    methods = dict.fromkeys(r["method"] for r in rows)
    return {m: {c: float(np.mean([r[c] for r in rows if r["method"] == m])) for c in COLUMNS} for m in methods}


def beats_classical(means: dict[str, dict[str, float]], method: str) -> dict[str, bool]:
    """Per index of BETTER: does `method`'s mean beat every method of COMPARED?"""
    mine = means[method]
    return {index: all((mine[index] < means[other][index]) if way == "lower" else (mine[index] > means[other][index])
                       for other in COMPARED) for index, way in BETTER.items()}


def evaluate(method, pair: PansharpeningPair, bits: int) -> dict[str, float]:
    sensor = pair.sensor or "none"
    start = time.perf_counter()
    fused = np.asarray(method(pair), dtype=np.float64)
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
    parser.add_argument("--checkpoint", action="append", default=[],
                        help="add SSDiff with this checkpoint (shipped name or path; repeatable) and use the "
                             "validation scenes of its training store")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of SSDiff's starting noise: how much an index moves from seed to seed says how "
                             "large a difference between two checkpoints has to be to mean something")
    parser.add_argument("--sampler", action="append", choices=("consistent", "release"),
                        help="SSDiff's sampler (repeatable, to compare both; default: consistent)")
    parser.add_argument("--adapt", type=int, default=0, metavar="N",
                        help="also SSDiff adapted to each scene with N L-BAF iterations (Pansharpener.adapted)")
    parser.add_argument("--back-projection", action="append", type=int, metavar="N",
                        help="iterations of back-projection onto the MS (repeatable, to compare; default: the "
                             "checkpoint's recommendation)")
    parser.add_argument("--ensemble", action="append", type=int, metavar="N",
                        help="dihedral views averaged per tile (repeatable, to compare; default: the checkpoint's "
                             "recommendation)")
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

    methods = {name: classical_method(fuse) for name, fuse in CLASSICAL.items()}
    ssdiff = {}
    samplers = args.sampler or ["consistent"]
    projections = args.back_projection or [None]
    ensembles = args.ensemble or [None]
    for checkpoint, sampler, projection, ensemble in itertools.product(args.checkpoint, samplers, projections,
                                                                        ensembles):
        name = f"SSDiff {Path(checkpoint).stem}" if len(args.checkpoint) > 1 else "SSDiff"
        name += f" ({sampler})" if len(samplers) > 1 else ""
        name += f" bp{projection}" if len(projections) > 1 else ""
        name += f" e{ensemble}" if len(ensembles) > 1 else ""
        ssdiff[name] = ssdiff_method(checkpoint, args.steps, args.tile, args.halo, args.seed, sampler,
                                     back_projection=projection, ensemble=ensemble)
        if args.adapt:
            ssdiff[f"{name} adapted {args.adapt}"] = ssdiff_method(checkpoint, args.steps, args.tile, args.halo,
                                                                   args.seed, sampler, args.adapt, projection,
                                                                   ensemble)
    methods.update(ssdiff)
    scenes = (validation_scenes(args.checkpoint[0], args.data, args.max_per_dataset) if args.checkpoint else
              reduced_resolution_scenes(args.data, args.wald, args.max_per_dataset))
    rows = []
    for label, pair, bits in scenes:
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
    means = method_means(rows)
    table = markdown(rows)
    summary = {"csv": str(csv_path), "markdown": str(args.out.with_suffix(".md")), "rows": len(rows),
               "scenes": len(rows) // max(1, len(methods)), "steps": args.steps if ssdiff else None}
    if ssdiff:
        table += "\n\nMean over the validation scenes:\n\n" + markdown(
            [{"scene": "mean", "method": m, **v} for m, v in means.items()])
        summary["means"] = {m: {c: round(v[c], 4) for c in ("SAM", "ERGAS", "Q2n")} for m, v in means.items()}
        summary["beats_classical"] = {m: beats_classical(means, m) for m in ssdiff}
    args.out.with_suffix(".md").write_text(table + "\n")
    print(table)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
