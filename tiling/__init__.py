"""Cutting scenes into model-sized tiles and putting the sharpened tiles back together in a Zarr mosaic.

The public names are imported lazily (as in ``ssdiff_model``): ``import tiling.lock`` or
``tiling.stores.training`` loads neither torch, xarray, zarr nor the model; ``tiling.open_mosaic`` loads what it
needs when first used. The store layouts are documented in ``tiling.stores.layout``.
"""
from importlib import import_module

_PUBLIC = {
    "Tile": "tiling.grid", "TileGrid": "tiling.grid", "read_window": "tiling.grid",
    "position_noise": "tiling.noise", "window_noise": "tiling.noise",
    "run_tiles": "tiling.runner", "sharpen_array": "tiling.in_memory", "sharpen_to_stores": "tiling.in_memory",
    "StoreBusyError": "tiling.lock", "lock_path": "tiling.lock", "store_lock": "tiling.lock",
    **{name: "tiling.stores.layout" for name in (
        "DONE", "HRMS", "MOSAIC_LAYOUT", "MS", "PAN", "SCENE_LAYOUT", "TILE_MISSING", "TILE_NODATA", "TILE_SHARPENED")},
    **{name: "tiling.stores.atomic" for name in ("built_beside", "require_folder_for", "sha256_file", "writing")},
    **{name: "tiling.stores.attrs" for name in ("MosaicAttrs", "SceneAttrs", "store_attrs")},
    **{name: "tiling.stores.scene" for name in ("nodata_mask", "open_scene", "write_scene_store")},
    **{name: "tiling.stores.mosaic" for name in (
        "check_run_settings", "create_mosaic_store", "missing_tiles", "mosaic_grid", "open_mosaic",
        "record_provenance")},
}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    if name in _PUBLIC:
        return getattr(import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'tiling' has no attribute {name!r}")
