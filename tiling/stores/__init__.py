"""The Zarr layouts: scene, mosaic and training stores, their typed attributes and atomic writing."""
