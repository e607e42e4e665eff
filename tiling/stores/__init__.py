"""The Zarr layouts (``layout``): scene and mosaic stores (``scene``, ``mosaic``), training stores (``training``),
their typed attributes (``attrs``) and atomic writing (``atomic``)."""

__all__ = ["atomic", "attrs", "layout", "mosaic", "scene", "training"]
