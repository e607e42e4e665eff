"""What makes a store trustworthy after the fact: chunk checksums, the scene's content hash, and the verification
of a mosaic's finished tiles.

- Every chunk of both layouts is written through zstd then a CRC-32C (``CHECKSUMMED``, zarr's own codecs): a chunk
  overwritten or with a few bytes flipped no longer decodes, instead of decoding into garbage.
- The scene's content hash (``content_sha256``) covers the pixels as stored (nodata as NaN, so ``--nodata`` is
  part of it) and the full scale: a mosaic records it, and a rerun recomputes it from the scene store, so a scene
  re-ingested another way, or edited in place, under a half-finished mosaic is refused instead of mixed in.
- ``verify_mosaic`` reads every tile the manifest calls finished and says which are damaged: a chunk that fails
  its checksum or does not decode, a sharpened tile whose chunk is gone (it reads as all NaN), values outside
  [0, full scale] (what a mosaic written before checksums existed shows of a damaged chunk), or a manifest entry
  that itself does not decode. ``forget_tiles`` marks such tiles missing again so that a rerun redoes them.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import numpy as np
import zarr
from zarr.codecs import Crc32cCodec, ZstdCodec

from ssdiff_model.blocks import is_lazy, row_bands
from ssdiff_model.errors import BadInput
from tiling import objstore
from tiling.grid import Tile, TileGrid
from tiling.stores.attrs import MosaicAttrs

# zstd as zarr's default, then a CRC-32C of the compressed bytes, verified on every read.
__all__ = ["CHECKSUMMED", "Damage", "content_sha256", "finished_mask", "forget_tiles", "scene_content_sha256",
           "verify_mosaic"]

CHECKSUMMED = (ZstdCodec(level=0, checksum=False), Crc32cCodec())
# Rows of a scene array hashed at a time: the hash streams through the store with memory bounded by this band.
HASH_ROWS = 256


def content_sha256(pan, ms, full_scale: float) -> str:
    """sha256 of the scene's pixels as stored (float32, NaN = nodata), PAN then MS, and its full scale.

    The arrays (NumPy, dask or Zarr) are hashed a band of whole rows at a time (``ssdiff_model.blocks.row_bands``:
    a dask array by its own chunks, a Zarr array by ``HASH_ROWS``), so the digest is that of the whole C-order
    arrays, whatever the band height, and memory stays bounded by one band."""
    digest = hashlib.sha256(json.dumps({"full_scale": float(full_scale)}).encode())
    for array in (pan, ms):
        for _, block in row_bands(array, None if is_lazy(array) else HASH_ROWS):
            digest.update(np.ascontiguousarray(block, dtype=np.float32).tobytes())
    return digest.hexdigest()


def scene_content_sha256(scene_store) -> str:
    """``content_sha256`` recomputed from a scene store, reading it a band of rows at a time."""
    group = zarr.open_group(objstore.zarr_store(scene_store, read_only=True), mode="r")
    try:
        return content_sha256(group["pan"], group["ms"], float(group.attrs["full_scale"]))
    except ValueError as err:   # a chunk failing its checksum: the codec's message names no file
        raise BadInput(f"{scene_store}: the scene store is damaged ({_reason(err)}): ingest the files again "
                         f"into a new scene store") from err


@dataclass(frozen=True)
class Damage:
    row: int
    col: int
    problem: str

    def __str__(self) -> str:
        return f"tile ({self.row}, {self.col}): {self.problem}"


def verify_mosaic(mosaic_store, grid: TileGrid, full_scale: float, codes: dict[str, int]) -> list[Damage]:
    """The finished tiles of the mosaic that are damaged (see the module docstring); reads every one of them."""
    group = zarr.open_group(objstore.zarr_store(mosaic_store, read_only=True), mode="r")
    hrms, done = group["hrms"], group["done"]
    damaged = []
    for tile in grid.tiles():
        try:
            state = int(done[tile.row, tile.col])
        except Exception as err:  # noqa: BLE001 - the codecs raise many types (checksum, zstd, shape); all mean damage
            damaged.append(Damage(tile.row, tile.col, f"its manifest entry is unreadable ({_reason(err)})"))
            continue
        if state == codes["missing"]:
            continue
        if state not in (codes["sharpened"], codes["nodata"]):
            damaged.append(Damage(tile.row, tile.col, f"its manifest entry holds {state}, no known state"))
            continue
        problem = _core_problem(hrms, tile, full_scale, sharpened=state == codes["sharpened"])
        if problem:
            damaged.append(Damage(tile.row, tile.col, problem))
    return damaged


def _core_problem(hrms, tile: Tile, full_scale: float, sharpened: bool) -> str | None:
    try:
        core = hrms[(slice(None), *tile.core)]
    except Exception as err:  # noqa: BLE001 - see verify_mosaic
        return f"its chunk fails its checksum or does not decode ({_reason(err)})"
    finite = np.isfinite(core)
    if not sharpened:
        return "marked nodata but holds values" if finite.any() else None
    if not finite.any():
        return "its chunk is missing (every pixel reads as unwritten)"
    values = core[finite]
    if values.min() < 0 or values.max() > full_scale * (1 + 1e-6) or np.isinf(core).any():
        return (f"values outside [0, {full_scale:g}] (from {float(values.min()):.3g} to {float(values.max()):.3g}): "
                f"the chunk was overwritten")
    return None


def _reason(err: BaseException) -> str:
    return " ".join(f"{type(err).__name__}: {err}".split())[:200]


def forget_tiles(mosaic_store, tiles: list[tuple[int, int]], missing: int) -> None:
    """Mark ``tiles`` missing again and delete their chunks, so that a rerun sharpens them from scratch: a damaged
    chunk cannot be partially overwritten (an edge tile's chunk would be read and decoded first)."""
    group = zarr.open_group(objstore.zarr_store(mosaic_store), mode="r+")
    hrms, done = group["hrms"], group["done"]
    store = hrms.store_path.store
    shard_tiles = int(group.attrs.get("shard_tiles", 1))
    if shard_tiles > 1:
        # A sharded mosaic: the damaged tile's whole shard goes (core and manifest objects); its other tiles read as
        # missing then and are redone with it. Rewriting one chunk inside a damaged shard would read it first.
        for row, col in {(row // shard_tiles, col // shard_tiles) for row, col in tiles}:
            for array, coords in ((hrms, (0, row, col)), (done, (row, col))):
                key = f"{array.path}/{array.metadata.encode_chunk_key(coords)}"
                zarr.core.sync.sync(store.delete(key))
        return
    for row, col in tiles:
        for array, coords in ((hrms, (0, row, col)), (done, (row, col))):
            key = f"{array.path}/{array.metadata.encode_chunk_key(coords)}"
            zarr.core.sync.sync(store.delete(key))
        done[row, col] = missing


def finished_mask(mosaic) -> "xarray.DataArray":  # noqa: F821 - xarray is the caller's
    """True on the PAN grid where the mosaic's tile is finished (sharpened or nodata), from an ``open_mosaic``
    Dataset or a plain ``xr.open_zarr`` one: ``ds.hrms.where(finished_mask(ds))`` tells a pixel not yet written
    from nodata (both read NaN)."""
    attrs = MosaicAttrs.from_attrs(mosaic.attrs)   # decoded: xr.open_zarr leaves them JSON strings (tiling.cf)
    core = int(attrs.core)
    done = mosaic["done"] != attrs.missing_code
    rows = (np.arange(mosaic.sizes["y"]) // core)
    cols = (np.arange(mosaic.sizes["x"]) // core)
    return done.isel(tile_row=("y", rows), tile_col=("x", cols)).drop_vars(
        [name for name in ("tile_row", "tile_col") if name in done.coords]).assign_coords(
        y=mosaic["y"], x=mosaic["x"])
