"""The tile grid of the pipeline: re-exported from ``ssdiff_model.inference.tile_grid``, where it lives so that
``Pansharpener.sharpen`` cuts images with the same code (imports point from tiling down to ssdiff_model)."""
from ssdiff_model.inference.tile_grid import NETWORK_SIZE_MULTIPLE, Tile, TileGrid, read_window

__all__ = ["NETWORK_SIZE_MULTIPLE", "Tile", "TileGrid", "read_window"]
