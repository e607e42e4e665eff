"""The pipeline end to end on an 8-band and a 4-band scene of ../shared/data (ratio 4, other CRSs and bit depths
than the always-on Landsat-8 tests): the mosaic opens with a plain `xr.open_zarr`, sits on the PAN grid with the
PAN's CRS and transform, carries its provenance and has no NaN where the inputs are valid."""
from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from conftest import run_cli, tiny_checkpoint, write_crop

from tiling import open_mosaic

SCENES = {
    # id: (PAN file, MS file, sensor, bands, PAN crop side); crops keep the tile count small.
    "wv3-8band": ("wv3_georef/pan.tif", "wv3_georef/mul.tif", "WV3", 8, None),
    "quickbird-4band": ("quickbird_fr/0_pan.tif", "quickbird_fr/0_lr.tif", "QB", 4, 256),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SCENES))
def test_a_shared_scene_goes_through_ingest_sharpen_and_evaluate(name, shared_data, ray_local, tmp_path):
    pan_file, ms_file, sensor, bands, size = SCENES[name]
    pan, ms = shared_data / pan_file, shared_data / ms_file
    if size:   # the top-left corner, PAN and MS windows of the same ground extent
        pan = write_crop([pan], tmp_path / "pan.tif", 0, 0, size)
        ms = write_crop([ms], tmp_path / "ms.tif", 0, 0, size // 4)
    checkpoint = tiny_checkpoint(tmp_path / "tiny.pt", bands=bands, ratio=4, sensor=sensor,
                                 band_names=[f"band{i + 1}" for i in range(bands)], full_scale=2047.0)
    scene, mosaic = tmp_path / "scene.zarr", tmp_path / "mosaic.zarr"
    ingested = run_cli(["ingest", "--pan", str(pan), "--ms", str(ms), "--sensor", sensor, "--out", str(scene)])
    summary = run_cli(["sharpen", str(scene), "--out", str(mosaic), "--checkpoint", str(checkpoint), "--steps", "2",
                       "--tile", "128", "--halo", "16", "--batch-size", "4", "--no-progress"])
    quality = run_cli(["evaluate", str(mosaic)])

    pan_grid = xr.open_zarr(scene)["pan"]
    hrms = xr.open_zarr(mosaic)["hrms"]
    assert hrms.shape == (bands, *pan_grid.shape) == (bands, *ingested["pan_shape"])
    assert hrms.rio.crs == pan_grid.rio.crs and hrms.rio.transform() == pan_grid.rio.transform()
    np.testing.assert_array_equal(hrms["y"].values, pan_grid["y"].values)
    assert summary["sharpened"] == summary["tiles_total"] > 1
    values = hrms.values
    assert np.isfinite(values).all() and values.std() > 0
    attrs = open_mosaic(mosaic).attrs      # nested values decoded from their JSON strings
    assert attrs["checkpoint_hash"] and attrs["steps"] == 2 and attrs["scene_sources"] == ingested["sources"]
    assert attrs["scene_sensor"] == sensor and attrs["ratio"] == 4
    assert 0 <= quality["full_resolution"]["HQNR"] <= 1

