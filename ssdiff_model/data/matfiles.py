"""Readers of the MATLAB (.mat, v5 through scipy and v7.3 through h5py) and HDF5 (.h5) layouts the pansharpening
community ships.

- PanCollection (`read_pancollection`): `.h5` or `.mat` batches of patches with keys `gt`, `ms`, `lms`, `pan`, stored
  N x H x W x C (the .mat files) or N x C x H x W (the .h5 files); the layout is read off the shapes.
- Full-resolution `.mat` pairs (`read_mat_pair`): the toolbox's `I_PAN` + `I_MS_LR` / `I_MS` (+ `sensor`, `ratio`, `L`),
  the Pleiades `pan` + `lrms` + `gt` files (floats in [0, 1]) and the Landsat-7 "fusebox" pairs `N_pan.mat`
  (`cropped_gray`) + `N_ms.mat` (`cropped_im`).

Every reader returns channel-first float32 arrays in the file's DN (see `ssdiff_model.data.pair`).
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ssdiff_model.data._checks import (
    PathLike,
    as_float32,
    decide_radiometry,
    describe,
    require_file,
    shape_ratio,
    unreadable,
)
from ssdiff_model.data.pair import PansharpeningBatch, PansharpeningPair
from ssdiff_model.errors import BadInput

__all__ = ["LANDSAT7_FUSEBOX_BANDS", "read_mat_pair", "read_pancollection", "variable_names"]

LANDSAT7_FUSEBOX_BANDS = ("red", "green", "blue", "nir", "swir1", "swir2")


def _load_arrays(path: PathLike) -> dict[str, np.ndarray]:
    """Every variable of a .mat (v5 or v7.3) or .h5 file, arrays in MATLAB's / the writer's axis order."""
    import h5py
    import scipy.io

    path = require_file(path)
    try:
        if h5py.is_hdf5(path):
            return _load_hdf5(path)
        variables = scipy.io.loadmat(path)
    except Exception as err:  # scipy and h5py raise many types (OSError, ValueError, MatReadError, zlib.error...)
        raise unreadable(path, err) from err
    return {k: v for k, v in variables.items() if not k.startswith("__")}


def variable_names(path: PathLike) -> set[str]:
    """The variables of a .mat / .h5 file, without loading them (PanCollection files run to gigabytes).

    Args:
        path: the .mat (v5 or v7.3) or .h5 file.

    Returns:
        The names of its variables (datasets and groups of an HDF5 file).

    Raises:
        FileNotFoundError: no such local file.
        BadInput: the file is unreadable or corrupt.
    """
    import h5py
    import scipy.io

    path = require_file(path)
    try:
        if h5py.is_hdf5(path):
            with h5py.File(path, "r") as f:
                return set(f.keys())
        return {name for name, _, _ in scipy.io.whosmat(path)}
    except Exception as err:
        raise unreadable(path, err) from err


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
    image = as_float32(where, name, image)
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
        raise BadInput(f"{path}: expected ms (N, ...) with 4 axes and pan with 3 or 4, got ms {ms.shape}, "
                       f"pan {pan.shape}")
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
    memory as float32 (a full PanCollection training file is a few GB).

    Args:
        path: the .h5 or .mat file.
        sensor: the sensor's name, else read off the file name.

    Returns:
        The batch, channel-first: `pan` (N, H, W), `ms_lr` (N, B, h, w), `gt` / `lms` (N, B, H, W) or None.

    Raises:
        FileNotFoundError: no such file.
        BadInput: unreadable file, missing keys, or shapes whose layout or ratio cannot be told.
    """
    path = require_file(path)
    arrays = _load_arrays(path)
    if "ms" not in arrays or "pan" not in arrays:
        raise _missing_keys(path, arrays, "PanCollection keys 'ms' and 'pan' (and optionally 'gt', 'lms')")
    pan, ms = np.asarray(arrays["pan"]), np.asarray(arrays["ms"])
    layout, ratio = _pancollection_layout(path, pan, ms)

    def channel_first(name: str, image: np.ndarray) -> np.ndarray:
        image = as_float32(str(path), name, image)
        return np.ascontiguousarray(image.transpose(0, 3, 1, 2)) if layout == "nhwc" else image

    ms_lr = channel_first("ms", ms)
    pan_f = as_float32(str(path), "pan", pan).reshape(pan.shape[0], ms_lr.shape[2] * ratio, ms_lr.shape[3] * ratio)
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
    bits, full_scale, _ = decide_radiometry(str(path), raw, sensor)
    sensor, band_names = describe(sensor, (), ms_lr.shape[1])
    # PanCollection made its examples with MATLAB's bicubic imresize, not the sensor's MTF: the WV3 file's MS is
    # imresize(gt, 1/4, 'bicubic') to 0.65 % of its mean, against 8 % for the MTF filters and decimation.
    return PansharpeningBatch(pan=pan_f, ms_lr=ms_lr, gt=extra.get("gt"), lms=extra.get("lms"), ratio=ratio,
                              full_scale=full_scale, bits=bits, sensor=sensor, band_names=band_names, source=(path,),
                              ms_degradation="bicubic")


# ----------------------------------------------------------------------------------------------------------------
# Full-resolution .mat pairs
# ----------------------------------------------------------------------------------------------------------------

def read_mat_pair(path: PathLike, ms_path: PathLike | None = None, sensor: str | None = None) -> PansharpeningPair:
    """A .mat pair: the toolbox's (`I_PAN`, `I_MS_LR` or `I_MS`, optional `I_GT`, `sensor`, `ratio`, `L`), Pleiades
    (`pan`, `lrms`, `gt`) or a Landsat-7 fusebox pair (`N_pan.mat` + `N_ms.mat`; give either file, the other is found
    beside it, or pass it as `ms_path`).

    Args:
        path: the .mat file (for a fusebox pair, either of its two files).
        ms_path: the MS file of a fusebox pair, when not beside `path` under the usual name.
        sensor: the sensor's name, overriding the file's `sensor` variable.

    Returns:
        The pair, channel-first, in the file's DN.

    Raises:
        FileNotFoundError: no such file.
        BadInput: unreadable file, keys of no known layout, or mismatched sizes.
    """
    path = require_file(path)
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
    pan = as_float32(where, "I_PAN", arrays["I_PAN"])
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
    ratio = shape_ratio(where, pan.shape, ms_lr.shape[1:])
    if "ratio" in arrays and _scalar(arrays["ratio"]) != ratio:
        raise BadInput(f"{path}: the file says ratio {_scalar(arrays['ratio'])} but PAN {pan.shape} vs {ms_key} "
                         f"{ms_lr.shape[1:]} gives {ratio}")
    sensor = sensor or (_text(arrays["sensor"]) if "sensor" in arrays else None)
    declared_bits = _scalar(arrays["L"]) if "L" in arrays else None
    bits, full_scale, _ = decide_radiometry(where, [arrays["I_PAN"], arrays[ms_key]], sensor, bits=declared_bits)
    sensor, band_names = describe(sensor, (), ms_lr.shape[0])
    gt = _hwc_to_chw(where, "I_GT", arrays["I_GT"]) if "I_GT" in arrays else None
    return PansharpeningPair(pan=pan, ms_lr=ms_lr, gt=gt, lms=lms, ratio=ratio, full_scale=full_scale, bits=bits,
                             sensor=sensor, band_names=band_names, source=(path,))


def _pleiades_pair(path: Path, arrays: dict, sensor: str | None) -> PansharpeningPair:
    where = str(path)
    pan = as_float32(where, "pan", arrays["pan"])
    ms_lr = _hwc_to_chw(where, "lrms", arrays["lrms"])
    gt = _hwc_to_chw(where, "gt", arrays["gt"]) if "gt" in arrays else None
    ratio = shape_ratio(where, pan.shape, ms_lr.shape[1:])
    bits, full_scale, _ = decide_radiometry(where, [arrays["pan"], arrays["lrms"]], sensor)
    sensor, band_names = describe(sensor, (), ms_lr.shape[0])
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
    pan = as_float32(where, "cropped_gray", pan_arrays["cropped_gray"])
    ms_lr = _hwc_to_chw(where, "cropped_im", ms_arrays["cropped_im"])
    ratio = shape_ratio(where, pan.shape, ms_lr.shape[1:])
    bits, full_scale, _ = decide_radiometry(where, [pan_arrays["cropped_gray"], ms_arrays["cropped_im"]], "Landsat7")
    names = LANDSAT7_FUSEBOX_BANDS if ms_lr.shape[0] == len(LANDSAT7_FUSEBOX_BANDS) else ()
    return PansharpeningPair(pan=pan, ms_lr=ms_lr, ratio=ratio, full_scale=full_scale, bits=bits, sensor="Landsat7",
                             band_names=names, source=(pan_path, Path(ms_path)))
