"""Ingest streams a GeoTIFF scene a band of rows at a time (issue #21): the store it writes is the one the
whole-array ingest wrote (pixels bit for bit, attributes, the content hash), and the memory it takes is bounded by
a band, not by the scene."""
from __future__ import annotations

import hashlib
import json
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import rasterio
import zarr
from affine import Affine
from conftest import BAND_NAMES, MS_BANDS, blank_top_left, with_nodata, write_crop
from scipy.ndimage import gaussian_filter

from flows.ingest import ingest_scene, read_scene
from ssdiff_model import blocks
from ssdiff_model.data.geotiff import read_geotiff_pair
from ssdiff_model.science import radiometry
from ssdiff_model.science.equalization import (
    BAND_GAIN_MAX,
    BAND_GAIN_MIN,
    DETAIL_SIGMA_MS_PX,
    pan_equalization,
)
from ssdiff_model.science.registration import measured_offset
from tiling import SceneAttrs
from tiling.integrity import scene_content_sha256
from tiling.stores.layout import OFFSET_WINDOW

# content_sha256 the whole-array ingest (main at 74c431f) recorded for the 1000 x 1000 crop at (100, 300).
WHOLE_ARRAY_SHA256 = "e33dd2d2ba5be1d821348b599b726797f13407a83471c3b41985a1751ce4e5fe"


def whole_array_equalization(pan, ms_lr, ratio):
    """The whole-array ``pan_equalization`` that streaming replaced: (gain, offset, band gains, band means)."""
    def detail(image, valid):
        filled = np.where(valid, image, image[valid].mean())
        return (filled - gaussian_filter(filled, DETAIL_SIGMA_MS_PX, mode="reflect"))[valid]

    rows, cols = pan.shape[0] // ratio, pan.shape[1] // ratio
    pan_lp = pan[:rows * ratio, :cols * ratio].reshape(rows, ratio, cols, ratio).mean(axis=(1, 3), dtype=np.float64)
    intensity = ms_lr.mean(axis=0, dtype=np.float64)[:rows, :cols]
    valid = np.isfinite(pan_lp) & np.isfinite(intensity)
    gain = float(intensity[valid].std() / pan_lp[valid].std())
    offset = float(intensity[valid].mean() - gain * pan_lp[valid].mean())
    pan_detail = detail(pan_lp * gain + offset, valid)
    variance = float(pan_detail @ pan_detail)
    means = [float(ms_lr[k, :rows, :cols].astype(np.float64)[valid].mean()) for k in range(ms_lr.shape[0])]
    slopes = [detail(ms_lr[k, :rows, :cols].astype(np.float64), valid) @ pan_detail / variance
              for k in range(ms_lr.shape[0])]
    return np.array([gain, offset, *np.clip(slopes, BAND_GAIN_MIN, BAND_GAIN_MAX), *means])


def as_vector(equalization) -> np.ndarray:
    return np.array([equalization.gain, equalization.offset, *equalization.band_gains, *equalization.band_means])


def scene_files(landsat_scene, folder: Path, case: str) -> dict:
    """A real crop: PAN exactly twice the MS; PAN one pixel wider and taller (cropped to whole MS pixels); or a
    blank corner declared nodata."""
    folder.mkdir()
    edit = blank_top_left(300) if case == "nodata" else None
    pan = write_crop([landsat_scene["B8"]], folder / "pan.tif", 100, 300, 1001 if case == "cropped" else 1000,
                     edit=edit)
    ms = write_crop([landsat_scene[b] for b in MS_BANDS], folder / "ms.tif", 50, 150, 500, edit=edit)
    if case == "nodata":
        with_nodata(pan, 0), with_nodata(ms, 0)
    return {"pan": pan, "ms": ms}


@pytest.mark.parametrize("case", ["exact", "cropped", "nodata"])
def test_a_streamed_ingest_writes_the_store_the_whole_array_ingest_wrote(case, landsat_scene, tmp_path):
    files = scene_files(landsat_scene, tmp_path / "files", case)
    store = tmp_path / "scene.zarr"
    summary = ingest_scene(files["pan"], [files["ms"]], store, sensor="Landsat8", band_names=BAND_NAMES)
    whole = read_scene(files["pan"], [files["ms"]], sensor="Landsat8", band_names=BAND_NAMES)   # in memory
    assert isinstance(whole.pan, np.ndarray)
    group = zarr.open_group(store, mode="r")
    np.testing.assert_array_equal(group["pan"][...], whole.pan)   # NaN where nodata, bit for bit elsewhere
    np.testing.assert_array_equal(group["ms"][...], whole.ms_lr)
    assert group["pan"].chunks == (256, 256) and group["ms"].chunks == (4, 128, 128)
    if case == "nodata":
        assert np.isnan(group["pan"][:300, :300]).all() and np.isfinite(group["pan"][300:, 300:]).all()

    attrs = SceneAttrs.from_attrs(json.loads(json.dumps(dict(group.attrs))))
    digest = hashlib.sha256(json.dumps({"full_scale": float(whole.full_scale)}).encode())
    digest.update(whole.pan.astype(np.float32).tobytes()), digest.update(whole.ms_lr.astype(np.float32).tobytes())
    assert attrs.content_sha256 == digest.hexdigest() == scene_content_sha256(store)
    if case == "exact":
        assert attrs.content_sha256 == WHOLE_ARRAY_SHA256
    assert attrs.radiometry == whole.radiometry.as_attrs() and attrs.full_scale == whole.full_scale
    assert attrs.notes == whole.notes and attrs.ms_offset_pan_px.as_attrs() == measured_offset(
        whole.pan, whole.ms_lr, 2, window=OFFSET_WINDOW).as_attrs()
    reference = whole_array_equalization(whole.pan, whole.ms_lr, 2)
    np.testing.assert_allclose(as_vector(attrs.pan_equalization), reference, rtol=1e-9)
    # Bands of a few rows, the Gaussian's halo carried across each boundary: the same to rounding.
    streamed = read_geotiff_pair(files["pan"], files["ms"], sensor="Landsat8", mask_nodata=True, lazy=True)
    np.testing.assert_allclose(as_vector(pan_equalization(streamed.pan, streamed.ms_lr, 2, rows_per_band=37)),
                               reference, rtol=1e-9)
    assert not summary["reused"] and summary["pan_shape"] == list(whole.pan.shape)


def synthetic_scene(folder: Path, height: int, width: int, ratio: int = 4, bands: int = 4) -> dict:
    """A PAN of ``height`` x ``width`` uint16 and its MS of ``bands`` bands at ``ratio``, random DN, tiled
    GeoTIFFs written a band of rows at a time."""
    folder.mkdir()
    rng = np.random.default_rng(height)
    paths = {}
    for name, scale, count in (("pan", 1, 1), ("ms", ratio, bands)):
        paths[name] = folder / f"{name}.tif"
        rows, cols, pixel = height // scale, width // scale, 0.5 * scale
        with rasterio.open(paths[name], "w", driver="GTiff", width=cols, height=rows, count=count, dtype="uint16",
                           crs="EPSG:32616", transform=Affine(pixel, 0, 500000, 0, -pixel, 4000000), tiled=True,
                           blockxsize=256, blockysize=256) as dst:
            for y in range(0, rows, 256):
                band = min(256, rows - y)
                dst.write(rng.integers(100, 2000, (count, band, cols), dtype=np.uint16),
                          window=((y, y + band), (0, cols)))
    return paths


def traced_peak(files: dict, store: Path) -> int:
    """Peak bytes Python allocated (NumPy arrays included) while ingesting ``files``."""
    tracemalloc.start()
    try:
        ingest_scene(files["pan"], [files["ms"]], store)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_ingest_memory_is_bounded_by_a_band_of_rows_not_by_the_scene(monkeypatch, tmp_path):
    """Python's own allocations (NumPy arrays included) traced while ingesting a scene and one four times as tall:
    the whole-array ingest held several float32 copies of the scene, so its peak grew by several times the
    scene's growth; streamed, the peak stays where it was (one band of rows, the registration's central window,
    the radiometry's sample). Not timed, and deaf to other processes. Bands and sample are made small so that a
    scene of seconds is many bands."""
    monkeypatch.setattr(blocks, "BAND_BYTES", 2**20)
    monkeypatch.setattr(radiometry, "SAMPLE_SIZE", 100_000)
    width, peaks, scenes = 1024, [], []
    for height in (1024, 4096):
        files = synthetic_scene(tmp_path / f"h{height}", height, width)
        peaks.append(traced_peak(files, tmp_path / f"h{height}.zarr"))
        scenes.append(4 * height * width * (1 + 4 / 16))   # float32 PAN and MS
    growth = scenes[1] - scenes[0]   # 15 MiB more pixels (measured: the peak grows by under 0.1 MiB)
    assert peaks[1] - peaks[0] < growth / 10, (
        f"peaks {peaks[0] / 2**20:.1f} and {peaks[1] / 2**20:.1f} MiB for scenes of {scenes[0] / 2**20:.0f} and "
        f"{scenes[1] / 2**20:.0f} MiB")
    group = zarr.open_group(tmp_path / "h4096.zarr", mode="r")
    with rasterio.open(files["pan"]) as src:
        np.testing.assert_array_equal(group["pan"][5000:5010], src.read(1, window=((5000, 5010), (0, width))))
