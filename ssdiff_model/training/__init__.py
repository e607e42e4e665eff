"""Training SSDiff: the one training configuration (``config``), the loop with L-BAF phases (``loop``), example
making (``examples``), the split by scene (``split``) and validation (``validation``)."""

__all__ = ["config", "examples", "loop", "split", "validation"]
