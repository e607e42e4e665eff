"""What the per-scene measurements of bench/ share: the command line that picks a family of ../shared/data, and the
family's scenes, each as one PAN+MS pair (the first pair of a PanCollection-style file)."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Iterator

from ssdiff_model.data.catalogue import FAMILIES, family_sources
from ssdiff_model.data.pair import PansharpeningBatch

ROOT = Path(__file__).resolve().parents[1]


def family_arguments(description: str, argv=None) -> argparse.Namespace:
    """--family and --data; exits 2 when the data folder is absent."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--family", choices=sorted(FAMILIES), default="4band-r4")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    args = parser.parse_args(argv)
    if not args.data.is_dir():
        parser.exit(2, f"no shared data at {args.data}: nothing to measure\n")
    return args


def family_pairs(family: str, data: Path) -> Iterator[tuple]:
    """(source, pair) for every scene of the family."""
    for source in family_sources(family, data):
        loaded = source.load()
        yield source, loaded.pair(0) if isinstance(loaded, PansharpeningBatch) else loaded
