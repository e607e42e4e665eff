"""Checks made before any store is created or any pixel is read: arguments, output paths and the memory a step
will need. A command that fails later leaves a store behind that the corrected command trips over, or dies of
a MemoryError after minutes of reading; these refuse at once, with the number that is wrong.

Every refusal is a ValueError (exit status 2, bad input) naming the argument or the file.
"""
from __future__ import annotations

import math
import os
import resource
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from ssdiff_model.errors import BadInput
from ssdiff_model.model.sampling import ENSEMBLE_SIZES

if TYPE_CHECKING:
    from infra.settings import SharpenSettings

__all__ = ["available_memory", "gib", "require_apart", "require_memory_for", "require_sharpen_settings",
           "require_store_path", "require_tiles_fit"]

PathLike = str | os.PathLike

# Bytes held per pixel of the band of whole rows that ingest streams at a time (ssdiff_model.blocks): the file's
# values, their float32 copy, the nodata flags, the copy the store is written from and the band the store's chunks
# are cut from. An upper estimate; the scene itself is never held whole (a GeoTIFF streams, see flows.ingest).
INGEST_BYTES_PER_PIXEL = 24
# What ingest holds whatever the scene's size: the radiometry's strided sample (under twice SAMPLE_SIZE values,
# with its percentile's float64 copy) and the registration's central window (OFFSET_WINDOW MS pixels a side).
INGEST_FIXED_BYTES = 2 * 4_000_000 * (4 + 8) + 2**28
# Bytes per pixel and channel of one network call (activations of both branches at every stage, the sampler's
# copies), a generous estimate, used only to refuse tiles that cannot possibly fit.
NETWORK_BYTES_PER_PIXEL_CHANNEL = 4 * 24
# Steps beyond this make no sense for DDIM on a 1000-step schedule.
MAX_STEPS = 1000


def available_memory() -> int:
    """Bytes this process may still allocate: the smaller of the system's available memory and what the
    address-space limit (ulimit -v, a container's limit seen as RLIMIT_AS) leaves beside what the process already
    maps."""
    available = None
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    available = int(line.split()[1]) * 1024
    except OSError:
        pass
    if available is None:
        available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft != resource.RLIM_INFINITY:
        available = min(available, soft - _mapped())
    return available


def _mapped() -> int:
    """Bytes of address space this process maps now (VmSize), 0 where /proc does not say."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def gib(size: float) -> str:
    return f"{size / 2**30:.3g} GiB"


def require_memory_for(pan: PathLike, ms: Sequence[PathLike]) -> None:
    """Refuse a GeoTIFF scene that ingest cannot stream in this process's memory, from the files' headers alone,
    before a pixel is read. Ingest holds one band of whole rows of each file at a time (at least one row of store
    chunks, ``ssdiff_model.blocks.band_rows``), never the scene: a sparse 48000 x 48000 file (500 KB on disk, 40
    GiB as float32) streams in about 1 GiB, while rows too wide for memory (a 200000 x 200000 scene under a
    3 GiB limit) are refused here."""
    import rasterio
    import rasterio.errors

    from ssdiff_model.blocks import band_rows
    from ssdiff_model.data.geotiff import STREAM_GDAL_CACHE, read_rows

    need = INGEST_FIXED_BYTES + STREAM_GDAL_CACHE
    sizes = []
    for path in (pan, *ms):
        try:
            with rasterio.open(path) as src:
                # the windows read, or the bands of store chunks written, whichever is taller
                rows = min(src.height, max(read_rows(src), band_rows(src.width * src.count)))
                pixels = rows * src.width * src.count
                need += pixels * (INGEST_BYTES_PER_PIXEL + max(_itemsize(d) for d in src.dtypes))
                sizes.append(f"{Path(path).name} {src.width} x {src.height} x {src.count}")
        except rasterio.errors.RasterioIOError:
            continue   # unreadable or missing: the reader says so with its own message
    available = available_memory()
    if need > available:
        raise BadInput(f"{pan}: the scene is too large to ingest in this process's memory, even a band of rows "
                         f"at a time ({', '.join(sizes)}: about {gib(need)} needed, {gib(available)} available); "
                         f"cut it into pieces (gdal_translate -srcwin) and ingest each, or run ingest on a larger "
                         f"machine")


def _itemsize(dtype: str) -> int:
    import numpy as np

    return np.dtype(dtype).itemsize


def require_store_path(out: PathLike) -> None:
    """An output store path that can never work: a dangling symbolic link (a rerun would fail the same way)."""
    if "://" in str(out):
        return   # an object-store key: no links there
    out = Path(out)
    if out.is_symlink() and not out.exists():
        raise BadInput(f"{out}: a symbolic link to {os.readlink(out)}, which does not exist: remove the link or "
                         f"choose another --out")


def require_apart(scene: PathLike, out: PathLike) -> None:
    """The mosaic may not be, contain, or lie inside the scene store: writing it would change the scene (and the
    scene's checksum) or nest a store where Zarr does not expect one."""
    from tiling.objstore import is_url, location

    if is_url(scene) or is_url(out):
        scene_text, out_text = location(scene).rstrip("/"), location(out).rstrip("/")
        if out_text == scene_text or out_text.startswith(scene_text + "/") or scene_text.startswith(out_text + "/"):
            raise BadInput(f"{out}: --out lies inside (or holds) the scene store {scene}: choose a path beside it")
        return
    scene_path, out_path = Path(scene).resolve(), Path(out).resolve()
    if out_path == scene_path or scene_path in out_path.parents or out_path in scene_path.parents:
        raise BadInput(f"{out}: --out lies inside (or holds) the scene store {scene}: choose a path beside it")


def require_sharpen_settings(settings: SharpenSettings) -> None:
    """The numbers of a sharpen run, checked before the model is loaded or any store created (steps and halo left
    None come from the checkpoint later, and are checked again once resolved).

    Args:
        settings: the run's settings.

    Raises:
        BadInput: a number out of range, named by its option.
    """
    steps, halo, tile_size = settings.steps, settings.halo, settings.tile_size
    if steps is not None and not 1 <= steps <= MAX_STEPS:
        raise BadInput(f"--steps {steps}: the sampler needs 1 to {MAX_STEPS} steps")
    if settings.batch_size < 1:
        raise BadInput(f"--batch-size {settings.batch_size}: at least 1 tile per network call")
    if settings.actors is not None and settings.actors < 1:
        raise BadInput(f"--actors {settings.actors}: at least 1 actor")
    if settings.max_actors is not None and settings.max_actors < 1:
        raise BadInput(f"--max-actors {settings.max_actors}: at least 1 actor")
    if halo is not None and halo < 0:
        raise BadInput(f"--halo {halo}: cannot be negative")
    if settings.back_projection is not None and settings.back_projection < 0:
        raise BadInput(f"--back-projection {settings.back_projection}: cannot be negative")
    if settings.ensemble is not None and settings.ensemble not in ENSEMBLE_SIZES:
        raise BadInput(f"--ensemble {settings.ensemble}: one of {', '.join(map(str, ENSEMBLE_SIZES))} dihedral views")
    if tile_size < 1 or tile_size - 2 * (halo or 0) < 1:
        raise BadInput(f"--tile {tile_size} with --halo {halo} leaves no core: the tile must exceed twice the "
                         f"halo")


def require_tiles_fit(*, tile_size: int, batch_size: int, bands: int, width: int, scene_height: int,
                      scene_width: int) -> None:
    """Refuse a tile size whose network call (``batch_size`` tiles of a network ``width`` channels wide) cannot
    fit in this machine's memory, and tiles many times larger than the scene (all padding, and an output chunk,
    one tile core, allocated whole)."""
    largest = math.ceil(max(scene_height, scene_width) / 32) * 32
    if tile_size > 4 * largest:
        raise BadInput(f"--tile {tile_size}: the scene is only {scene_height} x {scene_width} PAN pixels; a "
                         f"tile of {largest} covers it whole")
    channels = 2 * width + 2 * bands
    need = batch_size * tile_size**2 * channels * NETWORK_BYTES_PER_PIXEL_CHANNEL
    available = available_memory()
    if need > available:
        raise BadInput(f"--tile {tile_size} with --batch-size {batch_size}: one network call needs about "
                         f"{gib(need)}, {gib(available)} are available; use smaller tiles or batches")
