"""Sharpening with a checkpoint: the tiled ``Pansharpener``, its tile grid and noise, scene adaptation, xarray entry."""
