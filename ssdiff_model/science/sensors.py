"""Sensor table: names, MTF gains at Nyquist, bit depth and band names of the sensors the project knows.

The MTF gains are those of the community's MATLAB toolbox (Vivone et al. 2020, as packaged in the DLPan-Toolbox):
the MS gains come from `genMTF.m`, the PAN gains from `MTF_PAN.m`. Sensors the toolbox does not list
(Pleiades, SPOT-6, GaoFen-2, Landsat) use its generic gains (`otherwise` branch: 0.3 for every MS band, 0.15 for
PAN), exactly as the toolbox's `'none'` does: no sourced Nyquist gains are at hand for them, so none are made up.

Band-count rule (`Sensor.band_gains`): the toolbox builds one filter per entry of its gain table and `MTF.m`
uses the first `nbands` of them, so an image with fewer bands than the table gets the first gains (the
toolbox's behaviour); an image with more bands than the table is an error (MATLAB fails on it too) unless
the sensor is generic, whose gain applies to any band count.
"""
from __future__ import annotations

from dataclasses import dataclass

from ssdiff_model.errors import BadInput

__all__ = ["GENERIC_MS_GAIN", "GENERIC_PAN_GAIN", "SENSORS", "Sensor", "get_sensor", "mtf_sensor"]

GENERIC_MS_GAIN = 0.3
GENERIC_PAN_GAIN = 0.15


@dataclass(frozen=True)
class Sensor:
    """One sensor. `ms_gains` empty means generic: `GENERIC_MS_GAIN` for any number of bands."""

    name: str  # the toolbox's spelling where the toolbox knows the sensor
    aliases: tuple[str, ...]
    ms_gains: tuple[float, ...]
    pan_gain: float
    bits: int
    band_names: tuple[str, ...]
    default_ratio: int = 4

    @property
    def is_generic(self) -> bool:
        return not self.ms_gains

    def band_gains(self, nbands: int) -> tuple[float, ...]:
        """Nyquist gains for an image of `nbands` bands (see the module docstring for the rule)."""
        if nbands < 1:
            raise BadInput(f"nbands must be at least 1, got {nbands}")
        if self.is_generic:
            return (GENERIC_MS_GAIN,) * nbands
        if nbands > len(self.ms_gains):
            raise BadInput(
                f"sensor {self.name!r} has MTF gains for {len(self.ms_gains)} bands but the image has {nbands}; "
                f"use sensor 'none' for the generic gains")
        return self.ms_gains[:nbands]


_VNIR4 = ("blue", "green", "red", "nir")
_WV8 = ("coastal", "blue", "green", "yellow", "red", "red_edge", "nir1", "nir2")

SENSORS: tuple[Sensor, ...] = (
    Sensor("QB", ("quickbird", "qb2"), (0.34, 0.32, 0.30, 0.22), 0.15, 11, _VNIR4),
    Sensor("IKONOS", ("ik", "ikonos2"), (0.26, 0.28, 0.29, 0.28), 0.17, 11, _VNIR4),
    Sensor("GeoEye1", ("geoeye-1", "geoeye", "ge1", "ge"), (0.23, 0.23, 0.23, 0.23), 0.16, 11, _VNIR4),
    Sensor("WV2", ("worldview-2", "worldview2"), (0.35,) * 7 + (0.27,), 0.11, 11, _WV8),
    Sensor("WV3", ("worldview-3", "worldview3"), (0.325, 0.355, 0.360, 0.350, 0.365, 0.360, 0.335, 0.315),
           0.14, 11, _WV8),
    # genMTF.m and MTF_PAN.m group WV4 with GeoEye1.
    Sensor("WV4", ("worldview-4", "worldview4"), (0.23, 0.23, 0.23, 0.23), 0.16, 11, _VNIR4),
    Sensor("none", ("generic", "unknown"), (), GENERIC_PAN_GAIN, 11, ()),
    Sensor("Pleiades", ("pleiades-1", "phr"), (), GENERIC_PAN_GAIN, 12, _VNIR4),
    Sensor("GF2", ("gaofen-2", "gaofen2"), (), GENERIC_PAN_GAIN, 10, _VNIR4),
    # SPOT-6/7 (1.5 m PAN, 6 m MS, ratio 4) quantise to 12 bits; no toolbox gains, so the generic ones.
    Sensor("SPOT6", ("spot-6", "spot 6", "spot7", "spot-7"), (), GENERIC_PAN_GAIN, 12, _VNIR4),
    Sensor("Landsat7", ("landsat-7", "l7", "etm+"), (), GENERIC_PAN_GAIN, 8,
           ("blue", "green", "red", "nir", "swir1", "swir2"), default_ratio=2),
    # OLI quantises to 12 bits, but Level-1 products store the samples rescaled to 16 bits.
    Sensor("Landsat8", ("landsat-8", "l8", "oli"), (), GENERIC_PAN_GAIN, 16,
           ("coastal", "blue", "green", "red", "nir", "swir1", "swir2"), default_ratio=2),
)

_BY_KEY = {key.lower(): s for s in SENSORS for key in (s.name, *s.aliases)}


def get_sensor(sensor: str | Sensor) -> Sensor:
    """The sensor named `sensor` (toolbox name or alias, any case); a `Sensor` is returned as it is."""
    if isinstance(sensor, Sensor):
        return sensor
    if not isinstance(sensor, str):
        raise BadInput(f"sensor must be a name or a Sensor, got {type(sensor).__name__}")
    try:
        return _BY_KEY[sensor.strip().lower()]
    except KeyError:
        known = ", ".join(s.name for s in SENSORS)
        raise BadInput(f"unknown sensor {sensor!r}; known sensors: {known} (aliases such as 'worldview-3' "
                         f"and any letter case are accepted)") from None


def mtf_sensor(name: str | None, bands: int | None = None) -> str:
    """The sensor whose MTF filters an image of ``name`` (and ``bands`` bands) gets: its own when the toolbox knows
    it and has gains for that many bands, else the toolbox's generic one ('none'), as the toolbox does for sensors
    it does not list (a multi-sensor checkpoint's "GeoEye1+QB" included).

    Args:
        name: a sensor name or alias, or None.
        bands: the image's band count (None: not checked).

    Returns:
        The sensor's toolbox name, or "none".
    """
    try:
        sensor = get_sensor(name or "none")
        if bands is not None:
            sensor.band_gains(bands)
    except ValueError:
        return "none"
    return sensor.name
