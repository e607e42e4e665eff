"""SSDiff pansharpening: the network, its diffusion, training with L-BAF, checkpoints, and the science around it.

This package knows nothing of Ray, Prefect or Zarr. The public entry points are imported lazily so that, for
example, `ssdiff_model.science.metrics` can be used without loading torch.
"""
from importlib import import_module

_PUBLIC = {
    "SSDiffNet": "ssdiff_model.model.network",
    "GaussianDiffusion": "ssdiff_model.model.diffusion",
    "Pansharpener": "ssdiff_model.inference.pansharpener",
    "sharpen_dataarray": "ssdiff_model.inference.xarray_api",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    if name in _PUBLIC:
        return getattr(import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'ssdiff_model' has no attribute {name!r}")
