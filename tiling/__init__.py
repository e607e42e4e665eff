"""Cutting scenes into model-sized tiles and putting the sharpened tiles back together in a Zarr mosaic."""
from tiling.grid import Tile, TileGrid, read_window
from tiling.in_memory import sharpen_array
from tiling.lock import StoreBusyError, lock_path, store_lock
from tiling.noise import position_noise, window_noise
from tiling.runner import run_tiles
from tiling.stores.core import (
    DONE,
    HRMS,
    MOSAIC_LAYOUT,
    MS,
    PAN,
    SCENE_LAYOUT,
    TILE_MISSING,
    TILE_NODATA,
    TILE_SHARPENED,
    built_beside,
    check_run_settings,
    create_mosaic_store,
    missing_tiles,
    mosaic_grid,
    nodata_mask,
    open_mosaic,
    open_scene,
    record_provenance,
    require_folder_for,
    sha256_file,
    store_attrs,
    write_scene_store,
    writing,
)

__all__ = [
    "Tile", "TileGrid", "read_window", "position_noise", "window_noise", "run_tiles", "sharpen_array",
    "DONE", "HRMS", "MOSAIC_LAYOUT", "MS", "PAN", "SCENE_LAYOUT", "TILE_MISSING", "TILE_NODATA", "TILE_SHARPENED",
    "check_run_settings", "create_mosaic_store", "missing_tiles", "mosaic_grid", "nodata_mask", "open_mosaic",
    "open_scene", "record_provenance", "require_folder_for", "sha256_file", "store_attrs", "built_beside",
    "write_scene_store", "writing", "StoreBusyError", "lock_path", "store_lock",
]
