"""Readers for the data layouts the pansharpening community ships, all returning one shape of pair.

Every reader returns channel-first float32 arrays in the file's digital numbers (DN), never rescaled: `full_scale`
says which DN is the sensor's maximum (2047 for 11-bit data, 255 for uint8, 1.0 for data already scaled to [0, 1]),
and the model divides by it. Layouts covered:

- PanCollection (`read_pancollection`): `.h5` or `.mat` batches of patches with keys `gt`, `ms`, `lms`, `pan`, stored
  N x H x W x C (the .mat files) or N x C x H x W (the .h5 files); the layout is read off the shapes.
- Full-resolution `.mat` pairs (`read_mat_pair`): the toolbox's `I_PAN` + `I_MS_LR` / `I_MS` (+ `sensor`, `ratio`, `L`),
  the Pleiades `pan` + `lrms` + `gt` files (floats in [0, 1]) and the Landsat-7 "fusebox" pairs `N_pan.mat`
  (`cropped_gray`) + `N_ms.mat` (`cropped_im`).
- GeoTIFF pairs (`read_geotiff_pair`) through rioxarray, keeping the CRS and transforms exactly as the files give them.

`read_pair` dispatches on extension and keys; `SHARED_SETS` / `iter_shared_sets` list every pair of the team's
`shared/data` folder (its MANIFEST.md) with the facts a test or a training run needs.
"""
from __future__ import annotations

import dataclasses
import math
import os
import re
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from affine import Affine

from ssdiff_model.errors import BadInput
from ssdiff_model.science.radiometry import FullScale, RadiometryError, infer_full_scale
from ssdiff_model.science.resample import check_pair, check_ratio, decimate, mtf_filter
from ssdiff_model.science.sensors import get_sensor

PathLike = str | Path

LANDSAT7_FUSEBOX_BANDS = ("red", "green", "blue", "nir", "swir1", "swir2")
# The FGF-GAN Landsat-8 files keep every OLI/TIRS band but the PAN, red, green and blue first (their RGB_indexes are
# 1:3): the darkest pixels' share of the median rises from band 1 to 4, as haze makes it rise from red to coastal.
LANDSAT8_FGFGAN_BANDS = ("red", "green", "blue", "coastal", "nir", "swir1", "swir2", "cirrus", "tirs1", "tirs2")
# The order the 4-band family trains (blue, green, red, nir): every 4-band set of SHARED_SETS loads in it.
VNIR4_BANDS = ("blue", "green", "red", "nir")


@dataclass
class PansharpeningPair:
    """One PAN image and its low-resolution MS, in DN, channel-first.

    `pan` (H, W); `ms_lr` (B, H/r, W/r); `gt` (B, H, W) the reference when the pair is a reduced-resolution one;
    `lms` (B, H, W) the MS already upsampled by the data provider. `crs`, `pan_transform`, `ms_transform` are the
    rasterio CRS and affine transforms of GeoTIFF inputs, exactly as the files carry them (None when absent).
    `notes` records every adjustment a reader made (a crop, a decimation) so nothing happens silently.
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
                raise BadInput(f"{where}: {name} has shape {image.shape}, expected {full_res} (MS bands on the PAN grid)")
        if not self.band_names:
            self.band_names = tuple(f"B{i + 1}" for i in range(self.n_bands))
        if len(self.band_names) != self.n_bands:
            raise BadInput(f"{where}: {len(self.band_names)} band names for {self.n_bands} MS bands")

    @property
    def n_bands(self) -> int:
        return self.ms_lr.shape[0]


@dataclass
class PansharpeningBatch:
    """A PanCollection file: `pan` (N, H, W), `ms_lr` (N, B, h, w), `gt` / `lms` (N, B, H, W) or None."""

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

    def __len__(self) -> int:
        return self.pan.shape[0]

    def pair(self, index: int) -> PansharpeningPair:
        def pick(images):
            return None if images is None else images[index]

        return PansharpeningPair(
            pan=self.pan[index], ms_lr=self.ms_lr[index], gt=pick(self.gt), lms=pick(self.lms), ratio=self.ratio,
            full_scale=self.full_scale, bits=self.bits, sensor=self.sensor, band_names=self.band_names,
            source=self.source, notes=(f"example {index} of {len(self)}",),
        )

    def __iter__(self) -> Iterator[PansharpeningPair]:
        return (self.pair(i) for i in range(len(self)))


# ----------------------------------------------------------------------------------------------------------------
# Shared helpers: checks, sensors, bit depth
# ----------------------------------------------------------------------------------------------------------------

def _shape_ratio(where: str, pan_hw: Sequence[int], ms_hw: Sequence[int]) -> int:
    """The integer ratio PAN/MS read off the shapes, or a clear error."""
    ratios = (pan_hw[0] / ms_hw[0], pan_hw[1] / ms_hw[1])
    if ratios[0] != ratios[1] or not ratios[0].is_integer() or ratios[0] < 1:
        raise BadInput(f"{where}: mismatched sizes: PAN {pan_hw[0]}x{pan_hw[1]} vs MS {ms_hw[0]}x{ms_hw[1]} gives a "
                         f"non-integer or unequal ratio ({ratios[0]:.3f} x {ratios[1]:.3f})")
    return int(ratios[0])


def _sensor(name: str | None):
    """The `sensors.Sensor` for a name; None when no name is given or the name is unknown to `sensors.py`."""
    if name is None:
        return None
    try:
        return get_sensor(name)
    except ValueError:
        return None


def _describe(sensor_name: str | None, band_names, n_bands: int) -> tuple[str | None, tuple[str, ...]]:
    """Canonical sensor name (the toolbox's) and band names: given ones, else the sensor's, else B1..Bn."""
    sensor = _sensor(sensor_name)
    canonical = sensor.name if sensor is not None else sensor_name
    if band_names:
        return canonical, tuple(band_names)
    return canonical, sensor.band_names if sensor is not None and len(sensor.band_names) == n_bands else ()


def _radiometry(where: str, images: Sequence[np.ndarray], sensor_name: str | None, bits: int | None = None,
                full_scale: float | None = None, dtype=None) -> tuple[int | None, float, FullScale]:
    """(bits, full_scale, the decision) of raw arrays (or float copies with NaN nodata, ``dtype`` then naming the
    files' type), by precedence: caller or file metadata (`L`), then ``radiometry.infer_full_scale`` with the
    sensor's bit depth as its default. A RadiometryError (a ValueError) names ``where``."""
    if full_scale is None and bits is not None:
        full_scale = float(2 ** int(bits) - 1)
    sensor = _sensor(sensor_name)
    dtype = np.result_type(*images) if dtype is None else dtype
    try:
        decided = infer_full_scale(images[0], images[1], dtype=dtype, declared=full_scale,
                                   sensor_default=float(2**sensor.bits - 1) if sensor is not None else None)
    except RadiometryError as err:
        raise RadiometryError(f"{where}: {err}") from None
    return (int(bits) if bits is not None else decided.bits), decided.value, decided


def _as_float32(where: str, name: str, image: np.ndarray, nodata: np.ndarray | None = None) -> np.ndarray:
    """float32 DN; pixels flagged in the boolean ``nodata`` become NaN, any other non-finite value is an error."""
    image = np.asarray(image)
    if image.dtype.kind not in "uif":
        raise BadInput(f"{where}: {name} holds {image.dtype} values, not numbers")
    image = image.astype(np.float32)
    if nodata is not None:
        image[nodata] = np.nan
    bad = ~np.isfinite(image) if nodata is None else ~np.isfinite(image) & ~nodata
    if bad.any():
        raise BadInput(f"{where}: {name} contains {int(bad.sum())} NaN or infinite values")
    return image


def _unreadable(path: Path, err: Exception) -> BadInput:
    # rasterio's "Read failed. See previous exception for details." keeps GDAL's reason (a truncated strip, say)
    # in its cause: show that one.
    reason = err.__cause__ if err.__cause__ is not None else err
    return BadInput(f"{path}: unreadable or corrupt file ({type(reason).__name__}: {reason})")


def _as_path(path: PathLike) -> Path | str:
    """A local path as a Path; a URL (s3://, gs://, https://...) as its text, which GDAL reads through its virtual
    file systems (/vsis3/, /vsicurl/) by byte range, and which Path would corrupt (it folds the ``//``)."""
    text = os.fspath(path)
    if "://" in text and not text.startswith("file://"):
        return text
    return Path(path)


def _require_file(path: PathLike) -> Path | str:
    path = _as_path(path)
    if isinstance(path, str) or str(path).startswith("/vsi"):
        return path   # an object or a GDAL virtual file: the reader's own error says whether it is there
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    return path


# ----------------------------------------------------------------------------------------------------------------
# .mat (v5 via scipy, v7.3 via h5py) and .h5 files
# ----------------------------------------------------------------------------------------------------------------

def _load_arrays(path: PathLike) -> dict[str, np.ndarray]:
    """Every variable of a .mat (v5 or v7.3) or .h5 file, arrays in MATLAB's / the writer's axis order."""
    import h5py
    import scipy.io

    path = _require_file(path)
    try:
        if h5py.is_hdf5(path):
            return _load_hdf5(path)
        variables = scipy.io.loadmat(path)
    except Exception as err:  # scipy and h5py raise many types (OSError, ValueError, MatReadError, zlib.error...)
        raise _unreadable(path, err) from err
    return {k: v for k, v in variables.items() if not k.startswith("__")}


def _variable_names(path: PathLike) -> set[str]:
    """The variables of a .mat / .h5 file, without loading them (PanCollection files run to gigabytes)."""
    import h5py
    import scipy.io

    path = _require_file(path)
    try:
        if h5py.is_hdf5(path):
            with h5py.File(path, "r") as f:
                return set(f.keys())
        return {name for name, _, _ in scipy.io.whosmat(path)}
    except Exception as err:
        raise _unreadable(path, err) from err


def _load_hdf5(path: Path) -> dict[str, np.ndarray]:
    import h5py

    arrays = {}
    with h5py.File(path, "r") as f:
        for key, item in f.items():
            if not isinstance(item, h5py.Dataset):
                continue
            data = item[()]
            matlab_class = item.attrs.get("MATLAB_class")
            if matlab_class is not None:
                # MATLAB v7.3 writes column-major arrays: h5py sees the axes reversed. Chars are uint16 codes.
                data = np.asarray(data).T
                if matlab_class in (b"char", "char"):
                    data = np.array(["".join(chr(c) for c in np.ravel(data))])
            arrays[key] = np.asarray(data)
    return arrays


def _missing_keys(path: Path, arrays: dict, wanted: str) -> BadInput:
    return BadInput(f"{path}: not a pansharpening pair: expected {wanted}, found keys {sorted(arrays)}")


def _scalar(value) -> int:
    return int(np.asarray(value).ravel()[0])


def _text(value) -> str:
    return str(np.asarray(value).ravel()[0]).strip()


def _hwc_to_chw(where: str, name: str, image: np.ndarray) -> np.ndarray:
    image = _as_float32(where, name, image)
    if image.ndim == 2:
        return image[None]
    if image.ndim != 3:
        raise BadInput(f"{where}: {name} has shape {image.shape}, expected (H, W, bands)")
    return np.ascontiguousarray(image.transpose(2, 0, 1))


# ----------------------------------------------------------------------------------------------------------------
# PanCollection
# ----------------------------------------------------------------------------------------------------------------

# PanCollection names its files after the sensor (train_wv3.h5, test_gf2_multiExm1.h5, train_qb.h5).
_PANCOLLECTION_SENSORS = {"wv3": "WV3", "wv2": "WV2", "wv4": "WV4", "qb": "QB", "gf2": "GF2", "ik": "IKONOS"}


def _pancollection_layout(path: Path, pan: np.ndarray, ms: np.ndarray) -> tuple[str, int]:
    """'nhwc' or 'nchw' and the ratio, read off the shapes: the PAN has no channel axis or a single one, and the MS is
    an integer factor smaller than the PAN. An ambiguous or inconsistent set of shapes is an error, never a guess."""
    if ms.ndim != 4 or pan.ndim not in (3, 4):
        raise BadInput(f"{path}: expected ms (N, ...) with 4 axes and pan with 3 or 4, got ms {ms.shape}, pan {pan.shape}")
    pan_layouts = {"nhwc", "nchw"}
    if pan.ndim == 4:
        pan_layouts = {name for name, single in (("nchw", pan.shape[1] == 1), ("nhwc", pan.shape[3] == 1)) if single}
        if not pan_layouts:
            raise BadInput(f"{path}: pan {pan.shape} has no single-channel axis")
    height, width = (pan.shape[1], pan.shape[2]) if pan.ndim == 3 or "nhwc" in pan_layouts else pan.shape[2:]
    candidates = {}
    for layout, (h, w) in (("nhwc", ms.shape[1:3]), ("nchw", ms.shape[2:4])):
        if layout in pan_layouts and h < height and height % h == 0 and width % w == 0 and height // h == width // w:
            candidates[layout] = height // h
    if len(candidates) != 1:
        problem = "ambiguous layout" if candidates else "mismatched sizes"
        raise BadInput(f"{path}: {problem}: cannot tell NHWC from NCHW with pan {pan.shape} and ms {ms.shape} "
                         f"(the MS must be an integer factor smaller than the PAN on exactly one reading)")
    if ms.shape[0] != pan.shape[0]:
        raise BadInput(f"{path}: pan holds {pan.shape[0]} examples but ms {ms.shape[0]}")
    (layout, ratio), = candidates.items()
    return layout, ratio


def read_pancollection(path: PathLike, sensor: str | None = None) -> PansharpeningBatch:
    """A PanCollection .h5 / .mat file as a batch (use `batch.pair(i)` or iterate for single pairs).

    The sensor comes from the argument, else from the file name (`train_wv3.h5` -> WV3). Arrays are loaded into
    memory as float32 (a full PanCollection training file is a few GB)."""
    path = _require_file(path)
    arrays = _load_arrays(path)
    if "ms" not in arrays or "pan" not in arrays:
        raise _missing_keys(path, arrays, "PanCollection keys 'ms' and 'pan' (and optionally 'gt', 'lms')")
    pan, ms = np.asarray(arrays["pan"]), np.asarray(arrays["ms"])
    layout, ratio = _pancollection_layout(path, pan, ms)

    def channel_first(name: str, image: np.ndarray) -> np.ndarray:
        image = _as_float32(str(path), name, image)
        return np.ascontiguousarray(image.transpose(0, 3, 1, 2)) if layout == "nhwc" else image

    ms_lr = channel_first("ms", ms)
    pan_f = _as_float32(str(path), "pan", pan).reshape(pan.shape[0], ms_lr.shape[2] * ratio, ms_lr.shape[3] * ratio)
    extra = {}
    for name in ("gt", "lms"):
        if name in arrays:
            extra[name] = channel_first(name, np.asarray(arrays[name]))
            expected = (ms_lr.shape[0], ms_lr.shape[1], *pan_f.shape[1:])
            if extra[name].shape != expected:
                raise BadInput(f"{path}: mismatched sizes: {name} is {arrays[name].shape} in {layout.upper()}, "
                                 f"expected {expected} channel-first")
    if sensor is None:
        tokens = re.split(r"[^a-z0-9]+", path.stem.lower())
        sensor = next((_PANCOLLECTION_SENSORS[t] for t in tokens if t in _PANCOLLECTION_SENSORS), None)
    raw = [np.asarray(arrays[k]) for k in ("pan", "ms")]
    bits, full_scale, _ = _radiometry(str(path), raw, sensor)
    sensor, band_names = _describe(sensor, (), ms_lr.shape[1])
    return PansharpeningBatch(pan=pan_f, ms_lr=ms_lr, gt=extra.get("gt"), lms=extra.get("lms"), ratio=ratio,
                              full_scale=full_scale, bits=bits, sensor=sensor, band_names=band_names, source=(path,))


# ----------------------------------------------------------------------------------------------------------------
# Full-resolution .mat pairs
# ----------------------------------------------------------------------------------------------------------------

def read_mat_pair(path: PathLike, ms_path: PathLike | None = None, sensor: str | None = None) -> PansharpeningPair:
    """A .mat pair: the toolbox's (`I_PAN`, `I_MS_LR` or `I_MS`, optional `I_GT`, `sensor`, `ratio`, `L`), Pleiades
    (`pan`, `lrms`, `gt`) or a Landsat-7 fusebox pair (`N_pan.mat` + `N_ms.mat`; give either file, the other is found
    beside it, or pass it as `ms_path`)."""
    path = _require_file(path)
    arrays = _load_arrays(path)
    if "I_PAN" in arrays:
        return _toolbox_pair(path, arrays, sensor)
    if "lrms" in arrays and "pan" in arrays:
        return _pleiades_pair(path, arrays, sensor)
    if "cropped_gray" in arrays or "cropped_im" in arrays:
        return _fusebox_pair(path, arrays, ms_path)
    raise _missing_keys(path, arrays, "'I_PAN' + 'I_MS_LR'/'I_MS', 'pan' + 'lrms', or 'cropped_gray'/'cropped_im'")


def _toolbox_pair(path: Path, arrays: dict, sensor: str | None) -> PansharpeningPair:
    where = str(path)
    pan = _as_float32(where, "I_PAN", arrays["I_PAN"])
    if pan.ndim != 2:
        raise BadInput(f"{path}: I_PAN has shape {pan.shape}, expected (H, W)")
    # The toolbox calls the upsampled MS `I_MS` and the original one `I_MS_LR`; PNN's files store the original MS
    # under `I_MS`. Which one a file holds is read off its size.
    candidates = {k: _hwc_to_chw(where, k, arrays[k]) for k in ("I_MS_LR", "I_MS") if k in arrays}
    low_res = {k: v for k, v in candidates.items() if v.shape[1:] != pan.shape}
    if not low_res:
        raise _missing_keys(path, arrays, "a low-resolution MS ('I_MS_LR', or 'I_MS' smaller than 'I_PAN')")
    ms_key = "I_MS_LR" if "I_MS_LR" in low_res else "I_MS"
    ms_lr = low_res[ms_key]
    lms = next((v for k, v in candidates.items() if k not in low_res), None)
    ratio = _shape_ratio(where, pan.shape, ms_lr.shape[1:])
    if "ratio" in arrays and _scalar(arrays["ratio"]) != ratio:
        raise BadInput(f"{path}: the file says ratio {_scalar(arrays['ratio'])} but PAN {pan.shape} vs {ms_key} "
                         f"{ms_lr.shape[1:]} gives {ratio}")
    sensor = sensor or (_text(arrays["sensor"]) if "sensor" in arrays else None)
    declared_bits = _scalar(arrays["L"]) if "L" in arrays else None
    bits, full_scale, _ = _radiometry(where, [arrays["I_PAN"], arrays[ms_key]], sensor, bits=declared_bits)
    sensor, band_names = _describe(sensor, (), ms_lr.shape[0])
    gt = _hwc_to_chw(where, "I_GT", arrays["I_GT"]) if "I_GT" in arrays else None
    return PansharpeningPair(pan=pan, ms_lr=ms_lr, gt=gt, lms=lms, ratio=ratio, full_scale=full_scale, bits=bits,
                             sensor=sensor, band_names=band_names, source=(path,))


def _pleiades_pair(path: Path, arrays: dict, sensor: str | None) -> PansharpeningPair:
    where = str(path)
    pan = _as_float32(where, "pan", arrays["pan"])
    ms_lr = _hwc_to_chw(where, "lrms", arrays["lrms"])
    gt = _hwc_to_chw(where, "gt", arrays["gt"]) if "gt" in arrays else None
    ratio = _shape_ratio(where, pan.shape, ms_lr.shape[1:])
    bits, full_scale, _ = _radiometry(where, [arrays["pan"], arrays["lrms"]], sensor)
    sensor, band_names = _describe(sensor, (), ms_lr.shape[0])
    return PansharpeningPair(pan=pan, ms_lr=ms_lr, gt=gt, ratio=ratio, full_scale=full_scale, bits=bits,
                             sensor=sensor, band_names=band_names, source=(path,))


def _fusebox_pair(path: Path, arrays: dict, ms_path: PathLike | None) -> PansharpeningPair:
    """Landsat-7 ETM+ crops: bands R, G, B, NIR, SWIR1, SWIR2 (the authors swapped bands 1 and 3), uint8, ratio 2."""
    if "cropped_gray" in arrays:
        pan_path, pan_arrays = path, arrays
        ms_path = Path(ms_path) if ms_path else path.with_name(path.name.replace("_pan.mat", "_ms.mat"))
        ms_arrays = _load_arrays(ms_path)
    else:
        ms_path, ms_arrays = path, arrays
        pan_path = path.with_name(path.name.replace("_ms.mat", "_pan.mat"))
        pan_arrays = _load_arrays(pan_path)
    if "cropped_gray" not in pan_arrays:
        raise _missing_keys(pan_path, pan_arrays, "'cropped_gray' (the PAN of a Landsat-7 fusebox pair)")
    if "cropped_im" not in ms_arrays:
        raise _missing_keys(Path(ms_path), ms_arrays, "'cropped_im' (the MS of a Landsat-7 fusebox pair)")
    where = f"{pan_path}, {ms_path}"
    pan = _as_float32(where, "cropped_gray", pan_arrays["cropped_gray"])
    ms_lr = _hwc_to_chw(where, "cropped_im", ms_arrays["cropped_im"])
    ratio = _shape_ratio(where, pan.shape, ms_lr.shape[1:])
    bits, full_scale, _ = _radiometry(where, [pan_arrays["cropped_gray"], ms_arrays["cropped_im"]], "Landsat7")
    names = LANDSAT7_FUSEBOX_BANDS if ms_lr.shape[0] == len(LANDSAT7_FUSEBOX_BANDS) else ()
    return PansharpeningPair(pan=pan, ms_lr=ms_lr, ratio=ratio, full_scale=full_scale, bits=bits, sensor="Landsat7",
                             band_names=names, source=(pan_path, Path(ms_path)))


# ----------------------------------------------------------------------------------------------------------------
# GeoTIFF pairs
# ----------------------------------------------------------------------------------------------------------------

@dataclass
class _Raster:
    path: tuple[Path | str, ...]
    values: np.ndarray  # (bands, rows, cols), the file's dtype
    crs: Any
    transform: Any
    georeferenced: bool
    nodata: np.ndarray | None = None  # True where a pixel holds its file's declared nodata value (mask_nodata)


def _declared_nodata(values: np.ndarray, nodata: float | None) -> np.ndarray:
    if nodata is None:
        return np.zeros(values.shape, dtype=bool)
    return np.isnan(values) if np.isnan(nodata) else values == nodata


def _open_raster(paths: Sequence[Path], mask_nodata: bool = False) -> _Raster:
    """One raster from one file, or single-band files stacked in the given order (Landsat-style band files).

    Pixels holding a file's declared nodata value are an error, or with ``mask_nodata`` flagged in ``nodata``."""
    import rasterio.errors
    import rioxarray

    layers, grids, masks = [], [], []
    for path in paths:
        path = _require_file(path)
        try:
            with warnings.catch_warnings():
                # Files without a geotransform (vhr_4band_fr, wv2_rio) are expected: their identity transform is kept.
                warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
                # rioxarray 0.19 still multiplies affines with `*`, which affine 3 flags; not ours to fix.
                warnings.filterwarnings("ignore", "Use `@` matmul", PendingDeprecationWarning)
                with rioxarray.open_rasterio(path, mask_and_scale=False) as data:
                    values = data.values
                    # rioxarray reports the CRS of ground control points as the raster's when the grid has none
                    # (quickbird_toulouse: GCPs of the whole original scene); the grid's own CRS stays None then.
                    from_gcps = "gcps" in data.coords["spatial_ref"].attrs if "spatial_ref" in data.coords else False
                    crs = None if from_gcps else data.rio.crs
                    grids.append((crs, data.rio.transform(recalc=False), data.rio.nodata))
        except Exception as err:  # rasterio / GDAL raise RasterioIOError, CPLE_* errors and more
            raise _unreadable(path, err) from err
        nodata = grids[-1][2]
        masked = _declared_nodata(values, nodata)
        if not mask_nodata and nodata is not None and not np.isnan(nodata) and masked.any():
            raise BadInput(f"{path}: {int(masked.sum())} pixels hold the nodata value {nodata}")
        layers.append(values)
        masks.append(masked)
    first = grids[0]
    for path, grid, layer in zip(paths[1:], grids[1:], layers[1:]):
        if grid[:2] != first[:2] or layer.shape[1:] != layers[0].shape[1:]:
            raise BadInput(f"{path}: its grid differs from {paths[0]}'s: cannot stack them as bands of one image")
    values = np.concatenate(layers, axis=0)
    transform = first[1]
    nodata = np.concatenate(masks, axis=0) if mask_nodata and any(m.any() for m in masks) else None
    return _Raster(tuple(_as_path(p) for p in paths), values, first[0], transform, transform != Affine.identity(),
                   nodata)


def _align_grids(pan: _Raster, ms: _Raster, where: str) -> tuple[int, tuple[slice, slice], tuple[slice, slice], list]:
    """The ratio and the PAN / MS windows that make PAN exactly ratio x MS.

    Rule: shapes that are an exact integer multiple are taken as the data provider aligned them (transforms kept as
    given, even when PAirMax's put the MS origin 1.5 PAN pixels off), provided that files georeferenced with pixel
    sizes of their own cover the same ground within one MS pixel (a wrong transform is an error). Otherwise both files
    must be georeferenced with
    pixel sizes in an integer ratio; the MS origin is placed on the PAN grid (nearest PAN pixel, ties to the lower
    index; wv3_georef is off by exactly (1, 2) PAN pixels, Landsat-8 by half a PAN pixel) and both are cropped to the
    MS pixels whose r x r PAN block lies inside the PAN. The extents must agree within one MS pixel, else it is an
    error, never a silent resampling."""
    (_, H, W), (_, h, w) = pan.values.shape, ms.values.shape
    notes = []
    full = (slice(0, H), slice(0, W)), (slice(0, h), slice(0, w))
    distinct_pixels = pan.georeferenced and ms.georeferenced and (pan.transform.a, pan.transform.e) != (
        ms.transform.a, ms.transform.e)
    if H % h == 0 and W % w == 0 and H // h == W // w:
        ratio = H // h
        if distinct_pixels:
            pixel_ratio = ms.transform.a / pan.transform.a
            if not math.isclose(pixel_ratio, ratio, rel_tol=0.01):
                raise BadInput(f"{where}: mismatched grids: shapes give ratio {ratio} but pixel sizes "
                                 f"{pan.transform.a:g} and {ms.transform.a:g} give {pixel_ratio:.3f}")
            for axis in range(2):   # the shapes fit, but the files must also cover the same ground
                _require_same_extent(pan, ms, axis, where)
        elif pan.georeferenced and ms.georeferenced and ratio > 1:
            notes.append(f"PAN and MS carry the same pixel size ({pan.transform.a:g}): the MS transform is a copy of "
                         f"the PAN's; the ratio {ratio} comes from the shapes and the transforms are kept as given")
        return ratio, *full, notes
    if not distinct_pixels or pan.transform.b or pan.transform.d or ms.transform.b or ms.transform.d:
        raise BadInput(f"{where}: non-integer ratio: PAN {H}x{W} vs MS {h}x{w} ({H / h:.3f} x {W / w:.3f}) and no "
                         f"pair of north-up georeferenced grids to align them")
    pixel_ratios = (ms.transform.a / pan.transform.a, ms.transform.e / pan.transform.e)
    ratio = round(pixel_ratios[0])
    if ratio < 2 or any(not math.isclose(p, ratio, rel_tol=1e-3) for p in pixel_ratios):
        raise BadInput(f"{where}: non-integer ratio: pixel sizes {pan.transform.a:g} and {ms.transform.a:g} give "
                         f"{pixel_ratios[0]:.4f}")
    windows = []
    for axis, (n_pan, n_ms, pan_origin, ms_origin, pan_step) in enumerate((
            (H, h, pan.transform.f, ms.transform.f, pan.transform.e),
            (W, w, pan.transform.c, ms.transform.c, pan.transform.a))):
        _require_same_extent(pan, ms, axis, where)
        offset = (ms_origin - pan_origin) / pan_step  # MS origin in PAN pixels
        start = math.ceil(offset - 0.5 - 1e-6)  # nearest PAN pixel, ties to the lower index
        first = max(0, math.ceil(-start / ratio))
        last = min(n_ms, (n_pan - start) // ratio)
        windows.append((slice(start + ratio * first, start + ratio * last), slice(first, last)))
        if abs(offset - start) > 1e-3:
            notes.append(f"MS grid is {offset - start:+.2f} PAN pixels off the PAN grid along {'yx'[axis]}: kept, "
                         f"not resampled")
    (pan_rows, ms_rows), (pan_cols, ms_cols) = windows
    notes.append(f"cropped to whole MS pixels: PAN rows {pan_rows.start}:{pan_rows.stop} cols {pan_cols.start}:"
                 f"{pan_cols.stop} of {H}x{W}, MS rows {ms_rows.start}:{ms_rows.stop} cols {ms_cols.start}:"
                 f"{ms_cols.stop} of {h}x{w}")
    return ratio, (pan_rows, pan_cols), (ms_rows, ms_cols), notes


def _window(mask: np.ndarray | None, bands, window: tuple[slice, slice]) -> np.ndarray | None:
    return None if mask is None else mask[(bands, *window)]


def _axis_extent(raster: _Raster, axis: int) -> tuple[float, float, float]:
    """(first edge, last edge, pixel step) of a north-up raster along y (axis 0) or x (axis 1), in map units."""
    size = raster.values.shape[1 + axis]
    origin, step = (raster.transform.f, raster.transform.e) if axis == 0 else (raster.transform.c, raster.transform.a)
    return origin, origin + size * step, step


def _require_same_extent(pan: _Raster, ms: _Raster, axis: int, where: str) -> None:
    """PAN and MS must cover the same ground: their edges may differ by at most one MS pixel (a provider's
    half-pixel conventions), never more."""
    (pan_origin, pan_end, _), (ms_origin, ms_end, ms_step) = _axis_extent(pan, axis), _axis_extent(ms, axis)
    if max(abs(ms_origin - pan_origin), abs(ms_end - pan_end)) > abs(ms_step) * (1 + 1e-6):
        raise BadInput(f"{where}: mismatched grids: PAN and MS extents differ by more than one MS pixel along "
                         f"{'yx'[axis]} ({pan_origin:.3f}..{pan_end:.3f} vs {ms_origin:.3f}..{ms_end:.3f})")


def _decimate_ms_on_pan_grid(ms: _Raster, ratio: int, sensor_name: str | None):
    """MS that a provider already resampled onto the PAN grid, brought back to its native sampling: the sensor's
    MTF-matched low-pass, then every ratio-th pixel (the degradation of Wald's protocol). Returns the MS and its
    transform: pixels `ratio` times larger, whose centres are the kept pixels' centres."""
    values = decimate(mtf_filter(ms.values, sensor_name or "none", ratio), ratio)
    return values, decimated_transform(ms.transform, ratio) if ms.georeferenced else ms.transform


def decimated_transform(transform: Affine, ratio: int) -> Affine:
    """The transform of an image decimated by `resample.decimate`: pixels `ratio` times larger, centred on the
    centres of the kept pixels (0-based ratio//2, ratio//2 + ratio, ...)."""
    shift = ratio // 2 + 0.5 - ratio / 2  # top-left corner of a kept pixel's new footprint, in old pixels
    return transform @ Affine.translation(shift, shift) @ Affine.scale(ratio)


def read_geotiff_pair(pan_path: PathLike, ms_path: PathLike | Sequence[PathLike], gt_path: PathLike | None = None,
                      sensor: str | None = None, *, ratio: int | None = None, bits: int | None = None,
                      full_scale: float | None = None, band_names: Sequence[str] = (),
                      mask_nodata: bool = False) -> PansharpeningPair:
    """A PAN GeoTIFF and its MS GeoTIFF (or a list of single-band MS files, stacked in order), via rioxarray.

    The CRS (the PAN's; an MS CRS that differs is recorded in `notes`, a conflicting one is an error) and both
    transforms are kept exactly as the files carry them, wrong tags included. The ratio comes from the shapes when
    they are an exact multiple, else from the georeferencing (see `_align_grids`). An MS of the PAN's own size
    (quickbird_toulouse) needs `ratio=` its native ratio: it is then MTF-filtered and decimated back to it, recorded
    in `notes`. `bits` / `full_scale` override what the reader infers (see `_radiometry`).

    Pixels holding a file's declared nodata value are an error (a pair for training or scoring must be complete),
    or with `mask_nodata` NaN in the returned images (the nodata of a scene store; ingest reads scenes so)."""
    ms_paths = [_as_path(ms_path)] if isinstance(ms_path, (str, os.PathLike)) else [_as_path(p) for p in ms_path]
    pan, ms = _open_raster([_as_path(pan_path)], mask_nodata), _open_raster(ms_paths, mask_nodata)
    where = ", ".join(str(p) for p in (*pan.path, *ms.path))
    if pan.values.shape[0] != 1:
        raise BadInput(f"{pan_path}: a PAN must have one band, this file has {pan.values.shape[0]}")
    notes = []
    if pan.crs is not None and ms.crs is not None and pan.crs != ms.crs:
        raise BadInput(f"{where}: mismatched grids: PAN CRS {pan.crs} differs from MS CRS {ms.crs}")
    if (pan.crs is None) != (ms.crs is None):
        notes.append(f"PAN CRS {pan.crs}, MS CRS {ms.crs}: the pair keeps the PAN's, nothing is filled in")
    ms_values = ms.values
    if pan.values.shape[1:] == ms.values.shape[1:]:
        if not ratio or ratio < 2:
            raise BadInput(f"{where}: the MS has the PAN's size {pan.values.shape[1:]}: pass ratio= the native "
                             f"ratio to decimate it back, or give the low-resolution MS")
        if pan.values.shape[1] % ratio or pan.values.shape[2] % ratio:
            raise BadInput(f"{where}: mismatched sizes: {pan.values.shape[1:]} is not a multiple of ratio {ratio}")
        if ms.nodata is not None:   # the MTF filter would smear it over its whole footprint
            raise BadInput(f"{where}: the MS on the PAN grid holds nodata pixels: decimating it back to its "
                             f"native grid needs a complete image")
        ms_values, ms_transform = _decimate_ms_on_pan_grid(ms, ratio, sensor)
        notes.append(f"MS was on the PAN grid: MTF-filtered ({sensor or 'none'} gains) and decimated by {ratio}")
        pan_window, ms_window = (slice(None), slice(None)), (slice(None), slice(None))
        found_ratio = ratio
    else:
        found_ratio, pan_window, ms_window, grid_notes = _align_grids(pan, ms, where)
        notes += grid_notes
        if ratio is not None and ratio != found_ratio:
            raise BadInput(f"{where}: expected ratio {ratio}, the files give {found_ratio}")
        ms_transform = ms.transform @ Affine.translation(ms_window[1].start, ms_window[0].start)
    pan_transform = pan.transform @ Affine.translation(pan_window[1].start or 0, pan_window[0].start or 0)
    pan_image = _as_float32(where, "PAN", pan.values[0][pan_window], _window(pan.nodata, 0, pan_window))
    ms_image = _as_float32(where, "MS", ms_values[(slice(None), *ms_window)],
                           _window(ms.nodata, slice(None), ms_window))
    gt = None
    if gt_path is not None:
        gt_raster = _open_raster([_as_path(gt_path)])
        gt = _as_float32(str(gt_path), "GT", gt_raster.values[(slice(None), *pan_window)])
    # The decision is taken on the pixels the pair keeps (nodata as NaN), in the files' own type.
    bits, full_scale, radiometry = _radiometry(where, [pan_image, ms_image], sensor, bits=bits,
                                               full_scale=full_scale,
                                               dtype=np.result_type(pan.values.dtype, ms.values.dtype))
    sensor, names = _describe(sensor, band_names, ms_image.shape[0])
    return PansharpeningPair(
        pan=pan_image, ms_lr=ms_image, gt=gt, ratio=found_ratio, full_scale=full_scale, bits=bits, sensor=sensor,
        band_names=names, source=(*pan.path, *ms.path, *((_as_path(gt_path),) if gt_path else ())), crs=pan.crs,
        pan_transform=pan_transform, ms_transform=ms_transform, notes=tuple(notes), radiometry=radiometry)


# ----------------------------------------------------------------------------------------------------------------
# Dispatch
# ----------------------------------------------------------------------------------------------------------------

_TIFF = {".tif", ".tiff"}


def read_pair(*paths: PathLike, sensor: str | None = None, **options) -> PansharpeningPair | PansharpeningBatch:
    """Read any supported layout: GeoTIFFs as (PAN, MS[, GT]); a .mat / .h5 file by its keys (PanCollection files
    give a batch). Extra keyword options go to `read_geotiff_pair` for GeoTIFFs."""
    if not paths:
        raise BadInput("read_pair needs at least one file")
    paths = tuple(Path(p) for p in paths)
    if all(p.suffix.lower() in _TIFF for p in paths):
        if len(paths) not in (2, 3):
            raise BadInput(f"{', '.join(map(str, paths))}: a GeoTIFF pair is PAN, MS and an optional GT file")
        return read_geotiff_pair(*paths, sensor=sensor, **options)
    if options:
        raise BadInput(f"{paths[0]}: options {sorted(options)} only apply to GeoTIFF pairs")
    if len(paths) > 2 or any(p.suffix.lower() not in {".mat", ".h5", ".hdf5"} for p in paths):
        raise BadInput(f"{', '.join(map(str, paths))}: unsupported files (expected GeoTIFFs, or one .mat/.h5 file, "
                         f"or a Landsat-7 fusebox pair of .mat files)")
    keys = _variable_names(paths[0])
    if "ms" in keys and "pan" in keys:
        return read_pancollection(paths[0], sensor=sensor)
    return read_mat_pair(paths[0], ms_path=paths[1] if len(paths) == 2 else None, sensor=sensor)


def select_bands(data: PansharpeningPair | PansharpeningBatch, bands: Sequence[int] | None = None,
                 band_names: Sequence[str] = ()) -> PansharpeningPair | PansharpeningBatch:
    """`data` with only its MS bands `bands` (0-based, in that order; all of them when None), named `band_names`
    (else their names as read). The MS, reference and upsampled MS are cut alike; a pair's `notes` say so."""
    if bands is None and not band_names:
        return data
    n = data.ms_lr.shape[-3]
    where = ", ".join(str(p) for p in data.source) or "pansharpening data"
    index = list(range(n)) if bands is None else list(bands)
    if not index or min(index) < 0 or max(index) >= n:
        raise BadInput(f"{where}: has {n} MS bands, cannot select bands {index}")
    names = tuple(band_names) or tuple(data.band_names[i] for i in index)
    if len(names) != len(index):
        raise BadInput(f"{where}: {len(names)} band names for the {len(index)} bands kept")

    def pick(image):
        return None if image is None else np.ascontiguousarray(image[..., index, :, :])

    changes = dict(ms_lr=pick(data.ms_lr), gt=pick(data.gt), lms=pick(data.lms), band_names=names)
    if isinstance(data, PansharpeningPair):
        done = f"MS bands named {', '.join(names)}" if bands is None else f"MS bands {index} kept as {', '.join(names)}"
        changes["notes"] = (*data.notes, done)
    return dataclasses.replace(data, **changes)


# ----------------------------------------------------------------------------------------------------------------
# The team's shared data (shared/data/MANIFEST.md)
# ----------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SharedScene:
    """One pair (or one PanCollection file) of the shared data, with the MANIFEST's facts about it.

    `files` are relative to the data root, PAN first, then MS, then GT (read_pair's order); `options` go to the
    reader. `crs` is the CRS the files carry (a string such as "EPSG:32731", None when absent) for GeoTIFF sets.
    `bands` keeps these MS bands of the files (0-based) in this order and `band_names` names the bands so kept
    (`select_bands`): a set stored R, G, B, NIR loads as the other 4-band sets do, B, G, R, NIR. `n_bands` counts
    the bands a load gives."""

    dataset: str
    scene: str
    files: tuple[str, ...]
    sensor: str | None
    n_bands: int
    ratio: int
    bits: int | None
    full_scale: float
    has_gt: bool
    crs: str | None = None
    options: tuple[tuple[str, Any], ...] = ()
    bands: tuple[int, ...] | None = None
    band_names: tuple[str, ...] = ()
    root: Path | None = field(default=None, compare=False)

    @property
    def id(self) -> str:
        return f"{self.dataset}:{self.scene}"

    def paths(self, data_root: PathLike | None = None) -> tuple[Path, ...]:
        root = Path(data_root) if data_root is not None else self.root
        if root is None:
            raise BadInput(f"{self.id}: no data root given")
        return tuple(root / f for f in self.files)

    def load(self, data_root: PathLike | None = None) -> PansharpeningPair | PansharpeningBatch:
        data = read_pair(*self.paths(data_root), sensor=self.sensor, **dict(self.options))
        return select_bands(data, self.bands, self.band_names)

    def pairs(self, data_root: PathLike | None = None) -> Iterator[PansharpeningPair]:
        """Single pairs: the scene's pair, or every example of a PanCollection file."""
        loaded = self.load(data_root)
        yield from (loaded if isinstance(loaded, PansharpeningBatch) else (loaded,))


def _scene(dataset, scene, files, sensor, n_bands, bits, has_gt=False, ratio=4, full_scale=None, crs=None,
           options=None, bands=None, band_names=()) -> SharedScene:
    if full_scale is None:
        full_scale = float(2**bits - 1)
    return SharedScene(dataset, scene, tuple(files), sensor, n_bands, ratio, bits, full_scale, has_gt, crs,
                       tuple(sorted((options or {}).items())), None if bands is None else tuple(bands),
                       tuple(band_names))


def _pairmax(name: str, sensor: str, n_bands: int, has_gt: bool) -> SharedScene:
    folder = f"pairmax/{name}/RR"
    files = [f"{folder}/PAN.tif", f"{folder}/MS_LR.tif"] + ([f"{folder}/GT.tif"] if has_gt else [])
    # PAirMax's EPSG:32731 tag is wrong (London, Munich, Miami are not in UTM 31S): kept as given, never trusted.
    return _scene("pairmax", name, files, sensor, n_bands, 11, has_gt, crs="EPSG:32731")


SHARED_SETS: tuple[SharedScene, ...] = (
    _scene("pancollection_wv3_patches", "train_wv3_100", ["pancollection_wv3_patches/train_wv3_100.mat"], "WV3", 8,
           11, has_gt=True),
    _pairmax("GE_Lond_Urb", "GeoEye1", 4, True),
    _pairmax("W4_Mexi_Nat", "WV4", 4, True),
    _pairmax("W2_Miam_Mix", "WV2", 8, False),
    _pairmax("W3_Muni_Mix", "WV3", 8, False),
    _pairmax("W3_Muni_Nat", "WV3", 8, False),
    # Pleiades is no toolbox sensor: sensors.py gives it the toolbox's generic MTF gains.
    _scene("pleiades_rr", "pleiades_test", ["pleiades_rr/pleiades_test.mat"], "Pleiades", 4, None, True,
           full_scale=1.0),
    _scene("pnn_fr", "imgWV2", ["pnn_fr/imgWV2.mat"], "WV2", 8, 11),
    _scene("pnn_fr", "imgGE1", ["pnn_fr/imgGE1.mat"], "GeoEye1", 4, 8),
    _scene("pnn_fr", "imgIK", ["pnn_fr/imgIK.mat"], "IKONOS", 4, 11),
    # The QuickBird tiles carry a copied transform (2.4 "degrees" per pixel for both PAN and MS); kept as given.
    _scene("quickbird_fr", "0", ["quickbird_fr/0_pan.tif", "quickbird_fr/0_lr.tif"], "QB", 4, 11),
    _scene("quickbird_rr_train", "0", ["quickbird_rr_train/0_pan.tif", "quickbird_rr_train/0_lr.tif",
                                       "quickbird_rr_train/0_mul.tif"], "QB", 4, 11, True),
    # Unknown sensor: the bit depth is the smallest that holds each pair (Pan3 and Pan4 exceed 2047). The bands are
    # stored blue, green, red, nir: the darkest pixels' share of the median falls from band 1 to 3 as haze makes it
    # fall from blue to red (it does so on every 4-band set of known order; tests/test_readers.py checks it).
    *(_scene("vhr_4band_fr", str(n), [f"vhr_4band_fr/Pan{n}.tif", f"vhr_4band_fr/MS{n}.tif"], None, 4, bits,
             band_names=VNIR4_BANDS) for n, bits in ((2, 11), (3, 12), (4, 12))),
    # Byte for byte the files of vhr_4band_fr, with the sensors the MANIFEST infers from the source paper: Pan2/MS2
    # WorldView-2 (four of its eight bands), Pan3/MS3 and Pan4/MS4 Pleiades. The MANIFEST lists the bands as R, G,
    # B, NIR, but the files hold them blue, green, red, nir (the haze test above). MS3 stops at 2047 in every band
    # while Pan3 reaches 4095: Pleiades' 12 bits all the same. The training families take these scenes once.
    _scene("vhr_pairs_dgif", "2", ["vhr_pairs_dgif/Pan2.tif", "vhr_pairs_dgif/MS2.tif"], "WV2", 4, 11,
           band_names=VNIR4_BANDS),
    *(_scene("vhr_pairs_dgif", str(n), [f"vhr_pairs_dgif/Pan{n}.tif", f"vhr_pairs_dgif/MS{n}.tif"], "Pleiades", 4,
             12) for n in (3, 4)),
    # Pleiades Urban is stored blue, green, red, nir; the SPOT-6 scenes red, green, blue, nir (the haze test), so
    # those are reordered on loading. 12-bit; no georeferencing.
    _scene("vhr_pairs_cpe", "Urban", ["vhr_pairs_cpe/Urban_Pan.tif", "vhr_pairs_cpe/Urban_MS.tif"], "Pleiades", 4,
           12),
    *(_scene("vhr_pairs_cpe", name, [f"vhr_pairs_cpe/{name}_Pan.tif", f"vhr_pairs_cpe/{name}_MS.tif"], "SPOT6", 4,
             12, bands=(2, 1, 0, 3), band_names=VNIR4_BANDS) for name in ("Cropland", "Vegetation")),
    # Unknown 0.5 m sensor, 11-bit (the PAN reaches 2047). Stored blue, green, red, nir (the haze test): the TIFF's
    # red, green, blue colour interpretation is its photometric tag, not a band description.
    _scene("zhengzhou_fr", "zhengzhou", ["zhengzhou_fr/pan.tif", "zhengzhou_fr/ms.tif"], None, 4, 11,
           crs="EPSG:32649", band_names=VNIR4_BANDS),
    _scene("wv2_rio", "rio", ["wv2_rio/WV2RioPAN.tif", "wv2_rio/WV2RioMSLR.tif"], "WV2", 8, 11),
    # Reflectance in percent, not DN (a few specular MS pixels reach 118): full scale 100, no bit depth.
    _scene("wv3_georef", "0", ["wv3_georef/pan.tif", "wv3_georef/mul.tif"], "WV3", 8, None, full_scale=100.0,
           crs="EPSG:32642", options={"full_scale": 100.0}),
    _scene("wv3_small", "wv3_example", ["wv3_small/wv3_example.mat"], "WV3", 8, 11),
    # The MS was resampled onto the PAN grid by the provider: decimated back to its native ratio 4 on loading.
    _scene("quickbird_toulouse", "toulouse", ["quickbird_toulouse/QB_Toulouse_Ortho_PAN.tif",
                                              "quickbird_toulouse/QB_Toulouse_Ortho_XS.tif"], "QB", 4, 11,
           options={"ratio": 4}),
    *(_scene("landsat7_fusebox", str(n), [f"landsat7_fusebox/{n}_pan.mat", f"landsat7_fusebox/{n}_ms.mat"],
             "Landsat7", 6, 8, ratio=2) for n in range(1, 40)),
    # Landsat-8 Level-1 DN (OLI's 12 bits rescaled to 16); Landsat8-5 holds a few saturated 65535 pixels.
    *(_scene("landsat8_fgfgan", str(n), [f"landsat8_fgfgan/Landsat8-{n}.mat"], "Landsat8", 10, 16, ratio=2,
             band_names=LANDSAT8_FGFGAN_BANDS) for n in (5, 6, 12)),
)


def iter_shared_sets(data_root: PathLike, datasets: Sequence[str] | None = None) -> Iterator[SharedScene]:
    """Every scene of SHARED_SETS (or of the named datasets), bound to `data_root` so `scene.load()` needs no
    argument. A missing file is an error: the registry and MANIFEST.md must agree."""
    root = Path(data_root)
    for scene in SHARED_SETS:
        if datasets is not None and scene.dataset not in datasets:
            continue
        missing = [str(p) for p in scene.paths(root) if not p.is_file()]
        if missing:
            raise FileNotFoundError(f"{scene.id}: missing {missing} under {root}")
        yield dataclasses.replace(scene, root=root)
