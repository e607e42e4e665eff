"""Position-keyed starting noise of the pipeline: re-exported from ``ssdiff_model.inference.position_noise``, where it
lives
so that ``Pansharpener.sharpen`` draws the same noise with the same code."""
from ssdiff_model.inference.position_noise import position_noise, window_noise

__all__ = ["position_noise", "window_noise"]
