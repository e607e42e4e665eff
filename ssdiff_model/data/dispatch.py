"""`read_pair`, which reads any supported layout by its files' suffixes and keys, and `select_bands`, which keeps
and names some MS bands of what was read."""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ssdiff_model.data._checks import PathLike
from ssdiff_model.data.geotiff import read_geotiff_pair
from ssdiff_model.data.matfiles import read_mat_pair, read_pancollection, variable_names
from ssdiff_model.data.pair import PansharpeningBatch, PansharpeningPair
from ssdiff_model.errors import BadInput

__all__ = ["read_pair", "select_bands"]

_TIFF = {".tif", ".tiff"}


def read_pair(*paths: PathLike, sensor: str | None = None, **options) -> PansharpeningPair | PansharpeningBatch:
    """Read any supported layout: GeoTIFFs as (PAN, MS[, GT]); a .mat / .h5 file by its keys (PanCollection files
    give a batch). Extra keyword options go to `read_geotiff_pair` for GeoTIFFs.

    Args:
        paths: PAN, MS[, GT] GeoTIFFs (one file each); or one .mat / .h5 file; or the two .mat
            files of a Landsat-7 fusebox pair.
        sensor: the sensor's name, None to read it from the files or leave it unknown.
        options: keyword options of `read_geotiff_pair` (GeoTIFFs only).

    Returns:
        A pair, or a batch for a PanCollection file.

    Raises:
        BadInput: no files, unsupported files, options for a non-GeoTIFF, or what the reader refuses.
    """
    if not paths:
        raise BadInput("read_pair needs at least one file")
    paths = tuple(Path(p) for p in paths)
    if all(p.suffix.lower() in _TIFF for p in paths):
        if len(paths) not in (2, 3):
            raise BadInput(f"{', '.join(map(str, paths))}: a GeoTIFF pair is PAN, MS and an optional GT file")
        return read_geotiff_pair(*paths, sensor=sensor, **options)
    if options:
        raise BadInput(f"{paths[0]}: options {sorted(options)} only apply to GeoTIFF pairs")
    if len(paths) > 2 or any(p.suffix.lower() not in {".mat", ".h5", ".hdf5"} for p in paths):
        raise BadInput(f"{', '.join(map(str, paths))}: unsupported files (expected GeoTIFFs, or one .mat/.h5 file, "
                         f"or a Landsat-7 fusebox pair of .mat files)")
    keys = variable_names(paths[0])
    if "ms" in keys and "pan" in keys:
        return read_pancollection(paths[0], sensor=sensor)
    return read_mat_pair(paths[0], ms_path=paths[1] if len(paths) == 2 else None, sensor=sensor)


def select_bands(data: PansharpeningPair | PansharpeningBatch, bands: Sequence[int] | None = None,
                 band_names: Sequence[str] = ()) -> PansharpeningPair | PansharpeningBatch:
    """`data` with only its MS bands `bands` (0-based, in that order; all of them when None), named `band_names`
    (else their names as read). The MS, reference and upsampled MS are cut alike; a pair's `notes` say so.

    Args:
        data: a pair or a batch.
        bands: the MS bands to keep (0-based, in this order); None keeps them all.
        band_names: the names of the bands kept; empty keeps their names as read.

    Returns:
        `data` itself when nothing is asked, else a copy with only those bands.

    Raises:
        BadInput: a band out of range, or a count of names other than the count of bands kept.
    """
    if bands is None and not band_names:
        return data
    n = data.ms_lr.shape[-3]
    where = ", ".join(str(p) for p in data.source) or "pansharpening data"
    index = list(range(n)) if bands is None else list(bands)
    if not index or min(index) < 0 or max(index) >= n:
        raise BadInput(f"{where}: has {n} MS bands, cannot select bands {index}")
    names = tuple(band_names) or tuple(data.band_names[i] for i in index)
    if len(names) != len(index):
        raise BadInput(f"{where}: {len(names)} band names for the {len(index)} bands kept")

    def pick(image):
        return None if image is None else np.ascontiguousarray(image[..., index, :, :])

    changes = dict(ms_lr=pick(data.ms_lr), gt=pick(data.gt), lms=pick(data.lms), band_names=names)
    if isinstance(data, PansharpeningPair):
        done = f"MS bands named {', '.join(names)}" if bands is None else f"MS bands {index} kept as {', '.join(names)}"
        changes["notes"] = (*data.notes, done)
    return dataclasses.replace(data, **changes)

