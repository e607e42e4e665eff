"""The pair types every reader returns: one PAN and its low-resolution MS (`PansharpeningPair`), or a file of many
(`PansharpeningBatch`, a PanCollection file).

Both hold channel-first float32 arrays in the file's digital numbers (DN), never rescaled: `full_scale` says which
DN is the sensor's maximum (2047 for 11-bit data, 255 for uint8, 1.0 for data already scaled to [0, 1]), and the
model divides by it. The fields both share (the images, the ratio, the radiometry, the sensor and band names, the
files read) are written once, in `PansharpeningData`; a pair adds its georeferencing and notes.

This module loads no reader: the science modules (Wald's protocol, registration) import it for the type alone.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ssdiff_model.errors import BadInput
from ssdiff_model.science.radiometry import FullScale
from ssdiff_model.science.resample import check_pair, check_ratio

__all__ = ["PansharpeningBatch", "PansharpeningData", "PansharpeningPair"]


@dataclass
class PansharpeningData:
    """What a pair and a batch share, in this order (their constructors' positional order too).

    `pan` PAN image(s); `ms_lr` the low-resolution MS; `ratio` the PAN / MS pixel ratio; `full_scale` the DN of the
    sensor's maximum and `bits` its bit depth when known; `sensor` the toolbox's sensor name (None when unknown);
    `band_names` one per MS band; `gt` the reference of a reduced-resolution pair and `lms` the MS already upsampled
    by the data provider (None when absent); `source` the files read; `ms_degradation` how the MS relates to the
    scene at the PAN's resolution: "mtf" (the sensor's MTF then decimation: a sensor's own MS, Wald's protocol) or
    "bicubic" (MATLAB's bicubic imresize: PanCollection's examples), what back-projection degrades with.
    """

    pan: np.ndarray
    ms_lr: np.ndarray
    ratio: int
    full_scale: float
    bits: int | None = None
    sensor: str | None = None
    band_names: tuple[str, ...] = ()
    gt: np.ndarray | None = None
    lms: np.ndarray | None = None
    source: tuple[Path, ...] = ()
    ms_degradation: str = "mtf"


@dataclass
class PansharpeningPair(PansharpeningData):
    """One PAN image and its low-resolution MS, in DN, channel-first.

    `pan` (H, W); `ms_lr` (B, H/r, W/r); `gt` (B, H, W) the reference when the pair is a reduced-resolution one;
    `lms` (B, H, W) the MS already upsampled by the data provider. `crs`, `pan_transform`, `ms_transform` are the
    rasterio CRS and affine transforms of GeoTIFF inputs, exactly as the files carry them (None when absent).
    `notes` records every adjustment a reader made (a crop, a decimation) so nothing happens silently.
    """

    crs: Any = None
    pan_transform: Any = None
    ms_transform: Any = None
    notes: tuple[str, ...] = ()
    radiometry: FullScale | None = None   # how full_scale was decided (GeoTIFF pairs), for the user to be told

    def __post_init__(self):
        where = ", ".join(str(p) for p in self.source) or "pansharpening pair"
        if self.pan.ndim != 2 or self.ms_lr.ndim != 3:
            raise BadInput(f"{where}: PAN must be (H, W) and MS (B, h, w), got {self.pan.shape} and {self.ms_lr.shape}")
        try:
            check_pair(self.pan, self.ms_lr, check_ratio(self.ratio))
        except ValueError as err:
            raise BadInput(f"{where}: mismatched sizes: {err}") from None
        full_res = (self.ms_lr.shape[0], *self.pan.shape)
        for name in ("gt", "lms"):
            image = getattr(self, name)
            if image is not None and image.shape != full_res:
                raise BadInput(f"{where}: {name} has shape {image.shape}, expected {full_res} "
                               f"(MS bands on the PAN grid)")
        if not self.band_names:
            self.band_names = tuple(f"B{i + 1}" for i in range(self.n_bands))
        if len(self.band_names) != self.n_bands:
            raise BadInput(f"{where}: {len(self.band_names)} band names for {self.n_bands} MS bands")

    @property
    def n_bands(self) -> int:
        return self.ms_lr.shape[0]


@dataclass
class PansharpeningBatch(PansharpeningData):
    """A PanCollection file: `pan` (N, H, W), `ms_lr` (N, B, h, w), `gt` / `lms` (N, B, H, W) or None."""

    def __len__(self) -> int:
        return self.pan.shape[0]

    def pair(self, index: int) -> PansharpeningPair:
        """Example `index` of the batch as a pair.

        Args:
            index: which example (0-based).

        Returns:
            The example's pair, with the batch's ratio, radiometry, sensor, band names and source.
        """
        def pick(images):
            return None if images is None else images[index]

        return PansharpeningPair(
            pan=self.pan[index], ms_lr=self.ms_lr[index], gt=pick(self.gt), lms=pick(self.lms), ratio=self.ratio,
            full_scale=self.full_scale, bits=self.bits, sensor=self.sensor, band_names=self.band_names,
            source=self.source, notes=(f"example {index} of {len(self)}",), ms_degradation=self.ms_degradation,
        )

    def __iter__(self) -> Iterator[PansharpeningPair]:
        return (self.pair(i) for i in range(len(self)))
