"""``ssdiff import-release-checkpoint``: the authors' released weights as a project checkpoint with a model card.

    ssdiff import-release-checkpoint FILE --bands 8 --sensor WV3 [--full-scale 2047] [--ratio 4] --out NAME.pt
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Callable, MutableMapping

__all__ = ["add_import_command", "import_release"]


def import_release(source: str, out: str, *, bands: int, sensor: str, full_scale: float | None = None,
                   ratio: int = 4) -> dict:
    """Write ``out`` (and ``out`` with ``.md``, its model card); refuse an existing ``out``."""
    from ssdiff_model.model.checkpoint import save_checkpoint
    from ssdiff_model.model.release import import_release_checkpoint, release_model_card

    target = Path(out)
    if target.exists():
        raise FileExistsError(f"{target}: already exists; remove it or choose another --out")
    ckpt = import_release_checkpoint(source, bands=bands, sensor=sensor, full_scale=full_scale, ratio=ratio)
    ckpt.content_hash = save_checkpoint(ckpt, target)
    card = target.with_suffix(".md")
    card.write_text(release_model_card(ckpt, target.name))
    return {"checkpoint": str(target), "model_card": str(card), "content_hash": ckpt.content_hash,
            "bands": bands, "ratio": ratio, "sensor": ckpt.sensor, "full_scale": ckpt.full_scale,
            "width": ckpt.config["width"], "parameters": sum(v.numel() for k, v in ckpt.weights.items()
                                                             if not k.endswith("num_batches_tracked")
                                                             and "running_" not in k),
            "imported_from": ckpt.training["imported_from"]}


def _run(args: argparse.Namespace) -> dict:
    return import_release(args.file, args.out, bands=args.bands, sensor=args.sensor, full_scale=args.full_scale,
                          ratio=args.ratio)


def add_import_command(commands, handlers: MutableMapping[str, Callable]) -> None:
    parser = commands.add_parser("import-release-checkpoint",
                                 help="the authors' released SSDiff weights (.pth state dict) as a checkpoint")
    parser.add_argument("file", help="the release's state dict (a .pth file, its EMA weights included)")
    parser.add_argument("--bands", type=int, required=True, help="MS bands: 8 (WorldView-3) or 4 (QuickBird, GF2)")
    parser.add_argument("--sensor", required=True, help="sensor of its training data (WV3, QB, GF2, ...)")
    parser.add_argument("--full-scale", type=float,
                        help="DN the release's data were divided by (default: 2^bits - 1 of the sensor)")
    parser.add_argument("--ratio", type=int, default=4, help="PAN / MS ratio (default 4, the release's)")
    parser.add_argument("--out", required=True, help="checkpoint to write (NAME.pt; its model card beside it)")
    handlers["import-release-checkpoint"] = _run
