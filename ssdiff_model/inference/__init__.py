"""Sharpening with a checkpoint.

Modules: ``pansharpener`` (``Pansharpener``: a checkpoint ready to sharpen arrays, tiled like the pipeline),
``adaptation`` (L-BAF on the scene itself), ``xarray_api`` (``sharpen_dataarray``: DataArrays in and out).
Internal, shared with ``tiling``: ``tiled`` (the tile loop), ``tile_grid`` (tile geometry), ``position_noise``
(position-keyed starting noise).
"""
__all__ = ["adaptation", "pansharpener", "xarray_api"]
